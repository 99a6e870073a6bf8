"""Hot reload against the real server and real file edits: fast, safe, and never half-loaded."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RULES, api_key
from .service import Service, running_service

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
KEYS = api_key(TOKEN, "decide", "admin")
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
CTA = "cta: Book an executive briefing\n"


def decide(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/decide", json=ADA)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def rules_state(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/admin/rules", headers=ADMIN)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def wait_for(condition: Callable[[], bool], seconds: float) -> float:
    """Poll until `condition` holds; returns the time it took, or fails after `seconds`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def edit(path: Path, old: str, new: str) -> str:
    """Replace the first `old` with `new`; returns the text before, to put back."""
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return text


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    """One server watching its own copy of the sample rules, with admin on."""
    workdir = tmp_path_factory.mktemp("reload")
    rules = workdir / "rules"
    shutil.copytree(RULES, rules)
    env = {"DECIDER_API_KEYS": KEYS, "DECIDER_RELOAD_DEBOUNCE_MS": "100"}
    with running_service(rules, workdir, env=env, headers=ADMIN) as service:
        yield service, rules


def test_a_valid_edit_is_live_within_two_seconds(watched: tuple[Service, Path]) -> None:
    """Saving a valid change to a rule file changes decisions within 2 seconds, unprompted."""
    service, rules = watched
    before = decide(service.client)
    assert before["variant"]["content"]["cta"] == "Book an executive briefing"
    original = edit(rules / "b2b.yaml", CTA, "cta: Book your executive briefing\n")
    try:
        took = wait_for(
            lambda: (
                decide(service.client)["variant"]["content"]["cta"]
                == "Book your executive briefing"
            ),
            2.0,
        )
        after = decide(service.client)
        assert after["ruleset"] != before["ruleset"]
        state = rules_state(service.client)
        assert state["version"] == after["ruleset"]
        assert state["last_reload"]["ok"] is True
        assert state["last_reload"]["trigger"] == "watch"
        print(f"valid edit live after {took:.2f} s")
    finally:
        (rules / "b2b.yaml").write_text(original)
        wait_for(lambda: decide(service.client)["ruleset"] == before["ruleset"], 5.0)


BROKEN_EDITS = [
    ("bad YAML", "b2b.yaml", "placements:\n", "placements:\n  - {id: [\n", "invalid YAML"),
    ("bad CEL", "b2b.yaml", "account.fit_score < 40", "account.fit_score <", "syntax error"),
    (
        "variant for an unknown segment",
        "b2b.yaml",
        "      b2b_out_of_icp:\n",
        "      b2b_out_of_icpp:\n",
        "variant for unknown segment 'b2b_out_of_icpp'",
    ),
    (
        "failing rule test",
        "tests/b2b.yaml",
        "variant: home_named_account,",
        "variant: home_generic,",
        "rule test 'top-tier account in evaluation gets the named-account hero' fails",
    ),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [b[1:] for b in BROKEN_EDITS],
    ids=[b[0] for b in BROKEN_EDITS],
)
def test_a_broken_edit_is_refused_and_the_last_good_rules_keep_serving(
    watched: tuple[Service, Path], file: str, old: str, new: str, message: str
) -> None:
    """A broken save is refused with its place; decisions go on from the last good version."""
    service, rules = watched
    good = decide(service.client)
    reloads = rules_state(service.client)["reloads"]
    original = edit(rules / file, old, new)
    try:
        wait_for(lambda: rules_state(service.client)["reloads"] > reloads, 3.0)
        state = rules_state(service.client)
        assert state["last_reload"]["ok"] is False
        assert state["version"] == good["ruleset"]
        errors = state["last_reload"]["errors"]
        assert any(message in e["message"] and e["file"].endswith(file) for e in errors), errors
        assert all(e["line"] >= 1 and e["column"] >= 1 for e in errors)
        still = decide(service.client)
        assert still["ruleset"] == good["ruleset"]
        assert still["variant"] == good["variant"]
    finally:
        (rules / file).write_text(original)
        wait_for(lambda: rules_state(service.client)["last_reload"]["ok"] is True, 5.0)


