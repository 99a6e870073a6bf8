"""Profile changes across processes: two `decider serve` processes over one SQLite store (as
several workers of one host are) see a write through either, or through `decider profiles`,
on their very next decision; two replicas over one Redis store, within a notice's travel."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from decider.cli import main
from decider.profiles.jsonl import sample_profiles

from .conftest import RULES, api_key
from .service import Service, running_service

TOKEN = "profiles-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = api_key(TOKEN, "decide", "explain", "profiles-read", "profiles-write")
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
ADA_EMAIL = {"placement": "nurture_email", "identity": {"user_id": "u-ada"}}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service, Path]]:
    """Two serving processes on one seeded store, the rules not watched."""
    workdir = tmp_path_factory.mktemp("workers")
    env = {"DECIDER_API_KEYS": KEYS, "DECIDER_WATCH_RULES": "false"}
    with (
        running_service(RULES, workdir, env=env, headers=AUTH) as first,
        running_service(RULES, workdir, env=env, headers=AUTH) as second,
    ):
        yield first, second, workdir / "decider.db"


def decide(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def test_a_trait_change_through_one_worker_counts_on_the_others_next_decision(
    workers: tuple[Service, Service, Path],
) -> None:
    first, second, _ = workers
    assert decide(second.client, ADA)["segment"] == "b2b_top_tier_evaluation"  # now cached
    patched = first.client.patch(
        "/v1/profiles/accounts/acc-northwind", json={"traits": {"stage": "awareness"}}, headers=AUTH
    )
    assert patched.status_code == 200, patched.text
    assert decide(second.client, ADA)["segment"] != "b2b_top_tier_evaluation"
    first.client.patch(
        "/v1/profiles/accounts/acc-northwind",
        json={"traits": {"stage": "evaluation"}},
        headers=AUTH,
    )
    assert decide(second.client, ADA)["segment"] == "b2b_top_tier_evaluation"


def test_an_unsubscribe_through_one_worker_stops_the_others_next_email(
    workers: tuple[Service, Service, Path],
) -> None:
    first, second, _ = workers
    assert decide(second.client, ADA_EMAIL)["suppressed"] is False
    first.client.patch(
        "/v1/profiles/visitors/v-ada", json={"add_flags": ["unsubscribed"]}, headers=AUTH
    )
    assert decide(second.client, ADA_EMAIL)["suppressed"] is True
    first.client.patch(
        "/v1/profiles/visitors/v-ada", json={"remove_flags": ["unsubscribed"]}, headers=AUTH
    )
    assert decide(second.client, ADA_EMAIL)["suppressed"] is False


def test_an_erasure_from_the_command_line_counts_on_every_workers_next_decision(
    workers: tuple[Service, Service, Path],
) -> None:
    """`decider profiles delete` while both serve: neither knows the person any more."""
    first, second, db = workers
    ben = {"placement": "home_hero", "identity": {"user_id": "u-ben"}}
    assert decide(first.client, ben)["segment"] is not None
    assert decide(second.client, ben)["segment"] is not None
    out = io.StringIO()
    code = main(["profiles", "delete", "--user-id", "u-ben", "--db", str(db)], environ={}, out=out)
    assert code == 0, out.getvalue()
    assert out.getvalue().startswith("deleted visitor v-ben")
    for worker in (first, second):
        decision = decide(worker.client, ben)
        assert decision["segment"] is None
        assert "identity.unknown" in [r["code"] for r in decision["reasons"]]


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[Service, Service]]:
    """Two replicas over one Redis store, filled by `decider profiles import`."""
    workdir = tmp_path_factory.mktemp("replicas")
    env = {
        "DECIDER_API_KEYS": KEYS,
        "DECIDER_WATCH_RULES": "false",
        "DECIDER_PROFILE_SOURCE": "redis",
        "DECIDER_PROFILE_REDIS_URL": redis_url,
        "DECIDER_PROFILE_REDIS_PREFIX": f"replicas-{uuid.uuid4().hex[:8]}:",
    }
    samples = workdir / "samples.jsonl"
    samples.write_text(
        "".join(
            json.dumps(
                msgspec.to_builtins(p) | {"kind": type(p).__name__.removesuffix("Profile").lower()}
            )
            + "\n"
            for p in sample_profiles(datetime.now(UTC))
        )
    )
    out = io.StringIO()
    assert main(["profiles", "import", str(samples)], environ=env, out=out) == 0, out.getvalue()
    with (
        running_service(RULES, workdir, env=env, headers=AUTH) as first,
        running_service(RULES, workdir, env=env, headers=AUTH) as second,
    ):
        yield first, second


def until(condition: Callable[[], bool], seconds: float = 2.0) -> float:
    """Seconds until `condition` holds; fails past `seconds`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.001)
    return time.monotonic() - started


def test_a_write_through_one_replica_reaches_the_other(replicas: tuple[Service, Service]) -> None:
    """Redis: an unsubscribe through one replica stops the other's email as soon as the
    change notice arrives (a millisecond or so here; README, "Freshness"), and counts on the
    writing replica's own next decision."""
    first, second = replicas
    assert decide(second.client, ADA_EMAIL)["suppressed"] is False
    first.client.patch(
        "/v1/profiles/visitors/v-ada", json={"add_flags": ["unsubscribed"]}, headers=AUTH
    )
    assert decide(first.client, ADA_EMAIL)["suppressed"] is True
    until(lambda: decide(second.client, ADA_EMAIL)["suppressed"] is True)
    first.client.delete("/v1/profiles/visitors/v-ada", headers=AUTH)
    until(lambda: decide(second.client, ADA)["segment"] is None)
