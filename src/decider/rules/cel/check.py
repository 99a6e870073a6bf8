"""What a rule may say: the static check both engines run at load, before either compiles.

It types an expression as Google's C++ checker does, over `visitor`, `account`, `context`
(maps of string to dyn) and `now` (a timestamp): the same overloads in the same order, the
same type-parameter inference (a free parameter is bound by the first overload that takes
it, and stays bound), the same widening of list and map literals. A rule that checker
refuses is refused here, so it is refused on cel-python too; a property test holds the two
to each other (tests/test_cel_parity.py).

It also refuses, with their place, the constructs the two engines cannot be made to agree
on (listed in the README):

- the order of a map's keys: the C++ runtime iterates a map in an order that changes from
  process to process, so a list that `map()` or `filter()` builds from anything not known
  to be a list may be counted, searched and iterated, but not indexed or compared;
- a pattern for `matches()` that is not a literal RE2 reads (the C++ runtime logs a failed
  pattern to stderr, and one taken from the data could hold anyone's data);
- a time zone that is not a literal IANA name or `±hh:mm` offset; `int()` of a duration
  and `duration()` of an int, which the C++ checker accepts and its runtime does not.

Unsigned integers, bytes, type values and message construction are refused by the parser
(`syntax.py`): JSON has none of them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec
import re2

from decider.errors import meant
from decider.rules.cel.syntax import (
    Call,
    CelCompileError,
    CelCompileErrors,
    Comprehension,
    Expr,
    Ident,
    ListExpr,
    Lit,
    MapExpr,
    Select,
    start_of,
)
from decider.rules.cel.values import (
    load_zone,
    parse_duration,
    parse_timestamp,
    to_bool,
    to_double,
    to_int,
)
from decider.ruleset import CelEvalError


class Type(msgspec.Struct, frozen=True):
    """A static type; a `param` is a type parameter, named."""

    kind: str
    params: tuple[Type, ...] = ()
    name: str = ""

    def __str__(self) -> str:
        if self.kind in ("list", "map"):
            return f"{self.kind}({', '.join(map(str, self.params))})"
        return "dyn" if self.kind == "param" else self.kind


DYN: Final = Type("dyn")
NULL: Final = Type("null")
BOOL: Final = Type("bool")
INT: Final = Type("int")
DOUBLE: Final = Type("double")
STRING: Final = Type("string")
TIMESTAMP: Final = Type("timestamp")
DURATION: Final = Type("duration")
_A: Final = Type("param", name="A")
_B: Final = Type("param", name="B")
_LIST_A: Final = Type("list", (_A,))
_MAP_AB: Final = Type("map", (_A, _B))
ROOTS: Final[Mapping[str, Type]] = dict.fromkeys(
    ("visitor", "account", "context"), Type("map", (STRING, DYN))
) | {"now": TIMESTAMP}


class Overload(msgspec.Struct, frozen=True):
    params: tuple[Type, ...]
    result: Type
    member: bool = False  # called as target.f(args)


def _ops(
    result: Type | None, *signatures: tuple[Type, ...], member: bool = False
) -> list[Overload]:
    """Overloads of these parameter lists; `result` None: each returns its first parameter."""
    return [Overload(s, result or s[0], member) for s in signatures]


_CALENDAR = [
    Overload((TIMESTAMP,), INT, member=True),
    Overload((TIMESTAMP, STRING), INT, member=True),
]
_CLOCK = [*_CALENDAR, Overload((DURATION,), INT, member=True)]
_ORDERED = [(t, t) for t in (INT, DOUBLE, BOOL, STRING, DURATION, TIMESTAMP)]
# the C++ checker's standard library, in its order (without uint and bytes, refused here)
FUNCTIONS: Final[Mapping[str, list[Overload]]] = {
    "_+_": [
        *_ops(None, (INT, INT), (DOUBLE, DOUBLE), (DURATION, DURATION)),
        Overload((DURATION, TIMESTAMP), TIMESTAMP),
        Overload((TIMESTAMP, DURATION), TIMESTAMP),
        Overload((STRING, STRING), STRING),
        Overload((_LIST_A, _LIST_A), _LIST_A),
    ],
    "_-_": [
        *_ops(None, (INT, INT), (DOUBLE, DOUBLE), (DURATION, DURATION)),
        Overload((TIMESTAMP, DURATION), TIMESTAMP),
        Overload((TIMESTAMP, TIMESTAMP), DURATION),
    ],
    "_*_": _ops(None, (INT, INT), (DOUBLE, DOUBLE)),
    "_/_": _ops(None, (INT, INT), (DOUBLE, DOUBLE)),
    "_%_": _ops(None, (INT, INT)),
    "-_": _ops(None, (INT,), (DOUBLE,)),
    "!_": _ops(BOOL, (BOOL,)),
    "_&&_": _ops(BOOL, (BOOL, BOOL)),
    "_||_": _ops(BOOL, (BOOL, BOOL)),
    "_?_:_": [Overload((BOOL, _A, _A), _A)],
    "dyn": [Overload((_A,), DYN)],
    "int": _ops(INT, (INT,), (DOUBLE,), (STRING,), (TIMESTAMP,), (DURATION,)),
    "double": _ops(DOUBLE, (DOUBLE,), (INT,), (STRING,)),
    "bool": _ops(BOOL, (BOOL,), (STRING,)),
    "string": _ops(STRING, (STRING,), (BOOL,), (DOUBLE,), (INT,), (TIMESTAMP,), (DURATION,)),
    "timestamp": _ops(TIMESTAMP, (TIMESTAMP,), (STRING,), (INT,)),
    "duration": _ops(DURATION, (DURATION,), (STRING,), (INT,)),
    "_==_": [Overload((_A, _A), BOOL)],
    "_!=_": [Overload((_A, _A), BOOL)],
    "_[_]": [Overload((_LIST_A, INT), _A), Overload((_MAP_AB, _A), _B)],
    "@in": [Overload((_A, _LIST_A), BOOL), Overload((_A, _MAP_AB), BOOL)],
    "size": [
        Overload((_LIST_A,), INT),
        Overload((_LIST_A,), INT, member=True),
        Overload((_MAP_AB,), INT),
        Overload((_MAP_AB,), INT, member=True),
        Overload((STRING,), INT),
        Overload((STRING,), INT, member=True),
    ],
    **{op: _ops(BOOL, *_ORDERED) for op in ("_<_", "_>_", "_<=_", "_>=_")},
    "contains": _ops(BOOL, (STRING, STRING), member=True),
    "startsWith": _ops(BOOL, (STRING, STRING), member=True),
    "endsWith": _ops(BOOL, (STRING, STRING), member=True),
    "matches": [
        Overload((STRING, STRING), BOOL, member=True),
        Overload((STRING, STRING), BOOL),
    ],
    **dict.fromkeys(
        ("getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek"),
        _CALENDAR,
    ),
    **dict.fromkeys(("getHours", "getMinutes", "getSeconds", "getMilliseconds"), _CLOCK),
}
_CONVERSIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "timestamp": parse_timestamp,
    "duration": parse_duration,
    "int": to_int,
    "double": to_double,
    "bool": to_bool,
}
_HINTS = {
    "timestamp": ': write RFC 3339 with a time and an offset, "2026-11-20T12:00:00Z"',
    "duration": ': a number and a unit of h, m, s, ms, us or ns, "336h" (no day unit)',
    "bool": ': write "true" or "false"',
}
_DISPLAY = {"!_": "!", "-_": "-", "_&&_": "&&", "_||_": "||", "_?_:_": "?:", "@in": "in"}
_OFFSET = re.compile(r"[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]")
_LEGACY_NULLABLE = frozenset({"timestamp", "duration"})


_COMPARISONS = frozenset(("<", "<=", ">", ">=", "==", "!="))


def _type_hint(operator: str, kinds: list[str]) -> str:
    """How to mend the type slips rule authors make most, when `operator` takes no `kinds`."""
    found = set(kinds)
    if {"int", "double"} <= found:
        return "; write the int as a double (1.0) or convert with double()"
    if "timestamp" in found and found & {"int", "double", "string"} and operator in ("+", "-"):
        return '; add or subtract a duration: duration("24h")'
    if found == {"timestamp", "duration"} and operator in _COMPARISONS:
        return '; compare a timestamp with a timestamp: now - duration("336h")'
    if operator in _COMPARISONS and "string" in found and found & {"int", "double"}:
        return "; convert one side: int(...), double(...) or string(...)"
    if operator == "size":
        return "; size() takes a string, a list or a map"
    return ""


def check(expr: Expr, lists: frozenset[tuple[str, ...]] = frozenset()) -> Type:
    """The type of `expr`, which must be a condition (bool or dyn). `lists`: field paths known
    to hold lists (`("account", "tags")`: the profile schema's). Raises CelCompileErrors with
    every problem found."""
    checker = _Checker()
    result = checker.type_of(expr, ROOTS)
    if not checker.errors and result.kind not in ("bool", "dyn", "param"):
        checker.fail(expr, f"a condition must be a bool; this one is {result}")
    if not checker.errors:
        _Order(checker, lists).taint(expr)
    if checker.errors:
        raise CelCompileErrors(checker.errors)
    return result


class _Checker:
    """Types a tree as the C++ checker does; records each node's type for the order pass."""

    def __init__(self) -> None:
        self.errors: list[CelCompileError] = []
        self.types: dict[int, Type] = {}
        self._bindings: dict[str, Type] = {}
        self._names = itertools.count()

    def fail(self, at: Expr, message: str, *, whole: bool = False) -> Type:
        """Record a problem at `at` (`whole`: where the expression `at` begins)."""
        line, column = start_of(at) if whole else (at.line, at.column)
        self.errors.append(CelCompileError(line, column, message))
        return DYN

    def fresh(self) -> Type:
        return Type("param", name=f"T%{next(self._names)}")

    def type_of(self, expr: Expr, scope: Mapping[str, Type]) -> Type:
        found = self._type_of(expr, scope)
        self.types[id(expr)] = found
        return found

    def _type_of(self, expr: Expr, scope: Mapping[str, Type]) -> Type:
        if isinstance(expr, Lit):
            return _literal_type(expr.value)
        if isinstance(expr, Ident):
            if expr.name in scope:
                return scope[expr.name]
            return self.fail(expr, undeclared(expr.name))
        if isinstance(expr, Select):
            return self.select(expr, scope)
        if isinstance(expr, ListExpr):
            return self.list_type([self.type_of(item, scope) for item in expr.items])
        if isinstance(expr, MapExpr):
            return self.map_type(expr, scope)
        if isinstance(expr, Comprehension):
            return self.comprehension(expr, scope)
        return self.call(expr, scope)

    # --- literals ---------------------------------------------------------------------------

    def list_type(self, items: list[Type]) -> Type:
        return self.substituted(Type("list", (self._join(items),)))

    def map_type(self, expr: MapExpr, scope: Mapping[str, Type]) -> Type:
        typed = [(self.type_of(k, scope), self.type_of(v, scope)) for k, v in expr.entries]
        keys, values = [k for k, _ in typed], [v for _, v in typed]
        literals: set[tuple[type, Any]] = set()
        for (node, _), key_type in zip(expr.entries, keys, strict=True):
            if key_type.kind not in ("int", "bool", "string", "dyn", "param"):
                self.fail(node, f"a map key must be a string, int or bool, not {key_type}")
            if isinstance(node, Lit):  # 1 and true are two keys: their types tell them apart
                if (type(node.value), node.value) in literals:
                    self.fail(
                        node, f"the key {node.value!r} is given twice: the map cannot be built"
                    )
                literals.add((type(node.value), node.value))
        key, value = self._join(keys), self.fresh()
        for value_type in values:  # as the C++ checker does: each value binds at once
            if not self.assignable(value_type, value):
                value = DYN
        return self.substituted(Type("map", (key, value)))

    def _join(self, types: list[Type]) -> Type:
        """The type a literal's elements (or keys) share: a fresh type param all of them are
        assignable to, its bindings kept; dyn as soon as one is not, bindings dropped (as the
        C++ checker joins them)."""
        element = self.fresh()
        prospective: dict[str, Type] = {}
        for item in types:
            attempt = dict(prospective)
            if self._assignable(item, element, attempt):
                prospective = attempt
            else:
                element = DYN
        if element != DYN:
            self._bindings.update(prospective)
        return element

    # --- selection, comprehensions, calls ---------------------------------------------------

    def select(self, expr: Select, scope: Mapping[str, Type]) -> Type:
        operand = self.type_of(expr.operand, scope)
        if operand.kind == "map":
            field = operand.params[1]
        elif operand.kind == "dyn" or (operand.kind == "param" and self.assignable(DYN, operand)):
            field = DYN
        else:
            what = "has()" if expr.test else "a field"
            return self.fail(expr, f"{what} needs a map; this is a {operand} ({expr.field!r})")
        return BOOL if expr.test else field

    def comprehension(self, expr: Comprehension, scope: Mapping[str, Type]) -> Type:
        source = self.type_of(expr.range, scope)
        if source.kind in ("list", "map"):
            item = source.params[0]
        elif source.kind == "dyn":
            item = DYN
        else:
            self.fail(expr.range, f"{expr.macro}() ranges over a list or a map, not a {source}")
            item = DYN
        inner = {**scope, expr.var: item}
        args = [self.type_of(arg, inner) for arg in expr.args]
        at = expr.args[0]
        if expr.macro in ("all", "exists"):
            self.resolve("_&&_" if expr.macro == "all" else "_||_", [BOOL, args[0]], at)
            return BOOL
        if expr.macro == "exists_one":
            self.resolve("_+_", [INT, INT], at)
            self.resolve("_?_:_", [args[0], INT, INT], at)
            self.resolve("_==_", [INT, INT], at)
            return BOOL
        accumulator = Type("list", (self.fresh(),))
        added = self.list_type([args[-1] if expr.macro == "map" else item])
        step = self.resolve("_+_", [accumulator, added], at)
        if expr.macro == "filter" or len(args) == 2:
            self.resolve("_?_:_", [args[0], step, accumulator], at)
        return self.substituted(accumulator)

    def call(self, expr: Call, scope: Mapping[str, Type]) -> Type:
        operands = ((expr.target,) if expr.target is not None else ()) + expr.args
        types = [self.type_of(operand, scope) for operand in operands]
        if expr.function in ("_&&_", "_||_"):  # a run of the operator, each operand a bool
            for operand_type in types:
                self.resolve(expr.function, [BOOL, operand_type], expr)
            return BOOL
        member = expr.target is not None
        overloads = [
            o
            for o in FUNCTIONS.get(expr.function, ())
            if o.member == member and len(o.params) == len(types)
        ]
        if not overloads:
            shape = f".{expr.function}()" if member else f"{expr.function}()"
            return self.fail(expr, f"unknown function {shape} with {len(expr.args)} argument(s)")
        result = self.resolve(expr.function, types, expr, overloads)
        self.refuse_unaligned(expr, operands, types)
        return result

    def resolve(
        self, name: str, args: list[Type], at: Expr, overloads: list[Overload] | None = None
    ) -> Type:
        """The C++ checker's overload resolution: every overload that fits binds what it
        binds; one result, or dyn when those that fit disagree."""
        result: Type | None = None
        if overloads is None:
            overloads = [o for o in FUNCTIONS[name] if not o.member and len(o.params) == len(args)]
        for overload in overloads:
            names: dict[str, Type] = {}
            params = [self.instantiate(p, names) for p in overload.params]
            returns = self.instantiate(overload.result, names)
            prospective: dict[str, Type] = {}
            if all(self._assignable(a, p, prospective) for a, p in zip(args, params, strict=True)):
                self._bindings.update(prospective)
                result = returns if result is None or result == returns else DYN
        if result is None:
            shown = ", ".join(str(self.substituted(a, free_to_dyn=True)) for a in args)
            operator = _DISPLAY.get(name, name.strip("_"))
            hint = _type_hint(operator, [self.substituted(a).kind for a in args])
            return self.fail(at, f"no overload of {operator!r} takes ({shown}){hint}")
        return self.substituted(result)

    def refuse_unaligned(self, expr: Call, operands: tuple[Expr, ...], types: list[Type]) -> None:
        name = expr.function
        kinds = [self.substituted(t).kind for t in types]
        if name == "int" and kinds == ["duration"]:
            self.fail(expr, "int() of a duration is not supported; use .getSeconds()")
        if name == "duration" and kinds == ["int"]:
            self.fail(expr, 'duration() reads a string, such as "90m"')
        if name in _CONVERSIONS and len(operands) == 1:
            self.refuse_unconvertible(name, operands[0])
        if name == "matches" and len(operands) == 2:
            self.refuse_pattern(operands[1])
        if FUNCTIONS.get(name) in (_CALENDAR, _CLOCK) and len(operands) == 2:
            zone = operands[1]
            if not (
                isinstance(zone, Lit) and isinstance(zone.value, str) and known_zone(zone.value)
            ):
                self.fail(
                    zone,
                    'a time zone must be a literal ±hh:mm offset ("+01:00") or a name in the '
                    'system\'s time zone database ("Europe/Paris"; the tzdata package)',
                    whole=True,
                )

    def refuse_unconvertible(self, name: str, literal: Expr) -> None:
        """A string literal the conversion can never read (`duration("14d")`) would make the
        rule fail on every decision: refused where it is written."""
        if not (isinstance(literal, Lit) and isinstance(literal.value, str)):
            return
        try:
            _CONVERSIONS[name](literal.value)
        except CelEvalError:
            hint = _HINTS.get(name, "")
            self.fail(literal, f"{name}() cannot read {literal.value!r}{hint}", whole=True)

    def refuse_pattern(self, pattern: Expr) -> None:
        """A regular expression must be a literal that compiles: the C++ runtime logs a
        pattern it cannot compile to stderr, and a pattern from the data could be anyone's."""
        if not (isinstance(pattern, Lit) and isinstance(pattern.value, str)):
            self.fail(pattern, "the pattern of matches() must be a literal string", whole=True)
            return
        why = regex_problem(pattern.value)
        if why is not None:
            self.fail(pattern, f"not a regular expression RE2 reads: {why}")

    # --- type inference ---------------------------------------------------------------------

    def instantiate(self, t: Type, names: dict[str, Type]) -> Type:
        """An overload's type parameters, made fresh for one use."""
        if t.kind == "param":
            if t.name.startswith("T%"):
                return t
            if t.name not in names:
                names[t.name] = self.fresh()
            return names[t.name]
        if t.params:
            return Type(t.kind, tuple(self.instantiate(p, names) for p in t.params))
        return t

    def _walk(self, t: Type, prospective: Mapping[str, Type]) -> Type:
        while t.kind == "param":
            bound = prospective.get(t.name) or self._bindings.get(t.name)
            if bound is None:
                break
            t = bound
        return t

    def substituted(self, t: Type, *, free_to_dyn: bool = False) -> Type:
        t = self._walk(t, {})
        if t.kind == "param":
            return DYN if free_to_dyn else t
        if t.params:
            return Type(
                t.kind, tuple(self.substituted(p, free_to_dyn=free_to_dyn) for p in t.params)
            )
        return t

    def assignable(self, source: Type, target: Type) -> bool:
        prospective: dict[str, Type] = {}
        if self._assignable(source, target, prospective):
            self._bindings.update(prospective)
            return True
        return False

    def _assignable(self, source: Type, target: Type, prospective: dict[str, Type]) -> bool:
        to, from_ = self._walk(target, prospective), self._walk(source, prospective)
        if to == from_:
            return True
        if to.kind == "param" or from_.kind == "param":
            return self._bind(from_, to, prospective)
        if target.kind == "param" and target.name in prospective and from_.kind == "dyn":
            prospective[target.name] = from_  # widen a binding to dyn: `true ? 1 : dyn`
            return True
        if (from_.kind == "null" and to.kind in _LEGACY_NULLABLE) or (
            to.kind == "null" and from_.kind in _LEGACY_NULLABLE
        ):
            return True
        if from_.kind == "dyn" or to.kind == "dyn":
            return True
        if to.kind != from_.kind or len(to.params) != len(from_.params):
            return False
        return all(
            self._assignable(f, t, prospective)
            for f, t in zip(from_.params, to.params, strict=True)
        )

    def _bind(self, from_: Type, to: Type, prospective: dict[str, Type]) -> bool:
        if to.kind == "param" and from_.kind == "param":
            if to.name != from_.name:
                prospective[from_.name] = to
            return True
        if to.kind == "param" and not _occurs(to.name, from_):
            prospective[to.name] = from_
            return True
        if from_.kind == "param" and not _occurs(from_.name, to):
            prospective[from_.name] = to
            return True
        return from_.kind == "dyn" or to.kind == "dyn"


def _occurs(name: str, t: Type) -> bool:
    return (t.kind == "param" and t.name == name) or any(_occurs(name, p) for p in t.params)


def _literal_type(value: object) -> Type:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    return STRING


def regex_problem(pattern: str) -> str | None:
    """Why RE2 (the library both engines match with) cannot compile `pattern`, or None."""
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    return None


def known_zone(name: str) -> bool:
    """A zone both runtimes read alike: UTC, a ±hh:mm offset, or a zone of the system's tz
    database (which the C++ runtime reads, and so does the Python engine)."""
    return name == "UTC" or bool(_OFFSET.fullmatch(name)) or load_zone(name) is not None


# --- the order of a map's keys ----------------------------------------------------------------

_ORDER_MESSAGE = (
    "this list's order is the order of a map's keys, which the engines do not share: count "
    "it (size), search it (in) or iterate it (all, exists), but do not index or compare it"
)


class _Taint(msgspec.Struct, frozen=True):
    """`own`: this list's order comes from a map's keys; `inner`: a value within has such a
    list."""

    own: bool = False
    inner: bool = False

    @property
    def any(self) -> bool:
        return self.own or self.inner


_CLEAN: Final = _Taint()


def _field_path(expr: Expr, scope: Mapping[str, _Taint]) -> tuple[str, ...] | None:
    """`account.tags` as ("account", "tags"): a variable's fields, if `expr` is only that."""
    fields: list[str] = []
    while isinstance(expr, Select) and not expr.test:
        fields.append(expr.field)
        expr = expr.operand
    if isinstance(expr, Ident) and expr.name not in scope:
        return (expr.name, *reversed(fields))
    return None


class _Order:
    """Finds where a map's key order could decide the outcome, and refuses it there."""

    def __init__(self, checker: _Checker, lists: frozenset[tuple[str, ...]]) -> None:
        self.checker, self.lists = checker, lists

    def taint(self, expr: Expr, scope: Mapping[str, _Taint] | None = None) -> _Taint:
        scope = scope or {}
        if isinstance(expr, Ident):
            return scope.get(expr.name, _CLEAN)
        if isinstance(expr, Select):
            container = self.taint(expr.operand, scope)
            return _CLEAN if expr.test else _Taint(container.inner, container.inner)
        if isinstance(expr, ListExpr):
            return _Taint(False, any(self.taint(i, scope).any for i in expr.items))
        if isinstance(expr, MapExpr):
            parts = [self.taint(part, scope).any for entry in expr.entries for part in entry]
            return _Taint(False, any(parts))
        if isinstance(expr, Comprehension):
            return self.comprehension(expr, scope)
        if isinstance(expr, Call):
            return self.call(expr, scope)
        return _CLEAN

    def comprehension(self, expr: Comprehension, scope: Mapping[str, _Taint]) -> _Taint:
        source = self.taint(expr.range, scope)
        element = _Taint(source.inner, source.inner)
        args = [self.taint(arg, {**scope, expr.var: element}) for arg in expr.args]
        if expr.macro not in ("map", "filter"):
            return _CLEAN
        range_type = self.checker.types.get(id(expr.range), DYN)
        is_list = range_type.kind == "list" or _field_path(expr.range, scope) in self.lists
        own = not is_list or source.own
        inner = args[-1].any if expr.macro == "map" else source.inner
        return _Taint(own, inner)

    def call(self, expr: Call, scope: Mapping[str, _Taint]) -> _Taint:
        operands = ((expr.target,) if expr.target is not None else ()) + expr.args
        taints = [self.taint(operand, scope) for operand in operands]
        name = expr.function
        if (
            (name in ("_==_", "_!=_") and any(t.any for t in taints))
            or (name == "_[_]" and taints[0].own)
            or (name == "@in" and (taints[0].any or taints[1].inner))
        ):
            self.checker.fail(expr, _ORDER_MESSAGE)
        if name == "_[_]":
            return _Taint(taints[0].inner, taints[0].inner)
        if name in ("_+_", "dyn"):
            return _Taint(any(t.own for t in taints), any(t.inner for t in taints))
        if name == "_?_:_":
            return _Taint(taints[1].own or taints[2].own, taints[1].inner or taints[2].inner)
        return _CLEAN


def undeclared(root: str, named: Iterable[str] = ()) -> str:
    """Why `root` cannot be read, with the name likely meant: rules read the variables and
    the named conditions."""
    named = sorted(named)
    likely = meant(root, [*ROOTS, *named])
    known = f" and the named conditions ({', '.join(named)})" if named else ""
    return f"undeclared reference to {root!r}{likely}; rules read {', '.join(ROOTS)}{known}"
