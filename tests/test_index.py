"""The first match along the guard index decides exactly as segments evaluated one by one.

The compiler groups each consent mode's segments by their guards (`decider.index`); per
request the raw values rule groups out, and the rest are evaluated in order of their first
segment. Over generated rulebooks whose conditions are guarded in every way (has() and
equality on fields present, absent, holding no string, nested, behind a missing map; `in`
lists; guards beside conditions that fail, iterate or build maps; contextual ones) and
generated profiles and contexts, with and without consent, on both engines, the winner
and every outcome equal those of evaluating each segment alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st

from decider.engine import Evaluated, decide
from decider.model import ConsentSignal, DecideRequest, Identity
from decider.profile import AccountProfile, Person, Resolution, VisitorProfile
from decider.rules.compiler import CHAIN_SIZE, compile_ruleset, condition, plan
from decider.ruleset import CompiledPlacement, CompiledRuleset, CompiledSuppression, Engine, Program

from .celgen import profiles
from .conftest import generated_cases
from .test_chained import (
    CASES,
    ENGINES,
    NOW,
    PLACEMENT,
    assert_same,
    compiled,
    conditions,
    decided,
    entered,
    rulebook,
)

pytestmark = pytest.mark.usefixtures("no_cel_clock")

Data = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]  # visitor, account, context

# the fields guards test: the data holds `stage` (mostly a string), `s`, `m` (a map) and
# others, never `zz`; each rulebook guards a few of them, so that segments share paths
ROOTS = ("context", "visitor", "account")
PATHS = ("stage", "stage", "s", "n", "m", "a", "zz", "m.s", "m.zz", "zz.s", "s.x")
FIELDS = st.builds(
    lambda root, path: f"{root}.{path}", st.sampled_from(ROOTS), st.sampled_from(PATHS)
)
LITERALS = ("evaluation", "purchase", "Evaluation", "", "a", "nope")


def literal(text: str) -> str:
    return msgspec.json.encode(text).decode()


@st.composite
def guard(draw: st.DrawFn, fields: list[str], *, tested: bool) -> str:
    """A guard on one of `fields`: a has() if `tested`; else any, or a near miss that is none
    (a has() negated, a literal not a string)."""
    field = draw(st.sampled_from(fields))
    if tested:
        return f"has({field})"
    value = literal(draw(st.sampled_from(LITERALS)))
    values = ", ".join(literal(v) for v in draw(st.lists(st.sampled_from(LITERALS), max_size=3)))
    return draw(
        st.sampled_from(
            (
                f"has({field})",
                f"has({field})",
                f"{field} == {value}",
                f"{field} == {value}",
                f"{value} == {field}",
                f"{field} in [{values}]",
                f"!has({field})",
                f"{field} != {value}",
                f"{field} == 1",
                f"({field} == {value} || has({field}))",
            )
        )
    )


# beside guards: what fails on much of the data, and what `&&` does not absorb: running out
# of comprehension steps (both engines), a duplicate map key (both)
_RANGE = f"[{', '.join(map(str, range(22)))}]"
HARD = (
    "context.zz > 1",
    "account.n / 0 == 1",
    "int(visitor.s) > 0",
    "has(context.l) && context.l.exists(x, x == 1)",
    f"{_RANGE}.all(x, {_RANGE}.all(y, {_RANGE}.all(z, true)))",
    "{context.stage: 1, context.stage: 2}.size() == 2",
    '{"a": 1}.size() == 1',
)


@st.composite
def guarded(draw: st.DrawFn, fields: list[str], *, tested: bool = False) -> str:
    """Guards and other conditions joined by &&, in any order, some parenthesized."""
    parts = draw(st.lists(guard(fields, tested=tested), min_size=1, max_size=3))
    for hard in draw(st.lists(st.booleans(), max_size=2)):
        parts.append(draw(st.sampled_from(HARD) if hard else conditions))
    parts = [f"({p})" for p in draw(st.permutations(parts))]
    if len(parts) > 2 and draw(st.booleans()):
        parts = [f"({parts[0]} && {parts[1]})", *parts[2:]]
    return " && ".join(parts)


@st.composite
def rulebooks(draw: st.DrawFn) -> list[str]:
    """Up to 40 conditions, most guarded on a few fields (some by has() alone)."""
    fields = draw(st.lists(FIELDS, min_size=1, max_size=3, unique=True))
    some = st.one_of(guarded(fields), guarded(fields, tested=True), conditions)
    size = draw(st.integers(1, 40))
    return draw(st.lists(some, min_size=size, max_size=size))


# profiles and contexts as generated, and as often with strings the guards name
named = st.builds(
    lambda record, stage, s: {**record, "stage": stage, "s": s},
    profiles,
    st.sampled_from(LITERALS),
    st.sampled_from(LITERALS),
)
records = st.one_of(profiles, named)
cases = st.tuples(
    rulebooks(),
    st.sampled_from((1, 2, 3, 25)),
    st.lists(st.tuples(records, records, records, st.booleans()), min_size=1, max_size=6),
)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_indexed_first_match_equals_one_by_one(engine_name: str) -> None:
    engine = ENGINES[engine_name]

    @seed(11)
    @generated_cases(CASES)
    @given(cases)
    def same(case: tuple[list[str], int, list[tuple[Any, Any, Any, bool]]]) -> None:
        sources, size, people = case
        ruleset = rulebook(engine, sources, size, indexed=True)
        for *raw, consented in people:
            data = entered(*raw)
            if data is not None:
                assert_same(ruleset, data, consented)

    same()


class Counted:
    """A program that counts its evaluations (so the engine does not chain it)."""

    def __init__(self, program: Program, calls: list[int], index: int) -> None:
        self.program, self.calls, self.index = program, calls, index

    def matches(self, activation: Any) -> bool:
        self.calls.append(self.index)
        return self.program.matches(activation)


def counted(engine: Engine, sources: list[str]) -> tuple[CompiledRuleset, list[int]]:
    """`sources` as a rulebook whose segments record, in `calls`, each time they run."""
    calls: list[int] = []
    ruleset = rulebook(engine, sources, 25, indexed=True)
    segments = tuple(
        msgspec.structs.replace(
            s,
            condition=msgspec.structs.replace(
                s.condition, program=Counted(s.condition.program, calls, i)
            ),
        )
        for i, s in enumerate(ruleset.segments)
    )
    plans = [plan(engine, segments, consented=c, size=25, indexed=True) for c in (True, False)]
    ruleset = msgspec.structs.replace(
        ruleset, segments=segments, consented=plans[0], contextual=plans[1]
    )
    return ruleset, calls


@pytest.mark.parametrize("engine_name", ENGINES)
def test_only_what_the_values_cannot_rule_out_is_evaluated(engine_name: str) -> None:
    """Segments whose equality guard names another stage, or whose has() field is absent,
    are not evaluated; nor is anything after the first match."""
    sources = [
        *(f'account.stage == "stage_{n}" && account.fit > {n}' for n in range(10)),
        *(f"has(context.c{n}) && context.c{n} > 0" for n in range(5)),
        'has(account.stage) && account.stage in ["stage_3", "stage_4"]',
        "account.fit > 50",  # unguarded
        'account.stage == "stage_7"',
        "true",
    ]
    ruleset, calls = counted(ENGINES[engine_name], sources)
    data: Data = ({}, {"stage": "stage_4", "fit": 1}, {"c2": 0})
    evaluated = decided(ruleset, data, True)
    assert evaluated.decision.segment == "s015"
    assert sorted(calls) == [4, 12, 15]  # stage_4's equality, c2 present, the `in`
    assert evaluated == decided(msgspec.structs.replace(ruleset, consented=None), data, True)

    calls.clear()
    data = ({}, {"stage": "stage_7", "fit": 5}, {})
    assert decided(ruleset, data, True).decision.segment == "s017"
    assert sorted(calls) == [7, 16, 17]  # stage_7's group (s007, s017), the unguarded one


@pytest.mark.parametrize("engine_name", ENGINES)
def test_errors_count_only_before_the_winner(engine_name: str) -> None:
    """Groups are evaluated out of priority order; an error counts only for a segment before
    the winner, and a segment ruled out did not match."""
    sources = [
        "has(context.m) && context.m.x > 1",  # errors: m has no x
        'context.stage == "b" && context.n > 1',  # ruled out
        'context.stage == "a" && context.n > 1',  # wins
        "has(context.m) && context.zz > 1",  # errors, but after the winner
        "true",
    ]
    ruleset, _ = counted(ENGINES[engine_name], sources)
    data: Data = ({}, {}, {"m": {}, "stage": "a", "n": 2})
    evaluated = decided(ruleset, data, False)
    assert evaluated.decision.segment == "s002"
    assert [o.outcome for o in evaluated.outcomes] == ["error", "not_matched", "matched"]
    assert_same(ruleset, data, False)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_no_guard_where_and_absorbs_no_failure(engine_name: str) -> None:
    """Running out of comprehension steps fails a condition whatever `&&` stands beside it,
    and so does a duplicate map key (both engines): such a condition has no guards, so a
    false has() beside it does not rule it out."""
    sources = [
        f"{_RANGE}.all(x, {_RANGE}.all(y, {_RANGE}.all(z, true))) && has(context.zz)",
        '{context.stage: 1, "evaluation": 2}.size() == 2 && has(context.zz)',
        "true",
    ]
    ruleset = rulebook(ENGINES[engine_name], sources, 25, indexed=True)
    data: Data = ({}, {}, {"stage": "evaluation"})
    outcomes = [o.outcome for o in decided(ruleset, data, False).outcomes]
    assert outcomes == ["error", "error", "matched"]
    assert_same(ruleset, data, False)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_has_and_equality_on_one_path(engine_name: str) -> None:
    """Segments grouped on one path by has() and by equality: a literal's string evaluates
    both kinds, another string only has(), no such field only equalities without has()."""
    sources = [
        'context.stage == "a" && context.n > 5',
        'has(context.stage) && context.stage == "a" && context.n > 4',
        "has(context.stage) && context.n > 1",
        'context.stage in ["a", "b"] && context.n > 0',
        "true",
    ]
    ruleset = rulebook(ENGINES[engine_name], sources, 25, indexed=True)
    for context, winner, outcomes in (
        ({"stage": "a", "n": 2}, "s002", ["not_matched"] * 2),
        ({"stage": "z", "n": 2}, "s002", ["not_matched"] * 2),
        ({"stage": "b", "n": 1}, "s003", ["not_matched"] * 3),
        ({"n": 6}, "s004", ["error", "not_matched", "not_matched", "error"]),
    ):
        evaluated = decided(ruleset, ({}, {}, context), False)
        assert evaluated.decision.segment == winner
        assert [o.outcome for o in evaluated.outcomes] == [*outcomes, "matched"]
        assert_same(ruleset, ({}, {}, context), False)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_later_group_cannot_displace_an_earlier_match(engine_name: str) -> None:
    """The unguarded chain matches at its second segment; the stage group, evaluated next
    (it starts earlier), holds only a later match: the earlier one wins."""
    sources = [
        "context.n > 5",
        'context.stage == "a" && context.n > 5',
        "context.n > 1",
        'context.stage == "a" && context.n > 1',
    ]
    ruleset = rulebook(ENGINES[engine_name], sources, 25, indexed=True)
    data: Data = ({}, {}, {"stage": "a", "n": 2})
    assert decided(ruleset, data, False).decision.segment == "s002"
    assert_same(ruleset, data, False)


def test_a_mode_that_fits_one_chain_is_not_indexed(rules_copy: Path) -> None:
    """One chain is one crossing into the runtime, the least an index could do: the sample
    rules (13 segments) are one group; past CHAIN_SIZE, the segments are grouped by guard."""
    engine = ENGINES["cel-expr"]
    ruleset = compile_ruleset(rules_copy, engine)
    assert ruleset.consented is not None
    assert ruleset.consented.lookups == ()
    assert ruleset.consented.unguarded is not None
    assert [i for run in ruleset.consented.unguarded.runs for i in run.members] == list(
        range(len(ruleset.segments))
    )
    lines = ["segments:"]
    for n in range(CHAIN_SIZE):
        when = f'has(context.c) && context.stage == "s{n}"'
        lines.append(f"  - {{id: g{n:02d}, description: d, owner: o, priority: 1, when: '{when}'}}")
    (rules_copy / "zz_generated.yaml").write_text("\n".join(lines) + "\n")
    ruleset = compile_ruleset(rules_copy, engine)
    assert ruleset.consented is not None
    paths = [(lookup.root, lookup.path) for lookup in ruleset.consented.lookups]
    assert ("context", ("stage",)) in paths
    assert ("account", ("stage",)) in paths


def _suppressing(engine: Engine, sources: list[str], *, guards: bool) -> CompiledPlacement:
    """PLACEMENT with a suppression rule for each of `sources` that loads, in order; without
    `guards`, each is always evaluated."""
    rules = []
    for n, source in enumerate(sources):
        program = compiled(engine, source)
        if program is None:
            continue
        when = condition(program, source)
        if not guards:
            when = msgspec.structs.replace(when, guards=())
        empty: frozenset[str] = frozenset()
        rules.append(CompiledSuppression(f"r{n}", "generated", empty, when, empty, empty, empty))
    return msgspec.structs.replace(PLACEMENT, suppressions=tuple(rules))


def _suppressed(
    ruleset: CompiledRuleset, placement: CompiledPlacement, data: Data, other: Data
) -> Evaluated:
    """The decision for a person with `data` (visitor, account, context), whose ids also
    name another person with `other`'s visitor and account traits."""
    visitor, account, context = data
    named = Person(
        VisitorProfile(id="o", traits=other[0]),
        AccountProfile(id="b", traits=other[1]),
        ("user_id",),
    )
    resolution = Resolution(
        "resolved",
        VisitorProfile(id="v", account_id="a", traits=visitor),
        AccountProfile(id="a", traits=account),
        others=(named,),
    )
    request = DecideRequest(
        placement="p",
        identity=Identity(visitor_id="v"),
        context=context,
        consent=ConsentSignal(("personalization",)),
    )
    return decide(ruleset, placement, request, resolution, now=NOW, gpc=False, decision_id="d")


