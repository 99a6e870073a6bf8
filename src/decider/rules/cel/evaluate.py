"""The pure-Python engine's evaluator: a checked tree compiled once into nested closures.

Each node becomes a function of the variables (a dict), so a rule costs a few calls when
it runs and nothing is looked up by name. Errors are CelEvalError exceptions; `&&`, `||`
and the all/exists macros absorb them as CEL says (`false && error` is false, either way
round), and everything else lets them through, so the rule does not match.

One evaluation may take at most MAX_ITERATIONS comprehension steps, counted as Google's
runtime counts them (every item a macro fetches, all macros of the evaluation together), so
a rule over a long list the caller sent cannot hold the event loop. Going over is no error
`&&` or `||` can absorb: the evaluation stops there, as in the C++ runtime, and the rule
fails to evaluate. Where the C++ runtime evaluates on after an error (every argument of a
function, every item of map, filter and exists_one), we do too when what remains iterates,
so the two runtimes run out at the same expressions.

A step can still cost as much as a value the caller sent (`p in context.cart` compares `p` to
every item), so the steps of one activation (one decision's rules, about one person) must
also fit in TIME_LIMIT_S of wall time, checked at every step; past it, each rule that iterates
fails to evaluate. The C++ runtime has no such clock: a request's context is bounded
instead (decider.model.MAX_VALUES), which bounds what its steps cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
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
    contains,
)
from decider.ruleset import CelEvalError

Variables = dict[str, Any]
Compiled = Callable[[Variables], Any]

# the C++ runtime's comprehension budget: its 10,000th step in one evaluation fails it
MAX_ITERATIONS = 9_999
OVER_LIMIT = (
    f"iteration limit: more than {MAX_ITERATIONS:,} comprehension steps "
    "(all, exists, exists_one, map, filter) in one evaluation"
)
TIME_LIMIT_S = 0.05
OVER_TIME = (
    f"time limit: comprehensions ran past {TIME_LIMIT_S * 1000:.0f} ms in one decision "
    "(the pure-Python engine's limit)"
)
BUDGET = "@budget"  # where the steps left live among the variables; no CEL name has an @


class Budget:
    """Comprehension steps left in one evaluation, every macro of it spending from one; and
    when the activation's comprehensions must be done by."""

    __slots__ = ("deadline", "left")

    def __init__(self) -> None:
        self.left = MAX_ITERATIONS
        self.deadline = perf_counter() + TIME_LIMIT_S


class _OverLimit(Exception):
    """The evaluation ran out of steps: it ends, whatever `&&` or `||` stands around it."""


class _OverTime(_OverLimit):
    """The activation ran out of time."""


# what ends an evaluation rather than failing an expression: nothing absorbs it
_ENDS = (_OverLimit, values.Halt)


def _spend(budget: Budget, steps: int) -> None:
    budget.left -= steps
    if budget.left < 0:
        raise _OverLimit
    _tick(budget)


def _tick(budget: Budget) -> None:
    """Each item a macro evaluates its body for checks the clock (map, filter and exists_one
    pay their steps up front)."""
    if perf_counter() > budget.deadline:
        raise _OverTime


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
        if _iterates_after_first(expr.items):
            return _strict(items, list)
        return lambda variables: [item(variables) for item in items]
    if isinstance(expr, MapExpr):
        parts = tuple(part for entry in expr.entries for part in entry)
        if _iterates_after_first(parts):
            return _strict(tuple(map(compile_expr, parts)), _pairs_to_map)
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
    if all(isinstance(operand, Lit) for operand in operands):
        folded = _fold(operation, operands)
        if folded is not None:
            return folded
    compiled = tuple(compile_expr(operand) for operand in operands)
    if _iterates_after_first(operands):
        return _strict(compiled, lambda results: operation(*results))
    if len(compiled) == 1:
        (only,) = compiled
        return lambda variables: operation(only(variables))
    if len(compiled) == 2:
        left, right = compiled
        return lambda variables: operation(left(variables), right(variables))
    return lambda variables: operation(*(c(variables) for c in compiled))


