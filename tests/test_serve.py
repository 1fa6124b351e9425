"""`ticker serve` as a real process over a real store, asked over real HTTP: the API in
Frankfurter's v2 shape (answers checked against the server's own OpenAPI document), the
report page, the files, /healthz and /metrics; and beside writers, which it never holds
up for long."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from conftest import Project, one_error_line, ticker_subprocess, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pages import MARCH_20, html_page, text_page
from serving import Served, Site, build_site

from ticker.serve import precision
from ticker.store.connect import connect

pytestmark = pytest.mark.usefixtures("no_ticker_config")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("served") / "site")


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[Served]:
    with Served(site.project.config) as served:
        yield served
    assert "Traceback" not in served.stderr, served.stderr


# --- the answers follow the server's OpenAPI document -------------------------------------


@pytest.fixture(scope="module")
def openapi(server: Served) -> dict[str, Any]:
    doc: dict[str, Any] = server.get("/v2/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    return doc


def conforms(doc: dict[str, Any], path: str, response: requests.Response) -> None:
    """The JSON body matches the document's schema for this path and status."""
    answers = doc["paths"][path]["get"]["responses"]
    assert str(response.status_code) in answers, (path, response.status_code)
    answer = answers[str(response.status_code)]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    Draft202012Validator({**doc, **schema}).validate(response.json())


API_CALLS = [
    ("/rates", "/v2/rates"),
    ("/rates", "/v2/rates?base=USD&quotes=KZT"),
    ("/rates", "/v2/rates?base=KZT"),
    ("/rates", "/v2/rates?from={start}&group=week&expand=providers"),
    ("/rates", "/v2/rates?providers=official,timesca&quotes=KZT"),
    ("/rates", "/v2/rates?date=1990-01-01"),
    ("/rates", "/v2/rates?date=nope"),
    ("/rate/{base}/{quote}", "/v2/rate/USD/KZT"),
    ("/rate/{base}/{quote}", "/v2/rate/USD/KZT?date=1990-01-01"),
    ("/rate/{base}/{quote}", "/v2/rate/USD/EUR"),
    ("/currencies", "/v2/currencies"),
    ("/currencies", "/v2/currencies?scope=some"),
    ("/currency/{code}", "/v2/currency/kzt"),
    ("/currency/{code}", "/v2/currency/xyz"),
    ("/providers", "/v2/providers"),
    ("/providers/{provider}", "/v2/providers/official"),
    ("/providers/{provider}/rates", "/v2/providers/timesca/rates?quotes=UZS"),
    ("/providers/{provider}/rate/{base}/{quote}", "/v2/providers/official/rate/KZT/USD"),
    ("/coverage", "/v2/coverage?quotes=TMT"),
]


@pytest.mark.parametrize(("doc_path", "url"), API_CALLS)
def test_every_answer_follows_the_openapi_document(
    server: Served, openapi: dict[str, Any], site: Site, doc_path: str, url: str
) -> None:
    response = server.get(url.format(start=site.days[0]))
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    conforms(openapi, doc_path, response)


# --- /rates ------------------------------------------------------------------------------


def stands_for(rate: Fraction, printed: str) -> bool:
    """Whether `rate` (per US dollar) is a reading of the printed US dollars per unit:
    1/rate lies within half a unit of the printed number's last digit."""
    half = Fraction(1, 2 * 10 ** len(printed.partition(".")[2]))
    return Fraction(printed) - half <= 1 / rate <= Fraction(printed) + half


