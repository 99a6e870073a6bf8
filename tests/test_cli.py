"""The `decider` command: check, profiles import, and serve refusing broken rules."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from decider import __version__
from decider.cli import _parser, main
from decider.profiles.sources.sqlite import SqliteProfileStore

from .conftest import NOW, RULES


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), environ=env or {}, out=out)
    return code, out.getvalue()


def test_check_passes_on_the_sample_rules() -> None:
    """`decider check rules` exits 0 and says what it loaded, on either engine."""
    for engine in ("cel-expr", "cel-python"):
        code, out = run("check", str(RULES), "--engine", engine)
        assert code == 0, out
        assert out.startswith("ok: ruleset ")
        assert f"engine {engine}" in out


def test_check_prints_every_problem_with_its_place(rules_copy: Path) -> None:
    """Two broken files: exit 1, one line per problem as file:line:column, then a count."""
    for name, old, new in [
        ("b2b.yaml", "has(account.fit_score) && account.fit_score < 40", "account.fit_score <"),
        ("ecommerce.yaml", "visitor.shop.cart_adds == 0", "visitor.shop.cart_adds === 0"),
    ]:
        path = rules_copy / name
        path.write_text(path.read_text().replace(old, new, 1))
    code, out = run("check", str(rules_copy))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[-1] == f"2 problems in {rules_copy}"
    places = [line.split(": ", 1)[0] for line in lines[:-1]]
    assert [p.rsplit("/", 1)[-1].split(":")[0] for p in places] == ["b2b.yaml", "ecommerce.yaml"]
    for place in places:
        _file, line, column = place.rsplit(":", 2)
        assert int(line) > 1
        assert int(column) > 1


def test_a_bad_setting_names_its_variable() -> None:
    """A bad environment variable stops the command with the variable's name."""
    code, out = run("check", str(RULES), env={"DECIDER_ENGINE": "fast"})
    assert code == 2
    assert "DECIDER_ENGINE" in out


def test_profiles_import_then_serve_from_the_store(tmp_path: Path) -> None:
    """Importing a JSONL file writes visitors and accounts to the SQLite store."""
    db = tmp_path / "p.db"
    source = tmp_path / "profiles.jsonl"
    records = [
        {"kind": "account", "id": "acc-x", "traits": {"fit_score": 90}},
        {"kind": "visitor", "id": "v-x", "account_id": "acc-x", "user_ids": ["u-x"]},
    ]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, out = run("profiles", "import", str(source), "--db", str(db))
    assert code == 0, out
    assert out.strip() == f"imported 1 visitors and 1 accounts into {db}"


def test_profiles_import_refuses_a_file_with_bad_lines(tmp_path: Path) -> None:
    """Bad lines are all reported with their numbers, and nothing is imported."""
    db = tmp_path / "p.db"
    source = tmp_path / "profiles.jsonl"
    source.write_text(
        '{"kind": "visitor", "id": "v-ok"}\n'
        '{"kind": "visitor", "id": "v-bad", "email": "raw@example.com"}\n'
        '{"kind": "robot", "id": "r"}\n'
    )
    code, out = run("profiles", "import", str(source), "--db", str(db))
    assert code == 1
    assert f"{source}:2:" in out
    assert "email" in out
    assert f"{source}:3:" in out
    assert "nothing imported: 2 problem(s)" in out
    with SqliteProfileStore(db) as store:
        assert store.is_empty()


def test_serve_refuses_to_start_on_broken_rules(rules_copy: Path, tmp_path: Path) -> None:
    """`decider serve` on broken rules exits non-zero and says why, before listening."""
    path = rules_copy / "context.yaml"
    path.write_text(path.read_text().replace("context.url.contains", "context.url.contains(("))
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db")}
    code, out = run("serve", "--rules", str(rules_copy), "--port", "0", env=env)
    assert code == 1
    assert "context.yaml:" in out
    assert "ctx_migration_research" in out


