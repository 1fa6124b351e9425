"""Official rates beside the ticker: `ticker reference` against a stand-in Frankfurter on
127.0.0.1 (tests/frankfurter.py), the rates stored exactly as published, the faults of a
reference server as attempts, and the rates in latest, history, export, check, status
and the charts."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from frankfurter import BANKS, Frankfurter, json_number, reference_config, reply_json
from frankfurter import ticker_quotes as printed_quotes
from pages import html_page, text_page
from servers import LocalServer, hang, html, refused_url, status

from ticker.charts.data import chart_data
from ticker.charts.draw import build_pair_figure
from ticker.cli import cli
from ticker.config import Config, load_config
from ticker.models import Day, Page, Series
from ticker.reference import fetch_reference, plan, windows
from ticker.scheduler import Daemon, job_specs
from ticker.sources.reference import ReferenceReader
from ticker.store import Store

NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)  # a Thursday, afternoon in Almaty
TODAY = date(2025, 3, 20)
SINCE = date(2025, 2, 1)
PAIRS = ("USD/KGS", "USD/KZT", "USD/TJS", "USD/UZS", "USD/TMT")
QUOTE_OF = {key: quote for key, (quote, *_rest) in BANKS.items()} | {"PEG": "TMT"}


@pytest.fixture(autouse=True)
def _logging_back() -> Iterator[None]:
    """`ticker reference` sets up logging for the process; put it back after."""
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    level, handlers, urllib3_level = root.level, root.handlers[:], urllib3.level
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    urllib3.setLevel(urllib3_level)


@pytest.fixture
def rates() -> dict[str, dict[date, str]]:
    return Frankfurter.synthetic(date(2025, 1, 1), date(2025, 3, 31))


@pytest.fixture
def bank(rates: dict[str, dict[date, str]]) -> Frankfurter:
    return Frankfurter(rates, today=TODAY)


@pytest.fixture
def server(bank: Frankfurter) -> Iterator[LocalServer]:
    with LocalServer() as s:
        s.route("/v2/rates", bank)
        s.route("/", html(html_page(day="20 March 2025")))
        yield s


@pytest.fixture
def config(tmp_path: Path, server: LocalServer) -> Config:
    return load_config(reference_config(tmp_path, server.url("/"), server.url("/v2")))


def run(config: Config, *args: str) -> Result:
    assert config.path is not None
    return CliRunner().invoke(cli, ["--config", str(config.path), *args])


def query(config: Config, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with Store.open(config.store_path, read_only=True) as store:
        return store.con.execute(sql, params or []).fetchall()


def stored(config: Config) -> list[tuple[str, date, str, str | None]]:
    return [
        (pair, day, rate, publisher)
        for pair, day, rate, publisher in query(
            config,
            """SELECT pair, date, rate_text, publisher FROM daily
               WHERE source = 'reference' ORDER BY pair, date""",
        )
    ]


def published(
    rates: Mapping[str, Mapping[date, str]], since: date, until: date
) -> list[tuple[str, date, str, str | None]]:
    """What the stand-in publishes for the window, as ticker should store it: the JSON
    number as written, the pair as published, the bank when the record names it; with
    the rate in force on `since` when none is published that day."""
    out = []
    for key, series in rates.items():
        days = sorted(d for d in series if since <= d <= until)
        if since not in series:
            carried = max((d for d in series if since - timedelta(7) <= d < since), default=None)
            days = ([carried] if carried else []) + days
        for day in days:
            bank_key = None if key == "PEG" else key
            out.append((f"USD/{QUOTE_OF[key]}", day, json_number(series[day]), bank_key))
    return sorted(out)


# --- the reader: one response in, observations out ---------------------------------------


def read(body: bytes | str, url: str = "http://x/v2/rates?from=2025-03-17&to=2025-03-20") -> Any:
    data = body.encode() if isinstance(body, str) else body
    page_ = Page(origin=url, body=data, captured_at=NOW, url=url)
    return ReferenceReader().read(page_, Config().reference, now=NOW)


def test_a_response_is_read_exactly_as_published() -> None:
    body = (
        '[{"date":"2025-03-18","base":"USD","quote":"KZT","rate":478.77,'
        '"providers":[{"key":"NBK","rate":478.77}]},'
        '{"date":"2025-03-19","base":"USD","quote":"KGS","rate":87.45,'
        '"providers":[{"key":"NBKR","rate":87.45}]},'
        '{"date":"2025-03-19","base":"USD","quote":"UZS","rate":12194.21,'
        '"providers":[{"key":"CBU","rate":12194.21},{"key":"NBT","rate":1,"excluded":true}]},'
        '{"date":"2025-03-20","base":"USD","quote":"TJS","rate":9.345,"provider":"NBT"},'
        '{"date":"2025-03-20","base":"USD","quote":"TMT","rate":3.5},'
        '{"date":"2025-03-20","base":"USD","quote":"TMT","rate":3.5},'
        '{"date":"2025-03-20","base":"USD","quote":"USD","rate":1.0}]'
    )
    record = read(body)
    assert record.outcome == "ok" and record.detail is None
    assert [
        (o.pair, o.date.isoformat(), o.rate, o.change, o.publisher) for o in record.observations
    ] == [
        ("USD/KZT", "2025-03-18", "478.77", None, "NBK"),
        ("USD/KGS", "2025-03-19", "87.45", None, "NBKR"),
        ("USD/UZS", "2025-03-19", "12194.21", None, "CBU"),
        ("USD/TJS", "2025-03-20", "9.345", None, "NBT"),
        ("USD/TMT", "2025-03-20", "3.5", None, None),
    ]
    # digits no float would keep are kept: 0.1 + 0.2 is not 0.30000000000000004 here
    precise = read('[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":478.1000000001}]')
    assert precise.observations[0].rate == "478.1000000001"


@pytest.mark.parametrize(
    ("body", "outcome", "problem"),
    [
        ("<html><body>Service page</body></html>", "bad_response", "not JSON"),
        ('{"status":422,"message":"invalid currency: XYZ"}', "bad_response", "invalid currency"),
        ('{"rates":{"KZT":478.77}}', "bad_response", "not a list of rates"),
        ('[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":0}]', "partial", "not positive"),
        (
            '[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":-478.77}]',
            "partial",
            "not positive",
        ),
        (
            '[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":0.0}]',
            "partial",
            "not positive",
        ),
        (
            '[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":"478.77"}]',
            "partial",
            "not a number",
        ),
        (
            '[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":4.7877e2}]',
            "partial",
            "10 digits",
        ),
        (
            '[{"date":"2025-03-20","base":"USD","quote":"KZT","rate":NaN}]',
            "partial",
            "not a number",
        ),
        (
            '[{"date":"20.03.2025","base":"USD","quote":"KZT","rate":478.77}]',
            "partial",
            "YYYY-MM-DD",
        ),
        (
            '[{"date":"2025-02-30","base":"USD","quote":"KZT","rate":478.77}]',
            "partial",
            "real date",
        ),
        (
            '[{"date":"2025-03-21","base":"USD","quote":"KZT","rate":478.77}]',
            "bad_date",
            "after the 2025-03-20",
        ),
        (
            '[{"date":"2025-01-02","base":"USD","quote":"KZT","rate":478.77}]',
            "bad_date",
            "more than 31 days before",
        ),
        (
            '[{"date":"2025-03-19","base":"USD","quote":"KZT","rate":478.77},'
            '{"date":"2025-03-19","base":"USD","quote":"KZT","rate":479.01}]',
            "partial",
            "given twice",
        ),
    ],
)
def test_a_response_that_is_not_rates_stores_nothing_wrong(
    body: str, outcome: str, problem: str
) -> None:
    good = '{"date":"2025-03-18","base":"USD","quote":"TJS","rate":9.345}'
    whole = body if not body.startswith("[") else "[" + good + "," + body[1:]
    record = read(whole)
    assert record.outcome == outcome
    assert problem in (record.detail or "")
    kept = [(o.pair, o.rate) for o in record.observations]
    if outcome == "partial":  # the good record stays, the bad one is named and left out
        assert kept == [("USD/TJS", "9.345")]
    else:
        assert kept == []


def test_a_date_after_tomorrow_is_refused_without_a_window() -> None:
    body = '[{"date":"2025-03-23","base":"USD","quote":"KZT","rate":478.77}]'
    record = read(body, url="http://x/v2/rates?base=USD")
    assert record.outcome == "bad_date" and "more than a day after" in (record.detail or "")
    tomorrow = read(body.replace("03-23", "03-21"), url="http://x/v2/rates?base=USD")
    assert tomorrow.outcome == "ok"  # published the afternoon before it is in force


def test_requests_are_five_years_at_most_one_bank_each() -> None:
    assert windows(date(2001, 1, 1), date(2025, 12, 31)) == [
        (date(2001, 1, 1), date(2005, 12, 31)),
        (date(2006, 1, 1), date(2010, 12, 31)),
        (date(2011, 1, 1), date(2015, 12, 31)),
        (date(2016, 1, 1), date(2020, 12, 31)),
        (date(2021, 1, 1), date(2025, 12, 31)),
    ]
    assert windows(date(2024, 2, 29), date(2030, 1, 1))[0] == (date(2024, 2, 29), date(2029, 2, 27))
    requests, left_out = plan(Config(), date(2001, 1, 1), date(2025, 12, 31))
    assert left_out == []
    by_pair: dict[str, list[Any]] = {}
    for r in requests:
        by_pair.setdefault(r.pair, []).append(r)
    assert sorted(by_pair) == sorted(PAIRS)
    assert len(by_pair["USD/KZT"]) == 5 and len(by_pair["USD/TMT"]) == 3  # the peg: 2015 on
    assert by_pair["USD/TMT"][0].since == date(2015, 1, 1)
    assert (
        "providers=NBK&" in by_pair["USD/KZT"][0].url
        and "expand=providers" in by_pair["USD/KZT"][0].url
    )
    assert "providers" not in by_pair["USD/TMT"][0].url.split("expand")[0]
    _, left_out = plan(Config(), date(2010, 1, 1), date(2012, 1, 1))
    assert left_out == ["USD/TMT: no official rate before 2015-01-01"]


# --- ticker reference against the stand-in -------------------------------------------------


def test_reference_stores_the_rates_as_published_and_records_each_request(
    config: Config, bank: Frankfurter, rates: dict[str, dict[date, str]]
) -> None:
    result = run(config, "reference", "--since", str(SINCE), "--until", str(TODAY))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"window: {SINCE} to {TODAY}"
    assert [line.split(" ok:")[0] for line in lines[1:]] == [
        f"reference {pair} {SINCE}..{TODAY}" for pair in PAIRS
    ]
    assert stored(config) == published(rates, SINCE, TODAY)
    assert {p for _, _, _, p in stored(config)} == {"NBK", "NBKR", "CBU", "NBT", None}
    attempts = query(config, "SELECT source, outcome, new, already, capture_id FROM attempts")
    assert len(attempts) == 5 and all(a[:2] == ("reference", "ok") for a in attempts)
    assert sum(a[2] for a in attempts) == len(stored(config)) and all(a[4] for a in attempts)
    # each response is archived as it came, for backfill to read again
    archived = sorted(config.archive_dir.glob("*/*-reference-*.warc.gz"))
    assert len(archived) == 5

    again = run(config, "reference", "--since", str(SINCE), "--until", str(TODAY))
    assert again.exit_code == 0 and " 0 new, " in again.output and "0 revised" in again.output
    assert len(query(config, "SELECT 1 FROM observations")) == len(stored(config))

    # a later, other value for a stored date is a revision; the series shows the newer
    day = max(d for d in rates["NBK"] if d <= TODAY)
    rates["NBK"][day] = "499.99"
    bank._cache.clear()
    third = run(config, "reference", "--since", str(SINCE), "--until", str(TODAY))
    assert third.exit_code == 0 and "1 revised" in third.output
    assert ("USD/KZT", day, "499.99", "NBK") in stored(config)
    check = json.loads(run(config, "check", "--json").output)
    [revision] = [f for f in check["findings"] if f["kind"] == "revision"]
    assert revision["source"] == "reference" and "(NBK)" in revision["message"]


def test_backfill_reads_the_archived_responses_again(config: Config) -> None:
    assert run(config, "reference", "--since", str(SINCE), "--until", str(TODAY)).exit_code == 0
    before = stored(config)
    config.store_path.unlink()
    result = run(config, "backfill", str(config.archive_dir))
    assert result.exit_code == 0, result.output
    assert stored(config) == before


def test_the_default_window_starts_on_the_first_ticker_day(
    config: Config, bank: Frankfurter
) -> None:
    run_ = fetch_reference(config, NOW)  # an empty store: the last 30 days
    assert (run_.since, run_.until) == (TODAY - timedelta(days=30), TODAY)
    dumps = config.store_path.parent / "dumps"
    dumps.mkdir()
    (dumps / "a.txt").write_text(text_page(day="03 February 2025"), encoding="utf-8")
    assert run(config, "backfill", str(dumps)).exit_code == 0
    run_ = fetch_reference(config, NOW)
    assert run_.since == date(2025, 2, 3) and all(a.success for a in run_.attempts)
    assert all("from=2025-02-03" in r.url for r in run_.requests)
    # the daemon asks from two weeks before the newest official rate stored
    run_ = fetch_reference(config, NOW + timedelta(days=1), incremental=True)
    assert run_.since == TODAY - timedelta(days=14)


def test_a_25_year_backfill_asks_five_years_at_a_time(tmp_path: Path) -> None:
    sparse = {
        key: {d: v for d, v in series.items() if d.month == 1 and d.day < 8}
        for key, series in Frankfurter.synthetic(date(2001, 1, 1), date(2025, 12, 31)).items()
    }
    bank = Frankfurter(sparse, today=date(2025, 12, 31))
    with LocalServer() as server:
        server.route("/v2/rates", bank)
        config = load_config(reference_config(tmp_path, server.url("/"), server.url("/v2")))
        result = run(config, "reference", "--since", "2001-01-01", "--until", "2025-12-31")
    assert result.exit_code == 0, result.output
    assert len(bank.asked) == 4 * 5 + 3 and "422" not in result.output
    assert stored(config) == published(sparse, date(2001, 1, 1), date(2025, 12, 31))


def test_usage_errors_are_one_line(config: Config) -> None:
    late = run(config, "reference", "--until", "2999-01-01")
    assert late.exit_code == 2 and late.output.startswith("error: --until 2999-01-01 is after")
    backwards = run(config, "reference", "--since", "2025-03-02", "--until", "2025-03-01")
    assert backwards.exit_code == 2
    charts = run(config, "chart", "--source", "reference")
    assert charts.exit_code == 2 and "drawn on the charts of the ticker's pairs" in charts.output
    assert backwards.output == "error: --since 2025-03-02 is after --until 2025-03-01\n"


# --- faults of the reference server ----------------------------------------------------------


FAULTS: dict[str, tuple[Any, str, str]] = {
    "down": (None, "connection_error", "cannot connect"),
    "slow": (hang(10), "timeout", "[http] timeout"),
    "html": (
        html(b"<html><body>Maintenance</body></html>"),
        "not_html",
        "'text/html', not application/json",
    ),
    "503": (status(503), "http_error", "HTTP 503"),
    "error object": (reply_json({"message": "quota exceeded"}), "bad_response", "quota exceeded"),
    "422": (
        reply_json({"status": 422, "message": "invalid currency: KZT"}, 422),
        "http_error",
        "the server says: invalid currency: KZT",
    ),
    "404": (
        reply_json({"status": 404, "message": "not found"}, 404),
        "http_error",
        "check [reference] url",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_reference_server_is_a_line_an_attempt_and_no_harm(
    tmp_path: Path, fault: str
) -> None:
    reply, outcome, words = FAULTS[fault]
    with LocalServer() as server:
        server.route("/", html(html_page(day="20 March 2025")))
        url = refused_url().rstrip("/") + "/v2" if reply is None else server.url("/v2")
        if reply is not None:
            server.route("/v2/rates", reply)
        wait = 0.4 if fault == "slow" else 2  # [http] timeout
        config = load_config(reference_config(tmp_path, server.url("/"), url, timeout=wait))
        assert run(config, "scrape").exit_code == 0
        ticker_before = query(config, "SELECT * FROM observations ORDER BY ALL")
        result = run(config, "reference", "--since", "2025-03-17", "--until", "2025-03-20")
        assert result.exit_code == 1
        lines = [line for line in result.output.splitlines() if line.startswith("reference ")]
        assert "Traceback" not in result.output
        assert all(f"{outcome}" in line and words in line for line in lines), lines
        # a server down, too slow or failing (5xx) is asked once; a refused request is
        # one request's fault: the others are made
        asked = 1 if fault in ("down", "slow", "503") else 5
        assert len(lines) == asked
        if asked == 1:
            assert result.output.splitlines()[-1] == (
                "not asked: 4 more requests (USD/KZT, USD/TJS, USD/UZS, USD/TMT): the server "
                f"failed ({outcome}); the next run asks again"
            )
        attempts = query(config, "SELECT outcome FROM attempts WHERE source = 'reference'")
        assert [a for (a,) in attempts] == [outcome] * asked
        assert query(config, "SELECT * FROM observations ORDER BY ALL") == ticker_before
        statuses = json.loads(run(config, "status", "--json").output)
        ref = next(s for s in statuses if s["source"] == "reference")
        assert ref["failing"] and ref["last_outcome"] == outcome and words in ref["last_error"]
        timesca = next(s for s in statuses if s["source"] == "timesca")
        assert timesca["last_outcome"] == "ok" and not timesca["failing"]
        assert run(config, "scrape").exit_code == 0  # the ticker's own work goes on


@pytest.mark.parametrize(
    ("fault", "outcome", "words"),
    [
        ("a rate of 0", "partial", "rate not positive"),
        ("a negative rate", "partial", "rate not positive"),
        ("dates shifted", "bad_date", "after the 2025-03-20 asked for"),
        ("a five-year cap at one year", "http_error", "at most 1 years per request"),
    ],
)
def test_a_server_answering_wrong_rates_stores_nothing_wrong(
    tmp_path: Path, rates: dict[str, dict[date, str]], fault: str, outcome: str, words: str
) -> None:
    bank = Frankfurter(rates, today=TODAY)
    day = date(2025, 3, 19)
    if fault == "a rate of 0":
        rates["NBK"][day] = "0.00"
    elif fault == "a negative rate":
        rates["NBK"][day] = "-478.77"
    elif fault == "dates shifted":
        bank.date_offset = 2
    else:
        bank.max_years = 1
    with LocalServer() as server:
        server.route("/v2/rates", bank)
        config = load_config(reference_config(tmp_path, server.url("/"), server.url("/v2")))
        since = "2024-01-01" if "cap" in fault else "2025-03-03"
        result = run(config, "reference", "--since", since, "--until", "2025-03-20")
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if "USD/KZT" in line]
    assert outcome in line and words in line
    rows = stored(config)
    assert all(Decimal(rate) > 0 for _, _, rate, _ in rows)
    assert all(d <= TODAY for _, d, _, _ in rows)
    if fault in ("a rate of 0", "a negative rate"):
        kzt = [r for r in rows if r[0] == "USD/KZT"]
        assert kzt and day not in {d for _, d, _, _ in kzt}  # the bad one left out, the rest in
    if fault == "dates shifted":
        assert rows == []


# --- the official rates beside the ticker ----------------------------------------------------


def ticker_days(
    config: Config,
    rates: dict[str, dict[date, str]],
    days: list[date],
    lag: dict[str, int] | None = None,
    override: Mapping[tuple[str, date], str] | None = None,
) -> None:
    """Ticker pages for `days`, as a site copying the official rates prints them."""
    dumps = config.store_path.parent / "dumps"
    dumps.mkdir(exist_ok=True)
    for day in days:
        quotes = [
            (b, (override or {}).get((b, day), r), c) for b, r, c in printed_quotes(rates, day, lag)
        ]
        (dumps / f"{day}.txt").write_text(
            text_page(quotes, day=f"{day.day:02d} {day:%B %Y}"), encoding="utf-8"
        )
    assert run(config, "backfill", str(dumps)).exit_code == 0


def test_latest_history_and_export_show_both_sources(
    config: Config, rates: dict[str, dict[date, str]]
) -> None:
    days = [date(2025, 3, 17), date(2025, 3, 18)]
    ticker_days(config, rates, days)
    before = run(config, "latest").output
    assert "official_rate" not in before  # nothing official stored yet: as before
    assert run(config, "reference", "--since", "2025-03-10", "--until", "2025-03-20").exit_code == 0

    latest = json.loads(run(config, "latest", "--json").output)
    kzt = next(r for r in latest if r["pair"] == "KZT/USD")
    official = Decimal(rates["NBK"][date(2025, 3, 18)])
    assert kzt["official_date"] == "2025-03-18"
    assert Decimal(kzt["official_rate"]) == round(1 / official, 8)
    assert Decimal(kzt["deviation_pct"]) == round((Decimal(kzt["rate"]) * official - 1) * 100, 2)
    ref = next(r for r in latest if r["pair"] == "USD/KZT")
    assert ref["source"] == "reference" and ref["official_rate"] is None
    table = run(config, "latest").output.splitlines()
    assert table[0].split() == [
        "source",
        "pair",
        "date",
        "rate",
        "change_pct",
        "official_rate",
        "deviation_pct",
    ]
    row = next(line for line in table if "KZT/USD" in line).split()
    assert row[-2:] == [kzt["official_rate"], kzt["deviation_pct"] + "%"]

    history = run(config, "history", "KZT", "--since", "2025-03-17", "--until", "2025-03-18")
    assert [line.split()[:4] for line in history.output.splitlines()[1:]] == [
        ["reference", "USD/KZT", "2025-03-17", json_number(rates["NBK"][date(2025, 3, 17)])],
        ["reference", "USD/KZT", "2025-03-18", json_number(rates["NBK"][date(2025, 3, 18)])],
        ["timesca", "KZT/USD", "2025-03-17", latest_rate(rates, date(2025, 3, 17))],
        ["timesca", "KZT/USD", "2025-03-18", kzt["rate"]],
    ]
    assert run(config, "history", "usd-kzt").output == run(config, "history", "KZT").output
    export = run(config, "export").output.splitlines()
    assert export[0] == "source,pair,date,rate,change_pct"
    assert f"reference,USD/KZT,2025-03-18,{json_number(rates['NBK'][date(2025, 3, 18)])}," in export


def latest_rate(rates: dict[str, dict[date, str]], day: date) -> str:
    return next(r for b, r, _ in printed_quotes(rates, day) if b == "KZT")


def test_check_finds_values_no_reading_brings_near_the_official_rate(
    config: Config, rates: dict[str, dict[date, str]]
) -> None:
    days = [date(2025, 2, 1) + timedelta(days=k) for k in range(40)]
    wrong, lagging = date(2025, 2, 20), date(2025, 2, 26)
    nbk = rates["NBK"]
    # a move of 3 % on Wednesday the 26th, which the ticker shows a day late
    nbk[lagging] = f"{Decimal(nbk[date(2025, 2, 25)]) * Decimal('1.03'):.2f}"
    override = {
        ("KZT", wrong): f"{1 / Decimal(nbk[wrong]) * Decimal('1.05'):.5f}",
        ("KZT", lagging): f"{1 / Decimal(nbk[date(2025, 2, 25)]):.5f}",
    }
    ticker_days(config, rates, days, lag={"KGS": 1}, override=override)
    assert run(config, "reference", "--since", "2025-01-20", "--until", "2025-03-12").exit_code == 0
    result = run(config, "check", "--json")
    report = json.loads(result.output)
    mismatches = [f for f in report["findings"] if f["kind"] == "reference_mismatch"]
    assert [(f["pair"], f["date"], f["level"]) for f in mismatches] == [
        ("KZT/USD", str(wrong), "error"),
        ("KZT/USD", str(lagging), "warning"),
    ]
    assert (
        mismatches[0]["official_publisher"] == "NBK" and 4.5 < mismatches[0]["deviation_pct"] < 5.5
    )
    assert (
        "the ticker lags" in mismatches[1]["message"] and mismatches[1]["matches_days_before"] == 1
    )
    assert result.exit_code == 1  # an error-level finding
    pairs = {p["pair"]: p for p in report["reference"]["pairs"]}
    assert pairs["KGS/USD"]["lag_days"] == 1 and pairs["KZT/USD"]["lag_days"] == 0
    assert pairs["UZS/USD"]["days_compared"] == 40  # coarse, yet never flagged
    assert abs(pairs["TMT/USD"]["median_deviation_pct"]) < 0.01
    text = run(config, "check").output
    assert "timesca KGS/USD: 40 days against reference USD/KGS" in text
    assert "lags 1 day: closest to the official rate of the day before" in text
    assert "error: reference_mismatch (1)" in text and "warning: reference_mismatch (1)" in text
    # the official rates' own series: no gap findings for weekends, no jumps
    assert not [
        f for f in report["findings"] if f["source"] == "reference" and f["kind"] in ("gap", "jump")
    ]

    loose = reference_config(
        config.store_path.parent,
        config.sources[0].url,
        config.reference.url,
        "tolerance_pct = 10\n",
    )
    report = json.loads(run(load_config(loose), "check", "--json").output)
    assert not [f for f in report["findings"] if f["kind"] == "reference_mismatch"]


def test_charts_draw_the_official_rate_under_the_ticker(
    config: Config, rates: dict[str, dict[date, str]]
) -> None:
    days = [date(2025, 2, 3) + timedelta(days=k) for k in range(20)]
    ticker_days(config, rates, days)
    assert run(config, "chart", "--pair", "KZT").exit_code == 0
    assert run(config, "reference", "--since", "2025-02-01", "--until", "2025-02-28").exit_code == 0
    result = run(config, "chart", "--pair", "KZT")
    # the pair's chart is drawn again with the official rates; the overview has none
    assert result.exit_code == 0 and result.output.splitlines()[1:] == [
        f"wrote      {config.charts.dir / 'KZT-USD.png'}",
        f"unchanged  {config.charts.dir / 'overview.png'}",
    ]

    official = [
        Day("reference", "USD/KZT", d, rates["NBK"][d], None, "NBK")
        for d in sorted(rates["NBK"])
        if days[0] - timedelta(days=6) <= d <= days[-1]
    ]
    kzt = Series(
        "timesca",
        "KZT/USD",
        tuple(Day("timesca", "KZT/USD", d, latest_rate(rates, d), "0") for d in days),
    )
    chart = chart_data(kzt, official=official, since=days[0], until=days[-1])
    assert chart.has_official and chart.official_label == "National Bank of Kazakhstan (NBK)"
    shown = [
        (x, y) for x, y in zip(chart.official_dates, chart.official_values, strict=True) if y == y
    ]
    # the rate in force on the first day, then each as published (tenge per dollar)
    assert shown[0][0] < days[0] and shown[1] == (days[0], float(rates["NBK"][days[0]]))
    fig = build_pair_figure(chart)
    line = next(a for a in fig.axes[0].get_lines() if a.get_gid() == "official")
    assert (
        line.get_drawstyle() == "steps-post" and line.get_zorder() < 2 and line.get_linewidth() < 1
    )
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[1] == "Official rate: National Bank of Kazakhstan (NBK), via Frankfurter"

    uzs = Series(
        "timesca", "UZS/USD", tuple(Day("timesca", "UZS/USD", d, "0.00008", "0") for d in days)
    )
    coarse = chart_data(
        uzs,
        official=[
            Day("reference", "USD/UZS", d, rates["CBU"][d], None, "CBU")
            for d in days
            if d in rates["CBU"]
        ],
    )
    fig = build_pair_figure(coarse)
    line = next(a for a in fig.axes[0].get_lines() if a.get_gid() == "official")
    rate = next(a for a in fig.axes[0].get_lines() if a.get_gid() == "rate")
    assert line.get_zorder() > rate.get_zorder() and rate.get_alpha() < 1  # the line to read
    notes = " ".join(t.get_text() for t in fig.texts if t.get_visible())
    assert "is the one to read" in notes

    without = build_pair_figure(chart_data(kzt, since=days[0], until=days[-1]))
    assert without.axes[0].get_legend() is None


# --- status, the daemon, the config ----------------------------------------------------------


def test_status_shows_the_reference_source_once_it_is_used(config: Config) -> None:
    assert run(config, "scrape").exit_code == 0
    rows = json.loads(run(config, "status", "--json").output)
    assert [r["source"] for r in rows] == ["timesca"]
    assert run(config, "reference", "--since", "2025-03-01", "--until", "2025-03-20").exit_code == 0
    rows = json.loads(run(config, "status", "--json").output)
    assert [r["source"] for r in rows] == ["timesca", "reference"]
    ref = rows[1]
    assert ref["last_outcome"] == "ok" and ref["newest_date"] == "2025-03-20"
    assert ref["url"] == config.reference.url


def test_the_daemon_fetches_the_reference_after_a_new_ticker_date(
    config: Config, bank: Frankfurter, tmp_path: Path
) -> None:
    assert [s.id for s in job_specs(config, NOW)] == ["scrape", "chart", "reference"]
    daemon = Daemon(config, clock=lambda: NOW)
    daemon.scrape_job()  # a new date: the official rates are fetched too
    assert len(bank.asked) == 5 and all("to=2025-03-20" in a for a in bank.asked)
    daemon.scrape_job()  # the same page: no new date, no request
    assert len(bank.asked) == 5
    daemon.reference_job()  # its own schedule
    assert len(bank.asked) == 10
    daemon.close()
    assert query(config, "SELECT count(*) FROM attempts WHERE source = 'reference'") == [(10,)]

    (tmp_path / "down").mkdir()
    down = load_config(reference_config(tmp_path / "down", config.sources[0].url, refused_url()))
    quiet = Daemon(down, clock=lambda: NOW)
    quiet.scrape_job()
    quiet.close()
    outcomes = query(down, "SELECT source, outcome FROM attempts ORDER BY started_at")
    assert ("timesca", "ok") in outcomes and ("reference", "connection_error") in outcomes

    plain = load_config(write_plain(tmp_path / "plain", config.sources[0].url))
    assert [s.id for s in job_specs(plain, NOW)] == ["scrape", "chart"]


def write_plain(directory: Path, url: str) -> Path:
    directory.mkdir()
    path = directory / "config.toml"
    path.write_text(f'[[sources]]\nname = "timesca"\nurl = "{url}"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[reference]\nurl = "ftp://x"\n', "reference.url must be an http:// or https:// URL"),
        (
            "[reference]\ntolerance_pct = -1\n",
            "reference.tolerance_pct must be a number of percent from 0 to 50",
        ),
        (
            "[reference]\ntolerance_pct = nan\n",
            "reference.tolerance_pct must be a number of percent",
        ),
        (
            '[reference]\ntolerance_pct = "1%"\n',
            "reference.tolerance_pct must be a number of percent",
        ),
        ("[reference]\nkey = 1\n", "unknown key reference.key"),
        ('[schedule]\nreference = "61 * * * *"\n', "schedule.reference: bad cron string"),
        (
            '[[sources]]\nname = "reference"\n',
            'sources[0].name must be a name other than "reference"',
        ),
        ('[[sources]]\nkind = "reference"\n', 'sources[0].kind must be one of "ticker"'),
    ],
)
def test_reference_settings_are_checked_when_the_config_is_read(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "latest"])
    assert result.exit_code == 2 and words in result.output, result.output


def test_the_reference_pairs_follow_the_sources(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[sources]]\npairs = ["KZT/USD", "UZS/USD", "EUR/RUB"]\n[reference]\n'
        'url = "http://127.0.0.1:9/v2/"\ntolerance_pct = 2\n[schedule]\nreference = "0 6 * * *"\n',
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.reference.pairs == ("USD/KZT", "USD/UZS")
    assert config.reference.url == "http://127.0.0.1:9/v2" and config.tolerance_pct == 2.0
    assert config.schedule.reference == "0 6 * * *" and config.reference_table
    assert (
        Config().reference.url == "https://api.frankfurter.dev/v2" and Config().tolerance_pct == 1.0
    )


# --- the reader's two paths, and the write path's counts -------------------------------------


def test_a_canonical_response_reads_as_the_json_parser_reads_it(
    bank: Frankfurter, rates: dict[str, dict[date, str]]
) -> None:
    from ticker.sources.reference import _canonical

    for key, quote in (("NBK", "KZT"), ("NBT", "TJS"), ("PEG", "TMT")):
        provider = f"&providers={key}" if key != "PEG" else ""
        path = f"/v2/rates?base=USD&quotes={quote}{provider}&from=2025-03-01&to=2025-03-20"
        path += "&expand=providers"
        status_, body = bank.answer(path)
        assert status_ == 200 and _canonical(body, set(PAIRS)) is not None  # the fast path
        spaced = body.replace(b'":', b'": ').replace(b",", b", ")  # the same, not compact
        assert _canonical(spaced, set(PAIRS)) is None
        url = "http://x" + path
        fast, slow = read(body, url), read(spaced, url)
        assert fast.outcome == slow.outcome == "ok"
        assert fast.observations == slow.observations and len(fast.observations) > 10


ROWS = """SELECT source, pair, date, revision, rate_text, publisher FROM observations
          ORDER BY ALL"""


def test_a_batch_counts_each_record_as_written_one_by_one(tmp_path: Path) -> None:
    from ticker.models import Observation, Record
    from ticker.store.write import write_records

    def record(key: str, values: list[tuple[str, str]]) -> Record:
        return Record(
            page_key=key,
            source="reference",
            origin=key,
            url=None,
            captured_at=NOW,
            content_hash=key,
            outcome="ok",
            header_date=None,
            quote_date=None,
            date_basis="record",
            parser_version=1,
            copies=0,
            detail=None,
            observations=tuple(
                Observation("USD/KZT", date(2025, 3, d), r, None, "NBK")
                for d, r in [(int(day), rate) for day, rate in values]
            ),
        )

    first = record("a", [("17", "478.10"), ("18", "478.20")])
    second = record("b", [("18", "478.20"), ("19", "478.30"), ("17", "480.00")])
    third = record("c", [("17", "478.10")])
    with Store.open(tmp_path / "batch.duckdb") as store:
        counts = write_records(store, [first, second, third], NOW)
        batch = store.con.execute(ROWS).fetchall()
    with Store.open(tmp_path / "one.duckdb") as store:
        one_by_one = [write_records(store, [r], NOW) for r in (first, second, third)]
        single = store.con.execute(ROWS).fetchall()
    assert counts.per_record == {
        key: (c.new, c.already, c.revised) for key, c in zip("abc", one_by_one, strict=True)
    }
    assert counts.per_record == {"a": (2, 0, 0), "b": (1, 1, 1), "c": (0, 1, 0)}
    assert batch == single and len(batch) == 4


def test_rates_fetched_while_the_store_is_broken_wait_and_are_stored_later(
    config: Config, rates: dict[str, dict[date, str]]
) -> None:
    config.store_path.write_bytes(b"not a database" * 100)
    result = run(config, "reference", "--since", "2025-03-10", "--until", "2025-03-20")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("reference ")]
    assert len(lines) == 5 and all("store_error" in line for line in lines)
    assert all("the next scrape stores the page from the archive" in line for line in lines)
    assert len(list((config.archive_dir / ".pending").glob("*.json"))) == 5
    config.store_path.unlink()  # the store put right (moved aside)
    assert run(config, "scrape").exit_code == 0  # records what waited, from the archive
    assert stored(config) == published(rates, date(2025, 3, 10), date(2025, 3, 20))
    outcomes = query(config, "SELECT outcome, new FROM attempts WHERE source = 'reference'")
    assert len(outcomes) == 5 and all(o == "store_error" and n > 0 for o, n in outcomes)
