"""Persistent named caches shared by cron runs: safe to overlap, never pickled, never wrong.

Keys carry everything a result depends on (function, code version, arguments, a content
fingerprint of the data), so a hit is always the answer an uncached run would give; the TTL
only bounds how long an entry lives.

Why not diskcache's defaults:

- Pickle. diskcache unpickles what it reads (CVE-2025-69872: whoever can write the cache
  directory runs code as the user). ``_SafeDisk`` stores bytes only and refuses to unpickle;
  values are typed JSON or Arrow IPC (``botopt.core._codec``).
- Statistics. ``statistics=True`` writes to SQLite on every read. We count hits and misses
  in memory and add them to a small stats database once per process.
- Failure. Lock contention, a corrupt database, a read-only or full disk must not fail a
  run: contention is a miss (recompute), corruption is moved aside and rebuilt, an unwritable
  disk turns caching off for the process with one warning.

Expiry is checked against an injectable clock (stored in each entry's header) so a replay of
a day of cron runs sees the same hits a real day would; diskcache's own expiry (wall clock)
only garbage-collects.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from botopt.core._paths import current_cache_dir, ensure_dir
from botopt.core.errors import CacheError, UsageError

log = logging.getLogger("botopt.cache")

T = TypeVar("T")
MISS: Any = object()  # a cached None is a value; only MISS means "not there"
NAMED_TTLS = {"features": 60.0, "predictions": 30.0, "regime": 300.0, "gates": 10.0}
_LOCK_TIMEOUT = 0.5  # seconds: a slow lock means recompute, not wait
_HEADER = struct.Struct("<cdd")  # codec tag, expire-at (clock seconds), compute seconds


class _Uncacheable(Exception):
    pass


def _safe_disk_class() -> type:
    import diskcache
    from diskcache.core import MODE_PICKLE

    class SafeDisk(diskcache.Disk):  # type: ignore[misc]
        """A diskcache Disk that stores str keys and bytes values only, and never
        unpickles: a planted pickle row reads as an unusable entry."""

        def put(self, key: Any) -> Any:
            if type(key) is not str:
                raise TypeError("botopt cache keys are str")
            return super().put(key)

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise _Uncacheable("refusing to unpickle a cache key")
            return super().get(key, raw)

        def store(self, value: Any, read: bool, key: Any = None) -> Any:
            if type(value) is not bytes:
                raise TypeError("botopt cache values are bytes")
            return super().store(value, read) if key is None else \
                super().store(value, read, key)

        def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
            if mode == MODE_PICKLE:
                raise _Uncacheable("refusing to unpickle a cache value")
            if filename is not None and (os.path.isabs(filename) or ".." in filename):
                raise _Uncacheable("cache entry points outside the cache")
            return super().fetch(mode, filename, value, read)

    return SafeDisk


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    saved: float = 0.0
    computed: float = 0.0


@dataclass
class CacheManager:
    """The caches under one root directory. ``enabled=False`` computes everything."""

    root: Path
    ttls: dict[str, float] = field(default_factory=lambda: dict(NAMED_TTLS))
    enabled: bool = True
    clock: Callable[[], float] = time.time
    _caches: dict[str, Any] = field(default_factory=dict, repr=False)
    _counts: dict[str, _Counters] = field(default_factory=dict, repr=False)
    _broken: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _registered: bool = field(default=False, repr=False)

    @classmethod
    def from_config(cls, config: Any, root: Path | None = None,
                    clock: Callable[[], float] = time.time) -> CacheManager:
        from botopt.core._paths import cache_dir_for

        cc = config.cache
        ttls = {"features": cc.features_ttl, "predictions": cc.predictions_ttl,
                "regime": cc.regime_ttl, "gates": cc.gates_ttl}
        return cls(root=root or cache_dir_for(config), ttls=ttls, enabled=cc.enabled,
                   clock=clock)

    # -- storage -------------------------------------------------------------------------

    def _cache(self, name: str) -> Any:
        cache = self._caches.get(name)
        if cache is not None:
            return cache
        import diskcache

        directory = ensure_dir(ensure_dir(self.root) / "cache") / name
        try:
            cache = self._open(diskcache, directory)
        except sqlite3.DatabaseError as exc:
            self._quarantine(directory, exc)
            cache = self._open(diskcache, directory)
        self._caches[name] = cache
        return cache

    @staticmethod
    def _open(diskcache: Any, directory: Path) -> Any:
        directory.mkdir(mode=0o700, exist_ok=True)
        return diskcache.Cache(str(directory), disk=_safe_disk_class(), timeout=_LOCK_TIMEOUT,
                               statistics=False, eviction_policy="least-recently-stored",
                               size_limit=2**30)

    def _quarantine(self, directory: Path, exc: BaseException) -> None:
        db = directory / "cache.db"
        aside = directory / f"cache.db.corrupt-{int(time.time())}"
        log.warning("cache %s is damaged (%s); moved aside to %s and rebuilt",
                    db, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    aside.name)
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(db) + suffix)
            if p.exists():
                os.replace(p, Path(str(aside) + suffix))
        self._caches.pop(directory.name, None)

    def _degrade(self, exc: BaseException) -> None:
        if not self._broken:
            log.warning("caching disabled for this run: %s", exc)
        self._broken = True

    @contextmanager
    def _guard(self, name: str) -> Iterator[None]:
        """Turn every storage failure into 'no cache' (never a failed run)."""
        import diskcache

        try:
            yield
        except diskcache.Timeout as exc:
            # diskcache reports every failed BEGIN as Timeout; the SQLite error it replaced
            # tells lock contention (recompute) from a read-only or full disk (degrade).
            cause = str(exc.__context__ or "")
            if "locked" in cause or "busy" in cause or not cause:
                log.debug("cache %s busy; recomputing", name)
            else:
                self._degrade(exc.__context__ or exc)
        except _Uncacheable as exc:
            log.debug("cache %s: %s; recomputing", name, exc)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                log.debug("cache %s busy; recomputing", name)
            else:  # read-only, disk full, I/O error
                self._degrade(exc)
        except sqlite3.DatabaseError as exc:
            cache = self._caches.pop(name, None)
            if cache is not None:
                cache.close()
                self._quarantine(Path(cache.directory), exc)
        except OSError as exc:
            self._degrade(exc)

    def _usable(self) -> bool:
        return self.enabled and not self._broken

    def get(self, name: str, key: str) -> Any:
        """The cached value or MISS (no statistics counted)."""
        if not self._usable():
            return MISS
        with self._guard(name):
            raw = self._cache(name).get(key, default=None)
            if raw is None:
                return MISS
            from botopt.core._codec import decode

            tag, expire_at, seconds = _HEADER.unpack_from(raw)
            if self.clock() >= expire_at:
                return MISS
            self._count(name).saved += seconds
            return decode(tag, raw[_HEADER.size:])
        return MISS

    def set(self, name: str, key: str, value: Any, seconds: float = 0.0,
            ttl: float | None = None) -> bool:
        if not self._usable():
            return False
        from botopt.core._codec import Unencodable, encode

        try:
            tag, body = encode(value)
        except Unencodable as exc:
            log.debug("cache %s: result not stored (%s)", name, exc)
            return False
        life = self.ttl(name) if ttl is None else ttl
        if life <= 0:
            return False
        raw = _HEADER.pack(tag, self.clock() + life, seconds) + body
        with self._guard(name):
            self._cache(name).set(key, raw, expire=life)
            return True
        return False

    def ttl(self, name: str) -> float:
        return self.ttls.get(name, 60.0)

    # -- statistics ------------------------------------------------------------------------

    def _count(self, name: str) -> _Counters:
        c = self._counts.get(name)
        if c is None:
            c = self._counts[name] = _Counters()
            if not self._registered:
                self._registered = True
                atexit.register(self.flush_stats)
        return c

    def get_or_compute(self, name: str, key: str, compute: Callable[[], T],
                       ttl: float | None = None) -> T:
        """The cached value for ``key``, or ``compute()`` stored for next time."""
        value = self.get(name, key)
        counters = self._count(name)
        if value is not MISS:
            counters.hits += 1
            log.debug("cache %s hit", name)
            return value  # type: ignore[no-any-return]
        counters.misses += 1
        start = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - start
        counters.computed += seconds
        self.set(name, key, value, seconds, ttl)
        return value

    def counters(self) -> dict[str, dict[str, float]]:
        """This process's counts so far (benchmarks read them; nothing is written)."""
        return {n: {"hits": c.hits, "misses": c.misses, "saved": c.saved}
                for n, c in self._counts.items()}

    def flush_stats(self) -> None:
        """Add this process's counts to the shared statistics, in one transaction."""
        pending = {n: c for n, c in self._counts.items() if c.hits or c.misses}
        if not pending or not self.enabled:
            return
        try:
            with _stats_db(self.root, create=True) as db:
                db.executemany(
                    "INSERT INTO stats(name, hits, misses, saved) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET hits = hits + excluded.hits, "
                    "misses = misses + excluded.misses, saved = saved + excluded.saved",
                    [(n, c.hits, c.misses, c.saved) for n, c in pending.items()])
            self._counts = {n: _Counters() for n in self._counts}
        except (sqlite3.Error, OSError, CacheError) as exc:
            log.debug("cache statistics not saved: %s", exc)

    def close(self) -> None:
        self.flush_stats()
        for cache in self._caches.values():
            cache.close()
        self._caches.clear()


