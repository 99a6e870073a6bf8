"""Trait values fixed where profiles enter (import, the write API, a profile API's answers).

With a profile schema (rules/schema.yaml), a declared trait is checked and converted to its
type: an int where a double is declared becomes a double, a timestamp is stored in one RFC
3339 form (UTC, `Z`, to the microsecond), an email in a `sha256` field becomes its hash; a
profile flag must be one the schema lists. Whatever the schema says, what the C++ runtime
cannot hold is refused with its path: a NUL character (it would cut the string), half a
UTF-16 surrogate pair (no character; YAML lets one through), an integer beyond 64 bits,
nesting past MAX_DEPTH. And a raw email address is refused anywhere in a profile: emails
travel as hashes. No message here repeats a refused value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any, Literal

import msgspec

from decider.addresses import EMAIL, looks_like_email
from decider.model import MAX_DEPTH, Instant

TraitType = Literal["string", "int", "double", "bool", "timestamp", "sha256", "list", "map", "any"]
TYPES: frozenset[str] = frozenset(TraitType.__args__)  # type: ignore[attr-defined]
OPEN = frozenset({"map", "any"})  # fields beneath are not declared
# a declared field: its type, or (a nested map) its own fields
Node = str | dict[str, Any]

_INT64 = range(-(2**63), 2**63)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CANONICAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class TraitSchema(msgspec.Struct, frozen=True):
    """The declared traits of visitors and accounts, and the flags suppressions may name."""

    visitor: dict[str, Node]
    account: dict[str, Node]
    flags: frozenset[str] | None = None
    file: str = "schema.yaml"


class TraitError(ValueError):
    """A value refused at the boundary; `path` is where in the profile (`traits.shop.at`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}")


def normalize(traits: Mapping[str, Any], declared: Mapping[str, Node] | None) -> dict[str, Any]:
    """`traits` checked, and converted where `declared` says what a field is. Raises
    TraitError for the first value that cannot be stored."""
    return _map(traits, declared, "traits", 0)


def no_raw_email(value: str, path: str) -> None:
    """Raises TraitError if `value` holds something that looks like an email address."""
    if looks_like_email(value):
        raise TraitError(path, "looks like an email address; send its SHA-256 instead")


def timestamp_text(value: str, path: str) -> str:
    """The one RFC 3339 form of a timestamp: UTC, uppercase `T`, `Z`, to the microsecond.
    Raises TraitError."""
    try:
        when = msgspec.convert(value, Instant)
        utc = when.astimezone(UTC)
    except (msgspec.ValidationError, OverflowError, ValueError):
        raise TraitError(path, "not a valid RFC 3339 timestamp with an offset") from None
    if _CANONICAL_TIME.match(value):
        return value  # already in the one form (the common case, kept cheap)
    micros = f".{utc.microsecond:06d}" if utc.microsecond else ""
    # %Y does not pad years before 1000, which RFC 3339 would then refuse
    return f"{utc.year:04d}-{utc.strftime('%m-%dT%H:%M:%S')}{micros}Z"


def check_flags(flags: frozenset[str], schema: TraitSchema | None) -> None:
    """With a schema that lists flags, a profile carries only those: a misspelt unsubscribe
    would otherwise suppress nobody."""
    if schema is None or schema.flags is None:
        return
    unknown = sorted(flags - schema.flags)
    if unknown:
        known = ", ".join(sorted(schema.flags))
        raise TraitError("flags", f"{len(unknown)} flag(s) the schema does not list ({known})")


def _map(
    value: Mapping[str, Any], declared: Mapping[str, Node] | None, path: str, depth: int
) -> dict[str, Any]:
    if depth >= MAX_DEPTH:
        raise TraitError(path, f"nested deeper than {MAX_DEPTH} levels")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if "\x00" in key or _SURROGATE.search(key) or looks_like_email(key):
            raise TraitError(
                path,
                "a key holds a NUL character or half a surrogate pair, or looks like an email "
                "address",
            )
        node = declared.get(key) if declared is not None else None
        out[key] = _value(item, node, f"{path}.{key}", depth + 1)
    return out


def _value(value: Any, node: Node | None, path: str, depth: int) -> Any:
    if isinstance(node, dict):
        if not isinstance(value, dict):
            raise TraitError(path, "expected a map (the schema lists its fields)")
        return _map(value, node, path, depth)
    if node == "map" and not isinstance(value, dict):
        raise TraitError(path, f"expected map, got {_kind_of(value)}")
    if node is not None and node not in OPEN:
        return _typed(value, node, path)
    return _free(value, path, depth)


def _typed(value: Any, kind: str, path: str) -> Any:
    """A value of a declared scalar or list type, converted to that type."""
    if kind == "double" and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value) + 0.0  # + 0.0: no negative zero, which the engines compare apart
        except OverflowError:
            raise TraitError(path, "too large for a double") from None
    if kind == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return _free(value, path, 0)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "string" and isinstance(value, str):
        _text(value, path)
        return value
    if kind == "timestamp" and isinstance(value, str):
        return timestamp_text(value, path)
    if kind == "sha256" and isinstance(value, str):
        if _HEX64.match(value):
            return value.lower()
        if EMAIL.fullmatch(value.strip()):
            return hashlib.sha256(value.strip().lower().encode()).hexdigest()
        raise TraitError(path, "expected a SHA-256 hex digest (or an email address to hash)")
    if kind == "list" and isinstance(value, list):
        return _free(value, path, 0)
    raise TraitError(path, f"expected {kind}, got {_kind_of(value)}")


def _free(value: Any, path: str, depth: int) -> Any:
    """A value no schema types: checked only for what the engines would read differently."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value + 0.0  # no negative zero
    if isinstance(value, int):
        if value not in _INT64:
            raise TraitError(path, "integer out of the 64-bit range")
        return value
    if isinstance(value, str):
        _text(value, path)
        return value
    if isinstance(value, dict):
        return _map(value, None, path, depth)
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise TraitError(path, f"nested deeper than {MAX_DEPTH} levels")
        return [_free(item, f"{path}.{i}", depth + 1) for i, item in enumerate(value)]
    raise TraitError(path, f"a {_kind_of(value)} is not a JSON value")


_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str: half a pair, alone


def _text(value: str, path: str) -> None:
    if "\x00" in value:
        raise TraitError(path, "holds a NUL character")
    if _SURROGATE.search(value):
        raise TraitError(path, "holds half a UTF-16 surrogate pair, which is no character")
    no_raw_email(value, path)


def _kind_of(value: Any) -> str:
    names = {bool: "bool", int: "int", float: "double", str: "string", list: "list", dict: "map"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
