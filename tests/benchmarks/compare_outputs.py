"""Compare what two versions of ticker print and store, command by command.

Runs the same sequence of commands with the working tree's ticker and with the ticker
of another git revision (checked out into a temporary directory and run from there
with this virtualenv's libraries), each in a fresh project directory, and reports every
difference in stdout, stderr, exit code, exported bytes and stored rows. Volatile parts
(durations, clock times, ages, temporary paths) are masked first.

The sequence: the sample dumps and every parser fixture (backfill, re-run, --date),
latest, history, export in three formats, check, status, chart; a scrape against the
test suite's local server (tests/servers.py); and two generated corpora (tests/pages.py)
through the worker pool (many pages per date; one page per date with new values every
day).

    .venv/bin/python tests/benchmarks/compare_outputs.py REV        # e.g. main~3
    .venv/bin/python tests/benchmarks/compare_outputs.py REV --keep /tmp/cmp

Exit code 0 when both versions agree on everything, 1 otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from conftest import ticker_subprocess, write_config  # noqa: E402
from pages import html_page, simulate, write_dumps  # noqa: E402
from servers import LocalServer, html  # noqa: E402

DUMPS = REPO / "tests" / "fixtures" / "dumps"
MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d+\.\d\d s\b"), "<dur> s"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\d+(\.\d+)? (days|hours) old"), "<age> old"),
    (re.compile(r"\b\d+d \d+h\b|\b\d+h \d+m\b|\b\d+m\b"), "<age>"),
    (re.compile(r'"age_seconds": \d+'), '"age_seconds": <age>'),
    (re.compile(r'"now": "[^"]*"'), '"now": <now>'),
    (re.compile(r'"(age|stale_after)_seconds": \d+'), r'"\1_seconds": <n>'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"process \d+"), "process <pid>"),
)
TABLES = {
    "captures": "SELECT source, origin, url, CAST(captured_at AS VARCHAR), content_hash,"
    " outcome, header_date, quote_date, date_basis, copies, detail"
    " FROM captures ORDER BY id",
    "observations": "SELECT source, pair, date, revision, rate_text, change_text"
    " FROM observations ORDER BY ALL",
    "sightings": "SELECT s.source, s.pair, s.date, s.revision, c.origin, c.content_hash"
    " FROM sightings s"
    " JOIN captures c ON c.id = s.capture_id ORDER BY ALL",
    "daily": "SELECT source, pair, date, rate_text, change_text FROM daily ORDER BY ALL",
    "attempts": "SELECT source, url, http_status, bytes, outcome, error, etag, new, already,"
    " revised FROM attempts ORDER BY started_at",
}


class Side:
    """One version of ticker and the project directory it runs in."""

    def __init__(self, name: str, code: Path, root: Path, url: str) -> None:
        self.name, self.code, self.root = name, code, root
        root.mkdir(parents=True)
        # only keys every version knows: no [schedule], [http] just what the scrape needs
        write_config(
            root,
            store="db/ticker.duckdb",
            lock_timeout=10,
            url=url,
            http={"timeout": 5, "retries": 0},
            schedule={},
            archive="db/pages",
        )

    def run(self, *args: str) -> str:
        proc = ticker_subprocess(
            Path("config.toml"),
            *args,
            cwd=self.root,
            env={"PYTHONPATH": str(self.code)},
            timeout=600,
        )
        text = f"$ ticker {' '.join(args)}\n[exit {proc.returncode}]\n{proc.stdout}{proc.stderr}"
        return mask(text, self.root)

    def file(self, name: str) -> str:
        path = self.root / name
        if not path.exists():
            return f"{name}: missing"
        data = path.read_bytes()
        return f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"

    def tables(self) -> str:
        import duckdb

        con = duckdb.connect(str(self.root / "db" / "ticker.duckdb"), read_only=True)
        try:
            out = []
            for name, sql in TABLES.items():
                rows = con.execute(sql).fetchall()
                out.append(f"-- {name}: {len(rows)} rows")
                out += [mask(repr(r), self.root) for r in rows]
            return "\n".join(out)
        finally:
            con.close()


def mask(text: str, root: Path) -> str:
    text = text.replace(str(root), "<project>").replace(str(REPO), "<repo>")
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def _after(seconds: float, run: Callable[..., str], *args: str) -> str:
    time.sleep(seconds)
    return run(*args)


def steps(side: Side, corpora: Path) -> list[tuple[str, Callable[[], str]]]:
    samples = sorted(str(p) for p in DUMPS.glob("tca_2025-*.txt")) + sorted(
        str(p) for p in DUMPS.glob("no_ticker_*.txt")
    )
    run = side.run
    return [
        ("backfill samples", lambda: run("backfill", *samples)),
        ("backfill samples again", lambda: run("backfill", *samples)),
        ("backfill fixtures", lambda: run("backfill", str(DUMPS))),
        (
            "backfill --date",
            lambda: run("backfill", str(DUMPS / "listing_undated.txt"), "--date", "2025-03-21"),
        ),
        ("backfill missing", lambda: run("backfill", "nowhere/*.txt", "missing.txt")),
        ("latest", lambda: run("latest")),
        ("latest --json", lambda: run("latest", "--json")),
        ("history KZT", lambda: run("history", "KZT")),
        ("history --json", lambda: run("history", "tmt-usd", "--since", "2024-01-01", "--json")),
        ("history unknown", lambda: run("history", "XYZ")),
        ("export csv", lambda: run("export")),
        ("export json", lambda: run("export", "--format", "json")),
        (
            "export parquet",
            lambda: (
                run("export", "--format", "parquet", "--out", "x.parquet") + side.file("x.parquet")
            ),
        ),
        ("export parquet stdout", lambda: run("export", "--format", "parquet")),
        ("check", lambda: run("check")),
        ("check --json", lambda: run("check", "--json")),
        ("chart", lambda: run("chart")),
        ("chart again", lambda: run("chart")),
        ("chart pair", lambda: run("chart", "--pair", "KZT", "--all", "--out", "c2")),
        ("scrape", lambda: run("scrape")),
        # a second apart: two captures of one page in the same second are one capture
        ("scrape again", lambda: _after(1.1, run, "scrape")),
        ("status", lambda: run("status")),
        ("status --json", lambda: run("status", "--json")),
        ("tables", side.tables),
        ("corpus: pages per date", lambda: run("backfill", str(corpora / "many"))),
        ("corpus: one per date", lambda: run("backfill", str(corpora / "daily"))),
        ("corpus export", lambda: run("export")),
        ("corpus check", lambda: run("check", "--json")),
        ("corpus tables", side.tables),
    ]


def make_corpora(root: Path) -> None:
    """600 dumps, 5 per date (the pool path), and 600 dumps of a new day each."""
    days = simulate(date(2016, 1, 1), 120)
    write_dumps(root / "many", [d for d in days for _ in range(5)], prefix="many")
    write_dumps(root / "daily", simulate(date(2018, 1, 1), 600))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument("--keep", type=Path, help="keep the project directories here")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="ticker-compare-"))
    if work.exists() and args.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    base_code = work / "base-code"
    base_code.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", args.rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(base_code)], input=archive, check=True)
    corpora = work / "corpora"
    make_corpora(corpora)
    with LocalServer() as server:
        server.route("/", html(html_page(day="20 March 2025")))
        url = server.url("/")
        sides = [
            Side(f"base ({args.rev})", base_code, work / "base", url),
            Side("working tree", REPO, work / "head", url),
        ]
        outputs = [[(name, fn()) for name, fn in steps(side, corpora)] for side in sides]
    differ = 0
    for (name, a), (_, b) in zip(outputs[0], outputs[1], strict=True):
        if a == b:
            print(f"same       {name}")
            continue
        differ += 1
        print(f"DIFFERENT  {name}")
        diff = difflib.unified_diff(
            a.splitlines(), b.splitlines(), sides[0].name, sides[1].name, lineterm="", n=1
        )
        for line in list(diff)[:80]:
            print(f"    {line}")
    print(f"\n{len(outputs[0]) - differ} of {len(outputs[0])} steps identical")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
