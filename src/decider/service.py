"""The one use case, free of any web framework: resolve who is asking, then decide.

`Decider` holds the current ruleset behind a single reference (a reload swaps it whole), and
is given what it needs: something that resolves identities, the counters, the clock, the
decision-id source, and what logs exposures (if anything does). The HTTP layer calls
`decide`; the reloader calls `swap`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from decider.batch import SLICE
from decider.engine import Evaluated, decide, select_placement
from decider.errors import InvalidRequest
from decider.model import DecideRequest, Decision, Identity
from decider.profile import Resolution
from decider.ruleset import CompiledPlacement, CompiledRuleset
from decider.stats import Stats


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_decision_id() -> str:
    """128 random bits as hex: the shape of a uuid4's hex, at a fifth of its cost."""
    return os.urandom(16).hex()


class IdentityResolver(Protocol):
    async def resolve(self, identity: Identity, channel: str) -> Resolution:
        """Who is asking, by the channel's identity rules (decider.model.Channel); never
        raises for a failing source (the answer is "unavailable")."""

    async def resolve_many(self, identities: Sequence[Identity], channel: str) -> list[Resolution]:
        """Each identity's resolution, in order, as `resolve` makes it; lookups together."""


# told of every decision made, with the request's context and the time: the exposure log
Exposures = Callable[[Evaluated, Mapping[str, Any], datetime], None]


class Decider:
    def __init__(
        self,
        ruleset: CompiledRuleset,
        resolver: IdentityResolver,
        stats: Stats,
        *,
        clock: Callable[[], datetime],
        ids: Callable[[], str],
        exposures: Exposures | None = None,
    ) -> None:
        self._ruleset = ruleset
        self._resolver = resolver
        self._stats = stats
        self._clock = clock
        self._ids = ids
        self._exposures = exposures

    @property
    def ruleset(self) -> CompiledRuleset:
        return self._ruleset

    def swap(self, ruleset: CompiledRuleset) -> CompiledRuleset:
        """Serve `ruleset` from the next decision on; returns the one it replaces."""
        previous, self._ruleset = self._ruleset, ruleset
        return previous

    async def decide(self, request: DecideRequest, *, gpc: bool) -> Decision:
        ruleset = self._ruleset  # one read: the whole decision uses one ruleset
        placement = select_placement(ruleset, request)  # refused before any lookup is spent
        resolution = await self._resolver.resolve(request.identity, placement.channel)
        return self._decided(ruleset, placement, request, resolution, now=self._clock(), gpc=gpc)

    async def decide_batch(
        self, shared: DecideRequest, requests: Sequence[DecideRequest], *, gpc: bool
    ) -> list[Decision]:
        """A decision for each of `requests`, made, counted and logged as `decide` makes one,
        their profile lookups made together (Resolver.resolve_many). `shared` holds what
        the requests share (placement, channel, consent, the shared context), checked once;
        their contexts, each with the shared one, were checked already. Between slices of
        SLICE decisions the event loop serves other requests."""
        ruleset = self._ruleset  # one read: the whole batch uses one ruleset
        placement = select_placement(ruleset, shared)
        identities = [request.identity for request in requests]
        resolutions = await self._resolver.resolve_many(identities, placement.channel)
        now = self._clock()
        decisions: list[Decision] = []
        for n, (request, resolution) in enumerate(zip(requests, resolutions, strict=True)):
            if n and not n % SLICE:
                await asyncio.sleep(0)
            decisions.append(
                self._decided(ruleset, placement, request, resolution, now=now, gpc=gpc)
            )
        return decisions

    async def decide_channel(
        self, request: DecideRequest, channel: str, *, gpc: bool
    ) -> tuple[CompiledRuleset, list[tuple[str, Decision | InvalidRequest]]]:
        """A decision for each placement of `channel`, by id, in id order, for one requester (its
        `placement` is not read), and the ruleset they were made on: one ruleset for all (a
        reload meanwhile changes none of them), the identity resolved once. A placement the
        request is refused for (select_placement) is its refusal. Raises InvalidRequest
        (`channel`) for a channel the rules do not define."""
        ruleset = self._ruleset
        if channel not in ruleset.channels:
            known = ", ".join(sorted(ruleset.channels))
            raise InvalidRequest("channel", f"not a channel of the loaded rules; known: {known}")
        asked: list[tuple[DecideRequest, CompiledPlacement | InvalidRequest]] = []
        for key in sorted(k for k, p in ruleset.placements.items() if p.channel == channel):
            each = msgspec.structs.replace(request, placement=key)
            try:
                asked.append((each, select_placement(ruleset, each)))
            except InvalidRequest as exc:
                asked.append((each, exc))
        decided: list[tuple[str, Decision | InvalidRequest]] = []
        resolution: Resolution | None = None  # resolved at the first placement decided
        now = self._clock()
        for each, placement in asked:
            if isinstance(placement, InvalidRequest):
                decided.append((each.placement, placement))
                continue
            if resolution is None:
                resolution = await self._resolver.resolve(request.identity, channel)
            made = self._decided(ruleset, placement, each, resolution, now=now, gpc=gpc)
            decided.append((each.placement, made))
        return ruleset, decided

    def _decided(
        self,
        ruleset: CompiledRuleset,
        placement: CompiledPlacement,
        request: DecideRequest,
        resolution: Resolution,
        *,
        now: datetime,
        gpc: bool,
    ) -> Decision:
        """The decision, counted and told to the exposure log."""
        evaluated = decide(
            ruleset, placement, request, resolution, now=now, gpc=gpc, decision_id=self._ids()
        )
        self._stats.record(evaluated, now)
        if self._exposures is not None:
            self._exposures(evaluated, request.context, now)
        return evaluated.decision
