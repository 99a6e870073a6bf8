"""The OpenFeature Remote Evaluation Protocol (OFREP) over decisions: a placement is a flag.

Read from the protocol's OpenAPI document (open-feature/protocol, service/openapi.yaml) and
from the Python provider (openfeature-provider-ofrep 0.3.0), which is what callers run:

- `POST /ofrep/v1/evaluate/flags/{key}` and the bulk `POST /ofrep/v1/evaluate/flags` take
  `{"context": {...}}`; the provider puts the evaluation context's `targetingKey` and its
  attributes side by side in `context`. The body is optional in the protocol: none is an
  empty context.
- 200: `{key, value, reason, variant, metadata}`. The provider reads `reason` with
  `Reason[data["reason"]]`, so a reason outside OpenFeature's set breaks it; metadata values
  are booleans, numbers or strings only.
- 400: `{key, errorCode, errorDetails}`, errorCode one of PARSE_ERROR,
  TARGETING_KEY_MISSING, INVALID_CONTEXT, GENERAL; 404: the same with FLAG_NOT_FOUND. The
  provider reads 401, 403 and other statuses above 400 by status alone.
- bulk 200: `{"flags": [...]}`, each a success or a failure of its own, with an `ETag`; a
  request whose `If-None-Match` names the current one is answered 304 with no body.

Here the value is the served variant's content (slot → text), `variant` its id, `reason`
the decision's reasons mapped onto OpenFeature's (`REASONS`), and `metadata` the rest of the
decision: its id, ruleset, channel, `suppressed` and `personalized`, reason codes, segment
and experiment arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import msgspec

from decider.errors import InvalidRequest, validation_path
from decider.model import (
    MAX_ID_LENGTH,
    ChannelId,
    ConsentSignal,
    DecideRequest,
    Decision,
    Identity,
    Purpose,
    decode_body,
    json_value_problem,
)
from decider.reasons import ReasonCode

OfrepReason = Literal["STATIC", "TARGETING_MATCH", "SPLIT", "DEFAULT", "DISABLED", "UNKNOWN"]
FailureCode = Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]

# What each reason code says about the value served. A decision's OFREP reason is the
# strongest of its codes' (`PRECEDENCE`): identity and consent codes say nothing about what is
# served (UNKNOWN, the weakest); the suppression, segment or experiment code decides.
REASONS: dict[ReasonCode, OfrepReason] = {
    ReasonCode.IDENTITY_VISITOR: "UNKNOWN",
    ReasonCode.IDENTITY_STITCHED: "UNKNOWN",
    ReasonCode.IDENTITY_MERGED: "UNKNOWN",
    ReasonCode.IDENTITY_CONFLICT: "UNKNOWN",
    ReasonCode.IDENTITY_UNKNOWN: "UNKNOWN",
    ReasonCode.IDENTITY_DANGLING: "UNKNOWN",
    ReasonCode.IDENTITY_ACCOUNT: "UNKNOWN",
    ReasonCode.IDENTITY_ACCOUNT_CONFLICT: "UNKNOWN",
    ReasonCode.IDENTITY_STALE: "UNKNOWN",
    ReasonCode.IDENTITY_UNCHECKED: "UNKNOWN",
    ReasonCode.IDENTITY_UNAVAILABLE: "UNKNOWN",
    ReasonCode.CONSENT_NOT_REQUIRED: "UNKNOWN",
    ReasonCode.CONSENT_GRANTED: "UNKNOWN",
    ReasonCode.CONSENT_DENIED: "UNKNOWN",
    ReasonCode.CONSENT_UNKNOWN: "UNKNOWN",
    ReasonCode.SUPPRESSED_PROFILE_UNAVAILABLE: "DISABLED",
    ReasonCode.SUPPRESSED_FLAG: "DISABLED",
    ReasonCode.SUPPRESSED_RULE: "DISABLED",
    ReasonCode.SUPPRESSED_NO_CONSENT: "DISABLED",
    ReasonCode.SUPPRESSED_RULE_ERROR: "DISABLED",
    ReasonCode.SEGMENT_MATCHED: "TARGETING_MATCH",
    # beside segment.matched, for the lower segment whose variant is served
    ReasonCode.SEGMENT_PASSED_OVER: "TARGETING_MATCH",
    ReasonCode.SEGMENT_NO_VARIANT: "DEFAULT",
    ReasonCode.SEGMENT_NONE: "DEFAULT",
    ReasonCode.EXPERIMENT_HOLDOUT: "SPLIT",
    ReasonCode.EXPERIMENT_CONTROL: "SPLIT",
    ReasonCode.EXPERIMENT_TREATMENT: "SPLIT",
    # served as without the experiment: the segment's own variant, as targeted
    ReasonCode.EXPERIMENT_NOT_BUCKETED: "TARGETING_MATCH",
}
# strongest first: a suppressed decision is DISABLED whatever else it says; an experiment's
# arm (SPLIT) decides over the segment it split (TARGETING_MATCH)
PRECEDENCE: tuple[OfrepReason, ...] = (
    "DISABLED",
    "SPLIT",
    "TARGETING_MATCH",
    "DEFAULT",
    "STATIC",
    "UNKNOWN",
)
T = TypeVar("T")
_RANK = {reason: rank for rank, reason in enumerate(PRECEDENCE)}

TARGETING_KEY = "targetingKey"
IDENTITY_KEYS = ("visitor_id", "user_id", "email_sha256", "account_id")
CONSENT_KEY = "consent"
CHANNEL_KEY = "channel"  # a single flag: its placement's channel, checked; bulk: which ones
EMAIL_KEY = "email"
# read by Decider, not passed on to the rules' `context`
RESERVED = frozenset({TARGETING_KEY, *IDENTITY_KEYS, CONSENT_KEY, CHANNEL_KEY})


class Metadata(msgspec.Struct, frozen=True, omit_defaults=True):
    """The decision beside the value: OFREP metadata holds booleans, numbers and strings
    only, so a missing segment or arm is left out, and the reason codes are one string."""

    decision_id: str
    ruleset: str
    channel: str
    suppressed: bool
    personalized: bool
    reasons: str  # the decision's reason codes, in order, comma-separated
    segment: str | msgspec.UnsetType = msgspec.UNSET
    experiment: str | msgspec.UnsetType = msgspec.UNSET
    arm: str | msgspec.UnsetType = msgspec.UNSET
    language: str | msgspec.UnsetType = msgspec.UNSET  # the variant's overrides that gave text
    role: str | msgspec.UnsetType = msgspec.UNSET


class Evaluation(msgspec.Struct, frozen=True):
    """One flag evaluated: OFREP's evaluationSuccess."""

    key: str
    value: dict[str, str]
    reason: OfrepReason
    variant: str
    metadata: Metadata


