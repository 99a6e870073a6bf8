"""Profile records, as every profile source serves them, and the result of stitching.

Rules see `traits` only: `visitor` is the visitor's traits, `account` the account's. Timestamps
inside traits are RFC 3339 strings (read them with CEL's `timestamp()`), because the C++ CEL
runtime refuses a datetime nested inside a map and strings behave the same on both engines.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec

from decider.model import Ident, Instant, Sha256Hex
from decider.reasons import Reason
from decider.traits import TraitError, TraitSchema, check_flags, no_raw_email, normalize


# gc=False: no reference cycles (see decider.model)
class ConsentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A stored grant: what it is for, on what legal basis, from when, until when."""

    purpose: str
    basis: str
    granted_at: Instant
    expires_at: Instant | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.granted_at <= now and (self.expires_at is None or now < self.expires_at)


class VisitorProfile(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False
):
    """One person, known by a visitor id, linked to the ids that stitch to it and to an account."""

    id: Ident
    account_id: Ident | None = None
    user_ids: tuple[Ident, ...] = ()
    email_sha256: tuple[Sha256Hex, ...] = ()
    consent: tuple[ConsentRecord, ...] = ()
    flags: frozenset[str] = frozenset()
    traits: dict[str, Any] = {}


class AccountProfile(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False
):
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


def normalized(profile: P, schema: TraitSchema | None) -> P:
    """The profile as every source keeps it: traits checked and converted (decider.traits),
    flags the schema lists, no raw email in any field, each id once, no import tag. Raises
    TraitError naming the field, never repeating its value."""
    texts = [("id", profile.id), *(("flags", flag) for flag in profile.flags)]
    if isinstance(profile, VisitorProfile):
        texts.append(("account_id", profile.account_id or ""))
        texts += [(f"user_ids.{i}", u) for i, u in enumerate(profile.user_ids)]
        for i, record in enumerate(profile.consent):
            texts += [
                (f"consent.{i}.purpose", record.purpose),
                (f"consent.{i}.basis", record.basis),
            ]
            if record.expires_at is not None and record.expires_at <= record.granted_at:
                raise TraitError(f"consent.{i}.expires_at", "is not after granted_at")
        declared = schema.visitor if schema else None
        profile = msgspec.structs.replace(
            profile,
            user_ids=tuple(dict.fromkeys(profile.user_ids)),
            email_sha256=tuple(dict.fromkeys(profile.email_sha256)),
        )
    else:
        declared = schema.account if schema else None
    for path, text in texts:
        no_raw_email(text, path)
        if "\x00" in text:
            raise TraitError(path, "holds a NUL character")
    check_flags(profile.flags, schema)
    return msgspec.structs.replace(stored(profile), traits=normalize(profile.traits, declared))


Status = Literal["resolved", "unknown", "unavailable"]
# the ids that link to a visitor; looked up in this order, strongest first
AliasKind = Literal["user_id", "email_sha256"]
ALIAS_KINDS: tuple[AliasKind, ...] = ("user_id", "email_sha256")
IdKind = Literal["user_id", "email_sha256", "visitor_id"]


def aliases_of(visitor: VisitorProfile) -> list[tuple[AliasKind, str]]:
    """The user ids and email hashes that link to `visitor`."""
    keys: list[tuple[AliasKind, str]] = [("user_id", u) for u in visitor.user_ids]
    return keys + [("email_sha256", e) for e in visitor.email_sha256]


def without_aliases(
    visitor: VisitorProfile, keys: Collection[tuple[AliasKind, str]]
) -> VisitorProfile:
    """`visitor` with the given user ids and email hashes taken out (they moved)."""
    return msgspec.structs.replace(
        visitor,
        user_ids=tuple(u for u in visitor.user_ids if ("user_id", u) not in keys),
        email_sha256=tuple(e for e in visitor.email_sha256 if ("email_sha256", e) not in keys),
    )


class Person(msgspec.Struct, frozen=True, gc=False):
    """Someone a request's ids name besides the person decided for: checked for suppression
    (flags and `when` rules, over their own traits and account), never used otherwise."""

    visitor: VisitorProfile
    account: AccountProfile | None
    named_by: tuple[IdKind, ...]

    @property
    def flags(self) -> frozenset[str]:
        return self.visitor.flags | (self.account.flags if self.account else frozenset())


class Resolution(msgspec.Struct, frozen=True, gc=False):
    """Who is asking, after stitching: the visitor and account decided for, whose consent
    and traits may be used, and every other person the ids name.

    `unknown`: no profile matches the ids given (rules see empty maps).
    `unavailable`: the source failed with nothing stale to serve; consent is unknown, so
    it counts as not granted.
    `unchecked`: ids (weaker than the one decided for) whose lookup failed with nothing
    stale to serve: whom they name is not known, so their suppression is not checked.
    """

    status: Status
    visitor: VisitorProfile | None = None
    account: AccountProfile | None = None
    stale: bool = False
    notes: tuple[Reason, ...] = ()
    others: tuple[Person, ...] = ()
    unchecked: tuple[IdKind, ...] = ()

    @property
    def flags(self) -> frozenset[str]:
        """Flags of the visitor decided for and of its account."""
        flags: frozenset[str] = frozenset()
        if self.visitor is not None:
            flags |= self.visitor.flags
        if self.account is not None:
            flags |= self.account.flags
        return flags


visitor_decoder = msgspec.json.Decoder(VisitorProfile)
account_decoder = msgspec.json.Decoder(AccountProfile)
