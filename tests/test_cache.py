"""ProfileCache: TTLs on an injected clock, coalescing and deadlines on a real event loop."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from decider.errors import ProfileSourceError
from decider.profiles.cache import CacheSettings, Hit, ProfileCache
from decider.profiles.clock import Budget

from .test_clock import collection

TTL, NEGATIVE_TTL, STALE_TTL = 60.0, 5.0, 600.0


class Clock:
    """A clock the test moves by hand, for the cache's `timer`."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Fetch:
    """A fetch over a dict that records its calls, and can be held at a gate or made to fail."""

    def __init__(self, values: dict[str, str | None]) -> None:
        self.values = values
        self.calls: list[str] = []
        self.completed: list[str] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self, key: str) -> str | None:
        self.calls.append(key)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.completed.append(key)
        return self.values.get(key)


def new_cache(fetch: Fetch, clock: Clock | None = None) -> ProfileCache[str, str]:
    settings = CacheSettings(ttl=TTL, negative_ttl=NEGATIVE_TTL, stale_ttl=STALE_TTL)
    return ProfileCache(fetch, settings, timer=clock or Clock())


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a scenario on a new event loop, failing it rather than hanging if it never ends."""
    asyncio.run(asyncio.wait_for(scenario(), timeout=2.0))


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop turn until `condition` holds (a bounded number of times)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def soon(seconds: float) -> float:
    """A deadline `seconds` from now, in event-loop time."""
    return asyncio.get_running_loop().time() + seconds


def test_fresh_hit_is_served_without_fetching_until_ttl_passes() -> None:
    """A cached value is served without a fetch while fresh, and is refetched once ttl passes."""

    async def scenario() -> None:
        clock, fetch = Clock(), Fetch({"v1": "one"})
        cache = new_cache(fetch, clock)
        assert await cache.get("v1") == Hit("one")
        clock.advance(TTL - 1)
        assert await cache.get("v1") == Hit("one")
        assert fetch.calls == ["v1"]

        fetch.values["v1"] = "two"
        clock.advance(2)
        assert await cache.get("v1") == Hit("two")
        assert fetch.calls == ["v1", "v1"]
        assert cache.fetches == 2

    run(scenario)


def test_fresh_hit_ignores_a_deadline_already_past() -> None:
    """A fresh entry is answered even when the caller's deadline has already passed."""

    async def scenario() -> None:
        fetch = Fetch({"v1": "one"})
        cache = new_cache(fetch)
        await cache.get("v1")
        assert await cache.get("v1", deadline=soon(-1.0)) == Hit("one")
        assert fetch.calls == ["v1"]

    run(scenario)


def test_unknown_id_is_remembered_for_negative_ttl_only() -> None:
    """A miss (fetch returns None) is cached for negative_ttl, not ttl, then asked again."""

    async def scenario() -> None:
        clock, fetch = Clock(), Fetch({})
        cache = new_cache(fetch, clock)
        assert await cache.get("ghost") == Hit(None)
        clock.advance(NEGATIVE_TTL - 1)
        assert await cache.get("ghost") == Hit(None)
        assert fetch.calls == ["ghost"]

        fetch.values["ghost"] = "known now"
        clock.advance(2)
        assert await cache.get("ghost") == Hit("known now")
        assert fetch.calls == ["ghost", "ghost"]

    run(scenario)


def test_concurrent_lookups_of_one_key_share_one_fetch() -> None:
    """Gets of one key while its fetch is pending wait on that one fetch; other keys fetch apart."""

    async def scenario() -> None:
        fetch = Fetch({"a": "A", "b": "B"})
        fetch.gate = asyncio.Event()
        cache = new_cache(fetch)
        keys = ["a"] * 5 + ["b"] * 3
        tasks = [asyncio.create_task(cache.get(key)) for key in keys]
        await until(lambda: len(fetch.calls) == 2)
        await asyncio.sleep(0)
        assert not any(task.done() for task in tasks)

        fetch.gate.set()
        hits = await asyncio.gather(*tasks)
        assert hits == [Hit(key.upper()) for key in keys]
        assert Counter(fetch.calls) == {"a": 1, "b": 1}
        assert cache.fetches == 2

    run(scenario)


