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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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


@asynccontextmanager
async def within(deadline: Budget | float | None) -> AsyncIterator[None]:
    """asyncio.timeout_at(deadline), where a Budget's deadline is the one it has when it
    comes: a collection meanwhile pushes it on."""
    if not isinstance(deadline, Budget):
        async with asyncio.timeout_at(deadline):
            yield
        return
    loop = asyncio.get_running_loop()
    async with asyncio.timeout_at(None) as limit:
        check: asyncio.TimerHandle | None = None

        def expire() -> None:
            nonlocal check
            due = deadline.deadline
            if due > loop.time():  # a collection moved it
                check = loop.call_at(due, expire)
            else:
                limit.reschedule(due)

        check = loop.call_at(deadline.deadline, expire)
        try:
            yield
        finally:
            check.cancel()
