"""Errors a sync can meet, each carrying what a user needs to act on it.

Messages name the source, the job (or list call), the HTTP status, the vendor's error code and
message, and the request id; they never carry request headers, config values or whole bodies.
"""

from __future__ import annotations


class TapJobResultsError(Exception):
    """Base class: a failure we understand and report without a traceback."""


class ApiError(TapJobResultsError):
    """A request that failed for good (not retryable, or retries exhausted).

    `source_wide`: nothing more of that source can be fetched this run (its credentials refused,
    its quota spent, its host's certificate refused); the source stops, its pending jobs are kept.
    Otherwise only this request failed and the job is retried next run like any other failure."""

    source_wide = False

    def __init__(
        self,
        source: str,
        what: str,
        *,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.source = source
        self.what = what
        self.status = status
        self.code = code
        self.vendor_message = message
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [f"{self.source}: {self.what} failed"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        text = ", ".join(parts)
        if self.vendor_message:
            text += f": {self.vendor_message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        return text

    def __str__(self) -> str:
        return self.describe()


class AuthError(ApiError):
    """401/403. Source-wide when the source's own credentials failed (the token endpoint), or after
    MAX_REFUSED_IN_A_ROW job requests in a row were refused (engine.py); otherwise only this request
    was refused (a wrong job token, a data set without access). A refused listing fails that
    listing only."""

    def describe(self) -> str:
        return "authentication failed: " + super().describe()


class RateLimited(ApiError):
    """The server asked for a wait beyond max_retry_wait, or requests in a row stayed refused
    with 429 after their retries: the source stops for this run."""

    source_wide = True

    def again(self, what: str) -> RateLimited:
        """The same stop, for a later call of the source (threads must not share one exception)."""
        copy = RateLimited(self.source, what, status=self.status, code=self.code, message=self.vendor_message)
        copy.request_id = self.request_id
        return copy


class TlsError(ApiError):
    """The TLS handshake with the configured host failed (certificate not trusted, expired, for
    another host; not a TLS port): nothing was sent, and nothing of the source can be fetched."""

    source_wide = True


class UnsafeId(TapJobResultsError):
    """A vendor-supplied ID that cannot be one URL path segment ('', '.', '..', '/', controls):
    a request built from it could reach another resource, so it is never sent."""


class NotFoundError(ApiError):
    """404 for one job or run."""


class RedirectRefused(ApiError):
    """A 3xx answer. Redirects are never followed: the request's credentials would go with it to
    a host (or a plain-http URL) nobody configured."""


class ResponseTooLarge(ApiError):
    """A body past `max_response_mb` (counted after decompression); reading stopped there."""


class MalformedPayload(TapJobResultsError):
    """A 200 whose body is not the JSON the vendor documents (proxy page, truncation, wrong type)."""

    def __init__(self, source: str, what: str, problem: str) -> None:
        self.source = source
        self.what = what
        super().__init__(f"{source}: {what} returned a malformed payload: {problem}")


class JobFailed(TapJobResultsError):
    """Anything unexpected while fetching one job: that job fails, the run goes on."""

    def __init__(self, what: str, exc: BaseException) -> None:
        kind = "ran out of memory" if isinstance(exc, MemoryError) else f"unexpected error ({type(exc).__name__})"
        detail = str(exc)[:200]
        super().__init__(f"{what}: {kind}" + (f": {detail}" if detail else ""))


class StateError(TapJobResultsError):
    """The state given to the tap is not one it wrote: refused before any record is written."""
