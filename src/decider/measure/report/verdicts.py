"""What to do with each segment, as the measurement cycle asks: keep it (its lift is clear),
drop the tailoring (no lift to measure, with enough units to have seen one), wait (too few
units to tell, and how many more), merge two that behave the same, split one whose lift
differs between the values of a dimension.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import NamedTuple

from decider.measure.report import statistics
from decider.measure.report.aggregation import HOLDOUT
from decider.measure.report.schema import (
    Arm,
    Interval,
    Merge,
    SegmentRef,
    Split,
    SubGroup,
    Verdict,
)
from decider.measure.report.statistics import ALPHA, POWER, Lift

# the guidance our users work from: testing a 1:many experience needs roughly 1,000+ accounts
# or 5,000+ contacts in the segment
GUIDANCE = {"account": 1000, "visitor": 5000}


class Side(NamedTuple):
    units: int
    converted: int


class Thresholds(NamedTuple):
    min_lift: float | None = None  # relative: 0.1 asks to detect +10% over the holdout rate
    min_units: int | None = None  # per segment, whatever the unit; default GUIDANCE
    min_group: int = 100  # units per side for a sub-group to enter the split test

    def floor(self, kinds: set[str]) -> int:
        """Units a segment needs before any verdict but keep: the largest of its kinds'."""
        if self.min_units is not None:
            return self.min_units
        return max((GUIDANCE.get(kind, GUIDANCE["visitor"]) for kind in kinds), default=0)


def judge(
    holdout: Side,
    treated: Side,
    found: Lift | None,
    *,
    floor: int,
    kind: str,
    limits: Thresholds,
) -> Verdict:
    """The verdict on one segment: its treatment (every arm but the holdout) against its
    holdout. `kind` names its units in words (accounts, visitors)."""
    if found is None:
        empty = "the holdout" if not holdout.units else "treatment"
        return Verdict("too_small", f"no units in {empty}: nothing to compare")
    absolute = found.absolute
    total = holdout.units + treated.units
    if absolute.low > 0:
        reason = "the lift's interval is above zero"
        if total < floor:
            reason += f"; fewer than the {floor:,} {kind} a test needs: confirm next cycle"
        return Verdict("keep", reason)
    if absolute.high < 0:
        return Verdict("not_actionable", "the treatment converts less: the interval is below zero")
    base = holdout.converted / holdout.units
    detect, why = _lift_to_detect(absolute.estimate, base, limits.min_lift)
    needed = (0, 0)
    if detect is not None:
        needed = statistics.units_needed(detect, base, holdout.units / treated.units)
    scale = max(needed[0] / treated.units, needed[1] / holdout.units, floor / total)
    if scale <= 1:
        if detect is None:
            reason = f"no lift seen, with the {floor:,} {kind} a test needs"
        else:
            reason = (
                f"the interval includes zero, with the units to detect a lift of "
                f"{_points(detect)} ({why}) at alpha {ALPHA} with power {POWER}"
            )
        return Verdict("not_actionable", reason)
    more_holdout = math.ceil(holdout.units * scale) - holdout.units
    more_treatment = math.ceil(treated.units * scale) - treated.units
    reasons = []
    if detect is not None and max(needed[0] / treated.units, needed[1] / holdout.units) > 1:
        reasons.append(
            f"to detect {'the observed lift' if why == 'observed' else 'a lift'} of "
            f"{_points(detect)}{'' if why == 'observed' else f' ({why})'} at alpha {ALPHA} "
            f"with power {POWER}"
        )
    if total < floor:
        reasons.append(f"to reach the {floor:,} {kind} a test needs")
    return Verdict(
        "too_small",
        f"needs {more_holdout:,} more units in the holdout and {more_treatment:,} more in "
        f"treatment (at the current split): {', and '.join(reasons)}",
        detect,
        more_holdout,
        more_treatment,
    )


def _lift_to_detect(
    observed: float, base: float, min_lift: float | None
) -> tuple[float | None, str]:
    """The larger of the observed lift and the smallest one worth detecting (absolute), if
    either is positive (and within reach of a rate of 1), and which it is."""
    wanted = min(min_lift * base, 1 - base) if min_lift else 0.0
    if wanted > observed and wanted > 0:
        return wanted, f"the minimum, {min_lift:+.0%}"
    if observed > 0:
        return observed, "observed"
    return None, ""


def _points(lift: float | None) -> str:
    return f"{(lift or 0) * 100:+.2f} points"


class Candidate(NamedTuple):
    """A segment as the merge test needs it."""

    ref: SegmentRef
    placement: str
    variants: frozenset[str]  # served to its treatment
    lift: Lift


def merges(candidates: list[Candidate]) -> list[Merge]:
    """Pairs of segments of one placement, serving the same variants, whose lifts cannot be
    told apart at ALPHA."""
    found = []
    for first, second in combinations(candidates, 2):
        if first.placement != second.placement or first.variants != second.variants:
            continue
        bounds, test = statistics.difference(first.lift, second.lift)
        if test.p_value >= ALPHA:
            found.append(
                Merge(
                    first.placement,
                    first.ref,
                    second.ref,
                    sorted(first.variants),
                    Interval(*bounds),
                    test.p_value,
                )
            )
    return found


def split(dimension: str, groups: dict[str, tuple[Side, Side]], min_group: int) -> Split:
    """Sub-groups of a segment by the values of `dimension` (holdout, treatment each), and
    whether their lifts differ (Cochran's Q at ALPHA over those with min_group units a side)."""
    rows, tested = [], []
    for value, (holdout, treated) in sorted(groups.items()):
        found = compare(holdout, treated)
        enough = (
            found is not None and min(holdout.units, treated.units) >= min_group and found.se > 0
        )
        if found is not None and enough:
            tested.append(found)
        rows.append(
            SubGroup(
                value,
                _arm(HOLDOUT, holdout),
                _arm("treatment", treated),
                Interval(*found.absolute) if found else None,
                enough,
            )
        )
    if len(tested) < 2:
        return Split(dimension, rows, None, None, candidate=False)
    test = statistics.heterogeneity(tested)
    return Split(dimension, rows, test.statistic, test.p_value, candidate=test.p_value < ALPHA)


def compare(holdout: Side, treated: Side) -> Lift | None:
    """Treatment against the holdout; None while a side has no units."""
    if not holdout.units or not treated.units:
        return None
    return statistics.lift(treated.converted, treated.units, holdout.converted, holdout.units)


def _arm(name: str, side: Side) -> Arm:
    return Arm(
        name, side.units, side.converted, side.converted / side.units if side.units else 0.0, []
    )
