"""The in-memory profile store (DECIDER_PROFILE_SOURCE=memory), for tests and demos.

Holds profiles in dicts, loaded at start from a JSONL file (DECIDER_PROFILE_FILE) or, by
default, from the bundled sample profiles; the write API changes them. Nothing is written
anywhere, and each process has its own. For tests and demos of failure it can act as a remote
store would: `latency` delays each lookup and `available = False` fails each one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from decider.errors import ProfileConflict, ProfileSourceError
from decider.profile import (
    AccountProfile,
    AliasKind,
    VisitorProfile,
    aliases_of,
    stored,
)
from decider.profiles.jsonl import parse_profiles, sample_profiles
from decider.profiles.sources.base import (
    AliasKey,
    Change,
    Driver,
    Each,
    Opening,
    Profile,
    SourceSettings,
)

T = TypeVar("T")
P = TypeVar("P", VisitorProfile, AccountProfile)


class MemorySettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_FILE: a profiles JSONL file to load at start (default: the samples)."""

    file: Path | None = None


class MemoryProfileSource:
    """A ProfileSource over dicts; `lookups` counts the calls of each kind (a lookup of
    many ids, for a batch of decisions, is one call of its own kind: `visitors_of`...)."""

    def __init__(
        self, records: Iterable[VisitorProfile | AccountProfile] = (), *, latency: float = 0.0
    ) -> None:
        self.visitors: dict[str, VisitorProfile] = {}
        self.accounts: dict[str, AccountProfile] = {}
        self.aliases: dict[tuple[AliasKind, str], str] = {}
        self.latency = latency
        self.available = True
        self.lookups: Counter[str] = Counter()
        self.load(records)

    def load(self, records: Iterable[VisitorProfile | AccountProfile]) -> None:
        """Insert or replace profiles, as an import with --replace does."""
        for record in records:
            if isinstance(record, VisitorProfile):
                self._put_visitor(stored(record))
            else:
                self.accounts[record.id] = stored(record)

    def _put_visitor(self, visitor: VisitorProfile) -> Change:
        old = [key for key, owner in self.aliases.items() if owner == visitor.id]
        for key in old:
            del self.aliases[key]
        new = aliases_of(visitor)
        for key in new:  # an id moving here (a --replace import) leaves its holder's profile
            holder = self.visitors.get(self.aliases.get(key, visitor.id))
            if holder is not None and holder.id != visitor.id:
                self.visitors[holder.id] = msgspec.structs.replace(
                    holder,
                    user_ids=tuple(u for u in holder.user_ids if ("user_id", u) != key),
                    email_sha256=tuple(
                        e for e in holder.email_sha256 if ("email_sha256", e) != key
                    ),
                )
        self.aliases.update(dict.fromkeys(new, visitor.id))
        self.visitors[visitor.id] = visitor
        return Change(visitors=(visitor.id,), aliases=tuple({*old, *new}))

    # --- ProfileStore ------------------------------------------------------------------

    @asynccontextmanager
    async def importing(self, *, replace: bool) -> AsyncIterator[_Import]:
        pending: list[Profile] = []
        yield _Import(pending)
        for record in pending:  # checked already; with `replace`, a taken alias moves
            if isinstance(record, VisitorProfile) and not replace:
                taken = [
                    k for k in aliases_of(record) if self.aliases.get(k, record.id) != record.id
                ]
                if taken:
                    raise ProfileConflict("a user id or email hash is linked to another visitor")
        self.load(pending)

    async def alias_owners(self, keys: Sequence[AliasKey]) -> dict[AliasKey, str]:
        return {key: self.aliases[key] for key in keys if key in self.aliases}

    async def put(self, profile: Profile) -> Change:
        if not isinstance(profile, VisitorProfile):
            self.accounts[profile.id] = stored(profile)
            return Change(accounts=(profile.id,))
        for key in aliases_of(profile):
            if self.aliases.get(key, profile.id) != profile.id:
                raise ProfileConflict(f"this {key[0]} is linked to another visitor")
        return self._put_visitor(stored(profile))

    async def patch(
        self, kind: type[P], key: str, update: Callable[[P], P]
    ) -> tuple[P, Change] | None:
        table: dict[str, Any] = self.visitors if kind is VisitorProfile else self.accounts
        current = table.get(key)
        if current is None:
            return None
        new = update(current)
        return new, await self.put(new)  # no await comes between the read and the write

    async def delete(self, kind: type[Profile], key: str) -> Change | None:
        if kind is VisitorProfile:
            if self.visitors.pop(key, None) is None:
                return None
            old = tuple(k for k, owner in self.aliases.items() if owner == key)
            for alias in old:
                del self.aliases[alias]
            return Change(visitors=(key,), aliases=old)
        if self.accounts.pop(key, None) is None:
            return None
        return Change(accounts=(key,))

    def changes(self) -> list[Change]:
        return []  # one process: its own writes are applied as they are made

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        return await self._answer("visitor", self.visitors.get(visitor_id))

    async def account(self, account_id: str) -> AccountProfile | None:
        return await self._answer("account", self.accounts.get(account_id))

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        return await self._answer("alias", self.aliases.get((kind, value)))

    async def visitors_of(self, ids: Sequence[str]) -> dict[str, Each[VisitorProfile]]:
        return await self._answer("visitors_of", {i: self.visitors.get(i) for i in ids})

    async def accounts_of(self, ids: Sequence[str]) -> dict[str, Each[AccountProfile]]:
        return await self._answer("accounts_of", {i: self.accounts.get(i) for i in ids})

    async def links_of(self, keys: Sequence[AliasKey]) -> dict[AliasKey, Each[str]]:
        return await self._answer("links_of", {key: self.aliases.get(key) for key in keys})

    async def ready(self) -> bool:
        return self.available

    async def aclose(self) -> None:
        return None

    async def _answer(self, lookup: str, value: T) -> T:
        self.lookups[lookup] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if not self.available:
            raise ProfileSourceError("in-memory profile source is set unavailable")
        return value


class _Import:
    def __init__(self, pending: list[Profile]) -> None:
        self._pending = pending

    async def write(self, records: Sequence[Profile]) -> None:
        self._pending.extend(records)


def open_source(settings: MemorySettings, opening: Opening) -> MemoryProfileSource:
    """Raises ImportFileError for a file with bad lines, ProfileSourceError if unreadable."""
    if settings.file is None:
        return MemoryProfileSource(sample_profiles(opening.now, opening.schema()))
    try:
        data = settings.file.read_bytes()
    except OSError as exc:
        raise ProfileSourceError(
            f"DECIDER_PROFILE_FILE: cannot read {settings.file}: {exc.strerror}"
        ) from None
    return MemoryProfileSource(parse_profiles(data, str(settings.file), opening.schema()))


DRIVER = Driver("memory", MemorySettings, open_source)
