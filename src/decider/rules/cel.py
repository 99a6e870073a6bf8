"""The only module that imports a CEL runtime: two engines behind the core's `Engine`.

- ``cel-expr``: Google's C++ runtime (PyPI ``cel-expr-python``), the default; type-checks at
  compile time and evaluates a rule in a few microseconds.
- ``cel-python``: the pure-Python engine (``celpy`` with its CompiledRunner), kept for platforms
  without the C++ wheels. Its Environment is not thread-safe and its runner writes module
  globals: compile and evaluate on one thread (the event loop).

Rules are standard CEL over `visitor`, `account`, `context` (maps) and `now` (a timestamp),
with no custom functions. `references()` tells which of those an expression reads, from its
parse tree, so the consent gate never relies on naming conventions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from string import Template
from typing import Any, get_args

import celpy
import msgspec
from cel_expr_python import cel
from celpy import celtypes
from celpy import evaluation as celpy_evaluation
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError as CelpyEvalError
from lark import Token, Tree

from decider.ruleset import CelEvalError, Engine, EngineName, Program

ENGINES: tuple[EngineName, ...] = get_args(EngineName)
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)

# celpy logs evaluation errors with the values involved, which can be profile data.
logging.getLogger("celpy").setLevel(logging.CRITICAL + 1)


class CelCompileError(Exception):
    """A syntax or type error. Line and column are 1-based, within the expression."""

    def __init__(self, line: int, column: int, message: str) -> None:
        self.line, self.column, self.message = line, column, message
        super().__init__(f"{line}:{column}: {message}")


class CelCompileErrors(Exception):
    """Every error the compiler found in one expression."""

    def __init__(self, errors: list[CelCompileError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class Reference(msgspec.Struct, frozen=True):
    """A read of a variable, with the field path that follows it (`account.fit_score`)."""

    root: str
    path: tuple[str, ...]
    line: int
    column: int


def new_engine(name: str) -> Engine:
    if name == "cel-expr":
        return CelExprEngine()
    if name == "cel-python":
        return CelPythonEngine()
    raise ValueError(f"unknown CEL engine {name!r}; choose one of {', '.join(ENGINES)}")


# --- Google's C++ runtime -------------------------------------------------------------------

_CEL_EXPR_ERROR = re.compile(r"<input>:(\d+):(\d+): (.+)")


class _CelExprProgram:
    __slots__ = ("_expr",)

    def __init__(self, expr: Any) -> None:
        self._expr = expr

    def matches(self, activation: Any) -> bool:
        value = self._expr.eval(activation)
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
        try:
            expr = self._env.compile(source)
        except RuntimeError as exc:
            raise CelCompileErrors(_parse_cel_expr_errors(str(exc))) from None
        result = expr.return_type()
        if result not in (cel.Type.BOOL, cel.Type.DYN):
            raise CelCompileErrors(
                [CelCompileError(1, 1, f"a condition must be a bool; this one is {result.name()}")]
            )
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


def _parse_cel_expr_errors(text: str) -> list[CelCompileError]:
    found = [
        CelCompileError(int(m[1]), int(m[2]), m[3].strip()) for m in _CEL_EXPR_ERROR.finditer(text)
    ]
    return found or [CelCompileError(1, 1, text.strip())]


# --- the pure-Python engine -----------------------------------------------------------------

# celpy 0.5's CompiledRunner transpiles has() to a Python bool, not a CEL bool, so
# `has(a.b) && a.b > 1` fails when has() is false and `!has(a.b)` always fails. These three
# subclasses wrap it in BoolType, leaving the rest of celpy as it is.
_HAS_TEMPLATE = Template(
    "# ident_arg has:\n"
    "ex_${n}_h = lambda activation: ${exprlist}\n"
    "ex_${n} = lambda activation: celpy.celtypes.BoolType("
    "not isinstance(celpy.evaluation.result(activation, ex_${n}_h), CELEvalError))\n"
)


class _Phase1Transpiler(celpy_evaluation.Phase1Transpiler):
    def ident_arg(self, tree: Any) -> None:
        super().ident_arg(tree)
        if tree.children[0].value == "has":
            tree.checked_exception = (_HAS_TEMPLATE, tree.checked_exception[1])


class _Transpiler(celpy_evaluation.Transpiler):
    def transpile(self) -> None:
        _Phase1Transpiler(self).visit(self.ast)
        phase_2 = celpy_evaluation.Phase2Transpiler(self)
        phase_2.visit(self.ast)
        self.source_text = "\n".join(phase_2.statements(self.ast))
        self.executable_code = compile(self.source_text, "<cel>", "exec")


class _CompiledRunner(celpy.CompiledRunner):
    def __init__(self, environment: Any, ast: Any, functions: Any = None) -> None:
        celpy.Runner.__init__(self, environment, ast, functions)
        self.tp = _Transpiler(ast=ast, activation=self.new_activation())
        self.tp.transpile()


# celpy keeps one global parser, built with the tree class of the first Environment made; the
# compiled runner needs its own tree class, so every Environment here uses that runner.
_CELPY_ENV = celpy.Environment(runner_class=_CompiledRunner)


class _CelPythonProgram:
    __slots__ = ("_runner",)

    def __init__(self, runner: Any) -> None:
        self._runner = runner

    def matches(self, activation: Any) -> bool:
        try:
            result = self._runner.evaluate(activation)
        except CelpyEvalError as exc:
            raise CelEvalError(_celpy_message(exc)) from None
        if isinstance(result, CelpyEvalError):
            raise CelEvalError(_celpy_message(result))
        if not isinstance(result, bool | celtypes.BoolType):
            raise CelEvalError(f"condition gave {type(result).__name__}, not bool")
        return bool(result)


def _celpy_message(exc: BaseException) -> str:
    """celpy nests (message, exception class, args); keep the innermost message."""
    args: Any = exc.args
    while args and isinstance(args[-1], tuple) and args[-1]:
        if isinstance(args[0], str) and args[0] != "evaluation error":
            break
        args = args[-1]
    return str(args[0]) if args else "evaluation error"


class CelPythonEngine:
    name: EngineName = "cel-python"
    off_loop = False  # celpy's compiled runner writes module globals when it evaluates

    def compile(self, source: str) -> Program:
        try:
            return _CelPythonProgram(_CELPY_ENV.program(_CELPY_ENV.compile(source)))
        except CELParseError as exc:
            raise CelCompileErrors([_celpy_parse_error(exc)]) from None

    def activation(
        self,
        visitor: Mapping[str, Any],
        account: Mapping[str, Any],
        context: Mapping[str, Any],
        now: datetime,
    ) -> Any:
        return {
            "visitor": json_to_cel(dict(visitor)),
            "account": json_to_cel(dict(account)),
            "context": json_to_cel(dict(context)),
            "now": celtypes.TimestampType(now),
        }


def _celpy_parse_error(exc: CELParseError) -> CelCompileError:
    caret = str(exc).rstrip("\n").splitlines()
    snippet = caret[0].strip() if caret else ""
    return CelCompileError(exc.line or 1, exc.column or 1, f"syntax error near {snippet!r}")


# --- what an expression reads ---------------------------------------------------------------


def references(source: str) -> tuple[Reference, ...]:
    """Every free identifier `source` reads (a rule variable, or a typo of one), with the
    field path that follows it and its place.

    Walks celpy's parse tree (a pure-Python parser, whichever engine evaluates). Names bound
    by a macro (`roles.exists(r, r == "vp")`) are not variables and are left out. Raises
    CelCompileErrors on a syntax error.
    """
    try:
        tree = _CELPY_ENV.compile(source)
    except CELParseError as exc:
        raise CelCompileErrors([_celpy_parse_error(exc)]) from None
    return tuple(_walk(tree, (), frozenset()))


def _walk(node: Any, ancestors: tuple[Any, ...], bound: frozenset[str]) -> Iterator[Reference]:
    if not isinstance(node, Tree):
        return
    if node.data == "ident":
        token = node.children[0]
        assert isinstance(token, Token)
        name = str(token)
        if name not in bound and name not in _TYPE_NAMES:
            yield Reference(name, _field_path(node, ancestors), token.line or 1, token.column or 1)
        return
    if node.data == "member_dot_arg" and str(node.children[1]) in _MACROS:
        target, _method, args = node.children
        yield from _walk(target, (*ancestors, node), bound)
        exprs = args.children if isinstance(args, Tree) else []
        local = _macro_variable(exprs[0]) if exprs else None
        inner = bound | {local} if local else bound
        for expr in exprs[1:]:
            yield from _walk(expr, (*ancestors, node, args), inner)
        return
    for child in node.children:
        yield from _walk(child, (*ancestors, node), bound)


def _macro_variable(expr: Any) -> str | None:
    idents = [t for t in expr.iter_subtrees() if t.data == "ident"]
    return str(idents[0].children[0]) if len(idents) == 1 else None


def _field_path(ident: Any, ancestors: tuple[Any, ...]) -> tuple[str, ...]:
    """Follow `.field` selections upwards from a variable: visitor -> visitor.traits.x."""
    path: list[str] = []
    child = ident
    for parent in reversed(ancestors):
        if parent.data in ("primary", "member"):
            child = parent
            continue
        if parent.data == "member_dot" and parent.children[0] is child:
            path.append(str(parent.children[1]))
            child = parent
            continue
        break
    return tuple(path)
