"""`decider serve --workers 2`: two real worker processes on one port, answering as one
service: decisions spread over both, admin and metrics report both, a reload (admin call,
SIGHUP to the supervisor) reaches both, a worker that dies is replaced, SIGTERM stops all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from decider.profile import VisitorProfile
from decider.profiles.jsonl import sample_profiles
from decider.server.workers import worker_count

from .conftest import RULES, api_key
from .fake_profile_api import fake_profile_api, routes_of
from .service import Service, running_service
from .test_reload import wait_for

TOKEN = "test-workers-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}
CTA = "cta: Book an executive briefing\n"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreading")


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    env = {
        "DECIDER_API_KEYS": api_key(TOKEN, "decide", "admin"),
        "DECIDER_WORKERS": "2",
        "DECIDER_WATCH_RULES": "false",
    }
    with running_service(rules, tmp_path, env=env, headers=ADMIN) as service:
        wait_for(lambda: len(rules_of(service)["workers"]) == 2, 10)
        yield service, rules


def rules_of(service: Service) -> dict[str, Any]:
    answer = service.client.get("/admin/rules")
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


def decide_fresh(service: Service, count: int) -> list[dict[str, Any]]:
    """`count` decisions, each on a connection of its own (so the kernel picks a worker)."""
    decisions = []
    for _ in range(count):
        with httpx.Client(base_url=service.client.base_url, headers=ADMIN) as client:
            answer = client.post("/v1/decide", json=ADA)
            assert answer.status_code == 200, answer.text
            decisions.append(answer.json())
    return decisions


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = service.client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_decisions_spread_and_every_worker_is_counted(two: tuple[Service, Path]) -> None:
    service, _ = two
    decide_fresh(service, 40)
    traffic = service.client.get("/admin/traffic").json()
    assert traffic["workers"] == 2
    assert traffic["decisions"] == 40
    assert traffic["max_in_flight"] == 2 * 256
    segments = service.client.get("/admin/segments").json()
    assert segments["workers"] == 2
    assert segments["decisions"] == 40
    assert sum(s["wins"] for s in segments["segments"]) == 40

    per_worker: Counter[str] = Counter()
    for (name, labels), value in scrape(service).items():
        if name == "decider_decisions_total":
            per_worker[dict(labels)["worker"]] += int(value)
    assert sum(per_worker.values()) == 40
    assert set(per_worker) == {"0", "1"}
    assert all(per_worker.values()), f"one worker took every connection: {per_worker}"


def test_admin_reload_reaches_every_worker(two: tuple[Service, Path]) -> None:
    service, rules = two
    before = rules_of(service)["version"]
    text = (rules / "b2b.yaml").read_text()
    (rules / "b2b.yaml").write_text(text.replace(CTA, "cta: Book a briefing\n", 1))
    answer = service.client.post("/admin/reload")
    assert answer.status_code == 200, answer.text
    state = answer.json()
    versions = {w["version"] for w in state["workers"]}
    assert len(state["workers"]) == 2
    assert versions == {state["version"]} != {before}
    assert all(w["last_reload"]["ok"] for w in state["workers"])
    # whichever worker takes the connection decides with the new rules
    for decision in decide_fresh(service, 10):
        assert decision["variant"]["content"]["cta"] == "Book a briefing"


def test_a_refused_reload_is_422_and_both_keep_serving(two: tuple[Service, Path]) -> None:
    service, rules = two
    before = rules_of(service)["version"]
    (rules / "b2b.yaml").write_text("segments: [\n")
    answer = service.client.post("/admin/reload")
    assert answer.status_code == 422, answer.text
    state = answer.json()
    assert {w["version"] for w in state["workers"]} == {before}
    assert not any(w["last_reload"]["ok"] for w in state["workers"])
    assert all(d["ruleset"] == before for d in decide_fresh(service, 6))


def test_sighup_to_the_supervisor_reloads_every_worker(two: tuple[Service, Path]) -> None:
    service, rules = two
    before = rules_of(service)["version"]
    text = (rules / "b2b.yaml").read_text()
    (rules / "b2b.yaml").write_text(text.replace(CTA, "cta: Book a briefing\n", 1))
    service.process.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        workers = rules_of(service)["workers"]
        return len(workers) == 2 and all(w["version"] != before for w in workers)

    wait_for(reloaded, 10)
    assert {w["last_reload"]["trigger"] for w in rules_of(service)["workers"]} == {"sighup"}
    # each worker logged its own reload, naming itself
    logged = [json.loads(line) for line in service.log.read_text().splitlines() if line[:1] == "{"]
    reloads = [event for event in logged if event.get("event") == "reload"]
    assert sorted(event["worker"] for event in reloads) == [0, 1]


def test_a_dead_worker_is_replaced_and_sigterm_stops_all(two: tuple[Service, Path]) -> None:
    service, _ = two
    _replace_worker(service, 0)
    survivors = {w["pid"] for w in rules_of(service)["workers"]}
    assert all(d["ruleset"] for d in decide_fresh(service, 6))
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=40) == 0
    for pid in survivors:
        wait_for(lambda pid=pid: not _alive(pid), 5)  # type: ignore[misc]
    assert "exited with status -9" in service.log.read_text()


# a worker that says it started (a file in the run directory) and never reports ready
_STARTING = (
    "import pathlib, sys, time; "
    "pathlib.Path(sys.argv[4], 'started-' + sys.argv[2]).touch(); time.sleep(60)"
)
_SUPERVISE = """
import sys
from pathlib import Path
from decider.server.workers import Supervisor
sys.exit(Supervisor(2, [sys.executable, "-c", sys.argv[2]], {}, Path(sys.argv[1])).run(
    ready=lambda: None))
