"""OFREP over decisions, through litestar's test client: shapes, reasons, identity from the
evaluation context, errors in OFREP's shape, keys and scopes, and the bulk ETag."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from decider.model import DecideRequest, Decision, Identity
from decider.ofrep import REASONS, Bulk, Evaluation, etag, none_match
from decider.profile import Resolution
from decider.profiles.cache import CacheSettings
from decider.profiles.jsonl import sample_profiles
from decider.profiles.resolver import Resolver
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.reasons import ReasonCode
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset
from decider.service import Decider
from decider.stats import Stats

from .conftest import NOW, RULES, api_key, app_client
from .test_readme import README, table

Client = TestClient[Any]
FLAG = "/ofrep/v1/evaluate/flags/"
BULK = "/ofrep/v1/evaluate/flags"
MAX_SHA = hashlib.sha256(b"max@globex.example").hexdigest()  # unsubscribed
DECIDER = "decider-key-0123456789"  # decide only
OPS = "ops-key-0123456789abcdef"  # decide, explain, consent
ADMIN = "admin-key-0123456789abcd"  # admin only


@pytest.fixture(scope="module")
def ruleset() -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine("cel-expr"))


@pytest.fixture(scope="module")
def client(ruleset: CompiledRuleset) -> Iterator[Client]:
    """The app with no keys, called from this machine: decide, explain and consent."""
    with app_client(ruleset) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keyed(ruleset: CompiledRuleset) -> Iterator[Client]:
    """The app with keys configured; requests carry none unless a test gives one."""
    keys = ",".join(
        (
            api_key(DECIDER, "decide", name="web"),
            api_key(OPS, "decide", "explain", "consent", name="ops"),
            api_key(ADMIN, "admin", name="admin"),
        )
    )
    with app_client(ruleset, api_keys=keys) as test_client:
        yield test_client


def evaluate(client: Client, key: str, context: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(FLAG + key, json={"context": context}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = response.json()
    return answer


def failure(response: Any, status: int) -> dict[str, Any]:
    """The OFREP error body of `response`, which must have `status`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_the_reason_map_is_total_and_speaks_openfeature() -> None:
    """Every reason code has an OFREP reason, and each is one the provider's
    `Reason[data["reason"]]` reads."""
    assert set(REASONS) == set(ReasonCode)
    assert {Reason[reason] for reason in REASONS.values()} <= set(Reason)


def test_the_readme_shows_the_reason_map() -> None:
    """The README's OFREP reason table is the map, code by code."""
    shown = {
        code.strip("`"): reason.strip("`")
        for reason, codes in table("OFREP reasons")
        for code in codes.split(", ")
    }
    assert shown == {code.value: reason for code, reason in REASONS.items()}
    assert "OFREP reasons" in README


@pytest.mark.parametrize(
    ("key", "context", "reason", "variant"),
    [
        # in the control arm of the hero's holdout experiment
        (
            "home_hero",
            {"targetingKey": "anon-1", "user_id": "u-ada"},
            "SPLIT",
            "home_named_account",
        ),
        ("shop_product_hero", {"targetingKey": "v-finn"}, "TARGETING_MATCH", "shop_urgency"),
        ("home_hero", {"targetingKey": "nobody-known"}, "DEFAULT", "home_generic"),
        ("nurture_email", {"targetingKey": "x", "email_sha256": MAX_SHA}, "DISABLED", None),
    ],
)
def test_a_placement_is_a_flag(
    client: Client, key: str, context: dict[str, Any], reason: str, variant: str | None
) -> None:
    """The flag's value is the variant's content, `variant` its id, `reason` the decision's,
    and the metadata the decision's, as POST /v1/decide gives it for the same identity."""
    answer = evaluate(client, key, context)
    assert set(answer) == {"key", "value", "reason", "variant", "metadata"}
    identity = {k: v for k, v in context.items() if k != "targetingKey"} or {
        "visitor_id": context["targetingKey"]
    }
    decision = client.post("/v1/decide", json={"placement": key, "identity": identity}).json()
    assert answer["key"] == key
    assert answer["reason"] == reason
    assert answer["variant"] == decision["variant"]["id"]
    assert variant is None or answer["variant"] == variant
    assert answer["value"] == decision["variant"]["content"]
    metadata = answer["metadata"]
    assert all(isinstance(value, bool | int | float | str) for value in metadata.values())
    assert metadata["decision_id"] != decision["decision_id"]  # one decision each
    expected = {
        "ruleset": decision["ruleset"],
        "channel": decision["channel"],
        "suppressed": decision["suppressed"],
        "personalized": decision["personalized"],
        "reasons": ",".join(r["code"] for r in decision["reasons"]),
        **({"segment": decision["segment"]} if decision["segment"] else {}),
        **({"experiment": decision["experiment"]} if "experiment" in decision else {}),
        **({"arm": decision["arm"]} if "arm" in decision else {}),
    }
    assert {k: v for k, v in metadata.items() if k != "decision_id"} == expected


