"""Identity conflicts and send eligibility through the HTTP API: when the ids name different
people, everyone named is checked for suppression; on email only the recipient's consent and
profile count; and an email goes out only with the consent the channel requires. Each
decision is asked alone and in a batch, amid other recipients, with the same answer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.profile import AccountProfile, ConsentRecord, VisitorProfile
from decider.profiles.sources.memory import MemoryProfileSource
from decider.rules.cel import new_engine
from decider.rules.suites import compile_and_test
from decider.ruleset import CompiledRuleset

from .conftest import NOW, app_client

Client = TestClient[Any]


def sha(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def person(
    visitor_id: str,
    account_id: str,
    *,
    user_id: str | None = None,
    consent: tuple[ConsentRecord, ...] = (),
) -> VisitorProfile:
    """A visitor whose email hash is that of their id's name: v-ada has sha("ada")."""
    return VisitorProfile(
        id=visitor_id,
        account_id=account_id,
        user_ids=(user_id,) if user_id else (),
        email_sha256=(sha(visitor_id.removeprefix("v-")),),
        consent=consent,
    )


SEEN = (NOW - timedelta(days=2)).isoformat()
GRANTED = NOW - timedelta(days=90)
BOTH = (
    ConsentRecord("personalization", "consent", GRANTED),
    ConsentRecord("email_marketing", "consent", GRANTED),
)
TOP_TIER = AccountProfile(
    id="acc-top",
    traits={
        "fit_score": 92,
        "stage": "evaluation",
        "lifecycle": "prospect",
        "last_seen_at": SEEN,
        "committee_roles_seen": ["vp", "practitioner", "economic_buyer"],
    },
)
SMALL = AccountProfile(id="acc-small", traits={"fit_score": 20, "lifecycle": "prospect"})
CUSTOMER = AccountProfile(
    id="acc-customer",
    traits={"fit_score": 88, "lifecycle": "customer", "expansion_topics": ["seats"]},
)
PEOPLE: list[VisitorProfile | AccountProfile] = [
    TOP_TIER,
    SMALL,
    CUSTOMER,
    person("v-ada", "acc-top", user_id="u-ada", consent=BOTH),
    person("v-cus", "acc-customer", user_id="u-cus", consent=BOTH),
    person("v-noc", "acc-top"),
    person("v-sam", "acc-small", consent=BOTH),
]


@pytest.fixture
def client(ruleset: CompiledRuleset) -> Iterator[Client]:
    with app_client(ruleset, MemoryProfileSource(PEOPLE)) as test_client:
        yield test_client


def decide(client: Client, placement: str, **identity: str) -> dict[str, Any]:
    """The decision for `identity`; the same as its decision amid others in a batch."""
    response = client.post("/v1/decide", json={"placement": placement, "identity": identity})
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    others = [{"identity": {"email_sha256": sha(n), "user_id": "u-cus"}} for n in ("ada", "noc")]
    recipients = [*others, {"identity": identity}, *others]
    batch = client.post("/v1/decide/batch", json={"placement": placement, "recipients": recipients})
    assert batch.status_code == 200, batch.text
    in_batch = batch.json()["results"][len(others)]
    assert {**in_batch, "decision_id": None} == {**decision, "decision_id": None}
    return decision


def reason(decision: dict[str, Any], code: str) -> str:
    (message,) = [str(r["message"]) for r in decision["reasons"] if r["code"] == code]
    return message


def test_web_a_second_persons_when_rule_suppresses(client: Client) -> None:
    """On the web the known user wins the stitch, yet the email hash's owner, a customer, is
    held to `customers_no_acquisition`: the acquisition banner is suppressed."""
    decision = decide(client, "trial_upgrade_banner", user_id="u-ada", email_sha256=sha("cus"))
    assert decision["suppressed"] is True
    message = reason(decision, "suppressed.rule")
    assert message.startswith("customers_no_acquisition:")
    assert message.endswith("(another person the ids name)")
    assert "user_id and email_sha256 name different people" in reason(decision, "identity.conflict")


