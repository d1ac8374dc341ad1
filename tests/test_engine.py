"""The sync engine (issue 18): one guard per job, by construction; a body about another job; no
credential in a record; STATE volume; stdout ends on a whole message when interrupted.

Every case runs the real tap binary against the fake APIs, with one response made hostile through
the fakes' fault injection (a 200 with a body of our choosing); the other jobs of the world must
still be synced, the hostile one named, not bookmarked, and synced once a repaired server answers.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import TAP, parse_messages, run_tap, tap_env

FAST = {"max_retries": 0, "max_retry_wait": 0.2}


def _no_traceback(run) -> None:
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


def _talonic_world(apis, jobs: int = 3) -> list[str]:
    return [apis.talonic.add_job(rows=2) for _ in range(jobs)]


def _talonic_results(apis, job: str) -> dict:
    return apis.talonic._results(apis.talonic.jobs[job])


def _rows_of(run) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in run.records("extraction_rows"):
        counts[record["job_id"]] = counts.get(record["job_id"], 0) + 1
    return counts


# -- one bad value is one job's failure -----------------------------------------------------------


def _with_row_value(body: dict, raw_value: bytes) -> bytes:
    """The results body with the first row's `values.note` set to a raw JSON fragment."""
    body = json.loads(json.dumps(body))
    body["data"][0]["values"]["note"] = "__HOSTILE__"
    return json.dumps(body).encode().replace(b'"__HOSTILE__"', raw_value)


POISON_ROWS = {
    "invalid UTF-8": b'"caf\xe9 \xff\xfe"',
    "number past the float range": b"1e400",
    "integer past the float range": b"1" + b"0" * 400,
    "nesting past the decoder": b"[" * 5000 + b"]" * 5000,
    "nesting past the record limit": b'{"a":' * 150 + b"1" + b"}" * 150,
}


@pytest.mark.parametrize("case", list(POISON_ROWS))
def test_a_poison_value_in_a_result_row_fails_that_job_alone(apis, case):
    good = _talonic_world(apis, 2)
    bad = apis.talonic.add_job(rows=2)
    body = _with_row_value(_talonic_results(apis, bad), POISON_ROWS[case])
    apis.talonic.fail(rf"/v1/jobs/{bad}/results$", status=200, body=body, times=None)
    clavata = apis.clavata.add_job(results=2)
    config = {**apis.config(sources=("talonic", "clavata")), **FAST}
    run = run_tap(config)
    _no_traceback(run)
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} == {clavata}
    assert set(_rows_of(run)) >= set(good)
    assert run.returncode == 1, run.stderr[-2000:]
    assert re.search(rf"Talonic job {bad}.*stays unsynced", run.stderr), run.stderr[-2000:]
    assert bad not in _rows_of(run), "no record of the failed job is written"
    assert bad not in {r["job_id"] for r in run.records("extraction_jobs")}
    # Fetched and emitted whole again, once, when the server answers properly.
    apis.talonic.clear_faults()
    again = run_tap(config, state=run.state)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _rows_of(again) == {bad: 2}


POISON_LISTINGS = {
    "nesting past the decoder": lambda page: page.replace(
        b'"data":', b'"deep":' + b"[" * 5000 + b"]" * 5000 + b',"data":'
    ),
    "cursor that is an object": lambda page: page.replace(b'"next_cursor": null', b'"next_cursor": {"a": 1}').replace(
        b'"has_more": false', b'"has_more": true'
    ),
    "cursor that is an array": lambda page: page.replace(b'"next_cursor": null', b'"next_cursor": [1]').replace(
        b'"has_more": false', b'"has_more": true'
    ),
    "invalid UTF-8": lambda page: page.replace(b'"pagination"', b'"junk": "\xff\xfe", "pagination"'),
}


