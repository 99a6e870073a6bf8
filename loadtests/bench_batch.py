"""Recipients decided per second through POST /v1/decide/batch, beside single POST /v1/decide
calls, for the sample rules' email placement (nurture_email) over a generated population.

Reports numbers; asserts nothing. Needs wrk (Debian: apt install wrk). Run:

    .venv/bin/python loadtests/bench_batch.py [--seconds 5] [--rounds 3] [--visitors 20000]

One `decider serve` (one worker, as loadtests/bench_http.py serves it) over an SQLite store
of a generated population (loadtests/population.py, imported as loadtests/budget.py does).
wrk asks it, in interleaved rounds so a noisy neighbour hurts all alike: single decisions,
one recipient a request, cycling through the population's nurture_email recipients (16
connections); then batches of 1,000 and of 100 recipients drawn from them (4 connections:
a process takes 8 batches at once). Medians are reported: recipients/s, the ratio to single
calls, the requests' p50 and p99, the server's CPU µs per recipient (which sharing the
machine inflates least), and answers that were not 200 (none, when all is well). The first
round warms the profile cache, as single calls of a send warm it for the next.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from bench_http import ROOT, _medians, _percentile, server_cpu, serving
from population import email_sha256, generate

PLACEMENT = "nurture_email"
DECIDER = [sys.executable, "-m", "decider.cli"]
SIZES = (1000, 100)  # recipients a batch


def lua(path: str, bodies: list[str]) -> str:
    """A wrk script POSTing `bodies` to `path` in turn (each connection from its own start)."""
    listed = ",\n".join(f"[[{body}]]" for body in bodies)
    return f"""wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{listed}
}}
local n = 0
function setup(thread) thread:set("n", math.random(#bodies)) end
function request()
  n = n % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[n])
end
"""


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, ...]:
    """(requests/s, p50 ms, p99 ms, the server's CPU seconds, answers not 200) of one run."""
    served = server_cpu(url)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    served = server_cpu(url) - served
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return (
        rate,
        _percentile(out, "50"),
        _percentile(out, "99"),
        served / (rate * seconds),
        float(failed[1]) if failed else 0.0,
    )


def prepare(work: Path, visitors: int, env: dict[str, str]) -> tuple[Path, list[str]]:
    """An SQLite store of a generated population, and its nurture_email recipients' hashes."""
    records, manifest = generate(visitors, max(1, visitors // 20), datetime.now(UTC))
    profiles = work / "profiles.jsonl"
    profiles.write_text("".join(json.dumps(record) + "\n" for record in records))
    store = work / "profiles.db"
    subprocess.run(
        [*DECIDER, "profiles", "import", str(profiles), "--db", str(store),
         "--rules", str(ROOT / "rules")],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    )  # fmt: skip
    hashes = [email_sha256(address) for placement, address in manifest.recipients]
    placements = [placement for placement, _ in manifest.recipients]
    return store, [h for h, p in zip(hashes, placements, strict=True) if p == PLACEMENT]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--visitors", type=int, default=20_000, help="population generated")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_batch needs wrk on the PATH (Debian: apt install wrk)")
    rng = random.Random(12)
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        work = Path(scratch)
        env = {"PYTHONPATH": str(ROOT / "src")}
        store, recipients = prepare(work, args.visitors, env)
        env |= {
            "DECIDER_RULES_DIR": str(ROOT / "rules"),
            "DECIDER_PROFILE_DB": str(store),
            "DECIDER_PROFILE_SEED_SAMPLES": "false",
            "DECIDER_WATCH_RULES": "false",
            "DECIDER_WORKERS": "1",
        }
        url = stack.enter_context(serving([*DECIDER, "serve"], work, env))
        scripts: dict[str, tuple[Path, int, int]] = {}  # label: script, recipients, connections
        singles = [
            json.dumps({"placement": PLACEMENT, "identity": {"email_sha256": h}})
            for h in recipients[:5000]
        ]
        scripts["single calls"] = (work / "single.lua", 1, 16)
        scripts["single calls"][0].write_text(lua("/v1/decide", singles))
        for size in SIZES:
            bodies = []
            for _ in range(4):
                chosen = rng.sample(recipients, min(size, len(recipients)))
                listed = [{"identity": {"email_sha256": h}} for h in chosen]
                bodies.append(json.dumps({"placement": PLACEMENT, "recipients": listed}))
            label = f"batches of {size}"
            scripts[label] = (work / f"batch-{size}.lua", size, 4)
            scripts[label][0].write_text(lua("/v1/decide/batch", bodies))
        print(f"{len(recipients)} {PLACEMENT} recipients among {args.visitors} visitors")
        results: dict[str, list[tuple[float, ...]]] = {label: [] for label in scripts}
        for _ in range(args.rounds):
            for label, (script, _, connections) in scripts.items():
                results[label].append(run_wrk(url, script, args.seconds, connections))
        base = _medians(results["single calls"])[0]
        print(
            f"{'through':<16} {'recipients/s':>12} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'CPU µs/recipient':>16} {'not 200':>8}   (medians of {args.rounds})"
        )
        for label, (_, size, _) in scripts.items():
            rate, p50, p99, cpu, failed = _medians(results[label])
            print(
                f"{label:<16} {rate * size:>12.0f} {rate * size / base:>6.1f} {p50:>8.2f} "
                f"{p99:>8.2f} {1e6 * cpu / size:>16.1f} {failed:>8.0f}"
            )
        for label, (_, size, _) in scripts.items():
            rates = ", ".join(f"{run[0] * size:.0f}" for run in results[label])
            print(f"  {label}, each round: {rates} recipients/s")


if __name__ == "__main__":
    main()
