"""Resolver: identity stitching over an in-memory profile source, one time budget per request."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import msgspec
import pytest

from decider.model import Channel, Identity
from decider.profile import AccountProfile, AliasKind, Resolution, VisitorProfile
from decider.profiles.cache import CacheSettings
from decider.profiles.resolver import Resolver
from decider.profiles.sources.memory import MemoryProfileSource

from .test_clock import collection

ADA_EMAIL = hashlib.sha256(b"ada@example.com").hexdigest()
NORTHWIND = AccountProfile(id="acc-northwind", traits={"name": "Northwind"})
GLOBEX = AccountProfile(id="acc-globex", traits={"name": "Globex"})
ADA = VisitorProfile(
    id="v-ada", account_id="acc-northwind", user_ids=("u-ada",), email_sha256=(ADA_EMAIL,)
)
BEN_EMAIL = hashlib.sha256(b"ben@example.com").hexdigest()
BEN = VisitorProfile(id="v-ben", account_id="acc-globex", email_sha256=(BEN_EMAIL,))
ANON = VisitorProfile(id="v-anon")


def resolve(resolver: Resolver, identity: Identity) -> Resolution:
    return asyncio.run(resolver.resolve(identity))


def codes(resolution: Resolution) -> list[str]:
    return [note.code for note in resolution.notes]


@pytest.fixture
def source() -> MemoryProfileSource:
    return MemoryProfileSource([ADA, BEN, ANON, NORTHWIND, GLOBEX])


def resolver_of(source: MemoryProfileSource, budget: float = 1.0, **cache: float) -> Resolver:
    return Resolver(source, budget=budget, cache=CacheSettings(**cache))  # type: ignore[arg-type]


@pytest.fixture
def resolver(source: MemoryProfileSource) -> Resolver:
    return resolver_of(source)


def test_user_id_wins_over_a_different_visitor_id(resolver: Resolver) -> None:
    """A known user_id decides the visitor, and the anonymous visitor_id is noted as merged."""
    found = resolve(resolver, Identity(visitor_id="v-anon", user_id="u-ada"))
    assert found.status == "resolved"
    assert found.visitor == ADA
    assert found.account == NORTHWIND
    assert "identity.stitched" in codes(found)
    assert "identity.merged" in codes(found)
    assert not found.stale


def test_user_id_matching_the_visitor_id_is_not_a_merge(resolver: Resolver) -> None:
    """When user_id and visitor_id name the same visitor, nothing is reported as merged."""
    found = resolve(resolver, Identity(visitor_id="v-ada", user_id="u-ada"))
    assert found.visitor == ADA
    assert "identity.merged" not in codes(found)


def test_email_hash_stitches_to_its_visitor(resolver: Resolver) -> None:
    """An email_sha256 linked to a visitor resolves that visitor and its account."""
    found = resolve(resolver, Identity(email_sha256=ADA_EMAIL))
    assert found.status == "resolved"
    assert (found.visitor, found.account) == (ADA, NORTHWIND)
    assert "identity.stitched" in codes(found)


def test_user_id_wins_over_an_email_hash_of_another_visitor(
    resolver: Resolver, source: MemoryProfileSource
) -> None:
    """user_id wins the stitch, but the email's own visitor is still checked: its flags count."""
    source.load([msgspec.structs.replace(BEN, flags=frozenset({"unsubscribed"}))])
    found = resolve(resolver, Identity(user_id="u-ada", email_sha256=BEN_EMAIL))
    assert (found.visitor, found.account) == (ADA, NORTHWIND)
    assert source.lookups["alias"] == 2
    assert "identity.conflict" in codes(found)
    (other,) = found.others
    assert (other.visitor.id, other.named_by, other.account) == ("v-ben", ("email_sha256",), GLOBEX)
    assert "unsubscribed" in other.flags
    assert "unsubscribed" not in found.flags


def test_unknown_user_id_falls_back_to_email_hash(resolver: Resolver) -> None:
    """An unknown user_id is noted, and the email_sha256 is tried next."""
    found = resolve(resolver, Identity(user_id="u-nobody", email_sha256=ADA_EMAIL))
    assert found.visitor == ADA
    assert codes(found)[:2] == ["identity.unknown", "identity.stitched"]


