"""The notification queue and Telegram's limits on a shared Redis/Valkey server.

The local queue's rules (``botopt.core.state._queue``) hold across hosts:

- One stream per notification type (``<ns>:nq:s:<type>``) with one consumer group
  (``flush``). A flush claims a batch with ``XREADGROUP`` and, after Telegram's ``ok``,
  delivers it with ``XACK`` + ``XDEL``. A batch a host holds while it waits for Telegram's
  limits is kept fresh (``XCLAIM ... JUSTID`` by its owner only); a host that died holding
  one leaves it idle, and after ``state.claim_timeout`` any other flush takes it over with
  ``XAUTOCLAIM``. At the end of a flush what it claimed and did not deliver goes back into
  its stream in one script, so the next flush on any host sends it.
- Enqueueing is one script per type that adds each notification once: the ids enqueued within
  ``SEEN_MS`` are members of one sorted set per namespace (``<ns>:nq:seen``, scored by the
  server's clock and trimmed by the same script), so moving a local queue over after an outage
  can be repeated after a crash without sending anything twice, and the marks do not grow with
  time. While the server cannot be reached, the local queue takes them.
- Dead letters: a hash of the notifications Telegram refused ``DEAD_AFTER`` times, reached by
  ``notify list --failed``, ``notify retry`` and ``notify drop`` as locally.
- Telegram's limits are one budget per chat and per bot for all hosts: a Lua script on the
  server's clock (``TIME``) reserves each send in a sliding window (1 per second per chat,
  20 per minute per group, 30 per second per bot) and keeps a 429's ``retry_after`` as a
  hold every host obeys.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ..base._codec import json_loads
from ._queue import (
    FlushRules,
    Item,
    LocalQueue,
    Row,
    check_dead_id,
    load_data,
    pick_dead_id,
    sane_batch,
    split_type,
)
from ._redis import SharedState, shown
from ._redis_events import check_hosts, entry_time

log = logging.getLogger("botopt.notify")
T = TypeVar("T")
GROUP = "flush"
# An id is enqueued once within this time. What the mark must cover is the longest a repeat of
# the same id can arrive after the first: a re-run on the same candle regenerates the signal's
# id (its hash) while that candle is the last closed one, at most the longest timeframe (1d);
# a local spool is moved up on a host's first run after the server is back (minutes), and a
# spool moved twice after a crash repeats at once. One day and an hour of margin covers them;
# longer would only grow the set (a per-minute cron's day-7 marks would be 7x day 1's).
SEEN_MS = 25 * 3600 * 1000
# Safety margins over Telegram's published limits: a reservation is made a few ms before the
# request reaches Telegram, and hosts' requests may arrive in another order than reserved.
GAP_MS = 1250  # per chat: Telegram allows 1 message a second
WINDOW_MS = 62_000  # per group: 20 messages a minute
GROUP_LIMIT = 20
BOT_PER_SECOND = 30
# Tests only: compress time by this factor (the fake Bot API's clock runs as fast).
SCALE_ENV = "BOTOPT_TEST_TIME_SCALE"

# KEYS: the type's stream, the set of types, the seen marks (id -> server ms). ARGV: the old
# marks' key prefix, retention ms, type, a shift of the clock in ms (0; tests move time with
# it), then (id, created, data, batch) quadruples. Per-id keys (``<ns>:nq:seen:<id>``, before
# the sorted set) are still honoured: they expire by themselves within 7 days of an upgrade.
_ENQUEUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[2]))
redis.call('SADD', KEYS[2], ARGV[3])
local before = redis.call('XLEN', KEYS[1])
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'flush', '0', 'MKSTREAM')
local n = 0
for i = 5, #ARGV, 4 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i])
      and redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    redis.call('ZADD', KEYS[3], now, ARGV[i])
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'created', ARGV[i + 1],
               'data', ARGV[i + 2], 'batch', ARGV[i + 3])
    n = n + 1
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('PEXPIRE', KEYS[3], ARGV[2])  -- a namespace no host uses any more goes
end
return {n, before}
"""

