"""Outcome intake: POST /v1/outcomes and `decider outcomes import`. Events by decision id or
by identity (resolved as a decision is, stored as keyed hashes), each refused on its own with
its field named, a resend counted once, nothing stored when the log cannot write, and no raw
id in any file."""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from decider.cli import main
from decider.errors import NotStored
from decider.measure.outcomes import (
    MAX_BODY_BYTES,
    MAX_EVENTS,
    Consent,
    OutcomeIntake,
    parse_body,
)
from decider.measure.records import Outcome, event_key, record_decoder
from decider.measure.sink import QueuedSink
from decider.measure.units import Units
from decider.profiles.cache import CacheSettings
from decider.profiles.jsonl import sample_profiles
from decider.profiles.resolver import Resolver
from decider.profiles.sources.memory import MemoryProfileSource
from decider.ruleset import ChannelPolicy, CompiledRuleset

from .conftest import NOW, api_key, app_client
from .privacy import leaks

KEY = "outcome-key-0123456789abcdef"
EDGE = "edge-key-0123456789abcdef"
OPS = "ops-key-0123456789abcdef"
TAGS = "tags-key-0123456789abcdef"  # a site's tag manager: outcomes with the banner's consent
KEYS = ",".join(
    [
        api_key(KEY, "outcomes", name="warehouse"),
        api_key(TAGS, "outcomes", "consent", name="tags"),
        api_key(EDGE, "decide", name="edge"),
        api_key(OPS, "admin", name="ops"),
    ]
)
MEASURE_KEY = "0f" * 16
UNITS = Units(bytes.fromhex(MEASURE_KEY))
DECISION = "5c3d0a4e9b2f4c8e8a1d7f6b3e2c1a09"


def unit_hash(kind: str, raw: str) -> str:
    """The keyed hash as documented, computed here on its own."""
    key = bytes.fromhex(MEASURE_KEY)
    return hmac.new(key, f"{kind}:{raw}".encode(), "sha256").hexdigest()[:32]


