"""Importing profiles: checked whole before a record is written, ids claimed twice refused with
their lines (or moved with --replace), traits normalized against the schema, all or nothing,
and streamed: memory does not grow with the file."""

from __future__ import annotations

import asyncio
import io
import json
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from decider.cli import main
from decider.errors import ImportFileError, ProfileSourceError
from decider.profiles.importer import import_file
from decider.profiles.sources.base import ImportSession, Profile
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.traits import TraitSchema

from .conftest import RULES


def write_jsonl(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def visitor(n: int, **fields: Any) -> dict[str, Any]:
    return {"kind": "visitor", "id": f"v-{n}", "user_ids": [f"u-{n}"], **fields}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteProfileStore]:
    with SqliteProfileStore(tmp_path / "profiles.db") as opened:
        yield opened


def run_import(path: Path, store: SqliteProfileStore, **options: Any) -> Any:
    return asyncio.run(import_file(path, store, schema=options.pop("schema", None), **options))


def test_two_visitors_claiming_one_id_refuse_the_file(
    tmp_path: Path, store: SqliteProfileStore
) -> None:
    """Both claims are placed; no value is echoed; nothing is imported."""
    path = write_jsonl(
        tmp_path / "p.jsonl",
        visitor(1),
        {"kind": "account", "id": "acc-1"},
        visitor(2, user_ids=["u-1"]),
        visitor(3, email_sha256=["a" * 64]),
        visitor(4, email_sha256=["a" * 64]),
    )
    with pytest.raises(ImportFileError) as refused:
        run_import(path, store)
    assert refused.value.problems == (
        f"{path}:3: user_id is claimed by another visitor on line 1",
        f"{path}:5: email_sha256 is claimed by another visitor on line 4",
    )
    assert store.is_empty()


def test_a_claim_on_an_id_another_stored_visitor_holds_needs_replace(
    tmp_path: Path, store: SqliteProfileStore
) -> None:
    """Without --replace the file is refused; with it the id moves and the count says so."""
    run_import(write_jsonl(tmp_path / "first.jsonl", visitor(1)), store)
    second = write_jsonl(tmp_path / "second.jsonl", visitor(2, user_ids=["u-1", "u-2"]))
    with pytest.raises(ImportFileError) as refused:
        run_import(second, store)
    assert refused.value.problems == (
        f"{second}:1: user_id is linked to another visitor in the store (--replace moves it)",
    )
    report = run_import(second, store, replace=True)
    assert report.moved == 1
    assert asyncio.run(store.alias("user_id", "u-1")) == "v-2"


def test_reimporting_the_same_visitor_is_no_conflict(
    tmp_path: Path, store: SqliteProfileStore
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", visitor(1))
    run_import(path, store)
    assert run_import(path, store).visitors == 1


def test_traits_are_normalized_against_the_schema(
    tmp_path: Path, store: SqliteProfileStore
) -> None:
    """A double given as 1 is stored as 1.0; a timestamp without an offset is refused,
    placed at its line and field."""
    schema = TraitSchema(visitor={}, account={"score": "double", "seen": "timestamp"})
    good = write_jsonl(
        tmp_path / "good.jsonl", {"kind": "account", "id": "a", "traits": {"score": 1}}
    )
    run_import(good, store, schema=schema)
    stored = asyncio.run(store.account("a"))
    assert stored is not None
    assert type(stored.traits["score"]) is float
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        {"kind": "account", "id": "b", "traits": {"seen": "2026-11-20T12:00:00"}},
    )
    with pytest.raises(
        ImportFileError, match=r"bad.jsonl:1: traits.seen: not a valid RFC 3339 timestamp"
    ):
        run_import(bad, store, schema=schema)


class FailingStore(SqliteProfileStore):
    """A store whose import fails after its first batch, as a full disk would."""

    def importing(  # type: ignore[override]  # a wrapper, not the generator it wraps
        self, *, replace: bool
    ) -> AbstractAsyncContextManager[ImportSession]:
        inner = super().importing(replace=replace)

        @asynccontextmanager
        async def failing() -> Any:
            async with inner as session:
                yield _FailSecond(session)

        return failing()


class _FailSecond:
    def __init__(self, session: ImportSession) -> None:
        self._session, self._calls = session, 0

    async def write(self, records: Sequence[Profile]) -> None:
        self._calls += 1
        if self._calls == 2:
            raise ProfileSourceError("disk full")
        await self._session.write(records)


