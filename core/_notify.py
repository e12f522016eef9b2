"""The persistent notification queue and the flush that sends it to Telegram.

Delivery rules:

- The queue is a SQLite database in the cache directory (WAL, transactions), so enqueueing is
  safe from any number of processes and survives SIGKILL at any moment.
- A flush holds a non-blocking file lock: a second, overlapping flush sends nothing and says
  so. A batch is claimed before it is sent and deleted only after Telegram's ``ok: true``;
  claims left by a flush that died are taken over by the next flush, so at most that one
  batch is sent twice, and nothing is ever lost.
- Telegram's limits are kept across runs in a small state file: the ``retry_after`` of a 429,
  at most one message per second per chat, and 20 per minute to a group. A flush that would
  have to wait long stops and reports when to try again instead of sleeping inside cron.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botopt.core._config import Config, TelegramConfig
from botopt.core._fs import atomic_write_json, read_json
from botopt.core._notify_format import Message, as_plain, render_batch, split_further
from botopt.core._workspace import Workspace
from botopt.core.errors import ConfigError, NotifyError, TelegramConfigError, UsageError

log = logging.getLogger("botopt.notify")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
MAX_WAIT = 15.0  # seconds a flush may sleep for Telegram's limits before leaving it to the next


@dataclass
class FlushResult:
    notifications_sent: int = 0
    messages_sent: int = 0
    remaining: int = 0
    failed: int = 0
    next_retry_at: float | None = None
    messages: list[Message] = field(default_factory=list)  # --dry-run: what would be sent
    skipped: str | None = None  # why nothing was attempted (another flush running)

    def to_dict(self) -> dict[str, Any]:
        return {"notifications_sent": self.notifications_sent,
                "messages_sent": self.messages_sent, "remaining": self.remaining,
                "failed": self.failed, "next_retry_at": self.next_retry_at}


def _queue_dir(config: Config | None) -> Path:
    if config is None:
        return Workspace.default().queue_dir()
    return Workspace.of(config).queue_dir()


@contextmanager
def _db(directory: Path) -> Iterator[sqlite3.Connection]:
    path = directory / "queue.db"
    try:
        con = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise NotifyError(f"cannot open notification queue {path}: {exc}") from exc
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, type TEXT NOT NULL,"
                    " created REAL NOT NULL, data TEXT NOT NULL, batch INTEGER NOT NULL,"
                    " claim TEXT, claimed_at REAL)")
        con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        yield con
    except sqlite3.Error as exc:
        raise NotifyError(f"notification queue {path}: {exc}") from exc
    finally:
        con.close()


def _validate(notifications: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, n in enumerate(notifications, start=1):
        if not isinstance(n, Mapping):
            raise UsageError(f"notification {i}: expected an object with type and data")
        kind, data = n.get("type"), n.get("data", {})
        if not isinstance(kind, str) or not _TYPE_RE.match(kind):
            raise UsageError(f"notification {i}: type {kind!r} is not a lower_case name")
        if not isinstance(data, Mapping):
            raise UsageError(f"notification {i}: data must be a JSON object")
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"notification {i}: data is not JSON ({exc})") from None
        out.append((kind, dict(data)))
    return out


def enqueue(config: Config | None, notifications: Iterable[Mapping[str, Any]],
            max_batch_size: int | None = None, now: float | None = None) -> list[str]:
    """Queue notifications ({"type": ..., "data": {...}}) in one transaction; return ids."""
    items = _validate(notifications)
    if not items:
        return []
    batch = max_batch_size or (config.telegram.max_batch_size if config else 5)
    t = time.time() if now is None else now
    ids = [uuid.uuid4().hex for _ in items]
    with _db(_queue_dir(config)) as con:
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO queue(id, type, created, data, batch) VALUES (?,?,?,?,?)",
                        [(nid, k, t + i * 1e-6, json.dumps(d), batch)
                         for i, (nid, (k, d)) in enumerate(zip(ids, items, strict=True))])
        con.execute("COMMIT")
    return ids


def batch_notify(notifications: Iterable[Mapping[str, Any]], max_batch_size: int = 5, *,
                 config: Config | None = None) -> list[str]:
    """The bot authors' call: queue notifications to be sent in groups of ``max_batch_size``
    by the next ``botopt notify-flush``."""
    return enqueue(config, notifications, max_batch_size=max_batch_size)


def queue_stats(config: Config | None) -> dict[str, Any]:
    with _db(_queue_dir(config)) as con:
        pending, oldest = con.execute("SELECT COUNT(*), MIN(created) FROM queue").fetchone()
        claimed = con.execute("SELECT COUNT(*) FROM queue WHERE claim IS NOT NULL"
                              ).fetchone()[0]
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        by_type = dict(con.execute("SELECT type, COUNT(*) FROM queue GROUP BY type"
                                   ).fetchall())
    return {"pending": pending, "oldest_created_at": oldest, "claimed": claimed,
            "by_type": by_type,
            "last_flush_at": float(meta["last_flush_at"]) if "last_flush_at" in meta else None,
            "last_error": meta.get("last_error") or None}


@dataclass
class _Pacer:
    """Telegram's limits per chat, persisted between runs."""

    path: Path
    chat: str
    clock: Callable[[], float]
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.state = read_json(self.path, {}) or {}
        except ValueError:
            self.state = {}
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
        return at

    def sent(self) -> None:
        self._chat["sent"].append(self.clock())
        self.save()

    def retry_after(self, seconds: float) -> None:
        self._chat["not_before"] = self.clock() + seconds
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.state)


