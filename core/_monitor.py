"""The activity monitor: reacts to events at once, checks time-based conditions every 30 s.

The long-running monitor sleeps in ``select`` on its Unix datagram socket until an event
arrives or the next check is due, whichever comes first: no polling. ``once=True`` handles
what is pending and the due checks, then returns (for cron).

Only one monitor runs at a time (a file lock). Its position in the event log and the state of
its checks are saved atomically after each round; a monitor killed between handling and saving
handles those events again on restart (at-least-once: a duplicated alert beats a lost one).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botopt.core._config import Config, MonitorConfig
from botopt.core._events import LOG_NAME, read_events, socket_path
from botopt.core._fs import atomic_write_json, read_json
from botopt.core._workspace import Workspace

log = logging.getLogger("botopt.monitor")
STATE = "monitor_state.json"
FAILURE_WINDOW = 600.0


@dataclass
class MonitorResult:
    events_handled: int = 0
    checks_run: int = 0
    wakeups: int = 0
    notifications_queued: int = 0
    busy: bool = False  # another monitor holds the lock


@dataclass
class _State:
    offset: int = 0
    inode: int = 0
    last_finished: float | None = None
    stale_alerted: bool = False
    stuck_alerted: bool = False
    failures: list[list[Any]] = field(default_factory=list)  # [time, command, error]
    failures_reported: int = 0
    last_check: float = 0.0

    @classmethod
    def load(cls, path: Path) -> _State:
        try:
            raw = read_json(path, {}) or {}
            return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            log.warning("monitor state %s is damaged; starting afresh", path)
            return cls()

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.__dict__)


class Monitor:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time,
                 enqueue: Callable[[list[dict[str, Any]]], Any] | None = None) -> None:
        self.config = config
        self.mc: MonitorConfig = config.monitor
        self.dir = Workspace.of(config).events_dir()
        self.clock = clock
        self.state_path = self.dir / STATE
        self.state = _State.load(self.state_path)
        self.result = MonitorResult()
        self._outbox: list[dict[str, Any]] = []
        self._enqueue = enqueue or self._enqueue_real
        if self.state.last_finished is None:
            self.state.last_finished = clock()  # a fresh monitor gives the bot a full period
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "run_failed": self._on_failure,
            "notify_failed": self._on_failure,
            "run_finished": self._on_finished,
            "regime_changed": self._on_regime_changed,
            "signal_passed": self._on_signal,
        }

    def _enqueue_real(self, items: list[dict[str, Any]]) -> Any:
        from botopt.core._notify import enqueue

        return enqueue(self.config, items)

    def _alert(self, message: str, **extra: Any) -> None:
        self._outbox.append({"type": "alert", "data": {"message": message, **extra}})

    # -- handlers ------------------------------------------------------------------------

    def _on_failure(self, ev: dict[str, Any]) -> None:
        data = ev.get("data", {})
        what = data.get("command") or ev["type"].replace("_", " ")
        self.state.failures.append([ev["t"], what, str(data.get("error", ""))[:300]])
        recent = [f for f in self.state.failures if f[0] > ev["t"] - FAILURE_WINDOW]
        self.state.failures = recent
        if len(recent) == 1 or self.state.failures_reported == 0:
            # The first failure in a window is reported at once; the rest are summarised
            # by the next periodic check.
            self._alert(f"{what} failed: {data.get('error', 'unknown error')}")
            self.state.failures_reported = len(recent)

    def _on_finished(self, ev: dict[str, Any]) -> None:
        self.state.last_finished = max(self.state.last_finished or 0.0, ev["t"])
        if self.state.stale_alerted:
            self._alert("bot recovered: runs are finishing again")
        self.state.stale_alerted = False

    def _on_regime_changed(self, ev: dict[str, Any]) -> None:
        data = ev.get("data", {})
        if not data.get("queued"):  # botopt signals queues its own; others rely on us
            self._outbox.append({"type": "regime_change", "data": {
                k: data.get(k) for k in ("symbol", "old", "new")}})

    def _on_signal(self, ev: dict[str, Any]) -> None:
        data = ev.get("data", {})
        if not data.get("queued"):
            self._outbox.append({"type": "signal", "data": {
                k: v for k, v in data.items() if k != "queued"}})

    # -- rounds ---------------------------------------------------------------------------

    def handle_pending(self) -> int:
        log_path = self.dir / LOG_NAME
        try:
            inode = log_path.stat().st_ino
        except FileNotFoundError:
            return 0
        if inode != self.state.inode:
            self.state.inode, self.state.offset = inode, 0
        events, offset = read_events(self.dir, self.state.offset)
        for ev in events:
            handler = self.handlers.get(ev.get("type", ""))
            if handler is not None:
                try:
                    handler(ev)
                except Exception as exc:  # one odd event must not stop the monitor
                    log.warning("event %s not handled: %s", ev.get("type"), exc)
        self.state.offset = offset
        self.result.events_handled += len(events)
        return len(events)

    def run_checks(self) -> None:
        now = self.clock()
        self.state.last_check = now
        self.result.checks_run += 1
        last = self.state.last_finished or now
        if now - last >= self.mc.stale_after and not self.state.stale_alerted:
            self._alert(f"bot stalled: no run finished for {int((now - last) // 60)} min")
            self.state.stale_alerted = True
        try:
            from botopt.core._notify import queue_stats

            q = queue_stats(self.config)
            oldest = q["oldest_created_at"]
            if oldest is not None and now - oldest >= self.mc.stuck_after:
                if not self.state.stuck_alerted:
                    self._alert(f"notifications stuck: {q['pending']} queued, oldest "
                                f"{int((now - oldest) // 60)} min old"
                                + (f"; last error: {q['last_error']}" if q["last_error"]
                                   else ""))
                    self.state.stuck_alerted = True
            else:
                self.state.stuck_alerted = False
        except Exception as exc:
            log.debug("queue check skipped: %s", exc)
        recent = [f for f in self.state.failures if f[0] > now - FAILURE_WINDOW]
        self.state.failures = recent
        unreported = len(recent) - self.state.failures_reported
        if unreported > 0:
            last_f = recent[-1]
            self._alert(f"{unreported} more failure(s) in the last "
                        f"{int(FAILURE_WINDOW // 60)} min; last: {last_f[1]}: {last_f[2]}")
        self.state.failures_reported = len(recent)

    def checks_due(self) -> bool:
        return self.clock() - self.state.last_check >= self.mc.check_interval

    def commit(self) -> None:
        if self._outbox:
            self._enqueue(self._outbox)
            self.result.notifications_queued += len(self._outbox)
            self._outbox = []
        self.state.save(self.state_path)
        self._prune()

    def _prune(self) -> None:
        """Rotate the log past its size or age bound. Emitters append by path, so renaming
        the file is safe: whatever lands in the old file is read before it is deleted."""
        path = self.dir / LOG_NAME
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        old = self.dir / (LOG_NAME + ".1")
        too_old = st.st_size and (self.clock() - os.path.getctime(path) > self.mc.event_max_age)
        if st.st_size < self.mc.event_max_bytes and not too_old:
            return
        if self.state.offset < st.st_size:
            return  # handle everything first
        old.unlink(missing_ok=True)
        os.replace(path, old)
        self.state.offset, self.state.inode = 0, 0
        self.state.save(self.state_path)


def _lock(directory: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(directory / "monitor.lock"))


def run_monitor(config: Config, *, once: bool = False, clock: Callable[[], float] = time.time,
                stop_event: threading.Event | None = None,
                enqueue: Callable[[list[dict[str, Any]]], Any] | None = None,
                ready: threading.Event | None = None) -> MonitorResult:
    from filelock import Timeout

    mon = Monitor(config, clock, enqueue)
    lock = _lock(mon.dir)
    try:
        lock.acquire(timeout=0 if once else 1)
    except Timeout:
        mon.result.busy = True
        return mon.result
    try:
        if once:
            mon.handle_pending()
            if mon.checks_due():
                mon.run_checks()
            mon.commit()
            return mon.result
        return _serve(mon, stop_event, ready)
    finally:
        lock.release()


def _serve(mon: Monitor, external_stop: threading.Event | None,
           ready: threading.Event | None) -> MonitorResult:
    path = socket_path(mon.dir)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.setblocking(False)
    stop = external_stop or threading.Event()
    wake_r, wake_w = os.pipe()  # the signal handler's way to interrupt select at once
    os.set_blocking(wake_w, False)

    def on_signal(*_: Any) -> None:
        stop.set()
        try:
            os.write(wake_w, b"x")
        except OSError:
            pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    # An Event set from another thread cannot interrupt select: look at it every second.
    cap = 1.0 if external_stop is not None else None
    try:
        mon.handle_pending()
        mon.run_checks()
        mon.commit()
        if ready is not None:
            ready.set()
        while not stop.is_set():
            timeout = max(0.0, mon.state.last_check + mon.mc.check_interval - mon.clock())
            readable, _, _ = select.select([sock.fileno(), wake_r], [], [],
                                           timeout if cap is None else min(timeout, cap))
            if stop.is_set():
                break
            if sock.fileno() in readable:
                mon.result.wakeups += 1
                try:
                    while True:
                        sock.recv(64)
                except BlockingIOError:
                    pass
                mon.handle_pending()
                mon.commit()
            if mon.checks_due():
                mon.result.wakeups += 0 if readable else 1
                mon.handle_pending()
                mon.run_checks()
                mon.commit()
        return mon.result
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        os.close(wake_r)
        os.close(wake_w)
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def monitor_running(config: Config) -> bool:
    from filelock import Timeout

    lock = _lock(Workspace.of(config).events_dir())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def get_status(config: Config, now: float | None = None) -> dict[str, Any]:
    """Last run, runs and failures in the last hour, pending events, queue, monitor."""
    now = time.time() if now is None else now
    directory = Workspace.of(config).events_dir()
    state = _State.load(directory / STATE)
    events: list[dict[str, Any]] = []
    for name in (LOG_NAME + ".1", LOG_NAME):
        if (directory / name).exists():
            import json

            for raw in (directory / name).read_bytes().splitlines():
                try:
                    events.append(json.loads(raw))
                except ValueError:
                    continue
    runs = [e for e in events if e.get("type") in ("run_finished", "run_failed")]
    last = runs[-1] if runs else None
    hour = [e for e in runs if e["t"] > now - 3600]
    pending = 0
    try:
        if (directory / LOG_NAME).stat().st_ino == state.inode:
            pending = len(read_events(directory, state.offset)[0])
        else:
            pending = len(read_events(directory, 0)[0])
    except FileNotFoundError:
        pass
    try:
        from botopt.core._notify import queue_stats

        queue = queue_stats(config)
    except Exception as exc:
        queue = {"error": str(exc)}
    flushes = [e for e in events if e.get("type") == "notify_flushed"]
    return {
        "last_run": None if last is None else {
            "command": last["data"].get("command"), "finished_at": last["t"],
            "ok": last["type"] == "run_finished",
            "duration_s": last["data"].get("duration_s"),
            "error": last["data"].get("error")},
        "runs_last_hour": sum(1 for e in hour if e["type"] == "run_finished"),
        "failures_last_hour": sum(1 for e in hour if e["type"] == "run_failed"),
        "events_pending": pending,
        "notifications": queue,
        "last_flush_at": flushes[-1]["t"] if flushes else queue.get("last_flush_at"),
        "monitor_running": monitor_running(config),
    }
