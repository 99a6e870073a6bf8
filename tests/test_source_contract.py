"""The profile source contract, run against every registered source: unknown ids, aliases,
flags, consent records, odd ids, and an unavailable source; and, for the stores Decider
writes (sqlite, redis, memory), writes, erasure, refused conflicts, change notices, and
lookups of many ids at once (for batches of decisions).

Each source gets a harness that loads records the way that source is filled (an import into
SQLite or Redis, a profile API answering over httpx.MockTransport or a real socket, the
in-memory dicts) and can take it down. The profile API is held to the contract both ways it
is asked: one GET per id, and each lookup as a round trip of POST /resolve. A source
registered without a harness fails here, so none is left unchecked. Each case runs in one
event loop, as a server would.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import unquote

import httpx
import msgspec
import pytest

from decider.errors import ProfileConflict, ProfileSourceError
from decider.model import Identity
from decider.profile import AccountProfile, AliasKind, ConsentRecord, VisitorProfile
from decider.profiles.jsonl import AccountRecord, VisitorRecord
from decider.profiles.sources import DRIVERS
from decider.profiles.sources.base import Batched, Change, Opening, ProfileSource, ProfileStore
from decider.profiles.sources.http import AiohttpUpstream, HttpProfileSource, HttpSettings
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.redis import RedisSettings
from decider.profiles.sources.redis import open_source as open_redis
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.profiles.trips import Trips

from .fake_profile_api import FakeProfileApi, resolve_answer

Profile = VisitorProfile | AccountProfile
T = TypeVar("T")
Scenario = Callable[[ProfileSource], Awaitable[None]]

ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()
ACME = AccountProfile(id="acc-1", flags=frozenset({"customer"}), traits={"name": "Acme"})
ADA = VisitorProfile(
    id="v-1",
    account_id="acc-1",
    user_ids=("u-1",),
    email_sha256=(ADA_EMAIL,),
    consent=(
        ConsentRecord(
            "personalization",
            "consent",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2027, 1, 1, 12, 30, tzinfo=UTC),
        ),
        ConsentRecord("email_marketing", "legitimate_interest", datetime(2026, 2, 1, tzinfo=UTC)),
    ),
    flags=frozenset({"unsubscribed", "bounced"}),
    traits={"role": "vp", "score": 1.5, "seen": ["a", "b"], "shop": {"cart_adds": 3}},
)
ODD_IDS = ("a/b", "..", "?x=1#y", "naïve id", "%2F")


class Harness(Protocol):
    source: ProfileSource

    async def load(self, *records: Profile) -> None:
        """Fill the source, as that source is filled in production."""

    async def take_down(self) -> None:
        """Make the source fail as it would in an outage."""


class StoreHarness:
    """A ProfileStore filled by an import (its own all-or-nothing session)."""

    def __init__(self, store: ProfileStore, outage: Callable[[], Awaitable[ProfileStore]]) -> None:
        self.source: ProfileSource = store
        self.store = store
        self._outage = outage

    async def take_down(self) -> None:
        self.source = await self._outage()

    async def load(self, *records: Profile) -> None:
        async with self.store.importing(replace=False) as session:
            await session.write(records)


class HttpHarness:
    """A profile API serving what an in-memory source holds: over httpx.MockTransport, or
    (`socket`) the fake API on a real socket, read over aiohttp as in production; with
    `resolve`, each lookup is asked as a round trip of its own (POST /resolve), through
    the resolver's Trips."""

    def __init__(self, *, socket: bool = False, resolve: bool = False) -> None:
        self.backing = MemoryProfileSource()
        self.down = False
        self.resolve = resolve
        self.paths: list[str] = []
        self.api = FakeProfileApi(self._get) if socket else None
        upstream = (
            AiohttpUpstream(HttpSettings(api_url=self.api.url))
            if self.api
            else httpx.AsyncClient(
                transport=httpx.MockTransport(self._answer), base_url="http://profiles.test"
            )
        )
        http = HttpProfileSource(upstream, resolve=resolve)
        self.source: ProfileSource = OneTrip(http) if resolve else http

    async def load(self, *records: Profile) -> None:
        self.backing.load(records)

    async def take_down(self) -> None:
        self.down = True
        if self.api:
            self.api.set("status_500")

    def close(self) -> None:
        """Stop the fake API; a resolving source must have asked nothing one id at a time."""
        if self.api:
            self.api.close()
        paths = set(self.api.paths if self.api else self.paths)
        if self.resolve:
            assert paths <= {"/resolve", "/healthz"}, paths

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        self.paths.append(path)
        if self.down:
            return httpx.Response(503)
        if path == "/healthz":
            return httpx.Response(200)
        if (request.method, path) == ("POST", "/resolve"):
            return httpx.Response(200, content=resolve_answer(request.content, self._get))
        found = self._get(path)
        return httpx.Response(404) if found is None else httpx.Response(200, content=found)

    def _get(self, path: str) -> bytes | None:
        """What a GET of `path` answers: its body, or None for a 404."""
        parts = [unquote(p) for p in path.split("/")[1:]]
        found: object = None
        match parts:
            case ["visitors", visitor_id]:
                found = self.backing.visitors.get(visitor_id)
            case ["accounts", account_id]:
                found = self.backing.accounts.get(account_id)
            case ["identities", ("user_id" | "email_sha256") as kind, value]:
                linked = self.backing.aliases.get((kind, value))
                found = {"visitor_id": linked} if linked else None
        return None if found is None else msgspec.json.encode(found)