def test_decider_test_passes_on_the_shipped_suites() -> None:
    """`decider test rules` runs every case and ends with the pass/fail count."""
    code, out = run("test", str(RULES))
    assert code == 0, out
    assert out.strip().splitlines()[-1].endswith(" passed, 0 failed (on cel-expr and cel-python)")


def test_decider_test_shows_a_readable_diff_on_failure(rules_copy: Path) -> None:
    """A case edited to expect the wrong variant fails: expected, actual, and the trace."""
    suite = rules_copy / "tests" / "b2b.yaml"
    suite.write_text(
        suite.read_text().replace("variant: nurture_pricing,", "variant: nurture_generic,")
    )
    code, out = run("test", str(rules_copy))
    assert code == 1
    assert "FAIL " in out
    assert "legitimate interest is an accepted basis for email" in out
    assert "variant: expected 'nurture_generic', got 'nurture_pricing'" in out
    assert re.search(r"80  b2b_mid_tier_surge +MATCHED", out)
    assert out.strip().splitlines()[-1].endswith(" passed, 1 failed (on cel-expr and cel-python)")


def test_decider_explain_prints_verdicts_segments_and_variant(tmp_path: Path) -> None:
    """`decider explain` shows consent, suppression, each segment's outcome and the content."""
    profile = tmp_path / "ada.json"
    profile.write_text(
        json.dumps(
            {
                "visitor": {
                    "id": "v-ada",
                    "consent": [
                        {
                            "purpose": "personalization",
                            "basis": "consent",
                            "granted_at": "2026-06-01T00:00:00Z",
                        }
                    ],
                },
                "account": {"id": "acc-1", "traits": {"fit_score": 20}},
            }
        )
    )
    code, out = run(
        "explain", str(RULES), "--profile", str(profile), "--placement", "home_hero",
        "--context", '{"device": "mobile"}', "--now", "2026-11-20T12:00:00Z",
    )  # fmt: skip
    assert code == 0, out
    assert "home_hero (web)" in out
    assert "consent:     granted" in out
    assert "suppression: none" in out
    assert "b2b_out_of_icp" in out
    assert "variant: home_generic_self_serve (personalized; segment b2b_out_of_icp)" in out
    code, out = run(
        "explain", str(RULES), "--profile", str(profile), "--placement", "home_hero",
        "--context", '{"utm_campaign": "q4_comparison"}', "--now", "2026-11-20T12:00:00Z",
    )  # fmt: skip
    assert re.search(r"30  ctx_comparison_click +MATCHED\n", out)
    assert re.search(r"10  b2b_out_of_icp +matched, below the winner\n", out)


def test_decider_explain_by_channel_without_consent(tmp_path: Path) -> None:
    """Without consent, email sends nothing (one block per email placement), and on the web
    every profile segment reads as skipped."""
    code, out = run("explain", str(RULES), "--channel", "email", "--now", "2026-11-20T12:00:00Z")
    assert code == 0, out
    assert out.count("(email)") == 3
    assert out.count("suppression: SUPPRESSED: email sends only with email_marketing") == 3
    code, out = run("explain", str(RULES), "--channel", "web", "--now", "2026-11-20T12:00:00Z")
    assert "skipped: no consent to read the profile" in out


def test_decider_explain_names_a_bad_argument() -> None:
    """An unknown placement or a context that is not JSON is a clear error, exit 2."""
    code, out = run("explain", str(RULES), "--placement", "nope")
    assert code == 2
    assert "placement: not a placement of the loaded rules" in out
    code, out = run("explain", str(RULES), "--placement", "home_her")
    assert "placement: not a placement of the loaded rules (did you mean home_hero?)" in out
    code, out = run("explain", str(RULES), "--context", "{not json")
    assert code == 2
    assert "--context" in out
    code, out = run("explain", str(RULES), "--context", '{"n": 100000000000000000000000}')
    assert code == 2
    assert "context.n: integer out of the 64-bit range" in out
    code, out = run("explain", str(RULES), "--now", "2026-11-20")
    assert (code, out.strip()) == (
        2,
        "decider: --now: expected a time in RFC 3339 with its offset, as 2026-11-20T12:00:00Z",
    )


