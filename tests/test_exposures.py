"""The exposure log: which decisions are exposures and what their records hold (never a raw
id), and a decision path that never waits for the log: a hung disk fills the queue, and the
decisions go on while records are dropped and counted."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from decider.measure.exposures import MAX_CONTEXT_CHARS, ExposureLog, copied
from decider.measure.records import Exposure, Outcome, record_decoder, record_encoder
from decider.measure.sink import JsonlFiles, NoSink, QueuedSink, Stream
from decider.measure.units import Units
from decider.model import Decision, Variant, decode_request
from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.ruleset import CompiledRuleset
from decider.server.app import create_app
from decider.settings import Settings
from decider.wiring import build_service

from .conftest import NOW, ROOT, RULES
from .privacy import leaks

UNITS = Units(bytes.fromhex("0f" * 16))
DEFAULT = Variant("default", {})
UNSTARTED = QueuedSink(Stream(), limit=1, name="exposure")  # a sink on; nothing offered
CONTEXT = {"device": "mobile", "country": "DE", "url": "https://shop.example/?ref=ada@example.com"}


def decisions(ruleset: CompiledRuleset, bodies: list[dict[str, Any]]) -> list[Decision]:
    service = build_service(
        Settings(rules_dir=RULES, watch_rules=False),
        source=MemoryProfileSource(sample_profiles(NOW)),
        ruleset=ruleset,
        clock=lambda: NOW,
    )

    async def run() -> list[Decision]:
        return [
            await service.decider.decide(decode_request(msgspec.json.encode(body)), gpc=False)
            for body in bodies
        ]

    return asyncio.run(run())


ADA = {"placement": "home_hero", "identity": {"user_id": "u-ada"}, "context": CONTEXT}
ADA_EMAIL = {"placement": "nurture_email", "identity": {"user_id": "u-ada"}}
MAX_EMAIL = {"placement": "nurture_email", "identity": {"user_id": "u-max"}}
NORTHWIND = ("account", UNITS.account("acc-northwind"))


def in_experiment(decision: Decision, arm: str = "holdout") -> Decision:
    """`decision` as if its placement's experiment had put it in `arm`."""
    return msgspec.structs.replace(decision, experiment="hero-holdout", arm=arm)


def test_only_decisions_with_an_experiment_are_exposures_unless_all_are(
    ruleset: CompiledRuleset,
) -> None:
    plain, bucketed = decisions(ruleset, [ADA_EMAIL, ADA])  # the hero runs an experiment
    log = ExposureLog(UNSTARTED)
    assert log.exposure_of(plain, CONTEXT, None, at=NOW) is None
    exposure = log.exposure_of(bucketed, CONTEXT, NORTHWIND, at=NOW)
    assert exposure == Exposure(
        at=NOW,
        decision_id=bucketed.decision_id,
        ruleset=ruleset.version,
        placement="home_hero",
        channel="web",
        segment="b2b_top_tier_evaluation",
        experiment="home_hero_holdout",
        arm="control",
        variant="home_named_account",
        unit_kind="account",
        unit=NORTHWIND[1],
    )
    everything = ExposureLog(log.sink, everything=True, context_keys=("device", "url"))
    logged = everything.exposure_of(plain, CONTEXT, None, at=NOW)
    assert logged is not None
    assert (logged.experiment, logged.arm, logged.unit) == (None, None, None)
    assert logged.context == {"device": "mobile"}  # the url holds an address: left out


def test_an_exposure_says_which_dressing_of_the_variant_was_served(
    ruleset: CompiledRuleset,
) -> None:
    """A variant's language (and role) overrides change what is shown: the record keeps
    which, for `decider report --by language`."""
    german = {**ADA, "context": {**CONTEXT, "language": "de-AT"}}
    dressed, plain = decisions(ruleset, [german, ADA])
    log = ExposureLog(UNSTARTED)
    exposure = log.exposure_of(dressed, CONTEXT, NORTHWIND, at=NOW)
    assert exposure is not None
    assert (exposure.variant, exposure.language) == ("home_named_account", "de-AT")
    undressed = log.exposure_of(plain, CONTEXT, NORTHWIND, at=NOW)
    assert undressed is not None
    assert (undressed.language, undressed.role) == (None, None)
    assert b"language" not in record_encoder.encode(undressed)


def test_a_suppressed_decision_is_no_exposure(ruleset: CompiledRuleset) -> None:
    (email,) = decisions(ruleset, [MAX_EMAIL])
    assert email.suppressed
    log = ExposureLog(UNSTARTED)
    unit = ("visitor", UNITS.visitor("v-max"))
    assert log.exposure_of(in_experiment(email), {}, unit, at=NOW) is None


