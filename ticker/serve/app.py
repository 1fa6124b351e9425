"""The Starlette application: routes, headers (ETag, Last-Modified, CORS, caching),
errors as JSON without a trace. Every answer comes from the loader's snapshot or from
the named files (the charts); this module and the command line read the clock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ticker import check, export, status
from ticker.config import Config
from ticker.serve import api, metrics, report
from ticker.serve.snapshot import Loader, Snapshot

log = logging.getLogger("ticker.serve")

JSON_TYPE = "application/json; charset=utf-8"
API_CACHE = "public, max-age=60"  # the daemon scrapes every half hour or so
REVALIDATE = "no-cache"  # keep a copy, but ask (an ETag makes the answer a 304)
REPORT_AGE = 600.0  # the page's findings are made again after this long
STALE_READ = 300.0  # /healthz fails when the store could not be read for this long
CACHE_BYTES = 64 * 1024 * 1024  # answers kept for repeated requests
PAGE_POLICY = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": JSON_TYPE,
    "parquet": "application/vnd.apache.parquet",
}


Answer = tuple[bytes, str, Mapping[str, str]]  # body, ETag, headers


class Answers:
    """Bodies already made, by snapshot and request, up to CACHE_BYTES in all."""

    def __init__(self) -> None:
        self.items: OrderedDict[tuple[Any, ...], Answer] = OrderedDict()
        self.size = 0

    def get(self, key: tuple[Any, ...]) -> Answer | None:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], body: bytes, etag: str, headers: Mapping[str, str]) -> None:
        if len(body) > CACHE_BYTES // 4 or key in self.items:
            return
        self.items[key] = (body, etag, headers)
        self.size += len(body)
        while self.size > CACHE_BYTES:
            _, (old, _, _) = self.items.popitem(last=False)
            self.size -= len(old)


class Server:
    """The app's state: config, loader, clock, caches; the handlers are its methods."""

    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock = clock or (lambda: datetime.now(UTC))
        self.loader = Loader(config, self.clock)
        self.answers = Answers()
        self.charts = {name: config.charts.dir / name for name in report.chart_names(config)}
        self.sources = {s.name: s for s in (*config.sources, config.reference)}
        self.report: tuple[tuple[str, int], check.Report] | None = None
        self.report_lock = asyncio.Lock()
        self.making: dict[tuple[Any, ...], asyncio.Future[Answer]] = {}  # answers being made

    # --- snapshot, dates, providers -----------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """The current snapshot; before the first read, wait for it up to [store]
        lock_timeout, then answer 503."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.lock_timeout
        while self.loader.current is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        snap = self.loader.current
        if snap is None:
            why = self.loader.state.error or "not read yet"
            raise api.ApiError(503, f"the store could not be read: {why}; try again shortly")
        return snap

    def today(self) -> date:
        return self.clock().astimezone(UTC).date()

    def defaults(self, snap: Snapshot) -> list[str]:
        """The providers without `providers=`: the first configured source, the one the
        other commands default to (the ticker)."""
        return [self.config.sources[0].name]

    # --- the API ------------------------------------------------------------------------

    async def rates(
        self, request: Request, csv: bool = False, provider: str | None = None
    ) -> Response:
        snap = await self.snapshot()
        params = dict(request.query_params)
        if provider is not None:
            params = self._provider_params(params, snap, provider)
        today = self.today()
        accept = request.headers.get("accept", "")
        fmt = "csv" if csv else "ndjson" if "application/x-ndjson" in accept else "json"
        key = ("rates", snap.etag, today, fmt, tuple(sorted(params.items())))
        cached = self.answers.get(key)
        if cached is None:
            cached = await self.once(key, lambda: self._make_rates(snap, params, today, fmt, key))
        body, etag, headers = cached
        media = {"csv": "text/csv", "ndjson": "application/x-ndjson", "json": JSON_TYPE}[fmt]
        return _answer(request, body, media, etag, API_CACHE, headers)

    async def _make_rates(
        self,
        snap: Snapshot,
        params: dict[str, str],
        today: date,
        fmt: str,
        key: tuple[Any, ...],
    ) -> Answer:
        query = api.rate_query(params, snap.series, self.defaults(snap), today)

        def make() -> bytes:
            recs = api.records(query, snap.series, today)
            if fmt == "csv":
                return api.csv_body(recs, query.expand)
            if fmt == "ndjson":
                return api.ndjson_body(recs, query.expand)
            return api.json_body(recs, query.expand)

        body = make() if query.kind != "range" else await anyio.to_thread.run_sync(make)
        headers = {"Vary": "Accept"}
        if fmt == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{query.csv_filename()}"'
        made = (body, _etag(snap.etag, repr(key[2:])), headers)
        self.answers.put(key, *made)
        return made

    async def once(self, key: tuple[Any, ...], make: Callable[[], Awaitable[Answer]]) -> Answer:
        """Make an answer once however many requests ask for it at the same time: the
        others wait for the first (50 clients asking for a year after new data arrived
        would otherwise make it 50 times over). The making is a task of its own, so a
        client that goes away does not cut it short for the others."""
        task = self.making.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self.making[key] = task

            def done(t: asyncio.Future[Answer]) -> None:
                self.making.pop(key, None)
                if not t.cancelled():
                    t.exception()  # seen here, so an error nobody waits for is not logged

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def rates_csv(self, request: Request) -> Response:
        return await self.rates(request, csv=True)

    async def rate(self, request: Request, provider: str | None = None) -> Response:
        snap = await self.snapshot()
        params = dict(request.query_params)
        if provider is not None:
            params = self._provider_params(params, snap, provider)
        api.check_names(params, api.PAIR_PARAMS)
        base = request.path_params["base"].upper()
        quote = request.path_params["quote"].upper()
        merged = {**params, "base": base, "quotes": quote}
        today = self.today()
        query = api.rate_query(merged, snap.series, self.defaults(snap), today)
        recs = api.records(query, snap.series, today)
        if not recs:
            raise api.ApiError(404, api.NOT_FOUND)
        body = recs[0].json().encode()
        etag = _etag(snap.etag, repr(("rate", today, sorted(merged.items()))))
        return _answer(request, body, JSON_TYPE, etag, API_CACHE)

    def _provider_params(self, params: dict[str, str], snap: Snapshot, key: str) -> dict[str, str]:
        """/providers/KEY/rates is /rates?providers=KEY."""
        if key.lower() not in snap.series.providers:
            raise api.ApiError(404, api.NOT_FOUND)
        if "providers" in params:
            raise api.ApiError(422, "providers is implied by the route; drop the parameter")
        return {**params, "providers": key.lower()}

    async def provider_rates(self, request: Request) -> Response:
        return await self.rates(request, provider=request.path_params["provider"])

    async def provider_rates_csv(self, request: Request) -> Response:
        return await self.rates(request, csv=True, provider=request.path_params["provider"])

    async def provider_rate(self, request: Request) -> Response:
        return await self.rate(request, provider=request.path_params["provider"])

    async def currencies(self, request: Request) -> Response:
        snap = await self.snapshot()
        found = api.currencies(dict(request.query_params), snap.series)
        return self._json(request, snap, found)

    async def currency(self, request: Request) -> Response:
        snap = await self.snapshot()
        api.check_names(dict(request.query_params), ())
        return self._json(request, snap, api.currency(request.path_params["code"], snap.series))

    async def providers(self, request: Request) -> Response:
        snap = await self.snapshot()
        api.check_names(dict(request.query_params), ())
        return self._json(
            request, snap, api.providers(snap.series, self.sources, self._todays(snap))
        )

    async def provider(self, request: Request) -> Response:
        snap = await self.snapshot()
        api.check_names(dict(request.query_params), ())
        key = request.path_params["provider"].lower()
        found = snap.series.providers.get(key)
        if found is None:
            raise api.ApiError(404, api.NOT_FOUND)
        entry = api.provider_entry(found, self.sources.get(key), self._todays(snap)[key])
        return self._json(request, snap, entry)

    def _todays(self, snap: Snapshot) -> dict[str, date]:
        now = self.clock()
        return {
            key: now.astimezone(self.sources[key].tz).date() if key in self.sources else now.date()
            for key in snap.series.providers
        }

    async def coverage(self, request: Request) -> Response:
        snap = await self.snapshot()
        found = api.coverage(dict(request.query_params), snap.series, self.defaults(snap))
        return self._json(request, snap, found)

    async def root(self, request: Request) -> Response:
        body = {"version": "v2", "status": "current", "openapi": "/v2/openapi.json", "docs": "/"}
        return Response(json.dumps(body), media_type=JSON_TYPE)

    async def openapi(self, request: Request) -> Response:
        body = resources.files("ticker.serve").joinpath("openapi.json").read_bytes()
        return _answer(request, body, JSON_TYPE, _etag("openapi", body.decode()), API_CACHE)

    def _json(self, request: Request, snap: Snapshot, value: Any) -> Response:
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        etag = _etag(snap.etag, hashlib.sha1(body).hexdigest())
        return _answer(request, body, JSON_TYPE, etag, API_CACHE)

    # --- the page, files, health ----------------------------------------------------------

    async def findings(self, snap: Snapshot) -> check.Report:
        """What `ticker check` finds in the snapshot: made in a thread when the page first
        asks for it, then kept while the data is the same (for REPORT_AGE seconds, as
        staleness depends on the time)."""
        now = self.clock()
        key = (snap.etag, hash(_check_inputs(snap.checked)))
        async with self.report_lock:
            kept = self.report
            if kept is None or kept[0] != key or (now - kept[1].now).total_seconds() > REPORT_AGE:
                made = await anyio.to_thread.run_sync(
                    check.check_config, self.config, snap.checked, now
                )
                self.report = (key, made)
                return made
            return kept[1]

    async def page(self, request: Request) -> Response:
        snap = await self.snapshot()
        charts = report.chart_exists(self.config)
        found = await self.findings(snap)
        html = report.render(
            self.config, snap, found, self.loader.state, self.defaults(snap), charts, self.clock()
        ).encode()
        etag = _etag("page", hashlib.sha1(html).hexdigest())
        headers = {"Content-Security-Policy": PAGE_POLICY}
        return _answer(request, html, "text/html; charset=utf-8", etag, REVALIDATE, headers)

    async def chart(self, request: Request) -> Response:
        path = self.charts.get(request.path_params["name"])
        if path is None:
            raise api.ApiError(404, api.NOT_FOUND)
        try:
            # One open, then fstat and read the same file: a chart renamed over it
            # meanwhile is served whole, old or new.
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                body = fh.read()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise api.ApiError(404, "not drawn yet: `ticker chart` draws it") from exc
        except OSError as exc:
            raise api.ApiError(503, f"the chart cannot be read: {exc.strerror}") from exc
        modified = datetime.fromtimestamp(st.st_mtime, UTC)
        etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        return _answer(request, body, "image/png", etag, REVALIDATE, modified=modified)

    async def export_file(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in EXPORT_TYPES:
            raise api.ApiError(404, api.NOT_FOUND)
        snap = await self.snapshot()
        key = ("export", snap.etag, fmt)
        cached = self.answers.get(key)
        if cached is None:

            def make() -> bytes:
                if fmt == "parquet":
                    return export.parquet_bytes(snap.days)
                return export.export_text(snap.days, fmt).encode()

            async def made() -> Answer:
                body = await anyio.to_thread.run_sync(make)
                attached = {"Content-Disposition": f'attachment; filename="ticker.{fmt}"'}
                answer = (body, _etag(snap.etag, fmt), attached)
                self.answers.put(key, *answer)
                return answer

            cached = await self.once(key, made)
        body, etag, headers = cached
        return _answer(
            request, body, EXPORT_TYPES[fmt], etag, REVALIDATE, headers, modified=snap.changed_at
        )

    def health_rows(self, snap: Snapshot) -> tuple[list[dict[str, Any]], bool]:
        now = self.clock()
        rows = status.assess(self.config, snap.facts, now)
        state = self.loader.state
        since = state.error_since
        unread = since is not None and (now - since).total_seconds() > STALE_READ
        healthy = not unread and not any(r.stale or r.failing or r.unsettled for r in rows)
        read_at = snap.read_at.isoformat().replace("+00:00", "Z")
        out = [{**r.as_dict(), "read_at": read_at, "read_error": state.error} for r in rows]
        return out, healthy

    async def healthz(self, request: Request) -> Response:
        snap = await self.snapshot()
        rows, healthy = self.health_rows(snap)
        body = json.dumps(rows, indent=2) + "\n"
        return Response(
            body,
            status_code=200 if healthy else 503,
            media_type=JSON_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = metrics.metrics_text(self.config, self.loader, self.clock())
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def _check_inputs(checked: check.Snapshot) -> tuple[Any, ...]:
    """What the check reads besides the daily series, as something hashable."""
    return (checked.revisions, checked.bad_pages, tuple(sorted(checked.origins.items())))


def _etag(*parts: str) -> str:
    return '"' + hashlib.sha1("\0".join(parts).encode()).hexdigest()[:32] + '"'


def _answer(
    request: Request,
    body: bytes,
    media_type: str,
    etag: str,
    cache: str,
    headers: Mapping[str, str] | None = None,
    modified: datetime | None = None,
) -> Response:
    """A 200 with validators, or a 304 when the client's copy is current."""
    out = {"ETag": etag, "Cache-Control": cache, **NOSNIFF, **(headers or {})}
    if modified is not None:
        out["Last-Modified"] = format_datetime(modified.astimezone(UTC), usegmt=True)
    if _not_modified(request, etag, modified):
        return Response(status_code=304, headers=out)
    return Response(body, media_type=media_type, headers=out)


def _not_modified(request: Request, etag: str, modified: datetime | None) -> bool:
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = [t.strip().removeprefix("W/") for t in match.split(",")]
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    if since and modified is not None:
        try:
            return modified.replace(microsecond=0) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, api.ApiError)
    body = json.dumps({"status": exc.status, "message": exc.message}, separators=(",", ":"))
    return Response(body, status_code=exc.status, media_type=JSON_TYPE, headers=NOSNIFF)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = api.NOT_FOUND if exc.status_code == 404 else str(exc.detail).lower()
    body = json.dumps({"status": exc.status_code, "message": message}, separators=(",", ":"))
    return Response(body, status_code=exc.status_code, media_type=JSON_TYPE, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback on the server, answered without one."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    body = json.dumps(
        {"status": 500, "message": "internal error (the server's log has the details)"}
    )
    return Response(body, status_code=500, media_type=JSON_TYPE)


def create_app(config: Config, clock: Callable[[], datetime] | None = None) -> Starlette:
    """The application for this config; the store is read from its start-up on."""
    server = Server(config, clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(server.loader.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server.loader.stop)

    routes = [
        Route("/", server.page),
        Route("/healthz", server.healthz),
        Route("/metrics", server.metrics),
        Route("/charts/{name}", server.chart),
        Route("/export.{fmt}", server.export_file),
        Route("/v2", server.root),
        Route("/v2/", server.root),
        Route("/v2/openapi.json", server.openapi),
        Route("/v2/rates", server.rates),
        Route("/v2/rates.csv", server.rates_csv),
        Route("/v2/rate/{base}/{quote}", server.rate),
        Route("/v2/currencies", server.currencies),
        Route("/v2/currency/{code}", server.currency),
        Route("/v2/providers", server.providers),
        Route("/v2/providers/{provider}", server.provider),
        Route("/v2/providers/{provider}/rates", server.provider_rates),
        Route("/v2/providers/{provider}/rates.csv", server.provider_rates_csv),
        Route("/v2/providers/{provider}/rate/{base}/{quote}", server.provider_rate),
        Route("/v2/coverage", server.coverage),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "HEAD"],
                expose_headers=["ETag", "Content-Disposition", "Last-Modified"],
                max_age=86400,
            )
        ],
        exception_handlers={
            api.ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.server = server
    return app
