"""Where profiles come from: one interface, the embedded SQLite store or an HTTP profile API.

Both answer three point lookups; stitching (resolver) and caching (cache) sit in front and
are shared. A source returns None for an id it does not know and raises ProfileSourceError
when it cannot answer; nothing else escapes.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from decider.errors import ProfileSourceError
from decider.profile import (
    AccountProfile,
    VisitorProfile,
    account_decoder,
    traits_problem,
    visitor_decoder,
)

# httpx logs every request URL at INFO; ours carry visitor ids and email hashes.
logging.getLogger("httpx").setLevel(logging.WARNING)

AliasKind = Literal["user_id", "email_sha256"]
T = TypeVar("T")


class ProfileSource(Protocol):
    async def visitor(self, visitor_id: str) -> VisitorProfile | None: ...

    async def account(self, account_id: str) -> AccountProfile | None: ...

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        """The visitor id a user id or email hash is linked to."""

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class _Alias(msgspec.Struct, frozen=True):
    visitor_id: str


_alias_decoder = msgspec.json.Decoder(_Alias)


class HttpProfileSource:
    """Reads a profile API (contract in the README, "Profile API"):

        GET {base}/visitors/{visitor_id}          -> 200 VisitorProfile | 404
        GET {base}/accounts/{account_id}          -> 200 AccountProfile | 404
        GET {base}/identities/{kind}/{value}      -> 200 {"visitor_id": ...} | 404
        GET {base}/healthz                        -> 2xx when ready

    Any other status, a timeout, a transport error or a body that is not the contract's
    shape is a ProfileSourceError (the cache may then serve stale data).
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        found = await self._get(f"/visitors/{_segment(visitor_id)}", visitor_decoder)
        return _usable(found)

    async def account(self, account_id: str) -> AccountProfile | None:
        found = await self._get(f"/accounts/{_segment(account_id)}", account_decoder)
        return _usable(found)

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = await self._get(f"/identities/{kind}/{_segment(value)}", _alias_decoder)
        return found.visitor_id if found else None

    async def ready(self) -> bool:
        try:
            response = await self._client.get("/healthz")
        except httpx.HTTPError:
            return False
        return response.is_success

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, decoder: msgspec.json.Decoder[T]) -> T | None:
        try:
            response = await self._client.get(path)
        except httpx.TimeoutException:
            raise ProfileSourceError("profile API timed out") from None
        except httpx.HTTPError as exc:
            raise ProfileSourceError(f"profile API unreachable: {type(exc).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ProfileSourceError(f"profile API answered {response.status_code}")
        try:
            return decoder.decode(response.content)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise ProfileSourceError(f"profile API sent a body off contract: {exc}") from None


def _segment(value: str) -> str:
    """Quote an id as one path segment: '/' and '?' escaped, and dots too, or an id of '..'
    would be resolved away by the URL."""
    return quote(value, safe="").replace(".", "%2E")


Profile = TypeVar("Profile", VisitorProfile, AccountProfile)


def _usable(profile: Profile | None) -> Profile | None:
    problem = traits_problem(profile) if profile is not None else None
    if problem:
        raise ProfileSourceError(f"profile API sent a body off contract: {problem}")
    return profile