def _due_types(con: sqlite3.Connection, now: float, interval: float, force: bool
               ) -> list[str]:
    rows = con.execute("SELECT type, COUNT(*), MIN(created), MIN(batch) FROM queue "
                       "GROUP BY type ORDER BY MIN(created)").fetchall()
    return [t for t, n, oldest, batch in rows
            if force or n >= batch or now - oldest >= interval]


def _claim(con: sqlite3.Connection, kind: str, token: str, now: float
           ) -> list[tuple[str, dict[str, Any]]]:
    con.execute("BEGIN IMMEDIATE")
    batch = con.execute("SELECT MIN(batch) FROM queue WHERE type = ?", (kind,)).fetchone()[0]
    rows = con.execute("SELECT id, data FROM queue WHERE type = ? ORDER BY created, id LIMIT ?",
                       (kind, batch or 5)).fetchall()
    con.executemany("UPDATE queue SET claim = ?, claimed_at = ? WHERE id = ?",
                    [(token, now, r[0]) for r in rows])
    con.execute("COMMIT")
    return [(r[0], json.loads(r[1])) for r in rows]


def _settings(tc: TelegramConfig, dry_run: bool) -> tuple[str, str]:
    if dry_run:
        return tc.token or "", tc.chat_id or ""
    if not tc.token:
        raise ConfigError("no Telegram bot token: set BOTOPT_TELEGRAM_TOKEN or telegram.token")
    if not tc.chat_id:
        raise ConfigError("no Telegram chat id: set BOTOPT_TELEGRAM_CHAT_ID or "
                          "telegram.chat_id")
    return tc.token, tc.chat_id


