"""Hostile and broken servers (issue 10, HTTP side): bounded time, bounded memory, no credential off its host.

Each case puts an adversarial server (tests/hostile) in front of or beside the fake APIs and runs the
real tap binary: the failing job is named, the run exits 1, the other jobs are synced, and nothing
secret reaches the second host (127.0.0.2) or the output.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import urllib3.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TAP, run_tap, tap_env
from tests.hostile import (
    HostileServer,
    answer,
    big_body,
    chunked,
    gzip_bomb,
    make_cert,
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
    assert "talonic.api_key: must be of type string (the value is a secret and is not shown)" in run.stderr, run.stderr[
        -2000:
    ]
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
    """Tokens revoked at the 21st of 64 requests, 32 in flight: every request refused the revoked token
    shares one refresh. Deterministic: the first refusal is held until a second request brings the
    revoked token, and the others until the refresh has been asked for, so their 401s arrive after
    the token changed (the case a refresh per refusal would get wrong)."""
    for _ in range(64):
        apis.cognite.add_predict_job(items=1)
    apis.cognite.latency = 0.02
    authorized = apis.cognite.authorized
    refused: list[str] = []
    lock, second = threading.Lock(), threading.Event()
    checks = itertools.count(1)

    def holding(headers):
        with lock:  # the tokens are revoked at the 21st request: whatever the scheduling, 43 come after
            if next(checks) == 21:
                apis.idp.revoke_all()
        if authorized(headers):
            return True
        with lock:
            refused.append(headers.get("Authorization", ""))
            first = len(refused) == 1
            if len(refused) == 2:
                second.set()
        if first:
            second.wait(20)
        else:
            deadline = time.monotonic() + 20
            while len(apis.idp.token_requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
        return False

    apis.cognite.authorized = holding
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), "max_concurrent_requests": 32}
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True, timeout=120)
    assert len(run.records("entity_matching_jobs")) == 64
    assert len(refused) >= 2 and len(set(refused)) == 1, refused  # several refusals, all of the revoked token
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


# -- TLS, encodings and config: a named error of the source, never a traceback ----------------------------


def _tls_front(kind: str, tmp_path: Path, apis) -> tuple[HostileServer | None, str, dict[str, str]]:
    """(server, base_url, env) for one way a TLS connection goes wrong."""
    directory = str(tmp_path)
    if kind == "plain-http port":  # https:// to a port that speaks plain HTTP
        return None, apis.talonic.base_url.replace("http://", "https://"), {}
    if kind == "self-signed":  # no CA bundle: the system store does not trust it
        cert, key = make_cert(directory)
        return HostileServer(upstream=apis.talonic.base_url, tls=(cert, key)), "", {}
    if kind == "expired":
        cert, key = make_cert(directory, expired=True)
        return HostileServer(upstream=apis.talonic.base_url, tls=(cert, key)), "", {"REQUESTS_CA_BUNDLE": cert}
    assert kind == "wrong host"  # trusted, but issued for another address
    cert, key = make_cert(directory, hosts=("127.0.0.2",))
    return HostileServer(upstream=apis.talonic.base_url, tls=(cert, key)), "", {"REQUESTS_CA_BUNDLE": cert}


@pytest.mark.parametrize("kind", ["self-signed", "expired", "wrong host", "plain-http port"])
def test_a_tls_failure_is_a_named_error_of_its_source(apis, tmp_path, kind):
    for _ in range(3):
        apis.talonic.add_job(rows=1)
    other = apis.clavata.add_job(results=2)
    server, base_url, env = _tls_front(kind, tmp_path, apis)
    with server or HostileServer() as front:
        config = {**apis.config(sources=("talonic", "clavata")), **FAST}
        config["talonic"]["base_url"] = base_url or front.url
        before = len(apis.talonic.request_log)
        run = run_tap(config, env=env, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "AttributeError" not in run.stderr, run.stderr[-3000:]
    assert re.search(r"talonic\.base_url https://127\.0\.0\.1:\d+: TLS failed: ", run.stderr), run.stderr[-2000:]
    # Verification held: no HTTP request reached the server behind the bad TLS, the key never left.
    assert (server is None or not server.requests) and len(apis.talonic.request_log) == before
    assert apis.talonic.api_key not in run.stderr
    # One failure for the source, not one per job, and the other source is synced.
    assert len(re.findall(r"TLS failed", run.stderr.split("Sync finished")[-1])) == 1, run.stderr[-2000:]
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} == {other}


def test_a_non_ascii_api_key_is_refused_by_name(apis):
    config = apis.config(sources=("talonic",))
    config["talonic"]["api_key"] = "tlnc_live_abc\u201cdef\u2013123"  # typographic quote and dash from a paste
    run = run_tap(config, timeout=60)
    assert run.returncode == 1
    assert "talonic.api_key: contains a character outside ASCII" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "abc\u201cdef" not in run.stderr
    assert not apis.talonic.request_log  # refused before any request


@pytest.mark.parametrize("setting", ["talonic.base_url", "cognite.base_url", "cognite.token_url"])
def test_a_password_in_a_url_setting_is_refused_by_name_and_never_printed(apis, setting):
    config = apis.config(cognite_auth="oauth", sources=("cognite", "talonic"))
    section, key = setting.split(".")
    url = config[section][key]
    config[section][key] = url.replace("http://", "http://svc:Hunter2Password@")
    run = run_tap(config, timeout=60)
    assert run.returncode == 1
    assert f"{setting}: holds a user name or password" in run.stderr, run.stderr[-2000:]
    assert "Hunter2Password" not in run.stderr and "svc:" not in run.stderr
    assert not apis.talonic.request_log and not apis.idp.request_log


def test_a_secret_in_a_url_query_is_never_printed(apis):
    apis.cognite.add_predict_job(items=1)
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), **FAST}
    config["cognite"]["pipeline_ids"] = []
    config["cognite"]["token_url"] = f"{apis.idp.token_url}?api-key=QuerySecret0123456789"
    config["cognite"]["client_secret"] = "not-the-right-secret-0123"  # the token request fails, naming token_url
    run = run_tap(config, env={"TAP_JOBRESULTS_LOGLEVEL": "DEBUG"}, timeout=60)
    assert run.returncode == 1
    assert f"OAuth token request to {apis.idp.token_url} failed" in run.stderr, run.stderr[-2000:]
    assert "QuerySecret" not in run.stderr  # not in messages, nor in urllib3's DEBUG lines (the value is a secret)


# Root reads any file; a permission error needs the capabilities that let it to be dropped.
DROP_READ_CAPS = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("directory", "is a directory, not a JSON config file"),
        ("invalid JSON", "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 56)"),
        ("array", "must hold a JSON object of settings, got list"),
        ("missing", "no such file"),
        ("not UTF-8", "is not UTF-8 text"),
        ("unreadable", "cannot be read (permission denied)"),
        ("under a file", "cannot be read (Not a directory)"),
    ],
)
def test_a_bad_config_file_is_a_named_error(tmp_path, kind, problem):
    path = tmp_path / "config.json"
    prefix: list[str] = []
    if kind == "directory":
        path.mkdir()
    elif kind == "invalid JSON":
        path.write_text('{"talonic": {"api_key": "tlnc_secret_in_a_broken_file",}')
    elif kind == "array":
        path.write_text('[{"talonic": {}}]')
    elif kind == "not UTF-8":
        path.write_bytes(b'{"talonic": "\xff\xfe"}')
    elif kind == "unreadable":
        path.write_text('{"talonic": {"api_key": "tlnc_secret_in_a_broken_file"}}')
        path.chmod(0)
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: every file is readable")
            prefix = DROP_READ_CAPS
    elif kind == "under a file":
        path.write_text("{}")
        path = path / "config.json"
    proc = subprocess.run(
        [*prefix, TAP, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=tap_env(),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"--config {path}: {problem}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "tlnc_secret_in_a_broken_file" not in proc.stderr and not proc.stdout


# -- rate limits end a source fast ------------------------------------------------------------------------


def _next_utc_midnight() -> datetime:
    now = datetime.now(timezone.utc)
    return datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)


@pytest.mark.parametrize(
    "hint",
    [
        # Talonic's daily quota: the reset is the next UTC midnight, as ISO 8601 (docs) or epoch seconds (SDKs).
        {"X-RateLimit-Reset": lambda: _next_utc_midnight().strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"X-RateLimit-Reset": lambda: str(int(_next_utc_midnight().timestamp()))},
        {"Retry-After": "86400"},
    ],
    ids=["reset-iso", "reset-epoch", "retry-after-a-day"],
)
def test_a_rate_limit_far_ahead_stops_the_source_at_once(apis, hint):
    jobs = [apis.talonic.add_job(rows=1) for _ in range(12)]
    other = apis.clavata.add_job(results=1)
    # The listing passes; every job fetch meets the quota.
    apis.talonic.fail(r"/v1/jobs/.+", status=429, times=None, headers=hint)
    config = {**apis.config(sources=("talonic", "clavata")), "max_concurrent_requests": 2}  # default retries
    started = time.monotonic()
    run = run_tap(config, timeout=120)
    elapsed = time.monotonic() - started
    assert run.returncode == 1, run.stderr[-2000:]
    assert elapsed < 45, elapsed  # not max_retries x max_retry_wait per job
    refused = [r for r in apis.talonic.request_log if r.get("status") == 429]
    assert 1 <= len(refused) <= 4, len(refused)  # the jobs in flight, not 12 jobs x 7 attempts
    until = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    if "X-RateLimit-Reset" in hint:
        until = _next_utc_midnight().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert re.search(
        rf"talonic: Talonic job \S+ (results )?failed, HTTP 429.*rate limited until {until}", run.stderr
    ), run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    # The source stopped: one failure line for it, nothing of it bookmarked; the other source synced.
    summary = run.stderr.split("Sync finished")[-1]
    assert summary.count("rate limited until") == 1, summary
    assert not run.records("extraction_rows")
    assert {r["job_uuid"] for r in run.records("clavata_jobs")} == {other}
    # Nothing was lost: once the quota resets, the next run syncs every job.
    apis.talonic.clear_faults()
    second = run_tap(config, state=run.state, check=True, timeout=120)
    assert _rows(second) == set(jobs)


def test_jobs_in_a_row_exhausted_by_429_stop_the_source(apis):
    jobs = [apis.talonic.add_job(rows=1) for _ in range(30)]
    # The fake's reset is 1 s ahead, within max_retry_wait: each job is retried, and stays refused.
    apis.talonic.fail(r"/v1/jobs/.+", status=429, times=None)
    config = {**_talonic_direct(apis), "max_concurrent_requests": 1, "max_retry_wait": 2}
    run = run_tap(config, timeout=120)
    assert run.returncode == 1
    assert re.search(r"3 requests in a row were still refused with HTTP 429.*talonic stops for this run", run.stderr), (
        run.stderr[-3000:]
    )
    fetched = {r["path"] for r in apis.talonic.request_log if r["path"] != "/v1/jobs"}
    assert len(fetched) <= 4, len(fetched)  # stopped after three, not 30 jobs x 2 attempts
    assert not run.records("extraction_rows") and len(jobs) == 30


def _talonic_direct(apis) -> dict:
    return {**apis.config(sources=("talonic",)), **FAST}


def test_backoff_waits_are_capped_by_max_retry_wait(apis):
    """Without a hint, the exponential backoff (1, 2, 4, 8 ... s) is capped at max_retry_wait."""
    job = apis.talonic.add_job(rows=1)
    apis.talonic.fail(rf"/v1/jobs/{job}/results$", status=503, times=6)  # no hint: backoff decides
    config = {**apis.config(sources=("talonic",)), "max_retries": 6, "max_retry_wait": 0.3}
    started = time.monotonic()
    run = run_tap(config, check=True, timeout=120)
    assert time.monotonic() - started < 20  # uncapped: 1 + 2 + 4 + 8 + 16 + 32 s, jittered to half at least
    assert _rows(run) == {job}


def test_403_on_every_job_stops_the_source(apis):
    for _ in range(20):
        apis.talonic.add_job(rows=1)
    apis.talonic.fail(r"/v1/jobs/.+", status=403, times=None, body={"code": "forbidden", "message": "scope"})
    config = {**_talonic_direct(apis), "max_concurrent_requests": 1}
    run = run_tap(config, timeout=120)
    assert run.returncode == 1
    assert "requests in a row were refused: stopping talonic" in run.stderr, run.stderr[-2000:]
    fetched = [r for r in apis.talonic.request_log if r["path"] != "/v1/jobs"]
    assert len(fetched) == 3, fetched  # docs/operations.md: three refusals in a row stop the source


def test_refusals_with_other_outcomes_between_them_do_not_stop_the_source(apis):
    """Only refusals *in a row* stop a source: a job synced, or failed another way, starts the count again."""
    jobs = [apis.talonic.add_job(rows=1) for _ in range(8)]
    config = {**_talonic_direct(apis), "max_concurrent_requests": 1}
    run_tap(config, check=True, timeout=120)  # the order the jobs are fetched in, one at a time
    order = [r["path"].split("/")[3] for r in apis.talonic.request_log if r["path"].startswith("/v1/jobs/")]
    assert sorted(order) == sorted(jobs), order
    # refused, refused, synced, refused, refused, failed with 500, refused, refused: never three in a row
    refused, broken = [order[0], order[1], order[3], order[4], order[6], order[7]], order[5]
    for job in refused:
        apis.talonic.fail(rf"/v1/jobs/{job}/", status=403, times=None, body={"code": "forbidden", "message": "no"})
    apis.talonic.fail(rf"/v1/jobs/{broken}/", status=500, times=None)
    run = run_tap(config, timeout=120)
    assert run.returncode == 1
    assert "requests in a row were refused" not in run.stderr, run.stderr[-2000:]
    assert _rows(run) == set(jobs) - {*refused, broken}


# -- IDs stay one path segment ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [".", "..", "a/b", "%2e%2e", "..%2f..", "x\\..", " ", "\x00x", "%2F"])
def test_an_id_that_is_not_one_path_segment_reaches_no_other_resource(apis, bad_id):
    good = apis.talonic.add_job(rows=2)
    odd = apis.talonic.add_job(rows=2)
    with apis.talonic.lock:  # the listing now shows a job with a hostile ID
        job = apis.talonic.jobs.pop(odd)
        job["id"] = bad_id
        apis.talonic.jobs[bad_id] = job
    apis.talonic.invalidate()
    run = run_tap(_talonic_direct(apis), timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    paths = {r["path"] for r in apis.talonic.request_log}
    assert paths <= {"/v1/jobs", f"/v1/jobs/{good}", f"/v1/jobs/{good}/results"}, paths
    assert "cannot be one URL path segment" in run.stderr, run.stderr[-2000:]
    assert _rows(run) == {good}
    # Never bookmarked as synced; not kept pending either: no request can ever be made for it, so a
    # pending entry would fail every later run, even once the vendor no longer lists it.
    bookmark = run.state["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"]
    kept = {job_id for job_id, _ in bookmark["pending"] or []} | {job_id for job_id, _ in bookmark["seen"] or []}
    assert bad_id not in kept, bookmark
    assert good in {job_id for job_id, _ in bookmark["seen"] or []}, bookmark
    [heartbeat] = run.records("sync_runs")
    assert (heartbeat["jobs_synced"], heartbeat["jobs_failed"], heartbeat["status"]) == (1, 1, "partial"), heartbeat


# -- vendor text in logs ----------------------------------------------------------------------------------

_FORGED = (
    "bad request\n2030-01-01 00:00:00,000 | INFO     | tap-jobresults | Sync complete\r\x1b[2K\x1b[31mred\x07\u202eevil"
)


def test_vendor_text_cannot_forge_a_log_line_or_reach_the_terminal(apis):
    good, bad = apis.talonic.add_job(rows=1), apis.talonic.add_job(rows=1)
    body = {"statusCode": 400, "code": "bad\x1b]0;title\x07", "message": _FORGED, "request_id": "r\nid"}
    apis.talonic.fail(rf"/v1/jobs/{bad}/results$", status=400, times=None, body=body)
    run = run_tap(_talonic_direct(apis), env={"TAP_JOBRESULTS_LOGLEVEL": "DEBUG"}, timeout=120)
    assert run.returncode == 1
    assert "\\n2030-01-01 00:00:00,000 | INFO" in run.stderr and "\\x1b[31mred" in run.stderr, run.stderr[-2000:]
    for char in "\x1b\r\x07\u202e":
        assert char not in run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith("2030-01-01")]
    assert _rows(run) == {good}


# -- request metrics --------------------------------------------------------------------------------------


def _metrics(stderr: str) -> list[dict]:
    return [json.loads(line.split("METRIC: ", 1)[1]) for line in stderr.splitlines() if "METRIC: " in line]


def test_request_metrics_show_time_per_source_and_endpoint_kind(apis):
    for _ in range(30):
        apis.talonic.add_job(rows=1)
    apis.cognite.add_predict_job(items=1)
    config = apis.config(cognite_auth="oauth", sources=("cognite", "talonic"))
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, check=True, timeout=120)
    points = [p for p in _metrics(run.stderr) if p["metric"] == "http_request_duration"]
    kinds = {(p["tags"]["stream"], p["tags"]["endpoint"]) for p in points}
    # Talonic jobs come with their listing: one results request each.
    assert {("talonic", "listing"), ("talonic", "results"), ("cognite", "token"), ("cognite", "job")} <= kinds, kinds
    talonic_results = [p for p in points if p["tags"]["stream"] == "talonic" and p["tags"]["endpoint"] == "results"]
    assert sum(p["tags"]["requests"] for p in talonic_results) == 30
    assert all(p["type"] == "timer" and p["value"] >= 0 and p["tags"]["status"] == "succeeded" for p in points)
    counts = [p for p in _metrics(run.stderr) if p["metric"] == "http_request_count"]
    assert sum(p["value"] for p in counts if p["tags"]["stream"] == "talonic") == 31  # 1 listing + 30 results
    # Aggregated: no METRIC line per job at INFO.
    assert len(points) < 10, len(points)


# -- limits in their unhappy shape (issue 22) -----------------------------------------------------------


def test_an_identity_provider_failure_is_remembered_not_retried_per_stream(apis):
    """The token request fails (wrong client secret): every CDF stream and pipeline needs a token,
    and without the failure memory each would ask the identity provider again."""
    apis.cognite.add_predict_job(items=1)
    for _ in range(2):
        pipeline = apis.cognite.add_pipeline()
        apis.cognite.add_run(pipeline)
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), **FAST}
    config["cognite"]["client_secret"] = "a-wrong-client-secret-123"
    run = run_tap(config, timeout=120)
    assert run.returncode == 1
    assert "authentication failed: cognite OAuth: OAuth token request to" in run.stderr, run.stderr[-2000:]
    assert len(apis.idp.token_requests) == 1, len(apis.idp.token_requests)
    assert not apis.cognite.request_log  # nothing was sent without a token
    assert "a-wrong-client-secret-123" not in run.stderr


def test_an_issued_token_echoed_by_a_vendor_is_scrubbed(apis):
    """A gateway quotes the Authorization header it refused: the issued OAuth token must be known
    as a secret, in messages at every level."""
    good = apis.cognite.add_predict_job(items=1)
    bad = apis.cognite.add_predict_job(items=1)
    original = apis.cognite.get_predict_job

    def echoing(match, query, headers, form):
        if int(match["job"]) == bad:
            message = f"request not allowed for {headers.get('Authorization')}"
            return 400, {"error": {"code": 400, "message": message}}, {}
        return original(match, query, headers, form)

    apis.cognite.get_predict_job = echoing
    config = {**apis.config(cognite_auth="oauth", sources=("cognite",)), **FAST}
    config["cognite"]["pipeline_ids"] = []
    run = run_tap(config, env={"TAP_JOBRESULTS_LOGLEVEL": "DEBUG"}, timeout=120)
    assert run.returncode == 1
    assert f"CDF predict job {bad}" in run.stderr and "request not allowed for Bearer ***" in run.stderr, run.stderr[
        -2000:
    ]
    assert apis.idp.issued_tokens
    for token in apis.idp.issued_tokens:
        assert token not in run.stderr and token not in run.stdout
        assert [f for f in _fragments(token) if f in run.stderr] == []
    assert {r["job_id"] for r in run.records("entity_matching_jobs")} == {good}


def test_an_exception_logged_with_its_traceback_is_scrubbed_and_escaped():
    """Tracebacks go to DEBUG; the exception's text in them passes the same scrubbing and escaping
    as any message, through the logging machinery the tap installs (any handler, any formatter)."""
    code = textwrap.dedent(
        """
        import logging, sys
        from tap_jobresults.scrub import SECRETS, install_scrubbing
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(message)s")
        install_scrubbing()
        SECRETS.add("tlnc_live_secret_0123456789")
        try:
            raise ValueError("vendor said tlnc_live_secret_0123456789\\nFORGED LINE \\x1b[31m")
        except ValueError:
            logging.getLogger("tap-jobresults").debug("Talonic job 1: unexpected error", exc_info=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "Traceback" in proc.stderr and "ValueError: vendor said ***" in proc.stderr, proc.stderr
    assert "tlnc_live_secret" not in proc.stderr and "\x1b" not in proc.stderr
    assert "ValueError: vendor said ***\\nFORGED LINE \\x1b[31m" in proc.stderr, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("FORGED")]


