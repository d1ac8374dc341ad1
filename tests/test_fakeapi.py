"""The fake APIs themselves: if they drift from the documented behaviour, every tap test drifts with them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT

CDF = "/api/v1/projects/fakeproject/context/entitymatching"
BETA = {"cdf-version": "20230101-beta"}
# Known bugs in the fake, fixed by the patch handed over with these tests. Strict: once the fix is in,
# these XPASS, fail the run, and the mark must go.


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def _pages(http, url, headers, params, items_key, next_of, cursor_param):
    """Follow a vendor's cursor to the end; returns every page's items in order."""
    seen, cursor = [], None
    while True:
        response = http.get(url, headers=headers, params={**params, **({cursor_param: cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body[items_key]
        cursor = next_of(body)
        if not cursor:
            return seen


@pytest.mark.parametrize("order", ["desc", "asc", "shuffled"])
def test_cdf_run_pages_cover_every_run_exactly_once(apis, http, order):
    cdf = apis.cognite
    cdf.runs_order = order
    pid = cdf.add_pipeline()
    runs = [cdf.add_run(pid, status=status) for status in ("Completed", "Failed", "Running") * 3]
    seen = _pages(
        http,
        f"{cdf.base_url}{CDF}/pipelines/{pid}/runs",
        {**bearer(cdf.static_token), **BETA},
        {"limit": 2},
        "items",
        lambda b: b["nextCursor"],
        "cursor",
    )
    assert sorted(r["jobId"] for r in seen) == sorted(runs)
    assert len(seen) == len(runs)
    if order == "desc":
        assert [r["jobId"] for r in seen] == runs[::-1]


def test_clavata_and_talonic_pages_cover_every_job_exactly_once(apis, http):
    clav, tal = apis.clavata, apis.talonic
    statuses = ("JOB_STATUS_COMPLETED", "JOB_STATUS_RUNNING", "JOB_STATUS_FAILED")
    clavata_jobs = [clav.add_job(status=s) for s in statuses * 3]
    talonic_jobs = [tal.add_job(status=s) for s in ("completed", "processing", "failed", "queued") * 2]
    seen = _pages(
        http,
        f"{clav.base_url}/v1/jobs",
        bearer(clav.api_key),
        {"pageSize": 4},
        "jobs",
        lambda b: b["nextPageToken"],
        "pageToken",
    )
    assert sorted(j["jobUuid"] for j in seen) == sorted(clavata_jobs)
    seen = _pages(
        http,
        f"{tal.base_url}/v1/jobs",
        bearer(tal.api_key),
        {"limit": 3},
        "data",
        lambda b: b["pagination"]["next_cursor"],
        "cursor",
    )
    assert sorted(j["id"] for j in seen) == sorted(talonic_jobs)
    assert len(seen) == len(talonic_jobs)


def test_requests_without_a_token_get_each_vendors_401(apis, http):
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    job = cdf.add_predict_job()
    response = http.get(f"{cdf.base_url}{CDF}/jobs/{job}")
    assert response.status_code == 401 and response.json()["error"]["code"] == 401
    assert response.headers["x-request-id"]
    response = http.get(f"{clav.base_url}/v1/jobs", headers=bearer("not-the-key"))
    assert response.status_code == 401 and response.json()["code"] == 16
    response = http.get(f"{tal.base_url}/v1/jobs")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized" and response.json()["retryable"] is False
    assert "X-RateLimit-Remaining" in response.headers
    assert cdf.requests(job) == 0


def test_a_fault_fires_exactly_times_times(apis, http):
    clav = apis.clavata
    job = clav.add_job(results=2)
    clav.fail(rf"/v1/jobs/{job}$", status=503, times=2)
    statuses = [http.get(f"{clav.base_url}/v1/jobs/{job}", headers=bearer(clav.api_key)).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert clav.requests(job) == 2  # only the requests that were served count
    assert [entry["status"] for entry in clav.request_log] == statuses


def test_a_truncated_body_is_an_incomplete_read_and_the_next_request_succeeds(apis, http):
    cdf = apis.cognite
    job = cdf.add_predict_job(items=20)
    cdf.fail(rf"/jobs/{job}$", kind="truncated")
    url, headers = f"{cdf.base_url}{CDF}/jobs/{job}", bearer(cdf.static_token)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(url, headers=headers)
    assert len(http.get(url, headers=headers).json()["items"]) == 20


def test_tokens_are_accepted_until_they_expire(apis, http):
    idp, cdf = apis.idp, apis.cognite
    job = cdf.add_predict_job()
    form = {
        "grant_type": "client_credentials",
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "scope": "https://fake/.default",
    }
    token = http.post(idp.token_url, data=form).json()["access_token"]
    assert http.get(f"{cdf.base_url}{CDF}/jobs/{job}", headers=bearer(token)).status_code == 200
    idp.expires_in = 0  # issued already expired: no sleeping
    stale = http.post(idp.token_url, data=form).json()["access_token"]
    assert http.get(f"{cdf.base_url}{CDF}/jobs/{job}", headers=bearer(stale)).status_code == 401
    wrong = http.post(idp.token_url, data={**form, "client_secret": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert idp.issued_tokens == [token, stale]
    assert idp.token_requests[0] == form


def test_cdf_job_token_and_beta_header_are_enforced(apis, http):
    cdf = apis.cognite
    job = cdf.add_predict_job(job_token="secret-job-token")
    pid = cdf.add_pipeline()
    headers = bearer(cdf.static_token)
    job_url, pipeline_url = f"{cdf.base_url}{CDF}/jobs/{job}", f"{cdf.base_url}{CDF}/pipelines/{pid}"
    assert http.get(job_url, headers={**headers, "X-Job-Token": "wrong"}).status_code == 403
    assert http.get(job_url, headers={**headers, "X-Job-Token": "secret-job-token"}).status_code == 200
    assert http.get(pipeline_url, headers=headers).status_code == 400
    assert http.get(pipeline_url, headers={**headers, "cdf-version": "beta"}).status_code == 200
    missing = http.get(f"{cdf.base_url}{CDF}/jobs/12345", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["missing"] == [{"id": 12345}]


def test_unfinished_jobs_have_no_results_until_finished(apis, http):
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    job = cdf.add_predict_job(items=5, status="Running")
    uuid = clav.add_job(status="JOB_STATUS_PENDING")
    tid = tal.add_job(status="processing", rows=4)

    def fetch():
        predict = http.get(f"{cdf.base_url}{CDF}/jobs/{job}", headers=bearer(cdf.static_token)).json()
        clavata = http.get(f"{clav.base_url}/v1/jobs/{uuid}", headers=bearer(clav.api_key)).json()["job"]
        rows = http.get(f"{tal.base_url}/v1/jobs/{tid}/results", headers=bearer(tal.api_key)).json()
        return predict, clavata, rows

    predict, clavata, rows = fetch()
    assert predict["items"] == [] and "results" not in clavata and "completed" not in clavata
    assert rows["job_status"] == "processing" and rows["total_rows"] < 4
    for vendor in (cdf, clav, tal):
        vendor.finish_all()
    predict, clavata, rows = fetch()
    assert predict["status"] == "Completed" and len(predict["items"]) == 5
    assert clavata["status"] == "JOB_STATUS_COMPLETED" and len(clavata["results"]) == 3
    assert rows["job_status"] == "complete" and rows["total_rows"] == 4


def test_clavata_reports_match_their_content_and_job(apis, http):
    clav = apis.clavata
    job = http.get(f"{clav.base_url}/v1/jobs/{clav.add_job(results=3)}", headers=bearer(clav.api_key)).json()["job"]
    assert [c["contentHash"] for c in job["contentData"]] == [r["report"]["contentHash"] for r in job["results"]]
    assert {r["report"]["policyVersionId"] for r in job["results"]} == {job["policyVersionId"]}


def test_bad_query_values_get_a_400_envelope_not_a_dropped_connection(apis, http):
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    pid = cdf.add_pipeline()
    response = http.get(
        f"{cdf.base_url}{CDF}/pipelines/{pid}/runs",
        params={"cursor": "forged"},
        headers={**bearer(cdf.static_token), **BETA},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == 400
    response = http.get(f"{clav.base_url}/v1/jobs", params={"pageToken": "forged"}, headers=bearer(clav.api_key))
    assert response.status_code == 400 and response.json()["code"] == 3
    response = http.get(f"{tal.base_url}/v1/jobs", params={"limit": 501}, headers=bearer(tal.api_key))
    assert response.status_code == 400 and response.json()["code"] == "validation_error"


def test_keep_alive_responses_are_not_delayed(apis, http):
    cdf = apis.cognite
    url, headers = f"{cdf.base_url}{CDF}/jobs/{cdf.add_predict_job(items=2)}", bearer(cdf.static_token)
    http.get(url, headers=headers)
    started = time.perf_counter()
    for _ in range(20):
        http.get(url, headers=headers)
    # Nagle + delayed ACK would add ~40 ms to each; latency must be what tests set, nothing more.
    assert (time.perf_counter() - started) / 20 < 0.015


def test_serve_writes_a_config_and_stops_on_sigterm(tmp_path):
    config_path = tmp_path / "config.json"
    argv = [sys.executable, "-m", "tests.fakeapi", "serve", "--scenario", "demo", "--config-out", str(config_path)]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().strip() == "fake APIs ready"
        config = json.loads(config_path.read_text())
        assert {"cognite", "clavata", "talonic"} <= set(config)
        talonic = config["talonic"]
        response = requests.get(f"{talonic['base_url']}/v1/jobs", headers=bearer(talonic["api_key"]), timeout=5)
        assert response.status_code == 200 and response.json()["data"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
