"""HTTP sessions whose reads end by a deadline for the whole answer.

requests' read timeout bounds each read from the socket, not the answer: a server sending
its status line and headers a byte every few seconds (a broken proxy, a hostile webhook
receiver) never trips it, and kept a flush waiting as long as it liked, with the next cron
runs piling up behind its lock. ``session()`` builds a ``requests.Session`` whose
connections' sockets check a deadline, set around a request with ``reads_by``: past it a
read raises the socket's own timeout, which urllib3 and requests report as a read timeout
(``requests.ReadTimeout``, or urllib3's ``ReadTimeoutError`` while a body is streamed), as
for a server that stopped answering. Outside ``reads_by`` the sockets behave as usual.

Through an HTTP(S) proxy (``HTTP_PROXY``, ``HTTPS_PROXY``) the same holds; through a SOCKS
proxy only requests' own per-read timeout applies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()


@contextmanager
def reads_by(deadline: float) -> Iterator[None]:
    """Reads on this thread's deadline sessions end by ``deadline`` (``time.monotonic()``)."""
    before = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = before


def read_by(sock: Any, deadline: float | None, read: Any, *args: Any) -> Any:
    """``read(*args)``, a read of ``sock``, ending by ``deadline`` (``time.monotonic()``;
    None or infinite: the socket's own timeout only): past it, the socket's own timeout
    error. A non-blocking poll (timeout 0: is data already waiting?) never waits, and is
    never cut. The one deadline rule of the HTTP sessions and the Redis connections."""
    per = sock.gettimeout()
    if deadline is None or deadline == math.inf or per == 0:
        return read(*args)
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the answer did not arrive in time")
    sock.settimeout(left if per is None else min(per, left))
    try:
        return read(*args)
    finally:
        sock.settimeout(per)


def session() -> Any:
    """A ``requests.Session`` whose reads honour ``reads_by``."""
    import requests

    s = requests.Session()
    adapter = _adapter_class()()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


_ADAPTER: Any = None


def _adapter_class() -> Any:
    """The adapter, built once (on first use: requests is imported only by commands that
    talk HTTP)."""
    global _ADAPTER
    if _ADAPTER is not None:
        return _ADAPTER
    import io
    import socket

    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Reads:
        """A connected socket whose reads end by the thread's deadline."""

        def __init__(self, sock: Any) -> None:
            self._sock = sock

        def _bounded(self, read: Any, *args: Any) -> Any:
            return read_by(self._sock, getattr(_local, "deadline", None), read, *args)

        def recv(self, *args: Any) -> Any:
            return self._bounded(self._sock.recv, *args)

        def recv_into(self, *args: Any) -> Any:
            return self._bounded(self._sock.recv_into, *args)

        def read(self, *args: Any) -> Any:  # an ssl.SSLSocket's own read
            return self._bounded(self._sock.read, *args)

        def makefile(self, mode: str = "r", buffering: Any = None, **kwargs: Any) -> Any:
            # http.client reads the status line and headers through this file: its raw
            # reads must come back here, not to the wrapped socket
            if mode != "rb":
                return self._sock.makefile(mode, buffering, **kwargs)
            self._sock._io_refs += 1  # as socket.makefile counts it (closed by SocketIO)
            return io.BufferedReader(socket.SocketIO(self, "rb"),  # type: ignore[arg-type]
                                     io.DEFAULT_BUFFER_SIZE)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    class Conn(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            self.sock = Reads(self.sock)

    class TLSConn(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            self.sock = Reads(self.sock)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConn

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            # An HTTP(S) proxy's pools are urllib3's own (a tunnel to an https:// target
            # included), so they take these connections; a SOCKS proxy's have their own
            # connection classes and keep the per-read timeout only.
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}
            return manager

    _ADAPTER = Adapter
    return Adapter
