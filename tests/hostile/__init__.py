"""Adversarial HTTP servers on loopback: what misconfigured proxies, gateways and compromised hosts do.

    front = HostileServer(upstream=apis.talonic.base_url)      # a reverse proxy in front of a fake API
    front.on(rf"/v1/jobs/{job}$", redirect(302, catcher.url + "/steal"))
    other = HostileServer(host="127.0.0.2")                   # a second host that records what reaches it

Requests whose path matches a rule get that rule's behaviour; every other request is relayed to the
upstream fake API unchanged (or, sent to it as a forward proxy with an absolute URI, to that URI's
host). Every behaviour is bounded in time and size; every server thread is a daemon and `stop`
shuts the listener. Each request is recorded (method, path, headers, body) in `requests`.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import re
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import typing as t
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import TAP, TapRun, _write, parse_messages, tap_env

MAX_BEHAVIOUR_SECONDS = 60.0  # no behaviour keeps a connection longer than this
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "host"}


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


Behaviour = t.Callable[[BaseHTTPRequestHandler, Seen], None]


class HostileServer:
    def __init__(self, host: str = "127.0.0.1", upstream: str | None = None, tls: tuple[str, str] | None = None):
        self.host = host
        self.upstream = upstream
        self.tls = tls
        self.rules: list[tuple[re.Pattern, str | None, Behaviour]] = []
        self.requests: list[Seen] = []
        self.bytes_sent: dict[str, int] = {}  # per rule path: body bytes written before the client went away
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- setup -------------------------------------------------------------------------------------

    def on(self, path_regex: str, behaviour: Behaviour, method: str | None = None) -> HostileServer:
        with self.lock:
            self.rules.append((re.compile(path_regex), method, behaviour))
        return self

    def __enter__(self) -> HostileServer:
        self.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()

    def start(self) -> None:
        server = self
        context = None
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = MAX_BEHAVIOUR_SECONDS  # an idle keep-alive connection does not hold a thread forever

            def setup(self) -> None:
                if context is not None:
                    self.request.settimeout(10)
                    self.request = context.wrap_socket(self.request, server_side=True)
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: t.Any, client_address: t.Any) -> None:
                pass  # a client that hung up mid-behaviour is the expected outcome, not noise

        self._server = Server((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()  # stop within 50 ms

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self._server.server_address[1]}"

    # -- handling ----------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        seen = Seen(method, handler.path, dict(handler.headers.items()), body)
        with self.lock:
            self.requests.append(seen)
            rules = list(self.rules)
        path = urlsplit(handler.path).path
        for pattern, rule_method, behaviour in rules:
            if pattern.search(path) and rule_method in (None, method):
                behaviour(handler, seen)
                return
        self._relay(handler, seen)

    def _relay(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        parts = urlsplit(seen.path)
        target = urlsplit(self.upstream) if not parts.netloc else parts  # absolute URI: a forward proxy
        if not target.netloc:
            respond(handler, 404, {"message": "nothing here"})
            return
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            headers = {k: v for k, v in seen.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(seen.method, path, body=seen.body or None, headers=headers)
            upstream = conn.getresponse()
            data = upstream.read()
            extra = {k: v for k, v in upstream.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}}
            respond(handler, upstream.status, data, extra)
        finally:
            conn.close()

    def received(self, path_regex: str = "") -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if re.search(path_regex, r.path)]


def respond(handler: BaseHTTPRequestHandler, status: int, body: t.Any = b"", headers: dict | None = None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        handler.send_response(status)
        merged = {"Content-Type": "application/json", **(headers or {})}
        for key, value in merged.items():
            handler.send_header(key, str(value))
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)
    except OSError:
        pass


# -- behaviours ------------------------------------------------------------------------------------------


def redirect(status: int, location: str) -> Behaviour:
    def run(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        respond(handler, status, {"message": "moved"}, {"Location": location})

    return run


def answer(status: int, body: t.Any, headers: dict | None = None) -> Behaviour:
    def run(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        respond(handler, status, body, headers)

    return run


def trickle(phase: str = "body", every: float = 0.5, limit: float = MAX_BEHAVIOUR_SECONDS) -> Behaviour:
    """One byte every `every` seconds, for at most `limit` seconds: of a JSON body whose announced
    length never arrives ("body"), or of headers that never end ("headers"). A socket read
    timeout never fires: data keeps coming."""

    def run(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.close_connection = True
        deadline = time.monotonic() + limit
        try:
            if phase == "headers":
                handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                source = b"a" * 1_000_000
            else:
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", "1000000")
                handler.end_headers()
                source = b'{"data": [' + b" " * 999_990
            handler.wfile.flush()
            for byte in source:
                if time.monotonic() >= deadline:
                    break
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass

    return run


_BOMBS: dict[int, Path] = {}
_BOMB_LOCK = threading.Lock()


def gzip_bomb_file(inflated: int) -> Path:
    """A gzip file inflating to `inflated` bytes of zeros (about 1/1000 of that on disk), made once per
    session: one 32 MiB member, repeated (a gzip stream may hold many members, and decoders read on)."""
    with _BOMB_LOCK:
        if inflated not in _BOMBS:
            path = Path(tempfile.mkdtemp(prefix="gzip-bomb-")) / "bomb.gz"
            member_size = 32 << 20
            compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
            member = compressor.compress(bytes(member_size)) + compressor.flush()
            path.write_bytes(member * max(1, inflated // member_size))
            _BOMBS[inflated] = path
        return _BOMBS[inflated]


def gzip_bomb(inflated: int) -> Behaviour:
    bomb = gzip_bomb_file(inflated).read_bytes()

    def run(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        respond(handler, 200, bomb, {"Content-Encoding": "gzip"})

    return run


def big_body(size: int, *, chunked: bool, sent: dict[str, int], key: str) -> Behaviour:
    """`size` bytes of a JSON array of zeros, written 64 KiB at a time until the client hangs up;
    `sent[key]` counts what was written, to show the client stopped reading early."""

    def run(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.close_connection = True
        block = b"0," * (1 << 15)
        written = 0
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            if chunked:
                handler.send_header("Transfer-Encoding", "chunked")
            else:
                handler.send_header("Content-Length", str(size + 3))
            handler.end_headers()
            out = handler.wfile

            def put(data: bytes) -> None:
                out.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)

            put(b"[")
            while written < size:
                piece = block[: size - written]
                put(piece)
                written += len(piece)
                sent[key] = written
            put(b"0]")
            if chunked:
                out.write(b"0\r\n\r\n")
        except OSError:
            pass

    return run


def gzip_json(body: t.Any) -> bytes:
    return gzip.compress(json.dumps(body).encode())


# -- TLS and running the tap -------------------------------------------------------------------------------


def self_signed_cert(directory: str) -> tuple[str, str]:
    """A certificate for IP 127.0.0.1, trusted by the tap through REQUESTS_CA_BUNDLE."""
    cert, key = str(Path(directory) / "cert.pem"), str(Path(directory) / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def make_cert(
    directory: str, *, hosts: t.Sequence[str] = ("127.0.0.1",), expired: bool = False, name: str = "cert"
) -> tuple[str, str]:
    """A self-signed certificate (made with `cryptography`) for the IP addresses `hosts`, valid now
    or expired yesterday. Trusted by the tap only when given through REQUESTS_CA_BUNDLE."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.timezone.utc)
    start, end = (
        (now - dt.timedelta(days=3), now - dt.timedelta(days=1))
        if expired
        else (now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(directory) / f"{name}.pem", Path(directory) / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def chunked(raw: bytes, piece: int = 1 << 16) -> Behaviour:
    """`raw` as a 200 JSON body in chunked transfer encoding (no Content-Length to check up front)."""

    def run(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.close_connection = True
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for start in range(0, len(raw), piece):
                data = raw[start : start + piece]
                handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    return run


def run_tap_under(
    prefix: t.Sequence[str],
    config: dict,
    state: dict | None = None,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[TapRun, float]:
    """The tap binary behind a command prefix (e.g. `prlimit --as=...`); returns the run and its seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [*prefix, TAP, "--config", _write(tmp, "config.json", config)]
        if state is not None:
            argv += ["--state", _write(tmp, "state.json", state)]
        started = time.monotonic()
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**tap_env(), **(env or {})},
        )
        elapsed = time.monotonic() - started
    return TapRun(proc.returncode, parse_messages(proc.stdout), proc.stdout, proc.stderr), elapsed
