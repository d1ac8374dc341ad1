"""A purpose-made loopback server for the fuzz test: it serves a fixed map of path -> (status, bytes).

Bounded by construction: the map is fixed (no state machine a corrupted body can drive), a connection
is dropped after `idle_timeout` seconds of silence, the server answers at most `max_requests` requests
(then 503 and close), and it stops when its `with` block ends.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

Route = tuple[int, bytes]
CURSOR_PARAMS = ("cursor", "pageToken")


class FuzzServer:
    def __init__(self, name: str, *, max_requests: int = 5000, idle_timeout: float = 10.0) -> None:
        self.name = name
        self.routes: dict[str, Route] = {}
        self.token: str | None = None  # with a token, POST /oauth2/token issues it (client credentials)
        self.max_requests = max_requests
        self.idle_timeout = idle_timeout
        self.requests: list[tuple[str, str]] = []  # (method, raw path) as received
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------

    def serve(self, routes: dict[str, Route]) -> None:
        """Replace what is served (the corrupted world, then the repaired one)."""
        with self.lock:
            self.routes = dict(routes)
            self.requests = []

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def unexpected_paths(self, allowed: t.Sequence[re.Pattern], ids: set[str]) -> list[str]:
        """Requests for a resource the served world does not have: a path outside the API's route shapes,
        or a path none of whose segments is an ID the world names (an ID like '.' or '..' that the
        HTTP stack resolved away, reaching another resource)."""
        with self.lock:
            seen = list(self.requests)
            served = set(self.routes)
        found = []
        for method, raw in seen:
            path = urlsplit(raw).path
            if path == "/oauth2/token" or path in served:
                continue
            segments = {unquote(s) for s in path.split("/")}
            if not any(p.fullmatch(path) for p in allowed) or not segments & ids:
                found.append(f"{method} {raw}")
        return found

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FuzzServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = self.idle_timeout  # socket timeout: a silent client is dropped

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_GET(self) -> None:
                server._answer(self, "GET")

            def do_POST(self) -> None:
                server._answer(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- requests --------------------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(min(length, 1 << 20))
        parts = urlsplit(handler.path)
        path, query = parts.path, parse_qs(parts.query)
        with self.lock:
            self.requests.append((method, handler.path))
            over = len(self.requests) > self.max_requests
            # A page after the first is served for its cursor ("path#cursor=..."); any other query is ignored.
            cursors = [f"{path}#{name}={values[0]}" for name, values in query.items() if name in CURSOR_PARAMS]
            route = next((self.routes[c] for c in cursors if c in self.routes), None)
            if route is None and not cursors:
                route = self.routes.get(path)
        if over:
            self._send(handler, 503, b'{"error": "fuzz server: request budget spent"}', close=True)
        elif method == "POST" and path == "/oauth2/token" and self.token:
            body = {"access_token": self.token, "token_type": "Bearer", "expires_in": 3600}
            self._send(handler, 200, json.dumps(body).encode())
        elif method == "GET" and route is not None:
            self._send(handler, *route)
        else:
            self._send(handler, 404, json.dumps({"error": {"code": 404, "message": "not found"}}).encode())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, close: bool = False) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            if close:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass
