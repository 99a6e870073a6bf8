"""The README's examples, run as a new user would run them from a fresh copy of the
repository: every `$ decider ...` output exactly, every curl against a real server (shown JSON
compared, "..." standing for what is left out), and its tables against the code."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import msgspec
import pytest

from decider.cli import main
from decider.reasons import ReasonCode
from decider.settings import variables

from .conftest import ROOT
from .service import Service, running_service

README = (ROOT / "README.md").read_text()
KEY = "dk_example-ops-key-change-me"  # the README's own
SCOPES = "admin+decide+explain+profiles-read+profiles-write+outcomes"
KEYS = f"ops:{SCOPES}:{sha256(KEY.encode()).hexdigest()}"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
ELIDED = "..."
# values that differ on every run: their shape is checked, not their value (a null shown is
# compared as it is)
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
VOLATILE = {
    "decision_id": re.compile(r"^[0-9a-f]{32}$"),
    "loaded_at": TIME,
    **dict.fromkeys(("since", "last_matched", "last_matched_ever", "first_seen"), TIME),
}


def blocks() -> list[tuple[str, str]]:
    """Every fenced block of the README, (language, text), in order."""
    return [(m[1], m[2]) for m in BLOCK.finditer(README)]


def table(heading: str) -> list[list[str]]:
    """The rows of the first table after `heading`, as lists of cells."""
    after = README.split(heading, 1)[1]
    lines = after[after.index("\n|") + 1 :].split("\n\n", 1)[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_reasons_table_is_the_enum() -> None:
    """The README lists every reason code, with the enum's meaning, and no other code."""
    shown = {code.strip("`"): meaning for code, meaning in table("### Reasons")}
    assert shown == {code.value: code.meaning for code in ReasonCode}


def shown_default(value: object) -> str:
    """A default as the configuration table writes it: `60`, `true`, `rules`; none: blank."""
    if value is None or value is msgspec.NODEFAULT:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_configuration_table_lists_every_setting_and_its_default() -> None:
    """Every variable Decider reads is in the configuration table with the code's default,
    and nothing else is."""
    shown = {row[0].strip("`"): row[1] for row in table("## Configuration")}
    expected = {v.name: shown_default(v.default) for v in variables()}
    assert set(shown) == set(expected)
    for name, default in expected.items():
        cell = shown[name]
        written = cell.split("`")[1] if cell.startswith("`") else ""
        assert written == default, f"{name}: README says {cell!r}, the code {default!r}"


def test_the_jsonl_record_shown_is_in_the_example_file() -> None:
    """The record the README spreads over lines is a line of examples/profiles.jsonl."""
    (shown,) = [json.loads(text) for lang, text in blocks() if lang == "json" and '"kind"' in text]
    lines = (ROOT / "examples" / "profiles.jsonl").read_text().splitlines()
    assert shown in [json.loads(line) for line in lines if line.startswith("{")]


def matches(shown: Any, actual: Any, key: str = "") -> bool:
    """`actual` as `shown` says: "..." matches anything, a "..." key allows other keys, a
    "..." item stands for any items between the ones shown."""
    if shown == ELIDED:
        return True
    if key in VOLATILE and shown is not None:
        return isinstance(actual, str) and bool(VOLATILE[key].match(actual))
    if isinstance(shown, dict):
        keys = set(shown) - {ELIDED}
        if not isinstance(actual, dict) or not keys <= set(actual):
            return False
        if ELIDED not in shown and keys != set(actual):
            return False
        return all(matches(shown[k], actual[k], k) for k in keys)
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return False
        if ELIDED not in shown:
            return len(shown) == len(actual) and all(map(matches, shown, actual))
        rest = iter(actual)  # the items shown appear in order, anything between them
        return all(any(matches(item, other) for other in rest) for item in shown if item != ELIDED)
    return bool(shown == actual)


