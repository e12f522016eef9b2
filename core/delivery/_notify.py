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
  (``botopt.core.delivery._redis_queue``); while the server cannot be reached, ``enqueue``
  uses the local queue, moved over by the next run that reaches it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base._config import Config, TelegramConfig
from ..base._fs import atomic_write_json, read_json
from ..base._vocab import EventType, TelegramOutcome
from ..errors import ConfigError, NotifyError, TelegramConfigError, UsageError
from ..state._events import emit
from ..state._workspace import Workspace
from ._notify_format import Message, as_plain, render_batch, split_further
from ._telegram import RETRY_AFTER_MAX, TelegramClient

log = logging.getLogger("botopt.notify")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
DEAD_AFTER = 3  # refusals of one notification, over as many flushes, before it is dead
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


def _queue_dir(config: Config | None) -> Path:
    if config is None:
        return Workspace.default().queue_dir()
    return Workspace.of(config).queue_dir()


def _shared_queue(config: Config | None) -> Any:
    """The queue on the shared server of ``state.url`` (``botopt.core.delivery._redis_queue``), or
    None for the local one. Raises a one-line NotifyError when the server is unreachable."""
    shared = Workspace.of(config).shared if config is not None else None
    if shared is None:
        return None
    from ._redis_queue import SharedQueue

    shared.check()
    return SharedQueue(shared)


