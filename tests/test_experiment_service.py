"""The hero's holdout through the running app: the answer names the experiment and the arm,
explain shows the bucket (never the unit's id), a holdout is counted apart, and the exposure
log gets one record per bucketed decision, its unit a keyed hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from decider.measure.records import Exposure, record_decoder
from decider.measure.units import Units
from decider.reasons import ReasonCode
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.ruleset import CompiledRuleset

from .conftest import RULES, api_key, app_client
from .privacy import leaks

OPS = "ops-key-0123456789abcdef"  # admin, decide, explain
EDGE = "edge-key-0123456789abcdef"  # decide only
KEYS = f"{api_key(OPS, 'admin', 'decide', 'explain', name='ops')},{api_key(EDGE, 'decide')}"
MEASURE_KEY = "0f" * 16
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
CLEO = {"placement": "home_hero", "identity": {"visitor_id": "v-cleo"}}  # acc-initech: held out
OTHERS: list[dict[str, Any]] = [
    {"placement": "nurture_email", "identity": {"user_id": "u-ada"}},  # no experiment
    {"placement": "nurture_email", "identity": {"user_id": "u-max"}},  # suppressed
    {  # no consent: a contextual segment, not bucketed
        "placement": "home_hero",
        "identity": {"user_id": "u-lee"},
        "context": {"url": "https://decider.example/guides/migrating-your-cms"},
    },
]


@pytest.fixture(scope="module")
def cel_expr_rules() -> CompiledRuleset:
    return compile_ruleset(RULES, new_engine("cel-expr"))


def post(client: Any, body: dict[str, Any], key: str = OPS) -> dict[str, Any]:
    answer = client.post("/v1/decide", json=body, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    decided: dict[str, Any] = answer.json()
    return decided


def test_bucketed_decisions_are_logged_as_exposures_and_counted(
    cel_expr_rules: CompiledRuleset, tmp_path: Path
) -> None:
    exposures = tmp_path / "exposures"
    with app_client(
        cel_expr_rules,
        api_keys=KEYS,
        exposure_sink="jsonl",
        exposure_dir=exposures,
        measure_key=MEASURE_KEY,
    ) as client:
        ada, cleo = post(client, ADA), post(client, CLEO)
        others = [post(client, body) for body in OTHERS]
        scraped = client.get("/metrics", headers={"X-API-Key": OPS}).text
    assert (ada["experiment"], ada["arm"], ada["variant"]["id"]) == (
        "home_hero_holdout",
        "control",
        "home_named_account",
    )
    assert (cleo["segment"], cleo["arm"], cleo["variant"]["id"], cleo["personalized"]) == (
        "b2b_icp_awareness_dormant",
        "holdout",
        "home_generic",
        False,
    )
    assert all("arm" not in other and "experiment" not in other for other in others)
    assert others[2]["reasons"][-1]["code"] == ReasonCode.EXPERIMENT_NOT_BUCKETED
    text = "\n".join(p.read_text() for p in sorted(exposures.glob("exposures-*.jsonl")))
    assert leaks(text) == []
    records = [record_decoder.decode(line) for line in text.splitlines()]
    units = Units(bytes.fromhex(MEASURE_KEY))
    assert records == [
        Exposure(
            at=records[0].at,
            decision_id=ada["decision_id"],
            ruleset=cel_expr_rules.version,
            placement="home_hero",
            channel="web",
            segment="b2b_top_tier_evaluation",
            experiment="home_hero_holdout",
            arm="control",
            variant="home_named_account",
            unit_kind="account",
            unit=units.account("acc-northwind"),
        ),
        Exposure(
            at=records[1].at,
            decision_id=cleo["decision_id"],
            ruleset=cel_expr_rules.version,
            placement="home_hero",
            channel="web",
            segment="b2b_icp_awareness_dormant",
            experiment="home_hero_holdout",
            arm="holdout",
            variant="home_generic",
            unit_kind="account",
            unit=units.account("acc-initech"),
        ),
    ]
    counted = {
        (s.labels["segment"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "decider_decisions_total" and s.labels["placement"] == "home_hero"
    }
    assert counted[("b2b_icp_awareness_dormant", "holdout")] == 1
    assert counted[("b2b_top_tier_evaluation", "personalized")] == 1


def test_explain_shows_the_bucket_and_a_plain_caller_the_arm_alone(
    cel_expr_rules: CompiledRuleset,
) -> None:
    with app_client(cel_expr_rules, api_keys=KEYS) as client:
        explained = post(client, {**CLEO, "explain": True})
        plain = post(client, CLEO, key=EDGE)
    bucket = explained["bucket"]
    assert bucket["experiment"] == "home_hero_holdout"
    assert bucket["unit_kind"] == "account"
    assert bucket["point"] < bucket["holdout"] == 0.1
    assert bucket["arm"] == "holdout"
    assert "initech" not in json.dumps(bucket)
    assert (plain["experiment"], plain["arm"], plain["segment"]) == (
        "home_hero_holdout",
        "holdout",
        "b2b_icp_awareness_dormant",
    )
    assert "bucket" not in plain
    held = [r for r in plain["reasons"] if r["code"].startswith("experiment.")]
    assert held == [
        {"code": "experiment.holdout", "message": ReasonCode.EXPERIMENT_HOLDOUT.meaning}
    ]
    assert leaks(json.dumps(plain)) == []
