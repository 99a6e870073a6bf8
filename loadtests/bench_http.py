"""Decisions per second over HTTP, side by side with a bare litestar endpoint served the same
way, and optionally with another checkout of Decider (say, the previous commit).

Reports numbers; asserts nothing. Needs wrk (Debian: apt install wrk). Run:

    .venv/bin/python loadtests/bench_http.py [--seconds 5] [--rounds 3] [--baseline DIR]
        [--more] [--paced] [--experiment]

Each target runs in its own process (uvicorn with Decider's httptools protocol and uvloop, one
worker, loopback);
rounds interleave the targets so a noisy neighbour hurts all alike; medians are reported, with
ratios to the bare endpoint. `--baseline DIR` is another checkout (e.g. `git worktree add
/tmp/prev HEAD~1`), served from its own `src` and `rules`. `--more` adds Decider on 200
generated segments (only the last matches), on the cel-python engine, and with two workers.
`--paced` then loads each target at half its measured requests/s (wrk pacing each
connection, calibrated by two runs first) and reports the latency there. `--experiment`
adds Decider on the sample rules without their experiment (Ada's account is in the hero's),
and with the exposure log on (JSONL files in a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
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
from bench_decide import generated_rules, without_experiments

ROOT = Path(__file__).resolve().parent.parent
BODY = (
    '{"placement": "home_hero", "identity": {"visitor_id": "anon-cookie-123", "user_id": "u-ada"}}'
)
SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""

WRK_CPU_US: list[float] = []  # wrk's own CPU per request, one entry a run
SERVERS: dict[str, int] = {}  # each target's URL and its process id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """Start `command` (given `--port N` at its end), wait until it answers; yields its URL."""
    port = free_port()
    with tempfile.TemporaryFile() as errors:  # what it says, shown if it does not come up
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        url = f"http://127.0.0.1:{port}"
        SERVERS[url] = process.pid
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.post(f"{url}/v1/decide", content=BODY).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    said = errors.read().decode(errors="replace").strip().splitlines()[-20:]
                    raise SystemExit(f"{' '.join(command)} did not come up:\n" + "\n".join(said))
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def server_cpu(url: str) -> float:
    """CPU seconds (user and system) the target at `url` has spent so far: its process and
    every process under it (a supervisor's workers), from /proc."""
    table: dict[int, tuple[int, int]] = {}  # pid: (parent, clock ticks)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    ours = {SERVERS[url]}
    while True:
        under = {pid for pid, (parent, _) in table.items() if parent in ours} - ours
        if not under:
            break
        ours |= under
    ticks = sum(table[pid][1] for pid in ours if pid in table)
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, ...]:
    """(requests/s, p50 ms, p99 ms, the target's CPU µs per request) of one wrk run against
    POST {url}/v1/decide; `script` may pace the connections (see `paced`). The CPU wrk spent
    per request is added to WRK_CPU_US: on a machine it shares, it is CPU the servers did
    not get. A target's CPU time per request is what sharing the machine inflates least."""
    served = server_cpu(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"{url}/v1/decide"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    served = server_cpu(url) - served
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    WRK_CPU_US.append(1e6 * cpu / (rate * seconds))
    return rate, _percentile(out, "50"), _percentile(out, "99"), 1e6 * served / (rate * seconds)


def paced(script: Path, wait_ms: float) -> Path:
    """`script` with each connection waiting `wait_ms` on average between an answer and its
    next request. wrk waits whole milliseconds (it drops a fraction: a 1.6 ms wait was 1 ms,
    and one under 1 ms no wait at all), so each wait is the whole milliseconds below or
    above, drawn to average the fraction."""
    target = script.with_name(f"paced-{wait_ms:.3f}.lua")
    target.write_text(
        script.read_text()
        + f"local wait = {wait_ms:.3f}\n"
        + "function delay()\n"
        + "  local whole = math.floor(wait)\n"
        + "  if math.random() < wait - whole then return whole + 1 end\n"
        + "  return whole\n"
        + "end\n"
    )
    return target


def at_rate(
    url: str, script: Path, rate: float, connections: int, seconds: int
) -> list[tuple[float, ...]]:
    """Two wrk runs offering about `rate` requests/s: each connection's wait is the period
    less what a request took, found by two runs before them that only calibrate (wrk's
    timers fire late, and a request takes what it takes at that load); each step corrects
    half the miss, since a wait near a millisecond moves the rate unevenly."""
    period_ms = 1000 * connections / rate
    wait_ms = period_ms / 2
    runs = []
    for _ in range(4):
        run = wrk(url, paced(script, wait_ms), seconds, connections)
        runs.append(run)
        wait_ms = max(0.0, wait_ms + (period_ms - 1000 * connections / run[0]) / 2)
    return runs[2:]


def _percentile(out: str, which: str) -> float:
    value, unit = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per target")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--baseline", type=Path, help="another checkout of Decider to compare")
    parser.add_argument("--more", action="store_true", help="200 segments, cel-python, 2 workers")
    parser.add_argument("--paced", action="store_true", help="latency at half the max rate")
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="the sample rules without their experiment, and with the exposure log on",
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_http needs wrk on the PATH (Debian: apt install wrk)")
    python = sys.executable
    # decider serve's stack: its protocol (httptools, guarded, writes coalesced) and uvloop
    protocol = "decider.server.protocol:GuardedHttpToolsProtocol"
    uvicorn = [python, "-m", "uvicorn", "--http", protocol, "--loop", "uvloop"]
    uvicorn += ["--no-access-log", "--log-level", "warning"]
    serve = [python, "-m", "decider.cli", "serve"]
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        work = Path(scratch)
        script = work / "decide.lua"
        script.write_text(SCRIPT)
        targets = {"bare litestar": stack.enter_context(
            serving([*uvicorn, "loadtests.bare_app:app"], ROOT, {})
        )}  # fmt: skip

        def decider(label: str, checkout: Path, **settings: str) -> None:
            env = {
                "PYTHONPATH": str(checkout / "src"),
                "DECIDER_RULES_DIR": str(checkout / "rules"),
                "DECIDER_PROFILE_DB": str(work / f"{len(targets)}.db"),
                "DECIDER_WATCH_RULES": "false",
                "DECIDER_WORKERS": "1",  # one process, as the bare endpoint
                **{f"DECIDER_{name.upper()}": value for name, value in settings.items()},
            }
            targets[label] = stack.enter_context(serving(serve, work, env))

        decider("decider (this checkout)", ROOT)
        if args.baseline:
            decider(f"decider ({args.baseline})", args.baseline.resolve())
        if args.experiment:
            plain = str(without_experiments(work / "plain"))
            decider("decider, no experiment", ROOT, rules_dir=plain)
            decider(
                "decider, exposure log on",
                ROOT,
                exposure_sink="jsonl",
                exposure_dir=str(work / "exposures"),
                measure_key="0f" * 16,
            )
        if args.more:
            generated = str(generated_rules(work / "generated", 200))
            decider("decider, 200 segments", ROOT, rules_dir=generated)
            decider("decider, cel-python", ROOT, engine="cel-python")
            decider("decider, 2 workers", ROOT, workers="2")
        results: dict[str, list[tuple[float, ...]]] = {label: [] for label in targets}
        for _ in range(args.rounds):
            for label, url in targets.items():
                results[label].append(wrk(url, script, args.seconds, args.connections))
        medians = {label: _medians(runs) for label, runs in results.items()}
        bare = medians["bare litestar"][0]
        print(
            f"{'target':<40} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'CPU µs/req':>10}   (medians)"
        )
        for label, (rate, p50, p99, cpu) in medians.items():
            print(
                f"{label:<40} {rate:>8.0f} {rate / bare:>6.2f} {p50:>7.2f} {p99:>7.2f} {cpu:>10.1f}"
            )
        print(f"wrk's own CPU per request: {statistics.median(WRK_CPU_US):.1f} µs (median)")
        if args.paced:
            print("\nat half the max rate")
            print(f"{'target':<40} {'asked':>8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
            for label, url in targets.items():
                rate = medians[label][0]
                runs = at_rate(url, script, rate / 2, args.connections, args.seconds)
                done, p50, p99, _ = _medians(runs)
                print(f"{label:<40} {rate / 2:>8.0f} {done:>8.0f} {p50:>7.2f} {p99:>7.2f}")


def _medians(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(run[i] for run in runs) for i in range(len(runs[0])))


if __name__ == "__main__":
    main()
