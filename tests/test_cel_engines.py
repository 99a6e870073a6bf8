"""What rules mean, on both engines: the cases the engines once read apart, each with the
answer Google's runtime gives (the reference), and nothing but a match, no match, an
evaluation error or a refusal at load, whatever the expression and the values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from decider.rules.cel import CelCompileErrors, new_engine, values
from decider.ruleset import CelEvalError

NOW = datetime(2026, 11, 26, 15, 4, 5, tzinfo=UTC)
ENGINE_NAMES = ("cel-expr", "cel-python")
REFUSED, ERROR = "refused", "error"


def outcome(engine_name: str, source: str, **data: dict[str, Any]) -> bool | str:
    """True or False, or how it failed. Any other exception escapes and fails the test."""
    engine = new_engine(engine_name)
    try:
        program = engine.compile(source)
    except CelCompileErrors:
        return REFUSED
    activation = engine.activation(
        data.get("visitor", {}), data.get("account", {}), data.get("context", {}), NOW
    )
    try:
        return program.matches(activation)
    except CelEvalError:
        return ERROR


CASES: list[tuple[str, dict[str, Any], bool | str]] = [
    # numbers of different kinds compare by value; arithmetic does not mix them
    ("account.x != 0", {"account": {"x": 1.0}}, True),
    ("80 > context.n", {"context": {"n": 1.0}}, True),
    ("0 in visitor.y", {"visitor": {"y": [0.0]}}, True),
    ("visitor.y + 2 > 0", {"visitor": {"y": 1.0}}, ERROR),
    ("visitor.y + 2 > 0", {"visitor": {"y": 1}}, True),
    ("context.n == 9007199254740993", {"context": {"n": 9007199254740992.0}}, True),
    ("context.n + 1 > 0", {"context": {"n": 2**63 - 1}}, ERROR),
    ("context.n / 0 == 1", {"context": {"n": 1}}, ERROR),
    ("context.n / 2 == -3 && context.n % 2 == -1", {"context": {"n": -7}}, True),
    # values of different kinds are unequal, not an error
    ('context.x == "me"', {"context": {"x": 1}}, False),
    ("account.n != null", {"account": {"n": 1}}, True),
    ("context.b == 1", {"context": {"b": True}}, False),
    # has() on an absent parent is an error, so is its negation
    ("has(account.shop.tier)", {}, ERROR),
    ("!has(account.shop.tier)", {}, ERROR),
    ("has(account.shop)", {}, False),
    # && and || absorb errors, either side, inside all() and exists() too
    ("has(account.x) && account.shop.y != 1", {"account": {"shop": "s"}}, False),
    ("account.shop.y != 1 && false", {"account": {"shop": "s"}}, False),
    ("account.shop.y != 1 || true", {"account": {"shop": "s"}}, True),
    ("context.l.all(x, x > 1)", {"context": {"l": [0, "a"]}}, False),
    ("context.l.all(x, x > 1)", {"context": {"l": ["a", 2]}}, ERROR),
    ("context.l.exists(x, x > 1)", {"context": {"l": ["a", 2]}}, True),
    ("context.l.exists_one(x, x > 1)", {"context": {"l": ["a", 2]}}, ERROR),
    ("context.l.all(x, context.v)", {"context": {"l": [1], "v": None}}, ERROR),
    ("context.b ? true : false", {"context": {"b": 1}}, ERROR),
    # no Python semantics: strings are not lists, negative indexes do not count back
    ('context.s[0] == "a"', {"context": {"s": "abc"}}, ERROR),
    ("context.l[-1] == 1", {"context": {"l": [1]}}, ERROR),
    ('"a" in context.s', {"context": {"s": "abc"}}, ERROR),
    ('context.s.exists(c, c == "a")', {"context": {"s": "abc"}}, ERROR),
    ("bool(context.s)", {"context": {"s": "12"}}, ERROR),
    ("bool(context.s)", {"context": {"s": "t"}}, True),
    ("size(context.n) == 0", {"context": {"n": None}}, ERROR),
    ('string(true) == "true"', {}, True),
    ('string(context.d) == "1e+06"', {"context": {"d": 1e6}}, True),
    ("int(context.s) == 12 && double(context.s) == 12.0", {"context": {"s": " 12"}}, True),
    ("double(context.s) > 0.0", {"context": {"s": "1_0"}}, ERROR),
    # timestamps and durations read as RFC 3339 and Go durations, exactly
    ("timestamp(context.t) < now", {"context": {"t": "2026-01-01"}}, ERROR),
    ("timestamp(context.t) < now", {"context": {"t": "2026-01-01 10:00:00Z"}}, ERROR),
    ("timestamp(context.t) < now", {"context": {"t": "2026-01-01T10:00:00"}}, ERROR),
    ("timestamp(context.t) < now", {"context": {"t": "2026-01-01t10:00:00z"}}, True),
    ("timestamp(context.t) < now", {"context": {"t": "2016-12-31T23:59:60Z"}}, True),
    ('duration(context.d) > duration("1h")', {"context": {"d": "1d"}}, ERROR),
    # absl's quarter nanoseconds: a string read keeps them and comparisons see them;
    # arithmetic, string() and the getters drop them
    ('duration(context.d) > duration("0s")', {"context": {"d": "0.5ns"}}, True),
    ('duration("0.5ns") + duration("0.5ns") == duration("1ns")', {}, False),
    ('duration("1.5ns") > duration("1ns") && duration("0.3ns") == duration("0.25ns")', {}, True),
    (
        "timestamp(context.t) > timestamp(context.u)",
        {"context": {"t": "2026-01-01T00:00:00.0000000005Z", "u": "2026-01-01T00:00:00Z"}},
        True,
    ),
    ('now + duration("0.5ns") > now', {}, False),
    ('now - (now - duration("0.5ns")) == duration("0.5ns")', {}, False),
    ('string(duration(context.d)) == "0.000000001s"', {"context": {"d": "1.75ns"}}, True),
    # absl's limits: ten thousand years and the last second's nanoseconds; a fraction whose
    # product with its unit passes 2**63 seconds
    (
        'duration(context.d) > duration("315576000000s")',
        {"context": {"d": "315576000000.5s"}},
        True,
    ),
    ('duration(context.d) > duration("0s")', {"context": {"d": "315576000000.9999999995s"}}, ERROR),
    ('duration(context.d) > duration("0s")', {"context": {"d": "0.5000000000000000h"}}, ERROR),
    ("timestamp(context.t) < now", {"context": {"t": "9999-12-31T23:59:59.9999999995Z"}}, ERROR),
    # timestamps apart: seconds apart in 64 bits of nanoseconds, then the nanoseconds; a
    # duration subtracted is negated within 64 bits of nanoseconds
    (
        'timestamp(context.t) - timestamp(context.u) > duration("0s")',
        {"context": {"t": "2262-04-11T23:47:17Z", "u": "1970-01-01T00:00:00.5Z"}},
        ERROR,
    ),
    (
        'timestamp(context.t) - timestamp(context.u) > duration("0s")',
        {"context": {"t": "2262-04-11T23:47:16.854775807Z", "u": "1970-01-01T00:00:00Z"}},
        True,
    ),
    ('now - duration("-2600000h") < now', {}, ERROR),
    ('now - duration("2600000h") < now', {}, True),
    # a literal no conversion can read fails on every decision: refused where written
    ('duration("1d") > duration("1h")', {}, REFUSED),
    ('timestamp("2026-01-01") < now', {}, REFUSED),
    ('int("12x") == 12', {}, REFUSED),
    # calls on literals alone (cel-python computes them once, at load): what fails, fails
    # when it runs, as it would computed every time
    ("1 / 0 == 1", {}, ERROR),
    ("9223372036854775807 + 1 > 0", {}, ERROR),
    ('timestamp("9999-12-31T23:59:59Z") + duration("1h") > now', {}, ERROR),
    ('timestamp("2026-11-26T15:04:05Z") + duration("1h") > now', {}, True),
    ('int("12") + 1 == 13 && "a" + "b" == "ab" && "abc".matches("^a")', {}, True),
    # names the C++ parser keeps for itself, and its way with runs of ! and -
    ("[1].exists(if, true)", {}, REFUSED),
    ("context.n > 5 true", {}, REFUSED),
    ("context.true == 1", {}, REFUSED),
    ("!-context.n == 1", {}, REFUSED),
    ("!!context.n == 1", {"context": {"n": 1}}, True),
    ("- -context.n == 1", {"context": {"n": 1}}, True),
    (" && ".join(["context.b"] * 500), {"context": {"b": True}}, True),
    ('duration("1ns") > duration("0s")', {}, True),
    ('string(now) == "2026-11-26T15:04:05Z"', {}, True),
    ('string(now - timestamp("2026-11-26T15:04:04.5Z")) == "0.500s"', {}, True),
    ('now.getHours("Asia/Kolkata") == 20 && now.getDayOfWeek() == 4', {}, True),
    ('now - timestamp("1700-01-01T00:00:00Z") > duration("1h")', {}, ERROR),
    # constructs one engine once loaded and the other did not
    ("account.in == 1", {}, REFUSED),
    ("has(account)", {}, REFUSED),
    ("[1, 2,].size() == 2", {}, REFUSED),
    ('context.s == "a\\x00"', {}, REFUSED),
    ("1 == 1.0", {}, REFUSED),
    ("context.n > 1u", {}, REFUSED),
    # a map built with a key twice: an error that ends the evaluation, whatever && or ||
    # or a macro stands around it; written twice as literals, refused where written
    ('{"a": 1, "a": 2}.size() == 1', {}, REFUSED),
    ('[1].exists(x, {"a": x, "b": 2, "a": 3}.size() == 2)', {}, REFUSED),
    ('{1: 1, true: 2, "1": 3}.size() == 3', {}, True),
    ('now.getHours("EST") == 10 && now.getHours("+05:30") == 20', {}, True),
    ('{context.k: 1, "a": 2}.size() == 2', {"context": {"k": "a"}}, ERROR),
    ('{context.k: 1, "a": 2}.size() == 2 || true', {"context": {"k": "a"}}, ERROR),
    ('{context.k: 1, "a": 2}.size() == 2 && false', {"context": {"k": "a"}}, ERROR),
    (
        'context.n / 0 == 1 || {context.k: 1, "a": 2}.size() == 1',
        {"context": {"n": 1, "k": "a"}},
        ERROR,
    ),
    (
        '[1, 2].exists(x, {context.k: x, "a": 2}.size() == 1) || true',
        {"context": {"k": "a"}},
        ERROR,
    ),
    ('[1, 2].map(x, {context.k: x, "a": 2}).size() == 2 || true', {"context": {"k": "a"}}, ERROR),
    ('true || {context.k: 1, "a": 2}.size() == 1', {"context": {"k": "a"}}, True),
    (
        '[1, 2].exists(x, x == 1 || {context.k: 1, "a": 2}.size() == 1)',
        {"context": {"k": "a"}},
        True,
    ),
    ('{context.k: 1, "a": 2}.size() == 2 || true', {"context": {"k": "b"}}, True),
    # a map's key order differs between runtimes: refused where it would show
    ('context.m.map(k, k)[0] == "a"', {}, REFUSED),
    ('context.m.map(k, k) == ["a"]', {}, REFUSED),
    ('context.m.map(k, k).exists(k2, k2 == "a")', {"context": {"m": {"a": 1}}}, True),
    ("now.getHours(context.zone) == 1", {}, REFUSED),
    # a line break written in a triple-quoted string is a newline (the C++ parser's reading)
    ("context.s == '''a\r\nb'''", {"context": {"s": "a\nb"}}, True),
    ("context.s == r'''a\rb'''", {"context": {"s": "a\nb"}}, True),
    ("context.s == '''a\\rb'''", {"context": {"s": "a\rb"}}, True),
]


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
@pytest.mark.parametrize(("source", "data", "expected"), CASES)
def test_each_engine_gives_the_reference_answer(
    engine_name: str, source: str, data: dict[str, Any], expected: bool | str
) -> None:
    assert outcome(engine_name, source, **data) == expected


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_what_fails_inside_the_runtime_is_an_evaluation_error(engine_name: str) -> None:
    """A map with a key twice (the C++ runtime raised RuntimeError out of evaluation), a
    value no runtime should be given."""
    engine = new_engine(engine_name)
    cases: list[tuple[str, dict[str, Any]]] = [
        ('{context.k: 1, "a": 2}.size() == 1', {"k": "a"}),
        ("size(context.x) == 1", {"x": object()}),
    ]
    for source, context in cases:
        program = engine.compile(source)
        with pytest.raises(CelEvalError):
            program.matches(engine.activation({}, {}, context, NOW))


def test_a_bug_in_the_python_engine_is_an_evaluation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even an exception no CEL semantics asked for stops at the program: the rule does not
    match, the request goes on."""

    def broken(operand: Any, field: str) -> Any:
        raise RuntimeError("a bug")

    engine = new_engine("cel-python")
    program = engine.compile("context.x == 1 || true")
    monkeypatch.setattr(values, "select", broken)
    assert program.matches(engine.activation({}, {}, {"x": 1}, NOW)) is True  # absorbed by ||
    program = engine.compile("context.x == 1")
    with pytest.raises(CelEvalError, match="RuntimeError"):
        program.matches(engine.activation({}, {}, {"x": 1}, NOW))


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_an_error_never_repeats_a_value_from_the_data(engine_name: str) -> None:
    """Error texts reach explain output: they name kinds and functions, not the data (the
    C++ runtime's own would quote the missing key)."""
    engine = new_engine(engine_name)
    context = {"m": {"a": 1}, "k": "secret-key", "n": "secret-number", "d": "secret-duration"}
    for source in (
        "context.m[context.k] == 1",
        "int(context.n) == 1",
        "duration(context.d) > duration('1h')",
        "context.m.secret == 1",
    ):
        with pytest.raises(CelEvalError) as failed:
            engine.compile(source).matches(engine.activation({}, {}, context, NOW))
        assert "secret" not in str(failed.value)


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_time_zones_come_from_the_systems_database(
    engine_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The C++ runtime reads zones from the system's tz database; so does the check, so a
    host without one refuses a named zone at load instead of the engines parting ways."""
    engine = new_engine(engine_name)
    assert engine.compile('now.getHours("Europe/Paris") == 16')
    monkeypatch.setenv("TZDIR", str(tmp_path))
    values.load_zone.cache_clear()
    try:
        with pytest.raises(CelCompileErrors, match="time zone database"):
            engine.compile('now.getHours("Europe/Paris") == 16')
        assert engine.compile('now.getHours("+01:00") == 16')
    finally:
        values.load_zone.cache_clear()


# --- the iteration limit: 9,999 comprehension steps in one evaluation, counted alike -------

LONG = {"a": list(range(10_000)), "n": list(range(9_999)), "m": list(range(9_998))}
LIMIT_CASES: list[tuple[str, bool | str]] = [
    # every item fetched is a step, the 10,000th fails the evaluation
    ("context.n.exists(p, false)", False),
    ("context.a.exists(p, false)", ERROR),
    ("context.a.map(x, x).size() > 0", ERROR),
    ("context.n.filter(x, true).size() > 0", True),
    ("context.a.exists_one(x, x == 1)", ERROR),
    # all() and exists() stop early, after fetching one more item
    ("context.a.exists(p, p == 9997)", True),
    ("context.a.exists(p, p == 9998)", ERROR),
    ("context.a.all(p, false)", False),
    # steps of every comprehension of the evaluation count together
    ("[1].exists(y, context.m.exists(p, false))", False),
    ("[1].exists(y, context.n.exists(p, false))", ERROR),
    ("context.m.exists(p, false) || context.m.exists(p, false)", ERROR),
    # running out ends the evaluation: no && or || absorbs it, but one that decides first
    # never starts it
    ("context.a.exists(p, false) || true", ERROR),
    ("context.a.exists(p, false) && false", ERROR),
    ("true || context.a.exists(p, false)", True),
    # what the C++ runtime evaluates on after an error spends steps too
    ("((1/0 == 1) == context.a.exists(p, false)) || true", ERROR),
    ("[1/0, context.a.exists(p, false)].size() > 0 || true", ERROR),
    ("[0, 1, 2].map(x, x == 0 ? 1/0 == 1 : context.n.exists(p, false)).size() > 0 || true", ERROR),
    ("[0, 1, 2].exists_one(x, x == 0 ? 1/0 == 1 : context.m.exists(p, false)) || true", ERROR),
    ("[0, 1].map(x, x == 0 ? 1/0 == 1 : [1].exists(p, false)).size() > 0 || true", True),
]


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
@pytest.mark.parametrize(("source", "expected"), LIMIT_CASES)
def test_both_engines_stop_at_the_same_step(
    engine_name: str, source: str, expected: bool | str
) -> None:
    """Google's runtime fails an evaluation at its 10,000th comprehension step; the Python
    engine counts steps the same way, so a rule over a long list the caller sent gives the
    same outcome on both."""
    assert outcome(engine_name, source, context=LONG) == expected


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_over_the_limit_is_an_evaluation_error_that_says_so(engine_name: str) -> None:
    """The error names the limit, the same words on both engines; every evaluation starts
    with the whole budget again, so one long rule does not spend the next one's."""
    engine = new_engine(engine_name)
    over = engine.compile("context.a.all(p, context.a.all(q, p != q || p == q))")
    under = engine.compile("context.n.exists(p, false) == false")
    activation = engine.activation({}, {}, {"a": list(range(300)), "n": LONG["n"]}, NOW)
    with pytest.raises(CelEvalError) as failed:
        over.matches(activation)
    assert str(failed.value) == (
        "iteration limit: more than 9,999 comprehension steps "
        "(all, exists, exists_one, map, filter) in one evaluation"
    )
    assert under.matches(activation) is True
    assert under.matches(activation) is True
