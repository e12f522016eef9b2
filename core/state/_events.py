"""Events: what commands report about themselves, for the activity monitor.

``emit`` appends one JSON line to ``events/events.log`` in the cache directory (a single
``O_APPEND`` write, so concurrent emitters never interleave) and sends a one-byte datagram to
the monitor's socket to wake it. It never blocks and never raises: an unwritable disk or no
monitor costs the caller a debug line, nothing more. Kept free of heavy imports on purpose:
every command calls it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..base._codec import finite, json_loads
from ..base._redact import redact
from ..base._vocab import EventType
from ._paths import default_root

log = logging.getLogger("botopt.events")
LOG_NAME = "events.log"
_MAX_LINE = 3500  # below PIPE_BUF-sized writes, which Linux appends atomically
# Routine events the monitor reads when it next wakes, without being woken for them: they only
# move a deadline (a finished run postpones "stalled"), so waking on each would cost a wake-up
# per cron run for nothing. Everything else (failures, signals, dead letters) wakes it at once.
QUIET_EVENTS = frozenset({EventType.RUN_STARTED, EventType.RUN_FINISHED, EventType.NOTIFY_FLUSHED})


def events_dir(root: Path | None = None) -> Path:
    return (root or default_root()) / "events"


def socket_path(directory: Path) -> Path:
    """The monitor's wake-up socket. Unix socket paths are limited to ~107 bytes, so a deep
    cache directory gets a short, stable path in the temp directory instead."""
    p = directory / "monitor.sock"
    if len(str(p)) < 100:
        return p
    digest = hashlib.blake2b(str(directory).encode(), digest_size=6).hexdigest()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path("/tmp") / f"botopt-{uid}-{digest}.sock"


class EventSink(Protocol):
    """Where a command's events go: this host's log (``LocalEventLog``) or, with
    ``state.url``, the shared server's stream (``botopt.core.state._redis_events``); the
    ``Workspace`` hands out the one that applies."""

    def emit(self, event_type: EventType | str, **data: Any) -> None:
        """Record an event and wake a running monitor. Never blocks, never raises."""


class LogCursor(Protocol):
    """Where a reader of the local log stands (the monitor's saved state): the file it read
    (its inode, so a rotated log is read from its start), the byte after the last complete
    event, and how many damaged lines were skipped so far."""

    inode: int
    offset: int
    events_damaged: int


class HostEvents(Protocol):
    """The monitor's view of the events (``Workspace.host_events``): this host's log, or with
    ``state.url`` the shared stream read in the monitors' group, and which hosts stopped
    reporting. The Workspace decides which; the monitor never asks."""

    errors: tuple[type[BaseException], ...]  # what its calls raise when the store fails

    def describe(self, exc: BaseException) -> str: ...

    def read(self, cursor: LogCursor) -> list[dict[str, Any]]:
        """The events to handle since the last read. The local log keeps its position in
        ``cursor`` (the monitor's saved state); the shared stream in its consumer group."""

    def ack(self) -> None: ...

    def finished(self, host: str, t: float) -> bool:
        """Record a host's finished run; True when it had been reported stopped."""

    def newly_stopped(self, now: float, after: float) -> list[tuple[str, float]]: ...

    def last_finished(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class LocalHostEvents:
    """One host: every event is in this host's log, and there is no other host to watch."""

    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def describe(self, exc: BaseException) -> str:
        return type(exc).__name__

    def read(self, cursor: LogCursor) -> list[dict[str, Any]]:
        try:
            inode = (self.directory / LOG_NAME).stat().st_ino
        except FileNotFoundError:
            return []
        if inode != cursor.inode:  # rotated since the last read: the new file from its start
            cursor.inode, cursor.offset = inode, 0
        events, cursor.offset, damaged = read_events_counted(self.directory, cursor.offset)
        cursor.events_damaged += damaged
        return events

    def ack(self) -> None:
        pass

    def finished(self, host: str, t: float) -> bool:
        return False

    def newly_stopped(self, now: float, after: float) -> list[tuple[str, float]]:
        return []

    def last_finished(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


def _line(event_type: EventType | str, data: dict[str, Any], host: str | None = None,
          t: float | None = None) -> bytes:
    record: dict[str, Any] = {"id": uuid.uuid4().hex,
                              "t": time.time() if t is None else t, "type": event_type,
              "pid": os.getpid(), "data": data}
    if host is not None:
        record["host"] = host
    try:
        raw = json.dumps(record, default=str, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN or inf in the data: written as text, so every reader can
        record["data"] = data = finite(data)
        raw = json.dumps(record, default=str, separators=(",", ":"))
    if len(raw) > _MAX_LINE:
        short: dict[str, Any] = {k: (str(v)[:200] if isinstance(v, str) else v)
                                 for k, v in data.items()
                                 if len(json.dumps(v, default=str)) < 400}
        short["truncated"] = True
        record["data"] = short
        raw = json.dumps(record, default=str, separators=(",", ":"))[:_MAX_LINE]
        if not raw.endswith("}"):
            raw = json.dumps({**record, "data": {"truncated": True}}, separators=(",", ":"))
    return (raw + "\n").encode()


class LocalEventLog:
    """The events log of one root directory (None: the default root, looked up per event)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def emit(self, event_type: EventType | str, **data: Any) -> None:
        self.write(event_type, data, None)

    def write(self, event_type: EventType | str, data: dict[str, Any],
              host: str | None) -> None:
        try:
            directory = events_dir(self.root)
            if not directory.is_dir():
                # mkdir(parents=True) would give the cache directory itself the default mode.
                directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(directory / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, _line(event_type, data, host))
            finally:
                os.close(fd)
        except Exception as exc:  # the caller's work matters more than its log line
            log.debug("event %s not recorded: %s", event_type, exc)
            return
        if event_type in QUIET_EVENTS or data.get("queued"):
            return  # nothing for the monitor to do at once (botopt queued it already)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.sendto(b"!", str(socket_path(directory)))
            finally:
                sock.close()
        except OSError:
            pass  # no monitor listening (or its buffer is full: it will read the log anyway)


def emit(event_type: EventType | str, *, _root: Path | None = None, **data: Any) -> None:
    """Record an event in the log of ``_root`` (default: the default root) and wake a
    running monitor. Never blocks, never raises. (With ``state.url``, use
    ``Workspace.of(config).events().emit``: every host's events go to the server.)

    botopt names its own events with ``EventType``; a bot may record its own types too."""
    LocalEventLog(_root).emit(event_type, **data)


def is_interactive() -> bool:
    """A person at a terminal started this run (stdin is a tty; cron's never is)."""
    import sys

    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


@contextmanager
def run_events(command: str, root: Path | None = None,
               enabled: bool = True, sink: EventSink | None = None,
               interactive: bool | None = None) -> Iterator[dict[str, Any]]:
    """Emit run_started, then run_finished (duration, counts) or run_failed (error).

    ``interactive`` (default: stdin is a terminal) marks a run by hand: its failure is told
    to the person at the prompt, and the monitor does not forward it as an alert.

    The body may put counts into the yielded dict. ``enabled=False`` (experiments: replays,
    sample data) emits nothing: the monitor watches the live bot, and a hand-made run must
    neither look like a heartbeat nor raise an alert.
    """
    counts: dict[str, Any] = {}
    send = (sink or LocalEventLog(root)).emit
    if not enabled:
        yield counts
        return
    start = time.monotonic()
    by_hand = {"interactive": True} if (
        is_interactive() if interactive is None else interactive) else {}
    send(EventType.RUN_STARTED, command=command, **by_hand)
    try:
        yield counts
    except BaseException as exc:
        send(EventType.RUN_FAILED, command=command,
             duration_s=round(time.monotonic() - start, 4),
             error=redact(f"{type(exc).__name__}: {exc}")[:500], **by_hand)
        raise
    send(EventType.RUN_FINISHED, command=command,
         duration_s=round(time.monotonic() - start, 4), **counts, **by_hand)


# An event's time must be a moment botopt can have run at: a line with t = 1e300, -1e300 or
# a year-5138 time (valid JSON, absurd) is damaged, not shown as "FAILED at 1e+300".
T_MIN = 946_684_800.0  # 2000-01-01
T_MAX = 4_102_444_800.0  # 2100-01-01
# Fields botopt's readers show, and the types they must have when present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"command": (str,), "error": (str,),
                                             "duration_s": (int, float)}


def valid_event(ev: Any) -> bool:
    """Whether a decoded log line is an event botopt wrote: an object with a str type, a
    finite time between T_MIN and T_MAX, an object as data, and the shown fields typed."""
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
        return False
    t, data = ev.get("t"), ev.get("data", {})
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not isinstance(data, dict):
        return False
    try:
        if not T_MIN <= float(t) <= T_MAX:  # NaN fails too
            return False
    except OverflowError:  # an int too big for a float
        return False
    for key, types in _FIELD_TYPES.items():
        v = data.get(key)
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            return False
    d = data.get("duration_s")
    return d is None or (math.isfinite(d) and 0 <= d < 1e9)


def parse_event_lines(chunk: bytes) -> tuple[list[dict[str, Any]], int]:
    """The events in complete lines of ``chunk`` and how many lines were damaged (not JSON,
    not an object, no type or time): those are skipped, never fatal."""
    out: list[dict[str, Any]] = []
    damaged = 0
    for raw in chunk.splitlines():
        if not raw.strip():
            continue
        try:
            ev = json_loads(raw)
        except (ValueError, RecursionError):
            ev = None
        if valid_event(ev):
            if b"NaN" in raw or b"Infinity" in raw:
                # written by an older botopt (or a hand): its NaN, read as a float, could
                # not be queued or printed as JSON, and held every later alert back
                ev["data"] = finite(ev.get("data", {}))
            ev.setdefault("data", {})
            out.append(ev)
        else:
            damaged += 1
    return out, damaged


def read_events_counted(directory: Path, offset: int = 0
                        ) -> tuple[list[dict[str, Any]], int, int]:
    """Complete events from byte ``offset``: (events, offset after the last, damaged lines)."""
    path = directory / LOG_NAME
    try:
        with open(path, "rb") as fh:
            if offset and not continues_at(fh, offset):
                # Truncated in place (logrotate's copytruncate) and written again: the file
                # is new from its start. Read from an offset past its end, every new event
                # was missed until the log grew back; read from mid-line, one was damaged.
                log.warning("%s was truncated; reading it from its start", path)
                offset = 0
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], 0, 0
    end = chunk.rfind(b"\n") + 1  # a line still being written is left for next time
    events, damaged = parse_event_lines(chunk[:end])
    if damaged:
        log.warning("%s: skipped %d damaged line(s)", path, damaged)
    return events, offset + end, damaged


def continues_at(fh: Any, offset: int) -> bool:
    """Whether the open log still holds what was read up to ``offset``: that many bytes at
    least, the last of them a line's end."""
    if os.fstat(fh.fileno()).st_size < offset:
        return False
    fh.seek(offset - 1)
    return bool(fh.read(1) == b"\n")


def read_events(directory: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte ``offset``; returns them and the offset after the last."""
    events, offset, _ = read_events_counted(directory, offset)
    return events, offset


_TIME = re.compile(rb'"t":\s*(-?[0-9][0-9.eE+-]*)')
_BISECT_SLACK = 600.0  # seconds: lines from concurrent writers are only roughly in time order


def _line_time(line: bytes) -> float | None:
    m = _TIME.search(line, 0, 200)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def first_event_time(path: Path) -> float | None:
    """The time of a log's first event (when the log was started; a damaged line or two at
    its start are skipped), None when it has none. Not the file's ctime: every append
    changes that, so under a per-minute cron it is always about now."""
    try:
        with open(path, "rb") as fh:
            for _ in range(10):
                line = fh.readline(_MAX_LINE + 1)
                if not line:
                    break
                t = _line_time(line)
                if t is not None and T_MIN <= t <= T_MAX:
                    return t
    except OSError:
        pass
    return None


def read_tail(path: Path, since: float) -> list[bytes]:
    """The lines of an event log from about ``since`` on (all from ``since`` on, and some
    before): a bisection over the file's bytes finds where, so that a run every minute
    (``botopt metrics``) reads the last minutes, not the whole 10 MB log."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return []
    with fh:
        lo, hi = 0, fh.seek(0, 2)
        target = since - _BISECT_SLACK
        while hi - lo > 65536:
            mid = (lo + hi) // 2
            fh.seek(mid)
            fh.readline()  # the rest of the line mid falls in
            t = None
            while t is None:
                line = fh.readline()
                if not line or fh.tell() > hi:
                    break
                t = _line_time(line)
            if t is None or t >= target:
                hi = mid
            else:
                lo = mid
        fh.seek(lo)
        if lo:
            fh.readline()  # a partial line, older than ``target``
        return fh.read().splitlines()
