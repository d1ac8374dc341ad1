"""The job-ID bookmark: never skip a running job, never repeat a finished one, stay small."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import CONTRACT_KEYS, RESULT_STREAMS, TAP, parse_messages, populate, run_tap, tap_env


def job_of(stream: str, record: dict) -> tuple:
    """Which job a record belongs to, whatever the stream."""
    if stream in ("pipeline_runs", "pipeline_matches", "suggested_rules", "generated_rules"):
        return ("run", record["pipeline_id"], record["run_id"])
    if stream in ("clavata_jobs", "clavata_reports"):
        return ("clavata", record["job_uuid"])
    if stream in ("entity_matching_jobs", "match_results"):
        return ("predict", record["job_id"])
    return ("talonic", record["job_id"])


def result_count(run) -> int:
    return sum(len(run.records(s)) for s in RESULT_STREAMS)


def test_second_sync_emits_exactly_what_finished_or_appeared(apis):
    made = populate(apis)
    first = run_tap(apis.config(), check=True)

    apis.cognite.finish_all()
    apis.clavata.finish_all()
    apis.talonic.finish_all()
    new_clavata = apis.clavata.add_job(results=2)
    new_talonic = apis.talonic.add_job(rows=4)
    pid = made["pipelines"][0]
    new_run = apis.cognite.add_run(pid, matches=3, suggested_rules=0, generated_rules=0)

    second = run_tap(apis.config(), state=first.state, check=True)
    assert {r["job_id"] for r in second.records("entity_matching_jobs")} == {made["predict"][-1]}
    assert {r["run_id"] for r in second.records("pipeline_runs")} == {made["runs"][-1][1], new_run}
    assert {r["job_uuid"] for r in second.records("clavata_jobs")} == {made["clavata"][-1], new_clavata}
    assert {r["job_id"] for r in second.records("extraction_jobs")} == {made["talonic"][-1], new_talonic}
    assert len(second.records("match_results")) == 2
    assert len(second.records("pipeline_matches")) == 5 + 3  # the queued run (5 when done) and the new one
    assert len(second.records("clavata_reports")) == 2 + 2
    assert len(second.records("extraction_rows")) == 2 + 4
    assert all(r["status"] != "Running" for r in second.records("entity_matching_jobs"))

    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        vendor.reset_counters()
    third = run_tap(apis.config(), state=second.state, check=True)
    assert result_count(third) == 0
    assert sum(third.counts().values()) == 0
    for job_id in made["predict"]:
        assert apis.cognite.requests(job_id) == 0
    for _, run_id in [*made["runs"], (pid, new_run)]:
        assert apis.cognite.requests(run_id) == 0
    for uuid in [*made["clavata"], new_clavata]:
        assert apis.clavata.requests(uuid) == 0
    for job_id in [*made["talonic"], new_talonic]:
        assert apis.talonic.requests(job_id) == 0


def test_statuses_the_docs_do_not_list_mean_unfinished(apis):
    apis.cognite.realistic = True  # an unfinished predict job already shows items: the tap must not take them
    job = apis.cognite.add_predict_job(items=3, status="Distributing")
    assert apis.cognite._predict_body(apis.cognite.predict_jobs[job])["items"]
    tal = apis.talonic.add_job(status="queued", rows=2)
    config = apis.config(sources=("cognite", "talonic"))
    first = run_tap(config, check=True)
    assert not first.records("match_results")
    assert [r["item_count"] for r in first.records("entity_matching_jobs")] == [None]
    assert [r["finished"] for r in first.records("extraction_jobs")] == [False]

    apis.cognite.set_status(job, "Completed")
    apis.talonic.set_status(tal, "completed")
    second = run_tap(config, state=first.state, check=True)
    assert len(second.records("match_results")) == 3
    assert len(second.records("extraction_rows")) == 2


def test_a_failed_job_lands_once_and_is_never_fetched_again(apis):
    job = apis.cognite.add_predict_job(items=0, status="Failed", error_message="out of memory")
    config = apis.config(sources=("cognite",))
    first = run_tap(config, check=True)
    [record] = first.records("entity_matching_jobs")
    assert record["error_message"] == "out of memory" and record["finished"]
    apis.cognite.reset_counters()
    second = run_tap(config, state=first.state, check=True)
    assert not second.records("entity_matching_jobs")
    assert apis.cognite.requests(job) == 0


def test_start_date_ignores_older_jobs(apis):
    old, new = "2023-01-01T00:00:00Z", "2025-06-01T00:00:00Z"
    keep = [apis.clavata.add_job(results=1, created=new), apis.talonic.add_job(rows=1, created_at=new)]
    apis.clavata.add_job(results=1, created=old)
    apis.talonic.add_job(rows=1, created_at=old)
    pid = apis.cognite.add_pipeline()
    apis.cognite.add_run(pid, created_ms=1672531200000)  # 2023-01-01
    new_run = apis.cognite.add_run(pid, created_ms=1748736000000)  # 2025-06-01
    config = {**apis.config(), "start_date": "2024-01-01T00:00:00Z"}
    run = run_tap(config, check=True)
    assert [r["job_uuid"] for r in run.records("clavata_jobs")] == [keep[0]]
    assert [r["job_id"] for r in run.records("extraction_jobs")] == [keep[1]]
    assert [r["run_id"] for r in run.records("pipeline_runs")] == [new_run]


def test_a_run_listed_undated_is_held_to_start_date_by_its_details_and_not_fetched_again(apis):
    cdf = apis.cognite
    pid = cdf.add_pipeline()
    old = cdf.add_run(pid, matches=1, created_ms=1672531200000)  # 2023-01-01
    new = cdf.add_run(pid, matches=1, created_ms=1748736000000)  # 2025-06-01
    cdf.undated_in_listing.update({old, new})
    config = {**apis.config(sources=("cognite",)), "start_date": "2024-01-01T00:00:00Z"}
    config["cognite"]["pipeline_ids"] = [pid]
    first = run_tap(config, check=True)
    assert [r["run_id"] for r in first.records("pipeline_runs")] == [new]
    assert {r["run_id"] for r in first.records("pipeline_matches")} == {new}
    cdf.reset_counters()
    second = run_tap(config, state=first.state, check=True)
    assert second.records("pipeline_runs") == []
    assert cdf.requests(old) == cdf.requests(new) == 0  # both settled: the old one by its details


def test_a_pipeline_added_later_gets_its_full_history(apis):
    cdf = apis.cognite
    p1, p2 = cdf.add_pipeline(), cdf.add_pipeline()
    runs1 = [cdf.add_run(p1, matches=1) for _ in range(3)]
    runs2 = [cdf.add_run(p2, matches=1) for _ in range(4)]
    config = apis.config(sources=("cognite",))
    config["cognite"]["pipeline_ids"] = [p1]
    first = run_tap(config, check=True)
    assert sorted(r["run_id"] for r in first.records("pipeline_runs")) == sorted(runs1)

    config["cognite"]["pipeline_ids"] = [p1, p2]
    second = run_tap(config, state=first.state, check=True)
    assert sorted(r["run_id"] for r in second.records("pipeline_runs")) == sorted(runs2)
    assert {r["pipeline_id"] for r in second.records("pipeline_matches")} == {p2}


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_listing_order_does_not_matter(apis, order):
    cdf = apis.cognite
    cdf.runs_order = order
    apis.talonic.jobs_order = order
    pid = cdf.add_pipeline()
    for _ in range(250):  # three pages of runs
        cdf.add_run(pid, matches=0, suggested_rules=0, generated_rules=0)
    for _ in range(120):
        apis.talonic.add_job(rows=1)
    config = apis.config(sources=("cognite", "talonic"))
    first = run_tap(config, check=True)
    assert len(first.records("pipeline_runs")) == 250
    assert len(first.records("extraction_jobs")) == 120
    later = [cdf.add_run(pid, matches=0, suggested_rules=0, generated_rules=0) for _ in range(3)]
    second = run_tap(config, state=first.state, check=True)
    assert sorted(r["run_id"] for r in second.records("pipeline_runs")) == sorted(later)
    assert not second.records("extraction_jobs")


def test_state_stays_small_with_thousands_of_jobs(apis):
    cdf = apis.cognite
    pid = cdf.add_pipeline()
    for _ in range(700):
        cdf.add_run(pid, matches=1, suggested_rules=0, generated_rules=0)
    for _ in range(700):
        apis.clavata.add_job(results=1)
    for _ in range(600):
        apis.talonic.add_job(rows=1)
    config = {**apis.config(sources=("cognite", "clavata", "talonic")), "max_concurrent_requests": 16}
    first = run_tap(config, check=True)
    assert (
        len(first.records("pipeline_runs")) + len(first.records("clavata_jobs")) + len(first.records("extraction_jobs"))
        == 2000
    )
    size = len(json.dumps(first.state))
    assert size < 10_000, size

    for _ in range(200):
        cdf.add_run(pid, matches=1, suggested_rules=0, generated_rules=0)
        apis.clavata.add_job(results=1)
        apis.talonic.add_job(rows=1)
    second = run_tap(config, state=first.state, check=True)
    assert len(second.records("pipeline_runs")) == 200
    assert len(json.dumps(second.state)) <= size + 64  # same shape: a high-water mark per source


def _kill_after(config: dict, state: dict | None, n_records: int) -> list[dict]:
    """Run the tap, SIGKILL it once n_records RECORD lines were read, return what it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(config))
        argv = [TAP, "--config", str(cfg)]
        if state is not None:
            (Path(tmp) / "state.json").write_text(json.dumps(state))
            argv += ["--state", str(Path(tmp) / "state.json")]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tap_env(), stdin=subprocess.DEVNULL
        )
        lines, seen = [], 0
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode())
            if raw.startswith(b'{"type":"RECORD"') or b'"type": "RECORD"' in raw[:40]:
                seen += 1
                if seen >= n_records:
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=60)
        return parse_messages("".join(lines))


