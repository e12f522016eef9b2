"""Events on the shared server: one stream for every host, read by monitors in a group.

With ``state.url`` set, ``emit`` appends each event (with the host it came from) to
``<ns>:events`` (capped near ``MAX_EVENTS``) instead of the local log; when the server cannot
be reached it falls back to the local log, as before. The stream keeps the last
``MAX_EVENTS`` events for ``botopt history`` (every host's). Monitors on any host read the stream in
the consumer group ``monitors``: each event is handled by one monitor, acknowledged after its
alerts are queued (at-least-once, as locally), and events a dead monitor held are taken over
after ``state.claim_timeout``.

What must be seen whole is kept on the server, not in one monitor's memory: the last finished
run per host (``<ns>:hosts``) and the hosts already reported as stopped, so "host X stopped
reporting" is raised by one monitor, once, and "host X is back" likewise.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from ..base._codec import finite, json_loads
from ..base._vocab import EventType
from ._events import LocalEventLog, LogCursor, _line, events_dir, valid_event
from ._redis import SharedState

log = logging.getLogger("botopt.events")

GROUP = "monitors"
MAX_EVENTS = 100_000  # ~22 MiB of botopt's own ~200-byte events (docs/multi-host.md)
HOST = socket.gethostname()


def append(shared: SharedState, line: bytes) -> bool:
    """Add one event (a JSON line from ``_events._line``) with this host's id; False when
    the server cannot be used (the caller writes the local log)."""
    if shared.down is not None:
        return False
    try:
        shared.client.xadd(shared.key("events"), {"e": line.rstrip(b"\n")},
                           maxlen=MAX_EVENTS, approximate=True)
        return True
    except shared.errors as exc:
        shared.lost(exc, quiet=True)  # the event is spooled locally: nothing lost
        return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_time(eid: str) -> float:
    """When the server added a stream entry (epoch seconds, from its id)."""
    try:
        return int(eid.split("-", 1)[0]) / 1000.0
    except ValueError:
        return 0.0


SPOOL_NAME = "shared-spool.log"  # events recorded while the server was down, to move up


class SharedEventSink:
    """``EventSink`` of several hosts: each event, with the host it came from, goes to the
    shared stream. While the server cannot be used it goes to a spool file beside the local
    log, moved into the stream by the next event that reaches the server: the monitors
    (which read only the stream) then see the failures of an outage too."""

    def __init__(self, shared: SharedState, host: str, local: LocalEventLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.shared, self.host, self.local, self.clock = shared, host, local, clock

    def emit(self, event_type: EventType | str, **data: Any) -> None:
        try:
            line = _line(event_type, data, self.host, self.clock())
        except Exception as exc:  # never raises: the caller's work matters more
            log.debug("event %s not recorded: %s", event_type, exc)
            return
        if append(self.shared, line):
            self._move_spool()
            return
        try:
            directory = events_dir(self.local.root)
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(directory / SPOOL_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("event %s not recorded: %s", event_type, exc)

    def _move_spool(self) -> None:
        """Move the spooled events up (renamed first, so that an emitter still spooling
        starts a new file; an interrupted move is finished by the next one)."""
        directory = events_dir(self.local.root)
        spool, moving = directory / SPOOL_NAME, directory / (SPOOL_NAME + ".moving")
        try:
            if not moving.exists():
                if not spool.exists():
                    return
                os.replace(spool, moving)
            lines = [raw for raw in moving.read_bytes().splitlines() if raw.strip()]
        except OSError as exc:
            log.debug("spooled events not moved: %s", exc)
            return
        try:
            pipe = self.shared.client.pipeline(transaction=False)
            for raw in lines:
                pipe.xadd(self.shared.key("events"), {"e": raw}, maxlen=MAX_EVENTS,
                          approximate=True)
            pipe.execute()
        except self.shared.errors as exc:
            self.shared.lost(exc)
            return
        moving.unlink(missing_ok=True)
        log.info("%d event(s) recorded during an outage moved to %s", len(lines),
                 self.shared.where)


class SharedEvents:
    """A monitor's view of the shared event stream (raises the client's errors)."""

    def __init__(self, shared: SharedState, clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.r = shared.client
        # Every time compared across hosts is the server's: when it recorded an event (the
        # stream id) and its TIME. Times given and returned here are on this monitor's
        # clock, shifted by ``offset`` (this clock minus the server's, measured each round),
        # so a host whose clock is off neither looks stopped nor hides a stop.
        self.clock = clock
        self.offset = 0.0
        self.stream = shared.key("events")
        self.hosts = shared.key("hosts")
        self.alerted = shared.key("hosts", "stopped")
        self.consumer = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.unacked: list[str] = []
        self.errors = shared.errors
        self.describe = shared.describe
        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except shared.errors as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _sync(self) -> None:
        self.offset = self.clock() - self.shared.server_time()

    def read(self, cursor: LogCursor, count: int = 1000) -> list[dict[str, Any]]:
        """Events for this monitor: those a dead monitor held, then new ones, each timed
        when the server recorded it (on this monitor's clock). ``cursor`` is the local
        log's: the group keeps this stream's position on the server."""
        self._sync()
        taken = self.r.xautoclaim(self.stream, GROUP, self.consumer,
                                  int(self.shared.claim_timeout * 1000), start_id="0-0",
                                  count=count)
        entries = list(taken[1]) if isinstance(taken, (list, tuple)) and len(taken) > 1 else []
        got = self.r.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=count)
        if got:
            entries += got[0][1]
        out = []
        for eid, fields in entries:
            self.unacked.append(_text(eid))
            raw = fields.get(b"e") if isinstance(fields, dict) else None
            try:
                ev = json_loads(raw) if raw is not None else None
            except (ValueError, RecursionError):
                ev = None
            if valid_event(ev):  # as the local log: absurd or mistyped events are skipped
                ev = cast(dict[str, Any], ev)
                ev["data"] = finite(ev.get("data", {}))  # as the local log's reader does
                ev["t"] = entry_time(_text(eid)) + self.offset
                out.append(ev)
        return out

    def ack(self) -> None:
        if self.unacked:
            pipe = self.r.pipeline(transaction=True)
            pipe.xack(self.stream, GROUP, *self.unacked)
            pipe.execute()  # kept in the stream (capped) for ``botopt history``
            self.unacked = []

    def finished(self, host: str, t: float) -> bool:
        """Record a host's finished run; True when it had been reported stopped (this
        monitor then says it is back: only one monitor removes the mark)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(self.hosts, host)
        pipe.srem(self.alerted, host)
        old, was_alerted = pipe.execute()
        t -= self.offset  # the server's clock
        if old is None or float(old) < t:
            self.r.hset(self.hosts, host, repr(t))
        return bool(was_alerted)

    def last_finished(self) -> dict[str, float]:
        return {_text(k): float(v) + self.offset for k, v in self.r.hgetall(self.hosts).items()}

    def newly_stopped(self, now: float, after: float) -> list[tuple[str, float]]:
        """Hosts with no finished run for ``after`` seconds, not reported yet (each is
        claimed by one monitor with SADD)."""
        self._sync()
        out = []
        for host, t in sorted(self.last_finished().items()):
            if now - t >= after and self.r.sadd(self.alerted, host):
                out.append((host, t))
        return out

    def close(self) -> None:
        """Leave the group without losing anything (only when nothing is held), and delete
        the members long idle with nothing held (monitors that ended or died)."""
        try:
            self.shared.reap(self.stream, GROUP, self.consumer)
        except self.shared.errors as exc:
            log.debug("monitor group not tidied: %s", self.shared.describe(exc))


