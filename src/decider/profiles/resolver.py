"""Identity stitching: the ids a request carries become the person decided for, their account,
and every other person the ids name.

The policy (README, "Identity conflicts"):
- Every id the request gives is looked up, and every person the ids name is checked for
  suppression: an unsubscribed email hash must not hide behind a user id that wins the stitch.
- On email, the recipient is the owner of the email hash: only their consent and profile may
  personalize the message; if the hash names nobody known, nothing personal is used.
- Elsewhere (and on email without an email hash), known identities win over the anonymous
  cookie: user_id, then email_sha256, then visitor_id.
- The visitor's own account link wins over a request's account_id (often a reverse-IP guess).

Every lookup goes through a cache, and the whole resolution shares one time budget (a
batch's resolutions share one: Resolver.resolve_many, decider.profiles.batch). The ids
the cache cannot answer are looked up at once: in one round trip where the source offers it
(decider.profiles.trips), else concurrently, one lookup per id. When the source fails, each
id is served from its own stale entry if it has one (stale-if-error, per id). An id that
fails with nothing stale to serve:
- makes the profile "unavailable" (which the consent gate treats as not granted) if it could
  have decided who is asked: it is the recipient's email hash on email, or no id stronger
  than it resolved, or it is the account of the person decided for;
- else (an anonymous cookie beside a known user id, say) is left "unchecked": the decision
  goes on from the ids that resolved, and a channel that suppresses when the profile cannot
  be checked suppresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from decider.batch import SLICE
from decider.errors import ProfileSourceError
from decider.model import Identity
from decider.profile import (
    ALIAS_KINDS,
    AccountProfile,
    AliasKind,
    IdKind,
    Person,
    Resolution,
    Status,
    VisitorProfile,
)
from decider.profiles.batch import Prefetched
from decider.profiles.cache import CacheSettings, Hit, Lookups, ProfileCache, Watch
from decider.profiles.clock import Budget
from decider.profiles.sources.base import AliasKey, Batched, Change, ProfileSource
from decider.profiles.trips import Resolving, Trips
from decider.reasons import Reason, ReasonCode

Named = dict[IdKind, VisitorProfile | None]
# an id's link (None for a visitor_id, or when the lookup failed), its visitor, the failure
_Followed = tuple["Hit[str] | None", "Hit[VisitorProfile] | None", ProfileSourceError | None]
Failed = dict[IdKind, ProfileSourceError]
# who wins the stitch off email: known identities over the anonymous cookie
_STRENGTH: tuple[IdKind, ...] = (*ALIAS_KINDS, "visitor_id")
# a batch's resolutions running at once over a source that looks up one id at a time (a
# profile API): a third of its connection pool (sources.http.MAX_CONNECTIONS), so a batch
# leaves the rest to single decisions
BATCH_LOOKUPS = 32
MEMO_SIZE = 20_000  # resolutions remembered; all forgotten at once when full
T = TypeVar("T")


class Resolver:
    """Stitches identities over three caches (visitors, accounts, aliases) of one source.

    `budget`: seconds all lookups of one resolution may take together, on the source's
    clock (decider.profiles.clock). `changes`, if given, is asked before each
    resolution for what other processes changed in the store, so a write anywhere is seen
    on the next decision."""

    def __init__(
        self,
        source: ProfileSource,
        *,
        budget: float,
        cache: CacheSettings,
        changes: Callable[[], list[Change]] | None = None,
    ) -> None:
        self.budget = budget
        self._changes = changes
        self._followed = False  # changes were asked for in this pass of the event loop
        trips = self._trips = Trips(source, source) if isinstance(source, Resolving) else None
        points: ProfileSource | Trips = trips or source
        self.visitors: ProfileCache[str, VisitorProfile] = ProfileCache(
            points.visitor, cache, at_hand=trips.visitor_in if trips else None
        )
        self.accounts: ProfileCache[str, AccountProfile] = ProfileCache(
            points.account, cache, at_hand=trips.account_in if trips else None
        )
        self.aliases: ProfileCache[tuple[AliasKind, str], str] = ProfileCache(
            lambda key: points.alias(*key), cache, at_hand=trips.alias_in if trips else None
        )
        self._stitching = _Stitching(self.visitors, self.accounts, self.aliases, trips=trips)
        self._batched = source if isinstance(source, Batched) else None
        self._memo: dict[tuple[Identity, str], _Memo] = {}

    @property
    def lookups(self) -> tuple[int, int]:
        """Fetches from the source since start, and those that ran out of their budget."""
        caches = self.caches().values()
        return sum(c.fetches for c in caches), sum(c.late for c in caches)

    def caches(self) -> dict[str, ProfileCache[Any, Any]]:
        """The caches by what they hold, for counting."""
        return {"visitor": self.visitors, "account": self.accounts, "alias": self.aliases}

    def apply(self, change: Change) -> None:
        """Forget what `change` made stale."""
        if self._trips is not None:
            self._trips.forget()
        if change.everything:
            for cache in (self.visitors, self.accounts, self.aliases):
                cache.clear()
            return
        for visitor_id in change.visitors:
            self.visitors.evict(visitor_id)
        for account_id in change.accounts:
            self.accounts.evict(account_id)
        for alias in change.aliases:
            self.aliases.evict(alias)

    def forget(self, identity: Identity) -> Change:
        """Forget every cached entry of the person `identity` names (a profile API's
        webhook says they changed): their visitor, every alias it or the ids link, and the
        account if `account_id` is given. Returns what was forgotten."""
        aliases: set[AliasKey] = {
            (kind, value) for kind in ALIAS_KINDS if (value := getattr(identity, kind))
        }
        visitors = {v for key in aliases if (v := self.aliases.peek(key)) is not None}
        if identity.visitor_id:
            visitors.add(identity.visitor_id)
        for visitor_id in visitors:
            cached = self.visitors.peek(visitor_id)
            if cached is not None:
                aliases |= {("user_id", u) for u in cached.user_ids}
                aliases |= {("email_sha256", e) for e in cached.email_sha256}
        accounts = (identity.account_id,) if identity.account_id else ()
        change = Change(tuple(sorted(visitors)), accounts, tuple(sorted(aliases)))
        self.apply(change)
        return change

    async def resolve(self, identity: Identity, channel: str = "web") -> Resolution:
        """Who `identity` names, stitched: from the memo when it made the same resolution
        from cache entries that are all still held and fresh (a returning visitor's next
        page view costs a few dict reads, not a stitch), else stitched anew."""
        if self._changes is not None and not self._followed:
            self._follow_changes(self._changes)  # first: a change evicts, which ends memos
        key = (identity, channel)
        memo = self._memo.get(key)
        if memo is not None and memo.watch.still(self.visitors.now()):
            return memo.resolution
        version = self._version()
        watch = self.visitors.watch = self.accounts.watch = self.aliases.watch = Watch()
        try:  # as _within does, inline: one coroutine less on the hot path
            resolution = await self._stitching.resolve(identity, channel, Budget(self.budget))
        except ProfileSourceError as exc:
            return _unavailable(exc)
        finally:
            if self._trips is not None:
                self._trips.end()
        if self.visitors.watch is watch:  # no other resolution's reads were mixed in
            self.visitors.watch = self.accounts.watch = self.aliases.watch = None
            if self._version() == version and _memorable(resolution):  # nothing fetched
                if len(self._memo) >= MEMO_SIZE:
                    self._memo.clear()
                self._memo[key] = _Memo(resolution, watch)
        return resolution

    def _version(self) -> int:
        """Changes whenever any cache stores or evicts an entry (a resolution that saw it
        change fetched, or raced a change: it is not remembered)."""
        return self.visitors.version + self.accounts.version + self.aliases.version

    async def resolve_many(self, identities: Sequence[Identity], channel: str) -> list[Resolution]:
        """Each identity's resolution, in order, exactly as `resolve` makes it, with the
        lookups of all of them made together within one budget: from a source that looks
        up many ids at once (decider.profiles.batch), in one query per kind of id; from
        any other (a profile API), BATCH_LOOKUPS resolutions at a time, their lookups
        concurrent. Identities are stitched in slices, other requests served between."""
        if self._changes is not None and not self._followed:
            self._follow_changes(self._changes)
        deadline = Budget(self.budget)
        if self._batched is None:
            return await _at_most(
                BATCH_LOOKUPS,
                (self._within(self._stitching, i, channel, deadline) for i in identities),
            )
        found = Prefetched(self.visitors, self.accounts, self.aliases)
        await found.fetch(self._batched, identities, deadline)
        stitching = _Stitching(found.visitors, found.accounts, found.aliases, trips=None)
        resolutions: list[Resolution] = []
        for n, identity in enumerate(identities):
            if n and not n % SLICE:
                await asyncio.sleep(0)
            resolutions.append(await self._within(stitching, identity, channel, deadline))
        return resolutions

    async def _within(
        self, stitching: _Stitching, identity: Identity, channel: str, deadline: Budget
    ) -> Resolution:
        """`identity` stitched, within `deadline`; a source failing as it must not is the
        profile "unavailable"."""
        try:
            return await stitching.resolve(identity, channel, deadline)
        except ProfileSourceError as exc:
            return _unavailable(exc)
        finally:
            if self._trips is not None:
                self._trips.end()

    def _follow_changes(self, changes: Callable[[], list[Change]]) -> None:
        """Forget what other processes changed, asked once per pass of the event loop: the
        requests one pass starts were received when it began, so a write their callers saw
        confirmed was committed by then; asking costs ~2.5 µs, and a busy pass starts dozens
        of decisions."""
        for change in changes():
            self.apply(change)
        self._followed = True
        asyncio.get_running_loop().call_soon(self._pass_ended)

    def _pass_ended(self) -> None:
        self._followed = False


class _Memo(NamedTuple):
    """A resolution, and the cache entries it was made from (it holds while they do)."""

    resolution: Resolution
    watch: Watch


def _memorable(resolution: Resolution) -> bool:
    """Made from fresh entries alone: nothing stale served, no lookup failed."""
    return not resolution.stale and not resolution.unchecked and resolution.status != "unavailable"


class _Stitching:
    """The stitching of one identity, over lookups of the three kinds: the resolver's caches
    (and its source's round trips, if it offers them), or, for a batch, what the batch
    looked up together in front of them."""

    def __init__(
        self,
        visitors: Lookups[str, VisitorProfile],
        accounts: Lookups[str, AccountProfile],
        aliases: Lookups[AliasKey, str],
        *,
        trips: Trips | None,
    ) -> None:
        self.visitors, self.accounts, self.aliases = visitors, accounts, aliases
        self._trips = trips

    async def resolve(self, identity: Identity, channel: str, deadline: Budget) -> Resolution:
        notes: list[Reason] = []
        named, failed, stale = await self._named(identity, deadline, notes)
        kind, visitor = _decided_for(identity, channel, named, failed)
        _stitch_notes(identity, kind, visitor, notes)
        account, account_stale = await self._account(identity, visitor, deadline, notes)
        others, others_stale, uncheckable = await self._others(named, visitor, deadline)
        _conflict_notes(kind, visitor, others, notes)
        unchecked = tuple(k for k in _STRENGTH if k in failed or k in uncheckable)
        if unchecked:
            notes.append(
                Reason(
                    ReasonCode.IDENTITY_UNCHECKED,
                    f"{' and '.join(unchecked)} could not be looked up (the profile source "
                    "failed, nothing cached): whom it names is not checked",
                )
            )
        stale = stale or account_stale or others_stale
        if stale:
            notes.append(
                Reason(
                    ReasonCode.IDENTITY_STALE, "the profile source failed; cached data served stale"
                )
            )
        status: Status = "resolved" if visitor or account else "unknown"
        return Resolution(status, visitor, account, stale, tuple(notes), others, unchecked)

    async def _named(
        self, identity: Identity, deadline: Budget, notes: list[Reason]
    ) -> tuple[Named, Failed, bool]:
        """The visitor each id of the request names (None: nobody known), strongest first;
        the ids whose lookup failed with nothing stale to serve; whether any was stale.

        What the cache holds fresh is read first; the ids left are asked in one round trip
        where the source offers it, else followed at once when there are several (a cold
        request waits for one id's round trips, not every id's): tasks for ids the cache
        answers would cost more than the lookups."""
        given = [(kind, value) for kind in ALIAS_KINDS if (value := getattr(identity, kind))]
        answers = [self._cached(kind, value) for kind, value in given]
        if identity.visitor_id:
            cached = self.visitors.fresh(identity.visitor_id)
            answers.append((None, cached, None) if cached else None)
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if missing:
            if self._trips is not None and self._trips.offered:
                self._trips.begin(self._asked(identity, given, missing))
                await asyncio.sleep(0)  # the trip's request goes out before lookups are set up
                lookups = [self._lookup(given, i, identity.visitor_id, deadline) for i in missing]
                found = [await lookup for lookup in lookups]  # all answered by one trip
            else:
                lookups = [self._lookup(given, i, identity.visitor_id, deadline) for i in missing]
                found = await asyncio.gather(*lookups) if len(lookups) > 1 else [await lookups[0]]
            for i, answer in zip(missing, found, strict=True):
                answers[i] = answer
        followed = [answer for answer in answers if answer is not None]
        named: Named = {}
        failed: Failed = {}
        stale = False
        for (kind, _), (link, hit, error) in zip(given, followed, strict=False):
            if error is not None:
                failed[kind] = error
                continue
            assert link is not None
            stale |= link.stale
            if link.value is None:
                named[kind] = None
                notes.append(
                    Reason(ReasonCode.IDENTITY_UNKNOWN, f"no visitor is linked to this {kind}")
                )
                continue
            assert hit is not None
            stale |= hit.stale
            named[kind] = hit.value
            if hit.value is None:
                notes.append(
                    Reason(
                        ReasonCode.IDENTITY_DANGLING,
                        f"{kind} links to visitor {link.value}, not found",
                    )
                )
        if identity.visitor_id:
            _, hit, error = followed[-1]
            if error is not None:
                failed["visitor_id"] = error
                return named, failed, stale
            assert hit is not None
            stale |= hit.stale
            named["visitor_id"] = hit.value
            if hit.value is None and not any(named.values()) and not failed:
                notes.append(Reason(ReasonCode.IDENTITY_UNKNOWN, "no profile for this visitor_id"))
        return named, failed, stale

    async def _follow(self, kind: AliasKind, value: str, deadline: Budget) -> _Followed:
        """An id's link, then the visitor it links to."""
        try:
            link = await self.aliases.get((kind, value), deadline)
            if link.value is None:
                return link, None, None
            return link, await self.visitors.get(link.value, deadline), None
        except ProfileSourceError as exc:
            return None, None, exc

    async def _visit(self, visitor_id: str, deadline: Budget) -> _Followed:
        try:
            return None, await self.visitors.get(visitor_id, deadline), None
        except ProfileSourceError as exc:
            return None, None, exc

    def _lookup(
        self, given: list[tuple[AliasKind, str]], i: int, visitor_id: str | None, deadline: Budget
    ) -> Coroutine[Any, Any, _Followed]:
        """The lookup of the i-th id: an alias kind of `given`, or the visitor_id after them."""
        if i < len(given):
            return self._follow(*given[i], deadline)
        assert visitor_id is not None
        return self._visit(visitor_id, deadline)

    def _asked(
        self, identity: Identity, given: list[tuple[AliasKind, str]], missing: list[int]
    ) -> Identity:
        """What the round trip asks: the ids the cache could not answer, and the request's
        account unless cached (the trip answers it beside the visitor's own)."""
        kinds = {given[i][0] if i < len(given) else "visitor_id" for i in missing}
        account_id = identity.account_id
        return Identity(
            visitor_id=identity.visitor_id if "visitor_id" in kinds else None,
            user_id=identity.user_id if "user_id" in kinds else None,
            email_sha256=identity.email_sha256 if "email_sha256" in kinds else None,
            account_id=account_id if account_id and not self.accounts.fresh(account_id) else None,
        )

    def _cached(self, kind: AliasKind, value: str) -> _Followed | None:
        """An id's link and visitor if the cache holds both fresh; else None."""
        link = self.aliases.fresh((kind, value))
        if link is None:
            return None
        if link.value is None:
            return link, None, None
        hit = self.visitors.fresh(link.value)
        return (link, hit, None) if hit is not None else None

    async def _account(
        self,
        identity: Identity,
        visitor: VisitorProfile | None,
        deadline: Budget,
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

    async def _others(
        self, named: Named, visitor: VisitorProfile | None, deadline: Budget
    ) -> tuple[tuple[Person, ...], bool, set[IdKind]]:
        """Every other person the ids name, with their own account, for suppression; and
        the ids naming one whose account could not be looked up (then left unchecked)."""
        kinds: dict[str, list[IdKind]] = {}
        profiles: dict[str, VisitorProfile] = {}
        for kind, other in named.items():
            if other is not None and (visitor is None or other.id != visitor.id):
                kinds.setdefault(other.id, []).append(kind)
                profiles[other.id] = other
        others: list[Person] = []
        stale = False
        unchecked: set[IdKind] = set()
        for other_id, other in profiles.items():
            account = None
            if other.account_id:
                try:
                    hit = await self.accounts.get(other.account_id, deadline)
                except ProfileSourceError:
                    unchecked.update(kinds[other_id])
                else:
                    account, stale = hit.value, stale or hit.stale
            others.append(Person(other, account, tuple(kinds[other_id])))
        return tuple(others), stale, unchecked


def _unavailable(error: ProfileSourceError) -> Resolution:
    return Resolution("unavailable", notes=(Reason(ReasonCode.IDENTITY_UNAVAILABLE, str(error)),))


async def _at_most(limit: int, work: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """What `work` returns, in order, at most `limit` of it running at once, each in a task
    of its own (so each resolution's round trip is its own: decider.profiles.trips)."""
    gate = asyncio.Semaphore(limit)

    async def gated(step: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await step

    return list(await asyncio.gather(*(gated(step) for step in work)))


def _decided_for(
    identity: Identity, channel: str, named: Named, failed: Failed
) -> tuple[IdKind | None, VisitorProfile | None]:
    """Whose consent and traits the decision uses, and the id that names them. Raises the
    lookup's ProfileSourceError if an id that could decide it failed with nothing stale."""
    if channel == "email" and identity.email_sha256 is not None:
        if "email_sha256" in failed:
            raise failed["email_sha256"]
        return "email_sha256", named["email_sha256"]  # the recipient, known or not
    for kind in _STRENGTH:
        if kind in failed:
            raise failed[kind]  # it might name someone who wins over any weaker id
        visitor = named.get(kind)
        if visitor is not None:
            return kind, visitor
    return None, None


def _stitch_notes(
    identity: Identity, kind: IdKind | None, visitor: VisitorProfile | None, notes: list[Reason]
) -> None:
    if visitor is None:
        return
    if kind == "visitor_id":
        notes.append(Reason(ReasonCode.IDENTITY_VISITOR, f"visitor {visitor.id}"))
        return
    notes.append(Reason(ReasonCode.IDENTITY_STITCHED, f"{kind} is linked to visitor {visitor.id}"))
    if identity.visitor_id and identity.visitor_id != visitor.id:
        notes.append(
            Reason(
                ReasonCode.IDENTITY_MERGED,
                f"visitor_id {identity.visitor_id} is read as {visitor.id}: "
                f"the known {kind} wins over the anonymous id",
            )
        )


def _conflict_notes(
    kind: IdKind | None,
    visitor: VisitorProfile | None,
    others: tuple[Person, ...],
    notes: list[Reason],
) -> None:
    """Known ids that name someone else, in one reason: which kinds of id disagree, never
    their values. A cookie (visitor_id) naming another profile is merged, not a conflict."""
    known = {k for other in others for k in other.named_by if k != "visitor_id"}
    if not known or kind is None:
        return
    kinds = " and ".join(k for k in ALIAS_KINDS if k in known | {kind})
    if visitor is None:
        message = (
            f"{kinds} disagree: {kind} names no known person, so nothing personal is used; "
            "everyone the ids name is checked for suppression"
        )
    else:
        message = (
            f"{kinds} name different people: {kind}'s is decided for; everyone the ids name "
            "is checked for suppression"
        )
    notes.append(Reason(ReasonCode.IDENTITY_CONFLICT, message))
