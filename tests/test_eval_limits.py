"""A rule over a long list a caller sent: an evaluation error like any other, on both engines.

The segment does not match (explain says why), a suppression that runs out fails closed,
and the answer is a 200, never a 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decider.rules.cel import evaluate, new_engine
from decider.rules.compiler import compile_ruleset

from .conftest import RULES, app_client

# 120 pages: 120 + 120 * 120 steps, past the 9,999 one evaluation may take
NESTED = "context.pages.all(p, context.pages.all(q, p == q || p != q))"
LIMIT = "iteration limit: more than 9,999 comprehension steps"


@pytest.fixture
def long_rules(rules_copy: Path) -> Path:
    """The sample rules, with a web segment and an email suppression that iterate over
    `context.pages` (both warned about by lint, and loaded)."""
    (rules_copy / "zz_pages.yaml").write_text(
        "segments:\n"
        "  - id: ctx_every_page\n"
        "    description: d\n"
        "    owner: o\n"
        "    priority: 1000\n"
        f"    when: has(context.pages) && {NESTED}\n"
        "suppressions:\n"
        "  - id: pages_suppress\n"
        "    description: d\n"
        "    when: has(context.pages) && context.pages.exists(p, context.pages.exists(q, "
        'p + q == "/unsubscribe"))\n'
        "    placements: [nurture_email]\n"
    )
    return rules_copy


def decide(client: Any, placement: str, pages: list[str]) -> dict[str, Any]:
    response = client.post(
        "/v1/decide",
        json={
            "placement": placement,
            "identity": {"user_id": "u-ada"},
            "context": {"pages": pages},
            "explain": True,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_segment_over_the_limit_does_not_match(long_rules: Path, engine_name: str) -> None:
    ruleset = compile_ruleset(long_rules, new_engine(engine_name))
    with app_client(ruleset) as client:
        short = decide(client, "home_hero", ["/a", "/b"])
        assert short["explain"][0] == {
            "segment": "ctx_every_page",
            "priority": 1000,
            "outcome": "passed_over",  # it matched; the hero chooses a segment it has a variant for
        }
        long = decide(client, "home_hero", [f"/p{i}" for i in range(120)])
        first = long["explain"][0]
        assert (first["segment"], first["outcome"]) == ("ctx_every_page", "error")
        assert first["error"].startswith(LIMIT)
        # the rest of the rulebook decides as if the rule were not there
        assert long["segment"] == "b2b_top_tier_evaluation"
        assert long["personalized"] is True


def test_a_suppression_over_the_limit_fails_closed(long_rules: Path, engine_name: str) -> None:
    ruleset = compile_ruleset(long_rules, new_engine(engine_name))
    with app_client(ruleset) as client:
        assert decide(client, "nurture_email", ["/a"])["suppressed"] is False
        # the suppression rule runs out of steps: it fails, so it suppresses
        answer = decide(client, "nurture_email", [f"/p{i}" for i in range(120)])
        assert answer["suppressed"] is True
        assert answer["personalized"] is False
        reason = answer["reasons"][-1]
        assert reason["code"] == "suppressed.rule_error"
        assert LIMIT in reason["message"]


def test_past_its_time_the_python_engine_fails_rules_that_iterate(
    long_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step may cost what the caller sent (`p in context.cart`): cel-python also stops at a
    deadline per decision. Here the deadline has passed before the first step."""
    monkeypatch.setattr(evaluate, "TIME_LIMIT_S", -1.0)
    ruleset = compile_ruleset(long_rules, new_engine("cel-python"))
    with app_client(ruleset) as client:
        web = decide(client, "home_hero", ["/a", "/b"])
        first = web["explain"][0]
        assert (first["segment"], first["outcome"]) == ("ctx_every_page", "error")
        assert first["error"].startswith("time limit: comprehensions ran past")
        assert web["segment"] == "b2b_top_tier_evaluation"  # rules that do not iterate decide
        email = decide(client, "nurture_email", ["/a"])
        assert email["suppressed"] is True  # the suppression that iterates fails closed
        assert email["reasons"][-1]["code"] == "suppressed.rule_error"


def test_a_context_is_bounded_in_values_as_well_as_items() -> None:
    """What rules compare across two caller lists costs their product: 2,000 values in all."""
    body = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
    within = {"pages": list(range(1000)), "cart": list(range(990))}
    over = {"pages": list(range(1000)), "cart": list(range(1000))}
    with app_client(compile_ruleset(RULES, new_engine("cel-expr"))) as client:
        assert client.post("/v1/decide", json={**body, "context": within}).status_code == 200
        refused = client.post("/v1/decide", json={**body, "context": over})
        assert refused.status_code == 422
        assert refused.json()["field"] == "context"
        assert refused.json()["detail"] == "more than 2000 values in all"
