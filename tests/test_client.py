"""The HTTP client on its own: one ApiClient against a loopback server answering what a test scripts.

The end-to-end tests (test_hostile.py, test_faults.py) show what a user sees from the tap; these pin
the client's rules one by one, fast enough to run for every generated mutant of client.py and
auth.py: when a source stops, how many attempts a failure gets, what an error carries.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
import types
import typing as t
from http.server import BaseHTTPRequestHandler

import msgspec
import pytest
import requests
import urllib3.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_jobresults import auth as auth_module
from tap_jobresults import client as client_module
from tap_jobresults import transport
from tap_jobresults.client import ApiClient
from tap_jobresults.errors import (
    ApiError,
    AuthError,
    MalformedPayload,
    NotFoundError,
    RateLimited,
    RedirectRefused,
    ResponseTooLarge,
    TlsError,
)
from tap_jobresults.scrub import SECRETS
from tap_jobresults.transport import Deadline
from tests.hostile import HostileServer, Seen, respond, self_signed_cert


class Script:
    """Answers requests in order from a list of (status, body, headers); the last one repeats."""

    def __init__(self, *answers: tuple[int, t.Any, dict | None]) -> None:
        self.answers = list(answers)
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        with self.lock:
            index = min(self.count, len(self.answers) - 1)
            self.count += 1
        status, body, headers = self.answers[index]
        respond(handler, status, body, headers)


@pytest.fixture
def server():
    with HostileServer() as front:
        yield front


def _client(server: HostileServer, **options: t.Any) -> ApiClient:
    options.setdefault("max_retries", 0)
    options.setdefault("max_retry_wait", 0.01)
    options.setdefault("read_timeout", 10)
    return ApiClient("talonic", server.url, setting="talonic.base_url", **options)


def _failure(call: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> Exception:
    with pytest.raises(Exception) as caught:
        call(*args, **kwargs)
    return caught.value


# -- rate limits ------------------------------------------------------------------------------------


def test_a_wait_beyond_max_retry_wait_stops_the_source_and_later_calls_send_nothing(server):
    server.on(r"/v1/jobs", Script((429, {"message": "daily quota spent"}, {"Retry-After": "3600"}), (200, {}, None)))
    client = _client(server, max_retry_wait=60)
    first = _failure(lambda: client.get_json("/v1/jobs/a", "job a"))
    assert isinstance(first, RateLimited) and first.source_wide
    assert str(first).startswith("talonic: job a failed, HTTP 429: rate limited until ")
    assert "(the server asks for a wait of 60 min, beyond max_retry_wait 60 s)" in str(first)
    assert str(first).endswith(
        "talonic stops for this run, its pending jobs are fetched next run (server: daily quota spent)"
    )
    sent = len(server.requests)
    later = _failure(lambda: client.get_json("/v1/jobs/b", "job b"))
    assert isinstance(later, RateLimited) and later is not first
    assert later.what == "job b" and later.vendor_message == first.vendor_message
    assert len(server.requests) == sent, "a stopped source sends no more requests"


def test_a_503_asking_for_a_long_wait_says_unavailable_not_rate_limited(server):
    server.on(r"/", Script((503, b"", {"Retry-After": "600", "Content-Type": "text/plain"})))
    error = _failure(lambda: _client(server, max_retry_wait=5).get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, RateLimited) and error.status == 503
    assert "HTTP 503: unavailable until " in str(error) and "a wait of 10 min" in str(error)
    assert str(error).endswith("(server: Service Unavailable)")  # no JSON body: the status line's reason


def test_only_requests_in_a_row_refused_with_429_stop_the_source(server):
    refused = (429, {"message": "slow down"}, None)
    missing = (404, {"message": "no such job"}, None)
    server.on(r"/v1/jobs/r", Script(refused))
    server.on(r"/v1/jobs/m", Script(missing))
    client = _client(server)
    limit = 3  # docs/operations.md: "3 requests in a row still refused with HTTP 429 after their retries"
    for n in range(limit - 1):
        assert not isinstance(_failure(client.get_json, f"/v1/jobs/r{n}", "job"), RateLimited)
    # Any other outcome between them starts the count again.
    assert isinstance(_failure(lambda: client.get_json("/v1/jobs/m", "job m")), NotFoundError)
    for n in range(limit - 1):
        error = _failure(client.get_json, f"/v1/jobs/r{n}", "job")
        assert not isinstance(error, RateLimited) and error.status == 429
    stop = _failure(lambda: client.get_json("/v1/jobs/rlast", "job last"))
    assert isinstance(stop, RateLimited) and stop.source_wide
    assert f"rate limited: {limit} requests in a row were still refused with HTTP 429" in str(stop)
    sent = len(server.requests)
    assert isinstance(_failure(lambda: client.get_json("/v1/jobs/m", "job m")), RateLimited)
    assert len(server.requests) == sent


def test_a_success_between_429s_starts_the_count_again(server):
    server.on(r"/v1/jobs/r", Script((429, {"message": "slow down"}, None)))
    server.on(r"/v1/jobs/ok", Script((200, {"id": "ok"}, None)))
    client = _client(server)
    limit = 3
    for _ in range(3):
        for n in range(limit - 1):
            assert not isinstance(_failure(client.get_json, f"/v1/jobs/r{n}", "job"), RateLimited)
        assert client.get_json("/v1/jobs/ok", "job ok") == {"id": "ok"}


def test_talonic_reset_header_later_than_retry_after_decides_the_wait(server):
    reset = f"{time.time() + 3 * 3600:.0f}"
    server.on(r"/", Script((429, {"message": "quota"}, {"Retry-After": "1", "X-RateLimit-Reset": reset})))
    honoured = _failure(lambda: _client(server, max_retry_wait=30, honour_reset_header=True).get_json("/v1/j", "j"))
    assert isinstance(honoured, RateLimited) and "a wait of 3.0 h" in str(honoured)
    ignored = _failure(lambda: _client(server, max_retry_wait=30).get_json("/v1/j", "j"))
    assert not isinstance(ignored, RateLimited) and ignored.retry_after == pytest.approx(1.0)


def test_a_retryable_flag_false_in_the_body_is_not_retried(server):
    script = Script((503, {"message": "bad input", "retryable": False}, None), (200, {}, None))
    server.on(r"/", script)
    error = _failure(lambda: _client(server, max_retries=3).get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, ApiError) and error.status == 503 and not error.retryable
    assert script.count == 1


@pytest.mark.parametrize(
    ("status", "headers", "retried"),
    [
        (500, None, True),
        (502, None, True),
        (503, None, True),
        (504, None, True),
        (429, None, True),
        (409, None, False),
        (409, {"cdf-is-auto-retryable": "true"}, True),
        (400, None, False),
    ],
)
def test_which_answers_are_retried(server, status, headers, retried):
    script = Script((status, {"error": {"code": status, "message": "x"}}, headers), (200, {"ok": 1}, None))
    server.on(r"/", script)
    client = _client(server, max_retries=1)
    if retried:
        assert client.get_json("/v1/jobs/a", "job a") == {"ok": 1}
        assert script.count == 2
    else:
        assert _failure(lambda: client.get_json("/v1/jobs/a", "job a")).status == status
        assert script.count == 1


def test_retries_stop_at_max_retries_and_the_error_counts_the_attempts(server, caplog):
    script = Script((500, {"message": "boom"}, None))
    server.on(r"/", script)
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        error = _failure(lambda: _client(server, max_retries=2).get_json("/v1/jobs/a", "job a"))
    assert script.count == 3 and error.attempts == 3
    assert str(error) == "talonic: job a failed, HTTP 500: boom after 3 attempts"
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert [m.split("; ")[1].split(" in ")[0] for m in retries] == ["retry 1 of 2", "retry 2 of 2"]


def test_a_server_hint_is_followed_and_capped_by_max_retry_wait(server, caplog):
    server.on(r"/", Script((503, {}, {"Retry-After": "0.2"}), (200, {"ok": 1}, None)))
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        started = time.monotonic()
        assert _client(server, max_retries=1, max_retry_wait=1).get_json("/v1/a", "a") == {"ok": 1}
        took = time.monotonic() - started
    assert took >= 0.2
    assert any(r.getMessage().endswith("retry 1 of 1 in 0.2 s") for r in caplog.records)


# -- authentication -------------------------------------------------------------------------------------


def test_a_401_refreshes_the_token_once_then_fails(server):
    server.on(r"/", Script((401, {"message": "token revoked"}, None)))
    refreshes: list[str | None] = []
    tokens = iter(f"t{n}" for n in range(100))
    current = {"Authorization": "Bearer t-first"}

    def refresh(refused: str | None) -> None:
        refreshes.append(refused)
        current["Authorization"] = f"Bearer {next(tokens)}"

    client = _client(server, auth=lambda: dict(current), refresh_auth=refresh)
    error = _failure(lambda: client.get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, AuthError) and error.status == 401
    assert refreshes == ["Bearer t-first"]
    assert [seen.header("Authorization") for seen in server.requests] == ["Bearer t-first", "Bearer t0"]


def test_a_403_is_an_auth_error_and_a_404_a_not_found(server):
    server.on(r"/forbidden", Script((403, {"error": {"code": 403, "message": "no scope"}}, None)))
    server.on(r"/missing", Script((404, b"<html>gone</html>", {"Content-Type": "text/html"})))
    client = _client(server)
    forbidden = _failure(lambda: client.get_json("/forbidden", "job f"))
    assert isinstance(forbidden, AuthError) and str(forbidden) == (
        "authentication failed: talonic: job f failed, HTTP 403, code 403: no scope"
    )
    missing = _failure(lambda: client.get_json("/missing", "job m"))
    assert isinstance(missing, NotFoundError)
    assert str(missing) == "talonic: job m failed, HTTP 404: Not Found"  # the status line's reason: the body is no JSON


def test_an_error_carries_the_request_id_clipped(server):
    long_id = "r" * 150
    server.on(r"/header", Script((400, {"message": "bad"}, {"x-request-id": long_id})))
    server.on(r"/body", Script((400, {"message": "bad", "request_id": long_id}, None)))
    client = _client(server)
    for path in ("/header", "/body"):
        error = _failure(client.get_json, path, "job")
        assert error.request_id == "r" * 100 + "..."


class _Clock:
    """auth.py's view of time.monotonic, moved by the test (the HTTP client keeps the real clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _credentials(server: HostileServer, monkeypatch, *answers) -> tuple[auth_module.ClientCredentials, Script, _Clock]:
    clock = _Clock()
    monkeypatch.setattr(auth_module, "time", clock)
    script = Script(*answers)
    server.on(r"/token", script, method="POST")
    provider = auth_module.ClientCredentials(
        source="cognite",
        token_url=server.url + "/token",
        client_id="tap",
        client_secret="s3cret-client-value",
        scopes=["https://x/.default"],
        timeouts={"max_retries": 0, "max_retry_wait": 0.01},
    )
    return provider, script, clock


