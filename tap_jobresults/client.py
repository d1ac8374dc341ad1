"""One HTTP client for every source: polite retries, re-authentication, clear errors.

Why not the SDK's RESTStream request path: it re-sends the same prepared request on retry, so a
token refreshed during backoff is never used (sdk#3320); it ignores Retry-After (sdk#2012); it puts
whole response bodies into error messages; and it fetches one request at a time, while a job-result
tap spends its time waiting on many independent job fetches. So requests are built anew on every
attempt here, waits follow what the server asks for, and sources fetch jobs concurrently.

The error path, in order: `get_json` retries what `_attempt` raises as `Retry`; `_exchange` turns
anything the network stack raises into a named `ApiError` (`_network_error`, which never raises
itself); `_classify` turns an HTTP error answer into one. A wait the server asks for beyond
`max_retry_wait`, or several requests in a row still refused with 429 after their retries, end the
whole source for this run (`RateLimited`, source-wide): later calls fail at once, without a request.
The transport (response deadline, connection classes) is in transport.py; what may reach a log
line is decided in scrub.py.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import logging
import random
import re
import socket
import ssl
import threading
import time
import typing as t
import weakref
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import backoff
import msgspec
import requests
import urllib3.exceptions
import urllib3.util
from requests.hooks import dispatch_hook
from requests.structures import CaseInsensitiveDict
from singer_sdk import metrics

from tap_jobresults.errors import (
    ApiError,
    AuthError,
    MalformedPayload,
    NotFoundError,
    RateLimited,
    RedirectRefused,
    ResponseTooLarge,
    TapJobResultsError,
    TlsError,
)
from tap_jobresults.scrub import SECRETS, clip, escape, safe_url
from tap_jobresults.settings import DEFAULT_MAX_RESPONSE_MB
from tap_jobresults.transport import WATCHDOG, Adapter, Deadline, Overdue, armed

logger = logging.getLogger("tap-jobresults")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
TRANSIENT_EXCEPTIONS = (
    requests.ConnectionError,  # refused, reset, DNS, and ConnectTimeout
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # connection dropped mid-body
)
FIRST_WAIT = 1.0  # seconds; doubled per attempt, fully jittered, capped by max_retry_wait
# A host that refuses connections or has no DNS entry is a setting to fix, not a hiccup worth
# seven long waits: two quick retries (a restarting proxy), then the request fails.
UNREACHABLE_RETRIES = 2
UNREACHABLE_WAIT = 1.0
# Requests in a row whose retries all ended in 429: the source is over its quota, whatever the
# server said about when it resets; it stops for this run.
MAX_RATE_LIMITED_IN_A_ROW = 3
CHUNK = 1 << 20

_decoder = msgspec.json.Decoder()
_ALL_STATS: weakref.WeakSet[RequestStats] = weakref.WeakSet()


class Retry(Exception):
    """Internal: one attempt failed in a way worth repeating."""

    def __init__(self, error: ApiError, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.unreachable = unreachable


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def parse_reset(value: str | None, now: float | None = None) -> float | None:
    """Talonic's X-RateLimit-Reset: epoch seconds (SDKs) or ISO 8601 (docs). Returns seconds to wait."""
    if not value:
        return None
    now = now if now is not None else time.time()
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, when.timestamp() - now)
    # Epoch seconds; tolerate a delta (small number) and epoch milliseconds.
    if number > 1e12:
        number /= 1000.0
    if number < 1e9:
        return max(0.0, number)
    return max(0.0, number - now)


def _error_fields(body: t.Any) -> tuple[str | None, str | None, bool | None, str | None]:
    """(code, message, retryable, request_id) from any of the vendors' error envelopes.

    CDF: {"error": {"code", "message"}}; Clavata (grpc-gateway): {"code", "message", "details"};
    Talonic: {"statusCode", "code", "error", "message", "retryable", "request_id"}.
    """
    if not isinstance(body, dict):
        return None, None, None, None
    error = body.get("error")
    inner: dict = error if isinstance(error, dict) else body
    code = inner.get("code")
    message = inner.get("message")
    if message is None and isinstance(body.get("error"), str):
        message = body["error"]
    retryable = body.get("retryable") if isinstance(body.get("retryable"), bool) else None
    request_id = body.get("request_id") or inner.get("request_id")
    return (
        None if code is None else clip(str(code), 100),
        None if message is None else clip(str(message), 300),
        retryable,
        None if request_id is None else clip(str(request_id), 100),
    )