class FlagFailure(msgspec.Struct, frozen=True, rename="camel"):
    """One flag not evaluated: OFREP's evaluationFailure (400, or an item of a bulk answer)."""

    key: str
    error_code: FailureCode
    error_details: str


class FlagNotFound(msgspec.Struct, frozen=True, rename="camel"):
    """OFREP's flagNotFound (404): no placement of that id in the loaded rules."""

    key: str
    error_code: Literal["FLAG_NOT_FOUND"]
    error_details: str


class BulkFailure(msgspec.Struct, frozen=True, rename="camel"):
    """OFREP's bulkEvaluationFailure: the bulk request as a whole is refused."""

    error_code: FailureCode
    error_details: str


class Bulk(msgspec.Struct, frozen=True):
    """OFREP's bulkEvaluationSuccess: every placement, in id order."""

    flags: tuple[Evaluation | FlagFailure, ...]


class EvaluationRequest(msgspec.Struct, frozen=True):
    """OFREP's evaluationRequest; members other than `context` are the protocol's to add,
    and are let be."""

    context: dict[str, Any] | None = None


class OfrepRefusal(InvalidRequest):
    """A request OFREP names an error code for (400); `field` is in the body, as ever."""

    status = 400

    def __init__(self, error_code: FailureCode, field: str, message: str) -> None:
        self.error_code: FailureCode = error_code
        super().__init__(field, message)


_decoder = msgspec.json.Decoder(EvaluationRequest)


def read_context(body: bytes) -> dict[str, Any]:
    """The evaluation context of a request body (an empty body is an empty context), checked
    as a decide request's context is; raises OfrepRefusal."""
    if not body.strip():
        return {}
    try:
        context = decode_body(body, _decoder).context or {}
    except InvalidRequest as exc:
        code: FailureCode = "INVALID_CONTEXT" if exc.field.startswith("context") else "PARSE_ERROR"
        raise OfrepRefusal(code, exc.field, exc.message) from None
    problem = json_value_problem(context, "context")
    if problem is not None:
        raise OfrepRefusal("INVALID_CONTEXT", *problem)
    return context


