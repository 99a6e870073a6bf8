"""The source's clock: the time a lookup may take is the profile source's, not this process's.

A garbage collection stops the process (a full one over large caches for tens to hundreds
of milliseconds) while the source goes on answering; the time spent collecting is given
back to every deadline counted on this clock, so a pause of ours is never a lookup's
timeout or a request's lost budget.
"""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import AbstractAsyncContextManager
from types import TracebackType

_collecting = [0.0, 0.0]  # when the running collection began; seconds of every one before


def _collections(phase: str, _: dict[str, int]) -> None:
    if phase == "start":
        _collecting[0] = time.perf_counter()
    else:
        _collecting[1] += time.perf_counter() - _collecting[0]


gc.callbacks.append(_collections)


class Budget:
    """`seconds` from now on the source's clock: the deadline moves on by the time the
    process spends collecting garbage meanwhile."""

    __slots__ = ("_collected", "_end")

    def __init__(self, seconds: float) -> None:
        self._end = asyncio.get_running_loop().time() + seconds
        self._collected = _collecting[1]

    @property
    def deadline(self) -> float:
        """The deadline as it stands now, in event-loop time."""
        return self._end + _collecting[1] - self._collected


def within(deadline: Budget | float | None) -> AbstractAsyncContextManager[object]:
    """asyncio.timeout_at(deadline), where a Budget's deadline is the one it has when it
    comes: a collection meanwhile pushes it on."""
    return _Within(deadline) if isinstance(deadline, Budget) else asyncio.timeout_at(deadline)


class _Within:
    """An asyncio timeout, fired by a check that looks at the Budget's deadline when it comes
    (a class: a generator-based context manager costs three times its overhead)."""

    __slots__ = ("_budget", "_check", "_limit", "_loop")

    def __init__(self, budget: Budget) -> None:
        self._budget = budget

    async def __aenter__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = asyncio.timeout_at(None)
        await self._limit.__aenter__()
        self._check = self._loop.call_at(self._budget.deadline, self._expire)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._check.cancel()
        await self._limit.__aexit__(kind, error, trace)

    def _expire(self) -> None:
        due = self._budget.deadline
        if due > self._loop.time():  # a collection moved it
            self._check = self._loop.call_at(due, self._expire)
        else:
            self._limit.reschedule(due)
