"""The in-memory profile source (DECIDER_PROFILE_SOURCE=memory), for tests and demos.

Holds profiles in dicts, loaded at start from a JSONL file (DECIDER_PROFILE_FILE) or, by
default, from the bundled sample profiles. Nothing is written anywhere. For tests and demos
of failure it can act as a remote store would: `latency` delays each lookup and
`available = False` fails each one as an outage does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from decider.errors import ProfileSourceError
from decider.profile import AccountProfile, AliasKind, VisitorProfile, stored
from decider.profiles.jsonl import parse_profiles, sample_profiles
from decider.profiles.sources.base import Driver, Opening, SourceSettings

T = TypeVar("T")


class MemorySettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_FILE: a profiles JSONL file to load at start (default: the samples)."""

    file: Path | None = None


class MemoryProfileSource:
    """A ProfileSource over dicts; `lookups` counts the calls of each kind."""

    def __init__(
        self, records: Iterable[VisitorProfile | AccountProfile] = (), *, latency: float = 0.0
    ) -> None:
        self.visitors: dict[str, VisitorProfile] = {}
        self.accounts: dict[str, AccountProfile] = {}
        self.aliases: dict[tuple[AliasKind, str], str] = {}
        self.latency = latency
        self.available = True
        self.lookups: Counter[str] = Counter()
        self.put(records)

    def put(self, records: Iterable[VisitorProfile | AccountProfile]) -> None:
        """Insert or replace profiles, as an import does: a visitor's links are its own."""
        for record in records:
            if isinstance(record, VisitorProfile):
                self._put_visitor(stored(record))
            else:
                self.accounts[record.id] = stored(record)

    def _put_visitor(self, visitor: VisitorProfile) -> None:
        self.aliases = {key: v for key, v in self.aliases.items() if v != visitor.id}
        self.aliases.update({("user_id", u): visitor.id for u in visitor.user_ids})
        self.aliases.update({("email_sha256", e): visitor.id for e in visitor.email_sha256})
        self.visitors[visitor.id] = visitor

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        return await self._answer("visitor", self.visitors.get(visitor_id))

    async def account(self, account_id: str) -> AccountProfile | None:
        return await self._answer("account", self.accounts.get(account_id))

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        return await self._answer("alias", self.aliases.get((kind, value)))

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


def open_source(settings: MemorySettings, opening: Opening) -> MemoryProfileSource:
    """Raises ImportFileError for a file with bad lines, ProfileSourceError if unreadable."""
    if settings.file is None:
        return MemoryProfileSource(sample_profiles(opening.now))
    try:
        data = settings.file.read_bytes()
    except OSError as exc:
        raise ProfileSourceError(
            f"DECIDER_PROFILE_FILE: cannot read {settings.file}: {exc.strerror}"
        ) from None
    return MemoryProfileSource(parse_profiles(data, str(settings.file)))


DRIVER = Driver("memory", MemorySettings, open_source)
