"""The HTTP profile API source (DECIDER_PROFILE_SOURCE=http): a service of yours that answers
point lookups, and, if it offers `POST /resolve`, all of a request's ids in one round trip;
its contract is in the README ("The profile API").

Requests go out over aiohttp (a lookup costs about a quarter of httpx's client CPU: the
README's Speed section), or over an httpx client the caller hands in (tests, on an
httpx.MockTransport). Either way the same rules hold: one timeout for a whole lookup, bodies
cut off past MAX_BODY, and a pool of at most 100 connections kept alive between lookups.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import AsyncIterator, Callable, Container
from typing import Annotated, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import httpx
import msgspec
import yarl

from decider.errors import ProfileSourceError, matching, redact
from decider.model import Identity
from decider.profile import (
    ALIAS_KINDS,
    AccountProfile,
    AliasKind,
    VisitorProfile,
    account_decoder,
    normalized,
    visitor_decoder,
)
from decider.profiles.clock import Budget, within
from decider.profiles.sources.base import AliasKey, Driver, Opening, SourceSettings
from decider.profiles.trips import Found
from decider.traits import TraitError, TraitSchema

# httpx logs every request URL at INFO; ours carry visitor ids and email hashes.
logging.getLogger("httpx").setLevel(logging.WARNING)
log = logging.getLogger("decider")

T = TypeVar("T")
MAX_BODY = 1024 * 1024  # bytes of one answer; a profile is a few KiB, an import line 1 MiB
MAX_CONNECTIONS = 100  # to the profile API, per process
KEEPALIVE_S = 5.0  # an idle pooled connection is closed after this (httpx's default)
_TOO_LARGE = f"profile API sent a body off contract: over {MAX_BODY} bytes"
_FOUND = (200, 404)
_READY = range(200, 300)
# what a server without POST /resolve answers it; the contract's /resolve never does
_NOT_OFFERED = (404, 405, 501)
P = TypeVar("P", VisitorProfile, AccountProfile)


class HttpSettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_API_URL (required), _TOKEN (sent as a bearer token), _TIMEOUT (s),
    _RESOLVE (the API offers POST /resolve)."""

    api_url: str
    api_token: Annotated[str, matching("^[!-~]+$", "printable ASCII, no spaces")] | None = None
    api_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.2
    api_resolve: bool = False


class _Alias(msgspec.Struct, frozen=True):
    visitor_id: str


