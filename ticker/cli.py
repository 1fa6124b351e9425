"""Command line: parses arguments, reads the clock and the config, calls the pipeline."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ticker import __version__
from ticker.config import PAIR_RE, Config, load_config
from ticker.errors import TickerError, UsageError

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
    type=click.Path(dir_okay=False, path_type=Path),
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


def _now() -> datetime:
    return datetime.now(UTC)


def _as_date(value: datetime | None) -> date | None:
    return value.date() if value else None


def _pair(config: Config, text: str) -> str:
    """'kzt', 'KZT-USD' and 'KZT/USD' all name KZT/USD; anything else is refused."""
    pair = text.strip().upper().replace("-", "/")
    if len(pair) == 3:
        pair += "/USD"
    if not PAIR_RE.match(pair) or pair not in config.pairs:
        known = ", ".join(config.pairs)
        raise UsageError(f"unknown pair {text!r}; configured pairs: {known}")
    return pair


def _print_rows(rows: Sequence[Any], as_json: bool, empty: str) -> None:
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo(empty)
        return
    table = [("source", "pair", "date", "rate", "change_pct")]
    table += [(r.source, r.pair, r.date.isoformat(), r.rate, r.change_pct + "%") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
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
    from ticker.pipeline import backfill as run_backfill

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


def _progress_bar(items: Iterable[Path], total: int) -> Iterable[Path]:
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (cron, CI, pipes).
    return tqdm(items, total=total, unit="file", disable=None, leave=False, file=sys.stderr)


def _print_summary(s: Any) -> None:
    echo = click.echo
    skipped = (
        f" ({s.files_skipped} unchanged since the last run, skipped)" if s.files_skipped else ""
    )
    echo(f"files read:               {s.files_read}{skipped}")
    known = f" ({s.pages_known} loaded before)" if s.pages_known else ""
    echo(f"pages with a ticker:      {s.with_ticker}{known}")
    echo(f"observations:             {s.new} new, {s.already} already stored, {s.revised} revised")
    echo(f"pages without ticker:     {s.no_ticker}")
    echo(f"undated pages:            {len(s.undated)}")
    for origin in s.undated[:50]:
        echo(f"  {origin}")
    if len(s.undated) > 50:
        echo(f"  ... and {len(s.undated) - 50} more")
    if s.undated:
        echo("  (their quotes were not stored: re-run with --date YYYY-MM-DD to date them)")
    echo(f"inconsistent pages:       {len(s.inconsistent)}")
    for origin, detail in s.inconsistent[:50]:
        echo(f"  {origin}: {detail.replace(chr(10), '; ')}")
    if s.problems:
        echo(f"pages with problems:      {len(s.problems)}")
        for origin, detail in s.problems[:50]:
            echo(f"  {origin}: {detail}")
    echo(f"files that could not be read: {len(s.unreadable)}")
    for origin, reason in s.unreadable:
        echo(f"  {origin}: {reason}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def latest(ctx: click.Context, as_json: bool) -> None:
    """The newest quote of each pair: pair, date, rate, change_pct.

    \b
    Example:
      ticker latest --json
    """
    from ticker.store import Store

    config = _config(ctx)
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        rows = store.latest()
    _print_rows(
        rows, as_json, "no quotes stored yet; run `ticker backfill PATH` or `ticker scrape`"
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
    from ticker.store import Store

    config = _config(ctx)
    name = _pair(config, pair)
    if source_name is not None:
        config.source(source_name)
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        rows = store.history(name, _as_date(since), _as_date(until), source_name)
    _print_rows(rows, as_json, f"no quotes of {name} stored in that range")


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file (default stdout)."
)
@click.pass_context
def export(ctx: click.Context, fmt: str, out: Path | None) -> None:
    """The daily series: one row per source, pair and date, sorted, as printed on the page.

    Columns: source, pair, date, rate, change_pct. Two exports of the same data are
    byte-identical.

    \b
    Example:
      ticker export --format parquet --out rates.parquet
    """
    from ticker.export import write_export

    config = _config(ctx)
    count = write_export(config, fmt, out)
    if out is not None:
        click.echo(f"wrote {count} rows to {out}", err=True)


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """The main job: for now, print the newest quote of each pair.

    \b
    Example:
      ticker run
    """
    ctx.invoke(latest)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="ticker")
