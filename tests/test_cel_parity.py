"""The two CEL engines mean the same thing: over generated rule-like expressions and values,
cel-python's outcome (refused at load, match, no match, evaluation error) is cel-expr's.

Values pass through the same checks as in production (`traits.normalize` for profiles, the
request's context check), so the engines see exactly what they would be given. Each seed
runs CASES examples; any difference fails with the expression and the values.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st

from decider.model import json_value_problem
from decider.rules.cel import CelCompileErrors, new_engine
from decider.ruleset import CelEvalError, Engine
from decider.traits import TraitError, normalize

from .celgen import expressions, profiles

CASES = int(os.environ.get("DECIDER_PARITY_CASES", "10000"))
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
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases)
    def same(case: tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]) -> None:
        source, *raw = case
        data = entered(*raw)
        assume(data is not None)
        expected = outcome(ENGINES[0], source, data)
        assert outcome(ENGINES[1], source, data) == expected, (source, data)

    same()
