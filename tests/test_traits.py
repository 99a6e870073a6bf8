"""Trait values fixed where profiles enter: converted to the schema's types, timestamps
written in one form, and refused (with their path) where the C++ runtime cannot hold them or
where they carry a raw email."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from decider.profile import AccountProfile, ConsentRecord, VisitorProfile, normalized
from decider.rules.cel import ENGINES, new_engine
from decider.ruleset import CelEvalError
from decider.traits import TraitError, TraitSchema, normalize

SCHEMA = TraitSchema(
    visitor={"email_hash": "sha256", "shop": {"session_at": "timestamp", "cart_adds": "int"}},
    account={
        "score": "double",
        "employees": "int",
        "stage": "string",
        "active": "bool",
        "topics": "list",
        "enrichment": "map",
    },
)

SESSION_AT = "traits.shop.session_at"


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"score": 1}, {"score": 1.0}),
        ({"employees": 12.0}, {"employees": 12}),
        ({"stage": "evaluation", "active": False}, {"stage": "evaluation", "active": False}),
        ({"enrichment": {"x": [1, {"y": None}]}}, {"enrichment": {"x": [1, {"y": None}]}}),
        ({"undeclared": "2026-11-20T12:00:00Z"}, {"undeclared": "2026-11-20T12:00:00Z"}),
    ],
)
def test_declared_types_are_converted(traits: dict[str, Any], expected: dict[str, Any]) -> None:
    """An int where a double is declared becomes a double; an integral double an int."""
    result = normalize(traits, SCHEMA.account)
    assert result == expected
    assert [type(v) for v in result.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    "written",
    [
        "2026-11-20T13:00:00+01:00",
        "2026-11-20t12:00:00z",
        "2026-11-20T12:00:00.000Z",
        "2026-11-20T07:00:00-05:00",
    ],
)
def test_timestamps_are_written_in_one_form(written: str) -> None:
    """Any RFC 3339 spelling with an offset becomes UTC with an uppercase T and Z."""
    result = normalize({"shop": {"session_at": written}}, SCHEMA.visitor)
    assert result == {"shop": {"session_at": "2026-11-20T12:00:00Z"}}


def test_a_year_before_1000_is_written_in_a_form_read_back_alike() -> None:
    """Four digits always: `1-01-01...` would be refused when sent back."""
    result = normalize({"shop": {"session_at": "0001-01-01T00:00:00-23:59"}}, SCHEMA.visitor)
    assert result == {"shop": {"session_at": "0001-01-01T23:59:00Z"}}
    again = normalize(result, SCHEMA.visitor)
    assert again == result


@pytest.mark.parametrize(
    ("declared", "traits", "path", "why"),
    [
        (SCHEMA.account, {"score": "high"}, "traits.score", "expected double, got string"),
        (SCHEMA.account, {"employees": 1.5}, "traits.employees", "expected int, got double"),
        (SCHEMA.account, {"active": 1}, "traits.active", "expected bool, got int"),
        (SCHEMA.account, {"stage": 3}, "traits.stage", "expected string, got int"),
        (SCHEMA.visitor, {"shop": "s"}, "traits.shop", "expected a map"),
        (SCHEMA.visitor, {"shop": {"session_at": "2026-11-20T12:00:00"}}, SESSION_AT, "offset"),
        (SCHEMA.visitor, {"shop": {"session_at": "2026-11-20"}}, SESSION_AT, "offset"),
        (SCHEMA.visitor, {"shop": {"session_at": "2026-02-30T00:00:00Z"}}, SESSION_AT, "valid"),
        (None, {"n": 2**64}, "traits.n", "64-bit"),
        (None, {"a\x00b": 1}, "traits", "NUL"),
        (None, {"tags": ["ok", "x\x00"]}, "traits.tags.1", "NUL"),
        (None, {"role": "cfo\ud800"}, "traits.role", "half a UTF-16 surrogate pair"),
        (None, {"m": {"\udc00": 1}}, "traits.m", "half a surrogate pair"),
        (None, {"note": "write to ada@example.com"}, "traits.note", "email address"),
        (None, {"ada@example.com": True}, "traits", "email address"),
        (None, {"deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}, "traits.deep", "nested deeper"),
    ],
)  # fmt: skip
def test_values_the_engines_would_misread_are_refused(
    declared: dict[str, Any] | None, traits: dict[str, Any], path: str, why: str
) -> None:
    with pytest.raises(TraitError) as refused:
        normalize(traits, declared)
    assert refused.value.path.startswith(path)
    assert why in refused.value.message


def test_a_sha256_field_hashes_an_email_and_keeps_a_hash() -> None:
    """A field declared sha256 takes an email (hashed on the way in) or a digest."""
    digest = hashlib.sha256(b"ada@example.com").hexdigest()
    assert normalize({"email_hash": " Ada@Example.com "}, SCHEMA.visitor) == {"email_hash": digest}
    assert normalize({"email_hash": digest.upper()}, SCHEMA.visitor) == {"email_hash": digest}
    with pytest.raises(TraitError, match="SHA-256"):
        normalize({"email_hash": "not-a-hash"}, SCHEMA.visitor)


@pytest.mark.parametrize(
    "profile",
    [
        VisitorProfile(id="ada@example.com"),
        VisitorProfile(id="v-1", user_ids=("ada@example.com",)),
        VisitorProfile(id="v-1", flags=frozenset({"contact:ada@example.com"})),
        VisitorProfile(
            id="v-1",
            consent=(ConsentRecord("p", "ada@example.com", datetime(2026, 1, 1, tzinfo=UTC)),),
        ),
        AccountProfile(id="acc-1", traits={"owner": "ada@example.com"}),
    ],
)
def test_no_raw_email_anywhere_in_a_profile(profile: VisitorProfile | AccountProfile) -> None:
    """Ids, flags, consent and traits alike: a raw email address is refused."""
    with pytest.raises(TraitError, match="email address"):
        normalize_any(profile)


def normalize_any(profile: VisitorProfile | AccountProfile) -> object:
    if isinstance(profile, VisitorProfile):
        return normalized(profile, None)
    return normalized(profile, None)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_normalized_values_read_the_same_on_both_engines(engine_name: str) -> None:
    """The cases the engines read differently raw (a double stored as 1, an offset other
    than Z) match on both once normalized."""
    traits = normalize(
        {"score": 1, "seen": "2026-11-20T13:00:00+01:00"}, {"score": "double", "seen": "timestamp"}
    )
    engine = new_engine(engine_name)
    program = engine.compile(
        'account.score == 1.0 && timestamp(account.seen) == timestamp("2026-11-20T12:00:00Z")'
    )
    activation = engine.activation({}, traits, {}, datetime(2026, 11, 21, tzinfo=UTC))
    assert program.matches(activation) is True


@pytest.mark.parametrize(
    "written",
    [
        "2026-11-20t12:00:00z",
        "2016-12-31T23:59:60Z",
        "2026-11-20 12:00:00Z",
        "2026-11-20T12:00Z",
        "2026-11-20",
        "2026-1-2T3:04:05Z",
        "9999-12-31T23:59:59-01:00",
        "2026-13-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "2262-04-12T00:00:00Z",
    ],
)
def test_untyped_timestamp_like_strings_are_kept_and_read_alike(written: str) -> None:
    """Without a schema type a string is a string, however it looks; `timestamp()` reads
    it the same on both engines (a time, or an error on both)."""
    traits = normalize({"seen": written}, None)
    assert traits == {"seen": written}
    outcomes: set[bool | None] = set()
    for name in ENGINES:
        engine = new_engine(name)
        program = engine.compile('timestamp(visitor.seen) < timestamp("2100-01-01T00:00:00Z")')
        try:
            outcomes.add(program.matches(engine.activation(traits, {}, {}, datetime.now(UTC))))
        except CelEvalError:
            outcomes.add(None)
    assert len(outcomes) == 1


@pytest.mark.parametrize(
    "disguised",
    [
        "ada\uff20example.com",  # full-width @
        "ada\ufe6bexample.com",  # small @
        "ada\u200b@example.com",
        "ada@exam\u00adple.com",
        "https://x.example/?e=ada%40example.com",
        "ada@example\uff0ecom",  # full-width dot
        "ada@example\u2024com",  # one-dot leader
        "ada\u200e@example.com",  # a left-to-right mark
        "ada\u2066@example.com",  # an isolate
    ],
)
def test_disguised_emails_are_refused_and_never_repeated(disguised: str) -> None:
    with pytest.raises(TraitError) as refused:
        normalize({"note": disguised}, None)
    assert disguised not in str(refused.value)
    assert "example.com" not in str(refused.value)


@pytest.mark.parametrize(
    "text",
    ["lodash@4.17.21", "python@3.11", "build@2026.11", "@handle", "icon@2x.png", "meet @ cafe.Now"],
)
def test_text_with_an_at_sign_that_is_no_address_is_kept(text: str) -> None:
    assert normalize({"note": text}, None) == {"note": text}


def test_edge_values_are_refused_or_made_one() -> None:
    """Negative zero becomes zero; a double too large, a map declared but a list given are
    refused by path."""
    assert str(normalize({"score": -0.0}, SCHEMA.account)["score"]) == "0.0"
    assert str(normalize({"x": -0.0}, None)["x"]) == "0.0"
    with pytest.raises(TraitError, match="too large for a double"):
        normalize({"score": 10**400}, SCHEMA.account)
    with pytest.raises(TraitError, match="expected map, got list"):
        normalize({"enrichment": [1, 2]}, SCHEMA.account)


def test_flags_must_be_the_schemas_and_ids_are_kept_once() -> None:
    """A misspelt unsubscribe is refused (without repeating it); a user id given twice is
    kept once; consent that expires before it was granted is refused."""
    schema = TraitSchema(visitor={}, account={}, flags=frozenset({"unsubscribed"}))
    with pytest.raises(TraitError) as refused:
        normalized(VisitorProfile(id="v-1", flags=frozenset({"unsubscribd"})), schema)
    assert (refused.value.path, "unsubscribd" in str(refused.value)) == ("flags", False)
    twice = normalized(VisitorProfile(id="v-1", user_ids=("u-1", "u-1")), schema)
    assert twice.user_ids == ("u-1",)
    granted = datetime(2026, 6, 1, tzinfo=UTC)
    backwards = ConsentRecord("personalization", "consent", granted, granted)
    with pytest.raises(TraitError, match=r"consent\.0\.expires_at"):
        normalized(VisitorProfile(id="v-1", consent=(backwards,)), schema)
