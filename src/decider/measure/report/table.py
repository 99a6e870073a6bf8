"""The report in words and aligned columns, for a terminal; its rows are the HTML page's too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from decider.errors import printable
from decider.measure.report.schema import Comparison, Interval, Report, Segment, Split, SubGroup

VERDICTS = {"keep": "keep", "not_actionable": "not actionable", "too_small": "too small to tell"}
HEADER = (
    "placement",
    "segment",
    "experiment",
    "arm",
    "units",
    "converted",
    "rate",
    "lift, points [95% CI]",
    "relative lift [95% CI]",
    "verdict",
)
NUMERIC = {4, 5, 6}  # right-aligned columns
NO_SEGMENT = "(no segment)"


class Row(NamedTuple):
    cells: tuple[str, ...]
    verdict: str | None  # the verdict's kind, on the row that carries it


def percent(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def points(lift: Interval) -> str:
    """An absolute lift in percentage points, with its interval."""
    return f"{lift.estimate * 100:+.2f} [{lift.low * 100:+.2f}, {lift.high * 100:+.2f}]"


def relative(lift: Interval | None) -> str:
    if lift is None:
        return "n/a"
    return f"{lift.estimate:+.0%} [{lift.low:+.0%}, {lift.high:+.0%}]"


def name(segment: Segment) -> str:
    return segment.segment or NO_SEGMENT


def segment_rows(report: Report) -> list[Row]:
    """Per segment: its holdout, each other arm against it, and (with two arms or more
    besides) the treatment as a whole; the segment's last row carries the verdict."""
    rows = []
    for segment in report.segments:
        compared = {c.arm: c for c in segment.by_arm}
        lines = [
            _cells(arm.arm, arm.units, arm.converted, arm.rate, compared.get(arm.arm))
            for arm in segment.arms
        ]
        if segment.treatment is not None and len(segment.by_arm) > 1:
            whole = segment.treatment
            lines.append(_cells(whole.arm, whole.units, whole.converted, whole.rate, whole))
        for index, line in enumerate(lines):
            lead = (
                (segment.placement, name(segment), segment.experiment)
                if index == 0
                else ("", "", "")
            )
            last = index == len(lines) - 1
            verdict = VERDICTS[segment.verdict.kind] if last else ""
            rows.append(Row((*lead, *line, verdict), segment.verdict.kind if last else None))
    return rows


def _cells(
    arm: str, units: int, converted: int, rate: float, compared: Comparison | None
) -> tuple[str, ...]:
    lift = (points(compared.lift), relative(compared.relative_lift)) if compared else ("", "")
    return (arm, f"{units:,}", f"{converted:,}", percent(rate), *lift)


def aligned(rows: Sequence[Sequence[str]], numeric: set[int], indent: str = "") -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        yield (indent + "  ".join(cells)).rstrip()


def group_cells(group: SubGroup) -> tuple[str, ...]:
    lift = points(group.lift) if group.lift else ""
    return (
        group.value,
        f"{group.holdout.units:,}",
        percent(group.holdout.rate),
        f"{group.treatment.units:,}",
        percent(group.treatment.rate),
        lift,
        "" if group.tested else "too few units",
    )


GROUP_HEADER = ("", "holdout", "rate", "treatment", "rate", "lift, points [95% CI]", "")


def split_candidates(report: Report) -> list[tuple[Segment, Split]]:
    return [(s, s.split) for s in report.segments if s.split is not None and s.split.candidate]


def heterogeneity(split: Split) -> str:
    """Cochran's Q and its p-value, in words."""
    if split.q is None or split.p_value is None:
        return "fewer than two sub-groups with enough units to test"
    return f"Q {split.q:.1f}, p {split.p_value:.4f}"


def summary(report: Report) -> str:
    inputs = report.inputs
    experiments = len({s.experiment for s in report.segments})
    return (
        f'Lift report: outcome "{report.outcome}", {inputs.units:,} units in '
        f"{experiments} experiment{'s' * (experiments != 1)}, from {inputs.exposures:,} "
        f"exposures and {inputs.outcome_events:,} outcome events"
    )


def render_text(report: Report) -> str:
    """The whole report as plain text: the table, then verdicts, candidates and notes."""
    lines = [summary(report), ""]
    if report.segments:
        lines += aligned([HEADER, *(row.cells for row in segment_rows(report))], NUMERIC)
    else:
        lines.append("No exposure in an experiment: nothing to compare.")
    lines += ["", "Verdicts"]
    lines += [
        f"  {name(s)} at {s.placement} ({s.experiment}): {VERDICTS[s.verdict.kind]}: "
        f"{s.verdict.reason}"
        for s in report.segments
    ]
    lines += ["", "Merge candidates (same variants, lifts that cannot be told apart)"]
    lines += [
        f"  {m.first.segment or NO_SEGMENT} and {m.second.segment or NO_SEGMENT} at "
        f"{m.placement}: difference of lifts {points(m.difference)} points, p {m.p_value:.2f}"
        for m in report.merges
    ] or ["  none"]
    if report.by:
        lines += ["", f"Split candidates by {report.by} (lifts that differ between its values)"]
        candidates = split_candidates(report)
        for segment, split in candidates:
            where = f"{name(segment)} at {segment.placement} ({segment.experiment})"
            lines.append(f"  {where}: {heterogeneity(split)}")
            table = [GROUP_HEADER, *(group_cells(g) for g in split.groups)]
            lines += aligned(table, {1, 2, 3, 4}, indent="    ")
        if not candidates:
            lines.append("  none")
    lines += ["", *notes(report)]
    return "\n".join(map(printable, lines)) + "\n"


def notes(report: Report) -> list[str]:
    """What was left out or counted specially, and how the numbers were computed."""
    inputs, method = report.inputs, report.method
    lines = [
        "Notes",
        f"  {inputs.units_in_two_arms:,} units were exposed in two arms (rules changed "
        "mid-test): each is counted in its first arm",
        f"  {inputs.units_in_two_segments:,} units were exposed in two segments: each is "
        "counted in the segment of its first exposure",
        f"  {inputs.without_experiment:,} exposures had no experiment and "
        f"{inputs.without_unit:,} no unit: not counted",
        f"  {inputs.duplicate_events:,} outcome records repeated an event id: counted once",
        "  a unit converted if an outcome joined to it (by one of its decisions, or by its "
        "hash) came at or after its first exposure",
        f"  lift: {method.lift}",
        f"  relative lift: {method.relative_lift}",
        f"  units needed: {method.units_needed}; alpha {method.alpha}, power {method.power}"
        + (f", minimum lift {method.min_lift:+.0%}" if method.min_lift else ""),
        "  fewest units to test a segment: "
        + ", ".join(f"{count:,} {kind}s" for kind, count in method.min_units.items()),
    ]
    return lines
