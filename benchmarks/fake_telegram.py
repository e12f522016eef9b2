"""A fake Telegram Bot API on 127.0.0.1 that behaves as the real one does.

Error envelopes follow the official server (see ../shared/data/http/telegram/): HTTP status =
error_code, compact JSON keys ok, error_code, description[, parameters]; a 429 carries
parameters.retry_after and a Retry-After header. It parses HTML entities strictly, measures
length in UTF-16 units after parsing, enforces 1 message/s per chat and 20/min per group,
and can be scripted to fail ("500", "drop", "429:N", "401", "403", "chat", "long", "parse",
"refuse" (a 400 about the message), "body:RAW" (a 200 whose body is RAW), "hang:S" (answer
normally after S seconds), "drip:S" (deliver it, then send the answer a byte every S
seconds), "driphead:S" (deliver it, then send the status line, headers and answer a byte every
S seconds), "redirect:URL" (a 307 to URL), "cut" (deliver it, then reset the connection
half-way through the answer)): ``script`` is used
up one answer per request, ``always`` answers every request after it, and ``refuse_containing``
refuses every message whose text contains that string (a poisoned notification).
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._loopback import Answer, Cut, Drip, DripHead, Loopback

ALLOWED = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a",
           "tg-spoiler", "blockquote"}
_TAG = re.compile(r"<(/?)([a-zA-Z-]+)[^>]*>")


def parse_entities(text: str) -> str:
    """The plain text Telegram would show; ValueError like "can't parse entities"."""
    stack: list[str] = []
    pos = 0
    for m in _TAG.finditer(text):
        closing, name = m.group(1), m.group(2).lower()
        if name not in ALLOWED:
            raise ValueError(f"Unsupported start tag \"{name}\" at byte offset {m.start()}")
        if closing:
            if not stack or stack.pop() != name:
                raise ValueError(f"Unmatched end tag at byte offset {m.start()}")
        else:
            stack.append(name)
        pos = m.end()
    if stack:
        raise ValueError(f"Can't find end tag corresponding to start tag \"{stack[-1]}\"")
    del pos
    plain = _TAG.sub("", text)
    if re.search(r"&(?!(amp|lt|gt|quot|#\d+|#x[0-9a-fA-F]+);)", plain):
        raise ValueError("Character '&' is reserved and must be escaped")
    if "<" in plain.replace("&lt;", "") or ">" in re.sub(r"&gt;", "", plain):
        raise ValueError("Unexpected character")
    return html.unescape(plain)


@dataclass
class FakeTelegram(Loopback):
    token: str = "123456789:AAtesttokentesttokentesttokentest"
    chats: tuple[str, ...] = ("-1001", "42")
    clock: Callable[[], float] = time.monotonic
    enforce_limits: bool = True
    script: list[str] = field(default_factory=list)
    always: str | None = None
    refuse_containing: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    responses: list[int] = field(default_factory=list)
    arrived: int = 0  # requests received, counted before any answer (see "hang")
    _sent_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> Answer:
        return self.handle(path, body)

    @staticmethod
    def error(code: int, description: str, retry_after: float | None = None
              ) -> tuple[int, Any, dict[str, str]]:
        payload: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        headers = {}
        if retry_after is not None:
            payload["parameters"] = {"retry_after": retry_after}
            headers["Retry-After"] = str(retry_after)
        return code, payload, headers

    def handle(self, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.arrived += 1
            out = self._handle(path, body)
            self.responses.append(out[0])
            return out

    def _handle(self, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        m = re.fullmatch(r"/bot([^/]+)/(\w+)", path)
        if not m or m.group(1) != self.token:
            return self.error(401, "Unauthorized")
        if m.group(2) in ("getMe", "getChat"):  # what `botopt doctor` asks, shaped as Telegram's
            return self._info(m.group(2), body)
        if m.group(2) != "sendMessage":
            return self.error(404, "Not Found")
        action = self.script.pop(0) if self.script else self.always
        if action:
            if action.startswith("body:"):
                return 200, action[5:], {}
            if action.startswith("redirect:"):
                return 307, {"ok": False}, {"Location": action[9:]}
            if action.startswith("hang:"):  # answer only after this many seconds
                self._lock.release()
                try:
                    time.sleep(float(action[5:]))
                finally:
                    self._lock.acquire()
            if action == "refuse":
                return self.error(400, "Bad Request: text must be encoded in UTF-8")
            if action == "drop":
                return 0, {}, {}
            if action == "500":
                return self.error(500, "Internal Server Error")
            if action.startswith("429"):
                raw = action.split(":")[1]
                wait = float(raw) if "." in raw or "e" in raw else int(raw)
                return self.error(429, f"Too Many Requests: retry after {raw}", wait)
            if action == "401":
                return self.error(401, "Unauthorized")
            if action == "403":
                return self.error(403, "Forbidden: bot was blocked by the user")
            if action == "chat":
                return self.error(400, "Bad Request: chat not found")
            if action == "long":
                return self.error(400, "Bad Request: message is too long")
            if action == "parse":
                return self.error(400, "Bad Request: can't parse entities: Can't find end of "
                                  "the entity starting at byte offset 138")
        req = json.loads(body)
        chat = str(req.get("chat_id"))
        if chat not in self.chats:
            return self.error(400, "Bad Request: chat not found")
        text = req.get("text", "")
        if req.get("parse_mode") == "HTML":
            try:
                shown = parse_entities(text)
            except ValueError as exc:
                return self.error(400, f"Bad Request: can't parse entities: {exc}")
        else:
            shown = text
        if not shown.strip():
            return self.error(400, "Bad Request: message text is empty")
        if self.refuse_containing and self.refuse_containing in shown:
            return self.error(400, "Bad Request: text must be encoded in UTF-8")
        if len(shown.encode("utf-16-le")) // 2 > 4096:
            return self.error(400, "Bad Request: message is too long")
        now = self.clock()
        if self.enforce_limits:
            sent = [t for t in self._sent_at[chat] if t > now - 60]
            self._sent_at[chat] = sent
            if sent and now - sent[-1] < 1.0:
                return self.error(429, "Too Many Requests: retry after 1", 1)
            if chat.startswith("-") and len(sent) >= 20:
                wait = int(sent[-20] + 60 - now) + 1
                return self.error(429, f"Too Many Requests: retry after {wait}", wait)
        self._sent_at[chat].append(now)
        self.received.append({"chat_id": chat, "text": text, "shown": shown,
                              "parse_mode": req.get("parse_mode")})
        answer = {"ok": True, "result": {"message_id": len(self.received),
                                         "chat": {"id": int(chat)}, "date": int(now),
                                         "text": shown}}
        if action == "cut":
            return 200, Cut(json.dumps(answer, separators=(",", ":"))), {}
        if action and action.startswith("driphead:"):
            return 200, DripHead.of(json.dumps(answer, separators=(",", ":")),
                                    float(action[9:])), {}
        if action and action.startswith("drip:"):
            return 200, Drip.of(json.dumps(answer, separators=(",", ":")),
                                float(action[5:])), {}
        return 200, answer, {}


    def _info(self, method: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "getMe":
            return 200, {"ok": True, "result": {
                "id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "botopt test",
                "username": "botopt_test_bot", "can_join_groups": True,
                "can_read_all_group_messages": False, "supports_inline_queries": False}}, {}
        chat = str(json.loads(body or b"{}").get("chat_id"))
        if chat not in self.chats:
            return self.error(400, "Bad Request: chat not found")
        kind = "supergroup" if chat.startswith("-100") else "private"
        return 200, {"ok": True, "result": {"id": int(chat), "type": kind,
                                            "title": f"chat {chat}"}}, {}


class VirtualClock:
    """Compressed time for rate-limit tests: sleeping advances the clock instantly."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.lock = threading.Lock()

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(0.0, seconds)
