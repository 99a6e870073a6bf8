"""Named conditions: CEL fragments named once, expanded at load into the conditions that use
them; their mistakes, unknown names and cycles are errors at their place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.errors import Problem, RulesetError
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset, Guard

from .test_compiler import line_of, problems_of, replace

ICP_FIT = "has(account.fit_score) && account.fit_score >= 50"  # the sample's icp_fit
FIT = "has(account.fit_score) && account.fit_score >= 70"


def segment(ruleset: CompiledRuleset, id_: str) -> Any:
    return next(s for s in ruleset.segments if s.id == id_)


def test_a_named_condition_is_expanded_where_it_is_used(ruleset: CompiledRuleset) -> None:
    """Both engines compile the expanded text; the guards see through the name, so the
    guard index rules a segment out by it as by a condition written out."""
    surge = segment(ruleset, "b2b_mid_tier_surge").condition
    assert surge.expanded is not None
    assert surge.expanded.startswith(f"({ICP_FIT}) && account.fit_score < 80")
    assert Guard("account", ("fit_score",)) in surge.guards
    assert Guard("account", ("stage",), frozenset({"vendor_aware"})) in surge.guards
    assert surge.needs_profile
    assert segment(ruleset, "b2b_expansion").condition.expanded is None


def with_conditions(rules: Path, conditions: str, when: str = "") -> Path:
    """`conditions` (YAML lines under `conditions:`) in a file of their own; `when` replaces
    the context segment's condition."""
    (rules / "zz_named.yaml").write_text("conditions:\n" + conditions)
    if when:
        replace(
            rules / "context.yaml",
            'when: has(context.url) && context.url.contains("/guides/migrat")',
            f"when: {when}",
        )
    return rules


def placed(problem: Problem) -> tuple[str, int, int]:
    return Path(problem.file).name, problem.line, problem.column


def test_an_unknown_name_is_an_error_at_its_place(rules_copy: Path) -> None:
    with_conditions(rules_copy, f"  fit_70: {FIT}\n", when="fit70 && has(context.url)")
    (problem,) = problems_of(rules_copy)
    line = line_of(rules_copy / "context.yaml", "when: fit70")
    assert placed(problem) == ("context.yaml", line, 11)
    assert problem.message == (
        "undeclared reference to 'fit70' (did you mean fit_70?); rules read visitor, account, "
        "context, now and the named conditions (fit_70, icp_fit)"
    )


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
def test_a_cycle_is_an_error_at_each_name_that_closes_it(rules_copy: Path, engine: str) -> None:
    with_conditions(
        rules_copy,
        "  first: has(context.a) && second\n  second: has(context.b) && first\n"
        "  alone: alone || has(context.c)\n",
        when="first",
    )
    problems = sorted(problems_of(rules_copy, engine))
    assert [(placed(p), p.message) for p in problems] == [
        (("zz_named.yaml", 2, 28), "named condition first uses itself: first -> second -> first"),
        (("zz_named.yaml", 3, 29), "named condition second uses itself: second -> first -> second"),
        (("zz_named.yaml", 4, 10), "named condition alone uses itself: alone -> alone"),
    ]


def test_a_broken_named_condition_is_reported_once_where_it_is_written(rules_copy: Path) -> None:
    """Not again at each use: the segment that uses it is refused with it."""
    with_conditions(rules_copy, "  migrating: has(context.url) && && true\n", when="migrating")
    replace(rules_copy / "context.yaml", 'context.utm_campaign.contains("comparison")', "migrating")
    (problem,) = problems_of(rules_copy)
    assert placed(problem)[:2] == ("zz_named.yaml", 2)
    assert problem.rule == "migrating"


@pytest.mark.parametrize("engine", ["cel-expr", "cel-python"])
def test_a_mistake_after_a_name_is_placed_in_the_text_as_written(
    rules_copy: Path, engine: str
) -> None:
    """The expansion is longer than the name: places after it are mapped back."""
    with_conditions(rules_copy, f"  fit_70: {FIT}\n", when="fit_70 && acount.x == 1")
    (problem,) = problems_of(rules_copy, engine)
    line = line_of(rules_copy / "context.yaml", "when: fit_70")
    assert placed(problem) == ("context.yaml", line, 21)
    assert "'acount'" in problem.message


