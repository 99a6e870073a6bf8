"""What CEL's values and functions mean at run time, as Google's C++ runtime defines them.

Error messages name kinds and functions, never a value: they reach explain output.

The pure-Python engine evaluates with these; a property test holds them to the C++ runtime
over generated expressions and values (tests/test_cel_parity.py). Values are JSON's (None,
bool, int, float, str, list, dict) plus Timestamp and Duration, both exact to the
nanosecond, and to absl's quarter nanosecond where a string read them so (see Duration).
Every failure raises CelEvalError: the rule does not match.

Where the C++ runtime is particular, so are we: numbers of different kinds compare by
value as doubles; values of different kinds are unequal, never an error; `timestamp()` and
`duration()` read strings as absl does (a leap second, a lowercase `t`, `+hhmm` offsets);
`string()` writes a double as Go's `%g` does; durations past ±292 years saturate in
arithmetic, as absl's do.
"""

from __future__ import annotations

import functools
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, cast

import re2

from decider.ruleset import CelEvalError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NS = 10**9
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31
_QUARTERS = 4  # absl's times and durations count quarter nanoseconds
# ten thousand years, and the last second's nanoseconds, in quarter nanoseconds
_MAX_DURATION_Q = (315576000000 * _NS + _NS - 1) * _QUARTERS
_MAX_INSTANT_Q = ((_MAX_SECONDS + 1) * _NS - 1) * _QUARTERS
_INFINITE_Q = 2**63 * _NS * _QUARTERS  # absl's durations end at 2**63 seconds
_UNIX_DAYS = 719468  # days from 0000-03-01 to 1970-01-01


