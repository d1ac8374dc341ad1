"""The no-credentials demo: fake APIs -> tap-jobresults -> a loader -> a look at what landed.

    make demo            target-duckdb into output/demo.duckdb (no server needed)
    make demo-postgres   target-postgres into schema tap_jobresults_demo of your PostgreSQL
                         (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE; default 127.0.0.1:5432,
                         postgres, database postgres)

Each loader runs from its own virtualenv, as Meltano would install it.
"""

from __future__ import annotations

import argparse
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


DUCKDB_SUMMARY = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
rows = lambda sql: con.execute(sql).fetchall()
SCHEMA = "tap_jobresults"
"""
POSTGRES_SUMMARY = """
import sys, psycopg
con = psycopg.connect(sys.argv[1])
rows = lambda sql: con.execute(sql).fetchall()
SCHEMA = "tap_jobresults_demo"
"""
SUMMARY = """
for stream in sys.argv[2:]:
    count = rows(f"select count(*) from {SCHEMA}.{stream}")[0][0]
    print(f"{stream:<22} {count:>5} rows")
print("\\n== low-confidence extraction rows and their validation flags")
for filename, confidence, flags in rows(
    f"select filename, confidence, validation_flags from {SCHEMA}.extraction_rows "
    "where confidence < 0.8 order by confidence limit 5"
):
    print(f"{filename:<20} {confidence:<5} {flags}")
"""


def _loader(name: str) -> tuple[str, str]:
    """The loader's executable and its virtualenv's python (which reads back what it wrote)."""
    target = shutil.which(name)
    if target is None:
        raise SystemExit(f"{name} is not on PATH: run `make demo` or `make demo-postgres`")
    return target, str(Path(target).resolve().parent / "python")


def _postgres() -> tuple[dict, str]:
    env = os.environ
    conn = {
        "host": env.get("PGHOST", "127.0.0.1"),
        "port": int(env.get("PGPORT", "5432")),
        "user": env.get("PGUSER", "postgres"),
        # target-postgres insists on a password; a trust-auth server ignores it.
        "password": env.get("PGPASSWORD", "unused-with-trust-auth"),
        "database": env.get("PGDATABASE", "postgres"),
    }
    url = f"postgresql://{conn['user']}:{conn['password']}@{conn['host']}:{conn['port']}/{conn['database']}"
    config = {**conn, "default_target_schema": "tap_jobresults_demo", "load_method": "upsert", "use_copy": True}
    return config, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loader", choices=["duckdb", "postgres"], default="duckdb")
    loader = parser.parse_args().loader
    OUT.mkdir(exist_ok=True)
    tap_config, state_file = OUT / "demo-config.json", OUT / "demo-state.json"
    database = OUT / "demo.duckdb"
    for path in (tap_config, database, state_file):
        path.unlink(missing_ok=True)
    target, loader_python = _loader(f"target-{loader}")
    if loader == "duckdb":
        config, where, summary = (
            {"filepath": str(database), "default_target_schema": "tap_jobresults", "add_metadata_columns": True},
            str(database),
            DUCKDB_SUMMARY,
        )
    else:
        config, where = _postgres()
        summary = POSTGRES_SUMMARY
        # A fresh demo schema each time, so the counts below are this run's.
        drop = "import sys, psycopg; psycopg.connect(sys.argv[1], autocommit=True).execute('drop schema if exists tap_jobresults_demo cascade')"
        subprocess.run([loader_python, "-c", drop, where], check=True)
    target_config = OUT / f"target-{loader}.json"
    target_config.write_text(json.dumps(config))

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
        print(f"== fake APIs up; running: tap-jobresults | target-{loader}", file=sys.stderr)
        with state_file.open("w") as states:
            tap = subprocess.Popen(
                ["tap-jobresults", "--config", str(tap_config)], stdout=subprocess.PIPE, env=os.environ
            )
            target_proc = subprocess.Popen([target, "--config", str(target_config)], stdin=tap.stdout, stdout=states)
            assert tap.stdout is not None
            tap.stdout.close()
            target_proc.wait()
            tap.wait()
        if tap.returncode or target_proc.returncode:
            print(f"tap exited {tap.returncode}, target exited {target_proc.returncode}", file=sys.stderr)
            return 1
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=10)

    shown = (
        f"{database.relative_to(ROOT)} (schema tap_jobresults)" if loader == "duckdb" else "schema tap_jobresults_demo"
    )
    print(f"\n== what landed in {shown}", flush=True)
    # Read back with the loader's own environment (its duckdb, its psycopg).
    if subprocess.run([loader_python, "-c", summary + SUMMARY, where, *STREAMS], check=False).returncode:
        return 1
    last_state = [line for line in state_file.read_text().splitlines() if line.strip()]
    print(f"== final state ({len(last_state[-1]) if last_state else 0} bytes) in {state_file.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
