"""Counters a running service keeps: per segment wins, evaluation errors and last match; per
suppression rule how often it held and how often it held only because it failed to evaluate;
and how often the profile source let a decision down (stale data served, a profile
unavailable, an id left unchecked)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import msgspec

from decider.engine import Evaluated
from decider.experiments import HOLDOUT
from decider.reasons import ReasonCode

_DEGRADED = {
    ReasonCode.IDENTITY_STALE: "stale",
    ReasonCode.IDENTITY_UNAVAILABLE: "unavailable",
    ReasonCode.IDENTITY_UNCHECKED: "unchecked",
}


class SegmentStats(msgspec.Struct):
    wins: int = 0
    errors: int = 0
    last_matched: datetime | None = None


class SuppressionStats(msgspec.Struct):
    hits: int = 0
    errors: int = 0


class Stats:
    """Mutated only on the event loop thread, so plain counters suffice."""

    def __init__(self, started_at: datetime) -> None:
        self.started_at = started_at
        self.decisions = 0
        self.segments: dict[str, SegmentStats] = {}
        self.suppressions: dict[str, SuppressionStats] = {}
        # (placement, channel, segment or "", personalized / default / holdout / suppressed)
        # -> decisions
        self.decided: Counter[tuple[str, str, str, str]] = Counter()
        # decisions made on stale data, without a profile, with an id left unchecked
        self.degraded: dict[str, int] = dict.fromkeys(_DEGRADED.values(), 0)

    def record(self, evaluated: Evaluated, now: datetime) -> None:
        self.decisions += 1
        decision = evaluated.decision
        shown = (
            "suppressed"
            if decision.suppressed
            else "holdout"
            if decision.arm == HOLDOUT
            else "personalized"
            if decision.personalized
            else "default"
        )
        self.decided[decision.placement, decision.channel, decision.segment or "", shown] += 1
        for reason in decision.reasons:
            kind = _DEGRADED.get(reason.code)
            if kind is not None:
                self.degraded[kind] += 1
        for outcome in evaluated.outcomes:
            if outcome.outcome == "error":
                self._segment(outcome.segment).errors += 1
        suppressed = evaluated.suppression
        if suppressed is not None and suppressed.rule is not None:
            counted = self.suppressions.setdefault(suppressed.rule, SuppressionStats())
            counted.hits += 1
            counted.errors += suppressed.error
        segment = evaluated.decision.segment
        if segment is not None:
            stats = self._segment(segment)
            stats.wins += 1
            stats.last_matched = now

    def _segment(self, segment: str) -> SegmentStats:
        stats = self.segments.get(segment)
        if stats is None:
            stats = self.segments[segment] = SegmentStats()
        return stats
