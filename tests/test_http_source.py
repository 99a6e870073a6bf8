"""HttpProfileSource against an httpx MockTransport: the profile API contract (the GETs and
POST /resolve), and its failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import msgspec
import pytest

from decider.errors import ProfileSourceError
from decider.model import Identity
from decider.profile import AccountProfile, AliasKind, ConsentRecord, Resolution, VisitorProfile
from decider.profiles.cache import CacheSettings
from decider.profiles.resolver import Resolver
from decider.profiles.sources.http import MAX_BODY, HttpProfileSource
from decider.profiles.trips import Found

from .fake_profile_api import resolve_answer
from .test_clock import collection

T = TypeVar("T")
Lookup = Callable[[HttpProfileSource], Coroutine[Any, Any, object]]
Handler = Callable[[httpx.Request], httpx.Response]

BASE_URL = "http://profiles.test"
ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()

ADA_JSON: dict[str, Any] = {
    "id": "v-ada",
    "account_id": "acc-northwind",
    "user_ids": ["u-ada"],
    "email_sha256": [ADA_EMAIL],
    "consent": [
        {"purpose": "personalization", "basis": "consent", "granted_at": "2026-01-02T03:04:05Z"}
    ],
    "flags": ["vip"],
    "traits": {"role": "vp"},
}
ADA = VisitorProfile(
    id="v-ada",
    account_id="acc-northwind",
    user_ids=("u-ada",),
    email_sha256=(ADA_EMAIL,),
    consent=(
        ConsentRecord("personalization", "consent", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ),
    flags=frozenset({"vip"}),
    traits={"role": "vp"},
)
NORTHWIND_JSON: dict[str, Any] = {"id": "acc-northwind", "traits": {"employees": 1800}}
NORTHWIND = AccountProfile(id="acc-northwind", traits={"employees": 1800})


class ProfileApi:
    """A MockTransport handler: fixed JSON bodies by raw path, 404 elsewhere, or an outage;
    POST /resolve answered from the same bodies, unless `resolves` is False (then a 404)."""

    def __init__(self, routes: dict[str, Any], *, resolves: bool = True) -> None:
        self.routes = {path: msgspec.json.encode(body) for path, body in routes.items()}
        self.resolves = resolves
        self.paths: list[str] = []
        self.asked: list[dict[str, str]] = []
        self.outage: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        self.paths.append(path)
        if self.outage is not None:
            return httpx.Response(self.outage)
        if (request.method, path) == ("POST", "/resolve") and self.resolves:
            assert request.headers["content-type"] == "application/json"
            self.asked.append(json.loads(request.content))
            return httpx.Response(200, content=resolve_answer(request.content, self.routes.get))
        body = self.routes.get(path) if request.method == "GET" else None
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)


API_ROUTES: dict[str, Any] = {
    "/visitors/v-ada": ADA_JSON,
    "/accounts/acc-northwind": NORTHWIND_JSON,
    "/identities/user_id/u-ada": {"visitor_id": "v-ada"},
    f"/identities/email_sha256/{ADA_EMAIL}": {"visitor_id": "v-ada"},
}


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE_URL)


def ask(
    handler: Handler,
    lookup: Callable[[HttpProfileSource], Coroutine[Any, Any, T]],
    *,
    resolve: bool = False,
) -> T:
    """Run one lookup on a fresh source over `handler`, closing it afterwards."""

    async def main() -> T:
        source = HttpProfileSource(client(handler), resolve=resolve)
        try:
            return await lookup(source)
        finally:
            await source.aclose()

    return asyncio.run(main())


def answer(status: int, body: bytes = b"") -> Handler:
    """A handler answering every request with `status` and `body`."""
    return lambda _: httpx.Response(status, content=body)


LOOKUPS: dict[str, Lookup] = {
    "visitor": lambda s: s.visitor("v-1"),
    "account": lambda s: s.account("acc-1"),
    "alias": lambda s: s.alias("user_id", "u-1"),
    "resolve": lambda s: s.resolve(Identity(user_id="u-1", visitor_id="v-1")),
}
POINT_LOOKUPS = {k: v for k, v in LOOKUPS.items() if k != "resolve"}


def test_visitor_body_decodes_into_a_profile() -> None:
    """A 200 visitor body decodes into a VisitorProfile, nested consent timestamps included."""
    assert ask(ProfileApi(API_ROUTES), lambda s: s.visitor("v-ada")) == ADA


def test_account_body_decodes_into_a_profile() -> None:
    """A 200 account body decodes into an AccountProfile."""
    assert ask(ProfileApi(API_ROUTES), lambda s: s.account("acc-northwind")) == NORTHWIND


@pytest.mark.parametrize(
    ("lookup", "body"),
    [
        (lambda s: s.visitor("v-1"), b'{"id": "v-other"}'),
        (lambda s: s.account("acc-1"), b'{"id": "acc-other"}'),
    ],
)
def test_an_answer_about_someone_else_is_a_source_error(lookup: Lookup, body: bytes) -> None:
    """A profile API that answers for /visitors/v-1 with v-other's profile is off contract:
    another person's traits and consent must never stand in for this one's."""
    with pytest.raises(ProfileSourceError, match="another profile's id"):
        ask(answer(200, body), lookup)


@pytest.mark.parametrize(("kind", "value"), [("user_id", "u-ada"), ("email_sha256", ADA_EMAIL)])
def test_alias_answers_the_linked_visitor_id(kind: AliasKind, value: str) -> None:
    """The identities endpoint's body gives the visitor id a user id or email hash is linked to."""
    api = ProfileApi(API_ROUTES)
    assert ask(api, lambda s: s.alias(kind, value)) == "v-ada"
    assert api.paths == [f"/identities/{kind}/{value}"]


