"""The two engines behind the core's `Engine`; the only module that imports a CEL runtime.

- ``cel-expr``: Google's C++ runtime (PyPI ``cel-expr-python``), the default and the
  reference: a few microseconds a rule.
- ``cel-python``: pure Python, for platforms without the C++ wheels: cel-python's parser,
  evaluated by `evaluate.py` to the same meaning.

Both compile only what `check` accepts, so a rule loads on both or on neither, and both turn
every failure while evaluating into CelEvalError: the rule does not match. Both stop an
evaluation at its 10,000th comprehension step (the C++ runtime's own budget, which
`evaluate.py` counts the same way), so no rule iterates for long over what a caller sent.

Both chain conditions that run no comprehension (so share no step budget): cel-expr as one
compiled expression, `(c0) ? 0 : (c1) ? 1 : ... : -1`, one call into C++ for many rules
(made from sources the checker already accepted, each alone); cel-python as one loop over
the conditions' closures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, get_args

try:
    from cel_expr_python import cel
except ImportError:  # no wheel for this platform: cel-python serves alone
    cel = None

from decider.errors import EngineUnavailable
from decider.rules.cel.check import check
from decider.rules.cel.evaluate import BUDGET, OVER_LIMIT, Budget, iterates
from decider.rules.cel.evaluate import Chain as PythonChain
from decider.rules.cel.evaluate import Program as PythonProgram
from decider.rules.cel.syntax import CelCompileError, CelCompileErrors, parse
from decider.rules.cel.values import Timestamp
from decider.ruleset import CelEvalError, Chain, Engine, EngineName, Program

ENGINES: tuple[EngineName, ...] = get_args(EngineName)
_CEL_EXPR_ERROR = re.compile(r"<input>:(\d+):(\d+): (.+)")


def new_engine(name: str) -> Engine:
    if name == "cel-expr":
        if cel is None:
            raise EngineUnavailable(
                "the cel-expr engine needs cel-expr-python, which is not installed here; "
                "set DECIDER_ENGINE=cel-python (or --engine cel-python)"
            )
        return CelExprEngine()
    if name == "cel-python":
        return CelPythonEngine()
    raise ValueError(f"unknown CEL engine {name!r}; choose one of {', '.join(ENGINES)}")


def installed_engines() -> tuple[EngineName, ...]:
    """The engines this installation can run (cel-python always)."""
    return tuple(name for name in ENGINES if name != "cel-expr" or cel is not None)


class _CelExprProgram:
    __slots__ = ("_expr", "iterates", "source")

    def __init__(self, expr: Any, source: str, *, iterates: bool) -> None:
        self._expr, self.source, self.iterates = expr, source, iterates

    def matches(self, activation: Any) -> bool:
        try:
            value = self._expr.eval(activation)
        except Exception as exc:  # e.g. RuntimeError for a map with a key twice
            raise CelEvalError(plain_error(str(exc))) from None
        result = value.value()
        if type(result) is bool:  # an error's value is its message: asking its type costs more
            return result
        if value.type() == cel.Type.ERROR:
            raise CelEvalError(plain_error(str(result)))
        raise CelEvalError(f"condition gave {value.type().name()}, not bool")


class _CelExprChain:
    __slots__ = ("_expr",)

    def __init__(self, expr: Any) -> None:
        self._expr = expr

    def first(self, activation: Any) -> int:
        try:
            result = self._expr.eval(activation).value()
        except Exception:
            raise CelEvalError("a chained condition failed") from None
        if type(result) is not int:  # an error: some condition failed or gave no bool
            raise CelEvalError("a chained condition failed")
        return result


class CelExprEngine:
    name: EngineName = "cel-expr"

    def __init__(self) -> None:
        dyn_map = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
        self._env = cel.NewEnv(
            variables={
                "visitor": dyn_map,
                "account": dyn_map,
                "context": dyn_map,
                "now": cel.Type.TIMESTAMP,
            }
        )

    def compile(self, source: str, lists: frozenset[tuple[str, ...]] = frozenset()) -> Program:
        tree = parse(source)
        check(tree, lists)
        try:
            expr = self._env.compile(source)
        except RuntimeError as exc:
            raise CelCompileErrors(_cel_expr_errors(str(exc))) from None
        return _CelExprProgram(expr, source, iterates=iterates(tree))

    def chainable(self, program: Program) -> bool:
        return isinstance(program, _CelExprProgram) and not program.iterates

    def chain(self, programs: Sequence[Program]) -> Chain | None:
        sources = [p.source for p in programs if isinstance(p, _CelExprProgram) and not p.iterates]
        if len(sources) != len(programs):
            return None
        # parenthesized (a condition may itself be `a ? b : c`) on lines of their own (it
        # may end in a // comment)
        text = "".join(f"(\n{source}\n) ? {i} : " for i, source in enumerate(sources)) + "-1"
        try:
            return _CelExprChain(self._env.compile(text))
        except RuntimeError:  # e.g. the parser's nesting limit: the caller chains fewer
            return None

    def activation(
        self,
        visitor: Mapping[str, Any],
        account: Mapping[str, Any],
        context: Mapping[str, Any],
        now: datetime,
    ) -> Any:
        return self._env.Activation(
            {"visitor": visitor, "account": account, "context": context, "now": now}
        )


def _cel_expr_errors(text: str) -> list[CelCompileError]:
    found = [
        CelCompileError(int(m[1]), int(m[2]), m[3].strip()) for m in _CEL_EXPR_ERROR.finditer(text)
    ]
    return found or [CelCompileError(1, 1, text.strip())]


# the C++ runtime's messages, in words that hold no value: its own can quote a key or a
# number from the profile ("Key not found in map : \"evaluation\""), and they reach explain
_PLAIN_ERRORS = [
    (re.compile(r"Iteration budget exceeded"), OVER_LIMIT),
    (re.compile(r"No matching overloads? found : ([\w@<>=!?:&|+*/%().,\[\] -]+)"), None),
    (re.compile(r"Key not found in map"), "no such key"),
    (re.compile(r"Index error: index="), "index out of range"),
    (re.compile(r"Index error: expected integer type, got (\w+)"), "a list index must be an int"),
    (re.compile(r"Invalid map key type: '(\w+)'"), "invalid map key type"),
    (re.compile(r"duplicate key in map"), "duplicate key in map"),
    (re.compile(r"Applying SELECT to non-message type"), "no field on a value that is no map"),
    (re.compile(r"Invalid container type"), "no list or map to index"),
    (re.compile(r"integer overflow"), "integer overflow"),
    (re.compile(r"divide by zero"), "divide by zero"),
    (re.compile(r"modulus by zero"), "modulus by zero"),
    (re.compile(r"timestamp overflow"), "timestamp overflow"),
    (re.compile(r"Duration .* (above|below) (maximum|minimum) allowed"), "duration out of range"),
    (re.compile(r"String to Timestamp conversion failed"), "cannot convert string to timestamp"),
    (re.compile(r"String to Duration conversion failed"), "cannot convert string to duration"),
    (re.compile(r"Type conversion error from 'string' to 'bool'"), "cannot convert string to bool"),
    (re.compile(r"cannot convert string to (int|double)"), None),
    (re.compile(r"double out of int64 range"), "double out of int64 range"),
    (re.compile(r"Invalid timezone"), "invalid timezone"),
]


def plain_error(message: str) -> str:
    """A C++ runtime error as a known phrase, or a plain "evaluation failed"."""
    for pattern, phrase in _PLAIN_ERRORS:
        found = pattern.search(message)
        if found:
            return phrase or (
                f"no matching overload for {found[1]}"
                if "overload" in pattern.pattern
                else found[0]
            )
    return "evaluation failed"


class CelPythonEngine:
    name: EngineName = "cel-python"

    def compile(self, source: str, lists: frozenset[tuple[str, ...]] = frozenset()) -> Program:
        expr = parse(source)
        check(expr, lists)
        return PythonProgram(expr)

    def chainable(self, program: Program) -> bool:
        return isinstance(program, PythonProgram) and program.chainable

    def chain(self, programs: Sequence[Program]) -> Chain | None:
        chained = [p for p in programs if isinstance(p, PythonProgram) and p.chainable]
        return PythonChain(chained) if len(chained) == len(programs) else None

    def activation(
        self,
        visitor: Mapping[str, Any],
        account: Mapping[str, Any],
        context: Mapping[str, Any],
        now: datetime,
    ) -> Any:
        return {
            "visitor": visitor,
            "account": account,
            "context": context,
            "now": Timestamp.of(now),
            BUDGET: Budget(),  # spent by one evaluation at a time, refilled for each
        }
