"""The embedded profile store (DECIDER_PROFILE_SOURCE=sqlite, the default): one SQLite file,
filled from JSONL files, read by point lookups.

Lookups run inline on the event loop: an indexed SQLite read takes tens of microseconds,
less than a hop to a worker thread, and the cache in front absorbs repeats. The database is
in WAL mode, so a running `profiles import` never blocks those reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType

import msgspec

from decider.errors import ProfileSourceError
from decider.profile import (
    AccountProfile,
    AliasKind,
    VisitorProfile,
    account_decoder,
    stored,
    visitor_decoder,
)
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.base import Driver, Opening, SourceSettings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visitors (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (
    kind TEXT NOT NULL, value TEXT NOT NULL, visitor_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
"""

_encoder = msgspec.json.Encoder()


class SqliteSettings(SourceSettings, frozen=True, kw_only=True):
    """DECIDER_PROFILE_DB (the file) and DECIDER_PROFILE_SEED_SAMPLES (seed an empty store
    with the bundled sample profiles; set false in production)."""

    db: Path = Path("decider.db")
    seed_samples: bool = True


class SqliteProfileStore:
    """A ProfileSource over one SQLite file, and the importer that fills it."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=1.0
            )
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"cannot open profile store {self.path}: {exc}") from None
        try:
            # readers never wait for a writer in WAL mode; writers wait up to `timeout`
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise ProfileSourceError(f"cannot open profile store {self.path}: {exc}") from None

    @classmethod
    def open_seeded(cls, path: Path | str, now: datetime) -> SqliteProfileStore:
        """Open the store; a new, empty one gets the bundled sample profiles."""
        store = cls(path)
        try:
            if store.is_empty():
                store.import_records(sample_profiles(now))
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
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM visitors) + (SELECT count(*) FROM accounts)"
        ).fetchone()
        return bool(row[0] == 0)

    def import_records(self, records: Iterable[VisitorProfile | AccountProfile]) -> tuple[int, int]:
        """Upsert records in one transaction; returns (visitors, accounts) written."""
        visitors = accounts = 0
        try:
            with self._transaction():
                for record in records:
                    if isinstance(record, VisitorProfile):
                        self._put_visitor(record)
                        visitors += 1
                    else:
                        self._put("accounts", record.id, stored(record))
                        accounts += 1
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"import into {self.path} failed: {exc}") from None
        return visitors, accounts

    def _put_visitor(self, record: VisitorProfile) -> None:
        profile = stored(record)
        self._put("visitors", profile.id, profile)
        self._db.execute("DELETE FROM aliases WHERE visitor_id = ?", (profile.id,))
        aliases = [("user_id", u) for u in profile.user_ids]
        aliases += [("email_sha256", e) for e in profile.email_sha256]
        self._db.executemany(
            "INSERT OR REPLACE INTO aliases (kind, value, visitor_id) VALUES (?, ?, ?)",
            [(kind, value, profile.id) for kind, value in aliases],
        )

    def _put(self, table: str, key: str, value: VisitorProfile | AccountProfile) -> None:
        self._db.execute(
            # `table` is one of two fixed names, never input
            f"INSERT OR REPLACE INTO {table} (id, doc) VALUES (?, ?)",
            (key, _encoder.encode(value)),
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def visitor(self, visitor_id: str) -> VisitorProfile | None:
        doc = self._one("SELECT doc FROM visitors WHERE id = ?", (visitor_id,))
        return visitor_decoder.decode(doc) if doc is not None else None

    async def account(self, account_id: str) -> AccountProfile | None:
        doc = self._one("SELECT doc FROM accounts WHERE id = ?", (account_id,))
        return account_decoder.decode(doc) if doc is not None else None

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = self._one(
            "SELECT visitor_id FROM aliases WHERE kind = ? AND value = ?", (kind, value)
        )
        return str(found) if found is not None else None

    async def ready(self) -> bool:
        try:
            self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    async def aclose(self) -> None:
        self.close()

    def _one(self, sql: str, args: tuple[str, ...]) -> bytes | str | None:
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"profile store read failed: {exc}") from None
        return row[0] if row else None


def open_source(settings: SqliteSettings, opening: Opening) -> SqliteProfileStore:
    try:
        if settings.seed_samples:
            return SqliteProfileStore.open_seeded(settings.db, opening.now)
        return SqliteProfileStore(settings.db)
    except ProfileSourceError as exc:
        raise ProfileSourceError(f"DECIDER_PROFILE_DB: {exc}") from None


DRIVER = Driver("sqlite", SqliteSettings, open_source)
