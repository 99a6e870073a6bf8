"""The lift of each segment with its interval, drawn as an inline SVG (a forest plot):
people would rather look than read, and the page must stand alone, with nothing to fetch.
Hand-written: a few lines and circles, crisper and lighter than a plotting library's."""

from __future__ import annotations

import math
from html import escape
from typing import NamedTuple

from decider.errors import printable
from decider.measure.report.schema import Interval, Report
from decider.measure.report.table import VERDICTS, name, points

WIDTH, LABELS, RIGHT, ROW, TOP = 760, 300, 20, 26, 34


def shown(text: str) -> str:
    """`text` for HTML and SVG: escaped, and with control characters (which XML may not
    hold, and a record's value can) written as their escapes."""
    return escape(printable(text))


COLORS = {
    "keep": "#1a7f37",
    "not_actionable": "#6e7781",
    "too_small": "#bf8700",
    "group": "#0969da",
}
LEGEND = {**VERDICTS, "group": "a sub-group"}


class Line(NamedTuple):
    label: str
    lift: Interval
    kind: str  # a verdict's kind, or "group" for a sub-group of a split
    indent: bool


def lines(report: Report) -> list[Line]:
    """A row per segment with a comparison, then its sub-groups' rows under it."""
    found = []
    for segment in report.segments:
        if segment.treatment is None:
            continue
        label = f"{segment.placement} · {name(segment)}"
        found.append(Line(label, segment.treatment.lift, segment.verdict.kind, indent=False))
        for group in segment.split.groups if segment.split else []:
            if group.lift is not None:
                found.append(Line(f"{report.by} = {group.value}", group.lift, "group", indent=True))
    return found


def svg(report: Report) -> str:
    """The chart, or an empty string with nothing to draw."""
    rows = lines(report)
    if not rows:
        return ""
    low = min(0.0, *(r.lift.low for r in rows))
    high = max(0.0, *(r.lift.high for r in rows))
    pad = (high - low) * 0.05 or 0.01
    low, high = low - pad, high + pad
    span = WIDTH - LABELS - RIGHT

    def x(value: float) -> float:
        return round(LABELS + (value - low) / (high - low) * span, 1)

    height = TOP + ROW * len(rows) + 64
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" font-family="sans-serif" font-size="12">',
        "<title>Absolute lift over the holdout, in points, with 95% intervals</title>",
    ]
    bottom = TOP + ROW * len(rows)
    for tick in _ticks(low, high):
        parts.append(
            f'<line x1="{x(tick)}" y1="{TOP - 6}" x2="{x(tick)}" y2="{bottom}" stroke="#d0d7de"/>'
            f'<text x="{x(tick)}" y="{TOP - 12}" text-anchor="middle" fill="#57606a">'
            f"{tick * 100:+g}</text>".replace(">+0<", ">0<")
        )
    parts.append(
        f'<line x1="{x(0)}" y1="{TOP - 6}" x2="{x(0)}" y2="{bottom}" stroke="#24292f" '
        'stroke-dasharray="4 3"/>'
    )
    for index, row in enumerate(rows):
        y = TOP + ROW * index + ROW / 2
        color = COLORS[row.kind]
        weight = ' font-weight="bold"' if not row.indent else ""
        parts.append(
            f"<g><title>{shown(row.label)}: {shown(points(row.lift))} points</title>"
            f'<text x="{16 if row.indent else 4}" y="{y + 4}"{weight}>{shown(row.label)}</text>'
            f'<line x1="{x(row.lift.low)}" y1="{y}" x2="{x(row.lift.high)}" y2="{y}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<circle cx="{x(row.lift.estimate)}" cy="{y}" r="{3 if row.indent else 5}" '
            f'fill="{color}"/></g>'
        )
    parts.append(
        f'<text x="{LABELS + span / 2}" y="{bottom + 28}" text-anchor="middle" fill="#57606a">'
        "lift over the holdout, percentage points (95% interval)</text>"
    )
    at = LABELS
    kinds = {row.kind for row in rows}
    for kind, label in LEGEND.items():
        if kind == "group" and kind not in kinds:  # no split asked for, or none to draw
            continue
        parts.append(
            f'<circle cx="{at}" cy="{bottom + 50}" r="5" fill="{COLORS[kind]}"/>'
            f'<text x="{at + 9}" y="{bottom + 54}" fill="#57606a">{label}</text>'
        )
        at += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def _ticks(low: float, high: float) -> list[float]:
    """Round values, five or so, across [low, high]."""
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step)
    return [round(n * step, 10) for n in range(first, math.floor(high / step) + 1)]
