"""Scheduler: the daemon behind `ticker run`. APScheduler 3.x fires the jobs; the jobs
only call the job modules (scrape, charts). This module and the CLI are the only places
that read the clock."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ticker import scrape
from ticker.config import Config, ScheduleConfig
from ticker.errors import TickerError

if TYPE_CHECKING:
    import requests
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger("ticker.run")

# How long a stop signal waits for the running job before abandoning it. Kept below
# systemd's default TimeoutStopSec (90 s), so a stop never ends in SIGKILL.
SHUTDOWN_GRACE = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class JobSpec:
    """One job of the daemon: its id (the Daemon method is `<id>_job`) and its trigger."""

    id: str
    trigger: BaseTrigger
    first_run: datetime | None = None  # None: when the trigger first fires


def make_trigger(spec: int | str, jitter: int, now: datetime) -> BaseTrigger:
    """An interval (seconds) or a 5-field crontab string, in UTC, from `now` on."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if isinstance(spec, int):
        return IntervalTrigger(
            seconds=spec,
            start_date=now + timedelta(seconds=spec),
            timezone=UTC,
            jitter=jitter or None,
        )
    minute, hour, day, month, weekday = spec.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=cron_weekdays(weekday),
        timezone=UTC,
        jitter=jitter or None,
    )


