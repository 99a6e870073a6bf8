"""How soon a profile write reaches another process: the delay from a write through one
handle on a store to the moment another handle (another worker or replica) can apply it.

Reports numbers; asserts nothing. Starts its own redis-server (Debian's package) on
loopback. Run:

    .venv/bin/python loadtests/bench_freshness.py [--writes 500]

SQLite needs no measuring of this kind: each process asks the file before every decision
(`PRAGMA data_version`), so a committed write counts on the next decision; what is timed for
it is that check's own cost, paid by every decision.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from decider.profile import VisitorProfile
from decider.profiles.sources.base import Opening
from decider.profiles.sources.redis import RedisSettings
from decider.profiles.sources.redis import open_source as open_redis
from decider.profiles.sources.sqlite import SqliteProfileStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def redis_delays(url: str, writes: int) -> list[float]:
    settings = RedisSettings(redis_url=url)
    writer = open_redis(settings, Opening(now=datetime.now(UTC)))
    reader = open_redis(settings, Opening(now=datetime.now(UTC)))
    delays: list[float] = []
    try:
        reader.changes()  # starts following the stream
        await asyncio.sleep(0.2)
        for n in range(writes):
            started = time.perf_counter()
            await writer.put(VisitorProfile(id=f"v-{n}", traits={"n": n}))
            while not reader.changes():
                await asyncio.sleep(0)  # as often as a busy server decides
            delays.append((time.perf_counter() - started) * 1000)
    finally:
        await writer.aclose()
        await reader.aclose()
    return delays


def sqlite_check_cost(checks: int) -> float:
    """Microseconds per `changes()` when nothing changed: each decision's cost."""
    with (
        tempfile.TemporaryDirectory() as scratch,
        SqliteProfileStore(Path(scratch) / "s.db") as store,
    ):
        started = time.perf_counter()
        for _ in range(checks):
            store.changes()
        return (time.perf_counter() - started) / checks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=500, help="writes to time")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench_freshness needs redis-server (Debian: apt install redis-server)")
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as scratch,
        subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", scratch],
            stdout=subprocess.DEVNULL,
        ) as server,
    ):
        try:
            time.sleep(0.3)
            delays = sorted(asyncio.run(redis_delays(f"redis://127.0.0.1:{port}/0", args.writes)))
        finally:
            server.terminate()
    p99 = delays[int(len(delays) * 0.99) - 1]
    print(
        f"redis, write to another handle's next decision: p50 {statistics.median(delays):.2f} ms, "
        f"p99 {p99:.2f} ms, max {delays[-1]:.2f} ms ({len(delays)} writes, loopback)"
    )
    print(f"sqlite, the check before each decision: {sqlite_check_cost(100_000):.1f} µs")


if __name__ == "__main__":
    main()
