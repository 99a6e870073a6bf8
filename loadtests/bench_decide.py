"""In-process decision time, warm profile cache, on both CEL engines.

Reports numbers; asserts nothing. Run:  .venv/bin/python loadtests/bench_decide.py [--n 2000]

Rulesets: the shipped sample (13 segments), and a generated one of 200 segments where the
visitor matches only the last, so every decision evaluates all 200 conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from decider.model import DecideRequest, Identity
from decider.profiles.sources.memory import MemorySettings
from decider.rules.cel import ENGINES
from decider.service import Decider
from decider.settings import Settings
from decider.wiring import build_service

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [
    'has(account.fit_score) && account.fit_score >= {n} && account.stage == "stage_{n}"',
    'has(account.last_seen_at) && timestamp(account.last_seen_at) > now - duration("{n}h")'
    ' && account.industry == "industry_{n}"',
    'has(visitor.role) && visitor.role in ["role_{n}", "other_{n}"]',
    'has(context.utm_campaign) && context.utm_campaign.startsWith("campaign_{n}")',
    "has(account.committee_roles_seen) && size(account.committee_roles_seen) >= {n} + 10",
]


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="decisions per measurement")
    asyncio.run(main(parser.parse_args().n))
