"""A batch's lookups made together (Resolver.resolve_many): every identity resolves exactly as
it does alone, for every shape of ids, over every kind of source; a store is asked one
query per kind of id, a warm cache nothing; an outage serves stale data and a slow source
runs out of the one budget as a single resolution would; a profile API is asked
concurrently, within a share of its connections; a change during the batch's lookups is
not cached from their answer."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import httpx
import msgspec
import pytest

from decider.model import Channel, Identity
from decider.profile import Resolution, VisitorProfile
from decider.profiles.cache import CacheSettings
from decider.profiles.resolver import BATCH_LOOKUPS, Resolver
from decider.profiles.sources.base import Change, Each, ProfileSource
from decider.profiles.sources.http import HttpProfileSource
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.sqlite import SqliteProfileStore

from .test_trips import ADA_EMAIL, PEOPLE, SHAPES, Api

SOURCES = ["memory", "sqlite", "http", "http-resolve"]
# every shape, some twice, and ids of nobody, shuffled: what a send's list looks like
MIXED = [*SHAPES.values(), *SHAPES.values(), *(Identity(user_id=f"u-{n}") for n in range(9))]
random.Random(12).shuffle(MIXED)


def source_of(kind: str, where: Path) -> ProfileSource:
    """A source of `kind` holding test_trips' PEOPLE (and its link to nobody): a new one each
    call, over the same data (SQLite: the same file)."""
    if kind == "memory":
        memory = MemoryProfileSource(PEOPLE)
        memory.aliases["user_id", "u-ghost"] = "v-ghost"
        return memory
    if kind == "sqlite":
        path = where / "profiles.db"
        fresh = not path.exists()
        store = SqliteProfileStore(path)
        if fresh:
            store.import_records(PEOPLE)
            with closing(sqlite3.connect(path)) as db, db:
                db.execute("INSERT INTO aliases VALUES ('user_id', 'u-ghost', 'v-ghost')")
        return store
    http = httpx.AsyncClient(transport=httpx.MockTransport(Api()), base_url="http://api.test")
    return HttpProfileSource(http, resolve=kind == "http-resolve")


def resolver_of(source: ProfileSource, budget: float = 5.0, **cache: float) -> Resolver:
    return Resolver(source, budget=budget, cache=CacheSettings(**cache))  # type: ignore[arg-type]


async def one_by_one(
    resolver: Resolver, identities: list[Identity], channel: Channel
) -> list[Resolution]:
    return [await resolver.resolve(identity, channel) for identity in identities]


@pytest.mark.parametrize("channel", ["web", "email"])
@pytest.mark.parametrize("kind", SOURCES)
def test_a_batch_resolves_each_identity_as_it_resolves_alone(
    kind: str, channel: Channel, tmp_path: Path
) -> None:
    """Every shape of ids (conflicts, merges, dangling links, the account's rule, nobody
    known), some twice, in one batch: each resolution is the one it gets alone, cold or
    warm."""

    async def main() -> tuple[list[Resolution], list[Resolution], list[Resolution]]:
        sources = [source_of(kind, tmp_path), source_of(kind, tmp_path)]
        try:
            alone = await one_by_one(resolver_of(sources[0]), MIXED, channel)
            batching = resolver_of(sources[1])
            cold = await batching.resolve_many(MIXED, channel)
            return alone, cold, await batching.resolve_many(MIXED, channel)
        finally:  # CPython 3.13 fails a test on a store left to the collector
            for source in sources:
                await source.aclose()

    alone, cold, warm = asyncio.run(main())
    assert cold == alone
    assert warm == alone


def test_a_store_is_asked_once_per_kind_and_a_warm_cache_not_at_all() -> None:
    """A cold batch asks the store three times, whatever its size: the links, the visitors,
    the accounts; no id alone. Warm, it asks nothing; the counts say what was fetched."""
    source = source_of("memory", Path())
    assert isinstance(source, MemoryProfileSource)
    resolver = resolver_of(source)

    async def main() -> None:
        await resolver.resolve_many(MIXED, "email")
        assert source.lookups == {"links_of": 1, "visitors_of": 1, "accounts_of": 1}
        await resolver.resolve_many(MIXED, "email")
        assert source.lookups == {"links_of": 1, "visitors_of": 1, "accounts_of": 1}

    asyncio.run(main())
    links = {(k, v) for i in MIXED for k in ("user_id", "email_sha256") if (v := getattr(i, k))}
    assert resolver.aliases.fetches == len(links)
    assert resolver.lookups[1] == 0


def test_sqlite_answers_a_batch_in_one_query_per_kind(tmp_path: Path) -> None:
    """300 recipients by user id and email hash: four SELECTs (two kinds of link, the
    visitors, the accounts)."""
    store = SqliteProfileStore(tmp_path / "profiles.db")
    people = [
        VisitorProfile(id=f"v-{n}", account_id=f"acc-{n % 7}", user_ids=(f"u-{n}",))
        for n in range(300)
    ]
    store.import_records(people)
    asked: list[str] = []
    store._db.set_trace_callback(asked.append)
    identities = [Identity(user_id=f"u-{n}", email_sha256=ADA_EMAIL) for n in range(300)]

    async def main() -> list[Resolution]:
        return await resolver_of(store).resolve_many(identities, "web")

    found = asyncio.run(main())
    assert [r.visitor.id if r.visitor else None for r in found] == [f"v-{n}" for n in range(300)]
    assert len([sql for sql in asked if sql.startswith("SELECT")]) == 4
    store.close()


def test_an_outage_serves_a_batch_stale_as_it_serves_one_resolution(tmp_path: Path) -> None:
    """Half the ids were seen before; past their ttl, the store fails: those are served
    stale, the others unavailable or unchecked, exactly as each is alone."""
    seen = MIXED[: len(MIXED) // 2]
    sources = [source_of("memory", tmp_path) for _ in range(2)]
    batching, alone = (resolver_of(s, ttl=0.02, negative_ttl=0.02, stale_ttl=60) for s in sources)

    async def main() -> tuple[list[Resolution], list[Resolution]]:
        await batching.resolve_many(seen, "email")
        await one_by_one(alone, seen, "email")
        await asyncio.sleep(0.05)
        for source in sources:
            assert isinstance(source, MemoryProfileSource)
            source.available = False
        return await batching.resolve_many(MIXED, "email"), await one_by_one(alone, MIXED, "email")

    in_batch, one_at_a_time = asyncio.run(main())
    assert in_batch == one_at_a_time
    assert {r.status for r in in_batch} == {"resolved", "unavailable"}
    assert all(r.stale for r in in_batch if r.status == "resolved")


def test_a_slow_store_runs_out_of_the_batchs_one_budget(tmp_path: Path) -> None:
    """The store answers later than the budget: each resolution is what it is alone, out of
    its budget (unavailable), and each id asked counts late once."""
    sources = [source_of("memory", tmp_path) for _ in range(2)]
    for source in sources:
        assert isinstance(source, MemoryProfileSource)
        source.latency = 0.2
    batching, alone = (resolver_of(s, budget=0.02) for s in sources)

    async def main() -> tuple[list[Resolution], list[Resolution]]:
        identities = list(SHAPES.values())
        return await batching.resolve_many(identities, "web"), await one_by_one(
            alone, identities, "web"
        )

    in_batch, one_at_a_time = asyncio.run(main())
    assert in_batch == one_at_a_time
    assert {r.status for r in in_batch} == {"unavailable"}
    links = {
        (k, v) for i in SHAPES.values() for k in ("user_id", "email_sha256") if (v := getattr(i, k))
    }
    assert batching.aliases.late == len(links)


@pytest.mark.parametrize("resolve", [False, True], ids=["gets", "resolve"])
def test_a_profile_api_is_asked_concurrently_within_a_share_of_its_pool(resolve: bool) -> None:
    """Over a profile API a batch's resolutions run at once, BATCH_LOOKUPS at most, so the
    rest of the connection pool stays free for single decisions."""
    api = Api()
    running: list[int] = [0, 0]  # now, most at once

    async def slow(request: httpx.Request) -> httpx.Response:
        running[0] += 1
        running[1] = max(running)
        await asyncio.sleep(0.01)
        running[0] -= 1
        return api(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(slow), base_url="http://api.test")
    resolver = resolver_of(HttpProfileSource(http, resolve=resolve))
    identities = [Identity(user_id=f"u-{n}") for n in range(100)]
    found = asyncio.run(resolver.resolve_many(identities, "web"))
    assert [r.status for r in found] == ["unknown"] * 100
    assert len(api.paths) == 100
    assert 1 < running[1] <= BATCH_LOOKUPS


def test_a_change_during_a_batchs_lookups_is_not_cached_from_their_answer(
    tmp_path: Path,
) -> None:
    """A profile changes while the batch's query for visitors is out: the batch decides on
    what that query read, and the next resolution asks anew and sees the change."""
    out, gate = asyncio.Event(), asyncio.Event()

    class Held(MemoryProfileSource):
        async def visitors_of(self, ids: Sequence[str]) -> dict[str, Each[VisitorProfile]]:
            read = await super().visitors_of(ids)
            out.set()
            await gate.wait()
            return read

    source = Held(PEOPLE)
    resolver = resolver_of(source)
    ada = Identity(user_id="u-ada")

    async def main() -> tuple[Resolution, Resolution]:
        during = asyncio.create_task(resolver.resolve_many([ada, SHAPES["email"]], "web"))
        await out.wait()
        vip = msgspec.structs.replace(source.visitors["v-ada"], flags=frozenset({"vip"}))
        source.load([vip])
        resolver.apply(Change(visitors=("v-ada",)))
        gate.set()
        (before, _) = await during
        return before, await resolver.resolve(ada)

    before, after = asyncio.run(main())
    assert before.visitor is not None
    assert before.visitor.flags == frozenset()
    assert after.visitor is not None
    assert after.visitor.flags == frozenset({"vip"})
