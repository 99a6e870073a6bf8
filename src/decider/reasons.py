"""Why a decision came out as it did: one closed set of reason codes, each with its meaning.

Every reason the service gives is a member of `ReasonCode`, defined here and nowhere else;
callers may branch on the code, which is stable, never on the message, which is for people.
The README's table of reasons is checked against this enum by the test suite.
"""

from __future__ import annotations

import msgspec

from decider.described import Described


class ReasonCode(Described):
    """A stable reason code, `family.name`; `meaning` says in one line what it tells."""

    @property
    def family(self) -> str:
        """identity, consent, suppressed, segment or experiment."""
        return self.value.partition(".")[0]

    IDENTITY_VISITOR = "identity.visitor", "the request's visitor_id names a known visitor"
    IDENTITY_STITCHED = (
        "identity.stitched",
        "a user_id or email hash is linked to a visitor, whose profile is used",
    )
    IDENTITY_MERGED = (
        "identity.merged",
        "the anonymous visitor_id is read as the stitched visitor: a known id wins",
    )
    IDENTITY_CONFLICT = (
        "identity.conflict",
        "the ids name different people: one is decided for (on email, the email hash's "
        "owner), all are checked for suppression",
    )
    IDENTITY_UNKNOWN = "identity.unknown", "no profile is known for an id the request gave"
    IDENTITY_DANGLING = "identity.dangling", "an id links to a visitor whose profile is missing"
    IDENTITY_ACCOUNT = "identity.account", "the B2B account whose traits the rules read"
    IDENTITY_ACCOUNT_CONFLICT = (
        "identity.account_conflict",
        "the visitor's own account wins over the request's account_id",
    )
    IDENTITY_STALE = (
        "identity.stale",
        "the profile source failed; cached data past its TTL was served",
    )
    IDENTITY_UNCHECKED = (
        "identity.unchecked",
        "the profile source failed for an id weaker than the one decided for, with nothing "
        "cached: whom it names is not checked",
    )
    IDENTITY_UNAVAILABLE = (
        "identity.unavailable",
        "the profile source failed with nothing cached: the profile is unavailable",
    )
    CONSENT_NOT_REQUIRED = "consent.not_required", "the channel's policy requires no purpose"
    CONSENT_GRANTED = "consent.granted", "every purpose the channel requires is granted"
    CONSENT_DENIED = (
        "consent.denied",
        "a required purpose is not granted (or Sec-GPC withdrew it): profile rules are skipped",
    )
    CONSENT_UNKNOWN = (
        "consent.unknown",
        "the profile is unavailable, so consent is unknown and counts as not granted",
    )
    SUPPRESSED_PROFILE_UNAVAILABLE = (
        "suppressed.profile_unavailable",
        "the channel suppresses when the profile, and so opt-outs, cannot be checked",
    )
    SUPPRESSED_FLAG = (
        "suppressed.flag",
        "a person the ids name (or their account) carries a suppressing flag",
    )
    SUPPRESSED_RULE = (
        "suppressed.rule",
        "a suppression rule's condition holds for a person the ids name",
    )
    SUPPRESSED_NO_CONSENT = (
        "suppressed.no_consent",
        "the channel sends only with the consent it requires, and it is not granted",
    )
    SUPPRESSED_RULE_ERROR = (
        "suppressed.rule_error",
        "a suppression rule failed to evaluate, so it suppresses (fail closed)",
    )
    SEGMENT_MATCHED = (
        "segment.matched",
        "the highest-priority matching segment; the placement's variant for it is served "
        "(unless an experiment reason says otherwise)",
    )
    SEGMENT_NO_VARIANT = (
        "segment.no_variant",
        "a segment matched but the placement has no variant for it: the default is served",
    )
    SEGMENT_PASSED_OVER = (
        "segment.passed_over",
        "the highest-priority match has no variant here, and the placement chooses the first "
        "segment with one: the segment is the highest-priority match that has one",
    )
    SEGMENT_NONE = "segment.none", "no segment matched: the default variant is served"
    EXPERIMENT_HOLDOUT = (
        "experiment.holdout",
        "in the holdout of the placement's experiment: the default variant is served, and the "
        "segment is still the person's",
    )
    EXPERIMENT_CONTROL = (
        "experiment.control",
        "in the control arm of the placement's experiment: the segment's own variant is served",
    )
    EXPERIMENT_TREATMENT = (
        "experiment.treatment",
        "in a treatment arm of the placement's experiment: the arm's variant is served",
    )
    EXPERIMENT_NOT_BUCKETED = (
        "experiment.not_bucketed",
        "the placement runs an experiment, but without the channel's consent (or anyone known) "
        "nobody is bucketed: served as without it",
    )


class Reason(msgspec.Struct, frozen=True, gc=False):
    """A stable code for machines and a sentence for people."""

    code: ReasonCode
    message: str
