"""Fetch stage against a real HTTP server on 127.0.0.1: each fault gives its outcome."""

from __future__ import annotations

import gzip
import logging
import time

import pytest
from pages import html_page
from servers import (
    DRIPS,
    TLS_RECORD_HEAD,
    LocalServer,
    TrickleServer,
    binary,
    conditional,
    drip,
    hang,
    html,
    redirect,
    refused_url,
    status,
    stream,
    truncated,
    unanswered_connects,
)

from ticker import __version__
from ticker.config import HttpConfig
from ticker.errors import FetchError
from ticker.fetch import USER_AGENT, Fetched, fetch, make_session
from ticker.models import Outcome

HTTP = HttpConfig(timeout=2.0, max_bytes=5 * 1024 * 1024, retries=2, backoff=0, max_retry_after=2)


def get(url: str, http: HttpConfig = HTTP, **kwargs: str) -> Fetched:
    session = make_session(http)
    try:
        return fetch(session, url, http, **kwargs)
    finally:
        session.close()


def fails(url: str, outcome: Outcome, http: HttpConfig = HTTP) -> FetchError:
    with pytest.raises(FetchError) as info:
        get(url, http)
    assert info.value.outcome == outcome, str(info.value)
    assert url in str(info.value)  # every message names the URL
    return info.value


def test_ok_page_with_user_agent(server: LocalServer) -> None:
    body = html_page().encode()
    server.route("/", html(body, headers={"ETag": '"v1"', "Last-Modified": "x"}))
    got = get(server.url("/"))
    assert got.status == 200 and got.body == body
    assert got.etag == '"v1"' and got.retries == 0
    agent = server.seen[0].headers["User-Agent"]
    assert agent == USER_AGENT and agent.startswith(f"ticker/{__version__} (")


def test_gzip_body_is_decoded_and_transfer_headers_dropped(server: LocalServer) -> None:
    body = html_page().encode()
    packed = gzip.compress(body)
    server.route("/", html(packed, headers={"Content-Encoding": "gzip"}))
    got = get(server.url("/"))
    assert got.body == body
    names = {k.lower() for k, _ in got.headers}
    assert "content-encoding" not in names and "content-length" not in names


def test_connection_refused() -> None:
    err = fails(refused_url(), Outcome.CONNECTION_ERROR)
    assert "Connection refused" in err.reason and "after 2 retries" in err.reason


def test_server_that_never_answers_times_out(server: LocalServer) -> None:
    server.route("/", hang())
    http = HttpConfig(timeout=0.3, retries=2, backoff=0)
    t0 = time.monotonic()
    err = fails(server.url("/"), Outcome.TIMEOUT, http)
    assert time.monotonic() - t0 < 2  # a read timeout is not retried
    assert "[http] timeout = 0.3 s" in err.reason
    assert len(server.seen) == 1


def test_500_then_200_retries(server: LocalServer) -> None:
    server.route("/", status(500), html(html_page()))
    got = get(server.url("/"))
    assert got.status == 200 and got.retries == 1
    assert len(server.seen) == 2


def test_503_every_time_is_an_http_error_after_the_retries(server: LocalServer) -> None:
    server.route("/", status(503))
    err = fails(server.url("/"), Outcome.HTTP_ERROR)
    assert err.status == 503 and "after 2 retries" in err.reason
    assert len(server.seen) == 3


def test_429_retry_after_is_honoured(server: LocalServer) -> None:
    server.route("/", status(429, {"Retry-After": "1"}), html(html_page()))
    t0 = time.monotonic()
    got = get(server.url("/"))
    assert got.status == 200
    seen = server.seen
    assert len(seen) == 2 and seen[1].at - seen[0].at >= 0.9
    assert time.monotonic() - t0 < 3


def test_429_asking_longer_than_max_retry_after_fails_at_once(server: LocalServer) -> None:
    server.route("/", status(429, {"Retry-After": "3600"}), html(html_page()))
    t0 = time.monotonic()
    err = fails(server.url("/"), Outcome.HTTP_ERROR)
    assert time.monotonic() - t0 < 1
    assert err.status == 429 and "max_retry_after" in err.reason and "3600" in err.reason
    assert len(server.seen) == 1


