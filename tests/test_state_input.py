"""The state the tap is given: checked whole before the first record, upgraded, never misread."""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import typing as t
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_jobresults import state as state_format
from tests.conftest import DATA_STREAMS, TAP, parse_messages, populate, run_tap, tap_env

FIXTURES = Path(__file__).parent / "fixtures"


def _run_with_state_text(config: dict, text: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        (Path(tmp) / "state.json").write_text(text)
        return subprocess.run(
            [TAP, "--config", f"{tmp}/config.json", "--state", f"{tmp}/state.json"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=tap_env(),
        )


def test_a_state_file_that_is_not_json_is_refused_before_any_record(apis):
    apis.talonic.add_job(rows=2)
    proc = _run_with_state_text(apis.config(sources=("talonic",)), '{"bookmarks": ')
    assert proc.returncode == 1
    assert "state file" in proc.stderr and "not JSON" in proc.stderr, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("bookmark", "path"),
    [
        ({"hwm": 5, "pending": {}}, "bookmarks.extraction_jobs.job_bookmarks.all.hwm: expected [created, id]"),
        ({"pending": ["a", "b"]}, "bookmarks.extraction_jobs.job_bookmarks.all.pending[0]: expected [job ID, string]"),
        ({"pending": {"a": "b"}}, "bookmarks.extraction_jobs.job_bookmarks.all.pending.a: 'b' is not a timestamp"),
        ({"seen": 7}, "bookmarks.extraction_jobs.job_bookmarks.all.seen: expected a list of [job ID, string] pairs"),
        (
            {"seen": [["a", "2025-01-01T00:00:00Z"], ["a", "2025-01-02T00:00:00Z"]]},
            'bookmarks.extraction_jobs.job_bookmarks.all.seen[1]: job ID "a" is listed twice',
        ),
        ("all of it", "bookmarks.extraction_jobs.job_bookmarks.all: expected an object"),
        ({"seen": {"a": 1}}, "bookmarks.extraction_jobs.job_bookmarks.all.seen.a: expected a string, got 1"),
    ],
)
def test_a_bookmark_of_the_wrong_shape_is_refused_by_its_path(apis, bookmark, path):
    for _ in range(3):
        apis.talonic.add_job(rows=2)
    state = {"bookmarks": {"extraction_jobs": {"job_bookmarks": {"all": bookmark}}}}
    run = run_tap(apis.config(sources=("talonic",)), state=state)
    assert run.returncode == 1
    assert path in run.stderr, run.stderr[-1500:]
    assert "Traceback" not in run.stderr
    assert run.messages == []


def test_a_state_from_a_newer_release_is_refused(apis):
    apis.talonic.add_job(rows=1)
    run = run_tap(apis.config(sources=("talonic",)), state={"format_version": 99, "bookmarks": {}})
    assert run.returncode == 1 and "newer tap-jobresults" in run.stderr
    assert run.messages == []


def test_the_state_meltano_state_get_prints_is_accepted(apis):
    populate(apis)
    config = apis.config()
    first = run_tap(config, check=True)
    plain = run_tap(config, state=first.state, check=True)
    wrapped = run_tap(config, state={"singer_state": first.state}, check=True)
    assert wrapped.counts() == plain.counts()
    assert sum(wrapped.counts().values()) < sum(first.counts().values())


def test_state_written_by_the_previous_release_is_read_without_resyncing(apis):
    """Format 1 (release 0.1.0: {hwm, pending} per partition, no format_version) keeps its meaning:
    everything at or below the mark was synced. tests/fixtures/state_v1.json shows the format."""
    fixture = json.loads((FIXTURES / "state_v1.json").read_text())
    assert "format_version" not in fixture
    assert run_tap(apis.config(sources=("talonic",)), state=fixture).returncode == 0  # a well-formed v1 state

    populate(apis, unfinished=True)
    config = apis.config()
    first = run_tap(config, check=True)
    old = json.loads(json.dumps(first.state))
    old.pop("format_version")
    for stream in ("clavata_jobs", "extraction_jobs", "pipeline_runs"):
        for bookmark in old["bookmarks"][stream]["job_bookmarks"].values():
            for key in ("seen", "floor", "results"):
                bookmark.pop(key, None)
    for bookmark in old["bookmarks"]["entity_matching_jobs"]["job_bookmarks"].values():
        bookmark.pop("results", None)
    from_old = run_tap(config, state=old, check=True)
    from_new = run_tap(config, state=first.state, check=True)
    assert from_old.counts() == from_new.counts()
    assert from_old.state["format_version"] == state_format.FORMAT_VERSION


def test_test_mode_state_holds_only_what_it_fully_emitted_and_loses_nothing(apis):
    """`--test` syncs one job record per stream, then stops: its STATE bookmarks the jobs whose records it
    wrote whole (result records first, the job's own last), so resuming from it loses nothing.
    The bug this guards against: `--test` bookmarked a job after one of its results."""
    populate(apis, unfinished=False)
    for _ in range(3):
        apis.clavata.add_job(results=4)
        apis.talonic.add_job(rows=4)
    config = apis.config()
    probe = run_tap(config, args=["--test"])
    assert probe.returncode == 0, probe.stderr[-2000:]
    states = [m["value"] for m in parse_messages(probe.stdout) if m["type"] == "STATE"]
    assert states and states[-1]["format_version"] == state_format.FORMAT_VERSION
    assert len(probe.records("clavata_jobs")) == 1  # stopped after one record of the stream
    resumed = run_tap(config, state=states[-1], check=True)
    reference = run_tap(config, check=True)
    for stream in DATA_STREAMS:
        assert set(reference.keys(stream)) == set(probe.keys(stream)) | set(resumed.keys(stream)), stream
    # Only what was not emitted whole comes again: at most one job per job stream (the one in flight).
    assert sum(resumed.counts().values()) < sum(reference.counts().values())
    assert len(resumed.records("clavata_jobs")) >= len(reference.records("clavata_jobs")) - 1


def test_hand_written_timestamps_in_a_bookmark_are_read_in_the_tap_s_own_form(apis):
    """`2025-05-01T00:00:00Z` and `2025-05-01T00:00:00.000000Z` are the same instant; compared as strings
    they are not, and the first would put the mark after every job of that second."""
    synced = apis.talonic.add_job(rows=1, created_at="2025-05-01T00:00:00Z")
    later = apis.talonic.add_job(rows=1, created_at="2025-05-01T00:00:00.500000Z")
    state = {"bookmarks": {"extraction_jobs": {"job_bookmarks": {"all": {"hwm": ["2025-05-01T00:00:00Z", synced]}}}}}
    run = run_tap(apis.config(sources=("talonic",)), state=state, check=True)
    assert [r["job_id"] for r in run.records("extraction_jobs")] == [later]
    bad = {"bookmarks": {"extraction_jobs": {"job_bookmarks": {"all": {"hwm": ["yesterday", synced]}}}}}
    refused = run_tap(apis.config(sources=("talonic",)), state=bad)
    assert refused.returncode == 1 and "job_bookmarks.all.hwm: 'yesterday' is not a timestamp" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_keys_the_tap_does_not_own_are_dropped_with_a_warning_and_never_written(apis):
    populate(apis)
    config = apis.config()
    first = run_tap(config, check=True)
    junk = "JUNK" * 250_000  # 1 MB that must not be repeated in every STATE
    state = json.loads(json.dumps(first.state))
    state["other_tool"] = {"cursor": junk}
    state["bookmarks"]["not_a_stream_of_this_tap"] = {"x": junk}
    state["bookmarks"]["clavata_jobs"]["replication_key_value"] = junk
    # Result streams have no state of their own under the concurrent engine: a key there is foreign too.
    state["bookmarks"].setdefault("clavata_reports", {})["notes"] = junk
    partition = state["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"]
    partition["comment\nforged log line"] = junk
    run = run_tap(config, state=state, check=True)
    assert "JUNK" not in run.stdout
    assert len(run.stdout) < len(first.stdout) + 1_000_000
    warning = [line for line in run.stderr.splitlines() if "does not write" in line]
    assert len(warning) == 1, run.stderr[-3000:]
    for path in (
        "other_tool",
        "bookmarks.not_a_stream_of_this_tap",
        "bookmarks.clavata_jobs.replication_key_value",
        "bookmarks.clavata_reports.notes",
        'bookmarks.extraction_jobs.job_bookmarks.all."comment\\nforged log line"',
    ):
        assert path in warning[0], path
    # The rest of the state is read as it was: the same run as from the clean state.
    assert run.counts() == run_tap(config, state=first.state, check=True).counts()
    again = run_tap(config, state=run.state, check=True)
    assert "does not write" not in again.stderr  # what the tap writes, it owns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),
        ('{"bookmarks": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001, "nested too deep"),
        (
            '{"bookmarks": {"extraction_jobs": {"job_bookmarks": {"all": {"pending": [["j", "9999-12-31T23:00:00-05:00"]]}}}}}',
            "job_bookmarks.all.pending.j: '9999-12-31T23:00:00-05:00' is not a timestamp (out of range in UTC)",
        ),
        (
            '{"bookmarks": {"clavata_jobs": {"job_bookmarks": {"all": {"hwm": ["0001-01-01T00:00:00+01:00", "j"]}}}}}',
            "job_bookmarks.all.hwm: '0001-01-01T00:00:00+01:00' is not a timestamp (out of range in UTC)",
        ),
        ('{"bookmarks": {"\xff": {}}}', "not UTF-8"),
    ],
    ids=["deep-array", "deep-object", "year-9999-offset", "year-1-offset", "not-utf8"],
)
def test_a_state_no_tap_could_have_written_ends_in_a_named_error_before_any_record(apis, text, message):
    apis.talonic.add_job(rows=1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(apis.config(sources=("talonic", "clavata"))))
        (Path(tmp) / "state.json").write_bytes(text.encode("latin-1" if message == "not UTF-8" else "utf-8"))
        proc = subprocess.run(
            [TAP, "--config", f"{tmp}/config.json", "--state", f"{tmp}/state.json"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=tap_env(),
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 2000, proc.stderr[-2000:]
    assert f"state file {tmp}/state.json" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Nothing was synced" in proc.stderr
    assert proc.stdout == ""


VALID = {
    "format_version": 3,
    "shard": None,
    "bookmarks": {
        "clavata_jobs": {
            "job_bookmarks": {
                "all": {
                    "hwm": ["2025-01-01T00:03:00.000000Z", "c"],
                    "floor": ["2024-12-31T23:53:00.000000Z", ""],
                    "pending": [["c", "2025-01-01T00:03:00.000000Z"]],
                    "seen": [["a", "2025-01-01T00:00:00.000000Z"]],
                    "results": ["clavata_reports"],
                    "backfill": {"streams": ["clavata_reports"], "through": ["2025-01-01T00:00:00.000000Z", "a"]},
                }
            }
        },
        "clavata_reports": {},
        "entity_matching_jobs": {"job_bookmarks": {"all": {"finished": [["4", "finished"]], "backfill": None}}},
    },
}


def _objects(node: t.Any, path: tuple = ()) -> list[tuple]:
    """Paths of the objects in a state where a key could be added."""
    found = [path] if isinstance(node, dict) and path[-1:] != ("job_bookmarks",) else []  # not a new partition
    if isinstance(node, dict):
        for key, value in node.items():
            found += _objects(value, (*path, key))
    return found


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_generated_foreign_keys_anywhere_are_dropped_and_named(data):
    """Any key the tap does not write, at any object of a state, is dropped and named; the rest is read as before."""
    state = copy.deepcopy(VALID)
    places = _objects(state)
    added = []
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.sampled_from(places))
        key = data.draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in OWNED_NAMES))
        node = state
        for part in where:
            node = node[part]
        if key in node:
            continue
        node[key] = data.draw(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=3)))
        added.append((where, key))
    dropped = state_format.Dropped()
    assert state_format.check(state, dropped=dropped) == state_format.check(copy.deepcopy(VALID))
    # each is named by its own path, so the operator can find it
    assert sorted(dropped.paths) == sorted(".".join(map(state_format._name, (*where, key))) for where, key in added)
    message = dropped.message("state")
    assert message is not None and "\n" not in message and len(message) < 2000


