"""The exposure log: one record for each decision shown that had an experiment (or for every
decision shown, with DECIDER_EXPOSURE_ALL), offered to a sink that writes it off the
request path (decider.measure.sink).

The decision path pays for building one small record and putting it on a queue. A
suppressed decision is no exposure (nothing was to be shown) and is never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from decider.addresses import looks_like_email
from decider.measure.records import Exposure, UnitKind
from decider.measure.sink import NoSink, Sink
from decider.model import Decision

MAX_CONTEXT_CHARS = 128  # a context value longer than this is left out of the record
KeyedUnit = tuple[UnitKind, str]  # a unit's kind, and its keyed hash (never its id)


class ExposureLog:
    """Which decisions are exposures, and the sink they go to. `context_keys`: the request
    context's keys copied into each record (DECIDER_EXPOSURE_CONTEXT); `everything`: every
    decision shown, not only those with an experiment (DECIDER_EXPOSURE_ALL)."""

    __slots__ = ("context_keys", "enabled", "everything", "sink")

    def __init__(
        self, sink: Sink, *, context_keys: tuple[str, ...] = (), everything: bool = False
    ) -> None:
        self.sink = sink
        self.context_keys = context_keys
        self.everything = everything
        self.enabled = not isinstance(sink, NoSink)

    def exposure_of(
        self,
        decision: Decision,
        context: Mapping[str, Any],
        unit: KeyedUnit | None,
        *,
        at: datetime,
    ) -> Exposure | None:
        """The record of `decision` made at `at` for a request with `context`, or None when
        it is not logged. `unit`: the kind and keyed hash (decider.measure.units) of the
        account or visitor the decision's experiment bucketed, which the decision does not
        carry."""
        if not self.enabled or decision.suppressed:
            return None
        experiment = decision.experiment  # set on decisions an experiment bucketed
        if experiment is None and not self.everything:
            return None
        keyed = unit if experiment is not None else None
        return Exposure(
            at=at,
            decision_id=decision.decision_id,
            ruleset=decision.ruleset,
            placement=decision.placement,
            channel=decision.channel,
            segment=decision.segment,
            experiment=experiment,
            arm=decision.arm,
            variant=decision.variant.id,
            language=decision.variant.language,
            role=decision.variant.role,
            unit_kind=keyed[0] if keyed else None,
            unit=keyed[1] if keyed else None,
            context=copied(context, self.context_keys) if self.context_keys else {},
        )

    def record(
        self,
        decision: Decision,
        context: Mapping[str, Any],
        unit: KeyedUnit | None,
        *,
        at: datetime,
    ) -> None:
        """Offer the record of `decision` to the sink, if it is logged; never blocks."""
        exposure = self.exposure_of(decision, context, unit, at=at)
        if exposure is not None:
            self.sink.offer(exposure)


def copied(context: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """The values of `keys` in `context` that are text, numbers or booleans, as text; left
    out: anything else, a value longer than MAX_CONTEXT_CHARS, one with a control character
    (it would reach a terminal through the report), and one that looks like an email address
    (a record never holds one)."""
    kept: dict[str, str] = {}
    for key in keys:
        value = context.get(key)
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            continue
        if len(text) <= MAX_CONTEXT_CHARS and text.isprintable() and not looks_like_email(text):
            kept[key] = text
    return kept
