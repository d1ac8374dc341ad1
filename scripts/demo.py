"""The no-credentials demo: fake APIs -> tap-jobresults -> target-duckdb -> a look at what landed.

Run it with `make demo` (which installs the tap and the loader first). It writes output/demo.duckdb.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "output"
STREAMS = (
    "entity_matching_jobs",
    "match_results",
    "pipeline_runs",
    "pipeline_matches",
    "suggested_rules",
    "generated_rules",
    "clavata_jobs",
    "clavata_reports",
    "extraction_jobs",
    "extraction_rows",
)


SUMMARY = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for stream in sys.argv[2:]:
    count = con.execute(f"select count(*) from tap_jobresults.{stream}").fetchall()[0][0]
    print(f"{stream:<22} {count:>5} rows")
print("\\n== low-confidence extraction rows and their validation flags")
for filename, confidence, flags in con.execute(
    "select filename, confidence, validation_flags from tap_jobresults.extraction_rows "
    "where confidence < 0.8 order by confidence limit 5"
).fetchall():
    print(f"{filename:<20} {confidence:<5} {flags}")
"""


def _loader_python() -> str:
    target = shutil.which("target-duckdb")
    if target is None:
        raise SystemExit("target-duckdb is not on PATH: run `make demo`")
    return str(Path(target).resolve().parent / "python")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    tap_config, state_file = OUT / "demo-config.json", OUT / "demo-state.json"
    database = OUT / "demo.duckdb"
    for path in (tap_config, database, state_file):
        path.unlink(missing_ok=True)
    target_config = OUT / "target-duckdb.json"
    target_config.write_text(json.dumps({"filepath": str(database), "default_target_schema": "tap_jobresults"}))

    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "serve", "--scenario", "demo", "--config-out", str(tap_config)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not tap_config.exists():
            if time.monotonic() > deadline or fake.poll() is not None:
                print("the fake APIs did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print("== fake APIs up; running: tap-jobresults | target-duckdb", file=sys.stderr)
        with state_file.open("w") as states:
            tap = subprocess.Popen(
                ["tap-jobresults", "--config", str(tap_config)], stdout=subprocess.PIPE, env=os.environ
            )
            target = subprocess.Popen(
                ["target-duckdb", "--config", str(target_config)], stdin=tap.stdout, stdout=states
            )
            assert tap.stdout is not None
            tap.stdout.close()
            target.wait()
            tap.wait()
        if tap.returncode or target.returncode:
            print(f"tap exited {tap.returncode}, target exited {target.returncode}", file=sys.stderr)
            return 1
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=10)

    print(f"\n== what landed in {database.relative_to(ROOT)} (schema tap_jobresults)", flush=True)
    # Read with the loader's own duckdb: a file is best read by the version that wrote it.
    summary = subprocess.run([_loader_python(), "-c", SUMMARY, str(database), *STREAMS], check=False)
    if summary.returncode:
        return 1
    last_state = [line for line in state_file.read_text().splitlines() if line.strip()]
    print(f"== final state ({len(last_state[-1]) if last_state else 0} bytes) in {state_file.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
