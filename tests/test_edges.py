"""Behaviours an independent audit found unpinned (issue 22): inputs no fake sent, operator-facing
counts, boundaries. Each test here was seen failing against the one-line bug named in its docstring."""

from __future__ import annotations

import json

import pytest

from tap_jobresults.lifecycle import Bookmark, JobKey, Policy
from tap_jobresults.records import Unfit, build, to_int
from tap_jobresults.sources import clavata, talonic
from tests.conftest import run_tap

RUN_STARTED = "2026-01-01T00:00:00.000000Z"


# -- jobs without a creation time ---------------------------------------------------------------------


def test_a_job_without_a_creation_time_is_synced_once_whatever_the_floor():
    """lifecycle: an undated job is never placed below the floor (else it is never synced once a
    floor exists), is remembered in `seen` when done (else re-emitted every run), and survives the
    end-of-run pruning of `seen` (else re-emitted by the run after)."""
    policy = Policy(run_started=RUN_STARTED, lookback=600)
    state: dict = {}
    bookmark = Bookmark(state, policy)
    bookmark.advance(JobKey("2025-01-01T00:00:00.000000Z", "dated"), done=True)
    bookmark.close()
    assert bookmark.floor is not None
    undated = JobKey("", "undated")
    assert bookmark.wanted("talonic", undated)
    bookmark.advance(undated, done=True)
    assert not bookmark.wanted("talonic", undated)
    bookmark.close()
    later = Bookmark(json.loads(json.dumps(state)), policy)
    assert not later.wanted("talonic", undated)
    # Unfinished, it stays pending and is wanted again by the pending path, never lost.
    other = JobKey("", "undated-running")
    later.advance(other, done=False)
    later.close()
    assert Bookmark(json.loads(json.dumps(later.state)), policy).pending == {"undated-running": ""}


def test_undated_talonic_jobs_are_synced_once_across_runs(apis):
    talonic_api = apis.talonic
    talonic_api.add_job(rows=1)
    first_undated = talonic_api.add_job(rows=2, undated=True)
    config = apis.config(sources=("talonic",))
    first = run_tap(config, check=True)
    assert first_undated in {r["job_id"] for r in first.records("extraction_jobs")}
    assert len(first.records("extraction_rows")) == 3
    # A floor exists now; a new undated job shows up; the old one must not come back.
    second_undated = talonic_api.add_job(rows=1, undated=True)
    second = run_tap(config, state=first.state, check=True)
    assert [r["job_id"] for r in second.records("extraction_jobs")] == [second_undated]
    third = run_tap(config, state=second.state, check=True)
    assert third.records("extraction_jobs") == []


# -- start_date ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start_date",
    ["2025-03-01T00:05:00Z", "2025-03-01T01:05:00+01:00", "2025-03-01T00:05:00.000000Z", "2025-03-01T00:05:00"],
    ids=["no-fraction", "offset", "canonical", "naive"],
)
def test_start_date_includes_a_job_created_at_that_instant_in_any_spelling(apis, start_date):
    """lifecycle `created < start_date` (a job created exactly at start_date is in), and tap.py
    normalises start_date (a spelling without fractions or with an offset would compare as text
    and skip jobs)."""
    before = apis.talonic.add_job(rows=1, created_at="2025-03-01T00:04:59.999Z")
    exact = apis.talonic.add_job(rows=1, created_at="2025-03-01T00:05:00Z")
    after = apis.talonic.add_job(rows=1, created_at="2025-03-01T00:05:00.5Z")
    run = run_tap({**apis.config(sources=("talonic",)), "start_date": start_date}, check=True)
    synced = {r["job_id"] for r in run.records("extraction_jobs")}
    assert synced == {exact, after}, (before, exact, after)


# -- Talonic listings and rows ----------------------------------------------------------------------------


def test_a_cursor_with_has_more_false_ends_the_listing(apis):
    """talonic: `has_more: false` wins over a `next_cursor` the server still sends."""
    apis.talonic.cursor_on_last_page = True
    for _ in range(3):
        apis.talonic.add_job(rows=1)
    run = run_tap(apis.config(sources=("talonic",)), check=True)
    assert len(run.records("extraction_jobs")) == 3
    listings = [r for r in apis.talonic.request_log if r["path"] == "/v1/jobs"]
    assert len(listings) == 1, [r["query"] for r in listings]