def test_suppressed_and_personalized_say_what_to_do(client: Client) -> None:
    """An unsubscribed recipient: suppressed, not personalized, DISABLED."""
    answer = evaluate(client, "nurture_email", {"email_sha256": MAX_SHA})
    assert answer["metadata"]["suppressed"] is True
    assert answer["metadata"]["personalized"] is False
    assert "segment" not in answer["metadata"]  # metadata holds no null


def test_identity_keys_win_over_the_targeting_key(client: Client) -> None:
    """targetingKey is the visitor id only when no identity key is given: with user_id, the
    user decides who is asked, whatever the targeting key names."""
    alone = evaluate(client, "home_hero", {"targetingKey": "v-dan"})
    assert alone["metadata"]["reasons"].startswith("identity.visitor,")
    ada = evaluate(client, "home_hero", {"targetingKey": "v-dan", "user_id": "u-ada"})
    assert ada["metadata"]["segment"] == "b2b_top_tier_evaluation"
    both = evaluate(client, "home_hero", {"visitor_id": "anon-1", "user_id": "u-ada"})
    assert "identity.merged" in both["metadata"]["reasons"]


def test_other_keys_are_the_rules_context(client: Client) -> None:
    """A key Decider does not read is the rules' `context`: a contextual segment matches."""
    url = "https://decider.example/guides/migrating-your-cms"
    answer = evaluate(client, "home_hero", {"targetingKey": "anon-1", "url": url})
    assert answer["metadata"]["segment"] == "ctx_migration_research"
    assert answer["reason"] == "TARGETING_MATCH"


def test_consent_and_gpc(client: Client) -> None:
    """`consent` is the banner's purposes; Sec-GPC: 1 withdraws as on /v1/decide."""
    lee = {"user_id": "u-lee"}  # never consented in the stored records
    assert "consent.denied" in evaluate(client, "home_hero", lee)["metadata"]["reasons"]
    granted = evaluate(client, "home_hero", {**lee, "consent": ["personalization"]})
    assert "consent.granted" in granted["metadata"]["reasons"]
    ada = {"user_id": "u-ada"}
    withdrawn = evaluate(client, "home_hero", ada, **{"Sec-GPC": "1"})
    assert "consent.denied" in withdrawn["metadata"]["reasons"]
    assert withdrawn["metadata"]["personalized"] is False


