"""Segment usage that survives restarts (decider.usage): every run's wins and last match
added to one SQLite file, read back by GET /admin/segments with each segment's first
sighting and whether it is idle; the service serving on whatever becomes of the file."""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset
from decider.usage.book import Added, Usage, UsageBook

from .conftest import NOW, RULES, api_key, app_client
from .service import Service, running_service
from .test_metrics import samples
from .test_reload import wait_for

TOKEN = "test-usage-admin-0123456789"
KEYS = api_key(TOKEN, "admin", "decide")
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
BEN = {"placement": "home_hero", "identity": {"user_id": "u-ben"}}
TOP, MID, NEVER = "b2b_top_tier_evaluation", "b2b_mid_tier_surge", "shop_browser"
NEW_SEGMENT = """segments:
  - id: shop_returning
    description: Bought a thousand things at once.
    owner: ecommerce@decider.example
    priority: 52
    when: has(visitor.shop) && visitor.shop.cart_adds > 1000
"""


class Clock:
    """The service's clock, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def rules() -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine("cel-expr"))


def serving(
    ruleset: CompiledRuleset, usage_db: Path, clock: Clock, **settings: Any
) -> AbstractContextManager[TestClient[Any]]:
    """The app over `usage_db`, on `clock`, the sample profiles as of its time."""
    source = MemoryProfileSource(sample_profiles(clock()))
    return app_client(
        ruleset, source, clock=clock, usage_db=usage_db, api_keys=KEYS, headers=ADMIN, **settings
    )


def decide(client: TestClient[Any] | httpx.Client, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        answer = client.post("/v1/decide", json=body)
        assert answer.status_code == 200, answer.text


def governance(client: TestClient[Any] | httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET /admin/segments, and its segments by id."""
    answer = client.get("/admin/segments")
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report, {segment["id"]: segment for segment in report["segments"]}


def test_wins_and_last_match_survive_a_restart(rules: CompiledRuleset, tmp_path: Path) -> None:
    """What a run counted is in the file once it stops (no admin call asked for it); the
    next run reports it as `wins_total` and `last_matched_ever`, and adds its own."""
    usage_db = tmp_path / "usage.db"
    clock = Clock(NOW)
    with serving(rules, usage_db, clock) as client:
        decide(client, ADA, ADA, BEN)
    clock.at = NOW + timedelta(hours=1)
    with serving(rules, usage_db, clock) as client:
        report, by_id = governance(client)
        assert (report["durable"], report["durable_error"], report["idle_days"]) == (True, None, 90)
        assert by_id[TOP] | {
            "wins": 0, "last_matched": None, "wins_total": 2, "last_matched_ever": stamp(NOW),
            "first_seen": stamp(NOW), "idle": False,
        } == by_id[TOP]  # fmt: skip
        assert (by_id[MID]["wins_total"], by_id[NEVER]["wins_total"]) == (1, 0)
        decide(client, ADA)
        _, by_id = governance(client)
    assert by_id[TOP]["wins"] == 1
    assert by_id[TOP]["wins_total"] == 3
    assert by_id[TOP]["last_matched_ever"] == stamp(clock.at)
    assert by_id[TOP]["first_seen"] == stamp(NOW)


def test_a_segment_unmatched_for_idle_days_is_idle(rules: CompiledRuleset, tmp_path: Path) -> None:
    """Idle: no match in DECIDER_IDLE_DAYS (90), counted from the first sighting for a
    segment that never matched; a match ends it."""
    usage_db = tmp_path / "usage.db"
    clock = Clock(NOW)
    with serving(rules, usage_db, clock) as client:
        decide(client, ADA)
    clock.at = NOW + timedelta(days=90) - timedelta(seconds=1)
    with serving(rules, usage_db, clock) as client:
        _, by_id = governance(client)
        assert (by_id[TOP]["idle"], by_id[NEVER]["idle"]) == (False, False)
        clock.at = NOW + timedelta(days=90)
        report, by_id = governance(client)
        assert (by_id[TOP]["idle"], by_id[NEVER]["idle"]) == (True, True)
        assert by_id[NEVER] | {"first_seen": stamp(NOW), "last_matched_ever": None} == by_id[NEVER]
        decide(client, ADA)  # the profiles are as of the service's start, 1 s ago
        _, by_id = governance(client)
        assert (by_id[TOP]["idle"], by_id[NEVER]["idle"]) == (False, True)
    clock.at = NOW + timedelta(days=31)
    with serving(rules, usage_db, clock, idle_days=30) as client:
        report, by_id = governance(client)
    assert report["idle_days"] == 30
    assert (by_id[TOP]["idle"], by_id[MID]["idle"]) == (False, True)


