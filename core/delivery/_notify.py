"""The persistent notification queue and the flush that sends it to Telegram.

Delivery rules:

- The queue is a SQLite database in the cache directory (WAL, transactions), so enqueueing is
  safe from any number of processes and survives SIGKILL at any moment.
- A flush holds a non-blocking file lock: a second, overlapping flush sends nothing and says
  so. A batch is claimed before it is sent and deleted only after Telegram's ``ok: true``;
  claims left by a flush that died are taken over by the next flush, so at most that one
  batch is sent twice, and nothing is ever lost.
- One notification never blocks the others. A message Telegram refuses for good is split
  into one message per notification; the notification it still refuses is skipped for this
  flush, and after ``DEAD_AFTER`` refusals (or at once when it cannot be encoded) moves to the
  dead-letter table with its reason, where ``notify list --failed``, ``notify retry`` and
  ``notify drop`` reach it. Each dead letter is announced once as a ``notify_dead_letter``
  event, which the monitor turns into an alert.
- Every flush ends within ``telegram.flush_budget`` seconds whatever Telegram does: waits,
  retries and request timeouts are all cut to what is left, and the rest stays queued.
- Telegram's limits are kept across runs in a small state file, validated when read: the
  ``retry_after`` of a 429 (clamped to 1 s .. 1 h), at most one message per second per chat,
  and 20 per minute to a group.
- With ``state.url`` set, the queue, its dead letters and Telegram's limits live on the
  shared Redis/Valkey server instead, shared by every host
  (``botopt.core.state._redis_queue``); while the server cannot be reached, ``enqueue``
  uses the local queue, moved over by the next run that reaches it. The ``Workspace`` hands
  out the one or the other (``botopt.core.state._queue.NotificationQueue``); the flush below
  is written once, against its ``FlushSession``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base._config import Config, TelegramConfig
from ..base._vocab import EventType, TelegramOutcome
from ..errors import ConfigError, TelegramConfigError, UsageError
from ..state._events import EventSink
from ..state._queue import FlushRules, FlushSession, Item, NotificationQueue
from ..state._workspace import Workspace
from ._notify_format import Message, as_plain, render_batch, split_further
from ._telegram import Outcome, TelegramClient

log = logging.getLogger("botopt.notify")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
DEAD_AFTER = 3  # refusals of one notification, over as many flushes, before it is dead
# Sends of one notification that Telegram never confirmed (no answer in time, or a 200 that
# is not the Bot API's) before it is dead: each may have been delivered, so this bounds how
# often one batch can reach the chat (twice) whatever the network does.
UNCONFIRMED_AFTER = 2
MAX_SPLITS = 3  # "message is too long" answers to one piece before it counts as refused
MAX_DEPTH = 32  # nesting of a notification's data
MAX_DATA_BYTES = 32_000  # of a notification's JSON: at most ~8 messages when split


@dataclass
class FlushResult:
    notifications_sent: int = 0
    messages_sent: int = 0
    remaining: int = 0
    failed: int = 0  # notifications left queued because Telegram could not be used
    dead_lettered: int = 0  # moved to the dead-letter table by this flush
    refused: int = 0  # refused by Telegram this time, kept queued for another try
    refusal: str | None = None  # the last refusal's reason
    rate_limited: int = 0  # 429 answers this flush (counted by `botopt metrics`)
    next_retry_at: float | None = None
    error: str | None = None  # why something due was not delivered (None: all went out)
    failure: bool = False  # Telegram could not be used (network, 5xx), not a wait
    messages: list[Message] = field(default_factory=list)  # --dry-run: what would be sent
    skipped: str | None = None  # why nothing was attempted (another flush running)

    def to_dict(self) -> dict[str, Any]:
        return {"notifications_sent": self.notifications_sent,
                "messages_sent": self.messages_sent, "remaining": self.remaining,
                "failed": self.failed, "dead_lettered": self.dead_lettered,
                "refused": self.refused,
                "next_retry_at": self.next_retry_at, "error": self.error}


def _workspace(config: Config | None) -> Workspace:
    return Workspace.default() if config is None else Workspace.of(config)


def _queue(config: Config | None) -> NotificationQueue:
    """The queue of ``config``'s workspace: local, or on the shared server of ``state.url``."""
    return _workspace(config).queue()


