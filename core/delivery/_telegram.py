"""A minimal Telegram Bot API client: one call (sendMessage), every answer classified.

The bot token is part of the URL, and requests copies the URL into its exception messages, so
nothing from requests leaves this module unredacted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from ..base._codec import json_loads
from ..base._http import reads_by
from ..base._http import session as http_session
from ..base._redact import printable, redact, register_secret
from ..base._vocab import TelegramOutcome
from ..state._queue import RETRY_AFTER_MAX

log = logging.getLogger("botopt.notify")
# A 429's retry_after is trusted within this range (seconds): a negative or zero value would
# make us hammer, and a huge one (or a broken answer) would park the queue for years.
RETRY_AFTER_MIN = 1.0
RETRY_AFTER_DEFAULT = 5.0


@dataclass(frozen=True)
class Outcome:
    """What Telegram said. kind is one of:

    ok; retry_after (429); too_long, bad_entities (400s we can fix by re-rendering);
    rejected (any other 400-class refusal of this message: the notification's fault);
    fatal (401, 403, 404, chat not found: the configuration's fault);
    transient (network errors before the request went out, 5xx);
    ambiguous (the request went out and no answer came within the timeout: Telegram may
    have delivered it, so it must not be sent again at once);
    unusable (a 2xx whose body is not a Bot API answer, e.g. ``{}`` or a proxy's HTML page:
    nobody can say whether it was delivered).
    """

    kind: TelegramOutcome
    detail: str = ""
    retry_after: float = 0.0


def clamp_retry_after(raw: Any, who: str = "Telegram") -> float:
    """Seconds to wait from a 429's retry_after, within [RETRY_AFTER_MIN, RETRY_AFTER_MAX];
    ``who`` asked (named in the warning)."""
    try:
        seconds = float(raw)
    except OverflowError:  # an integer past the float range: as long as it can be, or none
        seconds = math.inf if raw > 0 else -math.inf
    except (TypeError, ValueError):
        return RETRY_AFTER_DEFAULT
    if math.isnan(seconds):
        return RETRY_AFTER_DEFAULT
    if seconds > RETRY_AFTER_MAX:
        shown = str(raw) if len(str(raw)) <= 20 else f"{str(raw)[:12]}... ({len(str(raw))} digits)"
        log.warning("%s asked to wait %s s; waiting %.0f s at most", who, shown,
                    RETRY_AFTER_MAX)
        return RETRY_AFTER_MAX
    return max(RETRY_AFTER_MIN, seconds)


MAX_ANSWER = 256 * 1024  # bytes of an answer read: a message object is a few kB


class AnswerTooSlow(Exception):
    """The answer's body did not arrive by the request's deadline."""


class AnswerCut(Exception):
    """The connection broke while the answer's body was read (a reset, a body shorter than
    its length, a compressed body that does not decode): the request had arrived, so the
    message may have been delivered."""


def read_answer(resp: Any, deadline: float) -> bytes:
    """The answer's first MAX_ANSWER bytes (decoded), read by ``deadline``
    (``time.monotonic()``), else AnswerTooSlow. The read timeout bounds each read, not the
    answer: a body dripping a byte every half second kept a flush 30 s over a 5 s budget.
    Reads take what has arrived (``read1``), at most 64 KiB decoded at a time, so neither a
    drip nor a gzip bomb (300 KB inflating to 300 MB: 680 MB of memory) holds a flush; the
    rest is dropped with the connection."""
    import http.client

    from urllib3.exceptions import HTTPError, ReadTimeoutError

    out = bytearray()
    raw = resp.raw
    try:
        while len(out) < MAX_ANSWER:
            if time.monotonic() > deadline:
                raise AnswerTooSlow
            # urllib3's own errors, not requests': the body is read from the raw stream
            try:
                chunk = raw.read1(min(65536, MAX_ANSWER - len(out)), decode_content=True)
            except (ReadTimeoutError, TimeoutError) as exc:
                raise AnswerTooSlow from exc
            except (HTTPError, OSError, http.client.HTTPException) as exc:
                raise AnswerCut from exc
            if not chunk:
                break
            out += chunk
    finally:
        resp.close()
    return bytes(out)


class TelegramClient:
    def __init__(self, api_url: str, token: str, timeout: float = 10.0,
                 session: Any = None) -> None:
        register_secret(token)
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._timeout = timeout
        self._session = session or http_session()
        self._session.headers.setdefault("User-Agent", "botopt")

    def send(self, chat_id: str, text: str, parse_mode: str | None,
             timeout: float | None = None) -> Outcome:
        """One sendMessage. ``timeout`` (seconds) caps this request below the configured one,
        so that a flush never overruns its time budget waiting for an answer."""
        import requests

        payload: dict[str, Any] = {"chat_id": chat_id, "text": text,
                                   "disable_web_page_preview": True}
        if parse_mode:
            payload["parse_mode"] = parse_mode
        limit = max(0.5, min(self._timeout, timeout if timeout is not None else self._timeout))
        connect = min(5.0, limit / 2)  # connect + read stay within what the flush has left
        deadline = time.monotonic() + limit
        try:
            # never redirected: the Bot API does not redirect, and a Location elsewhere would
            # take the chat id and text (and a token in its path) to another host
            with reads_by(deadline):  # the headers too, not each read of them
                resp = self._session.post(self._url, json=payload, stream=True,
                                          timeout=(connect, max(0.5, limit - connect)),
                                          allow_redirects=False)
                answer = read_answer(resp, deadline)
        except (requests.ReadTimeout, AnswerTooSlow):
            # Sent, unanswered: Telegram may well have delivered it (it often answers late).
            return Outcome(TelegramOutcome.AMBIGUOUS,
                           f"Telegram did not answer within {max(0.5, limit - connect):.1f} s "
                           "(the message may have been delivered)")
        except AnswerCut:
            return Outcome(TelegramOutcome.AMBIGUOUS, "Telegram's answer was cut off "
                           "(the message may have been delivered)")
        except (requests.RequestException, UnicodeError) as exc:
            if _sent_then_dropped(exc):
                # The request went out whole and the connection died before the answer: as
                # ambiguous as a timeout (Telegram may have delivered it), so not resent now.
                log.debug("Telegram dropped the connection: %s", redact(str(exc)))
                return Outcome(TelegramOutcome.AMBIGUOUS, "Telegram closed the connection "
                               "without an answer (the message may have been delivered)")
            log.debug("Telegram request failed: %s", redact(f"{type(exc).__name__}: {exc}"))
            cause = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(exc))
            return Outcome(TelegramOutcome.TRANSIENT, redact(
                f"Telegram unreachable ({type(exc).__name__}"
                + (f": {cause.group(0).strip()}" if cause else "") + ")"))
        return _classify(resp, answer)


def _sent_then_dropped(exc: BaseException) -> bool:
    """Whether a failed request had reached the server: the connection was open and then
    aborted or cut mid-answer (urllib3's ProtocolError: "Remote end closed connection without
    response", a reset while reading), not refused, unresolved or timed out connecting."""
    import requests
    from urllib3.exceptions import ProtocolError

    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return True
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.ConnectTimeout):
        return False
    return any(isinstance(a, ProtocolError) for a in exc.args)


# 400 answers about the chat, not the message: no notification is at fault.
_CHAT_PROBLEMS = ("chat not found", "upgraded to a supergroup", "not enough rights",
                  "have no rights", "chat_write_forbidden", "bot was kicked")


def _classify(resp: Any, answer: bytes) -> Outcome:
    try:
        body = json_loads(answer) if answer else None
    except ValueError:
        body = None
    status = resp.status_code
    if 300 <= status < 400:
        # telegram.api_url points somewhere that moved: no message is at fault, kept
        return Outcome(TelegramOutcome.FATAL, redact(
            f"Telegram answered {status} (a redirect, not followed); check telegram.api_url"))
    if 200 <= status < 300 and not _is_sent_message(body):
        return Outcome(TelegramOutcome.UNUSABLE, f"Telegram answered {status} with "
                       f"{_describe(body)}, not a Bot API answer")
    if status == 429 and not isinstance(body, dict):
        # A rate limit said by something in front of the Bot API (a proxy's HTML page): its
        # Retry-After is still a wait to keep, not a failure to retry at once (4 requests in
        # 4 s, and 4 more on the next run)
        return Outcome(TelegramOutcome.RETRY_AFTER,
                       f"Telegram answered 429 with {_describe(body)}",
                       clamp_retry_after(resp.headers.get("Retry-After", RETRY_AFTER_DEFAULT)))
    if not isinstance(body, dict):
        # Not the Bot API talking (a proxy, a captive portal): try again later.
        return Outcome(TelegramOutcome.TRANSIENT,
                       f"Telegram answered {status} with {_describe(body)}, not a Bot API "
                       "answer")
    desc = printable(str(body.get("description") or resp.reason or ""))[:300]
    if 200 <= status < 300:
        return Outcome(TelegramOutcome.OK)
    if status == 429:
        params = body.get("parameters")
        wait = params.get("retry_after") if isinstance(params, dict) else None
        if wait is None:
            wait = resp.headers.get("Retry-After", RETRY_AFTER_DEFAULT)
        return Outcome(TelegramOutcome.RETRY_AFTER, redact(desc), clamp_retry_after(wait))
    low = desc.lower()
    if status == 400 and "message is too long" in low:
        return Outcome(TelegramOutcome.TOO_LONG, desc)
    if status == 400 and "can't parse entities" in low:
        return Outcome(TelegramOutcome.BAD_ENTITIES, desc)
    if status in (401, 403, 404) or (status == 400 and any(p in low for p in _CHAT_PROBLEMS)):
        return Outcome(TelegramOutcome.FATAL, redact(f"Telegram answered {status}: {desc}"))
    if status >= 500 or status < 400:
        return Outcome(TelegramOutcome.TRANSIENT, redact(f"Telegram answered {status}: {desc}"))
    return Outcome(TelegramOutcome.REJECTED, redact(f"Telegram answered {status}: "
                                      f"{desc or json.dumps(body)[:200]}"))


def _is_sent_message(body: Any) -> bool:
    """Whether ``body`` is sendMessage's success answer: ok true and the Message sent."""
    if not isinstance(body, dict) or body.get("ok") is not True:
        return False
    result = body.get("result")
    mid = result.get("message_id") if isinstance(result, dict) else None
    return isinstance(mid, int) and not isinstance(mid, bool)


def _describe(body: Any) -> str:
    if body is None:
        return "a body that is not JSON"
    if isinstance(body, dict):
        keys = ", ".join(sorted(str(k) for k in body)[:5])
        return f"a JSON object without a sent message (keys: {keys or 'none'})"
    return f"JSON {type(body).__name__}"
