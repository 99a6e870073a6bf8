"""Variant dimensions: a variant's text by the request's language (a fallback chain such as
de-AT → de → the variant's content) and by the visitor's role (with consent only), checked
at load like content, and languages left incomplete warned about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.dimensions import Dimensions, dressed
from decider.errors import RulesetError
from decider.model import Variant, minimal
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.rules.explain import Fixture, offline_decision, render, resolution_of
from decider.rules.files import read_yaml
from decider.ruleset import CompiledRuleset

from .conftest import NOW, ROOT
from .test_compiler import line_of, problems_of, replace

ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
CONTENT = {"hero": "Hello", "cta": "Go", "proof": "Proof"}
DIMENSIONS = Dimensions(
    by_language={
        "de": ("de", {"hero": "Hallo", "cta": "Los", "proof": "Beweis"}),
        "de-at": ("de-AT", {"cta": "Servus"}),
    },
    by_role={"cfo": {"proof": "Payback", "cta": "Talk money"}},
)
VARIANT = Variant("v", CONTENT)


@pytest.mark.parametrize(
    ("language", "role", "content", "applied"),
    [
        ("de-AT", None, {"hero": "Hallo", "cta": "Servus", "proof": "Beweis"}, ("de-AT", None)),
        ("DE_at", None, {"hero": "Hallo", "cta": "Servus", "proof": "Beweis"}, ("de-AT", None)),
        ("de-CH", None, {"hero": "Hallo", "cta": "Los", "proof": "Beweis"}, ("de", None)),
        ("fr", "cfo", {"hero": "Hello", "cta": "Talk money", "proof": "Payback"}, (None, "cfo")),
        # language first, slot by slot: a role's text is in the variant's own language
        ("de", "cfo", {"hero": "Hallo", "cta": "Los", "proof": "Beweis"}, ("de", None)),
        (None, "cfo", {"hero": "Hello", "cta": "Talk money", "proof": "Payback"}, (None, "cfo")),
        (42, "intern", CONTENT, (None, None)),
        ("de-" + "x" * 40, None, CONTENT, (None, None)),
    ],
)
def test_a_slot_comes_from_the_language_chain_then_the_role_then_the_content(
    language: object, role: str | None, content: dict[str, str], applied: tuple[Any, Any]
) -> None:
    result = dressed(DIMENSIONS, VARIANT, language, role)
    assert result.content == content
    assert list(result.content) == list(CONTENT)  # slots in the placement's order
    assert (result.language, result.role) == applied
    assert result.id == "v"


def test_the_role_gives_what_the_language_leaves() -> None:
    partial = Dimensions({"de": ("de", {"hero": "Hallo"})}, {"cfo": {"proof": "Payback"}})
    result = dressed(partial, VARIANT, "de", "cfo")
    assert result.content == {"hero": "Hallo", "cta": "Go", "proof": "Payback"}
    assert (result.language, result.role) == ("de", "cfo")


def test_the_language_comes_from_the_context(client: TestClient[Any]) -> None:
    answer = client.post("/v1/decide", json={**ADA, "context": {"language": "de-AT"}}).json()
    assert answer["variant"]["id"] == "home_named_account"
    assert answer["variant"]["language"] == "de-AT"
    assert answer["variant"]["content"]["cta"] == "Executive Briefing vereinbaren"
    assert answer["variant"]["content"]["hero"].startswith("Für Teams wie Ihres")
    plain = client.post("/v1/decide", json=ADA).json()
    assert plain["variant"] == {
        "id": "home_named_account",
        "content": plain["variant"]["content"],
    }  # no language, no role: nothing said
    assert plain["variant"]["content"]["cta"] == "Book an executive briefing"


def test_ofrep_says_what_was_applied(client: TestClient[Any]) -> None:
    context = {"targetingKey": "u-ada", "user_id": "u-ada", "language": "de"}
    flag = client.post("/ofrep/v1/evaluate/flags/home_hero", json={"context": context}).json()
    assert flag["variant"] == "home_named_account"
    assert flag["value"]["cta"] == "Executive Briefing buchen"
    assert flag["metadata"]["language"] == "de"
    assert "role" not in flag["metadata"]


ROSA = ROOT / "examples" / "rosa.yaml"


def rosa(ruleset: CompiledRuleset, **options: Any) -> Any:
    profile = read_yaml(ROSA, str(ROSA)).convert(Fixture)
    resolution = resolution_of(profile, schema=ruleset.schema)
    return offline_decision(ruleset, resolution, placement="home_hero", now=NOW, **options)


def test_the_role_is_read_only_with_consent(ruleset: CompiledRuleset) -> None:
    """Rosa, Northwind's CFO, gets the CFO's proof; after the banner's reject-all, the role
    is profile data the rules may not read: her segment is gone, and so is her role."""
    decision = rosa(ruleset)
    assert decision.variant.role == "cfo"
    assert decision.variant.content["proof"].startswith("For the CFO")
    assert "; role cfo)" in render(decision)
    refused = rosa(ruleset, consent=())
    assert refused.variant.role is None
    assert refused.variant.id == "home_generic"


def test_a_caller_without_the_explain_scope_is_not_told_the_role(ruleset: CompiledRuleset) -> None:
    """The role override's name is the visitor's trait value: a decide-only key gets the
    text served, not the trait."""
    decision = rosa(ruleset)
    assert decision.variant.role == "cfo"
    told = minimal(decision)
    assert told.variant.role is None
    assert told.variant.content == decision.variant.content


def test_a_default_may_vary_too(rules_copy: Path) -> None:
    """A default with a role override: dressed for a CFO with consent, not without."""
    replace(
        rules_copy / "b2b.yaml",
        "        proof: Trusted by 400+ B2B teams\n",
        "        proof: Trusted by 400+ B2B teams\n"
        "      by_role: {cfo: {proof: Trusted by 400+ finance teams}}\n",
    )
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    visitor = read_yaml(ROSA, str(ROSA)).convert(Fixture).visitor
    alone = resolution_of(Fixture(visitor=visitor))  # no account: no segment matches
    for consent, role, proof in (
        (None, "cfo", "Trusted by 400+ finance teams"),
        ((), None, "Trusted by 400+ B2B teams"),
    ):
        decision = offline_decision(ruleset, alone, placement="home_hero", now=NOW, consent=consent)
        assert decision.variant.id == "home_generic"
        assert (decision.variant.role, decision.variant.content["proof"]) == (role, proof)


@pytest.mark.parametrize(
    ("old", "new", "at", "message"),
    [
        (
            "          de-AT:\n",
            "          deutsch!:\n",
            "deutsch!:",
            "'deutsch!' is not a language tag (BCP 47: de, de-AT, pt-BR)",
        ),
        (
            "          de-AT:\n",
            "          german:\n",
            "german:",
            "'german' is not a language tag (BCP 47: de, de-AT, pt-BR)",
        ),
        (
            "          de-AT:\n",
            "          de_AT:\n",
            "de_AT:",
            "'de_AT' is not a language tag (write de-AT)",
        ),
        (
            "          de-AT:\n            cta: Executive Briefing vereinbaren\n",
            "          de-AT:\n            cta: Executive Briefing vereinbaren\n"
            "          DE:\n            cta: Briefing buchen\n",
            "DE:",
            "'DE' is 'de' again: tags are read in any case",
        ),
        (
            "            cta: Executive Briefing vereinbaren\n",
            "            subject: Ein Betreff\n",
            "subject: Ein Betreff",
            "slot 'subject' is not one of this placement's slots (hero, cta, proof)",
        ),
        (
            "          cfo:\n",
            "          ceo: {}\n          cfo:\n",
            "ceo: {}",
            "ceo gives no slot",
        ),
    ],
)
def test_a_mistake_in_an_override_is_placed(
    rules_copy: Path, old: str, new: str, at: str, message: str
) -> None:
    b2b = rules_copy / "b2b.yaml"
    replace(b2b, old, new)
    with pytest.raises(RulesetError) as caught:
        compile_ruleset(rules_copy, new_engine("cel-expr"))
    (problem,) = caught.value.problems
    assert message in problem.message
    # an error, not a warning too (a wrong tag leaves no language incomplete)
    assert [w for w in caught.value.warnings if w.line == problem.line] == []
    # a tag's problem is at its override's first slot (a block mapping starts there)
    assert problem.line == line_of(b2b, at) + at.endswith(":")


def test_an_override_over_its_slot_limit_is_an_error(rules_copy: Path) -> None:
    """Slot limits hold for every override: a German SMS body over 160 characters."""
    shop = rules_copy / "ecommerce.yaml"
    long = "Ihr Warenkorb wartet " + "x" * 150
    replace(
        shop,
        "        id: sms_cart\n",
        f"        id: sms_cart\n        by_language:\n          de: {{body: '{long}'}}\n",
    )
    (problem,) = problems_of(rules_copy)
    assert problem.message == f"body is {len(long)} characters; sms allows 160 in body"
    assert problem.line == line_of(shop, "Ihr Warenkorb wartet")
    assert problem.rule == "sms_cart"


def test_one_variant_id_names_one_set_of_overrides(rules_copy: Path) -> None:
    """Decisions are dressed by the id served: two variants of one id with different
    overrides are refused at the second."""
    b2b = rules_copy / "b2b.yaml"
    replace(b2b, "        id: home_migration\n", "        id: home_named_account\n")
    found = {p.message.split(";")[0]: p for p in problems_of(rules_copy)}
    assert set(found) == {  # its content differs too
        "variant id 'home_named_account' already names other overrides in this placement",
        "variant id 'home_named_account' already names other content in this placement",
    }
    problem = found[
        "variant id 'home_named_account' already names other overrides in this placement"
    ]
    lines = b2b.read_text().splitlines()
    assert lines[problem.line - 1].strip() == "id: home_named_account"
    assert problem.line > line_of(b2b, "id: home_named_account")  # the second


def test_check_warns_of_a_language_left_incomplete(rules_copy: Path) -> None:
    """`de` without a proof: German readers would get the English proof. Its de-AT, which
    falls back to it, is incomplete the same way."""
    b2b = rules_copy / "b2b.yaml"
    german_proof = "            proof: Wie ein Unternehmen Ihrer Branche die Time-to-Pipeline"
    replace(b2b, german_proof, "            # no proof:")
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    warnings = [(w.line, w.message) for w in ruleset.warnings]
    assert warnings == [
        (
            line_of(b2b, "          de:") + 1,
            "variant home_named_account: de gives no proof; readers of de get the variant's "
            "own text there",
        ),
        (
            line_of(b2b, "          de-AT:") + 1,
            "variant home_named_account: de-AT gives no proof; readers of de-AT get the "
            "variant's own text there",
        ),
    ]
