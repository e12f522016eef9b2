"""Real HTTP servers on 127.0.0.1 for the destinations beyond Telegram.

``FakeReceiver`` is a webhook receiver as the docs tell users to write one: it checks the
``X-Botopt-Signature`` HMAC over ``<timestamp>.<body>`` (401 when wrong, or when the timestamp
is more than five minutes off: a replay), and keeps every ``Idempotency-Key`` it accepted so
that the duplicate an ambiguous timeout causes is answered 200 and not processed again.

``FakeDiscord`` is Discord's execute-webhook endpoint: ``/api/webhooks/ID/TOKEN``, the message
limits (content 2000, 10 embeds, description 4096, title 256, footer 2048, 6000 over all
embeds), 204 without ``?wait=true`` and the message object with it, and its rate limits: a
bucket of ``bucket`` requests per ``per`` seconds per webhook with the ``X-RateLimit-*``
headers, then 429 with a JSON ``retry_after`` in seconds (a float) and ``global``.

Both take the Telegram fake's fault script: ``script`` (one action per request, then
``always``): ``429:<seconds>``, ``global:<seconds>`` (Discord), ``500``, ``hang:<seconds>``
(the request is processed, the answer comes that late), ``drop`` (the connection is closed
after the request was read and processed: the sender cannot know), ``lost`` (closed before
processing), ``cut`` (processed, the answer reset half-way), ``driphead:<seconds>``
(processed, the answer from its status line on sent a byte at a time), ``body:<text>`` (a 200
with that body, processed), ``raw429:<body>`` (a 429
with that body), ``big:<MB>`` (a 200 of that many MB, processed), ``400``, ``401``, ``404``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from botopt.benchmarks._loopback import Cut, DripHead, Loopback

Answer = tuple[int, Any, dict[str, str]]


@dataclass
class _Faults(Loopback):
    script: list[str] = field(default_factory=list)
    always: str | None = None
    arrived: int = 0  # requests, counted before any answer
    arrivals: list[float] = field(default_factory=list)  # their monotonic times
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            self.arrived += 1
            self.arrivals.append(time.monotonic())
            action = self.script.pop(0) if self.script else self.always
        if action == "lost":
            return 0, {}, {}
        if action and action.startswith("hang:"):
            time.sleep(float(action[5:]))
        with self._lock:
            return self.fault(action, path, headers, body) or self.serve(path, headers, body)

    def fault(self, action: str | None, path: str, headers: dict[str, str], body: bytes
              ) -> Answer | None:
        if not action or action.startswith("hang:"):
            return None
        if action == "500":
            return 500, {"message": "Internal Server Error"}, {}
        if action == "400":
            return 400, {"message": "Bad Request"}, {}
        if action == "401":
            return 401, {"message": "401: Unauthorized", "code": 0}, {}
        if action == "404":
            return 404, {"message": "Unknown Webhook", "code": 10015}, {}
        if action == "307":  # moved elsewhere, as a proxy or a changed host answers
            return 307, {"message": "moved"}, {"Location": "http://127.0.0.2:9/elsewhere"}
        if action.startswith("429:"):
            return self.limited(float(action[4:]), everywhere=False)
        if action.startswith("raw429:"):  # a 429 with this JSON body, as a broken proxy
            return 429, action[7:], {}
        if action.startswith("global:"):
            return self.limited(float(action[7:]), everywhere=True)
        answer = self.serve(path, headers, body)  # processed, then the answer goes wrong
        if action == "drop" or answer[0] >= 300:
            return (0, {}, {}) if action == "drop" else answer
        if action == "cut":  # the answer's first half, then a reset
            payload = answer[1] if isinstance(answer[1], str) else json.dumps(answer[1])
            return answer[0], Cut(payload), answer[2]
        if action.startswith("driphead:"):  # headers and all, a byte at a time
            payload = answer[1] if isinstance(answer[1], str) else json.dumps(answer[1])
            return answer[0], DripHead.of(payload, float(action[9:])), answer[2]
        if action.startswith("body:"):
            return 200, action[5:], {}
        if action.startswith("big:"):  # a 200 whose body is this many MB of junk
            return 200, "x" * int(float(action[4:]) * 1_000_000), {}
        raise ValueError(f"unknown action {action!r}")

    def limited(self, seconds: float, everywhere: bool) -> Answer:
        return 429, {"message": "You are being rate limited.", "retry_after": seconds,
                     "global": everywhere}, {"Retry-After": str(int(seconds + 0.999))}

    def serve(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError


@dataclass
class FakeReceiver(_Faults):
    secret: str = "test-secret-0123456789abcdef"
    max_skew: float = 300.0
    keys: dict[str, list[str]] = field(default_factory=dict)  # accepted key -> its ids
    received: list[dict[str, Any]] = field(default_factory=list)  # processed (new) batches
    deliveries: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # every one
    bad_signatures: int = 0

    def serve(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        ts = headers.get("X-Botopt-Timestamp", "")
        given = headers.get("X-Botopt-Signature", "")
        mac = hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
        fresh = ts.isdigit() and abs(time.time() - int(ts)) <= self.max_skew
        if not fresh or not hmac.compare_digest(given, "sha256=" + mac.hexdigest()):
            self.bad_signatures += 1
            return 401, {"error": "bad signature"}, {}
        doc = json.loads(body)
        key = headers.get("Idempotency-Key", "")
        ids = tuple(n["id"] for n in doc["notifications"])
        self.deliveries.append((key, ids))
        if key in self.keys:
            return 200, {"ok": True, "duplicate": True}, {}
        self.keys[key] = list(ids)
        self.received.append(doc)
        return 200, {"ok": True}, {}

    def ids_seen(self) -> list[str]:
        """Every notification id in every request that reached the receiver's logic."""
        return [n for _, ids in self.deliveries for n in ids]


