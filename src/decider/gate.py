"""Consent and suppression: decided before any segment rule that reads profile data runs.

Consent is fail-closed: a profile that could not be fetched, an expired record, a basis the
channel does not accept, or a purpose withdrawn by `Sec-GPC: 1` all mean "not granted".

Suppression is checked whenever profile data is at hand, with or without personalization
consent: honouring an unsubscribe or a legal hold is a duty, not a use of the data for
marketing. A suppression rule that fails to evaluate suppresses (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from decider.model import ConsentSignal
from decider.profile import Resolution
from decider.reasons import Reason, ReasonCode
from decider.ruleset import CelEvalError, ChannelPolicy, CompiledPlacement


class ConsentVerdict(msgspec.Struct, frozen=True):
    granted: bool
    reason: Reason


def check_consent(
    policy: ChannelPolicy,
    resolution: Resolution,
    signal: ConsentSignal | None,
    *,
    gpc: bool,
    now: datetime,
) -> ConsentVerdict:
    """May this request's profile data be used on this channel?"""
    required = policy.purposes
    if not required:
        return ConsentVerdict(
            True, Reason(ReasonCode.CONSENT_NOT_REQUIRED, "this channel needs no consent")
        )
    if resolution.status == "unavailable":
        return ConsentVerdict(
            False,
            Reason(
                ReasonCode.CONSENT_UNKNOWN,
                "the profile could not be fetched, so consent is unknown and counts as not granted",
            ),
        )
    if signal is not None:
        granted = set(signal.purposes)
        source = "the consent banner"
    else:
        records = resolution.visitor.consent if resolution.visitor else ()
        granted = {r.purpose for r in records if r.basis in policy.bases and r.valid_at(now)}
        source = "stored consent records"
    revoked = set(policy.gpc_revokes) & granted if gpc else set()
    granted -= revoked
    missing = [p for p in required if p not in granted]
    if not missing:
        return ConsentVerdict(
            True, Reason(ReasonCode.CONSENT_GRANTED, f"{', '.join(required)} granted by {source}")
        )
    message = f"{', '.join(missing)} not granted by {source}"
    if revoked:
        message += f" (Sec-GPC: 1 withdraws {', '.join(sorted(revoked))})"
    return ConsentVerdict(False, Reason(ReasonCode.CONSENT_DENIED, message))


class Suppressed(msgspec.Struct, frozen=True):
    """Why a request must not get the placement's message; `rule` is None when it is the
    channel's policy (an unavailable profile), `error` when the rule failed to evaluate."""

    reason: Reason
    rule: str | None = None
    error: bool = False


def check_suppression(
    policy: ChannelPolicy,
    placement: CompiledPlacement,
    resolution: Resolution,
    profile_activation: Callable[[], Any],
) -> Suppressed | None:
    """The first reason this request must not get the placement's message, or None."""
    if resolution.status == "unavailable" and policy.suppress_if_profile_unavailable:
        return Suppressed(
            Reason(
                ReasonCode.SUPPRESSED_PROFILE_UNAVAILABLE,
                f"{placement.channel} suppresses when suppression status cannot be checked",
            )
        )
    flags = resolution.flags
    for rule in placement.suppressions:
        hit = sorted(rule.flags & flags)
        if hit:
            message = f"{rule.id}: profile is flagged {', '.join(hit)}"
            return Suppressed(Reason(ReasonCode.SUPPRESSED_FLAG, message), rule.id)
        if rule.condition is None:
            continue
        if rule.condition.needs_profile and resolution.status != "resolved":
            continue
        try:
            if rule.condition.program.matches(profile_activation()):
                message = f"{rule.id}: {rule.description}"
                return Suppressed(Reason(ReasonCode.SUPPRESSED_RULE, message), rule.id)
        except CelEvalError as exc:
            message = f"{rule.id} could not be evaluated ({exc}); fail closed"
            return Suppressed(
                Reason(ReasonCode.SUPPRESSED_RULE_ERROR, message), rule.id, error=True
            )
    return None
