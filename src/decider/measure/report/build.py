"""The report from the files: read outcomes (few), then exposures (many), count, compare,
judge."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from decider.errors import DeciderError
from decider.measure.report import statistics
from decider.measure.report.aggregation import HOLDOUT, Cell, Count, Tally, index_outcomes, tally
from decider.measure.report.reading import ExposureView, OutcomeView, read_records
from decider.measure.report.schema import (
    Arm,
    Comparison,
    Inputs,
    Interval,
    Method,
    Report,
    Segment,
    SegmentRef,
)
from decider.measure.report.verdicts import (
    GUIDANCE,
    Candidate,
    Side,
    Thresholds,
    compare,
    judge,
    merges,
    split,
)

CONTEXT = "context."
# how each number is computed, in words, for the report's readers
METHOD = {
    "lift": "treatment rate minus holdout rate; 95% interval: Newcombe's hybrid score "
    "interval (from the two Wilson intervals)",
    "relative_lift": "treatment rate over holdout rate, minus one; 95% interval: the log "
    "method (Katz), undefined while a side has no conversions",
    "units_needed": "normal approximation for two proportions, two-sided, at the current "
    "split of units between holdout and treatment, for the larger of the observed lift and "
    "the minimum lift asked for",
    "merge": "same placement, same variants served, both with enough units; the z-test of "
    "the difference of their lifts (Wald errors) does not reject at alpha",
    "split": "Cochran's Q over the sub-groups with enough units a side (for two: the z-test "
    "of the difference of their lifts, squared) rejects at alpha",
}


class Query(NamedTuple):
    """What to report on."""

    exposures: Sequence[Path]  # files
    outcomes: Sequence[Path]
    outcome: str  # the outcome name that counts as converted
    by: str | None = None  # "context.device": sub-groups for the split test
    limits: Thresholds = Thresholds()


def build_report(query: Query) -> Report:
    """Read, count, compare and judge; a RecordFileError names a bad line."""
    key = query.by.removeprefix(CONTEXT) if query.by else None
    collecting = gc.isenabled()
    gc.disable()  # millions of objects, no cycles: the collector would only walk them, often
    try:
        outcomes = index_outcomes(read_records(query.outcomes, OutcomeView), query.outcome)
        found = tally(read_records(query.exposures, ExposureView), outcomes, key)
    finally:
        if collecting:
            gc.enable()
    if not outcomes.events:  # every segment would read "no lift", which nobody measured
        names = ", ".join(sorted(outcomes.names)[:20]) or "none"
        raise DeciderError(
            f"--outcome {query.outcome}: no outcome of that name in the outcome files "
            f"(names there: {names})"
        )
    limits = query.limits
    segments, candidates = [], []
    for cell in sorted(found.counts, key=_order):
        segment, lift = _segment(cell, found, query.by, limits)
        segments.append(segment)
        if lift is not None and segment.verdict.kind != "too_small":
            treated = {v for arm in segment.arms if arm.arm != HOLDOUT for v in arm.variants}
            ref = SegmentRef(segment.experiment, segment.segment)
            candidates.append(Candidate(ref, segment.placement, frozenset(treated), lift))
    inputs = Inputs(
        exposure_files=len(query.exposures),
        outcome_files=len(query.outcomes),
        exposures=found.exposures,
        without_experiment=found.without_experiment,
        without_unit=found.without_unit,
        units=found.units,
        units_in_two_arms=found.units_in_two_arms,
        units_in_two_segments=found.units_in_two_segments,
        outcome_events=outcomes.events,
        duplicate_events=outcomes.duplicates,
    )
    method = Method(
        **METHOD,
        alpha=statistics.ALPHA,
        power=statistics.POWER,
        min_lift=limits.min_lift,
        min_units={kind: limits.floor({kind}) for kind in GUIDANCE},
        min_group=limits.min_group,
    )
    return Report(query.outcome, query.by, inputs, method, segments, merges(candidates))


def _order(cell: Cell) -> tuple[str, str, str]:
    experiment, placement, segment = cell
    return placement, experiment, segment or ""


def _segment(
    cell: Cell, found: Tally, by: str | None, limits: Thresholds
) -> tuple[Segment, statistics.Lift | None]:
    experiment, placement, name = cell
    counts = found.counts[cell]
    variants = found.variants.get(cell, {})
    arms = [
        Arm(arm, units, converted, converted / units, sorted(variants.get(arm, ())))
        for arm, (units, converted) in sorted(counts.items(), key=_arm_order)
    ]
    holdout = _side(counts.get(HOLDOUT, [0, 0]))
    treated = _pooled(counts)
    lift = compare(holdout, treated)
    treatment = _comparison("treatment", treated, lift)
    by_arm = [
        _comparison(arm, _side(count), compare(holdout, _side(count)))
        for arm, count in sorted(counts.items(), key=_arm_order)
        if arm != HOLDOUT
    ]
    kinds = found.kinds.get(cell, set())
    floor = limits.floor(kinds)
    kind = "accounts" if kinds == {"account"} else "visitors" if kinds == {"visitor"} else "units"
    verdict = judge(holdout, treated, lift, floor=floor, kind=kind, limits=limits)
    groups = found.groups.get(cell)
    dimension = None
    if by and groups:
        sides = {
            value: (_side(of.get(HOLDOUT, [0, 0])), _pooled(of)) for value, of in groups.items()
        }
        dimension = split(by, sides, limits.min_group)
    segment = Segment(
        experiment,
        placement,
        name,
        ",".join(sorted(kinds)),
        arms,
        treatment,
        [c for c in by_arm if c is not None],
        verdict,
        dimension,
    )
    return segment, lift


def _arm_order(item: tuple[str, Count]) -> tuple[int, str]:
    arm = item[0]
    return (0 if arm == HOLDOUT else 1 if arm == "control" else 2), arm


def _side(count: Count) -> Side:
    return Side(count[0], count[1])


def _pooled(counts: dict[str, Count]) -> Side:
    """Every arm but the holdout, together."""
    units = sum(count[0] for arm, count in counts.items() if arm != HOLDOUT)
    converted = sum(count[1] for arm, count in counts.items() if arm != HOLDOUT)
    return Side(units, converted)


def _comparison(arm: str, side: Side, lift: statistics.Lift | None) -> Comparison | None:
    if lift is None:
        return None
    return Comparison(
        arm,
        side.units,
        side.converted,
        side.converted / side.units,
        Interval(*lift.absolute),
        Interval(*lift.relative) if lift.relative else None,
    )