def text_matches(shown: list[str], actual: list[str]) -> bool:
    """Lines equal, where a line "..." stands for any lines."""
    if not shown:
        return not actual
    if shown[0] == ELIDED:
        return any(text_matches(shown[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and shown[0] == actual[0] and text_matches(shown[1:], actual[1:])


def commands(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """The `$ command` lines of a text block (joined over trailing backslashes), each as its
    program and arguments, with the output lines shown after it."""
    lines = text.rstrip("\n").split("\n")
    while lines:
        command = lines.pop(0).removeprefix("$ ")
        while command.endswith("\\"):
            command = command[:-1] + lines.pop(0).strip()
        output = []
        while lines and not lines[0].startswith("$ "):
            output.append(lines.pop(0))
        while output and not output[-1]:
            output.pop()
        program, *argv = shlex.split(command)
        assert program in ("decider", "python"), command
        yield program, argv, output


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Service, Service]]:
    """A fresh copy of the repository's rules and examples, and `decider serve` started in it
    on its defaults, twice over one store: as the quickstart starts it (no keys), and as the
    admin example does (with its key)."""
    where = tmp_path_factory.mktemp("readme")
    for name in ("rules", "examples"):
        shutil.copytree(ROOT / name, where / name)
    with (
        running_service(where / "rules", where, cwd=where) as service,
        running_service(where / "rules", where, cwd=where, env={"DECIDER_API_KEYS": KEYS}) as keyed,
    ):
        yield where, service, keyed


def test_every_example_runs_as_shown(
    workspace: tuple[Path, Service, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In README order: `$ decider ...` prints exactly what is shown; each curl's answer is
    the JSON shown after it (from the service started with the admin example's key when the
    example sends it)."""
    where, service, keyed = workspace
    monkeypatch.chdir(where)
    shown = blocks()
    ran = 0
    for index, (lang, text) in enumerate(shown):
        if lang == "text" and text.startswith(("$ decider ", "$ python examples/")):
            for program, argv, expected in commands(text):
                said = run(program, argv)
                lines = said.rstrip("\n").split("\n")
                assert text_matches(expected, lines), f"$ {program} {' '.join(argv)}\n{said}"
                ran += 1
        elif lang == "sh" and "curl " in text:
            port = (keyed if KEY in text else service).client.base_url.port
            script = text.replace("localhost:8080", f"127.0.0.1:{port}")
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "DECIDER_API_KEYS": ""},
            )
            next_lang, answer_shown = shown[index + 1]
            assert next_lang == "json", f"no JSON shown after:\n{text}"
            answer = json.loads(done.stdout)
            assert matches(json.loads(answer_shown), answer), f"{text}\ngot {json.dumps(answer)}"
            ran += 1
    assert ran >= 12


def run(program: str, argv: list[str]) -> str:
    """What `decider ARGV` (in this process) or `python ARGV` (an example script, in its own)
    prints, run in the current directory."""
    if program == "python":
        done = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, check=True, timeout=300
        )
        return done.stdout
    out = io.StringIO()
    main(argv, environ={}, out=out)
    return out.getvalue()


def test_the_benchmarks_run_as_written() -> None:
    """`loadtests/bench_decide.py` and `bench_import.py` run from the repository and report
    (a little work each here: the numbers are not the point)."""
    decide = subprocess.run(
        [sys.executable, "loadtests/bench_decide.py", "--n", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line for line in decide.stdout.splitlines() if " p50 " in line]
    assert len(rows) == 8
    imported = subprocess.run(
        [sys.executable, "loadtests/bench_import.py", "--records", "600"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "600 records" in imported.stdout
    assert "records/s; peak memory" in imported.stdout


def test_ci_runs_the_readmes_test_command() -> None:
    """`.ci/run` runs the quickstart's test command (quietly), so the two cannot drift."""
    quickstart = README.split("## Quickstart", 1)[1].split("### Three decisions", 1)[0]
    (command,) = [text.strip() for lang, text in BLOCK.findall(quickstart) if "pytest" in text]
    assert (
        command.replace("pip install -e", "pip install -q -e") in (ROOT / ".ci" / "run").read_text()
    )
