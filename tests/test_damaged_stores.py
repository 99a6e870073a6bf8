"""Stores holding bytes Decider did not write (a script around it, a damaged disk): every
read of them is a ProfileSourceError that quotes nothing, never another exception (in a
lookup of many ids, that id's answer, the others read as ever); a change notice that does
not read means "everything changed"; a decision over them is "unavailable"."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from decider.errors import ProfileSourceError
from decider.model import Identity
from decider.profiles.cache import CacheSettings
from decider.profiles.resolver import Resolver
from decider.profiles.sources.base import Batched, Change, Opening, ProfileSource
from decider.profiles.sources.redis import RedisProfileStore, RedisSettings
from decider.profiles.sources.redis import open_source as open_redis
from decider.profiles.sources.sqlite import SqliteProfileStore

SECRET = "ada@x.example"  # what a damaged record holds; no message may repeat it
DOCS = {
    "not-json": f"<{SECRET}>".encode(),
    "not-utf8": b'{"id": "v-\xff' + SECRET.encode() + b'"}',
    "wrong-shape": b'{"id": 7, "flags": "' + SECRET.encode() + b'"}',
    "deep": b'{"id": "v", "traits": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
}
Lookup = Callable[[ProfileSource], Awaitable[object]]


async def alone(source: ProfileSource, kind: str, key: Any) -> object:
    """`key`'s answer in a lookup of many ids of `kind` (beside one nobody holds): its error
    raised, as a lookup of it alone raises it."""
    assert isinstance(source, Batched)
    if kind == "visitor":
        found: dict[Any, object] = dict(await source.visitors_of(["v-nobody", key]))
    elif kind == "account":
        found = dict(await source.accounts_of(["acc-nobody", key]))
    else:
        found = dict(await source.links_of([("user_id", "u-nobody"), key]))
    nobody, answer = found.values()
    assert nobody is None
    if isinstance(answer, ProfileSourceError):
        raise answer
    return answer


LOOKUPS: dict[str, Lookup] = {
    "visitor": lambda s: s.visitor("v-bad"),
    "account": lambda s: s.account("acc-bad"),
    "visitor, with others": lambda s: alone(s, "visitor", "v-bad"),
    "account, with others": lambda s: alone(s, "account", "acc-bad"),
}


def refuses(source: ProfileSource, lookup: Lookup) -> ProfileSourceError:
    async def main() -> ProfileSourceError:
        try:
            with pytest.raises(ProfileSourceError) as raised:
                await lookup(source)
            return raised.value
        finally:
            await source.aclose()

    error = asyncio.run(main())
    assert SECRET not in str(error)
    assert "\ufffd" not in str(error)
    return error


def unavailable(source: ProfileSource, identity: Identity) -> list[str]:
    """The codes of a resolution over `source`: no exception may escape it."""

    async def main() -> list[str]:
        try:
            found = await Resolver(source, budget=1.0, cache=CacheSettings()).resolve(identity)
            assert found.status == "unavailable"
            return [note.message for note in found.notes]
        finally:
            await source.aclose()

    messages = asyncio.run(main())
    assert not any(SECRET in message for message in messages)
    return messages


# --- SQLite -------------------------------------------------------------------------------


def sqlite_with(tmp_path: Path, sql: str, *args: object) -> SqliteProfileStore:
    store = SqliteProfileStore(tmp_path / "profiles.db")
    # a connection's `with` commits but does not close it (3.13 warns of the unclosed one)
    with closing(sqlite3.connect(tmp_path / "profiles.db")) as db, db:
        db.execute(sql, args)
    return store


@pytest.mark.parametrize("as_text", [False, True], ids=["blob", "text"])
@pytest.mark.parametrize("doc", DOCS.values(), ids=DOCS.keys())
@pytest.mark.parametrize("kind", LOOKUPS)
def test_sqlite_records_that_do_not_decode_are_source_errors(
    tmp_path: Path, kind: str, doc: bytes, as_text: bool
) -> None:
    """Stored as a blob or as text (SQLite then hands Python text to decode), a record that
    is not JSON, not UTF-8 or not a profile is a ProfileSourceError."""
    value = "CAST(? AS TEXT)" if as_text else "?"
    table, key = ("visitors", "v-bad") if "visitor" in kind else ("accounts", "acc-bad")
    store = sqlite_with(tmp_path, f"INSERT INTO {table} VALUES (?, {value})", key, doc)
    refuses(store, LOOKUPS[kind])


def test_sqlite_an_alias_that_is_not_utf8_is_a_source_error(tmp_path: Path) -> None:
    sql = "INSERT INTO aliases VALUES ('user_id', 'u-1', CAST(? AS TEXT))"
    store = sqlite_with(tmp_path, sql, b"v-\xff" + SECRET.encode())
    error = refuses(store, lambda s: s.alias("user_id", "u-1"))
    assert "not UTF-8" in str(error)
    refuses(
        SqliteProfileStore(tmp_path / "profiles.db"),
        lambda s: alone(s, "alias", ("user_id", "u-1")),
    )


def test_sqlite_a_decision_over_a_damaged_record_is_unavailable(tmp_path: Path) -> None:
    store = sqlite_with(tmp_path, "INSERT INTO visitors VALUES ('v-bad', ?)", DOCS["not-utf8"])
    assert unavailable(store, Identity(visitor_id="v-bad"))


def test_sqlite_a_change_notice_that_does_not_read_means_everything_changed(
    tmp_path: Path,
) -> None:
    store = SqliteProfileStore(tmp_path / "profiles.db")
    try:
        with closing(sqlite3.connect(tmp_path / "profiles.db")) as db, db:
            db.execute("INSERT INTO changes (change) VALUES (?)", (b"\xff{",))
        assert store.changes() == [Change(everything=True)]
    finally:
        store.close()


# --- Redis --------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"damaged-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def redis_store(redis_url: str, prefix: str) -> RedisProfileStore:
    settings = RedisSettings(redis_url=redis_url, redis_prefix=prefix)
    store = open_redis(settings, Opening(now=datetime.now(UTC)))
    assert isinstance(store, RedisProfileStore)
    return store


@pytest.mark.parametrize("doc", DOCS.values(), ids=DOCS.keys())
@pytest.mark.parametrize("kind", LOOKUPS)
def test_redis_records_that_do_not_decode_are_source_errors(
    redis_url: str, raw: redis.Redis, prefix: str, kind: str, doc: bytes
) -> None:
    key = f"{prefix}v:v-bad" if "visitor" in kind else f"{prefix}a:acc-bad"
    raw.set(key, doc)
    refuses(redis_store(redis_url, prefix), LOOKUPS[kind])


def test_redis_an_alias_that_is_not_utf8_is_a_source_error(
    redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    raw.hset(f"{prefix}alias:user_id", "u-1", b"v-\xff" + SECRET.encode())
    refuses(redis_store(redis_url, prefix), lambda s: s.alias("user_id", "u-1"))
    refuses(redis_store(redis_url, prefix), lambda s: alone(s, "alias", ("user_id", "u-1")))
    store = redis_store(redis_url, prefix)
    assert unavailable(store, Identity(user_id="u-1"))


def test_redis_a_change_notice_that_does_not_read_means_everything_changed(
    redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    """A notice the change stream holds that does not read flushes every cache, and the
    follower goes on to read the notices after it."""
    store = redis_store(redis_url, prefix)

    async def main() -> list[Change]:
        seen: list[Change] = []
        try:
            store.changes()  # starts following the stream
            await asyncio.sleep(0.1)
            raw.xadd(f"{prefix}changes", {"change": b"\xff{"})
            raw.xadd(f"{prefix}changes", {"other": b"1"})
            raw.xadd(f"{prefix}changes", {"change": b'{"accounts": ["acc-1"]}'})
            deadline = time.monotonic() + 5
            while len(seen) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                seen += store.changes()
            return seen
        finally:
            await store.aclose()

    assert asyncio.run(main()) == [
        Change(everything=True),
        Change(everything=True),
        Change(accounts=("acc-1",)),
    ]
