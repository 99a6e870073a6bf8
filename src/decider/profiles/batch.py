"""The lookups of a batch of decisions, made together before any of its identities is
stitched (Resolver.resolve_many), from a source that looks up many ids at once
(sources.base.Batched): one query per kind of id, in three stages, as one decision's
lookups follow each other: the links of the user ids and email hashes; the visitors those
links and the visitor ids name; then those visitors' accounts and the requests' account
ids. Each stage asks only for what the caches do not hold fresh, each id once.

Each identity is then stitched by the very code a single decision runs, its lookups
answered from what the batch found: stitching, conflicts between ids, freshness and the
budget are what they are one decision at a time. A query that fails, or runs out of the
batch's budget, fails each id it asked as that id's own fetch would have: served stale if
its cache entry holds a value, else the lookup fails (ProfileCache.answered).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from decider.errors import ProfileSourceError
from decider.model import Identity
from decider.profile import ALIAS_KINDS, AccountProfile, VisitorProfile
from decider.profiles.cache import Hit, ProfileCache
from decider.profiles.clock import Budget, within
from decider.profiles.sources.base import AliasKey, Batched, Each

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Answers(Generic[K, V]):
    """One cache as a batch's stitching reads it (a cache.Lookups): what the batch found,
    else the cache itself."""

    def __init__(self, cache: ProfileCache[K, V]) -> None:
        self.cache = cache
        # each id the batch asked: its answer, maybe stale, or why it has none
        self.found: dict[K, Hit[V] | ProfileSourceError] = {}

    def fresh(self, key: K) -> Hit[V] | None:
        found = self.found.get(key)
        if found is None:
            return self.cache.fresh(key)
        return found if isinstance(found, Hit) and not found.stale else None

    async def get(self, key: K, deadline: Budget) -> Hit[V]:
        found = self.found.get(key)
        if found is None:
            return await self.cache.get(key, deadline)
        if isinstance(found, ProfileSourceError):
            raise ProfileSourceError(str(found))  # a fresh one each: several lookups raise it
        return found

    def value(self, key: K) -> V | None:
        """What the batch found for `key`: None if unknown, or if it has no answer."""
        found = self.found.get(key)
        return found.value if isinstance(found, Hit) else None

    async def look_up(
        self,
        keys: Iterable[K],
        many: Callable[[Sequence[K]], Awaitable[Mapping[K, Each[V]]]],
        deadline: Budget,
    ) -> None:
        """Find each of `keys`: fresh in the cache (a hit), else asked of `many` with the
        others, in one call within `deadline`."""
        asked: list[K] = []
        for key in dict.fromkeys(keys):
            if key not in self.found:
                hit = self.cache.fresh(key)
                if hit is None:
                    asked.append(key)
                else:
                    self.found[key] = hit
        if not asked:
            return
        epoch = self.cache.epoch
        try:
            async with within(deadline):
                answers = await many(asked)
        except ProfileSourceError as exc:
            for key in asked:
                self._take(key, ProfileSourceError(str(exc)), epoch)
        except TimeoutError:
            for key in asked:
                self._take(key, TimeoutError(), epoch)
        else:
            for key in asked:
                self._take(key, answers.get(key), epoch)

    def _take(
        self, key: K, answer: V | ProfileSourceError | TimeoutError | None, epoch: int
    ) -> None:
        try:
            self.found[key] = self.cache.answered(key, answer, epoch)
        except ProfileSourceError as exc:
            self.found[key] = exc


class Prefetched:
    """A batch's answers in front of the resolver's three caches."""

    def __init__(
        self,
        visitors: ProfileCache[str, VisitorProfile],
        accounts: ProfileCache[str, AccountProfile],
        aliases: ProfileCache[AliasKey, str],
    ) -> None:
        self.visitors, self.accounts, self.aliases = (
            Answers(visitors),
            Answers(accounts),
            Answers(aliases),
        )

    async def fetch(
        self, source: Batched, identities: Sequence[Identity], deadline: Budget
    ) -> None:
        """Find every profile and link the stitching of `identities` looks up."""
        links = [(k, value) for i in identities for k in ALIAS_KINDS if (value := getattr(i, k))]
        await self.aliases.look_up(links, source.links_of, deadline)
        named = [i.visitor_id for i in identities if i.visitor_id]
        named += [linked for key in links if (linked := self.aliases.value(key)) is not None]
        await self.visitors.look_up(named, source.visitors_of, deadline)
        owned = [i.account_id for i in identities if i.account_id]
        owned += [v.account_id for n in named if (v := self.visitors.value(n)) and v.account_id]
        await self.accounts.look_up(owned, source.accounts_of, deadline)