@pytest.mark.parametrize(
    ("conditions", "when", "message", "column"),
    [
        (f"  fit_70: {FIT}\n", "fit_70.score > 1", "has no field 'score'", 11),
        (f"  fit_70: {FIT}\n", "has(context.u) && fit_70 + 1 > 0", "takes (bool, int)", 36),
    ],
)
def test_a_name_used_as_what_it_is_not_is_an_error_at_the_name(
    rules_copy: Path, conditions: str, when: str, message: str, column: int
) -> None:
    with_conditions(rules_copy, conditions, when=when)
    (problem,) = problems_of(rules_copy)
    assert placed(problem)[2] == column
    assert message in problem.message


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ("  now: 'true'\n", "'now' is a word CEL reads already"),
        ("  in: 'true'\n", "'in' is a word CEL reads already"),
        ("  Fit: 'true'\n", "expected a condition name: 1 to 64 lowercase letters"),
    ],
)
def test_a_name_cel_cannot_read_is_refused(rules_copy: Path, conditions: str, message: str) -> None:
    with_conditions(rules_copy, conditions)
    (problem,) = problems_of(rules_copy)
    assert message in problem.message
    assert placed(problem)[:2] == ("zz_named.yaml", 2)


def test_a_name_defined_twice_is_refused_at_the_second(rules_copy: Path) -> None:
    with_conditions(rules_copy, f"  icp_fit: {ICP_FIT}\n")
    (problem,) = problems_of(rules_copy)
    assert problem.message == "duplicate named condition 'icp_fit'"
    assert placed(problem)[:2] == ("zz_named.yaml", 2)


def test_named_conditions_nest_and_serve_suppressions(rules_copy: Path) -> None:
    """A named condition may use another; a suppression may use one; the name is replaced
    by its condition in parentheses, so `||` inside it binds as written."""
    with_conditions(
        rules_copy,
        "  customer: has(account.lifecycle) && account.lifecycle == 'customer'\n"
        "  held_back: customer || has(account.hold)\n",
    )
    replace(
        rules_copy / "policy.yaml",
        'when: has(account.lifecycle) && account.lifecycle == "customer"',
        "when: held_back && true",
    )
    replace(
        rules_copy / "schema.yaml", "  lifecycle: string\n", "  lifecycle: string\n  hold: bool\n"
    )
    ruleset = compile_ruleset(rules_copy, new_engine("cel-python"))
    (rule,) = [s for s in ruleset.suppressions if s.id == "customers_no_acquisition"]
    assert rule.condition is not None
    assert rule.condition.expanded == (
        "((has(account.lifecycle) && account.lifecycle == 'customer') || has(account.hold)) && true"
    )


def test_lint_warns_of_an_unused_name_and_of_a_loop_over_the_context_inside_one(
    rules_copy: Path,
) -> None:
    """A named condition no rule uses (nor one only an unused one uses) is a warning at its
    name's condition; a loop over the caller's context is warned of where it is written,
    inside the named condition, not at each use."""
    with_conditions(
        rules_copy,
        "  tagged: has(context.tags) && context.tags.exists(t, t == 'x')\n"
        "  spare: has(visitor.role)\n"
        "  spare_too: spare && true\n",
        when="tagged && has(context.url)",
    )
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    found = sorted((p.rule, p.message.split(" ")[0], p.column) for p in ruleset.warnings)
    assert found == [
        ("spare", "no", 10),
        ("spare_too", "no", 14),
        ("tagged", "exists()", 45),
    ]
    assert {Path(p.file).name for p in ruleset.warnings} == {"zz_named.yaml"}


def test_a_broken_named_condition_a_rule_uses_is_not_also_unused(rules_copy: Path) -> None:
    with_conditions(rules_copy, "  shaky: has(visitor.role) &&\n", when="shaky && true")
    with pytest.raises(RulesetError) as caught:
        compile_ruleset(rules_copy, new_engine("cel-expr"))
    assert [p.rule for p in caught.value.problems] == ["shaky"]
    assert [p.rule for p in caught.value.warnings if p.rule == "shaky"] == []


def test_explain_shows_the_condition_as_it_runs(client: TestClient[Any]) -> None:
    response = client.post(
        "/v1/decide",
        json={"placement": "home_hero", "identity": {"user_id": "u-ada"}, "explain": True},
    )
    explained = {o["segment"]: o for o in response.json()["explain"]}
    assert explained["b2b_icp_awareness_dormant"]["condition"].startswith(f"({ICP_FIT})\n&&")
    assert "condition" not in explained["b2b_expansion"]
