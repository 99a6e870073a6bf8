"""The pure-Python engine's evaluator: a checked tree compiled once into nested closures.

Each node becomes a function of the variables (a dict), so a rule costs a few calls when
it runs and nothing is looked up by name. Errors are CelEvalError exceptions; `&&`, `||`
and the all/exists macros absorb them as CEL says (`false && error` is false, either way
round), and everything else lets them through, so the rule does not match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from decider.rules.cel import values
from decider.rules.cel.syntax import (
    Call,
    Comprehension,
    Expr,
    Ident,
    ListExpr,
    Lit,
    MapExpr,
    Select,
)
from decider.ruleset import CelEvalError

Variables = dict[str, Any]
Compiled = Callable[[Variables], Any]

_OPERATIONS: Mapping[str, Callable[..., Any]] = {
    "_==_": values.equal,
    "_!=_": values.not_equal,
    "_<_": values.less,
    "_<=_": values.less_equal,
    "_>_": values.greater,
    "_>=_": values.greater_equal,
    "_+_": values.add,
    "_-_": values.subtract,
    "_*_": values.multiply,
    "_/_": values.divide,
    "_%_": values.modulo,
    "-_": values.negate,
    "!_": values.logical_not,
    "_[_]": values.index,
    "@in": values.contained,
    "size": values.size,
    "contains": values.contains,
    "startsWith": values.starts_with,
    "endsWith": values.ends_with,
    "matches": values.matches,
    "int": values.to_int,
    "double": values.to_double,
    "string": values.to_string,
    "bool": values.to_bool,
    "timestamp": values.to_timestamp,
    "duration": values.to_duration,
    "dyn": values.identity,
    "getFullYear": values.get_full_year,
    "getMonth": values.get_month,
    "getDate": values.get_date,
    "getDayOfMonth": values.get_day_of_month,
    "getDayOfYear": values.get_day_of_year,
    "getDayOfWeek": values.get_day_of_week,
    "getHours": values.get_hours,
    "getMinutes": values.get_minutes,
    "getSeconds": values.get_seconds,
    "getMilliseconds": values.get_milliseconds,
}


def compile_expr(expr: Expr) -> Compiled:
    """A function of the variables that evaluates `expr` (already checked)."""
    if isinstance(expr, Lit):
        constant = expr.value
        return lambda variables: constant
    if isinstance(expr, Ident):
        name = expr.name
        return lambda variables: variables[name]
    if isinstance(expr, Select):
        return _select(expr)
    if isinstance(expr, ListExpr):
        items = tuple(compile_expr(item) for item in expr.items)
        return lambda variables: [item(variables) for item in items]
    if isinstance(expr, MapExpr):
        entries = tuple((compile_expr(k), compile_expr(v)) for k, v in expr.entries)
        return lambda variables: values.build_map((k(variables), v(variables)) for k, v in entries)
    if isinstance(expr, Comprehension):
        return _comprehension(expr)
    return _call(expr)


def _select(expr: Select) -> Compiled:
    operand, field = compile_expr(expr.operand), expr.field
    if expr.test:
        return lambda variables: values.has(operand(variables), field)
    return lambda variables: values.select(operand(variables), field)


def _call(expr: Call) -> Compiled:
    name = expr.function
    if name in ("_&&_", "_||_"):
        return _logical(tuple(map(compile_expr, expr.args)), absorbing=name == "_||_")
    if name == "_?_:_":
        return _conditional(*map(compile_expr, expr.args))
    operation = _OPERATIONS[name]
    operands = ((expr.target,) if expr.target is not None else ()) + expr.args
    compiled = tuple(compile_expr(operand) for operand in operands)
    if len(compiled) == 1:
        (only,) = compiled
        return lambda variables: operation(only(variables))
    if len(compiled) == 2:
        left, right = compiled
        return lambda variables: operation(left(variables), right(variables))
    return lambda variables: operation(*(c(variables) for c in compiled))


def _attempt(compiled: Compiled, variables: Variables) -> Any:
    """The value, or the exception that stands for an error (absorbed or raised later)."""
    try:
        return compiled(variables)
    except Exception as exc:
        return _Failure(exc)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _logical(operands: tuple[Compiled, ...], *, absorbing: bool) -> Compiled:
    """A run of `&&` (absorbing False) or `||` (absorbing True): the absorbing value wins
    wherever it stands; errors and non-bools lose to it, and otherwise are the result."""
    name = "_||_" if absorbing else "_&&_"
    wins: bool = absorbing

    def run(variables: Variables) -> bool:
        failed: list[Any] = []
        for operand in operands:
            value: object = _attempt(operand, variables)
            if value is wins:
                return wins
            if type(value) is not bool and not failed:
                failed.append(value)
        if failed:
            _raise(failed[0], failed[0], name)
        return not wins

    return run


def _raise(a: Any, b: Any, name: str) -> NoReturn:
    for side in (a, b):
        if isinstance(side, _Failure):
            raise side.error
    values.no_overload(name, a, b)


def _conditional(condition: Compiled, then: Compiled, otherwise: Compiled) -> Compiled:
    def run(variables: Variables) -> Any:
        chosen = condition(variables)
        if chosen is True:
            return then(variables)
        if chosen is False:
            return otherwise(variables)
        values.no_overload("_?_:_", chosen)

    return run


def _comprehension(expr: Comprehension) -> Compiled:
    source, var = compile_expr(expr.range), expr.var
    args = tuple(compile_expr(arg) for arg in expr.args)
    macro = _MACROS[expr.macro] if len(args) == 1 else _map_filtered

    def run(variables: Variables) -> Any:
        items = values.iterate(source(variables))
        scope = dict(variables)  # the macro's variable shadows, for its own arguments only
        return macro(items, scope, var, *args)

    return run


def _all(items: Any, scope: Variables, var: str, condition: Compiled) -> bool:
    failed: list[Any] = []  # the first error or non-bool, raised if no False absorbs it
    for item in items:
        scope[var] = item
        result = _attempt(condition, scope)
        if result is False:
            return False
        if result is not True and not failed:
            failed.append(result)
    if failed:
        _raise(failed[0], failed[0], "_&&_")
    return True


def _exists(items: Any, scope: Variables, var: str, condition: Compiled) -> bool:
    failed: list[Any] = []
    for item in items:
        scope[var] = item
        result = _attempt(condition, scope)
        if result is True:
            return True
        if result is not False and not failed:
            failed.append(result)
    if failed:
        _raise(failed[0], failed[0], "_||_")
    return False


def _exists_one(items: Any, scope: Variables, var: str, condition: Compiled) -> bool:
    count = 0
    for item in items:
        scope[var] = item
        result = condition(scope)
        if type(result) is not bool:
            values.no_overload("exists_one", result)
        count += result
    return count == 1


def _map(items: Any, scope: Variables, var: str, transform: Compiled) -> list[Any]:
    mapped = []
    for item in items:
        scope[var] = item
        mapped.append(transform(scope))
    return mapped


def _filter(items: Any, scope: Variables, var: str, condition: Compiled) -> list[Any]:
    kept = []
    for item in items:
        scope[var] = item
        keep = condition(scope)
        if type(keep) is not bool:
            values.no_overload("filter", keep)
        if keep:
            kept.append(item)
    return kept


def _map_filtered(
    items: Any, scope: Variables, var: str, condition: Compiled, transform: Compiled
) -> list[Any]:
    mapped = []
    for item in items:
        scope[var] = item
        keep = condition(scope)
        if type(keep) is not bool:
            values.no_overload("map", keep)
        if keep:
            mapped.append(transform(scope))
    return mapped


_MACROS: Mapping[str, Callable[..., Any]] = {
    "all": _all,
    "exists": _exists,
    "exists_one": _exists_one,
    "map": _map,
    "filter": _filter,
}


class Program:
    """A compiled condition of the pure-Python engine."""

    __slots__ = ("_run",)

    def __init__(self, expr: Expr) -> None:
        self._run = compile_expr(expr)

    def matches(self, activation: Variables) -> bool:
        try:
            result = self._run(activation)
        except CelEvalError:
            raise
        except Exception as exc:
            raise CelEvalError(f"evaluation failed: {type(exc).__name__}") from None
        if type(result) is not bool:
            raise CelEvalError(f"condition gave {values.kind(result)}, not bool")
        return result