def test_rows_without_ids_of_the_same_document_in_two_jobs_do_not_collide(apis):
    """talonic: a row without `id` gets one derived from its job and document, so the same
    document extracted by two jobs lands as two rows (not one overwriting the other)."""
    apis.talonic.omit_row_ids = True
    apis.talonic.shared_documents = True
    first = apis.talonic.add_job(rows=3)
    second = apis.talonic.add_job(rows=3)
    run = run_tap(apis.config(sources=("talonic",)), check=True)
    rows = run.records("extraction_rows")
    assert len(rows) == 6
    documents = {(r["job_id"], r["document_id"]) for r in rows}
    assert len({d for _, d in documents}) == 3  # the same three documents in both jobs
    assert len({r["id"] for r in rows}) == 6
    assert {r["job_id"] for r in rows} == {first, second}


def test_a_pending_talonic_job_fetched_by_id_is_one_path_segment(apis):
    """talonic: a pending job the listing no longer shows is fetched by an encoded ID (one that can be
    one segment; a slash or dot-segment is refused outright, see test_hostile)."""
    odd = "job 7?x=..&y#z"
    job = apis.talonic.add_job(status="processing", rows=1, job_id=odd)
    config = apis.config(sources=("talonic",))
    first = run_tap(config, check=True)
    pending = first.state["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"]["pending"]
    assert job in {job_id for job_id, _ in pending}, pending
    apis.talonic.hidden.add(job)  # the listing forgets it
    apis.talonic.reset_counters()
    second = run_tap(config, state=first.state, check=True)
    paths = {r["path"] for r in apis.talonic.request_log if r["path"] != "/v1/jobs"}
    assert "/v1/jobs/job%207%3Fx%3D..%26y%23z" in paths, paths
    assert [r["job_id"] for r in second.records("extraction_jobs")] == [odd]


def test_a_clavata_job_id_is_one_path_segment(apis):
    """clavata: the GET of a finished job encodes its UUID as one path segment."""
    odd = "uuid with?odd#chars"
    apis.clavata.add_job(results=2, job_uuid=odd)
    run = run_tap(apis.config(sources=("clavata",)), check=True)
    paths = {r["path"] for r in apis.clavata.request_log if r["path"] != "/v1/jobs"}
    assert paths == {"/v1/jobs/uuid%20with%3Fodd%23chars"}, paths
    assert len(run.records("clavata_reports")) == 2


# -- Clavata bookmark per policy ----------------------------------------------------------------------


def test_changing_the_clavata_policy_filter_starts_a_bookmark_of_its_own(apis):
    """clavata: the bookmark is partitioned by policy_id; reusing the old policy's bookmark would
    skip the new policy's jobs older than the old policy's newest."""
    old_policy, new_policy = "policy-old", "policy-new"
    # A day apart: well outside the lookback window that a shared bookmark would re-read.
    older_of_new = apis.clavata.add_job(results=1, policy_id=new_policy, created="2025-01-01T00:00:00Z")
    apis.clavata.add_job(results=1, policy_id=old_policy, created="2025-01-02T00:00:00Z")
    config = apis.config(sources=("clavata",))
    first = run_tap({**config, "clavata": {**config["clavata"], "policy_id": old_policy}}, check=True)
    assert len(first.records("clavata_jobs")) == 1
    second = run_tap({**config, "clavata": {**config["clavata"], "policy_id": new_policy}}, state=first.state)
    assert second.returncode == 0, second.stderr[-2000:]
    assert [r["job_uuid"] for r in second.records("clavata_jobs")] == [older_of_new]


# -- the heartbeat ------------------------------------------------------------------------------------------


def test_the_heartbeat_counts_every_pipeline_and_says_partial_when_a_listing_failed(apis):
    """report: jobs_listed adds up every CDF pipeline (not the last one), and a pipeline whose runs
    listing failed makes the heartbeat `partial`, not `ok`."""
    cdf = apis.cognite
    one, two, three = cdf.add_pipeline(), cdf.add_pipeline(), cdf.add_pipeline()
    for pid, runs in ((one, 2), (two, 3), (three, 1)):
        for _ in range(runs):
            cdf.add_run(pid, matches=1, suggested_rules=0, generated_rules=0)
    config = {**apis.config(sources=("cognite",)), "max_retries": 0}
    run = run_tap(config, check=True)
    [beat] = [b for b in run.records("sync_runs") if b["job_stream"] == "pipeline_runs"]
    assert beat["jobs_listed"] == 6 and beat["status"] == "ok"

    for pid in (one, two, three):
        cdf.add_run(pid, matches=1, suggested_rules=0, generated_rules=0)
    cdf.fail(rf"/pipelines/{two}/runs$", kind="status", status=200, times=None, body={"items": "not a list"})
    failed = run_tap(config, state=run.state)
    assert failed.returncode == 1
    [beat] = [b for b in failed.records("sync_runs") if b["job_stream"] == "pipeline_runs"]
    assert beat["status"] == "partial" and beat["jobs_listed"] == 2, beat