def test_a_store_failing_midway_keeps_nothing(tmp_path: Path) -> None:
    """All or nothing: the batches written before the failure are rolled back."""
    path = write_jsonl(tmp_path / "p.jsonl", *(visitor(n) for n in range(10)))
    with FailingStore(tmp_path / "f.db") as store:
        with pytest.raises(ProfileSourceError):
            asyncio.run(import_file(path, store, schema=None, batch=3))
        assert store.is_empty()


def test_progress_is_reported_by_phase(tmp_path: Path, store: SqliteProfileStore) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", *(visitor(n) for n in range(5)))
    seen: list[tuple[str, int, int]] = []
    run_import(path, store, progress=lambda *step: seen.append(step))
    assert [phase for phase, _, _ in seen] == ["checking", "importing"]
    assert seen[0][1:] == (path.stat().st_size,) * 2
    assert all(done == total > 0 for _, done, total in seen)


def peak_bytes(path: Path, tmp_path: Path) -> int:
    with SqliteProfileStore(tmp_path / f"{path.stem}.db") as target:
        tracemalloc.start()
        try:
            asyncio.run(import_file(path, target, schema=None))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_memory_stays_flat_however_large_the_file(tmp_path: Path) -> None:
    """Ten times the records take about the same peak memory: lines stream through."""
    record = visitor(0, traits={"role": "vp", "note": "x" * 200})

    def generated(name: str, count: int) -> Path:
        lines = (
            json.dumps(record | {"id": f"v-{n}", "user_ids": [f"u-{n}"]}) for n in range(count)
        )
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return path

    small = peak_bytes(generated("small.jsonl", 2_000), tmp_path)
    large = peak_bytes(generated("large.jsonl", 20_000), tmp_path)
    assert large < 1.5 * small


def test_the_command_imports_with_the_rules_schema(tmp_path: Path) -> None:
    """`decider profiles import` types traits by the rules' schema.yaml and reports counts."""
    path = write_jsonl(
        tmp_path / "p.jsonl",
        {
            "kind": "account",
            "id": "acc-1",
            "traits": {"fit_score": 90.0, "last_seen_at": "2026-11-19T10:00:00+01:00"},
        },
        visitor(1, account_id="acc-1"),
    )
    db = tmp_path / "p.db"
    out = io.StringIO()
    code = main(
        ["profiles", "import", str(path), "--db", str(db), "--rules", str(RULES)],
        environ={},
        out=out,
    )
    assert code == 0, out.getvalue()
    assert out.getvalue() == f"imported 1 visitors and 1 accounts into {db}\n"
    with SqliteProfileStore(db) as opened:
        account = asyncio.run(opened.account("acc-1"))
    assert account is not None
    assert account.traits == {"fit_score": 90, "last_seen_at": "2026-11-19T09:00:00Z"}
    assert type(account.traits["fit_score"]) is int


def test_the_command_places_every_line_that_is_not_utf8(tmp_path: Path) -> None:
    """`decider profiles import` over a file with bytes that are not UTF-8 in a value, in a
    key and in a comment-free line after a BOM: each bad line is placed by its number, none
    repeats its bytes, the command fails (1) and nothing is imported."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"kind": "account", "id": "acc-1"}\n'
        b'{"kind": "account", "id": "acc-\xff\xfe"}\n'
        b"\n"
        b'{"kind": "visitor", "id": "v-1", "traits": {"\xc3\x28": 1}}\n'
        b'{"kind": "visitor", "id": "v-2", "user_ids": ["u-\xed\xa0\x80"]}\n'
        b'{"kind": "account", "id": "acc-2"}\n'
    )
    db = tmp_path / "p.db"
    out = io.StringIO()
    code = main(["profiles", "import", str(path), "--db", str(db)], environ={}, out=out)
    assert code == 1
    lines = out.getvalue().splitlines()
    assert [line for line in lines if ": not valid UTF-8" in line] == [
        f"{path}:{n}: not valid UTF-8" for n in (2, 4, 5)
    ]
    assert "\ufffd" not in out.getvalue()
    with SqliteProfileStore(db) as opened:
        assert asyncio.run(opened.account("acc-1")) is None
