"""`decider report`: its arguments, and the run. The statistics libraries load only when it
runs (they are an optional extra: the service does without them)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TextIO

from decider.errors import DeciderError

FORMATS = ("table", "json", "html")
# what the `report` extra brings, and what it needs in turn
EXTRA = {"statsmodels", "scipy", "numpy", "pandas", "patsy"}
INSTALL = (
    "`decider report` needs the statistics libraries of the report extra: "
    "pip install 'decider[report]'"
)


class Streams(Protocol):
    @property
    def out(self) -> TextIO: ...
    @property
    def err(self) -> TextIO: ...


def add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """decider report --exposures PATH... --outcomes PATH... --outcome NAME."""
    report = commands.add_parser(
        "report",
        help="lift per segment, treatment against holdout, from exposure and outcome files",
        description="Per experiment, placement and segment: units, conversions and rates per "
        "arm, the treatment's absolute and relative lift over the holdout with 95% intervals, "
        "and a verdict (keep, not actionable, too small to tell), merge and split candidates.",
    )
    for flag, what in (("--exposures", "exposure"), ("--outcomes", "outcome")):
        report.add_argument(
            flag,
            nargs="+",
            action="extend",
            type=Path,
            required=True,
            metavar="PATH",
            help=f"{what} files, or directories of them (their *.jsonl files, rotated too)",
        )
    report.add_argument(
        "--outcome", required=True, metavar="NAME", help="the outcome that counts as converted"
    )
    report.add_argument(
        "--by",
        metavar="context.KEY",
        help="test whether each segment's lift differs between the values of this request "
        "context key (as the exposure log records it): split candidates",
    )
    report.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    report.add_argument("-o", "--output", type=Path, help="write to this file, not the terminal")
    report.add_argument(
        "--min-lift",
        type=_relative,
        metavar="PERCENT",
        help="the smallest lift worth having, relative to the holdout rate (e.g. 10%%): with "
        "the units to detect it and no lift seen, a segment is not actionable; without it, "
        "units are counted for the observed lift",
    )
    report.add_argument(
        "--min-units",
        type=_positive,
        metavar="N",
        help="units a segment needs to be tested at all (default: 1,000 accounts, 5,000 "
        "visitors, as the guidance for 1:many tests says)",
    )
    report.add_argument(
        "--min-group",
        type=_positive,
        default=100,
        metavar="N",
        help="units a sub-group needs on each side to enter the split test (default: 100)",
    )
    report.set_defaults(run=run)


def run(args: argparse.Namespace, _env: Mapping[str, str], std: Streams) -> int:
    if args.by is not None and not (args.by.startswith("context.") and len(args.by) > 8):
        raise DeciderError(f"--by {args.by}: name a request context key, as context.device")
    try:
        from decider.measure.report import render  # noqa: PLC0415
        from decider.measure.report.build import Query, build_report  # noqa: PLC0415
        from decider.measure.report.reading import record_files  # noqa: PLC0415
        from decider.measure.report.verdicts import Thresholds  # noqa: PLC0415
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in EXTRA:
            raise
        print(f"decider: {INSTALL}", file=std.err)
        return 2
    query = Query(
        record_files(args.exposures, "exposure"),
        record_files(args.outcomes, "outcome"),
        args.outcome,
        args.by,
        Thresholds(args.min_lift, args.min_units, args.min_group),
    )
    text = render.RENDERERS[args.format](build_report(query))
    if args.output is None:
        std.out.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=std.err)
    return 0


def _relative(text: str) -> float:
    """10% or 0.1: a relative lift."""
    try:
        value = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a percentage, as 10%") from None
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r}: a lift above 0%, as 10%")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number above 0")
    return value