# -- records: boundaries ----------------------------------------------------------------------------------


def test_a_float_with_a_fraction_is_not_an_integer():
    """records.to_int: 2.5 does not fit an integer column (it is kept as sent in extra_fields)."""
    assert to_int(3.0) == 3 and to_int(7) == 7
    for value in (2.5, -0.1, 1e-9 + 1, True, "3"):
        with pytest.raises(Unfit):
            to_int(value)
    record = build({"id": "j", "document_count": 2.5}, talonic.JOB)
    assert record["document_count"] is None
    assert record["extra_fields"] == {"document_count": 2.5}


def test_protojson_empty_values_are_not_extra_fields():
    """records.is_empty: protojson's "", [], {} and null for fields no column carries are unset,
    not extra fields; anything with a value is kept as sent."""
    job = {
        "jobUuid": "j1",
        "status": "JOB_STATUS_COMPLETED",
        "policyDraftId": "",
        "tags": [],
        "metadata": {},
        "internals": None,
        "note": "kept",
        "zero": 0,
        "flag": False,
    }
    record = build(job, clavata.JOB, proto3=True)
    assert record["extra_fields"] == {"note": "kept", "zero": 0, "flag": False}
    assert build({"jobUuid": "j2", "a": "", "b": [], "c": {}}, clavata.JOB, proto3=True)["extra_fields"] is None
    # Outside proto3 an empty value is a value the vendor sent.
    assert build({"id": "j", "tags": [], "meta": {}, "label": ""}, talonic.JOB)["extra_fields"] == {
        "tags": [],
        "meta": {},
        "label": "",
    }


@pytest.mark.parametrize(
    ("sent", "column"),
    [(0, 0), (100, 100), (40, 40), (0.5, 50.0), (1.0, 100.0), (99.5, 99.5), (100.5, None), (101, None), (-1, None)],
)
def test_talonic_progress_is_a_percentage_from_0_to_100(sent, column):
    """talonic.percent: 0-100 (or a 0-1 fraction); anything outside does not fit the column."""
    record = build({"id": "j", "progress": sent}, talonic.JOB)
    assert record["progress"] == column
    if column is None:
        assert record["extra_fields"] == {"progress": sent}


def test_the_top_match_target_in_either_spelling(apis):
    """cognite: a match whose target is spelled `matchTo` still names the top target."""
    apis.cognite.match_to_spelling = True
    apis.cognite.add_predict_job(items=4, matches_per_item=2)
    run = run_tap(apis.config(sources=("cognite",)), check=True)
    rows = [r for r in run.records("match_results") if r["match_count"]]
    assert rows
    assert all(r["top_target"] and r["top_target"]["name"].startswith("asset-") for r in rows), rows


# -- refusals the docs allow ------------------------------------------------------------------------------


def test_a_daily_quota_that_resets_hours_ahead_ends_the_source_not_the_run(apis):
    """A 429 whose reset is the next UTC midnight: the wait is capped by max_retry_wait, the source
    fails with a clear error, and the other sources are synced."""
    apis.realistic = True
    apis.talonic.daily_quota_spent = True
    apis.talonic.add_job(rows=1)
    apis.clavata.add_job(results=2)
    config = {**apis.config(sources=("talonic", "clavata")), "max_retry_wait": 1, "max_retries": 2}
    run = run_tap(config, timeout=90)
    assert run.returncode == 1
    assert len(run.records("clavata_reports")) == 2
    assert run.records("extraction_jobs") == []
    assert "429" in run.stderr or "rate" in run.stderr.lower(), run.stderr[-2000:]


@pytest.mark.parametrize("scope", [True, r"^/v1/jobs/"], ids=["everything", "job-details"])
def test_a_key_without_the_scope_is_refused_once_for_the_whole_source(apis, scope):
    """403 (a key without the scope, for everything or for job details only): the source stops after a
    few refusals, named, instead of failing every job one by one; the other sources are synced."""
    apis.clavata.refuse_scope = scope
    for _ in range(20):
        apis.clavata.add_job(results=1)
    apis.talonic.add_job(rows=2)
    config = {**apis.config(sources=("talonic", "clavata")), "max_retries": 0, "max_concurrent_requests": 1}
    run = run_tap(config, timeout=120)
    assert run.returncode == 1
    assert len(run.records("extraction_rows")) == 2
    assert run.records("clavata_jobs") == []
    assert "Clavata" in run.stderr or "clavata" in run.stderr
    # The listing and a few refused jobs (one refusal may be a job's own; several in a row are the key's),
    # not all twenty.
    assert len(apis.clavata.request_log) <= 5, [r["path"] for r in apis.clavata.request_log]


