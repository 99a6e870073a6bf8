"""The latency budget command (loadtests/budget.py), as CI runs it: a few seconds at a low
rate against a real service. Timings are not asserted (a shared machine makes them noise);
what is: no request failed, the reports were written, and the verdict's logic holds on the
report the run wrote."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

SCENARIOS = [
    "web known",
    "web anonymous",
    "web consent-denied",
    "web cache miss",
    "email nurture_email",
    "email trial_email",
]
MET, MISSED, FAILED = 0, 1, 2


def budget(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "loadtests/budget.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short run: 40 requests/s for 4 s from 4 users, over 300 generated visitors."""
    where = tmp_path_factory.mktemp("loadtest") / "reports"
    done = budget(
        "--rate", "40", "--seconds", "4", "--users", "4", "--misses", "0.2",
        "--visitors", "300", "--accounts", "30", "--report-dir", str(where),
    )  # fmt: skip
    # 0 met, 1 missed on timings (not judged here); 2 a request failed, 3 no run at all
    assert done.returncode in (MET, MISSED), done.stdout + done.stderr
    assert "verdict: budget" in done.stdout
    return where


def test_no_request_failed_and_the_reports_were_written(reports: Path) -> None:
    stats = {row["Name"]: row for row in rows(reports / "decide_stats.csv")}
    assert int(stats["Aggregated"]["Request Count"]) > 50
    assert {name: int(row["Failure Count"]) for name, row in stats.items()} == dict.fromkeys(
        stats, 0
    )
    assert rows(reports / "decide_failures.csv") == []
    assert "web known" in stats
    assert "web cache miss" in stats
    html = (reports / "decide.html").read_text()
    assert "Locust" in html
    assert "web known" in html


def test_the_generated_people_reach_the_segments(reports: Path) -> None:
    """The population is built for the sample rules: decisions are personalized, and
    several segments are served even in a few seconds."""
    outcomes = json.loads((reports / "decide_outcomes.json").read_text())
    served = {
        key.removeprefix("segment ")
        for counts in outcomes.values()
        for key in counts
        if key.startswith("segment ") and key != "segment None"
    }
    assert len(served) >= 3
    assert outcomes["web known"]["personalized"] > 0


def test_a_report_is_judged_by_the_budget_it_is_given(reports: Path, tmp_path: Path) -> None:
    """`--judge` reads the run's report again: a budget nothing can meet is missed, named
    per scenario; a budget anything meets is met."""
    impossible = tmp_path / "impossible.toml"
    generous = tmp_path / "generous.toml"
    load = (ROOT / "loadtests" / "budget.toml").read_text().split("[scenarios.", 1)[0]
    for path, limit in ((impossible, -1), (generous, 60_000)):
        limits = f"p50_ms = {limit}\np95_ms = {limit}\np99_ms = {limit}\nmax_error_rate = 0.0\n"
        path.write_text(
            load.replace("min_rate_share = 0.95", "min_rate_share = 0.0")
            + "".join(f'[scenarios."{name}"]\n{limits}' for name in [*SCENARIOS, "Aggregated"])
        )
    missed = budget("--judge", str(reports), "--budget", str(impossible))
    assert missed.returncode == MISSED, missed.stdout + missed.stderr
    verdict = missed.stdout.split("\ndecisions:", 1)[0]
    verdicts = [line for line in verdict.splitlines() if line.startswith(tuple(SCENARIOS))]
    assert len(verdicts) == len(SCENARIOS)
    assert all("MISSED" in line for line in verdicts), missed.stdout
    assert "verdict: budget MISSED" in missed.stdout
    met = budget("--judge", str(reports), "--budget", str(generous))
    assert met.returncode == MET, met.stdout + met.stderr
    assert "verdict: budget met" in met.stdout


def test_a_failed_request_fails_the_run_whatever_the_timings(reports: Path, tmp_path: Path) -> None:
    copy = tmp_path / "reports"
    copy.mkdir()
    for path in reports.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    stats = rows(copy / "decide_stats.csv")
    for row in stats:
        if row["Name"] in ("web known", "Aggregated"):
            row["Failure Count"] = "1"
    with (copy / "decide_stats.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(stats[0]))
        writer.writeheader()
        writer.writerows(stats)
    failed = budget("--judge", str(copy))
    assert failed.returncode == FAILED, failed.stdout + failed.stderr
    assert "FAILED: 1 requests failed" in failed.stdout