class ApiClient:
    """HTTP for one source. Thread-safe: job fetches run concurrently on one pooled session.

    `setting` names the config setting that holds `base_url` (e.g. "talonic.base_url"), so that a
    host that cannot be reached is reported as a setting to fix.
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        setting: str | None = None,
        auth: t.Callable[[], dict[str, str]] | None = None,
        refresh_auth: t.Callable[[str | None], None] | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        max_retries: int = 6,
        max_retry_wait: float = 120,
        max_response_mb: float = DEFAULT_MAX_RESPONSE_MB,
        honour_reset_header: bool = False,
        metrics_source: str | None = None,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        _register_url_secrets(self.base_url)
        self.setting = setting or f"{source} base_url"
        self._auth = auth
        self._refresh_auth = refresh_auth
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.max_response_mb = max_response_mb
        self.max_response_bytes = int(max_response_mb * (1 << 20))
        self.honour_reset_header = honour_reset_header
        self._origin = _origin(self.base_url)
        # Set when a request gave up because the host could not be reached, cleared by any answer:
        # the requests after it then try once instead of repeating the same wait for every job.
        self._unreachable = False
        # Rate limits: once the source is told to wait past max_retry_wait (or stays refused with
        # 429 request after request), every later call fails at once with the same error.
        self._state_lock = threading.Lock()
        self._stopped: RateLimited | None = None
        self._limited_in_a_row = 0
        self.stats = RequestStats(metrics_source or source)
        # The session holds the settings (headers, hooks, proxies, CA bundle); requests are sent
        # through its adapter directly (see _send).
        self.session = requests.Session()
        self._adapter = Adapter(pool_connections=1, pool_maxsize=max(pool_size, 1) + 2, max_retries=0)
        self.session.mount("https://", self._adapter)
        self.session.mount("http://", self._adapter)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "tap-jobresults"})
        # The environment's proxies (HTTPS_PROXY, NO_PROXY, ...) and CA bundle (REQUESTS_CA_BUNDLE),
        # read once: every request of this client goes to the one origin of base_url (redirects and
        # other hosts are refused), so they cannot differ from request to request, and requests
        # would otherwise look them up again on every call (a quarter of its time per request).
        environment = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        self.session.trust_env = False
        self.session.proxies = environment["proxies"]
        self.session.verify = environment["verify"]

    # -- public -------------------------------------------------------------------------------

    def get_json(
        self,
        path: str,
        what: str,
        *,
        params: dict[str, t.Any] | None = None,
        headers: dict[str, str] | None = None,
        decode_as: type | None = None,
        form: dict[str, str] | None = None,
    ) -> t.Any:
        """GET base_url + path (POST when `form` is given) and decode JSON, retrying what is
        transient. `what` names the job.

        With `decode_as` (a msgspec Struct), the body is checked against the documented shape while
        it is decoded; large arrays declared as `msgspec.Raw` stay undecoded slices of the body.
        """
        if path.startswith(("http://", "https://")):
            if _origin(path) != self._origin:  # credentials go to the configured host only
                raise ApiError(self.source, what, message=f"refused to send a request to {_host_port(path)}")
            url = path
        else:
            url = self.base_url + path
        if problem := _path_changes(url):
            raise ApiError(self.source, what, message=f"refused to send a request to {safe_url(url)}: {problem}")
        if self._stopped is not None:
            raise self._stopped.again(what)
        kind = "token" if form is not None else "listing" if params is not None else _kind_of(url)
        try:
            result = self._with_retries(url, what, params, headers, decode_as, form, kind)
        except ApiError as exc:
            self._count_rate_limit(exc)
            raise
        with self._state_lock:
            self._limited_in_a_row = 0
        return result

    def _count_rate_limit(self, exc: ApiError) -> None:
        """N requests in a row whose retries all ended in 429 stop the source."""
        if isinstance(exc, RateLimited):
            with self._state_lock:
                self._stopped = self._stopped or exc
            return
        with self._state_lock:
            self._limited_in_a_row = self._limited_in_a_row + 1 if exc.status == 429 else 0
            if self._limited_in_a_row < MAX_RATE_LIMITED_IN_A_ROW or self._stopped is not None:
                return
            self._stopped = RateLimited(
                self.source,
                exc.what,
                status=429,
                message=(
                    f"rate limited: {self._limited_in_a_row} requests in a row were still refused with HTTP 429 "
                    f"after their retries; {self.source} stops for this run, its pending jobs are fetched next run"
                ),
                attempts=exc.attempts,
            )
        raise self._stopped from None

    def _with_retries(
        self,
        url: str,
        what: str,
        params: t.Any,
        headers: dict[str, str] | None,
        decode_as: type | None,
        form: t.Any,
        kind: str,
    ) -> t.Any:
        attempts = 1
        unreachable = 0
        try:  # the first attempt, without the retry machinery's per-call cost
            return self._attempt(url, what, params, headers, decode_as, form, kind)
        except Retry as exc:
            first: Retry | None = exc

        def wait_gen() -> t.Generator[float, t.Any, None]:
            # backoff primes this generator (the 0.0 is discarded), then sends the Retry of each
            # failed attempt into it; the first failure happened before backoff took over.
            exc: Retry = yield 0.0
            attempt = 0
            while True:
                if exc.unreachable:
                    wait = min(UNREACHABLE_WAIT * unreachable, self.max_retry_wait)
                else:
                    ceiling = min(self.max_retry_wait, FIRST_WAIT * 2**attempt)
                    hinted = exc.retry_after
                    wait = (
                        min(hinted, self.max_retry_wait) if hinted is not None else random.uniform(ceiling / 2, ceiling)
                    )
                    attempt += 1
                exc = yield wait

        def give_up(exc: t.Any) -> bool:  # a Retry (the only exception backoff catches here)
            nonlocal unreachable
            if not exc.unreachable:
                return False
            unreachable += 1
            return self._unreachable or unreachable > min(UNREACHABLE_RETRIES, self.max_retries)

        def on_backoff(details: t.Any) -> None:
            exc = details["exception"]
            limit = min(UNREACHABLE_RETRIES, self.max_retries) if exc.unreachable else self.max_retries
            logger.warning(
                "%s; retry %d of %d in %.1f s",
                exc.error.describe(),
                unreachable if exc.unreachable else details["tries"],
                limit,
                details["wait"],
            )

        @backoff.on_exception(
            wait_gen,
            Retry,
            max_tries=self.max_retries + 1,
            jitter=None,
            giveup=give_up,
            on_backoff=on_backoff,
            logger=None,  # on_backoff logs each retry once; backoff's own log would repeat it
        )
        def attempt() -> t.Any:
            nonlocal attempts, first
            if first is not None:  # replay the first failure, so that backoff waits and logs as for any
                failed, first = first, None
                raise failed
            if self._stopped is not None:  # another request of the source hit a rate limit meanwhile
                raise self._stopped.again(what)
            attempts += 1
            return self._attempt(url, what, params, headers, decode_as, form, kind)

        try:
            return attempt()
        except Retry as exc:
            if exc.unreachable:
                self._unreachable = True
            exc.error.attempts = attempts
            raise exc.error from None

    # -- one attempt ----------------------------------------------------------------------------

    def _attempt(
        self,
        url: str,
        what: str,
        params: t.Any,
        headers: dict[str, str] | None,
        decode_as: type | None,
        form: t.Any,
        kind: str,
    ) -> t.Any:
        refreshed = False
        while True:
            request_headers = dict(headers or {})
            if self._auth is not None:
                request_headers.update(self._auth())  # fresh on every attempt: refreshed tokens are used
            started = time.monotonic()
            try:
                response, body = self._exchange(url, what, params, form, request_headers)
            except BaseException:
                self.stats.add(kind, time.monotonic() - started, None)
                raise
            self.stats.add(kind, time.monotonic() - started, response.status_code)
            self._unreachable = False
            if response.status_code == 401 and self._refresh_auth is not None and not refreshed:
                # An OAuth token may have been revoked or expired early: refresh once, then judge.
                # Given the token that was refused, concurrent 401s share one refresh.
                # It raises AuthError when no new token comes.
                self._refresh_auth(request_headers.get("Authorization"))
                refreshed = True
                continue
            break
        if 300 <= response.status_code < 400:
            raise self._redirect(response, what)
        if response.status_code >= 400:
            raise self._classify(response, body, what)
        size = len(body)
        try:
            if decode_as is not None:
                return msgspec.json.decode(body, type=decode_as)
            return _decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise MalformedPayload(self.source, what, str(exc)) from None
        except msgspec.DecodeError as exc:
            content_type = response.headers.get("Content-Type", "unknown content type")
            raise MalformedPayload(
                self.source, what, f"expected JSON, got {clip(content_type, 100)} that does not parse ({exc})"
            ) from None
        except MemoryError:
            del body
            raise self._out_of_memory(what, f"decoding the {size / (1 << 20):.0f} MiB response") from None

    def _exchange(
        self, url: str, what: str, params: t.Any, form: t.Any, headers: dict[str, str]
    ) -> tuple[requests.Response, bytearray]:
        """One request and its whole body, within the response deadline and the size cap."""
        timer = Deadline(self.read_timeout, self.connect_timeout)
        try:
            with armed(timer):
                response = self._send(url, params, form, headers)
            return response, self._read_body(response, what, timer)
        except TapJobResultsError:
            raise
        except MemoryError:
            raise self._out_of_memory(what, "reading the response") from None
        except Exception as exc:
            error = self._network_error(exc, what, timer)
            if error is None:
                raise
            raise error from None
        finally:
            WATCHDOG.disarm(timer)

    def _send(self, url: str, params: t.Any, form: t.Any, headers: dict[str, str]) -> requests.Response:
        """Send one request through the session's adapter, as `Session.request` would with
        stream=True and allow_redirects=False (a redirect would carry the credentials to its
        target), minus what this client never uses: the environment (read once, in __init__),
        ~/.netrc (the credential is in `headers`), cookies (no documented API sets one) and the
        redirect machinery. That layer costs about as much CPU per request as urllib3 itself,
        which on thousands of small job fetches is a tenth of the tap's time.

        The request is prepared by requests' own PreparedRequest (URL and parameter encoding,
        form bodies and their Content-Length), and the session's response hooks run as before."""
        response = self._adapter.send(
            self._prepare(url, params, form, headers),
            stream=True,
            timeout=self.timeout,
            verify=self.session.verify,
            cert=None,
            proxies=self.session.proxies,
        )
        return dispatch_hook("response", self.session.hooks, response)

    def _prepare(self, url: str, params: t.Any, form: t.Any, headers: dict[str, str]) -> requests.PreparedRequest:
        """The request `Session.prepare_request` would make, with no cookies and no ~/.netrc."""
        request = requests.PreparedRequest()
        request.method = "POST" if form is not None else "GET"
        request.prepare_url(url, params)
        merged = CaseInsensitiveDict(self.session.headers)
        merged.update(headers)
        request.prepare_headers(merged)  # and checks each header as requests does
        request.prepare_body(form, None)
        return request

    def _network_error(self, exc: Exception, what: str, timer: Deadline) -> Exception | None:
        """What the network stack raised, as a named error (or a Retry of one); None for what is
        not a network error at all (a bug: the caller re-raises it). Never raises itself: whatever
        the exception graph holds (strings where exceptions are expected, cycles, properties that
        raise), the description falls back to the exception's type."""
        try:
            return self._describe(exc, what, timer)
        except Exception:
            return ApiError(self.source, what, message=f"request failed ({type(exc).__name__})")

    def _describe(self, exc: Exception, what: str, timer: Deadline) -> Exception | None:
        where = f"{self.setting} {safe_url(self.base_url)}"
        if timer.overdue() or _caused_by(exc, (urllib3.exceptions.ReadTimeoutError, requests.ReadTimeout)):
            message = f"timed out after {self.read_timeout:g} s (read_timeout)"
            return Retry(ApiError(self.source, what, message=message, retryable=True))
        if isinstance(exc, requests.ConnectTimeout):
            message = f"{where}: timed out connecting after {self.connect_timeout:g} s (connect_timeout)"
            return Retry(ApiError(self.source, what, message=message, retryable=True))
        if problem := _tls_problem(exc):
            return TlsError(
                self.source,
                what,
                message=(
                    f"{where}: TLS failed: {problem}; nothing was sent. If the certificate is signed by a private "
                    f"CA (a corporate proxy), point REQUESTS_CA_BUNDLE at that CA's bundle; {self.source} stops "
                    "for this run"
                ),
            )
        if _caused_by(exc, (UnicodeError,)):
            error = ApiError(
                self.source,
                what,
                message=(
                    "the request could not be encoded: a credential or header value holds a character that "
                    "HTTP headers cannot carry (outside Latin-1); check the source's key or token"
                ),
            )
            error.source_wide = True  # the same for every request of the source
            return error
        if isinstance(exc, requests.ConnectionError) and (reason := _unreachable_reason(exc)):
            error = ApiError(self.source, what, message=f"{where}: {reason}", retryable=True)
            return Retry(error, unreachable=True)
        if isinstance(exc, TRANSIENT_EXCEPTIONS):
            return Retry(ApiError(self.source, what, message=_describe_network_error(exc), retryable=True))
        if isinstance(exc, requests.exceptions.ContentDecodingError):
            encoding = clip(str(getattr(exc.response, "headers", {}).get("Content-Encoding", "?")), 50)
            return ApiError(
                self.source, what, message=f"the response body does not decompress (Content-Encoding {encoding})"
            )
        if isinstance(exc, requests.RequestException):  # e.g. InvalidHeader: its text would quote the header
            return ApiError(self.source, what, message=f"request could not be sent ({type(exc).__name__})")
        return None

    def _read_body(self, response: requests.Response, what: str, timer: Deadline) -> bytearray:
        """The body in one growing buffer: `response.content` joins chunks into a second copy, which
        for a job payload of hundreds of MB doubles the peak. msgspec decodes the buffer in place and
        its Raw slices keep referring to it, so a job costs about its body's size in memory.

        Bytes are counted as they come out of the decompressor, so the cap holds for a small gzip
        body that inflates to gigabytes; past the cap or the deadline, reading stops and the
        connection is closed (not drained)."""
        cap = self.max_response_bytes
        body = bytearray()
        try:
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            declared = response.headers.get("Content-Length", "")
            if encoding in ("", "identity") and declared.isdigit() and int(declared) > cap:
                raise self._too_large(what)
            for chunk in response.iter_content(chunk_size=CHUNK):
                if len(body) + len(chunk) > cap:
                    raise self._too_large(what)
                body += chunk
                if timer.overdue():
                    raise Overdue
            if timer.fired:  # cut at its deadline: what arrived (headers, an "end" of body) is not the response
                raise Overdue
        except requests.exceptions.ContentDecodingError as exc:
            exc.response = exc.response if exc.response is not None else response  # its Content-Encoding names it
            raise
        except MemoryError:
            got = len(body)
            del body
            raise self._out_of_memory(what, f"reading the response ({got / (1 << 20):.0f} MiB read)") from None
        finally:
            response.close()
        return body

    def _too_large(self, what: str) -> ResponseTooLarge:
        return ResponseTooLarge(
            self.source,
            what,
            message=(
                f"the response is larger than {self.max_response_mb:g} MiB (max_response_mb); reading stopped. "
                "Raise max_response_mb if this job is really that big"
            ),
        )

    def _out_of_memory(self, what: str, doing: str) -> ApiError:
        return ApiError(
            self.source,
            what,
            message=(
                f"ran out of memory {doing}; lower max_concurrent_requests or max_response_mb "
                f"(now {self.max_response_mb:g} MiB), or give the tap more memory"
            ),
        )

    def _redirect(self, response: requests.Response, what: str) -> ApiError:
        location = response.headers.get("Location")
        target = _host_port(urljoin(response.url or self.base_url, location)) if location else None
        where = f"to {target}" if target else "without a Location"
        return RedirectRefused(
            self.source,
            what,
            message=(
                f"redirected (HTTP {response.status_code}) {where}; redirects are not followed, so that "
                f"credentials stay on the configured host (is {self.setting} right?)"
            ),
        )

    def _classify(self, response: requests.Response, raw: bytes | bytearray, what: str) -> Exception:
        status = response.status_code
        try:
            body = _decoder.decode(raw)
        except msgspec.DecodeError:
            body = None
        code, message, retryable_flag, body_request_id = _error_fields(body)
        if message is None and body is None:
            message = clip(response.reason, 300) if response.reason else None
        header_id = response.headers.get("x-request-id") or response.headers.get("request-id")
        request_id = clip(header_id, 100) if header_id else body_request_id
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if self.honour_reset_header and status == 429:
            # Talonic's quota resets at X-RateLimit-Reset (a daily quota: the next UTC midnight); a
            # Retry-After sooner than that would only meet the same refusal: the later one counts.
            reset = parse_reset(response.headers.get("X-RateLimit-Reset"))
            if reset is not None and (retry_after is None or reset > retry_after):
                retry_after = reset
        auto_retryable = response.headers.get("cdf-is-auto-retryable", "").lower() == "true"
        retryable = (status in RETRY_STATUSES or auto_retryable) and retryable_flag is not False
        if retryable and retry_after is not None and retry_after > self.max_retry_wait:
            return self._rate_limited(status, what, retry_after, code, message, request_id)
        kind = AuthError if status in (401, 403) else NotFoundError if status == 404 else ApiError
        error = kind(
            self.source,
            what,
            status=status,
            code=code,
            message=message,
            request_id=request_id,
            retryable=retryable,
            retry_after=retry_after,
        )
        return Retry(error, retry_after) if retryable else error

    def _rate_limited(
        self, status: int, what: str, wait: float, code: str | None, vendor: str | None, request_id: str | None
    ) -> RateLimited:
        """The server asks for a wait beyond max_retry_wait: no job of this source can be fetched
        before then, so the source stops now instead of retrying every job at the cap."""
        try:
            until = datetime.fromtimestamp(time.time() + wait, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, ValueError, OSError):
            until = "a time beyond year 9999"
        state = "rate limited" if status == 429 else "unavailable"
        message = (
            f"{state} until {until} (the server asks for a wait of {_duration(wait)}, beyond max_retry_wait "
            f"{self.max_retry_wait:g} s); {self.source} stops for this run, its pending jobs are fetched next run"
        )
        if vendor:
            message += f" (server: {vendor})"
        return RateLimited(self.source, what, status=status, code=code, message=message, request_id=request_id)