def test_identity_provider_failures_are_remembered_for_a_minute(server, monkeypatch):
    provider, script, clock = _credentials(server, monkeypatch, (503, {"error": "idp down"}, None))
    for delay in (0.0, 59.5):
        clock.now += delay
        error = _failure(provider)
        assert isinstance(error, AuthError) and error.source_wide
        assert "idp down" in str(error)
    assert script.count == 1, "within the minute the remembered failure is raised again, no new request"
    clock.now += 1.0  # 60.5 s after the failure
    _failure(provider)
    assert script.count == 2


def test_a_refused_client_is_an_auth_error_of_the_source(server, monkeypatch):
    provider, _, _ = _credentials(
        server, monkeypatch, (400, {"error": "invalid_client", "error_description": "bad secret"}, None)
    )
    error = _failure(provider)
    assert isinstance(error, AuthError) and error.source_wide and error.status == 400
    assert str(error).startswith("authentication failed: cognite: OAuth token request to http://127.0.0.1:")
    assert "s3cret-client-value" not in str(error)
    form = server.requests[0].body.decode()
    assert "grant_type=client_credentials" in form and "scope=https%3A%2F%2Fx%2F.default" in form


@pytest.mark.parametrize("body", [{"token_type": "Bearer"}, {"access_token": ""}, {"access_token": 7}, ["x"]])
def test_a_token_answer_without_a_token_is_a_source_wide_auth_error(server, monkeypatch, body):
    provider, _, _ = _credentials(server, monkeypatch, (200, body, None))
    error = _failure(provider)
    assert isinstance(error, AuthError) and error.source_wide
    assert str(error).endswith("failed: no access_token in the response")


