"""Outcome intake: conversions and other events reported after decisions, by the decision's id
or by the identity a decision was asked for, checked one by one and stored as Outcome
records (decider.measure.records) through a sink.

An event reported by identity is resolved as a decision resolves it (the same Resolver,
stitching and channel rules) and stored with the keyed hashes of the account and the visitor
it resolves to, never the ids given, if the channel's consent lets their profile be used, as
a decision would be bucketed by them; without it, with neither. A bad event is answered on its
own and never fails the others. An event id written before (a resend) is answered `duplicate`
and stored once; the memory of ids is bounded and per process, and a resend racing the first
write is stored too, so the report removes whatever duplicates remain.
An event is `accepted` once it is written: if the log cannot take or write a request's
events, none of them is stored and the request is refused (503), to be sent again.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from decider.errors import InvalidRequest, MalformedBody, NotStored, matching, validation_path
from decider.gate import check_consent, granting, no_banner
from decider.measure.records import Outcome, event_key
from decider.measure.sink import Sink
from decider.measure.units import Units
from decider.model import ChannelId, ConsentSignal, Identity, Instant, decode_body, decode_problem
from decider.profile import Resolution
from decider.ruleset import ChannelPolicy
from decider.service import IdentityResolver
from decider.settings import SettingsError

MAX_EVENTS = 1000  # events one request may carry
MAX_BODY_BYTES = 1 << 20  # what a batch of them may weigh: about 1 KB an event
FUTURE_SLACK = timedelta(minutes=5)  # how far in the future `at` may be: clocks differ
RECENT_IDS = 100_000  # event ids one process remembers, for duplicates
RESOLVING = 64  # identities resolved at once
WRITE_WAIT_S = 5.0  # how long a request waits for its outcomes to be written

EventId = Annotated[
    str,
    matching(
        r"^[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}$",
        "an event id: 1 to 128 letters, digits or ._:+=/-, starting with a letter or digit",
        description="the caller's id of this event (an order id, say): a resend with the same "
        "id counts once. Letters, digits and ._:+=/- only, at most 128",
    ),
]
EventName = Annotated[
    str,
    matching(
        r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        "an event name: 1 to 64 letters, digits or ._:-, starting with a letter or digit",
        description="what happened: purchase, signup, demo_request...",
    ),
]
DecisionId = Annotated[
    str,
    matching(
        "^[0-9a-f]{32}$",
        "a decision id: 32 lowercase hex digits, as the decision gave it",
        description="the decision's `decision_id`",
    ),
]


Value = Annotated[float, msgspec.Meta(description="a finite number: revenue, say")]
At = Annotated[Instant, msgspec.Meta(description="when it happened; default: now")]
Whose = Annotated[Identity, msgspec.Meta(description="the identity the decision was asked for")]
Rules = Annotated[
    ChannelId,
    msgspec.Meta(
        description="with `identity`: the channel (of the loaded rules) whose identity and "
        "consent rules apply"
    ),
]
Banner = Annotated[
    ConsentSignal,
    msgspec.Meta(
        description="with `identity` on the web: the consent banner's purposes, as sent to "
        "decide; without it, stored consent records apply"
    ),
]


class OutcomeEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An outcome: `decision_id` or `identity` (exactly one) says whose."""

    event_id: EventId
    name: EventName
    value: Value | None = None
    at: At | None = None
    decision_id: DecisionId | None = None
    identity: Whose | None = None
    channel: Rules | None = None
    consent: Banner | None = None


class OutcomeBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Several outcomes: each answered on its own, in order."""

    events: Annotated[
        list[Any],
        msgspec.Meta(
            max_length=MAX_EVENTS,
            description=f"at most {MAX_EVENTS} events, each as one event is sent alone; a bad "
            "one is answered in its own result",
        ),
    ]


class Invalid(NamedTuple):
    """An event refused: the field at fault (a dotted path) and why."""

    field: str
    detail: str


Status = Literal["accepted", "duplicate", "invalid", "unavailable"]
Known = Literal["account", "visitor"]
NOBODY = "the identity names nobody known: stored with neither account nor visitor"
UNCONSENTED = (
    "without the channel's consent the identity is not measured by its profile: stored with "
    "neither account nor visitor"
)


class Consent:
    """The consent check of decisions (decider.gate) under the rules' current policies (a
    reload may change them): may the profile a resolution names be used on a channel?"""

    def __init__(
        self, policies: Callable[[], Mapping[str, ChannelPolicy]], clock: Callable[[], datetime]
    ) -> None:
        self.policies = policies
        self.clock = clock

    def refused(self, event: OutcomeEvent) -> Invalid | None:
        """Why an event by identity cannot be checked: its channel is no channel of the
        loaded rules, or one that takes no consent banner and the event carries one."""
        channel, policies = event.channel or "web", self.policies()
        if channel not in policies:
            known = ", ".join(sorted(policies))
            return Invalid("channel", f"not a channel of the loaded rules; known: {known}")
        if granting(event.consent) and not policies[channel].takes_banner(channel):
            return Invalid("consent", no_banner(channel, "outcomes"))
        return None

    def __call__(
        self, resolution: Resolution, channel: str, banner: ConsentSignal | None, gpc: bool
    ) -> bool:
        policy = self.policies()[channel]
        return check_consent(policy, resolution, banner, gpc=gpc, now=self.clock()).granted


def measured(
    event: OutcomeEvent, resolution: Resolution | None, consented: Consent, *, gpc: bool
) -> Resolution | None:
    """Whom `event` is stored with: its resolution, or none known when the channel's
    consent does not let that profile be used (None: by decision id)."""
    if resolution is None or not known(resolution):
        return resolution
    channel = event.channel or "web"
    if consented(resolution, channel, event.consent, gpc):
        return resolution
    return Resolution("unknown")


class EventResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What became of one event. `invalid`: `field` and `detail` say what is wrong;
    `unavailable`: the profile source could not resolve its identity, so it is not stored
    (send it again); by identity, `resolved_to` says whom it was stored with."""

    status: Status
    event_id: str | None = None
    field: str | None = None
    detail: str | None = None
    resolved_to: tuple[Known, ...] | None = None


class OutcomesAnswer(msgspec.Struct, frozen=True):
    """How many events were accepted, already seen, refused and left unresolved; and each
    event's result, in the order sent."""

    accepted: int
    duplicates: int
    invalid: int
    unavailable: int
    results: tuple[EventResult, ...]


_event_decoder = msgspec.json.Decoder(OutcomeEvent)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_events_decoder = msgspec.json.Decoder(
    Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_EVENTS)]
)


class Parsed(NamedTuple):
    """A request body's events, and whether it was a batch (else one event)."""

    events: list[OutcomeEvent | Invalid]
    batch: bool


def parse_body(body: bytes, now: datetime, *, retention_days: int = 0) -> Parsed:
    """The events of a request body: one event, or `{"events": [...]}`. Raises
    InvalidRequest (naming the field) for a body that is neither, or a lone event that is
    wrong; in a batch each event is parsed, and refused, on its own. `retention_days`: as
    `problem_of` takes it."""
    fields = decode_body(body, _fields_decoder)
    if "events" not in fields:
        parsed = parse_event(body, now, retention_days=retention_days)
        if isinstance(parsed, Invalid):  # the body itself unreadable: 400, as documented
            refusal = MalformedBody if parsed.field == "body" else InvalidRequest
            raise refusal(parsed.field, parsed.detail)
        return Parsed([parsed], batch=False)
    others = sorted(set(fields) - {"events"})
    if others:
        raise InvalidRequest(others[0], "a batch holds `events` and nothing else")
    try:
        items = _events_decoder.decode(fields["events"])
    except msgspec.ValidationError as exc:
        raise InvalidRequest("events", validation_path(exc)[0]) from None
    events = [
        parse_event(item, now, f"events.{i}", retention_days=retention_days)
        for i, item in enumerate(items)
    ]
    return Parsed(events, batch=True)


def parse_event(
    raw: bytes | msgspec.Raw, now: datetime, where: str = "", *, retention_days: int = 0
) -> OutcomeEvent | Invalid:
    """One event from its JSON, checked; `where` prefixes the field of a problem."""
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message, path = validation_path(exc)
        leap = _leap_second_read(raw) if path == ("at",) else None
        if leap is not None:
            return parse_event(leap, now, where, retention_days=retention_days)
        return Invalid(_joined(where, *map(str, path)), message)
    except msgspec.DecodeError as exc:
        return Invalid(where or "body", f"not valid JSON: {decode_problem(exc, raw)}")
    except UnicodeDecodeError:
        return Invalid(where or "body", "not valid UTF-8")
    except RecursionError:
        return Invalid(where or "body", "nested too deeply")
    problem = problem_of(event, now, retention_days)
    return Invalid(_joined(where, problem.field), problem.detail) if problem else event