@pytest.mark.parametrize("lookup", POINT_LOOKUPS.values(), ids=POINT_LOOKUPS.keys())
def test_not_found_is_none(lookup: Lookup) -> None:
    """A 404 means an unknown id: the lookup answers None, it does not raise."""
    assert ask(answer(404), lookup) is None


@pytest.mark.parametrize("status", [201, 204, 301, 401, 429, 500, 503])
@pytest.mark.parametrize("lookup", LOOKUPS.values(), ids=LOOKUPS.keys())
def test_status_other_than_200_or_404_is_a_source_error(lookup: Lookup, status: int) -> None:
    """Any status but 200 and 404 is a ProfileSourceError naming the status."""
    with pytest.raises(ProfileSourceError, match=str(status)):
        ask(answer(status, b'{"visitor_id": "v-1", "id": "v-1"}'), lookup)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError],
)
def test_transport_failure_is_a_source_error(error: type[httpx.TransportError]) -> None:
    """A transport error or timeout becomes a ProfileSourceError that does not echo the id."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    with pytest.raises(ProfileSourceError) as raised:
        ask(handler, lambda s: s.visitor("v-secret"))
    assert "v-secret" not in str(raised.value)
    with pytest.raises(ProfileSourceError) as raised:
        ask(handler, lambda s: s.resolve(Identity(user_id="u-secret")), resolve=True)
    assert "u-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("lookup", "body"),
    [
        pytest.param(LOOKUPS["visitor"], b'{"id": 7}', id="visitor-id-not-a-string"),
        pytest.param(
            LOOKUPS["visitor"], b'{"id": "v-1", "email": "ada@example.com"}', id="raw-email"
        ),
        pytest.param(LOOKUPS["visitor"], b'{"id": "v-1", "email_sha256": ["ABC"]}', id="bad-hash"),
        pytest.param(LOOKUPS["visitor"], b'{"account_id": "acc-1"}', id="visitor-without-id"),
        pytest.param(LOOKUPS["account"], b'{"id": "acc-1", "flags": "vip"}', id="flags-not-list"),
        pytest.param(LOOKUPS["account"], b'{"id": "acc-1", "stage": "x"}', id="account-field"),
        pytest.param(LOOKUPS["alias"], b'{"visitor": "v-1"}', id="alias-wrong-key"),
        pytest.param(LOOKUPS["alias"], b'"v-1"', id="alias-bare-string"),
        pytest.param(LOOKUPS["account"], b"<html>oops</html>", id="not-json"),
        pytest.param(LOOKUPS["visitor"], b"", id="empty-body"),
        pytest.param(
            LOOKUPS["account"], b'{"id": "a", "traits": {"ada@x.example": 1}}', id="email-key"
        ),
        pytest.param(
            LOOKUPS["account"], b'{"id": "a", "flags": ["ada@x.example"]}', id="email-flag"
        ),
        pytest.param(LOOKUPS["account"], b'{"id": "a", "ada@x.example": 1}', id="email-field"),
        pytest.param(
            LOOKUPS["account"],
            b'{"id": "a", "traits": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            id="deep",
        ),
        pytest.param(
            LOOKUPS["account"], b'{"id": "a", "traits": {"n": 18446744073709551616}}', id="int-65"
        ),
        pytest.param(LOOKUPS["visitor"], b'{"id": "v-\xff"}', id="not-utf8"),
    ],
)
def test_body_off_contract_is_a_source_error(lookup: Lookup, body: bytes) -> None:
    """A 200 whose body is not the contract's shape is a ProfileSourceError without the data."""
    with pytest.raises(ProfileSourceError, match="off contract") as raised:
        ask(answer(200, body), lookup)
    assert "ada@example.com" not in str(raised.value)
    assert "ada@x.example" not in str(raised.value)


