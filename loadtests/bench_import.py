"""Importing a large profiles file: records per second and peak memory of `decider profiles
import`, run as a user runs it, into a new SQLite store, with the sample rules' schema.

Reports numbers; asserts nothing. Run:

    .venv/bin/python loadtests/bench_import.py [--records 1000000]

The generated file holds one account per five visitors; every visitor has a user id, an
email hash, consent records and traits (about 420 bytes a line, like a CRM export).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def generate(path: Path, records: int) -> None:
    """`records` lines, streamed to disk (the generator holds one line at a time)."""
    with path.open("w") as out:
        for n in range(records):
            record: dict[str, Any]
            if n % 6 == 0:
                record = {
                    "kind": "account",
                    "id": f"acc-{n}",
                    "traits": {
                        "name": f"Company {n}",
                        "fit_score": n % 100,
                        "stage": ("awareness", "evaluation", "vendor_aware")[n % 3],
                        "lifecycle": "prospect",
                        "last_seen_at": "2026-11-18T09:00:00+00:00",
                        "committee_roles_seen": ["vp", "practitioner"],
                        "employees": 50 + n % 5000,
                    },
                }
            else:
                record = {
                    "kind": "visitor",
                    "id": f"v-{n}",
                    "account_id": f"acc-{n - n % 6}",
                    "user_ids": [f"u-{n}"],
                    "email_sha256": [hashlib.sha256(f"p{n}@example.com".encode()).hexdigest()],
                    "consent": [
                        {
                            "purpose": "personalization",
                            "basis": "consent",
                            "granted_at": "2026-06-01T00:00:00Z",
                        }
                    ],
                    "traits": {"role": "vp", "last_seen_at": "2026-11-19T08:00:00Z"},
                }
            out.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="lines in the file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decider-bench-import-") as scratch:
        work = Path(scratch)
        source = work / "profiles.jsonl"
        generate(source, args.records)
        size = source.stat().st_size
        command = [
            sys.executable, "-m", "decider.cli", "profiles", "import", str(source),
            "--db", str(work / "bench.db"), "--rules", str(ROOT / "rules"),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        print(done.stdout.strip())
        print(
            f"{args.records:,} records ({size / 1e6:.0f} MB) in {elapsed:.1f} s: "
            f"{args.records / elapsed:,.0f} records/s; peak memory {peak_kib / 1024:.0f} MB; "
            f"store {(work / 'bench.db').stat().st_size / 1e6:.0f} MB"
        )


if __name__ == "__main__":
    main()
