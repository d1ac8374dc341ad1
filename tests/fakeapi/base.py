"""Plumbing shared by the fake vendor APIs: a real HTTP server on loopback, a request log,
per-job request counters, latency and fault injection. Vendor modules add routes and envelopes."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import re
import socket
import struct
import threading
import time
import traceback
import typing as t
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

Response = tuple[int, t.Any, dict]  # status, body (dict/list -> JSON, bytes as is), headers


@dataclasses.dataclass
class Fault:
    pattern: re.Pattern
    kind: str  # status | reset | slow | truncated | html | wrongtype
    status: int = 503
    times: int | None = 1  # None: forever
    headers: dict | None = None
    body: t.Any = None
    delay: float = 0.0


class VendorServer:
    """One vendor's API. Subclasses set `routes` and implement `authorized` and `error`."""

    name = "vendor"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.request_log: list[dict] = []
        self.counts: collections.Counter = collections.Counter()
        self.faults: list[Fault] = []
        self.latency = 0.0
        self.in_flight = 0  # requests being answered now, and the most at once since the last reset
        self.peak_in_flight = 0
        self._chaos: tuple[float, random.Random, tuple[str, ...]] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._cache: dict[t.Any, bytes] = {}
        # Realistic mode: behave like the vendors' servers rather than their docs (unsorted and late
        # listings, omitted optional and unknown extra fields, 429s without Retry-After, ...).
        # Each vendor module reads the flag where it builds a response.
        self.realistic = False
        # A key without the scope for this API: every authenticated request (True), or those whose path
        # matches this regex, answers 403 (a test's switch).
        self.refuse_scope: bool | str = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:`port` (0: a free port, as the tests use; `serve --port` fixes them)."""
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body leave in two writes; with Nagle on, the second waits for the client's
                # delayed ACK and every keep-alive response costs ~40 ms extra.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: t.Any) -> None:  # quiet: tests read the tap's stderr
                pass

            def do_GET(self) -> None:
                vendor._dispatch(self, "GET")

            def do_POST(self) -> None:
                vendor._dispatch(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- control surface -------------------------------------------------------------------------

    def requests(self, job_id: t.Any) -> int:
        """Requests that fetched this job's details or results (list calls are not counted)."""
        with self.lock:
            return self.counts[str(job_id)]

    def reset_counters(self) -> None:
        with self.lock:
            self.counts.clear()
            self.request_log.clear()
            self.peak_in_flight = self.in_flight

    def fail(
        self,
        path_regex: str,
        kind: str = "status",
        status: int = 503,
        times: int | None = 1,
        headers: dict | None = None,
        body: t.Any = None,
        delay: float = 0.0,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(re.compile(path_regex), kind, status, times, headers, body, delay))

    def chaos(self, rate: float = 0.2, seed: int = 1, kinds: tuple[str, ...] = ("429", "503", "reset", "slow")) -> None:
        self._chaos = (rate, random.Random(seed), tuple(kinds))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self._chaos = None

    # -- for subclasses --------------------------------------------------------------------------

    routes: t.ClassVar[list[tuple[str, str, str]]] = []  # (method, path regex, method name)

    def authorized(self, headers: dict) -> bool:
        return True

    def error(self, status: int, code: str, message: str) -> Response:
        return status, {"code": code, "message": message}, {}

    def refusal(self, path: str) -> Response | None:
        """An answer every authenticated request gets instead of its route's, if any (a switch a test turns on)."""
        scope = self.refuse_scope
        if scope is True or (isinstance(scope, str) and re.search(scope, path)):
            return self.error(403, "forbidden", "the API key does not have the scope this request needs")
        return None

    def extra_headers(self) -> dict:
        return {}

    def count(self, job_id: t.Any) -> None:
        with self.lock:
            self.counts[str(job_id)] += 1

    def cached(self, key: t.Any, build: t.Callable[[], t.Any]) -> bytes:
        """Serialised body of a job that does not change until `invalidate`; the benchmark's
        100k-item job is served many times."""
        with self.lock:
            body = self._cache.get(key)
        if body is None:
            body = json.dumps(build()).encode()
            with self.lock:
                self._cache[key] = body
        return body

    def invalidate(self, key: t.Any = None) -> None:
        with self.lock:
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(key, None)

    # -- request handling ------------------------------------------------------------------------

    def _pick_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.pattern.search(path) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
            if self._chaos is not None:
                rate, rng, kinds = self._chaos
                if rng.random() < rate:
                    kind = rng.choice(kinds)
                    if kind == "429":  # realistic: only the headers the vendor's own 429 carries
                        hint = {} if self.realistic else {"Retry-After": "1"}
                        return Fault(re.compile(""), "status", 429, headers=hint)
                    if kind in ("500", "502", "503", "504"):
                        return Fault(re.compile(""), "status", int(kind))
                    return Fault(re.compile(""), kind, delay=0.5)
        return None

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            self._answer(handler, method)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        path, query = parts.path, parse_qs(parts.query)
        headers = {k: v for k, v in handler.headers.items()}
        length = int(handler.headers.get("Content-Length") or 0)
        form = parse_qs(handler.rfile.read(length).decode()) if length else {}
        entry = {
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "form": form,
            "time": time.monotonic(),
        }
        with self.lock:
            self.request_log.append(entry)
        if self.latency:
            time.sleep(self.latency)
        fault = self._pick_fault(path)
        if fault and fault.kind == "reset":
            _reset(handler)
            entry["status"] = "reset"
            return
        if fault and fault.kind == "slow":
            time.sleep(fault.delay or 0.5)
            fault = None
        if fault and fault.kind == "status":
            status, body, extra = self.error(fault.status, _code_for(fault.status), "injected fault")
            if fault.body is not None:  # a body, or a function of the query giving one
                body = fault.body(query) if callable(fault.body) else fault.body
            # A header value may be a function, evaluated when the fault is served (a reset "3 s from now").
            hints = {k: v() if callable(v) else v for k, v in (fault.headers or {}).items()}
            self._send(handler, entry, status, body, {**extra, **hints})
            return
        if fault and fault.kind == "html":
            page = b"<html><body><h1>502 Bad Gateway</h1>corporate proxy</body></html>"
            self._send(handler, entry, 200, page, {"Content-Type": "text/html"})
            return
        if not self.authorized(headers):
            # Gateways quote what they refused ("invalid API key 'tlnc_...'"): only the tap's scrubbing keeps
            # the key out of its logs, and the leak tests can see it do so.
            presented = headers.get("Authorization") or headers.get("authorization") or ""
            status, body, extra = self.error(401, "unauthorized", f"missing or invalid credentials: {presented!r}")
            self._send(handler, entry, status, body, extra)
            return
        refused = self.refusal(path)
        if refused is not None:
            self._send(handler, entry, *refused)
            return
        for route_method, pattern, name in self.routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                try:
                    status, body, extra = getattr(self, name)(_Segments(match), query, headers, form)
                except BadRequest as exc:
                    status, body, extra = self.error(400, exc.code, str(exc))
                except ValueError as exc:  # unparsable query values (limit=abc, a forged cursor): the API says 400
                    status, body, extra = self.error(400, _code_for(400), f"invalid request: {exc}")
                except Exception:  # a bug in the fake: answer 500 rather than drop the connection
                    traceback.print_exc()
                    status, body, extra = self.error(500, _code_for(500), "internal error in the fake API")
                if fault and fault.kind == "wrongtype":
                    body = _wrong_type(body)
                self._send(handler, entry, status, body, extra, truncate=bool(fault and fault.kind == "truncated"))
                return
        status, body, extra = self.error(404, "not_found", f"no route for {method} {path}")
        self._send(handler, entry, status, body, extra)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        entry: dict,
        status: int,
        body: t.Any,
        headers: dict,
        truncate: bool = False,
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        entry["status"] = status
        try:
            handler.send_response(status)
            merged = {"Content-Type": "application/json", **self.extra_headers(), **headers}
            for key, value in merged.items():
                handler.send_header(key, str(value))
            handler.send_header("Content-Length", str(len(raw)))
            if truncate:  # the full length is announced, half is sent, then the line drops: an incomplete read
                handler.send_header("Connection", "close")
                handler.close_connection = True
                raw = raw[: len(raw) // 2]
            handler.end_headers()
            handler.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass


class BadRequest(Exception):
    def __init__(self, message: str, code: str = "invalid_argument") -> None:
        super().__init__(message)
        self.code = code


class _Segments:
    """A route's path parameters, percent-decoded as a server reads them ('a%2Fb' is the ID 'a/b')."""

    def __init__(self, match: re.Match) -> None:
        self._match = match

    def __getitem__(self, key: str) -> str:
        return unquote(self._match[key])


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection with a TCP RST, no response: what a dying proxy does."""
    sock = handler.connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
    handler.close_connection = True


def _code_for(status: int) -> str:
    return {
        400: "invalid_argument",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        429: "rate_limited",
        500: "internal",
        502: "bad_gateway",
        503: "unavailable",
        504: "timeout",
    }.get(status, "error")


def _wrong_type(body: t.Any) -> t.Any:
    """A 200 whose required field has the wrong type (an API change, a broken gateway)."""
    if isinstance(body, bytes):
        body = json.loads(body)
    if isinstance(body, dict):
        for key in ("jobId", "job", "items", "data", "jobs", "id"):
            if key in body:
                return {**body, key: "not-the-documented-type" if not isinstance(body[key], str) else 12345}
    return body


_uuids: random.Random | None = None


def seed_uuids(seed: int | None) -> None:
    """Make `new_uuid` repeatable (the demo: the same run shows the same rows); None: random again."""
    global _uuids
    _uuids = None if seed is None else random.Random(seed)


def new_uuid() -> str:
    if _uuids is not None:
        return str(uuid.UUID(int=_uuids.getrandbits(128), version=4))
    return str(uuid.uuid4())


def bearer(headers: dict) -> str | None:
    value = headers.get("Authorization") or headers.get("authorization") or ""
    return value[7:] if value.startswith("Bearer ") else None
