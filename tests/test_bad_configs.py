"""Config values and config files ticker must refuse: each gets one `error:` line naming
the key or the file, exit code 2, and never a hang or a traceback. And the other side:
every number at either end of its range works wherever it is used."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result
from conftest import Project, one_error_line, ticker_in_process, ticker_subprocess
from pages import html_page, text_page
from servers import LocalServer, html

from ticker.config import load_config
from ticker.errors import ConfigError

pytestmark = pytest.mark.usefixtures("no_ticker_config")

# Every number in the config: its lowest and highest accepted values, as config.toml's
# comments state them, and the values just past each end.
YEAR = 366 * 86400
LIMITS: dict[str, tuple[float, float, float, float]] = {
    # key: (too low, lowest, highest, too high)
    "store.lock_timeout": (-0.5, 0, 3600, 3600.5),
    "http.timeout": (0.0009, 0.001, 600, 600.5),
    "http.max_bytes": (1023, 1024, 20 * 1024 * 1024, 20 * 1024 * 1024 + 1),
    "http.retries": (-1, 0, 10, 11),
    "http.backoff": (-0.5, 0, 120, 120.5),
    "http.max_retry_after": (-0.5, 0, 21600, 21600.5),
    "http.deadline": (0.0009, 0.001, 86400, 86400.5),
    "schedule.scrape": (0, 1, YEAR, YEAR + 1),
    "schedule.jitter": (-1, 0, 86400, 86401),
    "schedule.charts": (0, 1, YEAR, YEAR + 1),
    "schedule.misfire_grace_time": (0, 1, YEAR, YEAR + 1),
    "charts.window_days": (0, 1, 36525, 36526),
    "status.stale_after": (0, 1, YEAR, YEAR + 0.5),
    "recover.per_minute": (0, 1, 100000, 100001),
    "serve.port": (-1, 0, 65535, 65536),
}
# How each message states the highest value.
STATED = {key: str(int(limits[2])) for key, limits in LIMITS.items()}
STATED["status.stale_after"] = "366 days"

# Bad values as written in the file, and as the message shows them back.
BAD_VALUES = {
    "nan": ("nan", "nan"),
    "inf": ("inf", "inf"),
    "-inf": ("-inf", "-inf"),
    "huge": ("100000000000000", "100000000000000"),
    "huge float": ("1e300", "1e+300"),
    "negative": ("-1", "-1"),
    "bool": ("true", "true"),
    "string": ('"soon"', '"soon"'),
}


def _set(project: Project, key: str, written: str) -> None:
    table, name = key.split(".")
    project.config.write_text(f"[{table}]\n{name} = {written}\n", encoding="utf-8")


def _literal(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
@pytest.mark.parametrize("key", sorted(LIMITS))
def test_a_bad_number_is_one_line_naming_the_key_and_its_range(
    project: Project, key: str, bad: str
) -> None:
    written, shown = BAD_VALUES[bad]
    _set(project, key, written)

    result = project.run("latest")

    assert result.exit_code == 2, result.output
    message = one_error_line(result.stderr)
    assert message.startswith(f"error: {project.config}: {key} must be "), message
    assert STATED[key] in message, message
    assert message.endswith(f", not {shown}"), message
    assert not project.db.exists() and not project.db.parent.exists()


def test_the_message_for_a_huge_jitter(project: Project) -> None:
    _set(project, "schedule.jitter", "100000000000000")
    result = project.run("latest")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        f"error: {project.config}: schedule.jitter must be a whole number of seconds "
        "from 0 to 86400, not 100000000000000"
    )


@pytest.mark.parametrize("key", sorted(LIMITS))
def test_each_end_of_a_range_is_accepted_and_past_it_refused(project: Project, key: str) -> None:
    too_low, lowest, highest, too_high = LIMITS[key]
    for value in (lowest, highest):
        _set(project, key, _literal(value))
        load_config(project.config)
    for value in (too_low, too_high):
        _set(project, key, _literal(value))
        with pytest.raises(ConfigError, match=key):
            load_config(project.config)


def test_the_shipped_config_states_each_range() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config.toml"
    lines = shipped.read_text(encoding="utf-8").splitlines()
    table = ""
    comments: dict[str, str] = {}
    above: list[str] = []
    for text in lines:
        if text.startswith("["):
            table = text.strip("[]")
        elif text.startswith("#"):
            above.append(text)
            continue
        elif "=" in text:
            comments[f"{table}.{text.split('=')[0].strip()}"] = " ".join(above)
        above = []
    for key, (_, lowest, highest, _) in LIMITS.items():
        stated = "366 days" if key == "status.stale_after" else f"{_literal(lowest)} to {highest}"
        assert stated in comments[key], (key, comments[key])


# --- the config file itself ---------------------------------------------------------------


def _bytes(data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = d / "bad.toml"
        path.write_bytes(data)
        return path

    return make


def _symlink_loop(d: Path) -> Path:
    (d / "a.toml").symlink_to("b.toml")
    (d / "b.toml").symlink_to("a.toml")
    return d / "a.toml"


def _dangling(d: Path) -> Path:
    (d / "bad.toml").symlink_to("missing.toml")
    return d / "bad.toml"


def _directory(d: Path) -> Path:
    (d / "bad.toml").mkdir()
    return d / "bad.toml"


def _huge(d: Path) -> Path:
    path = d / "bad.toml"
    with path.open("wb") as fh:
        fh.write(b"[store]\nlock_timeout = 3\n")
        fh.truncate(8 << 30)  # 8 GB, sparse: reading it whole would take minutes
    return path


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "bad.toml")
    return d / "bad.toml"


TEXT = "[store]\nlock_timeout = 3\n# comment\n"
FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "non-UTF-8 byte": (
        _bytes(b"[store]\nlock_timeout = 3\n# \xff\xfe\n"),
        "not UTF-8: byte 0xff at offset 27, line 3, column 3 (save it as UTF-8)",
    ),
    "UTF-16 with a BOM": (_bytes(TEXT.encode("utf-16")), "saved as UTF-16, not UTF-8"),
    "UTF-16 big-endian": (
        _bytes(b"\xfe\xff" + TEXT.encode("utf-16-be")),
        "saved as UTF-16, not UTF-8",
    ),
    "UTF-16 without a BOM": (_bytes(TEXT.encode("utf-16-le")), "saved as UTF-16, not UTF-8"),
    "UTF-32": (_bytes(TEXT.encode("utf-32")), "saved as UTF-32, not UTF-8"),
    "symlink loop": (_symlink_loop, "a symlink loop"),
    "dangling symlink": (_dangling, "a symlink to missing.toml, which does not exist"),
    "directory": (_directory, "a directory, not a config file"),
    "over the size cap": (_huge, "over 1 MB, too big for a config file"),
    "a number of 5000 digits": (_bytes(b"[http]\nretries = " + b"9" * 5000), "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_bad_config_file_is_one_line_naming_it(project: Project, case: str) -> None:
    make, expected = FILES[case]
    path = make(project.root)

    result = ticker_in_process(path, "latest")

    assert result.exit_code == 2, result.output
    message = one_error_line(result.stderr)
    assert message.startswith(f"error: {path}: "), message
    assert expected in message, message
    assert not project.db.exists()


@pytest.mark.parametrize(
    ("case", "make", "expected"),
    [
        ("named pipe", _fifo, "a named pipe, not a config file"),
        ("device", lambda d: Path("/dev/zero"), "a character device, not a config file"),
    ],
)
@pytest.mark.parametrize("given_by", ["--config", "TICKER_CONFIG"])
def test_a_pipe_or_a_device_is_refused_without_reading_it(
    tmp_path: Path,
    case: str,
    make: Callable[[Path], Path],
    expected: str,
    given_by: str,
) -> None:
    path = make(tmp_path)
    if given_by == "--config":
        proc = ticker_subprocess(path, "latest", cwd=tmp_path, timeout=30)
    else:
        proc = ticker_subprocess(
            None, "latest", cwd=tmp_path, env={"TICKER_CONFIG": str(path)}, timeout=30
        )
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc.stderr) == (
        f"error: {path}: {expected} (give the path of a TOML file)"
    )
    assert not (tmp_path / "db").exists()


def test_a_utf8_byte_order_mark_is_accepted(project: Project) -> None:
    project.config.write_bytes(b'\xef\xbb\xbf[store]\npath = "bom.duckdb"\nlock_timeout = 3\n')
    config = load_config(project.config)
    assert config.lock_timeout == 3
    assert config.store_path == project.root / "bom.duckdb"
    project.write("a.txt", text_page())
    result = project.backfill()
    assert result.exit_code == 0, result.output
    assert (project.root / "bom.duckdb").exists()


# --- every number at either end of its range works ------------------------------------------


def _ok(result: Result) -> Result:
    """A command's result that ended by its own exit code, not by an exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


