"""One round trip for a request's lookups, where the source offers it (the profile API's
`POST /resolve`, README "Profile sources").

The ids the cache cannot answer are asked together; the answer then serves the point
lookups the resolver makes anyway (a link, then its visitor, then their account), each
through its own cache entry. So stitching, conflicts between ids, freshness, stale-if-error
and the budget are exactly what they are over one GET per id, at one round trip's wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from decider.errors import ProfileSourceError
from decider.model import Identity
from decider.profile import AccountProfile, AliasKind, VisitorProfile

if TYPE_CHECKING:  # the sources import this module
    from decider.profiles.sources.base import AliasKey, ProfileSource


@dataclass(frozen=True)
class Found:
    """What one round trip answered: the visitor each asked alias links to (None: none),
    and every visitor and account the ids name (None: unknown, as a 404 says)."""

    links: Mapping[AliasKey, str | None]
    visitors: Mapping[str, VisitorProfile | None]
    accounts: Mapping[str, AccountProfile | None]


@runtime_checkable
class Resolving(Protocol):
    """A source that may answer a request's ids in one round trip."""

    @property
    def resolves(self) -> bool:
        """Whether to ask it that way now."""

    async def resolve(self, asked: Identity) -> Found | None:
        """The ids `asked` (those set), in one round trip; None when the source turns out
        not to offer it (then each id is looked up alone). Raises ProfileSourceError."""


# the round trip of the resolution running in this task, and the generation it was begun
# in; the fetches that resolution starts see it
_TRIP: ContextVar[tuple[asyncio.Future[Found | None], int] | None] = ContextVar(
    "decider_trip", default=None
)


class Trips:
    """The point lookups of the resolver's caches: answered from the current resolution's
    round trip when it covers them, else by the source one at a time. When the round trip
    fails, every lookup of that resolution fails with it: the source is down for this
    request, and each id is served from its own stale entry if it has one."""

    def __init__(self, source: Resolving, points: ProfileSource) -> None:
        self._source = source
        self._points = points
        # trips under way by what they ask: a page's placements decided at once share one
        self._pending: dict[Identity, asyncio.Future[Found | None]] = {}
        self._generation = 0  # bumped when cached profiles are forgotten

    @property
    def offered(self) -> bool:
        return self._source.resolves

    def begin(self, asked: Identity) -> None:
        """Ask the source for `asked` now (or join the trip asking it already); lookups made
        in this task until `end` use it."""
        trip = self._pending.get(asked)
        if trip is None:
            trip = asyncio.ensure_future(self._source.resolve(asked))
            self._pending[asked] = trip
            trip.add_done_callback(lambda done: self._settle(asked, done))
        _TRIP.set((trip, self._generation))

    def end(self) -> None:
        _TRIP.set(None)

    def forget(self) -> None:
        """Profiles changed: no lookup starting now may take an answer asked for before."""
        self._generation += 1
        self._pending.clear()

    def visitor_in(self, visitor_id: str) -> tuple[VisitorProfile | None] | None:
        """The current trip's answer for `visitor_id` if it is in and covers it (a 1-tuple:
        the answer may be None, unknown); else None, and the lookup fetches."""
        found = self._answered()
        return (found.visitors[visitor_id],) if found and visitor_id in found.visitors else None

    def account_in(self, account_id: str) -> tuple[AccountProfile | None] | None:
        found = self._answered()
        return (found.accounts[account_id],) if found and account_id in found.accounts else None

    def alias_in(self, key: AliasKey) -> tuple[str | None] | None:
        found = self._answered()
        return (found.links[key],) if found and key in found.links else None

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        found = await self._found()
        if found is not None and visitor_id in found.visitors:
            return found.visitors[visitor_id]
        return await self._points.visitor(visitor_id)

    async def account(self, account_id: str) -> AccountProfile | None:
        found = await self._found()
        if found is not None and account_id in found.accounts:
            return found.accounts[account_id]
        return await self._points.account(account_id)

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = await self._found()
        if found is not None and (kind, value) in found.links:
            return found.links[kind, value]
        return await self._points.alias(kind, value)

    async def _found(self) -> Found | None:
        """The current trip's answer; None without one, or if profiles changed since it was
        asked (the lookup then asks the source itself, as it would have without trips)."""
        current = _TRIP.get()
        if current is None:
            return None
        trip, generation = current
        try:
            found = await trip
        except ProfileSourceError as exc:  # a fresh one each: many lookups raise it
            raise ProfileSourceError(str(exc)) from None
        return found if generation == self._generation else None

    def _answered(self) -> Found | None:
        """The current trip's answer if it is in already: what it covers is taken at once,
        with no fetch to wait in. None while it is under way, if it failed (the lookup then
        fails through the trip, or serves stale), or if profiles changed since it was asked."""
        current = _TRIP.get()
        if current is None:
            return None
        trip, generation = current
        if not trip.done() or trip.cancelled() or trip.exception() is not None:
            return None
        return trip.result() if generation == self._generation else None

    def _settle(self, asked: Identity, trip: asyncio.Future[Found | None]) -> None:
        if self._pending.get(asked) is trip:
            del self._pending[asked]
        if not trip.cancelled():
            trip.exception()  # seen: a trip whose lookups other fetches served logs nothing
