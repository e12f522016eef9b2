"""Where notifications wait: the queue's storage, behind one interface for both backends.

The ``Workspace`` hands out a ``NotificationQueue``: the SQLite queue of this host
(``LocalQueue``, here) or, with ``state.url``, the one on the shared server
(``botopt.core.state._redis_queue.SharedQueue``, which falls back to a ``LocalQueue`` while the
server is down). The flush (``botopt.core.delivery._notify``) is written once against
``FlushSession`` and ``Pacer`` and does not know which it drives.

The local queue's rules: a SQLite database (WAL, transactions) safe from any number of
processes and SIGKILL; a flush holds a non-blocking file lock and claims a batch before
sending it, deleting it only after Telegram's ``ok``; claims left by a flush that died are
released by the next one (that batch may go out twice, nothing is lost). Telegram's limits
are kept between runs in a small state file, validated when read.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..base._codec import json_loads
from ..base._fs import atomic_write_json, read_json
from ..errors import NotifyError, UsageError, disk_reason
from ._cache import is_corrupt

log = logging.getLogger("botopt.notify")

# A 429's retry_after is trusted up to this (seconds): a huge one would park the queue.
RETRY_AFTER_MAX = 3600.0

Row = tuple[str, str, float, str, int]  # id, type, created, data JSON, batch size
Item = tuple[str, Any]  # id, data (None when the stored JSON is damaged)

# A notification routed to several destinations is queued once per destination, each copy
# with its own delivery state. The queue groups rows by their queue type: the notification
# type for the built-in Telegram chat (so queues written before destinations existed keep
# their meaning), ``type@destination`` for every other; both backends batch and claim by it
# unchanged. The copy's id is derived from the notification's (``copy_id``).
DEST_SEP = "@"
DEFAULT_DEST = "telegram"


MAX_BATCH = 50  # notifications per message at most (telegram.max_batch_size's range)


def sane_batch(value: Any) -> int:
    """A stored batch size as the flush uses it: a whole number in 1..MAX_BATCH, else the
    default 5. Rows queued by a version that did not check the size (2.5, -1, "x") jammed
    every later flush of the queue (a TypeError) or sent nothing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            value == value and 1 <= value <= MAX_BATCH and int(value) == value:
        return int(value)
    if isinstance(value, (str, bytes)) and value.isdigit():
        return sane_batch(int(value))
    return 5


def queue_type(kind: str, dest: str) -> str:
    return kind if dest == DEFAULT_DEST else f"{kind}{DEST_SEP}{dest}"


def split_type(qtype: str) -> tuple[str, str]:
    """(notification type, destination) of a queue type."""
    kind, _, dest = qtype.partition(DEST_SEP)
    return kind, dest or DEFAULT_DEST


def copy_id(nid: str, dest: str) -> str:
    """The id of ``nid``'s copy for ``dest``: stable (a repeated move from the local spool to
    the server adds it once) and hex like every id, so ``notify retry`` takes it."""
    if dest == DEFAULT_DEST:
        return nid
    import hashlib

    return hashlib.sha256(f"{nid}{DEST_SEP}{dest}".encode()).hexdigest()[:32]


def load_data(raw: str) -> Any:
    try:
        return json_loads(raw)
    except (ValueError, RecursionError):
        return None  # not a dict: the flush moves it to the dead letters


