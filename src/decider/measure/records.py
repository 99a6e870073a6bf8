"""The records the exposure log and the outcome store hold, one JSON object a line: the
contract between the service that writes them and `decider report` that reads them (and
whatever a data team loads them into). Fields are only ever added, with defaults.

No record holds a raw id: the account and the visitor are written as keyed hashes
(decider.measure.units), the same in an exposure and in an outcome reported by identity, so
the two join on the experiment's unit without either naming anyone. An outcome reported by
decision id joins that decision's exposure.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

Arm = str  # "holdout", "control", or a treatment variant's id
UnitKind = str  # "account" or "visitor": what the experiment bucketed


# records hold no reference cycles, so the garbage collector need not track them (gc=False):
# one is built on every decision logged, and an untracked one costs it less


class Exposure(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="exposure", gc=False
):
    """One decision shown: which segment the person is in (in the holdout too), and which
    arm and variant they got."""

    at: datetime
    decision_id: str
    ruleset: str
    placement: str
    channel: str
    segment: str | None = None
    experiment: str | None = None
    arm: Arm | None = None
    variant: str
    # the variant's dressing, when its language or role overrides gave some of its content
    language: str | None = None
    role: str | None = None
    unit_kind: UnitKind | None = None
    unit: str | None = None  # keyed hash of the account or visitor the experiment bucketed
    # the request context values DECIDER_EXPOSURE_CONTEXT names (device, country...), for
    # `decider report --by context.device`; never an identifier
    context: dict[str, str] = {}


class Outcome(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="outcome", gc=False
):
    """A conversion or other event after a decision, by the decision's id or by the unit
    the caller's identity resolves to. `event_id` makes a resend count once."""

    at: datetime
    event_id: str
    name: str
    value: float | None = None
    decision_id: str | None = None
    account: str | None = None  # keyed hashes of whom the caller's identity resolved to
    visitor: str | None = None


def event_key(name: str, event_id: str) -> str:
    """What makes an outcome one event: its id within its name, so an order id and a signup
    id that happen to be equal are two events. (Neither holds a NUL.)"""
    return f"{name}\0{event_id}"


Record = Exposure | Outcome
record_decoder = msgspec.json.Decoder(Record)
record_encoder = msgspec.json.Encoder()
