"""Importing a profiles file into a store: streamed, checked whole before anything is written,
then written in batches inside one all-or-nothing import.

Memory stays flat however large the file: lines are read one at a time. The check pass
decodes and normalizes each line, writes the records it makes to a scratch file, and keeps
the user ids and email hashes the file claims in a scratch SQLite file (not in memory), to
find two visitors claiming one of them, or a claim on one another visitor in the store
holds. The write pass reads the scratch file back, already normalized.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from decider.errors import ImportFileError
from decider.profile import VisitorProfile, account_decoder, visitor_decoder
from decider.profiles.jsonl import Profile, bounded_lines, read_lines
from decider.profiles.sources.base import AliasKey, ProfileStore
from decider.traits import TraitSchema

# (phase, bytes read, bytes in the file); called every PROGRESS_EVERY lines and at the end
Progress = Callable[[str, int, int], None]
PROGRESS_EVERY = 20_000
MAX_SHOWN = 50  # problems listed; the rest are counted
Problem = tuple[int, str]  # a line number, and what is wrong there
_encoder = msgspec.json.Encoder()


class ImportReport(msgspec.Struct, frozen=True):
    visitors: int
    accounts: int
    moved: int = 0  # aliases taken from another visitor (--replace)


async def import_file(
    path: Path,
    store: ProfileStore,
    *,
    schema: TraitSchema | None,
    replace: bool = False,
    progress: Progress | None = None,
    batch: int = 2_000,
) -> ImportReport:
    """Raises ImportFileError with every bad line (and nothing is written), OSError if the
    file cannot be read, ProfileSourceError if the store fails (and nothing is written)."""
    name = str(path)
    # scratch space with no name: nothing of it outlives the process, however it ends
    with tempfile.TemporaryFile(prefix="decider-import-") as checked:
        claims = _Claims()
        try:
            problems, counts = _check(path, checked, schema, claims, progress)
            problems += claims.doubles()
            collisions = await claims.collisions(store)
        finally:
            claims.close()
        if not replace:
            problems += collisions
        if problems:
            shown = [f"{name}:{line}: {what}" for line, what in sorted(problems)[:MAX_SHOWN]]
            if len(problems) > MAX_SHOWN:
                shown.append(f"... and {len(problems) - MAX_SHOWN} more")
            raise ImportFileError(shown, len(problems))
        async with store.importing(replace=replace) as session:
            pending: list[Profile] = []
            for record in _checked(checked, progress):
                pending.append(record)
                if len(pending) >= batch:
                    await session.write(pending)
                    pending = []
            if pending:
                await session.write(pending)
    return ImportReport(counts["visitor"], counts["account"], len(collisions))


def _check(
    path: Path,
    checked: IO[bytes],
    schema: TraitSchema | None,
    claims: _Claims,
    progress: Progress | None,
) -> tuple[list[Problem], dict[str, int]]:
    """Every problem of the file; its records, normalized, written to `checked`."""
    problems: list[Problem] = []
    counts = {"visitor": 0, "account": 0}
    total = path.stat().st_size
    with path.open("rb") as file:
        for line in read_lines(bounded_lines(file), schema):
            if progress is not None and line.number % PROGRESS_EVERY == 0:
                progress("checking", file.tell(), total)
            record = line.record
            if record is None:
                problems.append((line.number, str(line.problem)))
            elif isinstance(record, VisitorProfile):
                counts["visitor"] += 1
                claims.add(record, line.number)
                checked.write(b"v" + _encoder.encode(record) + b"\n")
            else:
                counts["account"] += 1
                checked.write(b"a" + _encoder.encode(record) + b"\n")
    if progress is not None:
        progress("checking", total, total)
    claims.flush()
    return problems, counts


def _checked(checked: IO[bytes], progress: Progress | None) -> Iterator[Profile]:
    """The records the check pass wrote, read back."""
    total = checked.tell()
    checked.seek(0)
    for number, line in enumerate(checked, start=1):
        if progress is not None and number % PROGRESS_EVERY == 0:
            progress("importing", checked.tell(), total)
        if line[:1] == b"v":
            yield visitor_decoder.decode(line[1:])
        else:
            yield account_decoder.decode(line[1:])
    if progress is not None:
        progress("importing", total, total)


class _Claims:
    """The user ids and email hashes a file claims, with the visitor and line claiming each,
    in a scratch SQLite file."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)  # a file SQLite unlinks at once
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE claims (kind TEXT, value TEXT, visitor TEXT, line INTEGER);"
            "BEGIN;"
        )
        self._pending: list[tuple[str, str, str, int]] = []

    def add(self, visitor: VisitorProfile, line: int) -> None:
        self._pending += [("user_id", u, visitor.id, line) for u in visitor.user_ids]
        self._pending += [("email_sha256", e, visitor.id, line) for e in visitor.email_sha256]
        if len(self._pending) >= 10_000:
            self.flush()

    def flush(self) -> None:
        self._db.executemany("INSERT INTO claims VALUES (?, ?, ?, ?)", self._pending)
        self._pending = []

    def doubles(self) -> list[Problem]:
        """Claims made by two visitors of the file: each line after the first."""
        self._db.execute("COMMIT")
        self._db.execute("CREATE INDEX by_alias ON claims (kind, value, visitor)")
        rows = self._db.execute(
            "SELECT c.kind, c.line, first.line FROM claims AS c JOIN ("
            "  SELECT kind, value, min(line) AS line FROM claims GROUP BY kind, value"
            "  HAVING count(DISTINCT visitor) > 1"
            ") AS first USING (kind, value) WHERE c.line > first.line"
        )
        return [
            (line, f"{kind} is claimed by another visitor on line {first}")
            for kind, line, first in rows
        ]

    async def collisions(self, store: ProfileStore) -> list[Problem]:
        """Claims on a user id or email hash the store links to another visitor."""
        found: list[Problem] = []
        rows = self._db.execute(
            "SELECT kind, value, visitor, min(line) FROM claims GROUP BY kind, value, visitor"
        )
        while chunk := rows.fetchmany(400):
            keys: list[AliasKey] = [(kind, value) for kind, value, _, _ in chunk]
            owners = await store.alias_owners(keys)
            for kind, value, visitor, line in chunk:
                owner = owners.get((kind, value))
                if owner is not None and owner != visitor:
                    found.append(
                        (
                            line,
                            f"{kind} is linked to another visitor in the store "
                            "(--replace moves it)",
                        )
                    )
        return found

    def close(self) -> None:
        self._db.close()