def test_with_no_sink_nothing_is_built() -> None:
    log = ExposureLog(NoSink(), everything=True)
    decision = Decision("0" * 32, "r", "home_hero", "web", None, DEFAULT, False, False, ())
    assert log.exposure_of(decision, {}, None, at=NOW) is None


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("mobile", "mobile"),
        (3, "3"),
        (1.5, "1.5"),
        (True, "true"),
        (None, None),
        (["a"], None),
        ({"a": 1}, None),
        ("x" * (MAX_CONTEXT_CHARS + 1), None),
        ("ada@example.com", None),
        ("ada\uff20example\uff0ecom", None),
        ("\x1b[31mRED\r\nfake line", None),  # terminal codes reach the report's table
        ("tab\there", None),
    ],
)
def test_context_values_copied_are_short_plain_values_and_never_an_address(
    value: Any, kept: str | None
) -> None:
    assert copied({"k": value, "other": "x"}, ("k",)) == ({"k": kept} if kept else {})


def test_a_hung_disk_never_holds_a_decision_back(ruleset: CompiledRuleset, tmp_path: Path) -> None:
    """The writer hangs in its first write; every decision still completes, the queue holds
    its limit, the rest are dropped and counted, and all are accounted for once it answers."""

    class Hung:
        def __init__(self) -> None:
            self.release = threading.Event()
            self.lines = 0

        def write(self, data: bytes) -> None:
            self.release.wait(30)
            self.lines += data.count(b"\n")

        def close(self) -> None:
            pass

    writer = Hung()
    sink = QueuedSink(writer, limit=10, name="exposure")
    log = ExposureLog(sink, everything=True)
    sink.start()
    made = decisions(ruleset, [ADA] * 200)
    for decision in made:  # as the decision path will: right after each decision
        log.record(decision, CONTEXT, None, at=NOW)
    assert len(made) == 200  # all made while the writer hung
    assert sink.counts.dropped >= 200 - 2 * 10  # at most a queue in the writer, one queued
    assert sink.counts.written == 0
    writer.release.set()
    sink.close()
    assert sink.counts.written + sink.counts.dropped == 200
    assert writer.lines == sink.counts.written
    assert sink.counts.failed == 0


def test_exposure_files_hold_no_raw_id(ruleset: CompiledRuleset, tmp_path: Path) -> None:
    bodies = [
        ADA,
        {"placement": "home_hero", "identity": {"user_id": "u-ada", "visitor_id": "anon-1"}},
        {"placement": "shop_product_hero", "identity": {"account_id": "acc-northwind"}},
        {"placement": "home_hero", "identity": {"visitor_id": "v-dan"}},
    ]
    sink = QueuedSink(JsonlFiles(tmp_path, "exposures", 1 << 20), limit=100, name="exposure")
    log = ExposureLog(sink, context_keys=("device", "country", "url"))
    sink.start()
    for decision in decisions(ruleset, bodies):
        log.record(in_experiment(decision, "control"), CONTEXT, NORTHWIND, at=NOW)
    sink.close()
    text = "\n".join(path.read_text() for path in tmp_path.glob("exposures-*.jsonl"))
    assert text.count("\n") == len(bodies)
    assert leaks(text) == []
    assert "example.com" not in text


def test_the_readme_shows_records_as_they_are_written() -> None:
    """The exposure and outcome lines in the README decode, and encode back to the very
    same lines."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Measuring lift", 1)[1].split("\n## ", 1)[0]
    lines = [x for x in section.splitlines() if x.startswith('{"type":')]
    records = [record_decoder.decode(line) for line in lines]
    assert [type(record) for record in records] == [Exposure, Outcome]
    assert [record_encoder.encode(record).decode() for record in records] == lines
    assert leaks("\n".join(lines)) == []


def test_the_benchmark_runs_as_written() -> None:
    """`loadtests/bench_exposure.py` runs from the repository and reports (a little work)."""
    done = subprocess.run(
        [sys.executable, "loadtests/bench_exposure.py", "--n", "400", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "with its unit hashed and exposure logged" in done.stdout
    assert "dropped 0, failed 0" in done.stdout


def test_what_is_queued_is_written_when_the_service_stops(
    ruleset: CompiledRuleset, tmp_path: Path
) -> None:
    """The app's lifespan starts the writer and, on the way out, writes what it holds."""
    settings = Settings(
        rules_dir=RULES,
        watch_rules=False,
        exposure_sink="jsonl",
        exposure_dir=tmp_path / "exposures",
        exposure_all=True,
        measure_key="0f" * 16,
    )
    service = build_service(
        settings, source=MemoryProfileSource(sample_profiles(NOW)), ruleset=ruleset
    )
    (decision,) = decisions(ruleset, [ADA])
    with TestClient(create_app(service)):
        for _ in range(3):
            service.measuring.exposures.record(decision, CONTEXT, None, at=NOW)
    records = [
        record_decoder.decode(line)
        for path in (tmp_path / "exposures").glob("exposures-*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    assert len(records) == 3
    assert service.measuring.counts()["exposure", "written"] == 3