@pytest.mark.parametrize("case", list(POISON_LISTINGS))
def test_a_poison_listing_fails_its_source_alone(apis, case):
    _talonic_world(apis, 2)
    clavata = apis.clavata.add_job(results=2)
    page = json.dumps(apis.talonic.list_jobs(None, {"limit": ["100"]}, {}, {})[1]).encode()
    apis.talonic.fail(r"/v1/jobs$", status=200, body=POISON_LISTINGS[case](page), times=None)
    config = {**apis.config(sources=("talonic", "clavata")), **FAST}
    run = run_tap(config)
    _no_traceback(run)
    assert run.returncode == 1, run.stderr[-2000:]
    assert re.search(r"listing Talonic jobs.*talonic is retried next run", run.stderr), run.stderr[-2000:]
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} == {clavata}


def test_a_listed_time_that_overflows_utc_is_not_a_poison_pill(apis):
    good = apis.clavata.add_job(results=1)
    odd = apis.clavata.add_job(results=1)
    page = apis.clavata.list_jobs(None, {}, {}, {})[1]
    for job in page["jobs"]:
        if job["jobUuid"] == odd:
            job["created"] = "0001-01-01T00:00:00+05:00"
    apis.clavata.fail(r"/v1/jobs$", status=200, body=page, times=None)
    run = run_tap({**apis.config(sources=("clavata",)), **FAST})
    _no_traceback(run)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} == {good, odd}


# -- a body about another job ---------------------------------------------------------------------


def test_a_body_about_another_job_is_a_failed_fetch_for_every_job_kind(apis):
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    predict, other_predict = cdf.add_predict_job(items=2), cdf.add_predict_job(items=2)
    pid = cdf.add_pipeline()
    run_id, other_run = cdf.add_run(pid, matches=2), cdf.add_run(pid, matches=2)
    clav_job, other_clav = clav.add_job(results=2), clav.add_job(results=2)
    tal_job, other_tal = tal.add_job(rows=2), tal.add_job(rows=2)
    cdf.fail(rf"/jobs/{predict}$", status=200, body=cdf._predict_body(cdf.predict_jobs[other_predict]), times=None)
    cdf.fail(rf"/runs/{run_id}$", status=200, body=cdf._run_body(cdf.runs[pid][other_run]), times=None)
    clav.fail(rf"/v1/jobs/{clav_job}$", status=200, body={"job": clav._job(clav.jobs[other_clav], True)}, times=None)
    tal.fail(rf"/v1/jobs/{tal_job}/results$", status=200, body=_talonic_results(apis, other_tal), times=None)
    config = {**apis.config(), **FAST}
    run = run_tap(config)
    _no_traceback(run)
    assert run.returncode == 1
    for source, label in (
        ("cognite", f"CDF predict job {predict}"),
        ("cognite", f"CDF pipeline {pid} run {run_id}"),
        ("clavata", f"Clavata job {clav_job}"),
        ("talonic", f"Talonic job {tal_job} results"),
    ):
        expected = rf"{source}: {re.escape(label)} returned a malformed payload: the body is about another job \("
        assert re.search(expected, run.stderr), [line for line in run.stderr.splitlines() if label in line]
    assert [r["job_id"] for r in run.records("entity_matching_jobs")] == [other_predict]
    assert [r["run_id"] for r in run.records("pipeline_runs")] == [other_run]
    assert [r["job_uuid"] for r in run.records("clavata_jobs")] == [other_clav]
    assert set(_rows_of(run)) == {other_tal}
    # Nothing bookmarked for the requested jobs: a repaired server gives them, once.
    for server in (cdf, clav, tal):
        server.clear_faults()
    again = run_tap(config, state=run.state, check=True)
    assert [r["job_id"] for r in again.records("entity_matching_jobs")] == [predict]
    assert [r["run_id"] for r in again.records("pipeline_runs")] == [run_id]
    assert [r["job_uuid"] for r in again.records("clavata_jobs")] == [clav_job]
    assert set(_rows_of(again)) == {tal_job}


# -- no credential in a record --------------------------------------------------------------------