def test_404_is_not_retried(server: LocalServer) -> None:
    err = fails(server.url("/missing"), Outcome.HTTP_ERROR)
    assert err.status == 404 and "check [[sources]] url" in err.reason
    assert len(server.seen) == 1


def test_redirect_loop(server: LocalServer) -> None:
    server.route("/a", redirect("/b"))
    server.route("/b", redirect("/a"))
    err = fails(server.url("/a"), Outcome.REDIRECT_LOOP)
    assert "redirect" in err.reason


def test_body_cut_off_mid_transfer(server: LocalServer) -> None:
    body = html_page().encode()
    server.route("/", truncated(body[:3000], declared=len(body)))
    err = fails(server.url("/"), Outcome.TRUNCATED)
    assert err.nbytes == 3000 and err.status == 200


def test_50_mb_body_stops_at_max_bytes(server: LocalServer) -> None:
    server.route("/", stream(50 * 1024 * 1024))
    http = HttpConfig(timeout=2.0, max_bytes=1024 * 1024, retries=0)
    t0 = time.monotonic()
    err = fails(server.url("/"), Outcome.TOO_LARGE, http)
    assert 1024 * 1024 < err.nbytes <= 1024 * 1024 + 64 * 1024
    assert "max_bytes" in err.reason
    assert time.monotonic() - t0 < 5
    for _ in range(50):  # the server notices the hang-up a moment later
        if server.sent:
            break
        time.sleep(0.05)
    assert server.sent and server.sent[0] < 50 * 1024 * 1024


def test_announced_50_mb_body_is_not_read(server: LocalServer) -> None:
    server.route("/", stream(50 * 1024 * 1024, declare_length=True))
    err = fails(server.url("/"), Outcome.TOO_LARGE)
    assert err.nbytes == 0 and "announces" in err.reason


@pytest.mark.parametrize("ctype", ["text/html", "application/octet-stream", "image/png"])
def test_binary_body(server: LocalServer, ctype: str) -> None:
    server.route("/", binary(ctype=ctype))
    err = fails(server.url("/"), Outcome.NOT_HTML)
    assert "binary" in err.reason or "not an HTML page" in err.reason


def test_conditional_get_sends_validators_and_takes_304(server: LocalServer) -> None:
    server.route("/", conditional(html_page(), '"abc"', "Thu, 20 Mar 2025 10:00:00 GMT"))
    first = get(server.url("/"))
    assert first.status == 200 and first.last_modified
    again = get(server.url("/"), etag='"abc"', last_modified="Thu, 20 Mar 2025 10:00:00 GMT")
    assert again.not_modified and again.body == b""
    headers = server.seen[1].headers
    assert headers["If-None-Match"] == '"abc"'
    assert headers["If-Modified-Since"] == "Thu, 20 Mar 2025 10:00:00 GMT"


