"""Benchmark: the daemon's resident memory after 1,000 scrape cycles against after 10.

Builds the daemon as `ticker run` does (scheduler.build_scheduler, APScheduler imported)
and runs its scrape job (Daemon.scrape_job: fetch, archive, parse, store, attempt
recorded, one log line) back to back, without waiting for the schedule, against the test
suite's local server (tests/servers.py). The clock moves on 30 minutes per cycle, so
every cycle stores a capture, as `ticker run` would over three weeks. The chart job is
left out of the loop (it runs only after new data and once a day): the figure is the
scrape loop's, and the run checks that it never imports matplotlib; one chart job after
the loop shows what matplotlib adds. RSS is read from /proc/self/status (VmRSS,
the current size).

Targets (issue 3): RSS after 1,000 cycles <= 1.1x RSS after 10 cycles, and < 100 MB.

    .venv/bin/python tests/benchmarks/bench_daemon_memory.py
    .venv/bin/python tests/benchmarks/bench_daemon_memory.py --cycles 200
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import LOCAL_HTTP, write_config  # noqa: E402
from pages import html_page  # noqa: E402
from servers import LocalServer, html  # noqa: E402

from ticker import status as status_job  # noqa: E402
from ticker.config import load_config  # noqa: E402
from ticker.scheduler import Daemon, build_scheduler  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--kb", type=int, default=150, help="page size in KB (default 150)")
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING)  # the per-job INFO lines are not measured
    body = html_page(kb=args.kb).encode()
    marks = sorted({10, 100, args.cycles // 2, args.cycles})
    with LocalServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.route("/", html(body))
        config = load_config(
            write_config(Path(tmp), url=server.url("/"), http=LOCAL_HTTP | {"timeout": 10})
        )
        start = datetime(2025, 3, 20, tzinfo=UTC)
        cycle = 0
        daemon = Daemon(config, clock=lambda: start + timedelta(minutes=30 * cycle))
        build_scheduler(config, daemon, start)  # as `ticker run` does (not started here)
        draw_charts = daemon._charts
        daemon._charts = lambda reason: None  # type: ignore[method-assign]
        seen: dict[int, float] = {}
        t0 = time.monotonic()
        for cycle in range(1, args.cycles + 1):
            daemon.scrape_job()
            if cycle in marks:
                gc.collect()
                seen[cycle] = rss_mb()
                print(f"after {cycle:5} cycles: RSS {seen[cycle]:6.1f} MB", flush=True)
        elapsed = time.monotonic() - t0
        loaded_matplotlib = "matplotlib" in sys.modules
        draw_charts("after the loop")
        gc.collect()
        with_charts = rss_mb()
        daemon.close()
        rows = status_job.status(config, start + timedelta(minutes=30 * args.cycles))
        captures = len(list(config.archive_dir.glob("*/*.warc.gz")))

    first, last = seen[10], seen[args.cycles]
    print(
        f"page {len(body) / 1024:.0f} KB; {args.cycles} cycles in {elapsed:.0f} s "
        f"({elapsed / args.cycles * 1000:.0f} ms each); {captures} pages archived; "
        f"last outcome {rows[0].last_outcome}"
    )
    print(f"matplotlib imported during the loop: {loaded_matplotlib}")
    print(
        f"after one chart job: RSS {with_charts:6.1f} MB "
        f"(matplotlib imported: {'matplotlib' in sys.modules})"
    )
    ratio = last / first
    ok = ratio <= 1.1 and last < 100 and not loaded_matplotlib
    print(
        f"target: RSS({args.cycles}) <= 1.1x RSS(10) and < 100 MB: "
        f"{'met' if ok else 'NOT met'} ({ratio:.3f}x, {last:.1f} MB)"
    )


if __name__ == "__main__":
    main()
