"""Benchmark: one scrape cycle (fetch, archive, parse, store) against a bare requests.get of
the same page from the same local server, in the same run.

The server is the test suite's (tests/servers.py) on 127.0.0.1, serving a ticker page of
about 150 KB of HTML (a news home page's size; --kb to change it). Measured, each as the
median of --runs runs after a warm-up:

  1. bare:    requests.get(url).content (a new connection each time, as requests.get does)
  2. daemon:  one job of `ticker run`: scrape.scrape with the daemon's Session and state
              (conditional-GET validators kept in memory: the database is opened once)
  3. once:    `ticker scrape` minus the process start: scrape.scrape with a new Session
              and no state (the database is opened twice: validators, then the write)
  4. stages:  fetch, archive, parse and store (open, write, record, close) one by one

Each cycle's capture time moves on by 30 minutes, so every cycle stores a new capture.
Target (issue 3): daemon cycle <= 3x bare.

    .venv/bin/python tests/benchmarks/bench_scrape.py
    .venv/bin/python tests/benchmarks/bench_scrape.py --kb 10 --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from conftest import LOCAL_HTTP, write_config  # noqa: E402
from pages import html_page  # noqa: E402
from servers import LocalServer, html  # noqa: E402

from ticker import scrape as scrape_job  # noqa: E402
from ticker.archive import archive_page  # noqa: E402
from ticker.config import Config, load_config  # noqa: E402
from ticker.fetch import fetch, make_session  # noqa: E402
from ticker.models import (
    Attempt,  # noqa: E402
    Page,  # noqa: E402
)
from ticker.sources.ticker import TickerReader  # noqa: E402
from ticker.store import Store  # noqa: E402
from ticker.store.write import record_attempts, write_records  # noqa: E402


def timed(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def stages(config: Config, url: str, runs: int) -> dict[str, float]:
    """Median time of each stage of a cycle, called one by one."""
    source = config.sources[0]
    session = make_session(config.http)
    times: dict[str, list[float]] = {k: [] for k in ("fetch", "archive", "parse", "store")}
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(runs + 3):
        now = start + timedelta(minutes=30 * i)
        t0 = time.perf_counter()
        got = fetch(session, url, config.http)
        t1 = time.perf_counter()
        archive_page(
            config.archive_dir,
            url=url,
            source=source.name,
            captured_at=now,
            status=got.status,
            reason=got.reason,
            http_version=got.http_version,
            headers=got.headers,
            body=got.body,
        )
        t2 = time.perf_counter()
        page_ = Page(url, got.body, now, url, source.name, got.content_type)
        record = TickerReader().read(page_, source, now=now)
        t3 = time.perf_counter()
        attempt = Attempt(f"bench{i}", source.name, url, now, t3 - t0, "ok")
        with Store.open(config.store_path, config.lock_timeout) as store:
            write_records(store, [record], now)
            record_attempts(store, [attempt], now)
        t4 = time.perf_counter()
        if i >= 3:
            for k, a, b in (("fetch", t0, t1), ("archive", t1, t2), ("parse", t2, t3)):
                times[k].append(b - a)
            times["store"].append(t4 - t3)
    session.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=int, default=150, help="page size in KB (default 150)")
    ap.add_argument("--runs", type=int, default=30, help="measured runs per case")
    args = ap.parse_args()

    body = html_page(kb=args.kb).encode()
    with LocalServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.route("/", html(body))
        config = load_config(
            write_config(Path(tmp), url=server.url("/"), http=LOCAL_HTTP | {"timeout": 10})
        )
        url = server.url("/")
        start = datetime(2025, 3, 20, tzinfo=UTC)
        clock = (start + timedelta(minutes=30 * i) for i in range(10**6))

        state = scrape_job.ScrapeState()
        session = make_session(config.http)

        def daemon_cycle() -> None:
            [a] = scrape_job.scrape(config, next(clock), session=session, state=state)
            assert a.outcome == "ok", a.error

        def one_shot() -> None:
            [a] = scrape_job.scrape(config, next(clock))
            assert a.outcome == "ok", a.error

        def bare() -> None:
            assert len(requests.get(url, timeout=10).content) == len(body)

        results = {
            "bare requests.get": timed(bare, args.runs),
            "scrape cycle (daemon job)": timed(daemon_cycle, args.runs),
            "scrape once (new session)": timed(one_shot, args.runs),
        }
        session.close()
        parts = stages(config, url, args.runs)

    base = statistics.median(results["bare requests.get"])
    print(f"page: {len(body) / 1024:.0f} KB of HTML, {args.runs} runs each, medians")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"  {name:28} {med * 1000:8.1f} ms   {med / base:6.1f}x bare")
    print("  the cycle's stages, one by one:")
    for name, med in parts.items():
        print(f"    {name:26} {med * 1000:8.1f} ms   {med / base:6.1f}x bare")
    pre = parts["fetch"] + parts["archive"] + parts["parse"]
    print(f"    {'fetch+archive+parse':26} {pre * 1000:8.1f} ms   {pre / base:6.1f}x bare")
    ratio = statistics.median(results["scrape cycle (daemon job)"]) / base
    print(f"target: daemon cycle <= 3x bare: {'met' if ratio <= 3 else 'NOT met'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
