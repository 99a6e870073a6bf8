"""`decider report`: counts, rates and intervals checked against hand-computed values and
the textbook formulas (computed here with the standard library, not the report's libraries),
the verdicts, the joins of outcomes to units, the three output formats and bad files."""

from __future__ import annotations

import io
import math
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist

import msgspec
import pytest

from decider.cli import main
from decider.measure.records import Exposure, Outcome, record_encoder
from decider.measure.report import reading
from decider.measure.report.schema import Report, Segment, Verdict
from decider.measure.report.verdicts import Side, Thresholds, compare, judge

from .conftest import ROOT

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
Z = NormalDist().inv_cdf(0.975)


def exposure(
    unit: str,
    arm: str,
    *,
    segment: str | None = "evaluation",
    at: datetime = T0,
    decision: str | None = None,
    variant: str | None = None,
    placement: str = "home_hero",
    experiment: str = "hero-holdout",
    kind: str = "account",
    device: str | None = None,
) -> Exposure:
    return Exposure(
        at=at,
        decision_id=decision or f"d-{unit}-{at.timestamp():.0f}",
        ruleset="r-1",
        placement=placement,
        channel="web",
        segment=segment,
        experiment=experiment,
        arm=arm,
        variant=variant or ("hero_default" if arm == "holdout" else "hero_enterprise"),
        unit_kind=kind,
        unit=unit,
        context={"device": device} if device else {},
    )


def converted(unit: str, *, at: datetime = T0 + timedelta(hours=1), event: str = "") -> Outcome:
    return Outcome(at=at, event_id=event or f"e-{unit}", name="signup", account=unit)


def cohort(
    prefix: str, arm: str, units: int, converts: int, **where: str | None
) -> tuple[list[Exposure], list[Outcome]]:
    """`units` units exposed in `arm`, the first `converts` of them converting after it."""
    names = [f"{prefix}-{arm}-{n}" for n in range(units)]
    return [exposure(u, arm, **where) for u in names], [converted(u) for u in names[:converts]]  # type: ignore[arg-type]


def write(path: Path, records: Iterable[Exposure | Outcome]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record_encoder.encode_lines(list(records)))
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(["report", *argv], environ={}, out=out), out.getvalue()


def report(
    tmp_path: Path,
    cohorts: Iterable[tuple[list[Exposure], list[Outcome]]],
    *flags: str,
    extra: Iterable[Outcome] = (),
) -> Report:
    """The JSON report over these cohorts, decoded into the documented schema."""
    exposures, outcomes = [], list(extra)
    for shown, done in cohorts:
        exposures += shown
        outcomes += done
    write(tmp_path / "exposures" / "exposures-0001.jsonl", exposures)
    write(tmp_path / "outcomes" / "outcomes-0001.jsonl", outcomes)
    code, out = run(
        "--exposures",
        str(tmp_path / "exposures"),
        "--outcomes",
        str(tmp_path / "outcomes"),
        "--outcome",
        "signup",
        "--format",
        "json",
        *flags,
    )
    assert code == 0, out
    return msgspec.json.decode(out, type=Report, strict=True)


