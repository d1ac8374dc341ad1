"""What an operator lives with: stream selection changing over time, a heartbeat, a readable log."""

from __future__ import annotations

import json
import re
import typing as t

import pytest

from tests.conftest import RESULT_STREAMS, populate, run_tap

JOB_STREAMS = ("entity_matching_jobs", "pipeline_runs", "clavata_jobs", "extraction_jobs")


def _catalog(config: dict, selected: set[str]) -> dict:
    catalog = json.loads(run_tap(config, args=["--discover"]).stdout)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in selected
    return catalog


def test_a_result_stream_selected_later_is_backfilled_from_the_jobs_already_synced(apis):
    populate(apis)
    config = apis.config()
    jobs_only = _catalog(config, set(JOB_STREAMS))
    first = run_tap(config, catalog=jobs_only, check=True)
    assert not any(first.records(s) for s in RESULT_STREAMS)

    # New jobs appear before the run that backfills: the backfill reads the jobs already synced,
    # the new ones come through the ordinary sync; none twice, none left out.
    new = {
        apis.clavata.add_job(results=2),
        apis.talonic.add_job(rows=2),
        apis.cognite.add_run(populate_pipeline(apis), matches=2, suggested_rules=1, generated_rules=1),
    }
    everything = _catalog(config, set(JOB_STREAMS) | set(RESULT_STREAMS) | {"sync_runs"})
    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        vendor.reset_counters()
    second = run_tap(config, catalog=everything, state=first.state, check=True)
    reference = run_tap(config, catalog=everything, check=True)
    for stream in RESULT_STREAMS:
        # Lists, not sets: a row emitted twice (backfill and sync both) is a bug.
        assert sorted(second.keys(stream)) == sorted(reference.keys(stream)), stream
    # The job records already synced are not emitted again: only the unfinished and the new ones are.
    ids = {"entity_matching_jobs": "job_id", "pipeline_runs": "run_id", "clavata_jobs": "job_uuid"}
    for stream in JOB_STREAMS:
        assert all(not r["finished"] or r[ids.get(stream, "job_id")] in new for r in second.records(stream)), stream
    assert "newly selected" in second.stderr

    third = run_tap(config, catalog=everything, state=second.state, check=True)
    assert not any(r for s in RESULT_STREAMS for r in third.records(s) if s != "extraction_rows")


def populate_pipeline(apis) -> int:
    return next(iter(apis.cognite.pipelines))


def test_a_backfill_stops_at_a_job_it_could_not_fetch_and_resumes_there(apis):
    """A job whose fetch fails during a backfill is not skipped: the backfill stops there and the
    next run resumes from it."""
    jobs = [apis.clavata.add_job(results=2) for _ in range(3)]
    config = {**apis.config(sources=("clavata",)), "max_retries": 0}
    first = run_tap(config, catalog=_catalog(config, {"clavata_jobs"}), check=True)
    everything = _catalog(config, {"clavata_jobs", "clavata_reports"})
    apis.clavata.fail(rf"/v1/jobs/{jobs[1]}$", kind="status", status=500, times=None)
    second = run_tap(config, catalog=everything, state=first.state)
    assert second.returncode == 1
    assert {r["job_uuid"] for r in second.records("clavata_reports")} == {jobs[0]}
    apis.clavata.clear_faults()
    third = run_tap(config, catalog=everything, state=second.state, check=True)
    assert sorted(r["job_uuid"] for r in third.records("clavata_reports")) == sorted(2 * [jobs[1], jobs[2]])


def test_the_heartbeat_says_a_quiet_account_was_reached(apis):
    run = run_tap(apis.config(sources=("talonic", "clavata")), check=True)
    beats = run.records("sync_runs")
    assert {b["job_stream"] for b in beats} == {"extraction_jobs", "clavata_jobs"}
    assert all(b["status"] == "ok" and b["jobs_listed"] == 0 and b["records"] == 0 for b in beats)
    assert len({b["run_id"] for b in beats}) == 1


def test_no_heartbeat_for_a_source_that_refused_the_credentials(apis):
    config = apis.config(sources=("talonic",))
    config["talonic"]["api_key"] = "tlnc_live_wrong-key-0000"
    run = run_tap(config)
    assert run.returncode == 1
    assert run.records("sync_runs") == []
    assert "authentication failed" in run.stderr


