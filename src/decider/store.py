"""The embedded profile store: SQLite, filled from JSONL files, read by point lookups.

Lookups run inline on the event loop: an indexed SQLite read takes tens of microseconds,
less than a hop to a worker thread, and the cache in front absorbs repeats. The database is
in WAL mode, so a running `profiles import` never blocks those reads.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TypeVar

import msgspec

from decider.errors import ImportFileError, ProfileSourceError
from decider.profile import (
    AccountProfile,
    AccountRecord,
    ImportRecord,
    VisitorProfile,
    VisitorRecord,
    account_decoder,
    traits_problem,
    visitor_decoder,
)
from decider.sources import AliasKind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visitors (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (
    kind TEXT NOT NULL, value TEXT NOT NULL, visitor_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
"""

_record_decoder = msgspec.json.Decoder(ImportRecord)
_encoder = msgspec.json.Encoder()
P = TypeVar("P", VisitorProfile, AccountProfile)


_RELATIVE = re.compile(rb"\{\{now-(\d+)([dh])\}\}")


def sample_profiles(now: datetime) -> bytes:
    """The bundled sample profiles (some for every sample segment), with their `{{now-3d}}`
    placeholders made timestamps relative to `now`, so recency windows hold out of the box."""
    text = resources.files("decider").joinpath("samples/profiles.jsonl").read_bytes()

    def stamp(match: re.Match[bytes]) -> bytes:
        unit = "days" if match[2] == b"d" else "hours"
        at = now - timedelta(**{unit: int(match[1])})
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()

    return _RELATIVE.sub(stamp, text)


def parse_profiles(data: bytes, name: str) -> list[ImportRecord]:
    """Decode a JSONL file, reporting every bad line (line number and field) at once."""
    records: list[ImportRecord] = []
    problems: list[str] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        try:
            record = _record_decoder.decode(line)
        except msgspec.DecodeError as exc:
            problems.append(f"{name}:{number}: {exc}")
            continue
        problem = traits_problem(record)
        if problem:
            problems.append(f"{name}:{number}: {problem}")
        else:
            records.append(record)
    if problems:
        raise ImportFileError(problems)
    return records


class SqliteProfileStore:
    """A ProfileSource over one SQLite file, and the importer that fills it."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=1.0
            )
            # readers never wait for a writer in WAL mode; writers wait up to `timeout`
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"cannot open profile store {self.path}: {exc}") from None

    @classmethod
    def open_seeded(cls, path: Path | str, now: datetime) -> SqliteProfileStore:
        """Open the store; a new, empty one gets the bundled sample profiles."""
        store = cls(path)
        if store.is_empty():
            store.import_records(parse_profiles(sample_profiles(now), "samples/profiles.jsonl"))
        return store

    def is_empty(self) -> bool:
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM visitors) + (SELECT count(*) FROM accounts)"
        ).fetchone()
        return bool(row[0] == 0)

    def import_records(self, records: Iterable[ImportRecord]) -> tuple[int, int]:
        """Upsert records in one transaction; returns (visitors, accounts) written."""
        visitors = accounts = 0
        try:
            with self._transaction():
                for record in records:
                    if isinstance(record, VisitorRecord):
                        self._put_visitor(record)
                        visitors += 1
                    elif isinstance(record, AccountRecord):
                        self._put("accounts", record.id, _plain(AccountProfile, record))
                        accounts += 1
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"import into {self.path} failed: {exc}") from None
        return visitors, accounts

    def _put_visitor(self, record: VisitorRecord) -> None:
        profile = _plain(VisitorProfile, record)
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
        self._db.close()

    def _one(self, sql: str, args: tuple[str, ...]) -> bytes | str | None:
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise ProfileSourceError(f"profile store read failed: {exc}") from None
        return row[0] if row else None


def _plain(kind: type[P], record: ImportRecord) -> P:
    """The stored profile of an import record (the record minus its `kind` tag)."""
    return kind(**msgspec.structs.asdict(record))
