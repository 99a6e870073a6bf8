"""Admin endpoints in-process: only for keys with the admin scope; segment governance."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.ruleset import CompiledRuleset

from .conftest import NOW, api_key, app_client

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DECIDE = "test-decide-key-0123456789"


@pytest.fixture
def admin(ruleset: CompiledRuleset, store: SqliteProfileStore) -> Iterator[TestClient[Any]]:
    keys = f"{api_key(TOKEN, 'admin', name='ops')},{api_key(DECIDE, 'decide', name='edge')}"
    with app_client(ruleset, store, api_keys=keys) as client:
        yield client


def test_admin_endpoints_need_a_key_even_on_loopback(client: TestClient[Any]) -> None:
    """With no keys configured, callers on this machine may decide, not administer."""
    for path in ("/admin/rules", "/admin/segments"):
        assert client.get(path, headers=ADMIN).status_code == 403
    refused = client.post("/admin/reload", headers=ADMIN)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this needs an API key with the admin scope"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token-0123456789", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
def test_admin_endpoints_need_the_bearer_token(admin: TestClient[Any], header: str | None) -> None:
    """Anything but `Authorization: Bearer <key>` is a 401 with a problem body."""
    headers = {"Authorization": header} if header else {}
    response = admin.get("/admin/rules", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"


def test_a_key_without_the_admin_scope_is_forbidden(admin: TestClient[Any]) -> None:
    edge = {"Authorization": f"Bearer {DECIDE}"}
    assert admin.get("/admin/rules", headers=edge).status_code == 403
    assert admin.post("/admin/reload", headers=edge).status_code == 403


def test_admin_rules_describes_the_loaded_ruleset(
    admin: TestClient[Any], ruleset: CompiledRuleset
) -> None:
    """GET /admin/rules: version, engine, load time, files, and no reload yet."""
    state = admin.get("/admin/rules", headers=ADMIN).json()
    assert state["version"] == ruleset.version
    assert state["engine"] == ruleset.engine.name
    assert state["files"] == list(ruleset.files)
    assert state["last_reload"] is None
    assert state["warnings"] == []
    assert state["loaded_at"]


def test_admin_segments_reports_wins_and_last_match(
    admin: TestClient[Any], ruleset: CompiledRuleset
) -> None:
    """GET /admin/segments: each segment's owner and purpose, wins since start, last match."""
    for user in ("u-ada", "u-ada", "u-ben"):
        body = {"placement": "home_hero", "identity": {"user_id": user}}
        assert admin.post("/v1/decide", json=body, headers={"X-API-Key": DECIDE}).is_success
    report = admin.get("/admin/segments", headers=ADMIN).json()
    assert report["decisions"] == 3
    by_id = {s["id"]: s for s in report["segments"]}
    assert set(by_id) == {s.id for s in ruleset.segments}
    top = by_id["b2b_top_tier_evaluation"]
    assert (top["wins"], top["owner"]) == (2, "abm@decider.example")
    assert top["last_matched"] == NOW.isoformat().replace("+00:00", "Z")
    assert top["description"].startswith("Top-tier ICP fit")
    assert by_id["b2b_mid_tier_surge"]["wins"] == 1
    assert by_id["shop_browser"] == by_id["shop_browser"] | {"wins": 0, "last_matched": None}


def test_admin_segments_counts_suppressions(admin: TestClient[Any]) -> None:
    """Each suppression rule reports how often it held, and how often through an error."""
    unsubscribed = hashlib.sha256(b"max@globex.example").hexdigest()
    for _ in range(2):
        body = {"placement": "nurture_email", "identity": {"email_sha256": unsubscribed}}
        decided = admin.post("/v1/decide", json=body, headers={"X-API-Key": DECIDE})
        assert decided.json()["suppressed"] is True
    report = admin.get("/admin/segments", headers=ADMIN).json()
    by_id = {s["id"]: s for s in report["suppressions"]}
    assert by_id["email_opt_outs"] | {"description": ""} == {
        "id": "email_opt_outs", "description": "", "hits": 2, "errors": 0
    }  # fmt: skip
    assert by_id["customers_no_acquisition"]["hits"] == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_auth_scheme_is_case_insensitive(admin: TestClient[Any], scheme: str) -> None:
    """RFC 7235: the scheme name is case-insensitive; the token itself is not."""
    assert admin.get("/admin/rules", headers={"Authorization": f"{scheme} {TOKEN}"}).is_success
    wrong = {"Authorization": f"{scheme} {TOKEN.upper()}"}
    assert admin.get("/admin/rules", headers=wrong).status_code == 401