def cron_weekdays(field: str) -> str:
    """A crontab day-of-week field in APScheduler 3 terms. Crontab counts 0 (and 7) as
    Sunday; APScheduler 3 counts 0 as Monday. Numbers become names, which both read
    alike: "1-5" -> "mon,tue,wed,thu,fri"; names and "*" pass unchanged."""
    out: list[str] = []
    for item in field.lower().split(","):
        base, _, step_text = item.partition("/")
        if not any(c.isdigit() for c in base) and not (base == "*" and step_text):
            out.append(item)
            continue
        step = int(step_text) if step_text.isdigit() else 1
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            a, b = base.split("-", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(base)
            if step_text:  # "1/2" in crontab: from 1 to the end, every 2
                hi = 6
        days = {d % 7 for d in range(lo, hi + 1, step)}
        out.extend(_CRON_WEEKDAYS[d] for d in sorted(days))
    return ",".join(dict.fromkeys(out))


def job_specs(config: Config, now: datetime) -> list[JobSpec]:
    """The daemon's jobs at `now`: a scrape right away and then on [schedule] scrape
    (with [schedule] jitter), the chart job on [schedule] charts, and with a [reference]
    table the official rates on [schedule] reference. A function of the config and the
    time only, for tests."""
    schedule: ScheduleConfig = config.schedule
    specs = [
        JobSpec("scrape", make_trigger(schedule.scrape, schedule.jitter, now), first_run=now),
        JobSpec("chart", make_trigger(schedule.charts, 0, now)),
    ]
    if config.reference_table:
        specs.append(JobSpec("reference", make_trigger(schedule.reference, 0, now)))
    return specs


def describe_schedule(spec: int | str) -> str:
    return f"every {spec} s" if isinstance(spec, int) else f"at cron {spec!r} (UTC)"


class Daemon:
    """The jobs, and what they keep between runs (an HTTP session, the conditional-GET
    validators). Each job catches its own failures: one log line, and the daemon goes on."""

    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock = clock or (lambda: datetime.now(UTC))
        self.state = scrape.ScrapeState()
        self.session: requests.Session | None = None
        self.idle = threading.Event()  # clear while a job runs
        self.idle.set()
        self.stopping = threading.Event()

    def scrape_job(self) -> None:
        self._guarded("scrape", self._scrape)

    def chart_job(self) -> None:
        self._guarded("chart", lambda: self._charts("schedule"))

    def reference_job(self) -> None:
        self._guarded("reference", lambda: self._reference("schedule"))

    def close(self) -> None:
        scrape.release_unkept(self.config, self.state)
        if self.session is not None:
            self.session.close()
            self.session = None

    def _guarded(self, name: str, job: Callable[[], object]) -> None:
        self.idle.clear()
        try:
            job()
        except TickerError as exc:
            log.error("%s job failed: %s", name, exc)
        except Exception as exc:  # the daemon outlives any one job, bugs included
            log.error(
                "%s job failed: %s: %s (a bug; --log-level debug shows the traceback)",
                name,
                type(exc).__name__,
                exc,
            )
            log.debug("traceback of the %s job", name, exc_info=True)
        finally:
            self.idle.set()

    def _scrape(self) -> None:
        if self.session is None:
            from ticker.fetch import make_session

            self.session = make_session(self.config.http)
        attempts = scrape.scrape(
            self.config, self.clock(), session=self.session, state=self.state, stop=self.stopping
        )
        for a in attempts:
            level = logging.INFO if a.success else logging.WARNING
            log.log(level, "scrape %s", scrape.describe_attempt(a))
        stored = any(a.new or a.revised for a in attempts)
        if self.config.reference_table and any(a.new for a in attempts):
            try:  # a new ticker date: the official rates up to it, for the charts and check
                stored = self._reference("new ticker date", charts=False) or stored
            except Exception as exc:  # a reference failure is not a scrape failure
                log.error("reference job failed: %s: %s", type(exc).__name__, exc)
                log.debug("traceback of the reference job", exc_info=True)
        if stored:
            try:
                self._charts("new data")
            except Exception as exc:  # a chart failure is not a scrape failure
                log.error("chart job failed: %s: %s", type(exc).__name__, exc)
                log.debug("traceback of the chart job", exc_info=True)

    # --- reference job: on [schedule] reference, and after a scrape found a new date ---

    def _reference(self, reason: str, charts: bool = True) -> bool:
        """Fetch the official rates from two weeks before the newest stored; whether it
        stored anything new (then the charts are redrawn, unless `charts` is False)."""
        from ticker.reference import fetch_reference, summary

        t0 = time.monotonic()
        if self.session is None:
            from ticker.fetch import make_session

            self.session = make_session(self.config.http)
        run = fetch_reference(
            self.config,
            self.clock(),
            incremental=True,
            session=self.session,
            state=self.state,
            stop=self.stopping,
        )
        for a in run.attempts:
            if not a.success:
                log.warning("reference %s", run.describe(a)[len("reference ") :])
        level = logging.INFO if run.exit_code == 0 else logging.WARNING
        log.log(level, "reference (%s): %s", reason, summary(run, time.monotonic() - t0))
        stored = any(a.new or a.revised for a in run.attempts)
        if stored and charts:
            try:
                self._charts("new official rates")
            except Exception as exc:  # a chart failure is not a reference failure
                log.error("chart job failed: %s: %s", type(exc).__name__, exc)
                log.debug("traceback of the chart job", exc_info=True)
        return stored

    # --- chart job: after a scrape that stored something new, and on [schedule] charts ---

    def _charts(self, reason: str) -> None:
        t0 = time.monotonic()
        from ticker.charts import draw_charts

        result = draw_charts(self.config, now=self.clock())
        log.info("charts (%s): %s, %.2f s", reason, _chart_summary(result), time.monotonic() - t0)


def _chart_summary(result: Any) -> str:
    """'2 written, 4 unchanged, 0 skipped' from what draw_charts returns."""
    report = getattr(result, "report", result)
    if result is not None and report is None:
        return "no data to draw yet"
    parts = []
    for name in ("written", "unchanged", "skipped"):
        value = getattr(report, name, None)
        if value is not None:
            parts.append(f"{len(value)} {name}")
    return ", ".join(parts) or "done"


def build_scheduler(config: Config, daemon: Daemon, now: datetime) -> BlockingScheduler:
    """The scheduler with the daemon's jobs added (not started): UTC, one worker, each job
    at most one instance, missed runs coalesced, [schedule] misfire_grace_time."""
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        JobExecutionEvent,
        JobSubmissionEvent,
    )
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    grace = config.schedule.misfire_grace_time
    scheduler = BlockingScheduler(
        timezone=UTC,
        # One worker: jobs never overlap, so one job at a time opens the database.
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": grace},
    )
    for spec in job_specs(config, now):
        extra: dict[str, Any] = {}
        if spec.first_run is not None:
            extra["next_run_time"] = spec.first_run
        scheduler.add_job(
            getattr(daemon, f"{spec.id}_job"),
            spec.trigger,
            id=spec.id,
            name=spec.id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=grace,
            **extra,
        )

    def on_event(event: Any) -> None:
        if event.code == EVENT_JOB_MISSED and isinstance(event, JobExecutionEvent):
            log.warning(
                "%s run due at %s was missed (the machine was busy or asleep for more "
                "than [schedule] misfire_grace_time = %d s); the next run goes ahead",
                event.job_id,
                _stamp(event.scheduled_run_time),
                grace,
            )
        elif event.code == EVENT_JOB_MAX_INSTANCES and isinstance(event, JobSubmissionEvent):
            log.warning("%s run skipped: the previous one is still running", event.job_id)
        elif event.code == EVENT_JOB_ERROR and isinstance(event, JobExecutionEvent):
            log.error("%s job failed: %r", event.job_id, event.exception)

    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
    return scheduler