def test_a_job_body_that_is_not_an_object_fails_that_job_named_by_source_and_job(apis):
    """base.require: a 200 whose body is a JSON array, not the job object: the job fails alone, named
    as `clavata: Clavata job <id> returned a malformed payload`, and stays pending."""
    good = apis.clavata.add_job(results=1)
    bad = apis.clavata.add_job(results=1)
    apis.clavata.fail(rf"/v1/jobs/{bad}$", kind="status", status=200, times=None, body=[{"job": {}}])
    run = run_tap({**apis.config(sources=("clavata",)), "max_retries": 0})
    assert run.returncode == 1
    expected = f"clavata: Clavata job {bad} returned a malformed payload: expected a JSON object, got list"
    assert expected in run.stderr, run.stderr[-2000:]
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} == {good}
    pending = run.state["bookmarks"]["clavata_jobs"]["job_bookmarks"]["all"]["pending"]
    assert bad in {job_id for job_id, _ in pending}, pending


JOB_GETS = ["talonic job (pending, no longer listed)", "talonic results", "cdf predict job", "cdf pipeline run"]


@pytest.mark.parametrize("endpoint", JOB_GETS)
@pytest.mark.parametrize("body", [[{"id": 1}], "a string", 7])
def test_every_job_endpoint_answering_other_json_than_an_object_fails_that_job_alone(apis, endpoint, body):
    """The class of the Clavata case above, at every per-job request of every source: a 200 whose body is
    valid JSON of another type fails that job, named by source and job, and the job is fetched again next run."""
    state = None
    if endpoint.startswith("talonic"):
        good, bad = apis.talonic.add_job(rows=1), apis.talonic.add_job(rows=1)
        config, source, stream, key = apis.config(sources=("talonic",)), "talonic", "extraction_jobs", "job_id"
        what, path = f"Talonic job {bad} results", rf"/v1/jobs/{bad}/results$"
        if "pending" in endpoint:
            apis.talonic.set_status(bad, "processing")
            state = run_tap(config, check=True).state
            apis.talonic.set_status(bad, "completed")
            apis.talonic.hidden.add(bad)
            what, path = f"Talonic job {bad}", rf"/v1/jobs/{bad}$"
    elif endpoint == "cdf predict job":
        good = apis.cognite.add_predict_job(items=1)
        bad = apis.cognite.add_predict_job(items=1)
        config, source, stream, key = apis.config(sources=("cognite",)), "cognite", "entity_matching_jobs", "job_id"
        what, path = f"CDF predict job {bad}", rf"/entitymatching/jobs/{bad}$"
    else:
        pid = apis.cognite.add_pipeline()
        good, bad = apis.cognite.add_run(pid, matches=1), apis.cognite.add_run(pid, matches=1)
        config = apis.config(sources=("cognite",))
        config["cognite"]["pipeline_ids"] = [pid]
        source, stream, key = "cognite", "pipeline_runs", "run_id"
        what, path = f"CDF pipeline {pid} run {bad}", rf"/pipelines/{pid}/runs/{bad}$"
    apis.talonic.fail(path, kind="status", status=200, times=None, body=body)
    apis.cognite.fail(path, kind="status", status=200, times=None, body=body)
    run = run_tap({**config, "max_retries": 0}, state=state)
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"{source}: {what} returned a malformed payload" in run.stderr, run.stderr[-3000:]
    landed = {str(r[key]) for r in run.records(stream)}
    assert str(bad) not in landed and (state is not None or str(good) in landed), landed
    apis.talonic.clear_faults()
    apis.cognite.clear_faults()
    again = run_tap(config, state=run.state, check=True)
    assert str(bad) in {str(r[key]) for r in again.records(stream)}


def test_an_incremental_clavata_listing_asks_only_for_jobs_from_the_floor(apis):
    """clavata.walk: once a bookmark has a floor, the listing filters on creation time from it (the
    output would be the same without, deduplicated by the bookmark; the traffic grows with the history)."""
    apis.clavata.add_job(results=1)
    config = apis.config(sources=("clavata",))
    first = run_tap(config, check=True)
    apis.clavata.reset_counters()
    run_tap(config, state=first.state, check=True)
    listings = [r["query"] for r in apis.clavata.request_log if r["path"] == "/v1/jobs"]
    assert listings and all("query.createdTimeRange.start" in query for query in listings), listings
