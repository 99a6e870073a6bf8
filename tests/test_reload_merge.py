"""Reload triggers merge: one reload at a time, at most one more however many arrive meanwhile,
and compiling and testing never on the event loop's thread, on either engine.

In-process, over the real Reloader and the real loader; a load is held open with a
threading.Event so that triggers provably arrive while it runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from decider.profiles.jsonl import sample_profiles
from decider.profiles.sources.memory import MemoryProfileSource
from decider.reload import Reloader
from decider.ruleset import CompiledRuleset
from decider.settings import Settings
from decider.wiring import build_service, load_rules

from .conftest import NOW


class HeldLoad:
    """The real loader, counted, each call waiting for `release` first; records the thread
    it ran on."""

    def __init__(self, rules: Path, engine: str) -> None:
        self.rules, self.engine = rules, engine
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []

    def __call__(self) -> CompiledRuleset:
        self.calls += 1
        self.threads.append(threading.get_ident())
        self.started.set()
        assert self.release.wait(timeout=30), "never released"
        return load_rules(self.rules, self.engine)  # type: ignore[arg-type]


def reloader_for(rules: Path, engine: str, load: Callable[[], CompiledRuleset]) -> Reloader:
    settings = Settings(rules_dir=rules, engine=engine, watch_rules=False)  # type: ignore[arg-type]
    service = build_service(
        settings, source=MemoryProfileSource(sample_profiles(NOW)), clock=lambda: NOW
    )
    return Reloader(service.decider, load, rules_dir=rules, clock=lambda: NOW)


async def started(load: HeldLoad) -> None:
    while not load.started.is_set():
        await asyncio.sleep(0.005)
    load.started.clear()


def test_triggers_during_a_reload_cause_one_more(rules_copy: Path, engine_name: str) -> None:
    """200 SIGHUPs and 5 admin calls while a reload runs: two reloads in all, each admin
    caller answered by the second (which began after it), both off the loop's thread."""
    load = HeldLoad(rules_copy, engine_name)
    reloader = reloader_for(rules_copy, engine_name, load)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        async with reloader.running(watch=False, debounce_ms=50):
            first = asyncio.create_task(reloader.reload("admin"))
            await started(load)
            for _ in range(200):
                os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.sleep(0.05)  # the signal handlers run on the loop
            admins = [asyncio.create_task(reloader.reload("admin")) for _ in range(5)]
            await asyncio.sleep(0.05)
            load.release.set()
            records = await asyncio.gather(first, *admins)
        assert load.calls == 2
        assert reloader.reloads == 2
        assert all(record.ok for record in records)
        assert records[0].trigger == "admin"
        # the five later callers share the one reload that began after them: the SIGHUPs'
        assert {id(record) for record in records[1:]} == {id(records[1])}
        assert records[1].trigger == "sighup"
        assert records[1] is not records[0]
        assert loop_thread not in load.threads

    asyncio.run(scenario())


def test_a_trigger_after_the_merged_reload_began_gets_its_own(rules_copy: Path) -> None:
    """A trigger that arrives once the queued reload has started reading waits for a third:
    no trigger is answered by a reload that may have read the files before it."""
    load = HeldLoad(rules_copy, "cel-python")
    reloader = reloader_for(rules_copy, "cel-python", load)

    async def scenario() -> None:
        first = reloader.request("watch")
        await started(load)
        second = reloader.request("watch")
        load.release.set()
        await first
        load.release.clear()
        await started(load)  # the second has begun
        third = reloader.request("admin")
        assert third is not second
        load.release.set()
        assert (await second).ok
        assert (await third).trigger == "admin"
        assert load.calls == 3

    asyncio.run(scenario())


def test_a_caller_that_goes_away_does_not_cancel_the_reload(rules_copy: Path) -> None:
    """An admin client that hangs up mid-reload (its handler cancelled) leaves the reload,
    and everyone else waiting for it, alone."""
    load = HeldLoad(rules_copy, "cel-expr")
    reloader = reloader_for(rules_copy, "cel-expr", load)

    async def scenario() -> None:
        leaving = asyncio.create_task(reloader.reload("admin"))
        staying = asyncio.create_task(reloader.reload("admin"))
        await started(load)
        leaving.cancel()
        load.release.set()
        record = await staying
        assert record.ok
        assert leaving.cancelled()
        assert reloader.reloads == 1

    asyncio.run(scenario())