def test_check_names_a_rule_test_file_it_cannot_read(rules_copy: Path) -> None:
    """A pipe among the rule tests is an error at its name, not a load that never ends."""
    os.mkfifo(rules_copy / "tests" / "pipe.yaml")
    code, out = run("check", str(rules_copy))
    assert code == 1
    assert "tests/pipe.yaml:1:1: cannot read: not a regular file" in out


def test_serve_refuses_to_start_when_a_rule_test_fails(rules_copy: Path, tmp_path: Path) -> None:
    """The rules' own suites run at start: a failing case stops the server, naming the case."""
    suite = rules_copy / "tests" / "context.yaml"
    suite.write_text(
        suite.read_text().replace("variant: home_migration}", "variant: home_generic}")
    )
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db")}
    code, out = run("serve", "--rules", str(rules_copy), "--port", "0", env=env)
    assert code == 1
    assert "tests/context.yaml:" in out
    assert "an anonymous visitor with no consent still gets contextual content" in out


def test_check_fails_when_a_rule_test_fails(rules_copy: Path) -> None:
    """check loads what the server loads, suites included: a failing case fails the check."""
    suite = rules_copy / "tests" / "context.yaml"
    suite.write_text(
        suite.read_text().replace("variant: home_migration}", "variant: home_generic}")
    )
    code, out = run("check", str(rules_copy))
    assert code == 1
    assert "rule test 'an anonymous visitor with no consent still gets contextual content'" in out
    assert f"run `decider test {rules_copy}`" in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`decider --version` prints the version and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"decider {__version__}"


def test_every_argument_has_help() -> None:
    """Every option and positional argument of every command says what it is for."""
    missing = []
    parsers = [_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif not action.help:
                missing.append(f"{parser.prog}: {action.dest}")
    assert missing == []


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", str(RULES), "--now", NOW.isoformat()],
        ["check", str(RULES)],
        ["--help"],
        ["serve", "--help"],
        ["--version"],
    ],
)
def test_output_into_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """Output piped into a reader that stops early (`| head`) ends without a traceback, be
    it longer than the pipe's buffer or shorter."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "decider.cli", *argv],
            # as in a user's shell: stdout buffered, so small outputs meet the pipe at the end
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode in (0, 1)
    assert done.stderr == ""


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"{url} did not come up")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another socket already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_on_a_taken_port_stops_naming_the_setting(taken_port: int, tmp_path: Path) -> None:
    """A port in use stops `serve` with exit 1 and a message naming the setting, and nothing
    says it is listening."""
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db")}
    code, out = run("serve", "--port", str(taken_port), env=env)
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{taken_port}" in out
    assert "DECIDER_PORT" in out
    assert "listening" not in out


def test_serve_on_a_host_that_cannot_be_bound_stops_naming_the_setting(tmp_path: Path) -> None:
    """An address that is not this machine's, or not an address, stops `serve` with exit 1."""
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db"), "DECIDER_ALLOW_ANONYMOUS": "true"}
    for host in ("192.0.2.1", "no-such-host.invalid"):
        code, out = run("serve", "--host", host, "--port", "0", env=env)
        assert code == 1, out
        assert f"cannot listen on {host}:0" in out
        assert "DECIDER_HOST" in out


def test_unknown_decider_variables_are_reported_at_start(taken_port: int, tmp_path: Path) -> None:
    """A DECIDER_* variable that is no setting, or belongs to another source, is reported."""
    env = {
        "DECIDER_PROFILE_DB": str(tmp_path / "p.db"),
        "DECIDER_API_KEYS_FIL": "keys.yaml",
        "DECIDER_PROFILE_API_URL": "http://profiles.test",
    }
    _, out = run("serve", "--port", str(taken_port), env=env)
    assert (
        "DECIDER_API_KEYS_FIL is not a Decider setting: ignored; did you mean "
        "DECIDER_API_KEYS_FILE?" in out
    )
    assert "DECIDER_PROFILE_API_URL is a setting of the http profile source, not sqlite" in out


