"""`decider outcomes import`: outcome events from a file (a warehouse export, say), one JSON
event a line as POST /v1/outcomes takes them, stored as the service stores them.

Every line is checked before anything is stored: a file with a bad line stores nothing and
says `line N: field: problem` for each. Then events by identity are resolved against the
profile store, all of them before anything is written (a store that fails stops the import
with nothing written), and stored with whom they name only under the channel's consent (the
rules' policy, as for decisions); the records are written to DECIDER_OUTCOME_DIR in files of
their own. An event id given twice in the file is stored once.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO

import msgspec

from decider.measure.outcomes import (
    Consent,
    OutcomeEvent,
    RecentIds,
    known,
    measured,
    outcome_of,
    parse_event,
    resolve_all,
)
from decider.measure.records import event_key, record_encoder
from decider.measure.sink import JsonlFiles, WriteFailed
from decider.measure.units import Units
from decider.profiles.jsonl import MAX_LINE, TOO_LONG, bounded_lines
from decider.profiles.resolver import Resolver
from decider.profiles.sources.base import ProfileStore
from decider.settings import Settings

MAX_SHOWN = 50  # problems listed; the rest are counted
CHUNK = 1000  # events resolved and written at once
REMEMBERED = 1_000_000  # event ids remembered, for duplicates in the file
BUDGET_S = 5.0  # an import waits for the store longer than a decision does


class ImportFailed(Exception):
    """The import failed; `lines` say why (each `line N: field: problem`, for a bad line).
    `stored_nothing`: whether nothing was stored (all but a failing write)."""

    def __init__(self, lines: list[str], *, stored_nothing: bool = True) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.stored_nothing = stored_nothing


class Imported(msgspec.Struct, frozen=True):
    outcomes: int  # stored
    duplicates: int  # event ids given again in the file, skipped
    by_identity: int
    nobody: int  # by identity, naming nobody known: stored with neither account nor visitor
    unconsented: int  # by identity, without the channel's consent: stored with neither


def import_outcomes(
    file: BinaryIO,
    *,
    settings: Settings,
    units: Units,
    store: Callable[[], ProfileStore],
    consent: Callable[[], Consent],
    now: datetime,
) -> Imported:
    """Check, resolve and store the events of `file`. `store` opens the profile store and
    `consent` loads the rules' consent check, each asked only if an event is by identity.
    Raises ImportFailed, or OSError for a file that cannot be read."""
    with tempfile.TemporaryFile(prefix="decider-outcomes-") as checked:
        problems, duplicates, by_identity = _check(
            file, checked, now, settings.measure_retention_days
        )
        if problems:
            shown = problems[:MAX_SHOWN]
            if len(problems) > MAX_SHOWN:
                shown.append(f"... and {len(problems) - MAX_SHOWN} more")
            raise ImportFailed(shown)
        with tempfile.TemporaryFile(prefix="decider-outcomes-") as ready:
            opening = store if by_identity else None
            consented = consent() if by_identity else None
            stored, nobody, unconsented = asyncio.run(
                _resolve(
                    checked,
                    ready,
                    units=units,
                    store=opening,
                    consented=consented,
                    settings=settings,
                    now=now,
                )
            )
            _write(
                ready,
                JsonlFiles(
                    settings.outcome_path,
                    "outcomes",
                    settings.exposure_max_bytes,
                    settings.measure_retention_days,
                ),
            )
    return Imported(stored, duplicates, by_identity, nobody, unconsented)


def _check(
    file: BinaryIO, checked: IO[bytes], now: datetime, retention_days: int
) -> tuple[list[str], int, int]:
    """Every problem of the file; its new events, as given, written to `checked`, one a
    line; how many were duplicates, and how many are by identity. An event older than
    `retention_days` is a problem (measure.outcomes.problem_of)."""
    problems: list[str] = []
    seen = RecentIds(REMEMBERED)
    duplicates = by_identity = 0
    for number, raw in enumerate(bounded_lines(file), start=1):
        if raw is TOO_LONG:
            problems.append(f"line {number}: longer than {MAX_LINE} bytes; is this JSONL?")
            continue
        line = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        event = parse_event(line, now, retention_days=retention_days)
        if not isinstance(event, OutcomeEvent):
            field = "" if event.field == "body" else f"{event.field}: "
            problems.append(f"line {number}: {field}{event.detail}")
        elif (key := event_key(event.name, event.event_id)) in seen:
            duplicates += 1
        elif not problems:  # once a line is bad, only problems are looked for
            seen.add(key)
            by_identity += event.identity is not None
            checked.write(line.rstrip(b"\r\n") + b"\n")
    return problems, duplicates, by_identity


async def _resolve(
    checked: IO[bytes],
    ready: IO[bytes],
    *,
    units: Units,
    store: Callable[[], ProfileStore] | None,
    consented: Consent | None,
    settings: Settings,
    now: datetime,
) -> tuple[int, int, int]:
    """The records of the checked events, written to `ready`: how many, how many by
    identity named nobody known, and how many were not measured by it without consent."""
    source = store() if store is not None else None
    try:
        resolver = Resolver(source, budget=BUDGET_S, cache=settings.cache) if source else None
        count = nobody = unconsented = 0
        for events in _chunks(checked):
            resolutions = await resolve_all(resolver, events) if resolver else [None] * len(events)
            records = []
            for event, resolution in zip(events, resolutions, strict=True):
                if resolution is not None and resolution.status == "unavailable":
                    raise ImportFailed(
                        [
                            f"the profile store failed resolving event {event.event_id}; "
                            "run the import again"
                        ]
                    )
                refused = consented.refused(event) if consented else None
                if refused is not None:
                    where = f"event {event.event_id}: {refused.field}"
                    raise ImportFailed([f"{where}: {refused.detail}"])
                whose = resolution
                if resolution is not None and consented is not None:
                    whose = measured(event, resolution, consented, gpc=False)
                nobody += resolution is not None and not known(resolution)
                unconsented += whose is not resolution
                records.append(outcome_of(event, now, units, whose))
            ready.write(record_encoder.encode_lines(records))
            count += len(events)
        return count, nobody, unconsented
    finally:
        if source is not None:
            await source.aclose()


def _chunks(checked: IO[bytes]) -> Iterator[list[OutcomeEvent]]:
    checked.seek(0)
    decoder = msgspec.json.Decoder(OutcomeEvent)
    chunk: list[OutcomeEvent] = []
    for line in checked:
        chunk.append(decoder.decode(line))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write(ready: IO[bytes], files: JsonlFiles) -> None:
    ready.seek(0)
    try:
        while lines := ready.readlines(1024 * 1024):
            files.write(b"".join(lines))
    except WriteFailed as exc:
        raise ImportFailed(
            [
                f"cannot write to {files.directory} ({exc.reason}): some outcomes may be stored; "
                "the report counts an event id once, so importing the file again is safe"
            ],
            stored_nothing=False,
        ) from None
    finally:
        files.close()


def open_file(name: str) -> BinaryIO:
    """The file `name` names; `-` is standard input."""
    return sys.stdin.buffer if name == "-" else Path(name).open("rb")
