"""SqliteProfileStore: JSONL import, point lookups, and seeding with the bundled samples."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from decider.errors import ImportFileError, ProfileSourceError
from decider.profile import AccountProfile, ConsentRecord, VisitorProfile
from decider.profiles.jsonl import parse_profiles, sample_profiles
from decider.profiles.sources.sqlite import SqliteProfileStore

T = TypeVar("T")

NOW = datetime(2026, 3, 15, 9, 30, tzinfo=UTC)
ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()

ACCOUNT_LINE: dict[str, Any] = {
    "kind": "account",
    "id": "acc-1",
    "flags": ["customer"],
    "traits": {"name": "Acme"},
}
VISITOR_LINE: dict[str, Any] = {
    "kind": "visitor",
    "id": "v-1",
    "account_id": "acc-1",
    "user_ids": ["u-1"],
    "email_sha256": [ADA_EMAIL],
    "consent": [
        {"purpose": "personalization", "basis": "consent", "granted_at": "2026-01-01T00:00:00Z"}
    ],
    "traits": {"role": "vp"},
}


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    """A JSONL file of records (dicts) and raw lines (strings), in order."""
    return b"\n".join(
        line.encode() if isinstance(line, str) else msgspec.json.encode(line) for line in lines
    )


def run(lookup: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(lookup)


def load(store: SqliteProfileStore, *lines: dict[str, Any] | str) -> tuple[int, int]:
    return store.import_records(parse_profiles(jsonl(*lines), "profiles.jsonl"))


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[SqliteProfileStore]:
    store = SqliteProfileStore(tmp_path / "profiles.db")
    yield store
    run(store.aclose())


def test_imported_records_are_found_by_id_and_alias(empty_store: SqliteProfileStore) -> None:
    """Imported visitors and accounts are found by id, and visitors by user_id and email hash."""
    assert load(empty_store, ACCOUNT_LINE, VISITOR_LINE) == (1, 1)

    visitor = run(empty_store.visitor("v-1"))
    assert visitor == VisitorProfile(
        id="v-1",
        account_id="acc-1",
        user_ids=("u-1",),
        email_sha256=(ADA_EMAIL,),
        consent=(ConsentRecord("personalization", "consent", datetime(2026, 1, 1, tzinfo=UTC)),),
        traits={"role": "vp"},
    )
    assert run(empty_store.account("acc-1")) == AccountProfile(
        id="acc-1", flags=frozenset({"customer"}), traits={"name": "Acme"}
    )
    assert run(empty_store.alias("user_id", "u-1")) == "v-1"
    assert run(empty_store.alias("email_sha256", ADA_EMAIL)) == "v-1"


@pytest.mark.parametrize(
    "lookup",
    [
        lambda s: s.visitor("v-nobody"),
        lambda s: s.account("acc-nobody"),
        lambda s: s.alias("user_id", "u-nobody"),
        lambda s: s.alias("user_id", ADA_EMAIL),  # an email hash is not a user id
        lambda s: s.visitor("acc-1"),  # an account id is not a visitor id
    ],
)
def test_unknown_ids_are_none(empty_store: SqliteProfileStore, lookup: Any) -> None:
    """Lookups of ids the store does not hold, or of the wrong kind, answer None."""
    load(empty_store, ACCOUNT_LINE, VISITOR_LINE)
    assert run(lookup(empty_store)) is None


def test_reimporting_a_visitor_replaces_its_aliases(empty_store: SqliteProfileStore) -> None:
    """A visitor imported again keeps only its new aliases: the old ones resolve no more."""
    load(empty_store, VISITOR_LINE)
    load(empty_store, VISITOR_LINE | {"user_ids": ["u-new"], "email_sha256": []})

    assert run(empty_store.alias("user_id", "u-new")) == "v-1"
    assert run(empty_store.alias("user_id", "u-1")) is None
    assert run(empty_store.alias("email_sha256", ADA_EMAIL)) is None
    visitor = run(empty_store.visitor("v-1"))
    assert visitor is not None
    assert visitor.user_ids == ("u-new",)


def test_parse_reports_every_bad_line_with_its_place_and_field() -> None:
    """Every bad line is reported at once, as file:line, naming the field at fault."""
    data = jsonl(
        VISITOR_LINE,
        {"kind": "visitor", "id": "v-2", "email": "ada@example.com"},
        ACCOUNT_LINE,
        {"kind": "visitor", "id": "v-3", "email_sha256": ["ABC"]},
        {"kind": "account", "traits": {}},
        {"kind": "visitor", "id": 42},
        {"kind": "company", "id": "acc-2"},
    )
    with pytest.raises(ImportFileError) as raised:
        parse_profiles(data, "bad.jsonl")

    expected = [
        (2, "`email`"),
        (4, "$.email_sha256[0]"),
        (5, "`id`"),
        (6, "$.id"),
        (7, "$.kind"),
    ]
    problems = raised.value.problems
    assert len(problems) == len(expected)
    for problem, (line, field) in zip(problems, expected, strict=True):
        assert problem.startswith(f"bad.jsonl:{line}: ")
        assert field in problem
    assert "ada@example.com" not in str(raised.value)


def test_file_with_a_bad_line_imports_nothing(empty_store: SqliteProfileStore) -> None:
    """One bad line refuses the whole file: the good lines around it are not imported."""
    with pytest.raises(ImportFileError):
        load(empty_store, ACCOUNT_LINE, "{not json", VISITOR_LINE)
    assert empty_store.is_empty()
    assert run(empty_store.alias("user_id", "u-1")) is None


def test_blank_lines_and_comments_are_skipped_but_counted() -> None:
    """Blank lines and '#' comments are skipped, and still count toward line numbers."""
    data = jsonl("# profiles", "", "   ", ACCOUNT_LINE, "  # indented comment", VISITOR_LINE)
    assert [record.id for record in parse_profiles(data, "ok.jsonl")] == ["acc-1", "v-1"]

    with pytest.raises(ImportFileError) as raised:
        parse_profiles(data + b"\n\n# late\n{}", "ok.jsonl")
    assert raised.value.problems[0].startswith("ok.jsonl:9: ")


def test_crlf_line_endings_are_accepted() -> None:
    """A JSONL file written with CRLF line endings parses like one with LF."""
    data = jsonl(ACCOUNT_LINE, VISITOR_LINE).replace(b"\n", b"\r\n") + b"\r\n"
    assert [record.id for record in parse_profiles(data, "crlf.jsonl")] == ["acc-1", "v-1"]


def test_new_store_is_seeded_with_the_samples(tmp_path: Path) -> None:
    """A new store opened seeded holds the bundled samples, stitched by alias."""
    store = SqliteProfileStore.open_seeded(tmp_path / "seeded.db", NOW)
    try:
        assert run(store.alias("user_id", "u-ada")) == "v-ada"
        ada = run(store.visitor("v-ada"))
        assert ada is not None
        assert ada.account_id == "acc-northwind"
        northwind = run(store.account("acc-northwind"))
        assert northwind is not None
        assert northwind.traits["name"] == "Northwind Traders"
    finally:
        run(store.aclose())


def test_sample_timestamps_are_relative_to_now(tmp_path: Path) -> None:
    """Seeding replaces the {{now-Nd}} placeholders with timestamps that many days before now."""
    assert not [r.id for r in sample_profiles(NOW) if b"{{" in msgspec.json.encode(r)]
    store = SqliteProfileStore.open_seeded(tmp_path / "seeded.db", NOW)
    try:
        ada = run(store.visitor("v-ada"))
        northwind = run(store.account("acc-northwind"))
    finally:
        run(store.aclose())
    assert ada is not None
    assert northwind is not None

    last_seen = datetime.fromisoformat(ada.traits["last_seen_at"])
    assert last_seen < NOW
    assert last_seen == NOW - timedelta(days=1)
    assert datetime.fromisoformat(northwind.traits["last_seen_at"]) == NOW - timedelta(days=2)
    assert {grant.granted_at for grant in ada.consent} == {NOW - timedelta(days=90)}


def test_store_with_data_is_not_reseeded(tmp_path: Path) -> None:
    """open_seeded leaves a store that already holds profiles as it is."""
    path = tmp_path / "own.db"
    store = SqliteProfileStore(path)
    load(store, ACCOUNT_LINE)
    run(store.aclose())

    store = SqliteProfileStore.open_seeded(path, NOW)
    try:
        assert run(store.visitor("v-ada")) is None
        assert run(store.account("acc-northwind")) is None
        assert run(store.account("acc-1")) is not None
    finally:
        run(store.aclose())


def test_seeded_store_keeps_its_first_timestamps_when_reopened(tmp_path: Path) -> None:
    """Reopening a seeded store later does not seed it again with newer timestamps."""
    path = tmp_path / "seeded.db"
    run(SqliteProfileStore.open_seeded(path, NOW).aclose())

    store = SqliteProfileStore.open_seeded(path, NOW + timedelta(days=30))
    try:
        ada = run(store.visitor("v-ada"))
    finally:
        run(store.aclose())
    assert ada is not None
    assert datetime.fromisoformat(ada.traits["last_seen_at"]) == NOW - timedelta(days=1)


def test_closed_store_is_not_ready_and_lookups_raise(tmp_path: Path) -> None:
    """After aclose, ready() is False and a lookup raises ProfileSourceError."""
    store = SqliteProfileStore(tmp_path / "profiles.db")
    assert run(store.ready()) is True
    run(store.aclose())
    assert run(store.ready()) is False
    with pytest.raises(ProfileSourceError):
        run(store.visitor("v-1"))


def test_unopenable_path_is_a_source_error(tmp_path: Path) -> None:
    """A store path that cannot be opened is a ProfileSourceError, not a sqlite3 error."""
    with pytest.raises(ProfileSourceError, match="cannot open"):
        SqliteProfileStore(tmp_path / "missing-dir" / "profiles.db")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"kind": "visitor", "id": "v", "consent": [{"purpose": "p", "basis": "consent",'
            ' "granted_at": "2026-06-01T00:00:00"}]}',
            "timezone",
        ),
        ('{"kind": "account", "id": "a", "traits": {"n": 100000000000000000000}}', "64-bit"),
        ('{"kind": "account", "id": "a", "traits": {"x": ' + "[" * 20 + "]" * 20 + "}}", "nested"),
    ],
)
def test_values_the_rules_cannot_use_are_refused_at_import(line: str, expected: str) -> None:
    """A timestamp without an offset, a huge integer or deep nesting fails the import, placed."""
    with pytest.raises(ImportFileError) as caught:
        parse_profiles(line.encode(), "p.jsonl")
    (problem,) = caught.value.problems
    assert problem.startswith("p.jsonl:1:")
    assert expected in problem