@pytest.mark.parametrize(
    ("body", "code", "details"),
    [
        (b"{nope", "PARSE_ERROR", "body: not valid JSON"),
        (b"[1]", "PARSE_ERROR", "body: Expected `object`"),
        (b'{"context": {"a": 1, "a": 2}}', "PARSE_ERROR", "body: the key 'a' appears twice"),
        (b"", "TARGETING_KEY_MISSING", "context.targetingKey: a targetingKey"),
        (b"{}", "TARGETING_KEY_MISSING", "context.targetingKey"),
        (b'{"context": {"targetingKey": ""}}', "TARGETING_KEY_MISSING", "context.targetingKey"),
        (b'{"context": 7}', "INVALID_CONTEXT", "context: Expected `object | null`"),
        (b'{"context": {"targetingKey": 7}}', "INVALID_CONTEXT", "context.targetingKey"),
        (
            b'{"context": {"targetingKey": "ada@northwind.example"}}',
            "INVALID_CONTEXT",
            "context.targetingKey: targetingKey looks like an email address",
        ),
        (
            b'{"context": {"targetingKey": "t", "user_id": "ada@northwind.example"}}',
            "INVALID_CONTEXT",
            "context.user_id: user_id looks like an email address",
        ),
        (
            b'{"context": {"targetingKey": "t", "email": "ada@northwind.example"}}',
            "INVALID_CONTEXT",
            "context.email: a raw email address is refused",
        ),
        (b'{"context": {"email_sha256": "beef"}}', "INVALID_CONTEXT", "context.email_sha256"),
        (b'{"context": {"user_id": "u", "consent": "all"}}', "INVALID_CONTEXT", "context.consent"),
        (b'{"context": {"user_id": "u", "x": "\\u0000"}}', "INVALID_CONTEXT", "context.x: holds"),
    ],
)
def test_bad_input_is_an_ofrep_error(client: Client, body: bytes, code: str, details: str) -> None:
    """400 `{key, errorCode, errorDetails}`, the field at fault first in the details, and
    no echo of an email address."""
    response = client.post(FLAG + "home_hero", content=body)
    answer = failure(response, 400)
    assert set(answer) == {"key", "errorCode", "errorDetails"}
    assert (answer["key"], answer["errorCode"]) == ("home_hero", code)
    assert ErrorCode(answer["errorCode"])  # one the SDK knows
    assert answer["errorDetails"].startswith(details)
    assert "northwind" not in answer["errorDetails"]


def test_the_consent_signal_on_an_email_flag_is_invalid_context(client: Client) -> None:
    """Email decisions use stored consent only, as on /v1/decide."""
    context = {"user_id": "u-ada", "consent": ["email_marketing"]}
    response = client.post(FLAG + "nurture_email", json={"context": context})
    assert failure(response, 400)["errorCode"] == "INVALID_CONTEXT"


def test_an_unknown_flag_is_flag_not_found(client: Client) -> None:
    """404 FLAG_NOT_FOUND, even before the context is read."""
    answer = failure(client.post(FLAG + "no_such_placement", json={"context": {}}), 404)
    assert answer == {
        "key": "no_such_placement",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "no placement of this id in the loaded rules",
    }


def test_keys_and_scopes(keyed: Client) -> None:
    """A key that may decide may evaluate; none is a 401, one without the decide scope a 403,
    granting consent takes the consent scope; errors keep OFREP's shape."""
    context = {"context": {"user_id": "u-ada"}}
    refused = failure(keyed.post(FLAG + "home_hero", json=context), 401)
    assert refused["errorCode"] == "GENERAL"
    assert "API key" in refused["errorDetails"]
    assert failure(keyed.post(BULK, json=context), 401).keys() == {"errorCode", "errorDetails"}
    admin = {"X-API-Key": ADMIN}
    answer = failure(keyed.post(FLAG + "home_hero", json=context, headers=admin), 403)
    assert answer["errorDetails"] == "this needs an API key with the decide scope"
    web = {"Authorization": f"Bearer {DECIDER}"}
    decided = evaluate(keyed, "home_hero", {"user_id": "u-ada"}, **web)
    # a decide-only key learns no id linking: as /v1/decide tells it
    assert decided["metadata"]["reasons"] == "consent.granted,segment.matched,experiment.control"
    grant = {"context": {"user_id": "u-lee", "consent": ["personalization"]}}
    denied = failure(keyed.post(FLAG + "home_hero", json=grant, headers=web), 403)
    assert denied["errorDetails"].startswith("context.consent: sending the consent signal needs")
    assert failure(keyed.post(BULK, json=grant, headers=web), 403)["errorCode"] == "GENERAL"
    withdraw = {"user_id": "u-ada", "consent": []}  # anyone may withdraw
    assert evaluate(keyed, "home_hero", withdraw, **web)["metadata"]["personalized"] is False
    ops = {"X-API-Key": OPS}
    assert (
        "identity.stitched"
        in evaluate(keyed, "home_hero", {"user_id": "u-ada"}, **ops)["metadata"]["reasons"]
    )


