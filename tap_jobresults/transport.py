"""The transport under the API client: a deadline per response.

requests' read timeout bounds one socket read: a server that sends a byte every few seconds, or
headers that never end, keeps a request alive forever. Every response here must be complete
within read_timeout of the request being sent. A watchdog thread shuts down the socket of any
response still being read at its deadline, whichever phase it is in (headers, body, a gzip
stream); the reading thread then sees the connection end and reports a timeout.

    timer = Deadline(read_timeout, connect_timeout)
    with armed(timer):                    # the connection classes arm it when the request is sent
        response = adapter.send(...)      # Adapter(), as ApiClient._send does
    ... read the body, checking timer.overdue() ...
    WATCHDOG.disarm(timer)
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
import typing as t

import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter


class Deadline:
    __slots__ = ("deadline", "fired", "seconds", "sock")

    def __init__(self, seconds: float, connect_allowance: float) -> None:
        self.seconds = seconds
        # Until the request is on the wire (connection set up), allow for connecting too.
        self.deadline = time.monotonic() + connect_allowance + seconds
        self.sock: t.Any = None
        self.fired = False

    def overdue(self) -> bool:
        return self.fired or time.monotonic() >= self.deadline


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def arm(self, timer: Deadline, sock: t.Any) -> None:
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
            if self._heap[0][2] is timer:
                # The watchdog sleeps until the earliest deadline: wake it only when that is this one.
                # (Deadlines mostly come in time order, so most requests cost it no wake-up at all.)
                self._cond.notify()

    def disarm(self, timer: Deadline) -> None:
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


WATCHDOG = Watchdog()
_current = threading.local()  # the Deadline of the request this thread is making


class _ArmOnResponse:
    """urllib3 connection mixin: the deadline starts when the request is sent."""

    sock: t.Any

    def getresponse(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        timer = getattr(_current, "timer", None)
        if timer is not None and self.sock is not None:
            WATCHDOG.arm(timer, self.sock)
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


class Adapter(HTTPAdapter):
    """Connection pools whose connections start the response deadline, also through a proxy."""

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: t.Any) -> t.Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own connection classes
            manager.pool_classes_by_scheme = _POOLS
        return manager


class Overdue(Exception):
    """Internal: the response was still arriving at its deadline."""


@contextlib.contextmanager
def armed(timer: Deadline) -> t.Iterator[None]:
    """Within: a request this thread sends starts `timer` (see the connection classes)."""
    _current.timer = timer
    try:
        yield
    finally:
        _current.timer = None
