"""Crash safety: `ticker backfill` killed with SIGKILL at random moments.

After every kill the database opens, holds no partial page (a page's capture row and
its sightings and observations land together or not at all), and a final re-run
reaches exactly the export of an uninterrupted run into a fresh database.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    LOCAL_HTTP,
    QUICK_SCHEDULE,
    start_ticker,
    ticker_env,
    ticker_subprocess,
    write_config,
)
from pages import DayQuotes, html_page, no_ticker_page, simulate, write_dumps
from servers import LocalServer, html

from ticker.store import Store

KILLS = 8
DAYS = 1900  # + 50 revised pages + 50 pages without a ticker = 2,000 dumps
# The backfill as a subprocess, with small batches so that a kill can land between
# many commits (BATCH_PAGES is the backfill's batch size).
SMALL_BATCHES = (
    "import sys, ticker.backfill as p\n"
    "p.BATCH_PAGES = 100\n"
    "from ticker.cli import main\n"
    "main(sys.argv[1:])\n"
)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """2,000 small dumps and, for each, the number of quotes its page carries."""
    root = tmp_path_factory.mktemp("crash") / "dumps"
    series = simulate(date(2019, 1, 1), DAYS, seed=3)
    expected = {str(p): 5 for p in write_dumps(root / "a", series)}
    # later captures of 50 dates with another KZT rate: revisions, read after the first
    revised = [
        DayQuotes(
            d.date,
            tuple(replace(q, rate="0.00250") if q.pair == "KZT/USD" else q for q in d.quotes),
        )
        for d in series[::38][:50]
    ]
    expected |= {str(p): 5 for p in write_dumps(root / "b", revised, prefix="again")}
    for i in range(50):
        path = root / "c" / f"other_{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(no_ticker_page(markup=False) + f"listing {i}\n", encoding="utf-8")
        expected[str(path)] = 0
    assert len(expected) == 2000
    return root, expected


def verify(db: Path, expected: dict[str, int] | None = None, quotes: int = 5) -> int:
    """The store opens and holds only whole pages: each ok capture with its `expected`
    number of sightings (by origin; else `quotes`), nothing without its capture.
    Returns the number of captures."""
    with Store.open(db, lock_timeout=5, read_only=True) as store:
        con = store.con
        caps = con.execute(
            """SELECT c.origin, c.outcome, c.quote_date IS NOT NULL,
                      (SELECT count(*) FROM sightings s WHERE s.capture_id = c.id)
               FROM captures c"""
        ).fetchall()
        orphan_sightings = con.execute(
            "SELECT count(*) FROM sightings s ANTI JOIN captures c ON c.id = s.capture_id"
        ).fetchall()[0][0]
        orphan_obs = con.execute(
            "SELECT count(*) FROM observations o ANTI JOIN captures c ON c.id = o.capture_id"
        ).fetchall()[0][0]
        unseen_obs = con.execute(
            """SELECT count(*) FROM observations o ANTI JOIN sightings s
               ON s.source = o.source AND s.pair = o.pair AND s.date = o.date
                  AND s.revision = o.revision"""
        ).fetchall()[0][0]
        dangling = con.execute(
            """SELECT count(*) FROM sightings s ANTI JOIN observations o
               ON s.source = o.source AND s.pair = o.pair AND s.date = o.date
                  AND s.revision = o.revision"""
        ).fetchall()[0][0]
        holes = con.execute(
            """SELECT count(*) FROM (
                   SELECT source, pair, date FROM observations GROUP BY ALL
                   HAVING max(revision) <> count(*) OR min(revision) <> 1)"""
        ).fetchall()[0][0]
        files_without_pages = con.execute(
            "SELECT path FROM loaded_files ANTI JOIN captures c ON c.origin = path"
        ).fetchall()
    if expected is not None:
        origins = Counter(origin for origin, *_ in caps)
        assert max(origins.values(), default=1) == 1, "a page stored twice"
    for origin, outcome, dated, sightings in caps:
        count = expected[origin] if expected is not None else quotes
        want = count if outcome == "ok" and dated else 0
        assert sightings == want, f"{origin}: {sightings} of {want} quotes stored"
    assert orphan_sightings == 0, "sightings without their capture"
    assert orphan_obs == 0, "observations without their capture"
    assert unseen_obs == 0 and dangling == 0, "observations and sightings out of step"
    assert holes == 0, "revision numbers with holes"
    if expected is not None:  # one page a file, its origin the file's path
        assert files_without_pages == [], "a file marked as loaded without its page"
    return len(caps)


def _fresh(work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    return write_config(work, store="ticker.duckdb")


@pytest.mark.slow
def test_kill_9_backfill_at_random_moments(
    dumps: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    root, expected = dumps

    # the reference: one uninterrupted run into a fresh database
    ref_cfg = _fresh(tmp_path / "reference")
    t0 = time.monotonic()
    ticker_subprocess(ref_cfg, "backfill", str(root), check=True)
    spans = {False: time.monotonic() - t0}
    reference = ticker_subprocess(ref_cfg, "export", check=True).stdout
    assert reference.count("\n") == DAYS * 5 + 1
    assert verify(ref_cfg.parent / "ticker.duckdb", expected) == 2000
    # the same with small batches; the kills fall within the time a run takes
    cfg = _fresh(tmp_path / "small")
    t0 = time.monotonic()
    assert _backfill(cfg, root, small=True).wait(300) == 0
    spans[True] = time.monotonic() - t0
    assert ticker_subprocess(cfg, "export", check=True).stdout == reference

    rng = random.Random(20251123)
    kills = rounds = killed_with_data = 0

    def more() -> bool:  # KILLS at least, and on until two landed between commits
        return kills < KILLS or (killed_with_data < 2 and kills < 4 * KILLS)

    while more():
        rounds += 1
        cfg = _fresh(tmp_path / f"round{rounds}")
        db = cfg.parent / "ticker.duckdb"
        while more():
            small = rng.random() < 0.75
            proc = _backfill(cfg, root, small)
            try:
                delay = rng.uniform(0.05, spans[small])
                proc.wait(delay)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                stored = verify(db, expected) if db.exists() else 0
                killed_with_data += 0 < stored < 2000
            else:
                assert proc.returncode == 0
                break  # it finished before its kill: this round is done
        # a run to the end (or a re-run that changes nothing) reaches the same export
        ticker_subprocess(cfg, "backfill", str(root), check=True)
        assert verify(db, expected) == 2000
        assert ticker_subprocess(cfg, "export", check=True).stdout == reference
    assert ticker_subprocess(cfg, "latest", check=True).stdout.count("\n") == 6
    left = len(list((tmp_path / "tmp").iterdir()))
    print(
        f"{kills} kills in {rounds} rounds, {killed_with_data} left a partly loaded store, "
        f"{left} staging directories left behind"
    )
    assert killed_with_data >= 2, "too few kills landed between commits to mean much"


def _backfill(cfg: Path, root: Path, small: bool) -> subprocess.Popen[str]:
    """`ticker backfill` as a subprocess (with small batches: many commits to fall between)."""
    tmp = cfg.parent.parent / "tmp"  # staging files a killed run leaves stay in the test
    tmp.mkdir(exist_ok=True)
    env = {"TMPDIR": str(tmp)}
    args = ["--config", str(cfg), "backfill", str(root)]
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if small:
        return subprocess.Popen(
            [sys.executable, "-c", SMALL_BATCHES, *args],
            text=True,
            env=ticker_env(env),
            cwd=cfg.parent,
            **quiet,
        )
    return start_ticker(cfg, "backfill", str(root), env=env, **quiet)


# --- the page archive ------------------------------------------------------------------------

ARCHIVE_WRITER = r"""
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from ticker.archive import archive_page

