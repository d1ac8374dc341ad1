"""The no-credentials demo: fake APIs -> tap-jobresults -> a loader -> dbt -> a look at the review models.

    make demo            target-duckdb into output/demo.duckdb (no server needed)
    make demo-postgres   target-postgres into schema tap_jobresults_demo of your PostgreSQL
                         (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE; default 127.0.0.1:5432,
                         postgres, database postgres)

--output DIR puts the demo's files (config, state, DuckDB file, log) elsewhere than output/, and
--schema NAME loads PostgreSQL into another schema (the tests use both, to leave yours alone).
It prints results, not logs: the tap's and the loader's logs go to demo.log, and only their warnings and errors
are shown, after the results (--verbose, or `make demo V=1`, shows everything as it happens). The fake APIs
serve the same jobs at every run (a fixed seed), so the same run shows the same rows.

Each loader runs from its own virtualenv, as Meltano would install it; so does dbt (.venv-dbt), which builds
the project in transform/ over what landed, into the schema named after the loaded one plus `_dbt` (tap_jobresults_dbt in the
DuckDB file, tap_jobresults_demo_dbt in PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    "sync_runs",
)


DUCKDB_SUMMARY = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
rows = lambda sql: con.execute(sql).fetchall()
SCHEMA = sys.argv[2]
"""
POSTGRES_SUMMARY = """
import sys, psycopg
con = psycopg.connect(sys.argv[1])
rows = lambda sql: con.execute(sql).fetchall()
SCHEMA = sys.argv[2]
"""
SUMMARY = """
for stream in sys.argv[3:]:
    count = rows(f"select count(*) from {SCHEMA}.{stream}")[0][0]
    print(f"{stream:<22} {count:>5} rows")
print("\\n== low-confidence extraction rows and their validation flags")
for filename, confidence, flags in rows(
    f"select filename, confidence, validation_flags from {SCHEMA}.extraction_rows "
    "where confidence < 0.8 order by confidence limit 5"
):
    print(f"{filename:<20} {confidence:<5} {flags}")
"""


# What `make demo` shows of each review model: its most telling columns, in review order.
REVIEW_MODELS = {
    "review_low_score_matches": ("job_id, item_index, source_name, candidate_rank, score, target_name", "score"),
    "review_ambiguous_matches": (
        "job_id, item_index, source_name, best_target_name, best_score, runner_up_target_name, runner_up_score",
        "score_gap",
    ),
    "review_policy_outcomes": (
        "policy_key, day, reports, outcome_true, outcome_false, outcome_failed, avg_score",
        "day",
    ),
    # Two extraction schemas may share a name: schema_id tells them apart.
    "review_flagged_extraction_fields": (
        "schema_name, schema_id, field, flag_count, flagged_row_rate, flag_codes",
        "flag_count desc, schema_id, field",
    ),
    "review_running_jobs": ("source, job_stream, job_key, status, created_at, age_seconds, progress", "created_at"),
    "review_failed_jobs": ("source, job_stream, job_key, status, error_code, error_message, failed_at", "failed_at"),
}
# Prints the first rows of each review model: argv = connection, models schema, then model:columns:order...
REVIEW = """
import datetime, sys
where, schema, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
def age(seconds):
    # 60590705 -> '701 d 6 h': the two largest units
    if seconds is None:
        return ""
    seconds, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])
def show(value, name):
    if name == "age_seconds":
        return age(value)
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    text = "" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
    if name.endswith("_id") and len(text) == 36 and text.count("-") == 4:
        return text[:8]  # a UUID: its first 8 digits tell the rows apart
    return text if len(text) <= 24 else text[:21] + "..."
for spec in specs:
    model, columns, order = spec.split(":")
    cur = con.execute(f"select {columns} from {schema}.{model} order by {order} limit 5")
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    total = con.execute(f"select count(*) from {schema}.{model}").fetchall()[0][0]
    print(f"\\n== {model}: {total} in all, the first {len(rows)}")
    table = [[("age" if n == "age_seconds" else n) for n in names]] + [[show(v, n) for v, n in zip(row, names)] for row in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(names))]
    for r in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
"""
DBT = ROOT / ".venv-dbt" / "bin" / "dbt"


