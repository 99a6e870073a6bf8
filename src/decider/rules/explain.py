"""Offline decisions and how they read: what `decider explain` and `decider test` print.

An offline decision runs the server's own `decide` on a profile given by hand (no store),
with everything evaluated so the trace is complete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from decider.engine import decide, select_placement
from decider.experiments import CONTROL, HOLDOUT
from decider.model import ConsentSignal, DecideRequest, Decision, Identity
from decider.profile import AccountProfile, Resolution, VisitorProfile, normalized
from decider.reasons import ReasonCode
from decider.ruleset import CompiledRuleset
from decider.traits import TraitSchema

UNAVAILABLE = "unavailable"
_GRANTED = (ReasonCode.CONSENT_GRANTED, ReasonCode.CONSENT_NOT_REQUIRED)

OUTCOME_WORDS = {
    "matched": "MATCHED",
    "passed_over": "MATCHED, passed over: no variant here",
    "not_matched": "not matched",
    "skipped_consent": "skipped: no consent to read the profile",
    "error": "error",
    "not_evaluated": "not evaluated",
}


class Fixture(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A profile given by hand: a visitor, an account, or both."""

    visitor: VisitorProfile | None = None
    account: AccountProfile | None = None


def resolution_of(
    profile: Fixture | None, *, unavailable: bool = False, schema: TraitSchema | None = None
) -> Resolution:
    """A profile as the resolver would have stitched it (unavailable: the source failed),
    its values held to the rules a profile source holds them to (TraitError otherwise)."""
    if unavailable:
        return Resolution("unavailable")
    if profile is None or (profile.visitor is None and profile.account is None):
        return Resolution("unknown")
    visitor = normalized(profile.visitor, schema) if profile.visitor else None
    account = normalized(profile.account, schema) if profile.account else None
    return Resolution("resolved", visitor, account)


def offline_decision(
    ruleset: CompiledRuleset,
    resolution: Resolution,
    *,
    placement: str,
    now: datetime,
    channel: str | None = None,
    context: dict[str, Any] | None = None,
    consent: tuple[str, ...] | None = None,
    gpc: bool = False,
    decision_id: str = "offline",
) -> Decision:
    """Raises InvalidRequest for an unknown placement or a channel it does not serve."""
    request = DecideRequest(
        placement=placement,
        identity=Identity(visitor_id=resolution.visitor.id if resolution.visitor else "offline"),
        channel=channel,
        context=context or {},
        consent=ConsentSignal(consent) if consent is not None else None,
        explain=True,
    )
    chosen = select_placement(ruleset, request)
    evaluated = decide(
        ruleset, chosen, request, resolution, now=now, gpc=gpc, decision_id=decision_id
    )
    return evaluated.decision


def trace_lines(decision: Decision, indent: str = "  ") -> list[str]:
    """The reasons, then every segment in priority order with its outcome, then the bucket."""
    lines = [f"{indent}reasons:"]
    lines += [f"{indent}  - {r.code}: {r.message}" for r in decision.reasons]
    lines += segment_lines(decision, indent)
    bucket = bucket_line(decision)
    return [*lines, f"{indent}experiment: {bucket}"] if bucket else lines


def bucket_line(decision: Decision) -> str | None:
    """How the placement's experiment bucketed the decision (its unit's kind, never its id),
    or why it did not; None for a decision no experiment was about."""
    bucket = decision.bucket
    if bucket is not None:
        side = "<" if bucket.point < bucket.holdout else ">="
        return (
            f"{bucket.experiment}, by {bucket.unit_kind}: holdout point {bucket.point:.4f} "
            f"{side} {bucket.holdout:.4g} (the {bucket.holdout * 100:.4g}% holdout): "
            f"arm {bucket.arm}"
        )
    for reason in decision.reasons:
        if reason.code == ReasonCode.EXPERIMENT_NOT_BUCKETED:
            return f"not bucketed: {reason.message}"
    return None


def segment_lines(decision: Decision, indent: str = "  ") -> list[str]:
    lines = [f"{indent}segments, in priority order:"]
    width = max((len(o.segment) for o in decision.explain or ()), default=0)
    won = False  # the first match wins; a lower one is told apart from it
    for o in decision.explain or ():
        words = OUTCOME_WORDS[o.outcome] + (f" ({o.error})" if o.error else "")
        if o.outcome == "matched":
            words = "matched, below the winner" if won else words
            won = True
        lines.append(f"{indent}  {o.priority:>5}  {o.segment:<{width}}  {words}")
        if o.condition is not None:  # it uses named conditions: what runs
            lines.append(f"{indent}         when {' '.join(o.condition.split())}")
    return lines


def render(decision: Decision) -> str:
    """One placement's decision, for a marketer: verdicts, segments, and the content chosen."""
    by_family = {r.code.family: r for r in decision.reasons}
    consent, suppression = by_family.get("consent"), by_family.get("suppressed")
    lines = [f"{decision.placement} ({decision.channel})"]
    if consent is not None:
        verdict = "granted" if consent.code in _GRANTED else "NOT granted"
        lines.append(f"  consent:     {verdict}: {consent.message}")
    lines.append(
        f"  suppression: {'SUPPRESSED: ' + suppression.message if suppression else 'none'}"
    )
    identity = [r.message for r in decision.reasons if r.code.family == "identity"]
    if identity:
        lines.insert(1, f"  profile:     {'; '.join(identity)}")
    lines += segment_lines(decision)
    bucket = bucket_line(decision)
    if bucket is not None:
        lines.append(f"  experiment:  {bucket}")
    chosen = f"segment {decision.segment}" if decision.segment else "no segment"
    kind = "personalized" if decision.personalized else "default"
    if decision.arm is not None and decision.arm != CONTROL:
        kind = "holdout: the default" if decision.arm == HOLDOUT else f"treatment {decision.arm}"
    dressed = [
        f"{name} {value}"
        for name, value in (
            ("language", decision.variant.language),
            ("role", decision.variant.role),
        )
        if value is not None
    ]
    lines.append(f"  variant: {'; '.join((f'{decision.variant.id} ({kind}', chosen, *dressed))})")
    width = max(len(slot) for slot in decision.variant.content)
    lines += [f"    {slot:<{width}}  {text}" for slot, text in decision.variant.content.items()]
    return "\n".join(lines)