def test_an_alias_to_a_missing_visitor_is_reported(
    resolver: Resolver, source: MemoryProfileSource
) -> None:
    """A user id linked to a visitor the source does not have says so, then falls back."""
    source.aliases[("user_id", "u-ghost")] = "v-ghost"
    resolution = resolve(resolver, Identity(user_id="u-ghost", visitor_id="v-anon"))
    assert codes(resolution) == ["identity.dangling", "identity.visitor"]
    assert resolution.visitor == ANON


def test_unknown_user_id_falls_back_to_visitor_id(resolver: Resolver) -> None:
    """An unknown user_id leaves the visitor_id to decide the visitor."""
    found = resolve(resolver, Identity(visitor_id="v-anon", user_id="u-nobody"))
    assert found.status == "resolved"
    assert found.visitor == ANON
    assert found.account is None
    assert "identity.unknown" in codes(found)
    assert "identity.visitor" in codes(found)
    assert "identity.merged" not in codes(found)


@pytest.mark.parametrize(
    ("account_id", "conflict"),
    [("acc-globex", True), ("acc-northwind", False), (None, False)],
)
def test_visitors_own_account_wins_over_the_requests(
    resolver: Resolver, account_id: str | None, conflict: bool
) -> None:
    """The visitor's account link beats a request's account_id, noting a conflict if they differ."""
    found = resolve(resolver, Identity(visitor_id="v-ada", account_id=account_id))
    assert found.account == NORTHWIND
    assert ("identity.account_conflict" in codes(found)) is conflict


def test_account_id_alone_resolves_an_account(
    resolver: Resolver, source: MemoryProfileSource
) -> None:
    """A request with only an account_id resolves that account, with no visitor and no lookup."""
    found = resolve(resolver, Identity(account_id="acc-globex"))
    assert found.status == "resolved"
    assert found.visitor is None
    assert found.account == GLOBEX
    assert "identity.account" in codes(found)
    assert source.lookups["visitor"] == 0
    assert source.lookups["alias"] == 0


def test_account_id_backs_up_a_visitor_without_an_account(resolver: Resolver) -> None:
    """A visitor with no account link takes the request's account_id, without a conflict."""
    found = resolve(resolver, Identity(visitor_id="v-anon", account_id="acc-globex"))
    assert (found.visitor, found.account) == (ANON, GLOBEX)
    assert "identity.account_conflict" not in codes(found)


def test_nothing_known_is_unknown(resolver: Resolver) -> None:
    """Ids the source does not know give status "unknown" with no profiles."""
    found = resolve(
        resolver, Identity(visitor_id="v-ghost", user_id="u-ghost", account_id="acc-ghost")
    )
    assert found.status == "unknown"
    assert (found.visitor, found.account) == (None, None)
    assert set(codes(found)) == {"identity.unknown"}
    assert not found.stale


def test_failing_source_makes_the_profile_unavailable(
    resolver: Resolver, source: MemoryProfileSource
) -> None:
    """A source failure with nothing cached gives status "unavailable" and no profiles."""
    source.available = False
    found = resolve(resolver, Identity(visitor_id="v-ada"))
    assert found.status == "unavailable"
    assert (found.visitor, found.account) == (None, None)
    assert codes(found) == ["identity.unavailable"]


def test_repeat_lookups_within_ttl_are_served_from_cache(
    resolver: Resolver, source: MemoryProfileSource
) -> None:
    """A second resolution of the same ids within ttl asks the source nothing."""
    identity = Identity(user_id="u-ada")
    first = resolve(resolver, identity)
    asked = source.lookups.copy()
    assert resolve(resolver, identity) == first
    assert source.lookups == asked == {"alias": 1, "visitor": 1, "account": 1}


def test_failing_source_after_ttl_serves_stale_data(source: MemoryProfileSource) -> None:
    """Once ttl is over, a failing source is answered from the cache, marked stale."""
    resolver = resolver_of(source, ttl=0.02, negative_ttl=0.02, stale_ttl=60.0)
    identity = Identity(user_id="u-ada", account_id="acc-globex")
    assert not resolve(resolver, identity).stale

    source.available = False
    time.sleep(0.05)
    found = resolve(resolver, identity)
    assert found.status == "resolved"
    assert found.stale
    assert (found.visitor, found.account) == (ADA, NORTHWIND)
    assert "identity.stale" in codes(found)
    assert source.lookups["alias"] == 2


