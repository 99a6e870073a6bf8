"""The two engines behind the core's `Engine`; the only module that imports a CEL runtime.

- ``cel-expr``: Google's C++ runtime (PyPI ``cel-expr-python``), the default and the
  reference: a few microseconds a rule.
- ``cel-python``: pure Python, for platforms without the C++ wheels: cel-python's parser,
  evaluated by `evaluate.py` to the same meaning.

Both compile only what `check` accepts, so a rule loads on both or on neither, and both turn
every failure while evaluating into CelEvalError: the rule does not match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, get_args

try:
    from cel_expr_python import cel
except ImportError:  # no wheel for this platform: cel-python serves alone
    cel = None

from decider.rules.cel.check import check
from decider.rules.cel.evaluate import Program as PythonProgram
from decider.rules.cel.syntax import CelCompileError, CelCompileErrors, parse
from decider.rules.cel.values import Timestamp
from decider.ruleset import CelEvalError, Engine, EngineName, Program

ENGINES: tuple[EngineName, ...] = get_args(EngineName)
_CEL_EXPR_ERROR = re.compile(r"<input>:(\d+):(\d+): (.+)")


def new_engine(name: str) -> Engine:
    if name == "cel-expr":
        if cel is None:
            raise ValueError("the cel-expr engine needs cel-expr-python, which is not installed")
        return CelExprEngine()
    if name == "cel-python":
        return CelPythonEngine()
    raise ValueError(f"unknown CEL engine {name!r}; choose one of {', '.join(ENGINES)}")


def installed_engines() -> tuple[EngineName, ...]:
    """The engines this installation can run (cel-python always)."""
    return tuple(name for name in ENGINES if name != "cel-expr" or cel is not None)


class _CelExprProgram:
    __slots__ = ("_expr",)

    def __init__(self, expr: Any) -> None:
        self._expr = expr

    def matches(self, activation: Any) -> bool:
        try:
            value = self._expr.eval(activation)
        except Exception as exc:
            raise CelEvalError(f"evaluation failed: {_first_line(exc)}") from None
        if value.type() == cel.Type.ERROR:
            raise CelEvalError(str(value.value()))
        result = value.value()
        if not isinstance(result, bool):
            raise CelEvalError(f"condition gave {value.type().name()}, not bool")
        return result


class CelExprEngine:
    name: EngineName = "cel-expr"
    off_loop = True

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

    def compile(self, source: str) -> Program:
        check(parse(source))
        try:
            expr = self._env.compile(source)
        except RuntimeError as exc:
            raise CelCompileErrors(_cel_expr_errors(str(exc))) from None
        return _CelExprProgram(expr)

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


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class CelPythonEngine:
    name: EngineName = "cel-python"
    off_loop = True  # programs are pure functions of their variables

    def compile(self, source: str) -> Program:
        expr = parse(source)
        check(expr)
        return PythonProgram(expr)

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
        }
