"""The Dagster example (orchestrate/dagster/definitions.py) in its own virtualenv (.venv-dagster):
one run of the job executes every shard's `meltano run` as parallel ops against the fake APIs into
PostgreSQL, with Meltano's system database in PostgreSQL; the hourly schedule skips while a run is
still in progress (elt-dagster-meltano runs Meltano with --force, which skips Meltano's own check)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid

import pytest

from tests.conftest import ROOT, populate
from tests.meltano_shards import LOADER, SHARDS, install, meltano_env, shard_state_ids, system_db
from tests.meltano_shards import states as states_of
from tests.test_meltano_postgres import MELTANO, PG_URL, _env

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow
__all__ = ["system_db"]  # a fixture
DAGSTER_PY = ROOT / ".venv-dagster" / "bin" / "python"
DAGSTER = ROOT / ".venv-dagster" / "bin" / "dagster"
DEFINITIONS = ROOT / "orchestrate" / "dagster" / "definitions.py"


@pytest.fixture(autouse=True)
def dagster_installed() -> None:
    if not DAGSTER.exists():
        pytest.fail("dagster not found: `make .venv-dagster/bin/dagster` installs it into .venv-dagster")


@pytest.fixture
def schema() -> str:
    name = f"jr_dagster_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'drop schema if exists "{name}" cascade')


SCHEDULE_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
import definitions as d
from dagster import DagsterRunStatus, RunRequest, SkipReason, build_schedule_context, instance_for_test

assert d.defs.resolve_schedule_def("jobresults_shards_hourly").cron_schedule == "0 * * * *"
job = d.defs.resolve_job_def("jobresults_shards")
assert sorted(n.name for n in job.nodes) == [f"tap_jobresults__shard_{i}_target_postgres" for i in range(4)]
assert not any(job.graph.dependencies.values()), "the shard ops must not wait for one another"
with instance_for_test() as instance:
    assert isinstance(d.jobresults_shards_hourly(build_schedule_context(instance=instance)), RunRequest)
    instance.create_run_for_job(job_def=job, status=DagsterRunStatus.STARTED)
    assert isinstance(d.jobresults_shards_hourly(build_schedule_context(instance=instance)), SkipReason)
print("ok")
"""


def test_definitions_and_schedule_skip_while_running() -> None:
    proc = subprocess.run(
        [str(DAGSTER_PY), "-c", SCHEDULE_CHECK, str(DEFINITIONS.parent)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "JOBRESULTS_SHARDS": str(SHARDS)},
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_one_dagster_run_executes_every_shard(apis, system_db, schema) -> None:
    install(system_db)
    made = populate(apis)
    for _ in range(6):
        made["talonic"].append(apis.talonic.add_job(rows=1))
        made["clavata"].append(apis.clavata.add_job(results=1))
    with tempfile.TemporaryDirectory() as home:
        env = meltano_env(
            {
                **_env(apis, schema),
                "MELTANO_DATABASE_URI": system_db,
                "DAGSTER_HOME": home,
                "JOBRESULTS_SHARDS": str(SHARDS),
                "JOBRESULTS_LOADER": LOADER,
                "PATH": f"{os.path.dirname(MELTANO)}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        proc = subprocess.run(
            [str(DAGSTER), "job", "execute", "-f", str(DEFINITIONS), "-j", "jobresults_shards"],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "RUN_SUCCESS" in output, output[-3000:]
    for i in range(SHARDS):
        assert f"meltano run tap-jobresults--shard-{i} {LOADER} --force" in output

    assert set(states_of(system_db)) == shard_state_ids()
    with psycopg.connect(PG_URL) as con:
        talonic = {r[0] for r in con.execute(f'select job_id from "{schema}".extraction_jobs')}
        clavata = {r[0] for r in con.execute(f'select job_uuid from "{schema}".clavata_jobs')}
    assert talonic == set(made["talonic"]) and clavata == set(made["clavata"])
    # Each job was fetched by one shard only: as often as one instance fetches it.
    assert set(apis.talonic.counts) == set(made["talonic"])
    assert set(apis.clavata.counts.values()) == {1}
