"""The guards of a condition: conjuncts the raw values can prove false before any CEL runs.

A guard is a top-level conjunct of `&&` (or the whole condition) of the forms `has(v.a)`,
`has(v.a.b)`, `v.a == "lit"`, `"lit" == v.a` and `v.a in ["l1", "l2"]`, with `v` one of
visitor, account, context and string literals only. CEL's `&&` is commutative with errors:
one false conjunct makes the condition false, whatever the others give, errors included, in
both engines. So when a guard is false for a request, the segment does not match, and
`decider.index` need not evaluate it.

Two kinds of condition have no guards, because something in them can end an evaluation
that `&&` does not absorb: a comprehension (running out of steps stops the evaluation) and
a map literal (a duplicate key fails the whole evaluation, in both engines: values.Halt).
"""

from __future__ import annotations

from collections.abc import Iterator

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
from decider.ruleset import Guard

ROOTS = frozenset({"visitor", "account", "context"})


def guards(tree: Expr) -> tuple[Guard, ...]:
    """The guards of a checked condition's tree, in the order they are written."""
    if contains(tree, (Comprehension, MapExpr)):
        return ()
    return tuple(guard for part in _conjuncts(tree) if (guard := _guard(part)) is not None)


def _conjuncts(tree: Expr) -> Iterator[Expr]:
    if isinstance(tree, Call) and tree.function == "_&&_" and tree.target is None:
        for arg in tree.args:
            yield from _conjuncts(arg)
    else:
        yield tree


def _guard(expr: Expr) -> Guard | None:
    if isinstance(expr, Select) and expr.test:
        found = _path(expr.operand)
        return Guard(found[0], (*found[1], expr.field)) if found else None
    if not isinstance(expr, Call) or expr.target is not None or len(expr.args) != 2:
        return None
    left, right = expr.args
    if expr.function == "_==_":
        if _string(left) is not None:
            left, right = right, left
        literal, found = _string(right), _path(left)
        if literal is None or not found or not found[1]:
            return None
        return Guard(found[0], found[1], frozenset({literal}))
    if expr.function == "@in" and isinstance(right, ListExpr):
        found = _path(left)
        literals = [_string(item) for item in right.items]
        if not found or not found[1] or None in literals:
            return None
        return Guard(found[0], found[1], frozenset(s for s in literals if s is not None))
    return None


def _path(expr: Expr) -> tuple[str, tuple[str, ...]] | None:
    """(root, fields) of `root.a.b`, a plain selection from a rule variable; else None."""
    fields: list[str] = []
    while isinstance(expr, Select) and not expr.test:
        fields.append(expr.field)
        expr = expr.operand
    if isinstance(expr, Ident) and expr.name in ROOTS:
        return expr.name, tuple(reversed(fields))
    return None


def _string(expr: Expr) -> str | None:
    return expr.value if isinstance(expr, Lit) and type(expr.value) is str else None
