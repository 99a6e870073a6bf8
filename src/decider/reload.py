"""Hot reload: build a whole new ruleset, test it, and swap one reference only if all passes.

Triggers: a change under the rules directory or to a symlink on its way (watched, bursts
merged), SIGHUP, and POST /admin/reload. One reload runs at a time, and triggers arriving
while it runs are merged into one more, which starts after it: a storm of signals costs two
reloads, and every trigger is answered by a reload that began after it. A failed reload,
whatever the failure, keeps the last good ruleset serving and is recorded, logged and counted.

`load` (given by the composition root) builds and tests a ruleset from the files, on an
engine of its own, in a worker thread on either engine, so requests keep flowing meanwhile;
the swap is one reference assignment on the loop: no request sees half a ruleset. `load`
reads one revision of the rules (see `decider.rules.files.revision_dir`): operators swap a
change to several files in at once by pointing a symlink at a new directory, and the watcher
follows the symlink, so such a swap is seen once, whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, suppress
from datetime import datetime
from pathlib import Path

import msgspec
from watchfiles import Change, awatch

from decider.errors import Problem, RulesetError
from decider.rules.files import links_of, revision_dir
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
        rules_dir: Path,
        clock: Callable[[], datetime],
    ) -> None:
        self.decider = decider
        self.rules_dir = rules_dir
        self._load = load
        self._clock = clock
        self.loaded_at = clock()
        self.last: ReloadRecord | None = None
        self.reloads = 0
        self.failed = 0
        self.by_outcome: Counter[tuple[str, bool]] = Counter()  # (trigger, ok) -> reloads
        # the reload the next triggers wait for, not begun yet, and its trigger
        self._queued: tuple[asyncio.Future[ReloadRecord], str] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._layout = _Layout.of(rules_dir)  # where the last reload requested reads

    def request(self, trigger: str) -> asyncio.Future[ReloadRecord]:
        """A reload that begins after now: the one already waiting if there is one, else a
        new one, which runs once the reload in progress (if any) is done."""
        if self._queued is None:
            self._queued = (asyncio.get_running_loop().create_future(), trigger)
            if self._worker is None or self._worker.done():
                self._worker = asyncio.create_task(self._work())
        return self._queued[0]

    async def reload(self, trigger: str) -> ReloadRecord:
        """Try the rules on disk, swapping them in only if they compile and their tests
        pass; the record of the reload that covered this request."""
        # shielded: a caller that goes away must not cancel the reload others wait for
        return await asyncio.shield(self.request(trigger))

    async def _work(self) -> None:
        while self._queued is not None:
            waiting, trigger = self._queued
            self._queued = None
            record = await self._reload(trigger)
            self.reloads += 1  # counted once the outcome is recorded, never before
            self.by_outcome[trigger, record.ok] += 1
            if not waiting.done():
                waiting.set_result(record)

    async def _reload(self, trigger: str) -> ReloadRecord:
        try:
            ruleset = await asyncio.to_thread(self._load)
        except RulesetError as exc:
            return self._refused(trigger, exc.problems)
        except Exception as exc:  # a bug or an I/O error must not stop reloading for good
            log.exception("reload (%s) failed", trigger, extra=_event(trigger, ok=False))
            problem = Problem(str(self.rules_dir), 1, 1, f"reload failed: {exc!r}")
            return self._refused(trigger, (problem,))
        previous = self.decider.swap(ruleset)
        self.loaded_at = self._clock()
        self.last = ReloadRecord(self.loaded_at, True, trigger)
        log.info(
            "reload (%s): ruleset %s -> %s",
            trigger,
            previous.version,
            ruleset.version,
            extra=_event(trigger, ok=True, ruleset=ruleset.version),
        )
        return self.last

    def _refused(self, trigger: str, problems: tuple[Problem, ...]) -> ReloadRecord:
        self.failed += 1
        self.last = ReloadRecord(self._clock(), False, trigger, problems)
        log.warning(
            "reload (%s) refused, still serving %s: %d problem(s), first: %s",
            trigger,
            self.decider.ruleset.version,
            len(problems),
            problems[0],
            extra=_event(trigger, ok=False, ruleset=self.decider.ruleset.version),
        )
        return self.last

    def state(self, last: ReloadRecord | None = None) -> RulesState:
        """The loaded rules; `last_reload` is `last` if given (the reload a caller waited
        for), else the latest."""
        ruleset = self.decider.ruleset
        return RulesState(
            version=ruleset.version,
            engine=ruleset.engine.name,
            loaded_at=self.loaded_at,
            files=ruleset.files,
            warnings=ruleset.warnings,
            last_reload=last or self.last,
            reloads=self.reloads,
            failed_reloads=self.failed,
        )

    @asynccontextmanager
    async def running(self, *, watch: bool, debounce_ms: int) -> AsyncIterator[None]:
        """Reload on SIGHUP (where signals can be had) and, if `watch`, on file changes."""
        stop = asyncio.Event()
        watcher = asyncio.create_task(self.watch(stop, debounce_ms=debounce_ms)) if watch else None
        hangup = _on_sighup(lambda: self.request("sighup"))
        try:
            yield
        finally:
            hangup()
            stop.set()
            if watcher is not None:
                await watcher
            if self._worker is not None:  # a reload still compiling is dropped, not swapped
                self._worker.cancel()
                with suppress(asyncio.CancelledError):
                    await self._worker

    async def watch(self, stop: asyncio.Event, *, debounce_ms: int) -> None:
        """Reload on every burst of changes to YAML files of the revision served, and on
        every swap of a symlink on the way to it (then follow it to the new revision)."""
        while not stop.is_set():
            layout = self._look()  # swapped since the last reload began: one more
            moved = asyncio.Event()
            done = _Either(stop, moved)
            followers = [self._follow(layout, [layout.revision], True, done, debounce_ms)]
            if layout.links:
                parents = sorted({link.parent for link in layout.links})
                followers.append(self._follow(layout, parents, False, done, debounce_ms))
            await asyncio.gather(*(_then_set(moved, follower) for follower in followers))

    async def _follow(
        self,
        layout: _Layout,
        paths: list[Path],
        recursive: bool,
        done: _Either,
        debounce_ms: int,
    ) -> None:
        """Request a reload on each burst of changes under `paths` that `layout` cares about,
        until `done`; returns early when the links lead elsewhere, or when the revision
        directory, deleted, is back (a watch on a deleted directory sees nothing more)."""
        accept = layout.rule_file if recursive else layout.link
        changes = awatch(
            *paths,
            watch_filter=accept,
            recursive=recursive,
            debounce=debounce_ms,
            step=50,
            stop_event=done,
        )
        try:
            async with aclosing(changes):
                async for _ in changes:
                    if self._look() != layout:  # a swap: _look asked for the one reload
                        return
                    self.request("watch")
                    if not layout.revision.is_dir():
                        break
                else:
                    return  # done
        except Exception:  # e.g. a directory not there (yet), or no inotify watch left
            log.warning("cannot watch %s; looking again every second", self.rules_dir)
        gone = not layout.revision.is_dir()
        while not done.is_set() and self._look() == layout:
            await asyncio.sleep(1)
            if gone and layout.revision.is_dir():
                self.request("watch")
                return

    def _look(self) -> _Layout:
        """Where the rules are now; a reload is requested if that changed since the last
        request (each reload reads the layout it finds)."""
        layout = _Layout.of(self.rules_dir)
        if layout != self._layout:
            self._layout = layout
            self.request("watch")
        return layout


async def _then_set(event: asyncio.Event, awaitable: Awaitable[None]) -> None:
    """Await, then set `event` however it ended: when one follower stops, all do."""
    try:
        await awaitable
    finally:
        event.set()


class _Layout(msgspec.Struct, frozen=True):
    """Where the rules are read from now: the revision directory, and the symlinks on the
    way to it (a swap of any of them is a new revision)."""

    revision: Path
    links: frozenset[Path]

    @classmethod
    def of(cls, rules_dir: Path) -> _Layout:
        return cls(Path(os.path.abspath(revision_dir(rules_dir))), frozenset(links_of(rules_dir)))

    def rule_file(self, _: Change, path: str) -> bool:
        return path.endswith(".yaml")

    def link(self, _: Change, path: str) -> bool:
        return Path(path) in self.links


class _Either:
    """Set when either event is: watchfiles asks its stop event `is_set()` every step."""

    def __init__(self, *events: asyncio.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


def _on_sighup(reload: Callable[[], object]) -> Callable[[], object]:
    """Reload on SIGHUP where signals can be had (the main thread); returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
        return lambda: False
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


def _event(trigger: str, *, ok: bool, ruleset: str | None = None) -> dict[str, object]:
    """A reload's fields in the structured log."""
    fields: dict[str, object] = {"event": "reload", "trigger": trigger, "ok": ok}
    if ruleset is not None:
        fields["ruleset"] = ruleset
    return fields
