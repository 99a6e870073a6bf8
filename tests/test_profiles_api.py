"""The profile write API in-process: writes, merges and erasures seen by the very next
decision, normalized as imports are, refused with the field named; and invalidation of the
HTTP source's cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.base import Opening, ProfileSource
from decider.profiles.sources.http import HttpSettings
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.redis import RedisSettings
from decider.profiles.sources.redis import open_source as open_redis
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.ruleset import CompiledRuleset

from .conftest import NOW, api_key, app_client

TOKEN = "profiles-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EDGE = "edge-key-0123456789abcdef"
# the profile writer's key, and the website's key, sent with every request unless replaced
KEYS: dict[str, Any] = {
    "api_keys": f"{api_key(TOKEN, 'profiles-read', 'profiles-write', name='crm')},"
    f"{api_key(EDGE, 'decide', 'explain', name='edge')}",
    "headers": {"Authorization": f"Bearer {EDGE}"},
}
Client = TestClient[Any]
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
VISITORS = "/v1/profiles/visitors/"


def seeded_redis(url: str) -> ProfileSource:
    """A Redis store of its own key prefix, filled with the samples by an import (through a
    handle of its own: a client belongs to the event loop it first ran in)."""
    settings = RedisSettings(redis_url=url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}:")

    async def seed() -> None:
        seeder = open_redis(settings, Opening(now=NOW))
        async with seeder.importing(replace=False) as session:
            await session.write(sample_profiles(NOW))
        await seeder.aclose()

    asyncio.run(seed())
    return open_redis(settings, Opening(now=NOW))


@pytest.fixture(params=["sqlite", "redis", "memory"])
def client(
    request: pytest.FixtureRequest,
    ruleset: CompiledRuleset,
    store: SqliteProfileStore,
    redis_url: str,
) -> Iterator[Client]:
    """The app with the write API on, over each writable store seeded with the samples."""
    sources: dict[str, Callable[[], ProfileSource]] = {
        "sqlite": lambda: store,
        "redis": lambda: seeded_redis(redis_url),
        "memory": lambda: MemoryProfileSource(sample_profiles(NOW)),
    }
    source = sources[request.param]()
    # a roomy budget: these cases are about what a decision sees, not how fast
    with app_client(ruleset, source, profile_budget_ms=2000, **KEYS) as test_client:
        yield test_client


def decide(client: Client, body: dict[str, Any] = ADA) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def test_a_trait_change_counts_on_the_next_decision(client: Client) -> None:
    """PATCH the account's stage: the very next decision reads the new stage."""
    assert decide(client)["segment"] == "b2b_top_tier_evaluation"
    patched = client.patch(
        "/v1/profiles/accounts/acc-northwind", json={"traits": {"stage": "awareness"}}, headers=AUTH
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["traits"]["stage"] == "awareness"
    assert decide(client)["segment"] != "b2b_top_tier_evaluation"


def test_an_unsubscribe_counts_on_the_next_email(client: Client) -> None:
    """add_flags: unsubscribed; the next email decision is suppressed."""
    email = {"placement": "nurture_email", "identity": {"user_id": "u-ada"}}
    assert decide(client, email)["suppressed"] is False
    patched = client.patch(
        "/v1/profiles/visitors/v-ada", json={"add_flags": ["unsubscribed"]}, headers=AUTH
    )
    assert patched.status_code == 200, patched.text
    assert decide(client, email)["suppressed"] is True


def test_an_erased_visitor_is_unknown_on_the_next_decision(client: Client) -> None:
    """DELETE erases the visitor and its user ids: the next decision knows nobody."""
    decide(client)  # cached
    assert client.delete("/v1/profiles/visitors/v-ada", headers=AUTH).status_code == 204
    decision = decide(client)
    assert decision["segment"] is None
    assert "identity.unknown" in [r["code"] for r in decision["reasons"]]
    assert client.get("/v1/profiles/visitors/v-ada", headers=AUTH).status_code == 404
    assert client.delete("/v1/profiles/visitors/v-ada", headers=AUTH).status_code == 404


def test_a_new_visitor_is_found_by_its_new_ids_at_once(client: Client) -> None:
    """PUT a visitor whose user id was just looked up and unknown: found on the next call."""
    body = {"placement": "home_hero", "identity": {"user_id": "u-new"}}
    assert "identity.unknown" in [r["code"] for r in decide(client, body)["reasons"]]
    visitor = {
        "id": "v-new",
        "account_id": "acc-northwind",
        "user_ids": ["u-new"],
        "consent": [
            {"purpose": "personalization", "basis": "consent", "granted_at": "2026-06-01T00:00:00Z"}
        ],
    }
    put = client.put("/v1/profiles/visitors/v-new", json=visitor, headers=AUTH)
    assert put.status_code == 200, put.text
    assert decide(client, body)["segment"] == "b2b_top_tier_evaluation"


def test_writes_are_normalized_against_the_schema(client: Client) -> None:
    """An int where the schema says timestamp is refused naming the field; a timestamp with
    another offset is stored in the one form both engines read."""
    bad = client.patch(
        "/v1/profiles/accounts/acc-northwind", json={"traits": {"last_seen_at": 5}}, headers=AUTH
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "traits.last_seen_at"
    good = client.patch(
        "/v1/profiles/accounts/acc-northwind",
        json={"traits": {"last_seen_at": "2026-11-19T10:00:00+01:00"}},
        headers=AUTH,
    )
    assert good.json()["traits"]["last_seen_at"] == "2026-11-19T09:00:00Z"


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        (VISITORS + "v-ada", {"id": "v-ada", "email": "ada@example.com"}, 422, "email"),
        (VISITORS + "v-ada", {"id": "v-ada", "traits": {"n": "a@x.example"}}, 422, "traits.n"),
        (VISITORS + "v-ada", {"id": "v-other"}, 422, "id"),
        (VISITORS + "v-x", {"id": "v-x", "user_ids": ["u-ada"]}, 409, None),
        ("/v1/profiles/accounts/acc-x", {"id": "acc-x", "traits": {"n": 2**70}}, 422, "traits.n"),
    ],
)  # fmt: skip
def test_bad_writes_are_refused_and_write_nothing(
    client: Client, path: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    """A raw email, a mismatched id, a user id another visitor holds, a value the engines
    would misread: a 4xx naming the field, and the stored profile is unchanged."""
    before = client.get("/v1/profiles/visitors/v-ada", headers=AUTH).json()
    response = client.put(path, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json().get("field") == field
    assert client.get("/v1/profiles/visitors/v-ada", headers=AUTH).json() == before


def test_the_profile_api_needs_a_key_with_its_scopes(client: Client) -> None:
    """A wrong key: 401; a key without the profile scopes (the website's): 403."""
    wrong = client.get("/v1/profiles/visitors/v-ada", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthorized")
    edge = client.get("/v1/profiles/visitors/v-ada")
    assert (edge.status_code, edge.json()["code"]) == (403, "forbidden")
    assert client.delete("/v1/profiles/visitors/v-ada").status_code == 403


def test_a_read_key_reads_and_does_not_write(ruleset: CompiledRuleset) -> None:
    reader = "reader-key-0123456789abcdef"
    keys = api_key(reader, "profiles-read")
    with app_client(ruleset, api_keys=keys, headers={"X-API-Key": reader}) as client:
        assert client.get("/v1/profiles/visitors/v-ada").status_code == 200
        refused = client.delete("/v1/profiles/visitors/v-ada")
        assert refused.json()["detail"] == "this needs an API key with the profiles-write scope"
        assert client.get("/v1/profiles/visitors/v-ada").status_code == 200


def test_the_profile_api_is_closed_without_keys(ruleset: CompiledRuleset) -> None:
    """With no keys configured, not even callers on this machine may read profiles."""
    with app_client(ruleset) as client:
        assert client.get("/v1/profiles/visitors/v-ada").status_code == 403


class ProfileApi:
    """A profile API over MockTransport whose answers the test changes, counting fetches."""

    def __init__(self) -> None:
        self.fit = 92
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":  # asked as the service starts
            return httpx.Response(200)
        self.paths.append(request.url.path)
        bodies: dict[str, Any] = {
            "/identities/user_id/u-1": {"visitor_id": "v-1"},
            "/visitors/v-1": {"id": "v-1", "account_id": "acc-1", "user_ids": ["u-1"]},
            "/accounts/acc-1": {"id": "acc-1", "traits": {"fit_score": self.fit}},
        }
        body = bodies.get(request.url.path)
        return (
            httpx.Response(200, content=msgspec.json.encode(body)) if body else httpx.Response(404)
        )


def test_invalidation_makes_the_http_source_fetch_again(ruleset: CompiledRuleset) -> None:
    """The profile API's webhook names a person by any id: their cached entries go, and the
    next decision reads the changed profile; writes to a profile API are refused."""
    api = ProfileApi()
    http = httpx.AsyncClient(transport=httpx.MockTransport(api), base_url="http://profiles.test")
    body = {"placement": "home_hero", "identity": {"user_id": "u-1"}, "explain": True}
    with app_client(
        ruleset,
        http_client=http,
        profile=HttpSettings(api_url="http://profiles.test"),
        **KEYS,
    ) as client:
        decide(client, body)
        fetched = len(api.paths)
        decide(client, body)
        assert len(api.paths) == fetched  # cached
        forgotten = client.post(
            "/v1/profiles/invalidate", json={"user_id": "u-1", "account_id": "acc-1"}, headers=AUTH
        )
        assert forgotten.json() == {"visitors": 1, "accounts": 1, "aliases": 1}
        decide(client, body)
        assert len(api.paths) == 2 * fetched
        refused = client.put("/v1/profiles/visitors/v-1", json={"id": "v-1"}, headers=AUTH)
    assert refused.status_code == 409
    assert refused.json()["code"] == "read_only"