def fewest_digits(rate: Decimal, printed: str) -> bool:
    """No number with a digit less stands for the printed rate: it is enough to try the
    two neighbours of the exact inverse at the coarser step (a range narrower than that
    step holds no other number of it)."""
    step = Fraction(10) ** (rate.normalize().as_tuple().exponent + 1)  # type: ignore[operator]
    exact = 1 / Fraction(printed)
    below = (exact // step) * step
    return not any(c > 0 and stands_for(c, printed) for c in (below, below + step))


@settings(max_examples=300, deadline=None)
@given(mantissa=st.integers(1, 10**8), places=st.integers(0, 8))
def test_an_inverse_has_the_fewest_digits_the_printed_ones_allow(
    mantissa: int, places: int
) -> None:
    printed = format(Decimal(mantissa).scaleb(-places), "f")
    text = precision.inverse_text(printed) or ""
    assert re.fullmatch(r"[1-9][0-9]*|0\.[0-9]*[1-9]|[1-9][0-9]*\.[0-9]*[1-9]", text), text
    rate = Decimal(text)
    assert stands_for(Fraction(rate), printed)
    assert fewest_digits(rate, printed)


def test_latest_is_one_record_per_currency_per_us_dollar(server: Served, site: Site) -> None:
    records = server.get("/v2/rates").json()

    assert [r["quote"] for r in records] == ["KGS", "KZT", "TJS", "TMT", "USD", "UZS"]
    assert {r["base"] for r in records} == {"USD"} and {r["date"] for r in records} == {
        f"{site.days[-1]}"
    }
    identity = next(r for r in records if r["quote"] == "USD")
    assert identity["rate"] == 1 and "pair" not in identity
    for r in (r for r in records if r["quote"] != "USD"):
        assert r["pair"] == f"{r['quote']}/USD" and r["provider"] == "timesca"
        rate = Decimal(str(r["rate"]))
        assert stands_for(Fraction(rate), r["printed_rate"]), r
        assert fewest_digits(rate, r["printed_rate"]), r


def test_base_usd_quotes_kzt_is_tenge_per_dollar_and_the_other_way_as_printed(
    server: Served, site: Site
) -> None:
    export = {
        (r["pair"], r["date"]): r
        for r in csv.DictReader(io.StringIO(server.get("/export.csv").text))
    }
    printed = export[("KZT/USD", f"{site.days[-1]}")]

    (per_dollar,) = server.get("/v2/rates?base=USD&quotes=KZT").json()
    (per_tenge,) = server.get("/v2/rates?base=KZT&quotes=USD").json()

    assert per_dollar["printed_rate"] == per_tenge["printed_rate"] == printed["rate"]
    assert per_dollar["change_pct"] == printed["change_pct"]
    assert 400 < per_dollar["rate"] < 600  # tenge per US dollar
    assert json.dumps(per_tenge["rate"]) == printed["rate"]  # the printed digits, unchanged
    assert per_dollar["rate"] == float(precision.inverse_text(printed["rate"]) or 0)


def test_a_cross_rate_carries_the_digits_both_printed_rates_allow(server: Served) -> None:
    rows = {r["quote"]: r for r in server.get("/v2/rates?base=KZT").json()}
    som = rows["KGS"]
    assert som["via"] == "USD" and "pair" not in som
    kzt = precision.printed(rows["USD"]["printed_rate"])
    usd_per_kgs = Decimal(str(server.get("/v2/rate/KGS/USD").json()["rate"]))
    low, high = (
        kzt[0] / (Fraction(usd_per_kgs) + Fraction(1, 200000)),
        kzt[2] / (Fraction(usd_per_kgs) - Fraction(1, 200000)),
    )
    assert low <= Fraction(Decimal(str(som["rate"]))) <= high


def test_a_date_without_data_answers_from_the_day_before(server: Served, site: Site) -> None:
    missing = site.gap[-1]
    before = max(d for d in site.days if d < missing)

    records = server.get(f"/v2/rates?date={missing}&quotes=KZT,TMT").json()

    assert {r["date"] for r in records} == {f"{before}"}
    assert [r["quote"] for r in records] == ["KZT", "TMT"]
    assert server.get("/v2/rates?date=1990-01-01").json() == []
    assert server.get(f"/v2/rate/USD/KZT?date={missing}").json()["date"] == f"{before}"


def test_a_range_is_by_date_then_quote_and_starts_from_the_day_before_a_gap(
    server: Served, site: Site
) -> None:
    start = site.gap[0]
    records = server.get(f"/v2/rates?from={start}&quotes=KZT,UZS").json()

    keys = [(r["date"], r["quote"]) for r in records]
    assert keys == sorted(keys)
    dates = sorted({r["date"] for r in records})
    assert dates[0] == f"{max(d for d in site.days if d < start)}"  # the snapped-back row
    assert dates[1:] == [f"{d}" for d in site.days if d > start]
    assert {r["quote"] for r in records} == {"KZT", "UZS"}


@pytest.mark.parametrize("group", ["week", "month"])
def test_group_gives_one_mean_per_week_or_month(server: Served, site: Site, group: str) -> None:
    records = server.get(f"/v2/rates?from={site.days[0]}&group={group}&quotes=TMT").json()

    buckets: dict[date, list[date]] = {}
    for d in site.days:
        start = d - timedelta(days=d.weekday()) if group == "week" else d.replace(day=1)
        buckets.setdefault(start, []).append(d)
    assert [r["date"] for r in records] == [f"{b}" for b in sorted(buckets)]
    assert [r["days"] for r in records] == [len(buckets[b]) for b in sorted(buckets)]
    daily = {
        r["date"]: r["rate"] for r in server.get(f"/v2/rates?from={site.days[0]}&quotes=TMT").json()
    }
    for r in records:
        days = buckets[date.fromisoformat(r["date"])]
        mean = sum(daily[f"{d}"] for d in days) / len(days)
        assert abs(r["rate"] - mean) / mean < 1e-4, (r, mean)


def test_many_clients_at_once_get_the_same_answer(server: Served, site: Site) -> None:
    """Forty clients ask for ranges no one asked for before, at the same moment: each range
    is made once, and every client gets it whole."""
    from concurrent.futures import ThreadPoolExecutor

    urls = [f"/v2/rates?from={site.days[i % 4]}&quotes=KZT,UZS,TMT" for i in range(40)]
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda u: requests.get(server.url + u, timeout=30), urls))
    assert {a.status_code for a in answers} == {200}
    by_url: dict[str, set[bytes]] = {}
    for url, answer in zip(urls, answers, strict=True):
        by_url.setdefault(url, set()).add(answer.content)
    assert all(len(bodies) == 1 for bodies in by_url.values())
    assert len(by_url) == 4