def test_an_empty_flag_is_refused_not_taken_for_the_default(tmp_path: Path) -> None:
    """`--port "$PORT"` with PORT unset must not quietly mean 8080."""
    code, out = run("serve", "--port", "", env={"DECIDER_PROFILE_DB": str(tmp_path / "p.db")})
    assert code == 2
    assert "DECIDER_PORT (--port): empty" in out


def test_ctrl_c_stops_serve_quietly(tmp_path: Path) -> None:
    """SIGINT to a serving `decider serve` shuts it down with exit 0 and no traceback."""
    env = {
        **os.environ,
        "DECIDER_PROFILE_DB": str(tmp_path / "p.db"),
        "DECIDER_USAGE_DB": str(tmp_path / "usage.db"),
    }
    command = [sys.executable, "-m", "decider.cli", "serve", "--rules", str(RULES), "--port", "0"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        url = process.stdout.readline().rsplit("listening on ", 1)[1].strip()
        wait_until_up(url)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    assert "Traceback" not in errors


@pytest.mark.parametrize(
    ("redirect", "status", "said"),
    [(">&-", 0, ""), (">/dev/full", 1, "decider: cannot write the output: No space left")],
)
def test_output_that_cannot_be_written_is_no_traceback(
    redirect: str, status: int, said: str
) -> None:
    """With stdout closed the command's own status stands; on a full disk it says so."""
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m decider.cli check "{RULES}" {redirect}'],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == status
    assert done.stderr.startswith(said)
    assert "Traceback" not in done.stderr


def test_every_command_reports_unknown_variables() -> None:
    """A typo in a DECIDER_* variable is reported whatever the command, not only by serve."""
    code, out = run("check", str(RULES), env={"DECIDER_ENIGNE": "cel-python"})
    assert code == 0
    assert "decider: warning: DECIDER_ENIGNE is not a Decider setting" in out
    assert "did you mean DECIDER_ENGINE?" in out


def test_serve_without_a_rules_directory_says_how_to_start_one(tmp_path: Path) -> None:
    """In a directory with no rules, `serve` points at `decider init`."""
    missing = tmp_path / "rules"
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "p.db")}
    code, out = run("serve", "--rules", str(missing), env=env)
    assert code == 1
    assert f"`decider init {missing}` writes the sample rules" in out
    assert not (tmp_path / "p.db").exists()


def test_import_samples_fills_any_store_with_the_sample_people(tmp_path: Path) -> None:
    """`profiles import --samples`: the bundled people, dated now, into the configured store
    (the way to get them into Redis); show refuses an address given as a hash."""
    db = tmp_path / "p.db"
    code, out = run("profiles", "import", "--samples", "--db", str(db), "--rules", str(RULES))
    assert code == 0, out
    assert out.startswith(f"imported 14 visitors and 5 accounts into {db}")
    code, out = run("profiles", "show", "--user-id", "u-ada", "--db", str(db))
    assert json.loads(out)["id"] == "v-ada"
    code, out = run("profiles", "show", "--email-sha256", "ada@northwind.example", "--db", str(db))
    assert code == 2
    assert "never the address" in out
    assert "ada@northwind.example" not in out


def test_without_the_cpp_engine_check_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where cel-expr-python has no wheel, the default engine cannot run: one line says so
    and how to choose cel-python, which then checks (and tests) alone."""
    from decider.rules.cel import engines  # noqa: PLC0415

    monkeypatch.setattr(engines, "cel", None)
    code, out = run("check", str(RULES))
    assert code == 2
    assert out.strip() == (
        "decider: the cel-expr engine needs cel-expr-python, which is not installed here; "
        "set DECIDER_ENGINE=cel-python (or --engine cel-python)"
    )
    code, out = run("check", str(RULES), "--engine", "cel-python")
    assert code == 0
    assert out.strip().endswith("(engine cel-python)")
    code, out = run("test", str(RULES), "--engine", "cel-python")
    assert code == 0
    assert out.strip().endswith("passed, 0 failed (on cel-python)")
