"""The real service: `decider serve` in its own process, called over HTTP like the README does."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from decider.cel import new_engine
from decider.compiler import compile_ruleset

from .conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`decider serve` on its embedded defaults (bundled rules, seeded SQLite), on loopback."""
    workdir = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "DECIDER_PROFILE_DB": str(workdir / "decider.db")}
    command = [sys.executable, "-m", "decider.cli", "serve", "--rules", str(ROOT / "rules")]
    log = workdir / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"decider serve did not come up:\n{log.read_text()}")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def post(client: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body, headers=headers)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def test_personalized_decision(service: httpx.Client) -> None:
    """A sample visitor with consent gets their segment's variant from the running service."""
    decision = post(service, {"placement": "home_hero", "identity": {"user_id": "u-ada"}})
    assert decision["segment"] == "b2b_top_tier_evaluation"
    assert decision["personalized"] is True


def test_consent_denied_decision(service: httpx.Client) -> None:
    """A sample visitor without consent gets the default from the running service."""
    decision = post(service, {"placement": "home_hero", "identity": {"user_id": "u-lee"}})
    assert decision["personalized"] is False
    assert "consent.denied" in [r["code"] for r in decision["reasons"]]


def test_suppressed_decision(service: httpx.Client) -> None:
    """An unsubscribed sample person is suppressed on email by the running service."""
    email = hashlib.sha256(b"max@globex.example").hexdigest()
    decision = post(service, {"placement": "nurture_email", "identity": {"email_sha256": email}})
    assert decision["suppressed"] is True


def test_every_sample_segment_is_reachable(service: httpx.Client) -> None:
    """The bundled sample profiles put someone in every segment that reads the profile."""
    people = {
        "u-ada": "home_hero", "u-ben": "home_hero", "v-cleo": "nurture_email",
        "v-dan": "home_hero", "u-eve": "home_hero", "v-finn": "shop_product_hero",
        "v-gia": "shop_product_hero", "v-hal": "shop_product_hero", "u-ivy": "trial_email",
        "u-jay": "trial_email", "u-kai": "trial_email",
    }  # fmt: skip
    segments = set()
    for who, placement in people.items():
        kind = "user_id" if who.startswith("u-") else "visitor_id"
        segments.add(post(service, {"placement": placement, "identity": {kind: who}})["segment"])
    ruleset = compile_ruleset(ROOT / "rules", new_engine("cel-expr"))
    assert segments == {s.id for s in ruleset.segments if s.condition.needs_profile}
