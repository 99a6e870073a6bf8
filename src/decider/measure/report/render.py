"""The report in each output format `decider report --format` offers."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from decider.measure.report.page import render_html
from decider.measure.report.schema import Report
from decider.measure.report.table import render_text


def render_json(report: Report) -> str:
    return msgspec.json.format(msgspec.json.encode(report)).decode() + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_text,
    "json": render_json,
    "html": render_html,
}