def test_slow_source_beyond_the_budget_is_unavailable(source: MemoryProfileSource) -> None:
    """A source slower than the request's budget gives "unavailable" within about that budget."""
    source.latency = 0.2
    resolver = resolver_of(source, budget=0.02)
    started = time.monotonic()
    found = resolve(resolver, Identity(visitor_id="v-ada"))
    assert time.monotonic() - started < 0.15
    assert found.status == "unavailable"
    assert codes(found) == ["identity.unavailable"]


def test_budget_is_shared_by_all_lookups_of_one_request(source: MemoryProfileSource) -> None:
    """Lookups that each fit the budget but not together make the resolution unavailable."""
    source.latency = 0.1
    resolver = resolver_of(source, budget=0.25)
    found = resolve(resolver, Identity(user_id="u-ada"))
    assert found.status == "unavailable"
    assert source.lookups == {"alias": 1, "visitor": 1, "account": 1}


def test_on_email_the_recipient_is_the_email_hash_owner(resolver: Resolver) -> None:
    """On email the email hash decides, even against a user id of someone else, and the
    conflict names the ids, not their values."""
    found = asyncio.run(
        resolver.resolve(Identity(user_id="u-ada", email_sha256=BEN_EMAIL), "email")
    )
    assert (found.visitor, found.account) == (BEN, GLOBEX)
    (other,) = found.others
    assert (other.visitor, other.named_by) == (ADA, ("user_id",))
    conflict = next(r for r in found.notes if r.code == "identity.conflict")
    assert "user_id and email_sha256 name different people" in conflict.message
    assert "u-ada" not in conflict.message
    assert BEN_EMAIL not in conflict.message


def test_on_email_an_unknown_recipient_uses_nothing_personal(resolver: Resolver) -> None:
    """An email hash that names nobody leaves nothing to personalize with; the user id's
    person is still there to be checked for suppression."""
    unknown = hashlib.sha256(b"nobody@example.com").hexdigest()
    found = asyncio.run(resolver.resolve(Identity(user_id="u-ada", email_sha256=unknown), "email"))
    assert (found.status, found.visitor, found.account) == ("unknown", None, None)
    assert [p.visitor for p in found.others] == [ADA]
    assert "identity.conflict" in codes(found)


def test_a_cookie_naming_someone_else_is_merged_not_a_conflict(resolver: Resolver) -> None:
    """The anonymous cookie's profile is checked for suppression, without a conflict."""
    found = resolve(resolver, Identity(visitor_id="v-anon", user_id="u-ada"))
    assert [p.visitor.id for p in found.others] == ["v-anon"]
    assert "identity.conflict" not in codes(found)


# --- stale-if-error, per identity shape --------------------------------------------------

STALE = {"ttl": 0.02, "negative_ttl": 0.02, "stale_ttl": 60.0}


def test_a_cookie_unseen_since_its_negative_entry_expired_does_not_hide_stale_data(
    source: MemoryProfileSource,
) -> None:
    """The README's first request shape, user_id plus an anonymous cookie the source does
    not know: once the cookie's negative entry has expired while the source is down, the
    user's stale profile is still served, and the cookie is noted as not checked."""
    resolver = resolver_of(source, **STALE)
    identity = Identity(user_id="u-ada", visitor_id="anon-cookie-1")
    assert resolve(resolver, identity).visitor == ADA
    source.available = False
    time.sleep(0.05)
    found = resolve(resolver, identity)
    assert (found.status, found.stale) == ("resolved", True)
    assert (found.visitor, found.account) == (ADA, NORTHWIND)
    assert found.unchecked == ("visitor_id",)
    assert "identity.unchecked" in codes(found)
    assert "identity.unavailable" not in codes(found)


SHAPES = {
    "user_id+visitor_id": Identity(user_id="u-ada", visitor_id="v-anon"),
    "email_sha256+visitor_id": Identity(email_sha256=ADA_EMAIL, visitor_id="v-anon"),
    "visitor_id": Identity(visitor_id="v-ada"),
    "account_id": Identity(account_id="acc-globex"),
    "user_id+account_id": Identity(user_id="u-ada", account_id="acc-globex"),
}


