"""Benchmark: `ticker serve` under load, beside the daemon's scrape cycle.

A store of a year and a month of the ticker's five pairs (ending today) is served by one
server process, started as the systemd unit runs it: nice 10, on one core (the unit's
CPUQuota=100%; here `taskset -c 1`). In the same run:

  1. API:    50 concurrent keep-alive clients for 30 s on /v2/rates?from=<a year ago>
  2. static: the same server answering a precomputed JSON body of the same size (an extra
             route added for the benchmark only), 50 clients for 30 s
  3. scrape: the daemon's scrape cycle (fetch from a local stand-in of the site, archive,
             parse, store), timed idle, and while phase 1's load runs again

Targets: no error; API throughput >= 0.5x static; scrape cycle under load <= 1.5x idle.
Also shown: p50/p99 latency, how long each database open of the scrape waited, and how
many times the server read the store meanwhile. Each phase runs in slices that alternate
(API, static, API, ...; idle, load, idle, ...), so that other work on a shared machine
weighs on both sides of a comparison alike.

The load comes from wrk (Debian: `apt-get install wrk`) at nice 19, standing in for
clients on other machines (BENCH_CLIENT_NICE changes it, BENCH_NICE the server's), or,
without wrk, from an asyncio client of this script's own (slower: it needs a core).

    .venv/bin/python tests/benchmarks/bench_serve.py
    .venv/bin/python tests/benchmarks/bench_serve.py --seconds 10 --clients 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: page builders
from conftest import write_config  # noqa: E402
from pages import html_page, text_page  # noqa: E402
from servers import LocalServer, html  # noqa: E402

from ticker import scrape as scrape_job  # noqa: E402
from ticker.config import load_config  # noqa: E402
from ticker.fetch import make_session  # noqa: E402
from ticker.serve import api  # noqa: E402
from ticker.serve.data import Series  # noqa: E402
from ticker.store import Store, read  # noqa: E402
from ticker.store import connect as connect_module  # noqa: E402

NICE = os.environ.get("BENCH_NICE", "10")  # the server, as deploy/ticker-serve.service runs it
# The load generator stands in for clients on other machines: it gets what is left.
CLIENT_NICE = os.environ.get("BENCH_CLIENT_NICE", "19")
# The server on one core (its unit caps it at one core's worth, CPUQuota=100%), so the
# daemon always has another.
PIN = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []
RATES = {"KGS": 0.01144, "KZT": 0.00194, "TJS": 0.10844, "UZS": 0.00008, "TMT": 0.28571}

# The server, with one extra route answering a body read once from a file.
LAUNCHER = """
import sys
import uvicorn
from starlette.responses import Response
from starlette.routing import Route
from ticker.config import load_config
from ticker.serve import listen, url_of
from ticker.serve.app import create_app

body = open(sys.argv[2], "rb").read()
app = create_app(load_config(sys.argv[1]))

async def static(request):
    return Response(body, media_type="application/json; charset=utf-8",
                    headers={"ETag": '"static"', "Cache-Control": "public, max-age=60"})

