"""Hostile and broken servers (issue 10, HTTP side): bounded time, bounded memory, no credential off its host.

Each case puts an adversarial server (tests/hostile) in front of or beside the fake APIs and runs the
real tap binary: the failing job is named, the run exits 1, the other jobs are synced, and nothing
secret reaches the second host (127.0.0.2) or the output.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import run_tap
from tests.hostile import (
    HostileServer,
    answer,
    big_body,
    gzip_bomb,
    redirect,
    run_tap_under,
    self_signed_cert,
    trickle,
)

FAST = {"max_retries": 1, "max_retry_wait": 0.2}


def _talonic(apis, front: HostileServer) -> dict:
    config = apis.config(sources=("talonic",))
    config["talonic"]["base_url"] = front.url
    return {**config, **FAST}


def _rows(run) -> set[str]:
    return {r["job_id"] for r in run.records("extraction_rows")}


def _assert_no_credential(catcher: HostileServer, *secrets: str) -> None:
    for seen in catcher.requests:
        assert seen.header("Authorization") is None, seen
        assert seen.header("X-Job-Token") is None, seen
        dump = json.dumps(seen.headers) + seen.path + seen.body.decode(errors="replace")
        for secret in secrets:
            assert secret not in dump
    assert not catcher.requests, [r.path for r in catcher.requests]


# -- redirects ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_another_host_carries_no_credential(apis, status):
    good, bad = apis.talonic.add_job(rows=2), apis.talonic.add_job(rows=3)
    good_predict, bad_predict = (
        apis.cognite.add_predict_job(items=2),
        apis.cognite.add_predict_job(items=2, job_token="job-token-for-the-bad-job"),
    )
    with (
        HostileServer(host="127.0.0.2") as catcher,
        HostileServer(upstream=apis.talonic.base_url) as talonic,
        HostileServer(upstream=apis.cognite.base_url) as cognite,
    ):
        talonic.on(rf"/v1/jobs/{bad}", redirect(status, f"{catcher.url}/v1/jobs/{bad}"))
        cognite.on(rf"/jobs/{bad_predict}$", redirect(status, f"{catcher.url}/jobs/{bad_predict}"))
        config = {**apis.config(cognite_auth="oauth", sources=("cognite", "talonic")), **FAST}
        config["talonic"]["base_url"] = talonic.url
        config["cognite"]["base_url"] = cognite.url
        config["cognite"]["pipeline_ids"] = []
        run = run_tap(config, timeout=120)
    _assert_no_credential(
        catcher, apis.talonic.api_key, apis.idp.client_secret, "job-token-for-the-bad-job", *apis.idp.issued_tokens
    )
    assert run.returncode == 1, run.stderr[-2000:]
    host = catcher.url.removeprefix("http://")
    assert re.search(rf"Talonic job {bad}.*redirected \(HTTP {status}\) to http://{host}", run.stderr), run.stderr
    assert re.search(rf"CDF predict job {bad_predict}.*redirected \(HTTP {status}\)", run.stderr), run.stderr
    assert "redirects are not followed" in run.stderr and "Traceback" not in run.stderr
    assert _rows(run) == {good}
    assert {r["job_id"] for r in run.records("entity_matching_jobs")} == {good_predict}


def test_an_oauth_token_url_redirect_is_not_followed(apis):
    apis.cognite.add_predict_job(items=2)
    job = apis.talonic.add_job(rows=1)
    with HostileServer(host="127.0.0.2") as catcher, HostileServer(upstream=apis.idp.base_url) as idp:
        # The second host would hand out a token of its own: it must never be asked, nor its token used.
        catcher.on("", answer(200, {"access_token": "attacker-token-123456", "expires_in": 3600}))
        idp.on(r"/oauth2/token", redirect(307, f"{catcher.url}/oauth2/token"))
        config = {**apis.config(cognite_auth="oauth", sources=("cognite", "talonic")), **FAST}
        config["cognite"]["token_url"] = f"{idp.url}/oauth2/token"
        config["cognite"]["pipeline_ids"] = []
        run = run_tap(config, timeout=120)
    _assert_no_credential(catcher, apis.idp.client_secret)
    assert not any("attacker-token" in json.dumps(r["headers"]) for r in apis.cognite.request_log)
    assert run.returncode == 1
    assert "redirected (HTTP 307)" in run.stderr and "cognite.token_url" in run.stderr, run.stderr[-2000:]
    assert not run.records("entity_matching_jobs")
    assert _rows(run) == {job}  # the other source is synced


def test_a_redirect_from_https_to_plain_http_is_not_followed(apis, tmp_path):
    good, bad = apis.talonic.add_job(rows=2), apis.talonic.add_job(rows=1)
    cert, key = self_signed_cert(str(tmp_path))
    with (
        HostileServer(host="127.0.0.2") as catcher,
        HostileServer(upstream=apis.talonic.base_url, tls=(cert, key)) as front,
    ):
        front.on(rf"/v1/jobs/{bad}", redirect(302, f"{catcher.url}/v1/jobs/{bad}"))
        # The CA bundle from the environment is honoured (the tap trusts the self-signed front).
        run = run_tap(_talonic(apis, front), env={"REQUESTS_CA_BUNDLE": cert}, timeout=120)
    _assert_no_credential(catcher, apis.talonic.api_key)
    assert run.returncode == 1, run.stderr[-2000:]
    assert front.url.startswith("https://")
    assert re.search(rf"Talonic job {bad}.*redirected \(HTTP 302\) to http://127\.0\.0\.2", run.stderr), run.stderr
    assert _rows(run) == {good}


# -- time and memory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["body", "headers"])
def test_a_trickling_response_times_out_and_only_its_job_fails(apis, phase):
    good, bad = apis.talonic.add_job(rows=2), apis.talonic.add_job(rows=2)
    with HostileServer(upstream=apis.talonic.base_url) as front:
        front.on(rf"/v1/jobs/{bad}/results", trickle(phase, every=0.5, limit=60))
        config = {**_talonic(apis, front), "read_timeout": 3}
        started = time.monotonic()
        run = run_tap(config, timeout=90)
        elapsed = time.monotonic() - started
        assert run.returncode == 1, run.stderr[-2000:]
        # Two attempts of at most 3 s each, a short wait, start-up: far below the trickle's 60 s.
        assert elapsed < 40, elapsed
        assert re.search(rf"Talonic job {bad}.*timed out after 3 s \(read_timeout\)", run.stderr), run.stderr[-2000:]
        assert _rows(run) == {good}

        # The job stayed pending: once the server behaves, the next run fetches it.
        front.rules.clear()
        second = run_tap(config, state=run.state, check=True, timeout=90)
    assert _rows(second) == {bad}


@pytest.mark.parametrize(
    ("address_space_mb", "cap_mb", "expected"),
    [
        # The cap (default 1024 MiB) ends the read long before the 2 GiB the body inflates to.
        (1536, None, r"larger than 1024 MiB \(max_response_mb\)|ran out of memory .*max_response_mb"),
        (1536, 256, r"larger than 256 MiB \(max_response_mb\)"),
        # Memory runs out before the cap: that job's failure too, never the end of the run.
        (700, None, r"ran out of memory reading the response .*max_response_mb"),
    ],
)
def test_a_gzip_bomb_fails_its_job_within_a_memory_limit(apis, address_space_mb, cap_mb, expected):
    good, bad = apis.talonic.add_job(rows=2), apis.talonic.add_job(rows=2)
    with HostileServer(upstream=apis.talonic.base_url) as front:
        front.on(rf"/v1/jobs/{bad}/results", gzip_bomb(2 << 30))
        config = _talonic(apis, front)
        if cap_mb is not None:
            config["max_response_mb"] = cap_mb
        limit = ["prlimit", f"--as={address_space_mb << 20}", "--"]
        run, elapsed = run_tap_under(limit, config, timeout=180)
    assert run.returncode == 1, run.stderr[-2000:]
    assert re.search(rf"Talonic job {bad}.*({expected})", run.stderr), run.stderr[-2000:]
    assert "MemoryError" not in run.stderr and "Traceback" not in run.stderr
    assert elapsed < 120, elapsed
    assert _rows(run) == {good}


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_size_cap_stops_reading_and_fails_its_job(apis, chunked):
    good, bad = apis.talonic.add_job(rows=2), apis.talonic.add_job(rows=2)
    sent: dict[str, int] = {}
    with HostileServer(upstream=apis.talonic.base_url) as front:
        front.on(rf"/v1/jobs/{bad}/results", big_body(300 << 20, chunked=chunked, sent=sent, key="big"))
        config = {**_talonic(apis, front), "max_response_mb": 2}
        run = run_tap(config, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert re.search(rf"Talonic job {bad}.*larger than 2 MiB \(max_response_mb\)", run.stderr), run.stderr[-2000:]
    assert _rows(run) == {good}
    # The tap hung up instead of reading on: the server wrote a small part of the 300 MiB.
    assert sent.get("big", 0) < 100 << 20, sent


# -- secrets --------------------------------------------------------------------------------------------


def _fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def test_a_long_error_message_ending_in_the_key_leaks_no_fragment(apis):
    good, bad = apis.talonic.add_job(rows=1), apis.talonic.add_job(rows=1)
    key = apis.talonic.api_key
    message = "x" * 280 + key + " " + key[::-1]
    with HostileServer(upstream=apis.talonic.base_url) as front:
        front.on(rf"/v1/jobs/{bad}", answer(401, {"statusCode": 401, "code": "unauthorized", "message": message}))
        run = run_tap(_talonic(apis, front), timeout=120)
    assert run.returncode == 1
    assert f"Talonic job {bad}" in run.stderr and "xxxxxxxx" in run.stderr, run.stderr[-2000:]
    output = run.stdout + run.stderr
    assert [f for f in _fragments(key) if f in output] == []
    assert _rows(run) == {good}


_NOWHERE = "http://127.0.0.1:9"
_OAUTH = {"project": "p", "client_id": "c", "token_url": f"{_NOWHERE}/t", "scopes": ["s"]}


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"talonic": {"base_url": _NOWHERE, "api_key": "tl-1234"}}, "talonic.api_key"),
        ({"cognite": {"base_url": _NOWHERE, **_OAUTH, "client_secret": "sec-123"}}, "cognite.client_secret"),
        (
            {
                "cognite": {
                    "base_url": _NOWHERE,
                    "project": "p",
                    "token": "cdf-token-long-enough",
                    "entity_matching_jobs": [{"job_id": 1, "job_token": "jt-1"}],
                }
            },
            "cognite.entity_matching_jobs[0].job_token",
        ),
    ],
)
def test_a_short_secret_is_refused_by_name(config, setting):
    run = run_tap(config, timeout=60)
    assert run.returncode != 0
    assert re.search(rf"{re.escape(setting)}: too short", run.stderr), run.stderr[-2000:]
    for value in ("tl-1234", "sec-123", "jt-1"):
        assert value not in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "value",
    [98765432123, 98765.4321, ["secret-in-a-list-555"], {"nested": "secret-in-an-object-555"}, True],
)
def test_a_secret_of_the_wrong_type_is_named_but_never_quoted(value):
    config = {"talonic": {"base_url": "http://127.0.0.1:9", "api_key": value}}
    run = run_tap(config, timeout=60)
    assert run.returncode != 0
    assert "talonic.api_key" in run.stderr, run.stderr[-2000:]
    text = json.dumps(value)
    for needle in {str(value), repr(value), text, "secret-in-a-list-555", "secret-in-an-object-555", "98765"}:
        if needle not in ("True", "true"):
            assert needle not in run.stderr, needle
    assert "True is not" not in run.stderr and "Traceback" not in run.stderr


def test_a_logging_config_with_its_own_handlers_leaks_no_secret(apis, tmp_path):
    """SINGER_SDK_LOG_CONFIG replaces the console setup with handlers the tap never created; a
    hostile listing hands out the API key as its next cursor, which urllib3 then logs at DEBUG as
    part of the request URL."""
    job = apis.talonic.add_job(rows=1)
    key = apis.talonic.api_key
    log_file = tmp_path / "tap.log"
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain"},
            "own": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain"},
        },
        "loggers": {
            "tap-jobresults": {"level": "DEBUG", "handlers": ["own"], "propagate": False},
            "urllib3": {"level": "DEBUG", "handlers": ["own"], "propagate": False},
        },
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }
    config_path = tmp_path / "logging.json"  # JSON is YAML: the SDK reads it with yaml.safe_load
    config_path.write_text(json.dumps(log_config))
    first_page = {"data": [], "pagination": {"has_more": True, "next_cursor": key, "limit": 100}}

    def listing(handler, seen):
        if key in seen.path:
            answer(400, {"statusCode": 400, "code": "validation_error", "message": f"bad cursor {key}"})(handler, seen)
        else:
            answer(200, first_page)(handler, seen)

    with HostileServer(upstream=apis.talonic.base_url) as front:
        front.on(r"/v1/jobs$", listing)
        run = run_tap(_talonic(apis, front), env={"SINGER_SDK_LOG_CONFIG": str(config_path)}, timeout=120)
    logged = log_file.read_text()
    assert "GET /v1/jobs?" in logged and "cursor=" in logged, logged[-2000:]  # the URL was logged ...
    assert key not in logged and key not in run.stderr  # ... without the key
    assert [f for f in _fragments(key) if f in logged] == []
    assert job  # the listing never reached it; what matters is the log


def test_a_netrc_entry_does_not_replace_the_configured_credential(apis, tmp_path):
    apis.talonic.add_job(rows=2)
    apis.cognite.add_predict_job(items=2)
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-password-123\n")
    netrc.chmod(0o600)
    config = apis.config(cognite_auth="oauth", sources=("cognite", "talonic"))
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, env={"HOME": str(home), "NETRC": str(netrc)}, check=True, timeout=120)
    assert len(run.records("extraction_rows")) == 2 and len(run.records("match_results")) == 2
    for server in (apis.talonic, apis.cognite, apis.idp):
        for request in server.request_log:
            auth = request["headers"].get("Authorization", "")
            assert not auth.startswith("Basic"), (server.name, request["path"], auth)
    assert {r["headers"].get("Authorization") for r in apis.talonic.request_log} == {f"Bearer {apis.talonic.api_key}"}


def test_proxies_from_the_environment_keep_working(apis):
    job = apis.talonic.add_job(rows=2)
    with HostileServer() as proxy:  # relays absolute-URI requests: a plain forward proxy
        env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}
        run = run_tap(apis.config(sources=("talonic",)), env=env, check=True, timeout=120)
    assert _rows(run) == {job}
    assert any(r.path.startswith(apis.talonic.base_url) for r in proxy.requests), [r.path for r in proxy.requests]


# -- tokens and unreachable hosts -------------------------------------------------------------------------


def test_a_401_storm_causes_one_token_refresh(apis):
    jobs = [apis.cognite.add_predict_job(items=1) for _ in range(64)]
    apis.cognite.latency = 0.1  # many requests in flight when the tokens are revoked
    original = apis.cognite.get_predict_job

    def revoking(match, query, headers, form):
        response = original(match, query, headers, form)
        if int(match["job"]) == jobs[20]:
            apis.idp.revoke_all()
        return response

    apis.cognite.get_predict_job = revoking
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), "max_concurrent_requests": 32}
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True, timeout=120)
    assert len(run.records("entity_matching_jobs")) == 64
    refused = [r for r in apis.cognite.request_log if r.get("status") == 401]
    assert len(refused) >= 2, "the revocation did not hit concurrent requests; the test proves nothing"
    # The first token, then one refresh shared by every request refused the revoked token (a refresh per
    # refused request would make it 1 + len(refused) >= 3).
    assert len(apis.idp.token_requests) == 2, (len(apis.idp.token_requests), len(refused))


def test_an_unreachable_host_is_named_by_its_setting_and_fails_fast(apis):
    for _ in range(20):
        apis.cognite.add_predict_job(items=1)
    config = apis.config(cognite_auth="token", sources=("cognite", "talonic"))
    config["cognite"]["base_url"] = "http://127.0.0.1:9"
    config["cognite"]["pipeline_ids"] = []
    config["talonic"]["base_url"] = "http://127.0.0.1:9"
    started = time.monotonic()
    run = run_tap(config, timeout=120)  # default retry settings
    elapsed = time.monotonic() - started
    assert run.returncode == 1
    assert elapsed < 60, elapsed
    assert "talonic.base_url http://127.0.0.1:9: connection refused" in run.stderr, run.stderr[-2000:]
    assert "cognite.base_url http://127.0.0.1:9: connection refused" in run.stderr
    # Each retry is logged once: by the tap, not again by the retry library.
    retries = [line for line in run.stderr.splitlines() if "retry " in line and "talonic" in line]
    assert len(retries) == len(set(retries)) <= 2, retries
    assert "Backing off" not in run.stderr and "Giving up" not in run.stderr


def test_the_readme_documents_the_new_settings():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "max_response_mb" in readme and "redirect" in readme.lower()
