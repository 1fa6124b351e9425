"""Configuration: config.toml read once into a validated, frozen dataclass."""

from __future__ import annotations

import codecs
import errno
import json
import math
import os
import re
import stat
import string
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ticker.dumps import MAX_PAGE_BYTES
from ticker.errors import ConfigError

DEFAULT_PAIRS: tuple[str, ...] = ("KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD", "TMT/USD")
PAIR_RE = re.compile(r"^[A-Z]{3}/[A-Z]{3}$")
SOURCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
CRON_FIELDS = 5
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few KB; a bigger file is the wrong file

# The ranges of the numbers. Each bound keeps what is computed from the value in range
# (datetime and timedelta, APScheduler's triggers, urllib3's waits) with room to spare;
# a value past it is a typo (milliseconds for seconds), refused with the range.
DAY = 86400
MAX_LOCK_TIMEOUT = 3600  # no job holds the database that long: the daemon opens it per job
MAX_HTTP_TIMEOUT = 600  # one connect or read wait; the whole fetch is bounded by deadline
MAX_DEADLINE = DAY  # a whole fetch, retries and Retry-After waits included
MAX_RETRIES = 10  # each retry may cost a timeout and a backoff wait
MAX_BACKOFF = 120  # urllib3 caps every backoff wait at 120 s (Retry.DEFAULT_BACKOFF_MAX)
MAX_RETRY_AFTER = 21600  # urllib3's own ceiling for a Retry-After (Retry.DEFAULT_RETRY_AFTER_MAX)
MIN_MAX_BYTES = 1024
MAX_MAX_BYTES = MAX_PAGE_BYTES  # backfill refuses bigger pages: every archived page reloads
MAX_PERIOD = 366 * DAY  # intervals, misfire grace, stale_after: a year of seconds
MAX_JITTER = DAY
MAX_WINDOW_DAYS = 36525  # a century: the window's first day stays a date (year >= 1)
MAX_PER_MINUTE = 100000  # requests to a web archive; the public ones ask for about 30
MAX_PORT = 65535
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]{1,253}$")  # a name, an IPv4 or an IPv6 address


DEFAULT_LABEL = "The Times of Central Asia (timesca.com) currency ticker"
MAX_LABEL = 120

# The official rates ([reference]): a source of their own, named so in the store.
REFERENCE = "reference"
REFERENCE_URL = "https://api.frankfurter.dev/v2"
REFERENCE_LABEL = "official rates (Frankfurter)"
MAX_TOLERANCE_PCT = 50.0  # a ticker further off than this is not a rounding question
# An official rate stays in force until the next is published, at most this many days
# (weekends and holidays): the rate in force on a day is the newest of the week up to it.
IN_FORCE_DAYS = 7
# Official rates are published on business days only: a long weekend with a holiday
# leaves the newest one four days older than a ticker's without anything being wrong.
REFERENCE_SLACK = 4 * 86400.0


def official_pair(pair: str) -> str | None:
    """The pair an official rate of `pair`'s currency is written as: banks publish units
    per US dollar, so KZT/USD (the ticker's US dollars per tenge) is USD/KZT; USD/KZT is
    itself; None for a pair without the US dollar."""
    base, _, quote = pair.partition("/")
    if quote == "USD" and base != "USD":
        return f"USD/{base}"
    if base == "USD" and quote != "USD":
        return pair
    return None


@dataclass(frozen=True)
class Source:
    name: str = "timesca"
    url: str = "https://timesca.com/"
    timezone: str = "Asia/Almaty"
    pairs: tuple[str, ...] = DEFAULT_PAIRS
    kind: str = "ticker"  # a module of ticker.sources: what the source sends, how it reads
    label: str = DEFAULT_LABEL  # who publishes it, as charts credit it
    url_key: str = "[[sources]] url"  # where the URL is set, for messages

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
    reference: int | str = 86400


@dataclass(frozen=True)
class ChartsConfig:
    dir: Path = Path("charts")
    window_days: int = 365
    display: str = "per_usd"


@dataclass(frozen=True)
class RecoverConfig:
    """Where `ticker recover` finds the public web archives, and how fast it may ask."""

    cdx_url: str = "https://web.archive.org/cdx/search/cdx"
    snapshot_url: str = "https://web.archive.org/web/{timestamp}id_/{url}"
    commoncrawl_index: str = "https://index.commoncrawl.org"
    commoncrawl_data: str = "https://data.commoncrawl.org"
    per_minute: int = 20  # requests to one archive, index and captures together


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback only unless the config says otherwise
    port: int = 8080  # 0: a free port the system picks


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
    # The official rates of the pairs of the [[sources]] ([reference]), a source of kind
    # "reference" whose pairs are written as the banks publish them (USD/KZT).
    reference: Source = field(default_factory=lambda: reference_source(REFERENCE_URL, (Source(),)))
    tolerance_pct: float = 1.0  # [reference]: how far the ticker may stray, in percent
    reference_table: bool = False  # the config has a [reference] table: the daemon fetches
    serve: ServeConfig = field(default_factory=ServeConfig)
    recover: RecoverConfig = field(default_factory=RecoverConfig)

    def source(self, name: str | None) -> Source:
        """The source called `name` (the official rates are "reference"), or the first
        configured one."""
        if name is None:
            return self.sources[0]
        for source in self.sources:
            if source.name == name:
                return source
        if name == REFERENCE:
            return self.reference
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