app.router.routes.append(Route("/bench/static", static))
sock = listen("127.0.0.1", 0)
print(url_of(sock), flush=True)
uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False)).run(sockets=[sock])
"""


@dataclass
class Load:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def build_store(root: Path, days: int) -> Path:
    """A project whose store holds `days` days up to today, loaded by `ticker backfill`."""
    dumps = root / "dumps"
    dumps.mkdir(parents=True)
    end = datetime.now(UTC).date()
    for i in range(days):
        day = end - timedelta(days=i)
        quotes = [
            (code, f"{rate * (1 + 0.03 * ((i * 7 + k * 13) % 17 - 8) / 8):.5f}", "0.1")
            for k, (code, rate) in enumerate(RATES.items())
        ]
        (dumps / f"{day}.txt").write_text(text_page(quotes, day=f"{day.day} {day:%B %Y}"))
    return dumps


def wrk(url: str, clients: int, seconds: int) -> Load:
    cmd = [
        "nice",
        "-n",
        CLIENT_NICE,
        "wrk",
        "-t2",
        f"-c{clients}",
        f"-d{seconds}s",
        "--latency",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert done, out
    took = float(done.group(2)) * (1 if done.group(3) == "s" else 0.001)

    def percentile(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*"):
        m = re.search(pattern, out)
        if m:
            errors += sum(int(n) for n in re.findall(r"\d+", m.group(0)))
    return Load(int(done.group(1)), errors, took, percentile("50"), percentile("99"))


def own_client(url: str, clients: int, seconds: int) -> Load:
    """Keep-alive GETs from `clients` asyncio connections for `seconds`."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    latencies: list[float] = []
    errors = 0

    async def one(deadline: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.monotonic() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(deadline) for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(run())
    took = time.monotonic() - started
    latencies.sort()
    return Load(
        len(latencies),
        errors,
        took,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )


def load(url: str, clients: int, seconds: int) -> Load:
    return (wrk if shutil.which("wrk") else own_client)(url, clients, seconds)


class OpenWaits:
    """Times the database opens the scrape makes (how long a writer waited for the file)
    while `timed` stands in for ticker.store.connect.connect."""

    original = staticmethod(connect_module.connect)

    def __init__(self) -> None:
        self.waits: list[float] = []

    def timed(self, *args: object, **kwargs: object) -> object:
        t0 = time.monotonic()
        try:
            return self.original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            self.waits.append(time.monotonic() - t0)

    def __enter__(self) -> OpenWaits:
        connect_module.connect = self.timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        connect_module.connect = OpenWaits.original


def _first(url: str) -> requests.Response:
    """The first answer, once the server listens."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return requests.get(url, timeout=30)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def reads(url: str) -> int:
    text = requests.get(url + "/metrics", timeout=10).text
    m = re.search(r'ticker_serve_store_reads_total\{result="ok"\} ([\d.]+)', text)
    return int(float(m.group(1))) if m else 0


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def merged(slices: list[Load]) -> Load:
    """Slices of one phase as one: counts and times added, the median p50 and the worst
    p99 of the slices (an upper bound of the whole's)."""
    return Load(
        sum(x.requests for x in slices),
        sum(x.errors for x in slices),
        sum(x.seconds for x in slices),
        statistics.median(x.p50_ms for x in slices),
        max(x.p99_ms for x in slices),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30, help="each load phase (default 30)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    ap.add_argument("--days", type=int, default=400, help="days in the store (default 400)")
    ap.add_argument(
        "--slices",
        type=int,
        default=3,
        help="phases are run in this many alternating slices, so that other work on the "
        "machine weighs on both sides alike (default 3)",
    )
    args = ap.parse_args()
    part = max(args.seconds // args.slices, 2)

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp, LocalServer() as site:
        root = Path(tmp)
        site.route("/", html(html_page()))
        config_path = write_config(
            root, url=site.url("/"), lock_timeout=30, http={"timeout": 10, "retries": 0}
        )
        config = load_config(config_path)
        dumps = build_store(root, args.days)
        loaded = subprocess.run(
            [sys.executable, "-m", "ticker", "--config", str(config_path), "backfill", str(dumps)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "files that could not be read: 0" in loaded.stdout, loaded.stdout

        year_ago = date.today() - timedelta(days=365)
        query = f"/v2/rates?from={year_ago}"
        # The precomputed body: the API's answer, made here by the same code from the
        # same store (and checked against the server's below).
        with Store.open(config.store_path, read_only=True) as store:
            series = Series(read.daily(store))
        today = datetime.now(UTC).date()
        wanted = api.rate_query({"from": f"{year_ago}"}, series, ["timesca"], today)
        body = api.json_body(api.records(wanted, series, today))
        body_file = root / "body.json"
        body_file.write_bytes(body)
        server = subprocess.Popen(
            [
                *PIN,
                "nice",
                "-n",
                NICE,
                sys.executable,
                "-c",
                LAUNCHER,
                str(config_path),
                str(body_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip().rstrip("/")
            answer = _first(url + query)
            assert answer.content == body == requests.get(url + "/bench/static").content
            records = answer.json()
            quotes = sorted({r["quote"] for r in records})
            print(
                f"store: {args.days} days of 5 pairs; {query}: {len(records)} records "
                f"({', '.join(quotes)}), {len(answer.content):,} bytes"
            )
            tool = "wrk" if shutil.which("wrk") else "asyncio client"
            print(
                f"load: {args.clients} keep-alive clients ({tool}, nice {CLIENT_NICE}), "
                f"{args.seconds} s a phase in {args.slices} alternating slices; "
                f"server nice {NICE}{' on CPU 1' if PIN else ''}; {os.cpu_count()} CPUs, "
                f"load average {os.getloadavg()[0]:.1f} at the start"
            )

            # 1. throughput: the API against the static body, slice by slice
            api_slices, static_slices = [], []
            for _ in range(args.slices):
                api_slices.append(load(url + query, args.clients, part))
                static_slices.append(load(url + "/bench/static", args.clients, part))
            on_api, static = merged(api_slices), merged(static_slices)

            # 2. the daemon's scrape cycle: idle, then under load, slice by slice
            session = make_session(config.http)
            state = scrape_job.ScrapeState()

            def cycle() -> float:
                t0 = time.perf_counter()
                [attempt] = scrape_job.scrape(
                    config, datetime.now(UTC), session=session, state=state
                )
                assert attempt.outcome == "ok", attempt.error
                return time.perf_counter() - t0

            def cycles_for(seconds: float, into: list[float]) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    into.append(cycle())
                    time.sleep(1.2)  # the server reads each change before the next cycle

            cycle()  # the first stores the page's quotes; the rest find them stored
            idle: list[float] = []
            busy: list[float] = []
            under_slices: list[Load] = []
            reads_before = reads(url)
            with OpenWaits() as idle_waits, OpenWaits() as busy_waits:
                for _ in range(args.slices):
                    connect_module.connect = idle_waits.timed  # type: ignore[assignment]
                    cycles_for(part, idle)
                    connect_module.connect = busy_waits.timed  # type: ignore[assignment]
                    runner = threading.Thread(
                        target=lambda: under_slices.append(load(url + query, args.clients, part))
                    )
                    runner.start()
                    time.sleep(1)  # the load is on
                    while runner.is_alive():
                        busy.append(cycle())
                        time.sleep(1.2)
                    runner.join()
            server_reads = reads(url) - reads_before
            session.close()
        finally:
            server.terminate()
            server.wait()

    under = merged(under_slices)
    ratio = on_api.rate / static.rate
    idle_med, busy_med = statistics.median(idle), statistics.median(busy)
    print()
    print(f"{'':28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in (
        ("API (/v2/rates, a year)", on_api),
        ("static body, same size", static),
        ("API during the scrapes", under),
    ):
        print(f"{name:28}{r.rate:9.0f}{r.p50_ms:9.1f}{r.p99_ms:9.1f}{r.errors:8d}")
    print()
    print(f"API / static throughput      {ratio:.2f}x   (target >= 0.5x: {verdict(ratio >= 0.5)})")
    print(f"scrape cycle idle            {idle_med * 1000:.0f} ms  (median of {len(idle)})")
    print(
        f"scrape cycle under load      {busy_med * 1000:.0f} ms  (median of {len(busy)}; "
        f"max {max(busy) * 1000:.0f} ms)"
    )
    slow = busy_med / idle_med
    print(f"under load / idle            {slow:.2f}x   (target <= 1.5x: {verdict(slow <= 1.5)})")
    print(
        f"the scrape's database opens waited: idle max {max(idle_waits.waits) * 1000:.0f} ms, "
        f"under load max {max(busy_waits.waits) * 1000:.0f} ms, median "
        f"{statistics.median(busy_waits.waits) * 1000:.0f} ms ({len(busy_waits.waits)} opens; "
        f"the server read the store {server_reads} times meanwhile)"
    )
    errors = on_api.errors + static.errors + under.errors
    print(f"errors                       {errors}   (target 0: {verdict(errors == 0)})")


if __name__ == "__main__":
    main()
