"""Sources sync at the same time, with one writer (issue 20).

Every case runs the real tap binary against the fake APIs with latencies and slow answers injected:
the sources' fetches overlap, a slow source holds up nobody, listing and fetching overlap, and under
randomized scheduling the same data lands, every message whole, each stream's SCHEMA before its
first RECORD, and no STATE covering a job whose records come after it.
"""

from __future__ import annotations

import random
import re

import pytest

from tests.conftest import CONTRACT_KEYS, populate, run_tap, unordered_state

JOB_STREAMS = {
    "entity_matching_jobs": ("cognite", "job_id"),
    "clavata_jobs": ("clavata", "job_uuid"),
    "extraction_jobs": ("talonic", "job_id"),
}


def _span(server, pattern: str) -> tuple[float, float]:
    times = [entry["time"] for entry in server.request_log if re.search(pattern, entry["path"])]
    return min(times), max(times)


def _config(apis, width: int = 4) -> dict:
    config = {**apis.config(cognite_auth="token"), "max_concurrent_requests": width}
    return config


def test_the_sources_fetch_at_the_same_time(apis):
    for _ in range(12):
        apis.cognite.add_predict_job(items=1)
        apis.clavata.add_job(results=1)
        apis.talonic.add_job(rows=1)
    for server in (apis.cognite, apis.clavata, apis.talonic):
        server.latency = 0.1
    config = _config(apis)
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True)
    assert len(run.records("entity_matching_jobs")) == len(run.records("clavata_jobs")) == 12
    spans = [
        _span(apis.cognite, r"/entitymatching/jobs/\d+$"),
        _span(apis.clavata, r"/v1/jobs/[^/]+$"),
        _span(apis.talonic, r"/results$"),
    ]
    # Every source was still fetching when each of the others started: one after another, the
    # first would have ended before the last began.
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


@pytest.mark.parametrize("width", [1, 3])
def test_each_source_keeps_exactly_its_width_of_requests_in_flight(apis, width):
    """`max_concurrent_requests` is each source's width: reached (the fetches overlap) and never exceeded."""
    for _ in range(4 * width + 2):
        apis.clavata.add_job(results=1)
        apis.talonic.add_job(rows=1)
    for server in (apis.clavata, apis.talonic):
        server.latency = 0.15
    config = {**apis.config(sources=("clavata", "talonic")), "max_concurrent_requests": width}
    run = run_tap(config, check=True)
    assert len(run.records("clavata_jobs")) == len(run.records("extraction_jobs")) == 4 * width + 2
    # Each listing is one page here (read before the first fetch), so only the fetches overlap.
    for server in (apis.clavata, apis.talonic):
        assert server.peak_in_flight == width, (server.name, server.peak_in_flight)


def test_a_slow_source_holds_up_nobody(apis):
    clavata = [apis.clavata.add_job(results=1) for _ in range(3)]
    predict = [apis.cognite.add_predict_job(items=1) for _ in range(3)]
    apis.clavata.fail(r"/v1/jobs$", kind="slow", delay=4.0, times=None)  # its listing takes 4 s
    config = _config(apis)
    config["cognite"]["pipeline_ids"] = []
    del config["talonic"]
    run = run_tap(config, check=True)
    order = [(m["stream"], i) for i, m in enumerate(run.messages) if m["type"] == "RECORD"]
    first_clavata = min(i for stream, i in order if stream == "clavata_jobs")
    cdf = [i for stream, i in order if stream == "entity_matching_jobs"]
    assert len(cdf) == len(predict) and max(cdf) < first_clavata, "CDF waited for the slow Clavata listing"
    assert sorted(r["job_uuid"] for r in run.records("clavata_jobs")) == sorted(clavata)