def check_dead_id(ident: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{4,32}", ident):
        raise UsageError(f"invalid id {ident[:40]!r}: give an id (or its first 8 characters) "
                         "from botopt notify list --failed", key="id")


def pick_dead_id(ident: str, ids: Sequence[str]) -> str:
    """The one dead letter ``ident`` names among ``ids`` (full ids matching the prefix)."""
    if not ids:
        raise UsageError(f"no dead letter {ident}; botopt notify list --failed shows them",
                         key="id")
    if len(ids) > 1:
        raise UsageError(f"id {ident} is ambiguous; give more characters", key="id")
    return ids[0]


@dataclass(frozen=True)
class FlushRules:
    """What a flush needs to know of ``telegram.*`` to pick batches."""

    force: bool
    batch_interval: float
    max_batch_size: int
    claim_timeout: float = 60.0


class Pacer(Protocol):
    """Telegram's limits for one chat."""

    def wait(self) -> float:
        """Seconds until a send may be tried; 0.0 means go (and the send is counted)."""

    def sent(self) -> None: ...

    def retry_after(self, seconds: float) -> None: ...


class FlushSession(Protocol):
    """One flush's hold on a queue: the batches it claims and what becomes of them."""

    pacer: Pacer
    refresh_every: float | None  # seconds between ``keep_alive`` while waiting (None: never)

    def next_batch(self, refused: set[str], skip: frozenset[str] = frozenset()
                   ) -> tuple[str, list[Item]] | None:
        """The next due batch it claimed (queue type, items); an empty list when another
        flush was faster (ask again); None when nothing is due. Batches for the
        destinations in ``skip`` (given up on for this flush) are left unclaimed."""

    def notes(self, nids: list[str]) -> dict[str, str]:
        """The last error recorded by ``refuse`` for each of ``nids`` that has one."""

    def pacer_for(self, dest: str, min_interval: float) -> Pacer:
        """The limits of a destination other than the Telegram chat: one send per
        ``min_interval`` seconds and the holds its 429s ask for, kept between runs."""

    def refuse(self, nid: str, reason: str) -> int:
        """Count a refusal of ``nid``; the number of refusals so far."""

    def bury(self, nid: str, kind: str, reason: str, data: Any) -> Any:
        """Move ``nid`` to the dead letters; the data it had."""

    def deliver(self, nids: list[str]) -> None: ...

    def record_error(self, detail: str) -> None: ...

    def keep_alive(self) -> None: ...

    # (id, queue type, idempotency key) of the sends a killed flush left in a request:
    # ``_notify`` counts each as an unconfirmed send
    interrupted: list[tuple[str, str, str]]

    def sending(self, nids: Sequence[str], key: str) -> None:
        """Mark ``nids`` as in a request now, before it leaves."""

    def settled(self, nids: Sequence[str]) -> None:
        """Their request has its outcome: unmarked."""


class NotificationQueue(Protocol):
    """The queue of notifications, its dead letters and Telegram's limits."""

    def add(self, rows: Sequence[Row]) -> bool:
        """Queue the rows, each id once; whether the queue was empty before."""

    def stats(self) -> dict[str, Any]: ...

    def pending(self, limit: int) -> list[dict[str, Any]]: ...

    def dead(self, limit: int) -> list[dict[str, Any]]: ...

    def retry_dead(self, ident: str, now: float) -> str: ...

    def drop_dead(self, ident: str) -> str: ...

    def preview(self, rules: FlushRules, now: float) -> tuple[list[tuple[str, list[Item], int]],
                                                              int]:
        """(type, items, batch size) a flush would send now (claimed ones too), and how
        many are queued."""

    def session(self, chat: str, rules: FlushRules, clock: Callable[[], float]
                ) -> Any:
        """A context manager giving a ``FlushSession`` (None: another flush is running).
        On leaving, what was claimed and not delivered is released and the outcome noted;
        ``state["remaining"]`` and ``state["error"]`` of the session are read for it."""


# -- the local queue --------------------------------------------------------------------------

def _migrate(con: sqlite3.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, type TEXT NOT NULL,"
                " created REAL NOT NULL, data TEXT NOT NULL, batch INTEGER NOT NULL,"
                # claimed_at is no longer written or read; the column stays so that a queue
                # shared with an older botopt (which still writes it) keeps working.
                " claim TEXT, claimed_at REAL, attempts INTEGER NOT NULL DEFAULT 0,"
                " last_error TEXT, sending TEXT)")
    columns = {r[1] for r in con.execute("PRAGMA table_info(queue)")}
    for name, decl in (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("last_error", "TEXT"),
                       ("sending", "TEXT")):
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


_COLUMNS = {"queue": {"id", "type", "created", "data", "batch", "claim", "attempts",
                      "last_error"},
            "dead": {"id", "type", "created", "data", "batch", "attempts", "failed_at",
                     "reason"},
            "meta": {"key", "value"}}


class _WrongSchema(sqlite3.DatabaseError):
    """queue.db holds tables that are not the queue's (another program's file, a bad edit)."""


_ADDED_LATER = {"attempts", "last_error"}  # _migrate adds them to a botopt 0.1 queue


def _check_schema(con: sqlite3.Connection, *, migrated: bool = True) -> None:
    """Raise unless the file is a sound queue. Before migration (nothing written yet, so a
    file that is not ours is kept byte for byte) the later columns may be missing."""
    if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        raise sqlite3.DatabaseError("database disk image is malformed (quick_check)")
    kinds = dict(con.execute("SELECT name, type FROM sqlite_master WHERE name IN "
                             "('queue', 'dead', 'meta')").fetchall())
    for table, needed in _COLUMNS.items():
        if table not in kinds and not migrated:
            continue
        if kinds.get(table) != "table":
            raise _WrongSchema(f"{table} is a {kinds.get(table) or 'missing'}, not a table")
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        missing = needed - have - (set() if migrated else _ADDED_LATER)
        if missing:
            raise _WrongSchema(f"table {table} lacks {', '.join(sorted(missing))}")


def _damaged_schema(con: sqlite3.Connection) -> bool:
    """After a failed migration: whether the file holds something that is not our queue
    (a view named queue, a table without our columns)."""
    try:
        _check_schema(con)
    except sqlite3.Error as exc:
        return _damaged(exc)  # not one that cannot even be read (a read-only disk)
    return False


def _damaged(exc: BaseException) -> bool:
    return isinstance(exc, _WrongSchema) or is_corrupt(exc)


def _move_aside(path: Path, exc: BaseException) -> None:
    """Keep a damaged queue under a new name (never deleted: it may hold notifications a
    person can still read) so that a fresh one can be built in its place."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-"
                           f"{uuid.uuid4().hex[:6]}")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
    except FileNotFoundError:
        pass  # another process moved it first
    except OSError as err:
        raise NotifyError(f"notification queue {path} is damaged ({exc}) and cannot be moved "
                          f"aside: {err.strerror}", file=str(path)) from err
    log.warning("notification queue %s is damaged (%s); kept as %s and rebuilt empty", path,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__, aside.name)


def _reason(path: Path, exc: sqlite3.Error) -> str:
    """SQLite's words for a disk problem ("unable to open database file", "attempt to write a
    readonly database") made plain by trying to write beside the file: "the file system is
    read-only", "the disk is full", ... Any other error is SQLite's own message."""
    text = str(exc)
    if not any(w in text for w in ("unable to open", "readonly", "disk I/O", "is full")):
        return text
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return f"{text} (its directory {path.parent} is missing)"
        return disk_reason(err)
    return text


def _open_read_only(path: Path) -> sqlite3.Connection | None:
    """The queue opened only to read, where the normal opening failed because nothing may
    be written there (a read-only mount, a backup, a directory without write permission):
    listing needs no write. None when that is not why it failed, or when it cannot be read
    either way.

    A queue closed cleanly has everything in ``queue.db``, read as immutable (no lock, no
    ``-shm`` to create); one with a ``-wal`` file beside it (a run killed mid-write) is read
    through that log in SQLite's read-only mode, or not at all: reading the file alone would
    show the queue without its last writes."""
    import os
    from urllib.parse import quote

    if not path.is_file() or (os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)):
        return None
    wal = path.with_name(path.name + "-wal")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    if not (wal.exists() and wal.stat().st_size):
        uri += "&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
        _check_schema(con)
    except sqlite3.Error:
        return None
    return con