@pytest.mark.usefixtures("own_logging")
@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_every_number_at_the_end_of_its_range_works(
    tmp_path: Path, server: LocalServer, end: str
) -> None:
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.executors.base import run_job

    from ticker.scheduler import Daemon, build_scheduler, job_specs

    index = 1 if end == "lowest" else 2
    tables: dict[str, list[str]] = {}
    for key, limits in LIMITS.items():
        table, name = key.split(".")
        tables.setdefault(table, []).append(f"{name} = {_literal(limits[index])}")
    tables["store"].append('path = "db/ticker.duckdb"')
    # two recent days, both before today in UTC and in Almaty
    day = datetime.now(ZoneInfo("Asia/Almaty")).date() - timedelta(days=2)
    days = (day - timedelta(days=1), day)
    server.route(
        "/",
        html(html_page(day=days[0])),
        html(html_page(day=days[1])),
    )
    body = "".join(f"[{t}]\n" + "\n".join(lines) + "\n" for t, lines in tables.items())
    project = Project(tmp_path / "p")
    project.config.write_text(f'{body}[[sources]]\nurl = "{server.url("/")}"\n', encoding="utf-8")
    config = load_config(project.config)

    scrapes = [_ok(project.run("scrape")) for _ in range(2)]
    latest = _ok(project.run("latest"))
    status = _ok(project.run("status"))
    check = _ok(project.run("check"))
    chart = _ok(project.run("chart", "--pair", "KZT"))

    if end == "highest":
        assert [r.exit_code for r in scrapes] == [0, 0], [r.output for r in scrapes]
        assert f"{days[1]:%Y-%m-%d}" in latest.stdout
        assert status.exit_code == 0, status.output  # fresh: newer than 366 days
        assert check.exit_code == 0, check.output
        assert chart.exit_code == 0 and "wrote" in chart.stdout, chart.output
    else:
        # a 1024-byte cap: the page is always too large (if 1 ms let it arrive at all)
        assert [r.exit_code for r in scrapes] == [1, 1]
        assert "no quotes stored yet" in latest.stdout
        assert status.exit_code == 1 and "stale, failing" in status.stdout
        assert chart.exit_code == 1

    now = datetime.now(UTC)
    for spec in job_specs(config, now):
        fire = spec.trigger.get_next_fire_time(None, now)
        assert fire is not None and fire > now
    scheduler = build_scheduler(config, Daemon(config), now)
    grace = timedelta(seconds=config.schedule.misfire_grace_time)
    for job in scheduler.get_jobs():
        late = now - grace - timedelta(seconds=5)
        events = run_job(job, "default", [late], "ticker.test")
        assert [e.code for e in events] == [EVENT_JOB_MISSED]
