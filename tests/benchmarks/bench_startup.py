"""Benchmark: start-up of `ticker latest` on a small store against `import duckdb`.

Times both (the median of --runs each, interleaved, in one run) and checks that
`ticker latest` imports none of the libraries only other commands need.

Target (issue 2): `ticker latest` <= 2x the wall time of `python -c "import duckdb"`.

    .venv/bin/python tests/benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Only the commands that use them may import these (scrape, run, chart, backfill).
HEAVY = ("requests", "matplotlib", "apscheduler", "warcio", "lxml", "tqdm", "numpy", "urllib3")
PAGE = (
    "\n".join(
        f"  \u2022 {code}/USD = {rate} {change}%"
        for code, rate, change in (
            ("KGS", "0.01164", "0.87"),
            ("KZT", "0.00199", "-0"),
            ("TJS", "0.09168", "-0.11"),
            ("UZS", "0.00008", "0"),
            ("TMT", "0.28573", "-0.14"),
        )
    )
    + "\n20 March 2025\n\nFiller text for the start-up benchmark.\n"
)


def ticker_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ticker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ticker"]


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()}")
    return elapsed


def imported_modules(cmd: list[str], cwd: Path) -> set[str]:
    """Top-level packages a command imports (python -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd], cwd=cwd, capture_output=True, text=True
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ticker-startup-"))
    try:
        (work / "config.toml").write_text('[store]\npath = "small.duckdb"\n', encoding="utf-8")
        (work / "dumps").mkdir()
        for i in range(20):
            page = PAGE.replace("20 March", f"{i + 1:02d} March")
            (work / "dumps" / f"p{i}.txt").write_text(page, encoding="utf-8")
        config = ["--config", str(work / "config.toml")]
        timed([*ticker_cmd(), *config, "backfill", str(work / "dumps")], work)

        latest = [*ticker_cmd(), *config, "latest"]
        baseline = [sys.executable, "-c", "import duckdb"]
        timed(latest, work)  # warm the page cache and the .pyc files
        timed(baseline, work)
        ticker_runs, duckdb_runs = [], []
        for _ in range(args.runs):
            ticker_runs.append(timed(latest, work))
            duckdb_runs.append(timed(baseline, work))
        t, d = statistics.median(ticker_runs), statistics.median(duckdb_runs)

        modules = imported_modules(["-m", "ticker", *config, "latest"], work)
        heavy = sorted(m for m in HEAVY if m in modules)

        print(f"python -c 'import duckdb'   {d * 1000:6.0f} ms  (median of {args.runs})")
        print(f"ticker latest               {t * 1000:6.0f} ms  (median of {args.runs})")
        verdict = "ok" if t / d <= 2 else "over target"
        print(f"ratio                       {t / d:6.2f}x    (target <= 2x: {verdict})")
        print(
            "heavy imports in `latest`:  "
            + (", ".join(heavy) if heavy else f"none of {', '.join(HEAVY)}")
        )
        if heavy:
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
