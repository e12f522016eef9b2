"""Shared stores on Redis/Valkey: the cache, cooldowns and regime history of several hosts.

Same interfaces as the local stores (``CacheStore``, ``CooldownStore``, ``RegimeState``), so
the pipeline does not know which it has (``Workspace`` chooses):

- Cache entries: the local store's keys (``<name> US <key>``) under ``<ns>:cache:``, the same
  header and codec bytes (never pickle), and the server's own expiry (``PX``) besides the
  header's, which keeps the manager's injectable clock authoritative. Statistics are hashes
  (``HINCRBY``), so every host adds to one set of figures.
- Cooldowns: a passed signal for (symbol, direction, candle) is recorded in a Lua script that
  marks it in a sorted set of once-marks (scored by the server's clock, trimmed to the keep);
  the host that marked it is the only one told "new", so only it queues the notification. A
  sorted set indexes the records for the gates' snapshot.
- Regime history: one hash per data scope, compared and updated in one script, so a change is
  reported by exactly one host.

When the server fails mid-run each store falls back to what a local run would do (the cache:
a miss; cooldowns and regimes: the local files), after the one warning ``SharedState.lost``
gives.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ._entry_format import HEADER as _HEADER
from ._entry_format import MAGIC as _MAGIC
from ._redis import SharedState, shown

_SEP = "\x1f"
# Between a statistics field and the host it counts for ("hits@host-1"); host ids are
# letters, digits, "_", "." and "-" (config), so it never appears inside one.
_AT = "@"
log = logging.getLogger("botopt.state")


class _Lost(Exception):
    """The server failed inside a local file's lock (kept apart from the disk's OSError)."""

# KEYS: sorted set of records (member -> candle ms), version counter, the records' once-marks
# (member -> server ms when recorded). ARGV: keep ms, the old once-marks' key prefix, a shift
# of the server's clock in ms (0; tests move time with it), then (member, candle ms) pairs.
# Returns the members this call added. A record is added once within ``keep`` of when it was
# first recorded, on the server's clock, even after the candle-time trim dropped it from the
# records (a host with stale candles). The marks are one sorted set trimmed here, not a key
# per record: the namespace's keys do not grow with the signals. Per-record keys written by
# an older botopt (``<ns>:signal:<scope>:<member>``) are honoured until they expire.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
local keep = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - keep)
local added = {}
for i = 4, #ARGV, 2 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i])
      and redis.call('EXISTS', ARGV[2] .. ARGV[i]) == 0 then
    redis.call('ZADD', KEYS[3], now, ARGV[i])
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    added[#added + 1] = ARGV[i]
  end
end
if #added > 0 then
  redis.call('INCR', KEYS[2])
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(newest[2]) - keep))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return added
"""

# KEYS: the scope's hash. ARGV: (symbol, regime, candle ms, candle iso) quadruples.
# Returns (symbol, old, new) triples for the changes; an old candle changes nothing.
_REGIMES = """
local out = {}
for i = 1, #ARGV, 4 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local keep = false
  if old then
    local sep = string.find(old, '|', 1, true)
    local old_ms = tonumber(string.sub(old, 1, sep - 1))
    local rest = string.sub(old, sep + 1)
    local sep2 = string.find(rest, '|', 1, true)
    local old_regime = string.sub(rest, 1, sep2 - 1)
    if old_ms >= tonumber(ARGV[i + 2]) then
      keep = true
    elseif old_regime ~= ARGV[i + 1] then
      out[#out + 1] = ARGV[i]; out[#out + 1] = old_regime; out[#out + 1] = ARGV[i + 1]
    end
  end
  if not keep then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2] .. '|' .. ARGV[i + 1] .. '|' .. ARGV[i + 3])
  end
end
return out
"""


# Take back records this run recorded (their notifications could not be queued). KEYS: the
# zset, its version, the once-marks set. ARGV: the old marks' key prefix, then members.
_FORGET = """
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('DEL', ARGV[1] .. ARGV[i])
end
if n > 0 then redis.call('INCR', KEYS[2]) end
return n
"""

