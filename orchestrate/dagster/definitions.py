"""Dagster: the shards of tap-jobresults as parallel ops of one job, on an hourly schedule.

    make .venv-dagster/bin/dagster                      # dagster + elt-dagster-meltano, a virtualenv of its own
    export MELTANO_DATABASE_URI=postgresql+psycopg://...   # the shards write state at once: not SQLite
    # the ops run the `meltano` on PATH
    export DAGSTER_HOME="$PWD/output/dagster"; mkdir -p "$DAGSTER_HOME"   # Dagster's runs (must exist)
    .venv-dagster/bin/python orchestrate/dagster/definitions.py                                          # one round
    .venv-dagster/bin/dagster dev -f orchestrate/dagster/definitions.py                                # UI + schedule

One op per shard (`meltano run tap-jobresults--shard-<i> <loader> --force`, from elt-dagster-meltano's
`meltano_run_op`), all independent, so the multiprocess executor runs them at the same time. The
shard plugins are the ones of meltano-shards.yml (scripts/shards.py); set JOBRESULTS_SHARDS to the
number generated there. elt-dagster-meltano always passes `--force` to `meltano run`, which skips
Meltano's own check that no other run of the same state ID is in progress; the schedule below makes
up for it by skipping a tick while a run of this job is still going, so no shard ever runs twice at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    execute_job,
    job,
    multiprocess_executor,
    reconstructable,
    schedule,
)
from dagster_meltano import meltano_resource, meltano_run_op

PROJECT_DIR = Path(os.environ.get("MELTANO_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
SHARDS = int(os.environ.get("JOBRESULTS_SHARDS", "4"))
LOADER = os.environ.get("JOBRESULTS_LOADER", "target-postgres")
JOB_NAME = "jobresults_shards"
IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]

shard_ops = [meltano_run_op(f"tap-jobresults--shard-{i} {LOADER}") for i in range(SHARDS)]


@job(
    name=JOB_NAME,
    description=f"All {SHARDS} shards of tap-jobresults into {LOADER}, in parallel.",
    resource_defs={"meltano": meltano_resource.configured({"project_dir": str(PROJECT_DIR)})},
    executor_def=multiprocess_executor.configured({"max_concurrent": SHARDS}),
)
def jobresults_shards() -> None:
    for shard_op in shard_ops:
        shard_op()


@schedule(job=jobresults_shards, cron_schedule="0 * * * *", name="jobresults_shards_hourly")
def jobresults_shards_hourly(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    running = context.instance.get_run_records(RunsFilter(job_name=JOB_NAME, statuses=IN_PROGRESS), limit=1)
    if running:
        return SkipReason(f"run {running[0].dagster_run.run_id} of {JOB_NAME} is still in progress")
    return RunRequest()


defs = Definitions(jobs=[jobresults_shards], schedules=[jobresults_shards_hourly])


if __name__ == "__main__":
    # One round of every shard, then exit (in place of `dagster job execute`, superseded in Dagster 1.13):
    # reconstructable, so that the multiprocess executor can run the ops in processes of their own.
    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(jobresults_shards), instance=instance)
    raise SystemExit(0 if result.success else 1)