def _open(path: Path, read_only: bool = False) -> sqlite3.Connection:
    for attempt in range(2):
        try:
            con = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise NotifyError(f"cannot open notification queue {path}: "
                              f"{_reason(path, exc)}", file=str(path)) from exc
        try:
            _check_schema(con, migrated=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            _migrate(con)
            _check_schema(con)
            return con
        except sqlite3.Error as exc:
            damaged = _damaged(exc) or _damaged_schema(con)
            con.close()
            if read_only and not damaged:
                ro = _open_read_only(path)
                if ro is not None:
                    return ro
            if attempt or not damaged:
                raise NotifyError(f"notification queue {path}: {_reason(path, exc)}",
                                  file=str(path)) from exc
            _move_aside(path, exc)
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def queue_db(directory: Path, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """The queue's database; ``read_only``: the caller only reads, so a queue where nothing
    may be written is still opened (``_open_read_only``)."""
    path = directory / "queue.db"
    con = _open(path, read_only)
    try:
        yield con
    except sqlite3.Error as exc:
        con.close()
        if _damaged(exc):  # found only now (a page quick_check did not reach): next run heals
            _move_aside(path, exc)
        raise NotifyError(f"notification queue {path}: {_reason(path, exc)}",
                          file=str(path)) from exc
    finally:
        con.close()


def _due_types(con: sqlite3.Connection, now: float, interval: float, force: bool,
               unclaimed_only: bool = True, skip: frozenset[str] = frozenset()) -> list[str]:
    where = "WHERE claim IS NULL " if unclaimed_only else ""
    rows = con.execute(f"SELECT type, COUNT(*), MIN(created), MIN(batch) FROM queue {where}"
                       "GROUP BY type ORDER BY MIN(created)").fetchall()
    return [t for t, n, oldest, batch in rows
            if (force or n >= sane_batch(batch) or now - oldest >= interval)
            and split_type(t)[1] not in skip]


class LocalQueue:
    """The queue of this host: ``queue.db`` in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def db(self) -> Any:
        return queue_db(self.directory)

    def exists(self) -> bool:
        return (self.directory / "queue.db").exists()

    def add(self, rows: Sequence[Row]) -> bool:
        with queue_db(self.directory) as con:
            con.execute("BEGIN IMMEDIATE")
            was_empty = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
            con.executemany("INSERT OR IGNORE INTO queue(id, type, created, data, batch) "
                            "VALUES (?,?,?,?,?)", rows)
            con.execute("COMMIT")
        return bool(was_empty)

    def stats(self) -> dict[str, Any]:
        if not self.exists():  # nothing ever queued here: nothing to open, or to create
            return {"pending": 0, "oldest_created_at": None, "claimed": 0, "dead_letters": 0,
                    "by_type": {}, "oldest_by_type": {}, "dead_by_type": {},
                    "last_flush_at": None, "last_error": None}
        with queue_db(self.directory, read_only=True) as con:
            pending, oldest = con.execute("SELECT COUNT(*), MIN(created) FROM queue").fetchone()
            claimed = con.execute("SELECT COUNT(*) FROM queue WHERE claim IS NOT NULL"
                                  ).fetchone()[0]
            dead = con.execute("SELECT COUNT(*) FROM dead").fetchone()[0]
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            by_type, oldest_by_type = {}, {}
            for kind, n, first in con.execute("SELECT type, COUNT(*), MIN(created) FROM queue "
                                              "GROUP BY type"):
                by_type[kind], oldest_by_type[kind] = n, first
            dead_by_type = dict(con.execute("SELECT type, COUNT(*) FROM dead GROUP BY type"
                                            ).fetchall())
        return {"pending": pending, "oldest_created_at": oldest, "claimed": claimed,
                "dead_letters": dead, "by_type": by_type, "oldest_by_type": oldest_by_type,
                "dead_by_type": dead_by_type,
                "last_flush_at": float(meta["last_flush_at"]) if "last_flush_at" in meta
                else None, "last_error": meta.get("last_error") or None}

    def pending(self, limit: int) -> list[dict[str, Any]]:
        with queue_db(self.directory, read_only=True) as con:
            rows = con.execute("SELECT id, type, created, data, claim, attempts, last_error "
                               "FROM queue ORDER BY created LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "type": r[1], "created": r[2], "data": load_data(r[3]),
                 "claimed": r[4] is not None, "attempts": r[5], "last_error": r[6]}
                for r in rows]

    def dead(self, limit: int) -> list[dict[str, Any]]:
        with queue_db(self.directory, read_only=True) as con:
            rows = con.execute("SELECT id, type, created, data, attempts, failed_at, reason "
                               "FROM dead ORDER BY failed_at DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "type": r[1], "created": r[2], "data": load_data(r[3]),
                 "attempts": r[4], "failed_at": r[5], "reason": r[6]} for r in rows]

    @staticmethod
    def _dead_id(con: sqlite3.Connection, ident: str) -> str:
        check_dead_id(ident)
        return pick_dead_id(ident, [r[0] for r in con.execute(
            "SELECT id FROM dead WHERE substr(id, 1, ?) = ? LIMIT 2", (len(ident), ident))])

    def retry_dead(self, ident: str, now: float) -> str:
        with queue_db(self.directory) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                nid = self._dead_id(con, ident)
                if con.execute("SELECT 1 FROM queue WHERE id = ?", (nid,)).fetchone():
                    # the same notification was queued again since (a signal's id is its
                    # symbol, candle and direction): a raw "UNIQUE constraint failed" before
                    raise UsageError(f"notification {nid[:8]} is queued already (added again "
                                     f"since it failed); botopt notify drop {nid[:8]} removes "
                                     "the dead letter", key="id")
                # Queued afresh: its age starts now, so the monitor does not call it stuck.
                con.execute("INSERT INTO queue(id, type, created, data, batch) SELECT id, "
                            "type, ?, data, batch FROM dead WHERE id = ?", (now, nid))
                con.execute("DELETE FROM dead WHERE id = ?", (nid,))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return nid

    def drop_dead(self, ident: str) -> str:
        with queue_db(self.directory) as con:
            nid = self._dead_id(con, ident)
            con.execute("DELETE FROM dead WHERE id = ?", (nid,))
        return nid

    def take_all(self) -> tuple[list[Row], list[dict[str, Any]]]:
        """Everything queued and dead here (to move to the shared server)."""
        if not self.exists():
            return [], []
        with queue_db(self.directory) as con:
            rows = con.execute("SELECT id, type, created, data, batch FROM queue").fetchall()
            dead = con.execute("SELECT id, type, created, data, batch, attempts, failed_at, "
                               "reason FROM dead").fetchall()
        return ([(r[0], r[1], r[2], r[3], r[4]) for r in rows],
                [{"id": d[0], "type": d[1], "created": d[2], "data": load_data(d[3]),
                  "batch": d[4], "attempts": d[5], "failed_at": d[6], "reason": d[7]}
                 for d in dead])

    def forget(self, ids: Sequence[str], dead_ids: Sequence[str]) -> None:
        """Delete moved rows (after the server holds them)."""
        with queue_db(self.directory) as con:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("DELETE FROM queue WHERE id = ?", [(i,) for i in ids])
            con.executemany("DELETE FROM dead WHERE id = ?", [(i,) for i in dead_ids])
            con.execute("COMMIT")

    def preview(self, rules: FlushRules, now: float
                ) -> tuple[list[tuple[str, list[Item], int]], int]:
        out = []
        with queue_db(self.directory) as con:
            for kind in _due_types(con, now, rules.batch_interval, rules.force,
                                   unclaimed_only=False):
                rows = con.execute("SELECT id, data FROM queue WHERE type = ? ORDER BY "
                                   "created, id", (kind,)).fetchall()
                batch = con.execute("SELECT MIN(batch) FROM queue WHERE type = ?",
                                    (kind,)).fetchone()[0]
                out.append((kind, [(nid, load_data(raw)) for nid, raw in rows],
                            sane_batch(batch)))
            remaining = con.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        return out, remaining

    @contextmanager
    def session(self, chat: str, rules: FlushRules, clock: Callable[[], float]
                ) -> Iterator[LocalSession | None]:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.directory / "flush.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield None
            return
        except OSError as exc:
            raise NotifyError(f"cannot lock {self.directory / 'flush.lock'}: "
                              f"{exc.strerror}", file=str(self.directory / "flush.lock")) from exc
        try:
            pacer = LocalPacer(self.directory / "telegram_state.json", chat, clock)
            with queue_db(self.directory) as con:
                # We hold the flush lock, so every existing claim belongs to a flush that
                # died between sending and acknowledging: release it (that batch may go out
                # twice). The rows it was sending are handed over as unconfirmed sends:
                # released only, a flush killed mid-send K times sent them K + 1 times.
                interrupted = [(r[0], r[1], str(r[2])[2:]) for r in con.execute(
                    "SELECT id, type, sending FROM queue WHERE sending IS NOT NULL")]
                con.execute("UPDATE queue SET claim = NULL WHERE claim IS NOT NULL")
                run = LocalSession(con, pacer, rules, clock, self.directory)
                run.interrupted = interrupted
                try:
                    yield run
                finally:
                    con.execute("UPDATE queue SET claim = NULL WHERE claim = ?", (run.claim,))
                    run.state["remaining"] = con.execute("SELECT COUNT(*) FROM queue"
                                                         ).fetchone()[0]
                    con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                    [("last_flush_at", str(clock())),
                                     ("last_error", run.state.get("error") or "")])
        finally:
            lock.release()

    def remaining(self) -> int:
        with queue_db(self.directory) as con:
            return int(con.execute("SELECT COUNT(*) FROM queue").fetchone()[0])


class LocalSession:
    """A flush's hold on the local queue (under its file lock)."""

    refresh_every = None

    def __init__(self, con: sqlite3.Connection, pacer: LocalPacer, rules: FlushRules,
                 clock: Callable[[], float], directory: Path | None = None) -> None:
        self.con, self.pacer, self.rules, self.clock = con, pacer, rules, clock
        self.directory = directory
        self.claim = uuid.uuid4().hex  # marks this flush's rows (not the bot token)
        self.state: dict[str, Any] = {}
        self.interrupted: list[tuple[str, str, str]] = []

    def sending(self, nids: Sequence[str], key: str) -> None:
        # "k:" keeps the text a text in any column affinity; committed before the request
        self.con.executemany("UPDATE queue SET sending = ? WHERE id = ?",
                             [("k:" + key, nid) for nid in nids])

    def settled(self, nids: Sequence[str]) -> None:
        self.con.executemany("UPDATE queue SET sending = NULL WHERE id = ?",
                             [(nid,) for nid in nids])

    def pacer_for(self, dest: str, min_interval: float) -> LocalPacer:
        # One file per destination: two pacers saving one file would undo each other's sends.
        assert self.directory is not None
        return LocalPacer(self.directory / f"dest_{dest}_state.json", dest, self.clock,
                          min_interval=min_interval, label=f"the send limits of {dest}")

    def notes(self, nids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(nids), 500):
            part = nids[i:i + 500]
            out.update(self.con.execute(
                f"SELECT id, last_error FROM queue WHERE last_error IS NOT NULL AND id IN "
                f"({','.join('?' * len(part))})", part).fetchall())
        return out

    def next_batch(self, refused: set[str], skip: frozenset[str] = frozenset()
                   ) -> tuple[str, list[Item]] | None:
        due = _due_types(self.con, self.clock(), self.rules.batch_interval, self.rules.force,
                         skip=skip)
        if not due:
            return None
        kind = due[0]
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        batch = con.execute("SELECT MIN(batch) FROM queue WHERE type = ? AND claim IS NULL",
                            (kind,)).fetchone()[0]
        rows = con.execute("SELECT id, data FROM queue WHERE type = ? AND claim IS NULL "
                           "ORDER BY created, id LIMIT ?", (kind, sane_batch(batch))
                           ).fetchall()
        con.executemany("UPDATE queue SET claim = ? WHERE id = ?",
                        [(self.claim, r[0]) for r in rows])
        con.execute("COMMIT")
        return kind, [(r[0], load_data(r[1])) for r in rows]

    def refuse(self, nid: str, reason: str) -> int:
        self.con.execute("UPDATE queue SET attempts = attempts + 1, last_error = ?, "
                         "sending = NULL WHERE id = ?", (reason, nid))
        row = self.con.execute("SELECT attempts FROM queue WHERE id = ?", (nid,)).fetchone()
        return int(row[0]) if row is not None else 0

    def bury(self, nid: str, kind: str, reason: str, data: Any) -> Any:
        row = self.con.execute("SELECT data FROM queue WHERE id = ?", (nid,)).fetchone()
        self.con.execute("BEGIN IMMEDIATE")
        self.con.execute("INSERT OR REPLACE INTO dead(id, type, created, data, batch, "
                         "attempts, failed_at, reason) SELECT id, type, created, data, batch,"
                         " attempts, ?, ? FROM queue WHERE id = ?", (self.clock(), reason, nid))
        self.con.execute("DELETE FROM queue WHERE id = ?", (nid,))
        self.con.execute("COMMIT")
        return load_data(row[0]) if row is not None else data

    def deliver(self, nids: list[str]) -> None:
        self.con.execute("BEGIN IMMEDIATE")
        self.con.executemany("DELETE FROM queue WHERE id = ? AND claim = ?",
                             [(nid, self.claim) for nid in nids])
        self.con.execute("COMMIT")

    def record_error(self, detail: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_error', ?)",
                         (detail,))

    def keep_alive(self) -> None:
        pass  # the file lock is the claim


# -- Telegram's limits on this host -----------------------------------------------------------

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


def _load_pacer_state(path: Path, now: float, label: str = "Telegram state"
                      ) -> dict[str, Any]:
    try:
        raw = read_json(path, {})
    except (ValueError, RecursionError, OSError) as exc:
        log.warning("%s %s is unreadable (%s); starting afresh", label, path,
                    type(exc).__name__)
        return {}
    if not isinstance(raw, dict):
        log.warning("%s %s is damaged; starting afresh", label, path)
        return {}
    state = {}
    for chat, value in raw.items():
        clean = _valid_chat_state(value, now)
        if clean is None:
            log.warning("%s %s: entry for one chat is damaged; dropped", label, path)
        else:
            state[str(chat)] = clean
    return state


@dataclass
class LocalPacer:
    """Telegram's limits per chat (1 a second, 20 a minute to a group, a 429's wait),
    persisted between runs."""

    path: Path
    chat: str
    clock: Callable[[], float]
    state: dict[str, Any] = field(default_factory=dict)
    _save_failed: bool = False
    min_interval: float = 1.0  # seconds between two sends (Telegram: 1 a second per chat)
    label: str = "Telegram state"  # how messages name the file

    def __post_init__(self) -> None:
        self.state = _load_pacer_state(self.path, self.clock(), self.label)
        self.state.setdefault(self.chat, {"not_before": 0.0, "sent": []})

    @property
    def _chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = self.state[self.chat]
        return chat

    def ready_at(self) -> float:
        now = self.clock()
        c = self._chat
        sent = [t for t in c["sent"] if t > now - 60.0]
        c["sent"] = sent
        at = max(c["not_before"], (sent[-1] + self.min_interval) if sent else 0.0)
        if self.chat.startswith("-") and len(sent) >= 20:
            at = max(at, sent[-20] + 60.0)
        return float(at)

    def wait(self) -> float:
        return max(0.0, self.ready_at() - self.clock())

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
                log.warning("cannot save %s %s: %s", self.label, self.path, exc.strerror)
            self._save_failed = True
