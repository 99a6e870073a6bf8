"""The source's clock: deadlines that the process's own garbage collections do not use up,
and that still fall when the time is really the source's."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from decider.profiles.clock import Budget, within


def collection(seconds: float) -> None:
    """A garbage collection as the process lives it: the loop stands still for `seconds`,
    and gc's callbacks are told when it starts and stops."""
    for callback in gc.callbacks:
        callback("start", {"generation": 2, "collected": 0, "uncollectable": 0})
    time.sleep(seconds)
    for callback in gc.callbacks:
        callback("stop", {"generation": 2, "collected": 0, "uncollectable": 0})


def test_a_budget_moves_on_by_the_time_spent_collecting() -> None:
    async def main() -> tuple[float, float]:
        budget = Budget(0.1)
        before = budget.deadline
        collection(0.05)
        return before, budget.deadline

    before, after = asyncio.run(main())
    assert after - before >= 0.05


def test_a_wait_outlasts_a_collection_longer_than_its_budget() -> None:
    """A collection stops the process past the deadline; what is waited for comes after it,
    within the budget's own time: no timeout."""

    async def main() -> str:
        async with within(Budget(0.2)):
            collection(0.4)
            await asyncio.sleep(0.05)
            return "answered"

    assert asyncio.run(main()) == "answered"


@pytest.mark.parametrize("collecting", [0.0, 0.1])
def test_the_sources_own_time_still_runs_out(collecting: float) -> None:
    """Time that is the source's is not given back: a wait past the budget times out, with
    or without a collection on the way."""

    async def main() -> None:
        async with within(Budget(0.1)):
            collection(collecting)
            await asyncio.sleep(0.5)

    with pytest.raises(TimeoutError):
        asyncio.run(main())


def test_a_fixed_deadline_is_asyncios() -> None:
    async def main() -> None:
        async with within(asyncio.get_running_loop().time() + 0.05):
            await asyncio.sleep(0.5)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