def test_tls_verification_off_is_logged(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.route("/", html(html_page()))
    http = HttpConfig(timeout=2.0, retries=0, verify_tls=False)
    with caplog.at_level(logging.WARNING, logger="ticker.fetch"):
        get(server.url("/"), http)
    assert any("NOT verified" in r.getMessage() for r in caplog.records)
    assert make_session(HTTP).verify is True


# --- the deadline: a whole fetch ends within [http] deadline, whatever the server does ---

# Every byte comes well within the read timeout; only the deadline can end these.
SLOW = HttpConfig(timeout=0.4, retries=2, backoff=0, max_retry_after=5, deadline=0.6)
MARGIN = 1.5  # seconds past the deadline allowed for a busy machine


def ends_by_deadline(url: str, http: HttpConfig = SLOW) -> FetchError:
    t0 = time.monotonic()
    err = fails(url, Outcome.TIMEOUT, http)
    took = time.monotonic() - t0
    assert took < http.deadline + MARGIN, f"took {took:.1f} s"
    assert f"[http] deadline = {http.deadline:g} s" in err.reason
    return err


@pytest.mark.parametrize("phase", sorted(DRIPS))
def test_a_server_that_trickles_any_phase_is_cut_at_the_deadline(
    server: LocalServer, phase: str
) -> None:
    head, filler = DRIPS[phase]
    server.route("/", drip(head, filler))
    err = ends_by_deadline(server.url("/"))
    if phase.startswith("body"):
        assert err.status == 200
    if phase == "body-until-close":
        assert err.nbytes > 0  # the shutdown ends it like a close: still not the page
    for _ in range(50):  # the server sees the hang-up at its next byte
        if server.sent:
            break
        time.sleep(0.05)
    assert server.sent and max(server.sent) < 60  # the connection was shut, not left open


def test_a_tls_handshake_that_trickles_is_cut_at_the_deadline() -> None:
    # Python bounds a whole handshake by the socket timeout; the deadline comes first.
    http = HttpConfig(timeout=5.0, retries=2, backoff=0, deadline=0.6)
    with TrickleServer(TLS_RECORD_HEAD) as trickle:
        ends_by_deadline(trickle.url("/"), http)


def test_a_connect_that_hangs_is_cut_at_the_deadline_not_the_timeout() -> None:
    http = HttpConfig(timeout=5.0, retries=2, backoff=0, deadline=0.6)
    with unanswered_connects() as url:
        ends_by_deadline(url, http)


def test_a_retry_wait_past_the_deadline_is_not_made(server: LocalServer) -> None:
    server.route("/", status(503, {"Retry-After": "3"}), html(html_page()))
    t0 = time.monotonic()
    err = fails(server.url("/"), Outcome.HTTP_ERROR, SLOW)
    assert time.monotonic() - t0 < 1
    assert err.status == 503 and "would pass [http] deadline = 0.6 s" in err.reason
    assert len(server.seen) == 1


def test_backoff_past_the_deadline_is_not_waited() -> None:
    http = HttpConfig(timeout=0.5, retries=3, backoff=5, deadline=1.0)
    t0 = time.monotonic()
    err = fails(refused_url(), Outcome.CONNECTION_ERROR, http)
    assert time.monotonic() - t0 < 1
    assert "would pass [http] deadline" in err.reason


def test_a_reused_connection_is_watched_by_the_next_fetch(server: LocalServer) -> None:
    head, filler = DRIPS["body-with-length"]
    server.route("/", html(html_page()), drip(head, filler), html(html_page()))
    session = make_session(SLOW)
    try:
        assert fetch(session, server.url("/"), SLOW).status == 200
        t0 = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetch(session, server.url("/"), SLOW)
        assert info.value.outcome == Outcome.TIMEOUT
        assert time.monotonic() - t0 < SLOW.deadline + MARGIN
        assert fetch(session, server.url("/"), SLOW).status == 200  # the cut one is dropped
    finally:
        session.close()
    first, second, third = server.seen
    assert first.client_port == second.client_port != third.client_port


def test_fetch_refuses_a_session_whose_connections_it_cannot_cut(server: LocalServer) -> None:
    import requests

    with requests.Session() as plain, pytest.raises(TypeError, match="make_session"):
        fetch(plain, server.url("/"), HTTP)


def test_cut_fetches_ends_a_fetch_in_flight_with_the_reason(server: LocalServer) -> None:
    import threading

    from ticker.fetch import cut_fetches

    head, filler = DRIPS["headers"]
    server.route("/", drip(head, filler))
    http = HttpConfig(timeout=5.0, retries=2, backoff=0, deadline=60)
    threading.Timer(0.5, cut_fetches, args=("shutting down",)).start()
    t0 = time.monotonic()
    err = fails(server.url("/"), Outcome.TIMEOUT, http)
    assert time.monotonic() - t0 < 3
    assert "cut short" in err.reason and "shutting down" in err.reason
    server.route("/later", html(html_page()))
    assert get(server.url("/later"), http).status == 200  # only the fetches in flight
