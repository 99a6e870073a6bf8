"""The shared profile store (DECIDER_PROFILE_SOURCE=redis): the same records, aliases and change
notices as the SQLite store, in a Redis server several replicas of Decider share.

Keys, under DECIDER_PROFILE_REDIS_PREFIX (`decider:`): `v:<id>` a visitor's JSON, `a:<id>` an
account's, the hashes `alias:user_id` and `alias:email_sha256` (id -> visitor id), and the
stream `changes`. A visitor's write or erasure is one Lua script (its document, its aliases
and its change notice at once), so no reader sees half of it.

Each process reads the change stream in the background (XREAD BLOCK) and applies what it
reads before its next decision: a write through one replica is seen by every replica within
the time a notice takes to arrive (about a millisecond on one network; README, "Freshness").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError, WatchError

from decider.errors import ProfileConflict, ProfileSourceError, matching
from decider.profile import (
    AccountProfile,
    AliasKind,
    VisitorProfile,
    account_decoder,
    aliases_of,
    stored,
    visitor_decoder,
    without_aliases,
)
from decider.profiles.sources.base import (
    AliasKey,
    Change,
    Driver,
    Each,
    Opening,
    Profile,
    SourceSettings,
    read_back,
    read_each,
    text_of,
)

KEEP_CHANGES = 10_000  # the stream is trimmed to about this many notices (also in the scripts)
_encoder = msgspec.json.Encoder()
P = TypeVar("P", VisitorProfile, AccountProfile)
_change_decoder = msgspec.json.Decoder(Change)

# KEYS: visitor doc, alias:user_id, alias:email_sha256, changes.
# ARGV: visitor id, doc, replace (0/1), notify (0/1), count of user ids, user ids..., emails...
# Refuses (CONFLICT) an alias another visitor holds unless replace; returns the aliases it
# touched, old and new, flat: kind, value, kind, value...
_PUT_VISITOR = """
local id, doc, replace, notify = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4] == '1'
local users, emails = {}, {}
local n = tonumber(ARGV[5])
for i = 6, 5 + n do users[#users + 1] = ARGV[i] end
for i = 6 + n, #ARGV do emails[#emails + 1] = ARGV[i] end
local taken = 0
for _, pair in ipairs({{KEYS[2], users}, {KEYS[3], emails}}) do
  for _, value in ipairs(pair[2]) do
    local owner = redis.call('HGET', pair[1], value)
    if owner and owner ~= id then taken = taken + 1 end
  end
end
if taken > 0 and not replace then return redis.error_reply('CONFLICT') end
local touched = {}
local old = redis.call('GET', KEYS[1])
if old then
  local was = cjson.decode(old)
  local had = {{KEYS[2], 'user_id', was.user_ids}, {KEYS[3], 'email_sha256', was.email_sha256}}
  for _, pair in ipairs(had) do
    for _, value in ipairs(pair[3] or {}) do
      if redis.call('HGET', pair[1], value) == id then redis.call('HDEL', pair[1], value) end
      touched[#touched + 1] = {pair[2], value}
    end
  end
end
redis.call('SET', KEYS[1], doc)
for _, value in ipairs(users) do
  redis.call('HSET', KEYS[2], value, id); touched[#touched + 1] = {'user_id', value}
end
for _, value in ipairs(emails) do
  redis.call('HSET', KEYS[3], value, id); touched[#touched + 1] = {'email_sha256', value}
end
if notify then
  local change = {visitors = {id}}
  if #touched > 0 then change.aliases = touched end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '10000', '*', 'change', cjson.encode(change))
end
local flat = {}
for _, pair in ipairs(touched) do flat[#flat + 1] = pair[1]; flat[#flat + 1] = pair[2] end
return flat
"""

# KEYS: visitor doc, alias:user_id, alias:email_sha256, changes. ARGV: visitor id.
# Returns 0 if there was no such visitor, else the aliases it had, flat as above.
_DELETE_VISITOR = """
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local was = cjson.decode(old)
local touched = {}
local had = {{KEYS[2], 'user_id', was.user_ids}, {KEYS[3], 'email_sha256', was.email_sha256}}
for _, pair in ipairs(had) do
  for _, value in ipairs(pair[3] or {}) do
    if redis.call('HGET', pair[1], value) == ARGV[1] then redis.call('HDEL', pair[1], value) end
    touched[#touched + 1] = {pair[2], value}
  end
end
redis.call('DEL', KEYS[1])
local change = {visitors = {ARGV[1]}}
if #touched > 0 then change.aliases = touched end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '10000', '*', 'change', cjson.encode(change))
local flat = {}
for _, pair in ipairs(touched) do flat[#flat + 1] = pair[1]; flat[#flat + 1] = pair[2] end
return flat
"""


class RedisSettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_REDIS_URL (required, redis:// or rediss://), _REDIS_PREFIX (of every
    key), _REDIS_TIMEOUT (seconds per command)."""

    redis_url: str
    redis_prefix: Annotated[
        str, matching(r"^[!-~]{1,64}$", "1 to 64 characters of printable ASCII, no spaces")
    ] = "decider:"
    redis_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.2


class RedisProfileStore:
    """A ProfileStore in Redis, shared by every replica that points at it."""

    def __init__(
        self, client: aioredis.Redis, reader: aioredis.Redis, prefix: str = "decider:"
    ) -> None:
        """`reader` follows the change stream: its own connection, blocking reads."""
        self._redis = client
        self._reader_client = reader
        self._prefix = prefix
        self._aliases = {kind: f"{prefix}alias:{kind}" for kind in ("user_id", "email_sha256")}
        self._stream = f"{prefix}changes"
        self._put_script = client.register_script(_PUT_VISITOR)
        self._delete_script = client.register_script(_DELETE_VISITOR)
        self._pending: deque[Change] = deque()
        self._reader: asyncio.Task[None] | None = None

    # --- ProfileSource -----------------------------------------------------------------

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        doc = await self._call(self._redis.get(self._key("v", visitor_id)))
        return read_back(visitor_decoder, doc, "visitor") if doc is not None else None

    async def account(self, account_id: str) -> AccountProfile | None:
        doc = await self._call(self._redis.get(self._key("a", account_id)))
        return read_back(account_decoder, doc, "account") if doc is not None else None

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = await self._call(self._redis.hget(self._aliases[kind], value))
        return text_of(found, "alias") if found is not None else None

    async def visitors_of(self, ids: Sequence[str]) -> dict[str, Each[VisitorProfile]]:
        return read_each(visitor_decoder, await self._docs("v", ids), "visitor")

    async def accounts_of(self, ids: Sequence[str]) -> dict[str, Each[AccountProfile]]:
        return read_each(account_decoder, await self._docs("a", ids), "account")

    async def links_of(self, keys: Sequence[AliasKey]) -> dict[AliasKey, Each[str]]:
        """One HMGET per kind of id, pipelined: one round trip."""
        asked = list(dict.fromkeys(keys))
        pipe = self._redis.pipeline(transaction=False)
        kinds = {kind: [value for k, value in asked if k == kind] for kind, _ in asked}
        for kind, values in kinds.items():
            pipe.hmget(self._aliases[kind], values)
        answers = await self._call(pipe.execute())
        links: dict[AliasKey, Each[str]] = {}
        for (kind, values), found in zip(kinds.items(), answers, strict=True):
            for value, raw in zip(values, found, strict=True):
                try:
                    links[kind, value] = text_of(raw, "alias") if raw is not None else None
                except ProfileSourceError as exc:
                    links[kind, value] = exc
        return links

    async def _docs(self, kind: str, ids: Sequence[str]) -> dict[str, bytes | None]:
        """The documents of `ids` under `kind` (None for those it lacks), in one MGET."""
        asked = list(dict.fromkeys(ids))
        if not asked:
            return {}
        found = await self._call(self._redis.mget([self._key(kind, i) for i in asked]))
        return dict(zip(asked, found, strict=True))

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._redis.aclose()
        await self._reader_client.aclose()

    # --- ProfileStore ------------------------------------------------------------------

    @asynccontextmanager
    async def importing(self, *, replace: bool) -> AsyncIterator[_Import]:
        """Not one transaction: Redis has none this large. The import is checked whole
        first, so only Redis failing midway (or a write racing it for one id) leaves part of
        it; it can then be run again. Every replica is told either way."""
        try:
            yield _Import(self, replace)
        finally:
            with contextlib.suppress(ProfileSourceError):
                await self._notify(Change(everything=True))

    async def alias_owners(self, keys: Sequence[AliasKey]) -> dict[AliasKey, str]:
        pipe = self._redis.pipeline(transaction=False)
        for kind, value in keys:
            pipe.hget(self._aliases[kind], value)
        owners = await self._call(pipe.execute())
        return {
            key: text_of(owner, "alias") for key, owner in zip(keys, owners, strict=True) if owner
        }

    async def put(self, profile: Profile) -> Change:
        if isinstance(profile, VisitorProfile):
            touched = await self._put_visitor(stored(profile))
            return Change(visitors=(profile.id,), aliases=_pairs(touched))
        change = Change(accounts=(profile.id,))
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._key("a", profile.id), _encoder.encode(stored(profile)))
        self._xadd(pipe, change)
        await self._call(pipe.execute())
        return change

    async def patch(
        self, kind: type[P], key: str, update: Callable[[P], P]
    ) -> tuple[P, Change] | None:
        """Optimistic: the profile's key is watched from the read to the write; a write by
        anyone in between makes Redis refuse ours, and it is tried again on the new value."""
        doc_key = self._key("v" if kind is VisitorProfile else "a", key)
        decoder: msgspec.json.Decoder[Any] = (
            visitor_decoder if kind is VisitorProfile else account_decoder
        )
        await self._call(self._redis.script_load(_PUT_VISITOR))
        for _ in range(20):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await self._call(pipe.watch(doc_key))
                    doc = await self._call(pipe.get(doc_key))
                    if doc is None:
                        return None
                    new: P = update(read_back(decoder, doc, "profile"))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if isinstance(new, VisitorProfile):
                        keys = self._visitor_keys(new.id)
                        pipe.evalsha(self._put_script.sha, len(keys), *keys, *_put_args(new))
                        touched = (await self._call(pipe.execute()))[0]
                        return new, Change(visitors=(new.id,), aliases=_pairs(touched))
                    change = Change(accounts=(new.id,))
                    pipe.set(doc_key, _encoder.encode(new))
                    self._xadd(pipe, change)
                    await self._call(pipe.execute())
                    return new, change
                except WatchError:
                    continue
                except ResponseError as exc:
                    raise _refusal(exc) from None
        raise ProfileSourceError("too many concurrent writes to one profile; try again")

    async def delete(self, kind: type[Profile], key: str) -> Change | None:
        if kind is VisitorProfile:
            keys = [self._key("v", key), *self._aliases.values(), self._stream]
            had = await self._call(self._delete_script(keys=keys, args=[key]))
            if had == 0:
                return None
            return Change(visitors=(key,), aliases=_pairs(had))
        change = Change(accounts=(key,))
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key("a", key))
        self._xadd(pipe, change)
        deleted, _ = await self._call(pipe.execute())
        return change if deleted else None

    def changes(self) -> list[Change]:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read_changes())
        found = list(self._pending)
        self._pending.clear()
        return found

    # --- inside -------------------------------------------------------------------------

    async def _read_changes(self) -> None:
        """Follow the change stream from now on. After a failure, go on from the last notice
        read; if the stream no longer holds it (trimmed meanwhile), assume all changed."""
        reader = self._reader_client
        last: str | None = None
        while True:
            try:
                if last is None:
                    newest: Any = await reader.xrevrange(self._stream, count=1)
                    last = newest[0][0].decode() if newest else "0-0"
                batches: Any = await reader.xread({self._stream: last}, block=1000, count=500)
            except RedisError:
                await asyncio.sleep(0.2)
                last = await self._resume_from(last)
                continue
            for _, entries in batches:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    self._pending.append(_notice(fields))

    async def _resume_from(self, last: str | None) -> str | None:
        """Where to read on from after a failure: `last`, unless notices after it are gone."""
        try:
            oldest: Any = await self._reader_client.xrange(self._stream, count=1)
        except RedisError:
            return last
        if last is None or (oldest and _stream_id(oldest[0][0].decode()) > _stream_id(last)):
            self._pending.append(Change(everything=True))
            return None
        return last

    async def _put_visitor(self, visitor: VisitorProfile) -> list[bytes]:
        try:
            touched: list[bytes] = await self._call(
                self._put_script(keys=self._visitor_keys(visitor.id), args=_put_args(visitor))
            )
        except ResponseError as exc:
            raise _refusal(exc) from None
        return touched

    def _visitor_keys(self, visitor_id: str) -> list[str]:
        return [self._key("v", visitor_id), *self._aliases.values(), self._stream]

    async def _notify(self, change: Change) -> None:
        pipe = self._redis.pipeline(transaction=False)
        self._xadd(pipe, change)
        await self._call(pipe.execute())

    def _xadd(self, pipe: Any, change: Change) -> None:
        fields = {"change": _encoder.encode(change)}
        pipe.xadd(self._stream, fields, maxlen=KEEP_CHANGES, approximate=True)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except (ResponseError, WatchError):  # the caller's to handle
            raise
        except (RedisError, OSError) as exc:
            raise ProfileSourceError(f"redis failed: {type(exc).__name__}") from None


class _Import:
    """One import into Redis: batches of scripts, pipelined, no notice per record."""

    def __init__(self, store: RedisProfileStore, replace: bool) -> None:
        self._store, self._replace = store, replace
        self._loaded = False

    async def write(self, records: Sequence[Profile]) -> None:
        store = self._store
        redis_ = store._redis
        script = store._put_script
        if not self._loaded:
            await store._call(redis_.script_load(_PUT_VISITOR))
            self._loaded = True
        if self._replace:
            await self._release([r for r in records if isinstance(r, VisitorProfile)])
        pipe = redis_.pipeline(transaction=False)
        for record in records:
            if isinstance(record, VisitorProfile):
                keys = store._visitor_keys(record.id)
                args = _put_args(stored(record), replace=self._replace, notify=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            else:
                pipe.set(store._key("a", record.id), _encoder.encode(stored(record)))
        results = await store._call(pipe.execute(raise_on_error=False))
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise _refusal(failed[0])

    async def _release(self, visitors: Sequence[VisitorProfile]) -> None:
        """Before ids move to `visitors` (--replace), take them out of the profiles of the
        visitors who hold them, so no profile lists an id it lost."""
        store = self._store
        wanted = {key: v.id for v in visitors for key in aliases_of(v)}
        losing: dict[str, set[AliasKey]] = {}
        for key, owner in (await store.alias_owners(list(wanted))).items():
            if owner != wanted[key]:
                losing.setdefault(owner, set()).add(key)
        for owner, keys in losing.items():
            await store.patch(VisitorProfile, owner, partial(_released, keys=keys))


def _stream_id(entry: str) -> tuple[int, int]:
    millis, _, seq = entry.partition("-")
    return int(millis), int(seq or 0)


def _released(held: VisitorProfile, *, keys: set[AliasKey]) -> VisitorProfile:
    return without_aliases(held, keys)


def _put_args(visitor: VisitorProfile, *, replace: bool = False, notify: bool = True) -> list[Any]:
    return [
        visitor.id,
        _encoder.encode(visitor),
        int(replace),
        int(notify),
        len(visitor.user_ids),
        *visitor.user_ids,
        *visitor.email_sha256,
    ]


def _notice(fields: dict[bytes, bytes]) -> Change:
    """A change notice from the stream; one that does not read (written around Decider, or
    damaged) cannot say what changed, so everything did."""
    try:
        return read_back(_change_decoder, fields[b"change"], "change")
    except (ProfileSourceError, KeyError):
        return Change(everything=True)


def _refusal(error: Exception) -> Exception:
    if "CONFLICT" in str(error):
        return ProfileConflict("a user id or email hash is linked to another visitor")
    return ProfileSourceError(f"redis refused a write: {type(error).__name__}")


def _pairs(flat: list[bytes]) -> tuple[AliasKey, ...]:
    """The script's flat kind, value, kind, value... as alias keys."""
    kinds = [b.decode() for b in flat[0::2]]
    values = [b.decode() for b in flat[1::2]]
    return tuple((kind, value) for kind, value in zip(kinds, values, strict=True))  # type: ignore[misc]


def open_source(settings: RedisSettings, opening: Opening) -> RedisProfileStore:
    """Raises ProfileSourceError for a URL redis cannot use. Connects on first use."""
    timeout = settings.redis_timeout
    # a pooled connection a restarted server dropped fails once: try the command again
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    try:
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry
        )
        reader = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=timeout, retry=retry
        )
    except ValueError as exc:
        raise ProfileSourceError(f"DECIDER_PROFILE_REDIS_URL: {exc}") from None
    return RedisProfileStore(client, reader, settings.redis_prefix)


DRIVER = Driver("redis", RedisSettings, open_source, shared=True)
