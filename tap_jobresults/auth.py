"""Credentials: static bearer keys, and OAuth 2.0 client credentials for CDF.

The SDK's OAuthAuthenticator refreshes only after expiry and cannot be shared safely by concurrent
fetches, so CDF tokens are handled here: cached, shared by all threads, and refreshed before they
expire (30 s early, as cognite-sdk does, or half the lifetime for short-lived tokens).
"""

from __future__ import annotations

import threading
import time
import typing as t

from tap_jobresults.client import ApiClient
from tap_jobresults.errors import ApiError, AuthError, MalformedPayload
from tap_jobresults.scrub import SECRETS, safe_url


class StaticBearer:
    def __init__(self, token: str) -> None:
        SECRETS.add(token)
        self._headers = {"Authorization": f"Bearer {token}"}

    def __call__(self) -> dict[str, str]:
        return self._headers


class ClientCredentials:
    """Thread-safe token cache for the client-credentials grant."""

    LEEWAY = 30.0

    def __init__(
        self,
        *,
        source: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        scopes: list[str],
        audience: str | None = None,
        timeouts: dict[str, t.Any],
    ) -> None:
        SECRETS.add(client_secret)
        self.source = source
        self._form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": " ".join(scopes),
        }
        if audience:
            self._form["audience"] = audience
        # Its own client, without credentials of any kind; like every client it follows no redirect,
        # so the form with the client secret goes to token_url only, and a token comes from there only.
        self._client = ApiClient(
            f"{source} OAuth", token_url, setting=f"{source}.token_url", metrics_source=source, **timeouts
        )
        self._token_url = token_url
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        # A token request that failed after its retries: until `until`, every caller gets that
        # failure at once instead of repeating the whole retry cycle, one job after the other.
        self._failure: tuple[float, AuthError] | None = None

    def __call__(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                self._fetch()
            return {"Authorization": f"Bearer {self._token}"}

    def refresh(self, refused: str | None = None) -> None:
        """A new token after a 401 (AuthError when none comes).

        `refused` is the Authorization header that got the 401. Concurrent requests that were all
        refused the same token queue on the lock; the first fetches a new token, the others find
        the current token already differs from the one they were refused and reuse it: a 401
        storm costs one token request, not one per request in flight.
        """
        with self._lock:
            if refused is None or self._token is None or refused == f"Bearer {self._token}":
                self._fetch()

    FAILURE_MEMORY = 60.0  # seconds

    def _fetch(self) -> None:
        if self._failure is not None and time.monotonic() < self._failure[0]:
            raise _copy(self._failure[1])
        try:
            self._fetch_once()
        except AuthError as exc:
            # Nothing of the source can be fetched without a token: the source stops here.
            exc.source_wide = True
            self._failure = (time.monotonic() + self.FAILURE_MEMORY, exc)
            raise
        self._failure = None

    def _fetch_once(self) -> None:
        issued = time.monotonic()
        body = self._post_form()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            error = AuthError(
                self.source,
                f"OAuth token request to {safe_url(self._token_url)}",
                message="no access_token in the response",
            )
            raise error  # source-wide, as every failure of the token request (_fetch)
        SECRETS.add(token)
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        self._token = token
        self._refresh_at = issued + max(0.0, lifetime - min(self.LEEWAY, lifetime / 2))

    def _post_form(self) -> t.Any:
        """The token request, with the same retries as any call (429, 5xx, resets, timeouts)."""
        what = f"OAuth token request to {safe_url(self._token_url)}"
        try:
            return self._client.get_json(self._token_url, what, form=self._form)
        except AuthError:
            raise
        except ApiError as exc:  # 400 invalid_client and the like: the credentials are wrong
            raise AuthError(
                self.source,
                what,
                status=exc.status,
                code=exc.code,
                message=exc.vendor_message,
                request_id=exc.request_id,
                attempts=exc.attempts,
            ) from None
        except MalformedPayload:
            raise AuthError(self.source, what, message="the identity provider did not answer with JSON") from None


def _copy(error: AuthError) -> AuthError:
    """The remembered failure, as a new exception for this caller (threads must not share one)."""
    copy = AuthError(
        error.source,
        error.what,
        status=error.status,
        code=error.code,
        message=error.vendor_message,
        request_id=error.request_id,
        attempts=error.attempts,
    )
    copy.source_wide = True
    return copy