# `at` on a leap second, which RFC 3339 allows and Python's datetime cannot hold
_LEAP_SECOND = re.compile(
    rb'"at"\s*:\s*"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}):60(?:\.[0-9]+)?'
    rb'([Zz]|[+-][0-9]{2}:[0-9]{2})"'
)


def _leap_second_read(raw: bytes | msgspec.Raw) -> bytes | None:
    """`raw` (a batch's event: msgspec.Raw) with its `at` on a leap second read as the next
    minute's start, as CEL's timestamp() reads one; None if it holds none."""
    data = bytes(raw)
    found = _LEAP_SECOND.search(data)
    if found is None:
        return None
    offset = found[2].decode().upper().replace("Z", "+00:00")
    try:
        minute = datetime.fromisoformat(f"{found[1].decode()}:59{offset}")
        after = (minute + timedelta(seconds=1)).isoformat().encode()
    except (ValueError, OverflowError):  # no such day, or past year 9999
        return None
    return data[: found.start()] + b'"at":"' + after + b'"' + data[found.end() :]


def problem_of(event: OutcomeEvent, now: datetime, retention_days: int = 0) -> Invalid | None:
    """What is wrong with a decoded event that its types cannot say, if anything. With
    `retention_days` (DECIDER_MEASURE_RETENTION_DAYS), an event older than that is refused:
    the exposures it could follow are gone, so stored it would never count."""
    if event.value is not None and not math.isfinite(event.value):
        return Invalid("value", "must be a finite number")
    if event.decision_id is None and event.identity is None:
        return Invalid("decision_id", "give decision_id or identity: whose outcome this is")
    if event.decision_id is not None and event.identity is not None:
        return Invalid("identity", "give decision_id or identity, not both")
    if event.channel is not None and event.identity is None:
        return Invalid("channel", "goes with identity: the channel whose rules resolve it")
    if event.consent is not None and event.identity is None:
        return Invalid("consent", "goes with identity: the banner state of whom it names")
    if event.at is not None and event.at > now + FUTURE_SLACK:
        minutes = int(FUTURE_SLACK.total_seconds() // 60)
        return Invalid("at", f"more than {minutes} minutes in the future")
    if retention_days and event.at is not None and event.at < now - timedelta(retention_days):
        return Invalid(
            "at",
            f"more than {retention_days} days ago: exposures are kept that long "
            "(DECIDER_MEASURE_RETENTION_DAYS), so it would follow none",
        )
    return None


def _joined(where: str, *path: str) -> str:
    return ".".join(part for part in (where, *path) if part) or "body"


class RecentIds:
    """The last `limit` event ids seen, oldest forgotten first."""

    def __init__(self, limit: int = RECENT_IDS) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]

    def discard(self, event_id: str) -> None:
        self._ids.pop(event_id, None)


def outcome_of(
    event: OutcomeEvent, now: datetime, units: Units, resolution: Resolution | None
) -> Outcome:
    """The record of `event` (by identity: resolved to `resolution`)."""
    account = visitor = None
    if resolution is not None:
        account = units.account(resolution.account.id) if resolution.account else None
        visitor = units.visitor(resolution.visitor.id) if resolution.visitor else None
    return Outcome(
        at=event.at or now,
        event_id=event.event_id,
        name=event.name,
        value=event.value,
        decision_id=event.decision_id,
        account=account,
        visitor=visitor,
    )


def known(resolution: Resolution) -> tuple[Known, ...]:
    """Whom a resolution names, of the two a record may hold."""
    found: tuple[Known, ...] = ("account",) if resolution.account else ()
    return found + (("visitor",) if resolution.visitor else ())


async def resolve_all(
    resolver: IdentityResolver, events: Sequence[OutcomeEvent]
) -> list[Resolution | None]:
    """Each event's resolution (None for one by decision id), RESOLVING at a time."""
    found: list[Resolution | None] = [None] * len(events)
    asked = [(i, e.identity, e.channel or "web") for i, e in enumerate(events) if e.identity]
    for start in range(0, len(asked), RESOLVING):
        chunk = asked[start : start + RESOLVING]
        answers = await asyncio.gather(*(resolver.resolve(who, ch) for _, who, ch in chunk))
        for (i, _, _), answer in zip(chunk, answers, strict=True):
            found[i] = answer
    return found