def _fold(operation: Callable[..., Any], operands: tuple[Expr, ...]) -> Compiled | None:
    """A call on literals (`duration("336h")`) computed once, at load; one that fails is left
    to fail when it runs, as it would unfolded."""
    try:
        constant = operation(*(operand.value for operand in operands if isinstance(operand, Lit)))
    except Exception:
        return None
    return lambda variables: constant


def iterates(expr: Expr) -> bool:
    """Does evaluating `expr` run a comprehension (and so spend steps)?"""
    return contains(expr, Comprehension)


def _iterates_after_first(operands: tuple[Expr, ...]) -> bool:
    return any(map(iterates, operands[1:]))


def _strict(operands: tuple[Compiled, ...], combine: Callable[[list[Any]], Any]) -> Compiled:
    """Every operand evaluated, even after one failed (the C++ runtime evaluates a function's
    arguments, a list's items and a map's entries before it looks for errors, and their
    comprehensions spend steps); then the first error, or `combine` of the values."""

    def run(variables: Variables) -> Any:
        results = [_attempt(operand, variables) for operand in operands]
        for result in results:
            if isinstance(result, _Failure):
                raise result.error
        return combine(results)

    return run


def _pairs_to_map(parts: list[Any]) -> Any:
    return values.build_map(zip(parts[::2], parts[1::2], strict=True))


def _attempt(compiled: Compiled, variables: Variables) -> Any:
    """The value, or the exception that stands for an error (absorbed or raised later).
    Running out of steps (or a values.Halt) is no error: it ends the evaluation."""
    try:
        return compiled(variables)
    except _ENDS:
        raise
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
            try:  # _attempt, inline: a run of && is most of what most rules are
                value: object = operand(variables)
            except _ENDS:
                raise
            except Exception as exc:
                value = _Failure(exc)
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
    # after an error, the C++ runtime still fetches (and counts) every item of map, filter
    # and exists_one and evaluates their bodies; only when those iterate does it matter here
    drain = any(map(iterates, expr.args))

    def run(variables: Variables) -> Any:
        value = source(variables)
        items = values.iterate(value)
        scope = dict(variables)  # the macro's variable shadows, for its own arguments only
        loop = _Loop(items, len(value), variables[BUDGET], scope, var=var, drain=drain)
        return macro(loop, *args)

    return run


class _Loop:
    """One run of a macro: its items, the budget it spends from, the scope its variable
    is bound in."""

    __slots__ = ("budget", "drain", "items", "scope", "size", "var")

    def __init__(
        self, items: Any, size: int, budget: Budget, scope: Variables, *, var: str, drain: bool
    ) -> None:
        self.items, self.size, self.budget = items, size, budget
        self.scope, self.var, self.drain = scope, var, drain

    def stopped_at(self, index: int) -> None:
        """all() and exists() stop early; the C++ runtime fetches (and counts) one more item
        before it looks at the result."""
        if index + 1 < self.size:
            _spend(self.budget, 1)

    def fail_after_all(self, error: Any, macro: str, *bodies: Compiled) -> NoReturn:
        """Raise `error` (a _Failure, or a value that is not a bool) once every item left
        has been evaluated, as the C++ runtime does, when those evaluations spend steps: with
        two bodies (map's filter and transform), the second runs where the first holds."""
        if self.drain:
            for item in self.items:
                _tick(self.budget)
                self.scope[self.var] = item
                if _attempt(bodies[0], self.scope) is True and len(bodies) > 1:
                    _attempt(bodies[1], self.scope)
        if isinstance(error, _Failure):
            raise error.error
        values.no_overload(macro, error)


def _all(loop: _Loop, condition: Compiled) -> bool:
    return _until(loop, condition, False, "_&&_")


def _exists(loop: _Loop, condition: Compiled) -> bool:
    return _until(loop, condition, True, "_||_")


def _until(loop: _Loop, condition: Compiled, decisive: bool, operator: str) -> bool:
    """all() and exists(): `decisive` (False for all, True for exists) on the first item
    that gives it; else the first error or non-bool, raised as `operator` would; else the
    other bool."""
    failed: list[Any] = []  # the first error or non-bool, raised if no decisive item absorbs it
    other: bool = not decisive
    scope, var, budget = loop.scope, loop.var, loop.budget
    for index, item in enumerate(loop.items):
        _spend(budget, 1)
        scope[var] = item
        result = _attempt(condition, scope)
        if result is decisive:
            loop.stopped_at(index)
            return not other
        if result is not other and not failed:
            failed.append(result)
    if failed:
        _raise(failed[0], failed[0], operator)
    return other


