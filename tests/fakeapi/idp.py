"""Fake OAuth 2.0 identity provider: the client-credentials grant, with short-lived tokens on demand."""

from __future__ import annotations

import secrets
import time
import typing as t

from tests.fakeapi.base import Response, VendorServer


class IdentityProvider(VendorServer):
    name = "idp"
    client_id = "tap-jobresults-client"
    client_secret = "idp-client-secret-0123456789"
    routes: t.ClassVar = [("POST", r"/oauth2/token", "token")]

    def __init__(self) -> None:
        super().__init__()
        self.expires_in = 3600
        self.issued_tokens: list[str] = []
        self.token_requests: list[dict] = []
        self._expiry: dict[str, float] = {}

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    def error(self, status: int, code: str, message: str) -> Response:
        return status, {"error": code, "error_description": message}, {}

    def revoke_all(self) -> None:
        """Every issued token stops working at once (a key rotation, a revoked session)."""
        with self.lock:
            self._expiry.clear()

    def is_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self._expiry.get(token)
        return expiry is not None and time.monotonic() < expiry

    def token(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        fields = {k: v[0] for k, v in form.items()}
        with self.lock:
            self.token_requests.append(fields)
        if fields.get("grant_type") != "client_credentials":
            return self.error(400, "unsupported_grant_type", "only client_credentials")
        if fields.get("client_id") != self.client_id or fields.get("client_secret") != self.client_secret:
            sent = fields.get("client_secret")
            return self.error(401, "invalid_client", f"client authentication failed (client_secret {sent!r})")
        token = "eyJ" + secrets.token_urlsafe(24)
        with self.lock:
            self.issued_tokens.append(token)
            self._expiry[token] = time.monotonic() + self.expires_in
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}, {}