@pytest.mark.parametrize(("expires_in", "refresh_after"), [(3600, 3570), (40, 20), ("soon", 3570), (None, 3570)])
def test_a_token_is_reused_until_shortly_before_it_expires_and_never_printed(
    server, monkeypatch, expires_in, refresh_after
):
    token = f"issued-token-{expires_in}-abcdef"
    body = {"access_token": token, **({} if expires_in is None else {"expires_in": expires_in})}
    provider, script, clock = _credentials(server, monkeypatch, (200, body, None))
    assert provider() == {"Authorization": f"Bearer {token}"}
    clock.now += refresh_after - 0.5
    provider()
    assert script.count == 1
    clock.now += 1.0
    provider()
    assert script.count == 2
    assert SECRETS.scrub(f"echo {token}") == "echo ***"


def test_a_401_refresh_is_shared_by_requests_refused_the_same_token(server, monkeypatch):
    provider, script, _ = _credentials(
        server,
        monkeypatch,
        (200, {"access_token": "first-token-abcdef"}, None),
        (200, {"access_token": "second-token-abcdef"}, None),
    )
    refused = provider()["Authorization"]
    provider.refresh(refused)
    assert script.count == 2 and provider()["Authorization"] == "Bearer second-token-abcdef"
    provider.refresh(refused)  # refused the old token: the current one is already new
    assert script.count == 2
    provider.refresh(None)
    assert script.count == 3


# -- bodies ---------------------------------------------------------------------------------------------


def test_a_declared_length_over_the_cap_is_refused_before_reading(server):
    def liar(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(5 << 20))
        handler.end_headers()
        handler.wfile.write(b"{}")  # far less than announced: reading would fail another way

    server.on(r"/", liar)
    error = _failure(lambda: _client(server, max_response_mb=1).get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, ResponseTooLarge)
    assert str(error) == (
        "talonic: job a failed: the response is larger than 1 MiB (max_response_mb); reading stopped. "
        "Raise max_response_mb if this job is really that big"
    )


