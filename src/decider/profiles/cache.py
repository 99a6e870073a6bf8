"""A TTL cache for profile lookups that coalesces, caches misses briefly and serves stale on error.

- Fresh for `ttl` seconds; an unknown id ("miss") is remembered for `negative_ttl` only.
- Concurrent lookups of one key share one fetch (the fetch is shielded, so a caller that
  gives up at its deadline does not cancel it for the others, and its answer still lands).
- After `ttl`, a hit stays usable for `stale_ttl` more seconds, served only if a refetch fails
  or misses the caller's deadline (stale-if-error). The deadline bounds the source's time,
  not the process's: an answer already in when the busy loop gets to the deadline is taken,
  and a Budget's deadline moves past the time spent collecting garbage (decider.profiles.clock).
- `evict` forgets a key at once (a profile changed or was erased): the next lookup fetches,
  and no fetch begun before the eviction may write its older answer back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Annotated, Generic, TypeVar

import msgspec
from cachetools import TLRUCache

from decider.errors import ProfileSourceError
from decider.profiles.clock import Budget, within

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MONTH = 30 * 24 * 3600.0  # longer lifetimes are a typo, and inf would keep entries forever
# loop passes a late lookup is given to read an answer already received: a few task hops
# lie between the socket and the cache
_CATCH_UP = 8


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Size, and lifetimes in seconds, of cached lookups (DECIDER_CACHE_*)."""

    maxsize: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 100_000
    ttl: Annotated[float, msgspec.Meta(gt=0, le=_MONTH)] = 60.0
    negative_ttl: Annotated[float, msgspec.Meta(gt=0, le=_MONTH)] = 5.0
    stale_ttl: Annotated[float, msgspec.Meta(ge=0, le=_MONTH)] = 600.0


class Hit(msgspec.Struct, Generic[V], frozen=True):
    value: V | None
    stale: bool = False


class _Entry(msgspec.Struct, Generic[V], frozen=True):
    value: V | None
    fresh_until: float


class ProfileCache(Generic[K, V]):
    def __init__(
        self,
        fetch: Callable[[K], Awaitable[V | None]],
        settings: CacheSettings,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl, self._negative_ttl = settings.ttl, settings.negative_ttl
        self._timer = timer
        # an unknown id is kept for negative_ttl only: anonymous cookies, most of the traffic,
        # must not push known profiles out of the cache
        self._keep = settings.ttl + settings.stale_ttl
        self._entries: TLRUCache[K, _Entry[V]] = TLRUCache(
            settings.maxsize, self._expires, timer=timer
        )
        self._inflight: dict[K, asyncio.Future[V | None]] = {}
        self._epoch = 0  # bumped by every eviction: a fetch begun before it stores nothing
        self.fetches = 0  # calls to the source (lookups of one key at once share one)
        self.late = 0  # lookups that ran out of their request's budget
        # lookups: answered fresh from the cache, not (the source asked), answered stale
        # after the source failed, and not answered at all
        self.hits = self.misses = self.stale = self.unavailable = 0

    @property
    def size(self) -> int:
        return len(self._entries)

    def fresh(self, key: K) -> Hit[V] | None:
        """The answer for `key` if the cache holds it fresh; None if the source must be asked."""
        entry = self._entries.get(key)
        if entry is not None and self._timer() < entry.fresh_until:
            self.hits += 1
            return Hit(entry.value)
        return None

    def peek(self, key: K) -> V | None:
        """The cached value for `key`, fresh or not, without fetching."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def evict(self, key: K) -> None:
        self._entries.pop(key, None)
        self._inflight.pop(key, None)
        self._epoch += 1

    def clear(self) -> None:
        self._entries.clear()
        self._inflight.clear()
        self._epoch += 1

    def _expires(self, _: K, entry: _Entry[V], now: float) -> float:
        return now + (self._keep if entry.value is not None else self._negative_ttl)

    async def get(self, key: K, deadline: Budget | float | None = None) -> Hit[V]:
        """The value for `key` (None: unknown id). `deadline`: a Budget, or a fixed time in
        event-loop time.

        Raises ProfileSourceError if the source fails or is late and nothing stale is at hand.
        """
        entry = self._entries.get(key)
        if entry is not None and self._timer() < entry.fresh_until:
            self.hits += 1
            return Hit(entry.value)
        self.misses += 1
        try:
            return Hit(await self._shared_fetch(key, deadline))
        except (ProfileSourceError, TimeoutError) as exc:
            self.late += isinstance(exc, TimeoutError)
            if entry is not None and entry.value is not None:
                self.stale += 1
                return Hit(entry.value, stale=True)
            self.unavailable += 1
            if isinstance(exc, TimeoutError):
                raise ProfileSourceError("profile lookup ran out of its time budget") from None
            raise

    async def _shared_fetch(self, key: K, deadline: Budget | float | None) -> V | None:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._load(key))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settle(key, done))
        try:
            async with within(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            # The budget is the source's time, not the loop's: an answer that came in while
            # the loop was busy past the deadline (other requests' work) is taken once the
            # loop has read it and handed it up.
            for _ in range(_CATCH_UP):
                if future.done():
                    break
                await asyncio.sleep(0)
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()
            raise

    async def _load(self, key: K) -> V | None:
        self.fetches += 1
        epoch = self._epoch
        value = await self._fetch(key)
        if epoch == self._epoch:
            ttl = self._ttl if value is not None else self._negative_ttl
            self._entries[key] = _Entry(value, self._timer() + ttl)
        return value

    def _settle(self, key: K, done: asyncio.Future[V | None]) -> None:
        if self._inflight.get(key) is done:  # not a newer fetch, begun after an eviction
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved, so a fetch nobody waited for logs no warning
