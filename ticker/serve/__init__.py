"""`ticker serve`: the store over HTTP, read-only. The report page at /, the series in
the shape of Frankfurter's API v2 under /v2, the charts and exports as files, /healthz
and /metrics for monitors.

    api.py       the v2 queries, their checks and records (no I/O)
    data.py      the series by provider, pairs and the routes between currencies
    precision.py the digits a derived rate may carry
    snapshot.py  the store read into memory by brief read-only opens, in a thread
    report.py    the HTML page (templates/report.html)
    metrics.py   Prometheus text
    app.py       the Starlette app: routes, validators, errors

The web framework and server are the optional extra `serve`; nothing here is imported by
the rest of ticker unless `ticker serve` runs.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from importlib.util import find_spec
from types import FrameType

from ticker.config import Config
from ticker.errors import ServeError
from ticker.store import Store

log = logging.getLogger("ticker.serve")

NEEDS = ("starlette", "uvicorn", "jinja2", "prometheus_client")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def check_extra() -> None:
    """Refuse to start, in one line, when the serve extra is not installed."""
    missing = [name for name in NEEDS if find_spec(name) is None]
    if missing:
        raise ServeError(
            f"ticker serve needs the serve extra ({', '.join(missing)} not installed): "
            "pip install 'ticker[serve]', or in a checkout: pip install -e '.[serve]'"
        )


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), or one line saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on {host}: {exc.strerror} (set [serve] host or --host to an "
            "address of this machine, like 127.0.0.1)"
        ) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = (
            "another server uses that port: stop it, or choose another [serve] port or --port"
            if exc.errno == errno.EADDRINUSE
            else "choose another [serve] host or port"
        )
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror} ({hint})") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(config: Config, host: str, port: int) -> int:
    """Serve until SIGTERM or Ctrl-C; the exit code."""
    check_extra()
    import uvicorn

    from ticker.serve.app import create_app

    sock = listen(host, port)
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    if not debug:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_config=None,
            access_log=debug,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )
    log.info(
        "ticker serve: %s (the report at /, the API under /v2), reading %s",
        url_of(sock),
        config.store_path,
    )
    if not Store.exists(config.store_path):
        log.warning(
            "no database yet at %s; answering as on an empty store until `ticker backfill "
            "PATH` or `ticker scrape` makes one",
            config.store_path,
        )
    stopped_by: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        # uvicorn handles SIGTERM and SIGINT while it runs, then raises them again once
        # it has shut down: they end here, so the exit code is 0. SIGHUP (a closed
        # terminal) stops it the same way.
        stopped_by.append(signal.Signals(signum).name)
        server.should_exit = True

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    why = f" ({stopped_by[0]})" if stopped_by else ""
    log.info("ticker serve: stopped%s", why)
    return 0 if server.started else 1