def wilson(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (his method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = wilson(x1, n1), wilson(x2, n2)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def katz(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """The log (Katz) interval for p1 / p2, minus one."""
    ratio = (x1 / n1) / (x2 / n2)
    half = Z * math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return ratio * math.exp(-half) - 1, ratio * math.exp(half) - 1


def units_needed(lift: float, base: float, holdout_per_treated: float) -> tuple[float, float]:
    """Units (treatment, holdout) to detect `lift` over `base`, two-sided alpha 0.05, power
    0.8: variance pooled under the null, separate under the alternative."""
    r, p2 = holdout_per_treated, base
    p1 = p2 + lift
    pooled = (p1 + r * p2) / (1 + r)
    null = math.sqrt(pooled * (1 - pooled) * (1 + 1 / r))
    alternative = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / r)
    treated = ((Z * null + NormalDist().inv_cdf(0.8) * alternative) / lift) ** 2
    return treated, treated * r


def only(found: Report, segment: str | None = "evaluation") -> Segment:
    (chosen,) = [s for s in found.segments if s.segment == segment]
    return chosen


def test_golden_counts_rates_and_intervals(tmp_path: Path) -> None:
    """Holdout 2 of 10, control 8 of 20: rates 20% and 40%, lift +20 points with Newcombe's
    interval, relative lift +100% with Katz's; a small segment: too small to tell."""
    found = report(tmp_path, [cohort("a", "holdout", 10, 2), cohort("a", "control", 20, 8)])
    segment = only(found)
    assert [(a.arm, a.units, a.converted, a.rate, a.variants) for a in segment.arms] == [
        ("holdout", 10, 2, 0.2, ["hero_default"]),
        ("control", 20, 8, 0.4, ["hero_enterprise"]),
    ]
    assert segment.treatment is not None
    assert (segment.treatment.units, segment.treatment.converted) == (20, 8)
    lift = segment.treatment.lift
    assert lift.estimate == pytest.approx(0.2)
    assert (lift.low, lift.high) == pytest.approx(newcombe(8, 20, 2, 10), abs=1e-9)
    assert segment.treatment.relative_lift is not None
    assert segment.treatment.relative_lift.estimate == pytest.approx(1.0)
    relative = segment.treatment.relative_lift
    assert (relative.low, relative.high) == pytest.approx(katz(8, 20, 2, 10), abs=1e-9)
    assert segment.verdict.kind == "too_small"
    assert found.inputs.units == 30
    assert found.inputs.exposures == 30
    assert found.inputs.outcome_events == 10


def test_every_treatment_arm_and_all_of_them_against_the_holdout(tmp_path: Path) -> None:
    """Two variants split: each is compared with the holdout, and so are both together."""
    found = report(
        tmp_path,
        [
            cohort("b", "holdout", 40, 4),
            cohort("b", "case_study", 50, 10, variant="case_study"),
            cohort("b", "webinar", 60, 9, variant="webinar"),
        ],
    )
    segment = only(found)
    arms = {c.arm: c for c in segment.by_arm}
    assert arms["case_study"].lift.estimate == pytest.approx(0.2 - 0.1)
    assert (arms["webinar"].lift.low, arms["webinar"].lift.high) == pytest.approx(
        newcombe(9, 60, 4, 40)
    )
    assert segment.treatment is not None
    assert (segment.treatment.arm, segment.treatment.units) == ("treatment", 110)
    assert (segment.treatment.lift.low, segment.treatment.lift.high) == pytest.approx(
        newcombe(19, 110, 4, 40)
    )


def test_outcomes_join_by_decision_id_and_count_once_per_event(tmp_path: Path) -> None:
    """An outcome naming a decision converts that decision's unit; an event resent (its id
    again, even naming someone else) counts once; other outcome names do not count."""
    shown = [
        exposure("u1", "control", decision="d-1"),
        exposure("u2", "control"),
        exposure("u3", "control"),
        exposure("h1", "holdout"),
    ]
    later = T0 + timedelta(hours=2)
    outcomes = [
        Outcome(at=later, event_id="e-1", name="signup", decision_id="d-1"),
        Outcome(at=later, event_id="e-1", name="signup", account="u2"),  # a resend
        Outcome(at=later, event_id="e-9", name="page_view", account="u3"),
    ]
    found = report(tmp_path, [(shown, outcomes)])
    assert [(a.arm, a.units, a.converted) for a in only(found).arms] == [
        ("holdout", 1, 0),
        ("control", 3, 1),
    ]
    assert (found.inputs.outcome_events, found.inputs.duplicate_events) == (1, 1)


def test_outcomes_before_the_first_exposure_do_not_count(tmp_path: Path) -> None:
    """A conversion before the unit was first shown anything is not the experiment's doing;
    one at the very moment, or after a later exposure's decision, is."""
    shown = [
        exposure("u1", "control", at=T0 + timedelta(days=1)),
        exposure("u1", "control", at=T0 + timedelta(days=3), decision="d-late"),
        exposure("u2", "control", at=T0 + timedelta(days=1)),
        exposure("u3", "control", at=T0 + timedelta(days=1)),
        exposure("h1", "holdout"),
    ]
    outcomes = [
        converted("u1", at=T0),  # before its first exposure
        converted("u2", at=T0 + timedelta(days=1)),  # at it
        Outcome(at=T0 + timedelta(hours=12), event_id="x", name="signup", decision_id="d-late"),
        converted("u3", at=T0 + timedelta(days=4)),
    ]
    found = report(tmp_path, [(shown, outcomes)])
    assert [(a.arm, a.units, a.converted) for a in only(found).arms] == [
        ("holdout", 1, 0),
        ("control", 3, 2),
    ]


def test_a_unit_in_two_arms_or_segments_counts_where_it_was_first(tmp_path: Path) -> None:
    """The rules changed mid-test: the unit stays in its first arm and segment, whatever the
    order of the files, and the report says how many moved."""
    shown = [
        exposure("u1", "holdout", segment="late", at=T0 + timedelta(days=2)),
        exposure("u1", "control", at=T0),  # first, though read second
        exposure("u2", "holdout"),
    ]
    found = report(tmp_path, [(shown, [converted("u1", at=T0 + timedelta(days=3))])])
    assert [(a.arm, a.units, a.converted) for a in only(found).arms] == [
        ("holdout", 1, 0),
        ("control", 1, 1),
    ]
    assert [s.segment for s in found.segments] == ["evaluation"]
    assert (found.inputs.units_in_two_arms, found.inputs.units_in_two_segments) == (1, 1)
    code, out = run(
        "--exposures", str(tmp_path / "exposures"), "--outcomes", str(tmp_path / "outcomes"),
        "--outcome", "signup",
    )  # fmt: skip
    assert code == 0
    assert (
        "1 units were exposed in two arms (rules changed mid-test): each is counted in its " in out
    )


def test_visitor_units_join_outcomes_by_the_visitor_hash(tmp_path: Path) -> None:
    """An experiment that buckets visitors joins outcomes by `visitor`, not `account`."""
    shown = [exposure("v1", "control", kind="visitor"), exposure("v2", "holdout", kind="visitor")]
    outcomes = [
        Outcome(at=T0 + timedelta(hours=1), event_id="a", name="signup", visitor="v1"),
        Outcome(at=T0 + timedelta(hours=1), event_id="b", name="signup", account="v2"),
    ]
    found = report(tmp_path, [(shown, outcomes)])
    assert [(a.arm, a.converted) for a in only(found).arms] == [("holdout", 0), ("control", 1)]
    assert only(found).unit_kind == "visitor"


def test_exposures_without_an_experiment_or_unit_are_left_out_and_said(tmp_path: Path) -> None:
    plain = msgspec.structs.replace(exposure("u9", "control"), experiment=None, arm=None)
    anonymous = msgspec.structs.replace(exposure("u8", "control"), unit=None)
    shown = [plain, anonymous, exposure("u1", "control")]
    found = report(tmp_path, [(shown, [converted("u1")])])
    assert (found.inputs.without_experiment, found.inputs.without_unit) == (1, 1)
    assert found.inputs.units == 1


def test_an_outcome_name_no_event_carries_is_an_error_naming_those_there(tmp_path: Path) -> None:
    """A misspelt --outcome would read every segment as "no lift": it is refused instead."""
    write(tmp_path / "e.jsonl", [exposure("u1", "control")])
    write(tmp_path / "o.jsonl", [converted("u1")])
    outcomes = ("--exposures", str(tmp_path / "e.jsonl"), "--outcomes", str(tmp_path / "o.jsonl"))
    code, out = run(*outcomes, "--outcome", "Signup")
    assert code == 2
    assert "--outcome Signup: no outcome of that name" in out
    assert "names there: signup" in out


# verdicts


def verdict(
    holdout: Side, treated: Side, limits: Thresholds | None = None, floor: int = 0
) -> Verdict:
    limits = limits or Thresholds()
    return judge(
        holdout, treated, compare(holdout, treated), floor=floor, kind="accounts", limits=limits
    )


def test_keep_when_the_interval_is_above_zero() -> None:
    found = verdict(Side(100, 10), Side(900, 180), floor=1000)
    assert found.kind == "keep"
    assert found.reason == "the lift's interval is above zero"
    small = verdict(Side(100, 10), Side(800, 160), floor=1000)
    assert small.kind == "keep"
    assert "fewer than the 1,000 accounts a test needs" in small.reason


def test_not_actionable_with_the_units_to_see_the_minimum_lift() -> None:
    """No lift, and enough units that a +20% lift would have shown with power 0.8."""
    holdout, treated = Side(4000, 400), Side(16000, 1600)
    needed = units_needed(0.02, 0.1, 4000 / 16000)
    assert needed[0] < 16000  # the premise
    found = verdict(holdout, treated, Thresholds(min_lift=0.2), floor=5000)
    assert found.kind == "not_actionable"
    assert "+2.00 points (the minimum, +20%)" in found.reason


def test_not_actionable_when_the_treatment_does_worse() -> None:
    found = verdict(Side(1000, 150), Side(4000, 400), floor=1000)
    assert found.kind == "not_actionable"
    assert "interval is below zero" in found.reason


def test_too_small_says_how_many_more_units_each_side_needs() -> None:
    """10% against 12.5%: the observed +2.5 points needs more units than 100 and 400; the
    report says how many more, at the current 1:4 split, computed here by the formula."""
    holdout, treated = Side(100, 10), Side(400, 50)
    found = verdict(holdout, treated, floor=500)
    treated_needed, holdout_needed = units_needed(0.025, 0.1, 100 / 400)
    scale = max(math.ceil(treated_needed) / 400, math.ceil(holdout_needed) / 100)
    assert found.kind == "too_small"
    assert found.detect == pytest.approx(0.025)
    assert found.more_holdout == math.ceil(100 * scale) - 100
    assert found.more_treatment == math.ceil(400 * scale) - 400
    assert (found.more_holdout, found.more_treatment) == (1502, 6008)  # the split kept, 1:4
    assert f"needs {found.more_holdout:,} more units in the holdout" in found.reason


def test_too_small_below_the_guidance_with_no_lift_to_detect() -> None:
    """No lift observed and no minimum asked: only the guidance's floor can say it is too
    early: 600 accounts of the 1,000 a 1:many test needs."""
    found = verdict(Side(120, 12), Side(480, 48), floor=1000)
    assert found.kind == "too_small"
    assert (found.more_holdout, found.more_treatment) == (80, 320)
    assert found.reason.endswith(": to reach the 1,000 accounts a test needs")
    enough = verdict(Side(200, 20), Side(800, 80), floor=1000)
    assert enough.kind == "not_actionable"
    assert enough.reason == "no lift seen, with the 1,000 accounts a test needs"


def test_no_holdout_is_too_small_to_tell() -> None:
    found = verdict(Side(0, 0), Side(400, 50), floor=0)
    assert found.kind == "too_small"
    assert found.reason == "no units in the holdout: nothing to compare"


def test_merge_candidates_serve_the_same_variant_with_lifts_alike(tmp_path: Path) -> None:
    """Two segments of a placement lifting alike on the same variant: a merge candidate;
    a third lifting alike on another variant, and a fourth lifting differently, are not."""
    cohorts = []
    for segment, variant, holdout, treated in [
        ("enterprise", "hero_enterprise", 30, 180),
        ("mid_market", "hero_enterprise", 31, 178),
        ("startups", "hero_startup", 30, 180),
        ("retail", "hero_enterprise", 30, 90),
    ]:
        where = {"segment": segment}
        cohorts += [
            cohort(segment, "holdout", 300, holdout, **where),
            cohort(segment, "control", 1200, treated, variant=variant, **where),
        ]
    found = report(tmp_path, cohorts)
    assert [only(found, s).verdict.kind for s in ("enterprise", "mid_market", "startups")] == [
        "keep"
    ] * 3
    pairs = [(m.first.segment, m.second.segment) for m in found.merges]
    assert pairs == [("enterprise", "mid_market")]
    (merge,) = found.merges
    assert merge.variants == ["hero_enterprise"]
    difference = (180 / 1200 - 30 / 300) - (178 / 1200 - 31 / 300)
    assert merge.difference.estimate == pytest.approx(difference)
    assert merge.p_value > 0.05


def test_split_candidates_by_a_context_dimension(tmp_path: Path) -> None:
    """Desktop readers lift, mobile ones do not: a split candidate by context.device; a
    segment lifting alike on both is not; a value with too few units is shown, not tested."""
    cohorts = []
    for segment, rates in [("readers", {"desktop": (20, 80), "mobile": (20, 20)}),
                           ("buyers", {"desktop": (20, 50), "mobile": (20, 50)})]:  # fmt: skip
        for device, (holdout, treated) in rates.items():
            where = {"segment": segment, "device": device}
            cohorts += [
                cohort(f"{segment}-{device}", "holdout", 200, holdout, **where),
                cohort(f"{segment}-{device}", "control", 400, treated, **where),
            ]
    cohorts.append(cohort("readers-tablet", "holdout", 5, 1, segment="readers", device="tablet"))
    cohorts.append(cohort("readers-tablet", "control", 5, 1, segment="readers", device="tablet"))
    found = report(tmp_path, cohorts, "--by", "context.device")
    readers, buyers = only(found, "readers").split, only(found, "buyers").split
    assert readers is not None
    assert buyers is not None
    assert (readers.candidate, buyers.candidate) == (True, False)
    assert [(g.value, g.tested) for g in readers.groups] == [
        ("desktop", True),
        ("mobile", True),
        ("tablet", False),
    ]
    # two sub-groups: Q is the squared z of the difference of their lifts (Wald errors)
    lifts = [(80 / 400 - 20 / 200), (20 / 400 - 20 / 200)]
    variances = [
        0.2 * 0.8 / 400 + 0.1 * 0.9 / 200,
        0.05 * 0.95 / 400 + 0.1 * 0.9 / 200,
    ]
    z = (lifts[0] - lifts[1]) / math.sqrt(sum(variances))
    assert readers.q == pytest.approx(z * z)
    assert readers.p_value == pytest.approx(2 * NormalDist().cdf(-abs(z)))


# output formats


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    cohorts = []
    for segment, device, holdout, treated in [
        ("enterprise", "desktop", 30, 180),
        ("enterprise", "mobile", 30, 150),
        ("retail", "desktop", 5, 6),
        ("retail", "mobile", 5, 6),
    ]:
        where = {"segment": segment, "device": device}
        cohorts += [
            cohort(f"{segment}-{device}", "holdout", 300, holdout, **where),
            cohort(f"{segment}-{device}", "control", 1200, treated, **where),
        ]
    report(tmp_path, cohorts, "--by", "context.device")
    return tmp_path


def flags(where: Path, *more: str) -> list[str]:
    return [
        "--exposures", str(where / "exposures"), "--outcomes", str(where / "outcomes"),
        "--outcome", "signup", "--by", "context.device", *more,
    ]  # fmt: skip


def test_the_table_is_aligned_plain_text(demo: Path) -> None:
    code, out = run(*flags(demo))
    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("placement"))
    table = lines[header : lines.index("", header)]
    assert len(table) == 5  # the header, and holdout and control for each segment
    column = table[0].index("lift, points")
    lifts = [row for row in table[1:] if len(row) > column]
    assert len(lifts) == 2
    assert all(row[column - 2 : column] == "  " and row[column] in "+-" for row in lifts)
    assert re.search(r"control +2,400 +330 +13\.75%  \+3\.75 ", out)  # 1,200 a device
    assert "keep" in table[2]
    assert "Split candidates by context.device" in out
    assert out.isascii() or "·" not in out


def test_json_decodes_to_the_documented_schema(demo: Path) -> None:
    code, out = run(*flags(demo, "--format", "json"))
    assert code == 0
    found = msgspec.json.decode(out, type=Report, strict=True)
    assert [s.segment for s in found.segments] == ["enterprise", "retail"]
    schema = msgspec.json.schema(Report)
    assert all("description" in definition for definition in schema["$defs"].values())


def test_the_html_page_stands_alone_with_its_chart(demo: Path) -> None:
    """The page parses (as XML, even), holds the SVG chart with a point and an interval per
    segment and per sub-group, and fetches nothing."""
    page = demo / "report.html"
    code, out = run(*flags(demo, "--format", "html", "-o", str(page)))
    assert code == 0
    assert out.strip() == f"wrote {page}"
    text = page.read_text()
    root = ET.fromstring(text.split("\n", 1)[1])
    svg = "{http://www.w3.org/2000/svg}"
    (chart,) = root.iter(f"{svg}svg")
    rows = [g.findtext(f"{svg}title", "") for g in chart.iter(f"{svg}g")]  # point, interval
    assert [row.split(":")[0] for row in rows] == [
        "home_hero · enterprise",
        "context.device = desktop",
        "context.device = mobile",
        "home_hero · retail",
        "context.device = desktop",
        "context.device = mobile",
    ]
    assert {td.text for td in root.iter("td")} >= {"keep", "enterprise", "2,400"}
    assert not re.search(r"(src|href)=|url\(|@import", text)
    assert "<script" not in text
    assert ">a sub-group</text>" in text  # the legend names what is drawn, and only that
    without = [arg for arg in flags(demo, "--format", "html", "-o", str(page)) if arg != "--by"]
    without.remove("context.device")
    assert run(*without)[0] == 0
    assert ">a sub-group</text>" not in page.read_text()


def test_terminal_codes_in_record_files_never_reach_the_terminal(tmp_path: Path) -> None:
    """A segment written with an escape sequence (a hostile or damaged record file) is shown
    escaped in the table, not acted on by the terminal."""
    red = "seg\x1b[31mRED\x1b[0m"
    report(
        tmp_path,
        [cohort("r", "holdout", 20, 2, segment=red), cohort("r", "control", 20, 5, segment=red)],
    )
    code, out = run(*flags(tmp_path)[:-2])  # no --by
    assert code == 0
    assert "\x1b" not in out
    assert "seg\\x1b[31mRED\\x1b[0m" in out
    page = tmp_path / "report.html"
    assert run(*flags(tmp_path)[:-2], "--format", "html", "-o", str(page))[0] == 0
    text = page.read_text()
    ET.fromstring(text.split("\n", 1)[1])  # XML holds no ESC: written as its escape
    assert "\x1b" not in text
    assert "seg\\x1b[31mRED" in text
    # nor in an error that quotes the files: the outcome names found there
    named = Outcome(at=T0, event_id="e-x", name="sign\x1b]0;up\x07", account="u")
    write(tmp_path / "outcomes" / "outcomes-0002.jsonl", [named])
    code, out = run(*flags(tmp_path)[:-4], "--outcome", "nope")
    assert code == 2
    assert "sign\\x1b]0;up\\x07" in out
    assert "\x1b" not in out


# bad input


def test_a_truncated_last_line_is_named_with_its_place(tmp_path: Path) -> None:
    path = write(tmp_path / "exposures.jsonl", [exposure("u1", "control")] * 2)
    with path.open("ab") as file:
        file.write(b'{"type":"exposure","at":"2026-03-')
    write(tmp_path / "outcomes.jsonl", [])
    code, out = run("--exposures", str(path), "--outcomes", str(tmp_path / "outcomes.jsonl"),
                    "--outcome", "signup")  # fmt: skip
    assert code == 2
    assert out.startswith(f"decider: {path}:3: the last line is not a whole record")
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b"hello", "JSON is malformed"),
        (  # two records on one line: a hand edit, say; each line holds one
            record_encoder.encode(exposure("u", "control"))
            + b","
            + record_encoder.encode(exposure("v", "control")),
            "trailing characters",
        ),
        (b'{"type":"outcome","at":"2026-03-02T09:00:00Z","event_id":"e","name":"x"}', "type"),
        (record_encoder.encode(exposure("u", "control")).replace(b"Z", b""), "timezone"),
        (b'{"type":"exposure","at":"2026-03-02T09:00:00Z","email":"ada@example.com"}', ""),
        (
            record_encoder.encode(exposure("u", "control")).replace(b"control", b"contr\xffol"),
            "not valid UTF-8",  # a Latin-1 re-export, say
        ),
    ],
)
def test_a_line_that_is_not_a_record_is_named_with_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes, said: str
) -> None:
    """In a later chunk than the first (small chunks here), after a blank line (skipped),
    the bad line is named by file and line, and nothing it holds is echoed raw."""
    monkeypatch.setattr(reading, "CHUNK_BYTES", 200)
    good = record_encoder.encode_lines([exposure(f"u{n}", "control") for n in range(5)])
    path = tmp_path / "e" / "exposures.jsonl"
    path.parent.mkdir()
    path.write_bytes(good + b"\n" + line + b"\n" + good)
    write(tmp_path / "outcomes.jsonl", [])
    code, out = run("--exposures", str(path.parent), "--outcomes",
                    str(tmp_path / "outcomes.jsonl"), "--outcome", "signup")  # fmt: skip
    assert code == 2
    assert out.startswith(f"decider: {path}:7: not a record: ")
    assert said in out
    assert "ada@example.com" not in out
    assert "Traceback" not in out


