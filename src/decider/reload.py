"""Hot reload: build a whole new ruleset, test it, and swap one reference only if all passes.

Triggers: a change under the rules directory (watched, bursts merged), SIGHUP, and
POST /admin/reload; one reload runs at a time. A failed reload, whatever the failure, keeps
the last good ruleset serving and is recorded, logged and counted.

With cel-expr the new ruleset is compiled and tested in a worker thread, with an engine of
its own, so requests keep flowing meanwhile; cel-python must compile and evaluate on the
event loop's thread, so there a reload pauses requests for its duration. Either way the
swap is one reference assignment on the loop: no request sees half a ruleset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec
from watchfiles import Change, awatch

from decider.cel import new_engine
from decider.errors import Problem, RulesetError
from decider.service import Decider
from decider.suites import compile_and_test

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
    def __init__(self, decider: Decider, rules_dir: Path, clock: Callable[[], datetime]) -> None:
        self.decider = decider
        self.rules_dir = rules_dir
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
        engine = new_engine(self.decider.ruleset.engine.name)
        try:
            if engine.off_loop:
                ruleset = await asyncio.to_thread(compile_and_test, self.rules_dir, engine)
            else:
                ruleset = compile_and_test(self.rules_dir, engine)
        except RulesetError as exc:
            return self._refused(trigger, exc.problems)
        except Exception as exc:  # a bug or an I/O error must not stop reloading for good
            log.exception("reload (%s) failed", trigger)
            problem = Problem(str(self.rules_dir), 1, 1, f"reload failed: {exc!r}")
            return self._refused(trigger, (problem,))
        else:
            previous = self.decider.ruleset.version
            self.decider.ruleset = ruleset
            self.loaded_at = self._clock()
            record = ReloadRecord(self.loaded_at, True, trigger)
            log.info("reload (%s): ruleset %s -> %s", trigger, previous, ruleset.version)
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

    async def watch(self, stop: asyncio.Event, *, debounce_ms: int = 200) -> None:
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