def test_csv_and_ndjson_hold_the_same_records(server: Served, site: Site) -> None:
    url = f"/v2/rates?from={site.days[-5]}&to={site.days[-1]}"
    records = server.get(url).json()

    as_csv = server.get(url.replace("/rates", "/rates.csv"))
    ndjson = server.get(url, headers={"Accept": "application/x-ndjson"})

    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"] == (
        f'attachment; filename="timesca_USD-rates_{site.days[-5]}_{site.days[-1]}.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["date"], r["quote"], Decimal(r["rate"])) for r in rows] == [
        (r["date"], r["quote"], Decimal(str(r["rate"]))) for r in records
    ]
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in ndjson.text.splitlines()] == records
    assert ndjson.headers["vary"].startswith("Accept")


def test_providers_select_sources_and_each_keeps_its_direction(server: Served) -> None:
    both = server.get("/v2/rates?providers=timesca,official&quotes=KZT").json()
    official = server.get("/v2/providers/official/rates?quotes=KZT").json()

    assert [(r["provider"], r["pair"]) for r in both] == [
        ("timesca", "KZT/USD"),
        ("official", "USD/KZT"),
    ]
    (direct,) = official
    assert direct["rate"] == float(direct["printed_rate"])  # printed in this direction
    assert server.get("/v2/providers/official/rates", params={"providers": "x"}).json() == {
        "status": 422,
        "message": "providers is implied by the route; drop the parameter",
    }
    assert server.get("/v2/providers/nope/rates").status_code == 404