def test_a_body_that_is_not_json_names_its_content_type_source_and_job(server):
    server.on(r"/", Script((200, b"<html>login</html>", {"Content-Type": "text/html; charset=" + "x" * 200})))
    error = _failure(lambda: _client(server).get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, MalformedPayload) and (error.source, error.what) == ("talonic", "job a")
    assert str(error).startswith(
        "talonic: job a returned a malformed payload: expected JSON, got text/html; charset="
        + "x" * 81  # the content type clipped to 100 characters
        + "... that does not parse (JSON is malformed"
    )


def test_a_header_that_http_cannot_carry_stops_the_source_by_name(server):
    server.on(r"/", Script((200, {}, None)))
    client = _client(server, auth=lambda: {"X-API-Key": "ключ-значение"})
    error = _failure(lambda: client.get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, ApiError) and error.source_wide
    assert "the request could not be encoded" in str(error)
    assert server.requests == []


# -- unreachable hosts ----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_connection_gets_two_quick_retries_then_later_calls_try_once(caplog):
    client = ApiClient(
        "talonic", f"http://127.0.0.1:{_closed_port()}", setting="talonic.base_url", max_retries=6, max_retry_wait=0.01
    )
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        first = _failure(lambda: client.get_json("/v1/jobs/a", "job a"))
        assert first.attempts == client_module.UNREACHABLE_RETRIES + 1
        assert "talonic.base_url http://127.0.0.1:" in str(first) and "connection refused" in str(first)
        retries = [r.getMessage() for r in caplog.records]
        assert len(retries) == 2 and retries[-1].endswith("retry 2 of 2 in 0.0 s")
        caplog.clear()
        second = _failure(lambda: client.get_json("/v1/jobs/b", "job b"))
    assert second.attempts == 1 and caplog.records == []


def test_max_retries_below_the_unreachable_retries_wins():
    client = ApiClient(
        "talonic", f"http://127.0.0.1:{_closed_port()}", setting="talonic.base_url", max_retries=1, max_retry_wait=0.01
    )
    assert _failure(lambda: client.get_json("/v1/jobs/a", "job a")).attempts == 2


# -- what each answer becomes ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [300, 301, 307, 399])
def test_a_3xx_is_refused_not_followed(server, status):
    server.on(r"^/elsewhere", Script((200, {"followed": True}, None)))
    server.on(r"^/v1", Script((status, {}, {"Location": "/elsewhere"})))
    error = _failure(lambda: _client(server).get_json("/v1/jobs/a", "job a"))
    assert isinstance(error, RedirectRefused)
    assert str(error) == (
        f"talonic: job a failed: redirected (HTTP {status}) to {server.url}; redirects are not followed, so that "
        "credentials stay on the configured host (is talonic.base_url right?)"
    )
    assert [seen.path for seen in server.requests] == ["/v1/jobs/a"]


@pytest.mark.parametrize(("status", "kind"), [(299, None), (400, ApiError), (404, NotFoundError)])
def test_the_edges_of_the_3xx_range(server, status, kind):
    server.on(r"/", Script((status, {"ok": 1}, {"Location": "/elsewhere"})))
    client = _client(server)
    if kind is None:
        assert client.get_json("/v1/jobs/a", "job a") == {"ok": 1}
    else:
        error = _failure(lambda: client.get_json("/v1/jobs/a", "job a"))
        assert type(error) is kind and error.status == status


class _Job(msgspec.Struct):
    id: str
    status: str


def test_a_documented_shape_is_checked_while_decoding(server):
    server.on(r"/good", Script((200, {"id": "a", "status": "done", "more": 1}, None)))
    server.on(r"/bad", Script((200, {"id": 7, "status": "done"}, None)))
    client = _client(server)
    assert client.get_json("/good", "job a", decode_as=_Job) == _Job("a", "done")
    error = _failure(lambda: client.get_json("/bad", "job b", decode_as=_Job))
    assert isinstance(error, MalformedPayload) and (error.source, error.what) == ("talonic", "job b")
    assert str(error) == "talonic: job b returned a malformed payload: Expected `str`, got `int` - at `$.id`"


