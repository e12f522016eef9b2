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

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base._config import Config, TelegramConfig
from ..base._destinations import TELEGRAM, DestinationConfig
from ..base._vocab import EventType, NotificationType, TelegramOutcome
from ..errors import ConfigError, TelegramConfigError, UsageError
from ..state._events import EventSink
from ..state._queue import (
    MAX_BATCH,
    FlushRules,
    FlushSession,
    Item,
    NotificationQueue,
    Pacer,
    copy_id,
    queue_type,
    split_type,
)
from ..state._workspace import Workspace
from ._notify_format import Message, as_plain, render_batch, split_further
from ._telegram import TelegramClient

log = logging.getLogger("botopt.notify")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
DEAD_AFTER = 3  # refusals of one notification, over as many flushes, before it is dead
# Sends of one notification that Telegram never confirmed (no answer in time, or a 200 that
# is not the Bot API's) before it is dead: each may have been delivered, so this bounds how
# often one batch can reach the chat (twice) whatever the network does.
UNCONFIRMED_AFTER = 2
# how many unconfirmed sends a notification has had, kept in its note
_UNCONFIRMED_RE = re.compile(r"\[unconfirmed (\d+)\]")
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
    # per destination: messages, notifications, rate_limited, dead_lettered, failure (0/1)
    by_destination: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, dest: str, what: str, n: int = 1) -> None:
        d = self.by_destination.setdefault(dest, {})
        d[what] = d.get(what, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {"notifications_sent": self.notifications_sent,
                "messages_sent": self.messages_sent, "remaining": self.remaining,
                "failed": self.failed, "dead_lettered": self.dead_lettered,
                "refused": self.refused,
                "next_retry_at": self.next_retry_at, "error": self.error,
                # with other destinations than the Telegram chat: this flush's per destination
                **({"destinations": {d: {k: c.get(k, 0) for k in (
                    "notifications", "messages", "rate_limited", "dead_lettered")}
                    for d, c in self.by_destination.items()}}
                   if set(self.by_destination) - {TELEGRAM} else {})}


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


def _signal_id(data: Mapping[str, Any]) -> str:
    """A signal's id is the signal itself (pair, candle, direction, engine): hosts that each
    queue it while the shared server is down (each with only its own cooldowns) queue one
    notification, which the server then holds once when their spools move up."""
    key = [str(data.get(f)) for f in ("symbol", "candle_time", "direction", "engine")]
    if "None" in key:
        return uuid.uuid4().hex  # a bot's own signal without them: nothing to match on
    return hashlib.blake2b(json.dumps(key).encode(), digest_size=16).hexdigest()


def enqueue(config: Config | None, notifications: Iterable[Mapping[str, Any]],
            max_batch_size: int | None = None, now: float | None = None, *,
            announce: bool = True) -> list[str]:
    """Queue notifications ({"type": ..., "data": {...}}) in one transaction; return ids.

    ``announce``: when the queue was empty, emit ``notify_queued`` so that a monitor
    sleeping until its next deadline learns of the new oldest item (the monitor itself
    passes False)."""
    if max_batch_size is not None and (isinstance(max_batch_size, bool) or not isinstance(
            max_batch_size, int) or not 1 <= max_batch_size <= MAX_BATCH):
        raise UsageError(f"max_batch_size must be a whole number of notifications in "
                         f"1..{MAX_BATCH}, not {str(max_batch_size)[:40]}", key="max_batch_size")
    items = _validate(notifications)
    if not items:
        return []
    batch = max_batch_size or (config.telegram.max_batch_size if config else 5)
    t = time.time() if now is None else now
    ids = [_signal_id(d) if k == NotificationType.SIGNAL else uuid.uuid4().hex
           for k, d in items]
    ws = _workspace(config)
    rows = []
    for i, (nid, (k, d)) in enumerate(zip(ids, items, strict=True)):
        raw = json.dumps(d)
        # one copy per destination its type routes to, each delivered on its own
        for dest in (config.notify.route(k) if config else (TELEGRAM,)):
            rows.append((copy_id(nid, dest), queue_type(k, dest), t + i * 1e-6, raw,
                         _batch_size(config, dest, batch, max_batch_size)))
    was_empty = ws.queue().add(rows)
    if announce and was_empty:
        ws.events().emit(EventType.NOTIFY_QUEUED, count=len(ids))
    return ids


def _batch_size(config: Config | None, dest: str, default: int, asked: int | None) -> int:
    """Notifications per message for ``dest``: its own setting, capped by what the caller
    asked for (``batch_notify(max_batch_size=...)``)."""
    spec = config.notify.destination(dest) if config else None
    if spec is None:
        return default
    return min(spec.max_batch_size, asked) if asked else spec.max_batch_size


def batch_notify(notifications: Iterable[Mapping[str, Any]], max_batch_size: int = 5, *,
                 config: Config | None = None) -> list[str]:
    """The bot authors' call: queue notifications to be sent in groups of ``max_batch_size``
    by the next ``botopt notify-flush``."""
    return enqueue(config, notifications, max_batch_size=max_batch_size)


def queue_stats(config: Config | None) -> dict[str, Any]:
    return _workspace(config).queue(create=False).stats()


def destination_names(config: Config) -> list[str]:
    """The destinations in use: the Telegram chat when a route sends there, then the rest."""
    return ([TELEGRAM] if _routes_telegram(config) else []) + \
        [d.name for d in config.notify.destinations]


def destination_stats(stats: Mapping[str, Any], names: Iterable[str] = ()
                      ) -> dict[str, dict[str, Any]]:
    """``queue_stats`` per destination: pending, dead letters, oldest created time; every
    one of ``names`` present (at 0), and any other that has copies queued or dead."""
    out: dict[str, dict[str, Any]] = {n: {"pending": 0, "dead_letters": 0,
                                          "oldest_created_at": None} for n in names}

    def of(qtype: str) -> dict[str, Any]:
        return out.setdefault(split_type(qtype)[1], {"pending": 0, "dead_letters": 0,
                                                     "oldest_created_at": None})

    for qtype, n in (stats.get("by_type") or {}).items():
        of(qtype)["pending"] += int(n)
    for qtype, n in (stats.get("dead_by_type") or {}).items():
        of(qtype)["dead_letters"] += int(n)
    for qtype, t in (stats.get("oldest_by_type") or {}).items():
        d = of(qtype)
        if t is not None and (d["oldest_created_at"] is None or t < d["oldest_created_at"]):
            d["oldest_created_at"] = t
    return out


def _unsendable(data: Any) -> str | None:
    """Why a queued notification can never be sent, or None."""
    if not isinstance(data, dict):
        return "stored data is not a JSON object"
    try:
        size = len(json.dumps(data, ensure_ascii=False).encode("utf-8"))
        if size > 4 * MAX_DATA_BYTES:
            # Not queued by botopt (it refuses more than MAX_DATA_BYTES): planted in the
            # queue. Split into messages, 10 MB took every flush past its budget, run
            # after run.
            return f"{size:,} bytes of data, more than botopt queues ({MAX_DATA_BYTES:,})"
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
    for qtype, rows, batch in due:
        kind, dest = split_type(qtype)
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
            msgs = render_batch(kind, items[i:i + batch])
            if dest != TELEGRAM:  # a preview of what goes there, in Telegram's words
                msgs = [Message(f"[to {dest}] {m.text}", m.parse_mode, m.ids) for m in msgs]
            result.messages += msgs
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


def _routes_telegram(config: Config) -> bool:
    return any(TELEGRAM in names for _, names in config.notify.routes)


def _flush(config: Config, force: bool, dry_run: bool, clock: Callable[[], float],
           sleep: Callable[[float], None], session: Any, max_wait: float | None
           ) -> FlushResult:
    tc = config.telegram
    # Without a route to Telegram its credentials are needed only if old rows wait for it.
    if _routes_telegram(config) or dry_run:
        try:
            token, chat = _telegram_credentials(tc, dry_run)
        except ConfigError as exc:
            if not config.notify.destinations:
                raise
            raise ConfigError(f"{exc}; [notify.routes] sends notifications there (every "
                              'type without its own route goes by "*", telegram by default)',
                              key=exc.key) from None
    else:
        token, chat = tc.token or "", tc.chat_id or ""
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
        client = TelegramClient(tc.api_url, token, tc.timeout, session) if token else None
        run = _Flush(held, client, chat, tc, clock, sleep, result, max_wait, ws.events())
        run.config, run.http_session = config, session
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
        self.config: Config | None = None
        self.http_session: Any = None
        self.dest = TELEGRAM  # the destination of the batch being sent
        self.qtype = ""  # and its queue type
        self.retries = tc.max_retries
        self.label = "Telegram"
        # Telegram's channel, made now: ``self.client`` and ``self.chat`` are the channel of
        # the batch being sent, so one made later from them was another destination's (a
        # Discord batch due first sent the Telegram batch through Discord's client: an
        # internal error on every flush, the Telegram queue stuck; sweep K)
        self.channels: dict[str, tuple[Any, str, Pacer, DestinationConfig | None]] = {
            TELEGRAM: (client, chat, held.pacer, None)}
        # Destinations given up on for this flush (a wait past the budget, a failure, a
        # configuration to fix), with why: the others are still served.
        self.stopped: dict[str, str] = {}
        self.fatal: Exception | None = None
        # (destination, queue type, key) -> the claimed part of a resent batch (see
        # _send_http_batch)
        self.parked: dict[tuple[str, str, str], list[Item]] = {}

    def loop(self) -> str | None:
        self._count_interrupted()
        while True:
            if self.clock() >= self.deadline:
                return self._budget_used()
            got = self.held.next_batch(self.refused, frozenset(self.stopped))
            if got is None:
                self._send_parked()
                break
            qtype, items = got
            if self.held.interrupted:
                # the shared queue finds them at a takeover, in the batch it hands over
                buried = self._count_interrupted()
                items = [(nid, data) for nid, data in items if nid not in buried]
            if not items:
                continue  # another host was faster
            kind, dest = split_type(qtype)
            self.qtype, self.dest = qtype, dest
            if self._gone(dest):
                for nid, _ in items:  # kept where a person sees them, never dropped
                    self._bury(nid, kind, f"destination {dest!r} is no longer in "
                               "[notify.destinations]", None)
                continue
            try:
                stop = self._send_to(dest, kind, items)
            except (TelegramConfigError, ConfigError) as exc:
                self.fatal, stop = exc, str(exc)
            if stop is not None:
                if stop == self._budget_used():
                    return stop
                self.stopped[dest] = stop
        if self.fatal is not None:
            raise self.fatal
        return "; ".join(dict.fromkeys(self.stopped.values())) or None

    def _count_interrupted(self) -> set[str]:
        """The sends a killed flush left in flight count as unconfirmed: each may have
        arrived. Released only, a flush killed mid-send K times in a row sent a batch K + 1
        times; counted, the next flush resends it once and a second one interrupted makes
        it a dead letter, as two timeouts do. A webhook's key stays with it. Returns the
        ids buried; each is counted once (the list is emptied)."""
        found = self.held.interrupted
        buried: set[str] = set()
        for nid, qtype, key in list(found):
            kind, dest = split_type(qtype)
            self.qtype, self.dest = qtype, dest
            reason = "a flush was stopped while sending it (it may have been delivered)" + (
                f" [key {key}]" if key else "")
            if self._count_unconfirmed(kind, [nid], reason):
                buried.add(nid)
        del found[:]
        return buried

    def _count_unconfirmed(self, kind: str, ids: list[str], reason: str) -> set[str]:
        """Count one unconfirmed send of each of ``ids`` and bury those at UNCONFIRMED_AFTER
        unconfirmed sends, or at DEAD_AFTER tries of any kind; returns those buried. The
        unconfirmed sends are counted in the note (``[unconfirmed N]``), apart from the
        refusals: one counter for both buried a notification refused once and then sent
        unanswered once, as "unconfirmed 2 times" (sweep H)."""
        notes = self.held.notes(ids)
        buried = set()
        for nid in ids:
            m = _UNCONFIRMED_RE.search(notes.get(nid, ""))
            n = (int(m.group(1)) if m else 0) + 1
            tries = self.held.refuse(nid, f"{reason} [unconfirmed {n}]")
            if n >= UNCONFIRMED_AFTER or tries >= DEAD_AFTER:
                why = f"unconfirmed {n} times" if n >= UNCONFIRMED_AFTER else \
                    f"{tries} tries, refused or unconfirmed"
                self._bury(nid, kind, f"{reason}; {why}" + (
                    "" if "may have been delivered" in reason
                    else ", it may have been delivered"), None)
                buried.add(nid)
        return buried

    def _budget_used(self) -> str:
        return f"the flush budget of {self.tc.flush_budget:g} s was used up"

    def _gone(self, dest: str) -> bool:
        """Copies queued for a destination the config no longer has."""
        return dest != TELEGRAM and self.config is not None and \
            self.config.notify.destination(dest) is None

    def _enter(self, dest: str) -> DestinationConfig | None:
        """Make ``dest`` the destination being sent to; its settings."""
        client, chat, pacer, spec = self._channel(dest)
        if client is None:  # Telegram routed to, and no token or chat configured
            _telegram_credentials(self.tc, False)  # raises: says which key to set
        self.dest, self.client, self.chat, self.pacer = dest, client, chat, pacer
        self.label = "Telegram" if spec is None or spec.type == "telegram" else dest
        self.retries = self.tc.max_retries if spec is None else spec.max_retries
        return spec

    def _send_to(self, dest: str, kind: str, items: list[Item]) -> str | None:
        spec = self._enter(dest)
        if spec is None or spec.type == "telegram":
            return self._send_batch(kind, items)
        return self._send_http_batch(kind, items)

    def _channel(self, dest: str) -> tuple[Any, str, Pacer, DestinationConfig | None]:
        """(client, chat, pacer, settings) of a destination, made on first use."""
        if dest in self.channels:
            return self.channels[dest]
        spec = self.config.notify.destination(dest) if self.config else None
        got: tuple[Any, str, Pacer, DestinationConfig | None]
        if spec is None or spec.type == "telegram":
            assert spec is not None  # _gone() buried the copies of unknown destinations
            got = (TelegramClient(spec.url or self.tc.api_url, spec.token or "",
                                  spec.timeout, self.http_session), spec.chat_id or "",
                   self.held.pacer_for(dest, spec.min_interval), spec)
        else:
            from ._http_dest import HttpClient

            pacer = self.held.pacer_for(dest, spec.min_interval)
            if spec.type == "discord":  # a global 429 holds every Discord webhook
                pacer = _Both(pacer, self.held.pacer_for("_discord", 0.0))
            got = (HttpClient(spec, self.http_session), "", pacer, spec)
        self.channels[dest] = got
        return got

    def _sendable(self, kind: str, items: list[Item]) -> list[Item]:
        """The items a destination can be sent; the rest become dead letters at once."""
        good = []
        for nid, data in items:
            why = _unsendable(data)
            if why is None:
                good.append((nid, data))
            else:
                self._bury(nid, kind, why, None)
        return good

    def _send_http_batch(self, kind: str, items: list[Item]) -> str | None:
        """A batch for a webhook or Discord: the same rules as ``_send_batch``, with the
        batch's idempotency key kept across an unconfirmed send and its resend.

        The copies an unconfirmed send carried go out again together, as that batch, under
        its key. The shared queue may hand them back split over several claims (it puts
        what a flush did not deliver at the end of its stream); the parts wait, claimed,
        until the batch is whole again (its key is the hash of its ids, so that is known),
        and only then go out."""
        from ._http_dest import KEY_RE, batch_key

        good = self._sendable(kind, items)
        notes = self.held.notes([nid for nid, _ in good])
        fresh = []
        for nid, data in good:
            m = KEY_RE.search(notes.get(nid, ""))
            if m:
                self.parked.setdefault((self.dest, self.qtype, m.group(1)), []).append(
                    (nid, data))
            else:
                fresh.append((nid, data))
        groups = []
        for (dest, qtype, key), group in list(self.parked.items()):
            if (dest, qtype) == (self.dest, self.qtype) and \
                    batch_key([n for n, _ in group]) == key:
                groups.append((key, self.parked.pop((dest, qtype, key))))
        if fresh:
            groups.append((batch_key([n for n, _ in fresh]), fresh))
        return self._send_groups(kind, groups)

    def _send_parked(self) -> str | None:
        """Parts of a resent batch whose rest never came in this flush (another host took
        it, or it was buried): they go out under a key of their own rather than wait."""
        from ._http_dest import batch_key

        stop = None
        for (dest, qtype, _), group in list(self.parked.items()):
            if dest in self.stopped:
                continue  # released at the end of the flush, whole, for the next one
            kind = split_type(qtype)[0]
            self.qtype = qtype
            self._enter(dest)
            stop = self._send_groups(kind, [(batch_key([n for n, _ in group]), group)])
            if stop is not None:
                self.stopped[dest] = stop
        self.parked.clear()
        return stop

    def _send_groups(self, kind: str, groups: list[tuple[str, list[Item]]]) -> str | None:
        items = [it for _, group in groups for it in group]
        by_id = dict(items)
        unsent = [m for key, group in groups for m in self._render_http(kind, group, key)]
        while unsent:
            msg = unsent[0]
            if set(msg.ids) <= self.refused:
                unsent.pop(0)
                continue
            stop = self._wait_for_slot()
            if stop is None:
                stop = self._send_http_one(kind, msg, unsent, by_id)
            if stop is not None:
                self._finish(items, unsent)
                return stop
        self._finish(items, [])
        return None

    def _render_http(self, kind: str, items: list[Item], key: str) -> list[Any]:
        from ._http_dest import discord_messages, webhook_messages

        spec = self.channels[self.dest][3]
        if spec is not None and spec.type == "discord":
            return discord_messages(kind, items, key)
        return webhook_messages(self.dest, kind, items, key)

    def _send_http_one(self, kind: str, msg: Any, unsent: list[Any],
                       by_id: dict[str, Any]) -> str | None:
        from ._http_dest import batch_key

        outcome = self._send_with_retries(msg)
        if outcome.kind == TelegramOutcome.OK:
            self.pacer.sent()
            if outcome.retry_after > 0:  # Discord's bucket is empty: wait for its reset
                self.pacer.retry_after(outcome.retry_after)
            self.result.messages_sent += 1
            self.result.count(self.dest, "messages")
            unsent.pop(0)
        elif outcome.kind == TelegramOutcome.RETRY_AFTER:
            self.result.rate_limited += 1
            self.result.count(self.dest, "rate_limited")
            if outcome.everywhere and isinstance(self.pacer, _Both):
                self.pacer.everywhere.retry_after(outcome.retry_after)
            self.pacer.retry_after(outcome.retry_after)
        elif outcome.kind == TelegramOutcome.REJECTED:
            if len(msg.ids) > 1:  # find the one at fault: each notification on its own
                unsent[0:1] = [m for nid in msg.ids for m in self._render_http(
                    kind, [(nid, by_id[nid])], batch_key([nid]))]
            else:
                self._refuse(msg.ids[0], kind, outcome.detail)
                unsent.pop(0)
        elif outcome.kind in (TelegramOutcome.AMBIGUOUS, TelegramOutcome.UNUSABLE):
            self.pacer.sent()
            # the key goes with it: the resend carries the same Idempotency-Key
            self._unconfirmed(kind, msg.ids, f"{outcome.detail} [key {msg.key}]")
            return self._failed(outcome.detail)
        elif outcome.kind == TelegramOutcome.FATAL:
            self.held.record_error(outcome.detail)
            return self._failed(f"{outcome.detail}; notifications kept queued")
        else:
            return self._failed(outcome.detail)
        return None

    def _failed(self, detail: str) -> str:
        self.result.failure = True
        self.result.count(self.dest, "failure")
        self.result.next_retry_at = self.clock() + 60.0
        return detail

    def _send_batch(self, kind: str, items: list[Item]) -> str | None:
        good = self._sendable(kind, items)
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
            self.result.count(self.dest, "messages")
            unsent.pop(0)
        elif outcome.kind == TelegramOutcome.RETRY_AFTER:
            self.result.rate_limited += 1
            self.result.count(self.dest, "rate_limited")
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
            return self._failed(outcome.detail)
        elif outcome.kind == TelegramOutcome.FATAL:
            self.held.record_error(outcome.detail)
            raise TelegramConfigError(f"{outcome.detail}; notifications kept queued",
                                      source="telegram")
        else:
            return self._failed(outcome.detail)
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
                return f"waiting for {self.label}'s rate limit"
            every = self.held.refresh_every
            if every is None:
                self.sleep(wait)
                return None
            self.sleep(min(wait, every))
            self.held.keep_alive()

    def _send_with_retries(self, msg: Any) -> Any:
        # marked in flight (a Telegram message has no idempotency key), so a flush that
        # takes over after a kill counts the send as unconfirmed
        self.held.sending(msg.ids, getattr(msg, "key", "") or "")
        try:
            return self._retrying(msg)
        finally:
            self.held.settled(msg.ids)

    def _retrying(self, msg: Any) -> Any:
        outcome = self._send_once(msg)
        for attempt in range(self.retries):
            if outcome.kind != TelegramOutcome.TRANSIENT:
                break
            backoff = min(0.5 * 2 ** attempt, 4.0)
            if self.clock() + backoff + 1.0 >= self.deadline:
                break
            log.info("%s: %s; retrying", self.label, outcome.detail)
            self.sleep(backoff)
            outcome = self._send_once(msg)
        return outcome

    def _send_once(self, msg: Any) -> Any:
        if isinstance(msg, Message):
            return self.client.send(self.chat, msg.text, msg.parse_mode,
                                    timeout=self.deadline - self.clock())
        return self.client.send(msg, timeout=self.deadline - self.clock())

    def _refuse(self, nid: str, kind: str, reason: str) -> None:
        """The destination refused this notification: count it; bury it after DEAD_AFTER."""
        self.refused.add(nid)
        tries = self.held.refuse(nid, reason)
        self.result.count(self.dest, "refused")
        log.warning("%s refused notification %s (%s): %s", self.label, nid[:8], kind, reason)
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
        fresh = [nid for nid in dict.fromkeys(ids) if nid not in self.refused]
        self.refused.update(fresh)  # not sent again in this flush
        self._count_unconfirmed(kind, fresh, reason)

    def _bury(self, nid: str, kind: str, reason: str, data: Any) -> None:
        """Move to the dead letters; count it and say so once (the monitor alerts on the
        event)."""
        self.refused.add(nid)
        data = self.held.bury(nid, self.qtype, reason, data)
        self.result.dead_lettered += 1
        self.result.count(self.dest, "dead_lettered")
        about = data.get("dead_letter") if isinstance(data, dict) else None
        self.events.emit(EventType.NOTIFY_DEAD_LETTER, id=nid, notification_type=kind,
                         reason=reason[:300], about=about, destination=self.dest)

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
        self.result.count(self.dest, "notifications", len(done))


class _Both:
    """A destination's own limits and a hold shared with others (Discord's global 429)."""

    def __init__(self, own: Pacer, everywhere: Pacer) -> None:
        self.own, self.everywhere = own, everywhere

    def wait(self) -> float:
        return self.everywhere.wait() or self.own.wait()

    def sent(self) -> None:
        self.own.sent()

    def retry_after(self, seconds: float) -> None:
        self.own.retry_after(seconds)


def _with_destination(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's notification type and destination apart (the queue keeps them as one)."""
    out = []
    for r in rows:
        kind, dest = split_type(str(r.get("type", "")))
        out.append({**r, "type": kind, "destination": dest})
    return out


def _state(row: Mapping[str, Any]) -> str:
    """A queued copy's delivery state: sending (claimed by a flush now), unconfirmed (sent,
    no answer: resent once by the next flush), refused (kept for another try), pending."""
    if row.get("claimed"):
        return "sending"
    if row.get("attempts"):
        # the note counts unconfirmed sends as "[unconfirmed N]" (a 2xx that is not the
        # API's answer said neither "may have been delivered" nor was it a refusal)
        note = str(row.get("last_error"))
        return "unconfirmed" if "may have been delivered" in note or \
            _UNCONFIRMED_RE.search(note) else "refused"
    return "pending"


def pending_notifications(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    """The queued copies, oldest first, each with its ``destination`` and ``state``."""
    return [{**r, "state": _state(r)}
            for r in _with_destination(_queue(config).pending(_limit(limit)))]


def dead_letters(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    """The notifications that could not be delivered, newest failure first."""
    return _with_destination(_queue(config).dead(_limit(limit)))


def _limit(limit: object) -> int:
    """A listing's size: "a" was handed to SQLite and read as a damaged queue."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10**9:
        raise UsageError(f"limit must be a whole number of at least 1, not {str(limit)[:40]}",
                         key="limit")
    return limit


def retry_dead_letter(config: Config, ident: str, now: float | None = None) -> str:
    """Queue a dead letter again, with its tries reset; returns its id."""
    return _queue(config).retry_dead(ident, time.time() if now is None else now)


def drop_dead_letter(config: Config, ident: str) -> str:
    """Delete a dead letter for good; returns its id."""
    return _queue(config).drop_dead(ident)


__all__ = ["FlushResult", "batch_notify", "dead_letters", "destination_names",
           "destination_stats",
           "drop_dead_letter", "enqueue",
           "flush_notifications", "pending_notifications", "queue_stats", "retry_dead_letter"]