def test_rate_of_one_pair(server: Served, site: Site) -> None:
    one = server.get("/v2/rate/usd/kzt").json()
    assert one == server.get("/v2/rates?quotes=KZT").json()[0]
    same = server.get("/v2/rate/USD/USD").json()
    assert same == {
        "date": f"{site.days[-1]}",
        "base": "USD",
        "quote": "USD",
        "rate": 1,
        "provider": "timesca",
    }
    assert server.get("/v2/rate/USD/KZT?date=1990-01-01").json() == {
        "status": 404,
        "message": "not found",
    }


def test_the_catalogue(server: Served, site: Site) -> None:
    currencies = server.get("/v2/currencies").json()
    assert [c["iso_code"] for c in currencies] == ["KGS", "KZT", "TJS", "TMT", "USD", "UZS"]
    kzt = server.get("/v2/currency/kzt").json()
    assert kzt["providers"] == ["official", "timesca"] and kzt["iso_numeric"] == "398"
    assert kzt["end_date"] == f"{site.days[-1]}"
    assert [c["iso_code"] for c in server.get("/v2/currencies?providers=official").json()] == [
        "KGS",
        "KZT",
        "USD",
    ]
    providers = {p["key"]: p for p in server.get("/v2/providers").json()}
    assert providers["timesca"]["pivot_currency"] == "USD"
    assert providers["timesca"]["currencies"] == ["KGS", "KZT", "TJS", "TMT", "UZS"]
    assert providers["official"]["name"] == "Official rates (test pages)"
    assert providers["official"]["start_date"] == f"{site.days[0]}"
    coverage = server.get("/v2/coverage?quotes=KZT").json()
    assert coverage == {
        "base": "USD",
        "quotes": ["KZT"],
        "providers": None,
        "start_date": f"{site.days[0]}",
        "end_date": f"{site.days[-1]}",
    }


# --- what is refused, and how ------------------------------------------------------------

REFUSED = [
    ("/v2/rates?date=2025-02-30", 422, "invalid date"),
    ("/v2/rates?date=20250203", 422, "invalid date"),
    ("/v2/rates?from=", 422, "invalid date"),
    ("/v2/rates?to=2025-13-01", 422, "invalid date"),
    ("/v2/rates?date=2025-01-01&from=2025-01-01", 422, "conflicting params"),
    ("/v2/rates?from=2025-01-01&group=day", 422, "invalid group"),
    ("/v2/rates?expand=everything", 422, "invalid expand: everything"),
    ("/v2/rates?symbols=KZT&amount=10", 422, "unknown parameter: amount, symbols"),
    (
        "/v2/rates?base=EUR",
        422,
        "invalid currency: EUR (this server has KGS, KZT, TJS, TMT, USD, UZS)",
    ),
    (
        "/v2/rates?quotes=KZT,XYZ,../etc",
        422,
        "invalid currency: XYZ,../ETC (this server has KGS, KZT, TJS, TMT, USD, UZS)",
    ),
    ("/v2/rates?providers=ecb", 422, "invalid provider: ecb (providers: official, timesca)"),
    (
        "/v2/rates?from=2025-02-01&to=2025-01-01",
        422,
        "invalid date range: from 2025-02-01 is after to 2025-01-01",
    ),
    (
        "/v2/rates?from=2000-01-01&to=2020-01-01",
        422,
        "date range exceeds 10 years at daily granularity; aggregate with group=week or "
        "group=month, or split the range into shorter requests",
    ),
    ("/v2/rates?quotes=" + "K" * 1001, 422, "parameter too long: quotes (at most 1000 characters)"),
    ("/v2/rate/USD/KZT?from=2025-01-01", 422, "unknown parameter: from"),
    ("/v2/currencies?scope=active", 422, "invalid scope"),
    ("/v2/currency/EUR", 404, "not found"),
    ("/v2/ratez", 404, "not found"),
    ("/v2/providers/ecb", 404, "not found"),
    ("/nothing/here", 404, "not found"),
    ("/charts/config.toml", 404, "not found"),
    ("/charts/..%2fconfig.toml", 404, "not found"),
    ("/charts/%2e%2e/config.toml", 404, "not found"),
    ("/charts/KZT-USD.png/../../config.toml", 404, "not found"),
    ("/export.toml", 404, "not found"),
    ("/export.csv/../config.toml", 404, "not found"),
]