def reference_source(url: str, sources: tuple[Source, ...]) -> Source:
    """The official rates as a source: the pairs of `sources` in the banks' direction,
    dated in the time zone of the first source."""
    pairs: dict[str, None] = {}
    for source in sources:
        for pair in source.pairs:
            official = official_pair(pair)
            if official is not None:
                pairs.setdefault(official, None)
    return Source(
        name=REFERENCE,
        url=url,
        timezone=sources[0].timezone,
        pairs=tuple(pairs),
        kind=REFERENCE,
        label=REFERENCE_LABEL,
        url_key="[reference] url",
    )


def default_config_path() -> Path:
    return Path(os.environ.get("TICKER_CONFIG") or "config.toml")


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate the config; a missing default file means all defaults."""
    explicit = path is not None or bool(os.environ.get("TICKER_CONFIG"))
    cfg_path = Path(path) if path is not None else default_config_path()
    data = _read_file(cfg_path, explicit)
    if data is None:
        return _build({}, cfg_path, base=Path.cwd(), found=False)
    try:
        raw = tomllib.loads(_decode(cfg_path, data))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(cfg_path, f"not valid TOML: {exc}") from exc
    except ValueError as exc:  # an integer of thousands of digits: over int's digit limit
        raise ConfigError(
            cfg_path, f"not valid TOML: a number of over {sys.get_int_max_str_digits()} digits"
        ) from exc
    return _build(raw, cfg_path, base=cfg_path.resolve().parent, found=True)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_file(path: Path, explicit: bool) -> bytes | None:
    """The config file's bytes, or None when the default file is absent. Only a regular
    file is read, and at most MAX_CONFIG_BYTES of it: a named pipe would wait for a writer
    and a device never end. O_NONBLOCK keeps the open of a pipe from waiting."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        if os.path.islink(path):
            target = os.readlink(path)
            raise ConfigError(
                path, f"a symlink to {target}, which does not exist", "fix or remove the link"
            ) from exc
        if not explicit:
            return None
        raise ConfigError(
            path,
            "config file not found",
            "check the path given by --config or TICKER_CONFIG, or copy config.toml there",
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                path,
                "a symlink loop, its links never reach a file",
                "point the link, or --config, at the real config file",
            ) from exc
        raise ConfigError(path, f"cannot be read: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        for test, kind in _FILE_KINDS:
            if test(mode):
                raise ConfigError(
                    path, f"{kind}, not a config file", "give the path of a TOML file"
                )
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            path,
            f"over {MAX_CONFIG_BYTES >> 20} MB, too big for a config file",
            "is this the right file?",
        )
    return data


