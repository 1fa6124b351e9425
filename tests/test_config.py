"""The configuration: defaults, paths relative to the config file, TICKER_CONFIG, and one
clean line (file and key, exit code 2) for every mistake."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Project, one_error_line, ticker_subprocess
from pages import text_page

from ticker.config import DEFAULT_PAIRS, load_config
from ticker.errors import ConfigError

pytestmark = pytest.mark.usefixtures("no_ticker_config")


def test_defaults_without_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.path is None
    assert config.store_path == tmp_path / "db" / "ticker.duckdb"
    assert config.lock_timeout == 30
    (source,) = config.sources
    assert (source.name, source.url, source.timezone) == (
        "timesca",
        "https://timesca.com/",
        "Asia/Almaty",
    )
    assert source.pairs == DEFAULT_PAIRS == ("KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD", "TMT/USD")
    assert source.tz == ZoneInfo("Asia/Almaty")


def test_the_shipped_config_holds_the_defaults() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config.toml"
    config = load_config(shipped)
    assert config.store_path == shipped.parent / "db" / "ticker.duckdb"
    assert config.lock_timeout == 30
    assert config.sources[0].pairs == DEFAULT_PAIRS
    # every key is explained: a comment line comes before each key of the file
    lines = shipped.read_text(encoding="utf-8").splitlines()
    for i, text in enumerate(lines):
        if "=" in text and not text.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("#"), f"key without a comment: {text}"


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    config_file = conf_dir / "ticker.toml"
    config_file.write_text('[store]\npath = "data/rates.duckdb"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    page = elsewhere / "page.txt"
    page.write_text(text_page(), encoding="utf-8")

    # run from another directory, naming the config by a relative path
    proc = ticker_subprocess(Path("../conf/ticker.toml"), "backfill", "page.txt", cwd=elsewhere)

    assert proc.returncode == 0, proc.stderr
    assert (conf_dir / "data" / "rates.duckdb").exists()
    assert not (elsewhere / "data").exists()


def test_ticker_config_environment_variable(tmp_path: Path) -> None:
    project = Project(tmp_path / "p")
    project.write("page.txt", text_page())
    env = {"TICKER_CONFIG": str(project.config)}

    proc = ticker_subprocess(None, "backfill", str(project.dumps), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    latest = ticker_subprocess(None, "latest", "--json", cwd=tmp_path, env=env)

    assert latest.returncode == 0, latest.stderr
    assert len(json.loads(latest.stdout)) == 5
    assert project.db.exists()


def test_config_option_wins_over_the_environment(tmp_path: Path) -> None:
    project = Project(tmp_path / "p")
    env = {"TICKER_CONFIG": str(tmp_path / "missing.toml")}
    proc = ticker_subprocess(project.config, "latest", env=env)
    assert proc.returncode == 0, proc.stderr


def test_a_missing_ticker_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = ticker_subprocess(None, "latest", cwd=tmp_path, env={"TICKER_CONFIG": str(missing)})
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == (
        f"error: {missing}: config file not found (check the path given by --config or "
        "TICKER_CONFIG, or copy config.toml there)"
    )


def test_a_missing_config_option_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = ticker_subprocess(missing, "latest")
    assert proc.returncode == 2
    assert str(missing) in one_error_line(proc.stderr)
    assert "not found" in proc.stderr


BAD = {
    "bad TOML": ("[store\npath = 1\n", "not valid TOML"),
    "unknown key": ('[store]\ncolour = "blue"\n', "unknown key store.colour"),
    "unknown table": ("[stor]\npath = 'x'\n", "unknown key config.stor"),
    "bad pair": ('[[sources]]\npairs = ["KZT-USD"]\n', "sources[0].pairs"),
    "lower-case pair": ('[[sources]]\npairs = ["kzt/usd"]\n', "sources[0].pairs"),
    "empty pairs": ("[[sources]]\npairs = []\n", "sources[0].pairs"),
    "bad timezone": ('[[sources]]\ntimezone = "Mars/Olympus"\n', "sources[0].timezone"),
    "bad source name": ('[[sources]]\nname = "Times CA"\n', "sources[0].name"),
    "bad url": ('[[sources]]\nurl = "ftp://x"\n', "sources[0].url"),
    "url without a host": ('[[sources]]\nurl = "http://:80/"\n', "sources[0].url"),
    "url with a bad port": ('[[sources]]\nurl = "http://127.0.0.1:99999/"\n', "sources[0].url"),
    "url with a bad IPv6 host": ('[[sources]]\nurl = "http://[::1/"\n', "sources[0].url"),
    "url with a blank": ('[[sources]]\nurl = "http://a b/"\n', "sources[0].url"),
    "same names": ('[[sources]]\nname = "a"\n[[sources]]\nname = "a"\n', "share a name"),
    "lock_timeout text": ('[store]\nlock_timeout = "soon"\n', "store.lock_timeout"),
    "negative lock_timeout": ("[store]\nlock_timeout = -1\n", "store.lock_timeout"),
    "path not a string": ("[store]\npath = 3\n", "store.path"),
    "zero deadline": ("[http]\ndeadline = 0\n", "http.deadline"),
    "deadline text": ('[http]\ndeadline = "3m"\n', "http.deadline"),
    "empty path": ('[store]\npath = ""\n', "store.path"),
    "NUL in a path": ('[charts]\ndir = "charts\\u0000x"\n', "charts.dir"),
    "per-source stale_after": ('[[sources]]\nstale_after = "1d"\n', "sources[0].stale_after"),
    "unknown kind": ('[[sources]]\nkind = "rss"\n', 'sources[0].kind must be one of "ticker"'),
    "empty label": ('[[sources]]\nlabel = " "\n', "sources[0].label"),
    "label with a newline": ('[[sources]]\nlabel = "a\\nb"\n', "sources[0].label"),
    "label too long": (f'[[sources]]\nlabel = "{"x" * 121}"\n', "sources[0].label"),
    "snapshot_url without {url}": (
        '[recover]\nsnapshot_url = "https://web.archive.org/web/{timestamp}id_/"\n',
        "recover.snapshot_url must be a URL with {timestamp} and {url} in it",
    ),
    "snapshot_url with another field": (
        '[recover]\nsnapshot_url = "https://a.example/{timestamp}/{url}/{when}"\n',
        "recover.snapshot_url must be a URL with {timestamp} and {url} in it",
    ),
    "cdx_url not http": ('[recover]\ncdx_url = "ftp://web.archive.org/cdx"\n', "recover.cdx_url"),
    "commoncrawl_data without a host": (
        '[recover]\ncommoncrawl_data = "https:///x"\n',
        "recover.commoncrawl_data",
    ),
    "unknown recover key": ("[recover]\nrate = 30\n", "unknown key recover.rate"),
}


def test_a_source_label_defaults_to_the_host_of_its_url(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[sources]]\nname = "b"\nurl = "https://news.example:8443/x"\n', "utf-8")
    assert load_config(cfg).sources[0].label == "news.example"
    assert load_config(cfg).sources[0].kind == "ticker"


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_config_mistake_is_one_line_naming_file_and_key(project: Project, case: str) -> None:
    text, key = BAD[case]
    project.config.write_text(text, encoding="utf-8")

    result = project.run("latest")

    assert result.exit_code == 2, result.output
    message = one_error_line(result.stderr)
    assert message.startswith(f"error: {project.config}: "), message
    assert key in message, message
    assert not project.db.exists()
    with pytest.raises(ConfigError):
        load_config(project.config)


def test_a_config_mistake_in_a_real_process(project: Project) -> None:
    project.config.write_text('[[sources]]\ntimezone = "Nowhere/City"\n', encoding="utf-8")
    proc = ticker_subprocess(project.config, "backfill", str(project.dumps))
    assert proc.returncode == 2
    message = one_error_line(proc.stderr)
    assert str(project.config) in message and "sources[0].timezone" in message
