"""The workers serving one port, as one service to an operator.

`decider serve --workers N` starts N processes, each with its own listener on the port
(SO_REUSEPORT), its own caches, counters and ruleset (see decider.server.workers). What an
operator asks of one of them (the loaded rules, segment usage, traffic, metrics, a reload)
must answer for all of them, whichever took the connection. Each worker keeps a report of
itself in a file of the run directory the supervisor made, written when it is asked:

- SIGUSR1: apply the notes appended to the run directory's `notes.jsonl` since you last
  looked (another worker was told a profile changed: every worker's cache must forget it),
  do what must precede a report (`before_report`: write your segment usage to the usage
  file, which the answering worker reads next), then write your report now (another worker
  is answering an admin call or a scrape);
- SIGUSR2: reload the rules, then write your report (another worker answered
  POST /admin/reload).

The worker answering reads every report once each is newer than its question (a worker that
does not answer within a second is reported as it last wrote). Nothing is written on the
decision path, and nothing at all when nobody asks. A single process is its own only peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from decider.reload import Reloader, ReloadRecord, RulesState
from decider.server.report import SegmentsReport, Traffic

# what workers are asked by (SIGHUP: reload; peers: SIGUSR1, SIGUSR2): blocked from their
# start until their handlers are in place, where the default would end the process
ASKED = frozenset({signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2})
# how long an answering worker waits for the others' reports before using what it has (for
# their reloads: DECIDER_RELOAD_WAIT_S, for a large rulebook takes seconds to compile and test)
ASK_TIMEOUT_S = 1.0
# how long a worker asked for its report lets `before_report` delay it: well within the above
BEFORE_REPORT_S = ASK_TIMEOUT_S / 2
REPORT_GLOB = "worker-*.json"
NOTES = "notes.jsonl"
log = logging.getLogger("decider")


class Sample(msgspec.Struct, frozen=True, array_like=True):
    name: str
    labels: dict[str, str]
    value: float


class Family(msgspec.Struct, frozen=True, array_like=True):
    """One Prometheus metric family as a worker collected it."""

    name: str
    documentation: str
    type: str
    samples: tuple[Sample, ...]


class WorkerReport(msgspec.Struct, frozen=True):
    """What one worker says of itself: when it wrote this, its rules, usage and traffic,
    its metrics, and until when the reloads other workers asked of it are done."""

    worker: int
    pid: int
    written_at: float
    reloaded_for: float
    notes_seen: int
    rules: RulesState
    segments: SegmentsReport
    traffic: Traffic
    metrics: tuple[Family, ...]


@dataclass(frozen=True)
class Place:
    """Where a worker stands: its index among `count`, and the run directory the supervisor
    made."""

    index: int
    run_dir: Path
    count: int = 1

    def report_path(self, index: int | None = None) -> Path:
        return self.run_dir / f"worker-{self.index if index is None else index}.json"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WorkerReport)


class Peers:
    """This process among the workers of one service: `reports()` of all of them, and
    `reload()` on all of them. `report` tells this process's own state; `before_report` is
    awaited (for up to BEFORE_REPORT_S, then cancelled) before a report another worker asked
    for is written."""

    def __init__(
        self,
        place: Place | None,
        report: Callable[[float, int], WorkerReport],
        *,
        reload_wait_s: float = 30.0,
        on_note: Callable[[bytes], object] = lambda _: None,
        before_report: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.place = place
        self._report = report
        self._before_report = before_report
        self._answering: set[asyncio.Task[None]] = set()
        self._reload_wait_s = reload_wait_s
        self._on_note = on_note
        self._notes_seen = 0  # bytes of notes.jsonl applied
        self._reloaded_for = 0.0  # every reload asked before this (time.time()) is done

    @property
    def index(self) -> int:
        return self.place.index if self.place else 0

    def own(self) -> WorkerReport:
        return self._report(self._reloaded_for, self._notes_seen)

    async def reports(self) -> list[WorkerReport]:
        """Every worker's report, fresh, in worker order."""
        if self.place is None:
            return [self.own()]
        return await self._ask(signal.SIGUSR1, lambda report, asked: report.written_at >= asked)

    async def reload(
        self, reloader: Reloader
    ) -> tuple[ReloadRecord, list[WorkerReport], tuple[int, ...]]:
        """Reload here, and on every other worker a reload that begins after this call; the
        record of the reload here, every worker's report once theirs are done, and the
        workers that did not confirm theirs (stopped, slower than `reload_wait_s`, or gone)."""
        asked = time.time()
        if self.place is None:
            record = await reloader.reload("admin")
            return record, [self.own()], ()
        others = self._signal(signal.SIGUSR2)
        record = await self._reload_here(reloader, asked)
        reports, unconfirmed = await self._wait(
            others, asked, lambda report, at: report.reloaded_for >= at, self._reload_wait_s
        )
        return record, reports, unconfirmed

    async def tell(self, note: bytes) -> tuple[int, ...]:
        """Have every other worker apply `note` (a line of JSON) as this one has; the workers
        that did not confirm within a second."""
        if self.place is None:
            return ()
        notes = self.place.run_dir / NOTES
        with notes.open("ab") as file:  # appends of one write land whole, in some order
            file.write(note + b"\n")
            end = file.tell()
        self._catch_up()
        others = self._signal(signal.SIGUSR1)
        _, unconfirmed = await self._wait(others, end, lambda report, at: report.notes_seen >= at)
        return unconfirmed

    def _answer(self) -> None:
        """SIGUSR1: the notes since last time, then this worker's report."""
        self._catch_up()
        if self._before_report is None:
            self.publish()
            return
        task = asyncio.get_running_loop().create_task(self._prepared(self._before_report))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _prepared(self, before: Callable[[], Awaitable[object]]) -> None:
        try:
            await asyncio.wait_for(before(), BEFORE_REPORT_S)
        except TimeoutError:
            pass  # late: the report is due all the same
        except Exception:
            log.exception("cannot prepare this worker's report; writing it all the same")
        self.publish()

    def _catch_up(self) -> None:
        assert self.place is not None
        try:
            with (self.place.run_dir / NOTES).open("rb") as file:
                file.seek(self._notes_seen)
                data = file.read()
        except OSError:
            return
        whole = data.rfind(b"\n") + 1  # a note being appended now is read next time
        for line in data[:whole].splitlines():
            try:
                self._on_note(line)
            except Exception:  # a note this worker cannot read must not stop the rest
                log.exception("cannot apply a note from another worker")
        self._notes_seen += whole

    def publish(self) -> None:
        """Write this worker's report, whole (a reader never sees half of it); the run
        directory again if it was removed (a /tmp cleaner)."""
        if self.place is None:
            return
        path = self.place.report_path()
        partial = path.with_suffix(".tmp")
        try:
            try:
                partial.write_bytes(_encoder.encode(self.own()))
            except FileNotFoundError:
                self.place.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                partial.write_bytes(_encoder.encode(self.own()))
            os.replace(partial, path)
        except OSError as exc:
            log.warning(
                "cannot write this worker's report in %s (%s): the others leave it out",
                self.place.run_dir,
                exc.strerror,
            )

    @contextlib.contextmanager
    def answering(self, reloader: Reloader) -> Iterator[None]:
        """While inside, answer other workers' questions (SIGUSR1, SIGUSR2) on this loop."""
        if self.place is None:
            yield
            return
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[ReloadRecord]] = set()

        def reload_asked() -> None:
            task = loop.create_task(self._reload_here(reloader, time.time()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        # a worker starting now has nothing cached that notes before it could be about
        with contextlib.suppress(OSError):
            self._notes_seen = (self.place.run_dir / NOTES).stat().st_size
        loop.add_signal_handler(signal.SIGUSR1, self._answer)
        loop.add_signal_handler(signal.SIGUSR2, reload_asked)
        # held since the worker started (decider.server.workers): answered from now on
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ASKED)
        self.publish()  # the supervisor waits for it: this worker is ready
        try:
            yield
        finally:
            for task in self._answering:  # a report written after this would list it again
                task.cancel()
            # unlisted first: nobody signals a worker that no longer answers
            with contextlib.suppress(FileNotFoundError):
                self.place.report_path().unlink()
            loop.remove_signal_handler(signal.SIGUSR1)
            loop.remove_signal_handler(signal.SIGUSR2)

    async def _reload_here(self, reloader: Reloader, asked: float) -> ReloadRecord:
        """Reload this worker; then every reload asked before `asked` is done here."""
        record = await reloader.reload("admin")
        self._reloaded_for = max(self._reloaded_for, asked)
        self.publish()
        return record

    async def _ask(
        self, signum: signal.Signals, done: Callable[[WorkerReport, float], bool]
    ) -> list[WorkerReport]:
        asked = time.time()
        others = self._signal(signum)
        self.publish()
        reports, _ = await self._wait(others, asked, done)
        return reports

    def _signal(self, signum: signal.Signals) -> dict[int, WorkerReport]:
        """Send `signum` to every other worker; their last reports, by worker."""
        others = {}
        for report in self._read_all():
            if report.worker == self.index or not _sibling(report.pid):
                continue
            try:
                os.kill(report.pid, signum)
            except ProcessLookupError:  # gone: the supervisor removes its report
                continue
            others[report.worker] = report
        return others

    async def _wait(
        self,
        others: dict[int, WorkerReport],
        asked: float,
        done: Callable[[WorkerReport, float], bool],
        timeout: float = ASK_TIMEOUT_S,
    ) -> tuple[list[WorkerReport], tuple[int, ...]]:
        """Every worker's report once each of `others` is `done` (or `timeout` has passed),
        and the workers that are not: still waited for, or with no report to ask."""
        assert self.place is not None
        latest = dict(others)
        deadline = time.monotonic() + timeout
        waiting = set(others)
        delay = 0.001
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            for worker in list(waiting):
                report = read_report(self.place.report_path(worker))
                if report is not None and report.pid == others[worker].pid:
                    latest[worker] = report
                    if done(report, asked):
                        waiting.discard(worker)
        latest[self.index] = self.own()
        unconfirmed = waiting | (set(range(self.place.count)) - set(latest))
        return [latest[worker] for worker in sorted(latest)], tuple(sorted(unconfirmed))

    def _read_all(self) -> list[WorkerReport]:
        assert self.place is not None
        found = (read_report(path) for path in sorted(self.place.run_dir.glob(REPORT_GLOB)))
        return [report for report in found if report is not None]


def _sibling(pid: int) -> bool:
    """Whether `pid` is another worker of this process's supervisor: a report file names a
    process to signal, and only those are (where /proc tells; elsewhere, trusted)."""
    if not Path("/proc/self").exists():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return False
    # after the command name, in parentheses and perhaps holding spaces: state, then ppid
    return int(stat.rpartition(")")[2].split()[1]) == os.getppid()


def read_report(path: Path) -> WorkerReport | None:
    """The report at `path`, if there is one whole."""
    try:
        return _decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):  # gone, or a worker of another version
        return None