def test_an_answer_at_hand_is_taken_without_a_fetch_and_cached_as_one() -> None:
    """What `at_hand` holds (a round trip's answer, in) answers a miss without calling the
    fetch, and is cached as a fetch's answer (an unknown id for negative_ttl only); a key it
    lacks, or one a fetch is under way for, is fetched."""

    async def scenario() -> None:
        clock, fetch = Clock(), Fetch({"b": "B", "c": "C"})
        at_hand: dict[str, tuple[str | None]] = {"a": ("A",), "ghost": (None,)}
        settings = CacheSettings(ttl=TTL, negative_ttl=NEGATIVE_TTL, stale_ttl=STALE_TTL)
        cache = ProfileCache(fetch, settings, timer=clock, at_hand=at_hand.get)
        assert [await cache.get(k) for k in ("a", "ghost", "b")] == [Hit("A"), Hit(None), Hit("B")]
        assert fetch.calls == ["b"]
        assert cache.fetches == 3

        at_hand.clear()
        clock.advance(NEGATIVE_TTL + 1)
        assert await cache.get("a") == Hit("A")  # cached for ttl
        assert await cache.get("ghost") == Hit(None)  # for negative_ttl only: fetched
        assert fetch.calls == ["b", "ghost"]

        fetch.gate = asyncio.Event()
        first = asyncio.create_task(cache.get("c"))
        await until(lambda: "c" in fetch.calls)
        at_hand["c"] = ("other",)
        second = asyncio.create_task(cache.get("c"))  # a fetch is under way: it joins it
        fetch.gate.set()
        assert list(await asyncio.gather(first, second)) == [Hit("C"), Hit("C")]
        assert fetch.calls == ["b", "ghost", "c"]

    run(scenario)


def test_failed_refetch_serves_stale_until_stale_ttl_runs_out() -> None:
    """After ttl a failing refetch serves the old value as stale; after ttl+stale_ttl it raises."""

    async def scenario() -> None:
        clock, fetch = Clock(), Fetch({"v1": "one"})
        cache = new_cache(fetch, clock)
        await cache.get("v1")
        fetch.error = ProfileSourceError("profile source down")

        clock.advance(TTL + 1)
        assert await cache.get("v1") == Hit("one", stale=True)
        clock.advance(STALE_TTL - 2)
        assert await cache.get("v1") == Hit("one", stale=True)
        clock.advance(2)
        with pytest.raises(ProfileSourceError, match="profile source down"):
            await cache.get("v1")
        assert fetch.calls == ["v1"] * 4
        assert cache.fresh("v1") is None
        # what /metrics counts: one miss that fetched, two served stale, one unavailable
        counts = (cache.hits, cache.misses, cache.stale, cache.unavailable, cache.fetches)
        assert counts == (0, 4, 2, 1, 4)

    run(scenario)


def test_failed_refetch_after_a_miss_is_not_served_as_stale() -> None:
    """A remembered miss is not stale data: once it expires, a failing fetch raises."""

    async def scenario() -> None:
        clock, fetch = Clock(), Fetch({})
        cache = new_cache(fetch, clock)
        await cache.get("ghost")
        fetch.error = ProfileSourceError("profile source down")
        clock.advance(NEGATIVE_TTL + 1)
        with pytest.raises(ProfileSourceError):
            await cache.get("ghost")

    run(scenario)


def test_late_refetch_serves_stale_and_still_lands_for_the_next_caller() -> None:
    """A refetch slower than the deadline serves the stale value, and its answer is cached."""

    async def scenario() -> None:
        clock, fetch = Clock(), Fetch({"v1": "one"})
        cache = new_cache(fetch, clock)
        await cache.get("v1")
        clock.advance(TTL + 1)
        fetch.values["v1"] = "two"
        fetch.gate = asyncio.Event()

        assert await cache.get("v1", deadline=soon(0.02)) == Hit("one", stale=True)
        fetch.gate.set()
        await until(lambda: fetch.completed == ["v1", "v1"])
        assert await cache.get("v1") == Hit("two")
        assert fetch.calls == ["v1", "v1"]

    run(scenario)


def test_late_fetch_without_stale_raises_and_still_fills_the_cache() -> None:
    """With nothing stale, a late fetch is a time-budget error, yet its answer is cached."""

    async def scenario() -> None:
        fetch = Fetch({"v1": "one"})
        fetch.gate = asyncio.Event()
        cache = new_cache(fetch)

        with pytest.raises(ProfileSourceError, match="time budget"):
            await cache.get("v1", deadline=soon(0.02))
        fetch.gate.set()
        await until(lambda: not cache._inflight)
        assert await cache.get("v1") == Hit("one")
        assert fetch.calls == ["v1"]

    run(scenario)


def test_an_answer_in_before_a_busy_loop_reached_the_deadline_is_not_late() -> None:
    """The loop was busy past a lookup's deadline while its answer came in; a few task hops
    then carry it up to the cache. The budget is the source's time, not the loop's: the
    answer is served and the lookup is not counted late."""

    async def scenario() -> None:
        answered = asyncio.Event()

        async def fetch(key: str) -> str:
            await answered.wait()
            for _ in range(3):  # a client library's hops from the socket to the caller
                await asyncio.sleep(0)
            return "one"

        cache: ProfileCache[str, str] = ProfileCache(fetch, CacheSettings(), timer=Clock())
        lookup = asyncio.create_task(cache.get("v1", deadline=soon(0.2)))
        await asyncio.sleep(0)
        asyncio.get_running_loop().call_later(0.01, answered.set)  # well within the budget
        time.sleep(0.4)  # the loop busy past both
        assert await lookup == Hit("one")
        assert cache.late == 0

    run(scenario)


