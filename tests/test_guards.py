"""What is a guard (decider.rules.guards): a conjunct the raw values alone can prove false.

Only top-level conjuncts of `&&` count, only `has()` of a field path from a rule variable,
and equality or `in` with string literals only; nothing in a condition with a comprehension
or a map literal (their failures are not absorbed by `&&`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from decider.rules.cel import new_engine
from decider.rules.cel.syntax import parse
from decider.rules.compiler import compile_ruleset
from decider.rules.guards import guards
from decider.ruleset import Guard


def has(root: str, *path: str) -> Guard:
    return Guard(root, path)


def equal(root: str, path: tuple[str, ...], *literals: str) -> Guard:
    return Guard(root, path, frozenset(literals))


GUARDED = {
    "has(visitor.role)": [has("visitor", "role")],
    "has(account.shop.cart)": [has("account", "shop", "cart")],
    'context.utm == "spring"': [equal("context", ("utm",), "spring")],
    '"spring" == context.utm': [equal("context", ("utm",), "spring")],
    "account.stage == r'a\\b'": [equal("account", ("stage",), "a\\b")],
    'account.firm.tier in ["gold", "silver", "gold"]': [
        equal("account", ("firm", "tier"), "gold", "silver")
    ],
    "visitor.role in []": [equal("visitor", ("role",))],
    'has(account.stage) && account.stage == "evaluation" && account.fit > 80': [
        has("account", "stage"),
        equal("account", ("stage",), "evaluation"),
    ],
    # a run of && within a run of &&: still conjuncts of the whole
    '(has(visitor.a) && visitor.b == "x") && (context.c in ["y"] && true)': [
        has("visitor", "a"),
        equal("visitor", ("b",), "x"),
        equal("context", ("c",), "y"),
    ],
    "!!has(visitor.a)": [has("visitor", "a")],  # the parser drops a pair of !
}
UNGUARDED = (
    "true",
    "has(visitor.a) || has(visitor.b)",  # either may hold
    "!has(visitor.a)",
    "has(visitor.a) ? visitor.a > 1 : false",  # has() inside a ternary
    "(has(visitor.a) || false) && visitor.a > 1",
    "visitor.a == 1",  # no string literal
    "visitor.a == true",
    "visitor.a == null",
    'visitor.a != "x"',
    'visitor.a in ["x", 1]',  # not all strings
    'visitor.a in context.l && "x" in ["x"]',
    'visitor.a == context.b && "x" == "x"',
    'visitor["a"] == "x"',  # an index, not a field
    'visitor.l[0] == "x" && has(visitor.l[0].a)',
    'visitor.a.startsWith("x")',
    'x.a == "y"',  # not a rule variable (it would not load)
    'now == "x"',
    'has(visitor.a) == true && "x" == visitor.s.lowerAscii()',
    # a comprehension or a map literal anywhere: no guard at all
    'has(visitor.a) && visitor.a.exists(x, x == "y")',
    'visitor.s == "x" && [1, 2].all(n, n > 0)',
    'has(visitor.a) && {"k": 1}.size() == 1',
    'context.s == "x" && {context.t: 1, "k": 2}.size() == 2',
)


@pytest.mark.parametrize("source", GUARDED)
def test_guards_are_found(source: str) -> None:
    assert list(guards(parse(source))) == GUARDED[source]


@pytest.mark.parametrize("source", UNGUARDED)
def test_what_is_no_guard(source: str) -> None:
    assert guards(parse(source)) == ()


def test_guards_are_found_in_a_conjunction_with_others() -> None:
    """Non-guards between guards are skipped; the guards keep the order they are written."""
    source = 'has(visitor.a) && visitor.n > 1 && !has(visitor.b) && visitor.s in ["x"]'
    assert guards(parse(source)) == (has("visitor", "a"), equal("visitor", ("s",), "x"))


def test_compiled_conditions_carry_their_guards(rules_copy: Path) -> None:
    """The compiler keeps each segment's guards with its condition, on both engines."""
    for name in ("cel-expr", "cel-python"):
        ruleset = compile_ruleset(rules_copy, new_engine(name))
        by_id = {s.id: s.condition.guards for s in ruleset.segments}
        assert by_id["b2b_icp_awareness_dormant"] == (
            has("account", "fit_score"),
            equal("account", ("stage",), "awareness", "problem_aware"),
        )
        assert by_id["trial_stalled"] == (has("visitor", "trial"),)