def test_a_killed_sync_resumes_from_its_last_state_without_loss(apis):
    populate(apis, unfinished=False)
    for _ in range(4):
        apis.cognite.add_predict_job(items=6, matches_per_item=2)
        apis.clavata.add_job(results=3)
        apis.talonic.add_job(rows=3)
    config = {**apis.config(), "max_concurrent_requests": 4}
    reference = run_tap(config, check=True)
    expected = {s: set(reference.keys(s)) for s in CONTRACT_KEYS if s != "sync_runs"}
    total = sum(len(v) for v in expected.values())
    assert total > 60

    for n in range(1, total, max(1, total // 15)):
        partial = _kill_after(config, None, n)
        states = [m["value"] for m in partial if m["type"] == "STATE"]
        resumed = run_tap(config, state=states[-1] if states else None, check=True)
        before = [m for m in partial if m["type"] == "RECORD" and m["stream"] != "sync_runs"]
        after = [m for m in resumed.messages if m["type"] == "RECORD" and m["stream"] != "sync_runs"]
        seen = collections.Counter()
        for message in before + after:
            stream, record = message["stream"], message["record"]
            seen[(stream, tuple(record[k] for k in CONTRACT_KEYS[stream]))] += 1
        for stream, keys in expected.items():
            missing = {k for k in keys if (stream, k) not in seen}
            assert not missing, f"kill after {n}: {stream} lost {sorted(missing)[:3]}"
        duplicated_jobs = {
            job_of(m["stream"], m["record"])
            for m in after
            if seen[(m["stream"], tuple(m["record"][k] for k in CONTRACT_KEYS[m["stream"]]))] > 1
        }
        assert len(duplicated_jobs) <= 1, f"kill after {n}: re-emitted {duplicated_jobs}"


def test_sigterm_exits_non_zero_with_a_clear_last_line(apis):
    for _ in range(40):
        apis.talonic.add_job(rows=2)
    apis.talonic.latency = 0.2
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps({**apis.config(sources=("talonic",)), "max_concurrent_requests": 1}))
        proc = subprocess.Popen(
            [TAP, "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tap_env()
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            if b'"RECORD"' in raw:
                break
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    last = [line for line in err.decode().splitlines() if line.strip()][-1]
    assert "Interrupted" in last and "resume" in last


def test_runs_listed_in_no_particular_order_are_never_skipped(apis):
    cdf = apis.cognite
    cdf.runs_order = "shuffled"
    pid = cdf.add_pipeline()
    for _ in range(150):
        cdf.add_run(pid, matches=0, suggested_rules=0, generated_rules=0)
    config = apis.config(cognite_auth="token", sources=("cognite",))
    first = run_tap(config, check=True)
    assert len(first.records("pipeline_runs")) == 150
    later = [cdf.add_run(pid, matches=0, suggested_rules=0, generated_rules=0) for _ in range(5)]
    second = run_tap(config, state=first.state, check=True)
    assert sorted(r["run_id"] for r in second.records("pipeline_runs")) == sorted(later)


def test_talonic_results_lagging_the_listing_keep_the_job_pending_until_the_grid_is_final(apis):
    # The listing says completed; the first results read still says processing (realistic fake).
    apis.talonic.realistic = True
    job = apis.talonic.add_job(status="completed", rows=3)
    config = apis.config(sources=("talonic",))
    first = run_tap(config, check=True)
    results = [r for r in apis.talonic.request_log if r["path"].endswith("/results")]
    assert len(results) == 1
    [record] = first.records("extraction_jobs")
    assert record["status"] == "completed" and record["finished"] is False
    early = {r["id"] for r in first.records("extraction_rows")}
    assert early and all(r["job_status"] == "processing" for r in first.records("extraction_rows"))

    second = run_tap(config, state=first.state, check=True)  # fetched again: now final
    assert apis.talonic.requests(job) == 2
    [record] = second.records("extraction_jobs")
    assert record["finished"] is True
    assert {r["id"] for r in second.records("extraction_rows")} == early  # same ids: upserts end final
    assert all(r["job_status"] == "complete" for r in second.records("extraction_rows"))

    third = run_tap(config, state=second.state, check=True)
    assert not third.records("extraction_rows") and apis.talonic.requests(job) == 2


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_a_late_job_inside_the_lookback_window_is_synced_exactly_once(apis):
    # A job that shows up in a listing after a newer one was bookmarked (eventually consistent listings,
    # a job committed late): created 2 minutes before the bookmark, inside the default 600 s window.
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    pid = cdf.add_pipeline()
    newest = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    cdf.add_run(pid, created_ms=_ms(newest), matches=1)
    clav.add_job(created=newest, results=1)
    tal.add_job(created_at=newest, rows=1)
    config = apis.config(sources=("cognite", "clavata", "talonic"))
    first = run_tap(config, check=True)
    assert len(first.records("pipeline_runs")) == len(first.records("clavata_jobs")) == 1

    late = newest - timedelta(minutes=2)
    late_run = cdf.add_run(pid, created_ms=_ms(late), matches=2)
    late_clavata = clav.add_job(created=late, results=2)
    late_talonic = tal.add_job(created_at=late, rows=2)
    second = run_tap(config, state=first.state, check=True)
    assert [r["run_id"] for r in second.records("pipeline_runs")] == [late_run]
    assert [r["job_uuid"] for r in second.records("clavata_jobs")] == [late_clavata]
    assert [r["job_id"] for r in second.records("extraction_jobs")] == [late_talonic]
    assert len(second.records("pipeline_matches")) == len(second.records("clavata_reports")) == 2
    assert len(second.records("extraction_rows")) == 2

    for vendor in (cdf, clav, tal):
        vendor.reset_counters()
    third = run_tap(config, state=second.state, check=True)
    assert sum(third.counts().values()) == 0
    assert cdf.requests(late_run) == clav.requests(late_clavata) == tal.requests(late_talonic) == 0


def test_a_future_dated_job_does_not_hide_the_jobs_created_after_it(apis):
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    pid = cdf.add_pipeline()
    future = datetime(2099, 1, 1, tzinfo=timezone.utc)
    cdf.add_run(pid, created_ms=_ms(future), matches=1)
    clav.add_job(created=future, results=1)
    tal.add_job(created_at=future, rows=1)
    config = apis.config(sources=("cognite", "clavata", "talonic"))
    first = run_tap(config, check=True)
    assert len(first.records("extraction_jobs")) == 1

    now = datetime.now(timezone.utc) + timedelta(seconds=5)  # created after the first run started
    new_run = cdf.add_run(pid, created_ms=_ms(now), matches=1)
    new_clavata = clav.add_job(created=now, results=1)
    new_talonic = tal.add_job(created_at=now, rows=1)
    second = run_tap(config, state=first.state, check=True)
    assert [r["run_id"] for r in second.records("pipeline_runs")] == [new_run]
    assert [r["job_uuid"] for r in second.records("clavata_jobs")] == [new_clavata]
    assert [r["job_id"] for r in second.records("extraction_jobs")] == [new_talonic]
