"""Segment choice per placement: `choose: first_with_variant` serves the highest-priority
match the placement has a variant for, and says which match it passed over.

The sample home hero chooses so: Finn, a shopper (shop_high_intent, no hero), who arrives
from the comparison email gets the comparison hero. Over generated rulebooks and variant
sets, the planned path (the ruleset's first match, then the placement's own plan) decides
exactly as evaluating each segment alone does, with and without consent, on both engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st
from litestar.testing import TestClient

from decider.engine import Evaluated, decide
from decider.model import DecideRequest, Identity, Variant
from decider.profile import Resolution, VisitorProfile
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset, planned
from decider.rules.explain import render
from decider.ruleset import Choice, CompiledPlacement, CompiledRuleset
from decider.stats import Stats

from .conftest import NOW, generated_cases
from .test_chained import (
    CASES,
    ENGINES,
    PLACEMENT,
    counted,
    decided,
    entered,
    one_by_one,
    rulebook,
)
from .test_compiler import line_of, problems_of, replace
from .test_index import cases

pytestmark = pytest.mark.usefixtures("no_cel_clock")

FINN = {"placement": "home_hero", "identity": {"visitor_id": "v-finn"}}
FROM_THE_EMAIL = {"utm_campaign": "q4-comparison-email"}


def codes(answer: dict[str, Any]) -> list[str]:
    return [r["code"] for r in answer["reasons"]]


def test_the_first_match_with_a_variant_is_served(client: TestClient[Any]) -> None:
    answer = client.post("/v1/decide", json={**FINN, "context": FROM_THE_EMAIL}).json()
    assert answer["segment"] == "ctx_comparison_click"
    assert answer["variant"]["id"] == "home_from_comparison_email"
    assert answer["personalized"] is True
    assert codes(answer)[1:4] == ["consent.granted", "segment.passed_over", "segment.matched"]
    passed = answer["reasons"][2]["message"]
    assert passed.startswith("shop_high_intent is the highest-priority match; home_hero has")
    # the experiment buckets the segment chosen
    assert answer["experiment"] == "home_hero_holdout"


def test_explain_shows_the_winner_and_the_match_passed_over(client: TestClient[Any]) -> None:
    body = {**FINN, "context": FROM_THE_EMAIL, "explain": True}
    answer = client.post("/v1/decide", json=body).json()
    outcomes = {o["segment"]: o["outcome"] for o in answer["explain"]}
    assert outcomes["shop_high_intent"] == "passed_over"
    assert outcomes["ctx_comparison_click"] == "matched"
    assert answer["segment"] == "ctx_comparison_click"
    assert codes(answer) == codes(client.post("/v1/decide", json={**body, "explain": False}).json())


def test_with_no_match_that_has_a_variant_the_first_match_stays(client: TestClient[Any]) -> None:
    """Nothing to choose: the decision is what first_match gives (segment.no_variant)."""
    for explain in (False, True):
        answer = client.post("/v1/decide", json={**FINN, "explain": explain}).json()
        assert answer["segment"] == "shop_high_intent"
        assert answer["variant"]["id"] == "home_generic"
        assert "segment.passed_over" not in codes(answer)
        assert "segment.no_variant" in codes(answer)
        if explain:
            outcomes = {o["segment"]: o["outcome"] for o in answer["explain"]}
            assert outcomes["shop_high_intent"] == "matched"


def test_without_consent_the_profile_segment_is_skipped_not_passed_over(
    client: TestClient[Any],
) -> None:
    body = {**FINN, "context": FROM_THE_EMAIL, "consent": {"purposes": []}}
    answer = client.post("/v1/decide", json=body).json()
    assert answer["segment"] == "ctx_comparison_click"
    assert "segment.passed_over" not in codes(answer)


def test_the_default_is_first_match(rules_copy: Path) -> None:
    """Without `choose`, the placement serves the global winner's variant or the default."""
    replace(rules_copy / "b2b.yaml", "    choose: first_with_variant\n", "")
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    assert ruleset.placements["home_hero"].choice is None
    evaluated = finn(ruleset, FROM_THE_EMAIL)
    assert evaluated.decision.segment == "shop_high_intent"
    assert evaluated.decision.variant.id == "home_generic"


def test_an_unknown_choice_is_an_error_at_its_place(rules_copy: Path) -> None:
    b2b = rules_copy / "b2b.yaml"
    replace(b2b, "choose: first_with_variant", "choose: best")
    (problem,) = problems_of(rules_copy)
    assert problem.line == line_of(b2b, "choose: best")
    assert problem.message == "choose: Invalid enum value 'best'"


def test_explain_reads_the_match_passed_over(ruleset: CompiledRuleset) -> None:
    text = render(finn(ruleset, FROM_THE_EMAIL, explain=True).decision)
    assert "shop_high_intent           MATCHED, passed over: no variant here" in text
    assert "ctx_comparison_click       MATCHED\n" in text


def finn(ruleset: CompiledRuleset, context: dict[str, Any], *, explain: bool = False) -> Evaluated:
    """Finn's home hero decision, offline: a shopper who filled his cart an hour ago."""
    shop = {
        "direct_product_entry": True,
        "cart_adds": 1,
        "session_at": "2026-11-20T11:00:00Z",
    }
    consent = [
        {"purpose": "personalization", "basis": "consent", "granted_at": "2026-01-01T00:00:00Z"}
    ]
    visitor = msgspec.convert(
        {"id": "v-finn", "consent": consent, "traits": {"shop": shop}}, VisitorProfile
    )
    request = DecideRequest(
        placement="home_hero",
        identity=Identity(visitor_id="v-finn"),
        context=context,
        explain=explain,
    )
    placement = ruleset.placements["home_hero"]
    resolution = Resolution("resolved", visitor)
    return decide(ruleset, placement, request, resolution, now=NOW, gpc=False, decision_id="d")


def choosing(ruleset: CompiledRuleset, wanted: list[bool]) -> CompiledPlacement:
    """The generated rulebook's placement with variants for the segments `wanted` marks,
    choosing the first with a variant, planned as the compiler plans it."""
    variants = {
        s.id: Variant(f"v-{s.id}", {"hero": s.id})
        for s, want in zip(ruleset.segments, wanted, strict=False)
        if want
    }
    placement = msgspec.structs.replace(PLACEMENT, variants=variants, choice=Choice((), ()))
    return planned(ruleset.engine, placement, ruleset.segments, size=25)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_the_planned_choice_equals_one_by_one(engine_name: str) -> None:
    """Generated rulebooks (guarded, failing, iterating conditions; indexed or chained),
    each with variants for a generated subset of its segments."""
    engine = ENGINES[engine_name]

    @seed(12)
    @generated_cases(max(CASES // 2, 10))
    @given(cases, st.lists(st.booleans(), min_size=40, max_size=40))
    def same(
        case: tuple[list[str], int, list[tuple[Any, Any, Any, bool]]], wanted: list[bool]
    ) -> None:
        sources, size, people = case
        ruleset = rulebook(engine, sources, size, indexed=size < 25)
        placement = choosing(ruleset, wanted)
        for *raw, consented in people:
            data = entered(*raw)
            if data is None:
                continue
            fast = decided(ruleset, data, consented, placement)
            alone = decided(one_by_one(ruleset), data, consented, placement)
            assert fast == alone, data
            ours, theirs = Stats(NOW), Stats(NOW)
            ours.record(fast, NOW)
            theirs.record(alone, NOW)
            assert counted(ours) == counted(theirs)

    same()
