"""The sample rule suites pass on both CEL engines, and both engines decide identically."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from decider.errors import RulesetError
from decider.rules import suites
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.rules.suites import (
    compile_and_test,
    format_result,
    load_suite,
    run_suite,
    run_suites,
    suite_files,
)
from decider.ruleset import CelEvalError, CompiledRuleset, Program

from .conftest import RULES

SUITES = suite_files(RULES)


def test_every_segment_and_placement_is_covered_by_a_case() -> None:
    """The shipped suites exercise every segment and every placement of the sample rules."""
    ruleset = compile_ruleset(RULES, new_engine("cel-expr"))
    results = run_suites(ruleset, RULES)
    won = {r.decision.segment for r in results if r.decision}
    placed = {r.decision.placement for r in results if r.decision}
    assert won >= {s.id for s in ruleset.segments}
    assert placed == set(ruleset.placements)
    assert any(r.decision and r.decision.suppressed for r in results)
    assert any(r.decision and not r.decision.personalized for r in results)


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_sample_suite_passes(ruleset: CompiledRuleset, path: Path) -> None:
    """Every case of a shipped suite gets the decision it expects, on this engine."""
    results = run_suite(ruleset, load_suite(path, path.name))
    failures = [format_result(r) for r in results if not r.passed]
    assert results
    assert not failures, "\n".join(failures)


def test_engines_decide_identically() -> None:
    """cel-expr and cel-python give the same decision, reasons and trace for every case."""
    by_engine = {
        name: run_suites(compile_ruleset(RULES, new_engine(name)), RULES)
        for name in ("cel-expr", "cel-python")
    }
    expr, python = by_engine["cel-expr"], by_engine["cel-python"]
    assert len(expr) == len(python) > 0
    for a, b in zip(expr, python, strict=True):
        assert a.case == b.case
        assert a.decision is not None
        assert b.decision is not None
        plain_a, plain_b = msgspec.to_builtins(a.decision), msgspec.to_builtins(b.decision)
        # error texts differ between runtimes; which rules erred must not
        for trace in (plain_a["explain"], plain_b["explain"]):
            for outcome in trace:
                outcome.pop("error", None)
        assert plain_a == plain_b, a.case


class _Contrary:
    """An engine that means the opposite of cel-python: what a disagreement looks like."""

    name = "cel-expr"

    def __init__(self) -> None:
        self._inner = new_engine("cel-python")

    def compile(self, source: str, lists: frozenset[tuple[str, ...]] = frozenset()) -> Program:
        program = self._inner.compile(source, lists)

        class Negated:
            def matches(self, activation: Any) -> bool:
                return not program.matches(activation)

        return Negated()

    def activation(self, *args: Any) -> Any:
        return self._inner.activation(*args)


def test_a_case_the_engines_decide_differently_is_an_error_at_the_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`decider check` and the server's load run every case on each installed engine; a
    case decided two ways is a problem placed at the case, naming both answers."""
    monkeypatch.setattr(suites, "new_engine", lambda name: _Contrary())
    with pytest.raises(RulesetError) as refused:
        compile_and_test(RULES, new_engine("cel-python"))
    apart = [p for p in refused.value.problems if "the engines disagree" in p.message]
    assert apart
    first = apart[0]
    assert first.file.endswith("tests/b2b.yaml")
    assert first.line > 1
    assert "cel-python gives segment" in first.message
    assert "cel-expr gives segment" in first.message


class _Failing(_Contrary):
    """An engine that fails where cel-python says no: the same answers, another trace."""

    def compile(self, source: str, lists: frozenset[tuple[str, ...]] = frozenset()) -> Program:
        program = self._inner.compile(source, lists)

        class Failing:
            def matches(self, activation: Any) -> bool:
                if program.matches(activation):
                    return True
                raise CelEvalError("no such key")

        return Failing()