def test_admin_reload_answers_422_when_refused(watched: tuple[Service, Path]) -> None:
    """POST /admin/reload reloads now: 200 with the state, or 422 with the problems."""
    service, rules = watched
    assert service.client.post("/admin/reload", headers={"Authorization": ""}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert service.client.post("/admin/reload", headers=wrong).status_code == 401
    ok = service.client.post("/admin/reload", headers=ADMIN)
    assert ok.status_code == 200
    assert ok.json()["last_reload"]["trigger"] == "admin"
    original = (rules / "context.yaml").read_text()
    try:
        (rules / "context.yaml").write_text(
            original.replace("context.url.contains", "context.url.has(")
        )
        refused = service.client.post("/admin/reload", headers=ADMIN)
        assert refused.status_code == 422
        body = refused.json()
        assert body["last_reload"]["ok"] is False
        assert body["last_reload"]["errors"][0]["rule"] == "ctx_migration_research"
    finally:
        (rules / "context.yaml").write_text(original)
        wait_for(lambda: rules_state(service.client)["last_reload"]["ok"] is True, 5.0)


def test_no_request_fails_or_sees_half_a_ruleset_during_reloads(
    watched: tuple[Service, Path],
) -> None:
    """Decisions stream from 4 threads while the rules flip between two versions 20 times."""
    service, rules = watched
    path = rules / "b2b.yaml"
    versions = {
        "A": path.read_text(),
        "B": path.read_text()
        .replace(CTA, "cta: Meet the team\n", 1)
        .replace("hero: Built for teams like yours", "hero: Made for teams like yours", 1),
    }
    seen: list[tuple[int, str, str, str]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=service.client.base_url, timeout=10, headers=ADMIN) as client:
            while not stop.is_set():
                response = client.post("/v1/decide", json=ADA)
                body = response.json() if response.status_code == 200 else {}
                content = body.get("variant", {}).get("content", {})
                seen.append(
                    (
                        response.status_code,
                        body.get("ruleset", ""),
                        content.get("cta", ""),
                        content.get("hero", ""),
                    )
                )

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for flip in range(20):
            path.write_text(versions["B" if flip % 2 == 0 else "A"])
            if flip % 5 == 0:
                service.client.post("/admin/reload", headers=ADMIN)
            time.sleep(0.15)
    finally:
        path.write_text(versions["A"])
        time.sleep(0.4)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert len(seen) > 100
    assert {status for status, *_ in seen} == {200}
    by_version: dict[str, set[tuple[str, str]]] = {}
    for _, version, cta, hero in seen:
        by_version.setdefault(version, set()).add((cta, hero))
    assert len(by_version) >= 2  # the flips were served
    whole = {
        (
            "Book an executive briefing",
            "Built for teams like yours, with your whole buying committee in mind",
        ),
        ("Meet the team", "Made for teams like yours, with your whole buying committee in mind"),
    }
    for version, contents in by_version.items():
        assert len(contents) == 1, (version, contents)  # one version, one content: never mixed
        assert contents <= whole
    wait_for(
        lambda: decide(service.client)["variant"]["content"]["cta"] == "Book an executive briefing",
        5.0,
    )


def test_sighup_reloads(tmp_path: Path) -> None:
    """With watching off, an edit waits for SIGHUP, which reloads it."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    env = {"DECIDER_API_KEYS": KEYS, "DECIDER_WATCH_RULES": "false"}
    with running_service(rules, tmp_path, env=env, headers=ADMIN) as service:
        before = decide(service.client)["ruleset"]
        edit(rules / "b2b.yaml", CTA, "cta: Book a briefing\n")
        time.sleep(0.5)
        assert decide(service.client)["ruleset"] == before
        service.process.send_signal(signal.SIGHUP)
        wait_for(lambda: decide(service.client)["ruleset"] != before, 3.0)
        assert rules_state(service.client)["last_reload"]["trigger"] == "sighup"
        assert decide(service.client)["variant"]["content"]["cta"] == "Book a briefing"
