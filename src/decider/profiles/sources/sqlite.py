"""The embedded profile store (DECIDER_PROFILE_SOURCE=sqlite, the default): one SQLite file,
filled by imports and the write API, read by point lookups.

Lookups run inline on the event loop: an indexed SQLite read takes tens of microseconds,
less than a hop to a worker thread, and the cache in front absorbs repeats. The database is
in WAL mode, so an import never blocks those reads.

Every write appends its Change to a `changes` table in the same transaction. Each process
serving from the file asks SQLite, before each decision, whether another connection committed
since (`PRAGMA data_version`, a read of shared memory), and only then reads the new changes:
a write is seen by every process on its next decision.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from decider.errors import ProfileConflict, ProfileSourceError
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
from decider.profiles.jsonl import sample_profiles
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
from decider.traits import TraitSchema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visitors (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (
    kind TEXT NOT NULL, value TEXT NOT NULL, visitor_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX IF NOT EXISTS aliases_by_visitor ON aliases (visitor_id);
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, change BLOB NOT NULL);
"""
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staged_visitors (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS staged_accounts (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS staged_aliases (
    kind TEXT NOT NULL, value TEXT NOT NULL, visitor_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX IF NOT EXISTS temp.staged_by_visitor ON staged_aliases (visitor_id);
"""
_UNSTAGED = """
DROP TABLE IF EXISTS temp.staged_visitors;
DROP TABLE IF EXISTS temp.staged_accounts;
DROP TABLE IF EXISTS temp.staged_aliases;
"""
KEEP_CHANGES = 10_000  # older ones are pruned; a process that far behind flushes its caches
CHUNK = 500  # ids one query asks for: SQLite takes up to 999 parameters in older builds

_encoder = msgspec.json.Encoder()
P = TypeVar("P", VisitorProfile, AccountProfile)
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "visitors": visitor_decoder,
    "accounts": account_decoder,
}
_change_decoder = msgspec.json.Decoder(Change)


def use_wal(db: sqlite3.Connection) -> None:
    """WAL mode, which a new file's first openers may contend for: that waits for no busy
    timeout, so try again a moment later. Raises sqlite3.Error."""
    for _ in range(100):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    db.execute("PRAGMA journal_mode=WAL")


class SqliteSettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_DB (the file) and DECIDER_PROFILE_SEED_SAMPLES (seed an empty store
    with the bundled sample profiles; set false in production)."""

    db: Path = Path("decider.db")
    seed_samples: bool = True


class SqliteProfileStore:
    """A ProfileStore over one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=15.0
            )
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"cannot open profile store {self.path}: {exc}") from None
        try:
            # readers never wait for a writer in WAL mode; a writer waits up to `timeout` (an
            # import holds the store for its final merge: about 7 s for a million records)
            use_wal(self._db)
            self._db.executescript(_SCHEMA)
            self._data_version = self._scalar("PRAGMA data_version")
            self._seen = self._scalar("SELECT coalesce(max(seq), 0) FROM changes")
        except sqlite3.Error as exc:
            self._db.close()
            raise ProfileSourceError(f"cannot open profile store {self.path}: {exc}") from None

    @classmethod
    def open_seeded(
        cls, path: Path | str, now: datetime, schema: TraitSchema | None = None
    ) -> SqliteProfileStore:
        """Open the store; a new, empty one gets the bundled sample profiles."""
        store = cls(path)
        try:
            if store.is_empty():
                store.import_records(sample_profiles(now, schema))
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteProfileStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def is_empty(self) -> bool:
        return (
            self._scalar("SELECT (SELECT count(*) FROM visitors) + (SELECT count(*) FROM accounts)")
            == 0
        )

    def import_records(
        self, records: Iterable[Profile], *, replace: bool = False
    ) -> tuple[int, int]:
        """Write records in one transaction (checked and normalized already, e.g. by
        `parse_profiles`); returns (visitors, accounts) written."""
        visitors = accounts = 0
        with self._writing():
            batch = list(records)
            self._write(batch, replace=replace)
            visitors = sum(isinstance(r, VisitorProfile) for r in batch)
            accounts = len(batch) - visitors
            self._record(Change(everything=True))
        return visitors, accounts

    # --- ProfileStore ------------------------------------------------------------------

    @asynccontextmanager
    async def importing(self, *, replace: bool) -> AsyncIterator[_Import]:
        """Batches go to this connection's own temporary tables, which lock nothing; one
        short transaction then merges them in, so writers wait only for that, and readers
        never (WAL)."""
        self._db.executescript(_STAGING)
        try:
            yield _Import(self._db)
            with self._writing():
                self._merge(replace=replace)
                self._record(Change(everything=True))
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"import failed: {exc}") from None
        finally:
            self._db.executescript(_UNSTAGED)

    async def alias_owners(self, keys: Sequence[AliasKey]) -> dict[AliasKey, str]:
        return self._owners(keys)

    async def patch(
        self, kind: type[P], key: str, update: Callable[[P], P]
    ) -> tuple[P, Change] | None:
        table = "visitors" if kind is VisitorProfile else "accounts"
        decoder: msgspec.json.Decoder[Any] = _DECODERS[table]
        with self._writing():  # read and write in one transaction: no write comes between
            doc = self._one(f"SELECT doc FROM {table} WHERE id = ?", (key,))
            if doc is None:
                return None
            new: P = update(read_back(decoder, doc, "profile"))
            if isinstance(new, VisitorProfile):
                change = self._put_visitor(new, replace=False)
            else:
                self._put_doc("accounts", new)
                change = Change(accounts=(new.id,))
            self._record(change)
        return new, change

    def _owners(self, keys: Sequence[AliasKey]) -> dict[AliasKey, str]:
        found: dict[AliasKey, str] = {}
        for start in range(0, len(keys), 400):  # SQLite takes up to 999 parameters
            chunk = keys[start : start + 400]
            where = " OR ".join(["(kind = ? AND value = ?)"] * len(chunk))
            rows = self._all(
                f"SELECT kind, value, visitor_id FROM aliases WHERE {where}",
                [part for key in chunk for part in key],
            )
            found |= {(kind, value): visitor for kind, value, visitor in rows}
        return found

    async def put(self, profile: Profile) -> Change:
        with self._writing():
            if isinstance(profile, VisitorProfile):
                change = self._put_visitor(profile, replace=False)
            else:
                self._put_doc("accounts", profile)
                change = Change(accounts=(profile.id,))
            self._record(change)
        return change

    async def delete(self, kind: type[Profile], key: str) -> Change | None:
        with self._writing():
            if kind is VisitorProfile:
                aliases = self._stored_aliases(key)
                gone = self._db.execute("DELETE FROM visitors WHERE id = ?", (key,)).rowcount
                self._db.execute("DELETE FROM aliases WHERE visitor_id = ?", (key,))
                change = Change(visitors=(key,), aliases=aliases)
            else:
                gone = self._db.execute("DELETE FROM accounts WHERE id = ?", (key,)).rowcount
                change = Change(accounts=(key,))
            if not gone:
                return None
            self._record(change)
        return change

    def changes(self) -> list[Change]:
        try:
            version = self._scalar("PRAGMA data_version")
            if version == self._data_version:
                return []
            self._data_version = version
            rows = self._all(
                "SELECT seq, change FROM changes WHERE seq > ? ORDER BY seq", [self._seen]
            )
        except ProfileSourceError:
            return [Change(everything=True)]  # cannot tell what changed: assume all did
        if not rows:
            return []
        missed = rows[0][0] > self._seen + 1
        self._seen = rows[-1][0]
        if missed:  # pruned before this process read them
            return [Change(everything=True)]
        try:
            return [read_back(_change_decoder, change, "change") for _, change in rows]
        except ProfileSourceError:
            return [Change(everything=True)]  # cannot tell what changed: assume all did

    # --- ProfileSource -----------------------------------------------------------------

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        doc = self._one("SELECT doc FROM visitors WHERE id = ?", (visitor_id,))
        return read_back(visitor_decoder, doc, "visitor") if doc is not None else None

    async def account(self, account_id: str) -> AccountProfile | None:
        doc = self._one("SELECT doc FROM accounts WHERE id = ?", (account_id,))
        return read_back(account_decoder, doc, "account") if doc is not None else None

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = self._one(
            "SELECT visitor_id FROM aliases WHERE kind = ? AND value = ?", (kind, value)
        )
        return str(found) if found is not None else None

    # --- Batched ----------------------------------------------------------------------

    async def visitors_of(self, ids: Sequence[str]) -> dict[str, Each[VisitorProfile]]:
        return read_each(visitor_decoder, self._docs("visitors", ids), "visitor")

    async def accounts_of(self, ids: Sequence[str]) -> dict[str, Each[AccountProfile]]:
        return read_each(account_decoder, self._docs("accounts", ids), "account")

    async def links_of(self, keys: Sequence[AliasKey]) -> dict[AliasKey, Each[str]]:
        """One query per kind of id (and per CHUNK of them); a link is read as bytes, so
        one that is not UTF-8 fails its own id only."""
        links: dict[AliasKey, Each[str]] = dict.fromkeys(keys)
        for kind in ("user_id", "email_sha256"):
            values = list(dict.fromkeys(value for k, value in keys if k == kind))
            for start in range(0, len(values), CHUNK):
                chunk = values[start : start + CHUNK]
                rows = self._all(
                    "SELECT value, CAST(visitor_id AS BLOB) FROM aliases"
                    f" WHERE kind = ? AND value IN ({', '.join('?' * len(chunk))})",
                    [kind, *chunk],
                )
                for value, raw in rows:
                    try:
                        links[kind, value] = text_of(raw, "alias")
                    except ProfileSourceError as exc:
                        links[kind, value] = exc
        return links

    def _docs(self, table: str, ids: Sequence[str]) -> dict[str, bytes | str | None]:
        """The documents of `ids` in `table` (one of two fixed names, never input), None for
        those it lacks: one query per CHUNK of ids. Read as bytes, as `read_each` takes
        them, so a document stored as text that is not UTF-8 fails its own id only."""
        docs: dict[str, bytes | str | None] = dict.fromkeys(ids)
        unique = list(docs)
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            docs.update(
                self._all(f"SELECT id, CAST(doc AS BLOB) FROM {table} WHERE id IN ({marks})", chunk)
            )
        return docs

    async def ready(self) -> bool:
        try:
            self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    async def aclose(self) -> None:
        self.close()

    # --- inside -------------------------------------------------------------------------

    def _write(self, records: Sequence[Profile], *, replace: bool) -> None:
        """Many records at once: documents, then each visitor's aliases made its own."""
        visitors = list(_last_of_each([r for r in records if isinstance(r, VisitorProfile)]))
        accounts = [stored(r) for r in records if not isinstance(r, VisitorProfile)]
        self._db.executemany(
            "INSERT OR REPLACE INTO accounts (id, doc) VALUES (?, ?)",
            [(a.id, _encoder.encode(a)) for a in accounts],
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO visitors (id, doc) VALUES (?, ?)",
            [(v.id, _encoder.encode(v)) for v in visitors],
        )
        self._db.executemany(
            "DELETE FROM aliases WHERE visitor_id = ?", [(v.id,) for v in visitors]
        )
        if replace:
            self._release(visitors)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            self._db.executemany(
                f"{verb} INTO aliases (kind, value, visitor_id) VALUES (?, ?, ?)",
                [(kind, value, v.id) for v in visitors for kind, value in aliases_of(v)],
            )
        except sqlite3.IntegrityError:
            raise ProfileConflict(
                "a user id or email hash is already linked to another visitor"
            ) from None

    def _merge(self, *, replace: bool) -> None:
        """The staged import into the store, inside the caller's transaction."""
        db = self._db
        if replace:
            moving = db.execute(
                "SELECT a.kind, a.value, a.visitor_id FROM aliases AS a"
                " JOIN temp.staged_aliases AS s USING (kind, value)"
                " WHERE a.visitor_id != s.visitor_id"
            ).fetchall()
            self._strip({(kind, value): owner for kind, value, owner in moving})
        db.execute("DELETE FROM aliases WHERE visitor_id IN (SELECT id FROM temp.staged_visitors)")
        db.execute("INSERT OR REPLACE INTO visitors SELECT id, doc FROM temp.staged_visitors")
        db.execute("INSERT OR REPLACE INTO accounts SELECT id, doc FROM temp.staged_accounts")
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            db.execute(
                f"{verb} INTO aliases SELECT kind, value, visitor_id FROM temp.staged_aliases"
            )
        except sqlite3.IntegrityError:
            raise ProfileConflict(
                "a user id or email hash is already linked to another visitor"
            ) from None

    def _strip(self, moving: dict[AliasKey, str]) -> None:
        """Take moving ids out of the stored profiles of the visitors who held them."""
        losing: dict[str, set[AliasKey]] = {}
        for key, owner in moving.items():
            losing.setdefault(owner, set()).add(key)
        for owner, keys in losing.items():
            doc = self._one("SELECT doc FROM visitors WHERE id = ?", (owner,))
            if doc is not None:
                held = read_back(visitor_decoder, doc, "visitor")
                self._put_doc("visitors", without_aliases(held, keys))

    def _release(self, visitors: Sequence[VisitorProfile]) -> None:
        """Before ids move to `visitors` (an import with --replace), take them out of the
        stored profiles of the visitors who held them, so no profile lists an id it lost."""
        wanted = {key: v.id for v in visitors for key in aliases_of(v)}
        owners = self._owners(list(wanted))
        self._strip({key: owner for key, owner in owners.items() if owner != wanted[key]})

    def _put_visitor(self, visitor: VisitorProfile, *, replace: bool) -> Change:
        old = self._stored_aliases(visitor.id)
        self._write([visitor], replace=replace)
        return Change(visitors=(visitor.id,), aliases=tuple({*old, *aliases_of(visitor)}))

    def _put_doc(self, table: str, profile: Profile) -> None:
        self._db.execute(
            # `table` is one of two fixed names, never input
            f"INSERT OR REPLACE INTO {table} (id, doc) VALUES (?, ?)",
            (profile.id, _encoder.encode(profile)),
        )

    def _stored_aliases(self, visitor_id: str) -> tuple[AliasKey, ...]:
        rows = self._all("SELECT kind, value FROM aliases WHERE visitor_id = ?", [visitor_id])
        return tuple((kind, value) for kind, value in rows)

    def _record(self, change: Change) -> None:
        seq = self._db.execute(
            "INSERT INTO changes (change) VALUES (?)", (_encoder.encode(change),)
        ).lastrowid
        self._db.execute("DELETE FROM changes WHERE seq <= ?", ((seq or 0) - KEEP_CHANGES,))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction; SQLite's failures become ProfileSourceError."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            raise ProfileSourceError("the profile store is busy (an import?); try again") from None
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"writing the profile store failed: {exc}") from None

    def _scalar(self, sql: str) -> int:
        row = self._db.execute(sql).fetchone()
        return int(row[0])

    def _one(self, sql: str, args: tuple[str, ...]) -> bytes | str | None:
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"profile store read failed: {_said(exc)}") from None
        return row[0] if row else None

    def _all(self, sql: str, args: Sequence[object]) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"profile store read failed: {_said(exc)}") from None


