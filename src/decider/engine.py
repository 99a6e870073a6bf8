"""One decision: pure, given the ruleset, the request, who is asking, and the time.

Order of work: placement and channel, consent, suppression, then segments in priority order
(ties: segment id, ascending), stopping at the first match unless explain was asked for,
then the placement's experiment, if it buckets the segment (decider.experiments).
Without consent, a segment whose condition reads `visitor` or `account` is skipped and the
rules see empty maps, so only contextual segments can match; nor is anyone bucketed.

The first match follows the ruleset's plan for the consent mode (decider.index): segments
whose guards the request's values rule out are not evaluated, the others are tried in
groups chained into one program each (one crossing into the CEL runtime for many
conditions), and one by one where a chain fails, so which segment wins and every outcome
counted are exactly what evaluating each segment alone gives. Explain evaluates every
segment alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

import msgspec

from decider.dimensions import LANGUAGE, ROLE, dressed
from decider.errors import InvalidRequest, UnknownPlacement, meant
from decider.experiments import CONTROL, HOLDOUT, Assignment, Unit, bucket
from decider.gate import Suppressed, check_consent, check_suppression, granting, no_banner
from decider.index import first_match
from decider.model import (
    Bucket,
    DecideRequest,
    Decision,
    Outcome,
    SegmentOutcome,
    json_value_problem,
)
from decider.profile import Person, Resolution
from decider.reasons import Reason, ReasonCode
from decider.ruleset import CelEvalError, Choice, CompiledPlacement, CompiledRuleset

_EMPTY: dict[str, Any] = {}


class Evaluated(msgspec.Struct, frozen=True, gc=False):
    """A decision, the outcome of every segment it evaluated, the suppression that held, if
    any (for counting and explain), and the unit its experiment bucketed, if any (for the
    exposure record, which holds a keyed hash of it: the raw id is in no answer)."""

    decision: Decision
    outcomes: tuple[SegmentOutcome, ...]
    suppression: Suppressed | None = None
    unit: Unit | None = None


class _Activations:
    """The variables bound for CEL, built only when a rule needs them, and at most once."""

    def __init__(
        self, ruleset: CompiledRuleset, resolution: Resolution, context: Any, now: datetime
    ) -> None:
        self._engine, self._context, self._now = ruleset.engine, context, now
        visitor, account = resolution.visitor, resolution.account
        self._visitor = visitor.traits if visitor else _EMPTY
        self._account = account.traits if account else _EMPTY
        self._profile: Any = None
        self._contextual: Any = None

    def values(self, *, profile: bool) -> dict[str, Any]:
        """The raw maps the profile's activation is built from, by variable name; without
        `profile`, the contextual one's (empty profile maps)."""
        if profile:
            return {"visitor": self._visitor, "account": self._account, "context": self._context}
        return {"visitor": _EMPTY, "account": _EMPTY, "context": self._context}

    def values_for(self, person: Person | None) -> dict[str, Any]:
        """The raw maps of the person decided for (None), or of another the ids name."""
        if person is None:
            return self.values(profile=True)
        account = person.account.traits if person.account else _EMPTY
        return {"visitor": person.visitor.traits, "account": account, "context": self._context}

    def profile(self) -> Any:
        if self._profile is None:
            self._profile = self._engine.activation(
                self._visitor, self._account, self._context, self._now
            )
        return self._profile

    def for_person(self, person: Person | None) -> Any:
        """The activation of the person decided for (None), or of another person the ids
        name, over their own traits and account, for suppression rules."""
        if person is None:
            return self.profile()
        account = person.account.traits if person.account else _EMPTY
        return self._engine.activation(person.visitor.traits, account, self._context, self._now)

    def contextual(self) -> Any:
        """Without consent, rules see empty profile maps, whatever they reference."""
        if self._contextual is None:
            self._contextual = self._engine.activation(_EMPTY, _EMPTY, self._context, self._now)
        return self._contextual