def test_time_spent_collecting_garbage_is_not_the_sources() -> None:
    """A collection stops the loop past a lookup's budget; the source answers after it,
    within the budget's own time: a Budget's deadline moved past the collection, so the
    answer is served and the lookup is not counted late."""

    async def scenario() -> None:
        resumed = asyncio.Event()

        async def fetch(key: str) -> str:
            await resumed.wait()
            await asyncio.sleep(0.05)  # the source answers once the process runs again
            return "one"

        cache: ProfileCache[str, str] = ProfileCache(fetch, CacheSettings(), timer=Clock())
        lookup = asyncio.create_task(cache.get("v1", deadline=Budget(0.2)))
        await asyncio.sleep(0)
        collection(0.4)
        resumed.set()
        assert await lookup == Hit("one")
        assert cache.late == 0

    run(scenario)


def test_fetch_failing_after_every_waiter_left_logs_nothing() -> None:
    """A shared fetch that fails once its only caller has timed out leaves no unretrieved error."""

    async def scenario() -> None:
        reports: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reports.append(context))
        fetch = Fetch({"v1": "one"})
        fetch.gate = asyncio.Event()
        fetch.error = ProfileSourceError("profile source down")
        cache = new_cache(fetch)

        with pytest.raises(ProfileSourceError, match="time budget"):
            await cache.get("v1", deadline=soon(0.01))
        fetch.gate.set()
        await until(lambda: not cache._inflight)
        gc.collect()
        assert reports == []
        assert cache._inflight == {}

    run(scenario)


def test_fetch_error_reaches_every_coalesced_waiter_and_is_not_cached() -> None:
    """A failed shared fetch raises in each waiter, and the next get fetches again."""

    async def scenario() -> None:
        fetch = Fetch({"v1": "one"})
        fetch.gate = asyncio.Event()
        fetch.error = ProfileSourceError("profile source down")
        cache = new_cache(fetch)
        tasks = [asyncio.create_task(cache.get("v1")) for _ in range(3)]
        await until(lambda: bool(fetch.calls))

        fetch.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(outcome, ProfileSourceError) for outcome in outcomes)

        fetch.error = None
        assert await cache.get("v1") == Hit("one")
        assert fetch.calls == ["v1", "v1"]

    run(scenario)


def test_unknown_ids_do_not_push_known_profiles_out() -> None:
    """A full cache drops expired unknown-id entries before a known profile."""
    clock = Clock()
    fetch = Fetch({"known": "profile"})
    settings = CacheSettings(maxsize=3, ttl=TTL, negative_ttl=NEGATIVE_TTL, stale_ttl=STALE_TTL)
    cache: ProfileCache[str, str] = ProfileCache(fetch, settings, timer=clock)

    async def scenario() -> None:
        assert (await cache.get("known")).value == "profile"
        for anonymous in ("a1", "a2", "a3", "a4"):
            clock.advance(2 * NEGATIVE_TTL)
            assert (await cache.get(anonymous)).value is None
        assert (await cache.get("known")).value == "profile"
        assert fetch.calls.count("known") == 1

    run(scenario)


def test_a_full_cache_holds_maxsize_entries_and_drops_the_least_recently_used() -> None:
    """Known profiles go least recently used first, and unknown ids before any of them,
    however fresh those are; the cache never holds more than maxsize entries."""
    clock = Clock()
    fetch = Fetch({"k1": "one", "k2": "two", "k3": "three", "k4": "four"})
    settings = CacheSettings(maxsize=3, ttl=TTL, negative_ttl=NEGATIVE_TTL, stale_ttl=STALE_TTL)
    cache: ProfileCache[str, str] = ProfileCache(fetch, settings, timer=clock)

    async def scenario() -> None:
        for key in ("k1", "k2", "nobody", "k1"):
            await cache.get(key)
        await cache.get("k3")  # full: the unknown id goes, though newer than k2
        await cache.get("k4")  # then k2, used least recently (k1 was asked for again)
        assert cache.size == 3
        assert [cache.peek(k) for k in ("k1", "k2", "k3", "k4")] == ["one", None, "three", "four"]
        await cache.get("nobody")
        assert fetch.calls == ["k1", "k2", "nobody", "k3", "k4", "nobody"]

    run(scenario)


def test_entries_past_their_stale_time_are_gone() -> None:
    """A known profile is served stale for stale_ttl after ttl, and not after that."""
    clock = Clock()
    fetch = Fetch({"k": "one"})
    cache = new_cache(fetch, clock)

    async def scenario() -> None:
        await cache.get("k")
        fetch.error = ProfileSourceError("down")
        clock.advance(TTL + STALE_TTL - 1)
        assert await cache.get("k") == Hit("one", stale=True)
        clock.advance(2)
        assert cache.peek("k") is None
        with pytest.raises(ProfileSourceError):
            await cache.get("k")

    run(scenario)