@pytest.mark.parametrize(("url", "status", "message"), REFUSED)
def test_a_bad_request_is_a_json_message_without_a_trace(
    server: Served, url: str, status: int, message: str
) -> None:
    response = server.get(url)
    assert (response.status_code, response.json()) == (
        status,
        {"status": status, "message": message},
    )
    assert response.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    "raw",
    [
        "/v2/rates?base=%ff%fe",
        "/v2/rates?quotes=%00",
        "/v2/rates?date=%F0%9F%92%A9",
        "/v2/rate/%ff/%00",
        "/v2/currency/%c0%ae%c0%ae",
        "/charts/%00.png",
        "/charts/../config.toml",
        "/charts/..%2f..%2fconfig.toml",
        "/export.csv%00.toml",
        "//etc/passwd",
        "/v2/rates?" + "&".join(f"k{i}=v" for i in range(2000)),
    ],
)
def test_hostile_bytes_in_a_request_get_a_clean_answer(server: Served, raw: str) -> None:
    with socket.create_connection(
        (server.url.split("//")[1].split(":")[0], int(server.url.rsplit(":", 1)[1]))
    ) as sock:
        sock.sendall(
            f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500, answer[:300]
    assert b"Traceback" not in answer and b'File "' not in answer
    assert b"[store]" not in answer and b"root:" not in answer  # no file's content
    assert server.get("/v2/rates?quotes=KZT").status_code == 200  # still serving


def test_cors_lets_browser_apps_read_the_api(server: Served) -> None:
    simple = server.get("/v2/rates", headers={"Origin": "https://app.example"})
    preflight = server.session.options(
        server.url + "/v2/rates",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    post = server.session.options(
        server.url + "/v2/rates",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )

    assert simple.headers["access-control-allow-origin"] == "*"
    assert "ETag" in simple.headers["access-control-expose-headers"]
    assert (
        preflight.status_code == 200 and "GET" in preflight.headers["access-control-allow-methods"]
    )
    assert post.status_code == 400
    assert server.session.post(server.url + "/v2/rates").status_code == 405


# --- files: charts and exports, revalidated rather than downloaded again -----------------


@pytest.mark.parametrize(
    "path",
    [
        "/charts/KZT-USD.png",
        "/charts/overview.png",
        "/export.csv",
        "/export.json",
        "/export.parquet",
        "/v2/rates",
        "/",
    ],
)
def test_a_file_is_revalidated_not_downloaded_again(server: Served, path: str) -> None:
    first = server.get(path)
    assert first.status_code == 200 and first.content
    again = server.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    if "last-modified" in first.headers:
        since = server.get(path, headers={"If-Modified-Since": first.headers["last-modified"]})
        assert since.status_code == 304
    stale = server.get(path, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_charts_are_the_files_ticker_chart_drew(server: Served, site: Site) -> None:
    chart = site.project.root / "charts" / "TMT-USD.png"
    response = server.get("/charts/TMT-USD.png")
    assert response.headers["content-type"] == "image/png"
    assert response.content == chart.read_bytes()


def test_exports_are_what_ticker_export_writes(server: Served, site: Site, tmp_path: Path) -> None:
    for fmt in ("csv", "json"):
        assert server.get(f"/export.{fmt}").text == site.project.export(fmt)
    out = tmp_path / "rates.parquet"
    assert site.project.run("export", "--format", "parquet", "--out", str(out)).exit_code == 0
    served = server.get("/export.parquet")
    assert served.content == out.read_bytes()
    assert served.headers["content-disposition"] == 'attachment; filename="ticker.parquet"'


# --- the report page ----------------------------------------------------------------------


def test_the_page_names_the_newest_rates_and_links_the_files(server: Served, site: Site) -> None:
    page = server.get("/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script" not in page.text.lower()
    newest = {
        r["pair"]: r["rate"]
        for r in csv.DictReader(io.StringIO(site.project.export()))
        if r["date"] == f"{site.days[-1]}"
    }
    for pair in ("KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD", "TMT/USD"):
        assert f'<tr data-pair="{pair}">' in page.text
        assert f'<td class="num printed">{newest[pair]}</td>' in page.text
    for link in ("/export.csv", "/export.json", "/export.parquet", "/charts/overview.png"):
        assert f'"{link}"' in page.text
    assert "(official, " in page.text  # the official rate beside the ticker's


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)
def test_the_report_page_in_a_real_browser(server: Served, site: Site, tmp_path: Path) -> None:
    """What a person sees: the five newest rates as printed, every chart loaded, no
    console error; the screenshot is kept in the test's directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(server.url + "/")
        newest = {
            r["pair"]: r["rate"]
            for r in csv.DictReader(io.StringIO(site.project.export()))
            if r["date"] == f"{site.days[-1]}"
        }
        rows = driver.find_elements(By.CSS_SELECTOR, "#latest tbody tr")
        shown = {
            row.get_attribute("data-pair"): row.find_element(By.CSS_SELECTOR, "td.printed").text
            for row in rows
        }
        assert shown == {pair: newest[pair] for pair in shown}
        assert sorted(shown) == ["KGS/USD", "KZT/USD", "TJS/USD", "TMT/USD", "UZS/USD"]
        assert all(row.is_displayed() for row in rows)

        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 6  # the overview and one chart per pair
        for img in images:
            driver.execute_script("arguments[0].scrollIntoView();", img)
            loaded = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth;", img
            )
            assert loaded and loaded > 0, img.get_attribute("src")

        text = driver.find_element(By.TAG_NAME, "body").text
        for heading in ("Newest rates", "Charts", "Sources", "Downloads and the API"):
            assert heading in text
        assert "fresh" in driver.find_element(By.ID, "sources").text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []

        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, height)
        driver.execute_script("window.scrollTo(0, 0);")
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
        print(f"screenshot: {shot}")
    finally:
        driver.quit()


# --- health and metrics -------------------------------------------------------------------


def test_healthz_is_ticker_status_json_with_the_read_time(server: Served, site: Site) -> None:
    health = server.get("/healthz")
    status = ticker_subprocess(site.project.config, "status", "--json")

    assert health.status_code == 200 and status.returncode == 0, health.text
    served = health.json()
    assert [
        {k: v for k, v in row.items() if k not in ("read_at", "read_error", "age_seconds")}
        for row in served
    ] == [{k: v for k, v in row.items() if k != "age_seconds"} for row in json.loads(status.stdout)]
    assert all(row["read_error"] is None and row["read_at"].endswith("Z") for row in served)


def test_healthz_fails_when_a_source_is_stale(tmp_path: Path) -> None:
    site = build_site(tmp_path / "old", days=5, charts=False)
    site.project.config.write_text(
        site.project.config.read_text() + '\n[status]\nstale_after = "1m"\n', encoding="utf-8"
    )
    with Served(site.project.config) as served:
        health = served.get("/healthz")
    assert health.status_code == 503
    assert [row["stale"] for row in health.json()] == [True, True]


def test_metrics_in_prometheus_text_format(server: Served, site: Site) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    response = server.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    observations = {
        (s.labels["source"], s.labels["pair"]): s.value
        for s in families["ticker_observations"].samples
    }
    assert observations[("timesca", "KZT/USD")] == len(site.days)
    assert observations[("official", "USD/KGS")] == len(site.days)
    ages = {
        s.labels["source"]: s.value
        for s in families["ticker_source_newest_observation_age_seconds"].samples
    }
    assert 0 <= ages["timesca"] < 2 * 86400
    assert {
        s.labels["source"]: s.value for s in families["ticker_source_consecutive_failures"].samples
    } == {
        "timesca": 0,
        "official": 0,
    }
    assert families["ticker_scrape_duration_seconds"].type == "histogram"
    assert "ticker_serve_store_reads" in families


def test_metrics_count_fetch_attempts_in_the_histogram(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    from servers import LocalServer, html

    with LocalServer() as site:
        site.route("/", html(html_page()))
        config = write_config(tmp_path / "scraped", url=site.url("/"))
        for _ in range(3):
            assert ticker_subprocess(config, "scrape").returncode == 0
        with Served(config) as served:
            text = served.get("/metrics").text
            health = served.get("/healthz").json()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    count = next(s.value for s in samples if s.name == "ticker_scrape_duration_seconds_count")
    infinite = next(
        s.value
        for s in samples
        if s.name == "ticker_scrape_duration_seconds_bucket" and s.labels["le"] == "+Inf"
    )
    last = next(
        s.value for s in samples if s.name == "ticker_source_last_success_timestamp_seconds"
    )
    assert count == infinite == 3
    assert abs(last - time.time()) < 120
    assert health[0]["last_outcome"] in ("ok", "not_modified")


# --- beside writers ------------------------------------------------------------------------


def test_a_writer_is_never_held_up_a_second(tmp_path: Path) -> None:
    """Writes every 50 ms for 4 s while the server reads each change: each write's open of
    the database waits far less than a second, and the server did read meanwhile."""
    site = build_site(tmp_path / "busy", days=30, charts=False)
    waits: list[float] = []
    with Served(site.project.config) as served:
        reads_before = _reads(served)
        end = time.monotonic() + 4
        i = 0
        while time.monotonic() < end:
            started = time.monotonic()
            con = connect(site.project.db, lock_timeout=10)
            waits.append(time.monotonic() - started)
            con.execute("CREATE TABLE IF NOT EXISTS scratch (n INTEGER)")
            con.execute("INSERT INTO scratch VALUES ($1)", [i])
            con.close()
            i += 1
            time.sleep(0.05)
        reads = _reads(served) - reads_before
    assert reads >= 2, "the server did not read the store while it was written"
    assert max(waits) < 1.0, sorted(waits)[-5:]


def _reads(served: Served) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(served.get("/metrics").text):
        for s in family.samples:
            if s.name == "ticker_serve_store_reads_total" and s.labels["result"] == "ok":
                return s.value
    raise AssertionError("no read counter")


def test_a_locked_store_is_served_from_the_last_read_and_said_so(tmp_path: Path) -> None:
    site = build_site(tmp_path / "locked", days=5, charts=False)
    with Served(site.project.config) as served:
        before = served.get("/v2/rates").json()
        holder = duckdb.connect(str(site.project.db))  # a writer keeps the file
        try:
            holder.execute("CREATE TABLE held (n INTEGER)")
            holder.execute("INSERT INTO held VALUES (1)")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                health = served.get("/healthz")
                if health.json()[0]["read_error"]:
                    break
                time.sleep(0.2)
            started = time.monotonic()
            during = served.get("/v2/rates")
            answered_in = time.monotonic() - started
            page = served.get("/").text
        finally:
            holder.close()
    assert health.status_code in (200, 503)
    why = health.json()[0]["read_error"]
    assert why.startswith("the database is in use by process ") and "(python" in why, why
    assert during.json() == before and answered_in < 1.0
    assert 'id="read-error"' in page and "the database is in use by process" in page


def test_a_store_made_while_it_serves_is_served(tmp_path: Path) -> None:
    """Started before there is a database, it answers as on an empty store (and says so
    in its log); a backfill run beside it makes one, and the next answers hold it."""
    project = Project(tmp_path / "later", lock_timeout=2)
    with Served(project.config) as served:
        empty = served.get("/v2/rates")
        assert project.backfill(_one_page(project)).exit_code == 0
        deadline = time.monotonic() + 10
        while not (found := served.get("/v2/rates").json()) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert (empty.status_code, empty.json()) == (200, [])
    assert {r["quote"]: r.get("printed_rate") for r in found}["KZT"] == "0.00199"
    assert f"WARNING no database yet at {project.db}" in served.stderr


def test_before_any_read_a_request_waits_lock_timeout_then_503(tmp_path: Path) -> None:
    project = Project(tmp_path / "first", lock_timeout=1)
    assert project.backfill(_one_page(project)).exit_code == 0
    holder = duckdb.connect(str(project.db))
    try:
        with Served(project.config) as served:
            started = time.monotonic()
            refused = served.get("/v2/rates")
            waited = time.monotonic() - started
            holder.close()
            deadline = time.monotonic() + 10
            while served.get("/v2/rates").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            after = served.get("/v2/rates?quotes=KZT").json()
    finally:
        holder.close()
    assert refused.status_code == 503
    assert refused.json()["message"].startswith(
        "the store could not be read: the database is in use by process "
    )
    assert 0.9 <= waited < 3
    assert after[0]["printed_rate"] == "0.00199"


def _one_page(project: Project) -> Path:
    return project.write("one.txt", text_page(MARCH_20))


# --- the command ------------------------------------------------------------------------------


def test_without_the_serve_extra_it_says_how_to_install_it(project: Project) -> None:
    blocked = "import sys; sys.modules['uvicorn'] = None; from ticker.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", blocked, "--config", str(project.config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == (
        "error: ticker serve needs the serve extra (uvicorn not installed): "
        "pip install 'ticker[serve]', or in a checkout: pip install -e '.[serve]'"
    )


def test_a_port_in_use_is_one_line(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ticker_subprocess(project.config, "serve", "--port", str(port), timeout=60)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another server "
        "uses that port: stop it, or choose another [serve] port or --port)"
    )


def test_it_stops_on_sigterm_with_exit_code_0(site: Site) -> None:
    with Served(site.project.config) as served:
        assert served.get("/v2/rates").status_code == 200
        code = served.stop()
    assert code == 0
    assert served.stderr.splitlines()[-1].endswith("INFO ticker serve: stopped (SIGTERM)")


def test_the_openapi_document_shipped_is_the_one_served(server: Served) -> None:
    shipped = (REPO / "ticker" / "serve" / "openapi.json").read_bytes()
    assert server.get("/v2/openapi.json").content == shipped
    assert server.get("/v2").json()["openapi"] == "/v2/openapi.json"


def test_the_official_rates_fetched_by_ticker_reference_are_served(tmp_path: Path) -> None:
    """The reference kind end to end: `ticker reference` from a stand-in Frankfurter, then
    the API serves the official rates as the banks publish them (tenge per dollar) beside
    the ticker's, and the page shows the official rate next to the ticker's quote."""
    from frankfurter import Frankfurter, json_number, reference_config
    from servers import LocalServer

    days = [date.today() - timedelta(days=back) for back in range(6, 0, -1)]
    rates = Frankfurter.synthetic(days[0], days[-1], every_day=True)
    with LocalServer() as site, LocalServer() as bank:
        bank.route("/v2/rates", Frankfurter(rates))
        config = reference_config(tmp_path, site.url("/"), bank.url("/v2"))
        for day in days:
            (tmp_path / f"{day}.txt").write_text(
                text_page(MARCH_20, day=f"{day.day} {day:%B %Y}"), encoding="utf-8"
            )
        assert (
            ticker_subprocess(config, "backfill", *map(str, tmp_path.glob("*.txt"))).returncode == 0
        )
        fetched = ticker_subprocess(config, "reference", "--since", f"{days[0]}")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    with Served(config) as served:
        official = served.get(f"/v2/providers/reference/rates?quotes=KZT&from={days[0]}").json()
        # the stand-in writes a rate as Frankfurter's JSON does (537.00 -> 537.0)
        published = {f"{d}": json_number(rates["NBK"][d]) for d in days}
        assert [(r["date"], r["pair"], r["printed_rate"]) for r in official] == [
            (day, "USD/KZT", rate) for day, rate in published.items()
        ]
        assert all(r["rate"] == float(published[r["date"]]) for r in official)
        page = served.get("/").text
        assert f"{published[f'{days[-1]}']}" in page and "(reference, " in page