"""


def test_sigterm_before_every_worker_is_ready_is_a_stop_not_a_failure(tmp_path: Path) -> None:
    """A probe may see the first worker answer and the service be stopped before the other
    reports ready: that is a stop (status 0), not workers that could not start."""
    supervisor = subprocess.Popen([sys.executable, "-c", _SUPERVISE, str(tmp_path), _STARTING])
    try:
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, 20)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
    finally:
        supervisor.kill()
        supervisor.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", None),  # no limit: every CPU it may run on
        ("150000 100000\n", 2),  # 1.5 CPUs of time: two workers
        ("50000 100000\n", 1),  # half a CPU: still one
        ("garbage", None),
    ],
)
def test_workers_default_to_the_cpus_the_container_may_use(
    tmp_path: Path, cpu_max: str, expected: int | None
) -> None:
    cgroup = tmp_path / "cpu.max"
    cgroup.write_text(cpu_max)
    cpus = len(os.sched_getaffinity(0))
    assert worker_count(0, cgroup) == (cpus if expected is None else min(cpus, expected))
    assert worker_count(3, cgroup) == 3
    assert worker_count(0, tmp_path / "absent") == cpus


def test_a_replacement_serves_what_the_others_serve(two: tuple[Service, Path]) -> None:
    """A refused edit on disk, then a worker dies: its replacement starts from the rules the
    other one serves, not from the broken files (which would stop the whole service); and a
    valid edit nobody reloaded (watching is off) waits for a reload on the new worker too."""
    service, rules = two
    before = rules_of(service)["version"]
    text = (rules / "b2b.yaml").read_text()
    (rules / "b2b.yaml").write_text(text.replace("account.fit_score", "account.fit_scor", 1))
    assert service.client.post("/admin/reload").status_code == 422
    for round_ in range(2):
        _replace_worker(service, 0)
        assert {w["version"] for w in rules_of(service)["workers"]} == {before}
        assert {d["ruleset"] for d in decide_fresh(service, 8)} == {before}
        if round_ == 0:  # then a valid edit, not reloaded
            (rules / "b2b.yaml").write_text(text.replace(CTA, "cta: Book a briefing\n", 1))
    files = rules_of(service)["files"]
    assert all("decider-" not in name for name in files), files  # named as on disk
    assert service.process.poll() is None
    answer = service.client.post("/admin/reload")
    assert answer.status_code == 200, answer.text
    assert len({w["version"] for w in answer.json()["workers"]} - {before}) == 1


def test_a_worker_that_cannot_start_again_leaves_the_others_serving(
    two: tuple[Service, Path],
) -> None:
    """A refused edit on disk, the kept rules gone from the run directory (a /tmp cleaner),
    then a worker dies: its replacements cannot start (the files are broken, nothing is
    kept), and the supervisor gives that worker up, not the one still serving."""
    service, rules = two
    before = rules_of(service)["version"]
    text = (rules / "b2b.yaml").read_text()
    (rules / "b2b.yaml").write_text(text.replace("account.fit_score", "account.fit_scor", 1))
    assert service.client.post("/admin/reload").status_code == 422
    shutil.rmtree(_run_dir(service) / "rules")
    os.kill(rules_of(service)["workers"][1]["pid"], signal.SIGKILL)
    wait_for(lambda: "keeps dying as it starts" in service.log.read_text(), 60)
    assert service.process.poll() is None
    assert {d["ruleset"] for d in decide_fresh(service, 4)} == {before}


def test_a_port_another_service_listens_on_is_refused(two: tuple[Service, Path]) -> None:
    service, rules = two
    port = str(service.client.base_url.port)
    done = subprocess.run(
        [sys.executable, "-m", "decider.cli", "serve", "--rules", str(rules), "--port", port],
        env={**os.environ, "DECIDER_WORKERS": "2", "DECIDER_PROFILE_DB": str(rules.parent / "b")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_metrics_name_their_format_once(two: tuple[Service, Path]) -> None:
    answer = two[0].client.get("/metrics")
    assert answer.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"


def _run_dir(service: Service) -> Path:
    """The supervisor's run directory, from a worker's command line."""
    pid = rules_of(service)["workers"][0]["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return Path(argv[argv.index(b"--run-dir") + 1].decode())


def _replace_worker(service: Service, index: int) -> int:
    victim: int = rules_of(service)["workers"][index]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        try:
            workers = rules_of(service)["workers"]
        except httpx.TransportError:
            return False
        return len(workers) == 2 and victim not in {w["pid"] for w in workers}

    wait_for(replaced, 20)
    return victim


def test_signals_during_a_restart_kill_nobody(two: tuple[Service, Path]) -> None:
    """A reload signal reaching a worker before it answers signals is held, not fatal; the
    workers' signals sent to the supervisor end nothing."""
    service, _ = two
    os.kill(rules_of(service)["workers"][0]["pid"], signal.SIGKILL)
    for _ in range(40):  # through the replacement's start
        service.process.send_signal(signal.SIGHUP)
        time.sleep(0.025)
    service.process.send_signal(signal.SIGUSR1)
    service.process.send_signal(signal.SIGUSR2)
    wait_for(lambda: len(rules_of(service)["workers"]) == 2, 20)
    assert service.process.poll() is None
    log = service.log.read_text()
    assert log.count("exited with status") == 1, log  # the one killed, no other


