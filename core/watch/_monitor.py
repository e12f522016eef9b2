"""The activity monitor: reacts to events at once, checks time-based conditions at deadlines.

The long-running monitor sleeps in ``select`` on its Unix datagram socket until an event
arrives or the next deadline that matters, whichever comes first: no polling. The deadlines
are the next expected run plus grace (the last finished run + ``stale_after``) and the
oldest queued notification's age limit (+ ``stuck_after``); only while an alert is
outstanding (a stall, unreported failures) does it look again every ``check_interval``.
Routine events (a run started or finished) do not wake it: they are read at the next wake-up,
so an idle, healthy bot costs about one wake-up per ``stale_after``. ``once=True`` handles
what is pending and the due checks, then returns (for cron).

Only one monitor runs at a time (a file lock). Its position in the event log and the state of
its checks are saved atomically after each round; a monitor killed between handling and saving
handles those events again on restart (at-least-once: a duplicated alert beats a lost one).
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base._config import Config, MonitorConfig
from ..base._fs import atomic_write_json, read_json
from ..base._vocab import EventType, NotificationType
from ..delivery._notify import enqueue, queue_stats
from ..errors import BotoptError, UsageError
from ..state._events import (
    LOG_NAME,
    continues_at,
    first_event_time,
    parse_event_lines,
    socket_path,
)
from ..state._workspace import Workspace

log = logging.getLogger("botopt.monitor")
STATUS_EVENTS = 5000  # of the shared stream: enough for the last run and the last hour
STATE = "monitor_state.json"
FAILURE_WINDOW = 600.0


# Cron jobs that record runs but are not the bot itself: their failures alert, their
# successes do not show the bot is alive (the monitor's own run would always be one).
SUPPORT_JOBS = frozenset({"fetch", "notify-flush", "monitor", "metrics"})


def record_run(config: Config, command: str, *, enabled: bool = True) -> Any:
    """The one way a cron job records itself as a run: ``with record_run(cfg, "fetch") as
    counts:`` emits run_started, then run_finished or run_failed (with the error) to this
    install's event log (or the shared server), marked interactive when typed at a terminal.
    ``status``, ``doctor``, ``history`` and the monitor then see the job."""
    from ..state._events import run_events

    return run_events(command, enabled=enabled, sink=Workspace.of(config).events())


@dataclass
class MonitorResult:
    events_handled: int = 0
    checks_run: int = 0
    wakeups: int = 0
    notifications_queued: int = 0
    events_damaged: int = 0  # lines of the event log that were not events: skipped
    busy: bool = False  # another monitor holds the lock
    disk_problem: str | None = None  # the state could not be written (alerts kept for later)


@dataclass
class _State:
    offset: int = 0
    inode: int = 0
    last_finished: float | None = None
    stale_alerted: bool = False
    stuck_alerted: bool = False
    # [time, command, error] within FAILURE_WINDOW, oldest first (a deque while running,
    # so that pruning is O(1) per event and N events cost O(N))
    failures: Any = field(default_factory=deque)
    failures_reported: int = 0
    last_check: float = 0.0
    queue_oldest: float | None = None  # the oldest queued notification at the last look
    dead_alerted: list[str] = field(default_factory=list)  # dead letters alerted (recent)
    events_damaged: int = 0
    # symbol -> when a run last reported its data stale; alerted once an hour at most, as
    # two cron lines with different symbols must not make the alert flap every minute.
    stale_seen: dict[str, float] = field(default_factory=dict)
    # a long-running monitor holds it while it serves: left true by one that was killed, so
    # that ``doctor`` says so instead of taking its recent state for a cron's ``--once``
    serving: bool = False

    @classmethod
    def load(cls, path: Path) -> _State:
        try:
            raw = read_json(path, {}) or {}
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            state = cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
            state._check()
            return state
        except (ValueError, TypeError, RecursionError, OSError):
            log.warning("monitor state %s is damaged; starting afresh", path)
            return cls()

    def _check(self) -> None:
        """TypeError unless every field has the type this class writes."""
        def num(v: Any, optional: bool = False) -> bool:
            return (v is None and optional) or (isinstance(v, (int, float))
                                                and not isinstance(v, bool) and math.isfinite(v))
        ints = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (self.offset, self.inode))
        ok = (ints and num(self.last_finished, True)
              and num(self.last_check) and num(self.queue_oldest, True)
              and num(self.failures_reported) and num(self.events_damaged)
              and isinstance(self.failures, (list, deque))
              and isinstance(self.dead_alerted, list)
              and isinstance(self.stale_seen, dict) and isinstance(self.serving, bool)
              and all(isinstance(k, str) and num(v) for k, v in self.stale_seen.items())
              and all(isinstance(f, list) and len(f) == 3 and num(f[0])
                      for f in self.failures))
        if not ok:
            raise TypeError("a field has the wrong type")
        self.failures = deque(self.failures)

    def save(self, path: Path) -> None:
        atomic_write_json(path, {**self.__dict__, "failures": list(self.failures)})


class Monitor:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time,
                 enqueue: Callable[[list[dict[str, Any]]], Any] | None = None) -> None:
        self.config = config
        self.mc: MonitorConfig = config.monitor
        self.dir = Workspace.of(config).events_dir()
        self.clock = clock
        self.state_path = self.dir / STATE
        self.load_state()
        self.result = MonitorResult()
        self._outbox: list[dict[str, Any]] = []
        self._enqueue = enqueue or self._enqueue_real
        self.handlers: dict[EventType, Callable[[dict[str, Any]], None]] = {
            EventType.RUN_FAILED: self._on_failure,
            EventType.NOTIFY_FAILED: self._on_failure,
            EventType.RUN_FINISHED: self._on_finished,
            EventType.REGIME_CHANGED: self._on_regime_changed,
            EventType.SIGNAL_PASSED: self._on_signal,
            EventType.NOTIFY_DEAD_LETTER: self._on_dead_letter,
            EventType.NOTIFY_QUEUED: self._on_queued,
        }
        self.hosts = Workspace.of(config).host_events(clock)  # this log, or the shared stream

    def load_state(self) -> None:
        """(Re)read the saved position and alert state: under the lock, or another monitor
        that ran in between would have its events handled twice."""
        self.state = _State.load(self.state_path)
        if self.state.last_finished is None:
            self.state.last_finished = self.clock()  # a fresh monitor gives the bot a full period

    def _enqueue_real(self, items: list[dict[str, Any]]) -> Any:
        return enqueue(self.config, items, announce=False)

    def _alert(self, message: str, **extra: Any) -> None:
        self._outbox.append({"type": NotificationType.ALERT, "data": {"message": message, **extra}})

    # -- handlers ------------------------------------------------------------------------

    def _prune_failures(self, now: float) -> None:
        failures = self.state.failures
        while failures and failures[0][0] <= now - FAILURE_WINDOW:
            failures.popleft()
            self.state.failures_reported = max(0, self.state.failures_reported - 1)

    def _on_failure(self, ev: dict[str, Any]) -> None:
        data = ev["data"]
        if data.get("interactive") is True and not self.mc.forward_interactive:
            return  # the person at the terminal saw it already; not an alert for the chat
        if ev["type"] == EventType.RUN_FAILED and data.get("command") == "notify-flush":
            return  # its notify_failed event alerts (once) with the same reason
        # "notify_failed" names no command; "notify failed failed" read badly in alerts
        what = str(data.get("command") or (
            "notify-flush" if ev["type"] == EventType.NOTIFY_FAILED
            else ev["type"].replace("_", " ")))[:80]
        error = str(data.get("error", "unknown error"))[:300]
        self.state.failures.append([ev["t"], what, error])
        self._prune_failures(ev["t"])
        if len(self.state.failures) == 1 or self.state.failures_reported == 0:
            # The first failure in a window is reported at once; the rest are summarised
            # by the next check.
            self._alert(f"{what} failed: {error}")
            self.state.failures_reported = len(self.state.failures)

    def _on_dead_letter(self, ev: dict[str, Any]) -> None:
        data = ev["data"]
        nid = str(data.get("id") or "")[:64]
        if not nid or nid in self.state.dead_alerted:
            return  # once per dead letter, also when its event is read again
        self.state.dead_alerted = [*self.state.dead_alerted[-999:], nid]
        kind = str(data.get("notification_type") or "notification")[:60]
        reason = str(data.get("reason") or "unknown reason")[:300]
        if data.get("about"):
            # The alert about a dead letter died too: alerting again could loop forever.
            log.warning("dead-letter alert %s could not be delivered either: %s", nid[:8],
                        reason)
            return
        article = "an" if str(kind)[:1].lower() in "aeiou" else "a"  # not "a alert"
        self._alert(f"{article} {kind} notification could not be delivered and was moved to the "
                    f"dead letters: {reason}; see botopt notify list --failed, then "
                    f"notify retry {nid[:8]} or notify drop {nid[:8]}", dead_letter=nid)

    def _on_queued(self, ev: dict[str, Any]) -> None:
        if self.state.queue_oldest is None:
            self.state.queue_oldest = ev["t"]  # sets the stuck deadline without a query

    def _on_finished(self, ev: dict[str, Any]) -> None:
        if ev["data"].get("command") in SUPPORT_JOBS:
            return  # the bot's heartbeat is its signal runs, not the jobs around them
        # An event from the future (a host's clock ahead, or this one's set back since)
        # counts as finishing now: kept as it was, it held off every stall alert until
        # the clock caught up, days later.
        self.state.last_finished = max(self.state.last_finished or 0.0,
                                       min(ev["t"], self.clock()))
        host = ev.get("host")
        if isinstance(host, str) and self.hosts.finished(host[:100], ev["t"]):
            self._alert(f"host {host[:100]} is reporting again: a run finished there")
        if self.state.stale_alerted:
            self._alert("bot recovered: runs are finishing again")
        self.state.stale_alerted = False
        stale = ev["data"].get("stale")
        if isinstance(stale, list) and stale:
            self._on_stale_data([str(s)[:60] for s in stale[:100]], ev["t"])

    def _on_stale_data(self, symbols: list[str], t: float) -> None:
        """A signals run blocked some symbols as stale (all stale is a failed run)."""
        seen = {s: when for s, when in self.state.stale_seen.items() if when > t - 3600}
        new = [s for s in symbols if s not in seen]
        if new:
            self._alert(f"stale data: no recent candles for {', '.join(new)}; they are "
                        "blocked (is botopt fetch running?)")
        seen.update(dict.fromkeys(symbols, t))
        self.state.stale_seen = seen

    def _on_regime_changed(self, ev: dict[str, Any]) -> None:
        data = ev.get("data", {})
        if not data.get("queued"):  # botopt signals queues its own; others rely on us
            self._outbox.append({"type": NotificationType.REGIME_CHANGE, "data": {
                k: data.get(k) for k in ("symbol", "old", "new")}})

    def _on_signal(self, ev: dict[str, Any]) -> None:
        data = ev.get("data", {})
        if not data.get("queued"):
            self._outbox.append({"type": NotificationType.SIGNAL, "data": {
                k: v for k, v in data.items() if k != "queued"}})

    # -- rounds ---------------------------------------------------------------------------

    def handle_pending(self) -> int:
        damaged = self.state.events_damaged
        try:
            events = self.hosts.read(self.state)
        except self.hosts.errors as exc:
            log.warning("shared events unreadable (%s); next round", self.hosts.describe(exc))
            return 0
        self.result.events_damaged += self.state.events_damaged - damaged
        return self._handle(events)

    def _handle(self, events: list[dict[str, Any]]) -> int:
        for ev in events:
            handler = self.handlers.get(ev.get("type", ""))
            if handler is not None:
                try:
                    handler(ev)
                except Exception as exc:  # one odd event must not stop the monitor
                    log.warning("event %s not handled: %s", str(ev.get("type"))[:40],
                                type(exc).__name__)
        self.result.events_handled += len(events)
        return len(events)

    def run_checks(self) -> None:
        now = self.clock()
        self.state.last_check = now
        self.result.checks_run += 1
        self._check_hosts(now)
        last = self.state.last_finished or now
        if last > now:  # the clock went back (or a saved state says the future): from now
            last = self.state.last_finished = now
        if now - last >= self.mc.stale_after and not self.state.stale_alerted:
            self._alert(f"bot stalled: no run finished for {int((now - last) // 60)} min")
            self.state.stale_alerted = True
        try:
            q = queue_stats(self.config)
            oldest = q["oldest_created_at"]
            self.state.queue_oldest = oldest
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
        self._prune_failures(now)
        unreported = len(self.state.failures) - self.state.failures_reported
        if unreported > 0:
            last_f = self.state.failures[-1]
            self._alert(f"{unreported} more failure(s) in the last "
                        f"{int(FAILURE_WINDOW // 60)} min; last: {last_f[1]}: {last_f[2]}")
        self.state.failures_reported = len(self.state.failures)

    def _check_hosts(self, now: float) -> None:
        """Several hosts: each that stopped reporting is named (by one monitor, once), and
        the bot counts as running while any host finishes runs."""
        try:
            for host, t in self.hosts.newly_stopped(now, self.mc.stale_after):
                self._alert(f"host {host} stopped reporting: no run finished there for "
                            f"{int((now - t) // 60)} min")
            latest = max(self.hosts.last_finished().values(), default=None)
        except self.hosts.errors as exc:
            log.debug("host check skipped: %s", exc)
            return
        if latest is not None:
            self.state.last_finished = max(self.state.last_finished or 0.0, min(latest, now))

    def next_deadline(self) -> float:
        """When the next time-based check is due: the earliest deadline that matters."""
        st, mc = self.state, self.mc
        recheck = st.last_check + mc.check_interval
        # A safety net: look at least this often even if no deadline is known.
        times = [st.last_check + max(mc.stale_after, mc.stuck_after)]
        if st.stale_alerted:
            times.append(recheck)  # watch for the recovery
        elif st.last_finished is not None:
            times.append(st.last_finished + mc.stale_after)
        if st.queue_oldest is not None and not st.stuck_alerted:
            times.append(st.queue_oldest + mc.stuck_after)
        if len(st.failures) > st.failures_reported:
            times.append(recheck)  # the summary of further failures
        return min(times)

    def checks_due(self) -> bool:
        return self.clock() >= self.next_deadline()

    def commit(self) -> None:
        """Queue the alerts, then save the state. A queue or disk that fails costs a warning
        and is tried again at the next round: the alerts stay in the outbox meanwhile."""
        if self._outbox:
            try:
                try:
                    self._enqueue(self._outbox)
                except UsageError:
                    # one alert the queue refuses (its data) must not hold the others back
                    # round after round: the others are queued, it is named and dropped
                    self._queue_each()
            except BotoptError as exc:
                log.warning("alerts not queued yet (%d kept for the next round): %s",
                            len(self._outbox), exc)
                self.result.disk_problem = self.result.disk_problem or str(exc)
                return  # not saving the state means the events are handled again: no loss
            self.result.notifications_queued += len(self._outbox)
            self._outbox = []
        try:
            self.hosts.ack()  # handled and its alerts queued: not to be handled again
        except self.hosts.errors as exc:
            log.warning("shared events not acknowledged (%s); they may be handled again",
                        self.hosts.describe(exc))
        try:
            self.state.save(self.state_path)
            self._prune()
        except OSError as exc:
            log.warning("monitor state %s not saved (%s); events may be handled again",
                        self.state_path, exc.strerror or type(exc).__name__)
            self.result.disk_problem = self.result.disk_problem or (
                f"cannot save {self.state_path}: {exc.strerror or type(exc).__name__}")

    def _queue_each(self) -> None:
        """Queue the outbox one alert at a time, dropping with a warning each one the queue
        refuses for its own content. Each leaves the outbox once queued, so a disk error
        (which still raises) keeps exactly the ones not queued yet."""
        while self._outbox:
            item = self._outbox[0]
            try:
                self._enqueue([item])
                self.result.notifications_queued += 1
            except UsageError as exc:
                log.warning("%s alert dropped: the queue refuses it (%s)",
                            str(item.get("type"))[:40], exc)
            self._outbox.pop(0)

    def _prune(self) -> None:
        """Rotate the log past its size or age bound. Emitters append by path, so renaming
        the file is safe: whatever lands in the old file is read before it is deleted."""
        path = self.dir / LOG_NAME
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        old = self.dir / (LOG_NAME + ".1")
        # The log's age is its first event's: its ctime moves with every append, so an age
        # bound on it never fired under a cron and the log kept everything up to the size bound.
        first = first_event_time(path) if st.st_size else None
        too_old = first is not None and self.clock() - first > self.mc.event_max_age
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

    mon = Monitor(config, clock, enqueue)
    if not once:
        # The stop signals are caught before the lock is taken: a monitor that others see
        # running (its lock held) always stops cleanly on SIGTERM. Taken after, a SIGTERM
        # in between killed it with the default action.
        with _stop_on_signals(stop_event) as (stop, wake_r):
            return _locked(mon, once, lambda: _serve(mon, stop, wake_r, stop_event, ready))
    return _locked(mon, once, None)


def _locked(mon: Monitor, once: bool, serve: Callable[[], MonitorResult] | None
            ) -> MonitorResult:
    """The monitor's round (``once``) or ``serve`` under its lock; busy when another holds
    it."""
    from filelock import Timeout

    lock = _lock(mon.dir)
    try:
        lock.acquire(timeout=0 if once else 1)
    except Timeout:
        mon.result.busy = True
        return mon.result
    except OSError as exc:
        if not once:
            raise
        # A read-only or full disk is exactly when the checks matter: run them unlocked
        # (nothing can be saved anyway) and say what is wrong with the disk.
        mon.result.disk_problem = f"cannot lock {exc.filename}: {exc.strerror}"
        lock = None
    try:
        mon.load_state()
        if once or serve is None:
            mon.state.serving = False
            mon.handle_pending()
            if mon.checks_due():
                mon.run_checks()
            mon.commit()
            return mon.result
        mon.state.serving = True
        mon.commit()
        try:
            return serve()
        finally:
            mon.state.serving = False  # stopped cleanly (or by an error it reports)
            mon.commit()
    finally:
        mon.hosts.close()
        if lock is not None:
            lock.release()


def _bind_wakeup_socket(path: Path) -> socket.socket:
    """The datagram socket emitters poke; a stale one from a killed monitor is replaced."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> None:
    # Many pokes are one wake-up: the events themselves are read from the log.
    try:
        while True:
            sock.recv(64)
    except BlockingIOError:
        pass