def _said(error: sqlite3.Error) -> str:
    """What SQLite said, unless it quotes the data (text that is not UTF-8, read back)."""
    text = str(error)
    return "it holds text that is not UTF-8" if text.startswith("Could not decode") else text


class _Import:
    """One import's batches, staged in temporary tables (`importing`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def write(self, records: Sequence[Profile]) -> None:
        visitors = list(_last_of_each([r for r in records if isinstance(r, VisitorProfile)]))
        accounts = [stored(r) for r in records if not isinstance(r, VisitorProfile)]
        try:
            # one transaction a batch, on the temporary tables only: the store stays unlocked
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO temp.staged_accounts VALUES (?, ?)",
                [(a.id, _encoder.encode(a)) for a in accounts],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO temp.staged_visitors VALUES (?, ?)",
                [(v.id, _encoder.encode(v)) for v in visitors],
            )
            self._db.executemany(
                "DELETE FROM temp.staged_aliases WHERE visitor_id = ?", [(v.id,) for v in visitors]
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO temp.staged_aliases VALUES (?, ?, ?)",
                [(kind, value, v.id) for v in visitors for kind, value in aliases_of(v)],
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise ProfileSourceError(f"import failed: {exc}") from None


def _last_of_each(visitors: Sequence[VisitorProfile]) -> Iterable[VisitorProfile]:
    """One record a visitor, the last given (a file may list one twice), as stored."""
    return {v.id: stored(v) for v in visitors}.values()


def open_source(settings: SqliteSettings, opening: Opening) -> SqliteProfileStore:
    try:
        if settings.seed_samples:
            store = SqliteProfileStore.open_seeded(settings.db, opening.now, opening.schema())
        else:
            store = SqliteProfileStore(settings.db)
    except ProfileSourceError as exc:
        raise ProfileSourceError(f"DECIDER_PROFILE_DB: {exc}") from None
    return store


DRIVER = Driver("sqlite", SqliteSettings, open_source, shared=True)