_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _decode(path: Path, data: bytes) -> str:
    """The text of a UTF-8 file. A UTF-8 byte order mark (as Notepad writes) is dropped;
    UTF-16 and UTF-32 files and stray bytes are refused with where they are."""
    for bom, name in _WIDE_BOMS:  # UTF-32 first: its little-endian BOM starts like UTF-16's
        if data.startswith(bom):
            raise ConfigError(path, f"saved as {name}, not UTF-8", "save it as UTF-8")
    # UTF-16 without a BOM: ASCII text has a NUL beside every character (TOML has none).
    half = len(data) // 2
    if half and max(data[0::2].count(0), data[1::2].count(0)) > half // 2:
        raise ConfigError(path, "saved as UTF-16, not UTF-8", "save it as UTF-8")
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise ConfigError(
            path,
            f"not UTF-8: byte 0x{data[at]:02x} at offset {at}, line {line}, column {column}",
            "save it as UTF-8",
        ) from exc


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
            self.path, f"{self.prefix}.{key} must be {want}, not {_as_toml(self.table[key])}"
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

    def number(self, key: str, default: float, low: float, high: float) -> float:
        """Seconds: a finite number from low to high (TOML also reads nan and inf)."""
        want = f"a number of seconds from {_num(low)} to {_num(high)}"
        value = self.get(key, (int, float), default, want)
        if not _finite(value) or not low <= value <= high:
            raise self._fail(key, want)
        return float(value)

    def whole(self, key: str, default: int, low: int, high: int, unit: str) -> int:
        want = f"a whole number of {unit} from {low} to {high}"
        value: int = self.get(key, int, default, want)
        if not low <= value <= high:
            raise self._fail(key, want)
        return value

    def duration(self, key: str, default: float) -> float:
        """Seconds, or text like "2d": over 0 and at most MAX_PERIOD."""
        want = (
            f"a duration over 0 and up to {MAX_PERIOD // DAY} days: seconds, or text like "
            '"2d", "36h", "90m"'
        )
        value = self.table.get(key, default)
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool) and _finite(value):
            seconds = value
        elif isinstance(value, str):
            match = _DURATION_RE.match(value)
            if match:
                seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds is None or not 0 < seconds <= MAX_PERIOD:
            raise self._fail(key, want)
        return float(seconds)

    def schedule(self, key: str, default: int | str) -> int | str:
        value = self.table.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PERIOD:
            return value
        if isinstance(value, str) and len(value.split()) == CRON_FIELDS:
            from ticker.schedule_spec import validate_cron

            problem = validate_cron(value)
            if problem is None:
                return value
            raise ConfigError(
                self.path, f"{self.prefix}.{key}: bad cron string {value!r}: {problem}"
            )
        raise self._fail(
            key,
            f"an interval in seconds from 1 to {MAX_PERIOD} or a 5-field cron string "
            'like "0 */6 * * *"',
        )

    def path_value(self, key: str, default: str, base: Path) -> Path:
        value = self.get(key, str, default, "a path string")
        if not value.strip():
            raise self._fail(key, "a non-empty path")
        if "\0" in value:  # no file name can hold one; the OS would refuse it later
            raise self._fail(key, "a path without NUL characters")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p


def _http_url(url: str) -> bool:
    """An http(s) URL with a host, a valid port if any, and no blanks: one a fetch can
    at least try, so a typo is reported here rather than by every scrape."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # a bad IPv6 literal, a port that is not a number
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(c.isspace() or ord(c) < 32 for c in url)
    )


def _finite(value: float) -> bool:
    """False for nan and the infinities; an int is always finite (math.isfinite would
    overflow on a huge one)."""
    return isinstance(value, int) or math.isfinite(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _as_toml(value: Any) -> str:
    """A value as it is written in the file, shortened: true, "text", nan, 1e+20."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _source(path: Path, i: int, table: dict[str, Any]) -> Source:
    from ticker.sources import KINDS

    r = _Reader(path, table, f"sources[{i}]", {"name", "url", "timezone", "pairs", "kind", "label"})
    name = r.get("name", str, "timesca", "a string")
    if not SOURCE_NAME_RE.match(name):
        raise r._fail("name", "lower-case letters, digits, '-' or '_' (at most 40)")
    url = r.get("url", str, "https://timesca.com/", "a URL string")
    if not _http_url(url):
        raise r._fail("url", "an http:// or https:// URL with a host (and a port up to 65535)")
    timezone = r.get("timezone", str, "Asia/Almaty", "an IANA time zone like Asia/Almaty")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise r._fail("timezone", "an IANA time zone like Asia/Almaty") from exc
    pairs = r.get("pairs", list, list(DEFAULT_PAIRS), 'a list like ["KZT/USD", "UZS/USD"]')
    if not pairs or not all(isinstance(p, str) and PAIR_RE.match(p) for p in pairs):
        raise r._fail("pairs", 'a non-empty list of pairs like "KZT/USD"')
    if name == REFERENCE:
        raise r._fail("name", f'a name other than "{REFERENCE}" (the official rates\' source)')
    kind = r.get("kind", str, "ticker", "a kind of source")
    kinds = [k for k in KINDS if k != REFERENCE]  # the official rates come from [reference]
    if kind not in kinds:
        raise r._fail("kind", "one of " + ", ".join(f'"{k}"' for k in kinds))
    default_label = DEFAULT_LABEL if url == Source.url else f"{urlsplit(url).hostname}"
    label = r.get("label", str, default_label, "a string")
    if not label.strip() or len(label) > MAX_LABEL or not label.isprintable():
        raise r._fail("label", f"a line of text of at most {MAX_LABEL} characters")
    return Source(
        name=name,
        url=url,
        timezone=timezone,
        pairs=tuple(dict.fromkeys(pairs)),
        kind=kind,
        label=label,
    )


