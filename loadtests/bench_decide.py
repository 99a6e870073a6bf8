"""In-process decision time, warm profile cache, on both CEL engines.

Reports numbers; asserts nothing. Run:  .venv/bin/python loadtests/bench_decide.py [--n 2000]

Rulesets: the shipped sample (13 segments), and a generated one of 200 segments where the
visitor matches only the last, so every decision evaluates all 200 conditions.

Then what the hero's experiment costs Ada's decision (her account bucketed: one hash), and
the exposure log on top (her account's keyed hash, a record queued for a JSONL writer
thread): the sample rules without the experiment, with it, and with the log, in CPU time
(which other processes on a shared machine do not inflate), in alternating slices so drift
falls on all three.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import msgspec
import yaml

from decider.model import DecideRequest, Identity
from decider.profiles.sources.memory import MemorySettings
from decider.rules.cel import ENGINES
from decider.service import Decider
from decider.settings import Settings
from decider.wiring import build_service

ROOT = Path(__file__).resolve().parent.parent
SLICES = 40  # alternations between the experiment's three cases
SHAPES = [
    'has(account.fit_score) && account.fit_score >= {n} && account.stage == "stage_{n}"',
    'has(account.last_seen_at) && timestamp(account.last_seen_at) > now - duration("{n}h")'
    ' && account.industry == "industry_{n}"',
    'has(visitor.role) && visitor.role in ["role_{n}", "other_{n}"]',
    'has(context.utm_campaign) && context.utm_campaign.startsWith("campaign_{n}")',
    "has(account.committee_roles_seen) && size(account.committee_roles_seen) >= {n} + 10",
]


def without_experiments(target: Path) -> Path:
    """The sample rules (not their tests, which pin arms) with every experiment taken out."""
    target.mkdir(parents=True)
    for path in (ROOT / "rules").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for placement in data.get("placements", []) if isinstance(data, dict) else []:
            placement.pop("experiment", None)
        (target / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def generated_rules(target: Path, count: int) -> Path:
    """A rules directory of `count` segments; only the lowest-priority one matches Ada."""
    target.mkdir(parents=True)
    shutil.copy(ROOT / "rules" / "policy.yaml", target / "policy.yaml")
    lines = ["segments:"]
    for n in range(count - 1):
        when = SHAPES[n % len(SHAPES)].format(n=n)
        lines.append(
            f"  - {{id: gen_{n:03d}, description: generated, owner: bench, "
            f"priority: {count + 10 - n}, when: '{when}'}}"
        )
    lines.append(
        "  - {id: gen_last, description: matches, owner: bench, priority: 1, "
        "when: 'has(account.fit_score) && account.fit_score > 50'}"
    )
    lines += [
        "placements:",
        "  - id: home_hero",
        "    channel: web",
        "    tags: [acquisition]",
        "    default: {id: d, content: {hero: h, cta: c, proof: p}}",
        "    variants:",
        "      gen_last: {id: last, content: {hero: H}}",
        "      gen_000: {id: first, content: {hero: F}}",
    ]
    (target / "generated.yaml").write_text("\n".join(lines) + "\n")
    return target


async def measure(decider: Decider, request: DecideRequest, n: int) -> list[float]:
    for _ in range(50):  # warm the profile cache and the engine
        await decider.decide(request, gpc=False)
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await decider.decide(request, gpc=False)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def report(label: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(
        f"{label:<64} mean {statistics.fmean(samples):8.1f} µs   "
        f"p50 {statistics.median(samples):8.1f} µs   p99 {p99:8.1f} µs"
    )


class Slice(NamedTuple):
    """Per decision, in µs: CPU time of the deciding thread, and of the whole process."""

    thread: float
    process: float


async def cpu_per_decision(decider: Decider, request: DecideRequest, n: int) -> Slice:
    thread, process = time.thread_time_ns(), time.process_time_ns()
    for _ in range(n):
        await decider.decide(request, gpc=False)
    return Slice(
        (time.thread_time_ns() - thread) / n / 1000, (time.process_time_ns() - process) / n / 1000
    )


async def experiment_cost(scratch: Path, n: int) -> None:
    """Ada's hero decision without the experiment, with it, and with the exposure log on: the
    median over SLICES alternating slices of the CPU time per decision, of the deciding
    thread (the request's latency) and of the process (the log's writer thread too)."""
    ada = DecideRequest(
        placement="home_hero", identity=Identity(user_id="u-ada"), context={"device": "mobile"}
    )
    plain = without_experiments(scratch / "plain")
    for engine in ENGINES:
        configured = {
            "sample without the experiment": Settings(rules_dir=plain, engine=engine),
            "sample, Ada in the hero's experiment": Settings(
                rules_dir=ROOT / "rules", engine=engine
            ),
            "  and the exposure log on (JSONL)": Settings(
                rules_dir=ROOT / "rules",
                engine=engine,
                exposure_sink="jsonl",
                exposure_dir=scratch / f"exposures-{engine}",
                measure_key="0f" * 16,
            ),
        }
        services = {
            label: build_service(
                msgspec.structs.replace(settings, profile=MemorySettings(), watch_rules=False)
            )
            for label, settings in configured.items()
        }
        slices: dict[str, list[Slice]] = {label: [] for label in services}
        for service in services.values():
            service.measuring.start()
            await measure(service.decider, ada, 0)  # warm
        for _ in range(SLICES):
            for label, service in services.items():
                slices[label].append(await cpu_per_decision(service.decider, ada, n // SLICES + 1))
        base = statistics.median(s.thread for s in slices["sample without the experiment"])
        for label, service in services.items():
            service.measuring.close()
            thread = statistics.median(s.thread for s in slices[label])
            process = statistics.median(s.process for s in slices[label])
            print(
                f"{label + ', ' + engine:<64} CPU: thread {thread:6.1f} µs "
                f"({100 * (thread - base) / base:+5.1f}%), process {process:6.1f} µs"
            )


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        rulesets = {
            "sample (13 segments)": ROOT / "rules",
            "generated (200 segments, last matches)": generated_rules(Path(scratch) / "gen", 200),
        }
        ada = Identity(user_id="u-ada")
        for label, directory in rulesets.items():
            for engine in ENGINES:
                settings = Settings(
                    rules_dir=directory, engine=engine, profile=MemorySettings(), watch_rules=False
                )
                decider = build_service(settings).decider
                for explain in (False, True):
                    request = DecideRequest(placement="home_hero", identity=ada, explain=explain)
                    samples = await measure(decider, request, n)
                    mode = "explain" if explain else "first match"
                    report(f"{label}, {engine}, {mode}", samples)
        await experiment_cost(Path(scratch), n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="decisions per measurement")
    asyncio.run(main(parser.parse_args().n))