directory = Path(sys.argv[1])
start = datetime(2025, 3, 20, 6, 0, tzinfo=UTC)
i = 0
while True:
    body = (f"page {i}\n" + f"filler {i} " * 30000).encode()
    archive_page(
        directory, url=f"https://timesca.com/?page={i}", source="timesca",
        captured_at=start + timedelta(minutes=i), status=200, reason="OK",
        http_version="HTTP/1.1", headers=[("Content-Type", "text/plain; charset=utf-8")],
        body=body,
    )
    print(i, flush=True)
    i += 1
"""


def _expected_body(url: str) -> bytes:
    i = int(url.rsplit("=", 1)[1])
    return (f"page {i}\n" + f"filler {i} " * 30000).encode()


@pytest.mark.slow
def test_kill_9_archive_writer_never_leaves_a_half_file_that_reads_as_good(
    tmp_path: Path,
) -> None:
    pytest.importorskip("ticker.archive")
    from ticker.dumps import expand, read_pages

    archive = tmp_path / "pages"
    rng = random.Random(7)
    written = 0
    seen: set[Path] = set()
    for _ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", ARCHIVE_WRITER, str(archive)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ticker_env(),
        )
        time.sleep(rng.uniform(0.25, 0.6))  # python and warcio start in about 0.2 s
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        written += len(out.split())
        files, _ = expand([str(archive)])
        for path in files:
            if path in seen:
                continue
            seen.add(path)
            pages = list(read_pages(path))  # raises InputError on a torn file
            assert len(pages) == 1, path
            assert pages[0].url is not None
            assert pages[0].body == _expected_body(pages[0].url), path
    leftovers = [p for p in archive.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert written >= 10
    files, _ = expand([str(archive)])
    assert len(files) >= written  # every page reported written is there, whole
    cfg = write_config(tmp_path)
    result = ticker_subprocess(cfg, "backfill", str(archive))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "files that could not be read: 0" in result.stdout
    # a temporary file a killed writer left is never read as a page
    assert all(str(p) not in result.stdout for p in leftovers)


@pytest.mark.parametrize("compressed", [True, False])
def test_a_torn_archive_file_is_reported_not_half_loaded(tmp_path: Path, compressed: bool) -> None:
    """An archive file cut at any point (a copy or download that ended early): backfill
    either reports it or, when the whole record is there, loads the whole page. Never a
    part of one."""
    import gzip
    from datetime import UTC, datetime

    from ticker.archive import warc_bytes

    day = simulate(date(2025, 3, 20), 1)[0]
    body = "<html><body><ul>" + "".join(f"<li>{q.line()}</li>" for q in day.quotes) * 8
    body += "</ul><p>20 March 2025</p>" + "<p>filler</p>" * 500 + "</body></html>"
    data = warc_bytes(
        url="https://timesca.com/",
        source="timesca",
        captured_at=datetime(2025, 3, 20, 6, tzinfo=UTC),
        status=200,
        reason="OK",
        http_version="HTTP/1.1",
        headers=[("Content-Type", "text/html")],
        body=body.encode(),
        record_id="1" * 32,
        filename="x.warc.gz",
    )
    if compressed:
        first_end = data.index(b"\x1f\x8b", 2)  # where the response record's member starts
    else:
        data = gzip.decompress(data)
        first_end = data.index(b"WARC/1.0", 8)
    pages = tmp_path / "pages"
    pages.mkdir()
    suffix = ".warc.gz" if compressed else ".warc"
    # every cut inside the response record, and one inside the ticker block itself
    # compressed: every byte of the response record's gzip member (a few hundred files);
    # plain: about 40 cuts spread over the record
    step = 1 if compressed else max(1, (len(data) - first_end) // 40)
    cuts = sorted({*range(first_end + 1, len(data), step)})
    if not compressed:
        cuts.append(data.index(b"TJS/USD"))
    for cut in cuts:
        (pages / f"torn-{cut:06d}{suffix}").write_bytes(data[:cut])
    (pages / f"whole{suffix}").write_bytes(data)
    cfg = write_config(tmp_path)
    result = ticker_subprocess(cfg, "backfill", str(pages))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    db = cfg.parent / "ticker.duckdb"
    assert verify(db) >= 1  # every page stored is whole: 5 quotes
    with Store.open(db, read_only=True) as store:
        loaded = {
            Path(origin.split("#")[0]).name.split(".")[0]
            for (origin,) in store.con.execute("SELECT origin FROM captures").fetchall()
        }
        # the files read whole are remembered as loaded; a reported one is not
        read = {
            Path(path).name.split(".")[0]
            for (path,) in store.con.execute("SELECT path FROM loaded_files").fetchall()
        }
    assert "whole" in read  # the whole file loads
    read_whole = read - {"whole"}
    # Each file not reported gave its whole page (the same page as whole.warc*, so only
    # the first of them is a capture; the others are pages loaded before): no torn file
    # is ever passed over in silence.
    reported = re.search(r"files that could not be read: (\d+)", result.stdout)
    assert reported is not None and int(reported.group(1)) == len(cuts) - len(read_whole)
    with_ticker = re.search(r"pages with a ticker:\s+(\d+)", result.stdout)
    assert with_ticker is not None and int(with_ticker.group(1)) == len(read_whole) + 1
    assert loaded <= read and loaded
    # the reported ones are cut inside the record; the others only lost the gzip trailer
    # (8 bytes) or the record's closing blank lines
    assert all(int(name[len("torn-") :]) >= len(data) - 16 for name in read_whole)
    assert ticker_subprocess(cfg, "export", check=True).stdout.count("\n") == 6


# --- the daemon ------------------------------------------------------------------------------

DAEMON_KILLS = 5


@pytest.mark.slow
def test_kill_9_daemon_mid_job(tmp_path: Path, server: LocalServer) -> None:
    """`ticker run` killed at random moments, jobs every second: the store is whole each
    time, every archived page reads whole, and what the archive holds is what a fresh
    database loaded from it holds."""
    pytest.importorskip("ticker.scheduler")
    from ticker.dumps import expand, read_pages

    series = simulate(date(2025, 1, 1), 500, seed=5)
    rng = random.Random(99)
    # the n-th request gets the page of the n-th day (the last repeats)
    server.route("/", *(html(html_page(d.quotes, d.date)) for d in series))
    cfg = write_config(
        tmp_path / "daemon",
        url=server.url("/"),
        http=LOCAL_HTTP | {"timeout": 5, "retries": 0},
        schedule=QUICK_SCHEDULE | {"scrape": 1, "charts": 3600},
    )
    db = cfg.parent / "ticker.duckdb"
    archive = cfg.parent / "pages"
    seen: set[Path] = set()
    for _ in range(DAEMON_KILLS):
        asked = len(server.seen)
        proc = start_ticker(cfg, "run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # started (slowly, on a busy machine) and fetching
        while len(server.seen) == asked and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.7))  # then killed at a random moment of its jobs
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if db.exists():
            verify(db)
            with Store.open(db, lock_timeout=5, read_only=True) as store:
                dangling = store.con.execute(
                    """SELECT count(*) FROM attempts a
                       WHERE a.capture_id IS NOT NULL
                         AND a.capture_id NOT IN (SELECT id FROM captures)"""
                ).fetchall()[0][0]
            assert dangling == 0, "an attempt points at a capture that is not there"
        for path in expand([str(archive)])[0]:
            if path not in seen:
                seen.add(path)
                assert len(list(read_pages(path))) == 1  # whole, or not there at all
    assert len(server.seen) >= DAEMON_KILLS
    # the next daemon run records what a kill left aside, and stops cleanly
    proc = start_ticker(cfg, "run", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    verify(db)
    # pages archived but not stored (killed in between) are in the archive: a backfill of
    # it reaches the same series as a fresh database loaded from the archive alone
    ticker_subprocess(cfg, "backfill", str(archive), check=True)
    fresh = write_config(tmp_path / "fresh")
    ticker_subprocess(fresh, "backfill", str(archive), check=True)
    got = ticker_subprocess(cfg, "export", check=True).stdout
    assert got == ticker_subprocess(fresh, "export", check=True).stdout
    assert got.count("\n") > 5 * DAEMON_KILLS
