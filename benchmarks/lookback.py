"""What `lookback_window` costs: state size and listing pages, per window width.

    python -m benchmarks lookback

A history of jobs created at a steady rate (Clavata and Talonic), one full sync, then ten new jobs and a second
sync, for each window width. Reported: the entries and bytes of the state after the runs, and the listing pages the
second run read. Deterministic (request counts and sizes, not times).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import run_tap  # noqa: E402
from tests.fakeapi import FakeAPIs  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def main(argv: list[str]) -> int:
    jobs, spacing = 2000, 30  # one job every 30 s: 2,000 jobs over about 17 hours
    print(f"{jobs:,} Clavata + {jobs:,} Talonic jobs, one every {spacing} s; then 10 new jobs each and a second run")
    print(f"{'lookback_window':>16} {'seen IDs':>9} {'state bytes':>12} {'listing pages (2nd run)':>24}")
    for window in (0, 60, 600, 3600, 21600):
        with FakeAPIs() as apis:
            for n in range(jobs):
                created = (T0 + timedelta(seconds=spacing * n)).strftime("%Y-%m-%dT%H:%M:%SZ")
                apis.clavata.add_job(results=1, created=created)
                apis.talonic.add_job(rows=1, created_at=created)
            config = {**apis.config(sources=("clavata", "talonic")), "lookback_window": window}
            first = run_tap(config, check=True)
            for n in range(jobs, jobs + 10):
                created = (T0 + timedelta(seconds=spacing * n)).strftime("%Y-%m-%dT%H:%M:%SZ")
                apis.clavata.add_job(results=1, created=created)
                apis.talonic.add_job(rows=1, created_at=created)
            for vendor in (apis.clavata, apis.talonic):
                vendor.reset_counters()
            second = run_tap(config, state=first.state, check=True)
            assert len(second.records("clavata_jobs")) == 10 and len(second.records("extraction_jobs")) == 10
            pages = sum(1 for v in (apis.clavata, apis.talonic) for r in v.request_log if r["path"] == "/v1/jobs")
            bookmarks = second.state["bookmarks"]
            seen = sum(len(bookmarks[s]["job_bookmarks"]["all"]["seen"]) for s in ("clavata_jobs", "extraction_jobs"))
            print(f"{window:>14} s {seen:>9} {len(json.dumps(second.state)):>12} {pages:>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
