"""The two CEL engines mean the same thing: over generated rule-like expressions and values,
cel-python's outcome (refused at load, match, no match, evaluation error) is cel-expr's.

Values pass through the same checks as in production (`traits.normalize` for profiles, the
request's context check), so the engines see exactly what they would be given. Each seed
runs CASES examples; any difference fails with the expression and the values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import assume, given, seed
from hypothesis import strategies as st

from decider.model import json_value_problem
from decider.rules.cel import CelCompileErrors, new_engine
from decider.ruleset import CelEvalError, Engine
from decider.traits import TraitError, normalize

from .celgen import expressions, profiles
from .conftest import generated_cases

pytestmark = pytest.mark.usefixtures("no_cel_clock")

CASES = int(os.environ.get("PARITY_CASES", "10000"))
SEEDS = (1, 2, 3)
NOW = datetime(2026, 11, 26, 15, 4, 5, 123456, tzinfo=UTC)
ENGINES: tuple[Engine, Engine] = (new_engine("cel-expr"), new_engine("cel-python"))


def outcome(engine: Engine, source: str, data: tuple[Any, Any, Any]) -> str:
    """What a rule does on `engine`: `refused`, `true`, `false` or `error`. Anything else an
    engine raises fails the test by escaping."""
    try:
        program = engine.compile(source)
    except CelCompileErrors:
        return "refused"
    try:
        return str(program.matches(engine.activation(*data, NOW))).lower()
    except CelEvalError:
        return "error"


def entered(visitor: dict[str, Any], account: dict[str, Any], context: dict[str, Any]) -> Any:
    """The values as the service would hold them, or None where it would refuse them."""
    try:
        visitor, account = normalize(visitor, None), normalize(account, None)
    except TraitError:
        return None
    if json_value_problem(context, "context") is not None:
        return None
    return visitor, account, context


cases = st.tuples(expressions(), profiles, profiles, profiles)


@pytest.mark.parametrize("chosen", SEEDS)
def test_both_engines_decide_alike_on_generated_rules(chosen: int) -> None:
    @seed(chosen)
    @generated_cases(CASES)
    @given(cases)
    def same(case: tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]) -> None:
        source, *raw = case
        data = entered(*raw)
        assume(data is not None)
        expected = outcome(ENGINES[0], source, data)
        assert outcome(ENGINES[1], source, data) == expected, (source, data)

    same()


def _nested(k: int, inner: str) -> str:
    return "[" * k + inner + "]" * k


# how deep rule authors might nest, in each way one can: the C++ parser's limits (32
# sub-expressions within one another; a tree 32 deep, where a run of && is one level and a
# run of ! none or one) must be exactly ours, so a rule loads on both engines or on neither
SHAPES: dict[str, Callable[[int], str]] = {
    "parentheses": lambda n: "(" * n + "true" + ")" * n,
    "lists": lambda n: _nested(n, "") + " == []",
    "fields": lambda n: "context" + ".a" * n + " == 1",
    "indexes": lambda n: "context.l" + "[0]" * n + " == 1",
    "calls": lambda n: "int(" * n + "1" + ")" * n + " == 1",
    "sums": lambda n: "+".join(["1"] * n) + " == 1",
    "ands": lambda n: " && ".join(["context.b"] * n),
    "ors": lambda n: " || ".join(["context.b"] * n),
    "nots": lambda n: "!" * n + "(" + _nested(28, "1") + " == " + _nested(28, "1") + ")",
    "minuses": lambda n: "-" * n + "context.n == 1",
    "macros": lambda n: "[1]" + ".map(x, [x])" * n + ".size() == 1",
    "equalities": lambda n: "==".join(["true"] * n),
    "parentheses and calls": lambda n: "(" * n + "int(" * n + "1" + ")" * n + ")" * n + " == 1",
    "ternaries": lambda n: "true ? " * n + "true" + " : false" * n,
    "else branches": lambda n: "false ? true : " * n + "true",
    "has": lambda n: "has(" + _nested(n, '{"a": 1}') + "[0]" * n + ".a)",
    "in a run of &&": lambda n: "true && " + _nested(n, "1") + " == " + _nested(n, "1"),
    "in all()": lambda n: "[1].all(x, " + _nested(n, "x") + " == " + _nested(n, "1") + ")",
    "in filter()": lambda n: "[1].filter(x, " + _nested(n, "x") + " == [1]).size() == 1",
    "in map()": lambda n: "[1].map(x, true, " + _nested(n, "x") + ").size() == 1",
    "maps": lambda n: '{"a": ' * n + "1" + "}" * n + " == {}",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_nesting_limits_are_the_cpp_parsers(shape: str) -> None:
    from cel_expr_python import cel  # noqa: PLC0415 - the reference, used only here

    strings = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
    native = cel.NewEnv(
        variables={"visitor": strings, "account": strings, "context": strings}
        | {"now": cel.Type.TIMESTAMP}
    )
    for depth in range(1, 45):
        source = SHAPES[shape](depth)
        try:
            native.compile(source)
            reference = "loads"
        except RuntimeError:
            reference = "refused"
        ours = "loads" if outcome(ENGINES[1], source, ({}, {}, {})) != "refused" else "refused"
        assert ours == reference, (shape, depth)
