"""The SQLite source beyond the shared contract: atomic imports, opening, seeding with samples."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from decider.errors import ImportFileError, ProfileSourceError
from decider.profiles.jsonl import parse_profiles, sample_profiles
from decider.profiles.sources.sqlite import SqliteProfileStore

from .test_jsonl import ACCOUNT_LINE, VISITOR_LINE, jsonl

T = TypeVar("T")

NOW = datetime(2026, 3, 15, 9, 30, tzinfo=UTC)


def run(lookup: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(lookup)


def load(store: SqliteProfileStore, *lines: dict[str, Any] | str) -> tuple[int, int]:
    return store.import_records(parse_profiles(jsonl(*lines), "profiles.jsonl"))


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[SqliteProfileStore]:
    store = SqliteProfileStore(tmp_path / "profiles.db")
    yield store
    run(store.aclose())


def test_file_with_a_bad_line_imports_nothing(empty_store: SqliteProfileStore) -> None:
    """One bad line refuses the whole file: the good lines around it are not imported."""
    with pytest.raises(ImportFileError):
        load(empty_store, ACCOUNT_LINE, "{not json", VISITOR_LINE)
    assert empty_store.is_empty()
    assert run(empty_store.alias("user_id", "u-1")) is None


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


def test_unopenable_path_is_a_source_error(tmp_path: Path) -> None:
    """A store path that cannot be opened is a ProfileSourceError, not a sqlite3 error."""
    with pytest.raises(ProfileSourceError, match="cannot open"):
        SqliteProfileStore(tmp_path / "missing-dir" / "profiles.db")


def test_processes_opening_a_new_store_at_once_all_open(tmp_path: Path) -> None:
    """Several workers starting on a store no one made yet contend for its WAL mode: each
    waits its turn instead of failing to start."""
    for attempt in range(10):
        path = tmp_path / f"new-{attempt}.db"
        failures: list[Exception] = []

        def open_it(where: Path = path, failed: list[Exception] = failures) -> None:
            try:
                SqliteProfileStore(where).close()
            except ProfileSourceError as exc:
                failed.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
