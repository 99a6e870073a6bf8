"""What this process counted per segment (decider.stats), added to the usage file
(decider.usage.book) off the request path, so wins and last matches survive restarts.

The keeper writes every DECIDER_USAGE_FLUSH_S, when the service starts and stops, before a
worker writes its report for another (decider.server.peers: an admin call that gathers every
worker's report then reads an up-to-date file), and before it answers GET /admin/segments.
Each write takes, on the event loop (where the counters change), what was counted since the
last, and adds it to the file in a worker thread. A write that fails is carried into the
next: counts are late while the file cannot be written, not lost (unless the service stops
first). The first failure is logged with its reason, then nothing until a write or read
succeeds again (logged too); `failed` counts failed writes for /admin/traffic and /metrics.

A segment's first sighting is when a ruleset holding it began serving here (the reloader's
`loaded_at`), noted at the next write: a segment added and removed again between two writes
is seen only if it won.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

import msgspec

from decider.stats import Stats
from decider.usage.book import Added, Usage, UsageBook, UsageError

log = logging.getLogger("decider")

# the segment ids served now, and since when
Serving = Callable[[], tuple[Sequence[str], datetime]]


class Snapshot(msgspec.Struct, frozen=True):
    """The usage file's rows as of `at` (this process's counts written first), or why they
    are unavailable (`usage` None)."""

    at: datetime
    usage: dict[str, Usage] | None
    problem: str | None = None


class UsageKeeper:
    def __init__(
        self,
        book: UsageBook,
        stats: Stats,
        serving: Serving,
        *,
        clock: Callable[[], datetime],
        every_s: float,
        idle_days: int,
    ) -> None:
        self.book = book
        self.idle_days = idle_days  # a segment unmatched this long is idle (GET /admin/segments)
        self._stats = stats
        self._serving = serving
        self._clock = clock
        self._every_s = every_s
        self._marks: dict[str, tuple[int, datetime | None]] = {}  # counts taken, by segment
        self._first: dict[str, datetime] = {}  # when each segment was first served here
        self._noted: set[str] = set()  # segments whose first sighting was taken
        self._carried: dict[str, Added] = {}  # taken, but their write failed
        self._writes: set[asyncio.Task[None]] = set()
        self._failing = False
        self.written = 0  # writes that succeeded
        self.failed = 0  # writes that failed

    async def flush(self) -> str | None:
        """Add what was counted since the last write; why that failed, if it did. Never
        raises; a caller cancelled meanwhile leaves the write to finish."""
        rows = self._take()
        if not rows:
            return None
        write = asyncio.create_task(asyncio.to_thread(self.book.add, rows))
        self._writes.add(write)
        write.add_done_callback(lambda done: self._settle(done, rows))
        try:
            await asyncio.shield(write)
        except Exception as exc:  # UsageError; anything else is a bug, which must not spread
            return _why(exc)
        return None

    async def snapshot(self) -> Snapshot:
        """The file's rows once this process's counts are in it; never raises."""
        problem = await self.flush()
        at = self._clock()
        if problem is not None:
            return Snapshot(at, None, problem)
        try:
            usage = await asyncio.to_thread(self.book.read)
        except UsageError as exc:
            self._failed(str(exc))
            return Snapshot(at, None, str(exc))
        self._recovered()
        return Snapshot(at, usage)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Write now, then every `every_s` while inside; on the way out, what is left."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._every(stop))
        try:
            yield
        finally:
            stop.set()
            await task
            while self._writes:  # e.g. for a report asked as the service stopped
                await asyncio.wait(set(self._writes))
            await self.flush()
            await asyncio.to_thread(self.book.close)

    async def _every(self, stop: asyncio.Event) -> None:
        while True:
            await self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every_s)
                return

    def _take(self) -> list[Added]:
        """The rows to add: what was counted since last taken, new segments served, and
        what a failed write left. Taken on the loop, so a count is taken once."""
        ids, since = self._serving()
        for segment in ids:
            self._first.setdefault(segment, since)
        rows, self._carried = self._carried, {}
        for segment, counted in self._stats.segments.items():
            wins, last = self._marks.get(segment, (0, None))
            if counted.wins == wins and counted.last_matched == last:
                continue
            self._marks[segment] = (counted.wins, counted.last_matched)
            first = self._first.get(segment) or counted.last_matched or since
            self._add(rows, Added(segment, counted.wins - wins, counted.last_matched, first))
        for segment in ids:
            if segment not in self._noted:
                self._noted.add(segment)
                self._add(rows, Added(segment, 0, None, self._first[segment]))
        return list(rows.values())

    @staticmethod
    def _add(rows: dict[str, Added], row: Added) -> None:
        before = rows.get(row.segment)
        rows[row.segment] = before.merged(row) if before else row

    def _settle(self, write: asyncio.Task[None], rows: list[Added]) -> None:
        """A write is done: count it, and carry its rows into the next if it failed."""
        self._writes.discard(write)
        # cancelled: the loop is closing, and no write follows (the thread may yet finish)
        error = asyncio.CancelledError() if write.cancelled() else write.exception()
        if error is None:
            self.written += 1
            self._recovered()
            return
        self.failed += 1
        for row in rows:
            self._add(self._carried, row)
        self._failed(_why(error))

    def _failed(self, problem: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "segment usage: %s; counts since are kept here and written when it can be",
                problem,
                extra={"event": "usage_failed", "reason": problem},
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info(
                "segment usage: %s is written again",
                self.book.path,
                extra={"event": "usage_writing"},
            )


def _why(error: BaseException) -> str:
    return str(error) if isinstance(error, UsageError) else repr(error)