def _clean(value: Any, where: str, depth: int = 0) -> tuple[Any, int]:
    """``value`` with lone surrogates (undecodable input bytes) replaced by U+FFFD, and how
    many strings needed it. Refuses data nested deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise UsageError(f"{where}: data is nested deeper than {MAX_DEPTH} levels", key="data")
    if isinstance(value, str):
        clean = _SURROGATE.sub("\ufffd", value)
        return clean, int(clean != value)
    if isinstance(value, Mapping):
        out, n = {}, 0
        for k, v in value.items():
            ck, nk = _clean(str(k), where, depth + 1)
            cv, nv = _clean(v, where, depth + 1)
            out[ck] = cv
            n += nk + nv
        return out, n
    if isinstance(value, (list, tuple)):
        pairs = [_clean(v, where, depth + 1) for v in value]
        return [p[0] for p in pairs], sum(p[1] for p in pairs)
    return value, 0


def _validate(notifications: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, n in enumerate(notifications, start=1):
        if not isinstance(n, Mapping):
            raise UsageError(f"notification {i}: expected an object with type and data", row=i)
        kind, data = n.get("type"), n.get("data", {})
        if not isinstance(kind, str) or not _TYPE_RE.match(kind):
            shown = kind if not isinstance(kind, str) else _SURROGATE.sub("\ufffd", kind)
            raise UsageError(f"notification {i}: type {str(shown)[:60]!r} is not a "
                             "lower_case name", row=i, key="type")
        if not isinstance(data, Mapping):
            raise UsageError(f"notification {i}: data must be a JSON object", row=i, key="data")
        data, replaced = _clean(data, f"notification {i}")
        try:
            size = len(json.dumps(data, allow_nan=False, ensure_ascii=False).encode())
        except (TypeError, ValueError) as exc:
            raise UsageError(f"notification {i}: data is not JSON ({exc})",
                             row=i, key="data") from None
        if size > MAX_DATA_BYTES:
            raise UsageError(f"notification {i}: data is {size:,} bytes; the limit is "
                             f"{MAX_DATA_BYTES:,} (about 8 Telegram messages)", row=i, key="data")
        if replaced:
            log.warning("notification %d: invalid UTF-8 in %d string(s) replaced by U+FFFD",
                        i, replaced)
        out.append((kind, data))
    return out


def enqueue(config: Config | None, notifications: Iterable[Mapping[str, Any]],
            max_batch_size: int | None = None, now: float | None = None, *,
            announce: bool = True) -> list[str]:
    """Queue notifications ({"type": ..., "data": {...}}) in one transaction; return ids.

    ``announce``: when the queue was empty, emit ``notify_queued`` so that a monitor
    sleeping until its next deadline learns of the new oldest item (the monitor itself
    passes False)."""
    items = _validate(notifications)
    if not items:
        return []
    batch = max_batch_size or (config.telegram.max_batch_size if config else 5)
    t = time.time() if now is None else now
    ids = [uuid.uuid4().hex for _ in items]
    ws = _workspace(config)
    was_empty = ws.queue().add([(nid, k, t + i * 1e-6, json.dumps(d), batch)
                                for i, (nid, (k, d)) in enumerate(zip(ids, items, strict=True))])
    if announce and was_empty:
        ws.events().emit(EventType.NOTIFY_QUEUED, count=len(ids))
    return ids


def batch_notify(notifications: Iterable[Mapping[str, Any]], max_batch_size: int = 5, *,
                 config: Config | None = None) -> list[str]:
    """The bot authors' call: queue notifications to be sent in groups of ``max_batch_size``
    by the next ``botopt notify-flush``."""
    return enqueue(config, notifications, max_batch_size=max_batch_size)


def queue_stats(config: Config | None) -> dict[str, Any]:
    return _queue(config).stats()


def _unsendable(data: Any) -> str | None:
    """Why a queued notification can never be sent, or None."""
    if not isinstance(data, dict):
        return "stored data is not a JSON object"
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "cannot be encoded as UTF-8 (a lone surrogate from undecodable input)"
    except (TypeError, ValueError, RecursionError) as exc:
        return f"cannot be encoded ({type(exc).__name__})"
    return None


def _telegram_credentials(tc: TelegramConfig, dry_run: bool) -> tuple[str, str]:
    if dry_run:
        return tc.token or "", tc.chat_id or ""
    if not tc.token:
        raise ConfigError("no Telegram bot token: set BOTOPT_TELEGRAM_TOKEN or telegram.token",
                          key="telegram.token")
    if not tc.chat_id:
        raise ConfigError("no Telegram chat id: set BOTOPT_TELEGRAM_CHAT_ID or "
                          "telegram.chat_id", key="telegram.chat_id")
    return tc.token, tc.chat_id


def _rules(config: Config, force: bool) -> FlushRules:
    tc = config.telegram
    return FlushRules(force=force, batch_interval=tc.batch_interval,
                      max_batch_size=tc.max_batch_size,
                      claim_timeout=config.state.claim_timeout)


def _dry_run(queue: NotificationQueue, rules: FlushRules, now: float) -> FlushResult:
    """What a flush would send now (claimed batches included), nothing sent."""
    result = FlushResult()
    due, result.remaining = queue.preview(rules, now)
    for kind, rows, batch in due:
        items = []
        for nid, data in rows:
            why = _unsendable(data)
            if why is None:
                items.append((nid, data))
                continue
            result.dead_lettered += 1
            result.messages.append(Message(f"[{kind} {nid[:8]} would move to the "
                                           f"dead letters: {why}]", None, (nid,)))
        for i in range(0, len(items), batch):
            result.messages += render_batch(kind, items[i:i + batch])
    return result


def flush_notifications(config: Config, *, force: bool = False, dry_run: bool = False,
                        clock: Callable[[], float] = time.time,
                        sleep: Callable[[float], None] = time.sleep,
                        session: Any = None, max_wait: float | None = None) -> FlushResult:
    """Send the due groups (all with ``force``) within ``telegram.flush_budget`` seconds.

    Never loses a notification. ``max_wait``: the longest single wait for Telegram's limits
    (default: whatever is left of the budget)."""
    from ._notify_format import message_timezone

    with message_timezone(config.notify.timezone):
        return _flush(config, force, dry_run, clock, sleep, session, max_wait)


def _flush(config: Config, force: bool, dry_run: bool, clock: Callable[[], float],
           sleep: Callable[[float], None], session: Any, max_wait: float | None
           ) -> FlushResult:
    tc = config.telegram
    token, chat = _telegram_credentials(tc, dry_run)
    ws = Workspace.of(config)
    queue, rules = ws.queue(), _rules(config, force)
    if dry_run:
        return _dry_run(queue, rules, clock())
    result = FlushResult()
    with queue.session(chat, rules, clock) as held:
        if held is None:
            result.skipped = "another notify-flush is running"
            result.remaining = queue.stats()["pending"]
            return result
        client = TelegramClient(tc.api_url, token, tc.timeout, session)
        run = _Flush(held, client, chat, tc, clock, sleep, result, max_wait, ws.events())
        try:
            result.error = run.loop()
        except TelegramConfigError as exc:
            result.error = str(exc)
            raise
        finally:
            held.state["error"] = result.error
    result.remaining = held.state.get("remaining", 0)
    return result


class _Flush:
    """One flush's sending loop, bounded by its deadline, on either queue's session."""

    def __init__(self, held: FlushSession, client: Any, chat: str, tc: TelegramConfig,
                 clock: Callable[[], float], sleep: Callable[[float], None],
                 result: FlushResult, max_wait: float | None, events: EventSink) -> None:
        self.held, self.client, self.pacer, self.chat, self.tc = \
            held, client, held.pacer, chat, tc
        self.clock, self.sleep, self.result, self.events = clock, sleep, result, events
        self.deadline = clock() + tc.flush_budget
        self.max_wait = tc.flush_budget if max_wait is None else max_wait
        self.refused: set[str] = set()  # refused or buried in this flush: not sent again

    def loop(self) -> str | None:
        while True:
            if self.clock() >= self.deadline:
                return self._budget_used()
            got = self.held.next_batch(self.refused)
            if got is None:
                return None
            kind, items = got
            if not items:
                continue  # another host was faster
            stop = self._send_batch(kind, items)
            if stop is not None:
                return stop

    def _budget_used(self) -> str:
        return f"the flush budget of {self.tc.flush_budget:g} s was used up"

    def _send_batch(self, kind: str, items: list[Item]) -> str | None:
        good = []
        for nid, data in items:
            why = _unsendable(data)
            if why is None:
                good.append((nid, data))
            else:
                self._bury(nid, kind, why, None)
        by_id = dict(good)
        unsent = render_batch(kind, good)
        while unsent:
            msg = unsent[0]
            if set(msg.ids) <= self.refused:
                unsent.pop(0)  # a further part of a notification Telegram refused
                continue
            stop = self._wait_for_slot()
            try:
                if stop is None:
                    stop = self._send_one(kind, msg, unsent, by_id)
            except TelegramConfigError:
                self._finish(items, unsent)  # what went out before stays sent
                raise
            if stop is not None:
                self._finish(items, unsent)
                return stop
        self._finish(items, [])
        return None

    def _send_one(self, kind: str, msg: Message, unsent: list[Message],
                  by_id: dict[str, Any]) -> str | None:
        """Send ``unsent[0]`` and update ``unsent`` by the answer; a reason to stop, or None."""
        outcome = self._send_with_retries(msg)
        if outcome.kind == TelegramOutcome.OK:
            self.pacer.sent()
            self.result.messages_sent += 1
            unsent.pop(0)
        elif outcome.kind == TelegramOutcome.RETRY_AFTER:
            self.result.rate_limited += 1
            self.pacer.retry_after(outcome.retry_after)
        elif outcome.kind == TelegramOutcome.TOO_LONG and msg.splits < MAX_SPLITS:
            unsent[0:1] = split_further(msg)
        elif outcome.kind == TelegramOutcome.BAD_ENTITIES and msg.parse_mode is not None:
            unsent[0:1] = as_plain(msg)
        elif outcome.kind in (TelegramOutcome.TOO_LONG, TelegramOutcome.BAD_ENTITIES,
                              TelegramOutcome.REJECTED):
            if len(msg.ids) > 1:  # find the one at fault: each notification on its own
                unsent[0:1] = [m for nid in msg.ids
                               for m in render_batch(kind, [(nid, by_id[nid])])]
            else:
                self._refuse(msg.ids[0], kind, outcome.detail)
                unsent.pop(0)
        elif outcome.kind in (TelegramOutcome.AMBIGUOUS, TelegramOutcome.UNUSABLE):
            self.pacer.sent()  # it may have gone out: it counts against the rate limit
            self._unconfirmed(kind, msg.ids, outcome.detail)
            self.result.failure = True
            self.result.next_retry_at = self.clock() + 60.0
            return outcome.detail
        elif outcome.kind == TelegramOutcome.FATAL:
            self.held.record_error(outcome.detail)
            raise TelegramConfigError(f"{outcome.detail}; notifications kept queued",
                                      source="telegram")
        else:
            self.result.failure = True
            self.result.next_retry_at = self.clock() + 60.0
            return outcome.detail
        return None

    def _wait_for_slot(self) -> str | None:
        while True:
            now = self.clock()
            left = self.deadline - now
            if left <= 1.0:
                return self._budget_used()
            wait = self.pacer.wait()
            if wait <= 0:
                return None
            if wait > min(self.max_wait, left - 1.0):
                self.result.next_retry_at = now + wait
                return "waiting for Telegram's rate limit"
            every = self.held.refresh_every
            if every is None:
                self.sleep(wait)
                return None
            self.sleep(min(wait, every))
            self.held.keep_alive()

    def _send_with_retries(self, msg: Message) -> Outcome:
        outcome: Outcome = self.client.send(self.chat, msg.text, msg.parse_mode,
                                   timeout=self.deadline - self.clock())
        for attempt in range(self.tc.max_retries):
            if outcome.kind != TelegramOutcome.TRANSIENT:
                break
            backoff = min(0.5 * 2 ** attempt, 4.0)
            if self.clock() + backoff + 1.0 >= self.deadline:
                break
            log.info("Telegram: %s; retrying", outcome.detail)
            self.sleep(backoff)
            outcome = self.client.send(self.chat, msg.text, msg.parse_mode,
                                       timeout=self.deadline - self.clock())
        return outcome

    def _refuse(self, nid: str, kind: str, reason: str) -> None:
        """Telegram refused this notification: count it; bury it after DEAD_AFTER."""
        self.refused.add(nid)
        tries = self.held.refuse(nid, reason)
        log.warning("Telegram refused notification %s (%s): %s", nid[:8], kind, reason)
        if tries >= DEAD_AFTER:
            self._bury(nid, kind, f"{reason} ({tries} tries)", None)
        elif tries:
            self.result.refused += 1
            self.result.refusal = f"{reason} (try {tries} of {DEAD_AFTER})"

    def _unconfirmed(self, kind: str, ids: Iterable[str], reason: str) -> None:
        """A send of ``ids`` was never confirmed. Not retried in this flush (a blind retry
        could deliver it again and again); the next flush resends it once, and after
        UNCONFIRMED_AFTER unconfirmed sends it is a dead letter (it may have arrived: the
        user decides with ``notify retry`` or ``notify drop``)."""
        for nid in ids:
            if nid in self.refused:
                continue
            self.refused.add(nid)  # not sent again in this flush
            tries = self.held.refuse(nid, reason)
            if tries >= UNCONFIRMED_AFTER:
                self._bury(nid, kind, f"{reason}; unconfirmed {tries} times, it may have "
                           "been delivered", None)

    def _bury(self, nid: str, kind: str, reason: str, data: Any) -> None:
        """Move to the dead letters; count it and say so once (the monitor alerts on the
        event)."""
        self.refused.add(nid)
        data = self.held.bury(nid, kind, reason, data)
        self.result.dead_lettered += 1
        about = data.get("dead_letter") if isinstance(data, dict) else None
        self.events.emit(EventType.NOTIFY_DEAD_LETTER, id=nid, notification_type=kind,
                         reason=reason[:300], about=about)

    def _delivered(self, items: list[Item], unsent: list[Message]) -> list[str]:
        """The ids whose every message went out; the others still waiting count as failed."""
        waiting = {nid for m in unsent for nid in m.ids}
        done = [nid for nid, _ in items if nid not in self.refused and nid not in waiting]
        if waiting - self.refused:
            self.result.failed += len(waiting - self.refused)
        return done

    def _finish(self, items: list[Item], unsent: list[Message]) -> None:
        """Delete the notifications whose every message went out."""
        done = self._delivered(items, unsent)
        self.held.deliver(done)
        self.result.notifications_sent += len(done)


def pending_notifications(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    return _queue(config).pending(limit)


def dead_letters(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    """The notifications that could not be delivered, newest failure first."""
    return _queue(config).dead(limit)


def retry_dead_letter(config: Config, ident: str, now: float | None = None) -> str:
    """Queue a dead letter again, with its tries reset; returns its id."""
    return _queue(config).retry_dead(ident, time.time() if now is None else now)


def drop_dead_letter(config: Config, ident: str) -> str:
    """Delete a dead letter for good; returns its id."""
    return _queue(config).drop_dead(ident)


__all__ = ["FlushResult", "batch_notify", "dead_letters", "drop_dead_letter", "enqueue",
           "flush_notifications", "pending_notifications", "queue_stats", "retry_dead_letter"]
