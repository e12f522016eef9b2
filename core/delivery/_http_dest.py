"""The destinations beyond Telegram: a generic signed webhook and Discord webhooks.

Each answer is classified into the same outcomes as Telegram's (``_telegram.Outcome``), so
the flush keeps one set of guarantees for all: a 2xx that confirms the send deletes the
batch; a 429 holds that destination for its ``Retry-After``; a 5xx or a connection refused
before anything was sent is retried with backoff within the run; a timeout or a connection
dropped after the request went out is *ambiguous* (resent once by the next flush with the
same ``Idempotency-Key``, then a dead letter); a 4xx about the message is the notification's
fault (dead letter after ``DEAD_AFTER`` refusals); 401/403/404/410 is the destination's
(kept queued, the flush says which destination to fix).

Webhook requests carry ``X-Botopt-Timestamp`` and ``X-Botopt-Signature: sha256=<hex>``, the
HMAC-SHA256 under the destination's secret of ``<timestamp>.<body bytes>``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..base._codec import json_loads
from ..base._destinations import DestinationConfig, redacted_url
from ..base._http import reads_by
from ..base._http import session as http_session
from ..base._redact import printable, redact
from ..base._vocab import TelegramOutcome as Kind
from ._notify_format import _TAG, FORMATTERS, TITLES, _generic
from ._telegram import (
    AnswerCut,
    AnswerTooSlow,
    clamp_retry_after,
    read_answer,
)

log = logging.getLogger("botopt.notify")
KEY_RE = re.compile(r"\[key ([0-9a-f]{32})\]")
# Discord's message limits (docs: Execute Webhook, Embed Limits).
DISCORD_CONTENT = 2000
DISCORD_EMBEDS = 10
DISCORD_DESCRIPTION = 4096
DISCORD_TOTAL = 6000
DISCORD_TITLE = 256
DISCORD_FOOTER = 2048
_BOLD = re.compile(r"</?b>")


@dataclass(frozen=True)
class HttpOutcome:
    kind: Kind
    detail: str = ""
    retry_after: float = 0.0  # RETRY_AFTER: the wait; OK: a hold before the next send
    everywhere: bool = False  # a Discord 429 with global: true


@dataclass(frozen=True)
class HttpMessage:
    """One request: the notifications it carries and its JSON body."""

    ids: tuple[str, ...]
    body: dict[str, Any]
    key: str  # Idempotency-Key: the same for a resend of the same notifications


def batch_key(ids: Sequence[str]) -> str:
    """A stable id of a batch: the same notifications give the same key, in any order."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Botopt-Signature value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# -- rendering ---------------------------------------------------------------------------------

def webhook_messages(dest: str, kind: str, items: Sequence[tuple[str, Any]], key: str
                     ) -> list[HttpMessage]:
    ids = tuple(n for n, _ in items)
    body = {"batch": key, "destination": dest, "type": kind,
            "notifications": [{"id": n, "type": kind, "data": d} for n, d in items]}
    return [HttpMessage(ids, body, key)]


def _plain(kind: str, data: Mapping[str, Any]) -> str:
    """A notification as Discord markdown: Telegram's rendering, <b> as **."""
    text = FORMATTERS.get(kind, _generic)(data)
    return html.unescape(_TAG.sub("", _BOLD.sub("**", text)))


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n… (cut: {len(text):,} characters)"
    return text[:limit - len(note)] + note


def discord_messages(kind: str, items: Sequence[tuple[str, Any]], key: str
                     ) -> list[HttpMessage]:
    """One message with one embed per notification, split where Discord's limits say (10
    embeds, 6000 characters over all of them); every part under the batch's key."""
    title = _cut(TITLES.get(kind, kind.replace("_", " ").capitalize()), DISCORD_TITLE - 20)
    embeds = []
    for nid, data in items:
        desc = _cut(_plain(kind, data), DISCORD_DESCRIPTION)
        footer = f"botopt {nid[:12]} · batch {key[:12]}"
        budget = DISCORD_TOTAL - len(title) - len(footer) - 10
        embeds.append((nid, {"title": title, "description": _cut(desc, budget),
                             "footer": {"text": footer}}))
    out: list[HttpMessage] = []
    part: list[tuple[str, dict[str, Any]]] = []

    def size(e: dict[str, Any]) -> int:
        return len(e["title"]) + len(e["description"]) + len(e["footer"]["text"])

    def close() -> None:
        if part:
            ids = tuple(n for n, _ in part)
            content = _cut(f"**{title}** ({len(items)})", DISCORD_CONTENT)
            out.append(HttpMessage(ids, {"content": content, "embeds": [e for _, e in part],
                                         "allowed_mentions": {"parse": []}}, key))
            part.clear()

    for nid, e in embeds:
        if len(part) == DISCORD_EMBEDS or sum(size(x) for _, x in part) + size(e) > \
                DISCORD_TOTAL:
            close()
        part.append((nid, e))
    close()
    return out


# -- sending -----------------------------------------------------------------------------------

