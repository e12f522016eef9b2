"""The cache's figures and its clearing, for ``cache-stats`` / ``cache clear`` and the seed's
``get_cache_stats()``: above the ``Workspace``, which decides whose figures they are (this
host's, or every host's on the shared server), so the cache itself never asks for it."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CacheError, UsageError
from ._cache import (
    _ENTRIES,
    PIPELINE_CACHES,
    SEED_TTLS,
    CacheStatistics,
    DiskcacheStore,
    LocalCacheStatistics,
    _is_busy,
    _managers,
    _stored,
    is_corrupt,
    log,
)
from ._paths import check_readable_root, default_root
from ._workspace import Workspace

# The seed's documentation spelled the stage caches this way; both spellings stay readable.
SEED_NAMES = {"feature_cache": "features", "prediction_cache": "predictions",
              "regime_cache": "regime", "gate_cache": "gates"}


class CacheStats(dict[str, dict[str, Any]]):
    """``get_cache_stats()``'s answer: a plain dict of the current names (what iteration,
    ``len`` and JSON see) that also answers the seed's names (``['feature_cache']``), so
    neither spelling breaks and no cache is listed twice."""

    def __missing__(self, key: str) -> dict[str, Any]:
        if key in SEED_NAMES:
            return self[SEED_NAMES[key]]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(SEED_NAMES.get(key, key) if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def _statistics(root: Path, config: Any) -> CacheStatistics:
    if config is None:
        return LocalCacheStatistics(root)
    return Workspace(root, config).cache_statistics()


def get_cache_stats(root: Path | None = None,
                    ttls: Mapping[str, Any] | None = None, *,
                    config: Any = None) -> CacheStats:
    """Per cache (also under the seed's names, ``feature_cache`` ...): hits, misses,
    hit_rate, entries, ttl_seconds, size_bytes, time_saved_seconds.
    Reads SQLite directly: no polars or numpy import.

    ``ttls``: the effective life per cache (seconds, or (seconds, how) as from
    ``effective_lives``); other caches show their seed TTL. ``config``: with a ``state.url``,
    the figures of the shared server (every host's)."""
    if root is None:
        root = default_root()
    check_readable_root(root)
    mgr = _managers.get(root)
    if mgr is not None:
        mgr.flush_stats()
    counts, entries = _statistics(root, config).stored()
    names = list(PIPELINE_CACHES) + sorted((set(counts) | set(entries))
                                           - set(PIPELINE_CACHES))
    out = CacheStats()
    for name in names:
        hits, misses, saved = counts.get(name, (0, 0, 0.0))
        live, size = entries.get(name, (0, 0))
        life: Any = (ttls or {}).get(name, SEED_TTLS.get(name))
        how = None
        if isinstance(life, tuple):
            life, how = life
        total = hits + misses
        out[name] = {"hits": hits, "misses": misses,
                     "hit_rate": round(hits / total, 4) if total else 0.0,
                     "entries": live, "ttl_seconds": life, "life": how,
                     "size_bytes": size, "time_saved_seconds": round(saved, 6)}
    return out


def get_host_cache_stats(root: Path | None = None, *,
                         config: Any = None) -> dict[str, dict[str, dict[str, Any]]]:
    """With ``state.url``: per host (``state.host_id``), per cache, the hits, misses,
    hit_rate and time_saved_seconds that host counted (the totals are ``get_cache_stats``'s);
    empty for a local cache, or counts from hosts of a version that kept totals only."""
    if root is None:
        root = default_root()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for host, counts in sorted(_statistics(root, config).hosts().items()):
        out[host] = {}
        for name, (hits, misses, saved) in counts.items():
            total = hits + misses
            out[host][name] = {"hits": hits, "misses": misses,
                               "hit_rate": round(hits / total, 4) if total else 0.0,
                               "time_saved_seconds": round(saved, 6)}
    return out


def clear_cache(name: str | None = None, root: Path | None = None, *,
                config: Any = None) -> list[str]:
    """Delete the entries of one cache (or all) and their statistics. Returns the names.

    Works whatever state the database is in: one that cannot be read is removed whole
    (everything in it is a cache). ``config`` with a ``state.url``: the shared server's
    entries go too (every host's)."""
    if root is None:
        root = default_root()
    check_readable_root(root)  # a regular file in the way: a setting to fix, not "cleared"
    statistics = _statistics(root, config)
    statistics.check()
    counts, entries = statistics.stored()
    local = _stored(root)
    counts, entries = {**local[0], **counts}, {**local[1], **entries}
    names = list(PIPELINE_CACHES) + sorted((set(counts) | set(entries))
                                           - set(PIPELINE_CACHES))
    if name is not None and name not in names:
        raise UsageError(f"unknown cache {name!r}; known: {', '.join(names)}", key=name)
    targets = [name] if name else names
    statistics.clear(targets)
    mgr = _managers.pop(root, None)
    if mgr is not None:
        mgr.close()
    base = root / "cache"
    # Older versions' files: a statistics database, the SQLite store, per-cache diskcaches.
    for legacy in ("stats.db", "cache.db"):
        for suffix in ("", "-wal", "-shm"):
            old = base / (legacy + suffix)
            if old.exists():  # a read-only disk refuses even a missing file's unlink, and
                old.unlink()  # the error named a file that was never there
    import shutil

    for n in targets:
        if n != _ENTRIES and (base / n).is_dir():
            shutil.rmtree(base / n, ignore_errors=True)
    if name is None:
        # The carried feature states are derived data too: clearing everything takes them,
        # so the next run computes each series from its first row.
        shutil.rmtree(root / "carry", ignore_errors=True)
    store = DiskcacheStore(base / _ENTRIES, timeout=2.0)
    if not store.path.exists():
        return targets
    try:
        store.clear(targets)
    except sqlite3.Error as exc:
        if _is_busy(exc):
            raise CacheError(f"cache {store.path} is busy; try again",
                             file=str(store.path)) from exc
        if not is_corrupt(exc):
            # A write refused (a full or read-only disk) says nothing against the file:
            # removing it took every cache's entries with it, and said "unreadable".
            raise CacheError(f"cannot clear {', '.join(targets)} in {store.path}: {exc}",
                             file=str(store.path)) from exc
        log.warning("cache %s unreadable (%s); removed", store.path, exc)
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(store.path) + suffix).unlink(missing_ok=True)
    finally:
        store.close()
    return targets


def reset_cache_stats(root: Path | None = None, *, config: Any = None) -> None:
    """Start every cache's hit and miss counters again at zero, keeping the entries.
    On a shared server (``state.url``) the counters are every host's: refused there."""
    if root is None:
        root = default_root()
    _statistics(root, config).check_reset()
    mgr = _managers.get(root)
    if mgr is not None:
        mgr.flush_stats()
    store = DiskcacheStore(root / "cache" / _ENTRIES, timeout=2.0)
    if not store.path.exists():
        return
    try:
        store.reset_stats()
    except sqlite3.Error as exc:
        raise CacheError(f"cache {store.path}: cannot reset its statistics "
                         f"({'busy; try again' if _is_busy(exc) else exc})",
                         file=str(store.path)) from exc
    finally:
        store.close()
