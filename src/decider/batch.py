"""Batch decisions for sends (POST /v1/decide/batch): one placement, a shared context, and up
to MAX_RECIPIENTS recipients, each with its own identity and context. Wire types, and the
body read into one decide request per recipient.

A recipient that is wrong (an identity without an id, a hash that is not one, a context
past its bounds) is refused on its own, its field named under `recipients.<n>`; the others
are decided. What all share (placement, channel, consent, the shared context) is checked
once, for the whole batch, as a single decision checks it (engine.select_placement).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Generic, TypeVar

import msgspec

from decider.errors import validation_path
from decider.model import (
    MAX_ITEMS,
    ChannelId,
    ConsentSignal,
    DecideRequest,
    Decision,
    Ident,
    Identity,
    ProblemDetails,
    decode_body,
    json_value_problem,
    json_values,
    problem,
)

MAX_RECIPIENTS = 1000  # one request's recipients
MAX_BODY_BYTES = 1 << 20  # what a full batch may weigh: about 1 KiB a recipient
# a batch's identities stitched, or decisions made (decider.service), in one go: ~1 ms of
# work, then the event loop serves other requests (single decisions) before the next slice
SLICE = 64
R = TypeVar("R")
Context = Annotated[
    dict[str, Any],
    msgspec.Meta(
        max_length=MAX_ITEMS,
        description="as `context` of a single decision; a recipient's keys win over the "
        "shared context's (top-level keys: the recipient's value replaces the shared one)",
    ),
]


class Recipient(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One recipient: who, and what the send knows of them besides the shared context."""

    identity: Identity
    context: Context = {}


class BatchRequest(msgspec.Struct, Generic[R], frozen=True, forbid_unknown_fields=True):
    """What POST /v1/decide/batch takes: what a decide request holds, but the identity,
    once for all recipients; each recipient's identity and context (R: a Recipient; read
    one at a time, so one that is wrong fails alone)."""

    placement: Ident
    recipients: Annotated[
        list[R],
        msgspec.Meta(
            max_length=MAX_RECIPIENTS,
            description=f"at most {MAX_RECIPIENTS}; each answered in its own result, in order",
        ),
    ]
    channel: ChannelId | None = None
    context: Context = {}
    consent: ConsentSignal | None = None


class Refused(msgspec.Struct, frozen=True):
    """A recipient not decided for: why, as the problem details a single decision's 4xx
    answers, its `field` under `recipients.<n>`."""

    error: ProblemDetails


class BatchAnswer(msgspec.Struct, frozen=True):
    """Each recipient's decision (exactly as POST /v1/decide answers it) or refusal, in the
    order sent."""

    results: list[Decision | Refused]


class Batch(msgspec.Struct, frozen=True):
    """A batch read: what every recipient shares, as one decide request (its identity a
    stand-in, read by nothing: the engine's checks of a request read no identity), and
    each recipient's decide request, or why it is refused."""

    shared: DecideRequest
    requests: list[DecideRequest | Refused]


_batch_decoder = msgspec.json.Decoder(BatchRequest[msgspec.Raw])
_recipient_decoder = msgspec.json.Decoder(Recipient)
_STAND_IN = Identity(visitor_id="-")


async def read_batch(body: bytes) -> Batch:
    """The batch `body` holds. Raises InvalidRequest (naming the field) for a body that is
    not a batch: not JSON, a key twice, a shared field wrong, more than MAX_RECIPIENTS.
    Recipients are read SLICE at a time, the event loop serving others between: a full
    batch's contexts take tens of milliseconds to check."""
    batch = decode_body(body, _batch_decoder)
    shared = DecideRequest(batch.placement, _STAND_IN, batch.channel, batch.context, batch.consent)
    spent = json_values(shared.context) if shared.context else 0
    requests: list[DecideRequest | Refused] = []
    for n, raw in enumerate(batch.recipients):
        if n and not n % SLICE:
            await asyncio.sleep(0)
        requests.append(_request(shared, raw, n, spent))
    return Batch(shared, requests)


def _request(
    shared: DecideRequest, raw: msgspec.Raw, n: int, spent: int
) -> DecideRequest | Refused:
    """The decide request of the n-th recipient, read from `raw`, or why it is refused.
    `spent`: the values of the shared context (checked once), which its context joins."""
    where = f"recipients.{n}"
    try:
        recipient = _recipient_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message, path = validation_path(exc)
        return _refused(".".join([where, *map(str, path)]), message)
    except RecursionError:
        return _refused(where, "nested too deeply")
    context = shared.context
    if recipient.context:
        context = {**shared.context, **recipient.context}
        found = json_value_problem(recipient.context, f"{where}.context", spent=spent)
        if found is None and len(context) > MAX_ITEMS:
            why = f"{len(context)} items with the shared context; at most {MAX_ITEMS}"
            found = f"{where}.context", why
        if found is not None:
            return _refused(*found)
    return DecideRequest(
        shared.placement, recipient.identity, shared.channel, context, shared.consent
    )


def _refused(field: str, detail: str) -> Refused:
    return Refused(problem(422, "invalid_request", detail, field))
