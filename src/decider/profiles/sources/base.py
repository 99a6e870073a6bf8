"""What every profile source is: three point lookups, a readiness probe, and a close; and what
a store Decider can write is besides (imports, the write API, erasure, change notices).

A source returns None for an id it does not know and raises ProfileSourceError when it
cannot answer; nothing else escapes. Stitching (resolver) and caching (cache) sit in front
and are shared by all sources.

A source module registers a `Driver`: its name (DECIDER_PROFILE_SOURCE), its own settings,
each field `x` read from DECIDER_PROFILE_X, and how to open it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeAlias, TypeVar, runtime_checkable

import msgspec

from decider.errors import ProfileSourceError
from decider.profile import AccountProfile, AliasKind, VisitorProfile
from decider.traits import TraitSchema

Profile = VisitorProfile | AccountProfile
AliasKey = tuple[AliasKind, str]
P = TypeVar("P", VisitorProfile, AccountProfile)
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
# one id's answer in a lookup of many: found, None (not known), or its record does not read
Each: TypeAlias = T | ProfileSourceError | None

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


@runtime_checkable
class Batched(ProfileSource, Protocol):
    """A source that looks up many ids of one kind in one query, for a batch of decisions
    (decider.profiles.batch). Each answer holds every id asked; a record that does not read
    fails that id alone. Raises ProfileSourceError when the source cannot answer at all."""

    async def visitors_of(self, ids: Sequence[str]) -> dict[str, Each[VisitorProfile]]: ...

    async def accounts_of(self, ids: Sequence[str]) -> dict[str, Each[AccountProfile]]: ...

    async def links_of(self, keys: Sequence[AliasKey]) -> dict[AliasKey, Each[str]]:
        """The visitor id each user id or email hash is linked to."""


def read_each(
    decoder: msgspec.json.Decoder[T], docs: Mapping[K, bytes | str | None], what: str
) -> dict[K, Each[T]]:
    """`read_back` of each document, by key: one that does not read is its key's error."""
    read: dict[K, Each[T]] = {}
    for key, doc in docs.items():
        try:
            read[key] = read_back(decoder, doc, what) if doc is not None else None
        except ProfileSourceError as exc:
            read[key] = exc
    return read


def read_back(decoder: msgspec.json.Decoder[T], doc: bytes | str, what: str) -> T:
    """A record a store kept, decoded. One that does not decode (written around Decider, or
    damaged: not JSON, not UTF-8, the wrong shape) is a ProfileSourceError naming only
    `what` it is, never its bytes."""
    try:
        return decoder.decode(doc)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProfileSourceError(f"the profile store holds an unreadable {what}") from None


def text_of(raw: bytes, what: str) -> str:
    """A stored id as text; bytes that are not UTF-8 are a ProfileSourceError."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProfileSourceError(f"the profile store holds an unreadable {what}") from None


class Change(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a write made stale, for every cache in every process: entries by key, or
    `everything` (a bulk import)."""

    visitors: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    aliases: tuple[AliasKey, ...] = ()
    everything: bool = False


class ImportSession(Protocol):
    async def write(self, records: Sequence[Profile]) -> None:
        """Part of one all-or-nothing import, already checked (decider.profiles.importer)."""


@runtime_checkable
class ProfileStore(ProfileSource, Protocol):
    """A source Decider itself fills and changes. Every write records a Change that every
    process serving from the store applies to its caches (`changes`)."""

    def importing(self, *, replace: bool) -> AbstractAsyncContextManager[ImportSession]:
        """One import: all of it lands, or none (`replace`: aliases may move to another
        visitor)."""

    async def alias_owners(self, keys: Sequence[AliasKey]) -> dict[AliasKey, str]:
        """The visitor each of `keys` links to, for those linked."""

    async def put(self, profile: Profile) -> Change:
        """Create or replace one profile; a visitor's aliases become exactly its own.
        Raises ProfileConflict when an alias belongs to another visitor."""

    async def patch(
        self, kind: type[P], key: str, update: Callable[[P], P]
    ) -> tuple[P, Change] | None:
        """Read one profile, `update` it and write the result, with no other write between
        (a merge that loses no concurrent change). None if there is no such profile.
        Whatever `update` raises leaves the profile as it was."""

    async def delete(self, kind: type[Profile], key: str) -> Change | None:
        """Erase a visitor (with its aliases) or an account; None if there was none."""

    def changes(self) -> list[Change]:
        """Changes recorded by other processes since the last call; cheap when none."""


class SourceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of each source's own settings."""


class Opening(msgspec.Struct, frozen=True, kw_only=True):
    """What a source may take from the service as it opens, besides its settings: the time
    (to date sample profiles), an HTTP client made by the caller (tests, pooling), and the
    current profile schema (to normalize the traits it reads or seeds)."""

    now: datetime
    http_client: httpx.AsyncClient | None = None
    schema: Callable[[], TraitSchema | None] = lambda: None


S = TypeVar("S", bound=SourceSettings)


@dataclass(frozen=True)
class Driver(Generic[S]):
    """A profile source as the registry knows it."""

    name: str
    settings: type[S]
    open: Callable[[S, Opening], ProfileSource]
    # its writes reach every process serving from it (so `decider profiles` may write it)
    shared: bool = False

    def open_with(self, settings: SourceSettings, opening: Opening) -> ProfileSource:
        if not isinstance(settings, self.settings):
            raise TypeError(f"the {self.name} source takes {self.settings.__name__}")
        return self.open(settings, opening)
