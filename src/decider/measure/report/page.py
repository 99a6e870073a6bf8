"""The report as one self-contained HTML page: inline style, an inline SVG chart, the tables
of the terminal report; nothing to fetch, so it can be mailed or archived as it is.
Well-formed XML too, so any parser reads it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from decider.measure.report import chart
from decider.measure.report.chart import shown
from decider.measure.report.schema import Report
from decider.measure.report.table import (
    GROUP_HEADER,
    HEADER,
    NO_SEGMENT,
    NUMERIC,
    VERDICTS,
    group_cells,
    heterogeneity,
    name,
    notes,
    points,
    segment_rows,
    split_candidates,
    summary,
)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #24292f; margin: 2em auto; max-width: 96em;
       padding: 0 1em; }
.wide { overflow-x: auto; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #d0d7de; text-align: left;
         white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.first td { border-top: 2px solid #8c959f; }
.keep { color: #1a7f37; font-weight: 600; } .not_actionable { color: #6e7781; }
.too_small { color: #9a6700; font-weight: 600; }
.notes { color: #57606a; }
"""


def render_html(report: Report) -> str:
    title = f"Lift report: {report.outcome}"
    body = [
        f"<h1>{shown(title)}</h1>",
        f"<p>{shown(summary(report).removeprefix('Lift report: '))}</p>",
        chart.svg(report),
        "<h2>Segments</h2>",
        _segments(report),
        "<h2>Verdicts</h2>",
        _list(
            f'<span class="{s.verdict.kind}">{VERDICTS[s.verdict.kind]}</span>: '
            f"{shown(name(s))} at {shown(s.placement)} ({shown(s.experiment)}): "
            f"{shown(s.verdict.reason)}"
            for s in report.segments
        ),
        "<h2>Merge candidates</h2>",
        _list(
            f"{shown(m.first.segment or NO_SEGMENT)} and {shown(m.second.segment or NO_SEGMENT)}"
            f" at {shown(m.placement)}: difference of lifts {shown(points(m.difference))} "
            f"points, p {m.p_value:.2f}"
            for m in report.merges
        ),
    ]
    if report.by:
        body.append(f"<h2>Split candidates by {shown(report.by)}</h2>")
        candidates = split_candidates(report)
        for segment, split in candidates:
            body.append(
                f"<p>{shown(name(segment))} at {shown(segment.placement)} "
                f"({shown(segment.experiment)}): {shown(heterogeneity(split))}</p>"
            )
            body.append(_grid(GROUP_HEADER, [group_cells(g) for g in split.groups], {1, 2, 3, 4}))
        if not candidates:
            body.append("<p>none</p>")
    body.append('<h2>Notes</h2><ul class="notes">')
    body += [f"<li>{shown(line.strip())}</li>" for line in notes(report)[1:]]
    body.append("</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{shown(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _segments(report: Report) -> str:
    rows = []
    for row in segment_rows(report):
        *counts, verdict = row.cells
        cells = [_cell(cell, "n" if i in NUMERIC else "") for i, cell in enumerate(counts)]
        cells.append(_cell(verdict, row.verdict or ""))
        first = ' class="first"' if row.cells[0] else ""  # a segment's first row
        rows.append(f"<tr{first}>{''.join(cells)}</tr>")
    return _table(HEADER, rows)


def _grid(header: Sequence[str], rows: list[tuple[str, ...]], numeric: set[int]) -> str:
    lines = [
        "<tr>" + "".join(_cell(c, "n" if i in numeric else "") for i, c in enumerate(row)) + "</tr>"
        for row in rows
    ]
    return _table(header, lines)


def _table(header: Sequence[str], rows: list[str]) -> str:
    head = "".join(f"<th>{shown(h)}</th>" for h in header)
    return (
        f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _cell(text: str, kind: str) -> str:
    return f'<td class="{kind}">{shown(text)}</td>' if kind else f"<td>{shown(text)}</td>"


def _list(items: Iterable[str]) -> str:
    entries = [f"<li>{item}</li>" for item in items]
    return f"<ul>{''.join(entries)}</ul>" if entries else "<p>none</p>"
