"""The one HTTP server under every fake API (Telegram, Binance): real sockets on 127.0.0.1.

Tests and benchmarks talk to these fakes through real ``requests`` calls, so botopt's
transport, retries and error conversion run exactly as against the real APIs. A fake only
decides answers: ``answer(method, path, headers, body) -> (status, payload, headers)``, where
status 0 means "close the connection without an answer" and a ``str`` payload is sent
verbatim (a truncated or non-JSON body). It ships with ``botopt.benchmarks`` because
``botopt bench`` needs a Bot API to flush against; ``core`` and ``cli`` never import it (the
layer test checks).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any, dict[str, str]]


class Drip(str):
    """A payload sent a byte at a time, ``every`` seconds apart: an answer that trickles in
    (each read within the client's read timeout, the whole far past it)."""

    every: float = 0.5

    @classmethod
    def of(cls, text: str, every: float) -> Drip:
        d = cls(text)
        d.every = every
        return d


class DripHead(Drip):
    """A ``Drip`` from the status line on: the headers trickle in too (a broken proxy, a
    hostile receiver), before any body a client could read with its own deadline."""


class Cut(str):
    """A payload whose first half is sent, then the connection reset (an answer cut off
    after the status line: the request had arrived)."""


class Loopback:
    """Mixin for a fake: ``start()`` binds a free port, ``url`` names it, ``stop()`` ends it."""

    content_type = "application/json"
    # requests' pooled sessions reuse connections; HTTP/1.0 closes each one, as a plain
    # server would, which is what the Telegram fake has always modelled.
    keep_alive = False

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    def start(self) -> Any:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if fake.keep_alive else "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                if path.lower().startswith(("http://", "https://")):
                    # the absolute form a client sends to a forward proxy (any server must
                    # take it, RFC 9112): a fake is its own proxy in tests
                    path = "/" + path.split("://", 1)[1].partition("/")[2]
                status, payload, extra = fake.answer(self.command, path,
                                                     dict(self.headers), body)
                if status == 0:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                data = (payload if isinstance(payload, str)
                        else json.dumps(payload, separators=(",", ":"))).encode()
                if isinstance(payload, DripHead):
                    head = "".join(f"{k}: {v}\r\n" for k, v in {
                        "Content-Type": fake.content_type, "Content-Length": len(data),
                        **extra}.items())
                    whole = f"HTTP/1.0 {status} OK\r\n{head}\r\n".encode() + data
                    self.close_connection = True
                    try:
                        for i in range(len(whole)):
                            self.wfile.write(whole[i:i + 1])
                            self.wfile.flush()
                            time.sleep(payload.every)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                self.send_response(status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    if isinstance(payload, Cut):
                        import socket
                        import struct

                        self.wfile.write(data[:len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        # SO_LINGER 0: close sends a reset, not an orderly end
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                        self.connection.close()
                    elif isinstance(payload, Drip):
                        self.wfile.flush()
                        for i in range(len(data)):
                            time.sleep(payload.every)
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout under test): as a real server shrugs

            do_GET = do_POST = _serve  # noqa: N815

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # socketserver prints a traceback to sys.stderr, which a CliRunner under test
                # has captured: a client that hung up must not look like a botopt error.
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        # A stalled answer ("hang", "slow") must not hold up stop().
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
