"""The lift report as data: what `decider report --format json` prints, and what the table
and the HTML page are drawn from; `msgspec.json.schema(Report)` is its JSON Schema.

Rates, lifts and their interval bounds are fractions (0.012 is 1.2%, or 1.2 points of
absolute lift); relative lifts too (0.25 is +25%).
"""

from __future__ import annotations

from typing import Literal

import msgspec

VerdictKind = Literal["keep", "not_actionable", "too_small"]


class Interval(msgspec.Struct, frozen=True):
    """An estimate and its 95% confidence interval."""

    estimate: float
    low: float
    high: float


class Arm(msgspec.Struct, frozen=True):
    """One arm of a segment: units counted in it (by their first exposure), how many
    converted at or after it, and the variants it was served."""

    arm: str  # "holdout", "control", or a treatment variant's id
    units: int
    converted: int
    rate: float
    variants: list[str]


class Comparison(msgspec.Struct, frozen=True):
    """Treatment against the holdout: `arm` is "treatment" (every arm but the holdout,
    together) or one arm's id."""

    arm: str
    units: int
    converted: int
    rate: float
    lift: Interval  # absolute: rate minus the holdout's
    relative_lift: Interval | None  # rate over the holdout's, minus one; null with no conversions


class Verdict(msgspec.Struct, frozen=True):
    """What to do with the segment, and why. For too_small, `detect` is the absolute lift
    the units needed are counted for, and `more_*` how many more units each side needs, at the
    current split."""

    kind: VerdictKind
    reason: str
    detect: float | None = None
    more_holdout: int | None = None
    more_treatment: int | None = None


class SubGroup(msgspec.Struct, frozen=True):
    """The segment's units whose first exposure had one value of the --by dimension."""

    value: str
    holdout: Arm
    treatment: Arm
    lift: Interval | None  # null when a side has no units
    tested: bool  # enough units on both sides (and some variance) to enter the test


class Split(msgspec.Struct, frozen=True):
    """Does the lift differ between the values of a context dimension? Cochran's Q over the
    tested sub-groups (for two, the z-test of the difference of their lifts, squared)."""

    dimension: str
    groups: list[SubGroup]
    q: float | None  # null with fewer than two tested sub-groups
    p_value: float | None
    candidate: bool  # p_value below alpha: the segment is a split candidate


class Segment(msgspec.Struct, frozen=True):
    """One segment of one experiment at one placement."""

    experiment: str
    placement: str
    segment: str | None  # null: people who matched no segment
    unit_kind: str  # account, visitor (or both, comma-separated)
    arms: list[Arm]
    treatment: Comparison | None  # null without units on both sides
    by_arm: list[Comparison]  # each non-holdout arm against the holdout
    verdict: Verdict
    split: Split | None = None


class SegmentRef(msgspec.Struct, frozen=True):
    """A segment of an experiment (its placement said beside)."""

    experiment: str
    segment: str | None


class Merge(msgspec.Struct, frozen=True):
    """Two segments of one placement that serve the same variants and whose lifts cannot be
    told apart (the z-test of the difference of their lifts)."""

    placement: str
    first: SegmentRef
    second: SegmentRef
    variants: list[str]
    difference: Interval  # first's lift minus second's
    p_value: float


class Inputs(msgspec.Struct, frozen=True):
    """What was read, and what was left out of the counts and why."""

    exposure_files: int
    outcome_files: int
    exposures: int
    without_experiment: int  # decisions logged with no experiment
    without_unit: int  # no unit hash or arm: counted by nothing
    units: int
    units_in_two_arms: int  # the rules changed mid-test: counted in their first arm
    units_in_two_segments: int  # counted in the segment of their first exposure
    outcome_events: int  # distinct events of the outcome asked for
    duplicate_events: int  # resends of an event id already read, ignored


class Method(msgspec.Struct, frozen=True):
    """How the numbers were computed, in words, and the thresholds used."""

    lift: str
    relative_lift: str
    units_needed: str
    merge: str
    split: str
    alpha: float
    power: float
    min_lift: float | None  # the smallest relative lift worth detecting, if one was given
    min_units: dict[str, int]  # per unit kind: fewer units in a segment are too few to test
    min_group: int  # units per side for a sub-group to enter the split test


class Report(msgspec.Struct, frozen=True):
    """The lift report: one outcome, every segment of every experiment found."""

    outcome: str
    by: str | None
    inputs: Inputs
    method: Method
    segments: list[Segment]
    merges: list[Merge]