# Undo regime changes: KEYS: the scope's hash. ARGV: (symbol, the record this run wrote, the
# old regime's record dated a millisecond before the candle) triples. A record another run
# has moved on since is left.
_REVERT = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""


def _regime_record(regime: str, t: datetime) -> str:
    """A regime record as ``_REGIMES`` stores it: candle ms, regime, candle time."""
    return f"{int(t.timestamp() * 1000)}|{regime}|{t.isoformat()}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCacheStore:
    """The ``CacheStore`` of ``botopt.core.state._cache`` on the shared server."""

    def __init__(self, shared: SharedState, host: str = "") -> None:
        self.shared = shared
        self.prefix = shared.key("cache") + ":"
        # Each count goes to the total and to this host's field beside it ("hits@host-1"),
        # so cache-stats can show every host's figures next to the total in one read.
        self.host = host

    def _key(self, name: str, key: str) -> str:
        return self.prefix + name + _SEP + key

    def _usable(self) -> bool:
        return self.shared.available()

    def get_many(self, name: str, keys: Sequence[str], now: float
                 ) -> dict[str, tuple[bytes, float]]:
        if not keys or not self._usable():
            return {}
        try:
            values = self.shared.client.mget([self._key(name, k) for k in keys])
        except self.shared.errors as exc:
            self.shared.lost(exc)
            return {}
        out: dict[str, tuple[bytes, float]] = {}
        for key, body in zip(keys, values, strict=True):
            if body is None:
                continue
            try:
                magic, expire_at, seconds = _HEADER.unpack_from(body)
            except struct.error:
                magic, expire_at, seconds = b"", math.inf, 0.0
            if magic != _MAGIC:
                out[key] = (b"", 0.0)  # damaged: the manager warns and deletes it
            elif expire_at > now:
                out[key] = (body[_HEADER.size:], seconds)
        return out

    def write(self, rows: Sequence[tuple[str, str, bytes, float, float]],
              stats: Mapping[str, tuple[int, int, float]], now: float) -> None:
        if not (rows or stats) or not self._usable():
            return
        pipe = self.shared.client.pipeline(transaction=True)  # the run's one transaction
        for name, key, value, expire_at, seconds in rows:
            life_ms = max(1, math.ceil((expire_at - now) * 1000))
            pipe.set(self._key(name, key), _HEADER.pack(_MAGIC, expire_at, seconds) + value,
                     px=life_ms)
        for name, (hits, misses, saved) in stats.items():
            skey = self.shared.key("cache-stats", name)
            pipe.hincrby(skey, "hits", hits)
            pipe.hincrby(skey, "misses", misses)
            pipe.hincrbyfloat(skey, "saved", saved)
            if self.host:
                pipe.hincrby(skey, f"hits{_AT}{self.host}", hits)
                pipe.hincrby(skey, f"misses{_AT}{self.host}", misses)
                pipe.hincrbyfloat(skey, f"saved{_AT}{self.host}", saved)
        try:
            pipe.execute()
        except self.shared.errors as exc:
            self.shared.lost(exc)

    def delete(self, name: str, keys: Sequence[str]) -> None:
        if not keys or not self._usable():
            return
        try:
            self.shared.client.delete(*[self._key(name, k) for k in keys])
        except self.shared.errors as exc:
            self.shared.lost(exc)

    def close(self) -> None:
        pass


def _scan(shared: SharedState, pattern: str) -> Iterable[bytes]:
    return shared.client.scan_iter(match=pattern, count=1000)  # type: ignore[no-any-return]


def _counts(row: Mapping[str, str], suffix: str = "") -> tuple[int, int, float]:
    """(hits, misses, seconds saved) from a statistics hash; a field another writer garbled
    counts as zero rather than hide every other figure."""
    def num(field: str, kind: type) -> Any:
        try:
            value = kind(row.get(field + suffix, 0))
            return value if math.isfinite(value) else kind(0)
        except (TypeError, ValueError, OverflowError):
            return kind(0)

    return num("hits", int), num("misses", int), num("saved", float)


