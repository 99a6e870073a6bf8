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
- At most `maxsize` entries, known and unknown ids together; when full, the oldest unknown id
  goes first, so the anonymous cookies of most traffic do not push known profiles out.

A hit is a dict read (an OrderedDict, in C, ~0.1 µs): a decision makes three or four, and
cachetools' TLRUCache spends ~0.9 µs on one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec

from decider.errors import ProfileSourceError
from decider.profiles.clock import Budget, within

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)
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


# gc=False: no reference cycles (see decider.model)
class Hit(msgspec.Struct, Generic[V], frozen=True, gc=False):
    value: V | None
    stale: bool = False


class Watch:
    """The fresh entries read under it, and the earliest time one of them stops being
    fresh: what a resolution made from them alone relies on (decider.profiles.resolver's
    memo holds while each is still the one its cache holds, and fresh)."""

    __slots__ = ("reads", "until")

    def __init__(self) -> None:
        # each entry read, with where it is held: (the cache's dict of it, its key, it)
        self.reads: dict[int, tuple[Mapping[Any, Any], Any, Any]] = {}
        self.until = math.inf

    def still(self, now: float) -> bool:
        """Whether every entry read is fresh at `now` and neither evicted nor replaced."""
        if now >= self.until:
            return False
        for held, key, entry in self.reads.values():  # noqa: SIM110 (all() costs twice this)
            if held.get(key) is not entry:
                return False
        return True


class _Entry(msgspec.Struct, Generic[V], frozen=True, gc=False):
    hit: Hit[V]  # the answer while fresh, made once
    fresh_until: float
    keep_until: float  # served stale until then, if the source fails


class _Entries(Generic[K, V]):
    """Entries until their `keep_until`, at most `maxsize` of them; least recently used known
    profiles, and oldest unknown ids, first out (unknown ids before any known profile)."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._known: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._unknown: OrderedDict[K, _Entry[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known) + len(self._unknown)

    def get(self, key: K, now: float) -> _Entry[V] | None:
        entry = self._known.get(key)
        if entry is not None:
            if now < entry.keep_until:
                self._known.move_to_end(key)
                return entry
            del self._known[key]
            return None
        entry = self._unknown.get(key)
        if entry is not None and now >= entry.keep_until:
            del self._unknown[key]
            return None
        return entry

    def holding(self, entry: _Entry[V]) -> Mapping[K, _Entry[V]]:
        """Which of the two dicts holds (or would hold) `entry`: a known or an unknown id's."""
        return self._known if entry.hit.value is not None else self._unknown

    def put(self, key: K, entry: _Entry[V]) -> None:
        self.pop(key)
        if len(self) >= self._maxsize:
            (self._unknown or self._known).popitem(last=False)
        (self._known if entry.hit.value is not None else self._unknown)[key] = entry

    def pop(self, key: K) -> None:
        self._known.pop(key, None)
        self._unknown.pop(key, None)

    def clear(self) -> None:
        self._known.clear()
        self._unknown.clear()


class Lookups(Protocol[K_contra, V]):
    """What a resolution reads a cache through: a ProfileCache, or a batch's answers in
    front of one (decider.profiles.batch)."""

    def fresh(self, key: K_contra) -> Hit[V] | None: ...

    async def get(self, key: K_contra, deadline: Budget) -> Hit[V]: ...