@pytest.mark.parametrize("channel", ["web", "email"])
@pytest.mark.parametrize("identity", SHAPES.values(), ids=SHAPES.keys())
def test_every_identity_shape_is_served_stale_through_an_outage(
    source: MemoryProfileSource, identity: Identity, channel: Channel
) -> None:
    """Each id of the request is served from its own stale entry: the outage changes
    nothing but the stale mark."""
    resolver = resolver_of(source, **STALE)
    before = asyncio.run(resolver.resolve(identity, channel))
    assert (before.status, before.stale) == ("resolved", False)
    source.available = False
    time.sleep(0.05)
    during = asyncio.run(resolver.resolve(identity, channel))
    assert (during.status, during.stale, during.unchecked) == ("resolved", True, ())
    assert (during.visitor, during.account, during.others) == (
        before.visitor,
        before.account,
        before.others,
    )
    assert codes(during) == [*codes(before), "identity.stale"]


@pytest.mark.parametrize("channel", ["web", "email"])
@pytest.mark.parametrize(
    "known", [Identity(user_id="u-ada"), Identity(email_sha256=ADA_EMAIL)], ids=["user", "email"]
)
def test_a_cookie_never_seen_beside_a_stale_known_id_is_left_unchecked(
    source: MemoryProfileSource, known: Identity, channel: Channel
) -> None:
    """A cookie first seen during the outage (nothing cached for it) beside a known id that
    has stale data: the known id's person is served, the cookie noted unchecked."""
    resolver = resolver_of(source, **STALE)
    asyncio.run(resolver.resolve(known, channel))
    source.available = False
    time.sleep(0.05)
    identity = msgspec.structs.replace(known, visitor_id="anon-first-visit")
    found = asyncio.run(resolver.resolve(identity, channel))
    assert (found.status, found.stale, found.unchecked) == ("resolved", True, ("visitor_id",))
    assert (found.visitor, found.account) == (ADA, NORTHWIND)


@pytest.mark.parametrize(
    "identity",
    [
        Identity(user_id="u-new", visitor_id="v-ada"),  # the user id might win over the cookie
        Identity(visitor_id="v-new"),
        Identity(account_id="acc-new"),
        Identity(user_id="u-new", email_sha256=ADA_EMAIL),
    ],
    ids=["new-user+known-cookie", "new-visitor", "new-account", "new-user+known-email"],
)
def test_an_id_that_could_decide_and_has_nothing_cached_makes_the_profile_unavailable(
    source: MemoryProfileSource, identity: Identity
) -> None:
    """An id that fails with nothing cached and might name the person decided for (no
    stronger id resolved) leaves nothing to decide with: the profile is unavailable."""
    resolver = resolver_of(source, **STALE)
    warm = Identity(
        user_id="u-ada", email_sha256=ADA_EMAIL, visitor_id="v-ada", account_id="acc-globex"
    )
    asyncio.run(resolver.resolve(warm))
    source.available = False
    time.sleep(0.05)
    found = resolve(resolver, identity)
    assert (found.status, found.visitor, found.account) == ("unavailable", None, None)
    assert codes(found) == ["identity.unavailable"]


def test_on_email_the_recipient_decides_and_a_failed_user_id_is_unchecked(
    source: MemoryProfileSource,
) -> None:
    """On email the email hash's owner is decided for; a user id that cannot be looked up
    beside it is unchecked, not a reason to lose the recipient's stale profile."""
    resolver = resolver_of(source, **STALE)
    asyncio.run(resolver.resolve(Identity(email_sha256=ADA_EMAIL), "email"))
    source.available = False
    time.sleep(0.05)
    found = asyncio.run(
        resolver.resolve(Identity(user_id="u-new", email_sha256=ADA_EMAIL), "email")
    )
    assert (found.status, found.visitor, found.unchecked) == ("resolved", ADA, ("user_id",))


def test_an_other_persons_account_that_fails_leaves_them_unchecked(
    source: MemoryProfileSource,
) -> None:
    """Another person the ids name, whose account cannot be looked up, is kept (their own
    flags still count) and their id noted unchecked."""
    resolver = resolver_of(source, **STALE)
    identity = Identity(user_id="u-ada", email_sha256=BEN_EMAIL)
    asyncio.run(resolver.resolve(Identity(user_id="u-ada")))
    asyncio.run(resolver.resolve(Identity(email_sha256=BEN_EMAIL)))
    resolver.accounts.evict("acc-globex")
    source.available = False
    time.sleep(0.05)
    found = resolve(resolver, identity)
    assert (found.status, found.visitor, found.unchecked) == ("resolved", ADA, ("email_sha256",))
    (other,) = found.others
    assert (other.visitor, other.account) == (BEN, None)


