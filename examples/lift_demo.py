"""The lift report, end to end over HTTP: a real Decider serves a few thousand simulated trial
users a nudge with a 50% holdout, and they convert at rates planted here; then `decider
report` should find the planted lift where there is one and none where there is none.

    python examples/lift_demo.py [DIRECTORY]      (default: lift-demo)

1. Writes DIRECTORY/profiles.jsonl: VISITORS trial users with consent to personalization,
   half of them stalled (fewer than three core features explored), and imports them into
   DIRECTORY/profiles.db with `decider profiles import`.
2. Starts `decider serve` on a free loopback port with the rules in examples/lift/rules and
   the exposure log on (DIRECTORY/exposures), and asks POST /v1/decide for the trial_nudge
   placement once per visitor.
3. Draws each visitor's purchase from the planted rates (seeded by the visitor's id, so every
   run draws the same) and reports the purchases by decision id, POST /v1/outcomes, in
   batches (DIRECTORY/outcomes).
4. Stops the service, which writes what is queued, and says what was planted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
RULES = HERE / "lift" / "rules"
VISITORS = 10_000
KEY = "dk_lift-demo-key-change-me"  # decide and outcomes, for this demo's service only
BASE_RATE = 0.10  # purchases without the tailored nudge (the holdout), in both segments
PLANTED = {"stalled_trials": 0.06, "active_trials": 0.0}  # what each segment's nudge adds
SEED = "lift-demo-1"


def profiles(count: int) -> list[dict[str, object]]:
    """`count` trial users who consented to personalization; even ones stalled (explored 0-2
    core features), odd ones active (3-7)."""
    granted = {
        "purpose": "personalization",
        "basis": "consent",
        "granted_at": "2026-11-01T00:00:00Z",
    }
    people: list[dict[str, object]] = []
    for n in range(count):
        explored = n % 3 if n % 2 == 0 else 3 + n % 5
        people.append(
            {
                "kind": "visitor",
                "id": f"v-trial-{n:05d}",
                "consent": [granted],
                "traits": {"trial": {"features_explored": explored}},
            }
        )
    return people


def draw(visitor: str) -> float:
    """A number in [0, 1) fixed by the visitor's id: the same purchase on every run."""
    digest = hashlib.sha256(f"{SEED}:{visitor}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def purchases(decision: dict[str, object], visitor: str) -> bool:
    """Whether the visitor buys after `decision`: the base rate, plus the planted lift of its
    segment when it was shown the segment's own nudge (any arm but the holdout)."""
    rate = BASE_RATE
    segment = decision.get("segment")
    if isinstance(segment, str) and decision.get("arm") not in (None, "holdout"):
        rate += PLANTED.get(segment, 0.0)
    return draw(visitor) < rate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def decider(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`decider ARGS` as a new process, with `env` over this one's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "decider.cli", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise SystemExit(f"decider serve stopped:\n{said[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("decider serve did not come up within 60 s")


async def simulate(url: str, visitors: list[str]) -> tuple[int, int]:
    """Decide for each visitor over HTTP, then report their purchases: (decisions, purchases)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        gate = asyncio.Semaphore(16)

        async def decide(visitor: str) -> dict[str, object]:
            body = {"placement": "trial_nudge", "identity": {"visitor_id": visitor}}
            async with gate:
                answer = await client.post("/v1/decide", json=body)
            answer.raise_for_status()
            decided: dict[str, object] = answer.json()
            return decided

        decisions = await asyncio.gather(*(decide(v) for v in visitors))
        events = [
            {"event_id": f"order-{visitor}", "name": "purchase", "value": 49.0,
             "decision_id": decision["decision_id"]}
            for visitor, decision in zip(visitors, decisions, strict=True)
            if purchases(decision, visitor)
        ]  # fmt: skip
        for start in range(0, len(events), 1000):
            answer = await client.post(
                "/v1/outcomes", json={"events": events[start : start + 1000]}
            )
            answer.raise_for_status()
            if answer.json()["accepted"] != len(events[start : start + 1000]):
                raise SystemExit(f"outcomes not all accepted: {answer.text[:500]}")
    return len(decisions), len(events)


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in {
        *directory.glob("*/*.jsonl"),
        *directory.glob("profiles.*"),
        *directory.glob("*.db*"),
    }:
        old.unlink()  # an earlier run's
    people = profiles(VISITORS)
    (directory / "profiles.jsonl").write_text("".join(json.dumps(p) + "\n" for p in people))
    env = {
        "DECIDER_PROFILE_DB": str(directory / "profiles.db"),
        "DECIDER_RULES_DIR": str(RULES),
        "DECIDER_EXPOSURE_SINK": "jsonl",
        "DECIDER_EXPOSURE_DIR": str(directory / "exposures"),
        "DECIDER_OUTCOME_DIR": str(directory / "outcomes"),
        "DECIDER_USAGE_DB": str(directory / "usage.db"),
        "DECIDER_MEASURE_KEY": hashlib.sha256(SEED.encode()).hexdigest(),
        "DECIDER_API_KEYS": f"demo:decide+outcomes:{hashlib.sha256(KEY.encode()).hexdigest()}",
        "DECIDER_HOST": "127.0.0.1",
        "DECIDER_WORKERS": "1",
        "DECIDER_WATCH_RULES": "false",
        "DECIDER_LOG_LEVEL": "warning",
    }
    imported = decider("profiles", "import", str(directory / "profiles.jsonl"), env=env)
    if imported.wait() != 0:
        said = imported.stderr.read().decode(errors="replace") if imported.stderr else ""
        raise SystemExit(f"decider profiles import failed:\n{said}")
    port = free_port()
    service = decider("serve", "--port", str(port), env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, service)
        decided, bought = asyncio.run(simulate(url, [str(p["id"]) for p in people]))
    finally:
        service.send_signal(signal.SIGTERM)  # it writes what is queued, then stops
        service.wait(timeout=60)
    print(f"decided {decided:,} trial users over HTTP; {bought:,} purchases reported")
    print(
        f"planted: {BASE_RATE:.0%} buy without the tailored nudge; stalled_trials' nudge adds "
        f"{PLANTED['stalled_trials'] * 100:+.0f} points, active_trials' adds none"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "lift-demo"))
