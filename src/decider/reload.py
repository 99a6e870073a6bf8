"""Hot reload: build a whole new ruleset, test it, and swap one reference only if all passes.

Triggers: a change under the rules directory (watched, bursts merged), SIGHUP, and
POST /admin/reload; one reload runs at a time. A failed reload, whatever the failure, keeps
the last good ruleset serving and is recorded, logged and counted.

`load` (given by the composition root) builds and tests a ruleset from the files. With
cel-expr it runs in a worker thread, with an engine of its own, so requests keep flowing
meanwhile; cel-python must compile and evaluate on the event loop's thread, so there a reload
pauses requests for its duration. Either way the swap is one reference assignment on the
loop: no request sees half a ruleset.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import msgspec
from watchfiles import Change, awatch

from decider.errors import Problem, RulesetError
from decider.ruleset import CompiledRuleset
from decider.service import Decider

log = logging.getLogger("decider.reload")


class ReloadRecord(msgspec.Struct, frozen=True):
    at: datetime
    ok: bool
    trigger: str
    errors: tuple[Problem, ...] = ()


class RulesState(msgspec.Struct, frozen=True):
    """What GET /admin/rules answers."""

    version: str
    engine: str
    loaded_at: datetime
    files: tuple[str, ...]
    warnings: tuple[Problem, ...]
    last_reload: ReloadRecord | None
    reloads: int
    failed_reloads: int


class Reloader:
    def __init__(
        self,
        decider: Decider,
        load: Callable[[], CompiledRuleset],
        *,
        off_loop: bool,
        rules_dir: Path,
        clock: Callable[[], datetime],
    ) -> None:
        self.decider = decider
        self.rules_dir = rules_dir
        self._load = load
        self._off_loop = off_loop
        self._clock = clock
        self.loaded_at = clock()
        self.last: ReloadRecord | None = None
        self.reloads = 0
        self.failed = 0
        self._lock = asyncio.Lock()

    async def reload(self, trigger: str) -> ReloadRecord:
        """Try the rules on disk now; swap them in only if they compile and their tests pass."""
        async with self._lock:
            record = await self._reload(trigger)
            self.reloads += 1  # counted once the outcome is recorded, never before
            return record

    async def _reload(self, trigger: str) -> ReloadRecord:
        try:
            ruleset = await asyncio.to_thread(self._load) if self._off_loop else self._load()
        except RulesetError as exc:
            return self._refused(trigger, exc.problems)
        except Exception as exc:  # a bug or an I/O error must not stop reloading for good
            log.exception("reload (%s) failed", trigger)
            problem = Problem(str(self.rules_dir), 1, 1, f"reload failed: {exc!r}")
            return self._refused(trigger, (problem,))
        else:
            previous = self.decider.swap(ruleset)
            self.loaded_at = self._clock()
            record = ReloadRecord(self.loaded_at, True, trigger)
            log.info("reload (%s): ruleset %s -> %s", trigger, previous.version, ruleset.version)
        self.last = record
        return record

    def _refused(self, trigger: str, problems: tuple[Problem, ...]) -> ReloadRecord:
        self.failed += 1
        self.last = ReloadRecord(self._clock(), False, trigger, problems)
        log.warning(
            "reload (%s) refused, still serving %s: %d problem(s), first: %s",
            trigger,
            self.decider.ruleset.version,
            len(problems),
            problems[0],
        )
        return self.last

    def state(self) -> RulesState:
        ruleset = self.decider.ruleset
        return RulesState(
            version=ruleset.version,
            engine=ruleset.engine.name,
            loaded_at=self.loaded_at,
            files=ruleset.files,
            warnings=ruleset.warnings,
            last_reload=self.last,
            reloads=self.reloads,
            failed_reloads=self.failed,
        )

    @asynccontextmanager
    async def running(self, *, watch: bool, debounce_ms: int) -> AsyncIterator[None]:
        """Reload on SIGHUP (where signals can be had) and, if `watch`, on file changes."""
        stop = asyncio.Event()
        watcher = asyncio.create_task(self.watch(stop, debounce_ms=debounce_ms)) if watch else None
        pending: set[asyncio.Task[ReloadRecord]] = set()

        def on_sighup() -> None:
            task = asyncio.ensure_future(self.reload("sighup"))
            pending.add(task)  # held until done, or it could be collected mid-reload
            task.add_done_callback(pending.discard)

        hangup = _on_sighup(on_sighup)
        try:
            yield
        finally:
            hangup()
            stop.set()
            if watcher is not None:
                await watcher

    async def watch(self, stop: asyncio.Event, *, debounce_ms: int) -> None:
        """Reload on every burst of changes to YAML files under the rules directory."""
        async for _ in awatch(
            self.rules_dir,
            watch_filter=_is_rule_file,
            debounce=debounce_ms,
            step=50,
            stop_event=stop,
        ):
            await self.reload("watch")


def _is_rule_file(_: Change, path: str) -> bool:
    return path.endswith(".yaml")


def _on_sighup(reload: Callable[[], object]) -> Callable[[], object]:
    """Reload on SIGHUP where signals can be had (the main thread); returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
        return lambda: False
    return lambda: loop.remove_signal_handler(signal.SIGHUP)
