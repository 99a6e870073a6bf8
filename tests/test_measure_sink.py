"""The sinks records go to: offered without waiting, written by a thread in batches, rotated
by size, dropped and counted when the queue is full, counted as failed (and logged once a
burst) when the writer fails; and what is queued written on close."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from decider.measure.records import Exposure, Outcome, Record, record_decoder
from decider.measure.sink import JsonlFiles, QueuedSink, Stream, WriteFailed, open_sink

AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def exposure(n: int) -> Exposure:
    return Exposure(
        at=AT,
        decision_id=f"{n:032x}",
        ruleset="8bf87d604a31",
        placement="home_hero",
        channel="web",
        segment="b2b_top_tier_evaluation",
        variant="enterprise_hero",
        context={"device": "mobile"},
    )


def read_records(directory: Path) -> list[Record]:
    return [
        record_decoder.decode(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


class Blocking:
    """A writer that waits for `release` before each write: a disk that hangs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.entered.set()
        self.release.wait(10)
        self.lines += data.splitlines()

    def close(self) -> None:
        pass


class Failing:
    """A writer whose disk is full until `healed`; then it writes."""

    def __init__(self) -> None:
        self.healed = False
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.healed:
            raise WriteFailed(0, os.strerror(errno.ENOSPC))
        self.lines += data.splitlines()

    def close(self) -> None:
        pass


class Acks:
    """What a writer told of acknowledged offers."""

    def __init__(self) -> None:
        self.oks: list[bool] = []
        self._told = threading.Event()

    def done(self, ok: bool) -> None:
        self.oks.append(ok)
        self._told.set()

    def wait(self) -> list[bool]:
        assert self._told.wait(5)
        return self.oks


@pytest.fixture
def blocked() -> Iterator[tuple[QueuedSink, Blocking]]:
    writer = Blocking()
    sink = QueuedSink(writer, limit=10, name="exposure")
    sink.start()
    yield sink, writer
    writer.release.set()
    sink.close()


def test_a_full_queue_drops_and_counts_what_it_cannot_hold(
    blocked: tuple[QueuedSink, Blocking],
) -> None:
    """While the writer hangs, offers return at once: the queue holds its limit, the rest
    are dropped and counted; once the disk answers, what was queued is written."""
    sink, writer = blocked
    assert sink.offer(exposure(0))
    assert writer.entered.wait(5)  # the writer holds record 0, stuck in its write
    taken = [sink.offer(exposure(n)) for n in range(1, 1001)]
    assert taken == [True] * 10 + [False] * 990
    assert sink.counts.dropped == 990
    assert sink.counts.written == 0
    writer.release.set()
    sink.close()
    assert sink.counts.written == 11
    assert len(writer.lines) == 11
    assert sink.counts.failed == 0


def test_rotation_by_size_keeps_every_record_exactly_once(tmp_path: Path) -> None:
    """Files never pass the size (but a line longer than a file, alone in its own), no
    line is split, and every record is in exactly one file."""
    files = JsonlFiles(tmp_path, "exposures", max_bytes=4096)
    sink = QueuedSink(files, limit=100_000, name="exposure")
    sink.start()
    offered = [exposure(n) for n in range(5000)]
    for record in offered:
        assert sink.offer(record)
    sink.close()
    assert sink.counts.written == 5000
    paths = sorted(tmp_path.glob("exposures-*.jsonl"))
    assert len(paths) > 100
    assert all(0 < path.stat().st_size <= 4096 for path in paths)
    assert all(path.read_bytes().endswith(b"\n") for path in paths)
    assert read_records(tmp_path) == offered
    # each process its own files: the pid in every name
    assert all(f"-{os.getpid()}-" in path.name for path in paths)


def test_a_line_longer_than_a_file_gets_a_file_of_its_own(tmp_path: Path) -> None:
    files = JsonlFiles(tmp_path, "exposures", max_bytes=4096)
    long = b'{"x": "' + b"a" * 5000 + b'"}\n'
    files.write(b"{}\n" + long + b"{}\n")
    files.close()
    contents = [path.read_bytes() for path in sorted(tmp_path.glob("*.jsonl"))]
    assert sorted(contents) == sorted([b"{}\n", long, b"{}\n"])


def test_a_failing_disk_is_counted_logged_once_and_recovered_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = Failing()
    sink = QueuedSink(writer, limit=1000, name="exposure")
    sink.start()
    with caplog.at_level(logging.INFO, logger="decider"):
        for n in range(3):  # three bursts' worth of batches, each acknowledged on its own
            failed = Acks()
            sink.offer(exposure(n))
            assert sink.offer_acked([exposure(100 + n)], failed.done)
            assert failed.wait() == [False]
        writer.healed = True
        healed = Acks()
        assert sink.offer_acked([exposure(9)], healed.done)
        assert healed.wait() == [True]
        sink.close()
    assert sink.counts.failed == 6
    assert sink.counts.written == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write (No space left on device)" in m for m in messages) == 1
    assert sum("writing again" in m for m in messages) == 1


