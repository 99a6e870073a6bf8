"""Shared fixtures: the sample rules on both engines, a fixed clock, a service over SQLite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar.testing import TestClient

from decider.app import create_app
from decider.cel import ENGINES, new_engine
from decider.compiler import CompiledRuleset, compile_ruleset
from decider.resolver import Resolver
from decider.service import Decider
from decider.settings import Settings
from decider.store import SqliteProfileStore

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def ruleset(engine_name: str) -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine(engine_name))


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    """A scratch copy of the sample rules, to break on purpose."""
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


@pytest.fixture
def store(tmp_path: Path) -> SqliteProfileStore:
    return SqliteProfileStore.open_seeded(tmp_path / "profiles.db", NOW)


@pytest.fixture
def client(ruleset: CompiledRuleset, store: SqliteProfileStore) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """The real app over the seeded SQLite store, its clock fixed at NOW."""
    settings = Settings(rules_dir=RULES, max_body_bytes=4096, watch_rules=False)
    decider = Decider(ruleset, Resolver(store), clock=lambda: NOW)
    with TestClient(create_app(settings, decider=decider)) as test_client:
        yield test_client
