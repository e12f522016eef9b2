"""Persistent named caches shared by cron runs: safe to overlap, never pickled, never wrong.

Keys carry everything a result depends on (function, code version, arguments, a content
fingerprint of the data), so a hit is always the answer an uncached run would give; the
life of an entry only bounds how long it is kept.

Lifetimes (the one place their defaults are defined):

- The pipeline's stages are content-keyed: an entry keyed by a candle can only be wanted
  while that candle is the newest closed one. By default it lives ``CANDLE_LIVES`` candle
  intervals from when it was written (10 min at 5m): the slot it was written in, plus one
  interval of grace for late or jittered runs. A ``cache.*_ttl`` setting overrides this.
- The decorators (``cache_features`` ...) cache users' own functions, whose keys need not
  carry the data; they keep the seed's short TTLs (``SEED_TTLS``).

Storage is one diskcache directory (``cache/entries``, ``DiskcacheStore``) behind the small
``CacheStore`` interface, so another backend (a shared server) can replace it without
touching callers:

- Never pickle: keys are str and values typed JSON or Arrow IPC bytes
  (``botopt.core.base._codec``); the store's diskcache ``Disk`` refuses to unpickle anything, so a
  planted pickle is a damaged value (diskcache's default loads it: CVE-2025-69872).
- One write transaction per run: ``CacheManager.batch()`` holds a run's writes and its
  statistics and commits them together; reads are batched (``get_many``).
- Failure never fails a run: lock contention is a miss; a corrupt database is moved aside
  once (``entries/cache.db.corrupt``) and rebuilt; a corrupt value is a miss that is deleted with a
  warning; a read-only or full disk turns caching off for the process with one warning (a
  healthy database is never moved aside for that).

Expiry is checked against an injectable clock (stored in each value's header) so a replay of
cron runs sees the hits a real day would; diskcache's own wall-clock expiry, set later by a
margin, only collects garbage (with a run's writes: diskcache is set not to cull per set).
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType
from typing import Any, Protocol, TypeVar

from ..base._codec import Unencodable, decode, encode, fingerprint, json_loads

# The lives are the config's knowledge (validation and `config show` need them); re-exported
# here for the cache's readers.
from ..base._config import CANDLE_LIVES, describe_life, effective_lives  # noqa: F401
from ..base._fs import refused_write
from ..base._versions import function_tag
from ..errors import CacheError, UsageError, kind_of
from ._entry_format import HEADER as _HEADER
from ._entry_format import MAGIC, MAGIC_D, MAGIC_Z
from ._entry_format import pack as _pack
from ._entry_format import unpack as _unpack
from ._paths import default_root, ensure_dir, root_for

log = logging.getLogger("botopt.cache")

T = TypeVar("T")
MISS: Any = object()  # a cached None is a value; only MISS means "not there"
PIPELINE_CACHES = ("features", "regime", "predictions", "gates", "signals")
# Decorator defaults (the seed's; for users' functions whose keys may not carry the data).
SEED_TTLS = {"features": 60.0, "predictions": 30.0, "regime": 300.0, "gates": 10.0}
DEFAULT_TTL = 60.0  # a decorator cache with another name
_LOCK_TIMEOUT = 0.5  # seconds: a slow lock means recompute, not wait

# SQLite result codes (Python >= 3.11 exposes them on the exception).
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


class CacheStore(Protocol):
    """What the cache manager needs from a storage backend (values are opaque bytes)."""

    def get_many(self, name: str, keys: Sequence[str], now: float
                 ) -> dict[str, tuple[bytes, float]]: ...

    def write(self, rows: Sequence[tuple[str, str, bytes, float, float]],
              stats: Mapping[str, tuple[int, int, float]], now: float) -> None: ...

    def delete(self, name: str, keys: Sequence[str]) -> None: ...

    def close(self) -> None: ...


_SEP = "\x1f"  # between a cache's name and a key: never in a name, and keys are hex/str
# Between a cache's name and a key stored compact: a 40- or 48-digit hex key (a digest, or
# one led by ``time_ordered``'s minute: every stage key) as its 27 or 32 base64 characters.
# The key is stored twice (the table and its unique index): at 10,000 symbols a next
# candle's run writes 30,000 of them. Its own separator: a compact key never equals a key
# of any other form.
_SEP_COMPACT = "\x1e"
_HEX = frozenset("0123456789abcdef")
_STATS = f"{_SEP}stats{_SEP}"  # statistics keys: "<_STATS><name>", JSON bytes, no tag
_ENTRIES = "entries"  # the diskcache directory under <root>/cache
# diskcache's (wall-clock) expiry only collects garbage, a little after ours (a run's clock
# is the wall clock too; the margin covers a clock step between runs). An hour kept about 13
# candles of entries at 5m, and the key index, which every candle's run rewrites nearly
# whole (its keys are digests: random places), grew with them: at 2,000 symbols a candle's
# run wrote 12.8 MB after 18 candles of a cron, 4.9 MB on average with 120 s.
_GC_MARGIN = 120.0
_MAGICS = (MAGIC, MAGIC_Z, MAGIC_D)
_MODE_RAW = 1  # diskcache.core.MODE_RAW, the only mode a stats value has (no import needed)
# Settings fixed at every open: no eviction or culling (no work per set; entries expire),
# no statistics (a write per read), values up to 64 MiB inside the database (one commit).
# temp_store=2 (memory): SQLite's temporary tables and sort spills stay in RAM. On disk they
# were most of what a next-candle run wrote at scale (4,000 symbols: 179.5 MiB a run
# without it, 23.5 MiB with it), every minute under a cron.
_SETTINGS: dict[str, Any] = {"eviction_policy": "none", "cull_limit": 0, "statistics": 0,
                             "size_limit": 2**62, "disk_min_file_size": 2**26,
                             "sqlite_temp_store": 2}


class _Damaged(Exception):
    """A stored row botopt did not write (a pickle, a foreign type, a path outside)."""


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_busy(exc: BaseException) -> bool:
    return _code(exc) in _BUSY or "locked" in str(exc) or "busy" in str(exc)


def is_corrupt(exc: BaseException) -> bool:
    """Whether a sqlite3 error says the database file is damaged (not busy, not read-only)."""
    code = _code(exc)
    if code is not None:
        return code in _CORRUPT
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.OperationalError)


@functools.cache
def _safe_disk() -> type:
    import diskcache
    from diskcache.core import MODE_BINARY, MODE_RAW

    class SafeDisk(diskcache.Disk):  # type: ignore[misc]
        """str keys and bytes values only; never unpickles (diskcache's pickle loading is
        CVE-2025-69872): any other row reads as damaged."""

        def put(self, key: Any) -> Any:
            if type(key) is not str:
                raise TypeError("botopt cache keys are str")
            return super().put(key)

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise _Damaged("a pickled cache key")
            return super().get(key, raw)

        def store(self, value: Any, read: bool, key: Any = None) -> Any:
            if type(value) is not bytes:
                raise TypeError("botopt cache values are bytes")
            return super().store(value, read, key=key)

        def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
            if mode not in (MODE_RAW, MODE_BINARY) or read:
                raise _Damaged(f"a cache value of mode {mode} (not bytes)")
            if filename is not None and (os.path.isabs(filename) or ".." in filename):
                raise _Damaged("a cache value pointing outside the cache")
            out = super().fetch(mode, filename, value, read)
            if type(out) is not bytes:
                raise _Damaged(f"a cache value of type {type(out).__name__}")
            return out

    return SafeDisk


@contextmanager
def _sqlite_errors() -> Iterator[None]:
    """diskcache reports a lock it could not take as ``Timeout`` (hiding SQLite's reason):
    give the manager SQLite's own error back, so busy, read-only and full stay apart."""
    from diskcache import Timeout

    try:
        yield
    except Timeout as exc:
        cause = exc.__context__
        if isinstance(cause, sqlite3.Error):
            raise cause from None
        raise sqlite3.OperationalError("database is locked") from None


def _open_cache(directory: Path, timeout: float) -> Any:
    import diskcache

    directory.mkdir(mode=0o700, exist_ok=True)
    return diskcache.Cache(str(directory), timeout=timeout, disk=_safe_disk(), **_SETTINGS)


def time_ordered(epoch_seconds: int, key: str) -> str:
    """``key`` led by a time in minutes (8 hex digits): the keys of one candle's entries
    then sort together, so a run's inserts land side by side in the store's key index, and
    the garbage collection's deletes too, instead of on nearly every page of it (a stage
    key is a digest: a random place). The pipeline's stage keys are made so."""
    return f"{epoch_seconds // 60 & 0xFFFFFFFF:08x}{key}"


def _entry(name: str, key: str) -> str:
    """The diskcache key of entry ``key`` of cache ``name``."""
    if len(key) in (40, 48) and _HEX.issuperset(key):  # a digest, time-ordered or not
        return name + _SEP_COMPACT + \
            base64.urlsafe_b64encode(bytes.fromhex(key)).decode().rstrip("=")
    return name + _SEP + key


class DiskcacheStore:
    """The local backend: one diskcache directory (``cache/entries``) for every cache.

    Keys are ``"<name>\x1f<key>"`` (``"<name>\x1e<base64>"`` for a hex digest key, ``_entry``;
    str: stored as text, never pickled) tagged with the
    cache's name (counts and sizes per cache); statistics live beside them under
    ``"\x1fstats\x1f<name>"``, so a run's entries and statistics share one transaction."""

    def __init__(self, directory: Path, timeout: float = _LOCK_TIMEOUT) -> None:
        self.directory = directory
        self.path = directory / "cache.db"
        self.timeout = timeout
        self._cache: Any = None

    def _open(self) -> Any:
        if self._cache is None:
            with _sqlite_errors():
                self._cache = _open_cache(self.directory, self.timeout)
        return self._cache

    def _conn(self) -> sqlite3.Connection:
        return self._open()._con  # type: ignore[no-any-return]

    def get_many(self, name: str, keys: Sequence[str], now: float
                 ) -> dict[str, tuple[bytes, float]]:
        """Damaged rows come back as ``b""`` (the manager drops them with a warning)."""
        cache = self._open()
        disk = cache.disk
        out: dict[str, tuple[bytes, float]] = {}
        for i in range(0, len(keys), 500):  # SQLite's parameter limit
            asked = {_entry(name, k): k for k in keys[i:i + 500]}
            chunk = list(asked)
            rows = cache._sql(f"SELECT key, mode, filename, value FROM Cache WHERE raw = 1 "
                              f"AND key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            for full, mode, filename, value in rows:
                key = asked[full]
                try:
                    body = disk.fetch(mode, filename, value, False)
                    magic, expire_at, seconds = _HEADER.unpack_from(body)
                    if magic not in _MAGICS:
                        raise _Damaged("no botopt header")
                    if expire_at <= now:
                        continue  # only what is still live is inflated
                    data = _unpack(body)[2]
                except (_Damaged, struct.error, ValueError, OSError, TypeError):
                    out[key] = (b"", 0.0)
                    continue
                out[key] = (data, seconds)
        return out

    def write(self, rows: Sequence[tuple[str, str, bytes, float, float]],
              stats: Mapping[str, tuple[int, int, float]], now: float) -> None:
        cache = self._open()
        with _sqlite_errors(), cache.transact():  # the run's one transaction
            for name, key, value, expire_at, seconds in rows:
                life = max(expire_at - now, 0.0)
                cache.set(_entry(name, key), _pack(expire_at, seconds, value),
                          expire=life + _GC_MARGIN, tag=name)
            for name, (hits, misses, saved) in stats.items():
                old = _stats_row(cache._sql, _STATS + name)
                total = (old[0] + hits, old[1] + misses, old[2] + saved)
                cache.set(_STATS + name, json.dumps(total).encode())
            if rows and cache._sql("SELECT 1 FROM Cache WHERE expire_time < ? LIMIT 1",
                                   (time.time(),)).fetchone():
                cache.expire()  # garbage goes with a run's writes, never a commit of its own

    def delete(self, name: str, keys: Sequence[str]) -> None:
        cache = self._open()
        with _sqlite_errors(), cache.transact():
            for k in keys:
                cache.delete(_entry(name, k))

    def clear(self, names: Sequence[str]) -> None:
        """Drop the entries and statistics of ``names`` (``cache-clear``)."""
        cache = self._open()
        with _sqlite_errors():
            for name in names:
                cache.evict(name)
                cache.delete(_STATS + name)

    def reset_stats(self) -> None:
        """Drop every cache's hit and miss counters; the entries stay (``--reset``)."""
        cache = self._open()
        with _sqlite_errors(), cache.transact():
            for (key,) in cache._sql("SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND "
                                     "key < ?", (_STATS, _STATS[:-1] + chr(ord(_SEP) + 1))
                                     ).fetchall():
                if isinstance(key, str) and key.startswith(_STATS):
                    cache.delete(key)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _stats_row(sql: Callable[..., Any], key: str) -> tuple[int, int, float]:
    """(hits, misses, saved) stored under ``key``, read as plain SQL (never through a
    Disk): only raw bytes botopt wrote count, anything else starts again at 0."""
    row = sql("SELECT mode, value FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone()
    if row is None or row[0] != _MODE_RAW or not isinstance(row[1], bytes):
        return 0, 0, 0.0
    try:
        hits, misses, saved = json_loads(row[1])
        return int(hits), int(misses), float(saved)
    except (TypeError, ValueError):
        return 0, 0, 0.0


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    saved: float = 0.0


@dataclass
class CacheManager:
    """The caches under one root directory. ``enabled=False`` computes everything.

    Storage goes through ``_store`` (a ``CacheStore``; by default a ``DiskcacheStore`` in
    ``root/cache/entries``, opened on first use), the seam where another backend would plug in."""

    root: Path
    ttls: dict[str, float] = field(default_factory=lambda: dict(SEED_TTLS))
    enabled: bool = True
    clock: Callable[[], float] = time.time
    _store: Any = field(default=None, repr=False)
    _counts: dict[str, _Counters] = field(default_factory=dict, repr=False)
    _flushed: dict[str, tuple[int, int, float]] = field(default_factory=dict, repr=False)
    _pending: list[tuple[str, str, bytes, float, float]] | None = field(default=None,
                                                                          repr=False)
    _broken: bool = field(default=False, repr=False)
    _registered: bool = field(default=False, repr=False)
    # Seconds spent encoding and writing entries (benchmarks read it).
    write_seconds: float = field(default=0.0, repr=False)

    @classmethod
    def from_config(cls, config: Any, root: Path | None = None,
                    clock: Callable[[], float] = time.time) -> CacheManager:
        if root is None:
            root = root_for(config)
        ttls = {n: life for n, (life, _) in effective_lives(config).items()}
        return cls(root=root, ttls=ttls, enabled=config.cache.enabled, clock=clock)

    def disabled(self) -> CacheManager:
        """A manager that computes everything (``--no-cache``) and stores nothing."""
        return CacheManager(root=self.root, ttls=dict(self.ttls), enabled=False,
                            clock=self.clock)

    # -- storage -------------------------------------------------------------------------

    def _backend(self) -> Any:
        if self._store is None:
            self._store = DiskcacheStore(
                ensure_dir(ensure_dir(ensure_dir(self.root) / "cache") / _ENTRIES))
        return self._store

    def _quarantine(self, exc: BaseException) -> None:
        store = self._store
        self._store = None
        if store is None:
            return
        store.close()
        db = store.path
        aside = Path(str(db) + ".corrupt")  # one file, replaced: never one more per run
        log.warning("cache %s is damaged (%s); moved aside to %s and rebuilt", db,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__, aside.name)
        try:
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(db) + suffix)
                if p.exists():
                    os.replace(p, Path(str(aside) + suffix))
        except OSError as err:
            self._degrade(err)

    def _degrade(self, exc: BaseException) -> None:
        if not self._broken:
            refused_write(self.root, exc)
        self._broken = True

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn every storage failure into 'no cache' (never a failed run)."""
        try:
            yield
        except sqlite3.Error as exc:
            if _is_busy(exc):
                log.debug("cache busy (%s); recomputing", what)
            elif is_corrupt(exc):
                self._quarantine(exc)
            else:  # read-only, disk full, I/O error, cannot open
                self._degrade(exc)
        except (OSError, CacheError) as exc:
            self._degrade(exc)

    def _usable(self) -> bool:
        return self.enabled and not self._broken

    def get_many(self, name: str, keys: Sequence[str]) -> dict[str, Any]:
        """The live cached values among ``keys`` (misses are absent; no statistics)."""
        if not self._usable() or not keys:
            return {}
        raw: dict[str, tuple[bytes, float]] = {}
        with self._guard(f"read {name}"):
            raw = self._backend().get_many(name, keys, self.clock())
        if not raw:
            return {}
        out: dict[str, Any] = {}
        bad: list[str] = []
        counters = self._count(name)
        for key, (value, seconds) in raw.items():
            try:
                out[key] = decode(value[:1], value[1:])
            except Exception as exc:  # any damage to one value: a miss, deleted
                bad.append(key)
                log.warning("cache %s: a damaged entry was dropped (%s)", name,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                continue
            counters.saved += seconds
        if bad:
            with self._guard(f"delete {name}"):
                self._backend().delete(name, bad)
        return out

    def get(self, name: str, key: str) -> Any:
        """The cached value or MISS (no statistics counted)."""
        return self.get_many(name, [key]).get(key, MISS)

    def set_many(self, name: str, items: Mapping[str, Any], seconds: float = 0.0,
                 ttl: float | None = None) -> int:
        """Store values; inside ``batch()`` they are written with the run's one commit."""
        if not self._usable() or not items:
            return 0
        life = self.ttl(name) if ttl is None else ttl
        if life <= 0:
            return 0
        start = time.perf_counter()
        expire_at = self.clock() + life
        rows = []
        for key, value in items.items():
            try:
                tag, body = encode(value)
            except Unencodable as exc:
                log.debug("cache %s: result not stored (%s)", name, exc)
                continue
            rows.append((name, key, tag + body, expire_at, seconds))
        self.write_seconds += time.perf_counter() - start
        if self._pending is not None:
            self._pending.extend(rows)
            return len(rows)
        return len(rows) if self._commit(rows, {}) else 0

    def set(self, name: str, key: str, value: Any, seconds: float = 0.0,
            ttl: float | None = None) -> bool:
        return self.set_many(name, {key: value}, seconds, ttl) == 1

    def _commit(self, rows: list[tuple[str, str, bytes, float, float]],
                stats: Mapping[str, tuple[int, int, float]]) -> bool:
        if not (rows or stats) or not self._usable():
            return False
        start = time.perf_counter()
        try:
            with self._guard("write"):
                self._backend().write(rows, stats, self.clock())
                return True
            return False
        finally:
            self.write_seconds += time.perf_counter() - start

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold every write (and the statistics) until the end: one transaction."""
        if self._pending is not None:
            yield
            return
        self._pending = []
        try:
            yield
        finally:
            rows, self._pending = self._pending, None
            stats = self._take_stats()
            if not self._commit(rows, stats):
                self._restore_stats(stats)

    def ttl(self, name: str) -> float:
        return self.ttls.get(name, DEFAULT_TTL)

    # -- statistics ------------------------------------------------------------------------

    def _count(self, name: str) -> _Counters:
        c = self._counts.get(name)
        if c is None:
            c = self._counts[name] = _Counters()
            if not self._registered:
                self._registered = True
                atexit.register(self.flush_stats)
        return c

    def count(self, name: str, hits: int = 0, misses: int = 0) -> None:
        c = self._count(name)
        c.hits += hits
        c.misses += misses

    def get_or_compute_many(self, name: str, keys: Mapping[str, str],
                            compute: Callable[[list[str]], Mapping[str, Any]],
                            ttl: float | None = None) -> dict[str, Any]:
        """Per item (e.g. symbol -> key): the cached value, or ``compute(missing items)``
        for all the misses at once, stored for next time."""
        found = self.get_many(name, list(dict.fromkeys(keys.values())))
        out = {item: found[k] for item, k in keys.items() if k in found}
        missing = [item for item in keys if item not in out]
        self.count(name, hits=len(out), misses=len(missing))
        if missing:
            start = time.perf_counter()
            fresh = compute(missing)
            each = (time.perf_counter() - start) / len(missing)
            self.set_many(name, {keys[i]: fresh[i] for i in missing}, each, ttl)
            out.update({i: fresh[i] for i in missing})
        return {item: out[item] for item in keys}

    def get_or_compute(self, name: str, key: str, compute: Callable[[], T],
                       ttl: float | None = None) -> T:
        """The cached value for ``key``, or ``compute()`` stored for next time."""
        return self.get_or_compute_many(  # type: ignore[no-any-return]
            name, {key: key}, lambda _missing: {key: compute()}, ttl)[key]

    def counters(self) -> dict[str, dict[str, float]]:
        """This process's counts so far (benchmarks read them; nothing is written)."""
        return {n: {"hits": c.hits, "misses": c.misses, "saved": c.saved}
                for n, c in self._counts.items()}

    def _take_stats(self) -> dict[str, tuple[int, int, float]]:
        """What this process counted since the last write (the counts stay cumulative)."""
        if not self.enabled:
            return {}
        pending = {}
        for n, c in self._counts.items():
            h, m, sv = self._flushed.get(n, (0, 0, 0.0))
            if c.hits - h or c.misses - m:
                pending[n] = (c.hits - h, c.misses - m, c.saved - sv)
                self._flushed[n] = (c.hits, c.misses, c.saved)
        return pending

    def _restore_stats(self, stats: Mapping[str, tuple[int, int, float]]) -> None:
        for n, (h, m, sv) in stats.items():
            fh, fm, fs = self._flushed[n]
            self._flushed[n] = (fh - h, fm - m, fs - sv)

    def flush_stats(self) -> None:
        """Add this process's counts to the shared statistics, in one transaction."""
        if self._pending is not None:
            return  # the batch commits them
        stats = self._take_stats()
        if stats and not self._commit([], stats):
            log.debug("cache statistics not saved")

    def close(self) -> None:
        self.flush_stats()
        if self._store is not None:
            self._store.close()
            self._store = None


# -- module-level API: decorators and statistics for the default workspace ----------------

_managers: dict[Path, CacheManager] = {}


def get_manager(root: Path | None = None) -> CacheManager:
    """The manager for ``root`` (default: the default workspace's), created once."""
    if root is None:
        root = default_root()
    mgr = _managers.get(root)
    if mgr is None:
        mgr = _managers[root] = CacheManager(root=root)
    return mgr


def cached(name: str, ttl_seconds: float | None = None) -> Callable[[Callable[..., T]],
                                                                     Callable[..., T]]:
    """Cache a function's results in the named cache (decorator).

    The cache directory is resolved at call time (the default workspace, see
    ``botopt.core.state._paths.default_root``), so functions may be decorated at import.
    Arguments that cannot be fingerprinted, or results that cannot be stored without
    pickle, simply bypass the cache. ``ttl_seconds`` defaults to the seed TTL of a named
    cache (``SEED_TTLS``), else 60 s.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise UsageError(f"invalid cache name {str(name)[:40]!r}: use letters, digits and _",
                         key=str(name)[:40])
    if ttl_seconds is not None and (isinstance(ttl_seconds, bool) or not isinstance(
            ttl_seconds, (int, float)) or not 0 < ttl_seconds <= _MAX_TTL):
        raise UsageError(f"ttl_seconds must be a number of seconds in (0, {_MAX_TTL:g}], not "
                         f"{str(ttl_seconds)[:40]}", key="ttl_seconds")
    life = ttl_seconds if ttl_seconds is not None else SEED_TTLS.get(name, DEFAULT_TTL)

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        if not callable(fn):
            raise UsageError(f"cache {name}: {kind_of(fn)} is not a function to cache",
                             key=name)
        # a functools.partial: the function it calls (its bound arguments are in the key)
        inner = fn.func if isinstance(fn, functools.partial) else fn
        ident = f"{getattr(inner, '__module__', '?')}." \
                f"{getattr(inner, '__qualname__', type(inner).__qualname__)}"
        tag = function_tag(inner)
        reads = _reads(inner)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            mgr = get_manager()
            try:
                # What the result depends on beyond the arguments: the defaults, the
                # values a closure captured (two closures of one factory share code, not
                # values) and the plain values of the module globals it names.
                key = fingerprint([ident, tag, list(args), sorted(kwargs.items()),
                                   _context(fn, inner, reads)])
            except Unencodable as exc:
                log.debug("cache %s: %s not cached (%s)", name, ident, exc)
                return fn(*args, **kwargs)
            return mgr.get_or_compute(name, key, lambda: fn(*args, **kwargs), life)

        wrapper.cache_name = name  # type: ignore[attr-defined]
        return wrapper

    return decorate


_MAX_TTL = 10 * 365 * 86_400.0  # seconds: longer is a mistake, not a cache life
# Module globals whose values are part of a decorated function's key (settings a user edits:
# RATE = 0.5); modules, functions and objects are not (their code or state is not hashed).
_PLAIN_GLOBALS = (int, float, str, bytes, bool, type(None))


def _reads(fn: Any) -> tuple[str, ...]:
    """The global names ``fn``'s code (and the code nested in it) reads."""
    names: set[str] = set()
    stack = [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if hasattr(c, "co_code"))
    return tuple(sorted(names))


def _context(fn: Any, inner: Any, reads: tuple[str, ...]) -> list[Any]:
    """The inputs of a call beyond its arguments (``cached``): defaults, a partial's bound
    arguments, closure values, plain module globals. Unencodable when a closure holds
    what cannot be fingerprinted: such a call is not cached."""
    out: list[Any] = [list(getattr(inner, "__defaults__", None) or ()),
                      sorted((getattr(inner, "__kwdefaults__", None) or {}).items())]
    if fn is not inner:
        out += [list(getattr(fn, "args", ())), sorted((getattr(fn, "keywords", None)
                                                       or {}).items())]
    cells = getattr(inner, "__closure__", None) or ()
    try:
        # a function captured is named by its code (its own captures are not followed)
        out.append([("fn", v.__qualname__, function_tag(v)) if isinstance(v, FunctionType)
                    else v for v in (c.cell_contents for c in cells)])
    except ValueError as exc:  # a cell not yet filled (a recursive inner function)
        raise Unencodable("an empty closure cell") from exc
    g = getattr(inner, "__globals__", None) or {}
    out.append([(n, g[n]) for n in reads if n in g and type(g[n]) in _PLAIN_GLOBALS
                or (n in g and type(g[n]) is tuple and all(type(x) in _PLAIN_GLOBALS
                                                           for x in g[n]))])
    return out


def cache_features(ttl_seconds: float | None = None
                   ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("features", ttl_seconds)


def cache_predictions(ttl_seconds: float | None = None
                      ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("predictions", ttl_seconds)


def cache_regime(ttl_seconds: float | None = None
                 ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("regime", ttl_seconds)


def cache_gate(ttl_seconds: float | None = None
               ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("gates", ttl_seconds)


def _ro(path: Path, immutable: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro" + ("&immutable=1" if immutable else ""),
                           uri=True, timeout=2.0)


def _stored(root: Path) -> tuple[dict[str, tuple[int, int, float]],
                                 dict[str, tuple[int, int]]]:
    """(statistics, live entries and bytes) per cache name, read-only from diskcache's
    database (table ``Cache``: key, tag, size, expire_time, value ...) without opening a
    ``diskcache.Cache`` (which writes its settings) or importing polars/numpy."""
    path = root / "cache" / _ENTRIES / "cache.db"
    counts: dict[str, tuple[int, int, float]] = {}
    entries: dict[str, tuple[int, int]] = {}
    if not path.exists():
        return counts, entries
    try:
        db = _ro(path)
        try:
            db.execute("SELECT 1 FROM Cache LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            db.close()
            if os.access(path.parent, os.W_OK):
                raise
            # A folder where nothing may be written (a read-only mount, another user's
            # cache): SQLite cannot make the WAL's shared-memory file there, and every
            # figure read as zero. Opened as immutable it reads the database file itself:
            # exact unless a writer left a write-ahead log behind (said below).
            db = _ro(path, immutable=True)
            wal = Path(str(path) + "-wal")
            if wal.exists() and wal.stat().st_size:
                log.warning("cache %s is read-only and has an unmerged write-ahead log: "
                            "the figures are those of its last checkpoint", path)
        try:
            for (key,) in db.execute("SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND "
                                     "key < ?", (_STATS, _STATS[:-1] + chr(ord(_SEP) + 1))):
                if isinstance(key, str) and key.startswith(_STATS):
                    counts[key[len(_STATS):]] = _stats_row(db.execute, key)
            # diskcache's expiry is ours plus _GC_MARGIN; the size of a value kept inside
            # the database is its length (``size`` counts only values kept in files).
            entries = {r[0]: (r[1], r[2] or 0) for r in db.execute(
                "SELECT tag, COUNT(*), SUM(size + COALESCE(LENGTH(value), 0)) FROM Cache "
                "WHERE tag IS NOT NULL AND expire_time > ? GROUP BY tag",
                (time.time() + _GC_MARGIN,))}
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("cache statistics unreadable (%s)", exc)
    return counts, entries


Counts = dict[str, tuple[int, int, float]]  # per cache: hits, misses, seconds saved
Entries = dict[str, tuple[int, int]]  # per cache: live entries, bytes


class CacheStatistics(Protocol):
    """The figures ``cache-stats`` shows and ``cache clear`` resets: this host's
    (``LocalCacheStatistics``) or, with ``state.url``, every host's on the shared server
    (``botopt.core.state._redis_store.RedisCacheStatistics``); the ``Workspace`` chooses."""

    def stored(self) -> tuple[Counts, Entries]: ...

    def check(self) -> None:
        """Raise a one-line CacheError when the store cannot be cleared now."""

    def clear(self, names: Sequence[str]) -> None:
        """Clear what lives beyond the local files (those ``clear_cache`` always clears)."""

    def hosts(self) -> dict[str, Counts]:
        """Each host's counts, where several share the store; empty for one host."""

    def check_reset(self) -> None:
        """Raise a one-line UsageError where the counters may not be reset from here."""

    @property
    def where(self) -> str:
        """What the figures cover, for people: a directory, or a server (no secret)."""

    @property
    def per_host(self) -> bool:
        """True where several hosts share the store, so ``hosts`` tells them apart."""


class LocalCacheStatistics:
    per_host = False

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def where(self) -> str:
        return str(self.root)

    def check_reset(self) -> None:
        pass

    def stored(self) -> tuple[Counts, Entries]:
        return _stored(self.root)

    def hosts(self) -> dict[str, Counts]:
        return {}

    def check(self) -> None:
        pass

    def clear(self, names: Sequence[str]) -> None:
        pass
