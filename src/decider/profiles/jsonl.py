"""Profiles as JSONL, one record a line: the import format, and the bundled sample profiles.

Each line is a visitor or an account profile with a `"kind"` tag. A line is decoded, then
normalized against the profile schema (decider.traits): what comes out is exactly what a
store keeps. A bad line is a problem placed at its line and field; raw emails are refused
(`email` is not a field, and no value may look like one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import BinaryIO

import msgspec

from decider.errors import ImportFileError, in_words, redact
from decider.model import decode_problem
from decider.profile import AccountProfile, VisitorProfile, normalized
from decider.traits import TraitError, TraitSchema


class VisitorRecord(VisitorProfile, frozen=True, tag_field="kind", tag="visitor"):
    """A visitor line in a profiles JSONL file."""


class AccountRecord(AccountProfile, frozen=True, tag_field="kind", tag="account"):
    """An account line in a profiles JSONL file."""


ImportRecord = VisitorRecord | AccountRecord
Profile = VisitorProfile | AccountProfile
SAMPLES = "samples/profiles.jsonl"

_record_decoder = msgspec.json.Decoder(ImportRecord)
_RELATIVE = re.compile(rb"\{\{now-(\d+)([dh])\}\}")


class Line(msgspec.Struct, frozen=True):
    """One line of a profiles file: its record, or why it has none."""

    number: int
    record: Profile | None = None
    problem: str | None = None


MAX_LINE = 1024 * 1024  # bytes a record may take; a longer line is a problem, never read whole
TOO_LONG = b"\x00(line too long)"  # what bounded_lines yields for one, by identity


def bounded_lines(file: BinaryIO, limit: int = MAX_LINE) -> Iterator[bytes]:
    """The lines of a binary file, none held longer than `limit` bytes: a longer one (or a
    file with no newline at all) is skipped in chunks and stands as TOO_LONG."""
    while line := file.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while (rest := file.readline(64 * 1024)) and not rest.endswith(b"\n"):
            pass
        yield TOO_LONG


def read_lines(lines: Iterable[bytes], schema: TraitSchema | None) -> Iterator[Line]:
    """Every record or problem of a JSONL stream, in order; blank lines and `#` comments
    are skipped but counted. Streams: nothing is held but the line at hand."""
    for number, raw in enumerate(lines, start=1):
        if raw is TOO_LONG:
            yield Line(number, problem=f"longer than {MAX_LINE} bytes; is this JSONL?")
            continue
        # a byte-order mark, as some editors write, is no part of the first record
        line = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        try:
            record = normalized(_record_decoder.decode(line), schema)
        except msgspec.DecodeError as exc:
            yield Line(number, problem=in_words(redact(decode_problem(exc, line))))
        except UnicodeDecodeError:
            yield Line(number, problem="not valid UTF-8")
        except RecursionError:
            yield Line(number, problem="nested too deeply")
        except TraitError as exc:
            yield Line(number, problem=str(exc))
        else:
            yield Line(number, record)


def parse_profiles(data: bytes, name: str, schema: TraitSchema | None = None) -> list[Profile]:
    """A whole (small) JSONL file's records; raises ImportFileError with every bad line."""
    records: list[Profile] = []
    problems: list[str] = []
    for line in read_lines(data.splitlines(), schema):
        if line.record is None:
            problems.append(f"{name}:{line.number}: {line.problem}")
        else:
            records.append(line.record)
    if problems:
        raise ImportFileError(problems)
    return records


def sample_lines(now: datetime) -> bytes:
    """The bundled sample profiles as JSONL (some for every sample segment), their
    `{{now-3d}}` placeholders made timestamps relative to `now`, so recency windows hold."""
    text = resources.files("decider").joinpath(SAMPLES).read_bytes()

    def stamp(match: re.Match[bytes]) -> bytes:
        unit = "days" if match[2] == b"d" else "hours"
        at = now - timedelta(**{unit: int(match[1])})
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()

    return _RELATIVE.sub(stamp, text)


def sample_profiles(now: datetime, schema: TraitSchema | None = None) -> list[Profile]:
    """The bundled sample profiles, dated relative to `now` (sample_lines), parsed."""
    return parse_profiles(sample_lines(now), SAMPLES, schema)
