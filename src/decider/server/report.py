"""What the admin endpoints report of a process (segment usage, traffic), built from its
state, and the same for several workers combined: counts add up, the latest match wins; and
segment usage over every run, from the usage file (decider.usage)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from decider.measure.measuring import EXPOSURE, OUTCOME, Measuring
from decider.profiles.resolver import Resolver
from decider.server.admission import Admission
from decider.service import Decider
from decider.stats import Stats
from decider.usage.keeper import Snapshot, UsageKeeper


class SegmentUsage(msgspec.Struct, frozen=True):
    id: str
    owner: str
    description: str
    priority: int
    file: str
    line: int
    wins: int
    errors: int
    last_matched: datetime | None


class GovernedSegment(SegmentUsage, frozen=True):
    """A segment's usage since the workers started and, from the usage file, over every
    run: wins, last match, when a ruleset holding it was first served, and whether it is
    idle (no match in `idle_days`, counted from `first_seen` if it never matched). None
    when the usage file is unavailable."""

    wins_total: int | None = None
    last_matched_ever: datetime | None = None
    first_seen: datetime | None = None
    idle: bool | None = None


class SuppressionUsage(msgspec.Struct, frozen=True):
    id: str
    description: str
    hits: int
    errors: int


class SegmentsReport(msgspec.Struct, frozen=True):
    """Which segments earn their keep: wins and last match since the service started; and
    how often each suppression held (errors: held only because it failed to evaluate).
    With several workers, their counts added up (`workers`: how many)."""

    since: datetime
    decisions: int
    segments: tuple[SegmentUsage, ...]
    suppressions: tuple[SuppressionUsage, ...]
    workers: int = 1


class Governance(SegmentsReport, frozen=True, kw_only=True):
    """GET /admin/segments: the segments' usage since the workers started, and over every
    run (`durable`: whether the usage file could be written and read; if not,
    `durable_error` says why, and the segments' durable fields are null)."""

    segments: tuple[GovernedSegment, ...]
    idle_days: int
    durable: bool
    durable_error: str | None


class Traffic(msgspec.Struct, frozen=True):
    """What the service has been through since it started: decisions, those made on stale
    data, without a profile or with an id left unchecked; profile lookups and those past
    their budget; decisions in flight now, and requests turned away (503) for being too many;
    exposure and outcome records written, dropped (a full queue) and failed (the sink could
    not write them); writes of segment usage to its file that failed. With several workers,
    their counts added up (`max_in_flight` too)."""

    since: datetime
    decisions: int
    stale: int
    unavailable: int
    unchecked: int
    lookups: int
    lookups_over_budget: int
    in_flight: int
    max_in_flight: int
    shed: int
    exposures_written: int
    exposures_dropped: int
    exposures_failed: int
    outcomes_written: int
    outcomes_dropped: int
    outcomes_failed: int
    usage_writes_failed: int
    workers: int = 1


def segments_of(decider: Decider, stats: Stats) -> SegmentsReport:
    """Usage of the segments and suppressions this process serves."""
    ruleset = decider.ruleset
    usage = []
    for segment in ruleset.segments:
        counted = stats.segments.get(segment.id)
        usage.append(
            SegmentUsage(
                id=segment.id,
                owner=segment.owner,
                description=segment.description,
                priority=segment.priority,
                file=segment.file,
                line=segment.line,
                wins=counted.wins if counted else 0,
                errors=counted.errors if counted else 0,
                last_matched=counted.last_matched if counted else None,
            )
        )
    suppressions = []
    for rule in ruleset.suppressions:
        held = stats.suppressions.get(rule.id)
        suppressions.append(
            SuppressionUsage(
                rule.id, rule.description, held.hits if held else 0, held.errors if held else 0
            )
        )
    return SegmentsReport(stats.started_at, stats.decisions, tuple(usage), tuple(suppressions))


def traffic_of(
    stats: Stats,
    resolver: Resolver,
    admission: Admission,
    measuring: Measuring,
    usage: UsageKeeper,
) -> Traffic:
    lookups, late = resolver.lookups
    records = measuring.counts()
    return Traffic(
        since=stats.started_at,
        decisions=stats.decisions,
        stale=stats.degraded["stale"],
        unavailable=stats.degraded["unavailable"],
        unchecked=stats.degraded["unchecked"],
        lookups=lookups,
        lookups_over_budget=late,
        in_flight=admission.in_flight,
        max_in_flight=admission.limit,
        shed=admission.shed,
        exposures_written=records[EXPOSURE, "written"],
        exposures_dropped=records[EXPOSURE, "dropped"],
        exposures_failed=records[EXPOSURE, "failed"],
        outcomes_written=records[OUTCOME, "written"],
        outcomes_dropped=records[OUTCOME, "dropped"],
        outcomes_failed=records[OUTCOME, "failed"],
        usage_writes_failed=usage.failed,
    )


def combined_segments(own: SegmentsReport, others: Sequence[SegmentsReport]) -> SegmentsReport:
    """`own`'s segments (the rules this worker serves), with every worker's counts for each
    added up, by segment id."""
    reports = [own, *others]
    usage: defaultdict[str, list[SegmentUsage]] = defaultdict(list)
    held: defaultdict[str, list[SuppressionUsage]] = defaultdict(list)
    for report in reports:
        for counted in report.segments:
            usage[counted.id].append(counted)
        for rule in report.suppressions:
            held[rule.id].append(rule)
    segments = tuple(
        msgspec.structs.replace(
            segment,
            wins=sum(u.wins for u in usage[segment.id]),
            errors=sum(u.errors for u in usage[segment.id]),
            last_matched=max(
                (u.last_matched for u in usage[segment.id] if u.last_matched), default=None
            ),
        )
        for segment in own.segments
    )
    suppressions = tuple(
        msgspec.structs.replace(
            rule,
            hits=sum(s.hits for s in held[rule.id]),
            errors=sum(s.errors for s in held[rule.id]),
        )
        for rule in own.suppressions
    )
    return SegmentsReport(
        since=min(r.since for r in reports),
        decisions=sum(r.decisions for r in reports),
        segments=segments,
        suppressions=suppressions,
        workers=len(reports),
    )


def combined_traffic(reports: Sequence[Traffic]) -> Traffic:
    """Every worker's traffic added up."""
    counts = {
        name: sum(getattr(r, name) for r in reports)
        for name in Traffic.__struct_fields__
        if name not in ("since", "workers")
    }
    return Traffic(since=min(r.since for r in reports), workers=len(reports), **counts)


def governed(report: SegmentsReport, snapshot: Snapshot, idle_days: int) -> Governance:
    """`report` with each segment's usage over every run, as the usage file has it at
    `snapshot.at`; a segment with no match (or sighting) since `idle_days` before is idle."""
    horizon = snapshot.at - timedelta(days=idle_days)
    segments = []
    for segment in report.segments:
        kept = snapshot.usage.get(segment.id) if snapshot.usage is not None else None
        fields = msgspec.structs.asdict(segment)
        if kept is None:
            segments.append(GovernedSegment(**fields))
            continue
        # a worker whose write was late may have matched since
        last = max((t for t in (kept.last_matched, segment.last_matched) if t), default=None)
        segments.append(
            GovernedSegment(
                **fields,
                wins_total=kept.wins,
                last_matched_ever=last,
                first_seen=kept.first_seen,
                idle=(last or kept.first_seen) <= horizon,
            )
        )
    return Governance(
        **{**msgspec.structs.asdict(report), "segments": tuple(segments)},
        idle_days=idle_days,
        durable=snapshot.usage is not None,
        durable_error=snapshot.problem,
    )