def test_engines_that_answer_alike_but_trace_apart_are_told_where(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same segment, variant and flags on both: the message names the first segment
    whose outcome differs, not two identical answers."""
    monkeypatch.setattr(suites, "new_engine", lambda name: _Failing())
    with pytest.raises(RulesetError) as refused:
        compile_and_test(RULES, new_engine("cel-python"))
    apart = [p.message for p in refused.value.problems if "the engines disagree" in p.message]
    assert apart
    assert all(
        " but segment " in m and " is not_matched on cel-python and error on cel-expr" in m
        for m in apart
    ), apart


def test_files_edited_between_the_two_engines_reads_are_one_problem_not_disagreements(
    tmp_path: Path,
) -> None:
    """The other engine compiles the directory again: an edit that lands in between changes
    every decision's ruleset version, which is no disagreement of the engines."""
    rules = shutil.copytree(RULES, tmp_path / "rules")
    ruleset = compile_ruleset(rules, new_engine("cel-python"))
    results = run_suites(ruleset, rules)
    with (rules / "b2b.yaml").open("a") as edited:
        edited.write("# an edit, saved while the load ran\n")
    problems = suites.disagreements(ruleset, rules, results)
    assert [p.message for p in problems] == [suites.CHANGED]


def test_a_wrong_expectation_fails_with_expected_and_actual(
    ruleset: CompiledRuleset, tmp_path: Path
) -> None:
    """A case that expects the wrong variant fails, and the report shows both and the trace."""
    text = (RULES / "tests" / "b2b.yaml").read_text()
    broken = text.replace("variant: home_named_account,", "variant: home_generic,", 1)
    assert broken != text
    path = tmp_path / "b2b.yaml"
    path.write_text(broken)
    failures = [r for r in run_suite(ruleset, load_suite(path, "b2b.yaml")) if not r.passed]
    assert len(failures) == 1
    report = format_result(failures[0])
    assert "variant: expected 'home_generic', got 'home_named_account'" in report
    assert re.search(r"90  b2b_top_tier_evaluation +MATCHED", report)


def test_a_suite_with_an_unknown_field_is_refused_with_its_place(tmp_path: Path) -> None:
    """A misspelt key in a suite file is an error at its line, not a silently ignored key."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "cases:\n"
        "  - name: typo\n"
        "    placement: home_hero\n"
        "    now: 2026-11-20T12:00:00Z\n"
        "    expect: {variant: home_generic}\n"
        "    contxt: {}\n"
    )
    with pytest.raises(RulesetError) as caught:
        load_suite(path, "bad.yaml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == ("bad.yaml", 6)
    assert "contxt" in problem.message


@pytest.mark.parametrize(
    ("case", "says"),
    [
        (
            "expect: {variant: home_generic, segment: b2b_top_tier_evaluaton}",
            "expect.segment: no segment 'b2b_top_tier_evaluaton' in the rules "
            "(did you mean b2b_top_tier_evaluation?)",
        ),
        (
            "expect: {variant: home_generik}",
            "expect.variant: 'home_generik' is no variant of home_hero "
            "(did you mean home_generic?)",
        ),
        (
            "expect: {variant: home_generic, arm: holdot}",
            "expect.arm: 'holdot' is no arm of home_hero_holdout (did you mean holdout?)",
        ),
        (
            "placement: nurture_email\n    expect: {variant: nurture_generic, arm: holdout}",
            "expect.arm: nurture_email runs no experiment (expect arm: null)",
        ),
        (
            "profile: ada_profle\n    expect: {variant: home_generic}",
            "no fixture named 'ada_profle' (did you mean ada_profile?)",
        ),
    ],
)
def test_an_expectation_no_decision_could_meet_is_a_mistake_in_the_test(
    ruleset: CompiledRuleset, tmp_path: Path, case: str, says: str
) -> None:
    """A misspelt segment, variant, arm or fixture is said as such, with the name likely
    meant, not reported as the rules deciding otherwise."""
    path = tmp_path / "typo.yaml"
    path.write_text(
        "fixtures:\n"
        "  ada_profile: {visitor: {id: v-ada}}\n"
        "cases:\n"
        "  - name: typo\n"
        "    now: 2026-11-20T12:00:00Z\n"
        f"    {case}\n" + ("" if "placement:" in case else "    placement: home_hero\n")
    )
    (result,) = run_suite(ruleset, load_suite(path, "typo.yaml"))
    assert result.error == says


@pytest.mark.parametrize(
    ("traits", "says"),
    [
        ('{fit_score: "92"}', "profile: traits.fit_score: expected int, got string"),
        (
            "{owner: ada@example.com}",
            "profile: traits.owner: looks like an email address; send its SHA-256 instead",
        ),
    ],
)
def test_a_fixture_is_held_to_what_a_profile_source_holds(
    ruleset: CompiledRuleset, tmp_path: Path, traits: str, says: str
) -> None:
    """A fixture no profile source would store (a string where the schema declares an int,
    a raw email) fails its case instead of testing a profile that cannot exist."""
    path = tmp_path / "fixture.yaml"
    path.write_text(
        "cases:\n"
        "  - name: odd profile\n"
        "    placement: home_hero\n"
        "    now: 2026-11-20T12:00:00Z\n"
        f"    profile: {{account: {{id: acc-1, traits: {traits}}}}}\n"
        "    expect: {variant: home_generic}\n"
    )
    (result,) = run_suite(ruleset, load_suite(path, "fixture.yaml"))
    assert result.error == says


def test_a_load_reads_one_revision_and_refuses_one_swapped_out_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rules -> v1`: a load reads every file of v1, even when `rules` is swapped to a
    broken v2 halfway (after the rules are compiled, before their tests run), and then
    refuses what it read: v1 may be gone by now. The next load reads v2 whole."""
    for name in ("v1", "v2"):
        shutil.copytree(RULES, tmp_path / name)
    (tmp_path / "v2" / "tests" / "b2b.yaml").write_text("cases: [not, a, case]\n")
    rules = tmp_path / "rules"
    os.symlink("v1", rules)
    real_run_suites = suites.run_suites
    read_from: list[Path] = []

    def swapping(ruleset: CompiledRuleset, rules_dir: Path) -> list[Any]:
        if not read_from:
            os.symlink("v2", tmp_path / "tmp")
            os.replace(tmp_path / "tmp", rules)
        read_from.append(rules_dir)
        return real_run_suites(ruleset, rules_dir)

    monkeypatch.setattr(suites, "run_suites", swapping)
    with pytest.raises(RulesetError) as refused:
        compile_and_test(rules, new_engine("cel-python"))
    assert read_from[0] == tmp_path / "v1"  # the tests of the revision compiled, not v2's
    assert [p.message for p in refused.value.problems] == [
        "a new revision was swapped in during the load; the next load reads it"
    ]
    with pytest.raises(RulesetError) as broken:
        compile_and_test(rules, new_engine("cel-python"))
    assert all("v2/tests/b2b.yaml" in p.file for p in broken.value.problems)


@pytest.mark.parametrize("engine", ["cel-python", "cel-expr"])
def test_a_revision_deleted_while_it_is_read_is_refused_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """As the kubelet does: swap `..data` to a new revision and delete the old one at once.
    A load still reading the old one fails however it fails (a file gone, fewer suites on
    the second engine), and says only that the revision was swapped."""
    for name in ("v1", "v2"):
        shutil.copytree(RULES, tmp_path / name)
    rules = tmp_path / "rules"
    os.symlink("v1", rules)
    real_run_suites = suites.run_suites

    def deleting(ruleset: CompiledRuleset, rules_dir: Path) -> list[Any]:
        if (tmp_path / "v1").exists():
            os.symlink("v2", tmp_path / "tmp")
            os.replace(tmp_path / "tmp", rules)
            shutil.rmtree(tmp_path / "v1")
        return real_run_suites(ruleset, rules_dir)

    monkeypatch.setattr(suites, "run_suites", deleting)
    with pytest.raises(RulesetError) as refused:
        compile_and_test(rules, new_engine(engine))
    assert [p.message for p in refused.value.problems] == [suites.SWAPPED]
    assert compile_and_test(rules, new_engine(engine)).files  # the next load reads v2
