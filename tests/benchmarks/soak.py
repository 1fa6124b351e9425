"""Soak: `ticker run` for ten minutes against a local server that rotates through every
fault a server or the world can cause, while the daemon is signalled, killed and
restarted; then every page the server sent whole must be stored or reported.

The daemon is a real subprocess, `python -m ticker --config ... run`, scraping every 1 or
2 s (drawn at each start; jitter 0). The server (tests/servers.py, threads of this
process, on 127.0.0.1) serves healthy pages for a few seconds (the store is made), then
stages one fault of FAULTS at a time, with a few seconds of healthy pages after each, in
a new shuffled order each round (`--fault NAME` stages only the faults so named):

  - a body and headers trickled a byte a second; pages in windows-1251 with 0x95 bullets
    (the charset only in the HTTP header), in UTF-16 with a BOM, dated far in the
    future, with ticker copies that disagree (a 300 KB block); a page under an ETag,
    answered with 304s, while the store is moved aside (once); the store's disk full (a
    small tmpfs; skipped with a note where none can be mounted); the store held by
    another process, and the daemon killed while it waits for it; a garbage file in the
    spool `.pending/`;
  - connection refused (nothing listening), no answer, 500 then 200, 429 with a
    Retry-After (then 200, or one too long), 404, a redirect loop, a body cut short, a
    50 MB body, a binary body, a page without the ticker, a page whose ticker markup
    changed.

Every 15 to 45 s the daemon also gets SIGKILL, SIGTERM, SIGHUP or SIGINT at a random
moment and is started again; a stop signal must be logged and end in exit code 0.

Every 200 the server sends whole is a page of its own (a unique date and rates, or unique
bytes; only the page under an ETag is sent again unchanged), and server.log lists every
reply (time, fault, status, bytes, whether it went out whole, date and rates). At the
end the daemon is stopped, `ticker scrape` runs once with the server healthy (it stores
what waits in `.pending/`), and each page sent whole must be
  stored     its quotes in a store (the one moved aside counts), or
  reported   by an attempt whose outcome says why it is not (bad_date, inconsistent,
             no_ticker, not_html, a fetch cut short...), or by `ticker status` as waiting
             in `.pending/` or unstored in the archive, or
  killed     in the memory of a daemon killed (SIGKILL) before it could archive it.
Anything else is LOST. Nothing may be stored that the server did not send whole, and
`ticker export` must show exactly what each store holds. Exit code 0 when nothing is
lost, every check holds and the daemon's stderr holds no traceback.

    .venv/bin/python tests/benchmarks/soak.py                      # 10 minutes
    .venv/bin/python tests/benchmarks/soak.py --minutes 3 --seed 7 --keep /tmp/soak
"""

from __future__ import annotations

import argparse
import bisect
import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
from pages import changed_markup_page, html_page, no_ticker_page  # noqa: E402
from servers import (  # noqa: E402
    DRIPS,
    LocalServer,
    drip,
    hang,
    html,
    redirect,
    status,
    stream,
    truncated,
)
from warcio.archiveiterator import ArchiveIterator  # noqa: E402

TZ = ZoneInfo("Asia/Almaty")


def page(quotes: Any, day: str) -> bytes:
    """A page of the site as served: the ticker's quotes and the date line."""
    return html_page(quotes, day).encode()


TIMEOUT, RETRIES, DEADLINE, LOCK_TIMEOUT = 2, 2, 8, 3  # the daemon's [http] and [store]
MAX_BYTES = 5 * 1024 * 1024
HEALTHY_SECONDS = 4  # of healthy pages after each fault
STOP_WAIT = 45  # a stop signal lets the running job finish (30 s at most), then exit 0
SIGNAL_EVERY = (15, 45)  # seconds between two signals to the daemon
SIGNALS = {"SIGKILL": 4, "SIGTERM": 3, "SIGHUP": 2, "SIGINT": 1}  # and their weights
TMPFS_SIZE = "64m"
# What a page sent under these faults must become: refused with this outcome. A page
# sent under any other fault must be stored (at once, or from the spool later).
REFUSALS = ("bad_date", "inconsistent", "no_ticker", "not_html")


# --- pages: each one sent whole is one of its own --------------------------------------

Quotes = tuple[tuple[str, str, str], ...]
TODAY = datetime.now(TZ).date() - timedelta(days=1)  # page n is dated n days before


def quotes_of(n: int) -> Quotes:
    """Page n's rates and changes (its date alone tells it apart; these vary too)."""

    def change(k: int) -> str:
        return f"{(k % 199 - 99) / 100:g}"

    return (
        ("KGS/USD", f"0.01{n % 1000:03d}", change(n)),
        ("KZT/USD", f"0.00{100 + n % 900:03d}", change(n + 1)),
        ("TJS/USD", f"0.09{n * 7 % 1000:03d}", change(n + 2)),
        ("UZS/USD", "0.00008", "0"),
        ("TMT/USD", f"0.28{n * 3 % 1000:03d}", change(n + 3)),
    )


def printed(day: date) -> str:
    return f"{day.day:02d} {day:%B %Y}"


def iso(day: str | None) -> str:
    return datetime.strptime(day, "%d %B %Y").date().isoformat() if day else ""


def utf8_page(q: Quotes, day: str) -> tuple[bytes, str]:
    return page(q, day), "text/html; charset=utf-8"


def cp1251_page(q: Quotes, day: str) -> tuple[bytes, str]:
    """windows-1251 with "•" bullets (byte 0x95) and no <meta charset>: only the HTTP
    header names the charset."""
    items = "".join(f"<li>\u2022 {p} = {r} {c}%</li>" for p, r, c in q) * 8
    text = (
        "<!DOCTYPE html><html><head><title>Курс валют</title></head><body><header><ul>"
        f"{items}</ul><div>{day}</div></header><main><p>Курс тенге к доллару: новости дня."
        "</p></main></body></html>"
    )
    return text.encode("cp1251"), "text/html; charset=windows-1251"


