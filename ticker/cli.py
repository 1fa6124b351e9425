"""Command line: parses arguments, reads the clock and the config, calls the job modules
(backfill, scrape, status, charts, series, export, check, scheduler, serve) and prints."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from ticker import __version__
from ticker.config import PAIR_RE, REFERENCE, Config, load_config, official_pair
from ticker.errors import OutputError, TickerError, UsageError
from ticker.models import Day
from ticker.output import output_error

F = TypeVar("F", bound=Callable[..., Any])
DATE = click.DateTime(formats=["%Y-%m-%d"])


class TickerGroup(click.Group):
    """Turns TickerError into one clean line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TickerError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=TickerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ticker")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),  # the config reader says what is wrong with it
    envvar="TICKER_CONFIG",
    default=None,
    help="Config file (default ./config.toml, or $TICKER_CONFIG).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log level for messages on stderr.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str) -> None:
    """Turn the currency ticker of The Times of Central Asia into a time series.

    \b
    Example:
      ticker backfill tests/fixtures/dumps/
      ticker latest
    """
    ctx.obj = {"config_path": config_path, "log_level": log_level.upper()}


def _config(ctx: click.Context) -> Config:
    obj = ctx.find_root().obj
    if "config" not in obj:
        obj["config"] = load_config(obj["config_path"])
    config: Config = obj["config"]
    return config


def _read_only(ctx: click.Context) -> Config:
    """The config of a command that only reads the store. Such a command never creates
    the database: where there is none yet it reads as empty, and this says so."""
    from ticker.status import has_store

    config = _config(ctx)
    if not has_store(config):
        click.echo(
            f"no database yet at {config.store_path}; "
            "make one with `ticker backfill PATH` or `ticker scrape`",
            err=True,
        )
    return config


def _now() -> datetime:
    return datetime.now(UTC)


def _as_date(value: datetime | None) -> date | None:
    return value.date() if value else None


def _out_path(value: str | None, wanted: str) -> Path | None:
    """The --out path; an empty one is refused (Path("") would mean the current directory)."""
    if value is None:
        return None
    if not value:
        raise UsageError(f"--out is empty; give {wanted}")
    return Path(value)


def _pair(config: Config, text: str) -> str:
    """'kzt', 'KZT-USD' and 'KZT/USD' all name KZT/USD; anything else is refused."""
    pair = text.strip().upper().replace("-", "/")
    if len(pair) == 3:
        pair += "/USD"
    if pair.startswith("USD/") and f"{pair[4:]}/USD" in config.pairs:
        pair = f"{pair[4:]}/USD"  # the official rates' direction names the same currency
    if not PAIR_RE.match(pair) or pair not in config.pairs:
        known = ", ".join(config.pairs)
        raise UsageError(f"unknown pair {text!r}; configured pairs: {known}")
    return pair


def _print_rows(
    rows: Sequence[Day], as_json: bool, empty: str, officials: dict[Day, Any] | None = None
) -> None:
    """The rows as a table or JSON; with `officials` (official rates are stored), each
    quote with the official rate in force on its date and its deviation from it."""
    if as_json:
        out = []
        for r in rows:
            fields = r.as_dict()
            if officials is not None:
                found = officials.get(r)
                fields.update(
                    found.as_dict()
                    if found
                    else {"official_rate": None, "official_date": None, "deviation_pct": None}
                )
            out.append(fields)
        click.echo(json.dumps(out, indent=2))
        return
    if not rows:
        click.echo(empty)
        return
    table: list[tuple[str, ...]] = [("source", "pair", "date", "rate", "change_pct")]
    table += [
        (r.source, r.pair, r.date.isoformat(), r.rate, "-" if r.change is None else r.change + "%")
        for r in rows
    ]
    if officials is not None:
        table[0] += ("official_rate", "deviation_pct")
        for i, r in enumerate(rows, 1):
            found = officials.get(r)
            table[i] += (found.rate, found.deviation_pct + "%") if found else ("-", "-")
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--date", "given", type=DATE, help="Date for pages that print none (YYYY-MM-DD).")
@click.option("--source", "source_name", help="Source the pages come from (default: the first).")
@click.pass_context
def backfill(
    ctx: click.Context, paths: tuple[str, ...], given: datetime | None, source_name: str | None
) -> None:
    """Load saved pages: .txt, .html/.htm (each may be .gz), .warc and .warc.gz.

    PATHS are files, directories (read recursively) and glob patterns. Exit code 1 when
    some file could not be read; everything else is still stored.

    \b
    Example:
      ticker backfill ~/dumps/ 'archive/**/*.warc.gz' --source timesca
      ticker backfill listing.html --date 2025-03-20
    """
    from ticker.backfill import backfill as run_backfill

    config = _config(ctx)
    summary = run_backfill(
        config,
        paths,
        given_date=_as_date(given),
        source_name=source_name,
        now=_now(),
        progress=_progress_bar,
    )
    _print_summary(summary)
    ctx.exit(summary.exit_code)


