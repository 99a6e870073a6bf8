"""The running service's state and its one use case, free of any web framework.

Holds the current ruleset behind a single reference (a reload swaps it whole), the resolver
with its caches, the counters, the clock and the decision-id source. The HTTP layer and
the CLI call `decide`; time and ids are injected so tests and rule suites can fix them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from decider.compiler import CompiledRuleset
from decider.engine import decide, select_placement
from decider.model import DecideRequest, Decision
from decider.resolver import Resolver
from decider.stats import Stats


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_decision_id() -> str:
    return uuid.uuid4().hex


class Decider:
    def __init__(
        self,
        ruleset: CompiledRuleset,
        resolver: Resolver,
        *,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_decision_id,
    ) -> None:
        self.ruleset = ruleset
        self.resolver = resolver
        self.stats = Stats(clock())
        self._clock = clock
        self._ids = ids

    async def decide(self, request: DecideRequest, *, gpc: bool) -> Decision:
        ruleset = self.ruleset  # one read: the whole decision uses one ruleset
        select_placement(ruleset, request)
        resolution = await self.resolver.resolve(request.identity)
        now = self._clock()
        evaluated = decide(ruleset, request, resolution, now=now, gpc=gpc, decision_id=self._ids())
        self.stats.record(evaluated, now)
        return evaluated.decision
