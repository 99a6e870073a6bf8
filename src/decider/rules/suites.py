"""Rule test suites: rules/tests/*.yaml, each case a request and the decision it must get.

A case names a profile (a fixture of the file, inline, "unavailable" for a profile source
that failed, or nothing for an unknown visitor), the context, `now`, the banner consent and
Sec-GPC, and what it expects. Cases run through the same `decide` as the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from decider.errors import InvalidRequest, Problem, RulesetError, meant
from decider.experiments import HOLDOUT
from decider.model import Decision, Instant
from decider.rules.cel import installed_engines, new_engine
from decider.rules.compiler import compile_ruleset
from decider.rules.explain import (
    UNAVAILABLE,
    Fixture,
    offline_decision,
    resolution_of,
    trace_lines,
)
from decider.rules.files import display_name, read_yaml, revision_dir, yaml_files
from decider.ruleset import CompiledPlacement, CompiledRuleset, Engine
from decider.traits import TraitError


class Expect(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    variant: str
    segment: str | msgspec.UnsetType | None = msgspec.UNSET
    personalized: bool | msgspec.UnsetType = msgspec.UNSET
    suppressed: bool | msgspec.UnsetType = msgspec.UNSET
    # the placement experiment's arm: holdout, control, a treatment's id, or null for none
    arm: str | msgspec.UnsetType | None = msgspec.UNSET


class Case(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    placement: str
    now: Instant
    expect: Expect
    profile: str | Fixture | None = None
    channel: str | None = None  # checked against the rules, as a request's
    context: dict[str, Any] = {}
    consent: tuple[str, ...] | None = None
    gpc: bool = False


class Suite(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cases: tuple[Case, ...]
    fixtures: dict[str, Fixture] = {}


class Mismatch(msgspec.Struct, frozen=True):
    field: str
    expected: Any
    actual: Any


class SuiteFile(msgspec.Struct, frozen=True):
    """A decoded suite and the place (line, column) each of its cases starts at."""

    name: str
    suite: Suite
    places: tuple[tuple[int, int], ...]


class CaseResult(msgspec.Struct, frozen=True):
    file: str
    line: int
    column: int
    case: str
    decision: Decision | None
    mismatches: tuple[Mismatch, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None


def suite_files(rules_dir: Path) -> list[Path]:
    return yaml_files(rules_dir / "tests")


def load_suite(path: Path, name: str) -> SuiteFile:
    """Decode one suite file; a bad one raises RulesetError with its place."""
    document = read_yaml(path, name)
    suite = document.convert(Suite)
    marks = (document.mark(("cases", i)) for i in range(len(suite.cases)))
    return SuiteFile(name, suite, tuple((m.line, m.column) for m in marks))


def run_suite(ruleset: CompiledRuleset, file: SuiteFile) -> list[CaseResult]:
    return [
        _run_case(ruleset, file.suite, case, file.name, place)
        for case, place in zip(file.suite.cases, file.places, strict=True)
    ]


def run_suites(ruleset: CompiledRuleset, rules_dir: Path) -> list[CaseResult]:
    """Every case of every suite file; bad suite files raise RulesetError, all at once."""
    results: list[CaseResult] = []
    problems: list[Problem] = []
    for path in suite_files(rules_dir):
        name = display_name(path)
        try:
            suite = load_suite(path, name)
        except RulesetError as exc:
            problems.extend(exc.problems)
            continue
        results.extend(run_suite(ruleset, suite))
    if problems:
        raise RulesetError(problems)
    return results


def _run_case(
    ruleset: CompiledRuleset, suite: Suite, case: Case, file: str, place: tuple[int, int]
) -> CaseResult:
    profile = case.profile
    if isinstance(profile, str) and profile != UNAVAILABLE:
        if profile not in suite.fixtures:
            why = f"no fixture named {profile!r}{meant(profile, suite.fixtures)}"
            return CaseResult(file, *place, case.name, None, error=why)
        profile = suite.fixtures[profile]
    try:
        resolution = resolution_of(
            profile if isinstance(profile, Fixture) else None,
            unavailable=profile == UNAVAILABLE,
            schema=ruleset.schema,
        )
    except TraitError as exc:  # a profile no source would hold
        return CaseResult(file, *place, case.name, None, error=f"profile: {exc}")
    try:
        decision = offline_decision(
            ruleset,
            resolution,
            placement=case.placement,
            now=case.now,
            channel=case.channel,
            context=case.context,
            consent=case.consent,
            gpc=case.gpc,
            decision_id=case.name,
        )
    except InvalidRequest as exc:
        return CaseResult(file, *place, case.name, None, error=str(exc))
    except Exception as exc:  # a case that cannot run fails; it must not end the run
        return CaseResult(file, *place, case.name, None, error=f"could not run: {exc!r}")
    unmeetable = _unmeetable(ruleset, ruleset.placements[case.placement], case.expect)
    if unmeetable is not None:
        return CaseResult(file, *place, case.name, decision, error=unmeetable)
    return CaseResult(file, *place, case.name, decision, tuple(_compare(case.expect, decision)))


def _unmeetable(
    ruleset: CompiledRuleset, placement: CompiledPlacement, expect: Expect
) -> str | None:
    """An expectation no decision could meet, said as such: a misspelt segment, variant or
    arm is a mistake in the test, not in the rules."""
    segments = [segment.id for segment in ruleset.segments]
    if isinstance(expect.segment, str) and expect.segment not in segments:
        return f"expect.segment: no segment {expect.segment!r} in the rules" + meant(
            expect.segment, segments
        )
    experiment = placement.experiment
    arms = [arm for split in experiment.splits.values() for arm in split.arms] if experiment else []
    variants = {placement.default.id, *(v.id for v in placement.variants.values())}
    variants |= {arm.variant.id for arm in arms}
    if expect.variant not in variants:
        return f"expect.variant: {expect.variant!r} is no variant of {placement.id}" + meant(
            expect.variant, variants
        )
    if isinstance(expect.arm, str):
        if experiment is None:
            return f"expect.arm: {placement.id} runs no experiment (expect arm: null)"
        names = {HOLDOUT, *(arm.id for arm in arms)}
        if expect.arm not in names:
            return f"expect.arm: {expect.arm!r} is no arm of {experiment.id}" + meant(
                expect.arm, names
            )
    return None


def _compare(expect: Expect, decision: Decision) -> list[Mismatch]:
    actual = {
        "segment": decision.segment,
        "variant": decision.variant.id,
        "personalized": decision.personalized,
        "suppressed": decision.suppressed,
        "arm": decision.arm,
    }
    wanted = {
        name: value for name in actual if (value := getattr(expect, name)) is not msgspec.UNSET
    }
    return [Mismatch(k, v, actual[k]) for k, v in wanted.items() if actual[k] != v]


def format_result(result: CaseResult) -> str:
    """A failure as a rule author reads it: expected against actual, then the trace."""
    lines = [f"FAIL {result.file}:{result.line}:{result.column}: {result.case}"]
    if result.error:
        lines.append(f"  error: {result.error}")
    for m in result.mismatches:
        lines.append(f"  {m.field}: expected {m.expected!r}, got {m.actual!r}")
    if result.decision is not None:
        lines += trace_lines(result.decision)
    return "\n".join(lines)


def failure_problem(result: CaseResult) -> Problem:
    """A failed case as a problem of the ruleset, placed at the case."""
    what = result.error or "; ".join(
        f"{m.field} expected {m.expected!r}, got {m.actual!r}" for m in result.mismatches
    )
    return Problem(
        result.file,
        result.line,
        result.column,
        f"rule test {result.case!r} fails: {what}",
        kind="test_failure",
    )


def disagreements(
    ruleset: CompiledRuleset, rules_dir: Path, results: list[CaseResult]
) -> list[Problem]:
    """Every rule test that another installed engine decides differently, as an error at
    the case: rules are written and tested once, and must mean the same on either engine.
    Files that changed between the two compilations are one problem, CHANGED, not a
    disagreement on every case."""
    problems: list[Problem] = []
    mine = ruleset.engine.name
    for name in installed_engines():
        if name == mine:
            continue
        try:
            compiled = compile_ruleset(rules_dir, new_engine(name))
            if compiled.version != ruleset.version:  # an edit landed between the two reads
                return [Problem(str(rules_dir), 1, 1, CHANGED)]
            other = run_suites(compiled, rules_dir)
        except RulesetError as exc:
            problems += [
                Problem(p.file, p.line, p.column, f"loads on {mine} but not on {name}: {p.message}")
                for p in exc.problems
            ]
            continue
        for result, theirs in zip(results, other, strict=True):
            if _comparable(result) != _comparable(theirs):
                problems.append(
                    Problem(
                        result.file,
                        result.line,
                        result.column,
                        f"the engines disagree on rule test {result.case!r}: "
                        f"{_apart(result, theirs, mine, name)}",
                    )
                )
    return problems


def _comparable(result: CaseResult) -> tuple[Decision | None, str | None]:
    """A case's decision and trace, but not the runtimes' own words for an error."""
    decision = result.decision
    return (_quiet(decision) if decision is not None else None), result.error


def _quiet(decision: Decision) -> Decision:
    if not decision.explain:
        return decision
    quiet = tuple(msgspec.structs.replace(o, error=None) for o in decision.explain)
    return msgspec.structs.replace(decision, explain=quiet)


def _apart(mine: CaseResult, theirs: CaseResult, my_name: str, their_name: str) -> str:
    """How two engines' results of a case differ: the answers, or, when those read alike,
    the first segment of the trace, or reason, that differs."""
    said = _outcome(mine), _outcome(theirs)
    if said[0] != said[1] or mine.decision is None or theirs.decision is None:
        return f"{my_name} gives {said[0]}, {their_name} gives {said[1]}"
    ours, other = _quiet(mine.decision), _quiet(theirs.decision)
    for one, two in zip(ours.explain or (), other.explain or (), strict=False):
        if one != two:
            return (
                f"both give {said[0]}, but segment {one.segment} is {one.outcome} on "
                f"{my_name} and {two.outcome} on {their_name}"
            )
    for why, other_why in zip(ours.reasons, other.reasons, strict=False):
        if why != other_why:
            return (
                f"both give {said[0]}, but {my_name} says {why.code} ({why.message}) where "
                f"{their_name} says {other_why.code} ({other_why.message})"
            )
    return f"both give {said[0]}, with other details (decider explain shows each)"


def _outcome(result: CaseResult) -> str:
    if result.decision is None:
        return f"an error ({result.error})"
    d = result.decision
    return (
        f"segment {d.segment!r}, variant {d.variant.id!r}, personalized {d.personalized}, "
        f"suppressed {d.suppressed}"
    )


SWAPPED = "a new revision was swapped in during the load; the next load reads it"
CHANGED = "the rule files changed while they were loaded; the next load reads them"


def _swapped(rules_dir: Path, revision: Path) -> bool:
    try:
        return revision_dir(rules_dir) != revision or not revision.is_dir()
    except OSError:
        return True


def _compile_and_test(revision: Path, engine: Engine) -> CompiledRuleset:
    ruleset = compile_ruleset(revision, engine)
    try:
        results = run_suites(ruleset, revision)
    except RulesetError as exc:
        raise RulesetError(exc.problems, ruleset.warnings) from None
    failures = [failure_problem(r) for r in results if not r.passed]
    failures += disagreements(ruleset, revision, results)
    if failures:
        raise RulesetError(failures, ruleset.warnings)
    return ruleset


def compile_and_test(rules_dir: Path, engine: Engine) -> CompiledRuleset:
    """What the server loads: the rules compiled, their own test suites passing, and every
    installed engine deciding each case alike.

    Every file is read from one revision of `rules_dir` (see `revision_dir`), so a new
    revision swapped in meanwhile is not read half; one swapped out during the load (and
    perhaps deleted as it was read) is refused. Raises RulesetError with every compile
    problem, or else every failing case."""
    revision = revision_dir(rules_dir)
    try:
        ruleset = _compile_and_test(revision, engine)
    except (RulesetError, OSError, ValueError):
        if _swapped(rules_dir, revision):  # what failed was reading a revision being removed
            raise RulesetError([Problem(str(rules_dir), 1, 1, SWAPPED)]) from None
        raise
    if _swapped(rules_dir, revision):
        raise RulesetError([Problem(str(rules_dir), 1, 1, SWAPPED)], ruleset.warnings)
    return ruleset