def test_email_a_second_persons_when_rule_suppresses(client: Client) -> None:
    """On email, a user id naming a customer suppresses the acquisition email to the
    prospect the email hash names."""
    decision = decide(client, "nurture_email", user_id="u-cus", email_sha256=sha("ada"))
    assert decision["suppressed"] is True
    assert reason(decision, "suppressed.rule").startswith("customers_no_acquisition:")


def test_email_only_the_recipients_consent_counts(client: Client) -> None:
    """Ada consented; the email hash's owner did not. The email goes to the owner, so Ada's
    consent and profile count for nothing: it is not sent."""
    decision = decide(client, "nurture_email", user_id="u-ada", email_sha256=sha("noc"))
    assert decision["suppressed"] is True
    assert decision["segment"] is None
    assert "email_marketing not granted" in reason(decision, "consent.denied")
    assert "suppressed.no_consent" in [r["code"] for r in decision["reasons"]]


def test_email_only_the_recipients_profile_personalizes(client: Client) -> None:
    """With both consenting, the email is decided on the recipient's account (small, out of
    ICP), not on the logged-in user's (top tier)."""
    decision = decide(client, "nurture_email", user_id="u-ada", email_sha256=sha("sam"))
    assert decision["suppressed"] is False
    assert decision["segment"] == "b2b_out_of_icp"
    assert reason(decision, "identity.stitched") == "email_sha256 is linked to visitor v-sam"


def test_email_to_an_unknown_recipient_uses_nothing_personal(client: Client) -> None:
    """A hash naming nobody: the user id's consent does not stand in; nothing is sent."""
    decision = decide(client, "nurture_email", user_id="u-ada", email_sha256=sha("stranger"))
    assert decision["suppressed"] is True
    assert decision["segment"] is None
    assert "email_sha256 names no known person" in reason(decision, "identity.conflict")
    assert "suppressed.no_consent" in [r["code"] for r in decision["reasons"]]


def test_web_the_known_user_wins(client: Client) -> None:
    """On the web the logged-in user's consent and profile decide, as before."""
    decision = decide(client, "home_hero", user_id="u-ada", email_sha256=sha("noc"))
    assert decision["segment"] == "b2b_top_tier_evaluation"
    assert reason(decision, "identity.stitched") == "user_id is linked to visitor v-ada"


def test_conflict_reasons_carry_no_raw_ids(client: Client) -> None:
    """Which ids disagreed is said by kind; the email hash never appears in the answer."""
    decision = decide(client, "home_hero", user_id="u-ada", email_sha256=sha("noc"))
    assert sha("noc") not in str(decision)
    assert "u-ada" not in reason(decision, "identity.conflict")


def test_no_email_without_the_consent_the_channel_requires(client: Client) -> None:
    """`send_requires_consent`: a recipient without email_marketing consent is suppressed
    with its own reason; one with it gets the email."""
    refused = decide(client, "nurture_email", email_sha256=sha("noc"))
    assert refused["suppressed"] is True
    assert reason(refused, "suppressed.no_consent") == (
        "email sends only with email_marketing consent, not granted here"
    )
    sent = decide(client, "nurture_email", email_sha256=sha("ada"))
    assert (sent["suppressed"], sent["segment"]) == (False, "b2b_top_tier_evaluation")


def test_without_send_requires_consent_the_generic_email_goes_out(
    rules_copy: Path, engine_name: str
) -> None:
    """A policy without `send_requires_consent` sends the default to those who did not
    consent: consent then only gates personalization."""
    policy = rules_copy / "policy.yaml"
    # email's (the first): push and SMS keep theirs, as their rule tests assume
    policy.write_text(policy.read_text().replace("send_requires_consent: true", "", 1))
    (rules_copy / "tests" / "consent_and_suppression.yaml").unlink()  # its cases assume it on
    ruleset = compile_and_test(rules_copy, new_engine(engine_name))
    with app_client(ruleset, MemoryProfileSource(PEOPLE)) as client:
        decision = decide(client, "nurture_email", email_sha256=sha("noc"))
    assert (decision["suppressed"], decision["personalized"]) == (False, False)
    assert decision["variant"]["id"] == "nurture_generic"
