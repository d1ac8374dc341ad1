"""Faults injected in the fake APIs: ride through what is transient, stop clearly on what is not."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import BOTH_MODES, DATA_STREAMS, populate, run_tap

pytestmark = BOTH_MODES


def _records(run) -> dict[str, list]:
    return {s: sorted(json.dumps(r, sort_keys=True) for r in run.records(s)) for s in DATA_STREAMS}


def test_a_fifth_of_requests_failing_gives_the_same_records_as_a_clean_run(apis):
    populate(apis, unfinished=False)
    for _ in range(6):
        apis.cognite.add_predict_job(items=3)
        apis.clavata.add_job(results=2)
        apis.talonic.add_job(rows=2)
    config = {**apis.config(), "max_retries": 8, "max_retry_wait": 2}
    if apis.realistic:  # let Talonic's results catch up with its listing first: both runs then read the same
        run_tap(config, check=True)
    clean = run_tap(config, check=True)
    for vendor in (apis.cognite, apis.clavata, apis.talonic):
        vendor.chaos(rate=0.2, seed=7, kinds=("429", "503", "reset", "slow"))
    noisy = run_tap(config, check=True)
    assert _records(noisy) == _records(clean)
    assert "retry" in noisy.stderr.lower()


def test_retry_after_is_honoured(apis):
    job = apis.talonic.add_job(rows=1)
    apis.talonic.fail(rf"/v1/jobs/{job}/results", kind="status", status=429, times=1, headers={"Retry-After": "3"})
    started = time.monotonic()
    run = run_tap(apis.config(sources=("talonic",)), check=True)
    elapsed = time.monotonic() - started
    assert len(run.records("extraction_rows")) == 1
    match = re.search(r"retry 1 of \d+ in ([\d.]+) s", run.stderr)
    assert match and float(match.group(1)) == pytest.approx(3, abs=0.3), run.stderr[-1500:]
    assert elapsed >= 3


def test_exhausted_retries_leave_the_job_unbookmarked_and_exit_non_zero(apis):
    good = apis.clavata.add_job(results=1)
    bad = apis.clavata.add_job(results=2)
    apis.clavata.fail(rf"/v1/jobs/{bad}$", kind="status", status=503, times=None)
    config = {**apis.config(sources=("clavata",)), "max_retries": 2, "max_retry_wait": 0.2}
    first = run_tap(config)
    assert first.returncode == 1
    assert bad in first.stderr and "503" in first.stderr
    assert "Traceback" not in first.stderr
    assert {r["job_uuid"] for r in first.records("clavata_reports")} == {good}

    apis.clavata.clear_faults()
    apis.clavata.reset_counters()
    second = run_tap(config, state=first.state, check=True)
    assert {r["job_uuid"] for r in second.records("clavata_reports")} == {bad}
    assert apis.clavata.requests(good) == 0


@pytest.mark.parametrize("kind", ["truncated", "html", "wrongtype"])
def test_a_malformed_payload_names_the_job_and_is_not_bookmarked(apis, kind):
    job = apis.cognite.add_predict_job(items=3)
    apis.cognite.fail(rf"/jobs/{job}$", kind=kind, times=None)
    config = {**apis.config(sources=("cognite",)), "max_retries": 1, "max_retry_wait": 0.1}
    run = run_tap(config)
    assert run.returncode == 1
    assert f"CDF predict job {job}" in run.stderr
    assert "Traceback" not in run.stderr
    assert not run.records("match_results")
    finished = (run.state or {}).get("bookmarks", {}).get("entity_matching_jobs", {})
    assert str(job) not in json.dumps(finished)


def test_expiring_oauth_tokens_are_refreshed_before_they_expire(apis):
    apis.idp.expires_in = 2
    for _ in range(30):
        apis.cognite.add_predict_job(items=2)
    apis.cognite.latency = 0.15
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), "max_concurrent_requests": 2}
    run = run_tap(config, check=True)
    assert len(run.records("entity_matching_jobs")) == 30
    assert len(apis.idp.issued_tokens) >= 2
    assert not [r for r in apis.cognite.request_log if r.get("status") == 401]


@pytest.mark.parametrize("source", ["cognite", "cognite-token", "clavata", "talonic"])
def test_a_wrong_key_fails_clearly_and_leaks_no_secret(apis, source):
    # The fakes quote the refused credential in their 401 body (the IdP in error_description), so the
    # secret reaches the tap's error message and only its scrubbing keeps it out of the output.
    populate(apis, unfinished=False)
    config = apis.config(cognite_auth="token" if source == "cognite-token" else "oauth")
    if source == "cognite":
        config["cognite"]["client_secret"] = "wrong-client-secret-123"
    elif source == "cognite-token":
        config["cognite"]["token"] = "wrong-cdf-token-789"
        source = "cognite"
    else:
        config[source]["api_key"] = "wrong-api-key-456"
    run = run_tap(config)
    assert run.returncode == 1
    assert re.search(rf"{source}.*authentication failed|authentication failed.*{source}", run.stderr, re.I), run.stderr[
        -2000:
    ]
    output = run.stdout + run.stderr
    secrets = [
        config["cognite"].get("client_secret"),
        config["cognite"].get("token"),
        config["clavata"]["api_key"],
        config["talonic"]["api_key"],
        *apis.idp.issued_tokens,
        *(j.get("job_token") for j in config["cognite"].get("entity_matching_jobs", [])),
    ]
    for secret in filter(None, secrets):
        assert secret not in output, "a secret leaked"


def test_debug_logging_leaks_no_secret(apis):
    populate(apis, unfinished=False)
    config = {**apis.config(cognite_auth="oauth"), "max_retries": 1, "max_retry_wait": 0.1}
    apis.talonic.fail(
        r"/v1/jobs$",
        kind="status",
        status=400,
        times=None,
        body={"code": "validation_error", "message": f"bad key {config['talonic']['api_key']}"},
    )
    # A gateway that quotes the Authorization header it refused: the issued OAuth token is printed
    # unless the tap knows it as a secret.
    echoed = apis.cognite.add_predict_job(items=1)
    original = apis.cognite.get_predict_job

    def echoing(match, query, headers, form):
        if int(match["job"]) == echoed:
            return 400, {"error": {"code": 400, "message": f"refused {headers.get('Authorization')}"}}, {}
        return original(match, query, headers, form)

    apis.cognite.get_predict_job = echoing
    config["cognite"] = apis.config(cognite_auth="oauth")["cognite"]  # with the new job
    run = run_tap(config, env={"TAP_JOBRESULTS_LOGLEVEL": "DEBUG"})
    assert "DEBUG" in run.stderr or "debug" in run.stderr
    assert f"CDF predict job {echoed}" in run.stderr and "refused Bearer ***" in run.stderr, run.stderr[-2000:]
    output = run.stdout + run.stderr
    for secret in [
        config["talonic"]["api_key"],
        config["clavata"]["api_key"],
        config["cognite"]["client_secret"],
        *apis.idp.issued_tokens,
    ]:
        assert secret not in output


def test_a_revoked_oauth_token_is_refreshed_once_then_the_sync_goes_on(apis):
    jobs = [apis.cognite.add_predict_job(items=1) for _ in range(6)]
    apis.cognite.fail(rf"/jobs/{jobs[3]}$", kind="slow", delay=0.01, times=1)
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), "max_concurrent_requests": 1}
    config["cognite"]["pipeline_ids"] = []
    # Revoke every token as soon as the third job has been served.
    original = apis.cognite.get_predict_job

    def revoking(match, query, headers, form):
        response = original(match, query, headers, form)
        if int(match["job"]) == jobs[2]:
            apis.idp.revoke_all()
        return response

    apis.cognite.get_predict_job = revoking
    run = run_tap(config, check=True)
    assert len(run.records("entity_matching_jobs")) == 6
    assert len(apis.idp.issued_tokens) == 2
    assert [r["status"] for r in apis.cognite.request_log].count(401) == 1


def test_a_configured_predict_job_that_does_not_exist_is_a_warning(apis):
    real = apis.cognite.add_predict_job(items=2)
    config = apis.config(cognite_auth="token", sources=("cognite",))
    config["cognite"]["entity_matching_jobs"].append({"job_id": 999})
    config["cognite"]["pipeline_ids"] = []
    first = run_tap(config, check=True)
    assert [r["job_id"] for r in first.records("entity_matching_jobs")] == [real]
    assert re.search(r"WARNING.*CDF predict job 999.*404", first.stderr), first.stderr[-1500:]
    assert ["999", "missing"] in first.state["bookmarks"]["entity_matching_jobs"]["job_bookmarks"]["all"]["finished"]
    apis.cognite.reset_counters()
    run_tap(config, state=first.state, check=True)
    assert apis.cognite.requests(999) == 0


def test_a_talonic_error_that_says_not_retryable_is_not_retried(apis):
    job = apis.talonic.add_job(rows=1)
    apis.talonic.fail(
        rf"/v1/jobs/{job}/results",
        kind="status",
        status=503,
        times=None,
        body={
            "statusCode": 503,
            "code": "EXTRACTION_UNAVAILABLE",
            "message": "job archived",
            "retryable": False,
            "request_id": "req_abc123",
        },
    )
    run = run_tap({**apis.config(sources=("talonic",)), "max_retries": 3})
    assert run.returncode == 1
    assert sum(r["path"].endswith(f"{job}/results") for r in apis.talonic.request_log) == 1
    assert "req_abc123" in run.stderr and "EXTRACTION_UNAVAILABLE" in run.stderr


def test_cdf_auto_retryable_errors_are_retried(apis):
    job = apis.cognite.add_predict_job(items=2)
    apis.cognite.fail(rf"/jobs/{job}$", kind="status", status=409, times=1, headers={"cdf-is-auto-retryable": "true"})
    config = {**apis.config(cognite_auth="token", sources=("cognite",)), "max_retry_wait": 0.2}
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True)
    assert len(run.records("match_results")) == 2
    assert sum(r["path"].endswith(f"/jobs/{job}") for r in apis.cognite.request_log) == 2


@pytest.mark.parametrize("form", ["epoch", "iso"])
def test_talonic_rate_limit_reset_is_honoured_without_retry_after(apis, form):
    # The reset lies 3 s after the 429; the first unhinted backoff is at most 1 s, so only honouring it passes.
    def reset() -> str:
        moment = time.time() + 3
        if form == "epoch":
            return str(math.ceil(moment))
        return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    job = apis.talonic.add_job(rows=1)
    apis.talonic.fail(
        rf"/v1/jobs/{job}/results", kind="status", status=429, times=1, headers={"X-RateLimit-Reset": reset}
    )
    apis.talonic.realistic = True  # no Retry-After on any 429
    run = run_tap(apis.config(sources=("talonic",)), check=True)
    calls = [r for r in apis.talonic.request_log if r["path"].endswith(f"/{job}/results")]
    assert [c["status"] for c in calls] == [429, 200], calls
    assert calls[1]["time"] - calls[0]["time"] >= 2.9, "retried before X-RateLimit-Reset"
    match = re.search(r"retry 1 of \d+ in ([\d.]+) s", run.stderr)
    assert match and 2.5 <= float(match.group(1)) <= 4.5, run.stderr[-1500:]


def test_the_token_endpoint_is_retried_like_any_other_call(apis):
    apis.cognite.add_predict_job(items=1)
    apis.idp.fail(r"/oauth2/token", kind="status", status=503, times=2)
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), "max_retry_wait": 0.2}
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True)
    assert len(run.records("entity_matching_jobs")) == 1
    assert [r["status"] for r in apis.idp.request_log] == [503, 503, 200]


def test_a_listed_talonic_job_whose_results_404_keeps_its_job_record(apis):
    failed = apis.talonic.add_job(status="failed", rows=0)
    apis.talonic.fail(rf"/v1/jobs/{failed}/results", kind="status", status=404, times=None)
    first = run_tap(apis.config(sources=("talonic",)), check=True)
    [job] = first.records("extraction_jobs")
    assert job["job_id"] == failed and job["error_code"] == "extraction_failed"
    assert not first.records("extraction_rows")


def test_one_refused_job_does_not_stop_the_others(apis):
    jobs = [apis.cognite.add_predict_job(items=1, job_token=f"job-token-{n}") for n in range(3)]
    config = apis.config(cognite_auth="token", sources=("cognite",))
    config["cognite"]["pipeline_ids"] = []
    config["cognite"]["entity_matching_jobs"][0]["job_token"] = "stale-job-token"
    run = run_tap(config)
    assert run.returncode == 1
    assert sorted(r["job_id"] for r in run.records("entity_matching_jobs")) == jobs[1:]
    assert f"CDF predict job {jobs[0]}" in run.stderr and "403" in run.stderr
    assert "stale-job-token" not in run.stdout + run.stderr


@pytest.mark.parametrize(
    "section",
    [
        {"api_key": "tlnc_test_pasted-with-newline\n"},
        {"api_key": ["tlnc_test_in-a-list-by-mistake"]},
    ],
)
def test_a_malformed_secret_is_named_but_never_printed(apis, section):
    config = {"talonic": {"base_url": apis.talonic.base_url, **section}}
    run = run_tap(config)
    assert run.returncode == 1
    assert "talonic" in run.stderr and "api_key" in run.stderr
    assert "pasted-with-newline" not in run.stderr and "in-a-list-by-mistake" not in run.stderr
    assert "Traceback" not in run.stderr