class OutcomeIntake:
    """POST /v1/outcomes' work: events checked, resolved, remembered and stored."""

    def __init__(
        self,
        sink: Sink,
        units: Units,
        resolver: IdentityResolver,
        consented: Consent,
        *,
        clock: Callable[[], datetime],
        remember: int = RECENT_IDS,
        retention_days: int = 0,
    ) -> None:
        self.sink = sink
        self.retention_days = retention_days
        self.units = units
        self.resolver = resolver
        self.consented = consented
        self.now = clock
        self.seen = RecentIds(remember)

    async def take(
        self, parsed: Sequence[OutcomeEvent | Invalid], *, gpc: bool = False
    ) -> OutcomesAnswer:
        """Store the new events of `parsed` (each by identity on a channel of the loaded
        rules: see `Consent.unknown`); answer each. `gpc`: the request said Sec-GPC: 1.
        Raises NotStored if the log cannot take or write them (then none is stored or
        remembered)."""
        now = self.now()
        results: list[EventResult] = [EventResult("invalid")] * len(parsed)
        fresh: list[tuple[int, OutcomeEvent]] = []
        taken: set[str] = set()
        for i, item in enumerate(parsed):
            if isinstance(item, Invalid):
                results[i] = EventResult("invalid", field=item.field, detail=item.detail)
            elif (key := event_key(item.name, item.event_id)) in self.seen or key in taken:
                results[i] = EventResult("duplicate", item.event_id)
            else:
                taken.add(key)
                fresh.append((i, item))
        resolutions = await resolve_all(self.resolver, [event for _, event in fresh])
        records: list[Outcome] = []
        for (i, event), resolution in zip(fresh, resolutions, strict=True):
            if resolution is not None and resolution.status == "unavailable":
                results[i] = EventResult(
                    "unavailable",
                    event.event_id,
                    detail="the profile source could not resolve the identity; not stored: "
                    "send it again",
                )
                continue
            whose = measured(event, resolution, self.consented, gpc=gpc)
            try:
                records.append(outcome_of(event, now, self.units, whose))
            except SettingsError as exc:  # the unit key could not be made: see its message
                raise NotStored(f"{exc}; nothing was stored") from None
            whom = known(whose) if whose is not None else None
            detail = None
            if whom == ():
                detail = UNCONSENTED if whose is not resolution else NOBODY
            results[i] = EventResult("accepted", event.event_id, detail=detail, resolved_to=whom)
        if records:
            await self._store(records)
        statuses = [result.status for result in results]
        return OutcomesAnswer(
            accepted=statuses.count("accepted"),
            duplicates=statuses.count("duplicate"),
            invalid=statuses.count("invalid"),
            unavailable=statuses.count("unavailable"),
            results=tuple(results),
        )

    async def _store(self, records: list[Outcome]) -> None:
        """Written, or NotStored. The ids are remembered once the records are written, not
        before: a resend racing a write that then fails must not be answered `duplicate` and
        lost; one racing a write that succeeds is stored twice, which the report counts once.
        A write not confirmed within WRITE_WAIT_S is NotStored too (sending again is safe)."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[bool] = loop.create_future()
        ids = [event_key(record.name, record.event_id) for record in records]

        def settle(ok: bool) -> None:
            if ok:
                for event_id in ids:
                    self.seen.add(event_id)
            if not written.done():
                written.set_result(ok)

        def done(ok: bool) -> None:  # on the writer's thread
            loop.call_soon_threadsafe(settle, ok)

        if not self.sink.offer_acked(records, done):
            settle(False)
            raise NotStored("the outcome log's queue is full; nothing was stored: send it again")
        try:
            ok = await asyncio.wait_for(asyncio.shield(written), WRITE_WAIT_S)
        except TimeoutError:
            raise NotStored(
                f"the outcome log did not confirm the write within {WRITE_WAIT_S:.0f} s: send "
                "it again (an event stored twice counts once)"
            ) from None
        if not ok:
            raise NotStored("the outcome log cannot write; nothing was stored: send it again")
