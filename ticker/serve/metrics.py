"""/metrics: the sources' health and the store's counts in Prometheus text format, from
the snapshot (the store is never opened for a scrape of the metrics)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ticker import status
from ticker.config import Config
from ticker.serve.snapshot import DURATION_BOUNDS, Loader


class StoreCollector(Collector):
    """Collects from the loader's current snapshot at each scrape."""

    def __init__(self, config: Config, loader: Loader, now: datetime) -> None:
        self.config, self.loader, self.now = config, loader, now

    def collect(self) -> Iterator[Metric]:
        snap = self.loader.current
        reads = CounterMetricFamily(
            "ticker_serve_store_reads",
            "Reads of the store by the server, by result",
            labels=["result"],
        )
        for result, n in self.loader.state.reads.items():
            reads.add_metric([result], n)
        yield reads
        readable = GaugeMetricFamily(
            "ticker_serve_store_readable", "1 when the last try to read the store succeeded"
        )
        readable.add_metric([], 0 if self.loader.state.error else 1)
        yield readable
        if snap is None:
            return
        yield GaugeMetricFamily(
            "ticker_serve_snapshot_age_seconds",
            "Seconds since the store was last read",
            value=(self.now - snap.read_at).total_seconds(),
        )
        yield GaugeMetricFamily(
            "ticker_serve_store_open_seconds",
            "Seconds the store was open for the last read (writers wait at most this long)",
            value=snap.held,
        )
        yield from self._sources(snap.facts)
        observations = GaugeMetricFamily(
            "ticker_observations",
            "Days stored in the daily series, by source and pair",
            labels=["source", "pair"],
        )
        for (source, pair), n in sorted(Counter((d.source, d.pair) for d in snap.days).items()):
            observations.add_metric([source, pair], n)
        yield observations
        hist = HistogramMetricFamily(
            "ticker_scrape_duration_seconds",
            "How long each recorded fetch attempt took, by source",
            labels=["source"],
        )
        recorded = {h.source: h for h in snap.durations}
        for source in sorted({s.name for s in self.config.sources} | set(recorded)):
            h = recorded.get(source)
            counts = h.counts if h else (0,) * len(DURATION_BOUNDS)
            buckets = [(_bound(b), n) for b, n in zip(DURATION_BOUNDS, counts, strict=True)]
            total, seconds = (h.total, h.seconds) if h else (0, 0.0)
            hist.add_metric([source], buckets + [("+Inf", total)], sum_value=seconds)
        yield hist

    def _sources(self, facts: status.Facts) -> Iterator[Metric]:
        rows = status.assess(self.config, facts, self.now)
        gauges = {
            "last_attempt": GaugeMetricFamily(
                "ticker_source_last_attempt_timestamp_seconds",
                "When the source's last fetch attempt started (Unix time)",
                labels=["source"],
            ),
            "last_success": GaugeMetricFamily(
                "ticker_source_last_success_timestamp_seconds",
                "When the source's last successful fetch started (Unix time)",
                labels=["source"],
            ),
            "failures": GaugeMetricFamily(
                "ticker_source_consecutive_failures",
                "Failed attempts since the source's last success",
                labels=["source"],
            ),
            "age": GaugeMetricFamily(
                "ticker_source_newest_observation_age_seconds",
                "Age of the source's newest observation, from the start of its day",
                labels=["source"],
            ),
            "fresh": GaugeMetricFamily(
                "ticker_source_healthy",
                "1 when the source is fresh, working and nothing waits to be stored",
                labels=["source"],
            ),
        }
        for r in rows:
            if r.last_attempt is not None:
                gauges["last_attempt"].add_metric([r.source], r.last_attempt.timestamp())
            if r.last_success is not None:
                gauges["last_success"].add_metric([r.source], r.last_success.timestamp())
            gauges["failures"].add_metric([r.source], r.failures)
            if r.age is not None:
                gauges["age"].add_metric([r.source], r.age)
            healthy = not (r.stale or r.failing or r.unsettled)
            gauges["fresh"].add_metric([r.source], 1 if healthy else 0)
        yield from gauges.values()


def _bound(seconds: float) -> str:
    return repr(float(seconds))


def metrics_text(config: Config, loader: Loader, now: datetime) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(config, loader, now))
    return generate_latest(registry)
