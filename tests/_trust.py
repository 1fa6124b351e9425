"""Helpers shared by the trust tests (check, crash, concurrency, security): configs, and
running `ticker`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pages import PAIRS


def write_config(
    directory: Path,
    db: str = "ticker.duckdb",
    lock_timeout: float = 30,
    pairs: tuple[str, ...] = PAIRS,
    extra: str = "",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f'"{p}"' for p in pairs)
    path = directory / "config.toml"
    path.write_text(
        f'[store]\npath = "{db}"\nlock_timeout = {lock_timeout}\n\n'
        f'[[sources]]\nname = "timesca"\nurl = "https://timesca.com/"\n'
        f'timezone = "Asia/Almaty"\npairs = [{listed}]\n\n'
        f'[archive]\ndir = "pages"\n\n[charts]\ndir = "charts"\n{extra}',
        encoding="utf-8",
    )
    return path


def ticker_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ticker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ticker"]


def env() -> dict[str, str]:
    """The environment for a ticker subprocess: no config from the caller's shell."""
    out = dict(os.environ)
    out.pop("TICKER_CONFIG", None)
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    return out


def run_ticker(
    config: Path, *args: str, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*ticker_cmd(), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=config.parent,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ticker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


class PageServer:
    """An HTTP server on 127.0.0.1 (port 0) in a thread; `body` is served for every GET
    as text/html, or body(n) for the n-th request (1, 2, ...). Counts the requests."""

    def __init__(self, body: str | bytes | Callable[[int], bytes]) -> None:
        import http.server
        import threading

        self.body = body.encode() if isinstance(body, str) else body
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                owner.requests += 1
                data = owner.body(owner.requests) if callable(owner.body) else owner.body
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def daemon_config(directory: Path, url: str, lock_timeout: float = 30, scrape: int = 1) -> Path:
    """A config whose source is the local server, scraped every `scrape` seconds."""
    cfg = write_config(
        directory,
        lock_timeout=lock_timeout,
        extra=f"\n[schedule]\nscrape = {scrape}\njitter = 0\ncharts = 3600\n"
        "\n[http]\ntimeout = 5\nretries = 0\n",
    )
    text = cfg.read_text(encoding="utf-8").replace("https://timesca.com/", url)
    cfg.write_text(text, encoding="utf-8")
    return cfg