class _Resolved(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of a 200 to POST /resolve."""

    identities: dict[AliasKind, str | None]
    visitors: list[VisitorProfile]
    accounts: list[AccountProfile]


_alias_decoder = msgspec.json.Decoder(_Alias)
_resolved_decoder = msgspec.json.Decoder(_Resolved)
_encode = msgspec.json.Encoder().encode


class Upstream(Protocol):
    """How requests reach the profile API."""

    async def exchange(
        self, method: str, path: str, content: bytes | None, read: Container[int]
    ) -> tuple[int, bytes | None]:
        """One request to `path` under the base URL: the status, and the body if the status
        is in `read` (else unread, and the connection not reused). Raises ProfileSourceError
        for a body over MAX_BODY; the client library's errors otherwise."""

    async def aclose(self) -> None: ...


class HttpProfileSource:
    """Reads a profile API (contract in the README, "Profile API"):

        GET {base}/visitors/{visitor_id}          -> 200 VisitorProfile | 404
        GET {base}/accounts/{account_id}          -> 200 AccountProfile | 404
        GET {base}/identities/{kind}/{value}      -> 200 {"visitor_id": ...} | 404
        POST {base}/resolve  {the ids}            -> 200 {"identities", "visitors", "accounts"}
        GET {base}/healthz                        -> 2xx when ready

    `resolve`: the API offers POST /resolve (a 404, 405 or 501 to it says otherwise, and
    the source looks up one id at a time from then on). Any other status, a timeout
    (`timeout`: seconds for the whole lookup, body included), a transport error, a body over
    MAX_BODY bytes or one that is not the contract's shape (not JSON, not UTF-8, wrong
    types, a profile nobody asked for) is a ProfileSourceError (the cache may then serve
    stale data). Profiles are normalized as they arrive, against the current profile schema
    (decider.traits): one the rules could misread is off contract too.
    """

    def __init__(
        self,
        upstream: Upstream | httpx.AsyncClient,
        schema: Callable[[], TraitSchema | None] = lambda: None,
        *,
        timeout: float | None = None,
        resolve: bool = False,
    ) -> None:
        if isinstance(upstream, httpx.AsyncClient):
            upstream = HttpxUpstream(upstream)
        self._upstream = upstream
        self._schema = schema
        self._timeout = timeout
        self._resolve = resolve

    @property
    def resolves(self) -> bool:
        return self._resolve

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        found = await self._get(f"/visitors/{segment(visitor_id)}", visitor_decoder)
        return self._usable(found, visitor_id)

    async def account(self, account_id: str) -> AccountProfile | None:
        found = await self._get(f"/accounts/{segment(account_id)}", account_decoder)
        return self._usable(found, account_id)

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = await self._get(f"/identities/{kind}/{segment(value)}", _alias_decoder)
        return found.visitor_id if found else None

    async def resolve(self, asked: Identity) -> Found | None:
        ids = {f: v for f in Identity.__struct_fields__ if (v := getattr(asked, f)) is not None}
        status, body = await self._call("POST", "/resolve", _encode(ids), (200, *_NOT_OFFERED))
        if status != 200:
            if self._resolve:
                self._resolve = False
                log.warning(
                    "the profile API answered %s to POST /resolve: it does not offer it, so "
                    "each id is looked up alone (unset DECIDER_PROFILE_API_RESOLVE)",
                    status,
                )
            return None
        return self._found(asked, _decoded(body, _resolved_decoder))

    async def ready(self) -> bool:
        try:
            status, _ = await self._call("GET", "/healthz", None, _READY)
        except ProfileSourceError:
            return False
        return status in _READY

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def _usable(self, profile: P | None, asked: str) -> P | None:
        if profile is None:
            return None
        if profile.id != asked:  # someone else's profile must never stand in for this one
            raise ProfileSourceError("profile API sent a body off contract: another profile's id")
        try:
            return normalized(profile, self._schema())
        except TraitError as exc:
            raise ProfileSourceError(f"profile API sent a body off contract: {exc}") from None

    def _found(self, asked: Identity, answer: _Resolved) -> Found:
        """The answer to `asked`, checked: it answers every alias asked and nothing else, and
        holds only profiles the ids name (the visitor_id, each link; the account_id, each
        visitor's account), each once. A named profile it lacks is unknown."""
        kinds = {kind for kind in ALIAS_KINDS if getattr(asked, kind) is not None}
        if set(answer.identities) != kinds:
            raise ProfileSourceError(
                "profile API sent a body off contract: identities other than those asked"
            )
        links: dict[AliasKey, str | None] = {
            (kind, getattr(asked, kind)): link for kind, link in answer.identities.items()
        }
        visitors = self._named(answer.visitors, (asked.visitor_id, *links.values()))
        owners = [v.account_id for v in visitors.values() if v is not None]
        return Found(links, visitors, self._named(answer.accounts, (asked.account_id, *owners)))

    def _named(self, profiles: list[P], named: tuple[str | None, ...]) -> dict[str, P | None]:
        """`profiles` by id, each normalized, and None for each id `named` they lack."""
        found: dict[str, P | None] = dict.fromkeys(n for n in named if n is not None)
        for profile in profiles:
            if profile.id not in found or found[profile.id] is not None:
                raise ProfileSourceError(
                    "profile API sent a body off contract: "
                    "a profile the ids do not name, or one twice"
                )
            found[profile.id] = self._usable(profile, profile.id)
        return found

    async def _get(self, path: str, decoder: msgspec.json.Decoder[T]) -> T | None:
        status, body = await self._call("GET", path, None, _FOUND)
        return None if status == 404 else _decoded(body, decoder)

    async def _call(
        self, method: str, path: str, content: bytes | None, read: Container[int]
    ) -> tuple[int, bytes | None]:
        """One exchange within the timeout; a status outside `read` is a ProfileSourceError."""
        timeout = None if self._timeout is None else Budget(self._timeout)
        try:
            async with within(timeout):  # for the whole lookup: httpx's are per read
                status, body = await self._upstream.exchange(method, path, content, read)
        except (httpx.TimeoutException, TimeoutError):  # aiohttp's are TimeoutErrors too
            raise ProfileSourceError("profile API timed out") from None
        except (httpx.HTTPError, httpx.InvalidURL, aiohttp.ClientError, OSError) as exc:
            raise ProfileSourceError(f"profile API unreachable: {type(exc).__name__}") from None
        if status not in read:
            raise ProfileSourceError(f"profile API answered {status}")
        return status, body


def _decoded(body: bytes | None, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        return decoder.decode(body or b"")
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ProfileSourceError(
            f"profile API sent a body off contract: {redact(str(exc))}"
        ) from None
    except (UnicodeDecodeError, RecursionError):
        raise ProfileSourceError("profile API sent a body off contract") from None


async def _capped(declared: str | None, chunks: AsyncIterator[bytes]) -> bytes:
    """A body read no further than MAX_BODY bytes (decoded, if it came compressed)."""
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ProfileSourceError(_TOO_LARGE)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY:
            raise ProfileSourceError(_TOO_LARGE)
    return bytes(body)


class AiohttpUpstream:
    """The profile API over aiohttp, its session opened on first use (inside the loop)."""

    def __init__(self, settings: HttpSettings) -> None:
        self._base = str(httpx.URL(settings.api_url)).rstrip("/")
        token = settings.api_token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._proxy = _env_proxy(self._base)
        self._session: aiohttp.ClientSession | None = None

    async def exchange(
        self, method: str, path: str, content: bytes | None, read: Container[int]
    ) -> tuple[int, bytes | None]:
        url = yarl.URL(self._base + path, encoded=True)  # ids are quoted already
        headers = {"Content-Type": "application/json"} if content is not None else None
        request = self._opened().request
        async with request(method, url, data=content, headers=headers, proxy=self._proxy) as answer:
            if answer.status not in read:
                return answer.status, None
            declared = answer.headers.get("Content-Length")
            return answer.status, await _capped(declared, answer.content.iter_any())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS,
                keepalive_timeout=KEEPALIVE_S,
                ssl=httpx.create_ssl_context(),  # certificates trusted as httpx trusts them
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # none of aiohttp's own: the source's timeout bounds the whole lookup, on the
                # source's clock
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session


def _env_proxy(url: str) -> str | None:
    """The proxy HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY name for `url`, as httpx
    reads them, read once (aiohttp's trust_env reads them, and ~/.netrc, on every request)."""
    parsed = httpx.URL(url)
    if urllib.request.proxy_bypass(parsed.host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parsed.scheme) or proxies.get("all")


class HttpxUpstream:
    """The profile API over a caller's httpx client (its base URL and headers its own)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def exchange(
        self, method: str, path: str, content: bytes | None, read: Container[int]
    ) -> tuple[int, bytes | None]:
        headers = {"Content-Type": "application/json"} if content is not None else None
        async with self._client.stream(method, path, content=content, headers=headers) as answer:
            if answer.status_code not in read:
                return answer.status_code, None
            declared = answer.headers.get("content-length")
            return answer.status_code, await _capped(declared, answer.aiter_bytes())

    async def aclose(self) -> None:
        await self._client.aclose()


def segment(value: str) -> str:
    """Quote an id as one path segment: '/' and '?' escaped, and dots too, or an id of '..'
    would be resolved away by the URL."""
    return quote(value, safe="").replace(".", "%2E")


def url_problem(url: str) -> str | None:
    """Why `url` cannot be the profile API's base URL, or None."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port  # parsing checks its range only when asked
    except (httpx.InvalidURL, ValueError) as exc:
        return f"not a URL ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "expected http:// or https:// and a host"
    if port is not None and not 0 < port < 65536:
        return "the port is out of range"
    if parsed.query or parsed.fragment:
        return "a base URL takes no query or fragment (send a token with DECIDER_PROFILE_API_TOKEN)"
    return None


def open_source(settings: HttpSettings, opening: Opening) -> HttpProfileSource:
    """Over the caller's httpx client if given (tests pass one on an httpx.MockTransport),
    else over aiohttp. Raises ProfileSourceError for a base URL that cannot work."""
    problem = url_problem(settings.api_url)
    if problem:
        raise ProfileSourceError(f"DECIDER_PROFILE_API_URL: {problem}")
    upstream = opening.http_client or AiohttpUpstream(settings)
    return HttpProfileSource(
        upstream, opening.schema, timeout=settings.api_timeout, resolve=settings.api_resolve
    )


DRIVER = Driver("http", HttpSettings, open_source)
