"""Meltano's state merges: the merge of two states of this tap resumes exactly like the later one.

After `meltano run --full-refresh` (default `auto` state strategy) or `--state-strategy merge`, Meltano
builds the next run's state from its job history (`meltano.core.job_state.JobState.from_job_history`):
the last complete state with each later incomplete one merged onto it by `meltano.core.utils.merge`
(objects unioned key by key, lists and scalars replaced by the newer value). These tests apply that
very function, from the installed Meltano (its own virtualenv, in a subprocess), to real states the
tap wrote against the fake APIs, and to generated sequences of bookmark states.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_jobresults import state as state_format
from tap_jobresults.lifecycle import Bookmark, ConfiguredJobs, JobKey, Policy
from tests.conftest import DATA_STREAMS, RESULT_STREAMS, ROOT, TapRun, populate, run_tap

MERGER = """
import json, sys
from meltano.core.utils import merge
for line in sys.stdin:
    payloads = json.loads(line)  # oldest first, as from_job_history applies them
    merged = {}
    for payload in payloads:
        merged = merge(payload, merged)
    sys.stdout.write(json.dumps(merged) + "\\n")
    sys.stdout.flush()
"""


def _meltano_python() -> str | None:
    candidates = [ROOT / ".venv-meltano" / "bin" / "python"]
    meltano = shutil.which("meltano")
    if meltano:
        candidates.append(Path(meltano).parent / "python")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return None


class MeltanoMerge:
    """Meltano's own `merge`, in a long-lived subprocess of Meltano's virtualenv."""

    def __init__(self, python: str) -> None:
        self.proc = subprocess.Popen(
            [python, "-c", MERGER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def __call__(self, *states: dict) -> dict:
        """The state Meltano hands the next run after these states were saved, oldest first."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([{"singer_state": s} for s in states]) + "\n")
        line = self.proc.stdout.readline()
        assert line, "Meltano's merge subprocess ended"
        return json.loads(line)["singer_state"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def meltano_merge() -> t.Iterator[MeltanoMerge]:
    python = _meltano_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("Meltano's virtualenv (.venv-meltano, `make test` builds it) is needed here")
        pytest.skip("no Meltano virtualenv (.venv-meltano): `make test` builds it")
    merger = MeltanoMerge(python)
    try:
        yield merger
    finally:
        merger.close()


def meaning(state: dict | None) -> dict:
    """What the tap reads from a state: state.py's reading of it, with null and empty objects left out
    (the tap reads them as absent: a forgotten partition, no backfill, a stream without state)."""

    def strip(node: t.Any) -> t.Any:
        if isinstance(node, dict):
            kept = {key: strip(value) for key, value in node.items()}
            return {key: value for key, value in kept.items() if value is not None and value != {}}
        return node

    checked = state_format.check(copy.deepcopy(state or {}))
    checked.pop("format_version", None)
    return strip(checked)


def as_format_2(state: dict) -> dict:
    """The same bookmark as release 0.2.0 wrote it: job collections as {id: value} objects, no null keys."""
    old = copy.deepcopy(state)
    old["format_version"] = 2
    if old.get("shard") is None:
        old.pop("shard", None)
    for stream_state in old["bookmarks"].values():
        for bookmark in (stream_state.get("job_bookmarks") or {}).values():
            for key in ("pending", "seen", "finished"):
                if key in bookmark:
                    bookmark[key] = dict(bookmark[key])
            for key in ("hwm", "floor", "backfill"):
                if bookmark.get(key) is None:
                    bookmark.pop(key, None)
    return old


def synced(run: TapRun) -> dict[str, set]:
    return {stream: set(run.keys(stream)) for stream in DATA_STREAMS}


def assert_resumes_alike(config: dict, merged: dict, later: dict) -> TapRun:
    """A run from the merged state emits what a run from the later state emits and ends the same."""
    assert meaning(merged) == meaning(later)
    from_merged = run_tap(config, state=merged, check=True)
    from_later = run_tap(config, state=later, check=True)
    assert synced(from_merged) == synced(from_later)
    assert from_merged.counts() == from_later.counts()
    assert meaning(from_merged.state) == meaning(from_later.state)
    return from_merged


def _world(apis) -> tuple[dict, TapRun, TapRun]:
    """Run 1 with unfinished jobs; then they finish, new ones come; run 2 from run 1's state."""
    populate(apis)
    config = apis.config()
    first = run_tap(config, check=True)
    apis.cognite.finish_all()
    apis.clavata.finish_all()
    apis.talonic.finish_all()
    apis.clavata.add_job(results=2)
    apis.talonic.add_job(rows=2, status="processing")
    return config, first, run_tap(config, state=first.state, check=True)


def test_meltano_merge_of_two_consecutive_runs_resumes_like_the_later_one(apis, meltano_merge):
    config, first, second = _world(apis)
    assert second.counts().get("clavata_reports")  # jobs that were pending in the first state finished
    merged = meltano_merge(first.state, second.state)
    rerun = assert_resumes_alike(config, merged, second.state)
    # Only the job still unfinished comes again; no finished job's results do.
    assert not rerun.records("clavata_reports") and not rerun.records("match_results")
    assert [r["finished"] for r in rerun.records("extraction_jobs")] == [False]


def test_every_state_of_a_run_merged_onto_the_last_complete_one_reads_as_itself(apis, meltano_merge):
    """Meltano merges the STATE messages of incomplete runs onto the last complete state, in a chain."""
    _config, first, second = _world(apis)
    states = [first.state, *second.states]
    # The concurrent engine writes a (small) STATE after every job it writes, not one per stream and job:
    # the chain holds one state per job of the second run, whatever order the jobs finished in.
    jobs = sum(len(second.records(s)) for s in DATA_STREAMS if s not in RESULT_STREAMS)
    assert jobs >= 5
    assert len(second.states) > jobs
    for earlier, later in itertools.pairwise(states):
        assert meaning(meltano_merge(earlier, later)) == meaning(later)
    for later in second.states:
        assert meaning(meltano_merge(first.state, later)) == meaning(later)
    assert meaning(meltano_merge(first.state, *second.states)) == meaning(second.state)


def test_a_full_refresh_state_merged_onto_the_last_complete_one_resumes_like_the_full_refresh(apis, meltano_merge):
    """`meltano run --full-refresh`: a run from no state, whose state Meltano merges onto the previous one."""
    config, first, _second = _world(apis)
    refreshed = run_tap(config, check=True)
    assert refreshed.counts().get("clavata_reports")
    assert_resumes_alike(config, meltano_merge(first.state, refreshed.state), refreshed.state)


def test_a_state_of_the_previous_format_merged_with_a_newer_one(apis, meltano_merge):
    """After an upgrade: the last complete state is format 2 ({id: value} objects), the next one format 3."""
    populate(apis)
    config = apis.config()
    old = as_format_2(run_tap(config, check=True).state)
    apis.cognite.finish_all()
    apis.clavata.finish_all()
    apis.talonic.finish_all()
    upgraded = run_tap(config, state=old, check=True)  # read without a re-sync
    assert upgraded.state["format_version"] == state_format.FORMAT_VERSION
    assert upgraded.counts().get("clavata_reports") == 2  # only the job that was running
    merged = meltano_merge(old, upgraded.state)
    rerun = assert_resumes_alike(config, merged, upgraded.state)
    assert rerun.counts() == {}
    refreshed = run_tap(config, check=True)  # a full refresh right after the upgrade
    assert_resumes_alike(config, meltano_merge(old, refreshed.state), refreshed.state)


def test_a_forgotten_pipeline_and_a_finished_backfill_stay_forgotten_after_a_merge(apis, meltano_merge):
    cdf = apis.cognite
    p1, p2 = cdf.add_pipeline(), cdf.add_pipeline()
    for _ in range(3):
        cdf.add_run(p1, matches=1)
        cdf.add_run(p2, matches=1)
    config = apis.config(sources=("cognite",))
    catalog = run_tap(config, args=["--discover"]).stdout
    deselected = json.loads(catalog)
    for entry in deselected["streams"]:
        selected = entry["tap_stream_id"] != "pipeline_matches"
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = selected
    first = run_tap(config, catalog=deselected, check=True)
    assert not first.records("pipeline_matches")
    config["cognite"]["pipeline_ids"] = [p1]
    second = run_tap(config, check=True, state=first.state)  # p2 forgotten; pipeline_matches backfilled for p1
    assert len(second.records("pipeline_matches")) == 3
    assert any((b.get("backfill") or {}).get("through") for s in second.states for b in _partitions(s))  # mid-backfill
    for during in [first.state, *second.states]:
        assert meaning(meltano_merge(during, second.state)) == meaning(second.state)
    merged = meltano_merge(first.state, second.state)
    rerun = assert_resumes_alike(config, merged, second.state)
    assert rerun.counts() == {}
    config["cognite"]["pipeline_ids"] = [p1, p2]  # p2 back: its full history, as from the later state
    assert_resumes_alike(config, meltano_merge(first.state, second.state), second.state)


def _partitions(state: dict) -> list[dict]:
    return [b for b in state["bookmarks"]["pipeline_runs"]["job_bookmarks"].values() if b]


# -- generated sequences of bookmark states -------------------------------------------------------------

TIMES = [f"2025-01-01T00:{minute:02d}:00.000000Z" for minute in range(0, 60, 3)]
jobs = st.tuples(st.sampled_from(TIMES), st.sampled_from([f"j{n}" for n in range(12)]))
outcome = st.sampled_from(["done", "pending", "missing"])
a_run = st.tuples(
    st.lists(st.tuples(jobs, outcome), max_size=8),
    st.booleans(),  # interrupted before the end (no close)
    st.sampled_from([0.0, 300.0, 900.0]),  # lookback
)


def _states_of(runs: list, configured: bool) -> list[dict]:
    """Every STATE a sequence of runs would write for one partition (after each job, at each end)."""
    states: list[dict] = []
    stored: dict = {}
    for run_jobs, interrupted, lookback in runs:
        policy = Policy(run_started="2025-06-01T00:00:00.000000Z", lookback=lookback)
        bookmark_state = copy.deepcopy(stored)
        bookmark = (
            ConfiguredJobs(bookmark_state, policy, [f"j{n}" for n in range(8)])
            if configured
            else Bookmark(bookmark_state, policy)
        )
        for (created, job_id), result in run_jobs:
            bookmark.advance(JobKey(created, job_id), done=result != "pending", missing=result == "missing")
            states.append(copy.deepcopy(bookmark_state))
        if not interrupted:
            bookmark.close()
            states.append(copy.deepcopy(bookmark_state))
        stored = states[-1] if states else {}
    stream = "entity_matching_jobs" if configured else "clavata_jobs"
    return [{"format_version": 3, "bookmarks": {stream: {"job_bookmarks": {"all": s}}}} for s in states]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(a_run, min_size=1, max_size=4), configured=st.booleans())
