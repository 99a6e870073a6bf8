"""From records to counts: which units each experiment exposed, in which arm and segment,
and which of them converted afterwards.

A unit is counted once per experiment and placement, where its first exposure put it (its
first arm and segment: what it was assigned, whatever the rules did later), and converted when
an outcome of the name asked for, joined by one of its decisions' ids or by its keyed hash,
happened at or after that first exposure. Plain dicts keyed by small tuples: ten million
exposures pass through here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from decider.measure.records import event_key
from decider.measure.report.reading import ExposureView, OutcomeView

HOLDOUT = "holdout"
Cell = tuple[str, str, str | None]  # experiment, placement, segment
UnitKey = tuple[str, str, str]  # experiment, placement, unit hash
Count = list[int]  # [units, converted]


@dataclass
class Outcomes:
    """The latest time an outcome of the name asked for happened, per join key."""

    name: str
    by_decision: dict[str, datetime] = field(default_factory=dict)
    by_account: dict[str, datetime] = field(default_factory=dict)
    by_visitor: dict[str, datetime] = field(default_factory=dict)
    events: int = 0  # distinct events of that name
    duplicates: int = 0  # records whose event id came before (resends), any name
    names: set[str] = field(default_factory=set)  # every name read, to say what there is


def index_outcomes(chunks: Iterable[list[OutcomeView]], name: str) -> Outcomes:
    """Outcomes of `name`, each event once (its id within its name; the first record of it
    read counts)."""
    found = Outcomes(name)
    seen: set[str] = set()
    for chunk in chunks:
        for outcome in chunk:
            event = event_key(outcome.name, outcome.event_id)
            if event in seen:
                found.duplicates += 1
                continue
            seen.add(event)
            if outcome.name != name:
                found.names.add(outcome.name)
                continue
            found.events += 1
            at = outcome.at
            for key, latest in (
                (outcome.decision_id, found.by_decision),
                (outcome.account, found.by_account),
                (outcome.visitor, found.by_visitor),
            ):
                if key is not None and (key not in latest or latest[key] < at):
                    latest[key] = at
    return found


class _First:
    """A unit's first exposure in an experiment, and whether later ones disagreed."""

    __slots__ = (
        "arm",
        "arms_differ",
        "at",
        "kind",
        "segment",
        "segments_differ",
        "value",
        "variant",
    )

    def __init__(self, exposure: ExposureView, value: str | None) -> None:
        self.at = exposure.at
        self.arm: str = exposure.arm or ""
        self.segment = exposure.segment
        self.variant = exposure.variant
        self.value = value
        self.kind = exposure.unit_kind
        self.arms_differ = self.segments_differ = False


@dataclass
class Tally:
    """What the exposures and outcomes add up to."""

    # per cell, per arm: [units, converted]
    counts: dict[Cell, dict[str, Count]] = field(default_factory=dict)
    # per cell, per value of the --by dimension, per arm: [units, converted]
    groups: dict[Cell, dict[str, dict[str, Count]]] = field(default_factory=dict)
    variants: dict[Cell, dict[str, set[str]]] = field(default_factory=dict)  # served, per arm
    kinds: dict[Cell, set[str]] = field(default_factory=dict)  # unit kinds: account, visitor
    exposures: int = 0
    without_experiment: int = 0  # decisions logged with no experiment (DECIDER_EXPOSURE_ALL)
    without_unit: int = 0  # in an experiment, but no unit or arm to count them by
    units: int = 0
    units_in_two_arms: int = 0  # counted in their first arm
    units_in_two_segments: int = 0  # counted in their first segment


NO_VALUE = "(none)"  # a unit whose first exposure's context lacks the --by key


def tally(chunks: Iterable[list[ExposureView]], outcomes: Outcomes, by: str | None = None) -> Tally:
    """Count units and conversions per cell and arm (and per value of context `by`)."""
    found = Tally()
    first: dict[UnitKey, _First] = {}
    joined: dict[UnitKey, datetime] = {}  # the latest outcome joined by a decision id
    # the variants each arm served: units' first exposures, and those that differ from them
    served: set[tuple[str, str, str | None, str, str]] = set()
    wanted = outcomes.by_decision
    known = first.get
    for chunk in chunks:
        found.exposures += len(chunk)
        for exposure in chunk:
            experiment, unit, arm = exposure.experiment, exposure.unit, exposure.arm
            if experiment is None:
                found.without_experiment += 1
                continue
            if unit is None or arm is None:
                found.without_unit += 1
                continue
            key = (experiment, exposure.placement, unit)
            seen = known(key)
            if seen is None:
                first[key] = _First(exposure, exposure.context.get(by) if by else None)
            elif (
                arm != seen.arm
                or exposure.segment != seen.segment
                or exposure.variant != seen.variant
                or exposure.at < seen.at
            ):
                _differs(seen, exposure, by, served)
            if wanted:
                at = wanted.get(exposure.decision_id)
                if at is not None and (key not in joined or joined[key] < at):
                    joined[key] = at
    _count(found, first, joined, outcomes, by)
    served.update((e, p, seen.segment, seen.arm, seen.variant) for (e, p, _), seen in first.items())
    for experiment, placement, segment, arm, variant in served:
        cell = (experiment, placement, segment)
        found.variants.setdefault(cell, {}).setdefault(arm, set()).add(variant)
    return found


def _differs(
    seen: _First,
    exposure: ExposureView,
    by: str | None,
    served: set[tuple[str, str, str | None, str, str]],
) -> None:
    """A unit seen again, otherwise than first (or earlier than first seen so far)."""
    seen.arms_differ |= exposure.arm != seen.arm
    seen.segments_differ |= exposure.segment != seen.segment
    placement, experiment, arm = exposure.placement, exposure.experiment or "", exposure.arm or ""
    served.add((experiment, placement, exposure.segment, arm, exposure.variant))
    if exposure.at < seen.at:
        served.add((experiment, placement, seen.segment, seen.arm, seen.variant))
        seen.at, seen.arm, seen.segment = exposure.at, exposure.arm or "", exposure.segment
        seen.variant = exposure.variant
        seen.value = exposure.context.get(by) if by else None


def _count(
    found: Tally,
    first: dict[UnitKey, _First],
    joined: dict[UnitKey, datetime],
    outcomes: Outcomes,
    by: str | None,
) -> None:
    accounts, visitors = outcomes.by_account, outcomes.by_visitor
    for key, seen in first.items():
        experiment, placement, unit = key
        at = seen.at
        latest = joined.get(key)
        by_identity = (
            accounts.get(unit)
            if seen.kind == "account"
            else visitors.get(unit)
            if seen.kind == "visitor"
            else None
        )
        converted = (latest is not None and latest >= at) or (
            by_identity is not None and by_identity >= at
        )
        cell = (experiment, placement, seen.segment)
        arms = found.counts.get(cell)
        if arms is None:
            arms = found.counts[cell] = {}
            found.kinds[cell] = set()
        count = arms.get(seen.arm)
        if count is None:
            count = arms[seen.arm] = [0, 0]
        count[0] += 1
        count[1] += converted
        if seen.kind:
            found.kinds[cell].add(seen.kind)
        if by:
            values = found.groups.setdefault(cell, {})
            group = values.setdefault(seen.value or NO_VALUE, {}).setdefault(seen.arm, [0, 0])
            group[0] += 1
            group[1] += converted
        found.units_in_two_arms += seen.arms_differ
        found.units_in_two_segments += seen.segments_differ
    found.units = len(first)
