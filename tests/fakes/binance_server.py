"""A fake Binance spot API on 127.0.0.1 serving GET /api/v3/klines like the real one.

Rows are the documented 12-field arrays with prices as strings; ``startTime`` is inclusive,
``limit`` caps a page at 1,000, the current (still open) candle is included as Binance does,
and errors use Binance's bodies: -1121 "Invalid symbol." with HTTP 400, 429 and 418 with a
Retry-After header (see ../shared/data/http/binance/errors_with_provenance.json).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

STEPS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}


@dataclass
class FakeBinance:
    """``candles``: {symbol: [(open_ms, o, h, l, c, v), ...]} sorted by time."""

    candles: dict[str, list[tuple[int, float, float, float, float, float]]]
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    script: list[tuple[int, dict[str, Any], dict[str, str]] | str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def start(self) -> FakeBinance:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                status, payload, headers = fake.handle(self.path)
                if status == 0:
                    self.connection.shutdown(2)
                    return
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str) -> tuple[int, Any, dict[str, str]]:
        url = urlparse(path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append(q)
        self.times.append(time.monotonic())
        if self.script:
            action = self.script.pop(0)
            if action == "drop":
                return 0, "", {}
            if action == "500":
                return 500, {"code": -1000, "msg": "An unknown error occurred."}, {}
            assert not isinstance(action, str)
            return action
        if url.path != "/api/v3/klines":
            return 404, {"code": -1, "msg": "not found"}, {}
        sym = q.get("symbol", "")
        if sym not in self.candles:
            return 400, {"code": -1121, "msg": "Invalid symbol."}, {}
        step = STEPS.get(q.get("interval", ""))
        if step is None:
            return 400, {"code": -1120, "msg": "Invalid interval."}, {}
        limit = min(int(q.get("limit", 500)), 1000)
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
        now = self.now_ms()
        rows = [r for r in self.candles[sym] if r[0] <= now
                and (start is None or r[0] >= start) and (end is None or r[0] <= end)]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return 200, [[r[0], f"{r[1]:.8f}", f"{r[2]:.8f}", f"{r[3]:.8f}", f"{r[4]:.8f}",
                      f"{r[5]:.8f}", r[0] + step - 1, "0", 10, "0", "0", "0"] for r in rows], {}
