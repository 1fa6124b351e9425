"""Configuration: config.toml read once into a validated, frozen dataclass."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ticker.errors import ConfigError

DEFAULT_PAIRS: tuple[str, ...] = ("KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD", "TMT/USD")
PAIR_RE = re.compile(r"^[A-Z]{3}/[A-Z]{3}$")
SOURCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
CRON_FIELDS = 5
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Source:
    name: str = "timesca"
    url: str = "https://timesca.com/"
    timezone: str = "Asia/Almaty"
    pairs: tuple[str, ...] = DEFAULT_PAIRS

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class HttpConfig:
    timeout: float = 20.0
    max_bytes: int = 5 * 1024 * 1024
    retries: int = 3
    backoff: float = 1.0
    max_retry_after: float = 120.0
    verify_tls: bool = True
    deadline: float = 180.0  # a whole fetch, retries and waits included


@dataclass(frozen=True)
class ScheduleConfig:
    scrape: int | str = 1800
    jitter: int = 60
    charts: int | str = 86400
    misfire_grace_time: int = 300


@dataclass(frozen=True)
class ChartsConfig:
    dir: Path = Path("charts")
    window_days: int = 365
    display: str = "per_usd"


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    store_path: Path = Path("db/ticker.duckdb")
    lock_timeout: float = 30.0
    sources: tuple[Source, ...] = (Source(),)
    http: HttpConfig = field(default_factory=HttpConfig)
    archive_dir: Path = Path("db/pages")
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    charts: ChartsConfig = field(default_factory=ChartsConfig)
    stale_after: float = 2 * 86400.0

    def source(self, name: str | None) -> Source:
        """The source called `name`, or the first configured one."""
        if name is None:
            return self.sources[0]
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources)
        where = self.path or "the config"
        raise ConfigError(where, f"no source named {name!r}", f"configured: {known}")

    @property
    def pairs(self) -> tuple[str, ...]:
        """Every pair of every source, in configuration order."""
        seen: dict[str, None] = {}
        for source in self.sources:
            for pair in source.pairs:
                seen.setdefault(pair, None)
        return tuple(seen)


def default_config_path() -> Path:
    return Path(os.environ.get("TICKER_CONFIG") or "config.toml")


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate the config; a missing default file means all defaults."""
    explicit = path is not None or bool(os.environ.get("TICKER_CONFIG"))
    cfg_path = Path(path) if path is not None else default_config_path()
    if not cfg_path.exists():
        if explicit:
            raise ConfigError(
                cfg_path,
                "config file not found",
                "check the path given by --config or TICKER_CONFIG, or copy config.toml there",
            )
        return _build({}, cfg_path, base=Path.cwd(), found=False)
    try:
        with cfg_path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(cfg_path, f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(cfg_path, f"cannot be read: {exc.strerror}") from None
    return _build(raw, cfg_path, base=cfg_path.resolve().parent, found=True)


class _Reader:
    """Typed access to one TOML table, with errors that name the key."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str, known: set[str]) -> None:
        self.path, self.table, self.prefix = path, table, prefix
        if not isinstance(table, dict):
            raise ConfigError(path, f"[{prefix}] must be a table")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                path,
                f"unknown key {prefix}.{unknown[0]}",
                "known keys: " + ", ".join(sorted(known)),
            )

    def _fail(self, key: str, want: str) -> ConfigError:
        return ConfigError(
            self.path, f"{self.prefix}.{key} must be {want}, not {self.table[key]!r}"
        )

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, want: str) -> Any:
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind is not bool:
            raise self._fail(key, want)
        if not isinstance(value, kind):
            raise self._fail(key, want)
        return value

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.get(key, (int, float), default, "a number")
        if value < minimum:
            raise self._fail(key, f"a number >= {minimum:g}")
        return float(value)

    def duration(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool):
            raise self._fail(key, 'seconds or a duration like "2d", "36h", "90m"')
        if isinstance(value, int | float) and value > 0:
            return float(value)
        if isinstance(value, str):
            match = _DURATION_RE.match(value)
            if match and float(match.group(1)) > 0:
                return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        raise self._fail(key, 'seconds or a duration like "2d", "36h", "90m"')

    def schedule(self, key: str, default: int | str) -> int | str:
        value = self.table.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if isinstance(value, str) and len(value.split()) == CRON_FIELDS:
            from ticker.schedule_spec import validate_cron

            problem = validate_cron(value)
            if problem is None:
                return value
            raise ConfigError(
                self.path, f"{self.prefix}.{key}: bad cron string {value!r}: {problem}"
            )
        raise self._fail(key, 'an interval in seconds or a 5-field cron string like "0 */6 * * *"')

    def path_value(self, key: str, default: str, base: Path) -> Path:
        value = self.get(key, str, default, "a path string")
        if not value.strip():
            raise self._fail(key, "a non-empty path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p


def _source(path: Path, i: int, table: dict[str, Any]) -> Source:
    r = _Reader(path, table, f"sources[{i}]", {"name", "url", "timezone", "pairs", "stale_after"})
    name = r.get("name", str, "timesca", "a string")
    if not SOURCE_NAME_RE.match(name):
        raise r._fail("name", "lower-case letters, digits, '-' or '_' (at most 40)")
    url = r.get("url", str, "https://timesca.com/", "a URL string")
    if not re.match(r"^https?://[^\s/]+", url):
        raise r._fail("url", "an http:// or https:// URL")
    timezone = r.get("timezone", str, "Asia/Almaty", "an IANA time zone like Asia/Almaty")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise r._fail("timezone", "an IANA time zone like Asia/Almaty") from None
    pairs = r.get("pairs", list, list(DEFAULT_PAIRS), 'a list like ["KZT/USD", "UZS/USD"]')
    if not pairs or not all(isinstance(p, str) and PAIR_RE.match(p) for p in pairs):
        raise r._fail("pairs", 'a non-empty list of pairs like "KZT/USD"')
    return Source(name=name, url=url, timezone=timezone, pairs=tuple(dict.fromkeys(pairs)))


def _build(raw: dict[str, Any], path: Path, base: Path, found: bool) -> Config:
    # Rejects unknown top-level tables; each table's keys are checked by its own reader.
    _Reader(
        path, raw, "config", {"store", "sources", "http", "archive", "schedule", "charts", "status"}
    )
    store = _Reader(path, raw.get("store", {}), "store", {"path", "lock_timeout"})
    http = _Reader(
        path,
        raw.get("http", {}),
        "http",
        {"timeout", "max_bytes", "retries", "backoff", "max_retry_after", "verify_tls", "deadline"},
    )
    archive = _Reader(path, raw.get("archive", {}), "archive", {"dir"})
    sched = _Reader(
        path,
        raw.get("schedule", {}),
        "schedule",
        {"scrape", "jitter", "charts", "misfire_grace_time"},
    )
    charts = _Reader(path, raw.get("charts", {}), "charts", {"dir", "window_days", "display"})
    status = _Reader(path, raw.get("status", {}), "status", {"stale_after"})

    raw_sources = raw.get("sources", [{}])
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ConfigError(path, "[[sources]] must be one or more tables")
    sources = tuple(_source(path, i, t) for i, t in enumerate(raw_sources))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(path, "two [[sources]] share a name", "names must be unique")

    display = charts.get("display", str, "per_usd", '"per_usd" or "usd_per_unit"')
    if display not in ("per_usd", "usd_per_unit"):
        raise charts._fail("display", '"per_usd" or "usd_per_unit"')
    window = charts.get("window_days", int, 365, "a whole number of days")
    if window < 1:
        raise charts._fail("window_days", "a whole number of days >= 1")
    max_bytes = http.get("max_bytes", int, 5 * 1024 * 1024, "a whole number of bytes")
    if max_bytes < 1024:
        raise http._fail("max_bytes", "a whole number of bytes >= 1024")
    retries = http.get("retries", int, 3, "a whole number")
    if retries < 0:
        raise http._fail("retries", "a whole number >= 0")
    jitter = sched.get("jitter", int, 60, "a whole number of seconds")
    if jitter < 0:
        raise sched._fail("jitter", "a whole number of seconds >= 0")

    return Config(
        path=path if found else None,
        store_path=store.path_value("path", "db/ticker.duckdb", base),
        lock_timeout=store.number("lock_timeout", 30.0),
        sources=sources,
        http=HttpConfig(
            timeout=http.number("timeout", 20.0, minimum=0.001),
            max_bytes=max_bytes,
            retries=retries,
            backoff=http.number("backoff", 1.0),
            max_retry_after=http.number("max_retry_after", 120.0),
            verify_tls=http.get("verify_tls", bool, True, "true or false"),
            deadline=http.number("deadline", 180.0, minimum=0.001),
        ),
        archive_dir=archive.path_value("dir", "db/pages", base),
        schedule=ScheduleConfig(
            scrape=sched.schedule("scrape", 1800),
            jitter=jitter,
            charts=sched.schedule("charts", 86400),
            misfire_grace_time=int(sched.number("misfire_grace_time", 300, minimum=1)),
        ),
        charts=ChartsConfig(
            dir=charts.path_value("dir", "charts", base),
            window_days=window,
            display=display,
        ),
        stale_after=status.duration("stale_after", 2 * 86400.0),
    )
