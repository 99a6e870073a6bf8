"""Fault injection: the real app over the http profile source, pointed at a fake profile API
on a real loopback socket (tests/fake_profile_api.py) that is slow, hangs, fails, sends
garbage or invalid UTF-8, refuses or resets; for every identity shape, on web and email, and
with the API asked one id at a time (GETs) or a request's ids at once (POST /resolve).

Whatever the upstream does: no 5xx; no personalization without consent checked against a
profile; email suppressed when the profile (or any id) could not be checked; and, once the
cache was primed while the API was healthy, each id's stale entry served (README, "Caching").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.profiles.cache import CacheSettings
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.http import HttpSettings
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset

from .conftest import NOW, RULES, app_client
from .fake_profile_api import FAULTS, FakeProfileApi, Fault, fake_profile_api, routes_of

Client = TestClient[Any]
ADA_SHA = "dba86479afbaf94f50b6b6a093bdf29e40656e11874321bfca1718252afe1a0f"
COOKIE = "anon-cookie-123"  # the API knows no such visitor
SHAPES: dict[str, dict[str, str]] = {
    "user_id+visitor_id": {"user_id": "u-ada", "visitor_id": COOKIE},
    "email_sha256+visitor_id": {"email_sha256": ADA_SHA, "visitor_id": COOKIE},
    "visitor_id": {"visitor_id": "v-ada"},
    "account_id": {"account_id": "acc-northwind"},
    "user_id+account_id": {"user_id": "u-ada", "account_id": "acc-globex"},
}
PLACEMENTS = ("home_hero", "nurture_email")  # web, email
TTL = 0.05  # fresh this long; the test waits past it before asking again
CACHE = CacheSettings(ttl=TTL, negative_ttl=TTL, stale_ttl=600.0)


@pytest.fixture(scope="module")
def ruleset() -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine("cel-expr"))


@pytest.fixture(params=[False, True], ids=["gets", "resolve"])
def resolve(request: pytest.FixtureRequest) -> bool:
    """Whether the service asks the API for a request's ids at once (POST /resolve)."""
    asked: bool = request.param
    return asked


@contextmanager
def service(ruleset: CompiledRuleset, resolve: bool) -> Iterator[tuple[Client, FakeProfileApi]]:
    """The app over a fresh fake API: 50 ms for a request's lookups, 1 s per HTTP call."""
    with fake_profile_api(routes_of(sample_profiles(NOW))) as api:
        profile = HttpSettings(api_url=api.url, api_timeout=1.0, api_resolve=resolve)
        with app_client(ruleset, profile=profile, profile_budget_ms=50, cache=CACHE) as client:
            yield client, api


def decide(client: Client, placement: str, identity: dict[str, str]) -> dict[str, Any]:
    response = client.post("/v1/decide", json={"placement": placement, "identity": identity})
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def codes(decision: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in decision["reasons"]]


def assert_fails_safe(decision: dict[str, Any]) -> None:
    """What must hold of any decision, whatever the profile API did."""
    found = codes(decision)
    if decision["personalized"]:
        assert "consent.granted" in found, found
        assert "identity.unavailable" not in found, found
    if decision["channel"] == "email" and {"identity.unavailable", "identity.unchecked"} & set(
        found
    ):
        assert decision["suppressed"] is True, found
        assert "suppressed.profile_unavailable" in found, found


