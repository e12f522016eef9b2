"""The connection to the shared state server (Redis or Valkey), for several hosts, one bot.

Chosen by ``state.url`` (``redis://``, ``rediss://`` with TLS, ``unix://``) and scoped by
``state.namespace``: every key botopt writes starts with ``<namespace>:``, so two
deployments can share one server. redis-py (the ``botopt[redis]`` extra) is imported here
and only here, on first use: with the local backend nothing of it is loaded.

Failure never fails a run: the first error on a connection marks the server *down* for the
rest of the process and logs one warning (the URL shown without its password); callers then
use their local fallback (no cache, the local queue). Nothing here invents a protocol: the
stores use streams, consumer groups, sorted sets, key expiry and short Lua scripts.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..base._http import read_by
from ..base._redact import printable, redact, redact_url
from ..errors import BotoptError, ConfigError, NotifyError

log = logging.getLogger("botopt.state")

CONNECT_TIMEOUT = 2.0  # seconds: an unreachable server must not stall a cron run
SOCKET_TIMEOUT = 5.0

_states: dict[tuple[str, str, float], SharedState] = {}

# KEYS: a stream. ARGV: group, this process's consumer, idle ms. Deletes the consumers that
# hold nothing and are this one or idle past the limit (their host left or died). In one
# script: a consumer that claims an entry between a check and DELCONSUMER would lose it.
_REAP = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers.err then return 0 end
local n = 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if tonumber(f['pending']) == 0 and
      (f['name'] == ARGV[2] or tonumber(f['idle']) > tonumber(ARGV[3])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
"""


class SharedState:
    """One server connection (made on first use) and the namespace's key names."""

    def __init__(self, url: str, namespace: str, claim_timeout: float = 60.0) -> None:
        self.url = url
        self.namespace = namespace
        self.claim_timeout = claim_timeout
        self.where = redact_url(url)
        self._client: Any = None
        self._errors: tuple[type[BaseException], ...] | None = None
        self._scripts: dict[str, Any] = {}
        self.down: str | None = None  # why the server was given up for this process
        self._checked = False
        self._warned = False

    # -- connection -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import redis
            except ImportError:
                raise ConfigError("state.url needs the redis client: pip install "
                                  "'botopt[redis]'", key="state.url") from None
            self._client = _client_for(redis, self.url, self.namespace)
        return self._client

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions that mean 'the server cannot be used now'."""
        if self._errors is None:
            import redis

            self._errors = (redis.RedisError, OSError)
        return self._errors

    def available(self, quiet: bool = False) -> bool:
        """Whether the server answers (one PING per process; a failure is remembered).
        ``quiet``: no warning (the caller raises its own one-line error)."""
        if self.down is not None:
            if not quiet:
                self._warn()
            return False
        if not self._checked:
            self._checked = True
            try:
                self.client.ping()
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001
                # Not only the client's errors: a server that is not Redis (an integer
                # where the handshake's map should be) made redis-py raise AttributeError,
                # and every command ended in an internal error instead of going local.
                self.lost(exc, quiet)
                return False
        return True

    def lost(self, exc: BaseException, quiet: bool = False) -> None:
        """The server failed: say so once, and use local state for the rest of the run."""
        if self.down is None:
            self.down = self.describe(exc)
        if not quiet:
            self._warn()

    def _warn(self) -> None:
        # Once per process, and only for a caller that carries on without the server: an
        # event spooled locally is no news, and a command that fails says it in its own line.
        if not self._warned:
            self._warned = True
            log.warning("shared state %s unreachable (%s); this run uses local state "
                        "(no shared cache; notifications queued here until it is back)",
                        self.where, self.down)

    def reset(self) -> None:
        """Try the server again (a long-running process, after an outage)."""
        self.down = None
        self._checked = False
        self._warned = False

    def describe(self, exc: BaseException) -> str:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # redis-py quotes a failed pipeline command with its arguments ("Command # 1 (SET
        # key b'...') of pipeline caused error: OOM ..."): a cached value's raw bytes in
        # a cron log. The server's own words are kept, the command's arguments are not.
        quoted = re.match(r"Command # \d+ \((\S+) .*\) of pipeline caused error: (.*)", text,
                          re.S)
        if quoted:
            text = f"{quoted.group(1)} in a pipeline: {quoted.group(2)}"
        return redact(f"{type(exc).__name__}: {printable(text)}"[:200])

    def check(self) -> None:
        """Raise a one-line NotifyError when the server cannot be used (commands whose whole
        job is the shared state: notify-flush, notify list); a ConfigError (exit 2) when it
        refused the URL's credentials or database, which only the setting can fix."""
        if not self.available(quiet=True):
            down = self.down or ""
            if down.startswith("AuthenticationError") or "WRONGPASS" in down or \
                    "NOAUTH" in down or "DB index is out of range" in down:
                raise ConfigError(f"shared state {self.where} refused state.url ({down}): "
                                  "check its user, password and database number",
                                  key="state.url")
            raise NotifyError(f"shared state {self.where} unreachable ({self.down}); "
                              "notifications kept", source=self.where, key="state.url")

    # -- names and scripts ----------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def script(self, name: str, source: str) -> Any:
        """A registered Lua script (EVALSHA, loaded again by redis-py after a restart)."""
        s = self._scripts.get(name)
        if s is None:
            s = self._scripts[name] = self.client.register_script(source)
        return s

    def reap(self, stream: str, group: str, mine: str) -> int:
        """Leave ``group`` of ``stream`` (when holding nothing) and delete the members idle
        for twice the claim timeout with nothing held: every run names a new consumer, and
        without this a per-minute cron adds thousands a day. Raises the client's errors."""
        idle_ms = int(self.claim_timeout * 2000)
        return int(self.script("reap", _REAP)(keys=[stream], args=[group, mine, idle_ms]))

    def server_time(self) -> float:
        """The server's clock (epoch seconds): every time compared across hosts is on it.
        Raises the client's errors."""
        sec, usec = self.client.time()
        return float(sec) + float(usec) / 1e6

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def shared_state(state: Any) -> SharedState | None:
    """The shared state of a ``StateConfig`` (one per url and namespace per process), or
    None for the local backend."""
    if not state.url:
        return None
    key = (state.url, state.namespace, state.claim_timeout)
    s = _states.get(key)
    if s is None:
        s = _states[key] = SharedState(state.url, state.namespace, state.claim_timeout)
    return s