def test_the_heartbeat_counts_what_happened(apis):
    apis.clavata.add_job(results=2)
    apis.clavata.add_job(status="JOB_STATUS_RUNNING", results=1)
    bad = apis.clavata.add_job(results=1)
    apis.clavata.fail(rf"/v1/jobs/{bad}$", kind="status", status=500, times=None)
    run = run_tap({**apis.config(sources=("clavata",)), "max_retries": 0})
    [beat] = run.records("sync_runs")
    assert (beat["jobs_listed"], beat["jobs_synced"], beat["jobs_pending"], beat["jobs_failed"]) == (3, 1, 1, 1)
    assert beat["status"] == "partial" and beat["records"] == 2 + 2


def test_a_large_sync_logs_progress_and_a_summary_not_a_line_per_job(apis):
    for _ in range(400):
        apis.clavata.add_job(results=1)
    apis.clavata.latency = 0.2  # about 11 s at 8 requests in flight: long enough for progress lines
    run = run_tap(apis.config(sources=("clavata",)), check=True)
    lines = run.stderr.strip().splitlines()
    assert len(run.records("clavata_reports")) == 400
    assert len(lines) < 60, "\n".join(lines[:80])
    progress = [line for line in lines if "clavata: " in line and "/400 jobs" in line and "jobs/s" in line]
    assert any("left" in line for line in progress), run.stderr  # a periodic line, every 10 s
    assert "400/400 jobs" in progress[-1] and "done in" in progress[-1]  # and the final one
    assert "Sync summary:" in run.stderr
    assert not any("Beginning sync of 'clavata_reports'" in line for line in lines)
    assert sum("METRIC" in line and '"clavata_reports"' in line for line in lines) <= 2
    assert "full_table" not in run.stderr


