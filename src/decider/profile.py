"""Profile records, as every profile source serves them, and the result of stitching.

Rules see `traits` only: `visitor` is the visitor's traits, `account` the account's. Timestamps
inside traits are RFC 3339 strings (read them with CEL's `timestamp()`), because the C++ CEL
runtime refuses a datetime nested inside a map and strings behave the same on both engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec

from decider.model import Ident, Instant, Sha256Hex, json_value_problem
from decider.reasons import Reason


class ConsentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A stored grant: what it is for, on what legal basis, from when, until when."""

    purpose: str
    basis: str
    granted_at: Instant
    expires_at: Instant | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.granted_at <= now and (self.expires_at is None or now < self.expires_at)


class VisitorProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One person, known by a visitor id, linked to the ids that stitch to it and to an account."""

    id: Ident
    account_id: Ident | None = None
    user_ids: tuple[Ident, ...] = ()
    email_sha256: tuple[Sha256Hex, ...] = ()
    consent: tuple[ConsentRecord, ...] = ()
    flags: frozenset[str] = frozenset()
    traits: dict[str, Any] = {}


class AccountProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A B2B account (company): firmographics, stage, intent, committee coverage."""

    id: Ident
    flags: frozenset[str] = frozenset()
    traits: dict[str, Any] = {}


P = TypeVar("P", VisitorProfile, AccountProfile)


def stored(profile: P) -> P:
    """The profile as sources keep it: a JSONL import record without its `kind` tag."""
    if type(profile) in (VisitorProfile, AccountProfile):
        return profile
    # an import record subclasses the profile it carries
    return type(profile).__mro__[1](**msgspec.structs.asdict(profile))  # type: ignore[no-any-return]


def traits_problem(profile: VisitorProfile | AccountProfile) -> str | None:
    """Why a profile's traits cannot be given to the rules, or None."""
    problem = json_value_problem(profile.traits, "traits")
    return f"{problem[0]}: {problem[1]}" if problem else None


Status = Literal["resolved", "unknown", "unavailable"]
# the ids that link to a visitor; looked up in this order, strongest first
AliasKind = Literal["user_id", "email_sha256"]
ALIAS_KINDS: tuple[AliasKind, ...] = ("user_id", "email_sha256")


class Resolution(msgspec.Struct, frozen=True):
    """Who is asking, after stitching.

    `unknown`: no profile matches the ids given (rules see empty maps).
    `unavailable`: the source failed with nothing stale to serve; consent is unknown, so
    it counts as not granted.
    """

    status: Status
    visitor: VisitorProfile | None = None
    account: AccountProfile | None = None
    stale: bool = False
    notes: tuple[Reason, ...] = ()
    linked_flags: frozenset[str] = frozenset()

    @property
    def flags(self) -> frozenset[str]:
        """Flags of the visitor, its account, and any other visitor the request's ids named."""
        flags = self.linked_flags
        if self.visitor is not None:
            flags |= self.visitor.flags
        if self.account is not None:
            flags |= self.account.flags
        return flags


visitor_decoder = msgspec.json.Decoder(VisitorProfile)
account_decoder = msgspec.json.Decoder(AccountProfile)
