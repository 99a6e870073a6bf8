"""Profiles as JSONL, one record a line: the import format, and the bundled sample profiles.

Each line is a visitor or an account profile with a `"kind"` tag. Every bad line is reported
with its number and field, all at once; raw emails are refused (`email` is not a field).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from importlib import resources

import msgspec

from decider.errors import ImportFileError
from decider.profile import AccountProfile, VisitorProfile, traits_problem


class VisitorRecord(VisitorProfile, frozen=True, tag_field="kind", tag="visitor"):
    """A visitor line in a profiles JSONL file."""


class AccountRecord(AccountProfile, frozen=True, tag_field="kind", tag="account"):
    """An account line in a profiles JSONL file."""


ImportRecord = VisitorRecord | AccountRecord
SAMPLES = "samples/profiles.jsonl"

_record_decoder = msgspec.json.Decoder(ImportRecord)
_RELATIVE = re.compile(rb"\{\{now-(\d+)([dh])\}\}")


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
        except UnicodeDecodeError:
            problems.append(f"{name}:{number}: not valid UTF-8")
            continue
        problem = traits_problem(record)
        if problem:
            problems.append(f"{name}:{number}: {problem}")
        else:
            records.append(record)
    if problems:
        raise ImportFileError(problems)
    return records


def sample_profiles(now: datetime) -> list[ImportRecord]:
    """The bundled sample profiles (some for every sample segment), with their `{{now-3d}}`
    placeholders made timestamps relative to `now`, so recency windows hold out of the box."""
    text = resources.files("decider").joinpath(SAMPLES).read_bytes()

    def stamp(match: re.Match[bytes]) -> bytes:
        unit = "days" if match[2] == b"d" else "hours"
        at = now - timedelta(**{unit: int(match[1])})
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()

    return parse_profiles(_RELATIVE.sub(stamp, text), SAMPLES)
