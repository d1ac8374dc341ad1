"""Listings and bodies that do not hold what they promise: loops, endless pages, envelopes, odd IDs."""

from __future__ import annotations

import itertools
import json
import re
import time

import pytest

from tests.conftest import run_tap


def _talonic_job(job_id: str, **fields) -> dict:
    return {"id": job_id, "status": "completed", "created_at": "2025-05-01T00:00:00Z", **fields}


def test_a_listing_whose_cursors_loop_ends_with_an_error_and_bookmarks_nothing(apis):
    apis.clavata.add_job(results=1)
    cursors = itertools.cycle(["A", "B"])
    apis.talonic.fail(
        r"^/v1/jobs$",
        kind="status",
        status=200,
        times=None,
        body=lambda query: {
            "data": [_talonic_job("11111111-1111-1111-1111-111111111111")],
            "pagination": {"has_more": True, "next_cursor": next(cursors)},
        },
    )
    started = time.monotonic()
    run = run_tap(apis.config(sources=("talonic", "clavata")), timeout=120)
    assert time.monotonic() - started < 60
    assert run.returncode == 1
    assert "listing Talonic jobs" in run.stderr and "loops" in run.stderr, run.stderr[-1500:]
    # Jobs are fetched while the listing is read (issue 20): the one listed before the loop was synced and
    # is remembered as such, but the window's floor, which rises only when a listing ends well, stays put.
    bookmark = run.state["bookmarks"].get("extraction_jobs", {}).get("job_bookmarks", {}).get("all", {})
    assert not bookmark.get("floor"), bookmark
    assert len(run.records("clavata_jobs")) == 1  # the other source is synced
    assert len([r for r in apis.talonic.request_log if r["path"] == "/v1/jobs"]) <= 4


def test_a_listing_that_never_ends_stops_at_max_listing_pages(apis):
    counter = itertools.count()
    apis.talonic.fail(
        r"^/v1/jobs$",
        kind="status",
        status=200,
        times=None,
        body=lambda query: {
            "data": [],
            "pagination": {"has_more": True, "next_cursor": f"c{next(counter)}"},
        },
    )
    run = run_tap({**apis.config(sources=("talonic",)), "max_listing_pages": 40}, timeout=120)
    assert run.returncode == 1
    assert "talonic: listing Talonic jobs returned a malformed payload: the listing did not end within 40 pages" in (
        run.stderr
    ), run.stderr[-1500:]
    assert "max_listing_pages" in run.stderr, run.stderr[-1500:]
    assert len([r for r in apis.talonic.request_log if r["path"] == "/v1/jobs"]) == 40


def test_cdf_run_listing_cursors_that_loop_are_an_error(apis):
    pid = apis.cognite.add_pipeline()
    apis.cognite.add_run(pid)
    apis.cognite.fail(
        rf"/pipelines/{pid}/runs$",
        kind="status",
        status=200,
        times=None,
        body={"items": [], "nextCursor": "same"},
    )
    config = apis.config(sources=("cognite",))
    config["cognite"]["pipeline_ids"] = [pid]
    run = run_tap(config, timeout=120)
    assert run.returncode == 1 and "loops" in run.stderr and f"CDF pipeline {pid}" in run.stderr


def test_has_more_without_a_cursor_is_not_the_end_of_a_listing(apis):
    apis.talonic.fail(
        r"^/v1/jobs$",
        kind="status",
        status=200,
        times=None,
        body={"data": [_talonic_job("22222222-2222-2222-2222-222222222222")], "pagination": {"has_more": True}},
    )
    run = run_tap(apis.config(sources=("talonic",)))
    assert run.returncode == 1 and "has_more is true but there is no next_cursor" in run.stderr
    assert not run.records("extraction_jobs")


def test_an_error_envelope_with_status_200_is_not_an_empty_listing(apis):
    apis.talonic.add_job(rows=1)
    apis.talonic.fail(
        r"^/v1/jobs$",
        kind="status",
        status=200,
        times=1,
        body={"statusCode": 503, "code": "SERVICE_UNAVAILABLE", "message": "try later", "retryable": True},
    )
    run = run_tap(apis.config(sources=("talonic",)))
    assert run.returncode == 1 and "error envelope" in run.stderr
    again = run_tap(apis.config(sources=("talonic",)), state=run.state, check=True)
    assert len(again.records("extraction_rows")) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"job_id": "x", "job_status": "complete", "data": None},
        {"statusCode": 500, "code": "INTERNAL", "message": "grid unavailable"},
    ],
    ids=["empty-object", "data-null", "error-envelope"],
)
def test_results_that_do_not_hold_the_promised_rows_fail_the_job_and_keep_it_pending(apis, body):
    good = apis.talonic.add_job(rows=2)
    bad = apis.talonic.add_job(rows=3)
    apis.talonic.fail(rf"/v1/jobs/{bad}/results$", kind="status", status=200, times=1, body=body)
    config = apis.config(sources=("talonic",))
    first = run_tap(config)
    assert first.returncode == 1
    assert f"Talonic job {bad}" in first.stderr, first.stderr[-1500:]
    assert {r["job_id"] for r in first.records("extraction_rows")} == {good}
    second = run_tap(config, state=first.state, check=True)
    assert {r["job_id"] for r in second.records("extraction_rows")} == {bad}
    assert len(second.records("extraction_rows")) == 3


