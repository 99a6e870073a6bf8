"""Decider as users get it: a wheel that works outside the repository, `decider init` to
start from, and serving from an import string as process managers do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, RULES
from .service import running_service

ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a plain install of the built wheel, outside the repository: its
    dependencies are this interpreter's, the package is the wheel's."""
    scratch = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(scratch), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = scratch.glob("decider-*.whl")
    site = scratch / "site"
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    return {**os.environ, "PYTHONPATH": str(site)}


def decider(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "decider.cli", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_init_writes_the_samples_and_the_wheel_serves_them(
    installed: dict[str, str], tmp_path: Path
) -> None:
    """From the installed wheel, in a directory with no checkout: `decider init` writes the
    sample rules, schema and tests, `decider check` passes them, `decider serve` decides."""
    where = decider(installed, tmp_path, "--version")
    assert where.stdout.startswith("decider "), where.stderr
    done = decider(installed, tmp_path, "init", "my-rules")
    assert done.returncode == 0, done.stderr
    written = sorted(
        p.relative_to(tmp_path / "my-rules") for p in (tmp_path / "my-rules").rglob("*.yaml")
    )
    expected = sorted(p.relative_to(RULES) for p in RULES.rglob("*.yaml"))
    assert written == expected
    checked = decider(installed, tmp_path, "check", "my-rules")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with running_service(tmp_path / "my-rules", tmp_path, cwd=tmp_path, env=installed) as service:
        response = service.client.post("/v1/decide", json=ADA)
    assert response.json()["segment"] == "b2b_top_tier_evaluation"
    log = (next(tmp_path.glob("serve-*.log"))).read_text()
    assert str(ROOT) not in log


def test_the_installed_package_is_the_wheels(installed: dict[str, str], tmp_path: Path) -> None:
    """The tests above run the wheel's code, not the checkout's (the editable install)."""
    done = subprocess.run(
        [sys.executable, "-c", "import decider; print(decider.__file__)"],
        env=installed,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not done.stdout.startswith(str(ROOT))
    assert "site" in done.stdout


def test_init_refuses_a_directory_with_files(tmp_path: Path) -> None:
    """`decider init` never writes over a rule author's files."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "mine.yaml").write_text("segments: []\n")
    done = decider(dict(os.environ), tmp_path, "init", "rules")
    assert done.returncode == 1
    assert "exists and is not an empty directory" in done.stderr
    assert (tmp_path / "rules" / "mine.yaml").read_text() == "segments: []\n"


def test_uvicorn_serves_the_app_from_an_import_string(tmp_path: Path) -> None:
    """A process manager starts Decider from `decider.server.app:app_from_env`, settings
    from the environment, no arguments."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "decider.server.app:app_from_env"]
    env = {"DECIDER_RULES_DIR": str(RULES), "DECIDER_PROFILE_SOURCE": "memory"}
    with running_service(RULES, tmp_path, command=command, env=env) as service:
        decision = service.client.post("/v1/decide", json=ADA).json()
        ready = service.client.get("/readyz")
    assert decision["segment"] == "b2b_top_tier_evaluation"
    assert ready.status_code == 200
    log = service.log.read_text()
    assert "POST /v1/decide" not in log  # no access log: it would hold client IP addresses