@contextmanager
def _stop_on_signals(external: threading.Event | None
                     ) -> Iterator[tuple[threading.Event, int]]:
    """(the stop event, the read end of a pipe a signal writes to): SIGTERM and SIGINT set
    the event and wake a select at once (main thread only; the previous handlers come back
    after)."""
    stop = external or threading.Event()
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
    try:
        yield stop, wake_r
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)


def _serve(mon: Monitor, stop: threading.Event, wake_r: int,
           external_stop: threading.Event | None,
           ready: threading.Event | None) -> MonitorResult:
    path = socket_path(mon.dir)
    sock = _bind_wakeup_socket(path)
    # An Event set from another thread cannot interrupt select: look at it every second.
    cap = 1.0 if external_stop is not None else None
    try:
        mon.handle_pending()
        mon.run_checks()
        mon.commit()
        if ready is not None:
            ready.set()
        while not stop.is_set():
            timeout = max(0.0, mon.next_deadline() - mon.clock())
            readable, _, _ = select.select([sock.fileno(), wake_r], [], [],
                                           timeout if cap is None else min(timeout, cap))
            if stop.is_set():
                break
            if sock.fileno() in readable:
                mon.result.wakeups += 1
                _drain(sock)
                mon.handle_pending()
                mon.commit()
            if mon.checks_due():
                mon.result.wakeups += 0 if readable else 1
                mon.handle_pending()
                mon.run_checks()
                mon.commit()
        return mon.result
    finally:
        sock.close()
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def monitor_running(config: Config) -> bool:
    from filelock import Timeout

    directory = Workspace.of(config).root / "events"
    if not directory.is_dir():
        return False  # no monitor ever ran here (and a read-only disk: none could)
    lock = _lock(directory)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # no lock can be made there (read-only, full): no monitor holds one
        return False
    lock.release()
    return False


