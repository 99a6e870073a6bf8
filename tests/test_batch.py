"""POST /v1/decide/batch through the app: each recipient answered in order, as POST /v1/decide
answers it (compared over generated people and ids of every kind, on every sample placement
and three kinds of source), or refused on its own naming its field; what all share refused
for the whole batch; the limits; the scopes; and each decision counted and logged as a
single one is, while single decisions are served between a batch's slices."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from decider.batch import MAX_BODY_BYTES, MAX_RECIPIENTS, SLICE, Refused, read_batch
from decider.engine import Evaluated
from decider.model import MAX_VALUES, DecideRequest, Identity
from decider.profile import AccountProfile, ConsentRecord, VisitorProfile
from decider.profiles.cache import CacheSettings
from decider.profiles.jsonl import sample_profiles
from decider.profiles.resolver import Resolver
from decider.profiles.sources.base import ProfileSource
from decider.profiles.sources.http import HttpSettings
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.ruleset import CompiledRuleset
from decider.server.admission import Admission, Overloaded
from decider.service import Decider
from decider.stats import Stats

from .conftest import NOW, api_key, app_client
from .fake_profile_api import resolve_answer, routes_of

Client = TestClient[Any]
Profile = VisitorProfile | AccountProfile
PLACEMENTS = {
    "home_hero": "web",
    "trial_upgrade_banner": "web",
    "shop_product_hero": "web",
    "nurture_email": "email",
    "trial_email": "email",
    "shop_promo_email": "email",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def batch(client: Client, body: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    response = client.post("/v1/decide/batch", json=body, headers=headers)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def single(client: Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body, headers=headers)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def anonymous(decision: dict[str, Any]) -> dict[str, Any]:
    """A decision without its id, which differs on every one."""
    assert len(decision.pop("decision_id")) == 32
    return decision


# --- generated people and the ids a send's list holds ------------------------------------

ACCOUNTS = ["acc-northwind", "acc-globex", "acc-initech", "acc-tinyco", "acc-umbrella"]
HELD = AccountProfile(id="acc-held", flags=frozenset({"legal_hold"}), traits={"fit_score": 95})
FLAGS = [(), (), (), (), ("unsubscribed",), ("bounced",), ("do_not_contact",), ("legal_hold",)]


def consent(rng: random.Random) -> tuple[ConsentRecord, ...]:
    """None, expired, one purpose or both, on an accepted basis or not."""
    granted = NOW - timedelta(days=rng.uniform(1, 300))
    expires = NOW - timedelta(days=1) if rng.random() < 0.15 else None
    basis = rng.choice(["consent", "consent", "legitimate_interest", "contract"])
    purposes = rng.choice(
        [(), ("personalization",), ("email_marketing",), ("personalization", "email_marketing")]
    )
    return tuple(ConsentRecord(p, basis, granted, expires) for p in purposes)


def population(seed: int) -> tuple[list[Profile], list[dict[str, Any]]]:
    """The sample profiles, 120 people made from them (traits of a sample person, another
    account, their own consent and flags), and 200 identities a send's list might hold:
    known and unknown ids of every kind, ids of two people at once, an account alone."""
    rng = random.Random(seed)
    samples = sample_profiles(NOW)
    templates = [p for p in samples if isinstance(p, VisitorProfile)]
    people: list[Profile] = [*samples, HELD]
    for n in range(120):
        template = rng.choice(templates)
        people.append(
            VisitorProfile(
                id=f"v-g{n}",
                account_id=rng.choice([*ACCOUNTS, "acc-held", "acc-gone", None]),
                user_ids=(f"u-g{n}",) if rng.random() < 0.7 else (),
                email_sha256=(sha(f"g{n}@example.com"),) if rng.random() < 0.9 else (),
                consent=consent(rng),
                flags=frozenset(rng.choice(FLAGS)),
                traits=template.traits,
            )
        )
    visitors = [p for p in people if isinstance(p, VisitorProfile)]

    def someone() -> dict[str, str]:
        person = rng.choice(visitors)
        kinds = {"visitor_id": person.id}
        if person.user_ids:
            kinds["user_id"] = person.user_ids[0]
        if person.email_sha256:
            kinds["email_sha256"] = person.email_sha256[0]
        kind = rng.choice(sorted(kinds))
        return {kind: kinds[kind]}

    identities: list[dict[str, Any]] = []
    for n in range(200):
        draw = rng.random()
        if draw < 0.45:
            identity = someone()
        elif draw < 0.6:  # two people's ids at once: a conflict, or a merge
            identity = {**someone(), **someone()}
        elif draw < 0.7:
            identity = {"email_sha256": sha(f"stranger{n}@example.com")}
        elif draw < 0.8:
            identity = rng.choice([{"user_id": f"u-nobody{n}"}, {"visitor_id": f"c-{n}"}])
        elif draw < 0.9:
            identity = {**someone(), "account_id": rng.choice([*ACCOUNTS, "acc-gone"])}
        else:
            identity = {"account_id": rng.choice([*ACCOUNTS, "acc-held"])}
        identities.append(identity)
    return people, identities


def api_over(people: list[Profile]) -> httpx.AsyncClient:
    """A profile API (GETs and POST /resolve) holding `people`, over httpx.MockTransport."""
    routes = routes_of(people)

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if (request.method, path) == ("POST", "/resolve"):
            return httpx.Response(200, content=resolve_answer(request.content, routes.get))
        body = routes.get(path) if request.method == "GET" else None
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://api.test")


@pytest.fixture(params=["memory", "sqlite", "http-resolve"])
def generated(
    request: pytest.FixtureRequest, ruleset: CompiledRuleset, tmp_path: Path
) -> Iterator[tuple[Client, list[dict[str, Any]]]]:
    """The app over the generated people, in memory, in SQLite, or behind a profile API
    that resolves each identity in one round trip; and the identities."""
    people, identities = population(seed=20261120)
    if request.param == "memory":
        with app_client(ruleset, MemoryProfileSource(people)) as client:
            yield client, identities
    elif request.param == "sqlite":
        store = SqliteProfileStore(tmp_path / "profiles.db")
        store.import_records(people)
        with app_client(ruleset, store) as client:
            yield client, identities
    else:
        profile = HttpSettings(api_url="http://api.test", api_resolve=True)
        with app_client(ruleset, http_client=api_over(people), profile=profile) as client:
            yield client, identities


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_every_recipient_is_decided_as_a_single_decision_is(
    generated: tuple[Client, list[dict[str, Any]]], placement: str
) -> None:
    """200 generated recipients (suppressed, unsubscribed, without consent, expired,
    unknown, ids of two people, accounts alone), some with a context of their own over the
    shared one: each result is the decision POST /v1/decide gives that recipient, with the
    context merged (the recipient's keys winning), but for its id."""
    client, identities = generated
    rng = random.Random(placement)
    shared = {"url": "https://decider.example/guides/migrating-your-cms", "device": "mobile"}
    own = [
        rng.choice([{}, {}, {"url": "https://decider.example/compare"}, {"utm_campaign": "x"}])
        for _ in identities
    ]
    recipients = [
        {"identity": identity, **({"context": context} if context else {})}
        for identity, context in zip(identities, own, strict=True)
    ]
    results = batch(client, {"placement": placement, "context": shared, "recipients": recipients})
    alone = [
        single(client, {"placement": placement, "identity": i, "context": {**shared, **c}})
        for i, c in zip(identities, own, strict=True)
    ]
    assert [anonymous(r) for r in results] == [anonymous(d) for d in alone]
    suppressed = {d["suppressed"] for d in alone}
    assert suppressed == {True, False}
    if PLACEMENTS[placement] == "email":
        codes = {r["code"] for d in alone for r in d["reasons"]}
        assert {"suppressed.flag", "suppressed.no_consent", "identity.conflict"} <= codes


@pytest.mark.parametrize("signal", ["consent", "gpc", "reject all"])
def test_the_web_consent_signal_holds_for_every_recipient(
    generated: tuple[Client, list[dict[str, Any]]], signal: str
) -> None:
    """The banner's purposes, shared, and Sec-GPC: 1 decide consent for every recipient as
    they do for one decision."""
    client, identities = generated
    body: dict[str, Any] = {"placement": "home_hero"}
    headers = {"Sec-GPC": "1"} if signal == "gpc" else {}
    if signal != "gpc":
        body["consent"] = {"purposes": ["personalization"] if signal == "consent" else []}
    results = batch(
        client, {**body, "recipients": [{"identity": i} for i in identities]}, **headers
    )
    alone = [single(client, {**body, "identity": i}, **headers) for i in identities]
    assert [anonymous(r) for r in results] == [anonymous(d) for d in alone]


# --- refusals ------------------------------------------------------------------------------


@pytest.fixture
def client(ruleset: CompiledRuleset) -> Iterator[Client]:
    with app_client(ruleset) as test_client:
        yield test_client


MAX = {"email_sha256": sha("max@globex.example")}
ADA = {"user_id": "u-ada"}


def test_a_wrong_recipient_is_refused_alone_naming_its_field(client: Client) -> None:
    """Each wrong recipient gets its own problem (as a 422 of POST /v1/decide would say it,
    its field under `recipients.<n>`); the others are decided, in order."""
    recipients: list[Any] = [
        {"identity": ADA},
        {"identity": {"email_sha256": "max@globex.example"}},
        {"identity": {}},
        {"identity": ADA, "context": {"big": 2**70}},
        {"identity": ADA, "context": {"list": list(range(2001))}},
        {"identity": ADA, "explain": True},
        {"context": {}},
        7,
        {"identity": MAX},
    ]
    results = batch(client, {"placement": "nurture_email", "recipients": recipients})
    assert [r.get("error", {}).get("field") for r in results] == [
        None,
        "recipients.1.identity.email_sha256",
        "recipients.2.identity",
        "recipients.3.context.big",
        "recipients.4.context.list",
        "recipients.5.explain",
        "recipients.6.identity",
        "recipients.7",
        None,
    ]
    refused = results[1]["error"]
    assert refused["type"] == "urn:decider:problem:invalid_request"
    assert (refused["status"], refused["code"]) == (422, "invalid_request")
    assert "@" not in str(results)  # an address sent by mistake is not echoed
    assert results[0]["segment"] == "b2b_top_tier_evaluation"
    assert results[-1]["suppressed"] is True


def test_a_recipients_context_counts_with_the_shared_one(client: Client) -> None:
    """Past 2000 values together, the recipient is refused: each part alone is within."""
    shared = {"tags": list(range(900)), "more": list(range(900))}
    recipients = [{"identity": ADA, "context": {"most": list(range(300))}}, {"identity": ADA}]
    body = {"placement": "home_hero", "context": shared, "recipients": recipients}
    refused, decided = batch(client, body)
    assert refused["error"]["field"] == "recipients.0.context"
    assert "2000 values" in refused["error"]["detail"]
    assert decided["placement"] == "home_hero"


def test_a_recipients_context_wins_over_the_shared_one(client: Client) -> None:
    """The shared url makes Lee (no consent) a migration researcher; her own url wins."""
    shared = {"url": "https://decider.example/guides/migrating-your-cms"}
    lee = {"user_id": "u-lee"}
    recipients = [{"identity": lee}, {"identity": lee, "context": {"url": "https://x.example"}}]
    first, second = batch(
        client, {"placement": "home_hero", "context": shared, "recipients": recipients}
    )
    assert (first["segment"], second["segment"]) == ("ctx_migration_research", None)


BAD_BATCHES: dict[str, tuple[bytes, int, str]] = {
    "unknown placement": (b'{"placement": "nope", "recipients": []}', 422, "placement"),
    "wrong channel": (
        b'{"placement": "home_hero", "channel": "email", "recipients": []}',
        422,
        "channel",
    ),
    "consent granted on email": (
        b'{"placement": "nurture_email", "consent": {"purposes": ["x"]}, "recipients": []}',
        422,
        "consent",
    ),
    "shared context": (
        b'{"placement": "home_hero", "context": {"x": "\\u0000"}, "recipients": []}',
        422,
        "context.x",
    ),
    "explain": (b'{"placement": "home_hero", "explain": true, "recipients": []}', 422, "explain"),
    "identity": (b'{"placement": "home_hero", "identity": {}, "recipients": []}', 422, "identity"),
    "no recipients": (b'{"placement": "home_hero"}', 422, "recipients"),
    "not a list": (b'{"placement": "home_hero", "recipients": {}}', 422, "recipients"),
    "not JSON": (b'{"placement": ', 400, "body"),
    "a key twice": (b'{"placement": "home_hero", "placement": "x", "recipients": []}', 400, "body"),
    "empty": (b"", 400, "body"),
}


@pytest.mark.parametrize("case", BAD_BATCHES)
def test_what_all_recipients_share_refuses_the_batch(client: Client, case: str) -> None:
    body, status, field = BAD_BATCHES[case]
    response = client.post("/v1/decide/batch", content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field


def test_more_recipients_than_the_limit_is_a_422_naming_it(client: Client) -> None:
    recipients = [{"identity": {"visitor_id": f"c-{n}"}} for n in range(MAX_RECIPIENTS + 1)]
    response = client.post(
        "/v1/decide/batch", json={"placement": "home_hero", "recipients": recipients}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["field"] == "recipients"
    assert f"<= {MAX_RECIPIENTS}" in problem["detail"]
    full = [{"identity": {"visitor_id": f"c-{n}"}} for n in range(MAX_RECIPIENTS)]
    assert len(batch(client, {"placement": "home_hero", "recipients": full})) == MAX_RECIPIENTS


def test_a_body_over_its_limit_is_a_413(client: Client) -> None:
    big = {"placement": "home_hero", "context": {"x": "a" * MAX_BODY_BYTES}, "recipients": []}
    response = client.post("/v1/decide/batch", json=big)
    assert response.status_code == 413
    problem = response.json()
    assert problem["field"] == "body"
    assert (
        problem["detail"] == "the body is larger than 1,048,576 bytes, the most this endpoint takes"
    )


# --- scopes -----------------------------------------------------------------------------


def test_scopes_hold_for_a_batch_as_for_a_decision(ruleset: CompiledRuleset) -> None:
    """With keys: none is a 401; `decide` alone gets the decisions with their reasons'
    fixed meanings; granting consent without the consent scope is a 403, withdrawing it
    is anyone's."""
    keys = ",".join(
        [api_key("d-key", "decide", name="d"), api_key("e-key", "decide", "explain", name="e")]
    )
    body = {"placement": "home_hero", "recipients": [{"identity": ADA}]}
    with app_client(ruleset, api_keys=keys) as client:
        assert client.post("/v1/decide/batch", json=body).status_code == 401
        plain = batch(client, body, **{"X-API-Key": "d-key"})[0]
        full = batch(client, body, **{"X-API-Key": "e-key"})[0]
        assert "identity.stitched" not in [r["code"] for r in plain["reasons"]]
        assert "v-ada" not in str(plain)
        assert "identity.stitched" in [r["code"] for r in full["reasons"]]
        assert anonymous(plain) == anonymous(
            single(client, {"placement": "home_hero", "identity": ADA}, **{"X-API-Key": "d-key"})
        )
        granting = {**body, "consent": {"purposes": ["personalization"]}}
        refused = client.post("/v1/decide/batch", json=granting, headers={"X-API-Key": "e-key"})
        assert (refused.status_code, refused.json()["field"]) == (403, "consent")
        rejecting = {**body, "consent": {"purposes": []}}
        assert batch(client, rejecting, **{"X-API-Key": "d-key"})[0]["personalized"] is False


# --- counted and logged as single decisions; fair to them -----------------------------


def decider_over(
    ruleset: CompiledRuleset, source: ProfileSource, exposed: list[tuple[str, Any]]
) -> tuple[Decider, Stats]:
    stats = Stats(NOW)
    numbers = iter(range(10**9))

    def expose(evaluated: Evaluated, context: Any, _: Any) -> None:
        exposed.append((evaluated.decision.decision_id, context))

    def ids() -> str:
        return f"{next(numbers):032x}"

    resolver = Resolver(source, budget=5.0, cache=CacheSettings())
    return Decider(ruleset, resolver, stats, clock=lambda: NOW, ids=ids, exposures=expose), stats


def test_each_decision_of_a_batch_is_counted_and_logged_as_a_single_one(
    ruleset: CompiledRuleset,
) -> None:
    """The stats (and so /metrics and segment usage) and the exposure log see a batch's
    decisions one by one, each with its own id and context, as they see single ones."""
    _, identities = population(seed=7)
    requests = [
        DecideRequest("home_hero", msgspec.convert(i, Identity), context={"n": n})
        for n, i in enumerate(identities)
    ]
    shared = DecideRequest("home_hero", Identity(visitor_id="-"))
    batched: list[tuple[str, Any]] = []
    alone: list[tuple[str, Any]] = []
    batching, batch_stats = decider_over(
        ruleset, MemoryProfileSource(sample_profiles(NOW)), batched
    )
    one, one_stats = decider_over(ruleset, MemoryProfileSource(sample_profiles(NOW)), alone)

    async def main() -> None:
        in_batch = await batching.decide_batch(shared, requests, gpc=False)
        singles = [await one.decide(r, gpc=False) for r in requests]
        assert in_batch == singles
        assert len({d.decision_id for d in in_batch}) == len(requests)

    asyncio.run(main())
    assert batched == alone
    assert [context for _, context in batched] == [{"n": n} for n in range(len(requests))]
    assert batch_stats.decisions == one_stats.decisions == len(requests)
    assert batch_stats.decided == one_stats.decided
    assert batch_stats.degraded == one_stats.degraded
    assert {s: v.wins for s, v in batch_stats.segments.items()} == {
        s: v.wins for s, v in one_stats.segments.items()
    }


def test_single_decisions_are_served_between_a_batchs_slices(ruleset: CompiledRuleset) -> None:
    """A full batch and a single decision asked at once: the single one is made while the
    batch is under way, not after it."""
    source = MemoryProfileSource(sample_profiles(NOW))
    decider, _ = decider_over(ruleset, source, [])
    requests = [DecideRequest("nurture_email", Identity(user_id="u-ada"))] * MAX_RECIPIENTS

    async def main() -> list[str]:
        done: list[str] = []

        async def run(name: str, work: Any) -> None:
            await work
            done.append(name)

        await asyncio.gather(
            run("batch", decider.decide_batch(requests[0], requests, gpc=False)),
            run("single", decider.decide(requests[0], gpc=False)),
        )
        return done

    assert asyncio.run(main()) == ["single", "batch"]


def test_batches_hold_a_share_of_the_places_single_decisions_keep_theirs() -> None:
    """With 64 places, batches hold at most 2 at once (each also one place among the 64):
    a third is turned away with Retry-After, counted, while decisions are still let in."""
    admission = Admission(64)
    with admission.batch(), admission.batch():
        assert (admission.batches, admission.in_flight) == (2, 2)
        with pytest.raises(Overloaded) as refused, admission.batch():
            pass
        assert refused.value.headers == {"Retry-After": "1"}
        assert "2 batches in flight" in str(refused.value.detail)
        with admission:
            assert admission.in_flight == 3
    assert (admission.batches, admission.in_flight, admission.shed) == (0, 0, 1)


def test_the_shared_context_is_checked_once_and_bounds_each_recipients() -> None:
    """The shared context is checked once; each recipient's may add only what the values'
    bound leaves, so a batch costs at most what its single decisions would."""
    shared = {"a": list(range(995)), "b": list(range(993))}  # 1,991 values with the maps'
    assert MAX_VALUES - 1991 == 9  # what each recipient's context may add
    body = msgspec.json.encode(
        {
            "placement": "nurture_email",
            "context": shared,
            "recipients": [
                {"identity": {"visitor_id": "v-1"}, "context": {"few": [1, 2, 3]}},
                {"identity": {"visitor_id": "v-2"}, "context": {"many": list(range(20))}},
            ],
        }
    )
    batch = asyncio.run(read_batch(body))
    fits, over = batch.requests
    assert isinstance(fits, DecideRequest)
    assert fits.context == {**shared, "few": [1, 2, 3]}
    assert isinstance(over, Refused)
    assert (over.error.field, over.error.detail) == (
        "recipients.1.context",
        f"more than {MAX_VALUES} values in all",
    )


def test_reading_a_batch_lets_the_event_loop_serve_others() -> None:
    """A full batch's recipients are read a slice at a time: a single decision waiting on
    the same loop is served between slices, not after the whole batch."""
    recipients = [
        {"identity": {"visitor_id": f"v-{n}"}, "context": {"pages": list(range(100))}}
        for n in range(MAX_RECIPIENTS)
    ]
    body = msgspec.json.encode({"placement": "nurture_email", "recipients": recipients})

    async def run() -> int:
        passes = 0

        async def other() -> None:
            nonlocal passes
            while True:
                passes += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        before = passes
        batch = await read_batch(body)
        task.cancel()
        assert len(batch.requests) == MAX_RECIPIENTS
        return passes - before

    assert asyncio.run(run()) >= MAX_RECIPIENTS // SLICE - 1
