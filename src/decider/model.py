"""Wire types of the decision API, decoded and encoded by msgspec.

Decoding is strict (no "12" for 12) and unknown top-level fields are refused, so a
typo such as "placment" is an error naming the field instead of a silent default.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from decider.addresses import looks_like_email
from decider.errors import InvalidRequest, MalformedBody, matching, validation_path
from decider.reasons import Reason, ReasonCode

# the channels whose identity rules differ: on email the recipient is the email hash's owner;
# every other channel (web, or one the rules define) resolves who is asking as web does
Channel = Literal["web", "email"]
# a rule's id (a placement's, a segment's, a channel's...), as the rules give it
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
ID_WORDS = "an id: 1 to 128 lowercase letters, digits or _.-, starting with a letter or digit"
# a channel of the loaded rules: web and email are built in, the rules may define more
ChannelId = Annotated[
    str,
    matching(
        ID_PATTERN,
        ID_WORDS,
        description="a channel of the loaded rules: web, email, or one the rules define",
    ),
]
MAX_DEPTH = 16
# callers choose the length of context lists and maps, and rules may iterate over them: a
# bound keeps one request's cost bounded
MAX_ITEMS = 1000
MAX_VALUES = 2000

Sha256Hex = Annotated[
    str,
    matching(
        "^[0-9a-f]{64}$",
        "the lowercase hex SHA-256 of the email address (hash it; never send it)",
        description="lowercase hex SHA-256 of the email",
    ),
]
MAX_ID_LENGTH = 256  # an id's characters: a placement's, a segment's, a visitor's...
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Purpose = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# a timestamp must say its offset: a naive one cannot be compared with `now`
Instant = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339, with an offset")]


# gc=False on the value structs of a decision (here, decider.profile, decider.reasons...): they
# hold no reference cycles, so the collector need not track them; tracked, a batch's thousands
# of decisions and the caches' profiles were walked by every collection (-13% batch throughput)
class Identity(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Whatever identifiers the caller has; at least one is required."""

    visitor_id: Ident | None = None
    user_id: Ident | None = None
    email_sha256: Sha256Hex | None = None
    account_id: Ident | None = None

    def __post_init__(self) -> None:
        if not (self.visitor_id or self.user_id or self.email_sha256 or self.account_id):
            raise ValueError(
                "at least one of visitor_id, user_id, email_sha256, account_id is required"
            )
        for name in ("visitor_id", "user_id", "account_id"):
            value = getattr(self, name)
            if value is not None and looks_like_email(value):  # full-width @, %40 too
                raise ValueError(
                    f"{name} looks like an email address: send email_sha256, the SHA-256 of "
                    "the lowercase address, instead"
                )