_PATH = re.compile(r"/api(?:/v\d+)?/webhooks/(\d+)/([^/?]+)(\?.*)?")


@dataclass
class FakeDiscord(_Faults):
    webhook_id: str = "112233445566778899"
    token: str = "fake-Discord_webhook-token-0123456789"
    bucket: int = 5  # requests per window per webhook, as Discord's webhook bucket
    per: float = 2.0
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each 400 was given
    _window: list[float] = field(default_factory=list)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/api/webhooks/{self.webhook_id}/{self.token}"

    def serve(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        m = _PATH.fullmatch(path)
        if not m or m.group(1) != self.webhook_id:
            return 404, {"message": "Unknown Webhook", "code": 10015}, {}
        if m.group(2) != self.token:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}, {}
        now = time.monotonic()
        self._window = [t for t in self._window if t > now - self.per]
        if len(self._window) >= self.bucket:
            wait = round(self._window[0] + self.per - now, 3)
            code, payload, extra = self.limited(max(wait, 0.001), everywhere=False)
            return code, payload, {**extra, **self._headers(0, wait), "X-RateLimit-Scope":
                                   "shared"}
        try:
            msg = json.loads(body)
        except ValueError:
            return self._invalid("body is not JSON")
        why = _invalid_message(msg)
        if why:
            return self._invalid(why)
        self._window.append(now)
        left = self.bucket - len(self._window)
        reset = self._window[0] + self.per - now
        self.received.append(msg)
        headers_out = self._headers(left, reset)
        if "wait=true" not in (m.group(3) or ""):
            return 204, "", headers_out
        return 200, {"id": str(1_200_000_000_000_000_000 + len(self.received)), "type": 0,
                     "content": msg.get("content", ""), "embeds": msg.get("embeds", []),
                     "channel_id": "998877", "webhook_id": self.webhook_id,
                     "author": {"id": self.webhook_id, "username": "botopt", "bot": True},
                     "timestamp": "2026-12-05T18:00:00.000000+00:00"}, headers_out

    def _headers(self, left: int, reset_after: float) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.bucket), "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{max(reset_after, 0):.3f}",
                "X-RateLimit-Bucket": "fakebucket"}

    def _invalid(self, why: str) -> Answer:
        self.refused.append(why)
        code = 50006 if "empty" in why else 50035
        return 400, {"code": code, "message": "Cannot send an empty message" if code == 50006
                     else "Invalid Form Body", "errors": {"_errors": [{"message": why}]}}, {}

    def ids_seen(self) -> list[str]:
        """The notification ids in every message received (from each embed's footer)."""
        return [e["footer"]["text"].split()[1] for m in self.received for e in m["embeds"]]


def _invalid_message(msg: Any) -> str | None:
    if not isinstance(msg, dict):
        return "not an object"
    content, embeds = msg.get("content") or "", msg.get("embeds") or []
    if not content and not embeds:
        return "empty"
    if len(content) > 2000:
        return "content: Must be 2000 or fewer in length."
    if len(embeds) > 10:
        return "embeds: Must be 10 or fewer in length."
    total = 0
    for e in embeds:
        title, desc = e.get("title") or "", e.get("description") or ""
        footer = (e.get("footer") or {}).get("text") or ""
        if len(title) > 256 or len(desc) > 4096 or len(footer) > 2048:
            return "embed field too long"
        total += len(title) + len(desc) + len(footer)
    if total > 6000:
        return "Embed size exceeds maximum size of 6000"
    return None