def run(config: Config) -> int:
    """Run the daemon until SIGTERM, SIGINT or SIGHUP; return the exit code (0)."""
    daemon = Daemon(config)
    running: list[BlockingScheduler] = []  # the scheduler, once it is built

    def stop(signum: int, frame: FrameType | None) -> None:
        from apscheduler.schedulers import SchedulerNotRunningError

        name = signal.Signals(signum).name
        if daemon.stopping.is_set():
            log.warning("%s again: exiting now", name)
            _exit_now()
        daemon.stopping.set()
        log.info("%s: stopping after the running job (at most %.0f s)", name, SHUTDOWN_GRACE)
        # A fetch in flight ends now (a `timeout` that says why), so the job records its
        # attempts and finishes instead of waiting out [http] deadline for a slow server.
        from ticker.fetch import cut_fetches

        cut_fetches(f"ticker run is stopping ({name})")
        for scheduler in running:
            try:
                scheduler.shutdown(wait=False)
            except SchedulerNotRunningError:
                pass

    # The handlers come first, before the scheduler is loaded and built: a stop signal
    # at any moment after this is logged and ends the daemon cleanly. A hang-up (the
    # terminal or ssh session of `make run` closing) stops it the same way.
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        if log.getEffectiveLevel() > logging.DEBUG:
            # Our listener reports missed and skipped runs in one line each.
            logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = build_scheduler(config, daemon, daemon.clock())
        running.append(scheduler)
        log.info(
            "ticker run: scraping %s %s (jitter %d s), database %s, archive %s%s",
            ", ".join(s.name for s in config.sources),
            describe_schedule(config.schedule.scrape),
            config.schedule.jitter,
            _shown(config.store_path),
            _shown(config.archive_dir),
            f", charts {describe_schedule(config.schedule.charts)}"
            + (
                f", official rates {describe_schedule(config.schedule.reference)}"
                if config.reference_table
                else ""
            ),
        )
        if not daemon.stopping.is_set():
            scheduler.start()  # blocks until a signal shuts the scheduler down
        if not daemon.idle.wait(SHUTDOWN_GRACE):
            log.warning("the running job did not finish within %.0f s; abandoned", SHUTDOWN_GRACE)
            _exit_now()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    daemon.close()
    log.info("ticker run: stopped")
    return 0


def _exit_now() -> None:
    """Leave without waiting for the job thread (os._exit skips the thread joins)."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stamp(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "?"