def prime(client: Client, identity: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Decisions on a healthy API, asked until the lookups fit the budget (the first ones
    open connections on a busy machine); the cache then holds every id."""
    deadline = time.monotonic() + 5
    while True:
        decisions = {p: decide(client, p, identity) for p in PLACEMENTS}
        failing = {"identity.unavailable", "identity.stale", "identity.unchecked"}
        if not any(failing & set(codes(d)) for d in decisions.values()):
            return decisions
        assert time.monotonic() < deadline, "the healthy fake API did not answer in time"


def without(codes_: list[str], *left_out: str) -> list[str]:
    return [code for code in codes_ if code not in left_out]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_a_primed_cache_serves_each_ids_stale_entry(
    ruleset: CompiledRuleset, resolve: bool, shape: str, fault: Fault
) -> None:
    """Primed while healthy, then the fault, past the TTL: each id is served from its own
    stale entry. The anonymous cookie the API never knew has no entry to serve (a miss is
    remembered briefly only): it is left unchecked, the rest of the decision stands, and
    email, which suppresses when anyone cannot be checked, suppresses."""
    identity = SHAPES[shape]
    with service(ruleset, resolve) as (client, api):
        primed = prime(client, identity)
        api.set(fault)
        time.sleep(2 * TTL)
        for placement in PLACEMENTS:
            during = decide(client, placement, identity)
            assert_fails_safe(during)
            before = primed[placement]
            assert "identity.stale" in codes(during)
            cookie = identity.get("visitor_id") == COOKIE
            assert ("identity.unchecked" in codes(during)) is cookie
            if cookie and during["channel"] == "email":
                assert during["suppressed"] is True
                assert "suppressed.profile_unavailable" in codes(during)
                continue
            for key in ("segment", "variant", "personalized", "suppressed"):
                assert during[key] == before[key], key
            assert without(codes(during), "identity.stale", "identity.unchecked") == codes(before)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_with_nothing_cached_a_fault_fails_closed(
    ruleset: CompiledRuleset, resolve: bool, shape: str, fault: Fault
) -> None:
    """A fault from the first request on: the profile is unavailable, web gets the default
    content, email is suppressed; never a 5xx."""
    identity = SHAPES[shape]
    with service(ruleset, resolve) as (client, api):
        api.set(fault)
        for placement in PLACEMENTS:
            decision = decide(client, placement, identity)
            assert_fails_safe(decision)
            assert "identity.unavailable" in codes(decision)
            assert decision["personalized"] is False
            assert decision["suppressed"] is (decision["channel"] == "email")


@pytest.mark.parametrize("fault", ["hang", "invalid_utf8", "reset"])
def test_a_cookie_first_seen_during_an_outage_beside_a_stale_user_id(
    ruleset: CompiledRuleset, resolve: bool, fault: Fault
) -> None:
    """A user known before the outage comes back with a new cookie while it lasts: the
    user's stale profile is served on web; the new cookie is unchecked, so email suppresses."""
    with service(ruleset, resolve) as (client, api):
        primed = prime(client, {"user_id": "u-ada"})
        api.set(fault)
        time.sleep(2 * TTL)
        identity = {"user_id": "u-ada", "visitor_id": "anon-first-visit"}
        web = decide(client, "home_hero", identity)
        assert_fails_safe(web)
        assert (web["segment"], web["personalized"]) == (
            primed["home_hero"]["segment"],
            True,
        )
        assert {"identity.stale", "identity.unchecked"} <= set(codes(web))
        email = decide(client, "nurture_email", identity)
        assert_fails_safe(email)
        assert email["suppressed"] is True


def test_the_healthy_fake_api_is_read_over_the_socket(
    ruleset: CompiledRuleset, resolve: bool
) -> None:
    """Healthy, the fake API is what the service reads: the decision comes from its answers
    (so the faults above fail lookups the service really makes), in one round trip when the
    API offers it."""
    with service(ruleset, resolve) as (client, api):
        decision = prime(client, {"user_id": "u-ada"})["home_hero"]
        assert (decision["segment"], decision["personalized"]) == ("b2b_top_tier_evaluation", True)
        if resolve:
            assert set(api.paths) == {"/healthz", "/resolve"}
            assert api.asked[0] == b'{"user_id":"u-ada"}'
        else:
            asked = {"/identities/user_id/u-ada", "/visitors/v-ada", "/accounts/acc-northwind"}
            assert asked <= set(api.paths)
