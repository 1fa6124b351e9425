"""What ticker trusts: page content never names a file, decompression is capped, TLS is
verified unless the config says otherwise (with a warning), SQL takes parameters."""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import ssl
import subprocess
import sys
import time
import zlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import LOCAL_HTTP, ticker_env, ticker_subprocess, write_config
from hypothesis import given
from hypothesis import strategies as st
from pages import PAIRS, html_page, simulate, text_page
from servers import LocalServer, html

from ticker.config import HttpConfig, load_config
from ticker.errors import ConfigError, FetchError
from ticker.store import Store

TICKER = Path(__file__).resolve().parent.parent / "ticker"
FUZZ = Path(__file__).parent / "fixtures" / "fuzz"
MB = 1 << 20

# --- page content never decides a path ---------------------------------------------------------


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_pairs_from_pages_never_name_a_file(tmp_path: Path) -> None:
    """Pages whose pairs hold '../', slashes, odd characters or an unconfigured code, and
    a WARC record naming a source '../../evil': nothing is stored under those names, and
    the charts drawn afterwards are named after the configured pairs only."""
    from ticker.archive import warc_bytes

    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for name in ("path_in_pair.txt", "lookalike_codes.txt", "malformed_numbers.txt"):
        shutil.copy(FUZZ / name, dumps / name)
    odd = "\n".join(
        f"  \u2022 {p} = 0.01164 0.87%"
        for p in ("AAA/USD", "ZZZ/EUR", "KZT/USD", "../../../tmp/x/USD", "KGS/USD\\..\\")
    )
    (dumps / "odd.txt").write_text(f"{odd}\n21 March 2025\n", encoding="utf-8")
    day = simulate(date(2025, 3, 22), 1)[0]
    (dumps / "evil.warc.gz").write_bytes(
        warc_bytes(
            url="https://timesca.com/../../evil",
            source="../../evil",
            captured_at=datetime(2025, 3, 22, 6, tzinfo=UTC),
            status=200,
            reason="OK",
            http_version="HTTP/1.1",
            headers=[("Content-Type", "text/html")],
            body=html_page(day.quotes, day.date).encode(),
            record_id="2" * 32,
            filename="evil.warc.gz",
        )
    )
    for d in simulate(date(2025, 3, 10), 10):
        (dumps / f"day-{d.date}.txt").write_text(text_page(d.quotes, d.date), encoding="utf-8")
    cfg = write_config(tmp_path / "w")
    before = _files(tmp_path)
    result = ticker_subprocess(cfg, "backfill", str(dumps))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ticker_subprocess(cfg, "chart", "--all").returncode == 0

    with Store.open(cfg.parent / "ticker.duckdb", read_only=True) as store:
        sources = store.con.execute("SELECT DISTINCT source FROM captures").fetchall()
        pairs = store.con.execute("SELECT DISTINCT pair FROM observations").fetchall()
    assert sources == [("timesca",)]  # the WARC record's source header names no source
    assert {p for (p,) in pairs} <= set(PAIRS)
    new = _files(tmp_path) - before
    charts = {p for p in new if p.startswith("w/charts/")}
    assert charts == {f"w/charts/{p.replace('/', '-')}.png" for p in PAIRS} | {
        "w/charts/overview.png"
    }
    assert new - charts == {"w/ticker.duckdb"}


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[[sources]]\nname = "../evil"\n', "sources[0].name"),
        ('[[sources]]\nname = "a/b"\n', "sources[0].name"),
        ('[[sources]]\nname = ".hidden"\n', "sources[0].name"),
        ('[[sources]]\npairs = ["../X/USD"]\n', "sources[0].pairs"),
        ('[[sources]]\npairs = ["KZT/USD/.."]\n', "sources[0].pairs"),
        ('[[sources]]\npairs = ["kzt/usd"]\n', "sources[0].pairs"),
    ],
)
def test_config_refuses_names_that_could_be_paths(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


@given(st.text(max_size=30))
def test_a_chart_file_name_is_always_a_plain_name(pair: str) -> None:
    from ticker.charts.data import pair_filename

    name = pair_filename(pair)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*\.png", name), name


def test_archive_files_are_named_by_ticker_not_by_the_page(tmp_path: Path) -> None:
    from ticker.archive import archive_path

    at = datetime(2025, 3, 20, 6, 1, 2, tzinfo=UTC)
    path = archive_path(tmp_path, "timesca", at, "ab" * 16)
    assert path == tmp_path / "2025-03-20" / "20250320T060102Z-timesca-abababababab.warc.gz"


def test_command_line_pairs_are_checked_against_the_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for bad in ("../../etc/passwd", "KZT/USD/..", "AAA"):
        result = ticker_subprocess(cfg, "history", bad)
        assert result.returncode == 2
        assert "unknown pair" in result.stderr and "configured pairs" in result.stderr
        result = ticker_subprocess(cfg, "chart", "--pair", bad)
        assert result.returncode == 2 and "unknown pair" in result.stderr


# --- decompression is capped -------------------------------------------------------------------

RSS = """
import resource, sys
from ticker.cli import main
try:
    main(sys.argv[1:])
finally:
    kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
             resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"maxrss {kb // 1024} MB", file=sys.stderr)
"""
BOMB_MB = 300


def _gzip_stream(path: Path, parts: list[bytes | tuple[bytes, int]]) -> None:
    """One gzip member of the parts; (chunk, n) is n copies, compressed as they go."""
    co = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as fh:
        for part in parts:
            chunk, n = part if isinstance(part, tuple) else (part, 1)
            for _ in range(n):
                fh.write(co.compress(chunk))
        fh.write(co.flush())


def _warc_head(length: int, extra: bytes = b"") -> bytes:
    return (
        b"WARC/1.0\r\nWARC-Type: response\r\n"
        b"WARC-Record-ID: <urn:uuid:12345678-1234-1234-1234-123456789012>\r\n"
        b"WARC-Date: 2025-03-20T06:00:00Z\r\nWARC-Target-URI: https://timesca.com/\r\n"
        b"Content-Type: application/http; msgtype=response\r\n"
        + extra
        + b"Content-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )


def _bombs(directory: Path) -> dict[str, str]:
    """Small files that inflate to BOMB_MB MB; for each, the reason backfill must give."""
    directory.mkdir()
    mb = BOMB_MB
    _gzip_stream(directory / "zeros.txt.gz", [(b"\0" * MB, mb)])
    line = b"  \xe2\x80\xa2 KGS/USD = 0.01164 0.87%\n"
    _gzip_stream(directory / "ticker.txt.gz", [(line * (MB // len(line)), mb)])
    _gzip_stream(directory / "page.html.gz", [b"<html><body><div>", (b"<p>a</p>" * (MB // 8), mb)])
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
    _gzip_stream(
        directory / "body.warc.gz",
        [_warc_head(len(http) + mb * MB), http, (b"a" * MB, mb), b"\r\n\r\n"],
    )
    status = b"HTTP/1.1 200 OK\r\nX-Long: "
    _gzip_stream(
        directory / "http-header.warc.gz",
        [_warc_head(len(status) + mb * MB + 8), status, (b"b" * MB, mb), b"\r\n\r\nhi\r\n\r\n"],
    )
    _gzip_stream(
        directory / "warc-header.warc.gz",
        [b"WARC/1.0\r\nWARC-Type: response\r\nX-Long: ", (b"c" * MB, mb), b"\r\n\r\n"],
    )
    many = b"X-Many: header\r\n" * (MB // 16)
    _gzip_stream(
        directory / "many-headers.warc.gz",
        [_warc_head(len(status) + mb * MB), b"HTTP/1.1 200 OK\r\n", (many, mb), b"\r\n"],
    )
    too_big = "larger than 20 MB"
    header = "WARC record headers over 64 KB a line or 1 MB a record"
    return {
        "zeros.txt.gz": too_big,
        "ticker.txt.gz": too_big,
        "page.html.gz": too_big,
        "body.warc.gz#1": "record larger than 20 MB",
        "http-header.warc.gz": header,
        "warc-header.warc.gz": header,
        "many-headers.warc.gz": header,
    }


@pytest.mark.slow
def test_decompression_bombs_are_reported_without_reading_them_whole(tmp_path: Path) -> None:
    t0 = time.monotonic()
    bombs = _bombs(tmp_path / "bombs")
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "bombs").iterdir()}
    assert max(sizes.values()) < 2 * MB  # small files that inflate to 300 MB each
    built = time.monotonic() - t0
    good = simulate(date(2025, 3, 20), 2)
    for d in good:
        good_page = text_page(d.quotes, d.date)
        (tmp_path / "bombs" / f"good-{d.date}.txt").write_text(good_page, encoding="utf-8")
    cfg = write_config(tmp_path / "w")

    def backfill(*paths: str) -> tuple[subprocess.CompletedProcess[str], int]:
        proc = subprocess.run(
            [sys.executable, "-c", RSS, "--config", str(cfg), "backfill", *paths],
            capture_output=True,
            text=True,
            env=ticker_env(),
            timeout=120,
        )
        rss = re.search(r"maxrss (\d+) MB", proc.stderr)
        assert rss, proc.stderr
        return proc, int(rss.group(1))

    _, baseline = backfill(str(tmp_path / "bombs" / f"good-{good[0].date}.txt"))
    t0 = time.monotonic()
    proc, peak = backfill(str(tmp_path / "bombs"))
    seconds = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"files that could not be read: {len(bombs)}" in proc.stdout
    for name, reason in bombs.items():
        assert re.search(rf"bombs/{re.escape(name)}: .*{re.escape(reason)}", proc.stdout), (
            name,
            proc.stdout,
        )
    # each bomb inflates to 300 MB; the backfill never holds more than one 20 MB page
    assert peak < baseline + 100, f"peak {peak} MB, baseline {baseline} MB"
    assert seconds < 30
    # everything else is stored
    export = ticker_subprocess(cfg, "export", check=True).stdout
    assert export.count("\n") == 1 + 5 * len(good)
    print(f"bombs built in {built:.1f} s; backfill {seconds:.1f} s, peak {peak} MB")


def test_a_big_plain_file_is_not_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.write(b"x" * MB)
        fh.truncate(200 * MB)  # sparse: 200 MB on paper
    cfg = write_config(tmp_path / "w")
    proc = ticker_subprocess(cfg, "backfill", str(big))
    assert proc.returncode == 1
    assert "big.txt: larger than 20 MB, not a page dump" in proc.stdout


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_verification_is_on_by_default(tmp_path: Path) -> None:
    from ticker.fetch import make_session

    config = load_config(write_config(tmp_path))
    assert config.http.verify_tls is True
    assert make_session(config.http).verify is True
    shipped = load_config(Path(__file__).resolve().parent.parent / "config.toml")
    assert shipped.http.verify_tls is True


def test_verify_tls_must_be_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[http]\nverify_tls = "no"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="http.verify_tls must be true or false"):
        load_config(path)


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An HTTPS server on 127.0.0.1 with a self-signed certificate (made by openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    day = simulate(date(2025, 3, 20), 1)[0]
    with LocalServer(tls=context) as server:
        server.route("/", html(html_page(day.quotes, day.date), ctype="text/html"))
        yield server.url("/")


def test_a_self_signed_certificate_is_refused(https_server: str) -> None:
    from ticker.fetch import fetch, make_session

    http = HttpConfig(timeout=5, retries=0)
    with pytest.raises(FetchError) as err:
        fetch(make_session(http), https_server, http)
    assert err.value.outcome == "tls_error"
    assert "verify_tls" in str(err.value)  # the message says what the way out is


def test_verify_tls_false_fetches_and_warns(
    https_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    from ticker.fetch import fetch, make_session

    http = HttpConfig(timeout=5, retries=0, verify_tls=False)
    with caplog.at_level(logging.WARNING, logger="ticker"):
        got = fetch(make_session(http), https_server, http)
    assert got.status == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("verify_tls = false" in r.getMessage() for r in warnings)


def test_scrape_with_verify_tls_false_warns_on_the_command_line(
    tmp_path: Path, https_server: str
) -> None:
    cfg = write_config(
        tmp_path, url=https_server, http=LOCAL_HTTP | {"verify_tls": False, "retries": 0}
    )
    proc = ticker_subprocess(cfg, "scrape")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" in proc.stderr and "verify_tls = false" in proc.stderr
    strict = write_config(tmp_path / "strict", url=https_server, http=LOCAL_HTTP | {"retries": 0})
    proc = ticker_subprocess(strict, "scrape")
    assert proc.returncode == 1 and "tls_error" in proc.stdout


# --- SQL only with parameters ------------------------------------------------------------------

SQL_METHODS = {"execute", "executemany", "sql", "query", "from_query"}
# SQL built with Python formatting, reviewed: only constants of the code go in, never a
# value from a page, a file name, the config or the command line (those are parameters).
REVIEWED = {
    ("store/write.py", "_READ_CSV.format(columns=_struct(STAGE_FILE_COLUMNS))"),
    ("store/write.py", "_READ_CSV.format(columns=_struct(STAGE_COLUMNS))"),
    ("store/write.py", "table"),  # for table in ("stage", "fresh0", ...): temp table names
    ("store/read.py", "_LISTED"),  # recover's queries, composed of constant parts
    ("store/read.py", "_RECOVER_ROWS"),
    ("store/read.py", "_TODO"),
    ("recover.py", "DUCKDB_MEMORY"),  # a constant: SET takes no parameters
}


def _name(path: Path) -> str:
    return path.relative_to(TICKER).as_posix()


def _formatted_sql() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(TICKER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_METHODS
                and node.args
            ):
                continue
            sql = node.args[0]
            if isinstance(sql, ast.JoinedStr):
                for part in sql.values:
                    if isinstance(part, ast.FormattedValue):
                        found.add((_name(path), ast.unparse(part.value)))
            elif isinstance(sql, ast.BinOp):
                found.add((_name(path), ast.unparse(sql)))
            elif isinstance(sql, ast.Call) and getattr(sql.func, "attr", "") == "format":
                found.add((_name(path), ast.unparse(sql)))
    return found


def test_sql_takes_values_as_parameters_only() -> None:
    found = _formatted_sql()
    unreviewed = found - REVIEWED
    assert not unreviewed, (
        "SQL built by string formatting; pass the values as $1, $2 parameters instead, "
        f"or review and list it in REVIEWED: {sorted(unreviewed)}"
    )
    # every module of the package is read (a subpackage too), and no review is stale
    assert REVIEWED <= found, sorted(REVIEWED - found)


def test_the_sql_checker_sees_formatting() -> None:
    tree = ast.parse("con.execute(f\"SELECT * FROM t WHERE pair = '{pair}'\")")
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call))
    assert isinstance(call.args[0], ast.JoinedStr)


def test_sql_metacharacters_in_pages_and_paths_are_data(tmp_path: Path) -> None:
    """A file name and page text full of quotes and SQL go in and come out as data."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    name = "x'); DROP TABLE observations; --\"$1.txt"
    d = simulate(date(2025, 3, 20), 1)[0]
    text = text_page(d.quotes, d.date, note="'; DROP TABLE captures; -- \" $1 $2 \\x00")
    (dumps / name).write_text(text, encoding="utf-8")
    cfg = write_config(tmp_path / "w")
    ticker_subprocess(cfg, "backfill", str(dumps), check=True)
    with Store.open(cfg.parent / "ticker.duckdb", read_only=True) as store:
        origins = store.con.execute("SELECT origin FROM captures").fetchall()
        n = store.con.execute("SELECT count(*) FROM observations").fetchall()[0][0]
    assert origins == [(str(dumps / name),)] and n == 5
    rows = json.loads(ticker_subprocess(cfg, "export", "--format", "json", check=True).stdout)
    assert len(rows) == 5


def test_server_content_does_not_reach_a_path(tmp_path: Path, server: LocalServer) -> None:
    """A live page whose final URL and headers hold '../': the archive file is named by
    the source, the time and a random id; nothing else is written."""
    d = simulate(date(2025, 3, 20), 1)[0]
    server.route("/x", html(html_page(d.quotes, d.date)))  # "/../../x", its dots resolved
    url = server.url("/") + "../../x"
    cfg = write_config(tmp_path, url=url, http=LOCAL_HTTP | {"retries": 0})
    before = _files(tmp_path)
    proc = ticker_subprocess(cfg, "scrape")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = _files(tmp_path) - before
    archived = [p for p in new if p.startswith("pages/")]
    assert len(archived) == 1
    assert re.fullmatch(r"pages/\d{4}-\d\d-\d\d/\d{8}T\d{6}Z-timesca-[0-9a-f]{12}\.warc\.gz",
                        archived[0])  # fmt: skip
    assert set(new) - set(archived) <= {"ticker.duckdb", "ticker.duckdb.wal"}
