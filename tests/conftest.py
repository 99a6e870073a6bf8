"""Shared fixtures: the sample rules on both engines, a fixed clock, a service over SQLite."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from litestar.testing import TestClient

from decider.logs import JsonFormatter
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.base import ProfileSource
from decider.profiles.sources.memory import MemoryProfileSource
from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.rules.cel import ENGINES, evaluate, new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset
from decider.server.app import create_app
from decider.settings import Settings
from decider.wiring import build_service

from .privacy import leaks
from .service import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session", autouse=True)
def _no_files_left_in_the_checkout() -> Iterator[None]:
    """Tests write into temporary directories only: a store left in the checkout would be
    served, stale, by the next `decider serve` there (and records, or a unit key, measured)."""
    before = set(ROOT.glob("decider.db*")) | set(ROOT.glob("measure"))
    yield
    assert set(ROOT.glob("decider.db*")) | set(ROOT.glob("measure")) == before


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(JsonFormatter().format(record))


@pytest.fixture(scope="session", autouse=True)
def _logs_hold_no_personal_data() -> Iterator[None]:
    """Every line any test logs, in-process, holds no identifier of a test person (the
    served processes' logs are scanned as they stop: tests/service.py)."""
    recorder = _Recorder()
    root = logging.getLogger()
    level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.INFO)  # what a served process logs
    yield
    root.removeHandler(recorder)
    root.setLevel(level)
    assert leaks("\n".join(recorder.lines)) == []


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for the session (Debian's package; `.ci/run` installs
    it). Tests keep apart by key prefix."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt install redis-server (.ci/run does)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(workdir),
    ]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) as server:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.02)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()


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
def store(tmp_path: Path) -> Iterator[SqliteProfileStore]:
    with SqliteProfileStore.open_seeded(tmp_path / "profiles.db", NOW) as store:
        yield store


@contextmanager
def app_client(
    ruleset: CompiledRuleset,
    source: ProfileSource | None = None,
    *,
    http_client: httpx.AsyncClient | None = None,
    headers: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
    **settings: Any,
) -> Iterator[TestClient[Any]]:
    """The real app, built by the composition root on the given ruleset and source (or the
    one `settings` name; else the sample profiles in memory), its clock fixed at NOW, its
    rules (RULES) not watched and its segment usage file in a temporary directory, unless
    `clock` and `settings` say otherwise; `headers` go with every request (an API key, say)."""
    if source is None and "profile" not in settings:
        source = MemoryProfileSource(sample_profiles(NOW))
    with tempfile.TemporaryDirectory() as scratch:
        defaults = {"rules_dir": RULES, "watch_rules": False, "usage_db": Path(scratch) / "u.db"}
        options = Settings(**{**defaults, **settings})
        service = build_service(
            options, source=source, ruleset=ruleset, http_client=http_client, clock=clock
        )
        with TestClient(create_app(service)) as client:
            client.headers.update(headers or {})
            yield client


@pytest.fixture
def client(ruleset: CompiledRuleset, store: SqliteProfileStore) -> Iterator[TestClient[Any]]:
    """The real app over the seeded SQLite store, its clock fixed at NOW."""
    with app_client(ruleset, store, max_body_bytes=4096) as test_client:
        yield test_client


def api_key(secret: str, *scopes: str, name: str = "test") -> str:
    """A DECIDER_API_KEYS entry granting `scopes` to `secret` (join several with commas)."""
    return f"{name}:{'+'.join(scopes)}:{hashlib.sha256(secret.encode()).hexdigest()}"


@pytest.fixture(scope="module")
def no_cel_clock() -> Iterator[None]:
    """The pure-Python engine's wall-clock limit (50 ms a decision) is the one documented way
    the engines may differ: a machine stalled that long trips it. Tests that compare what
    rules mean set it out of reach."""
    saved = evaluate.TIME_LIMIT_S
    evaluate.TIME_LIMIT_S = 3600.0
    yield
    evaluate.TIME_LIMIT_S = saved


def generated_cases(examples: int) -> settings:
    """Hypothesis as the generated-case tests run it: `examples` cases, no deadline (the
    machine is shared), no example database (each run alike), no health check (building
    rulebooks and profiles is slow by design)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