def test_generated_run_sequences_merge_to_the_later_state(meltano_merge, runs, configured):
    states = _states_of(runs, configured)
    for i, later in enumerate(states):
        for earlier in (states[i - 1], states[0]) if i else ():
            assert meaning(meltano_merge(earlier, later)) == meaning(later), (earlier, later)
        if i:  # and the previous release's form of the older one
            assert meaning(meltano_merge(as_format_2(states[i - 1]), later)) == meaning(later)


# -- generated sequences of real runs ----------------------------------------------------------------------

a_step = st.fixed_dictionaries(
    {
        "new_finished": st.integers(0, 3),
        "new_running": st.integers(0, 2),
        "finish": st.booleans(),
        "run": st.sampled_from(["whole", "test", "full-refresh"]),
    }
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(a_step, min_size=2, max_size=3))
def test_generated_sequences_of_real_runs_merge_to_the_later_state(meltano_merge, steps):
    """Real runs of the tap (whole, `--test`, a full refresh from no state) over a changing world: every STATE
    merged onto the state before it reads as itself, and a run from the last merge emits what a run from the
    later state emits."""
    from tests.fakeapi import FakeAPIs

    with FakeAPIs() as apis:
        config = apis.config(sources=("clavata", "talonic", "cognite"))
        pid = apis.cognite.add_pipeline()
        last: dict | None = None
        for step in steps:
            for _ in range(step["new_finished"]):
                apis.clavata.add_job(results=1)
                apis.talonic.add_job(rows=1)
                apis.cognite.add_run(pid, matches=1)
            for _ in range(step["new_running"]):
                apis.clavata.add_job(status="JOB_STATUS_RUNNING", results=1)
                apis.talonic.add_job(status="processing", rows=1)
                apis.cognite.add_run(pid, status="Queued")
            if step["finish"]:
                apis.clavata.finish_all()
                apis.talonic.finish_all()
                apis.cognite.finish_all()
            args = ["--test"] if step["run"] == "test" else []
            start = last if step["run"] == "whole" else None  # `--test` reads no state (the SDK's cb_test)
            run = run_tap(config, state=start, args=args)
            assert run.returncode == 0, run.stderr[-2000:]
            # A run's states merged onto its input state and onto each other (a run from no state starts anew).
            chain = [] if start is None else [start]
            for state in run.states:
                if chain:
                    assert meaning(meltano_merge(chain[-1], state)) == meaning(state)
                chain.append(state)
            if run.state is not None and step["run"] != "test":
                previous, last = last, run.state
                if previous is not None:
                    assert_resumes_alike(config, meltano_merge(previous, last), last)


def test_configured_jobs_keep_only_the_configured_ones_and_list_nothing_pending():
    """A CDF predict job removed from config is forgotten; the ones still configured stay finished."""
    policy = Policy(run_started="2025-06-01T00:00:00.000000Z", lookback=0.0)
    state = {"finished": [["j1", "finished"], ["j2", "missing"], ["j3", "finished"]], "pending": [["j9", 1]]}
    bookmark = ConfiguredJobs(state, policy, ["j1", "j2", "j4"])
    assert dict(bookmark.finished.items()) == {"j1": "finished", "j2": "missing"}
    assert state["finished"] == [["j1", "finished"], ["j2", "missing"]]
    assert "pending" not in state  # never written for configured jobs
    assert len(bookmark.pending) == 0 and "j9" not in bookmark.pending and "j4" not in bookmark.pending
    assert len(bookmark.seen) == 0 and "j1" not in bookmark.seen
