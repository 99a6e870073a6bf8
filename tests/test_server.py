"""The real service: `decider serve` in its own process, called over HTTP like the README does."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset

from .conftest import ROOT
from .service import running_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`decider serve` on its embedded defaults (bundled rules, seeded SQLite), on loopback."""
    with running_service(ROOT / "rules", tmp_path_factory.mktemp("serve")) as running:
        yield running.client


def post(client: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body, headers=headers)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def test_personalized_decision(service: httpx.Client) -> None:
    """A sample visitor with consent gets their segment's variant from the running service."""
    decision = post(service, {"placement": "home_hero", "identity": {"user_id": "u-ada"}})
    assert decision["segment"] == "b2b_top_tier_evaluation"
    assert decision["personalized"] is True


def test_consent_denied_decision(service: httpx.Client) -> None:
    """A sample visitor without consent gets the default from the running service."""
    decision = post(service, {"placement": "home_hero", "identity": {"user_id": "u-lee"}})
    assert decision["personalized"] is False
    assert "consent.denied" in [r["code"] for r in decision["reasons"]]


def test_suppressed_decision(service: httpx.Client) -> None:
    """An unsubscribed sample person is suppressed on email by the running service."""
    email = hashlib.sha256(b"max@globex.example").hexdigest()
    decision = post(service, {"placement": "nurture_email", "identity": {"email_sha256": email}})
    assert decision["suppressed"] is True


def test_every_sample_segment_is_reachable(service: httpx.Client) -> None:
    """The bundled sample profiles put someone in every segment that reads the profile."""
    people = {
        "u-ada": "home_hero", "u-ben": "home_hero", "v-cleo": "nurture_email",
        "v-dan": "home_hero", "u-eve": "home_hero", "v-finn": "shop_product_hero",
        "v-gia": "shop_product_hero", "v-hal": "shop_product_hero", "u-ivy": "trial_email",
        "u-jay": "trial_email", "u-kai": "trial_email",
    }  # fmt: skip
    segments = set()
    for who, placement in people.items():
        kind = "user_id" if who.startswith("u-") else "visitor_id"
        segments.add(post(service, {"placement": placement, "identity": {kind: who}})["segment"])
    ruleset = compile_ruleset(ROOT / "rules", new_engine("cel-expr"))
    assert segments == {s.id for s in ruleset.segments if s.condition.needs_profile}