class HttpClient:
    """POSTs to one destination and classifies every answer (never raises for the network)."""

    def __init__(self, dest: DestinationConfig, session: Any = None) -> None:

        self.dest = dest
        self.where = f"{dest.type} destination {dest.name}"
        self._session = session or http_session()
        self._session.headers.setdefault("User-Agent", "botopt")
        # Discord: wait=true makes a 200 carry the message, the proof it was posted
        self.url = dest.url if dest.type != "discord" else \
            dest.url + ("&" if "?" in dest.url else "?") + "wait=true"

    def send(self, msg: HttpMessage, timeout: float | None = None) -> HttpOutcome:
        import requests

        body = json.dumps(msg.body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.dest.type == "webhook":
            ts = str(int(time.time()))
            headers.update({"X-Botopt-Timestamp": ts, "Idempotency-Key": msg.key,
                            "X-Botopt-Signature": sign(self.dest.secret or "", ts, body)})
        limit = max(0.5, min(self.dest.timeout,
                             timeout if timeout is not None else self.dest.timeout))
        connect = min(5.0, limit / 2)
        read = max(0.5, limit - connect)
        deadline = time.monotonic() + limit
        try:
            with reads_by(deadline):  # the headers too, not each read of them
                resp = self._session.post(self.url, data=body, headers=headers, stream=True,
                                          timeout=(connect, read), allow_redirects=False)
                answer = read_answer(resp, deadline)
        except (requests.ReadTimeout, AnswerTooSlow):
            return HttpOutcome(Kind.AMBIGUOUS, f"{self.where} did not answer within "
                               f"{read:.1f} s (it may have been delivered)")
        except AnswerCut:
            return HttpOutcome(Kind.AMBIGUOUS, f"{self.where}'s answer was cut off "
                               "(it may have been delivered)")
        except (requests.ConnectTimeout, requests.exceptions.SSLError, UnicodeError) as exc:
            return HttpOutcome(Kind.TRANSIENT, f"{self.where} unreachable "
                               f"({type(exc).__name__})")
        except requests.ConnectionError as exc:
            return self._dropped(exc)
        except requests.RequestException as exc:
            return HttpOutcome(Kind.TRANSIENT, redact(f"{self.where} unreachable "
                                                      f"({type(exc).__name__})"))
        return self._classify(resp, answer)

    def _dropped(self, exc: Exception) -> HttpOutcome:
        """Refused before connecting: nothing was sent. Dropped after the request went out:
        it may have arrived, so it is ambiguous, never resent blindly."""
        text = redact(str(exc))
        log.debug("%s: %s", self.where, text)
        if "Connection aborted" in text or "RemoteDisconnected" in text or \
                "reset by peer" in text or "timed out" in text.lower() or \
                "IncompleteRead" in text:
            return HttpOutcome(Kind.AMBIGUOUS, f"{self.where} dropped the connection before "
                               "answering (it may have been delivered)")
        cause = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
        return HttpOutcome(Kind.TRANSIENT, f"{self.where} unreachable"
                           + (f" ({cause.group(0).strip()})" if cause else ""))

    def _classify(self, resp: Any, answer: bytes) -> HttpOutcome:
        status = resp.status_code
        try:
            body = json_loads(answer) if answer else None
        except (ValueError, RecursionError):
            body = None
        said = _said(body, resp)
        if self.dest.type == "discord":
            return _discord(self.where, status, body, resp.headers, said)
        if 200 <= status < 300:
            return HttpOutcome(Kind.OK)
        if status == 429:
            return HttpOutcome(Kind.RETRY_AFTER, f"{self.where} answered 429",
                               _retry_after(resp.headers.get("Retry-After"), self.where))
        if status in (401, 403, 404, 405, 410) or 300 <= status < 400:
            return HttpOutcome(Kind.FATAL, f"{self.where} answered {status}{said}; check "
                               f"its url ({redacted_url(self.dest)}) and secret")
        if status >= 500 or status == 408 or status < 200:
            return HttpOutcome(Kind.TRANSIENT, f"{self.where} answered {status}{said}")
        return HttpOutcome(Kind.REJECTED, f"{self.where} refused it: {status}{said}")


def _said(body: Any, resp: Any) -> str:
    text = ""
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error") or body.get("detail") or "")
    text = printable(text)[:200] or printable(str(resp.reason or ""))[:60]
    return f" ({redact(text)})" if text else ""


def _retry_after(raw: Any, who: str) -> float:
    """A Retry-After in seconds (an HTTP date or garbage: the default wait; an integer past
    the float range, Discord's JSON can hold one: the longest wait, not an OverflowError
    that ended every flush before the other destinations were served)."""
    return clamp_retry_after(raw, who)


def _discord(where: str, status: int, body: Any, headers: Any, said: str) -> HttpOutcome:
    if 200 <= status < 300:
        if not (isinstance(body, dict) and isinstance(body.get("id"), str)
                and body["id"].isdigit()):
            return HttpOutcome(Kind.UNUSABLE, f"{where} answered {status} without the "
                               "message Discord returns (it may have been delivered)")
        hold = 0.0
        if str(headers.get("X-RateLimit-Remaining", "1")).strip() == "0":
            # The bucket is empty: wait for its reset rather than earn a 429.
            hold = _retry_after(headers.get("X-RateLimit-Reset-After"), where)
        return HttpOutcome(Kind.OK, retry_after=hold)
    if status == 429:
        raw = body.get("retry_after") if isinstance(body, dict) else None
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            raw = headers.get("Retry-After")
        everywhere = bool(isinstance(body, dict) and body.get("global") is True) or \
            str(headers.get("X-RateLimit-Global", "")).lower() == "true"
        return HttpOutcome(Kind.RETRY_AFTER, f"{where} answered 429"
                           + (" (global)" if everywhere else ""), _retry_after(raw, where),
                           everywhere)
    if status in (401, 403, 404, 410) or 300 <= status < 400:
        # a redirect: the url is not Discord's webhook any more; no message is at fault
        return HttpOutcome(Kind.FATAL, f"{where} answered {status}{said}; check its url")
    if status >= 500 or status < 200 or status == 408:
        return HttpOutcome(Kind.TRANSIENT, f"{where} answered {status}{said}")
    return HttpOutcome(Kind.REJECTED, f"{where} refused it: {status}{said}")
