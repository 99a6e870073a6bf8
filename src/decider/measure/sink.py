"""Where exposure and outcome records go, off the request path.

A sink's `offer` puts a record on a bounded in-memory queue and returns at once; it never
blocks and never raises, so a slow or full disk never slows a decision. A thread drains the
queue in batches, encodes them as JSON lines and hands them to a writer: JSONL files in a
directory, rotated by size, or standard output for a log shipper. A record offered to a full
queue is dropped and counted; records a writer cannot write are counted as failed, and the
first failure of a burst is logged (then nothing until the writer recovers, which is logged
too). `counts` keeps written, dropped and failed for the metrics.

Another sink (Kafka, say) is a writer: anything with `write(bytes)` and `close()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from decider.measure.records import Record, record_encoder

log = logging.getLogger("decider")

SinkKind = Literal["none", "jsonl", "stdout"]
BATCH = 4096  # records a writer is handed at once, at most
IDLE_S = 0.05  # how often the writer takes what is queued (an acknowledged offer wakes it)
CLOSE_WAIT_S = 10.0  # how long closing waits for a writer to finish what is queued
PRUNE_EVERY_S = 3600.0  # how often a writer removes files past their retention
DROPS_SAID_EVERY_S = 10.0  # how often dropped records are logged, at most


class Counts:
    """Records written, dropped (the queue was full, or the sink closed) and failed (the
    writer could not write them): written and failed by the writer's thread, dropped where
    records are offered."""

    __slots__ = ("dropped", "failed", "written")

    def __init__(self) -> None:
        self.written = self.dropped = self.failed = 0


class WriteFailed(Exception):
    """A writer wrote only the first `lines` lines it was given; `reason` says why, in words
    that hold no data."""

    def __init__(self, lines: int, reason: str) -> None:
        super().__init__(reason)
        self.lines = lines
        self.reason = reason


class Writer(Protocol):
    def write(self, data: bytes) -> None:
        """Write whole JSON lines. Raises WriteFailed."""

    def close(self) -> None: ...


class Sink(Protocol):
    """What the service offers records to."""

    counts: Counts

    def offer(self, record: Record) -> bool:
        """Queue `record`; False if it was dropped. Never blocks, never raises."""

    def offer_acked(self, records: Sequence[Record], done: Callable[[bool], None]) -> bool:
        """Queue `records`; `done(ok)` is called, on the writer's thread, once they are
        written (ok) or failed. False (and no call) if they were dropped."""

    def start(self) -> None: ...

    def close(self) -> None:
        """Write what is queued, then stop; later offers are dropped."""


class NoSink:
    """Measuring off: every record is refused, uncounted."""

    def __init__(self) -> None:
        self.counts = Counts()

    def offer(self, record: Record) -> bool:
        return False

    def offer_acked(self, records: Sequence[Record], done: Callable[[bool], None]) -> bool:
        return False

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Acked:
    __slots__ = ("done", "records")

    def __init__(self, records: Sequence[Record], done: Callable[[bool], None]) -> None:
        self.records = records
        self.done = done


class QueuedSink:
    """A bounded queue of records, drained by a thread into `writer`. `name` says which
    records these are, in log lines."""

    __slots__ = (
        "_dropped_said_at",
        "_dropped_seen",
        "_failing",
        "_limit",
        "_maintain",
        "_queue",
        "_stopping",
        "_thread",
        "_wake",
        "_writer",
        "counts",
        "name",
    )

    def __init__(self, writer: Writer, *, limit: int, name: str) -> None:
        self.counts = Counts()
        self.name = name
        self._writer = writer
        self._limit = limit
        # each offered record already as its JSON line (without the newline): encoding on the
        # offering thread leaves this one only whole lines to join, so it holds the
        # interpreter the least while decisions wait for it
        self._queue: deque[bytes | _Acked] = deque()
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"decider-{name}", daemon=True)
        self._failing = False
        self._dropped_seen = 0
        self._dropped_said_at = -DROPS_SAID_EVERY_S
        # a writer may keep its files (JsonlFiles prunes them); asked while idle too
        self._maintain: Callable[[], None] | None = getattr(writer, "maintain", None)

    def offer(self, record: Record) -> bool:
        if self._stopping or len(self._queue) >= self._limit:
            self.counts.dropped += 1
            return False
        self._queue.append(_encode(record))
        return True

    def offer_acked(self, records: Sequence[Record], done: Callable[[bool], None]) -> bool:
        if self._stopping or len(self._queue) >= self._limit:
            self.counts.dropped += len(records)
            return False
        self._queue.append(_Acked(records, done))
        self._wake.set()
        return True

    def start(self) -> None:
        """Start the writer (again, after `close`: a service may be run more than once)."""
        if self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self._thread.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            lost = len(self._queue)
            log.warning(
                "%s log: the writer is still busy after %.0f s; %d queued records are lost",
                self.name,
                CLOSE_WAIT_S,
                lost,
                extra={"event": "records_unwritten", "kind": self.name, "count": lost},
            )
            return
        left = list(self._queue)  # offered to a writer never started
        self._queue.clear()
        self.counts.dropped += _count(left)
        for item in left:
            if isinstance(item, _Acked):
                item.done(False)
        try:
            self._writer.close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            log.warning(
                "%s log: cannot close (%s)",
                self.name,
                reason,
                extra={"event": "records_failed", "kind": self.name, "reason": reason},
            )

    def _run(self) -> None:
        """Every IDLE_S, or at once for a full batch, an acknowledged offer or closing: write
        what is queued. Batches gathered over a while, rather than each record as it comes,
        make few writes and few hand-overs of the interpreter between this thread and the
        event loop's (each costs the decisions in flight more than a record does)."""
        while True:
            stopping = self._stopping  # read first: what was offered before closing is written
            if not stopping and len(self._queue) < BATCH:
                self._wake.wait(IDLE_S)
                self._wake.clear()
                stopping = self._stopping
            items = self._drain()
            if items:
                self._write(items)
            elif self._maintain is not None:
                self._maintain_quietly(self._maintain)
            done = stopping and not self._queue
            self._note_drops(last=done)
            if done:
                return

    def _drain(self) -> list[bytes | _Acked]:
        queue = self._queue
        items: list[bytes | _Acked] = []
        while queue and len(items) < BATCH:
            items.append(queue.popleft())
        return items

    def _write(self, items: list[bytes | _Acked]) -> None:
        lines: list[bytes] = []
        acked: list[tuple[int, _Acked]] = []  # each with where its records end
        for item in items:
            if type(item) is bytes:
                lines.append(item)
            else:
                assert isinstance(item, _Acked)
                lines += map(_encode, item.records)
                acked.append((len(lines), item))
        written = len(lines)
        try:
            lines.append(b"")  # the last line's newline
            self._writer.write(b"\n".join(lines))
        except WriteFailed as exc:
            written = exc.lines
            self._failed(exc.reason)
        except Exception as exc:  # a writer's bug must not stop the thread
            written = 0
            self._failed(type(exc).__name__)
        else:
            if self._failing:
                self._failing = False
                log.info(
                    "%s log: writing again",
                    self.name,
                    extra={"event": "records_writing", "kind": self.name},
                )
        self.counts.written += written
        self.counts.failed += len(lines) - 1 - written
        for end, item in acked:
            try:
                item.done(end <= written)
            except Exception as exc:  # the service's bug: said, and the writer goes on
                log.error(
                    "%s log: a callback failed: %s",
                    self.name,
                    type(exc).__name__,
                    exc_info=exc,
                    extra={"kind": self.name},
                )

    def _failed(self, reason: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "%s log: cannot write (%s); records are lost, and counted as failed, until it can",
                self.name,
                reason,
                extra={"event": "records_failed", "kind": self.name, "reason": reason},
            )

    def _maintain_quietly(self, maintain: Callable[[], None]) -> None:
        try:
            maintain()
        except Exception as exc:  # a writer's bug must not stop the thread
            log.error(
                "%s log: upkeep failed: %s",
                self.name,
                type(exc).__name__,
                exc_info=exc,
                extra={"kind": self.name},
            )

    def _note_drops(self, *, last: bool = False) -> None:
        """Say that records were dropped for a full queue, at most every DROPS_SAID_EVERY_S
        (and once more as the writer stops) with how many since (by the writer's thread:
        the request path only counts)."""
        dropped = self.counts.dropped
        now = time.monotonic()
        due = last or now - self._dropped_said_at >= DROPS_SAID_EVERY_S
        if dropped != self._dropped_seen and due:
            self._dropped_said_at = now
            count = dropped - self._dropped_seen
            log.warning(
                "%s log: %d records dropped: the queue was full (DECIDER_EXPOSURE_QUEUE)",
                self.name,
                count,
                extra={"event": "records_dropped", "kind": self.name, "count": count},
            )
            self._dropped_seen = dropped