def host_cache_stats(shared: SharedState) -> dict[str, dict[str, tuple[int, int, float]]]:
    """Per host, per cache name: (hits, misses, seconds saved), from the fields each host
    adds beside the totals. Raises the client's errors."""
    out: dict[str, dict[str, tuple[int, int, float]]] = {}
    head = shared.key("cache-stats") + ":"
    skeys = list(_scan(shared, head + "*"))
    for skey, raw in zip(skeys, _each(shared, skeys, "hgetall"), strict=True):
        if not isinstance(raw, dict):
            continue  # another type: skipped (warned by _each)
        row = {_text(k): _text(v) for k, v in raw.items()}
        hosts = {f.split(_AT, 1)[1] for f in row if _AT in f}
        for h in hosts:
            out.setdefault(h, {})[_text(skey)[len(head):]] = _counts(row, _AT + h)
    return out


def cache_stats(shared: SharedState) -> tuple[dict[str, tuple[int, int, float]],
                                               dict[str, tuple[int, int]]]:
    """(statistics, live entries and bytes) per cache name, as ``_cache._stored`` gives for
    the local store. Raises the client's errors."""
    counts: dict[str, tuple[int, int, float]] = {}
    head = shared.key("cache-stats") + ":"
    # One pipeline per family, its errors returned in place: a key of another type (a
    # hash where an entry's string is kept, WRONGTYPE) is skipped with a warning, not the
    # whole figure, and not `cache-clear`, whose job is to remove it.
    skeys = list(_scan(shared, head + "*"))
    for skey, row in zip(skeys, _each(shared, skeys, "hgetall"), strict=True):
        if isinstance(row, dict):
            counts[_text(skey)[len(head):]] = _counts(
                {_text(k): _text(v) for k, v in row.items()})
    entries: dict[str, tuple[int, int]] = {}
    prefix = shared.key("cache") + ":"
    keys = list(_scan(shared, prefix + "*"))
    for key, size in zip(keys, _each(shared, keys, "strlen"), strict=True):
        name = _text(key)[len(prefix):].split(_SEP, 1)[0]
        n, total = entries.get(name, (0, 0))
        entries[name] = (n + 1, total + (size if isinstance(size, int) else 0))
    return counts, entries


def _each(shared: SharedState, keys: list[Any], command: str) -> list[Any]:
    """``command`` on each of ``keys`` in pipelines of 500, a refused one's error in its
    place (warned once per call); the connection's own errors still raise."""
    out: list[Any] = []
    for i in range(0, len(keys), 500):
        pipe = shared.client.pipeline(transaction=False)
        for k in keys[i:i + 500]:
            getattr(pipe, command)(k)
        out += pipe.execute(raise_on_error=False)
    bad = [k for k, v in zip(keys, out, strict=True) if isinstance(v, Exception)]
    if bad:
        log.warning("%d key(s) on %s hold another type than botopt writes (first: %s); "
                    "skipped (cache-clear removes them)", len(bad), shared.where,
                    shown(bad[0], 80))
    return out


def clear_cache(shared: SharedState, names: Sequence[str]) -> None:
    """Delete the named caches' entries and statistics on the server."""
    for name in names:
        keys = list(_scan(shared, shared.key("cache") + ":" + name + _SEP + "*"))
        keys.append(shared.key("cache-stats", name).encode())
        for i in range(0, len(keys), 500):
            shared.client.unlink(*keys[i:i + 500])


