"""`shard: {index, count}`: N instances together sync exactly what one would, each job once."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import DATA_STREAMS, populate, run_tap

SHARDS = 4


def _world(apis) -> None:
    populate(apis)
    for _ in range(8):
        apis.cognite.add_predict_job(items=2)
        apis.clavata.add_job(results=2)
        apis.talonic.add_job(rows=2)
    for _ in range(2):
        pid = apis.cognite.add_pipeline()
        for _ in range(5):
            apis.cognite.add_run(pid, matches=2)


def _keys(runs) -> dict[str, collections.Counter]:
    keys: dict[str, collections.Counter] = {s: collections.Counter() for s in DATA_STREAMS}
    for run in runs:
        for stream in DATA_STREAMS:
            keys[stream].update(run.keys(stream))
    return keys


def _run_shards(config: dict, states: list) -> list:
    with ThreadPoolExecutor(SHARDS) as pool:
        futures = [
            pool.submit(run_tap, {**config, "shard": {"index": i, "count": SHARDS}}, states[i], check=True)
            for i in range(SHARDS)
        ]
        return [f.result() for f in futures]


def _fetched_job_ids(apis) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        counts.update(vendor.counts)
    return counts


def test_shards_together_sync_exactly_what_one_instance_does(apis):
    _world(apis)
    config = apis.config()
    single = run_tap(config, check=True)
    single_fetches = _fetched_job_ids(apis)
    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        vendor.reset_counters()

    shards = _run_shards(config, [None] * SHARDS)
    union = _keys(shards)
    for stream in DATA_STREAMS:
        assert set(union[stream]) == set(single.keys(stream)), stream
        doubled = [k for k, n in union[stream].items() if n > 1]
        assert not doubled, f"{stream}: emitted by more than one shard: {doubled[:3]}"
    # Each job was fetched by one shard only: per job, exactly the requests the single run made.
    assert _fetched_job_ids(apis) == single_fetches
    assert all(len(run.records("clavata_jobs")) < len(single.records("clavata_jobs")) for run in shards)

    # Round two: everything running finishes, new jobs appear; each shard resumes from its own state.
    apis.cognite.finish_all()
    apis.clavata.finish_all()
    apis.talonic.finish_all()
    for _ in range(6):
        apis.clavata.add_job(results=1)
        apis.talonic.add_job(rows=1)
    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        vendor.reset_counters()
    single_two = run_tap(config, state=single.state, check=True)
    single_two_fetches = _fetched_job_ids(apis)
    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        vendor.reset_counters()
    shards_two = _run_shards(config, [run.state for run in shards])
    union_two = _keys(shards_two)
    for stream in DATA_STREAMS:
        assert set(union_two[stream]) == set(single_two.keys(stream)), stream
    assert _fetched_job_ids(apis) == single_two_fetches


def test_a_shard_state_holds_only_its_own_jobs(apis):
    for _ in range(12):
        apis.clavata.add_job(results=1)
    # The fake's jobs are a minute apart: with the default 10-minute window, a shard holding both the
    # first and the last job would drop the first from `seen` (below its floor) and the count would vary.
    config = {**apis.config(sources=("clavata",)), "lookback_window": 86400}
    runs = _run_shards(config, [None] * SHARDS)
    seen = [
        {job_id for job_id, _ in r.state["bookmarks"]["clavata_jobs"]["job_bookmarks"]["all"]["seen"]} for r in runs
    ]
    assert sum(len(s) for s in seen) == 12
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ({"index": 4, "count": 4}, "shard.index: 4 must be between 0 and shard.count - 1 (3)"),
        ({"index": 0, "count": 0}, "shard.count: 0 must be at least 1"),
        ({"index": -1, "count": 2}, "shard.index: -1 must be between 0"),
    ],
)
def test_a_shard_outside_its_count_is_refused(apis, shard, message):
    run = run_tap({**apis.config(sources=("clavata",)), "shard": shard})
    assert run.returncode != 0 and message in run.stderr, run.stderr[-1500:]


def test_a_state_from_another_shard_count_is_refused_before_anything_is_synced(apis):
    for _ in range(6):
        apis.clavata.add_job(results=1)
    config = apis.config(sources=("clavata",))
    first = run_tap({**config, "shard": {"index": 1, "count": 4}}, check=True)
    assert first.state["shard"] == [1, 4]
    again = run_tap({**config, "shard": {"index": 1, "count": 4}}, state=first.state, check=True)
    assert again.counts() == {}
    for other in ({"index": 1, "count": 3}, None):
        run = run_tap({**config, **({"shard": other} if other else {})}, state=first.state)
        assert run.returncode == 1 and "written by shard 1 of 4" in run.stderr, run.stderr[-1500:]
        assert not [m for m in run.messages if m["type"] == "RECORD"]
    # An unsharded state may seed a shard: everything it bookmarked was synced.
    single = run_tap(config, check=True)
    seeded = run_tap({**config, "shard": {"index": 0, "count": 2}}, state=single.state, check=True)
    assert seeded.counts() == {} and seeded.state["shard"] == [0, 2]