def test_a_loader_that_stops_reading_is_reported_as_such(apis):
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.conftest import TAP, tap_env

    for _ in range(300):
        apis.talonic.add_job(rows=20)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(apis.config(sources=("talonic",))))
        tap = subprocess.Popen(
            [TAP, "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=tap_env(),
        )
        assert tap.stdout is not None and tap.stderr is not None
        tap.stdout.readline()  # a loader that reads one line and dies
        tap.stdout.close()
        stderr = tap.stderr.read().decode()
        assert tap.wait(timeout=120) == 1
    assert "The loader stopped reading the tap's output (broken pipe)" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr


def _backfill_world(apis, vendor: str) -> tuple[dict, list, str, str, str, t.Callable[[t.Any], str], t.Any]:
    """(config, three job IDs, job stream, result stream, the results' job key, the fail path, the fake)."""
    if vendor == "clavata":
        jobs = [apis.clavata.add_job(results=2) for _ in range(3)]
        return (
            apis.config(sources=("clavata",)),
            jobs,
            "clavata_jobs",
            "clavata_reports",
            "job_uuid",
            lambda j: rf"/v1/jobs/{j}$",
            apis.clavata,
        )
    if vendor == "talonic":
        jobs = [apis.talonic.add_job(rows=2) for _ in range(3)]
        return (
            apis.config(sources=("talonic",)),
            jobs,
            "extraction_jobs",
            "extraction_rows",
            "job_id",
            lambda j: rf"/v1/jobs/{j}/results$",
            apis.talonic,
        )
    if vendor == "cdf predict":
        jobs = [apis.cognite.add_predict_job(items=2) for _ in range(3)]
        return (
            apis.config(sources=("cognite",)),
            jobs,
            "entity_matching_jobs",
            "match_results",
            "job_id",
            lambda j: rf"/entitymatching/jobs/{j}$",
            apis.cognite,
        )
    pid = apis.cognite.add_pipeline()
    jobs = [apis.cognite.add_run(pid, matches=2, suggested_rules=0, generated_rules=0) for _ in range(3)]
    config = apis.config(sources=("cognite",))
    config["cognite"] = {**config["cognite"], "pipeline_ids": [pid], "entity_matching_jobs": []}
    return (
        config,
        jobs,
        "pipeline_runs",
        "pipeline_matches",
        "run_id",
        lambda j: rf"/pipelines/{pid}/runs/{j}$",
        apis.cognite,
    )


LABELS = {
    "clavata": "Clavata job {}",
    "talonic": "Talonic job {}",
    "cdf predict": "CDF predict job {}",
    "cdf runs": "CDF pipeline {pid} run {}",
}


@pytest.mark.parametrize("vendor", sorted(LABELS))
def test_every_source_backfills_each_job_once_and_names_the_job_it_could_not_fetch(apis, vendor):
    """The backfill of a result stream selected later, for every kind of job: a job whose fetch fails is
    named as that job and not skipped; over the run and the next, each synced job's results land exactly once."""
    config, jobs, job_stream, result_stream, key, path, fake = _backfill_world(apis, vendor)
    config = {**config, "max_retries": 0}
    first = run_tap(config, catalog=_catalog(config, {job_stream}), check=True)
    everything = _catalog(config, {job_stream, result_stream})
    fake.fail(path(jobs[1]), kind="status", status=500, times=None)
    second = run_tap(config, catalog=everything, state=first.state)
    assert second.returncode == 1
    pid = config["cognite"].get("pipeline_ids", [None])[0] if "cognite" in config else None
    label = LABELS[vendor].format(jobs[1], pid=pid)
    assert re.search(rf"{re.escape(label)}\b.*(500|server error)", second.stderr), second.stderr[-3000:]
    assert str(jobs[1]) not in {str(r[key]) for r in second.records(result_stream)}
    fake.clear_faults()
    third = run_tap(config, catalog=everything, state=second.state, check=True)
    landed = sorted(str(r[key]) for run in (second, third) for r in run.records(result_stream))
    assert landed == sorted(2 * [str(job) for job in jobs]), landed
    fourth = run_tap(config, catalog=everything, state=third.state, check=True)
    assert not fourth.records(result_stream)


@pytest.mark.parametrize("listing", ["answers", "fails once", "rate limited"])
def test_a_backfill_run_also_syncs_the_jobs_that_are_new(apis, listing):
    """The run that backfills a newly selected result stream goes on to the usual listing: a job created since
    the last run lands in it too. A backfill listing that fails is retried next run (its jobs' results are still
    owed) and the sync goes on; a rate limit far ahead stops the source."""
    old = [apis.talonic.add_job(rows=1) for _ in range(2)]
    config = {**apis.config(sources=("talonic",)), "max_retries": 0}
    first = run_tap(config, catalog=_catalog(config, {"extraction_jobs"}), check=True)
    new = apis.talonic.add_job(rows=1)
    everything = _catalog(config, {"extraction_jobs", "extraction_rows"})
    if listing == "fails once":
        apis.talonic.fail(r"^/v1/jobs$", kind="status", status=500, times=1)
    elif listing == "rate limited":
        apis.talonic.fail(r"^/v1/jobs$", kind="status", status=429, times=1, headers={"Retry-After": "86400"})
    apis.talonic.request_log.clear()
    second = run_tap(config, catalog=everything, state=first.state)
    rows = {r["job_id"] for r in second.records("extraction_rows")}
    jobs = {r["job_id"] for r in second.records("extraction_jobs")}
    if listing == "answers":
        assert second.returncode == 0, second.stderr[-2000:]
        assert rows == {*old, new} and jobs == {new}
        assert "talonic: backfill of extraction_rows done (2 jobs)" in second.stderr, second.stderr[-2000:]
    elif listing == "fails once":
        assert second.returncode == 1
        assert "backfill of extraction_rows for talonic is retried next run" in second.stderr, second.stderr[-2000:]
        assert rows == {new} and jobs == {new}
    else:
        assert second.returncode == 1
        assert rows == set() and jobs == set()
        assert "rate limited until" in second.stderr, second.stderr[-2000:]
        assert [r["path"] for r in apis.talonic.request_log] == ["/v1/jobs"], "the source stops at the rate limit"
    third = run_tap(config, catalog=everything, state=second.state, check=True)
    landed = [r["job_id"] for run in (second, third) for r in run.records("extraction_rows")]
    assert set(landed) == {*old, new} and all(landed.count(job) == 1 for job in old), landed
    if listing == "answers":
        assert len(landed) == 3, landed
    # Otherwise the backfill that was owed runs now, over every job synced so far: the new job's rows, written
    # in the run before, come again (the loaders upsert them by key). Known, see CHANGELOG.