def select_placement(ruleset: CompiledRuleset, request: DecideRequest) -> CompiledPlacement:
    """Check the request against the ruleset, before any profile lookup is spent on it: the
    placement, the channel, the consent signal, and context values both engines can take.
    Every way into `decide` (the API, rule tests, explain) passes here, once."""
    placement = ruleset.placements.get(request.placement)
    if placement is None:
        known = ", ".join(sorted(ruleset.placements))
        likely = meant(request.placement, ruleset.placements)
        raise UnknownPlacement(
            "placement", f"not a placement of the loaded rules{likely}; known: {known}"
        )
    if request.channel is not None and request.channel != placement.channel:
        if request.channel not in ruleset.channels:
            known = ", ".join(sorted(ruleset.channels))
            raise InvalidRequest("channel", f"not a channel of the loaded rules; known: {known}")
        raise InvalidRequest(
            "channel",
            f"placement {placement.id!r} serves the {placement.channel} channel, "
            f"not {request.channel}",
        )
    channel = placement.channel
    if not ruleset.policy[channel].takes_banner(channel) and granting(request.consent):
        raise InvalidRequest("consent", no_banner(channel, "decisions"))
    problem = json_value_problem(request.context, "context") if request.context else None
    if problem is not None:
        raise InvalidRequest(*problem)
    return placement


def decide(
    ruleset: CompiledRuleset,
    placement: CompiledPlacement,
    request: DecideRequest,
    resolution: Resolution,
    *,
    now: datetime,
    gpc: bool,
    decision_id: str,
) -> Evaluated:
    """The decision for `request`, whose `placement` select_placement found in `ruleset`."""
    channel = placement.channel
    reasons = list(resolution.notes)
    consent = check_consent(ruleset.policy[channel], resolution, request.consent, gpc=gpc, now=now)
    reasons.append(consent.reason)

    activations = _Activations(ruleset, resolution, request.context, now)
    suppression = check_suppression(
        ruleset.policy[channel], placement, resolution, consent, activations
    )
    segment: str | None = None
    passed: str | None = None  # the highest-priority match, passed over (choice)
    outcomes: tuple[SegmentOutcome, ...] = ()
    if suppression is not None:
        reasons.append(suppression.reason)
    else:
        activation = activations.profile() if consent.granted else activations.contextual()
        plan = ruleset.consented if consent.granted else ruleset.contextual
        choice = placement.choice
        if plan is None or request.explain:
            segment, passed, outcomes = _match(
                ruleset,
                activation,
                consent.granted,
                everything=request.explain,
                wanted=placement.variants if choice is not None else None,
            )
        else:
            values = partial(activations.values, profile=consent.granted)
            segment, outcomes = first_match(ruleset.segments, plan, activation, values)
            if choice is not None and segment is not None and segment not in placement.variants:
                segment, passed, outcomes = _with_variant(
                    choice, segment, outcomes, activation, values, consented=consent.granted
                )
    # the segment is known: the placement's experiment, if it buckets the segment, decides
    # what is served (consent and suppression came first: a suppressed decision has no arm)
    variant = placement.variants.get(segment) if segment else None
    experiment = placement.experiment
    bucketed = (
        bucket(
            experiment,
            segment,
            resolution,
            placement.default,
            consented=consent.granted,
            cookie=request.identity.visitor_id,
        )
        if experiment is not None and segment is not None and variant is not None
        else None
    )
    assigned = bucketed if isinstance(bucketed, Assignment) else None
    if passed is not None:
        reasons.append(
            Reason(
                ReasonCode.SEGMENT_PASSED_OVER,
                f"{passed} is the highest-priority match; {placement.id} has no variant for it "
                "and chooses the first segment with one",
            )
        )
    if suppression is None:
        reasons.append(_segment_reason(placement, segment, assigned, passed is not None))
    if isinstance(bucketed, Assignment):
        reasons.append(bucketed.reason)
        variant = bucketed.variant if bucketed.arm != HOLDOUT else None
    elif bucketed is not None:
        reasons.append(bucketed)  # why it was not bucketed
    served = variant or placement.default
    if placement.dimensions:
        dimensions = placement.dimensions.get(served.id)
        if dimensions is not None:
            visitor = resolution.visitor if consent.granted else None
            role = visitor.traits.get(ROLE) if visitor is not None else None
            served = dressed(dimensions, served, request.context.get(LANGUAGE), role)
    decision = Decision(
        decision_id=decision_id,
        ruleset=ruleset.version,
        placement=placement.id,
        channel=channel,
        segment=segment,
        variant=served,
        personalized=variant is not None,
        suppressed=suppression is not None,
        reasons=tuple(reasons),
        experiment=assigned.experiment if assigned else None,
        arm=assigned.arm if assigned else None,
        explain=_explain(ruleset, outcomes) if request.explain else None,
        bucket=_bucket(assigned) if request.explain and assigned else None,
    )
    return Evaluated(decision, outcomes, suppression, assigned.unit if assigned else None)


def _bucket(assigned: Assignment) -> Bucket:
    return Bucket(
        assigned.experiment, assigned.unit.kind, assigned.point, assigned.holdout, assigned.arm
    )