@pytest.mark.parametrize(
    ("lookup", "raw_path"),
    [
        (lambda s: s.visitor("a/b?c#d"), "/visitors/a%2Fb%3Fc%23d"),
        (lambda s: s.account("acc/../1"), "/accounts/acc%2F%2E%2E%2F1"),
        (lambda s: s.visitor(".."), "/visitors/%2E%2E"),
        (lambda s: s.alias("user_id", "."), "/identities/user_id/%2E"),
        (lambda s: s.alias("user_id", "corp\\ada/x y"), "/identities/user_id/corp%5Cada%2Fx%20y"),
        (lambda s: s.visitor("ü"), "/visitors/%C3%BC"),
    ],
)
def test_ids_are_sent_as_one_quoted_path_segment(lookup: Lookup, raw_path: str) -> None:
    """Ids holding '/', '?' or other reserved characters stay one percent-encoded segment."""
    api = ProfileApi({})
    assert ask(api, lookup) is None
    assert api.paths == [raw_path]


@pytest.mark.parametrize(
    ("handler", "ready"),
    [(answer(200), True), (answer(204), True), (answer(503), False), (answer(404), False)],
)
def test_ready_follows_the_healthz_status(handler: Handler, ready: bool) -> None:
    """ready() is true exactly when /healthz answers 2xx."""
    seen: list[str] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return handler(request)

    assert ask(recording, lambda s: s.ready()) is ready
    assert seen == ["/healthz"]


def test_ready_is_false_when_the_api_is_unreachable() -> None:
    """ready() answers False, rather than raising, when the API cannot be reached."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert ask(handler, lambda s: s.ready()) is False


def test_aclose_closes_the_client() -> None:
    """aclose() closes the httpx client the source was given."""

    async def main() -> bool:
        http = client(answer(404))
        await HttpProfileSource(http).aclose()
        return http.is_closed

    assert asyncio.run(main())


@pytest.mark.parametrize("resolve", [False, True], ids=["gets", "resolve"])
def test_resolver_over_http_serves_stale_data_through_an_outage(resolve: bool) -> None:
    """Through the whole stack, a profile API gone 503 after ttl leaves stale data served,
    whether it is asked one id at a time or a request's ids at once."""
    api = ProfileApi(API_ROUTES)
    cache = CacheSettings(ttl=0.02, negative_ttl=0.02, stale_ttl=60.0)

    async def main() -> tuple[Resolution, Resolution, Resolution]:
        async with client(api) as http:
            source = HttpProfileSource(http, resolve=resolve)
            resolver = Resolver(source, budget=1.0, cache=cache)
            before = await resolver.resolve(Identity(user_id="u-ada"))
            api.outage = 503
            await asyncio.sleep(0.05)
            during = await resolver.resolve(Identity(user_id="u-ada"))
            never_seen = await resolver.resolve(Identity(visitor_id="v-other"))
            return before, during, never_seen

    before, during, never_seen = asyncio.run(main())
    assert (before.status, before.stale) == ("resolved", False)
    assert (before.visitor, before.account) == (ADA, NORTHWIND)

    assert (during.status, during.stale) == ("resolved", True)
    assert (during.visitor, during.account) == (ADA, NORTHWIND)
    assert "identity.stale" in [note.code for note in during.notes]
    # asked again once stale (and, at once, the cookie never seen)
    path, times = ("/resolve", 3) if resolve else ("/identities/user_id/u-ada", 2)
    assert api.paths.count(path) == times

    assert never_seen.status == "unavailable"