def _jobs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each command's last run: ok or failed, when, why, and whether it ran by hand."""
    jobs: dict[str, dict[str, Any]] = {}
    for e in runs:
        data = e.get("data") or {}
        cmd = str(data.get("command") or "?")[:80]
        jobs[cmd] = {"ok": e["type"] == EventType.RUN_FINISHED, "finished_at": e["t"],
                     "error": data.get("error"), "interactive": data.get("interactive") is True}
    return jobs


class _StatusScan:
    """What ``status`` keeps of the events, fed lines in any order: each command's last run,
    the last run, the last hour's runs and failures, the last flush, damaged lines."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.last_by_command: dict[str, dict[str, Any]] = {}
        self.last_run: dict[str, Any] | None = None
        self.runs_hour = self.failures_hour = self.damaged = 0
        self.last_flush: float | None = None

    def take(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            # each line parsed (to count the damaged ones) and let go: only what status
            # shows is kept
            events, bad = parse_event_lines(line)
            self.damaged += bad
            for e in events:
                self._one(e)

    def _one(self, e: dict[str, Any]) -> None:
        t = e["t"]
        if e["type"] == EventType.NOTIFY_FLUSHED:
            self.last_flush = t if self.last_flush is None else max(self.last_flush, t)
            return
        if e["type"] not in (EventType.RUN_FINISHED, EventType.RUN_FAILED):
            return
        cmd = str((e.get("data") or {}).get("command") or "?")[:80]
        if self._newer(self.last_by_command.get(cmd), t):
            self.last_by_command[cmd] = e
        if self._newer(self.last_run, t):
            self.last_run = e
        if self.now - 3600 < t <= self.now + 60:  # not runs from the future
            if e["type"] == EventType.RUN_FINISHED:
                self.runs_hour += 1
            else:
                self.failures_hour += 1


    def _newer(self, held: dict[str, Any] | None, t: float) -> bool:
        """Whether a run at ``t`` is later than ``held``. A run stamped ahead of the clock
        (written before the clock was stepped back) loses to any run that is not: it
        was shown as the last run, failed "at" a time to come, for as long as the clock
        took to pass it (sweep G)."""
        if held is None:
            return True
        ahead, held_ahead = t > self.now + 60, bool(held["t"] > self.now + 60)
        if ahead != held_ahead:
            return held_ahead
        return bool(t >= held["t"])


def _lines_from(path: Path, offset: int) -> int:
    """The complete lines of ``path`` from ``offset`` (the events no monitor has handled
    yet), counted a block at a time."""
    n = 0
    with open(path, "rb") as fh:
        if offset and not continues_at(fh, offset):  # truncated since: all of it is new
            offset = 0
        fh.seek(offset)
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return n


def get_status(config: Config, now: float | None = None) -> dict[str, Any]:
    """Last run, runs and failures in the last hour, pending events, queue, monitor.

    The logs are read and parsed a line at a time, keeping only what is shown: a 50 MB log
    that no monitor rotated took 12 s and 930 MB to read whole and parse into a list."""
    now = time.time() if now is None else now
    ws = Workspace.of(config)
    # read, never created: status on a read-only disk (a mounted backup, a disk that
    # failed) ended in "cannot create cache directory" where it had everything to show
    directory = ws.root / "events"
    state = _State.load(directory / STATE)
    scan = _StatusScan(now)

    def local_lines() -> Iterator[bytes]:
        for path in ws.local_event_logs():
            try:
                with open(path, "rb") as fh:
                    yield from fh
            except FileNotFoundError:
                continue

    scan.take(local_lines())
    # with state.url, every host's recent events on the server too
    for lines in ws.shared_event_lines(0.0, limit=STATUS_EVENTS):
        scan.take(lines)
    pending = 0
    try:
        offset = state.offset if (directory / LOG_NAME).stat().st_ino == state.inode else 0
        pending = _lines_from(directory / LOG_NAME, offset)
    except FileNotFoundError:
        pass
    runs = sorted(scan.last_by_command.values(), key=lambda e: e["t"])
    last = scan.last_run
    try:
        queue = queue_stats(config)
    except Exception as exc:
        queue = {"error": str(exc)}
    return {
        "jobs": _jobs(runs),
        "last_run": None if last is None else {
            "command": last["data"].get("command"), "finished_at": last["t"],
            "ok": last["type"] == EventType.RUN_FINISHED,
            "duration_s": last["data"].get("duration_s"),
            "error": last["data"].get("error"),
            **({"host": str(last["host"])[:100]} if "host" in last else {})},
        "runs_last_hour": scan.runs_hour,
        "failures_last_hour": scan.failures_hour,
        "events_pending": pending,
        "events_damaged": scan.damaged,
        "notifications": queue,
        "last_flush_at": scan.last_flush if scan.last_flush is not None
        else queue.get("last_flush_at"),
        "monitor_running": monitor_running(config),
    }
