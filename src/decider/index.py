"""The first match along a guard index: only segments whose guards may hold are evaluated.

Most rules test enumerated traits for equality and guard fields with has() (see
decider.ruleset.Guard), and a call into the CEL runtime costs more than a lookup in a dict.
So at load (the compiler decides for which consent modes) the segments evaluated in a mode
are put by the path of their most selective guard (an equality with the fewest literals,
else a has()) into that path's Lookup, whose groups say which of them can still match for
each thing the path may hold; segments without a guard form the unguarded group. Each
group keeps priority order and is chained in runs, as every segment once was.

Per request, each path is looked up once in the raw values (the traits and context the
activation is built from); the groups it names are evaluated in order of their first
segment, and a group or path whose first segment comes after the best match so far is not
looked at. The winner is the earliest match, and the outcomes are exactly those of
evaluating every segment alone, in order, up to the first match: the errors of segments
before the winner, and the plan's `passed` for the rest (a segment ruled out did not
match).
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from decider.model import SegmentOutcome
from decider.ruleset import CelEvalError, CompiledSegment, Group, Guard, Lookup, MatchPlan, Run

_MISSING: Any = object()  # the map the path's last field would be in lacks it
_UNKNOWN: Any = object()  # a field before the last is missing, or holds no map
_FIRST = attrgetter("first")


def build_index(
    segments: Sequence[CompiledSegment],
    evaluated: Sequence[int],
    runs: Callable[[tuple[int, ...]], tuple[Run, ...]],
    *,
    guarded: bool = True,
) -> tuple[tuple[Lookup, ...], Group | None]:
    """The lookups and the unguarded group of the `evaluated` segments (indexes into
    `segments`, in order); `runs` chains the members of a group. Without `guarded`, all
    are one unguarded group."""
    made: dict[tuple[int, ...], Group] = {}

    def group(members: Sequence[int]) -> tuple[Group, ...]:
        key = tuple(members)
        if not key:
            return ()
        if key not in made:
            made[key] = Group(key[0], runs(key))
        return (made[key],)

    by_path: dict[tuple[str, tuple[str, ...]], list[tuple[int, Guard]]] = {}
    unguarded: list[int] = []
    for index in evaluated:
        guard = _most_selective(segments[index].condition.guards) if guarded else None
        if guard is None:
            unguarded.append(index)
        else:
            by_path.setdefault((guard.root, guard.path), []).append((index, guard))
    lookups: list[Lookup] = []
    for (root, path), members in by_path.items():
        tested = group([i for i, g in members if g.literals is None])  # has() only
        by_literal: dict[str, list[int]] = {}
        for i, g in members:
            for literal in sorted(g.literals or ()):
                by_literal.setdefault(literal, []).append(i)
        # a string: the equalities it satisfies, beside the has() group (each built once)
        equal = {literal: _ordered(group(found) + tested) for literal, found in by_literal.items()}
        # no such field: has() is false, and so is an equality written with has() on it
        has = Guard(root, path)
        missing = [
            i
            for i, g in members
            if g.literals is not None and has not in segments[i].condition.guards
        ]
        lookups.append(
            Lookup(
                root,
                path,
                first=members[0][0],
                equal=equal,
                other=tested,
                missing=group(missing),
                unknown=group([i for i, _ in members]),
            )
        )
    lookups.sort(key=_FIRST)
    rest = group(unguarded)
    return tuple(lookups), rest[0] if rest else None


def _ordered(groups: tuple[Group, ...]) -> tuple[Group, ...]:
    return tuple(sorted(groups, key=_FIRST))


def _most_selective(guards: Sequence[Guard]) -> Guard | None:
    """The equality with the fewest literals, else the first has(); else None."""
    equalities = [g for g in guards if g.literals is not None]
    if equalities:
        return min(equalities, key=lambda g: len(g.literals or ()))
    return guards[0] if guards else None


def first_match(
    segments: Sequence[CompiledSegment],
    plan: MatchPlan,
    activation: Any,
    values: Callable[[], Mapping[str, Any]],
) -> tuple[str | None, tuple[SegmentOutcome, ...]]:
    """What evaluating each segment alone, in order, gives up to the first match: the
    winner, and the outcome of every segment before it and of it. `values`: the raw maps
    the activation was built from, by variable name (asked for only if there are lookups)."""
    none = best = len(segments)  # the earliest match so far: none yet
    errors: dict[int, SegmentOutcome] = {}  # of segments evaluated, maybe after the winner
    if plan.lookups:
        best = _indexed(plan, values(), segments, activation, errors)
    elif plan.unguarded is not None:
        best = _evaluate(plan.unguarded, best, segments, activation, errors)
    outcomes = plan.passed[:best]
    if errors:
        outcomes = tuple(errors.get(i, outcome) for i, outcome in enumerate(outcomes))
    if best == none:
        return None, outcomes
    won = plan.matched[best]
    return won.segment, (*outcomes, won)


def _indexed(
    plan: MatchPlan,
    values: Mapping[str, Any],
    segments: Sequence[CompiledSegment],
    activation: Any,
    errors: dict[int, SegmentOutcome],
) -> int:
    """The groups the values cannot rule out, evaluated in order of their first segment
    while that comes before the best match so far; the best match then."""
    best = len(segments)
    pending = [plan.unguarded] if plan.unguarded is not None else []  # by first segment
    for lookup in plan.lookups:
        while pending and pending[0].first < lookup.first:
            best = _evaluate(pending.pop(0), best, segments, activation, errors)
        if lookup.first >= best:
            return best
        value = _resolve(values[lookup.root], lookup.path)
        if type(value) is str:
            found = lookup.equal.get(value, lookup.other)
        else:
            found = lookup.missing if value is _MISSING else lookup.unknown
        for group in found:
            insort(pending, group, key=_FIRST)
    for group in pending:
        if group.first >= best:
            break
        best = _evaluate(group, best, segments, activation, errors)
    return best


def ruled_out(guards: Sequence[Guard], values: Mapping[str, Any]) -> bool:
    """Whether the raw `values` prove one of a condition's `guards` false (see Guard). An
    equality on a missing field is not ruled out here (CEL says no such key, an error),
    only by the has() guard written with it."""
    for guard in guards:
        value = _resolve(values[guard.root], guard.path)
        if guard.literals is None:
            if value is _MISSING:
                return True
        elif type(value) is str and value not in guard.literals:
            return True
    return False


def _resolve(value: Any, path: tuple[str, ...]) -> Any:
    """What `path` holds within the map `value`: a value, _MISSING or _UNKNOWN."""
    for field in path:
        if type(value) is not dict:
            return _UNKNOWN
        value = value.get(field, _MISSING)
    return value


def _evaluate(
    group: Group,
    best: int,
    segments: Sequence[CompiledSegment],
    activation: Any,
    errors: dict[int, SegmentOutcome],
) -> int:
    """The earlier of `best` and the group's first match; errors met before it go into
    `errors`."""
    for run in group.runs:
        if run.members[0] >= best:
            break
        if run.chain is not None:
            try:
                hit = run.chain.first(activation)
            except CelEvalError:
                pass  # which condition failed is unknown: evaluate the run one by one
            else:
                if hit < 0:
                    continue
                found = run.members[hit]
                return found if found < best else best
        for index in run.members:
            if index >= best:
                return best
            segment = segments[index]
            try:
                matched = segment.condition.program.matches(activation)
            except CelEvalError as exc:
                errors[index] = SegmentOutcome(segment.id, segment.priority, "error", str(exc))
                continue
            if matched:
                return index
    return best
