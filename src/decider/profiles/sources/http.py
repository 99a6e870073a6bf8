"""The HTTP profile API source (DECIDER_PROFILE_SOURCE=http): a service of yours that answers
point lookups; its contract is in the README ("The profile API")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from decider.errors import ProfileSourceError, redact
from decider.profile import (
    AccountProfile,
    AliasKind,
    VisitorProfile,
    account_decoder,
    normalized,
    visitor_decoder,
)
from decider.profiles.sources.base import Driver, Opening, SourceSettings
from decider.traits import TraitError, TraitSchema

# httpx logs every request URL at INFO; ours carry visitor ids and email hashes.
logging.getLogger("httpx").setLevel(logging.WARNING)

T = TypeVar("T")
MAX_BODY = 1024 * 1024  # bytes of one answer; a profile is a few KiB, an import line 1 MiB
_TOO_LARGE = f"profile API sent a body off contract: over {MAX_BODY} bytes"
P = TypeVar("P", VisitorProfile, AccountProfile)


class HttpSettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_API_URL (required), _TOKEN (sent as a bearer token), _TIMEOUT (s)."""

    api_url: str
    api_token: Annotated[str, msgspec.Meta(pattern="^[!-~]+$")] | None = None
    api_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.2


class _Alias(msgspec.Struct, frozen=True):
    visitor_id: str


_alias_decoder = msgspec.json.Decoder(_Alias)


class HttpProfileSource:
    """Reads a profile API (contract in the README, "Profile API"):

        GET {base}/visitors/{visitor_id}          -> 200 VisitorProfile | 404
        GET {base}/accounts/{account_id}          -> 200 AccountProfile | 404
        GET {base}/identities/{kind}/{value}      -> 200 {"visitor_id": ...} | 404
        GET {base}/healthz                        -> 2xx when ready

    Any other status, a timeout (`timeout`: seconds for the whole lookup, body included),
    a transport error, a body over MAX_BODY bytes or one that is not the contract's shape
    (not JSON, not UTF-8, wrong types) is a ProfileSourceError (the cache may then serve
    stale data). Profiles are
    normalized as they arrive, against the current profile schema (decider.traits): one
    the rules could misread is off contract too.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        schema: Callable[[], TraitSchema | None] = lambda: None,
        *,
        timeout: float | None = None,
    ) -> None:
        self._client = client
        self._schema = schema
        self._timeout = timeout

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        found = await self._get(f"/visitors/{_segment(visitor_id)}", visitor_decoder)
        return self._usable(found, visitor_id)

    async def account(self, account_id: str) -> AccountProfile | None:
        found = await self._get(f"/accounts/{_segment(account_id)}", account_decoder)
        return self._usable(found, account_id)

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = await self._get(f"/identities/{kind}/{_segment(value)}", _alias_decoder)
        return found.visitor_id if found else None

    async def ready(self) -> bool:
        try:
            response = await self._client.get("/healthz")
        except (httpx.HTTPError, httpx.InvalidURL, OSError):
            return False
        return response.is_success

    async def aclose(self) -> None:
        await self._client.aclose()

    def _usable(self, profile: P | None, asked: str) -> P | None:
        if profile is None:
            return None
        if profile.id != asked:  # someone else's profile must never stand in for this one
            raise ProfileSourceError("profile API sent a body off contract: another profile's id")
        try:
            return normalized(profile, self._schema())
        except TraitError as exc:
            raise ProfileSourceError(f"profile API sent a body off contract: {exc}") from None

    async def _get(self, path: str, decoder: msgspec.json.Decoder[T]) -> T | None:
        try:
            async with asyncio.timeout(self._timeout):  # httpx's timeouts are per read
                body = await self._body(path)
        except (httpx.TimeoutException, TimeoutError):
            raise ProfileSourceError("profile API timed out") from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise ProfileSourceError(f"profile API unreachable: {type(exc).__name__}") from None
        if body is None:
            return None
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise ProfileSourceError(
                f"profile API sent a body off contract: {redact(str(exc))}"
            ) from None
        except (UnicodeDecodeError, RecursionError):
            raise ProfileSourceError("profile API sent a body off contract") from None

    async def _body(self, path: str) -> bytes | None:
        """A 200's body (None for a 404), read no further than MAX_BODY bytes."""
        async with self._client.stream("GET", path) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise ProfileSourceError(f"profile API answered {response.status_code}")
            declared = response.headers.get("content-length", "0")
            if not declared.isdigit() or int(declared) > MAX_BODY:
                raise ProfileSourceError(_TOO_LARGE)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise ProfileSourceError(_TOO_LARGE)
            return bytes(body)


def _segment(value: str) -> str:
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
    """Over the caller's client if given (tests pass one on an httpx.MockTransport).
    Raises ProfileSourceError for a base URL that cannot work."""
    problem = url_problem(settings.api_url)
    if problem:
        raise ProfileSourceError(f"DECIDER_PROFILE_API_URL: {problem}")
    client = opening.http_client or httpx.AsyncClient(
        base_url=settings.api_url,
        timeout=settings.api_timeout,
        headers={"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {},
    )
    return HttpProfileSource(client, opening.schema, timeout=settings.api_timeout)


DRIVER = Driver("http", HttpSettings, open_source)