# Back into the stream (at its end, same fields) what ``ARGV[1]`` still owns of ARGV[2..].
_REQUEUE = """
local n = 0
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'flush', ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[1] then
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    redis.call('XACK', KEYS[1], 'flush', ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    if #e > 0 then
      redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
      n = n + 1
    end
  end
end
if #redis.call('XPENDING', KEYS[1], 'flush', '-', '+', 1, ARGV[1]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'flush', ARGV[1])
end
return n
"""

# Reset the idle time of the entries ARGV[1] still owns (a live host waiting for a slot).
_REFRESH = """
local args = {'XCLAIM', KEYS[1], 'flush', ARGV[1], 0}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'flush', ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[1] then args[#args + 1] = ARGV[i] end
end
local n = #args - 5
if n > 0 then
  args[#args + 1] = 'JUSTID'  -- unpack() must come last in a call: Lua truncates it otherwise
  redis.call(unpack(args))
end
return n
"""

# KEYS: chat's sends, chat's hold, bot's sends. ARGV: scale, gap, window, group limit (0:
# none), bot per second, member. Returns {1, 0} with the slot reserved, or {0, wait ms}.
_PACE = """
local t = redis.call('TIME')
local scale = tonumber(ARGV[1])
local now = math.floor((tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000) * scale)
local gap, window, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local at = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then at = math.max(at, tonumber(last[2]) + gap) end
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
  at = math.max(at, tonumber(first[2]) + window)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 1000)
local bot = tonumber(ARGV[5])
if redis.call('ZCARD', KEYS[3]) >= bot then
  local first = redis.call('ZRANGE', KEYS[3], -bot, -bot, 'WITHSCORES')
  at = math.max(at, tonumber(first[2]) + 1000)
end
if at > now then return {0, at - now} end
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('ZADD', KEYS[3], now, ARGV[6])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2 / scale))
redis.call('PEXPIRE', KEYS[3], math.ceil(2000 / scale))
return {1, 0}
"""

# KEYS: chat's hold. ARGV: scale, seconds. The hold only ever moves later.
_HOLD = """
local t = redis.call('TIME')
local scale = tonumber(ARGV[1])
local now = math.floor((tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000) * scale)
local until_ = now + math.floor(tonumber(ARGV[2]) * 1000)
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > old then
  redis.call('SET', KEYS[1], until_, 'PX', math.ceil((until_ - now) / scale) + 1000)
end
return until_
"""


# KEYS: the set of types. ARGV: the types' stream key prefix, then types. Drops the types
# whose stream is gone: one script, so that an enqueue (which adds its type and its stream in
# one script) is never undone between the check and the removal.
_FORGET_GONE = """
local n = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    n = n + redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return n
"""

# KEYS: keys. ARGV: seconds an aside key is kept, then the type each key must hold. Moves
# each key holding another type to <key>:aside; returns {key, type held, ...} of those moved.
_MOVE_ASIDE = """
local out = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('TYPE', key)['ok']
  if held ~= 'none' and held ~= ARGV[i + 1] then
    redis.call('RENAME', key, key .. ':aside')
    redis.call('EXPIRE', key .. ':aside', tonumber(ARGV[1]))
    out[#out + 1] = key
    out[#out + 1] = held
  end
end
return out
"""

# A key moved aside is kept this long for a person to read, then goes by itself.
ASIDE_SECONDS = 7 * 86400


def time_scale() -> float:
    try:
        scale = float(os.environ.get(SCALE_ENV, "1"))
    except ValueError:
        return 1.0
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def _damaged(exc: BaseException) -> bool:
    """Whether the server refused a command for a key's type (a key of the namespace holding
    data of another shape), which ``SharedQueue.tidy`` can mend."""
    text = str(exc)
    return "WRONGTYPE" in text or "NOGROUP" in text


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


