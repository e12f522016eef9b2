"""The one owner of botopt's state on disk.

A ``Workspace`` is built once from the Config. It owns the root directory (and the checks
that make it safe to trust, ``botopt.core.state._paths``) and hands out the stores; nothing else
knows a path:

=====================  ===========================================  =====================
store                  where (under the root)                       keyed by
=====================  ===========================================  =====================
cache                  ``cache/entries/`` (diskcache)               content keys
cooldowns              ``state/<scope>/cooldowns.json``             data scope
regime history         ``state/<scope>/regimes.json``               data scope
correlation state      ``correlation/<scope>/``                     data scope
notification queue     ``notify/``                                  (one per user)
events                 ``events/``                                  (one per user)
=====================  ===========================================  =====================

The *data scope* is what the state depends on: the data source and its directory (or the
exchange's API), and the candle interval. Switching ``--data-dir`` therefore never mixes
cooldowns, regime history or correlation sums of two data sets. (The symbol set is not part
of it on purpose: a BTCUSDT signal is the same signal whichever other symbols ran with it,
and a scope per set would notify it twice. The whole-run cache entry does carry the set.)

Stores are reached only through these methods, each returning an object with a small
interface: ``CacheStore`` and ``CacheStatistics`` (``_cache``), ``Cooldowns``,
``RegimeHistory``, ``NotificationQueue`` (``_queue``), ``EventSink`` (``_events``) and
``HostEvents`` (``_redis_events``). With ``state.url`` set, each lives on a shared
Redis/Valkey server instead (``botopt.core.state._redis_*``), falling back to the local one
while the server is down. This is the one place that decides local or shared: nothing else
knows which it has.

Config-less entry points (the cache decorators, ``emit``, ``batch_notify``) use the
*default root*: the one the CLI made current for this command (``set_default_root``), else
``$BOTOPT_CACHE_DIR``, else the platform's user cache directory (``~/.cache/botopt``).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base._fs import refused_write
from ._cache import CacheManager
from ._paths import default_root as default_root
from ._paths import ensure_dir, root_for
from ._paths import reset_default_root as reset_default_root
from ._paths import set_default_root as set_default_root
from ._regime_state import RegimeHistory, RegimeState

if TYPE_CHECKING:
    from ..base._config import Config
    from ._cache import CacheStatistics
    from ._cooldowns import Cooldowns
    from ._events import EventSink, HostEvents
    from ._queue import NotificationQueue
    from ._redis import SharedState

log = logging.getLogger("botopt.workspace")

_workspaces: dict[tuple[Any, ...], Workspace] = {}
# Roots whose disk refused a write this process (read-only, full): state that must be
# written somewhere goes to a private temporary directory instead, and is not kept.
_ephemeral: dict[Path, Path] = {}


def data_scope(config: Config) -> str:
    """A short, stable name for the data the state was built from."""
    data = config.data
    if data.source == "local":
        where = str(Path(data.data_dir or ".").expanduser().resolve())
    elif data.source == "binance":
        where = config.binance.api_url.rstrip("/")
    else:
        where = "bundled"
    digest = hashlib.blake2b(f"{data.source}|{where}|{data.interval}".encode(),
                             digest_size=6).hexdigest()
    return f"{data.source}-{data.interval}-{digest}"


class Workspace:
    """Owner of one root directory and every store under it."""

    def __init__(self, root: Path, config: Config | None = None, *,
                 clock: Callable[[], float] = time.time,
                 cache: CacheManager | None = None) -> None:
        self.root = Path(root)
        self.config = config
        self.clock = clock
        self._cache = cache

    # -- construction ---------------------------------------------------------------------

    @staticmethod
    def root_for(config: Config) -> Path:
        """The configured root directory (not created)."""
        return root_for(config)

    @classmethod
    def of(cls, config: Config) -> Workspace:
        """The workspace of ``config``, built once per process."""
        key = (cls.root_for(config), config.cache, config.data, config.binance.api_url,
               config.state)
        ws = _workspaces.get(key)
        if ws is None:
            ws = _workspaces[key] = cls(cls.root_for(config), config)
        return ws

    @classmethod
    def default(cls) -> Workspace:
        """The workspace of the config-less entry points."""
        return cls(default_root())

    # -- directories ----------------------------------------------------------------------

    def dir(self, *parts: str) -> Path:
        """A private directory under the root (created 0700 and checked)."""
        path = ensure_dir(self.root)
        for part in parts:
            path = ensure_dir(path / part)
        return path

    def _config(self, config: Config | None) -> Config:
        cfg = config or self.config
        if cfg is None:
            raise ValueError("this store is keyed by the data scope: give a Config")
        return cfg

    def state_dir(self, config: Config | None = None) -> Path:
        return self.dir("state", data_scope(self._config(config)))

    def correlation_dir(self, config: Config | None = None) -> Path:
        lost = _ephemeral.get(self.root)
        if lost is not None:
            return lost
        return self.dir("correlation", data_scope(self._config(config)))

    def queue_dir(self) -> Path:
        return self.dir("notify")

    def events_dir(self) -> Path:
        return self.dir("events")

    def disk_refused(self, exc: BaseException) -> Path:
        """After a write was refused (read-only or full disk): warn once, and give a
        private temporary directory for state that a run cannot do without."""
        lost = _ephemeral.get(self.root)
        if lost is None:
            refused_write(self.root, exc)
            import atexit
            import shutil
            import tempfile

            lost = _ephemeral[self.root] = Path(tempfile.mkdtemp(prefix="botopt-state-"))

            atexit.register(shutil.rmtree, lost, True)
        return lost

    # -- stores ---------------------------------------------------------------------------

    @property
    def shared(self) -> SharedState | None:
        """The shared state server of ``state.url`` (None: everything is local)."""
        if self.config is None or not self.config.state.url:
            return None
        from ._redis import shared_state

        return shared_state(self.config.state)

    def check_shared(self) -> None:
        """Raise a one-line NotifyError when ``state.url`` is set and its server is down:
        for figures the local fallback would make partial (every other host's left out)."""
        shared = self.shared
        if shared is not None:
            shared.check()

    @property
    def cache(self) -> CacheManager:
        if self._cache is None:
            if self.config is not None:
                self._cache = CacheManager.from_config(self.config, root=self.root,
                                                       clock=self.clock)
                shared = self.shared
                if shared is not None:
                    from ._redis_store import RedisCacheStore

                    self._cache._store = RedisCacheStore(shared, self.host_id())
            else:
                self._cache = CacheManager(root=self.root, clock=self.clock)
        return self._cache

    def cooldowns(self, config: Config | None = None) -> Cooldowns:
        from ._cooldowns import CooldownStore, keep_for

        keep = keep_for(self._config(config).gates.cooldown_seconds)
        local = CooldownStore(self.state_dir(config) / "cooldowns.json", keep=keep,
                              root=self.root)
        shared = self.shared
        if shared is not None and shared.available():
            from ._redis_store import RedisCooldownStore

            return RedisCooldownStore(shared, data_scope(self._config(config)),
                                      local, keep_seconds=keep.total_seconds())
        return local

    def regimes(self, config: Config | None = None) -> RegimeHistory:
        local = RegimeState(self.state_dir(config) / "regimes.json", root=self.root)
        shared = self.shared
        if shared is not None and shared.available():
            from ._redis_store import RedisRegimeState

            return RedisRegimeState(shared, data_scope(self._config(config)),
                                    local)
        return local

    def queue(self, create: bool = True) -> NotificationQueue:
        """The notification queue (with ``state.url``: every host's, on the server).
        ``create`` False: only to read, so its directory is not made (a read-only cache
        that never queued anything has an empty queue, not an error)."""
        from ._queue import LocalQueue

        local = LocalQueue(self.queue_dir() if create else self.root / "notify")
        shared = self.shared
        if shared is None:
            return local
        from ._redis_queue import SharedQueue

        return SharedQueue(shared, local, self.host_id(), self.instance_id())

    def events(self) -> EventSink:
        """Where this process's events go (with ``state.url``: the shared stream, each with
        its host). Nothing is connected until the first event."""
        from ._events import LocalEventLog

        local = LocalEventLog(self.root)
        shared = self.shared
        if shared is None:
            return local
        from ._redis_events import SharedEventSink

        return SharedEventSink(shared, self.host_id(), local, self.clock)

    def host_id(self) -> str:
        """This host's name among several (``state.host_id``, default: the host name)."""
        return (self.config.state.host_id if self.config is not None else "") or \
            socket.gethostname()

    def instance_id(self) -> str:
        """A random id of this install (kept under the root), which tells two installs that
        share a host_id apart."""
        path = self.root / "state" / "instance-id"
        try:
            return path.read_text(encoding="ascii").strip()[:64]
        except (OSError, UnicodeError):
            pass
        ident = uuid.uuid4().hex
        try:
            self.dir("state")
            path.write_text(ident, encoding="ascii")
        except OSError:  # a read-only root: stable for this root at least
            ident = hashlib.blake2b(str(self.root).encode(), digest_size=16).hexdigest()
        return ident

    def host_events(self, clock: Callable[[], float] = time.time) -> HostEvents:
        """The monitor's events: with ``state.url`` (and the server up), the shared stream
        read in the monitors' group; without, this host's log."""
        from ._events import LocalHostEvents

        local = LocalHostEvents(self.events_dir())
        shared = self.shared
        if shared is None or not shared.available():
            return local
        from ._redis_events import SharedEvents

        try:
            return SharedEvents(shared, clock)
        except shared.errors as exc:
            shared.lost(exc)
            return local

    def event_lines(self, since: float, limit: int | None = None) -> list[list[bytes]]:
        """The recorded events' lines (``botopt history``, ``status``): the local logs',
        then (with ``state.url``) the shared stream's since ``since`` (its last ``limit``)."""
        from ._events import read_tail

        out = [read_tail(path, since) for path in self.local_event_logs()]
        return out + self.shared_event_lines(since, limit)

    def local_event_logs(self) -> list[Path]:
        """The local event logs, the older first (each read line by line by its reader)."""
        from ._events import LOG_NAME

        directory = self.root / "events"
        return [directory / (LOG_NAME + ".1"), directory / LOG_NAME]

    def shared_event_lines(self, since: float, limit: int | None = None) -> list[list[bytes]]:
        """With ``state.url``: the shared stream's lines since ``since`` (its last
        ``limit``); else none."""
        out: list[list[bytes]] = []
        shared = self.shared
        if shared is not None and shared.available():
            from ._redis_events import recent_lines

            try:
                out.append(recent_lines(shared, since, limit))
            except shared.errors as exc:
                shared.lost(exc)
        return out

    def cache_statistics(self) -> CacheStatistics:
        """The cache's figures (with ``state.url``: every host's, on the server)."""
        from ._cache import LocalCacheStatistics

        local = LocalCacheStatistics(self.root)
        shared = self.shared
        if shared is None:
            return local
        from ._redis_store import RedisCacheStatistics

        return RedisCacheStatistics(shared, local)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def state_dir(config: Config, name: str) -> Path:
    """A private subdirectory of ``config``'s workspace. Kept for callers written before the
    ``Workspace`` (which owns every path): "correlation" gets the data-scoped directory."""
    ws = Workspace.of(config)
    return ws.correlation_dir() if name == "correlation" else ws.dir(name)


