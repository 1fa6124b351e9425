"""Helpers shared by the trust tests (check, crash, concurrency, security): configs, and
running `ticker`."""

from __future__ import annotations

import os
import subprocess
import sys
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
