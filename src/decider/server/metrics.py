"""Prometheus metrics at GET /metrics: every metric Decider exposes is defined here.

Counts are read from what the service keeps anyway (decision stats, the profile caches, the
reloader, admission) when Prometheus scrapes, so a decision pays only for the one histogram
of its latency, itself plain counts (prometheus-client's Histogram takes a lock for each
observation: ~0.7 µs more a decision). Labels are placements, channels, segment ids,
outcomes, triggers and source names: never an identifier, a hash or a trait value. With
several workers, a scrape of any one reports every worker's series, each labelled `worker`
(0, 1, ...): a worker restarted after a crash starts its counters again, which Prometheus
reads as the counter reset it is; `sum without (worker)` adds them up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate
from time import perf_counter
from types import TracebackType

from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from decider.measure.measuring import Measuring
from decider.profiles.resolver import Resolver
from decider.reload import Reloader
from decider.server.admission import Admission
from decider.server.peers import Family, Peers, Sample, WorkerReport
from decider.service import Decider
from decider.stats import Stats
from decider.usage.keeper import UsageKeeper

# Prometheus's text format; litestar adds the charset, which the constant has already (a media
# type with a parameter twice is one Prometheus 3 refuses)
_MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
# decisions take tens of microseconds in-process; the profile budget is tens of milliseconds
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics(Collector):
    """One process's registry: the latency histogram, and itself, a collector reading the
    process's state when Prometheus scrapes."""

    def __init__(
        self,
        *,
        decider: Decider,
        stats: Stats,
        resolver: Resolver,
        reloader: Reloader,
        admission: Admission,
        measuring: Measuring,
        usage: UsageKeeper,
        source: str,
    ) -> None:
        self.decider, self.stats, self.resolver = decider, stats, resolver
        self.reloader, self.admission, self.source = reloader, admission, source
        self.measuring, self.usage = measuring, usage
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = _Latency()
        self.registry.register(self)

    def timing(self) -> _Timing:
        return _Timing(self.latency)

    def families(self) -> tuple[Family, ...]:
        """This process's metrics, for its worker report."""
        return tuple(
            Family(
                family.name,
                family.documentation,
                family.type,
                tuple(Sample(s.name, s.labels, s.value) for s in family.samples),
            )
            for family in self.registry.collect()
        )

    def collect(self) -> Iterator[Metric]:
        yield self.latency.family()

        decided = CounterMetricFamily(
            "decider_decisions",
            "Decisions by placement, channel, segment ('' for none) and what was shown "
            "(personalized, default, holdout: the default in an experiment's holdout, suppressed)",
            labels=["placement", "channel", "segment", "outcome"],
        )
        for labels, count in sorted(self.stats.decided.items()):
            decided.add_metric(list(labels), count)
        yield decided

        degraded = CounterMetricFamily(
            "decider_degraded_decisions",
            "Decisions the profile source let down: stale data served, the profile "
            "unavailable, an id left unchecked",
            labels=["kind"],
        )
        for kind, count in sorted(self.stats.degraded.items()):
            degraded.add_metric([kind], count)
        yield degraded

        errors = CounterMetricFamily(
            "decider_segment_evaluation_errors",
            "Segment conditions that failed to evaluate (the segment did not match)",
            labels=["segment"],
        )
        for segment, counted in sorted(self.stats.segments.items()):
            errors.add_metric([segment], counted.errors)
        yield errors

        lookups = CounterMetricFamily(
            "decider_profile_lookups",
            "Profile lookups by result: answered fresh from the cache (hit) or not (miss), "
            "served stale or unavailable when the source failed, past their request's budget; "
            "and calls to the source (fetched: lookups of one id at once share one)",
            labels=["source", "kind", "result"],
        )
        sizes = GaugeMetricFamily(
            "decider_profile_cache_entries", "Entries held per profile cache", labels=["kind"]
        )
        for kind, cache in self.resolver.caches().items():
            for result, count in (
                ("hit", cache.hits),
                ("miss", cache.misses),
                ("stale", cache.stale),
                ("unavailable", cache.unavailable),
                ("over_budget", cache.late),
                ("fetched", cache.fetches),
            ):
                lookups.add_metric([self.source, kind, result], count)
            sizes.add_metric([kind], cache.size)
        yield lookups
        yield sizes

        yield GaugeMetricFamily(
            "decider_decisions_in_flight",
            "Decisions being made now",
            value=self.admission.in_flight,
        )
        yield CounterMetricFamily(
            "decider_shed_requests",
            "Decisions turned away with 503: DECIDER_MAX_IN_FLIGHT were in flight",
            value=self.admission.shed,
        )

        reloads = CounterMetricFamily(
            "decider_reloads", "Rule reloads by trigger and outcome", labels=["trigger", "ok"]
        )
        for (trigger, ok), count in sorted(self.reloader.by_outcome.items()):
            reloads.add_metric([trigger, str(ok).lower()], count)
        yield reloads

        records = CounterMetricFamily(
            "decider_measure_records",
            "Exposure and outcome records by what became of them: written, dropped (the queue "
            "was full) or failed (the sink could not write them)",
            labels=["kind", "result"],
        )
        for (kind, result), count in self.measuring.counts().items():
            records.add_metric([kind, result], count)
        yield records

        usage = CounterMetricFamily(
            "decider_usage_writes",
            "Writes of segment usage to its file (DECIDER_USAGE_DB) by result: written, or "
            "failed (the counts are written with the next one that succeeds)",
            labels=["result"],
        )
        usage.add_metric(["written"], self.usage.written)
        usage.add_metric(["failed"], self.usage.failed)
        yield usage

        ruleset = self.decider.ruleset
        info = InfoMetricFamily("decider_ruleset", "The ruleset serving now")
        info.add_metric([], {"version": ruleset.version, "engine": ruleset.engine.name})
        yield info


class _Latency:
    """Decision latencies: a count per bucket of _BUCKETS (the last one past them all) and
    their sum, kept on the event loop's thread."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(_BUCKETS, seconds)] += 1  # the first bucket it is <= to
        self.total += seconds

    def family(self) -> HistogramMetricFamily:
        cumulative = list(accumulate(self.counts))
        bounds = [*map(floatToGoString, _BUCKETS), "+Inf"]
        return HistogramMetricFamily(
            "decider_decision_seconds",
            "Time to answer POST /v1/decide, body read to decision (answered 2xx or 4xx)",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=self.total,
        )


class _Timing:
    """`with metrics.timing():` observes the block's wall time, whatever it raises."""

    __slots__ = ("_histogram", "_started")

    def __init__(self, histogram: _Latency) -> None:
        self._histogram = histogram
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, _: BaseException | None, __: TracebackType | None
    ) -> None:
        self._histogram.observe(perf_counter() - self._started)


class _Workers(Collector):
    """Every worker's families as one, each series labelled with its worker."""

    def __init__(self, reports: Iterable[WorkerReport]) -> None:
        self.reports = reports

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for report in self.reports:
            worker = str(report.worker)
            for family in report.metrics:
                metric = merged.get(family.name)
                if metric is None:
                    metric = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": worker}
                    metric.add_sample(sample.name, labels, sample.value)
        yield from merged.values()


def exposition(reports: Iterable[WorkerReport]) -> bytes:
    """The Prometheus text of every worker's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Workers(reports))
    return generate_latest(registry)


@get("/metrics", operation_id="metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(peers: NamedDependency[Peers]) -> Response[bytes]:
    return Response(exposition(await peers.reports()), media_type=_MEDIA_TYPE)