@pytest.mark.parametrize("engine_name", ENGINES)
def test_suppression_rules_ruled_out_by_their_guards_suppress_as_evaluated(
    engine_name: str,
) -> None:
    """A `when` rule the raw values rule out is not evaluated (decider.gate): for the
    person decided for and another the ids name, with rules that hold, fail (fail closed)
    or are ruled out, the decision is the one evaluating every rule gives."""
    engine = ENGINES[engine_name]
    ruleset = rulebook(engine, ["true"], 1, indexed=True)

    @seed(13)
    @generated_cases(max(1, CASES // 4))
    @given(
        st.lists(FIELDS, min_size=1, max_size=3, unique=True).flatmap(
            lambda fields: st.lists(guarded(fields), min_size=1, max_size=3)
        ),
        st.lists(st.tuples(records, records, records, records, records), min_size=1, max_size=4),
    )
    def same(sources: list[str], people: list[tuple[Any, ...]]) -> None:
        guarded_rules = _suppressing(engine, sources, guards=True)
        every_rule = _suppressing(engine, sources, guards=False)
        for visitor, account, context, their_visitor, their_account in people:
            data, other = (
                entered(visitor, account, context),
                entered(their_visitor, their_account, {}),
            )
            if data is None or other is None:
                continue
            assert _suppressed(ruleset, guarded_rules, data, other) == _suppressed(
                ruleset, every_rule, data, other
            ), (sources, data, other)

    same()


def test_a_suppression_rule_its_guards_rule_out_is_not_evaluated() -> None:
    engine = ENGINES["cel-expr"]
    ruleset = rulebook(engine, ["true"], 1, indexed=True)
    placement = _suppressing(
        engine, ['has(account.stage) && account.stage == "customer"'], guards=True
    )
    calls: list[int] = []
    rule = placement.suppressions[0]
    assert rule.condition is not None
    counting = msgspec.structs.replace(
        rule.condition, program=Counted(rule.condition.program, calls, 0)
    )
    placement = msgspec.structs.replace(
        placement, suppressions=(msgspec.structs.replace(rule, condition=counting),)
    )
    nobody: Data = ({}, {}, {})
    prospect: Data = ({}, {"stage": "prospect"}, {})
    assert not _suppressed(ruleset, placement, prospect, nobody).decision.suppressed
    assert calls == []  # neither person is a customer: no call into CEL
    customer: Data = ({}, {"stage": "customer"}, {})
    assert _suppressed(ruleset, placement, prospect, customer).decision.suppressed
    assert calls == [0]  # only the other person the ids name, a customer