@pytest.mark.parametrize(("extra", "fails"), [(-1, False), (0, False), (1, True)])
def test_the_size_cap_counts_the_chunk_that_crosses_it(apis, extra, fails):
    good, edge = apis.talonic.add_job(rows=2), apis.talonic.add_job(rows=2)
    headers = {"Authorization": f"Bearer {apis.talonic.api_key}"}
    body = requests.get(f"{apis.talonic.base_url}/v1/jobs/{edge}/results", headers=headers, timeout=30).json()
    cap = 1 << 20
    raw = json.dumps({**body, "padding": ""}).encode()
    raw = json.dumps({**body, "padding": "x" * (cap + extra - len(raw))}).encode()
    assert len(raw) == cap + extra
    with HostileServer(upstream=apis.talonic.base_url) as front:
        front.on(rf"/v1/jobs/{edge}/results", chunked(raw))
        run = run_tap({**_talonic(apis, front), "max_response_mb": 1}, timeout=120)
    if fails:
        assert run.returncode == 1
        assert re.search(rf"Talonic job {edge}.*larger than 1 MiB \(max_response_mb\)", run.stderr), run.stderr[-2000:]
        assert _rows(run) == {good}
    else:
        assert run.returncode == 0, run.stderr[-2000:]
        assert _rows(run) == {good, edge}