def test_no_configured_secret_or_echoed_credential_reaches_a_record(apis):
    tal, cdf = apis.talonic, apis.cognite
    echo = tal.add_job(rows=2)
    plain = tal.add_job(rows=2)
    body = _talonic_results(apis, echo)
    for row in body["data"]:
        row["values"]["note"] = f"called with key {tal.api_key} ok"
        row["request"] = {"headers": {"X-Job-Token": "vendor-issued-token-1", "Authorization": f"Bearer {tal.api_key}"}}
        row["values"][tal.api_key] = "a secret as a key"
        # The document's own fields named like credentials are data; a protocol credential is not.
        row["values"]["Password"] = "the form's password field"
        row["values"]["token"] = "T-1234 (a raffle ticket)"
        row["values"]["access_token"] = "vendor-issued-token-2"
        row["token"] = "vendor-issued-token-3"
    tal.fail(rf"/v1/jobs/{echo}/results$", status=200, body=body, times=None)
    job = cdf.add_predict_job(items=2, job_token="job-token-secret-xyz")
    predict = cdf._predict_body(cdf.predict_jobs[job])
    predict["jobToken"] = "job-token-secret-xyz"
    predict["items"][0]["source"]["description"] = f"token {cdf.static_token}"
    predict["items"][1]["matches"] = [{"score": 0.5, "target": {"job_token": "another-vendor-token"}}]
    cdf.fail(rf"/jobs/{job}$", status=200, body=predict, times=None)
    config = {**apis.config(cognite_auth="token", sources=("talonic", "cognite")), **FAST}
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True)
    for secret in (
        tal.api_key,
        cdf.static_token,
        "job-token-secret-xyz",
        "vendor-issued-token-1",
        "vendor-issued-token-2",
        "vendor-issued-token-3",
        "another-vendor-token",
    ):
        assert secret not in run.stdout, secret
        assert secret not in run.stderr, secret
    rows = [r for r in run.records("extraction_rows") if r["job_id"] == echo]
    assert len(rows) == 2 and all(r["values"]["note"] == "called with key *** ok" for r in rows)
    assert all("***" in r["values"] for r in rows)
    assert all(r["values"]["Password"] == "the form's password field" for r in rows)
    assert all(r["values"]["token"] == "T-1234 (a raffle ticket)" for r in rows)
    assert _rows_of(run)[plain] == 2
    # Warned once per stream and field, never per record.
    warnings = [line for line in run.stderr.splitlines() if "held a credential" in line]
    assert any("extraction_rows" in w and "values.note" in w for w in warnings), warnings
    assert len(warnings) == len(set(warnings)), warnings
    assert sum("values.note" in w for w in warnings) == 1


# -- signals ---------------------------------------------------------------------------------------


