"""Rule changes swapped in whole: the rules directory a symlink to one revision, swapped by
renaming a new link over it (`ln -s new tmp && mv -T tmp rules`), or a Kubernetes ConfigMap
volume (`..data` -> `..<timestamp>`), against a real `decider serve`.

Each swap is read whole, reloaded once, and a broken revision is never served, not even
under load.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.rules.files import links_of, revision_dir

from .conftest import ROOT, RULES, api_key
from .service import running_service

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
CTA = "cta: Book an executive briefing\n"
ENV = {"DECIDER_API_KEYS": api_key(TOKEN, "decide", "admin"), "DECIDER_RELOAD_DEBOUNCE_MS": "50"}


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.02)


def state(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/admin/rules", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def served(client: httpx.Client) -> str:
    response = client.post("/v1/decide", json=ADA)
    assert response.status_code == 200, response.text
    version: str = response.json()["ruleset"]
    return version


def revision(root: Path, name: str, *edits: tuple[str, str, str]) -> Path:
    """A copy of the sample rules under `root`, each (file, old, new) edit applied."""
    target = root / name
    shutil.copytree(RULES, target)
    for file, old, new in edits:
        text = (target / file).read_text()
        assert old in text, old
        (target / file).write_text(text.replace(old, new, 1))
    return target


def version_of(rules: Path) -> str:
    return compile_ruleset(rules, new_engine("cel-expr")).version


def swap_link(link: Path, target: Path) -> None:
    """`ln -s target tmp && mv -T tmp link`: one rename, so the link never is missing."""
    temporary = link.with_name(f".{link.name}.tmp")
    os.symlink(target.name if target.parent == link.parent else target, temporary)
    os.replace(temporary, link)


# two valid revisions, and two broken ones: each breaks a different file than it changes
VALID_B = ("b2b.yaml", CTA, "cta: Meet the team\n")
# a change to three files, any part of which alone fails the rule tests
THREE_FILES = (
    ("b2b.yaml", "id: home_named_account", "id: home_named_account_v2"),
    ("tests/b2b.yaml", "variant: home_named_account,", "variant: home_named_account_v2,"),
    (
        "tests/consent_and_suppression.yaml",
        "variant: home_named_account}",
        "variant: home_named_account_v2}",
    ),
)
BROKEN_CEL = ("b2b.yaml", "account.fit_score < 40", "account.fit_score <")
BROKEN_TEST = ("tests/b2b.yaml", "variant: home_named_account,", "variant: home_generic,")


def readme_swap() -> str:
    """The README's command that checks a new revision and swaps `rules` to it."""
    blocks: list[str] = re.findall(
        r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S
    )
    (command,) = [block.strip() for block in blocks if "mv -T" in block]
    return command


def test_a_swapped_symlink_is_reloaded_once_and_then_followed(tmp_path: Path) -> None:
    """`rules -> rules-v1`, then the README's swap to rules-v2, which changes three files
    at once: rules-v2 serves after one reload; an edit inside rules-v2 is then seen, and one
    inside rules-v1 (no longer served) is not."""
    v1 = revision(tmp_path, "rules-v1")
    v2 = revision(tmp_path, "rules-v2", *THREE_FILES)
    rules = tmp_path / "rules"
    os.symlink("rules-v1", rules)
    with running_service(rules, tmp_path, env=ENV, headers=ADMIN) as service:
        client = service.client
        assert served(client) == version_of(v1)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_swap()],
            cwd=tmp_path,
            env={**os.environ, "PATH": path},
            check=True,
            capture_output=True,
        )
        assert os.readlink(rules) == "rules-v2"
        wait_for(lambda: served(client) == version_of(v2), 5.0)
        time.sleep(0.5)  # room for a second reload, were the swap seen twice
        after_swap = state(client)
        assert (after_swap["reloads"], after_swap["failed_reloads"]) == (1, 0)
        assert {Path(name).parent.name for name in after_swap["files"]} == {"rules-v2"}

        text = (v2 / "b2b.yaml").read_text()
        (v2 / "b2b.yaml").write_text(text.replace(CTA, "cta: Talk to us\n", 1))
        wait_for(lambda: state(client)["reloads"] == 2, 5.0)
        assert client.post("/v1/decide", json=ADA).json()["variant"]["content"]["cta"] == (
            "Talk to us"
        )

        (v1 / "b2b.yaml").write_text("segments: [this is not served]\n")
        time.sleep(0.5)
        assert state(client)["reloads"] == 2


def test_every_symlink_on_the_way_is_a_place_a_revision_may_change(tmp_path: Path) -> None:
    """`rules -> deploy/current/rules`, `current -> releases/7`: the revision is read from
    releases/7/rules, and a swap of either link is watched for; a plain directory has none."""
    (tmp_path / "releases" / "7" / "rules").mkdir(parents=True)
    (tmp_path / "deploy").mkdir()
    os.symlink("../releases/7", tmp_path / "deploy" / "current")
    os.symlink("deploy/current/rules", tmp_path / "rules")
    rules = tmp_path / "rules"
    assert revision_dir(rules) == tmp_path / "releases" / "7" / "rules"
    assert links_of(rules) == [rules, tmp_path / "deploy" / "current"]
    plain = tmp_path / "releases" / "7" / "rules"
    assert (revision_dir(plain), links_of(plain)) == (plain, [])