class OneTrip:
    """A profile API source whose every lookup is a round trip of POST /resolve asking that
    one id, answered through the resolver's Trips."""

    def __init__(self, source: HttpProfileSource) -> None:
        self._source = source
        self._trips = Trips(source, source)

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        return await self._ask(Identity(visitor_id=visitor_id), self._trips.visitor, visitor_id)

    async def account(self, account_id: str) -> AccountProfile | None:
        return await self._ask(Identity(account_id=account_id), self._trips.account, account_id)

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        return await self._ask(Identity(**{kind: value}), partial(self._trips.alias, kind), value)

    async def ready(self) -> bool:
        return await self._source.ready()

    async def aclose(self) -> None:
        await self._source.aclose()

    async def _ask(self, asked: Identity, lookup: Callable[[str], Awaitable[T]], key: str) -> T:
        self._trips.begin(asked)
        try:
            return await lookup(key)
        finally:
            self._trips.end()


HTTP_HARNESSES = {
    "http": {},
    "http-resolve": {"resolve": True},
    "http-socket": {"socket": True},
    "http-socket-resolve": {"socket": True, "resolve": True},
}


def redis_store(url: str) -> ProfileStore:
    """A Redis store under a key prefix of its own, so cases never see each other's keys."""
    settings = RedisSettings(redis_url=url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}:")
    return open_redis(settings, Opening(now=datetime.now(UTC)))


def dead_redis() -> ProfileStore:
    """A Redis store pointing at a port nothing listens on."""
    return open_redis(
        RedisSettings(redis_url="redis://127.0.0.1:9/0"), Opening(now=datetime.now(UTC))
    )


def harness_for(name: str, tmp_path: Path, redis_url: str) -> Harness:
    if name == "sqlite":
        sqlite = SqliteProfileStore(tmp_path / "profiles.db")

        async def closed() -> ProfileStore:  # the file gone from under it
            sqlite.close()
            return sqlite

        return StoreHarness(sqlite, closed)
    if name == "redis":
        live = redis_store(redis_url)

        async def unreachable() -> ProfileStore:  # the server gone
            await live.aclose()
            return dead_redis()

        return StoreHarness(live, unreachable)
    if name == "memory":
        memory = MemoryProfileSource()

        async def unavailable() -> ProfileStore:
            memory.available = False
            return memory

        return StoreHarness(memory, unavailable)
    if name in HTTP_HARNESSES:
        return HttpHarness(**HTTP_HARNESSES[name])
    pytest.fail(f"the {name} profile source has no contract harness in {__name__}")