def _progress_bar(items: Iterable[Any], total: int) -> Iterable[Any]:
    # No bar when stderr is not a terminal (cron, CI, pipes): then tqdm is not even loaded.
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, unit="file", leave=False, file=sys.stderr)


LISTED = 50  # entries of each list in backfill's summary; the rest are counted


def _print_summary(s: Any) -> None:
    echo = click.echo

    def listed(entries: Sequence[tuple[str, str]], hint: str = "") -> None:
        # Reasons and problems come from the pages and are shortened where they are made.
        for origin, reason in entries[:LISTED]:
            echo(f"  {origin}: {reason}" if reason else f"  {origin}")
        if len(entries) > LISTED:
            echo(f"  ... and {len(entries) - LISTED} more")
        if entries and hint:
            echo(f"  ({hint})")

    skipped = (
        f" ({s.files_skipped} unchanged since the last run, skipped)" if s.files_skipped else ""
    )
    echo(f"files read:               {s.files_read}{skipped}")
    known = f" ({s.pages_known} loaded before)" if s.pages_known else ""
    echo(f"pages with a ticker:      {s.with_ticker}{known}")
    echo(f"observations:             {s.new} new, {s.already} already stored, {s.revised} revised")
    echo(f"pages without ticker:     {s.no_ticker}")
    echo(f"undated pages:            {len(s.undated)}")
    listed(s.undated, "their quotes were not stored: re-run with --date YYYY-MM-DD to date them")
    echo(f"inconsistent pages:       {len(s.inconsistent)}")
    listed(s.inconsistent)
    if s.partial:
        echo(f"pages read in part:       {len(s.partial)}")
        listed(s.partial, "their other quotes were stored; the lines named could not be read")
    if s.bad_dates:
        echo(f"pages with a bad date:    {len(s.bad_dates)}")
        listed(s.bad_dates, "their quotes were not stored: the date cannot be right")
    if s.problems:
        echo(f"pages with problems:      {len(s.problems)}")
        listed(s.problems)
    echo(f"files that could not be read: {len(s.unreadable)}")
    listed(s.unreadable)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def latest(ctx: click.Context, as_json: bool) -> None:
    """The newest quote of each pair: pair, date, rate, change_pct.

    \b
    Example:
      ticker latest --json
    """
    from ticker.series import latest_with_officials

    rows, officials = latest_with_officials(_read_only(ctx))
    _print_rows(
        rows,
        as_json,
        "no quotes stored yet; run `ticker backfill PATH` or `ticker scrape`",
        officials,
    )