def server_info(shared: SharedState) -> dict[str, Any]:
    """What ``botopt doctor`` reports: version, persistence. Raises the client's errors."""
    return describe_server(shared.client.info(section="server"),
                           shared.client.info(section="persistence"))


def describe_server(info: dict[str, Any], persistence: dict[str, Any]) -> dict[str, Any]:
    """Which server (Redis or Valkey) and version, from its INFO sections."""
    # Valkey also answers redis_version (the Redis release it is compatible with, 7.2.4):
    # its own version is valkey_version, and server_name says which it is.
    valkey = "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey"
    version = info.get("valkey_version") if valkey else info.get("redis_version")
    return {"version": str(version or info.get("redis_version") or "?"),
            "server": "valkey" if valkey else "redis",
            "aof": bool(int(persistence.get("aof_enabled", 0))),
            "rdb_changes": int(persistence.get("rdb_changes_since_last_save", 0))}


def _client_for(redis: Any, url: str, namespace: str) -> Any:
    """redis-py's client for ``url``, its URL's options checked before any command: redis-py
    parses ``?socket_timeout=abc`` (ValueError), takes ``?socket_timeout=1e309`` or ``-1``
    and fails at the first connection (OverflowError, ValueError), and hands an option it
    does not know (``?ssl_cert_reqs=x`` on redis://) to the connection (TypeError): each
    was an internal error in every command. A ConfigError naming state.url now (exit 2)."""
    import math

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT,
            health_check_interval=0, retry_on_timeout=False,
            client_name=f"botopt-{namespace}")
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        pool.connection_class = _with_deadline(pool.connection_class)
        for name in ("socket_timeout", "socket_connect_timeout", "health_check_interval"):
            value = kwargs.get(name)
            if value is not None and not (isinstance(value, (int, float))
                                          and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more")
        # one connection built (not connected, not the pool's: make_connection would count
        # it against max_connections) so that the options it takes are checked now
        pool.connection_class(**kwargs).disconnect()
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"state.url: an option the redis client refuses: "
                          f"{redact(str(exc))[:160]}", key="state.url") from None
    return client


# A command's whole reply must arrive within this many socket timeouts (15 s by default).
REPLY_TIMEOUTS = 3


def _with_deadline(cls: Any) -> Any:
    """``cls`` (redis-py's connection class for the URL: TCP, TLS or unix socket) with a
    deadline on each command's whole reply. The socket timeout bounds one read, not a
    reply: a server dripping a byte every few seconds kept a cron run waiting for minutes
    (its per-minute successors piling up behind the locks). Past the deadline a read raises
    the socket's own timeout, which redis-py turns into its TimeoutError: the connection is
    dropped and the server given up for the run, as for any outage."""
    import math
    import time

    class _Reads:
        """The connection's socket, its reads ending by the owner's deadline."""

        __slots__ = ("_sock", "_owner")

        def __init__(self, sock: Any, owner: Any) -> None:
            self._sock = sock
            self._owner = owner

        def _read(self, read: Any, *args: Any) -> Any:
            return read_by(self._sock, self._owner.botopt_deadline, read, *args)

        def recv(self, *args: Any) -> Any:
            return self._read(self._sock.recv, *args)

        def recv_into(self, *args: Any) -> Any:
            return self._read(self._sock.recv_into, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    class Deadlined(cls):  # type: ignore[misc]
        botopt_deadline = math.inf

        def _connect(self) -> Any:
            return _Reads(super()._connect(), self)

        def send_packed_command(self, command: Any, check_health: bool = True) -> Any:
            per = self.socket_timeout or SOCKET_TIMEOUT
            self.botopt_deadline = time.monotonic() + REPLY_TIMEOUTS * per
            return super().send_packed_command(command, check_health)

    Deadlined.__name__ = Deadlined.__qualname__ = f"Deadlined{cls.__name__}"
    return Deadlined


def shown(value: Any, width: int = 60) -> str:
    """A key or value read from the server, as a warning may quote it: bytes decoded with
    replacement (a damaged one may not be UTF-8), cut to ``width``."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:width]


def shared_data_error(exc: BaseException) -> BotoptError | None:
    """The one-line error for an exception raised while botopt read the shared server's
    replies: a key of the namespace holding data of another shape (a string where a stream
    is kept, a field that is not a number), or a server answering another protocol. None
    when ``exc`` was not raised there. Each reader checks what it knows to be fragile; this
    catches the rest at the command's boundary, so a damaged key is never an internal
    error (``--debug`` still shows the traceback)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/state/_redis" in f.filename.replace("\\", "/")]
    if not frames:
        return None
    at = frames[-1]
    module = at.filename.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    text = redact(" ".join(str(exc).split())[:120]) or type(exc).__name__
    return BotoptError(f"the shared state server (state.url) answered data botopt cannot "
                       f"read ({type(exc).__name__}: {text}; in {module}.{at.name}): a key of "
                       "its namespace holds data of another shape, or the server is not "
                       "Redis", key="state.url")