def bulk(client: Client, context: dict[str, Any], **headers: str) -> Any:
    return client.post(BULK, json={"context": context}, headers=headers)


def test_bulk_evaluates_every_placement_of_a_channel_as_the_single_call_does(
    client: Client, ruleset: CompiledRuleset
) -> None:
    """One evaluation per placement of the context's channel (the web unless it names
    another), in id order, each what the single evaluation gives (but its own decision
    id), with an ETag."""
    for channel in ("web", "email", "push"):
        context = {"targetingKey": "anon-1", "user_id": "u-ada", "device": "mobile"}
        if channel != "web":
            context["channel"] = channel
        response = bulk(client, context)
        assert response.status_code == 200, response.text
        assert response.headers["etag"].startswith('W/"')
        flags = response.json()["flags"]
        ours = sorted(k for k, p in ruleset.placements.items() if p.channel == channel)
        assert ours
        assert [flag["key"] for flag in flags] == ours
        ids = set()
        for flag in flags:
            single = evaluate(client, flag["key"], context)
            ids |= {flag["metadata"].pop("decision_id"), single["metadata"].pop("decision_id")}
            assert flag == single
            assert flag["metadata"]["channel"] == channel
        assert len(ids) == 2 * len(flags)


def test_bulk_failures_are_per_flag_or_whole(client: Client) -> None:
    """A context every flag refuses alike (a banner's grant on email) fails the request as a
    whole, as do a missing targeting key and a channel the rules do not define, in the bulk
    failure's shape; a single flag of another channel than the context names is refused."""
    flags = bulk(client, {"user_id": "u-ada", "consent": ["personalization"]}).json()["flags"]
    assert {flag["key"]: flag["reason"] for flag in flags}["home_hero"] == "SPLIT"
    email = {"user_id": "u-ada", "consent": ["personalization"], "channel": "email"}
    granting = failure(client.post(BULK, json={"context": email}), 400)
    assert granting["errorCode"] == "INVALID_CONTEXT"
    assert granting["errorDetails"].startswith("context.consent: email decisions")
    withdrawn = bulk(client, {**email, "consent": []}).json()["flags"]
    assert {flag["metadata"]["suppressed"] for flag in withdrawn} == {True}
    whole = failure(client.post(BULK, json={"context": {}}), 400)
    assert whole.keys() == {"errorCode", "errorDetails"}
    assert whole["errorCode"] == "TARGETING_KEY_MISSING"
    fax = failure(client.post(BULK, json={"context": {"user_id": "u-ada", "channel": "fax"}}), 400)
    assert (fax["errorCode"], fax["errorDetails"][:16]) == ("INVALID_CONTEXT", "context.channel:")
    single = client.post(
        f"{BULK}/home_hero", json={"context": {"user_id": "u-ada", "channel": "email"}}
    )
    mismatch = failure(single, 400)
    assert mismatch["errorCode"] == "INVALID_CONTEXT"
    assert mismatch["errorDetails"].startswith("context.channel: placement 'home_hero' serves")