@cli.command()
@click.argument("pair")
@click.option("--since", type=DATE, help="First date (YYYY-MM-DD).")
@click.option("--until", type=DATE, help="Last date (YYYY-MM-DD).")
@click.option("--source", "source_name", help="Only this source.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def history(
    ctx: click.Context,
    pair: str,
    since: datetime | None,
    until: datetime | None,
    source_name: str | None,
    as_json: bool,
) -> None:
    """The daily series of one PAIR (KZT/USD, KZT-USD or KZT).

    \b
    Example:
      ticker history KZT/USD --since 2025-01-01
    """
    from ticker.series import history as pair_history

    config = _config(ctx)
    name = _pair(config, pair)
    if source_name is not None:
        config.source(source_name)
    _read_only(ctx)
    # the currency's official rates too, written the way they are published (USD/KZT)
    pairs = [name, *(p for p in [official_pair(name)] if p is not None and p != name)]
    rows = pair_history(config, pairs, _as_date(since), _as_date(until), source_name)
    _print_rows(rows, as_json, f"no quotes of {name} stored in that range")


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    default="csv",
    show_default=True,
    help="Output format (parquet needs --out).",
)
@click.option("--out", type=click.Path(), help="Output file (default stdout).")
@click.pass_context
def export(ctx: click.Context, fmt: str, out: str | None) -> None:
    """The daily series: one row per source, pair and date, sorted, as printed on the page.

    Columns: source, pair, date, rate, change_pct. Two exports of the same data are
    byte-identical.

    \b
    Example:
      ticker export --format parquet --out rates.parquet
    """
    from ticker.export import write_export

    config = _config(ctx)
    path = _out_path(out, "a file name")
    count = write_export(config, fmt, path)
    _read_only(ctx)  # after the export's own checks of its arguments
    if path is not None:
        click.echo(f"wrote {count} rows to {path}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Cases shown per kind of finding (worst first); --json shows all.",
)
@click.pass_context
def check(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Check the stored series: printed changes against the rates, revisions,
    inconsistent pages, gaps, pairs that appear or disappear, stale sources, jumps.

    Exit code 1 when an error-level finding exists (a printed change the stored rates
    cannot explain), else 0. README: "What `ticker check` reports".

    \b
    Example:
      ticker check
      ticker check --json | jq '.findings[] | select(.level == "error")'
    """
    from ticker.check import format_report, run_check

    report = run_check(_read_only(ctx), _now())
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in format_report(report, limit):
            click.echo(line)
    ctx.exit(report.exit_code)


# --- scrape, status, run: live pages and the daemon ---------------------------------------


def _setup_logging(ctx: click.Context) -> None:
    """Log lines on stderr, time in UTC, at the level of --log-level."""
    import logging
    import time

    class StderrHandler(logging.StreamHandler):
        """Writes to sys.stderr as it is at the time (click's test runner swaps it)."""

        @property
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    handler = StderrHandler()
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if type(h).__name__ == "StderrHandler"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(ctx.find_root().obj["log_level"])
    if root.level > logging.DEBUG:
        # urllib3 logs each retry as a warning; ticker reports the attempt's outcome.
        logging.getLogger("urllib3").setLevel(logging.ERROR)


@cli.command()
@click.pass_context
def scrape(ctx: click.Context) -> None:
    """Fetch every [[sources]] page once, now: archive it, parse it, store its quotes.

    Every attempt is recorded (see `ticker status`), its page kept under [archive] dir
    first. Exit code 0 when every source gave its quotes or was unchanged since the
    last fetch, 1 otherwise (the line of that source says why).

    \b
    Example:
      ticker scrape
    """
    from ticker.scrape import describe_attempt
    from ticker.scrape import scrape as run_scrape

    _setup_logging(ctx)
    config = _config(ctx)
    attempts = run_scrape(config, _now())
    for attempt in attempts:
        click.echo(describe_attempt(attempt))
    ctx.exit(0 if all(a.success for a in attempts) else 1)


@cli.command()
@click.option("--since", type=DATE, help="First date (default: the ticker's first stored day).")
@click.option("--until", type=DATE, help="Last date (default: today).")
@click.pass_context
def reference(ctx: click.Context, since: datetime | None, until: datetime | None) -> None:
    """Fetch the official rates of the configured pairs from [reference] url (a Frankfurter
    server) and store them as the source `reference`, each on the date it is in force.

    Each pair is asked of the bank that publishes it, five years a request; every
    request is archived and recorded as an attempt (see `ticker status`). Running it
    again adds nothing new; another value for a stored date is kept as a revision. Exit
    code 0 when every request gave its rates, 1 otherwise (its line says why).

    \b
    Example:
      ticker reference --since 2001-01-01
    """
    from ticker.reference import fetch_reference

    _setup_logging(ctx)
    config = _config(ctx)
    run = fetch_reference(config, _now(), since=_as_date(since), until=_as_date(until))
    click.echo(f"window: {run.since} to {run.until}")
    for attempt in run.attempts:
        click.echo(run.describe(attempt))
    for line in run.left_out:
        click.echo(f"not asked: {line}")
    ctx.exit(run.exit_code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per source: the last attempt and its outcome, the last success, consecutive
    failures, and the newest observation's date and age.

    A source is stale when its newest observation is older than [status] stale_after
    (counted from the start of that day in the source's time zone), failing when its
    last attempt failed. Exit code 0 when all are fresh and working, 1 otherwise.

    \b
    Example:
      ticker status --json
    """
    from ticker.status import status as source_status

    config = _read_only(ctx)
    now = _now()
    rows = source_status(config, now)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        _print_status(rows, config)
    ctx.exit(1 if any(r.stale or r.failing or r.unsettled for r in rows) else 0)


def _print_status(rows: Sequence[Any], config: Config) -> None:
    def when(t: datetime | None) -> str:
        return t.strftime("%Y-%m-%d %H:%M:%SZ") if t else "never"

    table = [("source", "last attempt", "outcome", "last success", "fails", "newest", "age")]
    for r in rows:
        outcome = r.last_outcome or "-"
        if r.last_status and r.last_outcome != "ok":
            outcome += f" ({r.last_status})"
        newest = r.newest_date.isoformat() if r.newest_date else "none"
        table.append(
            (
                r.source,
                when(r.last_attempt),
                outcome,
                when(r.last_success),
                str(r.failures),
                newest,
                "future" if r.future else _age(r.age) if r.age is not None else "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    from ticker.spool import SPOOL_DIR

    pending = config.archive_dir / SPOOL_DIR
    for r in rows:
        state = ", ".join(s for s, on in (("stale", r.stale), ("failing", r.failing)) if on)
        if state:
            why = []
            if r.future:
                why.append(
                    f"the newest observation is dated {r.newest_date}, after today, so its age "
                    "says nothing (a misprinted date line or a wrong --date; `ticker check` "
                    "lists it as future_date)"
                )
            elif r.stale and r.source == REFERENCE and r.newest_date:
                from ticker.status import stale_after

                why.append(
                    f"no official rate newer than {_age(stale_after(config, r.source))} "
                    "([status] stale_after and 4 days for weekends and holidays); run "
                    "`ticker reference`"
                )
            elif r.stale:
                why.append(
                    f"no observation newer than {_age(config.stale_after)} ([status] stale_after)"
                    if r.newest_date
                    else "no observation stored yet"
                )
            if r.failing:
                why.append(f"the last attempt failed: {r.last_error or r.last_outcome}")
            click.echo(f"{r.source}: {state}: {'; '.join(why)}")
        if r.waiting:
            because = f" (the newest: {r.waiting_because})" if r.waiting_because else ""
            click.echo(
                f"{r.source}: waiting: {_count(r.waiting, 'attempt')} in {pending} "
                f"wait to be stored{because}; the next scrape stores them"
            )
        if r.unstored:
            click.echo(
                f"{r.source}: unstored: {_count(r.unstored, 'page')} in {config.archive_dir} "
                f"fetched after the last recorded attempt {'is' if r.unstored == 1 else 'are'} "
                "not in the store (neither "
                "the store nor the pending directory took them); a running `ticker run` "
                f"stores them at its next job, else `ticker backfill {config.archive_dir}` "
                "does"
            )
    unreadable = rows[0].unreadable_spooled if rows else 0
    if unreadable:
        click.echo(
            f"set aside: {_count(unreadable, 'spooled attempt')} in {pending} cannot be "
            "read (*.bad, or *.json the next scrape sets aside); look at them, then "
            "delete them"
        )


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _age(seconds: float) -> str:
    """3725 -> '1h 2m'; 200000 -> '2d 7h'."""
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes = s // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """The daemon: scrape every [[sources]] page now and then on [schedule] scrape
    (an interval in seconds or a 5-field cron string, UTC, plus up to [schedule] jitter
    seconds), and redraw the charts after new data and on [schedule] charts.

    Logs one line per job run on stderr. A failing job (network, page, locked
    database) is logged and the daemon goes on. SIGTERM, SIGHUP or Ctrl-C: the running job
    finishes (or is abandoned after 30 s) and the process exits 0. The database is
    open only during a job, so the other commands work while it runs.

    \b
    Example:
      ticker --log-level debug run
    """
    from ticker.scheduler import run as run_daemon

    _setup_logging(ctx)
    ctx.exit(run_daemon(_config(ctx)))


@cli.command()
@click.option("--host", help="Address to listen on (default: [serve] host, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on (default: [serve] port, 8080; 0: any free port).",
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the store over HTTP, read-only: a report page at /, the series in the
    shape of Frankfurter's API v2 under /v2, the charts, the exports, /healthz, /metrics.

    Needs the serve extra (pip install 'ticker[serve]'). The database is read in brief
    read-only opens when it changes, so the daemon, a backfill and the other commands
    run beside it. SIGTERM or Ctrl-C stops it.

    \b
    Example:
      ticker serve --port 8080
      curl 'http://127.0.0.1:8080/v2/rates?base=USD&quotes=KZT'
    """
    from ticker.serve import check_extra, run

    check_extra()
    _setup_logging(ctx)
    config = _config(ctx)
    ctx.exit(run(config, host or config.serve.host, config.serve.port if port is None else port))


@cli.command()
@click.option("--since", type=DATE, help="First date drawn (YYYY-MM-DD).")
@click.option("--until", type=DATE, help="Last date drawn (default: the newest stored).")
@click.option("--pair", "pairs", multiple=True, help="Only this pair (repeat for more).")
@click.option("--all", "everything", is_flag=True, help="Draw all the data, not the window.")
@click.option("--out", "out_dir", type=click.Path(), help="Output directory.")
@click.option("--source", "source_name", help="Source to draw (default: the first).")
@click.pass_context
def chart(
    ctx: click.Context,
    since: datetime | None,
    until: datetime | None,
    pairs: tuple[str, ...],
    everything: bool,
    out_dir: str | None,
    source_name: str | None,
) -> None:
    """Draw PNG charts: one per pair (rate, and the day's change as bars) and
    overview.png (every pair rebased to 100), into [charts] dir.

    The window is the last [charts] window_days of data, or everything with --all.
    Charts whose data did not change are not rewritten.

    \b
    Example:
      ticker chart
      ticker chart --pair KZT --pair UZS --since 2024-01-01 --out /tmp/charts
    """
    from ticker.charts import draw_charts

    config = _config(ctx)
    wanted = [_pair(config, p) for p in pairs]
    if since and until and since > until:
        raise UsageError(f"--since {since:%Y-%m-%d} is after --until {until:%Y-%m-%d}")
    _read_only(ctx)
    result = draw_charts(
        config,
        now=_now(),
        since=_as_date(since),
        until=_as_date(until),
        pairs=wanted or None,
        everything=everything,
        out_dir=_out_path(out_dir, "a directory"),
        source_name=source_name,
    )
    report = result.report
    if report is None:
        click.echo(
            "no quotes stored yet; nothing to draw (run `ticker backfill` or `ticker scrape`)"
        )
        ctx.exit(1)
    assert report is not None
    click.echo(f"window: {result.since} to {result.until}")
    for path in report.written:
        click.echo(f"wrote      {path}")
    for path in report.unchanged:
        click.echo(f"unchanged  {path}")
    for _pair_name, reason in report.skipped:
        click.echo(f"skipped    {reason}")
    if not report.written and not report.unchanged:
        ctx.exit(1)


@cli.command()
@click.option("--since", type=DATE, help="First capture day (YYYY-MM-DD, the source's time zone).")
@click.option("--until", type=DATE, help="Last capture day (default: the archive's newest).")
@click.option("--source", "source_name", help="Source to recover (default: the first).")
@click.option(
    "--archive",
    type=click.Choice(["wayback", "commoncrawl"]),
    default="wayback",
    show_default=True,
    help="The Wayback Machine (CDX server API) or Common Crawl (its index server).",
)
@click.option(
    "--per-day",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Captures fetched per day, spread over it and always its last; 0: every one.",
)
@click.option(
    "--scope",
    type=click.Choice(["site", "page"]),
    default="site",
    show_default=True,
    help="site: captures of every page of the source's host; page: of its URL only.",
)
@click.option("--dry-run", is_flag=True, help="Query the index only: print what would be fetched.")
@click.pass_context
def recover(
    ctx: click.Context,
    since: datetime | None,
    until: datetime | None,
    source_name: str | None,
    archive: str,
    per_day: int,
    scope: str,
    dry_run: bool,
) -> None:
    """Recover history from the public web archives: find the captures of the source's
    pages, fetch them politely ([recover] per_minute), keep each one in the page archive
    and store its quotes as `ticker backfill` does.

    Resumable: what was listed and fetched is kept in the store, so the same command
    run again goes on where it stopped and fetches nothing twice. Exit code 0 when
    every capture chosen was fetched or knowingly skipped, 1 when some could not be
    fetched or the archive stopped the run (listed, with why; the next run retries).

    \b
    Example:
      ticker recover --dry-run
      ticker recover --since 2020-01-01 --per-day 2
      ticker recover --archive commoncrawl --scope page
    """
    import signal
    import threading
    import time

    from ticker.recover import recover as run_recover

    _setup_logging(ctx)
    config = _config(ctx)
    bar = _RecoverBar() if sys.stderr.isatty() else None

    # Ctrl-C or SIGTERM stops the run between requests (the one under way ends first, so
    # nothing fetched is fetched again); what was fetched is stored, the summary printed.
    # A second one stops it at once.
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        click.echo("stopping after the request under way (Ctrl-C again to stop at once)", err=True)

    def sleep(seconds: float) -> None:
        if stopping.wait(seconds):
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_recover(
            config,
            now=_now(),
            clock=time.monotonic,
            sleep=sleep,
            since=_as_date(since),
            until=_as_date(until),
            source_name=source_name,
            archive=archive,
            per_day=per_day,
            scope=scope,
            dry_run=dry_run,
            progress=bar,
            stop=stopping,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_recover(summary)
    ctx.exit(summary.exit_code)


class _RecoverBar:
    """recover's progress on a terminal: index rows while listing, then captures, with
    the days done and the time left."""

    def __init__(self) -> None:
        self.bar: Any = None

    def listed(self, rows: int, requests: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(desc="listing", unit=" rows", leave=False, file=sys.stderr)
        self.bar.n = rows
        self.bar.set_postfix_str(f"{requests} index requests", refresh=True)

    def start(self, captures: int, days: int) -> None:
        from tqdm import tqdm

        self.close()
        self.days = days
        self.bar = tqdm(
            total=captures, desc="captures", unit=" captures", leave=False, file=sys.stderr
        )
        self.bar.set_postfix_str(f"days 0/{days}", refresh=False)

    def step(self, days_done: int) -> None:
        self.bar.set_postfix_str(f"days {days_done}/{self.days}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_recover(s: Any) -> None:
    echo = click.echo

    def listed(entries: Sequence[tuple[str, str]], total: int, hint: str = "") -> None:
        for origin, reason in entries[:LISTED]:
            echo(f"  {origin}: {reason}" if reason else f"  {origin}")
        if total > min(len(entries), LISTED):
            echo(f"  ... and {total - min(len(entries), LISTED)} more")
        if total and hint:
            echo(f"  ({hint})")

    scope = f"every page of {s.target}" if s.scope == "site" else f"the page {s.target}"
    echo(f"archive:                  {s.archive} ({s.index}), {scope}")
    left = ", ".join(f"{n} {why}" for why, n in sorted(s.left_out.items()))
    echo(
        f"captures listed:          {s.listed_in_all} ({s.listed_new} new this run, "
        f"{_count(s.index_requests, 'request')} to the index)"
        + (f"; left out: {left}" if left else "")
    )
    if s.days:
        spread = (
            f"{_count(s.most, 'capture')} a day"
            if s.fewest == s.most
            else f"{s.fewest} to {s.most} captures a day, median {s.median:g}"
        )
        echo(f"days found:               {s.days}, {s.first_day} to {s.last_day} ({spread})")
    else:
        echo("days found:               0")
    choice = (
        "every capture"
        if s.per_day == 0
        else "the last of each day"
        if s.per_day == 1
        else f"up to {s.per_day} a day, spread over it, always its last"
    )
    echo(f"captures chosen:          {s.chosen} ({choice})")
    if s.dry_run:
        if s.months:
            echo("  month     days  captures  to fetch  stored")
            for m in s.months:
                echo(f"  {m.month}  {m.days:>5}  {m.captures:>8}  {m.to_fetch:>8}  {m.stored:>6}")
        echo(f"to fetch:                 {s.to_fetch}")
        echo(f"already stored:           {s.already}")
        echo(f"skipped:                  {s.skipped_count}")
        listed(s.skipped, s.skipped_count)
        label = f"time at {s.per_minute} a minute:"
        echo(
            f"{label:<26}{_duration(s.requests / s.per_minute * 60)} "
            f"({s.requests} downloads; bytes already fetched are not fetched again)"
        )
        if s.stopped:
            echo(f"stopped: {s.stopped}")
        else:
            echo("dry run: no capture was fetched")
        return
    echo(f"captures fetched:         {s.fetched + s.reused + s.read_back}")
    for n, what in (
        (s.reused, "stored from bytes already fetched (revisits, identical captures)"),
        (s.read_back, "read back from the page archive, where a stopped run left them"),
        (s.redirected, "served by the archive in place of the capture asked for"),
        (s.instead, "taken for a day whose chosen capture turned out to be another day's"),
    ):
        if n:
            echo(f"  {n} {what}")
    echo(f"already stored:           {s.already}")
    echo(f"skipped:                  {s.skipped_count}")
    listed(s.skipped, s.skipped_count)
    echo(f"could not be fetched:     {s.failed_count}")
    listed(s.failed, s.failed_count, "the next run tries them again")
    echo(
        f"observations:             {s.new} new, {s.already_stored} already stored, "
        f"{s.revised} revised"
    )
    echo(f"pages with a ticker:      {s.with_ticker}")
    echo(f"pages without ticker:     {s.no_ticker}")
    echo(f"undated pages:            {len(s.undated)}")
    listed(s.undated, len(s.undated), "their quotes were not stored")
    echo(f"inconsistent pages:       {len(s.inconsistent)}")
    listed(s.inconsistent, len(s.inconsistent))
    if s.partial:
        echo(f"pages read in part:       {len(s.partial)}")
        listed(s.partial, len(s.partial))
    if s.bad_dates:
        echo(f"pages with a bad date:    {len(s.bad_dates)}")
        listed(s.bad_dates, len(s.bad_dates), "their quotes were not stored")
    span = f", {s.covered_first} to {s.covered_last}" if s.covered else ""
    echo(f"days covered:             {s.covered}{span}")
    if s.stopped:
        left = f" ({s.not_reached} chosen captures not reached)" if s.not_reached else ""
        echo(f"stopped: {s.stopped}{left}")


def _duration(seconds: float) -> str:
    """3725 -> '1 h 2 min'; 90 -> '1 min 30 s'."""
    s = round(seconds)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    return f"{s} s"


class _Stdout:
    """sys.stdout while ticker runs: a write or flush that fails becomes one error line
    (OutputError, exit code 1), or a quiet exit 1 when the reader has gone (`ticker export
    | head -1`); what is still buffered then goes to /dev/null, so that the flush at exit
    cannot fail a second time."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream  # None: ticker was started with its stdout closed

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:  # click probes a stream with write(""); /dev/full fails even that
            return 0
        if self.stream is None:
            raise OutputError("standard output", "it is closed", "start ticker with it open")
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise self._failed(exc) from exc

    def flush(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.flush()
        except OSError as exc:
            raise self._failed(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def _failed(self, exc: OSError) -> Exception:
        assert self.stream is not None
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        if exc.errno == errno.EPIPE:
            return BrokenPipeError(errno.EPIPE, exc.strerror)
        return output_error("standard output", exc)


def main(argv: list[str] | None = None) -> None:
    stdout = _Stdout(sys.stdout)
    sys.stdout = stdout
    try:
        try:
            cli.main(args=argv, prog_name="ticker")
        finally:
            stdout.flush()
    except BrokenPipeError:
        sys.exit(1)  # the reader stopped early: exit quietly, as other tools do
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C outside the daemon (which handles it): quietly, as shells do
    except TickerError as exc:  # stdout failed outside a command (--help, the last flush)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    finally:
        sys.stdout = stdout.stream