class SharedQueue:
    """The queue on one server; ``local`` takes what is enqueued while it is down.

    Reading commands raise a one-line NotifyError when the server cannot be used."""

    def __init__(self, shared: SharedState, local: LocalQueue, host: str = "",
                 instance: str = "") -> None:
        self.shared = shared
        self.local = local
        self.host, self.instance = host, instance
        self.types_key = shared.key("nq", "types")
        self.dead_key = shared.key("nq", "dead")
        self.tries_key = shared.key("nq", "tries")
        self.errors_key = shared.key("nq", "errors")
        self.meta_key = shared.key("nq", "meta")
        # id -> the idempotency key of the request it is in now: marked before the request,
        # unmarked with its outcome (a takeover reads what a dead host left marked)
        self.sending_key = shared.key("nq", "sending")
        self.seen_key = shared.key("nq", "seen")
        self.seen_prefix = self.seen_key + ":"  # the per-id marks written before the set
        self.seen_shift_ms = 0  # tests only: moves the server's clock for the seen marks

    @property
    def r(self) -> Any:
        return self.shared.client

    def stream(self, kind: str) -> str:
        return self.shared.key("nq", "s", kind)

    def types(self) -> list[str]:
        return sorted(_text(t) for t in self.r.smembers(self.types_key))

    def books(self, chat: str = "") -> dict[str, str]:
        """The queue's bookkeeping keys and the type each must hold (``chat``: its pacer's
        keys too)."""
        books = {self.types_key: "set", self.dead_key: "hash", self.tries_key: "hash",
                 self.errors_key: "hash", self.meta_key: "hash", self.seen_key: "zset",
                 self.sending_key: "hash"}
        if chat:
            pacer = SharedPacer(self.shared, chat)
            books.update({pacer.sends: "zset", pacer.hold: "string", pacer.bot: "zset"})
        return books

    def tidy(self, chat: str = "", kinds: Sequence[str] = ()) -> None:
        """Make the namespace's queue keys usable again after something else wrote there (a
        stray command, another program given the same namespace): each key that holds
        another type than botopt keeps there is moved aside (``<key>:aside``, kept
        ``ASIDE_SECONDS``, said in a warning), a type whose stream is gone is dropped, and a
        stream without its group gets it. One damaged key stopped every flush of every host,
        reported as the server being "unreachable", and its alerts stuck. ``kinds``: types
        to check beside the set's. Raises the client's errors."""
        self._move_aside(self.books(chat))
        kinds = sorted({*kinds, *self.types()})
        self._move_aside({self.stream(k): "stream" for k in kinds})
        gone = self.shared.script("forget_gone", _FORGET_GONE)(
            keys=[self.types_key], args=[self.stream(""), *kinds])
        if int(gone):
            log.info("dropped %s queue type(s) whose stream is gone", int(gone))
        pipe = self.r.pipeline(transaction=False)
        for kind in kinds:
            pipe.xinfo_groups(self.stream(kind))
        for kind, groups in zip(kinds, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(groups, list) and not any(
                    _text(g.get("name")) == GROUP for g in groups if isinstance(g, dict)):
                self._ensure_group(kind)

    def _move_aside(self, want: dict[str, str]) -> None:
        """The keys of ``want`` (key -> the type botopt keeps there) that hold another
        type, moved aside in one script: a key checked then renamed in two steps could be
        one another host had meanwhile made anew, in the right type."""
        if not want:
            return
        keys = list(want)
        moved = self.shared.script("move_aside", _MOVE_ASIDE)(
            keys=keys, args=[ASIDE_SECONDS, *(want[k] for k in keys)])
        for key, held in zip(moved[::2], moved[1::2], strict=True):
            log.warning("shared state %s: key %s held a %s where botopt keeps a %s; moved "
                        "aside to %s:aside (kept %d days)", self.shared.where, shown(key),
                        shown(held), want.get(_text(key), "?"), shown(key),
                        ASIDE_SECONDS // 86400)

    # -- enqueueing -------------------------------------------------------------------------

    def add(self, rows: Sequence[Row]) -> bool:
        """Queue on the server (moving any local leftovers first), else locally."""
        if self.shared.available():
            for attempt in (1, 2):
                try:
                    self.move_local()
                    return self.add_shared(rows)[1]
                except self.shared.errors as exc:
                    if attempt == 1 and _damaged(exc):
                        try:
                            self.tidy(kinds=[kind for _, kind, *_ in rows])
                            continue
                        except self.shared.errors:
                            pass
                    self.shared.lost(exc)
                    break
        return self.local.add(rows)

    def add_shared(self, rows: Sequence[Row]) -> tuple[int, bool]:
        """Add rows to the server, each id once. Returns (added, whether every stream they
        went to was empty before). Raises the client's errors."""
        by_type: dict[str, list[Any]] = {}
        for nid, kind, created, data, batch in rows:
            by_type.setdefault(kind, []).extend([nid, repr(created), data, batch])
        added, was_empty = 0, True
        script = self.shared.script("enqueue", _ENQUEUE)
        for kind, args in by_type.items():
            n, before = script(keys=[self.stream(kind), self.types_key, self.seen_key],
                               args=[self.seen_prefix, SEEN_MS, kind, self.seen_shift_ms,
                                     *args])
            added += int(n)
            was_empty &= int(before) == 0
        return added, was_empty

    def move_local(self) -> int:
        """Move what the local queue holds (written while the server was unreachable) into
        the shared one. Safe to repeat after a crash: each id is added once."""
        rows, dead = self.local.take_all()
        if not rows and not dead:
            return 0
        if rows:
            self.add_shared(rows)
        for d in dead:
            self.r.hset(self.dead_key, d["id"], json.dumps(d))
        self.local.forget([r[0] for r in rows], [d["id"] for d in dead])
        return len(rows)

    # -- reading ----------------------------------------------------------------------------

    def _use(self, what: Callable[[], T]) -> T:
        from ..errors import NotifyError

        self.shared.check()
        try:
            return what()
        except self.shared.errors as exc:
            self.shared.lost(exc, quiet=True)
            raise NotifyError(f"shared state {self.shared.where}: "
                              f"{self.shared.describe(exc)}",
                              source=self.shared.where, key="state.url") from exc

    def _read(self, what: Callable[[], T], local: Callable[[], T]) -> T:
        """``what`` on the server; while it is down (one warning), what this host's local
        spool holds: queued here during the outage, moved over when it is back."""
        if self.shared.available():
            try:
                return what()
            except self.shared.errors as exc:
                self.shared.lost(exc)
        return local()

    def stats(self) -> dict[str, Any]:
        # dead letters per queue type read every dead letter: here, not in each flush's tally
        return self._read(lambda: {**self._stats(), "dead_by_type": self._dead_by_type()},
                          self.local.stats)

    def _stats(self) -> dict[str, Any]:
        kinds = self.types()
        pipe = self.r.pipeline(transaction=False)
        for kind in kinds:
            pipe.xlen(self.stream(kind))
            pipe.xrange(self.stream(kind), count=1)
            pipe.xpending(self.stream(kind), GROUP)
        pipe.hlen(self.dead_key)
        pipe.hgetall(self.meta_key)
        pipe.time()
        out = pipe.execute(raise_on_error=False)
        sec, usec = out.pop()
        # The oldest entry's age on the server's clock, given on this host's (the monitor's
        # "stuck" check compares it with its own).
        shift = time.time() - (float(sec) + float(usec) / 1e6)
        by_type, claimed, oldest = {}, 0, None
        oldest_by_type: dict[str, float] = {}
        for i, kind in enumerate(kinds):
            n, first, pend = out[3 * i:3 * i + 3]
            if isinstance(n, int) and n:
                by_type[kind] = n
            if isinstance(first, list) and first:
                created = entry_time(_text(first[0][0])) + shift
                oldest = created if oldest is None else min(oldest, created)
                oldest_by_type[kind] = created
            if isinstance(pend, dict):
                claimed += int(pend.get("pending", 0))
        meta = _fields(out[-1])
        return {"pending": sum(by_type.values()), "oldest_created_at": oldest,
                "claimed": claimed, "dead_letters": int(out[-2]), "by_type": by_type,
                "oldest_by_type": oldest_by_type,
                "last_flush_at": float(meta["last_flush_at"]) if "last_flush_at" in meta
                else None, "last_error": meta.get("last_error") or None}

    def _dead_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for raw in self.r.hvals(self.dead_key):
            try:
                kind = json_loads(raw).get("type")
            except (ValueError, AttributeError, RecursionError):
                kind = None
            if isinstance(kind, str):
                out[kind] = out.get(kind, 0) + 1
        return out

    def pending(self, limit: int) -> list[dict[str, Any]]:
        return self._read(lambda: self._pending(limit), lambda: self.local.pending(limit))

    def _pending(self, limit: int) -> list[dict[str, Any]]:
        rows = []
        tries = _fields(self.r.hgetall(self.tries_key))
        errors = _fields(self.r.hgetall(self.errors_key))
        for kind in self.types():
            s = self.stream(kind)
            held = {_text(p["message_id"]) for p in
                    self.r.xpending_range(s, GROUP, "-", "+", 10_000)} \
                if self.r.exists(s) else set()
            for eid, raw in self.r.xrange(s, count=limit):
                f = _fields(raw)
                rows.append({"id": f["id"], "type": kind, "created": float(f["created"]),
                             "data": load_data(f["data"]), "claimed": _text(eid) in held,
                             "attempts": int(tries.get(f["id"], 0)),
                             "last_error": errors.get(f["id"])})
        rows.sort(key=lambda r: r["created"])
        return rows[:limit]

    def dead(self, limit: int) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            rows = []
            for nid, raw in (self.r.hgetall(self.dead_key) or {}).items():
                try:
                    row = json_loads(_text(raw))
                    float(row["failed_at"])
                    # what a listing reads of it: an id and a type as text
                    if not (isinstance(row.get("id"), str) and isinstance(row.get("type"),
                                                                          str)):
                        raise KeyError("id")
                except (ValueError, TypeError, KeyError, AttributeError):
                    # not what botopt wrote there (a damaged or foreign value): said, and
                    # kept on the server for a person to read, not an internal error
                    log.warning("dead letter %s on %s is unreadable; left as it is",
                                shown(nid, 40), self.shared.where)
                    continue
                rows.append(row)
            rows.sort(key=lambda r: float(r["failed_at"]), reverse=True)
            return rows[:limit]

        return self._read(read, lambda: self.local.dead(limit))

    def dead_id(self, ident: str) -> str:
        check_dead_id(ident)
        return pick_dead_id(ident, [i for i in (_text(k) for k in self.r.hkeys(self.dead_key))
                                    if i.startswith(ident)])

    def retry_dead(self, ident: str, now: float) -> str:
        return self._use(lambda: self._retry_dead(ident, now))

    def _retry_dead(self, ident: str, now: float) -> str:
        nid = self.dead_id(ident)
        raw = self.r.hget(self.dead_key, nid)
        try:
            d = json_loads(_text(raw))
            d["type"]  # noqa: B018  (what the retry reads first)
        except (ValueError, TypeError, KeyError):
            from ..errors import NotifyError

            raise NotifyError(f"dead letter {nid[:8]} on {self.shared.where} is unreadable; "
                              "it is left as it is", source=self.shared.where,
                              key=nid) from None
        # Added directly (its "seen" mark would refuse the enqueue script), in the same
        # transaction as the dead letter goes.
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(self.types_key, d["type"])
        pipe.xadd(self.stream(d["type"]), {"id": nid, "created": repr(now),
                                           "data": json.dumps(d["data"]),
                                           "batch": d.get("batch", 5)})
        pipe.hdel(self.dead_key, nid)
        pipe.hdel(self.tries_key, nid)
        pipe.execute()
        self._ensure_group(d["type"])
        return nid

    def _ensure_group(self, kind: str) -> None:
        try:
            self.r.xgroup_create(self.stream(kind), GROUP, id="0", mkstream=True)
        except self.shared.errors as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def drop_dead(self, ident: str) -> str:
        def drop() -> str:
            nid = self.dead_id(ident)
            self.r.hdel(self.dead_key, nid)
            return nid

        return self._use(drop)

    def preview(self, rules: FlushRules, now: float
                ) -> tuple[list[tuple[str, list[Item], int]], int]:
        rows = self.pending(100_000)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_type.setdefault(r["type"], []).append(r)
        out = []
        for kind, items in sorted(by_type.items(), key=lambda kv: kv[1][0]["created"]):
            batch = rules.max_batch_size
            if rules.force or len(items) >= batch or \
                    now - items[0]["created"] >= rules.batch_interval:
                out.append((kind, [(r["id"], r["data"]) for r in items], batch))
        return out, len(rows)

    # -- flushing ---------------------------------------------------------------------------

    @contextmanager
    def session(self, chat: str, rules: FlushRules, clock: Callable[[], float]
                ) -> Iterator[SharedSession]:
        """Any number of hosts may flush at once. Raises NotifyError (one line) when the
        server cannot be used."""
        self.shared.check()
        try:
            self.tidy(chat)
            self.move_local()
            if self.host:
                for problem in check_hosts(self.shared, self.host, self.instance, chat):
                    log.warning("%s", problem)
            run = SharedSession(self, SharedPacer(self.shared, chat), rules, clock)
            try:
                yield run
            finally:
                run.release()
                for kind in self.types():
                    self.shared.reap(self.stream(kind), GROUP, run.consumer)
                run.state["remaining"] = self._stats()["pending"]
                self.r.hset(self.meta_key, mapping={
                    "last_flush_at": repr(clock()), "last_error": run.state.get("error") or ""})
        except self.shared.errors as exc:
            self.shared.lost(exc, quiet=True)
            self.shared.check()


# -- pacing ---------------------------------------------------------------------------------

class SharedPacer:
    """Telegram's limits for one chat, shared by every host (see ``_PACE``)."""

    def __init__(self, shared: SharedState, chat: str, dest: str | None = None,
                 min_interval: float = 1.0) -> None:
        self.shared = shared
        self.scale = time_scale()
        if dest is None:
            self.sends = shared.key("tg", "chat", chat, "sent")
            self.hold = shared.key("tg", "chat", chat, "hold")
            self.bot = shared.key("tg", "bot", "sent")
            self.group = chat.startswith("-")
            self.gap_ms, self.per_second = GAP_MS, BOT_PER_SECOND
        else:  # another destination: its own gap and holds, no group or bot budget
            self.sends = shared.key("dest", dest, "sent")
            self.hold = shared.key("dest", dest, "hold")
            self.bot = shared.key("dest", dest, "all")
            self.group = False
            self.gap_ms, self.per_second = int(min_interval * 1000), 1_000_000

    def wait(self) -> float:
        """Reserve a send now (0.0) or say how many seconds until one may be tried."""
        ok, wait_ms = self.shared.script("pace", _PACE)(
            keys=[self.sends, self.hold, self.bot],
            args=[self.scale, self.gap_ms, WINDOW_MS, GROUP_LIMIT if self.group else 0,
                  self.per_second, uuid.uuid4().hex])
        return 0.0 if int(ok) else int(wait_ms) / 1000.0

    def sent(self) -> None:
        pass  # the reservation already counted it

    def retry_after(self, seconds: float) -> None:
        self.shared.script("hold", _HOLD)(keys=[self.hold], args=[self.scale, seconds])


# -- a flush's claims -----------------------------------------------------------------------

class SharedSession:
    """A flush's claims, acks and dead letters on the server."""

    def __init__(self, queue: SharedQueue, pacer: SharedPacer, rules: FlushRules,
                 clock: Callable[[], float]) -> None:
        self.q, self.pacer, self.rules, self.clock = queue, pacer, rules, clock
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.entries: dict[str, tuple[str, str]] = {}  # id -> (type, stream entry id)
        self.current: list[str] = []  # the batch being sent (kept fresh while waiting)
        self.claim_ms = int(rules.claim_timeout * 1000)
        # Sleep in pieces, keeping this batch's claims fresh, so that a host waiting for a
        # slot is never taken for a dead one.
        self.refresh_every = rules.claim_timeout * pacer.scale / 3
        self.state: dict[str, Any] = {}
        # (id, queue type, key) of sends a dead host left in flight, found at a takeover:
        # ``_notify`` counts each as unconfirmed, as the local queue's killed flush
        self.interrupted: list[tuple[str, str, str]] = []

    def sending(self, nids: Sequence[str], key: str) -> None:
        """Mark ``nids`` as in a request now (before it leaves)."""
        if nids:
            self.q.r.hset(self.q.sending_key, mapping=dict.fromkeys(nids, key))

    def settled(self, nids: Sequence[str]) -> None:
        """The request of ``nids`` has its outcome: unmarked."""
        if nids:
            self.q.r.hdel(self.q.sending_key, *nids)

    def next_batch(self, refused: set[str], skip: frozenset[str] = frozenset()
                   ) -> tuple[str, list[Item]] | None:
        got = self._take_over(refused, skip) or self._take_due(skip)
        if got is not None:
            self.current = [nid for nid, _ in got[1]]
        return got

    def notes(self, nids: list[str]) -> dict[str, str]:
        if not nids:
            return {}
        got = self.q.r.hmget(self.q.errors_key, nids)
        return {nid: _text(v) for nid, v in zip(nids, got, strict=True) if v is not None}

    def pacer_for(self, dest: str, min_interval: float) -> SharedPacer:
        pacer = SharedPacer(self.q.shared, "", dest=dest, min_interval=min_interval)
        # its keys tidied as the chat's are when the flush begins (``SharedQueue.tidy``)
        self.q._move_aside({pacer.sends: "zset", pacer.hold: "string", pacer.bot: "zset"})
        return pacer

    def _claimed(self, kind: str, entries: Any) -> list[Item]:
        items = []
        for eid, raw in entries:
            f = _fields(raw)
            if "id" not in f:
                continue
            self.entries[f["id"]] = (kind, _text(eid))
            items.append((f["id"], load_data(f.get("data", ""))))
        return items

    def _take_over(self, refused: set[str], skip: frozenset[str] = frozenset()
                   ) -> tuple[str, list[Item]] | None:
        """Claims idle longer than the claim timeout (their host died), one type's batch.
        One type at a time: whatever is claimed is then this flush's to send or put back."""
        for kind in self.q.types():
            if split_type(kind)[1] in skip:
                continue
            got = self.q.r.xautoclaim(self.q.stream(kind), GROUP, self.consumer,
                                      self.claim_ms, start_id="0-0",
                                      count=self.rules.max_batch_size)
            if isinstance(got, (list, tuple)) and len(got) > 1 and got[1]:
                items = [(n, d) for n, d in self._claimed(kind, got[1]) if n not in refused]
                log.debug("%s took over %s", self.consumer, [n[:6] for n, _ in items])
                self._find_interrupted(kind, [n for n, _ in items])
                if items:
                    return kind, items
        return None

    def _find_interrupted(self, kind: str, nids: list[str]) -> None:
        """Of ``nids`` (taken over from a dead host), those it was sending when it died:
        each may have arrived. Taken over uncounted, a host killed mid-send again and again
        sent a batch once per kill; the marks go with the takeover (it is this flush's to
        count now), in one transaction with reading them."""
        if not nids:
            return
        pipe = self.q.r.pipeline(transaction=True)
        pipe.hmget(self.q.sending_key, nids)
        pipe.hdel(self.q.sending_key, *nids)
        marks = pipe.execute()[0]
        self.interrupted += [(nid, kind, _text(m)) for nid, m in zip(nids, marks, strict=True)
                             if m is not None]

    def _take_due(self, skip: frozenset[str] = frozenset()) -> tuple[str, list[Item]] | None:
        due = [(k, b) for k, b in self._due() if split_type(k)[1] not in skip]
        if not due:
            return None
        kind, batch = due[0]
        got = self.q.r.xreadgroup(GROUP, self.consumer, {self.q.stream(kind): ">"},
                                  count=batch)
        entries = got[0][1] if got else []
        items = self._claimed(kind, entries)
        log.debug("%s claimed %s", self.consumer,
                  [(n[:6], self.entries[n][1]) for n, _ in items])
        oldest = min((entry_time(_text(eid)) for eid, _ in entries), default=0.0)
        if 0 < len(items) < batch and not self.rules.force and \
                self.q.shared.server_time() - oldest < self.rules.batch_interval:
            # Another host took part of what made this type due: a part is not a batch.
            # Back it goes, to be sent full or when its age makes it due.
            self._put_back(kind, [nid for nid, _ in items])
            return kind, []
        return kind, items

    def _due(self) -> list[tuple[str, int]]:
        """(type, batch size) of the due types, oldest first: unread entries after the
        group's last delivered id, as the local queue's ``_due_types``."""
        kinds = self.q.types()
        pipe = self.q.r.pipeline(transaction=False)
        for kind in kinds:
            pipe.xinfo_groups(self.q.stream(kind))
        last = {}
        for kind, groups in zip(kinds, pipe.execute(raise_on_error=False), strict=True):
            for g in groups if isinstance(groups, list) else []:
                if _text(g.get("name")) == GROUP:
                    last[kind] = _text(g.get("last-delivered-id"))
        for kind in last:
            pipe.xrange(self.q.stream(kind), f"({last[kind]}", "+", count=50)
        # Ages on the server's clock: when it added the entry, and its TIME now; a host
        # whose clock is off neither holds a batch back nor sends it early.
        pipe.time()
        *ranges, (sec, usec) = pipe.execute()
        now, due = float(sec) + float(usec) / 1e6, []
        for kind, rows in zip(last, ranges, strict=True):
            if not rows:
                continue
            first = _fields(rows[0][1])
            batch = sane_batch(first.get("batch", 5))
            created = entry_time(_text(rows[0][0]))
            if self.rules.force or len(rows) >= batch or \
                    now - created >= self.rules.batch_interval:
                due.append((created, kind, batch))
        return [(k, b) for _, k, b in sorted(due)]

    def keep_alive(self) -> None:
        by_kind: dict[str, list[str]] = {}
        for nid in self.current:
            if nid in self.entries:
                kind, eid = self.entries[nid]
                by_kind.setdefault(kind, []).append(eid)
        script = self.q.shared.script("refresh", _REFRESH)
        for kind, eids in by_kind.items():
            n = script(keys=[self.q.stream(kind)], args=[self.consumer, *eids])
            log.debug("%s refreshed %s of %s", self.consumer, n, len(eids))

    def record_error(self, detail: str) -> None:
        self.q.r.hset(self.q.meta_key, "last_error", detail)

    def refuse(self, nid: str, reason: str) -> int:
        pipe = self.q.r.pipeline(transaction=True)
        pipe.hincrby(self.q.tries_key, nid, 1)
        pipe.hset(self.q.errors_key, nid, reason)
        return int(pipe.execute()[0])

    def bury(self, nid: str, kind: str, reason: str, data: Any) -> Any:
        # the stream the entry was claimed from names its queue type (its destination too)
        kind, eid = self.entries.pop(nid)
        stream = self.q.stream(kind)
        raw = self.q.r.xrange(stream, eid, eid)
        f = _fields(raw[0][1]) if raw else {}
        stored = load_data(f["data"]) if "data" in f else data
        tries = int(self.q.r.hget(self.q.tries_key, nid) or 0)
        pipe = self.q.r.pipeline(transaction=True)
        pipe.hset(self.q.dead_key, nid, json.dumps(
            {"id": nid, "type": kind, "created": float(f.get("created", self.clock())),
             "data": stored, "batch": int(f.get("batch", 5)), "attempts": tries,
             "failed_at": self.clock(), "reason": reason}))
        pipe.xack(stream, GROUP, eid)
        pipe.xdel(stream, eid)
        pipe.hdel(self.q.tries_key, nid)
        pipe.hdel(self.q.errors_key, nid)
        pipe.hdel(self.q.sending_key, nid)
        pipe.execute()
        return stored

    def deliver(self, nids: list[str]) -> None:
        """Ack and delete the notifications whose every message went out."""
        if nids:
            pipe = self.q.r.pipeline(transaction=True)
            for nid in nids:
                kind, eid = self.entries.pop(nid)
                pipe.xack(self.q.stream(kind), GROUP, eid)
                pipe.xdel(self.q.stream(kind), eid)
                pipe.hdel(self.q.tries_key, nid)
                pipe.hdel(self.q.errors_key, nid)
                pipe.hdel(self.q.sending_key, nid)  # gone with it, even if killed here
            pipe.execute()
            log.debug("%s delivered %s", self.consumer, [n[:6] for n in nids])

    def _put_back(self, kind: str, nids: list[str]) -> None:
        eids = [self.entries.pop(nid)[1] for nid in nids]
        self.q.shared.script("requeue", _REQUEUE)(keys=[self.q.stream(kind)],
                                                   args=[self.consumer, *eids])

    def release(self) -> None:
        """Put back what this flush claimed and did not deliver (refused, not yet sent)."""
        by_kind: dict[str, list[str]] = {}
        for kind, eid in self.entries.values():
            by_kind.setdefault(kind, []).append(eid)
        script = self.q.shared.script("requeue", _REQUEUE)
        for kind, eids in by_kind.items():
            script(keys=[self.q.stream(kind)], args=[self.consumer, *eids])
        self.entries.clear()