def test_a_removed_run_directory_is_made_again(two: tuple[Service, Path]) -> None:
    service, _ = two
    shutil.rmtree(_run_dir(service))
    for path in ("/admin/traffic", "/admin/rules", "/metrics"):
        assert service.client.get(path).status_code == 200, path
    _replace_worker(service, 0)
    assert service.client.post("/admin/reload").status_code == 200
    assert service.process.poll() is None


def test_a_reload_a_worker_does_not_confirm_is_503(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    env = {
        "DECIDER_API_KEYS": api_key(TOKEN, "decide", "admin"),
        "DECIDER_WORKERS": "2",
        "DECIDER_WATCH_RULES": "false",
        "DECIDER_RELOAD_WAIT_S": "1",
    }
    with running_service(rules, tmp_path, env=env, headers=ADMIN) as service:
        wait_for(lambda: len(rules_of(service)["workers"]) == 2, 10)
        stopped = rules_of(service)["workers"][1]["pid"]
        os.kill(stopped, signal.SIGSTOP)
        try:
            # a connection the stopped worker takes hangs: ask until the other one answers
            for _ in range(30):
                url = service.client.base_url
                try:
                    with httpx.Client(base_url=url, headers=ADMIN, timeout=4) as client:
                        answer = client.post("/admin/reload")
                    break
                except httpx.TimeoutException:
                    continue
            assert answer.status_code == 503, answer.text
            assert answer.json()["unconfirmed"] == [1]
        finally:
            os.kill(stopped, signal.SIGCONT)


def test_a_profile_changed_at_the_api_is_forgotten_by_every_worker(tmp_path: Path) -> None:
    """Over the profile API, the invalidation webhook reaches one worker: it has every
    worker forget the person before it answers, so a withdrawn consent counts everywhere."""
    profiles = sample_profiles(datetime.now(UTC))
    routes = dict(routes_of(profiles))
    ada = next(p for p in profiles if isinstance(p, VisitorProfile) and p.id == "v-ada")
    with fake_profile_api(routes) as api:
        env = {
            "DECIDER_API_KEYS": api_key(TOKEN, "decide", "admin", "profiles-write"),
            "DECIDER_WORKERS": "2",
            "DECIDER_WATCH_RULES": "false",
            "DECIDER_PROFILE_SOURCE": "http",
            "DECIDER_PROFILE_API_URL": api.url,
        }
        with running_service(RULES, tmp_path, env=env, headers=ADMIN) as service:
            wait_for(lambda: len(rules_of(service)["workers"]) == 2, 10)
            assert all(d["personalized"] for d in decide_fresh(service, 12))
            routes.update(routes_of([msgspec.structs.replace(ada, consent=())]))
            answer = service.client.post("/v1/profiles/invalidate", json={"user_id": "u-ada"})
            assert answer.status_code == 200, answer.text
            assert not any(d["personalized"] for d in decide_fresh(service, 12))