def test_chunks_split_lines_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records spanning chunk boundaries, a blank line, no newline at the end: all read."""
    monkeypatch.setattr(reading, "CHUNK_BYTES", 77)
    records = [exposure(f"u{n}", "control") for n in range(9)]
    lines = record_encoder.encode_lines(records)
    path = tmp_path / "exposures.jsonl"
    middle = lines.index(b"\n", 300) + 1
    path.write_bytes(lines[:middle] + b"\n" + lines[middle:].rstrip(b"\n"))
    read = [r for chunk in reading.read_records([path], reading.ExposureView) for r in chunk]
    assert [r.unit for r in read] == [r.unit for r in records]


def test_missing_inputs_and_bad_flags_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "y.jsonl").symlink_to("gone.jsonl")
    for argv, said in [
        (
            ["--exposures", str(tmp_path / "nope")],
            "no such file or directory (of exposure records)",
        ),
        (["--exposures", str(empty)], "no exposure files (*.jsonl) in this directory"),
        (["--exposures", str(odd)], "odd/y.jsonl: not a regular file of exposure records"),
        (["--exposures", str(empty), "--by", "device"], "--by device: name a request context"),
    ]:
        code, out = run(*argv, "--outcomes", str(empty), "--outcome", "signup")
        assert code == 2
        assert said in out
        assert "Traceback" not in out
    code, out = run("--exposures", "x", "--outcomes", "y", "--outcome", "s", "--min-lift=-5%")
    assert code == 2
    assert "a lift above 0%" in capsys.readouterr().err


def test_without_the_report_extra_it_says_how_to_install_it() -> None:
    """The service's install has no statistics libraries: the command says which extra."""
    code = (
        "import sys\n"
        "for name in ('statsmodels', 'scipy'): sys.modules[name] = None\n"
        "from decider.cli import main\n"
        "sys.exit(main(['report', '--exposures', 'x', '--outcomes', 'y', '--outcome', 's']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 2
    assert "pip install 'decider[report]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_exposure_view_reads_fields_of_the_contract() -> None:
    """The reader's projection names only fields of the Exposure record, of its types."""
    contract = {f.name: f for f in msgspec.structs.fields(Exposure)}
    for view in msgspec.structs.fields(reading.ExposureView):
        assert view.name in contract
        if view.name != "at":  # the same datetime, its offset required
            assert view.type == contract[view.name].type
    assert reading.ExposureView.__struct_config__.tag == Exposure.__struct_config__.tag


def test_the_readme_shows_a_real_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example, run as written: the simulation writes what it says, and
    `decider report` prints exactly the table, verdicts and notes shown."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The lift report", 1)[1].split("\n## ", 1)[0]
    example = r"```text\n(\$ python loadtests/bench_report\.py [^\n]*--keep.*?)```"
    (block,) = re.findall(example, section, re.S)
    generate, wrote, command, continued, *shown = block.rstrip("\n").splitlines()
    argv = shlex.split(generate.removeprefix("$ "))[1:]
    argv[argv.index("--keep") + 1] = str(tmp_path / argv[argv.index("--keep") + 1])
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.rstrip("\n") == wrote
    program, *argv = shlex.split(command.removeprefix("$ ").rstrip("\\") + continued)
    assert program == "decider"
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert main(argv, environ={}, out=out) == 0
    assert out.getvalue().rstrip("\n").splitlines() == shown


def test_the_benchmark_runs_as_written() -> None:
    """`loadtests/bench_report.py` simulates, runs the report and says how fast (a little
    work here: the numbers are not the point)."""
    done = subprocess.run(
        [sys.executable, "loadtests/bench_report.py", "--records", "3000", "--runs", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(
        r"wrote [\d,]+ exposures \(.* GB\) and [\d,]+ outcomes of 300 units", done.stdout
    )
    assert re.search(r"exposure records in [\d.]+ s \(median of [\d.]+, [\d.]+; CPU", done.stdout)
    assert "records/s; peak memory" in done.stdout
