"""Rule test suites: rules/tests/*.yaml, each case a request and the decision it must get.

A case names a profile (a fixture of the file, inline, "unavailable" for a profile source
that failed, or nothing for an unknown visitor), the context, `now`, the banner consent and
Sec-GPC, and what it expects. Cases run through the same `decide` as the server.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from decider.compiler import CompiledRuleset
from decider.engine import decide
from decider.errors import InvalidRequest, Problem, RulesetError
from decider.model import ConsentSignal, DecideRequest, Decision, Identity
from decider.profile import AccountProfile, Resolution, VisitorProfile
from decider.rules import display_name, read_yaml

UNAVAILABLE = "unavailable"


class Fixture(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    visitor: VisitorProfile | None = None
    account: AccountProfile | None = None


class Expect(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    variant: str
    segment: str | msgspec.UnsetType | None = msgspec.UNSET
    personalized: bool | msgspec.UnsetType = msgspec.UNSET
    suppressed: bool | msgspec.UnsetType = msgspec.UNSET


class Case(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    placement: str
    now: datetime
    expect: Expect
    profile: str | Fixture | None = None
    channel: Literal["web", "email"] | None = None
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


class CaseResult(msgspec.Struct, frozen=True):
    file: str
    case: str
    decision: Decision | None
    mismatches: tuple[Mismatch, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None


def suite_files(rules_dir: Path) -> list[Path]:
    return sorted((rules_dir / "tests").glob("*.yaml"))


def load_suite(path: Path, name: str) -> Suite:
    """Decode one suite file; a bad one raises RulesetError with its place."""
    return read_yaml(path, name).convert(Suite)


def run_suite(ruleset: CompiledRuleset, suite: Suite, file: str) -> list[CaseResult]:
    return [_run_case(ruleset, suite, case, file) for case in suite.cases]


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
        results.extend(run_suite(ruleset, suite, name))
    if problems:
        raise RulesetError(problems)
    return results


def _run_case(ruleset: CompiledRuleset, suite: Suite, case: Case, file: str) -> CaseResult:
    try:
        resolution = _resolution(suite, case)
    except KeyError:
        return CaseResult(file, case.name, None, error=f"no fixture named {case.profile!r}")
    visitor_id = resolution.visitor.id if resolution.visitor else "test-visitor"
    request = DecideRequest(
        placement=case.placement,
        identity=Identity(visitor_id=visitor_id),
        channel=case.channel,
        context=case.context,
        consent=ConsentSignal(case.consent) if case.consent is not None else None,
        explain=True,
    )
    try:
        decision = decide(
            ruleset, request, resolution, now=case.now, gpc=case.gpc, decision_id=case.name
        ).decision
    except InvalidRequest as exc:
        return CaseResult(file, case.name, None, error=str(exc))
    return CaseResult(file, case.name, decision, tuple(_compare(case.expect, decision)))


def _resolution(suite: Suite, case: Case) -> Resolution:
    profile = case.profile
    if profile == UNAVAILABLE:
        return Resolution("unavailable")
    if isinstance(profile, str):
        profile = suite.fixtures[profile]
    if profile is None or (profile.visitor is None and profile.account is None):
        return Resolution("unknown")
    return Resolution("resolved", profile.visitor, profile.account)


def _compare(expect: Expect, decision: Decision) -> list[Mismatch]:
    actual = {
        "segment": decision.segment,
        "variant": decision.variant.id,
        "personalized": decision.personalized,
        "suppressed": decision.suppressed,
    }
    wanted = {
        name: value
        for name in ("segment", "variant", "personalized", "suppressed")
        if (value := getattr(expect, name)) is not msgspec.UNSET
    }
    return [Mismatch(k, v, actual[k]) for k, v in wanted.items() if actual[k] != v]


def format_result(result: CaseResult) -> str:
    """A failure as a rule author reads it: expected against actual, then the trace."""
    lines = [f"FAIL {result.file}: {result.case}"]
    if result.error:
        lines.append(f"  error: {result.error}")
    for m in result.mismatches:
        lines.append(f"  {m.field}: expected {m.expected!r}, got {m.actual!r}")
    if result.decision is not None:
        lines.append("  reasons:")
        lines += [f"    - {r.code}: {r.message}" for r in result.decision.reasons]
        lines.append("  segments:")
        for o in result.decision.explain or ():
            error = f" ({o.error})" if o.error else ""
            lines.append(f"    {o.priority:>5}  {o.segment}: {o.outcome}{error}")
    return "\n".join(lines)