def _migrate(con: sqlite3.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, type TEXT NOT NULL,"
                " created REAL NOT NULL, data TEXT NOT NULL, batch INTEGER NOT NULL,"
                # claimed_at is no longer written or read; the column stays so that a queue
                # shared with an older botopt (which still writes it) keeps working.
                " claim TEXT, claimed_at REAL, attempts INTEGER NOT NULL DEFAULT 0,"
                " last_error TEXT)")
    columns = {r[1] for r in con.execute("PRAGMA table_info(queue)")}
    for name, decl in (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("last_error", "TEXT")):
        if name not in columns:  # a queue written by botopt 0.1
            try:
                con.execute(f"ALTER TABLE queue ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process was first
                    raise
    con.execute("CREATE TABLE IF NOT EXISTS dead (id TEXT PRIMARY KEY, type TEXT NOT NULL,"
                " created REAL NOT NULL, data TEXT NOT NULL, batch INTEGER NOT NULL,"
                " attempts INTEGER NOT NULL, failed_at REAL NOT NULL, reason TEXT NOT NULL)")
    con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")


@contextmanager
def _db(directory: Path) -> Iterator[sqlite3.Connection]:
    path = directory / "queue.db"
    try:
        con = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise NotifyError(f"cannot open notification queue {path}: {exc}",
                          file=str(path)) from exc
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        _migrate(con)
        yield con
    except sqlite3.Error as exc:
        raise NotifyError(f"notification queue {path}: {exc}", file=str(path)) from exc
    finally:
        con.close()


def _clean(value: Any, where: str, depth: int = 0) -> tuple[Any, int]:
    """``value`` with lone surrogates (undecodable input bytes) replaced by U+FFFD, and how
    many strings needed it. Refuses data nested deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise UsageError(f"{where}: data is nested deeper than {MAX_DEPTH} levels")
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
            raise UsageError(f"notification {i}: expected an object with type and data")
        kind, data = n.get("type"), n.get("data", {})
        if not isinstance(kind, str) or not _TYPE_RE.match(kind):
            shown = kind if not isinstance(kind, str) else _SURROGATE.sub("\ufffd", kind)
            raise UsageError(f"notification {i}: type {str(shown)[:60]!r} is not a "
                             "lower_case name")
        if not isinstance(data, Mapping):
            raise UsageError(f"notification {i}: data must be a JSON object")
        data, replaced = _clean(data, f"notification {i}")
        try:
            size = len(json.dumps(data, allow_nan=False, ensure_ascii=False).encode())
        except (TypeError, ValueError) as exc:
            raise UsageError(f"notification {i}: data is not JSON ({exc})") from None
        if size > MAX_DATA_BYTES:
            raise UsageError(f"notification {i}: data is {size:,} bytes; the limit is "
                             f"{MAX_DATA_BYTES:,} (about 8 Telegram messages)")
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
    directory = _queue_dir(config)
    shared = Workspace.of(config).shared if config is not None else None
    was_empty: bool | None = None
    if shared is not None:  # several hosts: the shared queue, else this one until it is back
        from ._redis_queue import enqueue_shared

        was_empty = enqueue_shared(shared, directory, ids, items, batch, t)
    if was_empty is None:
        was_empty = _enqueue_local(directory, ids, items, batch, t)
    if announce and was_empty:
        emit(EventType.NOTIFY_QUEUED, _root=directory.parent, count=len(ids))
    return ids


def _enqueue_local(directory: Path, ids: list[str], items: list[tuple[str, dict[str, Any]]],
                   batch: int, t: float) -> bool:
    with _db(directory) as con:
        con.execute("BEGIN IMMEDIATE")
        was_empty = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
        con.executemany("INSERT INTO queue(id, type, created, data, batch) VALUES (?,?,?,?,?)",
                        [(nid, k, t + i * 1e-6, json.dumps(d), batch)
                         for i, (nid, (k, d)) in enumerate(zip(ids, items, strict=True))])
        con.execute("COMMIT")
    return bool(was_empty)


def batch_notify(notifications: Iterable[Mapping[str, Any]], max_batch_size: int = 5, *,
                 config: Config | None = None) -> list[str]:
    """The bot authors' call: queue notifications to be sent in groups of ``max_batch_size``
    by the next ``botopt notify-flush``."""
    return enqueue(config, notifications, max_batch_size=max_batch_size)


def queue_stats(config: Config | None) -> dict[str, Any]:
    shared = _shared_queue(config)
    if shared is not None:
        return shared.stats()  # type: ignore[no-any-return]
    with _db(_queue_dir(config)) as con:
        pending, oldest = con.execute("SELECT COUNT(*), MIN(created) FROM queue").fetchone()
        claimed = con.execute("SELECT COUNT(*) FROM queue WHERE claim IS NOT NULL"
                              ).fetchone()[0]
        dead = con.execute("SELECT COUNT(*) FROM dead").fetchone()[0]
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        by_type = dict(con.execute("SELECT type, COUNT(*) FROM queue GROUP BY type"
                                   ).fetchall())
    return {"pending": pending, "oldest_created_at": oldest, "claimed": claimed,
            "dead_letters": dead, "by_type": by_type,
            "last_flush_at": float(meta["last_flush_at"]) if "last_flush_at" in meta else None,
            "last_error": meta.get("last_error") or None}


def _valid_chat_state(raw: Any, now: float) -> dict[str, Any] | None:
    """One chat's saved limits, or None when they are not what we write."""
    if not isinstance(raw, dict) or not isinstance(raw.get("sent"), list):
        return None
    values = [raw.get("not_before"), *raw["sent"]]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
        return None
    # A wait longer than the clamp can only come from an older botopt or a broken file.
    return {"not_before": min(float(raw["not_before"]), now + RETRY_AFTER_MAX),
            "sent": sorted(float(t) for t in raw["sent"] if now - 60.0 < t <= now + 60.0)}


def _load_pacer_state(path: Path, now: float) -> dict[str, Any]:
    try:
        raw = read_json(path, {})
    except (ValueError, RecursionError, OSError) as exc:
        log.warning("Telegram state %s is unreadable (%s); starting afresh", path,
                    type(exc).__name__)
        return {}
    if not isinstance(raw, dict):
        log.warning("Telegram state %s is damaged; starting afresh", path)
        return {}
    state = {}
    for chat, value in raw.items():
        clean = _valid_chat_state(value, now)
        if clean is None:
            log.warning("Telegram state %s: entry for one chat is damaged; dropped", path)
        else:
            state[str(chat)] = clean
    return state


@dataclass
class _Pacer:
    """Telegram's limits per chat, persisted between runs."""

    path: Path
    chat: str
    clock: Callable[[], float]
    state: dict[str, Any] = field(default_factory=dict)
    _save_failed: bool = False

    def __post_init__(self) -> None:
        self.state = _load_pacer_state(self.path, self.clock())
        self.state.setdefault(self.chat, {"not_before": 0.0, "sent": []})

    @property
    def _chat(self) -> dict[str, Any]:
        return self.state[self.chat]  # type: ignore[no-any-return]

    def ready_at(self) -> float:
        now = self.clock()
        c = self._chat
        sent = [t for t in c["sent"] if t > now - 60.0]
        c["sent"] = sent
        at = max(c["not_before"], (sent[-1] + 1.0) if sent else 0.0)
        if self.chat.startswith("-") and len(sent) >= 20:
            at = max(at, sent[-20] + 60.0)
        return float(at)

    def sent(self) -> None:
        self._chat["sent"].append(self.clock())
        self.save()

    def retry_after(self, seconds: float) -> None:
        self._chat["not_before"] = self.clock() + seconds
        self.save()

    def save(self) -> None:
        try:
            atomic_write_json(self.path, self.state)
        except OSError as exc:  # a full disk must not stop delivery; the limits hold in memory
            if not self._save_failed:
                log.warning("cannot save Telegram state %s: %s", self.path, exc.strerror)
            self._save_failed = True


def _due_types(con: sqlite3.Connection, now: float, interval: float, force: bool,
               unclaimed_only: bool = True) -> list[str]:
    where = "WHERE claim IS NULL " if unclaimed_only else ""
    rows = con.execute(f"SELECT type, COUNT(*), MIN(created), MIN(batch) FROM queue {where}"
                       "GROUP BY type ORDER BY MIN(created)").fetchall()
    return [t for t, n, oldest, batch in rows
            if force or n >= batch or now - oldest >= interval]


def _claim(con: sqlite3.Connection, kind: str, claim: str
           ) -> list[tuple[str, dict[str, Any]]]:
    con.execute("BEGIN IMMEDIATE")
    batch = con.execute("SELECT MIN(batch) FROM queue WHERE type = ? AND claim IS NULL",
                        (kind,)).fetchone()[0]
    rows = con.execute("SELECT id, data FROM queue WHERE type = ? AND claim IS NULL "
                       "ORDER BY created, id LIMIT ?", (kind, batch or 5)).fetchall()
    con.executemany("UPDATE queue SET claim = ? WHERE id = ?", [(claim, r[0]) for r in rows])
    con.execute("COMMIT")
    return [(r[0], _load_data(r[1])) for r in rows]


def _load_data(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None  # not a dict: the flush moves it to the dead letters


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


def _dry_run(directory: Path, tc: TelegramConfig, force: bool, now: float) -> FlushResult:
    result = FlushResult()
    with _db(directory) as con:
        for kind in _due_types(con, now, tc.batch_interval, force, unclaimed_only=False):
            rows = con.execute("SELECT id, data FROM queue WHERE type = ? ORDER BY "
                               "created, id", (kind,)).fetchall()
            batch = con.execute("SELECT MIN(batch) FROM queue WHERE type = ?",
                                (kind,)).fetchone()[0]
            items = []
            for nid, raw in rows:
                data = _load_data(raw)
                why = _unsendable(data)
                if why is None:
                    items.append((nid, data))
                    continue
                result.dead_lettered += 1
                result.messages.append(Message(f"[{kind} {nid[:8]} would move to the "
                                               f"dead letters: {why}]", None, (nid,)))
            for i in range(0, len(items), batch):
                result.messages += render_batch(kind, items[i:i + batch])
        result.remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    return result


def flush_notifications(config: Config, *, force: bool = False, dry_run: bool = False,
                        clock: Callable[[], float] = time.time,
                        sleep: Callable[[float], None] = time.sleep,
                        session: Any = None, max_wait: float | None = None) -> FlushResult:
    """Send the due groups (all with ``force``) within ``telegram.flush_budget`` seconds.

    Never loses a notification. ``max_wait``: the longest single wait for Telegram's limits
    (default: whatever is left of the budget)."""
    from filelock import FileLock, Timeout

    tc = config.telegram
    token, chat = _telegram_credentials(tc, dry_run)
    directory = _queue_dir(config)
    shared = Workspace.of(config).shared
    if shared is not None and dry_run:
        from ._redis_queue import dry_run_shared

        return dry_run_shared(_shared_queue(config), tc, force, clock())
    if shared is not None:
        from ._redis_queue import flush_shared

        return flush_shared(shared, config, directory, token, chat, force=force, clock=clock,
                            sleep=sleep, session=session, max_wait=max_wait)
    if dry_run:
        return _dry_run(directory, tc, force, clock())

    result = FlushResult()
    lock = FileLock(str(directory / "flush.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        result.skipped = "another notify-flush is running"
        with _db(directory) as con:
            result.remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        return result
    except OSError as exc:
        raise NotifyError(f"cannot lock {directory / 'flush.lock'}: {exc.strerror}") from exc
    try:
        client = TelegramClient(tc.api_url, token, tc.timeout, session)
        pacer = _Pacer(directory / "telegram_state.json", chat, clock)
        with _db(directory) as con:
            # We hold the flush lock, so every existing claim belongs to a flush that died
            # between sending and acknowledging: release it (that batch may go out twice).
            con.execute("UPDATE queue SET claim = NULL "
                        "WHERE claim IS NOT NULL")
            run = _Flush(con, client, pacer, chat, tc, force, clock, sleep, result,
                         max_wait)
            try:
                result.error = run.loop()
            except TelegramConfigError as exc:
                result.error = str(exc)
                raise
            finally:
                _release(con, run.claim)
                result.remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
                con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                [("last_flush_at", str(clock())),
                                 ("last_error", result.error or "")])
    finally:
        lock.release()
    return result


class _Flush:
    """One flush's sending loop, bounded by its deadline."""

    def __init__(self, con: sqlite3.Connection, client: Any, pacer: _Pacer, chat: str,
                 tc: TelegramConfig, force: bool, clock: Callable[[], float],
                 sleep: Callable[[float], None], result: FlushResult,
                 max_wait: float | None) -> None:
        self.con, self.client, self.pacer, self.chat, self.tc = con, client, pacer, chat, tc
        self.force, self.clock, self.sleep, self.result = force, clock, sleep, result
        self.deadline = clock() + tc.flush_budget
        self.max_wait = tc.flush_budget if max_wait is None else max_wait
        self.claim = uuid.uuid4().hex  # marks this flush's rows (not the bot token)
        self.refused: set[str] = set()  # refused or buried in this flush: not sent again
        self.root = pacer.path.parent.parent  # the cache directory, where events go

    def loop(self) -> str | None:
        while True:
            if self.clock() >= self.deadline:
                return self._budget_used()
            due = _due_types(self.con, self.clock(), self.tc.batch_interval, self.force)
            if not due:
                return None
            items = _claim(self.con, due[0], self.claim)
            stop = self._send_batch(due[0], items)
            if stop is not None:
                return stop

    def _budget_used(self) -> str:
        return f"the flush budget of {self.tc.flush_budget:g} s was used up"

    def _send_batch(self, kind: str, items: list[tuple[str, Any]]) -> str | None:
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
        elif outcome.kind == TelegramOutcome.FATAL:
            self._record_error(outcome.detail)
            raise TelegramConfigError(f"{outcome.detail}; notifications kept queued",
                                      source="telegram")
        else:
            self.result.failure = True
            self.result.next_retry_at = self.clock() + 60.0
            return outcome.detail
        return None

    def _wait_for_slot(self) -> str | None:
        now = self.clock()
        left = self.deadline - now
        if left <= 1.0:
            return self._budget_used()
        wait = self.pacer.ready_at() - now
        if wait <= 0:
            return None
        if wait > min(self.max_wait, left - 1.0):
            self.result.next_retry_at = self.pacer.ready_at()
            return "waiting for Telegram's rate limit"
        self.sleep(wait)
        return None

    def _send_with_retries(self, msg: Message) -> Any:
        outcome = self.client.send(self.chat, msg.text, msg.parse_mode,
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

    def _record_error(self, detail: str) -> None:
        _record_error(self.con, detail)

    def _refuse(self, nid: str, kind: str, reason: str) -> None:
        """Telegram refused this notification: count it; bury it after DEAD_AFTER."""
        self.refused.add(nid)
        self.con.execute("UPDATE queue SET attempts = attempts + 1, last_error = ? "
                         "WHERE id = ?", (reason, nid))
        row = self.con.execute("SELECT attempts, data FROM queue WHERE id = ?",
                               (nid,)).fetchone()
        log.warning("Telegram refused notification %s (%s): %s", nid[:8], kind, reason)
        if row is not None and row[0] >= DEAD_AFTER:
            self._bury(nid, kind, f"{reason} ({row[0]} tries)", _load_data(row[1]))
        elif row is not None:
            self.result.refused += 1
            self.result.refusal = f"{reason} (try {row[0]} of {DEAD_AFTER})"

    def _bury(self, nid: str, kind: str, reason: str, data: Any) -> None:
        self.refused.add(nid)
        self.con.execute("BEGIN IMMEDIATE")
        self.con.execute("INSERT OR REPLACE INTO dead(id, type, created, data, batch, "
                         "attempts, failed_at, reason) SELECT id, type, created, data, batch,"
                         " attempts, ?, ? FROM queue WHERE id = ?", (self.clock(), reason, nid))
        self.con.execute("DELETE FROM queue WHERE id = ?", (nid,))
        self.con.execute("COMMIT")
        self._announce_dead(nid, kind, reason, data)

    def _announce_dead(self, nid: str, kind: str, reason: str, data: Any) -> None:
        """Count a dead letter and say so once (the monitor alerts on the event)."""
        self.result.dead_lettered += 1
        about = data.get("dead_letter") if isinstance(data, dict) else None
        emit(EventType.NOTIFY_DEAD_LETTER, _root=self.root, id=nid, notification_type=kind,
             reason=reason[:300], about=about)

    def _delivered(self, items: list[tuple[str, Any]], unsent: list[Message]) -> list[str]:
        """The ids whose every message went out; the others still waiting count as failed."""
        waiting = {nid for m in unsent for nid in m.ids}
        done = [nid for nid, _ in items if nid not in self.refused and nid not in waiting]
        if waiting - self.refused:
            self.result.failed += len(waiting - self.refused)
        return done

    def _finish(self, items: list[tuple[str, Any]], unsent: list[Message]) -> None:
        """Delete the notifications whose every message went out."""
        done = self._delivered(items, unsent)
        self.con.execute("BEGIN IMMEDIATE")
        self.con.executemany("DELETE FROM queue WHERE id = ? AND claim = ?",
                             [(nid, self.claim) for nid in done])
        self.con.execute("COMMIT")
        self.result.notifications_sent += len(done)


def _release(con: sqlite3.Connection, claim: str) -> None:
    con.execute("UPDATE queue SET claim = NULL WHERE claim = ?", (claim,))


def _record_error(con: sqlite3.Connection, error: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_error', ?)", (error,))


def pending_notifications(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    shared = _shared_queue(config)
    if shared is not None:
        return shared.pending(limit)  # type: ignore[no-any-return]
    with _db(_queue_dir(config)) as con:
        rows = con.execute("SELECT id, type, created, data, claim, attempts, last_error "
                           "FROM queue ORDER BY created LIMIT ?", (limit,)).fetchall()
    return [{"id": r[0], "type": r[1], "created": r[2], "data": _load_data(r[3]),
             "claimed": r[4] is not None, "attempts": r[5], "last_error": r[6]}
            for r in rows]


def dead_letters(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    """The notifications that could not be delivered, newest failure first."""
    shared = _shared_queue(config)
    if shared is not None:
        return shared.dead(limit)  # type: ignore[no-any-return]
    with _db(_queue_dir(config)) as con:
        rows = con.execute("SELECT id, type, created, data, attempts, failed_at, reason "
                           "FROM dead ORDER BY failed_at DESC LIMIT ?", (limit,)).fetchall()
    return [{"id": r[0], "type": r[1], "created": r[2], "data": _load_data(r[3]),
             "attempts": r[4], "failed_at": r[5], "reason": r[6]} for r in rows]


def _dead_id(con: sqlite3.Connection, ident: str) -> str:
    """The full id of the dead letter ``ident`` (an id or a unique prefix of one)."""
    if not re.fullmatch(r"[0-9a-f]{4,32}", ident):
        raise UsageError(f"invalid id {ident[:40]!r}: give an id (or its first 8 characters) "
                         "from botopt notify list --failed")
    ids = [r[0] for r in con.execute("SELECT id FROM dead WHERE substr(id, 1, ?) = ? LIMIT 2",
                                     (len(ident), ident))]
    if not ids:
        raise UsageError(f"no dead letter {ident}; botopt notify list --failed shows them")
    if len(ids) > 1:
        raise UsageError(f"id {ident} is ambiguous; give more characters")
    return ids[0]


def retry_dead_letter(config: Config, ident: str, now: float | None = None) -> str:
    """Queue a dead letter again, with its tries reset; returns its id."""
    shared = _shared_queue(config)
    if shared is not None:
        return shared.retry_dead(ident, time.time() if now is None else now)  # type: ignore[no-any-return]
    with _db(_queue_dir(config)) as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            nid = _dead_id(con, ident)
            # Queued afresh: its age starts now, so the monitor does not call it stuck.
            con.execute("INSERT INTO queue(id, type, created, data, batch) SELECT id, type, ?, "
                        "data, batch FROM dead WHERE id = ?",
                        (time.time() if now is None else now, nid))
            con.execute("DELETE FROM dead WHERE id = ?", (nid,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return nid


def drop_dead_letter(config: Config, ident: str) -> str:
    """Delete a dead letter for good; returns its id."""
    shared = _shared_queue(config)
    if shared is not None:
        return shared.drop_dead(ident)  # type: ignore[no-any-return]
    with _db(_queue_dir(config)) as con:
        nid = _dead_id(con, ident)
        con.execute("DELETE FROM dead WHERE id = ?", (nid,))
    return nid


__all__ = ["FlushResult", "batch_notify", "dead_letters", "drop_dead_letter", "enqueue",
           "flush_notifications", "pending_notifications", "queue_stats", "retry_dead_letter"]