def stored(directory: Path) -> list[Outcome]:
    records = [
        record_decoder.decode(line)
        for path in sorted(directory.glob("outcomes-*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    outcomes = [r for r in records if isinstance(r, Outcome)]
    assert outcomes == records
    return outcomes


@pytest.fixture
def source() -> MemoryProfileSource:
    return MemoryProfileSource(sample_profiles(NOW))


@pytest.fixture
def client(
    ruleset: CompiledRuleset, source: MemoryProfileSource, tmp_path: Path
) -> Iterator[TestClient[Any]]:
    with app_client(
        ruleset,
        source,
        api_keys=KEYS,
        measure_key=MEASURE_KEY,
        exposure_dir=tmp_path / "exposures",
        headers={"X-API-Key": KEY},
    ) as test_client:
        yield test_client


def post(client: TestClient[Any], body: Any) -> Any:
    answer = client.post("/v1/outcomes", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_event_by_identity_is_stored_with_the_keyed_hashes_of_whom_it_names(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """u-ada is stitched to visitor v-ada of account acc-northwind, as a decision would be;
    the record holds their keyed hashes, never the ids."""
    event = {"event_id": "order-1", "name": "purchase", "value": 120.5}
    answer = post(client, {**event, "identity": {"user_id": "u-ada", "visitor_id": "anon-1"}})
    assert answer == {
        "accepted": 1,
        "duplicates": 0,
        "invalid": 0,
        "unavailable": 0,
        "results": [
            {"status": "accepted", "event_id": "order-1", "resolved_to": ["account", "visitor"]}
        ],
    }
    (record,) = stored(tmp_path / "outcomes")  # beside the exposures, by default
    assert record == Outcome(
        at=NOW,
        event_id="order-1",
        name="purchase",
        value=120.5,
        account=unit_hash("account", "acc-northwind"),
        visitor=unit_hash("visitor", "v-ada"),
    )


def test_an_event_by_decision_id_keeps_the_id_and_its_time(
    client: TestClient[Any], tmp_path: Path
) -> None:
    at = "2026-11-19T08:30:00+01:00"
    answer = post(client, {"event_id": "s-9", "name": "signup", "decision_id": DECISION, "at": at})
    assert answer["results"] == [{"status": "accepted", "event_id": "s-9"}]
    (record,) = stored(tmp_path / "outcomes")
    assert record.decision_id == DECISION
    assert record.at.isoformat() == at
    assert (record.account, record.visitor, record.value) == (None, None, None)


def test_an_identity_naming_nobody_known_is_stored_with_neither_and_said_so(
    client: TestClient[Any], tmp_path: Path
) -> None:
    answer = post(client, {"event_id": "e-1", "name": "signup", "identity": {"user_id": "u-new"}})
    (result,) = answer["results"]
    assert result["resolved_to"] == []
    assert "nobody known" in result["detail"]
    (record,) = stored(tmp_path / "outcomes")
    assert (record.account, record.visitor) == (None, None)


def test_without_the_channels_consent_an_identity_is_stored_with_neither(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """Consent comes first for outcomes as for decisions: u-lee granted nothing, and v-dan no
    email marketing, so their profiles (and accounts) are not used to measure them."""
    unconsented = [
        {"event_id": "c-1", "name": "purchase", "identity": {"user_id": "u-lee"}},
        {
            "event_id": "c-2",
            "name": "open",
            "identity": {"visitor_id": "v-dan"},
            "channel": "email",
        },
    ]
    web = {**unconsented[1], "event_id": "c-3"}
    del web["channel"]
    answer = post(client, {"events": [*unconsented, web]})
    assert [(r["resolved_to"], r.get("detail", "")[:40]) for r in answer["results"]] == [
        ([], "without the channel's consent the identi"),
        ([], "without the channel's consent the identi"),
        (["account", "visitor"], ""),
    ]
    records = stored(tmp_path / "outcomes")
    assert [(r.account, r.visitor) for r in records] == [
        (None, None),
        (None, None),
        (unit_hash("account", "acc-tinyco"), unit_hash("visitor", "v-dan")),
    ]


def test_a_channel_the_rules_define_applies_its_own_consent(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """Push is defined in the sample rules: u-kai granted push marketing, u-ada did not; a
    channel the rules do not define is refused naming it."""
    events = [
        {"event_id": "p-1", "name": "open", "identity": {"user_id": "u-kai"}, "channel": "push"},
        {"event_id": "p-2", "name": "open", "identity": {"user_id": "u-ada"}, "channel": "push"},
        {"event_id": "p-3", "name": "open", "identity": {"user_id": "u-ada"}, "channel": "fax"},
    ]
    results = post(client, {"events": events})["results"]
    assert [r.get("resolved_to") for r in results] == [["visitor"], [], None]
    assert (results[2]["status"], results[2]["field"]) == ("invalid", "events.2.channel")
    assert "not a channel of the loaded rules" in results[2]["detail"]
    assert [r.event_id for r in stored(tmp_path / "outcomes")] == ["p-1", "p-2"]
    lone = client.post("/v1/outcomes", json=events[2])
    assert (lone.status_code, lone.json()["field"]) == (422, "channel")


def test_the_banners_consent_counts_for_a_caller_that_may_grant_it(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """On the web the banner's purposes count, as in a decision, from a key with the consent
    scope; one without it is refused (a lone event: 403; in a batch: that event); Sec-GPC: 1
    withdraws what the policy says, and email takes stored records only."""
    lee = {"event_id": "b-1", "name": "purchase", "identity": {"user_id": "u-lee"}}
    banner = {**lee, "consent": {"purposes": ["personalization"]}}
    tags = {"X-API-Key": TAGS}
    answer = client.post("/v1/outcomes", json=banner, headers=tags).json()
    assert answer["results"][0]["resolved_to"] == ["account", "visitor"]
    refused = client.post("/v1/outcomes", json={**banner, "event_id": "b-2"})
    assert (refused.status_code, refused.json()["field"]) == (403, "consent")
    batch = post(client, {"events": [{**banner, "event_id": "b-3"}]})
    assert batch["results"][0]["status"] == "invalid"
    assert batch["results"][0]["field"] == "events.0.consent"
    gpc = client.post(
        "/v1/outcomes", json={**banner, "event_id": "b-4"}, headers={**tags, "Sec-GPC": "1"}
    )
    assert gpc.json()["results"][0]["resolved_to"] == []
    email = client.post(
        "/v1/outcomes", json={**banner, "event_id": "b-5", "channel": "email"}, headers=tags
    )
    assert (email.status_code, email.json()["field"]) == (422, "consent")
    assert [r.event_id for r in stored(tmp_path / "outcomes")] == ["b-1", "b-4"]


def test_a_batch_answers_each_event_and_a_bad_one_fails_no_other(
    client: TestClient[Any], tmp_path: Path
) -> None:
    events: list[Any] = [
        {"event_id": "a-1", "name": "purchase", "decision_id": DECISION},
        {"event_id": "a-2", "name": "purchase", "value": "12", "decision_id": DECISION},
        {"event_id": "a-3", "name": "purchase"},
        {"event_id": "a-4", "name": "purchase", "decision_id": DECISION, "identity": {}},
        {"event_id": "a-5", "name": "purchase", "identity": {"email": "ada@example.com"}},
        {
            "event_id": "a-6",
            "name": "purchase",
            "at": "2026-11-20T12:06:00Z",
            "decision_id": DECISION,
        },
        {"event_id": "a-7", "name": "pur chase", "decision_id": DECISION},
        {"event_id": "a-8", "name": "purchase", "identity": {"user_id": "u-ada"}, "channel": "fax"},
        "a-9",
        {"event_id": "a-10", "name": "purchase", "identity": {"visitor_id": "v-max"}},
    ]
    answer = post(client, {"events": events})
    assert (answer["accepted"], answer["invalid"]) == (2, 8)
    fields = [(r["status"], r.get("field")) for r in answer["results"]]
    assert fields == [
        ("accepted", None),
        ("invalid", "events.1.value"),
        ("invalid", "events.2.decision_id"),
        ("invalid", "events.3.identity"),
        ("invalid", "events.4.identity.email"),
        ("invalid", "events.5.at"),
        ("invalid", "events.6.name"),
        ("invalid", "events.7.channel"),
        ("invalid", "events.8"),
        ("accepted", None),
    ]
    assert "5 minutes in the future" in answer["results"][5]["detail"]
    assert "ada@example.com" not in json.dumps(answer)
    assert [r.event_id for r in stored(tmp_path / "outcomes")] == ["a-1", "a-10"]


def test_an_event_older_than_the_exposures_kept_is_refused(
    ruleset: CompiledRuleset, source: MemoryProfileSource, tmp_path: Path
) -> None:
    """Exposures are kept DECIDER_MEASURE_RETENTION_DAYS: an outcome dated before that
    would follow none, so it would be stored and never counted. Without a retention (0)
    every date is taken."""
    dates = [NOW - timedelta(days=401), NOW - timedelta(days=399), datetime(1970, 1, 1, tzinfo=UTC)]
    events = [
        {"event_id": f"o-{i}", "name": "purchase", "at": at.isoformat(), "decision_id": DECISION}
        for i, at in enumerate(dates)
    ]
    for retention, accepted in ((400, ["o-1"]), (0, ["o-0", "o-1", "o-2"])):
        with app_client(
            ruleset,
            source,
            api_keys=KEYS,
            measure_key=MEASURE_KEY,
            measure_retention_days=retention,
            exposure_dir=tmp_path / str(retention),
            headers={"X-API-Key": KEY},
        ) as client:
            answer = post(client, {"events": events})
        assert [r["event_id"] for r in answer["results"] if r["status"] == "accepted"] == accepted
        if retention:
            assert answer["results"][0] == {
                "status": "invalid",
                "field": "events.0.at",
                "detail": "more than 400 days ago: exposures are kept that long "
                "(DECIDER_MEASURE_RETENTION_DAYS), so it would follow none",
            }


def test_an_event_on_a_leap_second_is_read_as_the_next_minutes_start(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """RFC 3339 allows second 60, which Python's datetime cannot hold: read as CEL's
    timestamp() reads it, the next minute's start; a second 61 is still refused."""
    events = [
        {
            "event_id": "l-1",
            "name": "purchase",
            "at": "2026-06-30T23:59:60Z",
            "decision_id": DECISION,
        },
        {
            "event_id": "l-2",
            "name": "purchase",
            "at": "2026-07-01T01:59:60.5+02:00",
            "decision_id": DECISION,
        },
        {
            "event_id": "l-3",
            "name": "purchase",
            "at": "2026-06-30T23:59:61Z",
            "decision_id": DECISION,
        },
    ]
    answer = post(client, {"events": events})
    assert [r["status"] for r in answer["results"]] == ["accepted", "accepted", "invalid"]
    assert answer["results"][2]["field"] == "events.2.at"
    instants = [r.at for r in stored(tmp_path / "outcomes")]
    assert instants == [datetime(2026, 7, 1, tzinfo=UTC)] * 2


def test_a_resent_event_is_a_duplicate_stored_once(client: TestClient[Any], tmp_path: Path) -> None:
    event = {"event_id": "order-7", "name": "purchase", "decision_id": DECISION}
    assert post(client, event)["accepted"] == 1
    again = post(client, {"events": [event, {**event, "event_id": "order-8"}, event]})
    assert [r["status"] for r in again["results"]] == ["duplicate", "accepted", "duplicate"]
    assert again["duplicates"] == 2
    assert [r.event_id for r in stored(tmp_path / "outcomes")] == ["order-7", "order-8"]


def test_one_id_under_two_names_is_two_events(client: TestClient[Any], tmp_path: Path) -> None:
    """Order ids and signup ids come from different systems and may be equal: an event is its
    id within its name."""
    signup = {"event_id": "1001", "name": "signup", "decision_id": DECISION}
    purchase = {**signup, "name": "purchase", "value": 500}
    answer = post(client, {"events": [signup, purchase, signup]})
    assert (answer["accepted"], answer["duplicates"]) == (2, 1)
    assert [r.name for r in stored(tmp_path / "outcomes")] == ["signup", "purchase"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"purchase", 400, "body"),
        (b'{"event_id": "x", "event_id": "y"}', 400, "body"),
        (
            b'{"event_id": "x", "name": "p\xff", "decision_id": "' + DECISION.encode() + b'"}',
            400,
            "body",
        ),
        (b'{"name": "p", "decision_id": "' + DECISION.encode() + b'"}', 422, "event_id"),
        (b'{"event_id": "x", "name": "p", "decision_id": 7}', 422, "decision_id"),
        (b"[]", 422, "body"),
        (b'{"events": [], "name": "purchase"}', 422, "name"),
        (b'{"events": {}}', 422, "events"),
        (b'{"events": [' + b",".join([b"{}"] * (MAX_EVENTS + 1)) + b"]}", 422, "events"),
        (b'{"event_id": "x", "name": "p", "decision_id": "not-ours"}', 422, "decision_id"),
        (
            b'{"event_id": "x", "name": "p", "value": 1e999, "decision_id": "'
            + DECISION.encode()
            + b'"}',
            422,
            "value",
        ),
    ],
)
def test_a_body_that_is_no_event_nor_batch_is_refused_naming_the_field(
    client: TestClient[Any], body: bytes, status: int, field: str
) -> None:
    answer = client.post("/v1/outcomes", content=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field


def test_a_full_batch_of_real_events_fits_and_more_bytes_are_a_413(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """MAX_EVENTS events with a value and a time weigh more than a decide request may: the
    endpoint takes MAX_BODY_BYTES, and refuses a body past it by its size."""
    events = [
        {
            "event_id": f"order-{n:06d}",
            "name": "purchase",
            "value": 249.0,
            "at": "2026-03-02T09:30:00+00:00",
            "decision_id": DECISION,
        }
        for n in range(MAX_EVENTS)
    ]
    body = json.dumps({"events": events}).encode()
    assert 64 * 1024 < len(body) < MAX_BODY_BYTES
    assert post(client, {"events": events})["accepted"] == MAX_EVENTS
    huge = b'{"events": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert client.post("/v1/outcomes", content=huge).status_code == 413


def test_outcomes_need_the_outcomes_scope(client: TestClient[Any]) -> None:
    event = {"event_id": "x-1", "name": "purchase", "decision_id": DECISION}
    assert client.post("/v1/outcomes", json=event, headers={"X-API-Key": EDGE}).status_code == 403
    assert client.post("/v1/outcomes", json=event, headers={"X-API-Key": "nope"}).status_code == 401


def test_an_identity_the_store_cannot_resolve_now_is_not_stored_nor_remembered(
    client: TestClient[Any], source: MemoryProfileSource, tmp_path: Path
) -> None:
    event = {"event_id": "late-1", "name": "purchase", "identity": {"user_id": "u-lee"}}
    source.available = False
    (result,) = post(client, event)["results"]
    assert result["status"] == "unavailable"
    assert stored(tmp_path / "outcomes") == []
    source.available = True
    (result,) = post(client, event)["results"]
    assert result["status"] == "accepted"


def test_when_the_log_cannot_write_nothing_is_stored_and_a_resend_is_taken(
    client: TestClient[Any], tmp_path: Path
) -> None:
    """The outcome directory cannot be made (a file is in its way): a 503 to send again,
    and the event is not remembered as seen."""
    (tmp_path / "outcomes").write_text("in the way")
    event = {"event_id": "order-9", "name": "purchase", "decision_id": DECISION}
    refused = client.post("/v1/outcomes", json=event)
    assert refused.status_code == 503
    assert refused.json()["code"] == "not_stored"
    assert refused.headers["retry-after"] == "1"
    (tmp_path / "outcomes").unlink()
    assert post(client, event)["accepted"] == 1
    assert [r.event_id for r in stored(tmp_path / "outcomes")] == ["order-9"]


def test_a_unit_key_that_cannot_be_made_is_a_503_saying_so(
    ruleset: CompiledRuleset, source: MemoryProfileSource, tmp_path: Path
) -> None:
    """No DECIDER_MEASURE_KEY, and no key file can be made where it belongs: events by
    identity are not stored, and the answer says what to set."""
    (tmp_path / "file").write_text("")
    with app_client(
        ruleset,
        source,
        api_keys=KEYS,
        exposure_dir=tmp_path / "file" / "exposures",
        outcome_dir=tmp_path / "outcomes",
        headers={"X-API-Key": KEY},
    ) as client:
        event = {"event_id": "k-1", "name": "purchase", "identity": {"user_id": "u-ada"}}
        refused = client.post("/v1/outcomes", json=event)
        assert refused.status_code == 503
        assert "set DECIDER_MEASURE_KEY" in refused.json()["detail"]
        by_decision = {"event_id": "k-2", "name": "purchase", "decision_id": DECISION}
        assert post(client, by_decision)["accepted"] == 1  # needs no key


def no_policies() -> dict[str, ChannelPolicy]:
    raise AssertionError("an event by decision id asks no consent")


# the consent check of an intake whose events are all by decision id: never asked
by_decision_only = Consent(no_policies, lambda: NOW)


def test_a_full_queue_refuses_the_request_whole_and_forgets_its_ids(tmp_path: Path) -> None:
    class Stuck:
        def write(self, data: bytes) -> None:
            raise AssertionError("never started, never written")

        def close(self) -> None:
            pass

    async def run() -> None:
        sink = QueuedSink(Stuck(), limit=1, name="outcome")
        resolver = Resolver(MemoryProfileSource(), budget=1.0, cache=CacheSettings())
        intake = OutcomeIntake(sink, UNITS, resolver, by_decision_only, clock=lambda: NOW)
        event = b'{"event_id": "q-1", "name": "purchase", "decision_id": "%s"}' % DECISION.encode()
        # the queue's one place taken, never drained: its writer was never started
        assert sink.offer(Outcome(at=NOW, event_id="other", name="purchase"))
        with pytest.raises(NotStored, match="queue is full"):
            await intake.take(parse_body(event, NOW).events)
        assert event_key("purchase", "q-1") not in intake.seen
        assert sink.counts.dropped == 1

    asyncio.run(run())


def test_a_resend_racing_a_write_that_fails_is_stored_not_called_a_duplicate() -> None:
    """An id counts as seen once its event is written: a resend that arrives while the first
    write is under way is stored too, so when that write fails the event is not lost."""
    started, fail = threading.Event(), threading.Event()

    class FailsFirst:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            if not started.is_set():
                started.set()
                fail.wait(5)
                raise OSError("disk failed")
            self.written.append(data)

        def close(self) -> None:
            pass

    async def run() -> None:
        writer = FailsFirst()
        sink = QueuedSink(writer, limit=10, name="outcome")
        sink.start()
        resolver = Resolver(MemoryProfileSource(), budget=1.0, cache=CacheSettings())
        intake = OutcomeIntake(sink, UNITS, resolver, by_decision_only, clock=lambda: NOW)
        event = b'{"event_id": "r-1", "name": "purchase", "decision_id": "%s"}' % DECISION.encode()
        first = asyncio.create_task(intake.take(parse_body(event, NOW).events))
        await asyncio.to_thread(started.wait, 5)
        resend = asyncio.create_task(intake.take(parse_body(event, NOW).events))
        await asyncio.sleep(0.01)
        fail.set()
        with pytest.raises(NotStored, match="cannot write"):
            await first
        assert (await resend).accepted == 1
        assert b'"event_id":"r-1"' in b"".join(writer.written)
        assert event_key("purchase", "r-1") in intake.seen
        sink.close()

    asyncio.run(run())


def test_counts_reach_the_metrics_and_the_traffic_report(client: TestClient[Any]) -> None:
    post(client, {"event_id": "m-1", "name": "purchase", "decision_id": DECISION})
    ops = {"X-API-Key": OPS}
    scrape = client.get("/metrics", headers=ops).text
    assert 'decider_measure_records_total{kind="outcome",result="written",worker="0"} 1.0' in scrape
    assert (
        'decider_measure_records_total{kind="exposure",result="dropped",worker="0"} 0.0' in scrape
    )
    traffic = client.get("/admin/traffic", headers=ops).json()
    assert (traffic["outcomes_written"], traffic["outcomes_dropped"]) == (1, 0)


def test_no_record_file_holds_a_raw_id(client: TestClient[Any], tmp_path: Path) -> None:
    identities = [
        {"user_id": "u-ada", "visitor_id": "anon-1"},
        {"email_sha256": "dba86479afbaf94f50b6b6a093bdf29e40656e11874321bfca1718252afe1a0f"},
        {"account_id": "acc-northwind"},
        {"visitor_id": "v-max"},
        {"user_id": "u-new"},
    ]
    events = [
        {"event_id": f"p-{i}", "name": "purchase", "identity": identity}
        for i, identity in enumerate(identities)
    ]
    assert post(client, {"events": events})["accepted"] == len(events)
    written = "\n".join(p.read_text() for p in (tmp_path / "outcomes").glob("*.jsonl"))
    assert written.count("\n") == len(events)
    assert leaks(written) == []


# `decider outcomes import`


def run_import(tmp_path: Path, lines: list[str], *, stdin: bool = False) -> tuple[int, str]:
    data = "".join(line + "\n" for line in lines)
    env = {
        "DECIDER_PROFILE_DB": str(tmp_path / "profiles.db"),
        "DECIDER_EXPOSURE_DIR": str(tmp_path / "exposures"),
        "DECIDER_MEASURE_KEY": MEASURE_KEY,
    }
    out = io.StringIO()
    if stdin:
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(data.encode()))
        try:
            status = main(["outcomes", "import", "-"], environ=env, out=out)
        finally:
            sys.stdin = saved
    else:
        path = tmp_path / "events.jsonl"
        path.write_text(data)
        status = main(["outcomes", "import", str(path)], environ=env, out=out)
    return status, out.getvalue()


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    env = {"DECIDER_PROFILE_DB": str(tmp_path / "profiles.db")}
    assert main(["profiles", "import", "--samples"], environ=env, out=io.StringIO()) == 0
    return tmp_path


def test_import_stores_each_event_once_resolving_identities_in_the_store(seeded: Path) -> None:
    lines = [
        json.dumps({"event_id": "w-1", "name": "purchase", "identity": {"user_id": "u-ada"}}),
        json.dumps({"event_id": "w-2", "name": "purchase", "decision_id": DECISION, "value": 3}),
        "",
        json.dumps({"event_id": "w-1", "name": "purchase", "identity": {"user_id": "u-ada"}}),
        json.dumps({"event_id": "w-3", "name": "signup", "identity": {"visitor_id": "v-nope"}}),
    ]
    status, output = run_import(seeded, lines)
    assert status == 0, output
    assert output.splitlines() == [
        f"imported 3 outcomes into {seeded / 'outcomes'}",
        "1 event id given again in the file: stored once",
        "1 of 2 by identity name nobody known: stored with neither account nor visitor",
    ]
    records = stored(seeded / "outcomes")
    assert [(r.event_id, r.account, r.visitor) for r in records] == [
        ("w-1", unit_hash("account", "acc-northwind"), unit_hash("visitor", "v-ada")),
        ("w-2", None, None),
        ("w-3", None, None),
    ]
    assert leaks("\n".join(p.read_text() for p in (seeded / "outcomes").iterdir())) == []


def test_import_reads_standard_input(seeded: Path) -> None:
    line = json.dumps({"event_id": "i-1", "name": "purchase", "decision_id": DECISION})
    status, output = run_import(seeded, [line], stdin=True)
    assert status == 0, output
    assert [r.event_id for r in stored(seeded / "outcomes")] == ["i-1"]


def test_a_file_with_a_bad_line_imports_nothing_and_says_where(tmp_path: Path) -> None:
    lines = [
        json.dumps({"event_id": "b-1", "name": "purchase", "decision_id": DECISION}),
        json.dumps({"event_id": "b-2", "name": "purchase", "value": "3", "decision_id": DECISION}),
        "{not json",
        json.dumps({"event_id": "b-3", "name": "purchase", "identity": {"user_id": "a@b.example"}}),
        json.dumps({"event_id": "b-4", "name": "purchase"}),
        json.dumps(
            {
                "event_id": "b-5",
                "name": "purchase",
                "decision_id": DECISION,
                "at": "1970-01-01T00:00:00Z",
            }
        ),
    ]
    status, output = run_import(tmp_path, lines)
    assert status == 1
    shown = output.splitlines()
    assert shown[0] == "line 2: value: Expected `float | null`, got `str`"
    assert shown[1].startswith("line 3: not valid JSON")
    assert shown[2].startswith("line 4: identity: user_id looks like an email address")
    assert shown[3] == "line 5: decision_id: give decision_id or identity: whose outcome this is"
    assert shown[4].startswith("line 6: at: more than 400 days ago")
    assert shown[5] == f"nothing imported from {tmp_path / 'events.jsonl'}"
    assert "a@b.example" not in output
    assert not (tmp_path / "outcomes").exists()