def test_a_current_etag_is_304_and_a_changed_context_never_is(client: Client) -> None:
    """The same context again: 304, no body, the same ETag. Any change to the context, even
    one no rule reads, or to the GPC signal, is a 200 with another ETag."""
    context = {"targetingKey": "anon-1", "user_id": "u-ada"}
    tag = bulk(client, context).headers["etag"]
    again = bulk(client, context, **{"If-None-Match": tag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag)
    listed = bulk(client, context, **{"If-None-Match": f'"other", {tag.removeprefix("W/")}'})
    assert listed.status_code == 304
    fields = [("If-None-Match", '"other"'), ("If-None-Match", tag)]  # one list, two fields
    assert client.post(BULK, json={"context": context}, headers=fields).status_code == 304
    changes = [
        {**context, "device": "mobile"},  # read by no rule: the same evaluations
        {**context, "user_id": "u-ben"},
        {"targetingKey": "anon-2", "user_id": "u-ada"},
    ]
    for changed in changes:
        answer = bulk(client, changed, **{"If-None-Match": tag})
        assert answer.status_code == 200
        assert answer.headers["etag"] != tag
    gpc = bulk(client, context, **{"If-None-Match": tag, "Sec-GPC": "1"})
    assert gpc.status_code == 200
    assert gpc.headers["etag"] != tag


def test_a_changed_profile_changes_the_etag(
    ruleset: CompiledRuleset, store: SqliteProfileStore
) -> None:
    """The same context after the profile changed (a legal hold written through the profile
    API): every flag is now DISABLED, and the old ETag is no longer current."""
    keys = api_key(OPS, "decide", "profiles-write")
    with app_client(ruleset, store, api_keys=keys, headers={"X-API-Key": OPS}) as client:
        context = {"targetingKey": "v-finn"}
        tag = bulk(client, context).headers["etag"]
        assert bulk(client, context, **{"If-None-Match": tag}).status_code == 304
        flagged = client.patch("/v1/profiles/visitors/v-finn", json={"add_flags": ["legal_hold"]})
        assert flagged.status_code == 200, flagged.text
        answer = bulk(client, context, **{"If-None-Match": tag})
        assert answer.status_code == 200
        assert answer.headers["etag"] != tag
        assert {flag["reason"] for flag in answer.json()["flags"]} == {"DISABLED"}


def test_the_etag_covers_the_ruleset_version(client: Client) -> None:
    """The same evaluations under another ruleset version are another ETag (a reload that
    changes nothing served still changes `ruleset` in every flag's metadata, too)."""
    flags = bulk(client, {"user_id": "u-ada"}).json()["flags"]
    answer = Bulk(tuple(msgspec.convert(flag, Evaluation) for flag in flags))
    assert etag("r1", {"user_id": "u-ada"}, False, answer) != etag(
        "r2", {"user_id": "u-ada"}, False, answer
    )


def test_if_none_match_is_compared_weakly() -> None:
    """W/ is ignored on either side; `*` and other tags do not match; several header fields
    are one list."""
    assert none_match(['W/"abc"'], 'W/"abc"')
    assert none_match(['"abc"'], 'W/"abc"')
    assert none_match(['"x", W/"abc"'], 'W/"abc"')
    assert none_match(['"x"', 'W/"abc"'], 'W/"abc"')
    assert not none_match([], 'W/"abc"')
    assert not none_match(["*"], 'W/"abc"')
    assert not none_match(['"abcd"'], 'W/"abc"')


def test_a_browser_provider_may_send_if_none_match_and_read_the_etag(
    ruleset: CompiledRuleset,
) -> None:
    """With CORS on, the preflight allows If-None-Match and the answer exposes ETag: an OFREP
    web provider's bulk cache needs both."""
    origin = "https://shop.example"
    with app_client(ruleset, cors_origins=origin) as client:
        asked = client.options(
            BULK,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, if-none-match",
            },
        )
        assert asked.status_code == 204
        assert "if-none-match" in asked.headers["access-control-allow-headers"].lower()
        answer = bulk(client, {"targetingKey": "v-finn"}, Origin=origin)
        assert answer.headers["access-control-allow-origin"] == origin
        assert "etag" in answer.headers["access-control-expose-headers"].lower()


