"""The Dagster example (orchestrate/dagster/definitions.py) in its own virtualenv (.venv-dagster), without
running it: one independent op per shard, and an hourly schedule that skips while a run is still in
progress (elt-dagster-meltano runs Meltano with --force, which skips Meltano's own check). One full run
is in test_shards_meltano.py: tests that use the shard plugins must not run at once (Meltano shares
.meltano/run/<plugin>/ between runs of one plugin), and pytest-xdist keeps one file on one worker."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.meltano_shards import SHARDS

pytestmark = pytest.mark.slow
DAGSTER_PY = ROOT / ".venv-dagster" / "bin" / "python"
DAGSTER = ROOT / ".venv-dagster" / "bin" / "dagster"
DEFINITIONS = ROOT / "orchestrate" / "dagster" / "definitions.py"


@pytest.fixture(autouse=True)
def dagster_installed() -> None:
    if not DAGSTER.exists():
        pytest.fail("dagster not found: `make .venv-dagster/bin/dagster` installs it into .venv-dagster")


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