def test_job_ids_from_a_listing_are_one_path_segment(apis):
    odd = "other?x=1#frag"  # needs encoding, stays one segment
    unsafe = "../../other?x=1#frag"  # would not stay one segment, whatever is encoded: never sent
    apis.talonic.fail(
        r"^/v1/jobs$",
        kind="status",
        status=200,
        times=None,
        body={"data": [_talonic_job(odd), _talonic_job(unsafe)], "pagination": {"has_more": False}},
    )
    run = run_tap(apis.config(sources=("talonic",)))
    paths = [r["path"] for r in apis.talonic.request_log if r["path"] != "/v1/jobs"]
    assert paths == ["/v1/jobs/other%3Fx%3D1%23frag/results"], paths
    assert all(not r["query"] for r in apis.talonic.request_log if r["path"] != "/v1/jobs")
    # The fake answers 400 (not a UUID): that job fails alone, named, and stays pending; the unsafe ID is refused.
    assert run.returncode == 1 and f"Talonic job {odd}" in run.stderr
    pending = dict(run.state["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"]["pending"])
    assert odd in pending
    assert f"Talonic job {unsafe}" in run.stderr and "cannot be one URL path segment" in run.stderr
    # No request can ever be made for the unsafe one: it is named, not kept pending for every later run.
    assert unsafe not in pending


def test_a_listed_field_of_the_wrong_type_goes_to_extra_fields(apis):
    job = "33333333-3333-3333-3333-333333333333"
    apis.talonic.fail(
        r"^/v1/jobs$",
        kind="status",
        status=200,
        times=None,
        body={
            "data": [
                _talonic_job(
                    job, status="processing", document_count="many", completed_documents="12", progress="half", name=7
                )
            ],
            "pagination": {"has_more": False},
        },
    )
    run = run_tap(apis.config(sources=("talonic",)), check=True)
    [record] = run.records("extraction_jobs")
    assert record["document_count"] is None and record["progress"] is None
    # Digits in a string are text all the same: the column stays null, the value is kept as sent.
    assert record["completed_documents"] is None
    assert record["extra_fields"] == {"document_count": "many", "completed_documents": "12", "progress": "half"}
    assert record["name"] == "7"  # lossless: a number where a string belongs


def test_state_output_stays_linear_with_thousands_of_pending_jobs_the_server_forgot(apis):
    pending = {f"{n:08d}-0000-0000-0000-000000000000": "2025-01-01T00:00:00.000000Z" for n in range(5000)}
    state = {"bookmarks": {"extraction_jobs": {"job_bookmarks": {"all": {"pending": pending}}}}}
    initial = len(json.dumps(state))
    # Quadratic (one whole STATE per forgotten job) would be about 2,500 x the initial size: the run is
    # stopped, and the test fails, as soon as its output passes 60 x (seconds, not minutes).
    config = {**apis.config(sources=("talonic",)), "max_concurrent_requests": 16}
    run = run_tap(config, state=state, timeout=150, max_output=60 * initial)
    assert run.returncode == 0, run.stderr[-2000:]
    state_bytes = sum(len(json.dumps(m["value"])) for m in run.messages if m["type"] == "STATE")
    assert state_bytes < 60 * initial, (state_bytes, initial)
    assert run.state["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"]["pending"] == []


LISTINGS = {
    # source: (the listing's path, how errors name it, the stream its jobs land in)
    "clavata": (r"^/v1/jobs$", "listing Clavata jobs", "clavata_jobs"),
    "talonic": (r"^/v1/jobs$", "listing Talonic jobs", "extraction_jobs"),
    "cognite": (r"/pipelines/\d+/runs$", "listing runs of CDF pipeline {pid}", "pipeline_runs"),
}