def _register_url_secrets(url: str) -> None:
    """A query value or password in a configured URL is a credential (`?api-key=...`): known as a
    secret, it is scrubbed from every log line (urllib3 logs request URLs at DEBUG)."""
    try:
        parts = urlsplit(url)
        SECRETS.add(parts.password)
    except ValueError:
        return
    for _, value in parse_qsl(parts.query):
        SECRETS.add(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 1e9:
        return f"{seconds / 3600:.1f} h"
    return "forever"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _host_port(url: str) -> str:
    """Where a URL points, without its path or query (which could carry anything)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    text = f"{parts.scheme}://{host}:{port}" if port else f"{parts.scheme}://{host}"
    return clip(text, 200)


def _chain(exc: BaseException) -> t.Iterator[BaseException]:
    """An exception, what it wraps (requests -> urllib3 -> socket), and its causes.

    Only exceptions are followed: `.reason` is a string on ssl.SSLError and UnicodeError, and
    `.args` may hold anything. Bounded, and safe from cycles and from attributes that raise."""
    seen: set[int] = set()
    todo: list[t.Any] = [exc]
    while todo and len(seen) < 50:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        for name in ("__cause__", "__context__", "reason"):
            with contextlib.suppress(Exception):  # a property that raises: nothing to follow there
                todo.append(getattr(item, name, None))
        with contextlib.suppress(Exception):
            todo += [arg for arg in tuple(item.args) if isinstance(arg, BaseException)]


_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})


def _tls_problem(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, if it did and it will fail the same way again (a certificate
    not trusted, expired or for another host; a plain-HTTP port): retrying cannot help."""
    for item in _chain(exc):
        if isinstance(item, ssl.SSLCertVerificationError):
            detail = getattr(item, "verify_message", None) or getattr(item, "reason", None) or "not trusted"
            return f"the server's certificate was refused ({escape(str(detail))[:200]})"
        if isinstance(item, ssl.CertificateError):
            return f"the server's certificate was refused ({escape(str(item))[:200]})"
        if isinstance(item, ssl.SSLError) and str(getattr(item, "reason", "")) in _NOT_TLS:
            return "the server did not answer with TLS (is it a plain http:// port?)"
    return None


def _path_changes(url: str) -> str | None:
    """Why a request URL would not reach the path it was built with, or None.

    urllib3 removes dot segments ('/jobs/../results' is sent as '/results'), and servers and
    proxies may decode '%2e' or '%2f' before routing: a path with such a segment is never sent."""
    if _PLAIN_URL.fullmatch(url):  # nothing to normalise or decode: every job fetch of a plain ID
        return None
    try:
        path = urlsplit(url).path
        normalised = urllib3.util.parse_url(url).path or ""
    except ValueError:
        return "the URL does not parse"
    if normalised != path:
        return "its path changes when normalised (a dot segment)"
    for segment in path.split("/"):
        decoded = unquote(unquote(segment))
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or has_control(decoded):
            return "a path segment is not one plain segment (dot segment, encoded slash or control character)"
    return None


# A URL that no normalisation changes: a plain host, and segments of characters urllib3 sends as they
# are, none starting with a dot (so no dot segment) and none percent-encoded.
_SEGMENT_CHARS = r"A-Za-z0-9_~!$&'()*+,;=:@\-"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PLAIN_URL = re.compile(rf"https?://[A-Za-z0-9.-]+(?::{_PORT})?(?:/[{_SEGMENT_CHARS}][{_SEGMENT_CHARS}.]*)*/?")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """A C0 or C1 control character (or DEL) anywhere in `text`."""
    return _CONTROL.search(text) is not None


def _kind_of(url: str) -> str:
    return "results" if urlsplit(url).path.rstrip("/").endswith("/results") else "job"


def flush_request_metrics() -> None:
    """Log the request metrics of every client counted since their last report."""
    for stats in list(_ALL_STATS):
        stats.flush()


class RequestStats:
    """Per endpoint kind (listing, job, results, token): requests made, by outcome, and their time.

    Reported in the SDK's METRIC form (singer_sdk.metrics, as RESTStream does): one
    `http_request_duration` timer and one `http_request_count` counter per kind and outcome, at
    most once a minute and at the end of the source's sync, so a slow vendor shows without a log
    line per request; each request's own timer goes to DEBUG."""

    INTERVAL = 60.0

    def __init__(self, source: str) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], list[float]] = {}  # (kind, status) -> [count, seconds, max]
        self._last = time.monotonic()
        self._log = metrics.get_metrics_logger()
        _ALL_STATS.add(self)

    def add(self, kind: str, seconds: float, status: int | None) -> None:
        outcome = metrics.Status.SUCCEEDED.value if status is not None and status < 400 else metrics.Status.FAILED.value
        with self._lock:
            entry = self._totals.setdefault((kind, outcome), [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += seconds
            entry[2] = max(entry[2], seconds)
            due = time.monotonic() - self._last >= self.INTERVAL
        if self._log.isEnabledFor(logging.DEBUG):
            tags = {**self._tags(kind, outcome), metrics.Tag.HTTP_STATUS_CODE: status}
            point = metrics.Point("timer", metrics.Metric.HTTP_REQUEST_DURATION, round(seconds, 6), tags)
            self._log.debug("METRIC: %s", point)
        if due:
            self.flush()

    def _tags(self, kind: str, outcome: str) -> dict[str, t.Any]:
        return {metrics.Tag.STREAM: self.source, metrics.Tag.ENDPOINT: kind, metrics.Tag.STATUS: outcome}

    def flush(self) -> None:
        """Log what was counted since the last flush (nothing when no request was made)."""
        with self._lock:
            totals, self._totals = self._totals, {}
            self._last = time.monotonic()
        for (kind, outcome), (count, seconds, longest) in sorted(totals.items()):
            tags = self._tags(kind, outcome)
            timer_tags = {**tags, "requests": int(count), "mean_seconds": round(seconds / count, 6)}
            timer_tags["max_seconds"] = round(longest, 6)
            metrics.log(
                self._log, metrics.Point("timer", metrics.Metric.HTTP_REQUEST_DURATION, round(seconds, 6), timer_tags)
            )
            metrics.log(self._log, metrics.Point("counter", metrics.Metric.HTTP_REQUEST_COUNT, int(count), tags))


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(item, kinds) for item in _chain(exc))


def _unreachable_reason(exc: BaseException) -> str | None:
    for item in _chain(exc):
        if isinstance(item, (socket.gaierror, urllib3.exceptions.NameResolutionError)):
            return "host name not found (DNS)"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, OSError) and item.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "host unreachable"
    return None


def _describe_network_error(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped while reading the response"
    return "connection failed (" + type(exc).__name__ + ")"