class RedisCacheStatistics:
    """``CacheStatistics`` of every host, on the server; ``local``'s while it is down."""

    per_host = True

    def __init__(self, shared: SharedState, local: Any) -> None:
        self.shared, self.local = shared, local

    @property
    def where(self) -> str:
        return f"{self.shared.where}, every host"

    def check_reset(self) -> None:
        from ..errors import UsageError

        raise UsageError("cache-stats --reset works on this host's cache only; with "
                         "state.url the counters are every host's (cache-clear drops them "
                         "with the entries)", key="state.url")

    def stored(self) -> tuple[dict[str, tuple[int, int, float]], dict[str, tuple[int, int]]]:
        """Every host's figures. Raises a one-line CacheError when the server cannot be
        reached: this host's alone would pass for everyone's."""
        from ..errors import CacheError

        if self.shared.available(quiet=True):
            try:
                return cache_stats(self.shared)
            except self.shared.errors as exc:
                self.shared.lost(exc, quiet=True)
        raise CacheError(f"shared state {self.shared.where} unreachable ({self.shared.down}); "
                         "the cache statistics of every host are kept there",
                         source=self.shared.where, key="state.url")

    def hosts(self) -> dict[str, dict[str, tuple[int, int, float]]]:
        """Each host's (hits, misses, saved) per cache; read right after ``stored``."""
        try:
            return host_cache_stats(self.shared)
        except self.shared.errors as exc:
            from ..errors import CacheError

            raise CacheError(f"shared state {self.shared.where}: "
                             f"{self.shared.describe(exc)}", key="state.url") from exc

    def check(self) -> None:
        from ..errors import CacheError

        if not self.shared.available(quiet=True):
            raise CacheError(f"shared state {self.shared.where} unreachable "
                             f"({self.shared.down}); nothing cleared",
                             source=self.shared.where, key="state.url")

    def clear(self, names: Sequence[str]) -> None:
        from ..errors import CacheError

        try:
            clear_cache(self.shared, names)
        except self.shared.errors as exc:
            raise CacheError(f"shared state {self.shared.where}: "
                             f"{self.shared.describe(exc)}",
                             source=self.shared.where, key="state.url") from exc


class RedisCooldownStore:
    """``CooldownStore`` on the server; ``fallback`` (the local store) when it fails."""

    def __init__(self, shared: SharedState, scope: str, fallback: Any,
                 keep_seconds: float = 2 * 86400.0) -> None:
        self.shared, self.fallback = shared, fallback
        self.zset = shared.key("cooldowns", scope)
        self.version = shared.key("cooldowns", scope, "version")
        self.once_key = shared.key("signal", scope)
        self.once = self.once_key + ":"  # the per-record marks written before the set
        self.shift_ms = 0  # tests only: moves the server's clock for the once-marks
        self.keep_ms = int(keep_seconds * 1000)
        self._merged = False
        # the members this process recorded on the server (not the fallback): where a
        # take-back must go, whatever the server's state by then
        self._on_server: set[str] = set()

    def _merge_local(self) -> None:
        """Once per process, with the server up: the cooldowns recorded in the local store
        while it was down go to the server (marked as seen, each once), so no host queues
        those signals again."""
        if self._merged or self.shared.down is not None:
            return
        self._merged = True

        def push(records: list[Any]) -> None:
            try:
                self._push(records)
            except self.shared.errors as exc:
                raise _Lost() from exc

        try:
            n = self.fallback.drain(push)
        except _Lost as lost:
            self.shared.lost(lost.__cause__ or lost)
            return
        if n:
            log.info("%d cooldown(s) recorded here during an outage merged into %s", n,
                     self.shared.where)

    def _push(self, records: list[Any]) -> list[Any]:
        by_member = {_SEP.join(r.key()): r for r in records}
        args: list[Any] = [self.keep_ms, self.once, self.shift_ms]
        for member, r in by_member.items():
            args += [member, int(r.candle_time.timestamp() * 1000)]
        added = self.shared.script("record", _RECORD)(
            keys=[self.zset, self.version, self.once_key], args=args)
        return [by_member[_text(m)] for m in added]

    def digest(self) -> str:
        self._merge_local()
        if self.shared.down is None:
            try:
                raw = self.shared.client.get(self.version)
                return "shared-" + (_text(raw) if raw is not None else "0")
            except self.shared.errors as exc:
                self.shared.lost(exc)
        return str(self.fallback.digest())

    def snapshot(self) -> list[Any]:
        from ._cooldowns import CooldownRecord

        self._merge_local()
        if self.shared.down is None:
            try:
                members = self.shared.client.zrange(self.zset, 0, -1)
            except self.shared.errors as exc:
                self.shared.lost(exc)
            else:
                out = []
                for m in members:
                    try:
                        sym, direction, iso = _text(m).split(_SEP)
                        when = datetime.fromisoformat(iso)
                        if when.tzinfo is None:
                            raise ValueError("no zone")
                    except (ValueError, UnicodeDecodeError):
                        # not a record botopt wrote: a gate cannot read it, the others can
                        log.warning("cooldown record %r on %s is unreadable; skipped",
                                    shown(m), self.shared.where)
                        continue
                    out.append(CooldownRecord(sym, direction, when))
                return out
        return list(self.fallback.snapshot())

    def record(self, passed: Iterable[Any]) -> list[Any]:
        """Add records; return those this host recorded first (only it queues them)."""
        items = list(passed)
        if not items:
            return []
        self._merge_local()
        if self.shared.down is None:
            try:
                added = self._push(items)
            except self.shared.errors as exc:
                self.shared.lost(exc)
            else:
                self._on_server.update(_SEP.join(r.key()) for r in added)
                return added
        return list(self.fallback.record(items))

    def forget(self, records: Any) -> None:
        """Take back records whose notifications could not be queued, where each was
        recorded: the server (the queue on it failed, then the local spool, e.g. a full
        disk) or the local fallback (the server was away). Left on the server, every host
        took those signals for notified: lost. A server that cannot be reached now keeps
        them (said in a warning)."""
        records = list(records)
        mine = [_SEP.join(r.key()) for r in records]
        there = [m for m in mine if m in self._on_server]
        if len(there) < len(mine):
            self.fallback.forget([r for r, m in zip(records, mine, strict=True)
                                  if m not in self._on_server])
        if not there:
            return
        try:
            # straight to the server: the failed enqueue may have marked it away meanwhile
            self.shared.script("forget", _FORGET)(
                keys=[self.zset, self.version, self.once_key], args=[self.once, *there])
        except self.shared.errors as exc:
            log.warning("%d cooldown(s) whose notifications were not queued could not be "
                        "taken back on %s (%s): those signals will not be notified",
                        len(there), self.shared.where, self.shared.describe(exc))
        else:
            self._on_server.difference_update(there)


