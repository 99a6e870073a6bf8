"""GET /metrics: what a process has decided, how its profile lookups and reloads went, its
load; in Prometheus's text format, with no identifier, hash or trait value in any label."""

from __future__ import annotations

import hashlib
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.ruleset import CompiledRuleset

from .conftest import api_key, app_client
from .privacy import leaks

KEY = "ops-key-0123456789abcdef"
EDGE = "edge-key-0123456789abcdef"
KEYS = f"{api_key(KEY, 'admin', name='ops')},{api_key(EDGE, 'decide', name='edge')}"
MAX_SHA = hashlib.sha256(b"max@globex.example").hexdigest()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_decisions_lookups_reloads_and_load(
    ruleset: CompiledRuleset, store: SqliteProfileStore
) -> None:
    bodies: list[dict[str, Any]] = [
        {"placement": "home_hero", "identity": {"user_id": "u-ada"}},
        {"placement": "home_hero", "identity": {"user_id": "u-ada"}},
        {"placement": "nurture_email", "identity": {"email_sha256": MAX_SHA}},
        {"placement": "home_hero", "identity": {"visitor_id": "anon-1"}},
    ]
    with app_client(ruleset, store, api_keys=KEYS) as client:
        for body in bodies:
            assert client.post("/v1/decide", json=body, headers={"X-API-Key": EDGE}).is_success
        assert client.post("/admin/reload", headers={"X-API-Key": KEY}).is_success
        assert client.get("/metrics", headers={"X-API-Key": EDGE}).status_code == 403
        answer = client.get("/metrics", headers={"X-API-Key": KEY})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    assert leaks(answer.text) == []  # no id, hash or address of a test person
    found = samples(answer.text)

    def value(name: str, **labels: str) -> float:
        return found[name, tuple(sorted({**labels, "worker": "0"}.items()))]

    top = {"placement": "home_hero", "channel": "web", "segment": "b2b_top_tier_evaluation"}
    assert value("decider_decisions_total", **top, outcome="personalized") == 2
    email = {"placement": "nurture_email", "channel": "email", "segment": ""}
    assert value("decider_decisions_total", **email, outcome="suppressed") == 1
    anonymous = {"placement": "home_hero", "channel": "web", "segment": ""}
    assert value("decider_decisions_total", **anonymous, outcome="default") == 1
    assert value("decider_decision_seconds_count") == 4
    # in-process decisions take well under a second, and the buckets count cumulatively
    assert value("decider_decision_seconds_bucket", le="1.0") == 4
    assert value("decider_decision_seconds_bucket", le="+Inf") == 4
    assert 0 < value("decider_decision_seconds_sum") < 4
    assert value("decider_reloads_total", trigger="admin", ok="true") == 1
    assert value("decider_ruleset_info", version=ruleset.version, engine=ruleset.engine.name) == 1
    assert value("decider_decisions_in_flight") == 0
    assert value("decider_shed_requests_total") == 0
    fetched = value(
        "decider_profile_lookups_total", source="sqlite", kind="visitor", result="fetched"
    )
    assert fetched >= 2  # Ada once (then cached), Max
    alias = {"source": "sqlite", "kind": "alias"}
    assert value("decider_profile_lookups_total", **alias, result="miss") == 2  # Ada, Max
    assert value("decider_profile_lookups_total", **alias, result="hit") == 1  # Ada again
    assert value("decider_profile_lookups_total", **alias, result="unavailable") == 0
    assert value("decider_profile_cache_entries", kind="visitor") >= 2
    assert value("decider_degraded_decisions_total", kind="stale") == 0
