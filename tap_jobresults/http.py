"""One HTTP client for every source: timeouts, polite retries, re-authentication, clear errors.

Why not the SDK's RESTStream request path: it re-sends the same prepared request on retry, so a
token refreshed during backoff is never used (sdk#3320); it ignores Retry-After (sdk#2012); it puts
whole response bodies into error messages; and it fetches one request at a time, while a job-result
tap spends its time waiting on many independent job fetches. So requests are built anew on every
attempt here, waits follow what the server asks for, and sources fetch jobs concurrently.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import typing as t
from datetime import datetime, timezone

import backoff
import msgspec
import requests
from requests.adapters import HTTPAdapter

from tap_jobresults.errors import ApiError, AuthError, MalformedPayload, NotFoundError

logger = logging.getLogger("tap-jobresults")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
TRANSIENT_EXCEPTIONS = (
    requests.ConnectionError,  # refused, reset, DNS, and ConnectTimeout
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # connection dropped mid-body
)
FIRST_WAIT = 1.0  # seconds; doubled per attempt, fully jittered, capped by max_retry_wait

_decoder = msgspec.json.Decoder()


class Retry(Exception):
    """Internal: one attempt failed in a way worth repeating."""

    def __init__(self, error: ApiError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class SecretRegistry:
    """Every secret the tap knows (config values, issued tokens), to scrub from any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: t.Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)
                self._secrets.add(repr(value)[1:-1])  # as it appears escaped inside other reprs
                if value.strip() and value.strip() != value:
                    self._secrets.add(value.strip())

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, "***")
        return text


SECRETS = SecretRegistry()


class ScrubSecretsFilter(logging.Filter):
    """Last line of defence: no log record leaves the process with a known secret in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = SECRETS.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            text = SECRETS.scrub(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):
                record.exc_info = None
                record.msg = f"{record.msg} ({text})"
        return True


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
    if isinstance(message, str) and len(message) > 300:
        message = message[:300] + "..."
    retryable = body.get("retryable") if isinstance(body.get("retryable"), bool) else None
    request_id = body.get("request_id") or inner.get("request_id")
    return (
        None if code is None else str(code),
        None if message is None else SECRETS.scrub(str(message)),
        retryable,
        None if request_id is None else str(request_id),
    )


class ApiClient:
    """HTTP for one source. Thread-safe: job fetches run concurrently on one pooled session."""

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        auth: t.Callable[[], dict[str, str]] | None = None,
        refresh_auth: t.Callable[[], bool] | None = None,
        headers: dict[str, str] | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        max_retries: int = 6,
        max_retry_wait: float = 120,
        honour_reset_header: bool = False,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self._auth = auth
        self._refresh_auth = refresh_auth
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.honour_reset_header = honour_reset_header
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1) + 2, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "tap-jobresults"})
        self.session.headers.update(headers or {})

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
        url = path if path.startswith("http") else self.base_url + path

        def wait_gen() -> t.Generator[float, t.Any, None]:
            # backoff sends the exception of each failed attempt into this generator.
            exc = yield 0.0
            attempt = 0
            while True:
                ceiling = min(self.max_retry_wait, FIRST_WAIT * 2**attempt)
                hinted = getattr(exc, "retry_after", None)
                wait = min(hinted, self.max_retry_wait) if hinted is not None else random.uniform(ceiling / 2, ceiling)
                attempt += 1
                exc = yield wait

        def on_backoff(details: t.Any) -> None:
            logger.warning(
                "%s; retry %d of %d in %.1f s",
                details["exception"].error.describe(),
                details["tries"],
                self.max_retries,
                details["wait"],
            )

        @backoff.on_exception(
            wait_gen,
            Retry,
            max_tries=self.max_retries + 1,
            jitter=None,
            on_backoff=on_backoff,
        )
        def attempt() -> t.Any:
            return self._attempt(url, what, params, headers, decode_as, form)

        try:
            return attempt()
        except Retry as exc:
            exc.error.attempts = self.max_retries + 1
            raise exc.error from None

    # -- one attempt ----------------------------------------------------------------------------

    def _attempt(
        self, url: str, what: str, params: t.Any, headers: dict[str, str] | None, decode_as: type | None, form: t.Any
    ) -> t.Any:
        refreshed = False
        while True:
            request_headers = dict(headers or {})
            if self._auth is not None:
                request_headers.update(self._auth())  # fresh on every attempt: refreshed tokens are used
            try:
                response = self.session.request(
                    "POST" if form is not None else "GET",
                    url,
                    params=params,
                    data=form,
                    headers=request_headers,
                    timeout=self.timeout,
                    stream=True,
                )
                body = _read_body(response)
            except TRANSIENT_EXCEPTIONS as exc:
                raise Retry(ApiError(self.source, what, message=_describe_network_error(exc), retryable=True)) from None
            except requests.RequestException as exc:  # e.g. InvalidHeader: its text would quote the header value
                raise ApiError(self.source, what, message=f"request could not be sent ({type(exc).__name__})") from None
            if response.status_code == 401 and self._refresh_auth is not None and not refreshed:
                # An OAuth token may have been revoked or expired early: refresh once, then judge.
                refreshed = self._refresh_auth()
                if refreshed:
                    continue
            break
        if response.status_code >= 400:
            raise self._classify(response, body, what)
        try:
            if decode_as is not None:
                return msgspec.json.decode(body, type=decode_as)
            return _decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise MalformedPayload(self.source, what, str(exc)) from None
        except msgspec.DecodeError as exc:
            content_type = response.headers.get("Content-Type", "unknown content type")
            raise MalformedPayload(
                self.source, what, f"expected JSON, got {content_type} that does not parse ({exc})"
            ) from None

    def _classify(self, response: requests.Response, raw: bytes | bytearray, what: str) -> Exception:
        status = response.status_code
        try:
            body = _decoder.decode(raw)
        except msgspec.DecodeError:
            body = None
        code, message, retryable_flag, body_request_id = _error_fields(body)
        if message is None and body is None:
            message = response.reason or None
        request_id = response.headers.get("x-request-id") or response.headers.get("request-id") or body_request_id
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None and self.honour_reset_header and status == 429:
            retry_after = parse_reset(response.headers.get("X-RateLimit-Reset"))
        auto_retryable = response.headers.get("cdf-is-auto-retryable", "").lower() == "true"
        retryable = (status in RETRY_STATUSES or auto_retryable) and retryable_flag is not False
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


def _read_body(response: requests.Response) -> bytearray:
    """The body in one growing buffer: `response.content` joins chunks into a second copy, which
    for a job payload of hundreds of MB doubles the peak. msgspec decodes the buffer in place and
    its Raw slices keep referring to it, so a job costs about its body's size in memory."""
    body = bytearray()
    try:
        for chunk in response.iter_content(chunk_size=1 << 20):
            body += chunk
    finally:
        response.close()
    return body


def _describe_network_error(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out" + (" connecting" if isinstance(exc, requests.ConnectTimeout) else " reading the response")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped while reading the response"
    return "connection failed (" + type(exc).__name__ + ")"