def request_for(key: str, context: dict[str, Any]) -> DecideRequest:
    """The decide request for flag `key` in `context`: the identity keys (`visitor_id`,
    `user_id`, `email_sha256`, `account_id`) are the identity, as in /v1/decide; with none of
    them, `targetingKey` is the visitor id. `consent`, a list of purposes, is the consent
    banner's signal; `channel`, as /v1/decide's, the channel the flag must be of; every other
    key is the rules' `context`. An `email` key is refused: emails travel only as SHA-256
    hashes."""
    if EMAIL_KEY in context:
        raise OfrepRefusal(
            "INVALID_CONTEXT",
            f"context.{EMAIL_KEY}",
            "a raw email address is refused: send email_sha256, the SHA-256 of the lowercase "
            "address, instead",
        )
    targeting = context.get(TARGETING_KEY)
    if targeting is not None and not isinstance(targeting, str):
        raise OfrepRefusal("INVALID_CONTEXT", f"context.{TARGETING_KEY}", "expected a string")
    given = {name: context[name] for name in IDENTITY_KEYS if name in context}
    field = ""
    if not given:
        if not targeting:
            raise OfrepRefusal(
                "TARGETING_KEY_MISSING",
                f"context.{TARGETING_KEY}",
                f"a targetingKey (read as the visitor id) or one of {', '.join(IDENTITY_KEYS)} "
                "is required",
            )
        # read as the visitor id, targetingKey is the field at fault if it is not one
        given, field = {"visitor_id": targeting}, TARGETING_KEY
    identity = _convert(given, Identity, field)
    consent = None
    if CONSENT_KEY in context:
        consent = ConsentSignal(_convert(context[CONSENT_KEY], tuple[Purpose, ...], CONSENT_KEY))
    channel = (
        _convert(context[CHANNEL_KEY], ChannelId, CHANNEL_KEY) if CHANNEL_KEY in context else None
    )
    rest = {name: value for name, value in context.items() if name not in RESERVED}
    return DecideRequest(
        placement=key, identity=identity, channel=channel, context=rest, consent=consent
    )


def _convert(value: Any, kind: type[T], field: str) -> T:
    """`value` as `kind`, strictly; a wrong one is INVALID_CONTEXT naming `field` (else the
    context key at fault)."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, path = validation_path(exc)
        # Identity's own checks (an id that looks like an email) name no path: their
        # message starts with the key's name
        named = str(path[0]) if path else message.partition(" ")[0]
        at = field or (named if named in IDENTITY_KEYS else "")
        if field == TARGETING_KEY:  # it was read as the visitor id: say what it was sent as
            message = message.replace("visitor_id", TARGETING_KEY)
        where = f"context.{at}" if at else "context"
        raise OfrepRefusal("INVALID_CONTEXT", where, message) from None


def details(exc: InvalidRequest) -> str:
    """`errorDetails` for a refused request: the field at fault, as the evaluation context
    holds it (a decide request's `consent` is the context's), then why."""
    field = exc.field
    if not isinstance(exc, OfrepRefusal) and not field.startswith("context"):
        field = f"context.{field}"
    return f"{field}: {exc.message}"


def echoed(key: str) -> str:
    """A flag key as an error repeats it: whole up to the longest a placement id may be,
    else cut there (a caller's megabyte of path is not sent back)."""
    return key if len(key) <= MAX_ID_LENGTH else f"{key[:MAX_ID_LENGTH]}…"


def reason(decision: Decision) -> OfrepReason:
    """The OFREP reason of `decision`: the strongest its reason codes map to."""
    mapped = (REASONS[r.code] for r in decision.reasons)
    return min(mapped, key=_RANK.__getitem__, default="UNKNOWN")


def evaluation(decision: Decision) -> Evaluation:
    """`decision` as OFREP's evaluation of the flag named after its placement."""
    return Evaluation(
        key=decision.placement,
        value=decision.variant.content,
        reason=reason(decision),
        variant=decision.variant.id,
        metadata=Metadata(
            decision_id=decision.decision_id,
            ruleset=decision.ruleset,
            channel=decision.channel,
            suppressed=decision.suppressed,
            personalized=decision.personalized,
            reasons=",".join(r.code for r in decision.reasons),
            segment=_given(decision.segment),
            experiment=_given(decision.experiment),
            arm=_given(decision.arm),
            language=_given(decision.variant.language),
            role=_given(decision.variant.role),
        ),
    )


def _given(value: str | None) -> str | msgspec.UnsetType:
    return value if value is not None else msgspec.UNSET


def etag(ruleset: str, context: dict[str, Any], gpc: bool, bulk: Bulk) -> str:
    """A weak ETag of a bulk answer: a hash of the ruleset version, the evaluation context
    (canonical: keys sorted), the GPC signal, and every flag's evaluation but its decision id,
    which is new on every call. A changed context, rule or profile (which changes what is
    served, or why) changes it, so a 304 is never stale; weak, as the bodies differ in ids."""
    flags = [
        msgspec.structs.replace(
            flag, metadata=msgspec.structs.replace(flag.metadata, decision_id="")
        )
        if isinstance(flag, Evaluation)
        else flag
        for flag in bulk.flags
    ]
    canonical = msgspec.json.encode([ruleset, context, gpc, flags], order="sorted")
    return f'W/"{hashlib.sha256(canonical).hexdigest()[:32]}"'


def none_match(headers: Iterable[str], current: str) -> bool:
    """Whether the If-None-Match headers (one list, however many fields carry it: RFC 9110
    5.3) name `current` (weak comparison, 13.1.2: a `W/` prefix is ignored on either side);
    `*` is not read as a match, for a POST."""
    tag = current.removeprefix("W/")
    return any(
        given.strip().removeprefix("W/") == tag for header in headers for given in header.split(",")
    )