SEEN_WITHIN = 3600.0  # seconds: hosts that flushed this recently count as present


def check_hosts(shared: SharedState, host: str, instance: str, chat: str) -> list[str]:
    """Record this host in the namespace (``<ns>:hosts:seen``) and say what is wrong with
    the set: the same ``host_id`` used by two installs (the default host name collides in
    containers and cloned VMs, and one of them can then stop unnoticed), or hosts sending to
    different Telegram chats. Raises the client's errors."""
    import hashlib

    key = shared.key("hosts", "seen")
    now = shared.server_time()
    chat_tag = hashlib.blake2b(chat.encode(), digest_size=6).hexdigest()
    seen = {}
    for h, raw in shared.client.hgetall(key).items():
        try:
            rec = json_loads(raw)
            if now - float(rec["t"]) < SEEN_WITHIN:
                seen[_text(h)] = rec
        except (ValueError, TypeError, KeyError):
            continue  # a damaged record: rewritten below if it is ours
    shared.client.hset(key, host, json.dumps({"instance": instance, "chat": chat_tag,
                                              "t": now}))
    problems = []
    mine = seen.pop(host, None)
    if mine is not None and mine.get("instance") != instance:
        problems.append(f"state.host_id {host!r} is used by two installs in namespace "
                        f"{shared.namespace!r} (host names collide in containers and cloned "
                        "VMs): give each host its own state.host_id, or one can stop "
                        "unnoticed")
    other_chats = sorted(h for h, rec in seen.items() if rec.get("chat") != chat_tag)
    if other_chats:
        problems.append(f"hosts in namespace {shared.namespace!r} send to different "
                        f"Telegram chats ({', '.join(other_chats[:5])} not to this one's): "
                        "give every host the same telegram.chat_id")
    return problems


def recent_lines(shared: SharedState, since: float, limit: int | None = None) -> list[bytes]:
    """The stream's events since ``since`` (epoch s) as JSON lines, oldest first
    (``botopt history``; ``status`` reads the last ``limit``). Raises the client's errors."""
    start = f"{max(0, int(since * 1000))}-0"
    if limit is not None:
        return [f[b"e"] for _, f in reversed(shared.client.xrevrange(
            shared.key("events"), "+", start, count=limit)) if isinstance(f, dict) and b"e" in f]
    return [f[b"e"] for _, f in shared.client.xrange(shared.key("events"), start, "+")
            if isinstance(f, dict) and b"e" in f]
