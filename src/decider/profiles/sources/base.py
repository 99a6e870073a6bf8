"""What every profile source is: three point lookups, a readiness probe, and a close.

A source returns None for an id it does not know and raises ProfileSourceError when it
cannot answer; nothing else escapes. Stitching (resolver) and caching (cache) sit in front
and are shared by all sources.

A source module registers a `Driver`: its name (DECIDER_PROFILE_SOURCE), its own settings,
each field `x` read from DECIDER_PROFILE_X, and how to open it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

import msgspec

from decider.profile import AccountProfile, AliasKind, VisitorProfile

if TYPE_CHECKING:
    import httpx


@runtime_checkable  # so the HTTP layer's dependency injection can check what it is given
class ProfileSource(Protocol):
    async def visitor(self, visitor_id: str) -> VisitorProfile | None: ...

    async def account(self, account_id: str) -> AccountProfile | None: ...

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        """The visitor id a user id or email hash is linked to."""

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class SourceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of each source's own settings."""


class Opening(msgspec.Struct, frozen=True, kw_only=True):
    """What a source may take from the service as it opens, besides its settings: the time
    (to date sample profiles) and an HTTP client made by the caller (tests, pooling)."""

    now: datetime
    http_client: httpx.AsyncClient | None = None


S = TypeVar("S", bound=SourceSettings)


@dataclass(frozen=True)
class Driver(Generic[S]):
    """A profile source as the registry knows it."""

    name: str
    settings: type[S]
    open: Callable[[S, Opening], ProfileSource]

    def open_with(self, settings: SourceSettings, opening: Opening) -> ProfileSource:
        if not isinstance(settings, self.settings):
            raise TypeError(f"the {self.name} source takes {self.settings.__name__}")
        return self.open(settings, opening)