def streamed(chunks: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Handler:
    """A handler answering 200 with a body streamed from `chunks` (no Content-Length)."""
    return lambda _: httpx.Response(200, content=chunks, headers=headers)


BODY_LOOKUPS = {k: LOOKUPS[k] for k in ("visitor", "resolve")}


@pytest.mark.parametrize("lookup", BODY_LOOKUPS.values(), ids=BODY_LOOKUPS.keys())
def test_a_body_declared_over_the_limit_is_refused_unread(lookup: Lookup) -> None:
    """A Content-Length over MAX_BODY is refused before any of the body is read."""
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        read.append(1)
        yield b"{}"

    handler = streamed(chunks(), {"Content-Length": str(MAX_BODY + 1)})
    with pytest.raises(ProfileSourceError, match="off contract: over"):
        ask(handler, lookup, resolve=True)
    assert read == []


@pytest.mark.parametrize("lookup", BODY_LOOKUPS.values(), ids=BODY_LOOKUPS.keys())
def test_a_body_streamed_past_the_limit_is_cut_off(lookup: Lookup) -> None:
    """A body with no length that runs past MAX_BODY is refused once past it, not read whole."""
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"id": "v-1", "traits": {"pad": "'
        while True:
            sent.append(1)
            yield b"x" * 65536

    with pytest.raises(ProfileSourceError, match="off contract: over"):
        ask(streamed(endless()), lookup, resolve=True)
    assert len(sent) * 65536 <= MAX_BODY + 2 * 65536


def test_a_trickling_body_times_out_as_a_whole() -> None:
    """Bytes arriving just often enough to beat each read's timeout still time out: the
    source's timeout bounds the whole lookup."""

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"id": "v-1", "traits": {"pad": "'
        while True:
            await asyncio.sleep(0.01)
            yield b"x"

    async def main() -> object:
        http = httpx.AsyncClient(
            transport=httpx.MockTransport(streamed(trickle())), base_url=BASE_URL, timeout=5
        )
        source = HttpProfileSource(http, timeout=0.1)
        try:
            return await source.visitor("v-1")
        finally:
            await source.aclose()

    with pytest.raises(ProfileSourceError, match="timed out"):
        asyncio.run(main())


# --- POST /resolve: a request's ids in one round trip ------------------------------------

BEN_JSON: dict[str, Any] = {"id": "v-ben", "account_id": "acc-gone"}
RESOLVE_ROUTES: dict[str, Any] = {
    **API_ROUTES,
    "/visitors/v-ben": BEN_JSON,
    "/identities/user_id/u-dangling": {"visitor_id": "v-gone"},
}


def test_resolve_asks_for_the_ids_given_in_one_post_and_answers_each() -> None:
    """The ids asked go as one JSON object (those not asked left out); the answer gives the
    link of each alias, and the visitors and accounts the ids name, each decoded and
    normalized as a GET's would be."""
    api = ProfileApi(RESOLVE_ROUTES)
    asked = Identity(user_id="u-ada", visitor_id="anon-1")
    found = ask(api, lambda s: s.resolve(asked), resolve=True)
    assert api.paths == ["/resolve"]
    assert api.asked == [{"user_id": "u-ada", "visitor_id": "anon-1"}]
    assert found == Found(
        links={("user_id", "u-ada"): "v-ada"},
        visitors={"v-ada": ADA, "anon-1": None},
        accounts={"acc-northwind": NORTHWIND},
    )


def test_resolve_answers_what_the_api_does_not_know_as_unknown() -> None:
    """An alias linked to nobody, a visitor or account the API lacks (even one a link or a
    visitor names) is None in the answer, as a 404 would say."""
    api = ProfileApi(RESOLVE_ROUTES)
    nobody = hashlib.sha256(b"nobody@example.com").hexdigest()
    asked = Identity(user_id="u-dangling", email_sha256=nobody, account_id="acc-none")
    found = ask(api, lambda s: s.resolve(asked), resolve=True)
    assert found == Found(
        links={("user_id", "u-dangling"): "v-gone", ("email_sha256", nobody): None},
        visitors={"v-gone": None},
        accounts={"acc-none": None},
    )
    ben = ask(api, lambda s: s.resolve(Identity(visitor_id="v-ben")), resolve=True)
    assert ben is not None
    assert ben.accounts == {"acc-gone": None}


ASKED = Identity(user_id="u-1", visitor_id="v-1")


@pytest.mark.parametrize(
    ("body", "because"),
    [
        ({"identities": {}, "visitors": [], "accounts": []}, "identities other than"),
        (
            {"identities": {"user_id": None, "email_sha256": None}, "visitors": [], "accounts": []},
            "identities other than",
        ),
        (
            {"identities": {"user_id": "v-1"}, "visitors": [{"id": "v-2"}], "accounts": []},
            "do not name",
        ),
        (
            {"identities": {"user_id": None}, "visitors": [{"id": "v-1"}] * 2, "accounts": []},
            "do not name",
        ),
        (
            {
                "identities": {"user_id": None},
                "visitors": [{"id": "v-1"}],
                "accounts": [{"id": "a"}],
            },
            "do not name",
        ),
        ({"identities": {"user_id": None}, "visitors": []}, "missing required field"),
        (
            {"identities": {"user_id": None}, "visitors": [], "accounts": [], "more": 1},
            "unknown field",
        ),
        ({"identities": [], "visitors": [], "accounts": []}, "Expected `object`"),
        ({"identities": {"user_id": 7}, "visitors": [], "accounts": []}, "Expected `str"),
        (
            {
                "identities": {"user_id": None},
                "visitors": [{"id": "v-1", "email": "ada@example.com"}],
                "accounts": [],
            },
            "unknown field",
        ),
        (
            {
                "identities": {"user_id": None},
                "visitors": [{"id": "v-1", "user_ids": ["ada@example.com"]}],
                "accounts": [],
            },
            "user_ids",
        ),
        ("<html>oops</html>", "off contract"),
    ],
    ids=[
        "an-alias-unanswered",
        "an-alias-not-asked",
        "a-visitor-nobody-named",
        "a-visitor-twice",
        "an-account-nobody-named",
        "a-field-missing",
        "an-unknown-field",
        "identities-not-an-object",
        "a-link-not-a-string",
        "a-raw-email-field",
        "a-raw-email-as-user-id",
        "not-json",
    ],
)
def test_a_resolve_answer_off_contract_is_a_source_error(body: object, because: str) -> None:
    """A 200 to POST /resolve that is not the contract's shape, that leaves an alias asked
    unanswered or answers one not asked, or that holds a profile the ids do not name (or one
    twice), is a ProfileSourceError, without the data."""
    content = body.encode() if isinstance(body, str) else msgspec.json.encode(body)
    with pytest.raises(ProfileSourceError, match="off contract") as raised:
        ask(answer(200, content), lambda s: s.resolve(ASKED), resolve=True)
    assert because in str(raised.value)
    assert "ada@example.com" not in str(raised.value)


@pytest.mark.parametrize("status", [404, 405, 501])
def test_an_api_without_resolve_is_asked_one_id_at_a_time_from_then_on(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """With DECIDER_PROFILE_API_RESOLVE set, an API that answers POST /resolve as a server
    without the route does (404, 405, 501) does not offer it: resolve() answers None, the
    source stops offering it, and one warning says so, naming no id."""

    async def main() -> tuple[bool, object, object, bool]:
        async with client(answer(status)) as http:
            source = HttpProfileSource(http, resolve=True)
            offered = source.resolves
            first = await source.resolve(ASKED)
            second = await source.resolve(ASKED)
            return offered, first, second, source.resolves

    with caplog.at_level(logging.WARNING, logger="decider"):
        offered, first, second, still = asyncio.run(main())
    assert (offered, first, second, still) == (True, None, None, False)
    (warning,) = [r for r in caplog.records if r.name == "decider"]
    assert "POST /resolve" in warning.getMessage()
    assert "u-1" not in warning.getMessage()


def test_time_spent_collecting_garbage_is_not_a_lookups_timeout() -> None:
    """A collection stops the process mid-lookup for longer than the lookup's timeout, the
    API having answered: the lookup is answered, not timed out (the timeout is the API's
    time)."""

    async def handler(_: httpx.Request) -> httpx.Response:
        collection(0.4)
        await asyncio.sleep(0.01)
        return httpx.Response(200, content=msgspec.json.encode(ADA_JSON))

    async def main() -> VisitorProfile | None:
        source = HttpProfileSource(
            httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE_URL),
            timeout=0.2,
        )
        try:
            return await source.visitor("v-ada")
        finally:
            await source.aclose()

    assert asyncio.run(main()) == ADA