@pytest.fixture(params=sorted(set(DRIVERS) | set(HTTP_HARNESSES)))
def harness(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Harness]:
    made = harness_for(request.param, tmp_path, redis_url)
    yield made
    if isinstance(made, HttpHarness):
        made.close()


@pytest.fixture(params=sorted(name for name, d in DRIVERS.items() if name != "http"))
def store_harness(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> StoreHarness:
    made = harness_for(request.param, tmp_path, redis_url)
    assert isinstance(made, StoreHarness)
    return made


def run(harness: Harness, scenario: Callable[[], Awaitable[None]]) -> None:
    """One case, in one event loop, the source closed at its end."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            await harness.source.aclose()

    asyncio.run(main())


def test_profiles_are_found_by_id_and_alias_as_they_were_loaded(harness: Harness) -> None:
    """Visitors and accounts come back whole (consent, flags, traits), and visitors are found
    by user id and by email hash."""

    async def scenario() -> None:
        await harness.load(ACME, ADA)
        source = harness.source
        assert await source.visitor("v-1") == ADA
        assert await source.account("acc-1") == ACME
        assert await source.alias("user_id", "u-1") == "v-1"
        assert await source.alias("email_sha256", ADA_EMAIL) == "v-1"
        assert await source.ready() is True

    run(harness, scenario)


def test_import_records_are_stored_without_their_kind_tag(harness: Harness) -> None:
    """Records read from JSONL (tagged with `kind`) load as plain profiles."""

    async def scenario() -> None:
        await harness.load(
            AccountRecord(**msgspec.structs.asdict(ACME)),
            VisitorRecord(**msgspec.structs.asdict(ADA)),
        )
        assert type(await harness.source.visitor("v-1")) is VisitorProfile
        assert await harness.source.account("acc-1") == ACME

    run(harness, scenario)


UNKNOWN: dict[str, Callable[[ProfileSource], Awaitable[object]]] = {
    "visitor": lambda s: s.visitor("v-nobody"),
    "account": lambda s: s.account("acc-nobody"),
    "user id": lambda s: s.alias("user_id", "u-nobody"),
    "a hash as a user id": lambda s: s.alias("user_id", ADA_EMAIL),
    "a user id as a hash": lambda s: s.alias("email_sha256", "u-1"),
    "an account as a visitor": lambda s: s.visitor("acc-1"),
    "a visitor as an account": lambda s: s.account("v-1"),
}


@pytest.mark.parametrize("lookup", UNKNOWN.values(), ids=UNKNOWN.keys())
def test_unknown_ids_are_none(
    harness: Harness, lookup: Callable[[ProfileSource], Awaitable[object]]
) -> None:
    """Ids the source does not hold, or ids of the wrong kind, answer None; they never raise."""

    async def scenario() -> None:
        await harness.load(ACME, ADA)
        assert await lookup(harness.source) is None

    run(harness, scenario)


def test_loading_a_visitor_again_replaces_its_aliases(harness: Harness) -> None:
    """A visitor loaded again keeps only its new aliases: the old ones resolve no more."""

    async def scenario() -> None:
        await harness.load(ADA)
        await harness.load(msgspec.structs.replace(ADA, user_ids=("u-new",), email_sha256=()))
        source = harness.source
        assert await source.alias("user_id", "u-new") == "v-1"
        assert await source.alias("user_id", "u-1") is None
        assert await source.alias("email_sha256", ADA_EMAIL) is None
        visitor = await source.visitor("v-1")
        assert visitor is not None
        assert visitor.user_ids == ("u-new",)

    run(harness, scenario)


@pytest.mark.parametrize("odd", ODD_IDS)
def test_ids_with_any_characters_round_trip(harness: Harness, odd: str) -> None:
    """Ids holding '/', '..', '?', '#', '%' or non-ASCII find exactly their own record."""

    async def scenario() -> None:
        await harness.load(
            AccountProfile(id=odd),
            VisitorProfile(id=odd, account_id=odd, user_ids=(odd,)),
            VisitorProfile(id="v-decoy", user_ids=("a", "b", "x")),
        )
        source = harness.source
        visitor = await source.visitor(odd)
        assert visitor is not None
        assert visitor.id == odd
        account = await source.account(odd)
        assert account is not None
        assert account.id == odd
        assert await source.alias("user_id", odd) == odd

    run(harness, scenario)


@pytest.mark.parametrize("kind", ["visitor", "account", "alias"])
def test_an_unavailable_source_raises_and_is_not_ready(harness: Harness, kind: str) -> None:
    """Down, every lookup raises ProfileSourceError (never another exception, never None),
    and ready() says False."""

    async def scenario() -> None:
        await harness.load(ACME, ADA)
        await harness.take_down()
        source = harness.source
        lookups: dict[str, Callable[[], Awaitable[object]]] = {
            "visitor": lambda: source.visitor("v-1"),
            "account": lambda: source.account("acc-1"),
            "alias": lambda: source.alias("user_id", "u-1"),
        }
        with pytest.raises(ProfileSourceError):
            await lookups[kind]()
        assert await source.ready() is False

    run(harness, scenario)


# --- stores Decider writes -------------------------------------------------------------


def test_put_replaces_a_visitor_and_says_what_it_touched(store_harness: StoreHarness) -> None:
    """A put makes the visitor's aliases exactly its own; its Change names the visitor and
    every alias it had or has, for every cache to forget."""

    async def scenario() -> None:
        store = store_harness.store
        await store.put(ADA)
        change = await store.put(msgspec.structs.replace(ADA, user_ids=("u-2",), email_sha256=()))
        assert change.visitors == ("v-1",)
        assert set(change.aliases) == {
            ("user_id", "u-1"),
            ("user_id", "u-2"),
            ("email_sha256", ADA_EMAIL),
        }
        assert await store.alias("user_id", "u-1") is None
        assert await store.alias("user_id", "u-2") == "v-1"
        assert (await store.put(ACME)).accounts == ("acc-1",)

    run(store_harness, scenario)


def test_put_refuses_an_alias_another_visitor_holds(store_harness: StoreHarness) -> None:
    """Two people never share a user id or email hash: the second put is refused whole."""

    async def scenario() -> None:
        store = store_harness.store
        await store.put(ADA)
        with pytest.raises(ProfileConflict):
            await store.put(VisitorProfile(id="v-2", user_ids=("u-9", "u-1")))
        assert await store.visitor("v-2") is None
        assert await store.alias("user_id", "u-9") is None

    run(store_harness, scenario)


def test_delete_erases_a_visitor_with_its_aliases(store_harness: StoreHarness) -> None:
    async def scenario() -> None:
        store = store_harness.store
        await store.put(ADA)
        await store.put(ACME)
        change = await store.delete(VisitorProfile, "v-1")
        assert change is not None
        assert set(change.aliases) == {("user_id", "u-1"), ("email_sha256", ADA_EMAIL)}
        assert await store.visitor("v-1") is None
        assert await store.alias("email_sha256", ADA_EMAIL) is None
        assert await store.delete(VisitorProfile, "v-1") is None
        assert await store.delete(AccountProfile, "acc-1") == Change(accounts=("acc-1",))
        assert await store.account("acc-1") is None

    run(store_harness, scenario)


def test_alias_owners_answers_for_many_ids_at_once(store_harness: StoreHarness) -> None:
    async def scenario() -> None:
        store = store_harness.store
        await store.put(ADA)
        keys = [("user_id", "u-1"), ("user_id", "u-nobody"), ("email_sha256", ADA_EMAIL)]
        owners = await store.alias_owners(keys)  # type: ignore[arg-type]
        assert owners == {("user_id", "u-1"): "v-1", ("email_sha256", ADA_EMAIL): "v-1"}

    run(store_harness, scenario)


def batched(source: ProfileSource) -> Batched:
    assert isinstance(source, Batched), f"{type(source).__name__} looks up one id at a time"
    return source


def test_many_ids_are_looked_up_at_once_each_as_alone(store_harness: StoreHarness) -> None:
    """Every store Decider writes looks up many ids of a kind in one call: each answer is
    what a lookup of that id alone gives (None for an unknown one, or one of another kind;
    odd characters and an id asked twice included)."""

    async def scenario() -> None:
        odd = VisitorProfile(id=ODD_IDS[0], user_ids=ODD_IDS[1:])
        await store_harness.load(ACME, ADA, odd)
        store = batched(store_harness.store)
        ids = ["v-1", "v-nobody", "acc-1", *ODD_IDS, "v-1"]
        assert await store.visitors_of(ids) == {i: await store.visitor(i) for i in ids}
        assert await store.accounts_of(ids) == {i: await store.account(i) for i in ids}
        keys: list[tuple[AliasKind, str]] = [
            ("user_id", "u-1"),
            ("email_sha256", ADA_EMAIL),
            ("user_id", ADA_EMAIL),
            ("email_sha256", "u-1"),
            *(("user_id", odd_id) for odd_id in ODD_IDS),
        ]
        assert await store.links_of(keys) == {k: await store.alias(*k) for k in keys}
        assert await store.visitors_of([]) == {}
        assert await store.links_of([]) == {}

    run(store_harness, scenario)


def test_many_ids_are_looked_up_in_chunks_past_the_query_limit(tmp_path: Path) -> None:
    """More ids than one SQLite query may bind are asked in several, answered as one."""

    async def scenario() -> None:
        store = SqliteProfileStore(tmp_path / "profiles.db")
        people = [VisitorProfile(id=f"v-{n}", user_ids=(f"u-{n}",)) for n in range(1200)]
        store.import_records(people)
        ids = [f"v-{n}" for n in range(0, 2400, 2)]
        found = await store.visitors_of(ids)
        assert [v.id if isinstance(v, VisitorProfile) else v for v in found.values()] == [
            i if int(i[2:]) < 1200 else None for i in ids
        ]
        links = await store.links_of([("user_id", f"u-{n}") for n in range(1200)])
        assert list(links.values()) == [f"v-{n}" for n in range(1200)]
        await store.aclose()

    asyncio.run(scenario())


def test_an_unavailable_store_raises_for_a_lookup_of_many(store_harness: StoreHarness) -> None:
    async def scenario() -> None:
        await store_harness.load(ACME, ADA)
        await store_harness.take_down()
        store = batched(store_harness.source)
        with pytest.raises(ProfileSourceError):
            await store.visitors_of(["v-1"])
        with pytest.raises(ProfileSourceError):
            await store.accounts_of(["acc-1"])
        with pytest.raises(ProfileSourceError):
            await store.links_of([("user_id", "u-1")])

    run(store_harness, scenario)


def test_shared_stores_tell_other_processes_what_changed(tmp_path: Path, redis_url: str) -> None:
    """Two handles on one store, as two processes hold: a write through one is read back as
    a Change by the other (before its next decision), not by itself."""

    async def exchange(first: ProfileStore, second: ProfileStore) -> list[Change]:
        assert second.changes() == []  # starts following
        await asyncio.sleep(0.05)
        await first.put(ADA)
        await first.delete(VisitorProfile, "v-1")
        seen: list[Change] = []
        for _ in range(100):
            seen += second.changes()
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)
        assert first.changes() == []
        return seen

    async def sqlite_case() -> list[Change]:
        with SqliteProfileStore(tmp_path / "p.db") as a, SqliteProfileStore(tmp_path / "p.db") as b:
            return await exchange(a, b)

    async def redis_case() -> list[Change]:
        settings = RedisSettings(redis_url=redis_url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}:")
        a = open_redis(settings, Opening(now=datetime.now(UTC)))
        b = open_redis(settings, Opening(now=datetime.now(UTC)))
        try:
            return await exchange(a, b)
        finally:
            await a.aclose()
            await b.aclose()

    for case in (sqlite_case, redis_case):
        seen = asyncio.run(case())
        assert [c.visitors for c in seen] == [("v-1",), ("v-1",)], case.__name__
        assert set(seen[1].aliases) == {("user_id", "u-1"), ("email_sha256", ADA_EMAIL)}


def test_a_redis_reader_cut_off_reads_on_where_it_was(redis_url: str) -> None:
    """Connections dropped (a restart, a proxy's blip): the next write still succeeds (one
    retry), and the other handle reads on from its last notice, missing none."""

    async def case() -> list[Change]:
        settings = RedisSettings(redis_url=redis_url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}:")
        writer = open_redis(settings, Opening(now=datetime.now(UTC)))
        follower = open_redis(settings, Opening(now=datetime.now(UTC)))
        admin = open_redis(settings, Opening(now=datetime.now(UTC)))
        try:
            await writer.put(ACME)
            follower.changes()
            await asyncio.sleep(0.05)
            kill = admin._redis.execute_command
            await kill("CLIENT", "KILL", "TYPE", "normal")  # type: ignore[no-untyped-call]
            await writer.put(ADA)  # on a dead pooled connection: retried
            seen: list[Change] = []
            for _ in range(200):
                seen += follower.changes()
                if any(c.visitors == ("v-1",) for c in seen):
                    break
                await asyncio.sleep(0.01)
            return seen
        finally:
            for handle in (writer, follower, admin):
                await handle.aclose()

    seen = asyncio.run(case())
    assert any(c.visitors == ("v-1",) for c in seen), seen


def test_patch_is_one_step_so_concurrent_merges_lose_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    """Two handles (two processes' worth) merging flags into one visitor at once: every
    flag lands (no lost update), and a patch after an erasure finds nothing to bring back."""

    def add(flag: str) -> Callable[[VisitorProfile], VisitorProfile]:
        return lambda current: msgspec.structs.replace(current, flags=current.flags | {flag})

    async def merge_many(store: ProfileStore, prefix: str) -> None:
        for n in range(40):
            await store.patch(VisitorProfile, "v-1", add(f"{prefix}{n}"))

    def sqlite_handle(path: Path, prefix: str) -> None:
        async def run_it() -> None:
            with SqliteProfileStore(path) as store:
                await merge_many(store, prefix)

        asyncio.run(run_it())

    path = tmp_path / "p.db"
    with SqliteProfileStore(path) as store:
        store.import_records([ADA])
    threads = [threading.Thread(target=sqlite_handle, args=(path, p)) for p in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with SqliteProfileStore(path) as store:
        merged = asyncio.run(store.visitor("v-1"))
        assert merged is not None
        assert len(merged.flags - ADA.flags) == 80

    async def redis_case() -> frozenset[str]:
        settings = RedisSettings(redis_url=redis_url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}:")
        a = open_redis(settings, Opening(now=datetime.now(UTC)))
        b = open_redis(settings, Opening(now=datetime.now(UTC)))
        try:
            await a.put(ADA)
            await asyncio.gather(merge_many(a, "a"), merge_many(b, "b"))
            merged = await a.visitor("v-1")
            assert merged is not None
            await a.delete(VisitorProfile, "v-1")
            assert await b.patch(VisitorProfile, "v-1", add("late")) is None
            assert await a.visitor("v-1") is None
            return merged.flags
        finally:
            await a.aclose()
            await b.aclose()

    assert len(asyncio.run(redis_case()) - ADA.flags) == 80
