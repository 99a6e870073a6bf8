"""`decider report` over many exposures: seconds and records per second, run as a user runs
it, on files a simulation writes to a temporary directory.

Reports numbers; asserts nothing. Run:

    .venv/bin/python loadtests/bench_report.py [--records 10000000] [--units N] [--runs 3]
        [--keep DIR]

The simulation plants known lifts: two segments of one placement serve the same variant and
lift conversion alike (+4 points over an 8% holdout: keep, and a merge candidate), one serves
its variant for nothing (10% either way: not actionable with --min-lift 20%), one is small
(too small to tell), and an email segment splits two treatment variants that lift desktop
readers only (a split candidate by context.device). A unit is seen about --records/--units
times; a few are seen in a second arm (rules changed mid-test), some outcomes are resent, and
half of the outcomes name a decision, the others the unit's hash. --keep DIR writes the files
there, keeps them and times nothing (the README's example).
"""

from __future__ import annotations

import argparse
import hmac
import io
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import msgspec

from decider.cli import main
from decider.measure.records import Exposure, Outcome

KEY = b"bench-report-key"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = 86400
PER_FILE = 1_000_000  # lines per file, as a rotating sink leaves them


class Planted(NamedTuple):
    placement: str
    channel: str
    segment: str
    experiment: str
    unit_kind: str
    share: float  # of the units
    arms: tuple[tuple[str, str, float], ...]  # arm, variant, weight
    rates: dict[str, tuple[float, float]]  # per device: holdout rate, treatment rate


HERO = (("holdout", "hero_default", 0.2), ("control", "hero_enterprise", 0.8))
PLANTED = (
    Planted(
        "home_hero", "web", "enterprise_evaluation", "hero-holdout", "account", 0.16, HERO,
        {"desktop": (0.08, 0.12), "mobile": (0.08, 0.12)},
    ),
    Planted(
        "home_hero", "web", "mid_market_evaluation", "hero-holdout", "account", 0.16, HERO,
        {"desktop": (0.08, 0.12), "mobile": (0.08, 0.12)},
    ),
    Planted(
        "home_hero", "web", "returning_customers", "hero-holdout", "account", 0.36,
        (("holdout", "hero_default", 0.2), ("control", "hero_welcome_back", 0.8)),
        {"desktop": (0.10, 0.10), "mobile": (0.10, 0.10)},
    ),
    Planted(
        "home_hero", "web", "partner_referrals", "hero-holdout", "account", 0.015,
        (("holdout", "hero_default", 0.2), ("control", "hero_partner", 0.8)),
        {"desktop": (0.10, 0.13), "mobile": (0.10, 0.13)},
    ),
    Planted(
        "newsletter", "email", "newsletter_readers", "email-split", "visitor", 0.305,
        (
            ("holdout", "email_default", 0.2),
            ("case_study", "case_study", 0.4),
            ("webinar", "webinar", 0.4),
        ),
        {"desktop": (0.05, 0.09), "mobile": (0.05, 0.05)},
    ),
)  # fmt: skip


def unit_hash(kind: str, ident: str) -> str:
    """The keyed hash records carry instead of an id (decider.measure.units' shape)."""
    return hmac.new(KEY, f"{kind}:{ident}".encode(), "sha256").hexdigest()[:32]