def _exists_one(loop: _Loop, condition: Compiled) -> bool:
    _spend(loop.budget, loop.size)  # it never stops early: every item is a step
    scope, var = loop.scope, loop.var
    count = 0
    for item in loop.items:
        _tick(loop.budget)
        scope[var] = item
        result = _attempt(condition, scope)
        if type(result) is not bool:
            loop.fail_after_all(result, "exists_one", condition)
        count += result
    return count == 1


def _map(loop: _Loop, transform: Compiled) -> list[Any]:
    _spend(loop.budget, loop.size)
    scope, var = loop.scope, loop.var
    mapped = []
    for item in loop.items:
        _tick(loop.budget)
        scope[var] = item
        value = _attempt(transform, scope)
        if isinstance(value, _Failure):
            loop.fail_after_all(value, "map", transform)
        mapped.append(value)
    return mapped


def _filter(loop: _Loop, condition: Compiled) -> list[Any]:
    _spend(loop.budget, loop.size)
    scope, var = loop.scope, loop.var
    kept = []
    for item in loop.items:
        _tick(loop.budget)
        scope[var] = item
        keep = _attempt(condition, scope)
        if type(keep) is not bool:
            loop.fail_after_all(keep, "filter", condition)
        if keep:
            kept.append(item)
    return kept


def _map_filtered(loop: _Loop, condition: Compiled, transform: Compiled) -> list[Any]:
    _spend(loop.budget, loop.size)
    scope, var = loop.scope, loop.var
    mapped = []
    for item in loop.items:
        _tick(loop.budget)
        scope[var] = item
        keep = _attempt(condition, scope)
        if type(keep) is not bool:
            loop.fail_after_all(keep, "map", condition, transform)
        if keep:
            value = _attempt(transform, scope)
            if isinstance(value, _Failure):
                loop.fail_after_all(value, "map", condition, transform)
            mapped.append(value)
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

    __slots__ = ("_iterates", "_run")

    def __init__(self, expr: Expr) -> None:
        self._run = compile_expr(expr)
        self._iterates = iterates(expr)

    @property
    def chainable(self) -> bool:
        """Runs no comprehension, so needs no step budget of its own."""
        return not self._iterates

    def matches(self, activation: Variables) -> bool:
        """The condition's value; the activation is the engine's (it holds the budget,
        which each evaluation starts afresh)."""
        if self._iterates:
            budget = activation.get(BUDGET)
            if budget is None:
                activation = {**activation, BUDGET: (budget := Budget())}
            budget.left = MAX_ITERATIONS
        try:
            result = self._run(activation)
        except CelEvalError:
            raise
        except _OverTime:
            raise CelEvalError(OVER_TIME) from None
        except _OverLimit:
            raise CelEvalError(OVER_LIMIT) from None
        except Exception as exc:
            raise CelEvalError(f"evaluation failed: {type(exc).__name__}") from None
        if type(result) is not bool:
            raise CelEvalError(f"condition gave {values.kind(result)}, not bool")
        return result


class Chain:
    """Conditions that run no comprehension, tried in order in one call: what a rule costs
    beyond its closures (the call into `Program.matches`, its checks) is paid once."""

    __slots__ = ("_runs",)

    def __init__(self, programs: Sequence[Program]) -> None:
        if not all(program.chainable for program in programs):
            raise ValueError("a condition that runs a comprehension spends its own budget")
        self._runs = tuple(program._run for program in programs)

    def first(self, activation: Variables) -> int:
        """The index of the first condition that holds, or -1; CelEvalError if one fails."""
        try:
            for index, run in enumerate(self._runs):
                result = run(activation)
                if result is True:
                    return index
                if result is not False:
                    raise CelEvalError("a chained condition gave no bool")
        except CelEvalError:
            raise
        except Exception as exc:
            raise CelEvalError(f"evaluation failed: {type(exc).__name__}") from None
        return -1