OWNED_NAMES = {
    "format_version",
    "shard",
    "bookmarks",
    "job_bookmarks",
    "streams",
    "through",
    *state_format.BOOKMARK_KEYS,
    *state_format.SDK_MARKERS,
    *state_format.JOB_STREAMS,
    *state_format.STATELESS_STREAMS,
    "all",
    "singer_state",
}


def _nodes(node: t.Any, path: tuple = ()) -> list[tuple]:
    """Paths of every value in a state, at any depth (list elements by index)."""
    found = [path] if path else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        found += _nodes(value, (*path, key))
    return found


def _spelled(where: str, path: tuple) -> str:
    return where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


JOB_COLLECTIONS = {"pending", "seen", "finished"}  # [[id, value], ...] or, as formats 1 and 2 wrote them, {id: value}
OTHER_TYPES = [0, 2.5, True, "x", [], ["a", "b", "c"], {}, {"k": "v"}]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data(), wrapped=st.booleans())
def test_a_value_of_another_type_anywhere_in_a_state_is_refused_naming_where_it_is(data, wrapped):
    """Any value of a valid state replaced by one of another JSON type: the state is refused with a
    StateError that names the value's own path, a parent or a child of it (so the operator can find it), never
    read as something else and never another exception. (Legitimate alternatives are excluded: null where
    the format allows it, and a job collection written as an object by formats 1 and 2.)"""
    state = copy.deepcopy(VALID)
    state["shard"] = [0, 2]
    state["bookmarks"]["extraction_jobs"] = {"job_bookmarks": {"all": {"seen": {"x": "2025-01-01T00:00:00Z"}}}}
    holder: dict = {"state": {"singer_state": state} if wrapped else state}
    path = data.draw(st.sampled_from(_nodes(holder)))
    parent: t.Any = holder
    for part in path[:-1]:
        parent = parent[part]
    original = parent[path[-1]]
    kinds = (list, dict) if path[-1] in JOB_COLLECTIONS else (type(original),)
    replacement = data.draw(
        st.sampled_from([v for v in OTHER_TYPES if not isinstance(v, kinds) and original is not None])
        if original is not None and not isinstance(original, bool)
        else st.nothing()
    )
    parent[path[-1]] = replacement
    with pytest.raises(state_format.StateError) as refused:
        state_format.check(holder["state"])
    message = str(refused.value)
    named = message.split(":", 1)[0].split(" ", 1)[0]
    spelled = _spelled(path[0], path[1:])
    # the value itself, a parent, or (inside the replacement) a child of it
    related = (spelled, named) if len(spelled) <= len(named) else (named, spelled)
    assert related[0] == related[1] or related[1].startswith((related[0] + ".", related[0] + "[")), (spelled, message)