def test_jobs_are_fetched_while_the_listing_is_still_read(apis):
    for _ in range(250):  # three pages of 100
        apis.talonic.add_job(rows=1)
    apis.talonic.latency = 0.05
    apis.talonic.fail(r"/v1/jobs$", kind="slow", delay=1.0, times=None)
    run = run_tap({**apis.config(sources=("talonic",)), "max_concurrent_requests": 4}, check=True)
    assert len(run.records("extraction_jobs")) == 250
    first_fetch, _ = _span(apis.talonic, r"/results$")
    _, last_page = _span(apis.talonic, r"/v1/jobs$")
    assert first_fetch < last_page, "the whole listing was read before the first job was fetched"


def _landed(run) -> dict:
    """What a target ends up with: per stream, records by key (times aside), and the final bookmarks."""
    data: dict = {}
    for stream in CONTRACT_KEYS:
        if stream == "sync_runs":
            continue
        data[stream] = {tuple(r[k] for k in CONTRACT_KEYS[stream]): r for r in run.records(stream)}
    return data


def _jobs(bookmark: dict, key: str) -> dict:
    """A job collection of a bookmark (state format 3: a list of [job_id, value] pairs, null when empty)."""
    return dict(bookmark.get(key) or [])


def _check_invariants(run) -> None:
    schema_seen: set[str] = set()
    written: dict[str, set[str]] = {stream: set() for stream in JOB_STREAMS}
    for message in run.messages:
        if message["type"] == "SCHEMA":
            schema_seen.add(message["stream"])
        elif message["type"] == "RECORD":
            stream = message["stream"]
            assert stream in schema_seen, f"RECORD of {stream} before its SCHEMA"
            if stream in JOB_STREAMS:
                written[stream].add(str(message["record"][JOB_STREAMS[stream][1]]))
        elif message["type"] == "STATE":
            for stream in ("clavata_jobs", "extraction_jobs"):
                bookmarks = message["value"].get("bookmarks", {}).get(stream, {}).get("job_bookmarks", {})
                for bookmark in (b for b in bookmarks.values() if b is not None):
                    done = set(_jobs(bookmark, "seen")) | set(_jobs(bookmark, "pending"))
                    assert done <= written[stream], (
                        f"STATE covers {stream} jobs not yet written: {done - written[stream]}"
                    )
            cdf = message["value"].get("bookmarks", {}).get("entity_matching_jobs", {}).get("job_bookmarks", {})
            for bookmark in (b for b in cdf.values() if b is not None):
                finished = {job for job, status in _jobs(bookmark, "finished").items() if status == "finished"}
                assert finished <= written["entity_matching_jobs"], finished - written["entity_matching_jobs"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_data_lands_whatever_the_interleaving(apis, seed):
    populate(apis, unfinished=True)
    for _ in range(6):
        apis.cognite.add_predict_job(items=3)
        apis.clavata.add_job(results=2)
        apis.talonic.add_job(rows=2)
    config = _config(apis, width=3)
    reference = run_tap(config, check=True)
    rng = random.Random(seed)
    for server in (apis.cognite, apis.clavata, apis.talonic):
        server.latency = rng.uniform(0.0, 0.08)
    for job in rng.sample(sorted(apis.clavata.jobs), 3):
        apis.clavata.fail(rf"/v1/jobs/{job}$", kind="slow", delay=rng.uniform(0.1, 0.6), times=None)
    for job in rng.sample(sorted(apis.talonic.jobs), 3):
        apis.talonic.fail(rf"/v1/jobs/{job}/results$", kind="slow", delay=rng.uniform(0.1, 0.6), times=None)
    for job in rng.sample(sorted(apis.cognite.predict_jobs), 3):
        apis.cognite.fail(rf"/jobs/{job}$", kind="slow", delay=rng.uniform(0.1, 0.6), times=None)
    shuffled = run_tap(config, check=True)
    _check_invariants(shuffled)
    _check_invariants(reference)
    assert _landed(shuffled) == _landed(reference)
    assert unordered_state(shuffled.state) == unordered_state(reference.state)
