"""HttpProfileSource against an httpx MockTransport: the profile API contract, and its failures."""

from __future__ import annotations

import asyncio
import hashlib
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
    """A MockTransport handler: fixed JSON bodies by raw path, 404 elsewhere, or an outage."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = {path: msgspec.json.encode(body) for path, body in routes.items()}
        self.paths: list[str] = []
        self.outage: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        self.paths.append(path)
        if self.outage is not None:
            return httpx.Response(self.outage)
        body = self.routes.get(path)
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)


API_ROUTES: dict[str, Any] = {
    "/visitors/v-ada": ADA_JSON,
    "/accounts/acc-northwind": NORTHWIND_JSON,
    "/identities/user_id/u-ada": {"visitor_id": "v-ada"},
    f"/identities/email_sha256/{ADA_EMAIL}": {"visitor_id": "v-ada"},
}


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE_URL)


def ask(handler: Handler, lookup: Callable[[HttpProfileSource], Coroutine[Any, Any, T]]) -> T:
    """Run one lookup on a fresh source over `handler`, closing it afterwards."""

    async def main() -> T:
        source = HttpProfileSource(client(handler))
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
}


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


@pytest.mark.parametrize("lookup", LOOKUPS.values(), ids=LOOKUPS.keys())
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


def test_resolver_over_http_serves_stale_data_through_an_outage() -> None:
    """Through the whole stack, a profile API gone 503 after ttl leaves stale data served."""
    api = ProfileApi(API_ROUTES)
    cache = CacheSettings(ttl=0.02, negative_ttl=0.02, stale_ttl=60.0)

    async def main() -> tuple[Resolution, Resolution, Resolution]:
        async with client(api) as http:
            resolver = Resolver(HttpProfileSource(http), budget=1.0, cache=cache)
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
    assert api.paths.count("/identities/user_id/u-ada") == 2

    assert never_seen.status == "unavailable"


def streamed(chunks: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Handler:
    """A handler answering 200 with a body streamed from `chunks` (no Content-Length)."""
    return lambda _: httpx.Response(200, content=chunks, headers=headers)


def test_a_body_declared_over_the_limit_is_refused_unread() -> None:
    """A Content-Length over MAX_BODY is refused before any of the body is read."""
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        read.append(1)
        yield b"{}"

    handler = streamed(chunks(), {"Content-Length": str(MAX_BODY + 1)})
    with pytest.raises(ProfileSourceError, match="off contract: over"):
        ask(handler, lambda s: s.visitor("v-1"))
    assert read == []


def test_a_body_streamed_past_the_limit_is_cut_off() -> None:
    """A body with no length that runs past MAX_BODY is refused once past it, not read whole."""
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"id": "v-1", "traits": {"pad": "'
        while True:
            sent.append(1)
            yield b"x" * 65536

    with pytest.raises(ProfileSourceError, match="off contract: over"):
        ask(streamed(endless()), lambda s: s.visitor("v-1"))
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
