"""The process's log: JSON lines (or text), an event per start, stop, reload and error, the
request id on errors, and never the data an exception carries."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from decider.logs import JsonFormatter, TextFormatter
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.ruleset import CompiledRuleset

from .conftest import NOW, RULES, app_client
from .privacy import leaks
from .service import running_service


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a served process's log (its stdout banner is text)."""
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def wait_for(log: Path, event: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in events(log) if e.get("event") == event]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_served_process_logs_json_lines_with_an_event_each(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    env = {"DECIDER_LOG_FORMAT": "json", "DECIDER_WATCH_RULES": "false", "DECIDER_WORKERS": "1"}
    with running_service(rules, tmp_path, env=env) as service:
        service.process.send_signal(signal.SIGHUP)
        (reload,) = wait_for(service.log, "reload")
        (start,) = wait_for(service.log, "start")
    (stop,) = wait_for(service.log, "stop")
    assert (start["message"], start["level"], start["logger"]) == ("started", "info", "decider")
    assert start["engine"] == "cel-expr"
    assert start["ruleset"] == stop["ruleset"] == reload["ruleset"]
    assert (reload["trigger"], reload["ok"]) == ("sighup", True)
    lines = service.log.read_text().splitlines()
    text = [line for line in lines if not line.startswith("{")]
    assert len(text) == 1  # the banner on stdout: "decider: ruleset ... listening on ..."
    assert text[0].startswith("decider: ruleset ")
    for event in events(service.log):
        assert {"time", "level", "logger", "message"} <= set(event)


def test_text_logs_for_a_terminal(tmp_path: Path) -> None:
    env = {"DECIDER_LOG_FORMAT": "text", "DECIDER_WATCH_RULES": "false"}
    with running_service(RULES, tmp_path, env=env) as service:
        pass
    lines = service.log.read_text().splitlines()
    assert any(line.startswith("INFO:     decider: started (event=start, ") for line in lines)
    assert not any(line.startswith("{") for line in lines)


class Broken(MemoryProfileSource):
    """A source with a bug: it raises what no source may, quoting a person."""

    async def visitor(self, visitor_id: str) -> Any:
        raise KeyError(f"no visitor {visitor_id} (ada@northwind.example)")


def test_an_unexpected_error_is_a_500_logged_with_its_request_id_and_no_data(
    ruleset: CompiledRuleset, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"placement": "home_hero", "identity": {"visitor_id": "v-ada"}}
    source = Broken(sample_profiles(NOW))
    with caplog.at_level(logging.ERROR), app_client(ruleset, source) as client:
        answer = client.post("/v1/decide", json=body, headers={"X-Request-ID": "req-7"})
    assert answer.status_code == 500, answer.text
    assert answer.json()["code"] == "internal_error"
    assert answer.headers["x-request-id"] == "req-7"
    (record,) = [r for r in caplog.records if r.name == "decider" and r.levelno == logging.ERROR]
    assert record.request_id == "req-7"  # type: ignore[attr-defined]
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "req-7" in line
        assert "KeyError at " in line
        assert "v-ada" not in line
        assert "northwind" not in line


def test_json_lines_carry_extras_and_never_an_exception_message() -> None:
    try:
        raise ValueError("u-ada's secret")
    except ValueError:
        record = logging.LogRecord("decider", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    record.request_id = "r-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed"
    assert line["request_id"] == "r-1"
    assert line["exception"].startswith("ValueError at ")
    assert "secret" not in json.dumps(line)


def test_the_log_scan_finds_an_id_a_hash_or_an_address() -> None:
    """What tests/conftest.py and tests/service.py run on every log line."""
    ada_hash = hashlib.sha256(b"ada@northwind.example").hexdigest()
    for line in ("looked up v-ada", f"hash {ada_hash}", "to max@globex.example", "acc-hooli"):
        assert leaks(f"INFO: fine\n{line}") != []
    assert leaks("INFO: reload (sighup): ruleset 8bf87d604a31 -> 9c0e1a2b3c4d") == []