class Sink:
    """Lines into numbered files, PER_FILE each."""

    def __init__(self, directory: Path, stem: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.stem = directory, stem
        self.pending: list[Exposure | Outcome] = []
        self.written = 0
        self.encoder = msgspec.json.Encoder()

    def add(self, record: Exposure | Outcome) -> None:
        self.pending.append(record)
        if len(self.pending) >= 100_000:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            room = PER_FILE - self.written % PER_FILE
            batch, self.pending = self.pending[:room], self.pending[room:]
            path = self.directory / f"{self.stem}-{self.written // PER_FILE + 1:04d}.jsonl"
            with path.open("ab") as out:
                out.write(self.encoder.encode_lines(batch))
            self.written += len(batch)


def simulate(directory: Path, records: int, units: int, seed: int = 11) -> tuple[int, int]:
    """Write about `records` exposures of `units` units, and their outcomes, under
    directory/exposures and directory/outcomes; returns the counts written."""
    rng = random.Random(seed)
    exposures, outcomes = (
        Sink(directory / "exposures", "exposures"),
        Sink(directory / "outcomes", "outcomes"),
    )
    extra = max(records / units - 1, 0)  # exposures after the first, on average
    bounds = list(_cumulative([p.share for p in PLANTED]))
    decision = 0
    for n in range(units):
        planted = PLANTED[_pick(bounds, rng.random())]
        arm, variant = _arm(planted, rng.random())
        first_arm = arm  # the arm the unit is counted in
        device = "desktop" if rng.random() < 0.5 else "mobile"
        unit = unit_hash(planted.unit_kind, f"{planted.unit_kind}-{n}")
        seen = 1 + int(-math.log(1 - rng.random()) * extra + rng.random())
        moved = rng.random() < 0.005  # the rules changed: later exposures in another arm
        at = rng.random() * 14 * DAY
        decisions = []
        for k in range(seen):
            if k == 1 and moved:
                arm, variant = _arm(planted, (rng.random() + 0.5) % 1)
            decision += 1
            decisions.append((f"{decision:032x}", at))
            exposures.add(
                Exposure(
                    at=START + timedelta(seconds=at),
                    decision_id=decisions[-1][0],
                    ruleset="r-7c1e2a90bd",
                    placement=planted.placement,
                    channel=planted.channel,
                    segment=planted.segment,
                    experiment=planted.experiment,
                    arm=arm,
                    variant=variant,
                    unit_kind=planted.unit_kind,
                    unit=unit,
                    context={"device": device},
                )
            )
            at += rng.random() * 3 * DAY
        holdout_rate, treated_rate = planted.rates[device]
        if rng.random() < (holdout_rate if first_arm == "holdout" else treated_rate):
            decision_id, shown = decisions[int(rng.random() * len(decisions))]
            by_decision = rng.random() < 0.5
            outcome = Outcome(
                at=START + timedelta(seconds=shown + rng.random() * 2 * DAY),
                event_id=f"evt-{n}",
                name="signup",
                decision_id=decision_id if by_decision else None,
                account=unit if not by_decision and planted.unit_kind == "account" else None,
                visitor=unit if not by_decision and planted.unit_kind == "visitor" else None,
            )
            outcomes.add(outcome)
            if rng.random() < 0.03:  # resent by the caller
                outcomes.add(outcome)
        if rng.random() < 0.05:  # another kind of event, not the one reported on
            outcomes.add(
                Outcome(
                    at=START, event_id=f"view-{n}", name="page_view", decision_id=decisions[0][0]
                )
            )
    exposures.flush()
    outcomes.flush()
    return exposures.written, outcomes.written


def _cumulative(shares: list[float]) -> list[float]:
    total, running = sum(shares), 0.0
    bounds = []
    for share in shares:
        running += share / total
        bounds.append(running)
    return bounds


def _pick(bounds: list[float], draw: float) -> int:
    return next((i for i, bound in enumerate(bounds) if draw < bound), len(bounds) - 1)


def _arm(planted: Planted, draw: float) -> tuple[str, str]:
    index = _pick(list(_cumulative([weight for _, _, weight in planted.arms])), draw)
    arm, variant, _ = planted.arms[index]
    return arm, variant


def run(directory: Path, records: int, units: int, runs: int) -> None:
    """Simulate into `directory`, then time `decider report` over it `runs` times."""
    started = time.perf_counter()
    written, outcomes = simulate(directory, records, units)
    size = sum(p.stat().st_size for p in (directory / "exposures").iterdir())
    print(
        f"wrote {written:,} exposures ({size / 1e9:.2f} GB) and {outcomes:,} outcomes of "
        f"{units:,} units in {time.perf_counter() - started:.1f} s"
    )
    out = io.StringIO()
    argv = [
        "report",
        "--exposures",
        str(directory / "exposures"),
        "--outcomes",
        str(directory / "outcomes"),
        "--outcome",
        "signup",
        "--by",
        "context.device",
    ]
    times, cpu = [], []
    for _ in range(runs):
        started, used = time.perf_counter(), time.process_time()
        status = main(argv, environ={}, out=out)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
        if status:
            sys.exit(out.getvalue())
    seconds = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU seconds too: on a machine shared with other work, the wall clock says more about
    # the neighbours than about the report
    print(
        f"decider report: {written:,} exposure records in {seconds:.1f} s (median of "
        f"{', '.join(f'{t:.1f}' for t in times)}; CPU {statistics.median(cpu):.1f} s), "
        f"{written / seconds:,.0f} records/s; peak memory {peak:,.0f} MiB"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000, help="exposures, about")
    parser.add_argument("--units", type=int, help="distinct units (default: records / 10)")
    parser.add_argument("--runs", type=int, default=1, help="times to run the report")
    parser.add_argument(
        "--keep", type=Path, help="only write the files, here, and keep them: no timing"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    units = args.units or max(args.records // 10, 1)
    if args.keep:
        written, outcomes = simulate(args.keep, args.records, units)
        print(f"wrote {written:,} exposures and {outcomes:,} outcomes of {units:,} units")
    else:
        with tempfile.TemporaryDirectory(prefix="decider-bench-report-") as scratch:
            run(Path(scratch), args.records, units, args.runs)