def utf16_page(q: Quotes, day: str) -> tuple[bytes, str]:
    """UTF-16 with its byte-order mark; the HTTP header names no charset."""
    text = page(q, day).decode().replace('<meta charset="utf-8">', '<meta charset="utf-16">')
    return text.encode("utf-16"), "text/html"


def disagreeing_page(q: Quotes, day: str) -> tuple[bytes, str]:
    """The page's own ticker and, in the same marquee, 9,000 KGS/USD lines that disagree
    with it and with each other: about 300 KB."""
    block = "".join(f"<li>KGS/USD = 0.{10000 + i:05d} 0.1%</li>" for i in range(9000))
    marquee = b'<ul class="marquee">'
    return page(q, day).replace(marquee, marquee + block.encode()), "text/html; charset=utf-8"


# --- the server: one fault at a time, every reply logged -------------------------------


@dataclass
class Sent:
    """A 200 with a page: what it was, when it went out, and whether whole."""

    no: int
    fault: str
    expect: str  # "stored", or the outcome that must refuse it
    sha1: str
    day: str | None
    quotes: Quotes
    t0: float
    t1: float = 0.0
    whole: bool = False


@dataclass
class Request:
    """One request, answered as the fault being staged says."""

    site: Site
    fault: Fault
    handler: Any
    n: int  # the request's number within this fault's period

    def page(
        self,
        body: bytes,
        ctype: str,
        no: int,
        quotes: Quotes = (),
        day: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a page and log it: whole when every byte was handed to the socket."""
        expect = self.fault.outcome if self.fault.outcome in REFUSALS else "stored"
        sha1 = hashlib.sha1(body).hexdigest()
        sent = Sent(no, self.fault.name, expect, sha1, day, quotes, time.time())
        self.site.register(sent)
        try:
            html(body, 200, headers, ctype=ctype)(self.handler)
            sent.whole = True
        except OSError:
            self.handler.close_connection = True
        sent.t1 = time.time()
        what = " ".join([day or f"page {no}", *(f"{p}={r},{c}" for p, r, c in quotes)])
        self.site.log_reply(sent.t0, self.fault, 200, len(body), sent.whole, what)

    def other(self, reply: Callable[[Any], None], code: int | None, note: str = "") -> None:
        """A reply that is not a page sent whole: an error, a trickle, a cut body."""
        t0 = time.time()
        try:
            reply(self.handler)
        except OSError:
            self.handler.close_connection = True
        self.site.log_reply(t0, self.fault, code, None, False, note)


class Site:
    """The local server, on one port: it can stop listening and come back."""

    def __init__(self, log: Path) -> None:
        self.lock = threading.Lock()
        self.fault: Fault = HEALTHY
        self.n = 0
        self.pages: list[Sent] = []
        self.requests: Counter[str] = Counter()
        self.arrivals: list[tuple[float, str]] = []  # each request: when, under which fault
        self.next_no = 0
        self.log = log.open("w", buffering=1)
        self.server: LocalServer | None = None
        self.port = 0
        self.listen()
        self.etag: tuple[str, bytes, str, Quotes, str, int] | None = None
        self.after_move: Counter[int] = Counter()  # replies to the ETag page since then
        self.moved_page: str | None = None  # sha1 of the ETag page at the move

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def listen(self) -> None:
        self.server = LocalServer(port=self.port)
        self.server.route("/", self.reply)
        self.server.__enter__()
        self.port = self.server.port

    def stop_listening(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def stage(self, fault: Fault) -> None:
        with self.lock:
            self.fault, self.n = fault, 0

    def reply(self, handler: Any) -> None:
        with self.lock:
            fault, n, down = self.fault, self.n, self.server is None
            self.n += 1
            self.requests[fault.name] += 1
            self.arrivals.append((time.time(), fault.name))
        if down:  # a server gone down drops its kept-alive connections too
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            self.log_reply(time.time(), fault, None, None, False, "connection dropped")
            return
        fault.serve(Request(self, fault, handler, n))

    def page_no(self) -> int:
        with self.lock:
            self.next_no += 1
            return self.next_no

    def register(self, sent: Sent) -> None:
        with self.lock:
            self.pages.append(sent)

    def log_reply(
        self, t0: float, fault: Fault, code: int | None, size: int | None, whole: bool, note: str
    ) -> None:
        stamp = datetime.fromtimestamp(t0).strftime("%H:%M:%S.%f")[:-3]
        shown = "-" if size is None else str(size)
        line = f"{stamp} {fault.name:<24} {code or '-'} {shown:>8} {whole and 'whole' or '-'}"
        with self.lock:
            self.log.write(f"{line} {note}\n")


# --- serving each fault ----------------------------------------------------------------


def serve_page(
    req: Request,
    build: Callable[[Quotes, str], tuple[bytes, str]] = utf8_page,
    day_of: Callable[[int], date] = lambda n: TODAY - timedelta(days=n),
) -> None:
    no = req.site.page_no()
    q, day = quotes_of(no), printed(day_of(no))
    body, ctype = build(q, day)
    req.page(body, ctype, no, q, day)


def serve_healthy(req: Request) -> None:
    serve_page(req)


def serve_cp1251(req: Request) -> None:
    serve_page(req, cp1251_page)


def serve_utf16(req: Request) -> None:
    serve_page(req, utf16_page)


def serve_far_future(req: Request) -> None:
    serve_page(req, day_of=lambda n: date(9000, 1, 1) + timedelta(days=n))


def serve_disagreeing(req: Request) -> None:
    serve_page(req, disagreeing_page)


def serve_no_ticker(req: Request) -> None:
    no = req.site.page_no()
    body = no_ticker_page().encode().replace(b"</body>", f"<!-- page {no} --></body>".encode())
    req.page(body, "text/html; charset=utf-8", no)


def serve_changed_markup(req: Request) -> None:
    no = req.site.page_no()
    body = changed_markup_page(quotes_of(no), printed(TODAY - timedelta(days=no))).encode()
    req.page(body, "text/html; charset=utf-8", no)


def serve_binary(req: Request) -> None:
    no = req.site.page_no()
    body = no.to_bytes(8, "big") + bytes(range(256)) * 256
    # Declared as HTML on every other page: ticker must look at the bytes themselves.
    req.page(body, "application/octet-stream" if no % 2 else "text/html", no)


def serve_etag(req: Request) -> None:
    """One page under an ETag: 304 to a request that names it, else the page whole."""
    assert req.site.etag is not None
    etag, body, ctype, q, day, no = req.site.etag
    since_move = req.site.moved_page == hashlib.sha1(body).hexdigest()
    if req.handler.headers.get("If-None-Match") == etag:
        req.site.after_move[304] += since_move

        def not_modified(h: Any) -> None:
            h.send_response(304)
            h.send_header("ETag", etag)
            h.end_headers()

        req.other(not_modified, 304, f"ETag {etag}")
    else:
        req.site.after_move[200] += since_move
        req.page(body, ctype, no, q, day, headers={"ETag": etag})


def serve_500_then_200(req: Request) -> None:
    if req.n % 2 == 0:
        req.other(status(500), 500)
    else:
        serve_page(req)


def serve_429_then_200(req: Request) -> None:
    if req.n % 2 == 0:
        req.other(status(429, {"Retry-After": "1"}), 429, "Retry-After: 1")
    else:
        serve_page(req)


def serve_429_too_long(req: Request) -> None:
    req.other(status(429, {"Retry-After": "3600"}), 429, "Retry-After: 3600")


def serve_404(req: Request) -> None:
    req.other(status(404), 404)


def serve_redirect_loop(req: Request) -> None:
    req.other(redirect("/"), 302, "Location: /")


def serve_cut_short(req: Request) -> None:
    no = req.site.page_no()
    day = printed(TODAY - timedelta(days=no))
    body = page(quotes_of(no), day)
    req.other(truncated(body[: len(body) // 2], len(body)), 200, f"half of {day}")


def serve_50_mb(req: Request) -> None:
    req.other(stream(50 * 1024 * 1024, declare_length=True), 200, "50 MB")


def serve_no_answer(req: Request) -> None:
    req.other(hang(DEADLINE + 4), None, "no answer")


def serve_dripped_body(req: Request) -> None:
    head = DRIPS["body-with-length"][0]
    req.other(drip(head, b"x", every=1.0, seconds=DEADLINE + 4), 200, "body: a byte a second")


def serve_dripped_headers(req: Request) -> None:
    head, byte = DRIPS["headers"]
    req.other(drip(head, byte, every=1.0, seconds=DEADLINE + 4), 200, "headers: a byte a second")


# --- the world around the daemon: its store's disk, its lock, its spool ----------------


class World:
    """The store (on a small tmpfs when one can be mounted) and what can befall it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mount = work / "store"
        self.mount.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(self.mount)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            self.note = done.stderr.strip() or f"mount: exit code {done.returncode}"
            self.tmpfs = done.returncode == 0
        except OSError as exc:
            self.note, self.tmpfs = str(exc), False
        self.store = self.mount / "ticker.duckdb"
        self.pending = work / "pages" / ".pending"
        self.filler = self.mount / "filler"
        self.holder: subprocess.Popen[str] | None = None
        self.moved: list[Path] = []
        self.garbage: list[Path] = []

    def release(self) -> None:
        """The process holding the store lets go of it."""
        if self.holder is not None:
            assert self.holder.stdin is not None
            self.holder.stdin.close()
            try:
                self.holder.wait(30)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
            self.holder = None

    def close(self, keep: bool) -> None:
        self.release()
        self.filler.unlink(missing_ok=True)
        if self.tmpfs:
            if keep:  # the tmpfs goes away: keep a copy of the stores
                shutil.copytree(self.mount, self.work / "store-copy")
            subprocess.run(["umount", "-l", str(self.mount)], check=False)


def fill_disk(soak: Soak) -> None:
    with open(soak.world.filler, "ab", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def free_disk(soak: Soak) -> None:
    soak.world.filler.unlink(missing_ok=True)


def lock_store(soak: Soak) -> None:
    """Another process holds the store, opened read-write (as a backfill would); it
    gives up after 5 s when the store cannot be opened."""
    code = (
        "import duckdb, sys, time\n"
        "ends = time.monotonic() + 5\n"
        "while True:\n"
        "    try: con = duckdb.connect(sys.argv[1]); break\n"
        "    except duckdb.Error:\n"
        "        if time.monotonic() > ends: sys.exit('cannot hold the store')\n"
        "        time.sleep(0.02)\n"
        "sys.stdin.read(); con.close()\n"
    )
    cmd = [sys.executable, "-c", code, str(soak.world.store)]
    soak.world.holder = subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True)


def kill_while_locked(soak: Soak) -> None:
    """SIGKILL while a job has fetched and archived a page and waits for the store: half
    of [store] lock_timeout after the next page went out whole (or after 6 s)."""
    soak.daemon.start()  # unless it runs already
    t0 = time.time()
    while time.time() < t0 + 6:
        sent = [p.t1 for p in soak.site.pages if p.whole and p.t1 > t0]
        if sent:
            time.sleep(max(0.0, sent[0] + LOCK_TIMEOUT / 2 - time.time()))
            break
        time.sleep(0.05)
    soak.signal("SIGKILL", "while the store is locked", restart_after=0.5)


def unlock_store(soak: Soak) -> None:
    soak.world.release()


def new_etag_page(soak: Soak) -> None:
    no = soak.site.page_no()
    q, day = quotes_of(no), printed(TODAY - timedelta(days=no))
    body, ctype = utf8_page(q, day)
    soak.site.etag = (f'"soak-{no}"', body, ctype, q, day, no)


def move_store_aside(soak: Soak) -> None:
    """Once: move the store aside between two jobs, under the lock DuckDB itself takes,
    so no job has it open; a WAL a killed job left goes with it."""
    world = soak.world
    if world.moved or not world.store.exists():
        return
    aside = world.mount / "ticker.aside.duckdb"
    fd = os.open(world.store, os.O_RDWR)
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                time.sleep(0.02)
        os.rename(world.store, aside)
        if Path(f"{world.store}.wal").exists():
            os.rename(f"{world.store}.wal", f"{aside}.wal")
    finally:
        os.close(fd)
    world.moved.append(aside)
    assert soak.site.etag is not None
    soak.site.moved_page = hashlib.sha1(soak.site.etag[1]).hexdigest()
    soak.event(f"store moved aside to {aside.name}")


def spool_garbage(soak: Soak) -> None:
    """A spool file that is no attempt: random bytes, or an attempt's JSON torn short."""
    world = soak.world
    world.pending.mkdir(parents=True, exist_ok=True)
    path = world.pending / f"{uuid.uuid4().hex}.json"
    torn = b'{"already": 0, "duration": 0.1, "error": null, "etag": "x", "final_url": '
    path.write_bytes(torn if len(world.garbage) % 2 else os.urandom(300))
    world.garbage.append(path)


def stop_listening(soak: Soak) -> None:
    soak.site.stop_listening()


def listen_again(soak: Soak) -> None:
    soak.site.listen()


# --- the fault table -------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    seconds: float
    serve: Callable[[Request], None]
    outcome: str  # what the daemon should record for it (shown beside what it did)
    start: Callable[[Soak], None] | None = None
    middle: Callable[[Soak], None] | None = None  # halfway through its period
    end: Callable[[Soak], None] | None = None
    tmpfs: bool = False  # staged only where a tmpfs could be mounted


HEALTHY = Fault("healthy", HEALTHY_SECONDS, serve_healthy, "ok")
FAULTS: tuple[Fault, ...] = (
    # pages, the store and its disk
    Fault("drip: body 1 B/s", DEADLINE + 4, serve_dripped_body, "timeout"),
    Fault("drip: headers 1 B/s", DEADLINE + 4, serve_dripped_headers, "timeout"),
    Fault("windows-1251, 0x95", 5, serve_cp1251, "ok"),
    Fault("far-future date", 5, serve_far_future, "bad_date"),
    Fault("UTF-16 with BOM", 5, serve_utf16, "ok"),
    Fault("copies disagree 300 KB", 5, serve_disagreeing, "inconsistent"),
    Fault("ETag 304, store moved", 14, serve_etag, "not_modified", new_etag_page, move_store_aside),
    Fault("disk full", 15, serve_healthy, "store_error", fill_disk, end=free_disk, tmpfs=True),
    Fault(
        "store locked, SIGKILL",
        10,
        serve_healthy,
        "store_locked",
        lock_store,
        kill_while_locked,
        unlock_store,
    ),
    Fault("garbage spool file", 3, serve_healthy, "ok", spool_garbage),
    # the classic scrape faults
    Fault(
        "connection refused", 8, serve_healthy, "connection_error", stop_listening, end=listen_again
    ),
    Fault("no answer", 8, serve_no_answer, "timeout"),
    Fault("500 then 200", 5, serve_500_then_200, "ok"),
    Fault("429 then 200", 6, serve_429_then_200, "ok"),
    Fault("429, Retry-After 1 h", 4, serve_429_too_long, "http_error"),
    Fault("404", 4, serve_404, "http_error"),
    Fault("redirect loop", 4, serve_redirect_loop, "redirect_loop"),
    Fault("body cut short", 5, serve_cut_short, "truncated"),
    Fault("50 MB body", 6, serve_50_mb, "too_large"),
    Fault("binary body", 4, serve_binary, "not_html"),
    Fault("no ticker", 4, serve_no_ticker, "no_ticker"),
    Fault("ticker markup changed", 4, serve_changed_markup, "no_ticker"),
)


# --- the daemon: started, signalled, killed, started again -----------------------------


@dataclass
class Life:
    """One run of the daemon, from its start to its exit."""

    no: int
    pid: int
    started: float
    scrape: int
    log: Path
    ended: float | None = None
    how: str = ""  # the signal that ended it, or "died"
    rc: int | None = None
    peak_kb: int = 0  # VmHWM
    problem: str = ""  # an end that is not what the README says


class Daemon:
    """`ticker run` as a subprocess, one run at a time, its stderr in logs/."""

    def __init__(self, work: Path, config: Callable[[int], Path], rng: random.Random) -> None:
        self.work, self.config, self.rng = work, config, rng
        self.lock = threading.RLock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[Life] = []
        self.signals: Counter[str] = Counter()
        threading.Thread(target=self._sample, daemon=True).start()

    def start(self) -> None:
        with self.lock:
            if self.proc is not None:
                return
            scrape = self.rng.choice((1, 2))
            log = self.work / "logs" / f"daemon-{len(self.lives) + 1:02d}.log"
            log.parent.mkdir(exist_ok=True)
            cmd = [sys.executable, "-m", "ticker", "--config", str(self.config(scrape)), "run"]
            with log.open("wb") as err:
                self.proc = subprocess.Popen(
                    cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=self.work, env=_env()
                )
            self.lives.append(Life(len(self.lives) + 1, self.proc.pid, time.time(), scrape, log))

    def stop(self, name: str) -> Life | None:
        """Send the signal and wait for the exit. A stop signal must be logged and end in
        exit code 0 (after the running job, within the grace the README gives)."""
        with self.lock:
            proc, life = self.proc, self.lives[-1]
            if proc is None:
                return None
            if name != "SIGKILL":
                # Until `ticker run` has set its handlers (its first log line) a stop
                # signal has its default effect: that window is not what is tested here.
                ready = time.monotonic() + 15
                while "ticker run: scraping" not in life.log.read_text(errors="replace"):
                    if time.monotonic() > ready or proc.poll() is not None:
                        break
                    time.sleep(0.05)
            self.signals[name] += 1
            proc.send_signal(getattr(signal, name))
            try:
                life.rc = proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                life.rc = proc.wait()
                life.problem = f"{name}: still running after {STOP_WAIT} s; killed"
            life.ended, life.how, self.proc = time.time(), name, None
            if name != "SIGKILL" and not life.problem:
                logged = f"{name}: stopping after the running job" in life.log.read_text()
                if life.rc != 0:
                    life.problem = f"{name}: exit code {life.rc}"
                elif not logged:
                    life.problem = f"{name}: no log line names the signal"
            return life

    def check(self) -> Life | None:
        """An exit nobody asked for: recorded, and the daemon started again."""
        if not self.lock.acquire(blocking=False):
            return None  # a stop is under way
        try:
            if self.proc is None or self.proc.poll() is None:
                return None
            life = self.lives[-1]
            life.ended, life.how, life.rc = time.time(), "died", self.proc.returncode
            life.problem = f"exited by itself with code {life.rc}"
            self.proc = None
            self.start()
            return life
        finally:
            self.lock.release()

    def kill(self) -> None:
        with self.lock:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
                self.proc = None

    def _sample(self) -> None:
        """The peak resident size (VmHWM) of each run, read while it lives."""
        while True:
            proc, life = self.proc, (self.lives[-1] if self.lives else None)
            if proc is not None and life is not None and life.pid == proc.pid:
                try:
                    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            life.peak_kb = max(life.peak_kb, int(line.split()[1]))
                except OSError:
                    pass  # it has just exited
            time.sleep(0.25)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TICKER_CONFIG", None)
    return env


def write_config(path: Path, store: Path, url: str, scrape: int) -> Path:
    path.write_text(
        f'[store]\npath = "{store}"\nlock_timeout = {LOCK_TIMEOUT}\n\n'
        f'[[sources]]\nname = "timesca"\nurl = "{url}"\ntimezone = "Asia/Almaty"\n\n'
        f"[http]\ntimeout = {TIMEOUT}\nretries = {RETRIES}\nbackoff = 0\n"
        f"max_retry_after = 2\ndeadline = {DEADLINE}\nmax_bytes = {MAX_BYTES}\n\n"
        '[archive]\ndir = "pages"\n\n'
        f"[schedule]\nscrape = {scrape}\njitter = 0\ncharts = 3600\nmisfire_grace_time = 60\n\n"
        # Each page is dated a day before the last: with a short window the charts are
        # redrawn for the first 60 pages, then found unchanged (not redrawn) after each.
        '[charts]\ndir = "charts"\nwindow_days = 60\n',
        encoding="utf-8",
    )
    return path


# --- the run ---------------------------------------------------------------------------


class Soak:
    def __init__(self, work: Path, minutes: float, seed: int, only: list[str]) -> None:
        self.work, self.minutes = work, minutes
        self.faults = [f for f in FAULTS if not only or any(o in f.name for o in only)]
        self.rng = random.Random(seed)
        self.world = World(work)
        self.site = Site(work / "server.log")
        self.daemon = Daemon(work, self.config, random.Random(seed + 1))
        self.events: list[tuple[float, str]] = []
        self.periods: list[tuple[float, float, str]] = []  # each fault staged, when
        self.problems: list[str] = []
        self.ending = threading.Event()
        self.started = time.time()
        self.rounds = 0

    def config(self, scrape: int = 1) -> Path:
        return write_config(self.work / "config.toml", self.world.store, self.site.url, scrape)

    def event(self, what: str) -> None:
        self.events.append((time.time(), what))
        print(f"{self.clock()} {what}", flush=True)

    def clock(self, t: float | None = None) -> str:
        s = int((t or time.time()) - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"

    def run(self) -> None:
        if not self.world.tmpfs:
            print(f"note: no tmpfs for the store ({self.world.note}); no full disk staged")
        self.daemon.start()
        signaller = threading.Thread(target=self.signal_at_random, daemon=True)
        signaller.start()
        until = self.started + self.minutes * 60
        self.stage(HEALTHY, until)  # the store is made before the first fault
        while time.time() < until:
            self.rounds += 1
            order = [f for f in self.faults if self.world.tmpfs or not f.tmpfs]
            self.rng.shuffle(order)
            for fault in order:
                for staged in (fault, HEALTHY):
                    if time.time() < until:
                        self.stage(staged, until)
        self.ending.set()
        signaller.join()
        self.stage(HEALTHY, time.time())
        self.daemon.stop("SIGTERM")
        self.event(f"daemon stopped, after {self.rounds} rounds of the fault table")

    def stage(self, fault: Fault, until: float) -> None:
        """Stage one fault for its time: its start, middle and end events around it."""
        t0 = time.time()
        if fault is not HEALTHY:
            print(f"{self.clock()} fault: {fault.name}", flush=True)
        if fault.start:
            fault.start(self)
        self.site.stage(fault)
        ends = min(t0 + fault.seconds, until)
        middle = fault.middle
        while (now := time.time()) < ends:
            if middle and now >= t0 + fault.seconds / 2:
                middle(self)
                middle = None
            died = self.daemon.check()
            if died:
                self.event(f"daemon run {died.no} {died.problem}; started again")
            time.sleep(0.1)
        if fault.end:
            fault.end(self)
        self.periods.append((t0, time.time(), fault.name))

    def signal(self, name: str, why: str = "", restart_after: float = 1.0) -> None:
        """Send the daemon a signal, wait for its exit, start it again."""
        t0 = time.time()
        life = self.daemon.stop(name)
        if life is not None:
            took = time.time() - t0
            problem = f"; {life.problem}" if life.problem else ""
            self.event(
                f"{name} {why + ' ' if why else ''}to daemon run {life.no}: exit code "
                f"{life.rc} after {took:.1f} s{problem}"
            )
        time.sleep(restart_after)
        self.daemon.start()

    def signal_at_random(self) -> None:
        """Every 15 to 45 s, a signal at a random moment; drawn from a shuffled bag that
        holds each signal as often as its weight, so ten in a row send them all."""
        rng = random.Random(self.rng.random())
        bag: list[str] = []
        while not self.ending.wait(rng.uniform(*SIGNAL_EVERY)):
            if not bag:
                bag = [name for name, weight in SIGNALS.items() for _ in range(weight)]
                rng.shuffle(bag)
            self.signal(bag.pop(), restart_after=rng.uniform(0.2, 2.0))


# --- the end: what the server sent against what ticker stored or reported --------------


def ticker(work: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ticker", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=_env(), timeout=300)


Quote = tuple[str, str, str, str]  # pair, ISO date, rate, change as printed


@dataclass
class StoreData:
    """One DuckDB file, read read-only, and `ticker export` of it."""

    name: str
    captures: dict[int, tuple[str, str]]  # id -> (content_hash, outcome)
    shown: dict[int, set[Quote]]  # capture id -> the quotes it showed
    observations: set[Quote]
    attempts: list[dict[str, Any]]
    exported: set[Quote]


def read_store(work: Path, path: Path, url: str) -> StoreData:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT id, content_hash, outcome FROM captures").fetchall()
        captures = {i: (sha1, outcome) for i, sha1, outcome in rows}
        shown: dict[int, set[Quote]] = {}
        for cid, *quote in con.execute(
            """SELECT s.capture_id, o.pair, o.date::VARCHAR, o.rate_text, o.change_text
               FROM sightings s JOIN observations o USING (source, pair, date, revision)"""
        ).fetchall():
            shown.setdefault(cid, set()).add(tuple(quote))
        observations = set(
            con.execute(
                "SELECT pair, date::VARCHAR, rate_text, change_text FROM observations"
            ).fetchall()
        )
        cur = con.execute(
            """SELECT id, epoch(started_at) AS started, duration_ms / 1000 AS duration,
                      outcome, error, archive_path, capture_id FROM attempts"""
        )
        columns = [d[0] for d in cur.description]
        attempts = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()
    out = ticker(
        work, write_config(work / f"{path.stem}.toml", path, url, 1), "export", "--format", "json"
    )
    records: list[dict[str, str]] = json.loads(out.stdout) if out.returncode == 0 else []
    exported = {(r["pair"], r["date"], r["rate"], r["change_pct"]) for r in records}
    return StoreData(path.name, captures, shown, observations, attempts, exported)


def archived(pages_dir: Path) -> dict[str, str]:
    """Each archive file's name -> the sha1 of the page it keeps."""
    found = {}
    for path in pages_dir.glob("*/*.warc.gz"):
        with path.open("rb") as fh:
            for record in ArchiveIterator(fh):
                if record.rec_type == "response":
                    found[path.name] = hashlib.sha1(record.content_stream().read()).hexdigest()
    return found


def spooled(pending: Path) -> set[str]:
    """The archive files of the attempts that wait in .pending/."""
    found = set()
    for path in pending.glob("*.json"):
        try:
            attempt = json.loads(path.read_bytes())
        except ValueError:
            continue
        if isinstance(attempt, dict) and attempt.get("archive_path"):
            found.add(Path(attempt["archive_path"]).name)
    return found


@dataclass
class Verdict:
    """The pages sent whole, sorted by how they ended up; and what is wrong."""

    pages: dict[str, list[Sent]] = field(default_factory=dict)  # stored, reported, ...
    reported_as: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)

    def add(self, how: str, sent: Sent, outcome: str = "") -> None:
        self.pages.setdefault(how, []).append(sent)
        if how == "reported":
            self.reported_as[outcome] += 1
            if outcome not in (sent.expect, "timeout"):  # a stop may cut any fetch short
                self.wrong.append(
                    f"page {sent.no} ({sent.fault}, {sent.day or 'no date'}) should be "
                    f"{sent.expect}, is reported as {outcome}"
                )


def judge(soak: Soak, stores: list[StoreData], before: dict[str, Any]) -> Verdict:
    """Sort each page sent whole: stored, reported, waiting, unstored, killed or LOST."""
    verdict = Verdict()
    held: dict[str, list[tuple[StoreData, int, str]]] = {}
    for st in stores:
        for cid, (sha1, outcome) in st.captures.items():
            held.setdefault(sha1, []).append((st, cid, outcome))
    attempts = [a for st in stores for a in st.attempts]
    of_capture = {
        (st.name, a["capture_id"]): a for st in stores for a in st.attempts if a["capture_id"]
    }
    archive: dict[str, list[str]] = {}
    for name, sha1 in archived(soak.work / "pages").items():
        archive.setdefault(sha1, []).append(name)
    of_archive = {Path(a["archive_path"]).name: a for a in attempts if a["archive_path"]}
    waiting = spooled(soak.world.pending)
    # Attempts that kept no page (the fetch failed) are matched to pages by time.
    pageless = [a for a in attempts if a["capture_id"] is None and not a["archive_path"]]
    used: set[int] = set()
    unstored = before.get("unstored_pages", 0)  # as `ticker status` counted them

    for sent in sorted((p for p in soak.site.pages if p.whole), key=lambda p: p.t0):
        mine = held.get(sent.sha1, [])
        quotes = {(pair, iso(sent.day), rate, change) for pair, rate, change in sent.quotes}
        if sent.expect != "stored" and any(st.shown.get(cid) for st, cid, _ in mine):
            verdict.wrong.append(f"page {sent.no} ({sent.fault}) has quotes stored")
        if sent.expect == "stored" and any(quotes <= st.shown.get(c, set()) for st, c, _ in mine):
            verdict.add("stored", sent)
            continue
        names = archive.get(sent.sha1, [])
        found = [of_capture.get((st.name, cid)) for st, cid, _ in mine]
        found += [of_archive.get(name) for name in names]
        records = [a for a in found if a is not None]
        if records:
            # The page's own outcome: the capture's, else the attempt's (a spooled
            # attempt says store_locked, and what the fetch was in its error).
            outcomes = [o for _, _, o in mine] + [a["outcome"] for a in records]
            said = " ".join([*outcomes, *(a["error"] or "" for a in records)])
            refused = sent.expect in REFUSALS and sent.expect in said
            outcome = sent.expect if refused else outcomes[0]
            verdict.add("reported", sent, outcome)
        elif any(name in waiting for name in names):
            verdict.add("waiting", sent)
        elif names and unstored > 0:
            unstored -= 1
            verdict.add("unstored", sent)
        elif not names and (match := _by_time(sent, pageless, used)) is not None:
            verdict.add("reported", sent, match["outcome"])
        elif not names and _killed_with(soak, sent):
            verdict.add("killed", sent)
        else:
            verdict.add("LOST", sent)
    return verdict


def _by_time(sent: Sent, attempts: list[dict[str, Any]], used: set[int]) -> dict[str, Any] | None:
    """The failed attempt that fetched this page, one attempt per page: its start time
    is in whole seconds, and a first wait for the store may come before the fetch."""
    near = [
        (abs(a["started"] - sent.t0), i)
        for i, a in enumerate(attempts)
        if i not in used
        and a["started"] - 1.5 <= sent.t0 <= a["started"] + a["duration"] + LOCK_TIMEOUT + 1.5
    ]
    if not near:
        return None
    used.add(min(near)[1])
    return attempts[min(near)[1]]


def _killed_with(soak: Soak, sent: Sent) -> bool:
    """The run that fetched the page was killed (SIGKILL) while it could still hold it."""
    for life in soak.daemon.lives:
        if life.ended is not None and life.started <= sent.t1 <= life.ended:
            return life.how == "SIGKILL" and life.ended - sent.t1 < DEADLINE + LOCK_TIMEOUT + 5
    return False


def status_of(soak: Soak, cfg: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`ticker status --json` of the one source (exit code 1 is expected: what waits)."""
    done = ticker(soak.work, cfg, "status", "--json")
    try:
        return done, json.loads(done.stdout)[0]
    except (ValueError, IndexError):
        soak.problems.append(f"`ticker status --json` printed no status: {done.stderr.strip()}")
        return done, {"unstored_pages": 0, "waiting_attempts": 0, "unreadable_spooled": None}


def finish(soak: Soak) -> int:
    """Store what waits, check, print the figures; the exit code."""
    work, cfg = soak.work, soak.config()
    before, status_before = status_of(soak, cfg)
    final = ticker(work, cfg, "scrape")
    soak.event(f"ticker scrape: exit code {final.returncode}: {final.stdout.strip()}")
    after, status_after = status_of(soak, cfg)
    stores = [
        read_store(work, path, soak.site.url)
        for path in (*soak.world.moved, soak.world.store)
        if path.exists()
    ]
    verdict = judge(soak, stores, status_before)
    whole = [p for p in soak.site.pages if p.whole]
    problems = list(soak.problems)
    if final.returncode != 0:
        problems.append(f"the last `ticker scrape` exited {final.returncode}")

    # Nothing stored that was never sent whole; each store's export shows it as it is.
    hashes = {p.sha1 for p in whole}
    sent = {(pr, iso(p.day), r, c) for p in whole if p.expect == "stored" for pr, r, c in p.quotes}
    phantom_pages = sum(sha1 not in hashes for st in stores for sha1, _ in st.captures.values())
    phantom_quotes = sum(len(st.observations - sent) for st in stores)
    if phantom_pages or phantom_quotes:
        problems.append(f"stored, never sent whole: {phantom_pages} pages, {phantom_quotes} quotes")
    export_off = [st.name for st in stores if st.exported != st.observations]
    if export_off:
        problems.append(f"`ticker export` differs from the store: {', '.join(export_off)}")
    garbage, unreadable = len(soak.world.garbage), status_after["unreadable_spooled"]
    if unreadable != garbage:
        problems.append(f"{garbage} garbage spool files, `ticker status` reports {unreadable}")
    if status_after["waiting_attempts"]:
        problems.append(f"{status_after['waiting_attempts']} attempts still wait in .pending/")
    if soak.world.moved:
        new_store = {sha1 for sha1, _ in stores[-1].captures.values()}
        if soak.site.moved_page not in new_store:
            problems.append(
                f"the page under its ETag is not in the new store after the move aside "
                f"({soak.site.after_move[304]} 304s, {soak.site.after_move[200]} sent whole)"
            )
    problems += [f"daemon run {li.no}: {li.problem}" for li in soak.daemon.lives if li.problem]

    logs = sorted((work / "logs").glob("*.log"))
    text = "".join(p.read_text(errors="replace") for p in logs)
    text += before.stderr + final.stderr + after.stderr
    tracebacks = text.count("Traceback (most recent call last)")
    bugs = [line for line in text.splitlines() if "(a bug" in line]

    starts = sorted(a["started"] for st in stores for a in st.attempts)
    gap, gap_at = max(
        ((b - a, a) for a, b in zip(starts, starts[1:], strict=False)), default=(0, 0)
    )
    outcomes = Counter(a["outcome"] for st in stores for a in st.attempts)
    lost = verdict.pages.get("LOST", [])
    in_archive = set(archived(work / "pages").values())
    lives = soak.daemon.lives
    peaks = sorted(li.peak_kb for li in lives)
    median = peaks[len(peaks) // 2]

    print()
    print(
        f"soak: {(time.time() - soak.started) / 60:.1f} minutes, {soak.rounds} rounds of "
        f"{len(soak.faults)} faults; store on "
        + (f"a {TMPFS_SIZE} tmpfs" if soak.world.tmpfs else "disk (no full disk staged)")
    )
    print(
        f"daemon: {len(lives)} starts ({len(lives) - 1} restarts); signals: "
        + ", ".join(f"{n} {soak.daemon.signals[n]}" for n in SIGNALS)
        + f"; peak RSS {peaks[-1] / 1024:.0f} MB (the median run's: {median / 1024:.0f} MB)"
    )
    print()
    fault_table(soak, stores)
    print()
    print(f"pages sent whole:  {len(whole)} (of {len(soak.site.pages)} begun)")
    for how, note in (
        ("stored", ""),
        ("reported", ", ".join(f"{k} {v}" for k, v in verdict.reported_as.most_common())),
        ("waiting", "in .pending/, says `ticker status`"),
        ("unstored", "in the archive only, says `ticker status`"),
        ("killed", "in a killed daemon's memory, not archived yet"),
        ("LOST", f"{sum(p.sha1 in in_archive for p in lost)} of them in the archive"),
    ):
        n = len(verdict.pages.get(how, []))
        print(f"  {how + ':':<16} {n}" + (f" ({note})" if n and note else ""))
    for p in lost[:10]:
        where = "in the archive only" if p.sha1 in in_archive else "not archived"
        life = next(li for li in lives if li.started <= p.t1 <= (li.ended or time.time()))
        end = f"{life.how} at {soak.clock(life.ended)}" if life.ended else "the end"
        print(
            f"    LOST page {p.no} ({p.fault}, {p.day}) sent at {soak.clock(p.t0)} to daemon "
            f"run {life.no} (ended by {end}): {where}"
        )
    for line in verdict.wrong[:10]:
        print(f"    WRONG {line}")
    print(
        f"stored, never sent: {phantom_pages} pages, {phantom_quotes} quotes; `ticker export` "
        f"equals the store: {'yes' if not export_off else 'NO'}"
    )
    for st in stores:
        print(f"store {st.name}: {len(st.captures)} pages, {len(st.attempts)} attempts")
    if soak.world.moved:
        print(
            f"after the store was moved aside: {soak.site.after_move[304]} 304s, the page "
            f"sent whole {soak.site.after_move[200]} times"
        )
    print(f"garbage spool files: {garbage} written, {unreadable} reported by `ticker status`")
    print(f"attempts: {len(starts)}: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print(
        f"longest gap between attempts: {gap:.1f} s (from {soak.clock(gap_at)}: "
        f"{during(soak, gap_at, gap_at + gap)})"
    )
    print(f"tracebacks in the daemon's stderr: {tracebacks}; lines saying 'a bug': {len(bugs)}")
    for line in bugs[:5]:
        print(f"    {line}")
    for problem in problems:
        print(f"problem: {problem}")
    failed = bool(lost or tracebacks or bugs or verdict.wrong or problems)
    print(f"LOST: {len(lost)}  ->  {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


def fault_table(soak: Soak, stores: list[StoreData]) -> None:
    """Per fault: requests served, pages sent whole, and the attempts' outcomes."""
    seen: dict[str, Counter[str]] = {}
    for st in stores:
        for a in st.attempts:
            seen.setdefault(fault_of(soak, a), Counter())[a["outcome"]] += 1
    whole = Counter(p.fault for p in soak.site.pages if p.whole)
    print(f"{'fault':<24} {'requests':>8} {'whole':>6}  {'expected':<16} attempts' outcomes")
    for fault in (HEALTHY, *soak.faults):
        if fault.tmpfs and not soak.world.tmpfs:
            print(f"{fault.name:<24} not staged: {soak.world.note}")
            continue
        outcomes = ", ".join(f"{k} {v}" for k, v in seen.get(fault.name, Counter()).most_common(4))
        print(
            f"{fault.name:<24} {soak.site.requests[fault.name]:>8} {whole[fault.name]:>6}  "
            f"{fault.outcome:<16} {outcomes}"
        )


def fault_of(soak: Soak, attempt: dict[str, Any]) -> str:
    """The fault that answered an attempt's first request; with no request (nothing
    listening), the fault staged when it began."""
    start = attempt["started"]  # in whole seconds, maybe before a wait for the store
    end = start + attempt["duration"] + LOCK_TIMEOUT + 1
    i = bisect.bisect_left(soak.site.arrivals, (start, ""))
    reached = attempt["outcome"] != "connection_error"
    if reached and i < len(soak.site.arrivals) and soak.site.arrivals[i][0] <= end:
        return soak.site.arrivals[i][1]
    for t0, t1, name in soak.periods:
        if t0 <= start + 0.5 < t1:
            return name
    return "healthy"


def during(soak: Soak, t0: float, t1: float) -> str:
    faults = [name for a, b, name in soak.periods if a < t1 and b > t0 and name != "healthy"]
    events = [what for t, what in soak.events if t0 - 1 <= t <= t1]
    return "; ".join(dict.fromkeys(faults + events)) or "nothing staged"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="work in KEEP (a new directory) and keep it")
    ap.add_argument(
        "--fault", action="append", default=[], help="stage only the faults whose name has this"
    )
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="ticker-soak-"))
    soak = Soak(work, args.minutes, args.seed, args.fault)
    code = 1
    try:
        soak.run()
        code = finish(soak)
    finally:
        soak.ending.set()
        soak.daemon.kill()  # when the run itself failed
        soak.world.close(keep=bool(args.keep) or code != 0)
        soak.site.stop_listening()
        if args.keep or code != 0:
            print(f"kept: {work} (server.log, logs/, pages/, store-copy/)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
