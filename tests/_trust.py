"""Helpers shared by the trust tests (check, crash, concurrency, fuzz, security):
plausible ticker series, page dumps written from them, configs, and running `ticker`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

PAIRS = ("KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD", "TMT/USD")
# A starting rate (US dollars per unit) and a daily volatility for each pair.
START = {
    "KGS/USD": (0.01164, 0.002),
    "KZT/USD": (0.00199, 0.004),
    "TJS/USD": (0.09168, 0.003),
    "UZS/USD": (0.0000751, 0.001),  # near a rounding edge: prints 0.00008 or 0.00007
    "TMT/USD": (0.28573, 0.00005),
}
# Filler of our own: nothing here comes from a real article.
FILLER = (
    "The river market opened early and the caravan ledger was read aloud at the station. "
    "Copper lanterns hung over the bazaar square while the tram waited by the canal.\n"
)


@dataclass(frozen=True)
class Quote:
    pair: str
    rate: str
    change: str

    def line(self) -> str:
        return f"  \u2022 {self.pair} = {self.rate} {self.change}%"


@dataclass(frozen=True)
class DayQuotes:
    date: date
    quotes: tuple[Quote, ...]

    def by_pair(self) -> dict[str, Quote]:
        return {q.pair: q for q in self.quotes}


def printed_change(true_pct: float) -> str:
    """The site's way: rounded half up to 2 decimals, trailing zeros dropped, "-0" kept."""
    rounded = Decimal(repr(true_pct)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if rounded == 0:
        return "-0" if true_pct < 0 else "0"
    text = format(rounded.normalize(), "f")
    return text


def simulate(
    start: date, days: int, pairs: tuple[str, ...] = PAIRS, seed: int = 1
) -> list[DayQuotes]:
    """A consistent daily series: rates printed to 5 decimals from a random walk, and
    each day's change computed from the unrounded rates, the way the site prints it."""
    rng = random.Random(seed)
    true = {p: START[p][0] for p in pairs}
    out = []
    for i in range(days):
        quotes = []
        for p in pairs:
            prev = true[p]
            true[p] = prev * (1 + rng.gauss(0, START[p][1]))
            quotes.append(Quote(p, f"{true[p]:.5f}", printed_change((true[p] / prev - 1) * 100)))
        out.append(DayQuotes(start + timedelta(days=i), tuple(quotes)))
    return out


def page(day: DayQuotes | None, copies: int = 8, note: str = "", dated: bool = True) -> str:
    """A page dump: the ticker block (8 marquee copies), the date line, our filler."""
    if day is None:
        return "Viewing results 1 - 6 of 111\n\n" + FILLER
    block = "\n".join(q.line() for _ in range(copies) for q in day.quotes)
    date_line = f"{day.date.day:02d} {day.date:%B %Y}\n" if dated else ""
    return block.lstrip() + "\n" + date_line + "\n" + note + "\n" + FILLER


def write_dumps(
    root: Path, days: list[DayQuotes], per_dir: int = 500, prefix: str = "page"
) -> list[Path]:
    """One dump per day under root/NNN/, in date order (the order backfill reads them)."""
    paths = []
    for i, day in enumerate(days):
        sub = root / f"{i // per_dir:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{prefix}_{i:06d}.txt"
        path.write_text(page(day), encoding="utf-8")
        paths.append(path)
    return paths


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


def html_page(day: DayQuotes, dated: bool = True) -> str:
    """The live site's markup, as plausible as we can make it: the ticker as list items
    of spans in the header, the date line after it, then an article of our filler."""
    items = "\n".join(
        f'<li class="fx-item"><span class="fx-bullet">&bull;</span> '
        f'<span class="fx-pair">{q.pair}</span> = <span class="fx-rate">{q.rate}</span> '
        f'<span class="fx-change">{q.change}%</span></li>'
        for _ in range(2)
        for q in day.quotes
    )
    date_div = f'<div class="today">{day.date.day:02d} {day.date:%B %Y}</div>' if dated else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Example news</title></head><body>\n"
        f'<header><div class="fx-ticker" role="marquee"><ul>\n{items}\n</ul></div>\n'
        f"{date_div}</header>\n<main><article><h1>Invented headline</h1>"
        f"<p>{FILLER}</p></article></main></body></html>\n"
    )


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
