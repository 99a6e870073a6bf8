"""The latency budget, run and judged: one command from a checkout to a verdict.

    .venv/bin/python loadtests/budget.py [--budget loadtests/budget.toml] [--rate R]
        [--seconds S] [--users U] [--misses 0.1] [--visitors N] [--accounts M]
        [--report-dir DIR]
    .venv/bin/python loadtests/budget.py --judge DIR [--budget FILE]

It generates a population (loadtests/population.py) in a temporary directory, imports it
with `decider profiles import` into a fresh SQLite store, starts `decider serve` on a free
loopback port with two generated API keys (the web edge's, scopes decide and consent; the
email renderer's, decide), waits for /readyz, asks once about every warm id, then runs Locust
headless (loadtests/locustfile.py) at a fixed rate for a bounded time. Locust's CSV and HTML
reports, the decisions' outcomes and the run's parameters go to the report directory. The
service is always stopped.

The verdict compares each scenario's p50/p95/p99 and error rate with the budget file, and
the delivered rate with the offered one. Load flags default to the budget's stated load; a
run at another load is judged all the same and says so. `--judge DIR` judges a report
already written (by another budget file, say) without running anything.

Exit status: 0 the budget is met; 1 it is missed; 2 a request failed (whatever the budget);
3 the run could not be made.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from population import email_sha256, generate

from decider.access import new_key

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
MET, MISSED, FAILED, BROKEN = 0, 1, 2, 3
PREFIX = "decide"  # the reports: decide_stats.csv, decide.html, ...
LISTENING = re.compile(r"listening on (http://\S+)")


class CannotRun(Exception):
    """The run could not be made (not a verdict on the service's speed)."""


@dataclass(frozen=True)
class Load:
    rate: float
    seconds: int
    users: int
    misses: float
    visitors: int
    accounts: int
    min_rate_share: float = 0.95
    workers: int = 1  # decider serve's; the warm-up reaches one worker's caches for sure


@dataclass(frozen=True)
class Limits:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_error_rate: float


@dataclass(frozen=True)
class Budget:
    load: Load
    scenarios: dict[str, Limits]


@dataclass(frozen=True)
class Measured:
    """One row of Locust's stats CSV."""

    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rate: float


def read_budget(path: Path) -> Budget:
    """The budget file at `path`. Raises CannotRun for one missing or not a budget."""
    try:
        data = tomllib.loads(path.read_text())
        return Budget(
            Load(**data["load"]),
            {name: Limits(**limits) for name, limits in data["scenarios"].items()},
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CannotRun(f"{path}: not a budget file ({type(exc).__name__}: {exc})") from None


def read_stats(path: Path) -> dict[str, Measured]:
    """Locust's `*_stats.csv`, by request name (the total row is `Aggregated`)."""

    def ms(value: str) -> float:
        return float("nan") if value in ("", "N/A") else float(value)

    with path.open(newline="") as file:
        return {
            row["Name"]: Measured(
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p50_ms=ms(row["50%"]),
                p95_ms=ms(row["95%"]),
                p99_ms=ms(row["99%"]),
                rate=float(row["Requests/s"]),
            )
            for row in csv.DictReader(file)
        }


def judge(budget: Budget, measured: dict[str, Measured], load: Load) -> tuple[int, list[str]]:
    """The exit status and the verdict's lines: every budgeted scenario against its row."""
    lines = [
        f"{'scenario':<22}{'requests':>9}{'errors':>8}   "
        f"{'p50 ms':>11}{'p95 ms':>11}{'p99 ms':>11}   verdict"
    ]
    status = MET
    for name, limits in budget.scenarios.items():
        row = measured.get(name)
        if row is None or row.requests == 0:
            lines.append(f"{name:<22}{0:>9}{'':>8}   {'':>33}   MISSED: no requests measured")
            status = max(status, MISSED)
            continue
        misses = []
        cells = []
        for label in ("p50_ms", "p95_ms", "p99_ms"):
            got, limit = getattr(row, label), getattr(limits, label)
            cells.append(f"{got:>5g} ≤{limit:<4g}")
            if not got <= limit:
                misses.append(label.removesuffix("_ms"))
        error_rate = row.failures / row.requests
        if error_rate > limits.max_error_rate:
            misses.append(f"errors {error_rate:.2%} > {limits.max_error_rate:.2%}")
        verdict = "met" if not misses else "MISSED: " + ", ".join(misses)
        lines.append(f"{name:<22}{row.requests:>9}{row.failures:>8}   {''.join(cells)}   {verdict}")
        if misses:
            status = max(status, MISSED)
    unbudgeted = sorted(set(measured) - set(budget.scenarios))
    if unbudgeted:
        lines.append(f"MISSED: no budget for {', '.join(unbudgeted)}")
        status = max(status, MISSED)
    total = measured.get("Aggregated")
    if total is not None:
        needed = load.rate * budget.load.min_rate_share
        held = total.rate >= needed
        lines.append(
            f"rate: {total.rate:.1f} requests/s delivered of {load.rate:g} offered "
            f"(at least {needed:.1f} needed): {'met' if held else 'MISSED'}"
        )
        if not held:
            status = max(status, MISSED)
        if any(row.failures for row in measured.values()):
            lines.append(f"FAILED: {total.failures} requests failed (see {PREFIX}_failures.csv)")
            status = FAILED
    if load != budget.load:
        lines.append(
            f"note: run at {load.rate:g}/s for {load.seconds} s with {load.users} users and "
            f"{load.misses:.0%} misses; the budget is stated at {budget.load.rate:g}/s for "
            f"{budget.load.seconds} s with {budget.load.users} users and "
            f"{budget.load.misses:.0%} misses"
        )
    lines.append(
        "verdict: "
        + {MET: "budget met", MISSED: "budget MISSED", FAILED: "requests FAILED"}[status]
    )
    return status, lines


def outcome_lines(path: Path) -> list[str]:
    """What the decisions were, per scenario: how many were personalized, suppressed, and
    which segments were served (the population is meant to reach them all)."""
    if not path.exists():
        return []
    outcomes: dict[str, dict[str, int]] = json.loads(path.read_text())
    lines = []
    served: set[str] = set()
    for name, counts in sorted(outcomes.items()):
        decisions = counts.get("decisions", 0) or 1
        segments = {k.removeprefix("segment "): v for k, v in counts.items() if "segment " in k}
        served |= {s for s in segments if s != "None"}
        lines.append(
            f"{name:<22}{counts.get('personalized', 0) / decisions:>6.0%} personalized"
            f"{counts.get('suppressed', 0) / decisions:>6.0%} suppressed, "
            f"{len(segments) - ('None' in segments)} segments"
        )
    lines.append(f"segments served: {len(served)} ({', '.join(sorted(served))})")
    return lines


def prepare(work: Path, load: Load) -> tuple[Path, Path]:
    """The population's manifest and an SQLite store holding its profiles."""
    records, manifest = generate(load.visitors, load.accounts, datetime.now(UTC))
    profiles = work / "profiles.jsonl"
    profiles.write_text("".join(json.dumps(record) + "\n" for record in records))
    manifest_path = work / "population.json"
    manifest_path.write_text(json.dumps(manifest.as_json()))
    store = work / "profiles.db"
    done = subprocess.run(
        [sys.executable, "-m", "decider.cli", "profiles", "import", str(profiles),
         "--db", str(store), "--rules", str(ROOT / "rules")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise CannotRun(f"decider profiles import failed:\n{done.stdout}{done.stderr}")
    print(done.stdout.strip())
    return manifest_path, store


@contextmanager
def serving(store: Path, keys: str, log: Path, workers: int) -> Iterator[str]:
    """`decider serve` on a free loopback port over `store`, ready; stopped on exit."""
    env = {
        **os.environ,
        "DECIDER_WORKERS": str(workers),
        "DECIDER_PROFILE_DB": str(store),
        "DECIDER_USAGE_DB": str(store.parent / "usage.db"),  # not the checkout's measure/
        "DECIDER_PROFILE_SEED_SAMPLES": "false",
        "DECIDER_API_KEYS": keys,
        "DECIDER_WATCH_RULES": "false",
        "DECIDER_LOG_FORMAT": "json",
    }
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "decider.cli", "serve", "--rules", str(ROOT / "rules"),
             "--host", "127.0.0.1", "--port", "0"],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            if (found := LISTENING.search(log.read_text())) is not None:
                url = found[1]
            elif process.poll() is not None or time.monotonic() > deadline:
                raise CannotRun(f"decider serve did not start:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise CannotRun(f"decider serve did not get ready:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def warm(url: str, manifest: Path, web_key: str, email_key: str) -> None:
    """Ask once about every id of the warm pools, so the measured run's hits are hits."""
    pools = json.loads(manifest.read_text())
    bodies: list[tuple[str, dict[str, Any]]] = [
        (web_key, {"placement": placement, "identity": identity})
        for pool in ("known", "anonymous", "denied")
        for placement, identity in pools[pool]
    ]
    bodies += [
        (email_key, {"placement": placement, "identity": {"email_sha256": email_sha256(a)}})
        for placement, a in pools["recipients"]
    ]
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=10) as client:

        def ask(item: tuple[str, dict[str, Any]]) -> None:
            key, body = item
            answer = client.post(
                "/v1/decide", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            if answer.status_code != 200:
                raise CannotRun(f"warm-up: HTTP {answer.status_code}: {answer.text[:300]}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(ask, bodies))
    print(f"warmed the cache: {len(bodies)} decisions in {time.perf_counter() - started:.1f} s")


def run_locust(url: str, manifest: Path, load: Load, reports: Path, keys: dict[str, str]) -> None:
    """Locust headless at the load's fixed rate; its reports land in `reports`."""
    command = [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
        "--host", url, "-u", str(load.users), "-r", str(load.users),
        "-t", f"{load.seconds}s", "--stop-timeout", "5",
        "--csv", str(reports / PREFIX), "--html", str(reports / f"{PREFIX}.html"),
        "--only-summary", "--loglevel", "WARNING",
        "--population", str(manifest), "--rate", str(load.rate), "--misses", str(load.misses),
        "--outcomes", str(reports / f"{PREFIX}_outcomes.json"),
    ]  # fmt: skip
    log = reports / "locust.log"
    with log.open("w") as output:
        done = subprocess.run(
            command, env={**os.environ, **keys}, stdout=output, stderr=subprocess.STDOUT,
            check=False, timeout=load.seconds + 120,
        )  # fmt: skip
    if not (reports / f"{PREFIX}_stats.csv").exists():
        raise CannotRun(f"Locust wrote no report (exit {done.returncode}):\n{log.read_text()}")


def report(budget: Budget, reports: Path) -> int:
    """Print the verdict of the report in `reports`; its exit status."""
    load = Load(**json.loads((reports / "run.json").read_text())["load"])
    status, lines = judge(budget, read_stats(reports / f"{PREFIX}_stats.csv"), load)
    print("\n".join(lines))
    if outcomes := outcome_lines(reports / f"{PREFIX}_outcomes.json"):
        print("\ndecisions:")
        print("\n".join(outcomes))
    print(f"\nreports: {reports}")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=Path, default=HERE / "budget.toml")
    parser.add_argument("--rate", type=float, help="requests/s offered [the budget's]")
    parser.add_argument("--seconds", type=int, help="measured run [the budget's]")
    parser.add_argument("--users", type=int, help="Locust users [the budget's]")
    parser.add_argument("--misses", type=float, help="share of cache misses [the budget's]")
    parser.add_argument("--visitors", type=int, help="visitors generated [the budget's]")
    parser.add_argument("--accounts", type=int, help="accounts generated [the budget's]")
    parser.add_argument(
        "--report-dir", type=Path, default=Path("loadtest-report"), help="[loadtest-report]"
    )
    parser.add_argument("--judge", type=Path, metavar="DIR", help="judge this report only")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, in order
    try:
        budget = read_budget(args.budget)
    except CannotRun as exc:
        print(f"budget: cannot run: {exc}", file=sys.stderr)
        return BROKEN
    if args.judge:
        return report(budget, args.judge)
    given = {k: getattr(args, k) for k in ("rate", "seconds", "users", "misses")}
    given |= {k: getattr(args, k) for k in ("visitors", "accounts")}
    load = Load(**{**asdict(budget.load), **{k: v for k, v in given.items() if v is not None}})
    reports: Path = args.report_dir
    reports.mkdir(parents=True, exist_ok=True)
    web_key, web_hash = new_key()
    email_key, email_hash = new_key()
    keys = f"web-edge:decide+consent:{web_hash},email-renderer:decide:{email_hash}"
    print(
        f"load: {load.rate:g} requests/s for {load.seconds} s, {load.users} users, "
        f"{load.misses:.0%} cache misses; {load.visitors} visitors, {load.accounts} accounts"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="decider-budget-") as scratch:
            work = Path(scratch)
            manifest, store = prepare(work, load)
            with serving(store, keys, work / "serve.log", load.workers) as url:
                warm(url, manifest, web_key, email_key)
                (reports / "run.json").write_text(
                    json.dumps({"load": asdict(load), "started": datetime.now(UTC).isoformat()})
                )
                run_locust(
                    url,
                    manifest,
                    load,
                    reports,
                    {"LOADTEST_WEB_KEY": web_key, "LOADTEST_EMAIL_KEY": email_key},
                )
    except CannotRun as exc:
        print(f"budget: cannot run: {exc}", file=sys.stderr)
        return BROKEN
    return report(budget, reports)


if __name__ == "__main__":
    sys.exit(main())