class Timestamp:
    """An instant, in nanoseconds since the Unix epoch (`ns`), and `sub` quarter nanoseconds
    after it (0 to 3, from a string with digits past the nanosecond: see Duration)."""

    __slots__ = ("ns", "sub")

    def __init__(self, ns: int, sub: int = 0) -> None:
        self.ns, self.sub = ns, sub

    @classmethod
    def of(cls, when: datetime) -> Timestamp:
        delta = when - datetime(1970, 1, 1, tzinfo=UTC)
        return cls((delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000)

    def __repr__(self) -> str:
        return f"timestamp({format_timestamp(self)!r})"


class Duration:
    """A span of time, in nanoseconds (`ns`, toward zero), and `sub` quarter nanoseconds
    more (-3 to 3, of the sign of the span). As in the C++ runtime, which holds absl's
    values: a string read by `duration()` or `timestamp()` keeps quarter nanoseconds, which
    comparisons see (`duration("0.5ns") > duration("0s")`), and arithmetic, `string()` and
    the getters drop (`duration("0.5ns") + duration("0.5ns") == duration("0s")`)."""

    __slots__ = ("ns", "sub")

    def __init__(self, ns: int, sub: int = 0) -> None:
        self.ns, self.sub = ns, sub

    def __repr__(self) -> str:
        return f"duration({format_duration(self)!r})"


class BoolKey:
    """A bool as a map key: Python would take it for the int 1 or 0, CEL does not."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoolKey) and other.value is self.value

    def __hash__(self) -> int:
        return hash((BoolKey, self.value))


def fail(message: str) -> NoReturn:
    raise CelEvalError(message)


class Halt(CelEvalError):
    """An error that ends the whole evaluation: no `&&`, `||` or macro absorbs it, because
    the C++ runtime fails the evaluation itself on it, not the expression."""


_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "double",
    str: "string",
    list: "list",
    dict: "map",
    Timestamp: "timestamp",
    Duration: "duration",
}


def kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def no_overload(name: str, *args: Any) -> NoReturn:
    fail(f"no matching overload for {name}({', '.join(kind(a) for a in args)})")


# --- equality and order ---------------------------------------------------------------------


def equal(a: Any, b: Any) -> bool:
    """CEL's heterogeneous equality: numbers by value, other kinds apart are unequal."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            missing = object()
            return len(a) == len(b) and all(
                (other := b.get(key, missing)) is not missing and equal(value, other)
                for key, value in a.items()
            )
        if ta is Timestamp or ta is Duration:
            return bool(a.ns == b.ns and a.sub == b.sub)
        return bool(a == b)
    if (ta is int and tb is float) or (ta is float and tb is int):
        return float(a) == float(b)
    return False


def compare(a: Any, b: Any, name: str) -> int | None:
    """-1, 0 or 1; None when a NaN makes the two unordered. Raises for kinds with no order."""
    ta, tb = type(a), type(b)
    if ta in _NUMBER and tb in _NUMBER:
        if ta is not tb:
            a, b = float(a), float(b)
    elif ta is not tb or ta not in _ORDERED:
        no_overload(name, a, b)
    elif ta is Timestamp or ta is Duration:
        a, b = a.ns * _QUARTERS + a.sub, b.ns * _QUARTERS + b.sub
    if a < b:
        return -1
    if a > b:
        return 1
    return 0 if a == b else None


_NUMBER = (int, float)
_ORDERED = (bool, int, float, str, Timestamp, Duration)


def less(a: Any, b: Any) -> bool:
    return compare(a, b, "_<_") == -1


def less_equal(a: Any, b: Any) -> bool:
    return compare(a, b, "_<=_") in (-1, 0)


def greater(a: Any, b: Any) -> bool:
    return compare(a, b, "_>_") == 1


def greater_equal(a: Any, b: Any) -> bool:
    return compare(a, b, "_>=_") in (0, 1)


def not_equal(a: Any, b: Any) -> bool:
    return not equal(a, b)


# --- arithmetic -----------------------------------------------------------------------------


def _int64(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        fail("integer overflow")
    return value


def _saturated(ns: int) -> int:
    """A duration as absl arithmetic takes it: clamped to what 64 bits of nanoseconds hold."""
    return min(max(ns, INT64_MIN), INT64_MAX)


def _instant(ns: int) -> Timestamp:
    if not _MIN_SECONDS * _NS <= ns < (_MAX_SECONDS + 1) * _NS:
        fail("timestamp overflow")
    return Timestamp(ns)


def add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _int64(a + b)
        if ta is float or ta is str:
            return a + b
        if ta is list:
            return [*a, *b]
        if ta is Duration:
            return Duration(_int64(_saturated(a.ns) + _saturated(b.ns)))
    if ta is Timestamp and tb is Duration:
        return _instant(a.ns + b.ns)
    if ta is Duration and tb is Timestamp:
        return _instant(a.ns + b.ns)
    no_overload("_+_", a, b)


def subtract(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _int64(a - b)
        if ta is float:
            return a - b
        if ta is Duration:
            return Duration(_int64(_saturated(a.ns) - _saturated(b.ns)))
        if ta is Timestamp:
            # as the C++ runtime: seconds apart, in nanoseconds, then the nanoseconds apart,
            # each step within 64 bits
            (s1, ns1), (s2, ns2) = divmod(a.ns, _NS), divmod(b.ns, _NS)
            return Duration(_int64(_int64(_int64(s1 - s2) * _NS) + ns1 - ns2))
    if ta is Timestamp and tb is Duration:
        # the duration negated within 64 bits of nanoseconds (the most negative has no
        # negation), then added
        return _instant(a.ns + _int64(-_saturated(b.ns)))
    no_overload("_-_", a, b)


def multiply(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb is int:
        return _int64(a * b)
    if ta is tb is float:
        return a * b
    no_overload("_*_", a, b)


def divide(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb is int:
        if b == 0:
            fail("divide by zero")
        quotient = abs(a) // abs(b)
        return _int64(quotient if (a < 0) == (b < 0) else -quotient)
    if ta is tb is float:
        if b == 0.0:  # IEEE 754: a signed infinity, or NaN
            if a == 0.0 or math.isnan(a):
                return math.nan
            return math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    no_overload("_/_", a, b)


def modulo(a: Any, b: Any) -> Any:
    if type(a) is type(b) is int:
        if b == 0:
            fail("modulus by zero")
        if a == INT64_MIN and b == -1:
            fail("integer overflow")
        remainder = abs(a) % abs(b)
        return -remainder if a < 0 else remainder
    no_overload("_%_", a, b)


def negate(a: Any) -> Any:
    if type(a) is int:
        return _int64(-a)
    if type(a) is float:
        return -a
    no_overload("-_", a)


def logical_not(a: Any) -> bool:
    if a is True or a is False:
        return not a
    no_overload("!_", a)


# --- containers -----------------------------------------------------------------------------


def map_key(key: Any) -> Any:
    """How a CEL map key is held: strings and ints as they are, a bool wrapped."""
    t = type(key)
    if t is str or t is int:
        return key
    if t is bool:
        return BoolKey(key)
    fail(f"invalid map key type: {kind(key)}")


def _lookup_key(key: Any) -> Any:
    """The held key `key` would find (a double finds an int of its value), or a value no
    key equals."""
    t = type(key)
    if t is float:
        return int(key) if key.is_integer() and INT64_MIN <= key <= INT64_MAX else _ABSENT
    if t is str or t is int:
        return key
    if t is bool:
        return BoolKey(key)
    fail(f"invalid map key type: {kind(key)}")


_ABSENT = object()


def build_map(entries: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    built: dict[Any, Any] = {}
    for key, value in entries:
        held = map_key(key)
        if held in built:
            raise Halt("duplicate key in map")
        built[held] = value
    return built


def select(operand: Any, field: str) -> Any:
    if type(operand) is not dict:
        fail(f"no field on a {kind(operand)}")
    found = operand.get(field, _ABSENT)
    if found is _ABSENT:
        fail("no such key")
    return found


def has(operand: Any, field: str) -> bool:
    if type(operand) is not dict:
        fail(f"has() on a {kind(operand)}")
    return field in operand


def index(container: Any, key: Any) -> Any:
    t = type(container)
    if t is list:
        tk = type(key)
        if tk is float and key.is_integer():
            key = int(key)
        elif tk is not int:
            fail(f"a list index must be an int, not {kind(key)}")
        if not 0 <= key < len(container):
            fail("index out of range")
        return container[key]
    if t is dict:
        found = container.get(_lookup_key(key), _ABSENT)
        if found is _ABSENT:
            fail("no such key")
        return found
    no_overload("_[_]", container, key)


def contained(item: Any, container: Any) -> bool:
    t = type(container)
    if t is list:
        if type(item) is str:  # a string equals only an equal string: Python's own `in`
            return item in container
        return any(equal(item, element) for element in container)
    if t is dict:
        return _lookup_key(item) in container
    no_overload("@in", item, container)


def iterate(source: Any) -> Iterator[Any]:
    """What a macro ranges over: a list's items, a map's keys."""
    if type(source) is list:
        return iter(source)
    if type(source) is dict:
        return (k.value if type(k) is BoolKey else k for k in source)
    no_overload("<iter_range>", source)


def size(value: Any) -> int:
    if type(value) in (str, list, dict):
        return len(value)
    no_overload("size", value)


# --- strings --------------------------------------------------------------------------------


def _strings(name: str, a: Any, b: Any) -> None:
    if type(a) is not str or type(b) is not str:
        no_overload(name, a, b)


def contains(a: Any, b: Any) -> bool:
    _strings("contains", a, b)
    return b in a


def starts_with(a: Any, b: Any) -> bool:
    _strings("startsWith", a, b)
    return bool(a.startswith(b))


def ends_with(a: Any, b: Any) -> bool:
    _strings("endsWith", a, b)
    return bool(a.endswith(b))


def matches(text: Any, pattern: Any) -> bool:
    _strings("matches", text, pattern)
    return _regex(pattern).search(text) is not None


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # a pattern is checked at load; never write one to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error:
        fail("invalid regular expression")


# --- conversions ----------------------------------------------------------------------------

_SPACE = " \t\n\v\f\r"
_DECIMAL_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_FLOAT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT = re.compile(
    r"-?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
)
_SPECIAL_FLOAT = re.compile(r"(-?)(?:(inf(?:inity)?)|nan(?:\([0-9A-Za-z_]*\))?)", re.I)
_TRUE, _FALSE = {"1", "t", "true", "TRUE", "True"}, {"0", "f", "false", "FALSE", "False"}


def to_int(value: Any) -> int:
    t = type(value)
    if t is int:
        return cast(int, value)
    if t is float:
        if not -9.223372036854775808e18 < value < 9.223372036854775808e18:
            fail("double out of int64 range")
        return int(value)
    if t is str:
        text = value.strip(_SPACE)
        if not _DECIMAL_INT.fullmatch(text) or not INT64_MIN <= int(text) <= INT64_MAX:
            fail("cannot convert string to int")
        return int(text)
    if t is Timestamp:
        return cast(int, value.ns // _NS)
    if t is bool:  # the C++ runtime converts a bool it is given, though the checker refuses one
        return int(value)
    no_overload("int", value)


def to_double(value: Any) -> float:
    t = type(value)
    if t is float:
        return cast(float, value)
    if t is int:
        return float(value)
    if t is str:
        return _parse_double(value)
    no_overload("double", value)


def _parse_double(value: str) -> float:
    text = value.strip(_SPACE)
    if text.startswith("+"):
        text = text[1:]
        if text.startswith("-"):
            fail("cannot convert string to double")
    if _DECIMAL_FLOAT.fullmatch(text):
        return float(text)
    if _HEX_FLOAT.fullmatch(text):
        return float.fromhex(text)
    special = _SPECIAL_FLOAT.fullmatch(text)
    if special:
        sign = -1.0 if special[1] else 1.0
        return sign * math.inf if special[2] else math.nan
    fail("cannot convert string to double")


def to_string(value: Any) -> str:
    t = type(value)
    if t is str:
        return cast(str, value)
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        return format_double(value)
    if t is Timestamp:
        return format_timestamp(value)
    if t is Duration:
        return format_duration(value)
    no_overload("string", value)


def to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        fail("cannot convert string to bool")
    no_overload("bool", value)


def to_timestamp(value: Any) -> Timestamp:
    t = type(value)
    if t is Timestamp:
        return cast(Timestamp, value)
    if t is str:
        return _timestamp_of(value)
    if t is int:
        if not _MIN_SECONDS <= value <= _MAX_SECONDS:
            fail("timestamp overflow")
        return Timestamp(value * _NS)
    no_overload("timestamp", value)


def to_duration(value: Any) -> Duration:
    if type(value) is Duration:
        return value
    if type(value) is str:
        return parse_duration(value)
    no_overload("duration", value)


def identity(value: Any) -> Any:
    return value


def format_double(value: float) -> str:
    """Go's strconv.FormatFloat(value, 'g', -1, 64): the shortest digits that read back,
    in exponent form for an exponent of 6 and up, or below -4."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digits_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    point = len(digits_tuple) + exponent  # where the decimal point falls in `digits`
    exp10 = point - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{prefix}{digits}{'0' * (point - len(digits))}"
    return f"{prefix}{digits[:point]}.{digits[point:]}"


# --- timestamps and durations ---------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"[ \t\n\v\f\r]*(-?[0-9]+)-([0-9]{1,2})-([0-9]{1,2})[Tt]([0-9]{1,2}):([0-9]{1,2}):"
    r"([0-9]{1,2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2})(?::?([0-9]{2}))?)?)[ \t\n\v\f\r]*"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@functools.lru_cache(maxsize=4096)
def _timestamp_of(text: str) -> Timestamp:
    """parse_timestamp, remembered: rules convert the same trait strings on every decision
    (a failure is not remembered; it raises again)."""
    return parse_timestamp(text)


def parse_timestamp(text: str) -> Timestamp:
    """RFC 3339 as absl reads it: lenient about widths, a lowercase `t` or `z`, offsets
    `+hh`, `+hhmm`, `+hh:mm[:ss]`, surrounding whitespace; a leap second is the next one."""
    found = _TIMESTAMP.fullmatch(text)
    if found is None:
        fail("cannot convert string to timestamp")
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    # absl reads femtoseconds (15 digits) and keeps quarter nanoseconds of them
    quarters = int((found[7] or "")[:15].ljust(15, "0")) * _QUARTERS // 10**6
    offset = 0
    if found[9]:
        hours, minutes, seconds = int(found[10]), int(found[11] or 0), int(found[12] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            fail("cannot convert string to timestamp")
        offset = (hours * 3600 + minutes * 60 + seconds) * (1 if found[9] == "+" else -1)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1] if 1 <= month <= 12 else 0
    if not (1 <= day <= month_days and hour < 24 and minute < 60 and second <= 60):
        fail("cannot convert string to timestamp")
    if second == 60:  # a leap second: the next minute's start
        quarters = 0
    minutes = _days_from_civil(year, month, day) * 1440 + hour * 60 + minute
    total = minutes * 60 + second - offset
    nanos, sub = divmod(quarters, _QUARTERS)
    if total < _MIN_SECONDS or total * _NS * _QUARTERS + quarters > _MAX_INSTANT_Q:
        fail("timestamp overflow")
    return Timestamp(total * _NS + nanos, sub)


def format_timestamp(value: Timestamp) -> str:
    seconds, nanos = divmod(value.ns, _NS)
    days, rest = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{_fraction(nanos)}Z"
    )


def _fraction(nanos: int) -> str:
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1000 == 0:
        return f".{nanos // 1000:06d}"
    return f".{nanos:09d}"


_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1000, "ms": 10**6, "s": _NS, "m": 60 * _NS, "h": 3600 * _NS}


def parse_duration(text: str) -> Duration:
    """A duration as absl::ParseDuration reads it (`1h30m`, `1.5s`, `-90m`, `0`), within
    CEL's ten thousand years."""
    rest, sign = text, 1
    if rest[:1] in ("+", "-"):
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return Duration(0)
    if rest == "inf":
        fail("duration out of range")
    total, position = 0, 0  # quarter nanoseconds
    while position < len(rest):
        part = _DURATION_PART.match(rest, position)
        if part is None or not (part[1] or part[2]) or part.end() == position:
            fail("cannot convert string to duration")
        whole = int(part[1] or "0")
        if whole > INT64_MAX:
            fail("cannot convert string to duration")
        unit = _UNITS[part[3]] * _QUARTERS
        total += whole * unit
        fraction = int((part[2] or "0")[:18])  # absl reads 18 digits, and skips the rest
        if fraction:
            scaled = fraction * unit  # absl's product: infinite past 2**63 seconds
            if scaled >= _INFINITE_Q:
                fail("duration out of range")
            total += scaled // 10 ** min(len(part[2]), 18)
        position = part.end()
    if not rest:
        fail("cannot convert string to duration")
    if total > _MAX_DURATION_Q:
        fail("duration out of range")
    nanos, sub = divmod(total, _QUARTERS)
    return Duration(sign * nanos, sign * sub)


def format_duration(value: Duration) -> str:
    seconds, nanos = divmod(abs(value.ns), _NS)
    return f"{'-' if value.ns < 0 else ''}{seconds}{_fraction(nanos)}s"


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, as absl's are)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - _UNIX_DAYS


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += _UNIX_DAYS
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted + 2) // 5 + 1
    month = shifted + (3 if shifted < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def _offset_seconds(value: Timestamp, zone: Any) -> int:
    """The zone's offset from UTC at `value`, in seconds."""
    if type(zone) is not str:
        no_overload("timezone", zone)
    return _zone_offset(zone, value.ns // _NS)


def _zone_offset(zone: str, seconds: int) -> int:
    if zone == "UTC":
        return 0
    if zone[:1] in ("+", "-") and len(zone) == 6 and zone[3] == ":":
        return (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (-1 if zone[0] == "-" else 1)
    tz = load_zone(zone)
    if tz is None:
        fail("invalid timezone")
    # Python's datetimes span years 1-9999; the offset at the edges is the one just inside
    clamped = min(max(seconds, _MIN_SECONDS + 2 * 86400), _MAX_SECONDS - 2 * 86400)
    local = datetime.fromtimestamp(clamped, UTC).astimezone(tz)
    offset = local.utcoffset() or timedelta(0)
    return int(offset.total_seconds())


_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory", "posix", "right"})


@functools.lru_cache(maxsize=256)
def load_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The zone `name` from the file the C++ runtime reads too (the tz database at $TZDIR,
    else /usr/share/zoneinfo), so both engines see the same rules; None if there is none."""
    if not _ZONE_NAME.fullmatch(name) or name.split("/", maxsplit=1)[0] in _NOT_ZONES:
        return None
    path = Path(os.environ.get("TZDIR") or "/usr/share/zoneinfo") / name
    try:
        with path.open("rb") as file:
            return zoneinfo.ZoneInfo.from_file(file, key=name)
    except (OSError, ValueError):
        return None


def _fields(value: Timestamp, zone: Any = "UTC") -> tuple[int, int, int, int, int, int, int]:
    """Year, month, day, hour, minute, second and milliseconds of `value` in `zone`."""
    seconds, nanos = divmod(value.ns, _NS)
    local = seconds + _offset_seconds(value, zone)
    days, rest = divmod(local, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return year, month, day, hour, minute, second, nanos // 1_000_000


def _calendar(pick: Callable[[Timestamp, Any], int], name: str) -> Callable[..., int]:
    def getter(value: Any, zone: Any = "UTC") -> int:
        if type(value) is not Timestamp:
            no_overload(name, value)
        return pick(value, zone)

    getter.__name__ = name
    return getter


def _day_of_year(value: Timestamp, zone: Any) -> int:
    year, month, day, *_ = _fields(value, zone)
    return _days_from_civil(year, month, day) - _days_from_civil(year, 1, 1)


def _day_of_week(value: Timestamp, zone: Any) -> int:
    year, month, day, *_ = _fields(value, zone)
    return (_days_from_civil(year, month, day) + 4) % 7  # 1970-01-01 was a Thursday


get_full_year = _calendar(lambda v, z: _fields(v, z)[0], "getFullYear")
get_month = _calendar(lambda v, z: _fields(v, z)[1] - 1, "getMonth")
get_date = _calendar(lambda v, z: _fields(v, z)[2], "getDate")
get_day_of_month = _calendar(lambda v, z: _fields(v, z)[2] - 1, "getDayOfMonth")
get_day_of_year = _calendar(_day_of_year, "getDayOfYear")
get_day_of_week = _calendar(_day_of_week, "getDayOfWeek")


_NO_ZONE: Any = object()


def _clock(index: int, unit_ns: int, name: str) -> Callable[..., int]:
    """A clock getter: on a timestamp, the field; on a duration, the whole span in the unit
    (milliseconds: the part below a second), truncated toward zero."""

    def getter(value: Any, zone: Any = _NO_ZONE) -> int:
        if type(value) is Timestamp:
            return _fields(value, "UTC" if zone is _NO_ZONE else zone)[index]
        if type(value) is Duration and zone is _NO_ZONE:
            span = abs(value.ns) % _NS // 1_000_000 if index == 6 else abs(value.ns) // unit_ns
            return span if value.ns >= 0 else -span
        no_overload(name, value)

    getter.__name__ = name
    return getter


get_hours = _clock(3, 3600 * _NS, "getHours")
get_minutes = _clock(4, 60 * _NS, "getMinutes")
get_seconds = _clock(5, _NS, "getSeconds")
get_milliseconds = _clock(6, 1, "getMilliseconds")