def flush_notifications(config: Config, *, force: bool = False, dry_run: bool = False,
                        clock: Callable[[], float] = time.time,
                        sleep: Callable[[float], None] = time.sleep,
                        session: Any = None, max_wait: float = MAX_WAIT) -> FlushResult:
    """Send the due groups (all with ``force``). Never loses a notification."""
    from filelock import FileLock, Timeout

    tc = config.telegram
    token, chat = _settings(tc, dry_run)
    directory = _queue_dir(config)
    result = FlushResult()
    if dry_run:
        with _db(directory) as con:
            for kind in _due_types(con, clock(), tc.batch_interval, force):
                rows = con.execute("SELECT id, data FROM queue WHERE type = ? ORDER BY "
                                   "created, id", (kind,)).fetchall()
                batch = con.execute("SELECT MIN(batch) FROM queue WHERE type = ?",
                                    (kind,)).fetchone()[0]
                items = [(r[0], json.loads(r[1])) for r in rows]
                for i in range(0, len(items), batch):
                    result.messages += render_batch(kind, items[i:i + batch])
            result.remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        return result

    from botopt.core._telegram import TelegramClient

    lock = FileLock(str(directory / "flush.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        result.skipped = "another notify-flush is running"
        with _db(directory) as con:
            result.remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        return result
    try:
        client = TelegramClient(tc.api_url, token, tc.timeout, session)
        pacer = _Pacer(directory / "telegram_state.json", chat, clock)
        with _db(directory) as con:
            # We hold the flush lock, so every existing claim belongs to a flush that died
            # between sending and acknowledging: release it (that batch may go out twice).
            con.execute("UPDATE queue SET claim = NULL, claimed_at = NULL "
                        "WHERE claim IS NOT NULL")
            error: str | None = None
            try:
                error = _flush_loop(con, client, pacer, chat, tc, force, clock, sleep,
                                    max_wait, result)
            except TelegramConfigError as exc:
                error = str(exc)
                raise
            finally:
                result.remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
                con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                [("last_flush_at", str(clock())), ("last_error", error or "")])
    finally:
        lock.release()
    return result


def _flush_loop(con: sqlite3.Connection, client: Any, pacer: _Pacer, chat: str,
                tc: TelegramConfig, force: bool, clock: Callable[[], float],
                sleep: Callable[[float], None], max_wait: float,
                result: FlushResult) -> str | None:
    token = uuid.uuid4().hex
    while True:
        due = _due_types(con, clock(), tc.batch_interval, force)
        if not due:
            return None
        kind = due[0]
        items = _claim(con, kind, token, clock())
        pending = render_batch(kind, items)
        sent_ids: set[str] = set()
        while pending:
            msg = pending.pop(0)
            wait = pacer.ready_at() - clock()
            if wait > max_wait:
                _release(con, token)
                result.next_retry_at = pacer.ready_at()
                return f"waiting for Telegram's rate limit until {result.next_retry_at:.0f}"
            if wait > 0:
                sleep(wait)
            outcome = _send_with_retries(client, chat, msg, tc.max_retries, sleep)
            if outcome.kind == "ok":
                pacer.sent()
                result.messages_sent += 1
                sent_ids.update(msg.ids)
                continue
            if outcome.kind == "retry_after":
                pacer.retry_after(outcome.retry_after)
                pending.insert(0, msg)
                continue
            if outcome.kind == "too_long":
                pending[:0] = split_further(msg)
                continue
            if outcome.kind == "bad_entities":
                pending[:0] = as_plain(msg)
                continue
            # A message that could not go out keeps its whole batch queued (the parts sent
            # already may repeat later: duplicates beat losses).
            _release(con, token)
            result.failed += len(items)
            if outcome.kind == "fatal":
                _record_error(con, outcome.detail)
                raise TelegramConfigError(f"{outcome.detail}; notifications kept queued")
            result.next_retry_at = clock() + 60.0
            return outcome.detail
        con.execute("BEGIN IMMEDIATE")
        con.executemany("DELETE FROM queue WHERE id = ? AND claim = ?",
                        [(nid, token) for nid, _ in items])
        con.execute("COMMIT")
        result.notifications_sent += len(items)


def _send_with_retries(client: Any, chat: str, msg: Message, retries: int,
                       sleep: Callable[[float], None]) -> Any:
    outcome = client.send(chat, msg.text, msg.parse_mode)
    for attempt in range(retries):
        if outcome.kind != "transient":
            break
        log.info("Telegram: %s; retrying", outcome.detail)
        sleep(min(0.5 * 2 ** attempt, 4.0))
        outcome = client.send(chat, msg.text, msg.parse_mode)
    return outcome


def _release(con: sqlite3.Connection, token: str) -> None:
    con.execute("UPDATE queue SET claim = NULL, claimed_at = NULL WHERE claim = ?", (token,))


def _record_error(con: sqlite3.Connection, error: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_error', ?)", (error,))


def pending_notifications(config: Config, limit: int = 100) -> list[dict[str, Any]]:
    with _db(_queue_dir(config)) as con:
        rows = con.execute("SELECT id, type, created, data, claim FROM queue ORDER BY created "
                           "LIMIT ?", (limit,)).fetchall()
    return [{"id": r[0], "type": r[1], "created": r[2], "data": json.loads(r[3]),
             "claimed": r[4] is not None} for r in rows]


__all__ = ["FlushResult", "batch_notify", "enqueue", "flush_notifications",
           "pending_notifications", "queue_stats"]
