"""Identity stitching: the ids a request carries become one visitor and its account.

Known identities win over the anonymous cookie: user_id, then email_sha256, then visitor_id.
The visitor's own account link wins over a request's account_id (which often comes from a
reverse-IP guess). Every lookup goes through a cache, and the whole resolution shares one
time budget; any lookup that fails with nothing stale to serve makes the profile
"unavailable", which the consent gate treats as not granted.
"""

from __future__ import annotations

import asyncio

from decider.errors import ProfileSourceError
from decider.model import Identity
from decider.profile import (
    ALIAS_KINDS,
    AccountProfile,
    AliasKind,
    Resolution,
    Status,
    VisitorProfile,
)
from decider.profiles.cache import CacheSettings, ProfileCache
from decider.profiles.sources.base import ProfileSource
from decider.reasons import Reason, ReasonCode


class Resolver:
    """Stitches identities over three caches (visitors, accounts, aliases) of one source.

    `budget`: seconds all lookups of one resolution may take together."""

    def __init__(
        self,
        source: ProfileSource,
        *,
        budget: float,
        cache: CacheSettings,
    ) -> None:
        self.budget = budget
        self.visitors: ProfileCache[str, VisitorProfile] = ProfileCache(source.visitor, cache)
        self.accounts: ProfileCache[str, AccountProfile] = ProfileCache(source.account, cache)
        self.aliases: ProfileCache[tuple[AliasKind, str], str] = ProfileCache(
            lambda key: source.alias(*key), cache
        )

    async def resolve(self, identity: Identity) -> Resolution:
        deadline = asyncio.get_running_loop().time() + self.budget
        try:
            return await self._resolve(identity, deadline)
        except ProfileSourceError as exc:
            return Resolution(
                "unavailable", notes=(Reason(ReasonCode.IDENTITY_UNAVAILABLE, str(exc)),)
            )

    async def _resolve(self, identity: Identity, deadline: float) -> Resolution:
        notes: list[Reason] = []
        found, stale = await self._visitors(identity, deadline, notes)
        visitor, linked = _stitch(identity, found, notes)
        account, account_stale = await self._account(identity, visitor, deadline, notes)
        if stale or account_stale:
            notes.append(
                Reason(
                    ReasonCode.IDENTITY_STALE, "the profile source failed; cached data served stale"
                )
            )
        status: Status = "resolved" if visitor or account else "unknown"
        return Resolution(status, visitor, account, stale or account_stale, tuple(notes), linked)

    async def _visitors(
        self, identity: Identity, deadline: float, notes: list[Reason]
    ) -> tuple[list[tuple[str, VisitorProfile]], bool]:
        """Every visitor the request's ids name, strongest id first. Every id is looked up,
        so each person named is checked for suppression: an unsubscribed email hash must not
        hide behind a user id that wins the stitch."""
        found: list[tuple[str, VisitorProfile]] = []
        stale = False
        for kind in ALIAS_KINDS:
            value = getattr(identity, kind)
            if value is None:
                continue
            link = await self.aliases.get((kind, value), deadline)
            stale |= link.stale
            if link.value is None:
                notes.append(
                    Reason(ReasonCode.IDENTITY_UNKNOWN, f"no visitor is linked to this {kind}")
                )
                continue
            hit = await self.visitors.get(link.value, deadline)
            stale |= hit.stale
            if hit.value is None:
                notes.append(
                    Reason(
                        ReasonCode.IDENTITY_DANGLING,
                        f"{kind} links to visitor {link.value}, not found",
                    )
                )
            else:
                found.append((kind, hit.value))
        if identity.visitor_id:
            hit = await self.visitors.get(identity.visitor_id, deadline)
            stale |= hit.stale
            if hit.value is not None:
                found.append(("visitor_id", hit.value))
            elif not found:
                notes.append(Reason(ReasonCode.IDENTITY_UNKNOWN, "no profile for this visitor_id"))
        return found, stale

    async def _account(
        self,
        identity: Identity,
        visitor: VisitorProfile | None,
        deadline: float,
        notes: list[Reason],
    ) -> tuple[AccountProfile | None, bool]:
        account_id = visitor.account_id if visitor and visitor.account_id else identity.account_id
        if visitor and visitor.account_id and identity.account_id not in (None, visitor.account_id):
            notes.append(
                Reason(
                    ReasonCode.IDENTITY_ACCOUNT_CONFLICT,
                    f"the visitor's own account {visitor.account_id} wins over the request's "
                    f"account_id {identity.account_id}",
                )
            )
        if not account_id:
            return None, False
        hit = await self.accounts.get(account_id, deadline)
        if hit.value is None:
            notes.append(
                Reason(ReasonCode.IDENTITY_UNKNOWN, f"no profile for account {account_id}")
            )
        else:
            notes.append(Reason(ReasonCode.IDENTITY_ACCOUNT, f"account {hit.value.id}"))
        return hit.value, hit.stale


def _stitch(
    identity: Identity, found: list[tuple[str, VisitorProfile]], notes: list[Reason]
) -> tuple[VisitorProfile | None, frozenset[str]]:
    """The strongest id's visitor, and the flags of any other visitor the ids named."""
    if not found:
        return None, frozenset()
    kind, visitor = found[0]
    if kind == "visitor_id":
        notes.append(Reason(ReasonCode.IDENTITY_VISITOR, f"visitor {visitor.id}"))
    else:
        notes.append(
            Reason(ReasonCode.IDENTITY_STITCHED, f"{kind} is linked to visitor {visitor.id}")
        )
    if identity.visitor_id and identity.visitor_id != visitor.id:
        notes.append(
            Reason(
                ReasonCode.IDENTITY_MERGED,
                f"visitor_id {identity.visitor_id} is read as {visitor.id}: "
                f"the known {kind} wins over the anonymous id",
            )
        )
    linked: frozenset[str] = frozenset()
    others = {v.id: (k, v) for k, v in found[1:] if v.id != visitor.id}
    for other_kind, other in others.values():
        linked |= other.flags
        if other_kind != "visitor_id":
            notes.append(
                Reason(
                    ReasonCode.IDENTITY_CONFLICT,
                    f"{other_kind} names another visitor ({other.id}); {visitor.id} is used, "
                    "and both are checked for suppression",
                )
            )
    return visitor, linked