def test_a_rules_directory_deleted_and_written_anew_is_watched_again(tmp_path: Path) -> None:
    """`rm -rf rules && cp -r new rules`: the deletion is refused (the last good rules
    serve), and the new directory is watched and served."""
    rules = revision(tmp_path, "rules")
    new = revision(tmp_path / "sources", "new", VALID_B)
    with running_service(rules, tmp_path, env=ENV, headers=ADMIN) as service:
        client = service.client
        before = served(client)
        shutil.rmtree(rules)
        wait_for(lambda: state(client)["failed_reloads"] >= 1, 5.0)
        assert served(client) == before
        shutil.copytree(new, rules)
        wait_for(lambda: served(client) == version_of(new), 5.0)
        text = (rules / "b2b.yaml").read_text()
        (rules / "b2b.yaml").write_text(text.replace("cta: Meet the team\n", "cta: Hello\n", 1))
        wait_for(lambda: served(client) == version_of(rules), 5.0)


def configmap_revision(volume: Path, stamp: str, source: Path) -> None:
    """Write `source` as a ConfigMap volume's new revision, as the kubelet does: the files
    in a new hidden directory, `..data_tmp` pointing at it renamed over `..data`, the user
    visible names links through `..data`, the old revision removed."""
    new = volume / f"..{stamp}"
    shutil.copytree(source, new)
    data = volume / "..data"
    old = Path(os.readlink(data)) if data.is_symlink() else None
    os.symlink(new.name, volume / "..data_tmp")
    os.replace(volume / "..data_tmp", data)
    for entry in new.iterdir():
        visible = volume / entry.name
        if not visible.is_symlink():
            os.symlink(f"..data/{entry.name}", visible)
    if old is not None:
        shutil.rmtree(volume / old)


def test_a_configmap_volume_update_is_one_reload(tmp_path: Path) -> None:
    """A ConfigMap volume as Kubernetes mounts it: a new revision is served after one
    reload, read whole, and a broken one is refused while the last good one serves."""
    good = revision(tmp_path / "sources", "good")
    changed = revision(tmp_path / "sources", "changed", *THREE_FILES)
    broken = revision(tmp_path / "sources", "broken", BROKEN_CEL)
    volume = tmp_path / "volume"
    volume.mkdir()
    configmap_revision(volume, "2026_11_26_10_00_00.1", good)
    with running_service(volume, tmp_path, env=ENV, headers=ADMIN) as service:
        client = service.client
        assert served(client) == version_of(good)
        configmap_revision(volume, "2026_11_26_10_05_00.2", changed)
        wait_for(lambda: served(client) == version_of(changed), 5.0)
        time.sleep(0.5)
        assert (state(client)["reloads"], state(client)["failed_reloads"]) == (1, 0)

        configmap_revision(volume, "2026_11_26_10_10_00.3", broken)
        wait_for(lambda: state(client)["reloads"] == 2, 5.0)
        refused = state(client)
        assert refused["failed_reloads"] == 1
        assert refused["last_reload"]["ok"] is False
        assert any("syntax error" in e["message"] for e in refused["last_reload"]["errors"])
        assert served(client) == version_of(changed)


class Stream:
    """Decisions posted from `threads` threads until stopped: every status and ruleset, and
    every transport error."""

    def __init__(self, base_url: str, threads: int) -> None:
        self.base_url = base_url
        self.answers: list[tuple[int, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10, headers=ADMIN) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/decide", json=ADA)
                except httpx.TransportError as exc:
                    self.failures.append(type(exc).__name__)
                    continue
                body = response.json() if response.status_code == 200 else {}
                self.answers.append((response.status_code, body.get("ruleset", "")))


def test_no_request_fails_and_no_broken_revision_serves_under_load(tmp_path: Path) -> None:
    """Decisions stream from 4 threads for about three seconds while `rules` is swapped
    between a valid revision A, one that does not compile, a valid B and one whose rule
    tests fail (each revision deleted once swapped out), with SIGHUP and POST /admin/reload
    mixed in: every answer is a 200 from A or B."""
    a = revision(tmp_path / "sources", "a")
    b = revision(tmp_path / "sources", "b", VALID_B)
    cycle = [("broken-cel", BROKEN_CEL), ("b", VALID_B), ("broken-test", BROKEN_TEST), ("a", None)]
    valid = {version_of(a), version_of(b)}
    rules = tmp_path / "rules"
    os.symlink(a, rules)
    with (
        running_service(rules, tmp_path, env=ENV, headers=ADMIN) as service,
        Stream(str(service.client.base_url), threads=4) as stream,
    ):
        deadline = time.monotonic() + 3.0
        swaps = 0
        while time.monotonic() < deadline:
            name, edit = cycle[swaps % len(cycle)]
            # a fresh directory per swap, as a deployment writes each revision anew, and the
            # one it replaces deleted at once, as the kubelet does
            previous = rules.resolve()
            new = revision(tmp_path / "revisions", f"{swaps:03d}-{name}", *filter(None, [edit]))
            swap_link(rules, new)
            if previous.parent.name == "revisions":
                shutil.rmtree(previous)
            if swaps % 3 == 1:
                service.client.post("/admin/reload", headers=ADMIN)
            if swaps % 3 == 2:
                service.process.send_signal(signal.SIGHUP)
            swaps += 1
            time.sleep(0.15)
        swap_link(rules, b)
        wait_for(lambda: served(service.client) == version_of(b), 10.0)
        final = state(service.client)
    assert not stream.failures
    assert len(stream.answers) > 100
    assert {status for status, _ in stream.answers} == {200}
    seen = {version for _, version in stream.answers}
    assert seen <= valid, seen - valid  # never a broken revision
    assert seen == valid  # both valid revisions were served in turn
    assert final["failed_reloads"] >= 1  # broken revisions were tried, and refused