def test_first_seen_is_when_a_ruleset_holding_the_segment_first_served(
    rules_copy: Path, tmp_path: Path
) -> None:
    """A segment a reload brings is first seen then; one a reload removes is no longer
    listed, and its row stays (brought back, it keeps its first sighting)."""
    usage_db = tmp_path / "usage.db"
    ruleset = compile_ruleset(rules_copy, new_engine("cel-expr"))
    shop = rules_copy / "ecommerce.yaml"
    before = shop.read_text()
    clock = Clock(NOW)
    with serving(ruleset, usage_db, clock, rules_dir=rules_copy) as client:
        _, by_id = governance(client)
        assert {segment["first_seen"] for segment in by_id.values()} == {stamp(NOW)}
        clock.at = NOW + timedelta(days=3)
        shop.write_text(before.replace("segments:\n", NEW_SEGMENT, 1))
        assert client.post("/admin/reload").status_code == 200
        _, by_id = governance(client)
        assert by_id["shop_returning"] | {
            "wins": 0, "wins_total": 0, "first_seen": stamp(clock.at), "idle": False
        } == by_id["shop_returning"]  # fmt: skip
        assert by_id[TOP]["first_seen"] == stamp(NOW)
        clock.at = NOW + timedelta(days=4)
        shop.write_text(before)
        assert client.post("/admin/reload").status_code == 200
        _, by_id = governance(client)
        assert "shop_returning" not in by_id
        book = UsageBook(usage_db)
        try:
            assert book.read()["shop_returning"].first_seen == NOW + timedelta(days=3)
        finally:
            book.close()
        clock.at = NOW + timedelta(days=5)
        shop.write_text(before.replace("segments:\n", NEW_SEGMENT, 1))
        assert client.post("/admin/reload").status_code == 200
        _, by_id = governance(client)
    assert by_id["shop_returning"]["first_seen"] == stamp(NOW + timedelta(days=3))


def test_two_writers_add_up(tmp_path: Path) -> None:
    """Two connections writing at once, each its own deltas: wins add up, the latest match
    and the earliest sighting are kept, and a write without a match erases none."""
    path = tmp_path / "usage.db"
    books = [UsageBook(path), UsageBook(path)]

    def write(book: UsageBook, offset: int) -> None:
        for i in range(50):
            matched = NOW + timedelta(seconds=offset + i)
            book.add(
                [Added(TOP, 1, matched, NOW + timedelta(days=offset)), Added(MID, 2, None, NOW)]
            )

    offsets = zip(books, (0, 100), strict=True)
    threads = [threading.Thread(target=write, args=(book, at)) for book, at in offsets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    books[0].add([Added(TOP, 0, None, NOW + timedelta(days=7))])
    assert books[1].read() == {
        TOP: Usage(100, NOW + timedelta(seconds=149), NOW),
        MID: Usage(200, None, NOW),
    }
    for book in books:
        book.close()


def test_the_workers_of_a_served_service_add_up_across_restarts(tmp_path: Path) -> None:
    """`decider serve --workers 2`, restarted: each worker writes its counts before the
    report an admin call asks of it, and the rest as it stops; the next run reads them."""
    env = {"DECIDER_API_KEYS": KEYS, "DECIDER_WORKERS": "2", "DECIDER_WATCH_RULES": "false"}

    def both(service: Service) -> None:
        wait_for(lambda: len(service.client.get("/admin/rules").json()["workers"]) == 2, 10)

    def decide_fresh(service: Service, count: int) -> None:
        for _ in range(count):  # a connection each, so the kernel picks a worker
            with httpx.Client(base_url=service.client.base_url, headers=ADMIN) as client:
                decide(client, ADA)

    with running_service(RULES, tmp_path, env=env, headers=ADMIN) as service:
        both(service)
        decide_fresh(service, 30)
        report, by_id = governance(service.client)
        assert report["workers"] == 2
        assert (by_id[TOP]["wins"], by_id[TOP]["wins_total"]) == (30, 30)
        decide_fresh(service, 10)
    assert (tmp_path / "usage.db").is_file()
    with running_service(RULES, tmp_path, env=env, headers=ADMIN) as service:
        both(service)
        _, by_id = governance(service.client)
    assert (by_id[TOP]["wins"], by_id[TOP]["wins_total"]) == (0, 40)


@pytest.mark.parametrize(
    ("broken", "why"),
    [("garbage", "file is not a database"), ("a directory", "unable to open database file")],
)
def test_a_usage_file_that_cannot_be_written(
    rules: CompiledRuleset,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    broken: str,
    why: str,
) -> None:
    """Decisions and the counts since start go on; the admin answer says the durable counts
    are unavailable and why, failed writes are counted, one log line says why. Once the file
    can be written, what was counted meanwhile is in it."""
    caplog.set_level(logging.INFO, "decider")
    usage_db = tmp_path / "usage.db"
    if broken == "a directory":
        usage_db.mkdir()
    else:
        usage_db.write_bytes(b"not a database, " * 512)
    with serving(rules, usage_db, Clock(NOW)) as client:
        decide(client, ADA, ADA, ADA)
        for _ in range(2):
            report, by_id = governance(client)
        assert report["durable"] is False
        assert report["durable_error"] == f"cannot write {usage_db}: {why}"
        assert by_id[TOP]["wins"] == 3
        durable = ("wins_total", "last_matched_ever", "first_seen", "idle")
        assert {by_id[TOP][name] for name in durable} == {None}
        failed = client.get("/admin/traffic").json()["usage_writes_failed"]
        assert failed >= 3  # at start, and before each admin answer
        metrics = samples(client.get("/metrics").text)
        assert metrics["decider_usage_writes_total", (("result", "failed"), ("worker", "0"))] >= 3
        said = [r.getMessage() for r in caplog.records if "segment usage" in r.getMessage()]
        assert said == [
            f"segment usage: cannot write {usage_db}: {why}; counts since are kept here and "
            "written when it can be"
        ]
        usage_db.rmdir() if broken == "a directory" else usage_db.unlink()
        report, by_id = governance(client)
    assert (report["durable"], by_id[TOP]["wins_total"]) == (True, 3)
    assert f"segment usage: {usage_db} is written again" in caplog.messages
