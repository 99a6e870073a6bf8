"""Experiments in rule files: every mistake refused at load with its place, and rule tests
that pin the arm of named people."""

from __future__ import annotations

from pathlib import Path

import pytest

from decider.experiments import CONTROL
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.rules.suites import format_result, run_suites

from .test_compiler import line_of, problems_of, replace

TREATMENT = """            - id: home_comparison_roi
              weight: 1
"""
ROI_CONTENT = """              content:
                hero: What would switching save you? Run the numbers first.
                cta: Open the ROI calculator
                proof: Teams like yours recover the cost in 5 months
"""


def test_the_sample_experiment_compiles(rules_copy: Path) -> None:
    """The hero holds out 10% of every segment it has a variant for, and splits the
    mid-tier surge between its comparison hero and an ROI-first one."""
    placement = compile_ruleset(rules_copy, new_engine("cel-expr")).placements["home_hero"]
    experiment = placement.experiment
    assert experiment is not None
    assert (experiment.id, experiment.salt, experiment.unit) == (
        "home_hero_holdout",
        "home_hero_holdout",
        "account",
    )
    assert set(experiment.splits) == set(placement.variants)
    assert all(split.share == 10 for split in experiment.splits.values())
    surge = experiment.splits["b2b_mid_tier_surge"]
    assert [(arm.id, arm.weight, arm.variant.id) for arm in surge.arms] == [
        (CONTROL, 1, "home_comparison"),
        ("home_comparison_roi", 1, "home_comparison_roi"),
    ]
    assert [arm.id for arm in experiment.splits["b2b_expansion"].arms] == [CONTROL]


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        ("      holdout: 10%", "      holdout: 10", "holdout: 10", "as a percentage"),
        ("      holdout: 10%", "      holdout: 100.5%", "holdout: 100", "more than 100%"),
        ("      holdout: 10%", "      holdout: -5%", "holdout: -5", "as a percentage"),
        (
            "        b2b_mid_tier_surge:      #",
            "        b2b_mid_tier_surg:      #",
            "control_weight: 1",  # the segment's entry: a map starts at its first key
            "unknown segment 'b2b_mid_tier_surg'",
        ),
        (
            "        b2b_mid_tier_surge:      #",
            "        trial_stalled: {holdout: 5%}\n        b2b_mid_tier_surge:      #",
            "trial_stalled:",
            "home_hero has no variant for trial_stalled",
        ),
        (
            "          control_weight: 1",
            "          control_weight: 0",
            "control_weight: 0",
            "a weight is a whole number of 1 or more, not 0",
        ),
        (
            "              weight: 1\n",
            "              weight: -2\n",
            "weight: -2",
            "a weight is a whole number of 1 or more, not -2",
        ),
        (
            "              weight: 1\n",
            "              weight: 1.5\n",
            "weight: 1.5",
            "a weight is a whole number of 1 or more, not 1.5",
        ),
        (
            "            - id: home_comparison_roi",
            "            - id: holdout",
            "- id: holdout",
            "'holdout' names an arm already",
        ),
        (
            "            - id: home_comparison_roi",
            "            - id: home_comparison",
            "- id: home_comparison",
            "is the segment's own variant",
        ),
        (
            "            - id: home_comparison_roi",
            "            - id: home_generic",
            "- id: home_generic",
            "variant id 'home_generic' already names other content",
        ),
        (
            "                proof: Teams like yours recover the cost in 5 months\n",
            "",
            "hero: What would switching",
            "treatment home_comparison_roi must fill every slot; missing proof",
        ),
        (
            "                proof: Teams like yours recover",
            "                subject: Hi\n                proof: Teams like yours recover",
            "subject: Hi",
            "slot 'subject' is not one of this placement's slots",
        ),
        (
            TREATMENT + ROI_CONTENT,
            TREATMENT + ROI_CONTENT + TREATMENT + ROI_CONTENT,
            "- id: home_comparison_roi",
            "duplicate arm id 'home_comparison_roi'",
        ),
        (
            "      unit: account ",
            "      unit: team ",
            "unit: team",
            "Invalid enum value 'team'",
        ),
        (
            "      unit: account ",
            '      salt: "q4\\0"\n      unit: account ',
            "salt:",
            "the salt holds a NUL character",
        ),
        (
            "      holdout: 10%",
            "      holdot: 10%",
            "holdot:",
            "unknown field `holdot`",
        ),
    ],
)
def test_experiment_mistakes_are_placed(
    rules_copy: Path, old: str, new: str, needle: str, expected: str
) -> None:
    b2b = rules_copy / "b2b.yaml"
    replace(b2b, old, new)
    problems = problems_of(rules_copy)
    found = [p for p in problems if expected in p.message]
    assert found, problems
    assert found[0].file.endswith("b2b.yaml")
    lines = [i for i, line in enumerate(b2b.read_text().splitlines(), 1) if needle in line]
    assert found[0].line == lines[-1]  # a duplicate: the second


def test_an_experiment_id_is_used_once(rules_copy: Path) -> None:
    b2b = rules_copy / "b2b.yaml"
    replace(
        b2b,
        "    tags: [acquisition]\n",
        "    tags: [acquisition]\n    experiment: {id: home_hero_holdout, holdout: 5%}\n",
    )
    (problem,) = problems_of(rules_copy)
    assert problem.message == "duplicate experiment id 'home_hero_holdout'"
    assert problem.line == line_of(b2b, "experiment: {id: home_hero_holdout, holdout: 5%}")


def test_a_zero_holdout_without_treatments_leaves_a_segment_out(rules_copy: Path) -> None:
    """0% and no treatments: the segment is in no experiment (no arm, no exposure)."""
    replace(
        rules_copy / "b2b.yaml",
        "        b2b_mid_tier_surge:      #",
        "        b2b_expansion: {holdout: 0%}\n        b2b_mid_tier_surge:      #",
    )
    experiment = compile_ruleset(rules_copy, new_engine("cel-expr")).placements["home_hero"]
    assert experiment.experiment is not None
    assert "b2b_expansion" not in experiment.experiment.splits
    assert "b2b_top_tier_evaluation" in experiment.experiment.splits


def test_a_rule_test_pins_the_arm(rules_copy: Path) -> None:
    """`expect: {arm: ...}` pins a named person's arm; a wrong one fails, saying both."""
    suite = rules_copy / "tests" / "b2b.yaml"
    replace(
        suite,
        "expect: {segment: b2b_icp_awareness_dormant, arm: holdout,",
        "expect: {segment: b2b_icp_awareness_dormant, arm: control,",
    )
    results = run_suites(compile_ruleset(rules_copy, new_engine("cel-expr")), rules_copy)
    (failed,) = [r for r in results if not r.passed]
    text = format_result(failed)
    assert "arm: expected 'control', got 'holdout'" in text
    assert "experiment.holdout: home_hero_holdout, by account: in the 10% holdout" in text
    assert "experiment: home_hero_holdout, by account: holdout point 0.0540 < 0.1" in text
