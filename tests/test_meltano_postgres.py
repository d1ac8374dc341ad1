"""`meltano run tap-jobresults target-postgres`: the real Meltano, the real loader, the real server.

Meltano installs the tap (`-e .`) and `meltanolabs-target-postgres` into virtualenvs of their own
under .meltano/, exactly as a user's `meltano install` does; state lives in the system database, a
temporary SQLite file here, so that no state ID of the tests is left in the project's .meltano/meltano.db.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import CONTRACT_KEYS, ROOT, populate, project_lock

psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project_lock")]
MELTANO = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
PG_URL = os.environ.get("TAP_JOBRESULTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(PG_URL)
SYSTEM_DB = Path(tempfile.mkdtemp(prefix="jr-meltano-db-")) / "meltano.db"
atexit.register(shutil.rmtree, SYSTEM_DB.parent, True)


def _meltano(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_DATABASE_URI": f"sqlite:///{SYSTEM_DB}",
        **(env or {}),
    }
    full_env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        [MELTANO, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"meltano {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def meltano_installed() -> None:
    if not Path(MELTANO).exists():
        pytest.fail(f"meltano not found at {MELTANO}: run `make test` (it installs Meltano into .venv-meltano)")
    with project_lock():  # a session fixture: set up before any test's own meltano_project_lock
        _meltano("install", "--plugin-type", "extractor", "tap-jobresults")
        _meltano("install", "--plugin-type", "loader", "target-postgres")


@pytest.fixture
def schema() -> str:
    name = f"jr_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'drop schema if exists "{name}" cascade')


def _env(apis, schema: str) -> dict[str, str]:
    config = apis.config()
    env = {
        "TARGET_POSTGRES_HOST": PG.hostname or "127.0.0.1",
        "TARGET_POSTGRES_PORT": str(PG.port or 5432),
        "TARGET_POSTGRES_USER": PG.username or "postgres",
        # target-postgres insists on a password; a trust-auth server ignores it.
        "TARGET_POSTGRES_PASSWORD": PG.password or "unused-with-trust-auth",
        "TARGET_POSTGRES_DATABASE": PG.path.lstrip("/") or "postgres",
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
    }
    for section, values in config.items():
        if isinstance(values, dict):
            for key, value in values.items():
                env[f"TAP_JOBRESULTS_{section.upper()}_{key.upper()}"] = (
                    value if isinstance(value, str) else json.dumps(value)
                )
        else:
            env[f"TAP_JOBRESULTS_{section.upper()}"] = str(values)
    return env


def _query(sql: str, *params):
    with psycopg.connect(PG_URL) as con:
        return con.execute(sql, params).fetchall()


def test_meltano_run_into_postgres_twice(apis, schema, meltano_installed):
    made = populate(apis)
    env = _env(apis, schema)
    suffix = ["--state-id-suffix", schema]
    _meltano("run", *suffix, "tap-jobresults", "target-postgres", env=env)

    tables = {r[0] for r in _query("select table_name from information_schema.tables where table_schema = %s", schema)}
    assert tables == set(CONTRACT_KEYS)
    for table, keys in CONTRACT_KEYS.items():
        pk = [
            r[0]
            for r in _query(
                "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) "
                "where i.indrelid = %s::regclass and i.indisprimary",
                f'"{schema}"."{table}"',
            )
        ]
        assert sorted(pk) == sorted(keys), table

    counts = {t: _query(f'select count(*) from "{schema}"."{t}"')[0][0] for t in CONTRACT_KEYS}
    assert counts["entity_matching_jobs"] == len(made["predict"])
    assert counts["match_results"] == 7
    assert counts["pipeline_runs"] == len(made["runs"])
    assert counts["pipeline_matches"] == 5 and counts["suggested_rules"] == 2 and counts["generated_rules"] == 1
    assert counts["clavata_jobs"] == len(made["clavata"]) and counts["clavata_reports"] == 5
    assert counts["extraction_jobs"] == len(made["talonic"])

    types = dict(
        _query(
            "select table_name || '.' || column_name, data_type from information_schema.columns where table_schema = %s",
            schema,
        )
    )
    assert types["match_results.source"] == "jsonb"
    assert types["extraction_rows.values"] == "jsonb"
    # Arrays of objects are declared without `items` so that they land as jsonb, not jsonb[].
    assert types["match_results.matches"] == "jsonb"
    assert types["extraction_rows.validation_flags"] == "jsonb"
    assert _query(f'select max(jsonb_array_length(matches)) from "{schema}".match_results')[0][0] == 2
    assert types["entity_matching_jobs.created_time"].startswith("timestamp")
    assert types["clavata_jobs.completed"].startswith("timestamp")
    assert types["match_results.top_score"] in ("double precision", "numeric")
    names = _query(f"select source->>'name' from \"{schema}\".match_results where source->>'name' is not null")
    assert names, "source->>'name' is queryable"
    # What the fake served, row by row and item by item: the loaded values must be exactly these.
    served_rows = [row for j in made["talonic"] for row in apis.talonic._results(apis.talonic.jobs[j])["data"]]
    totals = dict(_query(f'select id, "values"->>\'total\' from "{schema}".extraction_rows'))
    assert totals == {
        row["id"]: None if row["values"]["total"] is None else str(row["values"]["total"]) for row in served_rows
    }

    near_misses, per_day, low_confidence, running = _run_readme_sql(schema)
    items = [
        item
        for j in made["predict"]
        if apis.cognite.predict_jobs[j]["status"] == "Completed"
        for item in apis.cognite._predict_body(apis.cognite.predict_jobs[j])["items"]
    ]
    best = [max((m["score"] for m in i["matches"] if "score" in m), default=None) for i in items]
    assert len(near_misses) == sum(b is None or b < 0.8 for b in best)
    assert sum(row[3] for row in per_day) == counts["clavata_reports"]
    assert sorted(float(row[1]) for row in low_confidence) == sorted(
        r["confidence"] for r in served_rows if r["confidence"] < 0.8 or r["validation_flags"]
    )
    assert dict(running) == {"cdf": 1, "clavata": 1, "talonic": 1}  # populate() leaves one of each running

    first_load = _query(f'select max(_sdc_batched_at) from "{schema}".extraction_rows')[0][0]
    apis.cognite.finish_all()
    apis.clavata.finish_all()
    apis.talonic.finish_all()
    new_job = apis.talonic.add_job(rows=2)
    _meltano("run", *suffix, "tap-jobresults", "target-postgres", env=env)

    for table, keys in CONTRACT_KEYS.items():
        cols = ", ".join(keys)
        dupes = _query(f'select {cols}, count(*) from "{schema}"."{table}" group by {cols} having count(*) > 1')
        assert not dupes, (table, dupes[:3])
    statuses = dict(_query(f'select job_id, status from "{schema}".entity_matching_jobs'))
    assert "Running" not in statuses.values()
    assert _query(f'select count(*) from "{schema}".match_results')[0][0] == 7 + 2
    reloaded = {
        r[0]
        for r in _query(
            f'select distinct job_id from "{schema}".extraction_rows where _sdc_batched_at > %s', first_load
        )
    }
    # Only the job that was processing and the new one came again: finished jobs were not re-read.
    assert reloaded == {made["talonic"][-1], new_job}


def _run_readme_sql(schema: str) -> list[list[tuple]]:
    """The docs' example SQL (docs/warehouses.md), run as written against the tables the loader made; the rows of
    each statement."""
    readme = (ROOT / "docs" / "warehouses.md").read_text()
    section = readme.split("## Example SQL (PostgreSQL)", 1)[1]
    sql = section.split("```sql", 1)[1].split("```", 1)[0]
    statements = [s.strip() for s in sql.replace("tap_jobresults.", f'"{schema}".').split(";") if s.strip()]
    assert len(statements) >= 4
    with psycopg.connect(PG_URL) as con:
        return [con.execute(statement).fetchall() for statement in statements]