# -- the error description and the log record cleaning, for any input (property-based) ----------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@st.composite
def _exception_graphs(draw) -> BaseException:
    """Exceptions wired the way requests, urllib3, ssl and codecs wire them, and worse: `.reason`
    and `.args` holding strings, numbers, None, other exceptions; cycles through causes."""
    kinds = [
        lambda: requests.ConnectionError(draw(_TEXT)),
        lambda: requests.exceptions.SSLError(draw(_TEXT)),
        lambda: requests.exceptions.ChunkedEncodingError(draw(_TEXT)),
        lambda: requests.RequestException(draw(_TEXT)),
        lambda: urllib3.exceptions.MaxRetryError(None, "/x", None),
        lambda: urllib3.exceptions.ProtocolError(draw(_TEXT)),
        lambda: ssl.SSLError(1, draw(_TEXT)),
        lambda: ssl.SSLCertVerificationError(1, draw(_TEXT)),
        lambda: UnicodeEncodeError("latin-1", draw(_TEXT) or "x", 0, 1, draw(_TEXT)),
        lambda: OSError(draw(st.integers(0, 200)), draw(_TEXT)),
        lambda: ConnectionRefusedError(111, "refused"),
        lambda: ValueError(draw(_TEXT)),
    ]
    nodes = [draw(st.sampled_from(kinds))() for _ in range(draw(st.integers(1, 6)))]
    for node in nodes:
        for name in ("reason", "__cause__", "__context__"):
            choice = draw(st.sampled_from(["leave", "string", "none", "node"]))
            value = {"string": draw(_TEXT), "none": None}.get(choice, draw(st.sampled_from(nodes)))
            if choice != "leave":
                with contextlib.suppress(Exception):
                    setattr(node, name, value)
        if draw(st.booleans()):
            node.args = (*node.args, draw(st.sampled_from(nodes)), draw(_TEXT), 7)
    return nodes[0]


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(_exception_graphs())
def test_a_network_error_is_always_described_never_raised(exc):
    from tap_jobresults.client import ApiClient, Retry
    from tap_jobresults.errors import ApiError
    from tap_jobresults.transport import Deadline

    client = ApiClient("talonic", "https://svc.example", setting="talonic.base_url")
    client._describe(exc, "Talonic job 1", Deadline(60, 10))  # the description itself does not raise ...
    error = client._network_error(exc, "Talonic job 1", Deadline(60, 10))  # ... and is guarded all the same
    if error is not None:
        named = error.error if isinstance(error, Retry) else error
        assert isinstance(named, ApiError)
        assert str(named).startswith("talonic: Talonic job 1 failed")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(_TEXT, st.integers(), st.floats(allow_nan=False), st.none()), max_size=4))
def test_a_log_record_never_carries_a_control_character_from_its_arguments(args):
    from tap_jobresults.scrub import clean_record

    template = "job %s:\n  " + " ".join(["%s"] * len(args))
    record = logging.LogRecord("tap-jobresults", logging.INFO, __file__, 1, template, ("x\x1b[2J\ny", *args), None)
    clean_record(record)
    message = record.getMessage()
    assert message.count("\n") == 1  # the template's own newline only
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", message), message