class ProfileCache(Generic[K, V]):
    def __init__(
        self,
        fetch: Callable[[K], Awaitable[V | None]],
        settings: CacheSettings,
        *,
        timer: Callable[[], float] = time.monotonic,
        at_hand: Callable[[K], tuple[V | None] | None] | None = None,
    ) -> None:
        self._fetch = fetch
        # what `fetch` would answer when it is at hand already (a request's round trip, in):
        # taken as a fetch's answer, with no task to wait in (a 1-tuple; None: not at hand)
        self._at_hand = at_hand
        self._ttl, self._negative_ttl = settings.ttl, settings.negative_ttl
        self._timer = timer
        self._stale_ttl = settings.stale_ttl  # an unknown id is never served stale
        self._entries: _Entries[K, V] = _Entries(settings.maxsize)
        self._inflight: dict[K, asyncio.Future[V | None]] = {}
        self._epoch = 0  # bumped by every eviction: a fetch begun before it stores nothing
        self.version = 0  # bumped by whatever changes what is held: a store, an eviction
        self.watch: Watch | None = None  # told of each fresh entry read, while set
        self.fetches = 0  # calls to the source (lookups of one key at once share one)
        self.late = 0  # lookups that ran out of their request's budget
        # lookups: answered fresh from the cache, not (the source asked), answered stale
        # after the source failed, and not answered at all
        self.hits = self.misses = self.stale = self.unavailable = 0

    @property
    def size(self) -> int:
        return len(self._entries)

    def now(self) -> float:
        """The time on this cache's clock, as entries' freshness is told."""
        return self._timer()

    def fresh(self, key: K) -> Hit[V] | None:
        """The answer for `key` if the cache holds it fresh; None if the source must be asked."""
        now = self._timer()
        entry = self._entries.get(key, now)
        if entry is not None and now < entry.fresh_until:
            self.hits += 1
            watch = self.watch
            if watch is not None:
                watch.reads[id(entry)] = (self._entries.holding(entry), key, entry)
                watch.until = min(watch.until, entry.fresh_until)
            return entry.hit
        return None

    def peek(self, key: K) -> V | None:
        """The cached value for `key`, fresh or not, without fetching."""
        entry = self._entries.get(key, self._timer())
        return entry.hit.value if entry is not None else None

    def evict(self, key: K) -> None:
        self._entries.pop(key)
        self._inflight.pop(key, None)
        self._epoch += 1
        self.version += 1

    def clear(self) -> None:
        self._entries.clear()
        self._inflight.clear()
        self._epoch += 1
        self.version += 1

    async def get(self, key: K, deadline: Budget | float | None = None) -> Hit[V]:
        """The value for `key` (None: unknown id). `deadline`: a Budget, or a fixed time in
        event-loop time.

        Raises ProfileSourceError if the source fails or is late and nothing stale is at hand.
        """
        hit = self.fresh(key)
        if hit is not None:
            return hit
        entry = self._entries.get(key, self._timer())
        self.misses += 1
        if self._at_hand is not None and key not in self._inflight:
            answer = self._at_hand(key)
            if answer is not None:
                self.fetches += 1
                return self._store(key, answer[0])
        try:
            return Hit(await self._shared_fetch(key, deadline))
        except (ProfileSourceError, TimeoutError) as exc:
            return self._failed(entry, exc)

    @property
    def epoch(self) -> int:
        """Bumped by every eviction: an answer asked for before it may not be stored."""
        return self._epoch

    def answered(
        self, key: K, answer: V | ProfileSourceError | TimeoutError | None, epoch: int
    ) -> Hit[V]:
        """Take `answer`, fetched for `key` with others' (a batch's lookups, asked at `epoch`)
        as `get` takes the answer of its own fetch: counted the same, stored unless an
        eviction came since, a failure served stale if it can be. The caller found `key`
        not fresh. Raises ProfileSourceError as `get` does."""
        self.misses += 1
        if isinstance(answer, ProfileSourceError | TimeoutError):
            return self._failed(self._entries.get(key, self._timer()), answer)
        self.fetches += 1
        return self._store(key, answer) if epoch == self._epoch else Hit(answer)

    def _failed(self, entry: _Entry[V] | None, error: ProfileSourceError | TimeoutError) -> Hit[V]:
        """What a lookup whose fetch failed with `error` gets: `entry`'s value, stale, if it
        holds one; else `error` is raised (a timeout as a ProfileSourceError)."""
        self.late += isinstance(error, TimeoutError)
        if entry is not None and entry.hit.value is not None:
            self.stale += 1
            return Hit(entry.hit.value, stale=True)
        self.unavailable += 1
        if isinstance(error, TimeoutError):
            raise ProfileSourceError("profile lookup ran out of its time budget") from None
        raise error

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
            self._store(key, value)
        return value

    def _store(self, key: K, value: V | None) -> Hit[V]:
        fresh_until = self._timer() + (self._ttl if value is not None else self._negative_ttl)
        keep_until = fresh_until + (self._stale_ttl if value is not None else 0.0)
        hit = Hit(value)
        self._entries.put(key, _Entry(hit, fresh_until, keep_until))
        self.version += 1
        return hit

    def _settle(self, key: K, done: asyncio.Future[V | None]) -> None:
        if self._inflight.get(key) is done:  # not a newer fetch, begun after an eviction
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved, so a fetch nobody waited for logs no warning