@contextmanager
def _stats_db(root: Path, create: bool) -> Iterator[sqlite3.Connection]:
    path = root / "cache" / "stats.db"
    if not create and not path.exists():
        raise FileNotFoundError(path)
    if create:
        ensure_dir(ensure_dir(root) / "cache")
    db = sqlite3.connect(str(path), timeout=2.0, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, "
                   "hits INTEGER NOT NULL, misses INTEGER NOT NULL, saved REAL NOT NULL)")
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


# -- module-level API: decorators and statistics for the current cache directory ----------

_managers: dict[Path, CacheManager] = {}


def get_manager(root: Path | None = None) -> CacheManager:
    """The manager for ``root`` (default: the current cache directory), created once."""
    root = root or current_cache_dir()
    mgr = _managers.get(root)
    if mgr is None:
        mgr = _managers[root] = CacheManager(root=root)
    return mgr


def set_manager(manager: CacheManager) -> None:
    _managers[manager.root] = manager


def _code_tag(fn: Callable[..., Any]) -> str:
    """Changes whenever the function's code does, so an edited function never serves a
    result computed by its old body."""
    from importlib.metadata import version

    code = getattr(fn, "__code__", None)
    parts: list[str] = [version("botopt")]
    if code is not None:
        parts += [code.co_code.hex(), repr(code.co_consts), repr(code.co_names)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def cached(name: str, ttl_seconds: float | None = None) -> Callable[[Callable[..., T]],
                                                                     Callable[..., T]]:
    """Cache a function's results in the named cache (decorator).

    The cache directory is resolved at call time, so functions may be decorated at import.
    Arguments that cannot be fingerprinted, or results that cannot be stored without pickle,
    simply bypass the cache.
    """
    if not name or not name.replace("_", "").isalnum():
        raise UsageError(f"invalid cache name {name!r}: use letters, digits and _")

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        ident = f"{fn.__module__}.{fn.__qualname__}"
        tag = _code_tag(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            from botopt.core._codec import Unencodable, fingerprint

            mgr = get_manager()
            try:
                key = fingerprint([ident, tag, list(args), sorted(kwargs.items())])
            except Unencodable as exc:
                log.debug("cache %s: %s not cached (%s)", name, ident, exc)
                return fn(*args, **kwargs)
            ttl = ttl_seconds if ttl_seconds is not None else mgr.ttl(name)
            return mgr.get_or_compute(name, key, lambda: fn(*args, **kwargs), ttl)

        wrapper.cache_name = name  # type: ignore[attr-defined]
        return wrapper

    return decorate


def cache_features(ttl_seconds: float = 60) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("features", ttl_seconds)


def cache_predictions(ttl_seconds: float = 30) -> Callable[[Callable[..., T]],
                                                           Callable[..., T]]:
    return cached("predictions", ttl_seconds)


def cache_regime(ttl_seconds: float = 300) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("regime", ttl_seconds)


def cache_gate(ttl_seconds: float = 10) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return cached("gates", ttl_seconds)


def _cache_names(root: Path) -> list[str]:
    base = root / "cache"
    found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return list(NAMED_TTLS) + [n for n in found if n not in NAMED_TTLS]


def get_cache_stats(root: Path | None = None,
                    ttls: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per cache: hits, misses, hit_rate, entries, ttl_seconds, size_bytes,
    time_saved_seconds. Reads SQLite directly: no diskcache, polars or numpy import."""
    root = root or current_cache_dir()
    ttls = {**NAMED_TTLS, **(ttls or {})}
    get_manager(root).flush_stats()
    counts: dict[str, tuple[int, int, float]] = {}
    try:
        db = sqlite3.connect(f"file:{root / 'cache' / 'stats.db'}?mode=ro", uri=True,
                             timeout=2.0)
        try:
            counts = {r[0]: (r[1], r[2], r[3]) for r in
                      db.execute("SELECT name, hits, misses, saved FROM stats")}
        finally:
            db.close()
    except sqlite3.Error:
        pass  # no statistics yet
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    for name in _cache_names(root):
        hits, misses, saved = counts.get(name, (0, 0, 0.0))
        entries, size = 0, 0
        directory = root / "cache" / name
        if (directory / "cache.db").exists():
            try:
                db = sqlite3.connect(f"file:{directory / 'cache.db'}?mode=ro", uri=True,
                                     timeout=2.0)
                try:
                    entries = db.execute(
                        "SELECT COUNT(*) FROM Cache WHERE expire_time IS NULL "
                        "OR expire_time > ?", (now,)).fetchone()[0]
                finally:
                    db.close()
            except sqlite3.Error:
                pass
            size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        total = hits + misses
        out[name] = {"hits": hits, "misses": misses,
                     "hit_rate": round(hits / total, 4) if total else 0.0,
                     "entries": entries, "ttl_seconds": ttls.get(name),
                     "size_bytes": size, "time_saved_seconds": round(saved, 6)}
    return out


def clear_cache(name: str | None = None, root: Path | None = None) -> list[str]:
    """Delete the entries of one cache (or all) and their statistics. Returns the names."""
    import shutil

    root = root or current_cache_dir()
    names = _cache_names(root)
    if name is not None and name not in names:
        raise UsageError(f"unknown cache {name!r}; known: {', '.join(names)}")
    targets = [name] if name else names
    for n in targets:
        shutil.rmtree(root / "cache" / n, ignore_errors=True)
    if (root / "cache" / "stats.db").exists():
        with _stats_db(root, create=False) as db:
            db.executemany("DELETE FROM stats WHERE name = ?", [(n,) for n in targets])
    _managers.pop(root, None)
    return targets