class ConsentSignal(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """The site's consent banner state: exactly the purposes granted right now."""

    purposes: tuple[Purpose, ...]


class DecideRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    placement: Ident
    identity: Identity
    channel: ChannelId | None = None
    context: Annotated[
        dict[str, Any],
        msgspec.Meta(
            max_length=MAX_ITEMS,
            description=f"what the page or send knows; lists and maps hold at most {MAX_ITEMS} "
            f"items, nested at most {MAX_DEPTH} deep, {MAX_VALUES} values in all",
        ),
    ] = {}
    consent: ConsentSignal | None = None
    explain: bool = False


class Variant(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False
):
    """What is served: `content` by slot. `language` and `role`: the variant's language and
    role overrides that gave some of it, when any did (decider.dimensions)."""

    id: str
    content: dict[str, str]
    language: str | None = None
    role: str | None = None


# passed_over: matched, but the placement has no variant for it and chooses the first
# segment with one (decider.rules.files.Placement.choose)
Outcome = Literal[
    "matched", "passed_over", "not_matched", "skipped_consent", "error", "not_evaluated"
]


class SegmentOutcome(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """`condition`: with explain, the condition as it runs, when it uses named conditions."""

    segment: str
    priority: int
    outcome: Outcome
    error: str | None = None
    condition: str | None = None


class Bucket(msgspec.Struct, frozen=True, gc=False):
    """How the placement's experiment bucketed the decision, with explain: the unit's kind
    (never its id), its holdout point in [0, 1) (held out when below `holdout`, the share as
    a fraction) and the arm it landed in."""

    experiment: str
    unit_kind: Literal["account", "visitor"]
    point: float
    holdout: float
    arm: str


class Decision(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """`experiment` and `arm` are set when the placement's experiment bucketed the decision
    (`holdout`, `control` or a treatment variant's id); `segment` is the person's even in the
    holdout. `explain` and `bucket` come with explain: true."""

    decision_id: str
    ruleset: str
    placement: str
    channel: str
    segment: str | None
    variant: Variant
    personalized: bool
    suppressed: bool
    reasons: tuple[Reason, ...]
    experiment: str | None = None
    arm: str | None = None
    explain: tuple[SegmentOutcome, ...] | None = None
    bucket: Bucket | None = None


# what went wrong, for machines; `detail` says it for people
ErrorCode = Literal[
    "malformed_body",
    "invalid_request",
    "unknown_placement",
    "body_too_large",
    "headers_too_large",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "read_only",
    "unavailable",
    "overloaded",
    "not_stored",
    "http_error",
    "internal_error",
]
TITLES: dict[str, str] = {
    "malformed_body": "The body cannot be read",
    "invalid_request": "A field is wrong",
    "unknown_placement": "No such placement",
    "body_too_large": "The body is too large",
    "headers_too_large": "The headers are too large",
    "unauthorized": "An API key is needed",
    "forbidden": "Not allowed for this caller",
    "not_found": "No such resource",
    "method_not_allowed": "Method not allowed",
    "conflict": "Conflicts with what is stored",
    "read_only": "The profile source is read-only",
    "unavailable": "The profile store is unavailable",
    "overloaded": "Too many decisions in flight",
    "not_stored": "Not stored; send it again",
    "http_error": "The request was refused",
    "internal_error": "Internal error",
}
PROBLEM_TYPE = "urn:decider:problem:"
PROBLEM_JSON = "application/problem+json"


class ProblemDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """An error as RFC 9457 problem details (application/problem+json); `type` is
    `urn:decider:problem:<code>`, and `code` and `field` (the field at fault) are extension
    members, for machines to branch on."""

    type: str
    title: str
    status: int
    detail: str
    code: ErrorCode
    field: str | None = None


def problem(status: int, code: ErrorCode, detail: str, field: str | None = None) -> ProblemDetails:
    return ProblemDetails(PROBLEM_TYPE + code, TITLES[code], status, detail, code, field)


def minimal(decision: Decision) -> Decision:
    """The decision as told to a caller without the explain scope: its reasons' codes with
    their fixed meanings, so no message names an id, an account, a flag or a trait value (nor
    does the variant: no `role`); and no code that tells how the ids link up (stitched,
    merged, conflict, account...), which would let a caller test guesses (is this email hash
    that user? that account?)."""
    variant = decision.variant
    if variant.role is not None:  # the role override's name is the visitor's trait value
        variant = msgspec.structs.replace(variant, role=None)
    return msgspec.structs.replace(
        decision,
        variant=variant,
        reasons=tuple(_PLAIN[r.code] for r in decision.reasons if r.code not in _LINKING),
    )


# what the ids are to each other; source failures (stale, unavailable) are kept
_LINKING = frozenset(
    code
    for code in ReasonCode
    if code.family == "identity"
    and code not in (ReasonCode.IDENTITY_STALE, ReasonCode.IDENTITY_UNAVAILABLE)
)
_PLAIN = {code: Reason(code, code.meaning) for code in ReasonCode}


_request_decoder = msgspec.json.Decoder(DecideRequest)
T = TypeVar("T")


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode a request body once, strictly; errors name the offending field."""
    if not body.strip():
        raise MalformedBody("body", "request body is empty; expected a JSON object")
    try:
        decoded = decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, path = validation_path(exc)
        raise InvalidRequest(".".join(map(str, path)) or "body", message) from None
    except msgspec.DecodeError as exc:
        raise MalformedBody("body", f"not valid JSON: {decode_problem(exc, body)}") from None
    except UnicodeDecodeError:
        raise MalformedBody("body", "not valid UTF-8") from None
    except RecursionError:
        raise MalformedBody("body", "nested too deeply") from None
    _refuse_duplicate_keys(body)
    return decoded


# a \u escape of half a UTF-16 surrogate pair without its other half: no character at all
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def decode_problem(exc: msgspec.DecodeError, body: bytes) -> str:
    """msgspec's message, but where it misleads: half a surrogate pair at the end of a
    string reads "Input data was truncated", though nothing was cut."""
    lone = _LONE_SURROGATE.search(body)
    if lone is not None:
        return (
            f"{lone[0].decode()} is half a UTF-16 surrogate pair, no character: send the "
            "character itself, or both halves"
        )
    return str(exc)


class _DuplicateKey(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def _refuse_duplicate_keys(body: bytes) -> None:
    """A key given twice in one object is refused: msgspec keeps the last, silently, and a
    proxy or log reading the first would disagree with what was decided. Runs only on a body
    msgspec has decoded, so it is valid JSON and UTF-8. A key given twice is a string given
    twice: without escapes every string lies between two quotes, so a body whose strings are
    all different (most are) is let through at the cost of one split; else Python's parser
    counts the keys of every object."""
    if b"\\" not in body:
        strings = body.split(b'"')[1::2]
        if len(set(strings)) == len(strings):
            return
    try:
        json.loads(body, object_pairs_hook=_unique)
    except RecursionError:  # Python's parser gives up a little before msgspec does
        raise MalformedBody("body", "nested too deeply") from None
    except _DuplicateKey as exc:
        raise MalformedBody(
            "body", f"the key {exc.args[0]!r} appears twice in one object"
        ) from None


def decode_request(body: bytes) -> DecideRequest:
    return decode_body(body, _request_decoder)


_INT64 = range(-(2**63), 2**63)


def json_value_problem(value: Any, path: str, *, spent: int = 0) -> tuple[str, str] | None:
    """(path, why) if `value` is not one both CEL engines hold alike, or not one a rule can
    afford to read: a NUL character (the C++ runtime would cut the string there), an integer
    beyond 64 bits, nesting deeper than MAX_DEPTH, a list or map of more than MAX_ITEMS items,
    more than MAX_VALUES values in all (a rule comparing two caller lists costs their product;
    `spent`: values counted already, in what `value` joins); else None."""
    left = [MAX_VALUES - spent]
    problem = _value_problem(value, path, 0, left)
    if problem is None and left[0] < 0:
        return path, f"more than {MAX_VALUES} values in all"
    return problem


def json_values(value: Any) -> int:
    """How many values `value` holds, counted as json_value_problem counts them (one it
    passed: at most MAX_VALUES)."""
    left = [MAX_VALUES]
    _value_problem(value, "", 0, left)
    return MAX_VALUES - left[0]


def _value_problem(value: Any, path: str, depth: int, left: list[int]) -> tuple[str, str] | None:
    left[0] -= 1
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if value in _INT64 else (path, "integer out of the 64-bit range")
    if isinstance(value, str):
        return (path, "holds a NUL character") if "\x00" in value else None
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return path, f"nested deeper than {MAX_DEPTH} levels"
        if len(value) > MAX_ITEMS:
            return path, f"{len(value)} items; at most {MAX_ITEMS} are allowed"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return path, "a key holds a NUL character"
            problem = _value_problem(item, f"{path}.{key}", depth + 1, left)
            if problem is not None:
                return problem
            if left[0] < 0:
                return None
    return None
