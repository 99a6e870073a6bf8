"""Who may call, and what for: API keys with scopes, kept only as SHA-256 hashes.

A key is a random secret the caller sends as `Authorization: Bearer <key>` or
`X-API-Key: <key>`; Decider keeps its SHA-256 and the scopes it grants. Keys are long random
strings, so one fast hash is enough (a slow password hash guards guessable secrets), and
every stored hash is compared in constant time, so answers take as long whichever key is
tried.

Keys come from DECIDER_API_KEYS (`name:scope+scope:sha256, ...`) and/or a YAML file named
by DECIDER_API_KEYS_FILE (`keys: [{name, scopes, sha256}]`); `decider keys new` makes one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

import msgspec

from decider.described import Described


class Scope(Described):
    """What a key may do; `meaning` says it in one line (the README's table is checked)."""

    DECIDE = (
        "decide",
        "POST /v1/decide and OFREP's evaluations: the decision and stable reason codes, "
        "nothing more",
    )
    EXPLAIN = (
        "explain",
        "reasons that name ids, accounts, flags and rules; `explain: true` and every "
        "segment's outcome",
    )
    CONSENT = (
        "consent",
        "send the consent banner's purposes (`consent`) with a decision or an outcome",
    )
    PROFILES_READ = "profiles-read", "read profiles and their consent records (/v1/profiles)"
    PROFILES_WRITE = "profiles-write", "write, link and erase profiles (/v1/profiles)"
    OUTCOMES = (
        "outcomes",
        "report outcomes of decisions (POST /v1/outcomes); the answer says whether an "
        "identity names someone known",
    )
    ADMIN = "admin", "the loaded rules, reloads and segment governance (/admin)"


_SCOPES = {str(scope): scope for scope in Scope}
# with no keys configured, callers on this machine may do what the quickstart shows
LOCAL_SCOPES = frozenset({Scope.DECIDE, Scope.EXPLAIN, Scope.CONSENT})
# DECIDER_ALLOW_ANONYMOUS=true opens decisions to the network, and nothing more
ANONYMOUS_SCOPES = frozenset({Scope.DECIDE})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "dk_"


class KeysError(ValueError):
    """A key definition is wrong; the message says which and why, never the key's hash."""


class ApiKey(msgspec.Struct, frozen=True):
    name: str
    scopes: frozenset[Scope]
    sha256: str


class Caller(msgspec.Struct, frozen=True):
    """Who is calling: a key's name (None: anonymous) and what it may do."""

    name: str | None
    scopes: frozenset[Scope]

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


class KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keys: list[dict[str, Any]]


class KeyRing:
    """The configured keys; `caller(secret)` is the key's caller, or None for no match."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)
        names = [key.name for key in self.keys]
        for name in names:
            if names.count(name) > 1:
                raise KeysError(f"key {name!r} is defined twice")
        hashes = [key.sha256 for key in self.keys]
        for key in self.keys:
            if hashes.count(key.sha256) > 1:
                raise KeysError(f"key {key.name!r} has the same hash as another key")
        self._callers = [
            (bytes.fromhex(key.sha256), Caller(key.name, key.scopes)) for key in self.keys
        ]

    def __bool__(self) -> bool:
        return bool(self.keys)

    def caller(self, secret: str) -> Caller | None:
        digest = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        found: Caller | None = None
        for stored, caller in self._callers:  # every hash compared: no early exit
            if hmac.compare_digest(digest, stored):
                found = caller
        return found


def parse_spec(spec: str, where: str) -> list[ApiKey]:
    """Keys from `name:scope+scope:sha256` entries separated by commas (DECIDER_API_KEYS)."""
    keys = []
    for number, entry in enumerate(filter(None, (e.strip() for e in spec.split(","))), 1):
        parts = entry.split(":")
        if len(parts) != 3:
            raise KeysError(f"{where}: entry {number}: expected name:scope+scope:sha256")
        name, scopes, sha256 = parts
        keys.append(make_key(name, scopes.split("+"), sha256, f"{where}: entry {number}"))
    return keys


def parse_file(data: bytes, where: str) -> list[ApiKey]:
    """Keys from a YAML document `keys: [{name, scopes: [...], sha256}]` (already read)."""
    import yaml  # noqa: PLC0415 (only needed when a keys file is configured)

    try:
        document = yaml.safe_load(data.decode("utf-8"))
        listed = msgspec.convert(document, KeyFile)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise KeysError(f"{where}: not a YAML document: {type(exc).__name__}") from None
    except msgspec.ValidationError as exc:
        raise KeysError(f"{where}: expected `keys:` and a list of keys ({exc})") from None
    keys = []
    for number, entry in enumerate(listed.keys, 1):
        at = f"{where}: key {number}"
        unknown = sorted(set(entry) - {"name", "scopes", "sha256"})
        if unknown:
            raise KeysError(f"{at}: unknown field {unknown[0]!r}; a key has name, scopes, sha256")
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise KeysError(f"{at}: scopes: expected a list of scope names")
        name, sha256 = entry.get("name"), entry.get("sha256")
        if not isinstance(name, str) or not isinstance(sha256, str):
            raise KeysError(f"{at}: name and sha256 are required strings")
        keys.append(make_key(name, scopes, sha256, at))
    return keys


def make_key(name: str, scopes: Iterable[str], sha256: str, where: str) -> ApiKey:
    if not _NAME.match(name):
        raise KeysError(f"{where}: name: letters, digits, '.', '_', '-', at most 64")
    granted = set()
    for scope in scopes:
        try:
            granted.add(_SCOPES[scope])
        except KeyError:
            raise KeysError(
                f"{where} ({name}): unknown scope {scope!r}; choose from {', '.join(Scope)}"
            ) from None
    if not granted:
        raise KeysError(f"{where} ({name}): no scopes")
    sha256 = sha256.lower()
    if not _SHA256.match(sha256):
        raise KeysError(
            f"{where} ({name}): sha256: expected the key's SHA-256 as 64 hex "
            "digits, not the key itself"
        )
    return ApiKey(name, frozenset(granted), sha256)


def new_key() -> tuple[str, str]:
    """A new random key (256 bits) and its SHA-256 hex, as configured."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest()
