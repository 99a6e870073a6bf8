"""Overload is visible, not silent: past DECIDER_MAX_IN_FLIGHT a decision is a 503 with
Retry-After at once; shed requests, lookups past their budget, stale and unavailable answers
are counted (GET /admin/traffic)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from decider.profiles.cache import CacheSettings
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.ruleset import CompiledRuleset

from .conftest import NOW, RULES, api_key, app_client
from .fake_profile_api import fake_profile_api
from .service import running_service

KEY = "ops-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
KEYS = api_key(KEY, "decide", "explain", "admin")
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}


def test_past_the_limit_a_decision_is_a_503_at_once_and_counted(tmp_path: Path) -> None:
    """Two decisions wait on a profile API that hangs; the third is turned away at once."""
    with fake_profile_api({}) as api:
        env = {
            "DECIDER_API_KEYS": KEYS,
            "DECIDER_WATCH_RULES": "false",
            "DECIDER_PROFILE_SOURCE": "http",
            "DECIDER_PROFILE_API_URL": api.url,
            "DECIDER_PROFILE_API_TIMEOUT": "2",
            "DECIDER_PROFILE_BUDGET_MS": "2000",
            "DECIDER_MAX_IN_FLIGHT": "2",  # a worker's: one worker, to fill it
            "DECIDER_WORKERS": "1",
        }
        with running_service(RULES, tmp_path, env=env, headers=HEADERS) as service:
            api.set("hang")
            url = service.client.base_url

            def decide(user: str) -> httpx.Response:
                body = {"placement": "home_hero", "identity": {"user_id": user}}
                with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
                    return client.post("/v1/decide", json=body)

            with ThreadPoolExecutor(2) as pool:
                held = [pool.submit(decide, f"u-{n}") for n in range(2)]
                deadline = time.monotonic() + 5
                while traffic(service.client)["in_flight"] < 2:
                    assert time.monotonic() < deadline, "the two decisions never started"
                    time.sleep(0.02)
                shed = decide("u-3")
                during = traffic(service.client)
                answers = [future.result() for future in held]
            after = traffic(service.client)
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["content-type"] == "application/problem+json"
    assert shed.json()["code"] == "overloaded"
    assert (during["in_flight"], during["max_in_flight"], during["shed"]) == (2, 2, 1)
    # the held ones ran out of their budget: answered, without a profile, and counted
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["reasons"][0]["code"] for a in answers] == ["identity.unavailable"] * 2
    assert (after["in_flight"], after["shed"], after["decisions"]) == (0, 1, 2)
    assert (after["unavailable"], after["lookups_over_budget"]) == (2, 2)


def traffic(client: httpx.Client) -> dict[str, Any]:
    answer: dict[str, Any] = client.get("/admin/traffic").json()
    return answer


def test_stale_answers_are_counted(ruleset: CompiledRuleset) -> None:
    source = MemoryProfileSource(sample_profiles(NOW))
    cache = CacheSettings(ttl=0.01)
    with app_client(ruleset, source, api_keys=KEYS, headers=HEADERS, cache=cache) as client:
        assert client.post("/v1/decide", json=ADA).is_success
        time.sleep(0.02)  # Ada's entries are past their TTL, kept stale
        source.available = False
        stale = client.post("/v1/decide", json=ADA).json()
        assert "identity.stale" in [reason["code"] for reason in stale["reasons"]]
        counted = client.get("/admin/traffic").json()
    assert (counted["decisions"], counted["stale"], counted["unavailable"]) == (2, 1, 0)
    assert counted["shed"] == 0