class Filling(JsonlFiles):
    """Files on a disk that fills once `full`: half the next chunk lands, then ENOSPC."""

    full = False

    def _append(self, data: bytes, start: int, end: int) -> None:
        if self.full and self._fd is not None:
            os.write(self._fd, data[start : (start + end) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super()._append(data, start, end)


def test_a_failed_write_leaves_whole_lines_and_counts_what_was_written(tmp_path: Path) -> None:
    """A disk that fills mid-batch: the lines written stay, the broken one is cut off, and
    the next write goes to a new file."""
    files = Filling(tmp_path, "exposures", max_bytes=40)
    files.write(b'{"n": 1}\n')
    first = files.path
    assert first is not None
    files.full = True
    with pytest.raises(WriteFailed) as failed:
        files.write(b"".join(b'{"n": %d}\n' % n for n in range(2, 12)))
    # the three lines that fit the first file went in whole; the fourth was cut off
    assert failed.value.lines == 0
    assert first.read_bytes() == b'{"n": 1}\n'
    files.full = False
    files.write(b'{"n": 12}\n')
    files.close()
    assert files.path != first
    assert sorted(p.read_bytes() for p in tmp_path.glob("*.jsonl")) == [
        b'{"n": 12}\n',
        b'{"n": 1}\n',
    ]


def test_a_disk_that_stays_full_leaves_no_empty_files(tmp_path: Path) -> None:
    """Every failed write opens a file and fails in it: one left with no whole line is
    removed, so a disk that stays full does not fill the directory with empty files."""
    files = Filling(tmp_path, "exposures", max_bytes=4096)
    files.full = True
    for _ in range(20):
        files.full = True
        with pytest.raises(WriteFailed):
            files.write(b'{"n": 1}\n{"n": 2}\n')
    assert list(tmp_path.glob("*.jsonl")) == []
    files.full = False
    files.write(b'{"n": 3}\n')
    files.close()
    assert [p.read_bytes() for p in tmp_path.glob("*.jsonl")] == [b'{"n": 3}\n']


def test_two_processes_never_write_one_file(tmp_path: Path) -> None:
    """A name taken (another process of that pid, before a restart) is never appended to."""
    one = JsonlFiles(tmp_path, "outcomes", max_bytes=4096)
    two = JsonlFiles(tmp_path, "outcomes", max_bytes=4096)
    one.write(b'{"a": 1}\n')
    two.write(b'{"b": 2}\n')
    one.close()
    two.close()
    assert one.path != two.path
    assert sorted(p.read_bytes() for p in tmp_path.glob("*.jsonl")) == [
        b'{"a": 1}\n',
        b'{"b": 2}\n',
    ]


def test_stdout_gets_one_line_a_record(tmp_path: Path) -> None:
    read, write = os.pipe()
    sink = QueuedSink(Stream(write), limit=100, name="exposure")
    sink.start()
    outcome = Outcome(at=AT, event_id="o-1", name="purchase", value=12.5)
    sink.offer(exposure(1))
    sink.offer(outcome)
    sink.close()
    os.close(write)
    with os.fdopen(read, "rb") as output:
        lines = output.read().splitlines()
    assert [record_decoder.decode(line) for line in lines] == [exposure(1), outcome]


def test_offers_after_close_are_dropped_and_counted(tmp_path: Path) -> None:
    sink = open_sink(
        "jsonl", directory=tmp_path, prefix="exposures", max_bytes=4096, limit=10, name="e"
    )
    sink.start()
    sink.close()
    assert not sink.offer(exposure(1))
    assert sink.counts.dropped == 1
    assert list(tmp_path.iterdir()) == []  # nothing written: no file made


def test_the_none_sink_takes_nothing(tmp_path: Path) -> None:
    sink = open_sink("none", directory=tmp_path, prefix="x", max_bytes=4096, limit=1, name="e")
    sink.start()
    assert not sink.offer(exposure(1))
    sink.close()
    assert (sink.counts.written, sink.counts.dropped, sink.counts.failed) == (0, 0, 0)
    assert list(tmp_path.iterdir()) == []


def test_a_sink_runs_again_after_closing(tmp_path: Path) -> None:
    """A service may be run twice (a test client's lifespan, say): its writer too."""
    sink = QueuedSink(JsonlFiles(tmp_path, "exposures", 4096), limit=10, name="exposure")
    for n in range(2):
        sink.start()
        assert sink.offer(exposure(n))
        sink.close()
    assert read_records(tmp_path) == [exposure(0), exposure(1)]


def test_closing_a_sink_never_started_fails_what_waits_on_it() -> None:
    sink = QueuedSink(Failing(), limit=10, name="outcome")
    acks = Acks()
    assert sink.offer_acked([exposure(1)], acks.done)
    sink.close()
    assert acks.wait() == [False]
    assert sink.counts.dropped == 1


def test_files_past_their_retention_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """A writer with a retention removes its prefix's files last written longer ago (at its
    first write, then hourly), never newer ones, another prefix's, or its own open file."""
    day = 86400
    now = datetime.now(UTC).timestamp()
    aged = {
        "exposures-20240101T000000Z-1-000001.jsonl": now - 31 * day,  # past 30 days: removed
        "exposures-20260101T000000Z-1-000001.jsonl": now - 29 * day,
        "outcomes-20240101T000000Z-1-000001.jsonl": now - 400 * day,  # another prefix
        "exposures-notes.txt": now - 400 * day,  # not a record file
    }
    for name, mtime in aged.items():
        (tmp_path / name).write_text("{}\n")
        os.utime(tmp_path / name, (mtime, mtime))
    files = JsonlFiles(tmp_path, "exposures", 1 << 20, retention_days=30)
    files.write(b'{"a":1}\n')
    assert files.path is not None
    left = sorted(p.name for p in tmp_path.iterdir())
    kept = aged.keys() - {"exposures-20240101T000000Z-1-000001.jsonl"}
    assert left == sorted([*kept, files.path.name])
    os.utime(files.path, (now - 90 * day, now - 90 * day))  # open, however old: kept
    assert files.prune(now + 2 * day) == 1  # the 29 days old, 31 days old by then
    assert files.path.exists()
    files.close()


def test_without_a_retention_nothing_is_removed(tmp_path: Path) -> None:
    old = tmp_path / "exposures-20200101T000000Z-1-000001.jsonl"
    old.write_text("{}\n")
    os.utime(old, (0, 0))
    files = JsonlFiles(tmp_path, "exposures", 1 << 20)
    files.write(b'{"a":1}\n')
    files.close()
    assert old.exists()


def test_a_file_removed_under_the_writer_is_replaced_and_nothing_more_is_lost(
    tmp_path: Path,
) -> None:
    """A file removed while open (by hand, or another worker's pruning), its directory with
    it: the next write opens a new one, so what follows is on disk, not in a deleted file."""
    directory = tmp_path / "exposures"
    files = JsonlFiles(directory, "exposures", 1 << 20)
    files.write(b'{"a":1}\n')
    first = files.path
    assert first is not None
    first.unlink()
    directory.rmdir()
    files.write(b'{"a":2}\n')
    assert files.path is not None
    assert files.path != first
    assert files.path.read_bytes() == b'{"a":2}\n'
    files.close()


def test_an_idle_sink_prunes_and_rotated_copies_go_too(tmp_path: Path) -> None:
    """Nothing written, the writer's thread still prunes; a copy rotated or compressed by
    hand (`.jsonl.1`, `.jsonl.gz`) is past its retention too."""
    old = datetime.now(UTC).timestamp() - 10 * 86400
    names = ["exposures-a.jsonl", "exposures-b.jsonl.1", "exposures-c.jsonl.gz", "keep.txt"]
    for name in names:
        (tmp_path / name).write_text("x\n")
        os.utime(tmp_path / name, (old, old))
    sink = QueuedSink(
        JsonlFiles(tmp_path, "exposures", 1 << 20, retention_days=7), limit=10, name="e"
    )
    sink.start()
    deadline = datetime.now(UTC).timestamp() + 5
    while len(list(tmp_path.iterdir())) > 1 and datetime.now(UTC).timestamp() < deadline:
        threading.Event().wait(0.02)
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_drops_are_said_at_most_every_few_seconds_with_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bursts of drops close together make one log line, not one per writer pass, and what
    came after it is said as the writer stops; the counts stay exact."""

    class Slow:
        def write(self, data: bytes) -> None:
            threading.Event().wait(0.01)

        def close(self) -> None:
            pass

    sink = QueuedSink(Slow(), limit=1, name="exposure")
    sink.start()
    with caplog.at_level(logging.WARNING, logger="decider"):
        for _ in range(5):  # five bursts, a few writer passes apart
            for n in range(50):
                sink.offer(exposure(n))
            threading.Event().wait(0.12)
        sink.close()
    said = [r for r in caplog.records if getattr(r, "event", None) == "records_dropped"]
    assert len(said) <= 2  # the first burst's, and the rest's as the writer stops
    assert sum(getattr(r, "count", 0) for r in said) == sink.counts.dropped
    assert sink.counts.dropped + sink.counts.written == 250
    assert sink.counts.dropped > 200
