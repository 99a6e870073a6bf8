"""Consent and suppression: decided before any segment rule that reads profile data runs.

Consent is fail-closed: a profile that could not be fetched, an expired record, a basis the
channel does not accept, or a purpose withdrawn by `Sec-GPC: 1` all mean "not granted".

Suppression is checked whenever profile data is at hand, with or without personalization
consent, for every person the request's ids name: honouring an unsubscribe or a legal hold is
a duty, not a use of the data for marketing. A suppression rule that fails to evaluate
suppresses (fail closed). A channel may also refuse to send at all without consent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import msgspec

from decider.index import ruled_out
from decider.model import ConsentSignal
from decider.profile import Person, Resolution, Status
from decider.reasons import Reason, ReasonCode
from decider.ruleset import CelEvalError, ChannelPolicy, CompiledPlacement, CompiledSuppression


def granting(signal: ConsentSignal | None) -> bool:
    """Whether a consent signal grants anything: on a channel that takes no banner only an
    empty list, everything withdrawn, is read (honouring an opt-out is always allowed)."""
    return signal is not None and bool(signal.purposes)


def no_banner(channel: str, what: str) -> str:
    """Why a consent signal is refused on `channel` (its `what`: decisions, outcomes)."""
    return (
        f"{channel} {what} use stored consent records only: a `consent` may only withdraw "
        f"everything (`[]`) there (the rules' consent policy for {channel} would need "
        "`banner: true` to take a grant)"
    )


class ConsentVerdict(msgspec.Struct, frozen=True, gc=False):
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
        source = "stored consent records" if resolution.visitor else "any profile (none is known)"
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


class Suppressed(msgspec.Struct, frozen=True, gc=False):
    """Why a request must not get the placement's message; `rule` is None when it is the
    channel's policy (an unavailable profile), `error` when the rule failed to evaluate."""

    reason: Reason
    rule: str | None = None
    error: bool = False


class Bindings(Protocol):
    """What a `when` rule reads for one person (None: the person decided for)."""

    def for_person(self, person: Person | None) -> Any:
        """The CEL activation."""

    def values_for(self, person: Person | None) -> Mapping[str, Any]:
        """The raw maps the activation is built from, by variable name (for guards)."""


def check_suppression(
    policy: ChannelPolicy,
    placement: CompiledPlacement,
    resolution: Resolution,
    consent: ConsentVerdict,
    bindings: Bindings,
) -> Suppressed | None:
    """The first reason this request must not get the placement's message, or None.

    Every person the ids name is checked, flags and `when` rules alike: the person decided
    for and each of `resolution.others`. Last, a channel whose policy says
    `send_requires_consent` sends nothing without the consent it requires. A channel that
    suppresses when the profile is unavailable also does when any id is unchecked (its
    person might be the one opted out)."""
    unchecked = resolution.status == "unavailable" or resolution.unchecked
    if unchecked and policy.suppress_if_profile_unavailable:
        return Suppressed(
            Reason(
                ReasonCode.SUPPRESSED_PROFILE_UNAVAILABLE,
                f"{placement.channel} suppresses when suppression status cannot be checked",
            )
        )
    people: list[tuple[Person | None, frozenset[str]]] = [(None, resolution.flags)]
    people += [(other, other.flags) for other in resolution.others]
    for rule in placement.suppressions:
        for person, flags in people:
            held = _held(rule, person, flags, resolution.status, bindings)
            if held is not None:
                return held
    if policy.send_requires_consent and not consent.granted:
        return Suppressed(
            Reason(
                ReasonCode.SUPPRESSED_NO_CONSENT,
                f"{placement.channel} sends only with {', '.join(policy.purposes)} consent, "
                "not granted here",
            )
        )
    return None


def _held(
    rule: CompiledSuppression,
    person: Person | None,
    flags: frozenset[str],
    status: Status,
    bindings: Bindings,
) -> Suppressed | None:
    """Whether `rule` holds for one person (None: the person decided for). A `when` rule
    whose guards the raw values prove false is false without a call into CEL (it could
    not have failed either: a false conjunct makes `&&` false whatever the rest gives)."""
    if not rule.flags.isdisjoint(flags):
        whose = "profile" if person is None else "another person the ids name"
        message = f"{rule.id}: {whose} is flagged {', '.join(sorted(rule.flags & flags))}"
        return Suppressed(Reason(ReasonCode.SUPPRESSED_FLAG, message), rule.id)
    condition = rule.condition
    if condition is None:
        return None
    if condition.needs_profile and person is None and status != "resolved":
        return None
    if not condition.needs_profile and person is not None:
        return None  # reads only the request: decided once, for the person decided for
    if condition.guards and ruled_out(condition.guards, bindings.values_for(person)):
        return None
    try:
        if condition.program.matches(bindings.for_person(person)):
            extra = "" if person is None else " (another person the ids name)"
            message = f"{rule.id}: {rule.description}{extra}"
            return Suppressed(Reason(ReasonCode.SUPPRESSED_RULE, message), rule.id)
    except CelEvalError as exc:
        message = f"{rule.id} could not be evaluated ({exc}); fail closed"
        return Suppressed(Reason(ReasonCode.SUPPRESSED_RULE_ERROR, message), rule.id, error=True)
    return None
