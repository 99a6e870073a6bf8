"""The readiness probe asks the profile source at most once a second, however many come."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from decider.profiles.sources.base import ProfileSource
from decider.server.health import ReadyCheck


class Counting:
    """A source whose readiness check takes a while, counted."""

    def __init__(self) -> None:
        self.asked = 0

    async def ready(self) -> bool:
        self.asked += 1
        await asyncio.sleep(0.01)
        return True


def test_a_flood_of_probes_asks_the_source_once() -> None:
    source = Counting()
    check = ReadyCheck(cast(ProfileSource, cast(Any, source)))

    async def flood() -> list[bool]:
        first = await asyncio.gather(*(check.ready() for _ in range(200)))
        return [*first, await check.ready()]  # within the second: the answer kept

    assert all(asyncio.run(flood()))
    assert source.asked == 1
    check.TTL_S = 0.0
    assert asyncio.run(check.ready())
    assert source.asked == 2
