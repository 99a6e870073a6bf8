"""The HTTP API, through litestar's test client over the seeded SQLite store."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient

from decider.errors import InvalidRequest, MalformedBody
from decider.model import decode_request
from decider.profiles.jsonl import parse_profiles, sample_profiles
from decider.profiles.sources.http import HttpSettings
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.ruleset import CompiledRuleset

from .conftest import NOW, app_client

MAX_SHA = hashlib.sha256(b"max@globex.example").hexdigest()  # unsubscribed
ADA_SHA = hashlib.sha256(b"ada@northwind.example").hexdigest()

Client = TestClient[Any]


def decide(client: Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def codes(decision: dict[str, Any]) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


def test_a_known_visitor_gets_the_segment_variant(client: Client, ruleset: CompiledRuleset) -> None:
    """A logged-in VP of a top-tier account in evaluation gets the named-account hero, and why
    (her account is in the control arm of the hero's holdout experiment)."""
    decision = decide(client, {"placement": "home_hero", "identity": {"user_id": "u-ada"}})
    assert decision["segment"] == "b2b_top_tier_evaluation"
    assert decision["variant"]["id"] == "home_named_account"
    assert set(decision["variant"]["content"]) == {"hero", "cta", "proof"}
    assert decision["personalized"] is True
    assert decision["suppressed"] is False
    assert decision["channel"] == "web"
    assert len(decision["decision_id"]) == 32
    assert decision["ruleset"] == ruleset.version
    assert codes(decision) == [
        "identity.stitched",
        "identity.account",
        "consent.granted",
        "segment.matched",
        "experiment.control",
    ]
    assert (decision["experiment"], decision["arm"]) == ("home_hero_holdout", "control")
    assert "explain" not in decision
    assert "bucket" not in decision


def test_email_hash_stitches_to_the_same_visitor(client: Client) -> None:
    """A hashed email resolves to the same visitor and account as the user id."""
    decision = decide(client, {"placement": "nurture_email", "identity": {"email_sha256": ADA_SHA}})
    assert decision["segment"] == "b2b_top_tier_evaluation"
    assert decision["variant"]["id"] == "nurture_exec_briefing"
    assert set(decision["variant"]["content"]) == {"subject", "opening", "proof", "cta"}


def test_explain_lists_every_segment_in_priority_order(
    client: Client, ruleset: CompiledRuleset
) -> None:
    """With explain, every segment's outcome is listed; the winner is marked matched."""
    decision = decide(
        client, {"placement": "home_hero", "identity": {"user_id": "u-ada"}, "explain": True}
    )
    trace = decision["explain"]
    assert [o["segment"] for o in trace] == [s.id for s in ruleset.segments]
    assert {o["segment"]: o["outcome"] for o in trace}["b2b_top_tier_evaluation"] == "matched"
    assert {o["outcome"] for o in trace} <= {"matched", "not_matched", "error"}


def test_without_consent_profile_rules_are_skipped(client: Client) -> None:
    """A visitor with no consent record gets the default; profile segments show as skipped."""
    decision = decide(
        client, {"placement": "home_hero", "identity": {"user_id": "u-lee"}, "explain": True}
    )
    assert decision["segment"] is None
    assert decision["variant"]["id"] == "home_generic"
    assert decision["personalized"] is False
    assert "consent.denied" in codes(decision)
    outcomes = {o["segment"]: o["outcome"] for o in decision["explain"]}
    assert outcomes["b2b_top_tier_evaluation"] == "skipped_consent"
    assert outcomes["ctx_migration_research"] == "not_matched"


def test_without_consent_a_contextual_segment_matches(client: Client) -> None:
    """Context alone may personalize: a migration guide reader gets the migration hero."""
    decision = decide(
        client,
        {
            "placement": "home_hero",
            "identity": {"user_id": "u-lee"},
            "context": {"url": "https://decider.example/guides/migrating-your-cms"},
        },
    )
    assert decision["segment"] == "ctx_migration_research"
    assert decision["personalized"] is True
    assert "consent.denied" in codes(decision)


def test_banner_consent_in_the_request_grants(client: Client) -> None:
    """Purposes granted by the site's banner count for this request."""
    body = {"placement": "home_hero", "identity": {"user_id": "u-lee"}}
    decision = decide(client, {**body, "consent": {"purposes": ["personalization"]}})
    assert decision["segment"] == "b2b_top_tier_evaluation"


def test_sec_gpc_withdraws_personalization(client: Client) -> None:
    """`Sec-GPC: 1` opts out: the same visitor gets the default."""
    body = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
    assert decide(client, body)["personalized"] is True
    decision = decide(client, body, **{"Sec-GPC": "1"})
    assert decision["personalized"] is False
    assert "Sec-GPC" in next(
        r["message"] for r in decision["reasons"] if r["code"] == "consent.denied"
    )


def test_an_unsubscribed_person_is_suppressed(client: Client) -> None:
    """An unsubscribed person gets the default email with suppressed: true."""
    decision = decide(client, {"placement": "nurture_email", "identity": {"email_sha256": MAX_SHA}})
    assert decision["suppressed"] is True
    assert decision["personalized"] is False
    assert decision["segment"] is None
    assert decision["variant"]["id"] == "nurture_generic"
    assert "suppressed.flag" in codes(decision)


def test_an_unknown_visitor_gets_the_default(client: Client) -> None:
    """An id no profile matches is answered, not refused: default content, reason given."""
    decision = decide(client, {"placement": "home_hero", "identity": {"visitor_id": "v-nobody"}})
    assert decision["segment"] is None
    assert "identity.unknown" in codes(decision)


def body(**fields: Any) -> bytes:
    """A valid request body with some fields replaced (a field set to ... is removed)."""
    request = {"placement": "home_hero", "identity": {"user_id": "u-ada"}} | fields
    return json.dumps({k: v for k, v in request.items() if v is not ...}).encode()


BAD_INPUT = [
    ("malformed JSON", b'{"placement": ', 400, "body"),
    ("not UTF-8", b'{"placement": "home_\xff", "identity": {"user_id": "u"}}', 400, "body"),
    ("empty body", b"", 400, "body"),
    ("array body", b"[]", 422, "body"),
    ("wrong type", body(placement=1), 422, "placement"),
    ("string for bool", body(explain="yes"), 422, "explain"),
    ("nested wrong type", body(identity={"user_id": 7}), 422, "identity.user_id"),
    ("missing placement", body(placement=...), 422, "placement"),
    ("missing identity", body(identity=...), 422, "identity"),
    ("no identifier", body(identity={}), 422, "identity"),
    ("empty identifier", body(identity={"user_id": ""}), 422, "identity.user_id"),
    (
        "raw email",
        body(identity={"email_sha256": "ada@northwind.example"}),
        422,
        "identity.email_sha256",
    ),
    (
        "uppercase hash",
        body(identity={"email_sha256": ADA_SHA.upper()}),
        422,
        "identity.email_sha256",
    ),
    ("an address as user_id", body(identity={"user_id": "ada@x.example"}), 422, "identity"),
    (
        "a full-width @ in an id",
        body(identity={"visitor_id": "ada\uff20northwind.example"}),
        422,
        "identity",
    ),
    ("a %40 in an id", body(identity={"user_id": "ada%40northwind.example"}), 422, "identity"),
    ("unknown field", body(placment="home_hero"), 422, "placment"),
    ("unknown identity field", body(identity={"email": "a@b.example"}), 422, "identity.email"),
    ("context not an object", body(context=[]), 422, "context"),
    ("consent not a list", body(consent={"purposes": "all"}), 422, "consent.purposes"),
    ("unknown channel", body(channel="sms"), 422, "channel"),
    ("unknown placement", body(placement="nope"), 422, "placement"),
    ("channel mismatch", body(channel="email"), 422, "channel"),
    (
        "banner granting on email",
        body(placement="nurture_email", consent={"purposes": ["email_marketing"]}),
        422,
        "consent",
    ),
    ("oversized body", body(context={"x": "a" * 5000}), 413, "body"),
    (
        "nested too deep",
        body(context={"x": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}),
        422,
        "context.x.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",
    ),
    ("integer beyond 64 bits", body(context={"n": 2**70}), 422, "context.n"),
    ("NUL in a context string", body(context={"s": "a\x00b"}), 422, "context.s"),
    ("NUL in a context key", body(context={"m": {"a\x00": 1}}), 422, "context.m"),
    (
        "a key twice",
        b'{"placement": "home_hero", "placement": "x", "identity": {"user_id": "u"}}',
        400,
        "body",
    ),
    (
        "a key twice, nested",
        b'{"placement": "home_hero", "identity": {"user_id": "u", "user_id": "v"}}',
        400,
        "body",
    ),
    ("a long context list", body(context={"pages": [0] * 1001}), 422, "context.pages"),
    (
        "number beyond a double",
        b'{"placement": "home_hero", "identity": {"user_id": "u"}, "context": {"url": 1e999}}',
        422,
        "context",
    ),
]


@pytest.mark.parametrize(
    ("content", "status", "field"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: Client, content: bytes, status: int, field: str
) -> None:
    """Every class of bad input answers 4xx with RFC 9457 problem details that name the
    field; never 500."""
    response = client.post(
        "/v1/decide", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    error = response.json()
    assert error["field"] == field
    assert error["status"] == status
    assert error["type"] == f"urn:decider:problem:{error['code']}"
    assert error["title"]
    assert error["detail"]
    if status == 413:  # the limit passed, so the caller knows what fits
        assert (
            error["detail"] == "the body is larger than 4,096 bytes, the most this endpoint takes"
        )


def test_a_context_of_more_than_1000_keys_is_refused() -> None:
    """Callers choose how many items rules may iterate over: at most 1000, at every level."""
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body(context={f"k{i}": i for i in range(1001)}))
    assert caught.value.field == "context"
    decode_request(body(context={f"k{i}": i for i in range(1000)}))


@pytest.mark.parametrize("depth", range(940, 1000, 3))
def test_nesting_near_the_parsers_limits_is_refused_not_raised(depth: int) -> None:
    """Between where Python's parser gives up and msgspec does, a body decodes once and then
    fails the duplicate-key pass: still a 4xx (it was a 500)."""
    nested = '{"a":' * depth + "1" + "}" * depth
    content = body(context={"n": "DEEP"}).replace(b'"DEEP"', nested.encode())
    with contextlib.suppress(InvalidRequest):  # decoded (MAX_DEPTH is checked later), or a 4xx
        decode_request(content)


def test_absurd_nesting_is_refused_as_malformed() -> None:
    """Nesting past the decoder's recursion limit is a 400 on `body`, not a RecursionError."""
    content = body(context={"x": "DEEP"}).replace(b'"DEEP"', b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(MalformedBody) as caught:
        decode_request(content)
    assert (caught.value.status, caught.value.field) == (400, "body")


@pytest.mark.parametrize(
    ("text", "half"),
    [
        (b'"\\ud800"', "\\ud800"),  # at a string's end msgspec says "truncated"
        (b'"a\\udc00b"', "\\udc00"),
        (b'"\\ud83d x"', "\\ud83d"),
    ],
)
def test_half_a_surrogate_pair_is_named_as_such(text: bytes, half: str) -> None:
    content = body(context={"s": "HALF"}).replace(b'"HALF"', text)
    with pytest.raises(MalformedBody) as caught:
        decode_request(content)
    assert caught.value.message == (
        f"not valid JSON: {half} is half a UTF-16 surrogate pair, no character: send the "
        "character itself, or both halves"
    )
    paired = body(context={"s": "PAIR"}).replace(b'"PAIR"', b'"\\ud83d\\ude00"')
    assert decode_request(paired).context == {"s": "\U0001f600"}


def test_health_readiness_and_openapi(client: Client, ruleset: CompiledRuleset) -> None:
    """Liveness, readiness and the OpenAPI document, which describes the decide body."""
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ruleset"] == ruleset.version
    spec = client.get("/schema/openapi.json").json()
    body = spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]
    request_schema = body["schema"]
    assert set(request_schema["required"]) == {"placement", "identity"}
    identity = request_schema["properties"]["identity"]
    assert set(identity["properties"]) == {"visitor_id", "user_id", "email_sha256", "account_id"}
    assert "Decision" in spec["components"]["schemas"]
    responses = spec["paths"]["/v1/decide"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "403", "413", "422", "503"}
    assert "ProblemDetails" in spec["components"]["schemas"]


@pytest.fixture
def down_client(ruleset: CompiledRuleset) -> Iterator[Client]:
    """The app over a profile source that is down."""
    source = MemoryProfileSource(sample_profiles(NOW))
    source.available = False
    with app_client(ruleset, source) as test_client:
        yield test_client


def test_profile_source_down_fails_closed(down_client: Client) -> None:
    """With the profile source down: web gets default content, email is suppressed, ready is 503."""
    web = decide(
        down_client,
        {
            "placement": "home_hero",
            "identity": {"user_id": "u-ada"},
            "consent": {"purposes": ["personalization"]},
        },
    )
    assert web["personalized"] is False
    assert web["suppressed"] is False
    assert {"identity.unavailable", "consent.unknown"} <= set(codes(web))
    email = decide(
        down_client, {"placement": "nurture_email", "identity": {"email_sha256": ADA_SHA}}
    )
    assert email["suppressed"] is True
    assert "suppressed.profile_unavailable" in codes(email)
    assert down_client.get("/readyz").status_code == 503


def test_http_profile_source_is_wired_from_settings(ruleset: CompiledRuleset) -> None:
    """profile_source=http reads the profile API (here a MockTransport) through the app."""
    profiles = {
        "/visitors/v-1": {
            "id": "v-1",
            "account_id": "acc-1",
            "consent": [
                {
                    "purpose": "personalization",
                    "basis": "consent",
                    "granted_at": "2026-01-01T00:00:00Z",
                }
            ],
        },
        "/accounts/acc-1": {"id": "acc-1", "traits": {"fit_score": 20}},
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        body = profiles.get(request.url.path)
        return httpx.Response(200, json=body) if body else httpx.Response(404)

    http = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://profiles.test"
    )
    profile = HttpSettings(api_url="http://profiles.test")
    with app_client(ruleset, http_client=http, profile=profile) as test_client:
        first = decide(test_client, {"placement": "home_hero", "identity": {"visitor_id": "v-1"}})
        decide(test_client, {"placement": "home_hero", "identity": {"visitor_id": "v-1"}})
    assert first["segment"] == "b2b_out_of_icp"
    # the service asks /healthz as it starts; the second decision hit the cache
    assert seen == ["/healthz", "/visitors/v-1", "/accounts/acc-1"]


def test_an_unsubscribed_email_is_suppressed_even_when_a_user_id_wins(
    client: Client, store: SqliteProfileStore
) -> None:
    """Two ids naming two people: the stitch follows user_id, suppression checks both."""
    pat_sha = hashlib.sha256(b"pat@example.com").hexdigest()
    records = [
        {"kind": "visitor", "id": "v-pat-crm", "user_ids": ["u-pat"]},
        {
            "kind": "visitor",
            "id": "v-pat-esp",
            "email_sha256": [pat_sha],
            "flags": ["unsubscribed"],
        },
    ]
    store.import_records(parse_profiles("\n".join(map(json.dumps, records)).encode(), "t"))
    body = {"placement": "nurture_email", "identity": {"user_id": "u-pat", "email_sha256": pat_sha}}
    decision = decide(client, body)
    assert decision["suppressed"] is True
    assert {"identity.conflict", "suppressed.flag"} <= set(codes(decision))


def test_errors_never_repeat_an_address_and_say_to_hash_it(client: Client) -> None:
    """An address where a hash belongs: the answer says to hash it and never repeats it;
    neither does the error for an unknown field named like an address."""
    for sent in (
        body(identity={"email_sha256": "ada@northwind.example"}),
        b'{"placement": "home_hero", "identity": {"user_id": "u"}, "ada@northwind.example": 1}',
    ):
        response = client.post("/v1/decide", content=sent)
        assert response.status_code == 422
        assert "ada@northwind.example" not in response.text
    hashed = client.post("/v1/decide", content=body(identity={"email_sha256": "ADA"}))
    assert "SHA-256 of the email address" in hashed.json()["detail"]


_KEYS = st.sampled_from(["a", "b", "ab", "é", 'a"b', "a\\b", "\u00e9"])
_SCALARS = st.one_of(st.integers(-3, 3), _KEYS, st.none())


def _render(value: Any, ascii_only: bool) -> str:
    """JSON text, objects given as lists of pairs (so a key may come twice)."""
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        inner = ", ".join(
            f"{json.dumps(k, ensure_ascii=ascii_only)}: {_render(v, ascii_only)}" for k, v in value
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


_OBJECTS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(st.tuples(_KEYS, inner), min_size=1, max_size=4), st.lists(inner, max_size=3)
    ),
    max_leaves=12,
)


@given(pairs=st.lists(st.tuples(_KEYS, _OBJECTS), min_size=1, max_size=4), ascii_only=st.booleans())
def test_a_key_given_twice_is_refused_wherever_it_is(
    pairs: list[tuple[str, Any]], ascii_only: bool
) -> None:
    """The quick pass (all strings different) and the full one agree with a plain count of
    every object's keys, escapes or not."""
    context = _render(pairs, ascii_only)
    content = f'{{"placement": "home_hero", "identity": {{"user_id": "u"}}, "context": {context}}}'

    def twice(value: Any) -> bool:
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            keys = [k for k, _ in value]
            return len(set(keys)) < len(keys) or any(twice(v) for _, v in value)
        return isinstance(value, list) and any(twice(v) for v in value)

    if twice(pairs):
        with pytest.raises(MalformedBody, match="appears twice in one object"):
            decode_request(content.encode())
    else:
        decode_request(content.encode())