class RedisRegimeState:
    """``RegimeState`` on the server; ``fallback`` (the local file) when it fails."""

    def __init__(self, shared: SharedState, scope: str, fallback: Any) -> None:
        self.shared, self.fallback = shared, fallback
        self.hash = shared.key("regimes", scope)
        self._on_server: set[str] = set()  # symbols whose change this process wrote there

    def update(self, seen: Iterable[tuple[str, str, datetime]]
               ) -> list[tuple[str, str | None, str]]:
        items = list(seen)
        if not items:
            return []
        if self.shared.down is None:
            args: list[Any] = []
            for sym, regime, t in items:
                args += [sym, regime, int(t.timestamp() * 1000), t.isoformat()]
            try:
                flat = self.shared.script("regimes", _REGIMES)(keys=[self.hash], args=args)
            except self.shared.errors as exc:
                self.shared.lost(exc)
            else:
                flat = [_text(v) for v in flat]
                out = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
                self._on_server.update(sym for sym, _, _ in out)
                return out
        return list(self.fallback.update(items))

    def revert(self, changes: Any) -> None:
        """As ``RedisCooldownStore.forget``: each change (symbol, old, new, candle) taken
        back where it was written, the old regime dated a millisecond before the candle,
        so a later run on the candle reports it again."""
        changes = [c for c in changes if c[1] is not None]
        local = [c for c in changes if c[0] not in self._on_server]
        if local:
            self.fallback.revert(local)
        args: list[Any] = []
        for sym, old, new, at in changes:
            if sym in self._on_server:
                args += [sym, _regime_record(new, at),
                         _regime_record(old, at - timedelta(milliseconds=1))]
        if not args:
            return
        try:
            self.shared.script("revert", _REVERT)(keys=[self.hash], args=args)
        except self.shared.errors as exc:
            log.warning("regime changes whose notifications were not queued could not be "
                        "taken back on %s (%s)", self.shared.where, self.shared.describe(exc))
        else:
            self._on_server.difference_update(args[0::3])

