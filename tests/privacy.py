"""What must never reach a log: the people the tests decide about. Every identifier of the
sample profiles and of the example import (visitor, user and account ids, email hashes), the
sample addresses, and the ids the tests and the README make up."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

from decider.profile import VisitorProfile
from decider.profiles.jsonl import sample_profiles

ROOT = Path(__file__).resolve().parent.parent

# ids the tests and the README invent for people the store does not know
MADE_UP = ("anon-cookie-123", "anon-1", "v-anon-77", "u-new", "u-1", "v-1", "acc-1")
ADDRESSES = ("ada@northwind.example", "max@globex.example", "ada@example.com")


def _identifiers() -> frozenset[str]:
    found: set[str] = set(MADE_UP)
    for address in ADDRESSES:
        found |= {address, hashlib.sha256(address.encode()).hexdigest()}
    examples = (ROOT / "examples" / "profiles.jsonl").read_text()
    found |= set(re.findall(r'"((?:v|u|acc)-[a-z0-9-]+)"', examples))
    found |= set(re.findall(r'"([0-9a-f]{64})"', examples))
    for profile in sample_profiles(datetime.now(UTC)):
        found.add(profile.id)
        if isinstance(profile, VisitorProfile):
            found |= set(profile.user_ids) | set(profile.email_sha256)
            if profile.account_id:
                found.add(profile.account_id)
    return frozenset(found)


IDENTIFIERS = _identifiers()
_ANY = re.compile("|".join(re.escape(i) for i in sorted(IDENTIFIERS, key=len, reverse=True)))


def leaks(text: str) -> list[str]:
    """The lines of `text` that hold an identifier of a test person, each with it."""
    return [f"{m[0]!r} in: {line}" for line in text.splitlines() if (m := _ANY.search(line))]