def _dbt_review(loader: str, where: str, loader_python: str, source_schema: str) -> int:
    """dbt build over what landed, then the first rows of the review models."""
    if not DBT.exists():
        print("== dbt is not installed (.venv-dbt): `make demo` installs it", file=sys.stderr)
        return 1
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    if loader == "duckdb":
        models_schema = f"{source_schema}_dbt"
        env.update(DBT_TARGET="duckdb", DBT_DUCKDB_PATH=where, DBT_SCHEMA=models_schema)
        # The dbt venv's duckdb reads the file (its format is the loader's duckdb's).
        reader, connect = str(DBT.parent / "python"), "import duckdb; con = duckdb.connect(sys.argv[1])\n"
    else:
        conn, _ = _postgres(source_schema)
        models_schema = f"{source_schema}_dbt"
        env.update(
            DBT_TARGET="postgres",
            PGHOST=conn["host"],
            PGPORT=str(conn["port"]),
            PGUSER=conn["user"],
            PGPASSWORD=os.environ.get("PGPASSWORD", ""),
            PGDATABASE=conn["database"],
            DBT_SCHEMA=models_schema,
        )
        reader, connect = loader_python, "import psycopg; con = psycopg.connect(sys.argv[1])\n"
    has_heartbeat = (
        subprocess.run(
            [reader, "-c", "import sys\n" + connect + SYNC_RUNS_EXISTS, where, source_schema],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        == "yes"
    )
    dbt_vars = {"source_schema": source_schema, "sync_runs_enabled": has_heartbeat}
    print(f"\n== dbt build (transform/) into schema {models_schema}", flush=True)
    build = subprocess.run(
        [
            str(DBT),
            "build",
            "--project-dir",
            "transform",
            "--profiles-dir",
            "transform",
            "--vars",
            json.dumps(dbt_vars),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = [line for line in build.stdout.splitlines() if "Done. PASS=" in line]
    print(summary[-1].split("  ", 1)[-1].strip() if summary else build.stdout[-3000:], flush=True)
    if build.returncode:
        print(build.stdout[-5000:], file=sys.stderr)
        return 1
    specs = [f"{model}:{columns}:{order}" for model, (columns, order) in REVIEW_MODELS.items()]
    return subprocess.run(
        [reader, "-c", "import sys\n" + connect + REVIEW, where, models_schema, *specs], check=False
    ).returncode


SYNC_RUNS_EXISTS = """
found = con.execute(
    "select count(*) from information_schema.tables where table_schema = '" + sys.argv[2] + "' and table_name = 'sync_runs'"
).fetchall()[0][0]
print("yes" if found else "no")
"""


def _loader(name: str) -> tuple[str, str]:
    """The loader's executable and its virtualenv's python (which reads back what it wrote)."""
    target = shutil.which(name)
    if target is None:
        raise SystemExit(f"{name} is not on PATH: run `make demo` or `make demo-postgres`")
    return target, str(Path(target).resolve().parent / "python")


def _postgres(schema: str) -> tuple[dict, str]:
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
    config = {**conn, "default_target_schema": schema, "load_method": "upsert", "use_copy": True}
    return config, url


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loader", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--output", type=Path, default=OUT, help="directory for the demo's files (default output/)")
    parser.add_argument("--schema", help="target schema (default tap_jobresults, or tap_jobresults_demo in PostgreSQL)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the logs of the run as it happens")
    args = parser.parse_args()
    loader, out = args.loader, args.output.resolve()
    schema = args.schema or ("tap_jobresults" if loader == "duckdb" else "tap_jobresults_demo")
    out.mkdir(parents=True, exist_ok=True)
    tap_config, state_file = out / "demo-config.json", out / "demo-state.json"
    database = out / "demo.duckdb"
    for path in (tap_config, database, state_file, out / "demo.log"):
        path.unlink(missing_ok=True)
    target, loader_python = _loader(f"target-{loader}")
    if loader == "duckdb":
        config, where, summary = (
            {"filepath": str(database), "default_target_schema": schema, "add_metadata_columns": True},
            str(database),
            DUCKDB_SUMMARY,
        )
    else:
        config, where = _postgres(schema)
        summary = POSTGRES_SUMMARY
        # A fresh demo schema each time, so the counts below are this run's.
        drop = (
            "import sys, psycopg; con = psycopg.connect(sys.argv[1], autocommit=True)\n"
            "for schema in sys.argv[2:]:\n"
            "    con.execute(f'drop schema if exists \"{schema}\" cascade')"
        )
        subprocess.run([loader_python, "-c", drop, where, schema, f"{schema}_dbt"], check=True)
    target_config = out / f"target-{loader}.json"
    target_config.write_text(json.dumps(config))

    log_file = out / "demo.log"
    # The logs go to demo.log unless --verbose; the results come first, then the warnings of the run.
    log = None if args.verbose else log_file.open("w")
    print(
        f"tap-jobresults demo: fake CDF, Clavata and Talonic APIs -> tap-jobresults -> target-{loader} -> dbt"
        + ("" if args.verbose else f"\n(logs in {_shown(log_file)}; `make demo V=1` or --verbose shows them)"),
        flush=True,
    )
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "serve", "--scenario", "demo", "--config-out", str(tap_config)],
        cwd=ROOT,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while not tap_config.exists():
            if time.monotonic() > deadline or fake.poll() is not None:
                print(f"the fake APIs did not start (see {_shown(log_file)})", file=sys.stderr)
                return 1
            time.sleep(0.1)
        with state_file.open("w") as states:
            tap = subprocess.Popen(
                ["tap-jobresults", "--config", str(tap_config)], stdout=subprocess.PIPE, stderr=log, env=os.environ
            )
            target_proc = subprocess.Popen(
                [target, "--config", str(target_config)], stdin=tap.stdout, stdout=states, stderr=log
            )
            assert tap.stdout is not None
            tap.stdout.close()
            target_proc.wait()
            tap.wait()
        if tap.returncode or target_proc.returncode:
            if log is not None:
                log.close()
                print(log_file.read_text()[-5000:], file=sys.stderr)
            print(f"tap exited {tap.returncode}, target exited {target_proc.returncode}", file=sys.stderr)
            return 1
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=10)
        if log is not None:
            log.close()

    shown = f"{_shown(database)} (schema {schema})" if loader == "duckdb" else f"schema {schema}"
    print(f"\n== what landed in {shown}", flush=True)
    # Read back with the loader's own environment (its duckdb, its psycopg).
    if subprocess.run([loader_python, "-c", summary + SUMMARY, where, schema, *STREAMS], check=False).returncode:
        return 1
    last_state = [line for line in state_file.read_text().splitlines() if line.strip()]
    print(f"== final state ({len(last_state[-1]) if last_state else 0} bytes) in {_shown(state_file)}")
    status = _dbt_review(loader, where, loader_python, schema)
    if not args.verbose:
        warnings = [
            line for line in log_file.read_text().splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
        ]
        print(f"\n== warnings and errors of the run: {len(warnings)} (all logs in {_shown(log_file)})")
        for line in warnings:
            print(f"  {line}")
    return status


if __name__ == "__main__":
    sys.exit(main())
