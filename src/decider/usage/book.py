"""The usage file (DECIDER_USAGE_DB): one SQLite table with a row per segment id ever served,
its wins, last match and first sighting, which every process serving the rules adds to.

A process adds what it counted since its last write (deltas): wins are summed, the latest
match and the earliest sighting kept, each write one short transaction. So any number of
workers and `decider serve` processes can share the file: it is in WAL mode (readers never
wait), and a writer waits up to BUSY_TIMEOUT_S for another's transaction. A segment removed
from the rules keeps its row. Times are ISO 8601 UTC text of one width, so SQLite's min()
and max() order them as times.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from decider.profiles.sources.sqlite import use_wal

BUSY_TIMEOUT_S = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS segment_usage (
    segment TEXT PRIMARY KEY,
    wins INTEGER NOT NULL,
    last_matched TEXT,
    first_seen TEXT NOT NULL
) WITHOUT ROWID
"""
# SQLite's max() of two values is NULL if either is: a NULL last match is no match yet
_ADD = """
INSERT INTO segment_usage (segment, wins, last_matched, first_seen) VALUES (?, ?, ?, ?)
ON CONFLICT (segment) DO UPDATE SET
    wins = wins + excluded.wins,
    last_matched = max(coalesce(last_matched, excluded.last_matched),
                       coalesce(excluded.last_matched, last_matched)),
    first_seen = min(first_seen, excluded.first_seen)
"""
_READ = "SELECT segment, wins, last_matched, first_seen FROM segment_usage"


class Usage(msgspec.Struct, frozen=True):
    """A segment's usage over every run: wins, the last match (None: never), and when a
    ruleset holding it was first served."""

    wins: int
    last_matched: datetime | None
    first_seen: datetime


class Added(msgspec.Struct, frozen=True):
    """What a process adds to a segment's row: wins since its last write, its last match,
    and when it first served the segment."""

    segment: str
    wins: int
    last_matched: datetime | None
    first_seen: datetime

    def merged(self, later: Added) -> Added:
        """This and `later`, as one write."""
        return Added(
            self.segment,
            self.wins + later.wins,
            max((t for t in (self.last_matched, later.last_matched) if t), default=None),
            min(self.first_seen, later.first_seen),
        )


class UsageError(Exception):
    """The file could not be opened, read or written; the message says which and why."""


class UsageBook:
    """One process's connection to the usage file, opened at first use (the directory made)
    and again after a failure; called from worker threads, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def add(self, rows: Iterable[Added]) -> None:
        """Add `rows` in one transaction. Raises UsageError."""
        values = [(r.segment, r.wins, _text(r.last_matched), _text(r.first_seen)) for r in rows]
        with self._lock:
            try:
                db = self._open()
                db.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade to deadlock on
                try:
                    db.executemany(_ADD, values)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                self._drop()
                raise UsageError(f"cannot write {self.path}: {_reason(exc)}") from None

    def read(self) -> dict[str, Usage]:
        """Every segment's usage, by id. Raises UsageError."""
        with self._lock:
            try:
                return {
                    segment: Usage(wins, _time(last) if last else None, _time(first))
                    for segment, wins, last, first in self._open().execute(_READ)
                }
            except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
                self._drop()
                raise UsageError(f"cannot read {self.path}: {_reason(exc)}") from None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                use_wal(db)
                db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
                db.execute(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _drop(self) -> None:
        """Close the connection, if open: the next call opens the file afresh."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()


def _text(at: datetime | None) -> str | None:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at else None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        return str(exc) or type(exc).__name__
    return f"a value it holds is not a time or a count ({type(exc).__name__})"
