"""Admin endpoints in-process: off without a token, guarded with one, segment governance."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.profiles.sources.sqlite import SqliteProfileStore
from decider.ruleset import CompiledRuleset

from .conftest import NOW, app_client

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(ruleset: CompiledRuleset, store: SqliteProfileStore) -> Iterator[TestClient[Any]]:
    with app_client(ruleset, store, admin_token=TOKEN) as client:
        yield client


def test_admin_endpoints_are_off_without_a_token(client: TestClient[Any]) -> None:
    """With no DECIDER_ADMIN_TOKEN the admin routes do not exist."""
    for path in ("/admin/rules", "/admin/segments"):
        assert client.get(path, headers=ADMIN).status_code == 404
    assert client.post("/admin/reload", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token-0123456789", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
def test_admin_endpoints_need_the_bearer_token(admin: TestClient[Any], header: str | None) -> None:
    """Anything but `Authorization: Bearer <token>` is a 401 with a JSON error."""
    headers = {"Authorization": header} if header else {}
    response = admin.get("/admin/rules", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


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
        assert admin.post("/v1/decide", json=body).status_code == 200
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
        assert admin.post("/v1/decide", json=body).json()["suppressed"] is True
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
