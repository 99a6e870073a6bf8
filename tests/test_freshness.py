"""Profile changes across processes: two `decider serve` processes over one SQLite store (as
several workers of one host are) see a write through either, or through `decider profiles`,
on their very next decision."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from decider.cli import main

from .conftest import RULES
from .service import Service, running_service

TOKEN = "profiles-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
ADA_EMAIL = {"placement": "nurture_email", "identity": {"user_id": "u-ada"}}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service, Path]]:
    """Two serving processes on one seeded store, the rules not watched."""
    workdir = tmp_path_factory.mktemp("workers")
    env = {"DECIDER_PROFILES_TOKEN": TOKEN, "DECIDER_WATCH_RULES": "false"}
    with (
        running_service(RULES, workdir, env=env) as first,
        running_service(RULES, workdir, env=env) as second,
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