@pytest.mark.parametrize("source", sorted(LISTINGS))
@pytest.mark.parametrize(
    "body",
    [
        [{"id": "x"}],
        "jobs",
        7,
        {"code": 5, "message": "quota exceeded"},
        {"error": {"code": 429, "message": "slow down"}},
    ],
)
def test_a_listing_answering_other_json_than_its_page_fails_that_source_alone(apis, source, body):
    """Every listing of every source, answered with a 200 whose body is JSON of another type or an error
    body: that source fails, named, with nothing bookmarked; the other sources sync; the next run catches up."""
    apis.clavata.add_job(results=1)
    apis.talonic.add_job(rows=1)
    pid = apis.cognite.add_pipeline()
    apis.cognite.add_run(pid, matches=1)
    config = apis.config()
    config["cognite"]["pipeline_ids"] = [pid]
    path, label, stream = LISTINGS[source]
    getattr(apis, source).fail(path, kind="status", status=200, times=None, body=body)
    run = run_tap({**config, "max_retries": 0})
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"{source}: {label.format(pid=pid)} returned a malformed payload" in run.stderr, run.stderr[-3000:]
    synced = {name for name, (_, _, other) in LISTINGS.items() if run.records(other)}
    assert synced == set(LISTINGS) - {source}, synced
    getattr(apis, source).clear_faults()
    again = run_tap(config, state=run.state, check=True)
    assert len(again.records(stream)) == 1


PAGES_WITH_A_CURSOR = {
    "clavata": lambda cursor: {"jobs": [], "nextPageToken": cursor},
    "talonic": lambda cursor: {"data": [], "pagination": {"has_more": True, "next_cursor": cursor}},
    "cognite": lambda cursor: {"items": [], "nextCursor": cursor},
}


@pytest.mark.parametrize("source", sorted(LISTINGS))
@pytest.mark.parametrize("cursor", [5, 0, ["next"], {"page": 2}, True])
def test_a_next_page_cursor_that_is_not_a_string_fails_the_listing_of_any_source(apis, source, cursor):
    """Not the end of the listing (the pages after it would be lost), and not followed: that source fails."""
    apis.clavata.add_job(results=1)
    apis.talonic.add_job(rows=1)
    pid = apis.cognite.add_pipeline()
    apis.cognite.add_run(pid, matches=1)
    config = apis.config(sources=(source,))
    if source == "cognite":
        config["cognite"]["pipeline_ids"] = [pid]
    path, label, stream = LISTINGS[source]
    getattr(apis, source).fail(path, kind="status", status=200, times=1, body=PAGES_WITH_A_CURSOR[source](cursor))
    run = run_tap({**config, "max_retries": 0})
    assert run.returncode == 1, run.stderr[-2000:]
    expected = (
        f"{source}: {label.format(pid=pid)} returned a malformed payload: the next page cursor should be a string"
    )
    assert expected in run.stderr, run.stderr[-3000:]
    assert not run.records(stream)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"error": {"code": 400, "message": "bad project"}}, "failed, HTTP 400, code 400: bad project"),
        ({"items": [{"id": "seven"}]}, "returned a malformed payload"),
    ],
)
def test_a_failed_cdf_pipeline_listing_fails_the_runs_stream_alone_named(apis, body, reason):
    """The pipelines themselves cannot be listed: no pipeline's runs can be read. The source fails with the
    stream named and nothing of it synced (its summary row says failed); Clavata syncs; the next run catches up."""
    apis.clavata.add_job(results=1)
    pid = apis.cognite.add_pipeline()
    apis.cognite.add_run(pid, matches=1)
    config = apis.config(sources=("cognite", "clavata"))
    status = 400 if "error" in body else 200
    apis.cognite.fail(r"/pipelines$", kind="status", status=status, times=None, body=body)
    run = run_tap({**config, "max_retries": 0})
    assert run.returncode == 1, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "listing CDF pipelines" in line]
    assert len(lines) == 2, lines  # logged when it happens, and again in the failures at the end
    for line in lines:
        assert f"cognite: listing CDF pipelines {reason}" in line, line
        assert line.endswith("(stream pipeline_runs: nothing synced)"), line
    heartbeats = {r["job_stream"]: r["status"] for r in run.records("sync_runs")}
    # No heartbeat for a stream whose source never answered with data (streams.SyncRunsStream).
    assert heartbeats == {"clavata_jobs": "ok", "entity_matching_jobs": "ok"}, heartbeats
    assert re.search(r"CDF pipeline runs +0 +0 +0 +0 +0 +[0-9.]+s +failed", run.stderr), run.stderr[-3000:]
    assert re.search(r"clavata +1 +1 +0 +0 +0 +[0-9.]+s +ok", run.stderr), run.stderr[-3000:]
    assert not run.records("pipeline_runs") and len(run.records("clavata_jobs")) == 1
    apis.cognite.clear_faults()
    again = run_tap(config, state=run.state, check=True)
    assert len(again.records("pipeline_runs")) == 1
