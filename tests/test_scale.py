"""Concurrency, determinism, BATCH messages and splitting work across tap instances.

Throughput and memory are measured by `python -m benchmarks`, not here: timings in tests are
ratios of the fetch phase (first to last request the fake API saw), never absolute numbers.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import CONTRACT_KEYS, TAP, parse_messages, populate, run_tap, tap_env, unordered_state


def _fetch_span(vendor) -> float:
    times = [entry["time"] for entry in vendor.request_log]
    return max(times) - min(times)


def test_concurrent_fetching_is_at_least_six_times_faster(apis):
    cdf = apis.cognite
    for _ in range(200):
        cdf.add_predict_job(items=2, matches_per_item=1)
    cdf.latency = 0.05
    config = apis.config(cognite_auth="token", sources=("cognite",))
    config["cognite"]["pipeline_ids"] = []

    serial = run_tap({**config, "max_concurrent_requests": 1}, check=True)
    serial_span = _fetch_span(cdf)
    cdf.reset_counters()
    parallel = run_tap({**config, "max_concurrent_requests": 16}, check=True)
    parallel_span = _fetch_span(cdf)

    assert len(parallel.records("match_results")) == len(serial.records("match_results")) == 400
    assert serial_span / parallel_span >= 6, (serial_span, parallel_span)


def _without_times(stdout: str) -> str:
    """The output minus what must differ between runs: extraction times and the run's heartbeat."""
    lines = [line for line in stdout.splitlines() if '"stream":"sync_runs"' not in line]
    return re.sub(r'"time_extracted":"[^"]*"', "", "\n".join(lines))


def test_the_same_records_land_whatever_finishes_first(apis):
    """Jobs are written as their fetches complete (issue 20: no order is promised, the same data is)."""
    jobs = [apis.cognite.add_predict_job(items=3) for _ in range(12)]
    for job in jobs[::3]:  # some jobs answer slowly, so fetches complete out of order
        apis.cognite.fail(rf"/jobs/{job}$", kind="slow", delay=0.3, times=None)
    config = {**apis.config(cognite_auth="token", sources=("cognite",)), "max_concurrent_requests": 8}
    config["cognite"]["pipeline_ids"] = []
    first = run_tap(config, check=True)
    second = run_tap(config, check=True)
    records = [line for line in _without_times(first.stdout).splitlines() if '"type":"RECORD"' in line]
    again = [line for line in _without_times(second.stdout).splitlines() if '"type":"RECORD"' in line]
    assert sorted(records) == sorted(again)
    assert sorted(r["job_id"] for r in first.records("entity_matching_jobs")) == sorted(jobs)
    assert unordered_state(first.state) == unordered_state(second.state)


def test_batch_messages_carry_every_record(apis):
    populate(apis, unfinished=False)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            **apis.config(),
            "batch_config": {
                "encoding": {"format": "jsonl", "compression": "gzip"},
                "storage": {"root": f"file://{tmp}", "prefix": "jobresults-"},
            },
        }
        run = run_tap(config, check=True)
        batches = [m for m in run.messages if m["type"] == "BATCH"]
        assert batches and not run.records("match_results")
        counts: collections.Counter = collections.Counter()
        for message in batches:
            for uri in message["manifest"]:
                with gzip.open(uri.removeprefix("file://"), "rt") as handle:
                    counts[message["stream"]] += sum(1 for _ in handle)
    reference = run_tap(apis.config(), check=True)
    assert counts.pop("sync_runs") == 4  # the heartbeat goes by BATCH too
    assert dict(counts) == reference.counts()
    assert run.state["bookmarks"]["clavata_jobs"]["job_bookmarks"]["all"]["hwm"]


def test_disjoint_pipelines_can_run_as_parallel_instances(apis):
    cdf = apis.cognite
    pipelines = [cdf.add_pipeline() for _ in range(4)]
    for pid in pipelines:
        for _ in range(5):
            cdf.add_run(pid, matches=2)
    base = apis.config(cognite_auth="token", sources=("cognite",))
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for n, share in enumerate((pipelines[:2], pipelines[2:])):
            config = json.loads(json.dumps(base))
            config["cognite"]["pipeline_ids"] = share
            path = Path(tmp) / f"config-{n}.json"
            path.write_text(json.dumps(config))
            procs.append(
                subprocess.Popen(
                    [TAP, "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tap_env()
                )
            )
        outputs = [parse_messages(p.communicate(timeout=120)[0].decode()) for p in procs]
        assert all(p.returncode == 0 for p in procs)
    together = run_tap({**base}, check=True)
    split = [
        (m["stream"], tuple(m["record"][k] for k in CONTRACT_KEYS[m["stream"]]))
        for out in outputs
        for m in out
        if m["type"] == "RECORD" and m["stream"] != "sync_runs"
    ]
    assert sorted(split) == sorted((s, k) for s in CONTRACT_KEYS if s != "sync_runs" for k in together.keys(s))
    states = [[m for m in out if m["type"] == "STATE"][-1]["value"] for out in outputs]
    owned = [set(s["bookmarks"]["pipeline_runs"]["job_bookmarks"]) for s in states]
    assert owned == [{str(p) for p in pipelines[:2]}, {str(p) for p in pipelines[2:]}]
