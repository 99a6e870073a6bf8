"""Hypothesis strategies for rule-like CEL expressions over JSON-like profiles and context.

Expressions are generated for a wanted type (so most of them load and run), with a share
deliberately mistyped (so the load-time checks are compared too), over the fields the data
uses (so paths hit, miss, and find values of every kind). Strings, numbers, times and
durations come from pools of the awkward cases the engines have disagreed on: numbers at
the 53- and 64-bit edges, timestamps without an offset or with a leap second, `"1d"`,
strings that almost convert.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FIELDS = ("a", "b", "n", "s", "l", "m", "t", "d", "stage", "score", "tags")
ORDERED = ("int", "double", "string", "bool", "timestamp", "duration")
ROOTS = ("visitor", "account", "context")
VARIABLES = ("x", "y", "k", "visitor")  # macro variables; `visitor` shadows the root
INTS = (0, 1, -1, 2, 3, 7, -7, 10, 80, 100, 2**31, 2**53, 2**53 + 1, 2**62, INT64_MAX, INT64_MIN)
DOUBLES = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1.5,
    2.5,
    80.0,
    0.1,
    1e21,
    1e-7,
    123456.0,
    1234567.0,
    9007199254740992.0,
    9.3e18,
    9.223372036854775807e18,
    -9.223372036854775808e18,
    1e308,
)
TIMESTAMPS = (
    "2026-11-20T12:00:00Z",
    "2026-11-20T12:00:00.5Z",
    "2026-11-20T12:00:00.123456789Z",
    "2026-11-20T12:00:00+01:00",
    "2026-11-20T12:00:00-05:30",
    "2026-11-20t12:00:00z",
    "2026-11-20 12:00:00Z",
    "2026-11-20",
    "2026-11-20T12:00:00",
    "2026-11-20T12:00Z",
    "2026-11-20T12:00:60Z",
    "2016-12-31T23:59:60Z",
    " 2026-11-20T12:00:00Z",
    "2026-11-20T12:00:00Z\n",
    "2026-1-2T3:04:05Z",
    "2026-11-20T12:00:00+0100",
    "2026-11-20T12:00:00+01",
    "2026-11-20T12:00:00+01:00:30",
    "2026-11-20T12:00:00+24:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "2026-02-29T00:00:00Z",
    "2024-02-29T00:00:00Z",
    "1969-12-31T23:59:59.5Z",
    "1969-12-31T23:59:59.9999999995Z",
    "2026-11-20T12:00:00.0000000005Z",
    "2026-11-20T12:00:00.00000000025Z",
    "9999-12-31T23:59:59.9999999995Z",
    "1700-01-01T00:00:00Z",
    "02026-11-20T12:00:00Z",
)
DURATIONS = (
    "1h",
    "90m",
    "1.5s",
    "-1h30m",
    "336h",
    "1d",
    "0",
    "-0",
    "1ns",
    "1.5ns",
    "1us",
    "1ms",
    ".5s",
    "5.s",
    "1H",
    "+1h",
    "inf",
    "1h 30m",
    "2562047h",
    "2562048h",
    "87660000h",
    "87660001h",
    "0.5ns",
    "0.25ns",
    "-0.75ns",
    "1.75ns",
    "0.5000000000000000h",
    "315576000000.5s",
    "87660000.0000001h",
)
STRINGS = (
    "",
    "a",
    "b",
    "abc",
    "me",
    "Me",
    "é",
    "e\u0301",
    "😀",
    "\uffff",
    "12",
    " 12",
    "+12",
    "-0",
    "1_0",
    "1.5",
    "1e3",
    "1.",
    ".5",
    "0x10",
    "0x1p3",
    "inf",
    "-Infinity",
    "nan",
    "nan(1)",
    "t",
    "f",
    "T",
    "true",
    "True",
    "TRUE",
    "tRue",
    "false",
    "1",
    "0",
    "yes",
    "evaluation",
    "/pricing",
    "9223372036854775808",
    "-9223372036854775808",
    "UTC",
    "+01:00",
    "Europe/Paris",
)
# what rule authors also write: other spellings, near-misses, constructs one engine once took
ODDITIES = (
    "null",
    "visitor.in",
    "visitor.null",
    "visitor.as",
    "context.if",
    "has(visitor)",
    "has(visitor['s'])",
    "has(visitor.m['s'])",
    "[1, 2,]",
    "{'a': 1,}",
    "1.",
    ".5",
    "1.e3",
    "1E3",
    "0x1F",
    "0X1F",
    "01",
    "-0",
    "--1",
    "- -9223372036854775808",
    "-9223372036854775808",
    "9223372036854775808",
    "1u",
    "b'a'",
    "uint(1)",
    "bytes('a')",
    "type(1)",
    "int",
    "!!true",
    "1 < 2 < 3",
    "true ? 1 : 2 ? 3 : 4",
    "dyn(1) + 1.0",
    "duration(1)",
    "int(duration('1h'))",
    "foo(1)",
    "visitor.s.lowerAscii()",
    "size(visitor.l, 1)",
    "visitor.l.all(x)",
    "visitor.l.all(x.y, true)",
    "visitor.l.map(x, x, x, x)",
    "{1.0: 1}",
    "{'a': 1, 'a': 2}",
    "{context.s: 1, 'a': 2}",
    "{context.b: 1, 1: 2}",
    "{context.n: 1}",
    "[1, 'a']",
    "[1, 2.0]",
    "[[1], ['a']]",
    "[]",
    "{}",
    r'"\x41"',
    r'"\101"',
    r'"\777"',
    r'"\u00e9"',
    r'"\U0001F600"',
    r'"\ud800"',
    r'"\x00"',
    r'"\e"',
    r"'\''",
    r'r"\d"',
    r"R'\n'",
    '"""a"""',
    "'''a\nb'''",
    r'"\a\b\f\n\r\t\v\\\`\?"',
    "now.getHours('UTC')",
    "now.getHours(context.s)",
    "now.getHours('utc')",
    "now.getHours('+5:30')",
    "now.getHours('Europe/Nowhere')",
    "visitor.l.map(k, k)[0]",
    "visitor.m.map(k, k)[0]",
    "visitor.m.map(k, k) == ['a']",
    "visitor.m.filter(k, true).size()",
    "'a' in visitor.m.map(k, k)",
    "visitor.m.map(k, [k]) == [['a']]",
    "[visitor.m.map(k, k)] == [[]]",
    "visitor.m.map(k, k).exists(k2, k2 == 'a')",
    "visitor.l.map(x, x)[0]",
    "visitor.a['x'].all(y, true)",
    "[visitor.a['x']].all(y, y + 1 > 0 && y == 's')",
    "(true ? visitor.a['x'] : 1) + 1.0",
    "now == null",
    "null == duration('1h')",
    "visitor.s[0]",
    "'a' in visitor.s",
    "visitor.s.all(c, true)",
    "size(null)",
    "string(true)",
    "bool('12')",
)
PATTERNS = ("^a", "a+", "[a-z]+$", "\\d", "(?i)ME", "é", ".*", "^$", "b|c", "(", "\\w+")
ZONES = ("UTC", "+01:00", "-05:30", "Europe/Paris", "America/New_York", "Asia/Kolkata")
TIME_GETTERS = (
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfYear",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
)
TYPES = ("bool", "int", "double", "string", "list", "map", "timestamp", "duration", "dyn")
ALL_STRINGS = STRINGS + TIMESTAMPS + DURATIONS

# --- data -----------------------------------------------------------------------------------


def _pool(count: int, make: Any) -> list[Any]:
    """Values built once, from a fixed seed, so that drawing one is a single choice (data
    drawn field by field would cost more than the engines' work)."""
    chosen = random.Random(count)
    return [make(chosen) for _ in range(count)]


def _number(chosen: random.Random) -> Any:
    roll = chosen.random()
    if roll < 0.4:
        return chosen.choice(INTS)
    if roll < 0.8:
        return chosen.choice(DOUBLES)
    if roll < 0.9:
        return chosen.randint(-3, 3)
    return chosen.choice((1.0, -1.0)) * chosen.random() * 10.0 ** chosen.randint(-320, 308)


def _string(chosen: random.Random) -> str:
    if chosen.random() < 0.8:
        return chosen.choice(STRINGS)
    return "".join(chosen.choice("abé1 :-") for _ in range(chosen.randint(0, 4)))


def _scalar(chosen: random.Random) -> Any:
    return chosen.choice(
        (
            lambda: None,
            lambda: chosen.random() < 0.5,
            lambda: _number(chosen),
            lambda: _string(chosen),
            lambda: chosen.choice(TIMESTAMPS + DURATIONS),
        )
    )()


def _list(chosen: random.Random) -> list[Any]:
    if chosen.random() < 0.2:
        return [_list(chosen) for _ in range(chosen.randint(0, 2))]
    return [_scalar(chosen) for _ in range(chosen.randint(0, 3))]


def _typed(field: str, chosen: random.Random) -> Any:
    """Mostly a value of the field's kind (`n` numbers, `t` times, ...), else anything."""
    if chosen.random() < 0.2 and field != "m":
        return _scalar(chosen)
    kinds = {
        "b": lambda: chosen.random() < 0.5,
        "n": lambda: _number(chosen),
        "score": lambda: _number(chosen),
        "s": lambda: _string(chosen),
        "stage": lambda: chosen.choice(("evaluation", "purchase", "Evaluation", "")),
        "l": lambda: _list(chosen),
        "tags": lambda: [_string(chosen) for _ in range(chosen.randint(0, 3))],
        "t": lambda: chosen.choice(TIMESTAMPS),
        "d": lambda: chosen.choice(DURATIONS),
        "m": lambda: _record(chosen, nested=True),
        "a": lambda: chosen.choice((_scalar, _list, lambda c: _record(c, nested=True)))(chosen),
    }
    return kinds[field]()  # type: ignore[no-untyped-call]


def _record(chosen: random.Random, *, nested: bool = False) -> dict[str, Any]:
    """A profile or context: its typed fields mostly there, a map (`m`) within; a map
    within a map has fewer fields, and none deeper."""
    fields = [f for f in FIELDS if not nested or f not in ("m", "a")]
    present = [f for f in fields if chosen.random() < (0.5 if nested else 0.8)]
    return {field: _typed(field, chosen) for field in present}


RECORDS = _pool(400, _record)
profiles = st.sampled_from(RECORDS)


# which fields a path for a wanted type should try
TYPED_FIELDS = {
    "bool": ("b", "a"),
    "int": ("n", "score", "a"),
    "double": ("n", "score", "a"),
    "string": ("s", "stage", "t", "d", "a"),
    "list": ("l", "tags", "a"),
    "map": ("m", "a"),
    "timestamp": ("t",),
    "duration": ("d",),
    "dyn": FIELDS,
}


# --- expressions ----------------------------------------------------------------------------


def quote(text: str, draw: Any) -> str:
    """`text` as a CEL string literal, in one of the ways a rule author might write it."""
    style = draw(st.sampled_from(("json", "single", "escaped")))
    if style == "json":
        return json.dumps(text, ensure_ascii=draw(st.booleans()))
    if style == "single" and "'" not in text and "\\" not in text and "\n" not in text:
        return f"'{text}'"
    escaped = "".join(
        c
        if c.isalnum() and c.isascii()
        else f"\\u{ord(c):04x}"
        if ord(c) < 0x10000
        else f"\\U{ord(c):08x}"
        for c in text
    )
    return f'"{escaped}"'


def int_literal(value: int, draw: Any) -> str:
    if value >= 0 and draw(st.booleans()):
        return hex(value)
    return str(value)


def double_literal(value: float, draw: Any) -> str:
    text = repr(value)
    if "e" in text or "inf" in text:
        return text if "inf" not in text else "1e309"
    return str(draw(st.sampled_from((text, text.rstrip("0") if text.endswith(".0") else text))))


_ODDS = {
    n: st.sampled_from([False] * (n // 2) + [True] + [False] * (n - n // 2 - 1))
    for n in (2, 4, 8, 25, 150)
}


class _Grammar:
    """One expression being drawn: its depth budget and the macro variables in scope."""

    def __init__(self, draw: Any, depth: int, scope: tuple[str, ...]) -> None:
        self.draw, self.depth, self.scope = draw, depth, scope
        self.leaf = depth <= 0 or draw(st.integers(0, 3)) == 0

    def pick(self, options: Any) -> Any:
        return self.draw(st.sampled_from(options))

    def chance(self, one_in: int) -> bool:
        # the one True sits mid-list: Hypothesis favours the ends of a range, so a first or
        # last place would come up far more often than one in `one_in`
        return bool(self.draw(_ODDS[one_in]))

    def sub(self, kind: str, scope: tuple[str, ...] | None = None) -> str:
        inner = self.scope if scope is None else scope
        return str(self.draw(expressions(kind, self.depth - 1, inner)))

    def wrapped(self, kind: str) -> str:
        return f"({self.sub(kind)})"

    def path(self, wanted: str) -> str:
        return str(self.draw(path(self.scope, wanted)))

    def macro_variable(self) -> tuple[str, tuple[str, ...]]:
        var = self.pick(VARIABLES)
        return var, (*self.scope, var)


def _bool_expr(g: _Grammar) -> str:
    if g.leaf:
        if g.chance(2):
            return str(g.pick(("true", "false")))
        return f"has({g.path('map')}.{g.pick(FIELDS)})"
    choice = g.draw(st.integers(0, 12))
    if choice in (0, 1):
        kind = g.pick(ORDERED)
        other = "dyn" if g.chance(4) else kind
        return f"{g.sub(kind)} {g.pick(('<', '<=', '>', '>='))} {g.sub(other)}"
    if choice == 2:
        kind = g.pick(TYPES)
        other = "dyn" if g.chance(4) else kind
        return f"{g.sub(kind)} {g.pick(('==', '!='))} {g.sub(other)}"
    if choice in (3, 4):
        return f"{g.sub('bool')} {g.pick(('&&', '||'))} {g.sub('bool')}"
    if choice == 5:
        return f"!{g.wrapped('bool')}"
    if choice == 6:
        return f"{g.sub(g.pick(('string', 'int', 'dyn')))} in {g.sub(g.pick(('list', 'map')))}"
    if choice == 7:
        method = g.pick(("contains", "startsWith", "endsWith", "matches"))
        argument = quote(g.pick(PATTERNS), g.draw) if method == "matches" else g.sub("string")
        return f"{g.wrapped('string')}.{method}({argument})"
    if choice == 8:
        macro = g.pick(("all", "exists", "exists_one"))
        var, inner = g.macro_variable()
        source = g.wrapped(g.pick(("list", "map", "dyn")))
        return f"{source}.{macro}({var}, {g.sub('bool', inner)})"
    if choice == 9:
        return f"bool({g.sub('string')})"
    if choice == 10:
        return f"{g.sub('bool')} ? {g.sub('bool')} : {g.sub('bool')}"
    if choice == 11:
        return f"has({g.path('map')}.{g.pick(FIELDS)}) && {g.sub('bool')}"
    return g.wrapped("bool")


def _number_expr(g: _Grammar, wanted: str) -> str:
    if g.leaf:
        if wanted == "int":
            return int_literal(g.draw(st.sampled_from(INTS) | st.integers(-3, 3)), g.draw)
        return double_literal(g.pick(DOUBLES), g.draw)
    choice = g.draw(st.integers(0, 5))
    if choice == 0:
        ops = ("+", "-", "*", "/") + (("%",) if wanted == "int" else ())
        return f"{g.wrapped(wanted)} {g.pick(ops)} {g.wrapped(wanted)}"
    if choice == 1:
        return f"-{g.wrapped(wanted)}"
    if choice == 2:
        return f"{wanted}({g.sub(g.pick(('string', 'int', 'double', 'timestamp', 'dyn')))})"
    if choice == 3 and wanted == "int":
        return f"size({g.sub(g.pick(('string', 'list', 'map', 'dyn')))})"
    if choice == 4 and wanted == "int":
        getter = g.pick(TIME_GETTERS)
        if g.chance(2):
            return f"{g.wrapped('timestamp')}.{getter}({quote(g.pick(ZONES), g.draw)})"
        return f"{g.wrapped(g.pick(('timestamp', 'duration')))}.{getter}()"
    return g.path(wanted)


def _string_expr(g: _Grammar) -> str:
    if g.leaf:
        return quote(g.pick(ALL_STRINGS), g.draw)
    choice = g.draw(st.integers(0, 2))
    if choice == 0:
        return f"{g.wrapped('string')} + {g.wrapped('string')}"
    if choice == 1:
        return f"string({g.sub(g.pick(TYPES))})"
    return g.path("string")


def _list_expr(g: _Grammar) -> str:
    choice = 3 if g.leaf else g.draw(st.integers(0, 3))
    if choice == 0:
        kind = g.pick(("int", "string", "double", "dyn"))
        return "[" + ", ".join(g.sub(kind) for _ in range(g.draw(st.integers(0, 3)))) + "]"
    if choice == 1:
        source = g.wrapped(g.pick(("list", "map", "dyn")))
        var, inner = g.macro_variable()
        macro = g.pick(("map", "map_filter", "filter"))
        if macro == "map":
            return f"{source}.map({var}, {g.sub(g.pick(TYPES), inner)})"
        if macro == "map_filter":
            return f"{source}.map({var}, {g.sub('bool', inner)}, {g.sub(g.pick(TYPES), inner)})"
        return f"{source}.filter({var}, {g.sub('bool', inner)})"
    if choice == 2:
        return f"{g.wrapped('list')} + {g.wrapped('list')}"
    return g.path("list")


def _map_expr(g: _Grammar) -> str:
    if g.leaf:
        return g.path("map")
    keys = g.draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True))
    return "{" + ", ".join(f"{quote(k, g.draw)}: {g.sub('dyn')}" for k in keys) + "}"


def _timestamp_expr(g: _Grammar) -> str:
    if g.leaf:
        return "now" if g.chance(2) else f"timestamp({quote(g.pick(TIMESTAMPS), g.draw)})"
    choice = g.draw(st.integers(0, 2))
    if choice == 0:
        source = g.pick(("string", "int", "dyn"))
        return f"timestamp({g.path('timestamp') if source == 'dyn' else g.sub(source)})"
    return f"{g.wrapped('timestamp')} {g.pick(('+', '-'))} {g.wrapped('duration')}"


def _duration_expr(g: _Grammar) -> str:
    if g.leaf:
        return f"duration({quote(g.pick(DURATIONS), g.draw)})"
    choice = g.draw(st.integers(0, 2))
    if choice == 0:
        return f"duration({g.path('duration') if g.chance(2) else g.sub('string')})"
    if choice == 1:
        return f"{g.wrapped('timestamp')} - {g.wrapped('timestamp')}"
    return f"{g.wrapped('duration')} {g.pick(('+', '-'))} {g.wrapped('duration')}"


_PRODUCTIONS: dict[str, Any] = {
    "bool": _bool_expr,
    "int": lambda g: _number_expr(g, "int"),
    "double": lambda g: _number_expr(g, "double"),
    "string": _string_expr,
    "list": _list_expr,
    "map": _map_expr,
    "timestamp": _timestamp_expr,
    "duration": _duration_expr,
}


@st.composite
def expressions(
    draw: Any, wanted: str = "bool", depth: int = 4, scope: tuple[str, ...] = ()
) -> str:
    """A CEL expression meant to have type `wanted`: now and then one of another type, or
    one of the ODDITIES, or a path into the data."""
    grammar = _Grammar(draw, depth, scope)
    if grammar.chance(25):
        wanted = grammar.pick(TYPES)
    if grammar.chance(150):
        return str(grammar.pick(ODDITIES))
    if wanted == "dyn" or grammar.chance(8):
        return grammar.path(wanted)
    return str(_PRODUCTIONS[wanted](grammar))


@st.composite
def path(draw: Any, scope: tuple[str, ...] = (), wanted: str = "dyn") -> str:
    """A field path into the data, mostly to a field holding what is wanted:
    `visitor.n`, `context["s"]`, `account.m.l[0]`, `x`."""
    if scope and draw(st.integers(0, 2)) == 0:
        text = draw(st.sampled_from(scope))
        if draw(st.booleans()):
            return str(text)
    else:
        text = draw(st.sampled_from(ROOTS))
    if wanted in ("timestamp", "dyn") and draw(st.integers(0, 29)) == 0:
        return "now"
    for _ in range(draw(st.sampled_from((0, 0, 0, 0, 1, 2)))):  # a detour through a map or list
        if draw(st.integers(0, 3)):
            text += draw(st.sampled_from((".m", '["m"]', ".m", ".a")))
        else:
            text += draw(st.sampled_from((".l[0]", ".l[1]", ".tags[0]", ".l[-1]")))
    field = draw(st.sampled_from(TYPED_FIELDS.get(wanted, FIELDS)))
    return str(text + draw(st.sampled_from((f".{field}", f"[{quote(field, draw)}]"))))