def test_a_long_status_reason_is_clipped(server):
    def reason(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.send_response(400, "R" * 400)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.on(r"/", reason)
    error = _failure(lambda: _client(server).get_json("/v1/jobs/a", "job a"))
    assert error.vendor_message == "R" * 300 + "..."


def test_a_slow_answer_within_read_timeout_is_read_whatever_connect_timeout_says(server):
    def slow(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        time.sleep(0.6)
        respond(handler, 200, {"ok": 1})

    server.on(r"/", slow)
    assert _client(server, connect_timeout=0.2, read_timeout=5).get_json("/v1/a", "a") == {"ok": 1}
    timed_out = _failure(lambda: _client(server, connect_timeout=5, read_timeout=0.2).get_json("/v1/a", "a"))
    assert isinstance(timed_out, ApiError) and timed_out.retryable
    assert str(timed_out) == "talonic: a failed: timed out after 0.2 s (read_timeout)"


def test_a_connection_dropped_mid_body_is_retried(server):
    calls = []

    def drop_once(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        calls.append(1)
        if len(calls) > 1:
            respond(handler, 200, {"ok": 1})
            return
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b'{"ok": ')

    server.on(r"/", drop_once)
    client = _client(server, max_retries=1)
    assert client.get_json("/v1/a", "a") == {"ok": 1} and len(calls) == 2
    calls.clear()
    error = _failure(lambda: _client(server).get_json("/v1/a", "a"))
    assert str(error) == "talonic: a failed: connection dropped while reading the response" and error.retryable


def test_a_body_that_does_not_decompress_is_not_retried(server):
    script = Script((200, b"not gzip at all", {"Content-Encoding": "gzip"}))
    server.on(r"/", script)
    error = _failure(lambda: _client(server, max_retries=2).get_json("/v1/a", "a"))
    assert str(error) == "talonic: a failed: the response body does not decompress (Content-Encoding gzip)"
    assert script.count == 1


def test_a_certificate_nobody_trusts_stops_the_source_before_anything_is_sent(tmp_path):
    with HostileServer(tls=self_signed_cert(str(tmp_path))) as tls:
        tls.on(r"/", Script((200, {}, None)))
        client = ApiClient("talonic", tls.url, setting="talonic.base_url", max_retries=3, max_retry_wait=0.01)
        error = _failure(lambda: client.get_json("/v1/a", "job a"))
        assert tls.requests == []
    assert isinstance(error, TlsError) and error.source_wide and (error.source, error.what) == ("talonic", "job a")
    assert str(error).startswith(
        f"talonic: job a failed: talonic.base_url {tls.url}: TLS failed: the server's certificate was refused ("
    )
    assert "point REQUESTS_CA_BUNDLE at that CA's bundle; talonic stops for this run" in str(error)


def test_https_to_a_plain_http_port_says_so(server):
    client = ApiClient("talonic", server.url.replace("http:", "https:"), setting="talonic.base_url")
    error = _failure(lambda: client.get_json("/v1/a", "job a"))
    assert isinstance(error, TlsError)
    assert "TLS failed: the server did not answer with TLS (is it a plain http:// port?)" in str(error)


def test_every_request_disarms_its_deadline(server):
    server.on(r"/ok", Script((200, {}, None)))
    server.on(r"/bad", Script((500, {}, None)))
    client = _client(server)
    live = transport.WATCHDOG._live
    for _ in range(5):
        client.get_json("/ok", "ok")
        _failure(lambda: client.get_json("/bad", "bad"))
    assert transport.WATCHDOG._live == live


def test_running_out_of_memory_names_what_was_being_done(server, monkeypatch):
    server.on(r"/", Script((200, {"x": "y" * 100}, None)))
    client = _client(server, max_response_mb=2)

    class Exhausted:
        def decode(self, body):
            raise MemoryError

    monkeypatch.setattr(client_module, "_decoder", Exhausted())
    decoding = _failure(lambda: client.get_json("/v1/a", "job a"))
    assert str(decoding) == (
        "talonic: job a failed: ran out of memory decoding the 0 MiB response; lower max_concurrent_requests "
        "or max_response_mb (now 2 MiB), or give the tap more memory"
    )
    monkeypatch.setattr(client._adapter, "send", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    reading = _failure(lambda: client.get_json("/v1/a", "job a"))
    assert str(reading).startswith("talonic: job a failed: ran out of memory reading the response; ")


def test_a_bug_below_the_client_is_raised_as_itself(server, monkeypatch):
    client = _client(server)
    monkeypatch.setattr(client._adapter, "send", lambda *a, **k: {}["no such key"])
    with pytest.raises(KeyError):
        client.get_json("/v1/a", "job a")


# -- network errors, one by one ---------------------------------------------------------------------------


def _wrapped(inner: BaseException) -> requests.ConnectionError:
    """How requests reports a connection failure: its own error around urllib3's, around the OS's."""
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", reason=inner))


WHERE = "talonic.base_url https://svc.example"


@pytest.mark.parametrize(
    ("exc", "retried", "message"),
    [
        (requests.ReadTimeout(), "retry", "timed out after 120 s (read_timeout)"),
        (
            _wrapped(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")),
            "retry",
            "timed out after 120 s (read_timeout)",
        ),
        (requests.ConnectTimeout(), "retry", f"{WHERE}: timed out connecting after 10 s (connect_timeout)"),
        (_wrapped(ConnectionRefusedError(111, "refused")), "unreachable", f"{WHERE}: connection refused"),
        (
            _wrapped(socket.gaierror(-2, "Name or service not known")),
            "unreachable",
            f"{WHERE}: host name not found (DNS)",
        ),
        (
            requests.ConnectionError(OSError(errno.EHOSTUNREACH, "no route")),
            "unreachable",
            f"{WHERE}: host unreachable",
        ),
        (requests.ConnectionError(OSError(errno.ENETUNREACH, "no net")), "unreachable", f"{WHERE}: host unreachable"),
        (requests.ConnectionError(ConnectionResetError(104, "reset")), "retry", "connection failed (ConnectionError)"),
        (requests.exceptions.ChunkedEncodingError(), "retry", "connection dropped while reading the response"),
        (
            requests.exceptions.InvalidHeader("bad header value: secret"),
            "fail",
            "request could not be sent (InvalidHeader)",
        ),
        (
            requests.exceptions.ContentDecodingError(),
            "fail",
            "the response body does not decompress (Content-Encoding ?)",
        ),
    ],
)
def test_each_network_error_is_named_and_retried_or_not(exc, retried, message):
    client = ApiClient("talonic", "https://svc.example", setting="talonic.base_url")
    result = client._describe(exc, "job a", Deadline(120, 10))
    error = result.error if isinstance(result, client_module.Retry) else result
    assert isinstance(error, ApiError) and (error.source, error.what) == ("talonic", "job a")
    assert error.vendor_message == message
    assert isinstance(result, client_module.Retry) == (retried != "fail")
    assert error.retryable == (retried != "fail") and not error.source_wide
    if retried != "fail":
        assert result.unreachable == (retried == "unreachable")


def test_an_overdue_response_is_a_read_timeout_whatever_was_raised():
    client = ApiClient("talonic", "https://svc.example", setting="talonic.base_url", read_timeout=3)
    timer = Deadline(3, 1)
    timer.fired = True
    result = client._describe(requests.ConnectionError("connection closed"), "job a", timer)
    assert (
        isinstance(result, client_module.Retry) and result.error.vendor_message == "timed out after 3 s (read_timeout)"
    )


def test_what_is_not_a_network_error_is_left_to_the_caller():
    client = ApiClient("talonic", "https://svc.example", setting="talonic.base_url")
    assert client._describe(KeyError("x"), "job a", Deadline(120, 10)) is None
    assert client._network_error(KeyError("x"), "job a", Deadline(120, 10)) is None


def test_a_description_that_fails_falls_back_to_the_exception_type(monkeypatch):
    client = ApiClient("talonic", "https://svc.example", setting="talonic.base_url")
    monkeypatch.setattr(client, "_describe", lambda *a: [][0])
    error = client._network_error(requests.ConnectionError("x"), "job a", Deadline(120, 10))
    assert isinstance(error, ApiError) and (error.source, error.what) == ("talonic", "job a")
    assert error.vendor_message == "request failed (ConnectionError)"


def test_causes_are_found_in_arguments_causes_and_contexts_but_not_forever():
    assert client_module._caused_by(Exception(ValueError("inside")), (ValueError,))
    caused = RuntimeError("outer")
    caused.__cause__ = ValueError()
    assert client_module._caused_by(caused, (ValueError,))
    context = RuntimeError("outer")
    context.__context__ = ValueError()
    assert client_module._caused_by(context, (ValueError,))
    assert not client_module._caused_by(RuntimeError("x"), (ValueError,))
    loop = RuntimeError("a")
    loop.__cause__ = loop
    assert not client_module._caused_by(loop, (ValueError,))


def test_parse_reset_reads_deltas_epochs_and_milliseconds():
    now = 1_700_000_000.0
    assert client_module.parse_reset("30", now=now) == 30.0
    assert client_module.parse_reset("999999999", now=now) == 999999999.0  # below 1e9: a delta in seconds
    assert client_module.parse_reset("1000000000", now=now) == 0.0  # 1e9 and above: epoch seconds (2001)
    assert client_module.parse_reset("-5", now=now) == 0.0
    assert client_module.parse_reset(f"{now - 10:.0f}", now=now) == 0.0
    assert client_module.parse_reset(f"{(now + 90) * 1000:.0f}", now=now) == pytest.approx(90.0)
    assert client_module.parse_reset("2023-11-14T22:14:20", now=now) == pytest.approx(60.0)
    assert client_module.parse_reset("", now=now) is None and client_module.parse_reset(None, now=now) is None


# -- how long it waits ----------------------------------------------------------------------------------


class _Sleeps:
    """backoff's view of time.sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps(monkeypatch) -> _Sleeps:
    import backoff._sync

    fake = _Sleeps()
    monkeypatch.setattr(backoff._sync, "time", fake)
    return fake


def test_backoff_starts_at_one_second_doubles_with_full_jitter_and_stops_at_max_retry_wait(server, sleeps, monkeypatch):
    ranges: list[tuple[float, float]] = []
    monkeypatch.setattr(client_module.random, "uniform", lambda low, high: ranges.append((low, high)) or high)
    server.on(r"/", Script((500, {"message": "boom"}, None)))
    error = _failure(_client(server, max_retries=5, max_retry_wait=5).get_json, "/v1/a", "a")
    assert error.attempts == 6
    assert ranges == [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0), (2.5, 5.0)]
    assert sleeps.waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_an_unreachable_host_waits_one_then_two_seconds(sleeps):
    client = ApiClient(
        "talonic", f"http://127.0.0.1:{_closed_port()}", setting="talonic.base_url", max_retries=6, max_retry_wait=60
    )
    error = _failure(client.get_json, "/v1/jobs/a", "job a")
    assert error.attempts == 3 and sleeps.waits == [1.0, 2.0]


def test_a_hint_past_the_cap_on_a_retryable_answer_ends_the_source_a_hint_within_it_is_waited(server, sleeps):
    server.on(r"/", Script((503, {}, {"Retry-After": "4"}), (200, {"ok": 1}, None)))
    assert _client(server, max_retries=2, max_retry_wait=4).get_json("/v1/a", "a") == {"ok": 1}
    assert sleeps.waits == [4.0]


# -- where requests may go --------------------------------------------------------------------------------


def test_an_absolute_url_is_followed_only_on_the_configured_origin(server):
    server.on(r"/", Script((200, {"ok": 1}, None)))
    client = _client(server)
    assert client.get_json(server.url + "/v1/next?page=2", "page 2") == {"ok": 1}
    port = server.url.rsplit(":", 1)[1]
    for elsewhere in (f"http://127.0.0.2:{port}/v1/next", f"https://127.0.0.1:{port}/v1/next", "http://127.0.0.1:1/x"):
        error = _failure(client.get_json, elsewhere, "page 3")
        assert isinstance(error, ApiError) and (error.source, error.what) == ("talonic", "page 3")
        host = elsewhere.split("/")[2]
        assert error.vendor_message == f"refused to send a request to {elsewhere.split(':')[0]}://{host}"
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/v1/jobs/../admin", "its path changes when normalised (a dot segment)"),
        ("/v1/jobs/./a", "its path changes when normalised (a dot segment)"),
        ("/v1/jobs/%2e%2e/admin", "its path changes when normalised (a dot segment)"),
        ("/v1/jobs/%252e%252e/admin", "a path segment is not one plain segment"),
        ("/v1/jobs/a%2Fb", "a path segment is not one plain segment"),
        ("/v1/jobs/a%5Cb", "a path segment is not one plain segment"),
        ("/v1/jobs/a%0Ab", "a path segment is not one plain segment"),
        ("/v1/jobs/a%C2%85b", "a path segment is not one plain segment"),
    ],
)
def test_a_path_that_would_reach_another_resource_is_never_sent(server, path, problem):
    server.on(r"/", Script((200, {}, None)))
    error = _failure(_client(server).get_json, path, "job a")
    assert isinstance(error, ApiError) and error.vendor_message.startswith(f"refused to send a request to {server.url}")
    assert problem in error.vendor_message
    assert server.requests == []


# -- request metrics --------------------------------------------------------------------------------------


def test_request_metrics_count_and_time_each_kind_and_outcome(caplog):
    stats = client_module.RequestStats("talonic")
    with caplog.at_level(logging.DEBUG, logger="singer_sdk.metrics"):
        stats.add("job", 0.1234567, 200)
        stats.add("job", 0.3, 201)
        stats.add("job", 2.0, 500)
        stats.add("listing", 0.5, None)
        each = [r.args[0].to_dict() for r in caplog.records]
        caplog.clear()
        stats.flush()
        totals = [(r.levelno, r.args[0].to_dict()) for r in caplog.records]
        caplog.clear()
        stats.flush()  # nothing counted since: nothing logged
        assert caplog.records == []
    # Each request: one timer at DEBUG, its status as a tag.
    assert [(p["type"], p["value"], p["tags"]["http_status_code"]) for p in each] == [
        ("timer", 0.123457, 200),
        ("timer", 0.3, 201),
        ("timer", 2.0, 500),
        ("timer", 0.5, None),
    ]
    assert {p["tags"]["status"] for p in each[:2]} == {"succeeded"} and each[2]["tags"]["status"] == "failed"
    # The totals at INFO: a timer and a counter per kind and outcome.
    assert {level for level, _ in totals} == {logging.INFO}
    points = {(p["type"], p["tags"]["endpoint"], p["tags"]["status"]): p for _, p in totals}
    assert len(totals) == 6 and len(points) == 6
    timer = points[("timer", "job", "succeeded")]
    assert timer["metric"] == "http_request_duration" and timer["tags"]["stream"] == "talonic"
    assert timer["value"] == 0.423457 and timer["tags"]["requests"] == 2
    assert timer["tags"]["mean_seconds"] == 0.211728 and timer["tags"]["max_seconds"] == 0.3
    assert points[("timer", "job", "failed")]["tags"]["max_seconds"] == 2.0
    counts = {key[1:]: p["value"] for key, p in points.items() if key[0] == "counter"}
    assert counts == {("job", "succeeded"): 2, ("job", "failed"): 1, ("listing", "failed"): 1}
    assert points[("counter", "job", "failed")]["metric"] == "http_request_count"


def test_request_metrics_are_reported_at_most_once_a_minute(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(client_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    stats = client_module.RequestStats("talonic")
    with caplog.at_level(logging.INFO, logger="singer_sdk.metrics"):
        stats.add("job", 0.1, 200)
        now[0] += 59.9
        stats.add("job", 0.1, 200)
        assert caplog.records == []
        now[0] += 0.1
        stats.add("job", 0.1, 200)
        assert [r.args[0].value for r in caplog.records] == [0.3, 3]


def test_has_control_is_exactly_c0_del_and_c1() -> None:
    controls = {chr(cp) for cp in range(0x20)} | {chr(cp) for cp in range(0x7F, 0xA0)}
    for cp in range(0x300):
        char = chr(cp)
        assert client_module.has_control(f"job{char}id") is (char in controls), hex(cp)
    assert client_module.has_control("") is False
    assert client_module.has_control("\u2028") is False  # a line separator is not a C0/C1 control


# -- the lean send: what requests' Session would have sent, minus cookies and ~/.netrc ---------------------

_segment = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_value = st.one_of(_segment, st.integers(), st.lists(_segment, max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.lists(_segment, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    params=st.none() | st.dictionaries(_segment, _value, max_size=4),
    form=st.none() | st.dictionaries(_segment, _segment, max_size=3),
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "Accept", "X-Api-Key", "api-key"]),
        _segment.map(lambda v: "".join(c for c in v if " " <= c <= "~")),
        max_size=3,
    ),
)
def test_a_prepared_request_is_the_one_requests_would_send(path, params, form, headers) -> None:
    client = ApiClient("talonic", "http://127.0.0.1:9/base", setting="talonic.base_url")
    url = client.base_url + path
    try:
        ours = client._prepare(url, params, form, headers)
    except Exception as exc:  # requests refuses the same URLs the same way
        with pytest.raises(type(exc)):
            _as_requests_would(client, url, params, form, headers)
        return
    theirs = _as_requests_would(client, url, params, form, headers)
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(ours.headers) == dict(theirs.headers)


def _as_requests_would(client: ApiClient, url: str, params: t.Any, form: t.Any, headers: dict) -> t.Any:
    session = client.session
    request = requests.Request("POST" if form is not None else "GET", url, params=params, data=form, headers=headers)
    return session.prepare_request(request)


def test_the_session_hooks_see_every_response_and_no_cookie_is_kept(server) -> None:
    server.on(r"/", Script((200, {"x": 1}, {"Set-Cookie": "sid=abc; Path=/"}), (200, {"x": 2}, None)))
    client = _client(server)
    seen: list[int] = []
    client.session.hooks["response"].append(lambda response, **kw: seen.append(response.status_code))
    assert client.get_json("/v1/a", "job a") == {"x": 1}
    assert client.get_json("/v1/b", "job b") == {"x": 2}
    assert seen == [200, 200]
    assert [("cookie" in {k.lower() for k in request.headers}) for request in server.requests] == [False, False]


_url_chars = st.sampled_from([*"aZ09._~-!$&'()*+,;=:@/%\\?#[] \x00\x85é", "%2e", "%2E", "%2f", "..", "/./", "/../"])


@settings(max_examples=2000, deadline=None)
@given(
    host=st.sampled_from(
        [
            "127.0.0.1:8080",
            "api.example.com",
            "a.b",
            "[::1]:80",
            "user@host",
            "HOST",
            "h:99999",
            "h:65535",
            "h:65536",
            "h:0",
        ]
    ),
    scheme=st.sampled_from(["http", "https", "HTTP", "ftp"]),
    path=st.lists(_url_chars, max_size=20).map("".join),
)
def test_the_plain_url_shortcut_agrees_with_the_full_check(host, scheme, path) -> None:
    url = f"{scheme}://{host}/{path}"
    if client_module._PLAIN_URL.fullmatch(url):
        # The shortcut only answers "nothing changes": the full check must find nothing either.
        assert _path_changes_in_full(url) is None, url


def _path_changes_in_full(url: str) -> str | None:
    original = client_module._PLAIN_URL
    client_module._PLAIN_URL = re.compile(r"(?!)")  # matches nothing: the full check runs
    try:
        return client_module._path_changes(url)
    finally:
        client_module._PLAIN_URL = original


def test_the_plain_url_shortcut_takes_the_urls_of_job_fetches() -> None:
    plain = [
        "http://127.0.0.1:8080/v1/jobs/3f2b9c1e-aaaa-bbbb-cccc-0123456789ab",
        "https://api.cognitedata.com/api/v1/projects/my-project/context/entitymatching/jobs/123",
        "https://api.talonic.com/v1/jobs/job_abc.1/results",
    ]
    assert all(client_module._PLAIN_URL.fullmatch(url) for url in plain)
    for url in ("http://h/v1/.x", "http://h/v1/%2e", "http://h/v1/a?b", "http://[::1]/a", "http://h/a b"):
        assert client_module._PLAIN_URL.fullmatch(url) is None, url