def _build(raw: dict[str, Any], path: Path, base: Path, found: bool) -> Config:
    # Rejects unknown top-level tables; each table's keys are checked by its own reader.
    _Reader(
        path,
        raw,
        "config",
        {
            "store",
            "sources",
            "http",
            "archive",
            "schedule",
            "charts",
            "status",
            "reference",
            "serve",
            "recover",
        },
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
        {"scrape", "jitter", "charts", "misfire_grace_time", "reference"},
    )
    charts = _Reader(path, raw.get("charts", {}), "charts", {"dir", "window_days", "display"})
    status = _Reader(path, raw.get("status", {}), "status", {"stale_after"})
    recover = _Reader(
        path,
        raw.get("recover", {}),
        "recover",
        {"cdx_url", "snapshot_url", "commoncrawl_index", "commoncrawl_data", "per_minute"},
    )
    reference = _Reader(path, raw.get("reference", {}), "reference", {"url", "tolerance_pct"})
    serve = _Reader(path, raw.get("serve", {}), "serve", {"host", "port"})
    host = serve.get("host", str, "127.0.0.1", "a host name or IP address to listen on")
    if not _HOST_RE.match(host):
        raise serve._fail("host", 'a host name or IP address like "127.0.0.1" or "::1"')
    want_port = f"a port number from 0 to {MAX_PORT} (0: any free port)"
    port: int = serve.get("port", int, 8080, want_port)
    if not 0 <= port <= MAX_PORT:
        raise serve._fail("port", want_port)

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

    reference_url = reference.get("url", str, REFERENCE_URL, "a URL string")
    if not _http_url(reference_url):
        raise reference._fail(
            "url", "an http:// or https:// URL with a host (and a port up to 65535)"
        )
    want = f"a number of percent from 0 to {_num(MAX_TOLERANCE_PCT)}"
    tolerance = reference.get("tolerance_pct", (int, float), 1.0, want)
    if not _finite(tolerance) or not 0 <= tolerance <= MAX_TOLERANCE_PCT:
        raise reference._fail("tolerance_pct", want)

    return Config(
        path=path if found else None,
        store_path=store.path_value("path", "db/ticker.duckdb", base),
        lock_timeout=store.number("lock_timeout", 30.0, 0, MAX_LOCK_TIMEOUT),
        sources=sources,
        http=HttpConfig(
            timeout=http.number("timeout", 20.0, 0.001, MAX_HTTP_TIMEOUT),
            max_bytes=http.whole(
                "max_bytes", 5 * 1024 * 1024, MIN_MAX_BYTES, MAX_MAX_BYTES, "bytes"
            ),
            retries=http.whole("retries", 3, 0, MAX_RETRIES, "retries"),
            backoff=http.number("backoff", 1.0, 0, MAX_BACKOFF),
            max_retry_after=http.number("max_retry_after", 120.0, 0, MAX_RETRY_AFTER),
            verify_tls=http.get("verify_tls", bool, True, "true or false"),
            deadline=http.number("deadline", 180.0, 0.001, MAX_DEADLINE),
        ),
        archive_dir=archive.path_value("dir", "db/pages", base),
        schedule=ScheduleConfig(
            scrape=sched.schedule("scrape", 1800),
            jitter=sched.whole("jitter", 60, 0, MAX_JITTER, "seconds"),
            charts=sched.schedule("charts", 86400),
            misfire_grace_time=sched.whole("misfire_grace_time", 300, 1, MAX_PERIOD, "seconds"),
            reference=sched.schedule("reference", 86400),
        ),
        charts=ChartsConfig(
            dir=charts.path_value("dir", "charts", base),
            window_days=charts.whole("window_days", 365, 1, MAX_WINDOW_DAYS, "days"),
            display=display,
        ),
        stale_after=status.duration("stale_after", 2 * 86400.0),
        reference=reference_source(reference_url.rstrip("/"), sources),
        tolerance_pct=float(tolerance),
        reference_table="reference" in raw,
        serve=ServeConfig(host=host, port=port),
        recover=_recover(recover),
    )


def _recover(r: _Reader) -> RecoverConfig:
    d = RecoverConfig()

    def url(key: str, default: str) -> str:
        value: str = r.get(key, str, default, "a URL string")
        if not _http_url(value):
            raise r._fail(key, "an http:// or https:// URL with a host")
        return value.rstrip("/") if key != "snapshot_url" else value

    snapshot = url("snapshot_url", d.snapshot_url)
    try:
        snapshot.format(timestamp="20250320120000", url="https://timesca.com/")
        fields = {f for _, f, _, _ in string.Formatter().parse(snapshot) if f}
    except (ValueError, IndexError, KeyError) as exc:
        raise r._fail("snapshot_url", "a URL with {timestamp} and {url} in it") from exc
    if fields != {"timestamp", "url"}:
        raise r._fail("snapshot_url", "a URL with {timestamp} and {url} in it")
    return RecoverConfig(
        cdx_url=url("cdx_url", d.cdx_url),
        snapshot_url=snapshot,
        commoncrawl_index=url("commoncrawl_index", d.commoncrawl_index),
        commoncrawl_data=url("commoncrawl_data", d.commoncrawl_data),
        per_minute=r.whole("per_minute", d.per_minute, 1, MAX_PER_MINUTE, "requests"),
    )
