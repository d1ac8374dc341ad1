"""One HTTP client for every source: timeouts, polite retries, re-authentication, clear errors.

Why not the SDK's RESTStream request path: it re-sends the same prepared request on retry, so a
token refreshed during backoff is never used (sdk#3320); it ignores Retry-After (sdk#2012); it puts
whole response bodies into error messages; and it fetches one request at a time, while a job-result
tap spends its time waiting on many independent job fetches. So requests are built anew on every
attempt here, waits follow what the server asks for, and sources fetch jobs concurrently.
"""

from __future__ import annotations

import email.utils
import errno
import heapq
import itertools
import logging
import random
import socket
import threading
import time
import typing as t
from datetime import datetime, timezone
from urllib.parse import urljoin, urlsplit

import backoff
import msgspec
import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from tap_jobresults.errors import (
    ApiError,
    AuthError,
    MalformedPayload,
    NotFoundError,
    RedirectRefused,
    ResponseTooLarge,
    TapJobResultsError,
)

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
DEFAULT_MAX_RESPONSE_MB = 1024
CHUNK = 1 << 20

_decoder = msgspec.json.Decoder()


class Retry(Exception):
    """Internal: one attempt failed in a way worth repeating."""

    def __init__(self, error: ApiError, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.unreachable = unreachable


class SecretRegistry:
    """Every secret the tap knows (config values, issued tokens), to scrub from any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._ordered: tuple[str, ...] = ()  # longest first, so a secret inside another goes last
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every secret (one process, one tap: for tests that build many taps in a row)."""
        with self._lock:
            self._secrets.clear()
            self._ordered = ()

    def add(self, value: t.Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)
                self._secrets.add(repr(value)[1:-1])  # as it appears escaped inside other reprs
                if value.strip() and value.strip() != value:
                    self._secrets.add(value.strip())
                self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, "***")
        return text


SECRETS = SecretRegistry()


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging reports it itself, leave the record alone
        return
    scrubbed = SECRETS.scrub(message)
    if scrubbed != message:
        record.msg, record.args = scrubbed, None
    if record.exc_info and record.exc_info[1] is not None:
        text = SECRETS.scrub(str(record.exc_info[1]))
        if text != str(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg} ({text})"


class ScrubSecretsFilter(logging.Filter):
    """No log record leaves the process with a known secret in it (see `install_scrubbing`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub_record(record)
        return True


# Loggers that carry a filter of their own, whatever handlers a logging config gives them. A filter
# on a logger sees only records logged on that very logger, so the record factory below is what
# covers child loggers (one per stream) and third-party ones; filters are the second line.
SCRUBBED_LOGGERS = ("", "tap-jobresults", "singer_sdk", "singer_sdk.metrics", "urllib3", "backoff", "py.warnings")


def install_scrubbing() -> None:
    """Scrub secrets from every log record, whichever logger it comes from and whichever handler
    (console, a SINGER_SDK_LOG_CONFIG file handler, ...) writes it. Safe to call repeatedly: call it
    again after anything that (re)configures logging."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "scrubs_secrets", False):

        def scrubbing_factory(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            _scrub_record(record)
            return record

        scrubbing_factory.scrubs_secrets = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(scrubbing_factory)
    loggers: list[logging.Logger] = [logging.getLogger(name) for name in SCRUBBED_LOGGERS]
    loggers += [
        node
        for name, node in list(logging.Logger.manager.loggerDict.items())
        if isinstance(node, logging.Logger) and name.split(".")[0] in ("tap-jobresults", "singer_sdk")
    ]
    for log in loggers:
        _add_filter(log)
        for handler in log.handlers:
            _add_filter(handler)


def _add_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, ScrubSecretsFilter) for f in target.filters):
        target.addFilter(ScrubSecretsFilter())


# -- a deadline per response ------------------------------------------------------------------------
#
# requests' read timeout bounds one socket read: a server that sends a byte every few seconds, or
# headers that never end, keeps a request alive forever. Every response here must be complete
# within read_timeout of the request being sent. A watchdog thread shuts down the socket of any
# response still being read at its deadline, whichever phase it is in (headers, body, a gzip
# stream); the reading thread then sees the connection end and reports a timeout.


