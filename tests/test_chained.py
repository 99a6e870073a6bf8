"""Chained first matches decide exactly as segments evaluated one by one.

The compiler plans the first match as runs of segments chained into one program each
(`decider.rules.compiler.plan`); the engine falls back to one-by-one evaluation wherever a
chain fails. Over generated rulebooks (rule-like conditions, conditions that fail on some
data, comprehensions, conditions nested too deep to chain) and generated profiles and
contexts, with and without consent, on both engines, the decision and every outcome (what
stats count) equal those of the one-by-one path, which a ruleset without plans takes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st

from decider.engine import Evaluated, decide
from decider.model import ConsentSignal, DecideRequest, Identity, Variant, json_value_problem
from decider.profile import AccountProfile, Resolution, VisitorProfile
from decider.rules.cel import CelCompileErrors, new_engine
from decider.rules.compiler import compile_ruleset, condition, plan
from decider.ruleset import (
    ChannelPolicy,
    CompiledPlacement,
    CompiledRuleset,
    CompiledSegment,
    Engine,
    Group,
    Lookup,
    MatchPlan,
    Program,
    Run,
)
from decider.stats import Stats
from decider.traits import TraitError, normalize

from .celgen import expressions, profiles
from .conftest import generated_cases

pytestmark = pytest.mark.usefixtures("no_cel_clock")

CASES = int(os.environ.get("PARITY_CASES", "1000"))
NOW = datetime(2026, 11, 26, 15, 4, 5, tzinfo=UTC)
ENGINES = {name: new_engine(name) for name in ("cel-expr", "cel-python")}
PLACEMENT = CompiledPlacement(
    id="p",
    channel="web",
    slots=("hero",),
    tags=frozenset(),
    default=Variant("default", {"hero": "h"}),
    variants={},
)
POLICY = {"web": ChannelPolicy(purposes=("personalization",))}

# conditions that rarely hold, so that first matches come late and chains run long
QUIET = (
    "false",
    "has(context.zz)",
    'has(context.s) && context.s == "never"',
    "has(visitor.n) && visitor.n == 424242",
    'has(account.stage) && account.stage == "nope"',
    "has(account.tags) && size(account.tags) > 100",
    "// a comment at the end\nhas(visitor.zz)",
    "has(context.b) ? context.b == 42 : false",
)
# conditions that fail on much of the data (missing keys, wrong types, division by zero)
FAILING = (
    "context.zz > 1",
    "visitor.n + 1 > 2",
    "account.n / 0 == 1",
    "int(context.s) > 0",
    "visitor.m.a == 1",
    'timestamp(account.t) > now - duration("1h")',
    "dyn(context.n)",
)
# comprehensions: never chained (one evaluation's macros share one step budget)
ITERATING = (
    "has(context.l) && context.l.exists(x, x == 1)",
    'has(visitor.tags) && visitor.tags.all(t, t != "")',
    "has(account.l) && account.l.map(x, x).size() > 2",
    "[1, 2, 3].exists_one(x, has(context.n) && x == context.n)",
)
# deeper than a chain can hold (the C++ parser's nesting limit): chains split around them
DEEP = ("(" * 31 + "has(context.b) && context.b" + ")" * 31,)
conditions = st.one_of(
    expressions(),
    st.sampled_from(QUIET),
    st.sampled_from(QUIET),
    st.sampled_from(FAILING),
    st.sampled_from(ITERATING),
    st.sampled_from(DEEP),
)
_programs: dict[tuple[str, str], Program | None] = {}


def compiled(engine: Engine, source: str) -> Program | None:
    """`source` compiled once per engine, or None where it is refused at load."""
    key = (engine.name, source)
    if key not in _programs:
        try:
            _programs[key] = engine.compile(source)
        except CelCompileErrors:
            _programs[key] = None
    return _programs[key]


def rulebook(
    engine: Engine, sources: list[str], size: int, *, indexed: bool | None = None
) -> CompiledRuleset:
    """Segments in the given order (as the compiler builds them, what loads, with their
    guards), planned with chains of `size`, grouped by their guards as `indexed` says."""
    segments = []
    for n, source in enumerate(sources):
        program = compiled(engine, source)
        if program is None:
            continue
        segments.append(
            CompiledSegment(
                f"s{n:03d}",
                len(sources) - n,
                "generated",
                "test",
                "gen",
                1,
                condition(program, source),
            )
        )
    return CompiledRuleset(
        version="test",
        engine=engine,
        files=(),
        segments=tuple(segments),
        placements={"p": PLACEMENT},
        policy=POLICY,
        suppressions=(),
        consented=plan(engine, segments, consented=True, size=size, indexed=indexed),
        contextual=plan(engine, segments, consented=False, size=size, indexed=indexed),
    )


def one_by_one(ruleset: CompiledRuleset) -> CompiledRuleset:
    """The same ruleset without plans: every segment evaluated alone, in order."""
    return msgspec.structs.replace(ruleset, consented=None, contextual=None)


def decided(
    ruleset: CompiledRuleset,
    data: tuple[Any, Any, Any],
    consented: bool,
    placement: CompiledPlacement = PLACEMENT,
) -> Evaluated:
    visitor, account, context = data
    resolution = Resolution(
        "resolved",
        VisitorProfile(id="v", account_id="a", traits=visitor),
        AccountProfile(id="a", traits=account),
    )
    request = DecideRequest(
        placement="p",
        identity=Identity(visitor_id="v"),
        context=context,
        consent=ConsentSignal(("personalization",) if consented else ()),
    )
    return decide(ruleset, placement, request, resolution, now=NOW, gpc=False, decision_id="d")


def entered(visitor: Any, account: Any, context: Any) -> tuple[Any, Any, Any] | None:
    """The values as the service would hold them, or None where it would refuse them."""
    try:
        visitor, account = normalize(visitor, None), normalize(account, None)
    except TraitError:
        return None
    if json_value_problem(context, "context") is not None:
        return None
    return visitor, account, context


def counted(stats: Stats) -> dict[str, Any]:
    return {"decisions": stats.decisions, "segments": msgspec.to_builtins(stats.segments)}


def assert_same(ruleset: CompiledRuleset, data: tuple[Any, Any, Any], consented: bool) -> None:
    chained, alone = (
        decided(ruleset, data, consented),
        decided(one_by_one(ruleset), data, consented),
    )
    assert chained == alone, data
    ours, theirs = Stats(NOW), Stats(NOW)
    ours.record(chained, NOW)
    theirs.record(alone, NOW)
    assert counted(ours) == counted(theirs)


cases = st.tuples(
    st.integers(1, 60).flatmap(lambda n: st.lists(conditions, min_size=n, max_size=n)),
    st.sampled_from((2, 3, 7, 25)),
    st.lists(st.tuples(profiles, profiles, profiles, st.booleans()), min_size=1, max_size=6),
)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_chained_first_match_equals_one_by_one(engine_name: str) -> None:
    engine = ENGINES[engine_name]

    @seed(7)
    @generated_cases(CASES)
    @given(cases)
    def same(case: tuple[list[str], int, list[tuple[Any, Any, Any, bool]]]) -> None:
        sources, size, people = case
        ruleset = rulebook(engine, sources, size)
        for *raw, consented in people:
            data = entered(*raw)
            if data is not None:
                assert_same(ruleset, data, consented)

    same()


def groups(plan: MatchPlan) -> list[Group]:
    """Every group of `plan`, once each, in order of their first segment."""
    found = {id(g): g for lookup in plan.lookups for g in _outcomes(lookup)}
    if plan.unguarded is not None:
        found[id(plan.unguarded)] = plan.unguarded
    return sorted(found.values(), key=lambda g: g.first)


def _outcomes(lookup: Lookup) -> list[Group]:
    """The groups a lookup may name, whatever the path holds."""
    equal = [g for found in lookup.equal.values() for g in found]
    return [*equal, *lookup.other, *lookup.missing, *lookup.unknown]


def runs(plan: MatchPlan) -> list[Run]:
    return [run for group in groups(plan) for run in group.runs]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_chains_cover_what_each_mode_evaluates(engine_name: str) -> None:
    """Groups hold only segments evaluated in their mode, each group's runs its members in
    order; chains only conditions without a comprehension; a chain the runtime refuses
    (nested too deep) is split, never dropped."""
    engine = ENGINES[engine_name]
    sources = [
        *(f"has(context.c) && context.c == {n}" for n in range(30)),  # one has() group
        "has(visitor.n) && visitor.n > 1",
        "context.l.exists(x, x == 1)",
        DEEP[0],
        *(f"has(account.a) && account.a > {n}" for n in range(5)),
    ]
    ruleset = rulebook(engine, sources, 25)
    for mode in (ruleset.consented, ruleset.contextual):
        assert mode is not None
        evaluated = {i for i, o in enumerate(mode.passed) if o.outcome == "not_matched"}
        assert {i for group in groups(mode) for run in group.runs for i in run.members} == (
            evaluated
        )
        for group in groups(mode):
            members = [i for run in group.runs for i in run.members]
            assert members == sorted(set(members))
            assert group.first == members[0]
    assert ruleset.contextual is not None
    assert ruleset.consented is not None
    assert [o.outcome for o in ruleset.contextual.passed[30:]] == ["skipped_consent"] + [
        "not_matched"
    ] * 2 + ["skipped_consent"] * 5
    chained = {i for run in runs(ruleset.consented) if run.chain for i in run.members}
    assert chained >= set(range(25)) | {33, 34, 35}
    assert 31 not in chained  # the comprehension
    if engine_name == "cel-expr":  # its parser takes the deep one alone only
        assert 32 not in chained


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_chain_spends_no_segments_step_budget(engine_name: str) -> None:
    """Three comprehensions that each fit the 9,999-step budget alone, but not together,
    and a segment after them: none of them fails, and the last one wins."""
    engine = ENGINES[engine_name]
    spend = "context.l.all(x, context.l.all(y, y >= 0)) && false"  # 60 * 61 steps
    sources = [spend, "false", spend, "false", spend, "true"]
    ruleset = rulebook(engine, sources, 25)
    context = {"l": list(range(60))}
    evaluated = decided(ruleset, ({}, {}, context), True)
    assert evaluated.decision.segment == "s005"
    assert [o.outcome for o in evaluated.outcomes] == ["not_matched"] * 5 + ["matched"]
    assert_same(ruleset, ({}, {}, context), True)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_failing_chain_falls_back_to_each_segment(engine_name: str) -> None:
    """An error within a chain: the segment that fails counts an error, later ones still
    get their chance, earlier ones did not match."""
    engine = ENGINES[engine_name]
    sources = ["false", "context.zz > 1", "has(context.b)", "context.s + 1 == 2", "true"]
    ruleset = rulebook(engine, sources, 25)
    assert ruleset.consented is not None
    assert len(runs(ruleset.consented)) == 1
    assert runs(ruleset.consented)[0].chain is not None
    evaluated = decided(ruleset, ({}, {}, {"s": "x"}), True)
    assert evaluated.decision.segment == "s004"
    assert [o.outcome for o in evaluated.outcomes] == [
        "not_matched",
        "error",
        "not_matched",
        "error",
        "matched",
    ]
    assert_same(ruleset, ({}, {}, {"s": "x"}), True)
    assert decided(ruleset, ({}, {}, {"b": 1}), True).decision.segment == "s002"


def test_compiled_rules_are_planned(rules_copy: Path) -> None:
    """compile_ruleset plans both modes; `chain_size=1` evaluates every segment alone."""
    engine = ENGINES["cel-expr"]
    lines = ["segments:"]
    for n in range(60):
        when = f"has(context.c) && context.c == {n}"
        lines.append(
            f"  - {{id: g{n:02d}, description: d, owner: o, priority: {n}, when: '{when}'}}"
        )
    (rules_copy / "zz_generated.yaml").write_text("\n".join(lines) + "\n")
    ruleset = compile_ruleset(rules_copy, engine)
    assert ruleset.consented is not None
    assert ruleset.contextual is not None
    assert sum(run.chain is not None for run in runs(ruleset.consented)) >= 3
    alone = compile_ruleset(rules_copy, engine, chain_size=1)
    assert alone.consented is not None
    assert all(run.chain is None for run in runs(alone.consented))
    assert all(len(run.members) == 1 for run in runs(alone.consented))