def _segment_reason(
    placement: CompiledPlacement,
    segment: str | None,
    assigned: Assignment | None,
    chosen: bool = False,
) -> Reason:
    """`chosen`: `segment` is the first match with a variant, another was passed over."""
    if segment is None:
        return Reason(ReasonCode.SEGMENT_NONE, "no segment matched; the default variant is served")
    match = "match with a variant here" if chosen else "match"
    if assigned is not None and assigned.arm != CONTROL:
        return Reason(
            ReasonCode.SEGMENT_MATCHED,
            f"{segment} is the highest-priority {match}; experiment {assigned.experiment} "
            "decides what is served",
        )
    if segment in placement.variants:
        return Reason(
            ReasonCode.SEGMENT_MATCHED,
            f"{segment} is the highest-priority {match}; its variant is served",
        )
    return Reason(
        ReasonCode.SEGMENT_NO_VARIANT,
        f"{segment} is the highest-priority match; {placement.id} has no variant for it, "
        "so the default is served",
    )


def _match(
    ruleset: CompiledRuleset,
    activation: Any,
    consented: bool,
    *,
    everything: bool,
    wanted: Mapping[str, object] | None = None,
) -> tuple[str | None, str | None, tuple[SegmentOutcome, ...]]:
    """Each segment alone, in order, up to the first match (every one, if `everything`):
    the winner, the match passed over, and every outcome. With `wanted` (the segments the
    placement has a variant for), the first match that is not wanted is passed over, and
    after it only wanted segments are evaluated, up to the first match among them; when
    none matches, the one passed over wins after all."""
    winner: str | None = None
    passed: int | None = None  # its index in outcomes
    outcomes: list[SegmentOutcome] = []
    for segment in ruleset.segments:
        if winner is not None and not everything:
            break
        if passed is not None and not everything and segment.id not in (wanted or ()):
            continue
        if not consented and segment.condition.needs_profile:
            outcomes.append(SegmentOutcome(segment.id, segment.priority, "skipped_consent"))
            continue
        try:
            matched = segment.condition.program.matches(activation)
        except CelEvalError as exc:
            outcomes.append(SegmentOutcome(segment.id, segment.priority, "error", str(exc)))
            continue
        outcome: Outcome = "matched" if matched else "not_matched"
        if matched and winner is None:
            if wanted is None or segment.id in wanted:
                winner = segment.id
            elif passed is None:
                passed, outcome = len(outcomes), "passed_over"
        outcomes.append(SegmentOutcome(segment.id, segment.priority, outcome))
    if passed is None:
        return winner, None, tuple(outcomes)
    if winner is None:  # no segment with a variant matched: as first_match
        outcomes[passed] = msgspec.structs.replace(outcomes[passed], outcome="matched")
        return outcomes[passed].segment, None, tuple(outcomes)
    return winner, outcomes[passed].segment, tuple(outcomes)


def _with_variant(
    choice: Choice,
    first: str,
    outcomes: tuple[SegmentOutcome, ...],
    activation: Any,
    values: Callable[[], Mapping[str, Any]],
    *,
    consented: bool,
) -> tuple[str, str | None, tuple[SegmentOutcome, ...]]:
    """After the first match `first` (the last of `outcomes`), which the placement has no
    variant for: the first match among the segments it has one for, along their own plan,
    and the outcomes of those after `first`, as _match gives them."""
    plan = choice.consented if consented else choice.contextual
    assert plan is not None  # planned with the ruleset's plans, which there are
    winner, found = first_match(choice.segments, plan, activation, values)
    # those before `first` did not match when the ruleset's plan evaluated them (nor did
    # they again): only what comes after it is new
    after = len(outcomes) - 1
    later = tuple(o for o, at in zip(found, choice.positions, strict=False) if at > after)
    if winner is None:
        return first, None, outcomes + later
    passed = msgspec.structs.replace(outcomes[-1], outcome="passed_over")
    return winner, first, (*outcomes[:-1], passed, *later)


def _explain(
    ruleset: CompiledRuleset, outcomes: tuple[SegmentOutcome, ...]
) -> tuple[SegmentOutcome, ...]:
    """Every segment in priority order; those never reached say so; those that use named
    conditions, with the condition as it runs."""
    seen = {o.segment: o for o in outcomes}
    explained = []
    for s in ruleset.segments:
        outcome = seen.get(s.id) or SegmentOutcome(s.id, s.priority, "not_evaluated")
        if s.condition.expanded is not None:
            outcome = msgspec.structs.replace(outcome, condition=s.condition.expanded)
        explained.append(outcome)
    return tuple(explained)