class _Deadline:
    __slots__ = ("deadline", "fired", "seconds", "sock")

    def __init__(self, seconds: float, connect_allowance: float) -> None:
        self.seconds = seconds
        # Until the request is on the wire (connection set up), allow for connecting too.
        self.deadline = time.monotonic() + connect_allowance + seconds
        self.sock: t.Any = None
        self.fired = False

    def overdue(self) -> bool:
        return self.fired or time.monotonic() >= self.deadline


class _Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def arm(self, timer: _Deadline, sock: t.Any) -> None:
        with self._cond:
            if timer.sock is not None:  # re-armed (a new request on the same attempt): keep one entry live
                self._live -= 1
            timer.sock = sock
            timer.deadline = time.monotonic() + timer.seconds
            self._live += 1
            heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
            if len(self._heap) > 1024 and len(self._heap) > 4 * self._live:
                self._heap = [entry for entry in self._heap if entry[2].sock is not None]
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="response-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, timer: _Deadline) -> None:
        with self._cond:
            if timer.sock is not None:
                timer.sock = None
                self._live -= 1

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due, _, timer = heapq.heappop(self._heap)
                    if timer.sock is not None and due >= timer.deadline:
                        timer.fired = True
                        _cut(timer.sock)
                        timer.sock = None
                        self._live -= 1
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


def _cut(sock: t.Any) -> None:
    """End a connection under the feet of the thread reading it: shutdown wakes a blocked read."""
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)  # TLS-in-TLS wrapper
    if isinstance(raw, socket.socket):
        try:
            socket.socket.shutdown(raw, socket.SHUT_RDWR)  # the plain socket's: works under a TLS layer
        except OSError:
            pass


_WATCHDOG = _Watchdog()
_current = threading.local()  # the _Deadline of the request this thread is making


