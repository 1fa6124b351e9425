"""A served ticker project for the server's tests: a store built from pages (the ticker,
US dollars per unit, and a second source printing units per US dollar, as a central bank
does), charts drawn by `ticker chart`, and `ticker serve` as a real process on a free
port of 127.0.0.1.

    site = build_site(tmp_path / "site", days=40)
    with Served(site.project.config) as server:
        server.get("/v2/rates").json()
"""

from __future__ import annotations

import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from conftest import Project
from pages import text_page

# The ticker's rates (US dollars per unit) around which the generated days move.
TICKER = {"KGS": 0.01144, "KZT": 0.00194, "TJS": 0.10844, "UZS": 0.00008, "TMT": 0.28571}
# The second source: units per US dollar, two decimals, as the banks publish them.
OFFICIAL = {"KZT": 515.30, "KGS": 87.45}
OFFICIAL_CONFIG = """
[[sources]]
name = "timesca"

[[sources]]
name = "official"
url = "https://rates.example.org/"
pairs = ["USD/KZT", "USD/KGS"]
label = "Official rates (test pages)"
"""


def today() -> date:
    """The date the server calls today (UTC), which the site's zone is never behind."""
    return datetime.now(UTC).date()


def ticker_rates(i: int) -> list[str]:
    """Day i's rates: a slow wave of up to 2 % around TICKER, five decimals as printed."""
    return [
        f"{rate * (1 + 0.02 * math.sin(i / 5 + k)):.5f}" for k, rate in enumerate(TICKER.values())
    ]


def ticker_quotes(i: int) -> list[tuple[str, str, str]]:
    """Day i's quotes, with the day's change from day i-1 as the site prints it (two
    decimals, trailing zeros dropped), so that `ticker check` finds them consistent."""
    out = []
    for code, rate, before in zip(TICKER, ticker_rates(i), ticker_rates(i - 1), strict=True):
        change = f"{(float(rate) / float(before) - 1) * 100:.2f}".rstrip("0").rstrip(".")
        out.append((code, rate, change))
    return out


def official_page(i: int, day: date) -> str:
    """A page whose ticker lines are USD/XXX = units per dollar."""
    lines = []
    for code, rate in OFFICIAL.items():
        value = rate * (1 + 0.01 * math.sin(i / 7))
        lines.append(f"  \u2022 USD/{code} = {value:.2f} 0%")
    block = "\n".join(lines * 4).lstrip() + "\n"
    return f"{block}{day.day} {day:%B %Y}\nOfficial rates, a test page.\n"


@dataclass
class Site:
    project: Project
    days: list[date]  # the ticker's stored days, oldest first
    gap: list[date]  # days inside the series without data


def build_site(
    root: Path, days: int = 40, gap: tuple[int, int] = (8, 11), charts: bool = True
) -> Site:
    """A project with `days` days up to today, but for the days `gap` (counted back from
    today, end excluded) that have no page; both sources; charts drawn."""
    project = Project(root, lock_timeout=2, extra=OFFICIAL_CONFIG)
    end = today()
    stored: list[date] = []
    missing: list[date] = []
    for back in range(days - 1, -1, -1):
        day = end - timedelta(days=back)
        if gap[0] <= back < gap[1]:
            missing.append(day)
            continue
        i = days - back
        project.write(
            f"ticker/{day}.txt", text_page(ticker_quotes(i), day=f"{day.day} {day:%B %Y}")
        )
        project.write(f"official/{day}.txt", official_page(i, day))
        stored.append(day)
    assert project.backfill(project.dumps / "ticker").exit_code == 0
    result = project.backfill(project.dumps / "official", extra=("--source", "official"))
    assert result.exit_code == 0, result.output
    if charts:
        drawn = project.run("chart")
        assert drawn.exit_code == 0, drawn.output
    return Site(project, stored, missing)


class Served:
    """`python -m ticker --config CONFIG serve --port 0` until the `with` ends; `url` is
    where it listens (read from its log line)."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.args = args
        self.env = env
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.session = requests.Session()

    def __enter__(self) -> Served:
        env = dict(os.environ)
        env.pop("TICKER_CONFIG", None)
        env.update(self.env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ticker",
                "--config",
                str(self.config),
                "serve",
                "--port",
                "0",
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.config.parent,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 30
        while not self.url:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.__exit__()
                raise AssertionError("ticker serve did not start: " + "".join(self.log)) from None
            m = re.search(r"ticker serve: (http://\S+/) ", line)
            if m:
                self.url = m.group(1).rstrip("/")
        while True:  # listening once uvicorn has started (the log line comes first)
            try:
                self.session.get(self.url + "/v2", timeout=5)
                return self
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.get(self.url + path, **kwargs)

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        if self.proc is not None:
            self.stop()

    @property
    def stderr(self) -> str:
        return "".join(self.log)