class _ReloadingResolver:
    """A resolver over the sample people that swaps another ruleset in as it resolves: a
    reload landing while a bulk evaluation waits for its lookups."""

    def __init__(self, then: CompiledRuleset) -> None:
        self.then = then
        self.decider: Decider | None = None
        source = MemoryProfileSource(sample_profiles(NOW))
        self.resolver = Resolver(source, budget=5.0, cache=CacheSettings())

    async def resolve(self, identity: Identity, channel: str) -> Resolution:
        assert self.decider is not None
        self.decider.swap(self.then)
        return await self.resolver.resolve(identity, channel)

    async def resolve_many(self, identities: Sequence[Identity], channel: str) -> list[Resolution]:
        raise NotImplementedError  # bulk evaluation resolves its one identity


def test_a_bulk_evaluation_is_made_on_one_ruleset_a_reload_meanwhile_or_not(
    ruleset: CompiledRuleset, tmp_path: Path
) -> None:
    """Every flag of one bulk answer, and its ETag, come from the ruleset it started on,
    though a reload lands while it looks the person up; the identity is resolved once."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    with (rules / "b2b.yaml").open("a") as extra:
        extra.write("# another version of the same rules\n")
    reloaded = compile_ruleset(rules, new_engine("cel-expr"))
    assert reloaded.version != ruleset.version
    resolver = _ReloadingResolver(reloaded)
    decider = Decider(ruleset, resolver, Stats(NOW), clock=lambda: NOW, ids=lambda: "d")
    resolver.decider = decider
    request = DecideRequest(placement="", identity=Identity(user_id="u-ada"))
    made_on, decided = asyncio.run(decider.decide_channel(request, "web", gpc=False))
    assert made_on is ruleset
    assert decider.ruleset is reloaded  # swapped once, while the one lookup ran
    versions = {d.ruleset for _, d in decided if isinstance(d, Decision)}
    assert versions == {ruleset.version}
    assert [key for key, _ in decided] == sorted(
        k for k, p in ruleset.placements.items() if p.channel == "web"
    )


def test_errors_under_ofrep_are_ofreps_wherever_they_arise(ruleset: CompiledRuleset) -> None:
    """A method no route takes, a key with a slash (no route serves it), a key longer than
    any id (echoed cut), a body over the limit (named): OFREP's shape, never problem+json."""
    with app_client(ruleset, max_body_bytes=4096) as client:
        wrong = client.get(FLAG + "home_hero")
        assert (wrong.status_code, wrong.json()) == (
            405,
            {
                "key": "home_hero",
                "errorCode": "GENERAL",
                "errorDetails": "GET is not allowed: OFREP evaluates flags with POST",
            },
        )
        assert set(wrong.headers["allow"].split(", ")) == {"OPTIONS", "POST"}
        assert client.get(BULK).json() == {
            "errorCode": "GENERAL",
            "errorDetails": "GET is not allowed: OFREP evaluates flags with POST",
        }
        for path in ("a%2Fb", "a/b"):
            slashed = client.post(FLAG + path, json={"context": {"targetingKey": "v"}})
            assert slashed.status_code == 404
            assert slashed.headers["content-type"] == "application/json"
            assert slashed.json()["key"] == "a/b"
            assert slashed.json()["errorCode"] == "FLAG_NOT_FOUND"
        long = client.post(FLAG + "k" * 5000, json={"context": {"targetingKey": "v"}})
        assert (long.status_code, long.json()["key"]) == (404, "k" * 256 + "…")
        big = client.post(FLAG + "home_hero", json={"context": {"x": "a" * 5000}})
        assert (big.status_code, big.json()) == (
            413,
            {
                "key": "home_hero",
                "errorCode": "GENERAL",
                "errorDetails": "the body is larger than 4,096 bytes, the most this endpoint takes",
            },
        )
        empty = client.post(FLAG, json={"context": {"targetingKey": "v"}})  # no key: no bulk
        assert (empty.status_code, empty.json()["key"]) == (404, "")
        assert empty.json()["errorCode"] == "FLAG_NOT_FOUND"
        elsewhere = client.post("/ofrep/v1/evaluate", json={})
        assert (elsewhere.status_code, elsewhere.json()["errorCode"]) == (404, "GENERAL")