_encode = record_encoder.encode


def _count(items: Iterable[bytes | _Acked]) -> int:
    return sum(len(i.records) if isinstance(i, _Acked) else 1 for i in items)


class JsonlFiles:
    """JSON lines appended to files of their own in `directory`, named
    `<prefix>-<UTC time>-<pid>-<serial>.jsonl`, each up to `max_bytes` (a line longer than that
    is alone in its file): several processes never share a file, and the names sort by time.
    A file is opened at the first write, so a process that writes nothing makes none. After a
    failed write the file is cut back to its last whole line and left (removed if that leaves
    it empty); the next write opens another.

    With `retention_days`, files of the directory with this prefix not written to for that
    long are removed (by whichever process writes there: at its first write, then hourly),
    so records of people are not kept longer than their measurement needs."""

    def __init__(
        self, directory: Path, prefix: str, max_bytes: int, retention_days: int = 0
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self.path: Path | None = None
        self._fd: int | None = None
        self._size = 0
        self._serial = 0
        self._pruned_at = -PRUNE_EVERY_S

    def maintain(self) -> None:
        """Prune, if an hour has passed since the last time (the sink's thread asks, written
        to or not, so an idle service prunes too)."""
        if self.retention_days and time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self.prune()

    def write(self, data: bytes) -> None:
        self.maintain()
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self.close()  # removed under us (by hand, or another process's pruning): anew
        done = 0
        try:
            while done < len(data):
                if self._fd is None:
                    self._open()
                room = self.max_bytes - self._size
                end = len(data)
                if end - done > room:  # the whole lines that fit
                    end = data.rfind(b"\n", done, done + room) + 1
                if end <= done and self._size == 0:  # one line longer than a file: alone
                    end = data.find(b"\n", done) + 1 or len(data)
                if end > done:
                    self._append(data, done, end)
                    done = end
                if done < len(data):
                    self.close()  # full: what follows goes to a new file
        except OSError as exc:
            self._abandon()
            raise WriteFailed(data.count(b"\n", 0, done), _reason(exc)) from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def prune(self, now: float | None = None) -> int:
        """Remove this prefix's files last written more than `retention_days` before `now`
        (epoch seconds); how many. Never the file open here; one that cannot be removed is
        left for the next time."""
        self._pruned_at = time.monotonic()
        cutoff = (time.time() if now is None else now) - self.retention_days * 86400
        removed = 0
        with contextlib.suppress(OSError):  # ours, and their rotated or compressed copies
            for path in self.directory.glob(f"{self.prefix}-*.jsonl*"):
                with contextlib.suppress(OSError):
                    if path != self.path and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        while True:
            self._serial += 1
            path = self.directory / f"{self.prefix}-{stamp}-{os.getpid()}-{self._serial:06d}.jsonl"
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:  # a process of that pid wrote here before (a restart)
                continue
            self.path, self._size = path, 0
            return

    def _append(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None
        view = memoryview(data)[start:end]
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += end - start

    def _abandon(self) -> None:
        """Leave the file with whole lines only, and closed; one left with none is removed,
        so a disk that stays full does not fill the directory with empty files."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self._size)
        with contextlib.suppress(OSError):
            os.close(fd)
        if self._size == 0 and self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()


class Stream:
    """JSON lines written to a file descriptor (standard output, for a log shipper)."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            written = len(data) - len(view)
            raise WriteFailed(data.count(b"\n", 0, written), _reason(exc)) from None

    def close(self) -> None:
        pass


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def open_sink(
    kind: SinkKind,
    *,
    directory: Path,
    prefix: str,
    max_bytes: int,
    limit: int,
    name: str,
    retention_days: int = 0,
) -> Sink:
    """The sink `kind` names (DECIDER_EXPOSURE_SINK): `none`, `jsonl` (files in
    `directory`, each starting with `prefix`, kept `retention_days`: 0 for ever) or
    `stdout`."""
    if kind == "none":
        return NoSink()
    writer: Writer = (
        Stream() if kind == "stdout" else JsonlFiles(directory, prefix, max_bytes, retention_days)
    )
    return QueuedSink(writer, limit=limit, name=name)