def _interrupted_run(config_path: Path, sig: int) -> tuple[int, bytes]:
    """The tap with a slow reader on stdout, interrupted mid-run; returns its exit code and output."""
    proc = subprocess.Popen(
        [TAP, "--config", str(config_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tap_env()
    )
    assert proc.stdout is not None
    out = bytearray()
    deadline = time.monotonic() + 60
    while b'"RECORD"' not in out and time.monotonic() < deadline:
        out += proc.stdout.read(4096)
    proc.send_signal(sig)
    while chunk := proc.stdout.read(512):  # a slow reader: the tap blocks on a full pipe
        out += chunk
        time.sleep(0.001)
    proc.wait(timeout=60)
    return proc.returncode, bytes(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_ends_on_a_whole_message_and_a_state(apis, sig):
    for _ in range(30):
        apis.cognite.add_predict_job(items=400, matches_per_item=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        config = {**apis.config(cognite_auth="token", sources=("cognite",)), "max_concurrent_requests": 4}
        config["cognite"]["pipeline_ids"] = []
        path.write_text(json.dumps(config))
        for attempt in range(4):
            code, out = _interrupted_run(path, sig)
            assert code == 128 + sig, (attempt, code)
            assert out.endswith(b"\n"), (attempt, out[-200:])
            messages = parse_messages(out.decode())
            assert messages[-1]["type"] == "STATE", (attempt, messages[-1]["type"])


def test_a_result_time_that_overflows_utc_is_never_a_traceback(apis):
    good, odd = apis.clavata.add_job(results=2), apis.clavata.add_job(results=2)
    body = {"job": apis.clavata._job(apis.clavata.jobs[odd], True)}
    body["job"]["results"][0]["created"] = "9999-12-31T23:59:59-05:00"
    apis.clavata.fail(rf"/v1/jobs/{odd}$", status=200, body=body, times=None)
    talonic = apis.talonic.add_job(rows=1)
    run = run_tap({**apis.config(sources=("clavata", "talonic")), **FAST})
    _no_traceback(run)
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} >= {good}
    assert _rows_of(run) == {talonic: 1}
    reports = {r["job_uuid"] for r in run.records("clavata_reports")}
    assert odd in reports or (run.returncode == 1 and f"Clavata job {odd}" in run.stderr)


# -- memory ------------------------------------------------------------------------------------------


def _peak_rss(config: dict) -> tuple[int, int]:
    """Peak RSS (bytes, VmHWM polled from /proc: getrusage's ru_maxrss would start at the size of
    this test process, which serves the big bodies) and exit code of one tap run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        proc = subprocess.Popen(
            [TAP, "--config", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tap_env()
        )
        peak = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                break
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                peak = max(peak, int(match.group(1)) * 1024)
            time.sleep(0.01)
        proc.wait(timeout=300)
    return peak, proc.returncode


def test_bodies_in_flight_are_bounded_by_bytes_not_by_the_fetch_width(apis):
    """Eight jobs of about 8 MiB each: fetched eight at a time, they would all be held at once."""
    for _ in range(8):
        apis.cognite.add_predict_job(items=25_000, matches_per_item=2)
    config = {**apis.config(cognite_auth="token", sources=("cognite",)), "max_response_mb": 10}
    config["cognite"]["pipeline_ids"] = []
    narrow, code = _peak_rss({**config, "max_concurrent_requests": 1})
    assert code == 0
    wide, code = _peak_rss({**config, "max_concurrent_requests": 8})
    assert code == 0
    mib = 1 << 20
    # One job of this size peaks at about 60 MiB over the tap's own; eight at once would add 400 MiB. With the
    # byte budget the width adds what the threads keep of the memory they freed, not jobs in flight.
    assert wide - narrow < 160 * mib, (narrow // mib, wide // mib)


# -- a job too big to hold its records in memory (guard.Lines spills them to a file) ------------------------


def _big_talonic_job(apis, rows: int = 40_000) -> tuple[str, dict]:
    job = apis.talonic.add_job(rows=rows)
    return job, _talonic_results(apis, job)


def test_a_job_whose_records_spill_to_disk_lands_whole_and_checked(apis):
    from tap_jobresults.guard import Lines

    job, body = _big_talonic_job(apis)
    config = {**apis.config(sources=("talonic",)), **FAST}
    secret = config["talonic"]["api_key"]
    # The configured key, echoed in the first row: that row's line leaves memory long before the job is checked.
    apis.talonic.fail(
        rf"/v1/jobs/{job}/results$",
        status=200,
        body=_with_row_value(body, json.dumps(f"k={secret}").encode()),
        times=None,
    )
    run = run_tap(config)
    _no_traceback(run)
    assert run.returncode == 0, run.stderr[-2000:]
    written = [line for line in run.stdout.splitlines() if '"stream":"extraction_rows"' in line]
    assert sum(len(line) + 1 for line in written) > Lines.SPILL  # the job's records did go to the file
    rows = run.records("extraction_rows")
    assert len(rows) == len(body["data"]) and len({r["id"] for r in rows}) == len(rows)
    assert secret not in run.stdout
    assert rows[0]["values"]["note"] == "k=***"


def test_a_poison_value_early_in_a_spilled_job_fails_that_job_alone(apis):
    job, body = _big_talonic_job(apis)
    good = apis.talonic.add_job(rows=2)
    apis.talonic.fail(
        rf"/v1/jobs/{job}/results$", status=200, body=_with_row_value(body, b"1" + b"0" * 400), times=None
    )
    run = run_tap({**apis.config(sources=("talonic",)), **FAST})
    _no_traceback(run)
    assert run.returncode == 1, run.stderr[-2000:]
    assert re.search(rf"Talonic job {job}.*stays unsynced", run.stderr), run.stderr[-2000:]
    assert _rows_of(run) == {good: 2}, "no record of the failed job is written"
