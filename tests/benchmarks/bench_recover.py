"""Benchmark: `ticker recover` against the stand-in archives (tests/webarchives.py) with
the rate limit off, against `ticker backfill` of the same pages from local files.

In one run:

  1. recover:  `ticker recover` of DAYS daily captures (default 3,650: ten years, one
               capture a day, each page its own) from the stand-in Wayback Machine on
               127.0.0.1, [recover] per_minute = 100000 (the limit off); its wall time,
               and its own CPU time per capture (the stand-in runs in this process)
  2. backfill: `ticker backfill` of the page archive recover wrote (the same pages, as
               local WARC files) into an empty database
  3. listing:  `ticker recover --dry-run` of a listing of ROWS CDX rows (default
               500,000: a large site), made on the fly by the stand-in; the resident
               memory of the process (its peak RSS)

Target (issue 10): recover <= 3x the backfill's wall time.

    .venv/bin/python tests/benchmarks/bench_recover.py
    .venv/bin/python tests/benchmarks/bench_recover.py --days 1000 --rows 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from webarchives import RowMaker, Snap, WebArchives, day_page, recover_config  # noqa: E402

ROOT = "https://timesca.com/"


def ticker_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ticker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ticker"]


def timed(args: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """Wall time, CPU time (user + sys) and peak RSS (KB) of one child process."""
    env = {k: v for k, v in os.environ.items() if k != "TICKER_CONFIG"}
    out = tempfile.TemporaryFile("w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{text}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3650)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-recover-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    first = date(2015, 1, 1)
    days = [first + timedelta(days=i) for i in range(args.days)]
    snaps = [Snap(ROOT, f"{d:%Y%m%d}120000", day_page(d)) for d in days]
    print(f"{len(snaps)} captures, {sum(len(s.body) for s in snaps) / len(snaps):.0f} bytes a page")

    with WebArchives(snaps, page_rows=5000) as archives:
        config = recover_config(work, archives)
        wall, cpu, _, out = timed([*ticker_cmd(), "--config", str(config), "recover"], work)
    print(out)
    os.sync()
    shutil.copy(config, work / "backfill.toml")
    text = (work / "backfill.toml").read_text().replace("ticker.duckdb", "backfilled.duckdb")
    (work / "backfill.toml").write_text(text)
    b_wall, b_cpu, _, b_out = timed(
        [*ticker_cmd(), "--config", str(work / "backfill.toml"), "backfill", str(work / "pages")],
        work,
    )
    print(b_out)

    ratio = wall / b_wall
    verdict = "ok" if ratio <= 3 else "over target"
    each = cpu / len(snaps) * 1e3
    print(f"ticker recover  {wall:6.2f} s  CPU {cpu:.2f} s ({each:.2f} ms a capture)")
    print(f"ticker backfill {b_wall:6.2f} s  CPU {b_cpu:.2f} s")
    print(f"ratio           {ratio:6.2f}x   (target <= 3x: {verdict})")

    listing = work / "listing"
    listing.mkdir()
    maker = RowMaker(ROOT, first, args.rows, per_day=max(1, args.rows // args.days))
    with WebArchives(maker, page_rows=5000) as archives:
        config = recover_config(listing, archives)
        l_wall, l_cpu, rss, l_out = timed(
            [*ticker_cmd(), "--config", str(config), "recover", "--dry-run"], listing
        )
    print("\n".join(l_out.splitlines()[:4]))
    print(
        f"listing of {args.rows} rows: {l_wall:.1f} s, CPU {l_cpu:.1f} s, "
        f"peak RSS {rss / 1024:.0f} MB"
    )
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