class Overlapping(MemoryProfileSource):
    """Counts how many lookups are in the source at once."""

    def __init__(self) -> None:
        super().__init__([ADA, BEN, ANON, NORTHWIND, GLOBEX], latency=0.01)
        self.now = 0
        self.most = 0

    async def _answer(self, lookup: str, value: Any) -> Any:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super()._answer(lookup, value)
        finally:
            self.now -= 1


def test_ids_that_miss_the_cache_are_looked_up_at_once() -> None:
    """A user id, an email hash and a cookie, none cached: one round trip's wait, not three."""
    source = Overlapping()
    resolver = resolver_of(source)
    ids = Identity(user_id="u-ada", email_sha256=ADA_EMAIL, visitor_id="v-anon")
    cold = resolve(resolver, ids)
    assert cold.status == "resolved"
    assert source.most == 3
    # warm, or a single id: nothing in parallel (tasks would cost more than the lookups)
    fetched = sum(source.lookups.values())
    warm = resolve(resolver, ids)
    assert warm == cold
    assert sum(source.lookups.values()) == fetched
    lone = Overlapping()
    assert resolve(resolver_of(lone), Identity(user_id="u-ada")).status == "resolved"
    assert lone.most == 1


class Collecting(MemoryProfileSource):
    """A garbage collection stops the process as each alias is answered."""

    async def alias(self, kind: AliasKind, value: str) -> str | None:
        found = await super().alias(kind, value)
        collection(0.4)
        return found


def test_time_spent_collecting_garbage_is_given_back_to_the_lookups_after_it() -> None:
    """A user id's link is answered, then a collection stops the process past the whole
    budget: the lookups after it (the visitor, the account) still get the budget's time,
    which is the source's, not the process's."""
    source = Collecting([ADA, NORTHWIND], latency=0.02)
    resolver = resolver_of(source, budget=0.2)
    found = resolve(resolver, Identity(user_id="u-ada"))
    assert (found.status, found.visitor, found.account) == ("resolved", ADA, NORTHWIND)
    assert resolver.lookups == (3, 0)


# the memo: a returning visitor's resolution, while nothing it was made from changed


def test_a_resolution_from_fresh_entries_is_remembered_not_stitched_again(
    source: MemoryProfileSource, resolver: Resolver
) -> None:
    ada = Identity(visitor_id="anon-9", user_id="u-ada")
    resolve(resolver, ada)  # fetched: made while the caches changed, so not remembered
    first = resolve(resolver, ada)  # from the caches alone
    asked = dict(source.lookups)
    resolver.visitors.hits = 0
    assert resolve(resolver, ada) is first  # the very resolution: no stitch, no lookup
    assert dict(source.lookups) == asked
    assert resolver.visitors.hits == 0
    # another channel, or other ids, are other resolutions
    assert asyncio.run(resolver.resolve(ada, "email")) is not first
    assert resolve(resolver, Identity(user_id="u-ada")) is not first


def test_a_change_ends_the_memo_at_once(source: MemoryProfileSource, resolver: Resolver) -> None:
    """A write (here: Ada leaves her account) evicts what it changed: the next decision
    sees it, memo or not."""
    ada = Identity(user_id="u-ada")
    resolve(resolver, ada)
    assert resolve(resolver, ada) is resolve(resolver, ada)  # remembered
    moved = msgspec.structs.replace(ADA, account_id=None)
    resolver.apply(asyncio.run(source.put(moved)))
    after = resolve(resolver, ada)
    assert after.visitor == moved
    assert after.account is None


def test_the_memo_holds_only_while_every_entry_it_read_is_fresh(
    source: MemoryProfileSource,
) -> None:
    """An entry past its TTL is fetched again, as it would be without the memo; a
    resolution served stale, or with a lookup failed, is never remembered."""
    resolver = resolver_of(source, ttl=0.05, negative_ttl=0.05)
    ada = Identity(user_id="u-ada")
    resolve(resolver, ada)
    first = resolve(resolver, ada)
    assert resolve(resolver, ada) is first
    time.sleep(0.08)
    fetched = sum(source.lookups.values())
    again = resolve(resolver, ada)
    assert again is not first
    assert sum(source.lookups.values()) > fetched
    source.available = False
    time.sleep(0.08)
    stale = resolve(resolver, ada)
    assert stale.stale
    source.available = True
    assert resolve(resolver, ada) is not stale
