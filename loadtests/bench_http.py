"""Decisions per second over HTTP, side by side with a bare litestar endpoint served the same
way, and optionally with another checkout of Decider (say, the previous commit).

Reports numbers; asserts nothing. Needs wrk (Debian: apt install wrk). Run:

    .venv/bin/python loadtests/bench_http.py [--seconds 5] [--rounds 3] [--baseline DIR]

Each target runs in its own process (uvicorn with httptools and uvloop, one worker, loopback);
rounds interleave the targets so a noisy neighbour hurts all alike; medians are reported, with
ratios to the bare endpoint. `--baseline DIR` is another checkout (e.g. `git worktree add
/tmp/prev HEAD~1`), served from its own `src` and `rules`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BODY = (
    '{"placement": "home_hero", "identity": {"visitor_id": "anon-cookie-123", "user_id": "u-ada"}}'
)
SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """Start `command` (given `--port N` at its end), wait until it answers; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.post(f"{url}/v1/decide", content=BODY).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{' '.join(command)} did not come up")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run against POST {url}/v1/decide."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"{url}/v1/decide"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return rate, _percentile(out, "50"), _percentile(out, "99")


def _percentile(out: str, which: str) -> float:
    value, unit = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per target")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--baseline", type=Path, help="another checkout of Decider to compare")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_http needs wrk on the PATH (Debian: apt install wrk)")
    python = sys.executable
    # decider serve's stack, named: uvicorn's default --http would be h11 without httptools
    uvicorn = [python, "-m", "uvicorn", "--http", "httptools", "--loop", "uvloop"]
    uvicorn += ["--no-access-log", "--log-level", "warning"]
    serve = [python, "-m", "decider.cli", "serve"]
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        work = Path(scratch)
        script = work / "decide.lua"
        script.write_text(SCRIPT)
        targets = {"bare litestar": stack.enter_context(
            serving([*uvicorn, "loadtests.bare_app:app"], ROOT, {})
        )}  # fmt: skip
        checkouts = {"decider (this checkout)": ROOT}
        if args.baseline:
            checkouts[f"decider ({args.baseline})"] = args.baseline.resolve()
        for label, checkout in checkouts.items():
            env = {
                "PYTHONPATH": str(checkout / "src"),
                "DECIDER_RULES_DIR": str(checkout / "rules"),
                "DECIDER_PROFILE_DB": str(work / f"{len(targets)}.db"),
                "DECIDER_WATCH_RULES": "false",
                "DECIDER_WORKERS": "1",  # one process, as the bare endpoint
            }
            targets[label] = stack.enter_context(serving(serve, work, env))
        results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in targets}
        for _ in range(args.rounds):
            for label, url in targets.items():
                results[label].append(wrk(url, script, args.seconds, args.connections))
    bare = statistics.median(r[0] for r in results["bare litestar"])
    print(f"{'target':<40} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}   (medians)")
    for label, runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        print(f"{label:<40} {rate:>8.0f} {rate / bare:>6.2f} {p50:>7.2f} {p99:>7.2f}")


if __name__ == "__main__":
    main()