class _ArmOnResponse:
    """urllib3 connection mixin: the deadline starts when the request is sent."""

    sock: t.Any

    def getresponse(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        timer = getattr(_current, "timer", None)
        if timer is not None and self.sock is not None:
            _WATCHDOG.arm(timer, self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_ArmOnResponse, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_ArmOnResponse, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    """Connection pools whose connections start the response deadline, also through a proxy."""

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: t.Any) -> t.Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own connection classes
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _NoNetrc(requests.auth.AuthBase):
    """An explicit (empty) auth: without one, requests looks up ~/.netrc for the host and puts
    what it finds in the Authorization header, over the configured credential."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_NO_NETRC = _NoNetrc()


class _Overdue(Exception):
    """Internal: the response was still arriving at its deadline."""


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


def _clip(text: str, limit: int) -> str:
    """Scrub first, then shorten: cutting first could leave a secret's head in the text, where
    the whole secret would no longer be recognised."""
    text = SECRETS.scrub(text)
    return text if len(text) <= limit else text[:limit] + "..."


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
        None if code is None else _clip(str(code), 100),
        None if message is None else _clip(str(message), 300),
        retryable,
        None if request_id is None else _clip(str(request_id), 100),
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
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
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
        self.session = requests.Session()
        adapter = _Adapter(pool_connections=1, pool_maxsize=max(pool_size, 1) + 2, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
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
        attempts = 1
        unreachable = 0
        try:  # the first attempt, without the retry machinery's per-call cost
            return self._attempt(url, what, params, headers, decode_as, form)
        except Retry as exc:
            first: Retry | None = exc

        def wait_gen() -> t.Generator[float, t.Any, None]:
            # backoff sends the exception of each failed attempt into this generator; the first
            # failure happened before backoff took over.
            exc = yield 0.0
            attempt = 0
            while True:
                if getattr(exc, "unreachable", False):
                    wait = min(UNREACHABLE_WAIT * unreachable, self.max_retry_wait)
                else:
                    ceiling = min(self.max_retry_wait, FIRST_WAIT * 2**attempt)
                    hinted = getattr(exc, "retry_after", None)
                    wait = (
                        min(hinted, self.max_retry_wait) if hinted is not None else random.uniform(ceiling / 2, ceiling)
                    )
                    attempt += 1
                exc = yield wait

        def give_up(exc: Exception) -> bool:
            nonlocal unreachable
            if not getattr(exc, "unreachable", False):
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
            attempts += 1
            return self._attempt(url, what, params, headers, decode_as, form)

        try:
            return attempt()
        except Retry as exc:
            if exc.unreachable:
                self._unreachable = True
            exc.error.attempts = attempts
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
            response, body = self._exchange(url, what, params, form, request_headers)
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
                self.source, what, f"expected JSON, got {_clip(content_type, 100)} that does not parse ({exc})"
            ) from None
        except MemoryError:
            del body
            raise self._out_of_memory(what, f"decoding the {size / (1 << 20):.0f} MiB response") from None

    def _exchange(
        self, url: str, what: str, params: t.Any, form: t.Any, headers: dict[str, str]
    ) -> tuple[requests.Response, bytearray]:
        """One request and its whole body, within the response deadline and the size cap."""
        timer = _Deadline(self.read_timeout, self.connect_timeout)
        _current.timer = timer
        try:
            try:
                response = self.session.request(
                    "POST" if form is not None else "GET",
                    url,
                    params=params,
                    data=form,
                    headers=headers,
                    auth=_NO_NETRC,
                    timeout=self.timeout,
                    stream=True,
                    allow_redirects=False,  # a redirect would carry the credentials to its target
                )
            finally:
                _current.timer = None
            return response, self._read_body(response, what, timer)
        except TapJobResultsError:
            raise
        except MemoryError:
            raise self._out_of_memory(what, "reading the response") from None
        except Exception as exc:
            if timer.overdue() or _caused_by(exc, (urllib3.exceptions.ReadTimeoutError, requests.ReadTimeout)):
                message = f"timed out after {self.read_timeout:g} s (read_timeout)"
                raise Retry(ApiError(self.source, what, message=message, retryable=True)) from None
            if isinstance(exc, requests.ConnectTimeout):
                message = (
                    f"{self.setting} {self.base_url}: timed out connecting after {self.connect_timeout:g} s "
                    "(connect_timeout)"
                )
                raise Retry(ApiError(self.source, what, message=message, retryable=True)) from None
            if isinstance(exc, requests.ConnectionError) and (reason := _unreachable_reason(exc)):
                message = f"{self.setting} {self.base_url}: {reason}"
                error = ApiError(self.source, what, message=message, retryable=True)
                raise Retry(error, unreachable=True) from None
            if isinstance(exc, TRANSIENT_EXCEPTIONS):
                raise Retry(ApiError(self.source, what, message=_describe_network_error(exc), retryable=True)) from None
            if isinstance(exc, requests.exceptions.ContentDecodingError):
                encoding = _clip(str(getattr(exc.response, "headers", {}).get("Content-Encoding", "?")), 50)
                raise ApiError(
                    self.source, what, message=f"the response body does not decompress (Content-Encoding {encoding})"
                ) from None
            if isinstance(exc, requests.RequestException):  # e.g. InvalidHeader: its text would quote the header
                raise ApiError(self.source, what, message=f"request could not be sent ({type(exc).__name__})") from None
            raise
        finally:
            _WATCHDOG.disarm(timer)

    def _read_body(self, response: requests.Response, what: str, timer: _Deadline) -> bytearray:
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
                    raise _Overdue
            if timer.fired:  # cut at its deadline: what arrived (headers, an "end" of body) is not the response
                raise _Overdue
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
            message = _clip(response.reason, 300) if response.reason else None
        header_id = response.headers.get("x-request-id") or response.headers.get("request-id")
        request_id = _clip(header_id, 100) if header_id else body_request_id
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
    return _clip(text, 200)


def _chain(exc: BaseException) -> t.Iterator[BaseException]:
    """An exception, what it wraps (requests -> urllib3 -> socket), and its causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen or len(seen) > 20:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "reason", None)]
        todo += [arg for arg in item.args if isinstance(arg, BaseException)]


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
