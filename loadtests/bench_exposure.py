"""What the exposure log costs a decision, in-process.

Reports numbers; asserts nothing. Run:  .venv/bin/python loadtests/bench_exposure.py [--n 20000]

- a unit's keyed hash (HMAC-SHA256), the first time and again (recent ones are remembered);
- a record built and put on the queue of a running JSONL sink, whose thread writes the
  files (in a temporary directory) meanwhile;
- a decision (the sample rules, Ada, a warm profile cache) alone, and followed by hashing
  her account and logging the exposure, as the decision path does.

Each figure is the median, over --runs runs, of a run's mean time per call (µs). Decisions
are timed in CPU time, which other processes on a shared machine do not inflate: of the
thread that decides (the request's latency) and of the whole process (the writer thread's
share too), the median of 40 slices alternating between decisions without and with the log.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from decider.measure.exposures import ExposureLog
from decider.measure.sink import JsonlFiles, QueuedSink
from decider.measure.units import Units
from decider.model import DecideRequest, Identity
from decider.profiles.sources.memory import MemorySettings
from decider.settings import Settings
from decider.wiring import build_service

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = {"device": "mobile", "country": "DE", "url": "https://shop.example/pricing"}
KEY = bytes.fromhex("0f" * 16)
SLICES = 40  # alternations of decisions without and with the log


def per_call(run: Callable[[], object], n: int, runs: int) -> float:
    means = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        for _ in range(n):
            run()
        means.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(means)


def first_sight(n: int, runs: int) -> float:
    """A unit's hash the first time it is seen (a new Units each run: nothing remembered)."""
    ids = [f"acc-{i}" for i in range(n)]
    means = []
    for _ in range(runs):
        units = Units(KEY)
        start = time.perf_counter_ns()
        for raw in ids:
            units.account(raw)
        means.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(means)


class Slice(NamedTuple):
    """Per decision, in µs: CPU time of the deciding thread, and of the whole process."""

    thread: float
    process: float


async def per_decision(decide: Callable[[], Awaitable[None]], n: int) -> Slice:
    thread, process = time.thread_time_ns(), time.process_time_ns()
    for _ in range(n):
        await decide()
    return Slice(
        (time.thread_time_ns() - thread) / n / 1000, (time.process_time_ns() - process) / n / 1000
    )


def line(label: str, micros: float, extra: str = "") -> None:
    print(f"{label:<48} {micros:7.2f} µs{extra}")


async def main(n: int, runs: int) -> None:
    units = Units(KEY)
    now = datetime.now(UTC)
    line("unit hash, first seen", first_sight(n, runs))
    line("unit hash, seen again", per_call(lambda: units.account("acc-northwind"), n, runs))
    settings = Settings(rules_dir=ROOT / "rules", profile=MemorySettings(), watch_rules=False)
    decider = build_service(settings).decider
    ada = Identity(user_id="u-ada")
    request = DecideRequest(placement="home_hero", identity=ada, context=CONTEXT)
    decision = await decider.decide(request, gpc=False)
    gc.collect()
    gc.freeze()  # as `decider serve` does once started
    with tempfile.TemporaryDirectory() as scratch:
        sink = QueuedSink(
            JsonlFiles(Path(scratch), "exposures", 64 * 1024 * 1024),
            limit=10 * n * runs,
            name="exposure",
        )
        log = ExposureLog(sink, context_keys=("device", "country"), everything=True)
        sink.start()
        unit = ("account", units.account("acc-northwind"))
        built = per_call(lambda: log.record(decision, CONTEXT, unit, at=now), n, runs)
        line("exposure record built and queued", built)

        async def alone() -> None:
            await decider.decide(request, gpc=False)

        async def logged() -> None:
            made = await decider.decide(request, gpc=False)
            log.record(made, request.context, ("account", units.account("acc-northwind")), at=now)

        for _ in range(500):  # warm the cache and the engine
            await alone()
        without: list[Slice] = []
        with_log: list[Slice] = []
        for _ in range(SLICES):  # alternated, so drift on a shared machine falls on both
            without.append(await per_decision(alone, n // SLICES * runs // 2))
            with_log.append(await per_decision(logged, n // SLICES * runs // 2))
        sink.close()
        for label, field in (("deciding thread", 0), ("whole process", 1)):
            plain = statistics.median(s[field] for s in without)
            measured = statistics.median(s[field] for s in with_log)
            extra = f"  (+{measured - plain:.2f} µs, {100 * (measured - plain) / plain:+.1f}%)"
            line(f"decision alone, CPU of the {label}", plain)
            line("  with its unit hashed and exposure logged", measured, extra)
        counts = sink.counts
        print(f"records written {counts.written}, dropped {counts.dropped}, failed {counts.failed}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is reported")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.n, arguments.runs))
