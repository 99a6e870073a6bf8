"""Reading exposure and outcome files fast enough for tens of millions of lines.

Lines are decoded a chunk at a time: a chunk of whole lines becomes one JSON array
(newlines turned into commas), which msgspec decodes in one call with one decoder per record
type. Only when a chunk does not decode is it read again line by line, to name the file and
line at fault (a blank line takes that slower path too, and is skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import msgspec

from decider.errors import RecordFileError, redact
from decider.measure.records import Outcome

CHUNK_BYTES = 1 << 24
T = TypeVar("T")
_COMMAS = bytes.maketrans(b"\n", b",")
Instant = Annotated[datetime, msgspec.Meta(tz=True)]  # naive times cannot be ordered with others


class ExposureView(msgspec.Struct, frozen=True, gc=False, tag="exposure"):
    """The fields of an Exposure (decider.measure.records) the report reads; the others are
    skipped unread, and these objects stay out of the garbage collector's sight: decoding is
    most of the report's time."""

    at: Instant
    decision_id: str
    placement: str
    variant: str
    segment: str | None = None
    experiment: str | None = None
    arm: str | None = None
    unit_kind: str | None = None
    unit: str | None = None
    context: dict[str, str] = {}


class OutcomeView(Outcome, frozen=True, tag="outcome"):
    """An Outcome whose time must carry its offset."""

    at: Instant


def record_files(paths: Iterable[Path], what: str) -> list[Path]:
    """The files to read: each file given, and a directory's `*.jsonl*` files (rotated ones
    too) by name, hidden ones left out."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if ".jsonl" in p.name and not p.name.startswith(".")
            )
            if not found:
                raise RecordFileError(f"{path}: no {what} files (*.jsonl) in this directory")
            unreadable = [p for p in found if not p.is_file()]  # its records would drop out
            if unreadable:
                raise RecordFileError(f"{unreadable[0]}: not a regular file of {what} records")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise RecordFileError(f"{path}: no such file or directory (of {what} records)")
    return files


def read_records(files: Sequence[Path], kind: type[T]) -> Iterator[list[T]]:
    """The records of `files`, a chunk at a time; a RecordFileError names the first bad line."""
    many = msgspec.json.Decoder(list[kind])  # type: ignore[valid-type]
    one = msgspec.json.Decoder(kind)
    for path in files:
        try:
            yield from _chunks(path, many, one)
        except OSError as exc:
            raise RecordFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _chunks(
    path: Path, many: msgspec.json.Decoder[list[T]], one: msgspec.json.Decoder[T]
) -> Iterator[list[T]]:
    # one buffer, read into again and again: "[" then whole lines, and the start of the
    # next; its copy with commas for newlines, and "]" for the last, is one JSON array.
    # (Fresh chunks, sliced and joined, cost more than decoding them.)
    buffer = bytearray(1 + CHUNK_BYTES)
    buffer[0] = ord("[")
    filled, line = 1, 1  # bytes in the buffer; the number of the first line in it
    with path.open("rb") as file:
        while True:
            if filled == len(buffer):  # a line longer than the buffer
                buffer.extend(bytes(len(buffer)))
            with memoryview(buffer) as view:
                read = file.readinto(view[filled:])
            if not read:
                break
            start, filled = filled, filled + read
            cut = buffer.rfind(b"\n", start, filled)  # the lines before held no newline
            if cut < 0:
                continue
            array = buffer.translate(_COMMAS)
            array[cut] = ord("]")
            lines = buffer.count(b"\n", 1, cut) + 1
            try:
                with memoryview(array) as view:
                    chunk = many.decode(view[: cut + 1])
            except (msgspec.DecodeError, UnicodeDecodeError):
                chunk = []
            if len(chunk) != lines:  # a bad line, or one holding two records (`{..},{..}`)
                chunk = _one_by_one(path, bytes(buffer[1:cut]), line, one)
            yield chunk
            line += lines
            buffer[1 : filled - cut] = buffer[cut + 1 : filled]
            filled -= cut
    rest = bytes(buffer[1:filled])
    if rest.strip():  # a last line without its newline: whole, or cut short by a writer
        try:
            yield [one.decode(rest)]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise RecordFileError(
                f"{path}:{line}: the last line is not a whole record (cut short while it was "
                f"written?): {_said(exc)}"
            ) from None


def _one_by_one(path: Path, lines: bytes, first: int, one: msgspec.json.Decoder[T]) -> list[T]:
    records = []
    for number, text in enumerate(lines.split(b"\n"), start=first):
        if not text.strip():
            continue
        try:
            records.append(one.decode(text))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise RecordFileError(f"{path}:{number}: not a record: {_said(exc)}") from None
    return records


def _said(exc: msgspec.DecodeError | UnicodeDecodeError) -> str:
    # a line may hold anything, an email address too: never echo one
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {exc.start} of the line)"
    return redact(str(exc))
