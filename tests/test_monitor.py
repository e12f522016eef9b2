"""Events and the activity monitor: never blocking emitters, prompt reactions, no doubles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config
from botopt.core.delivery._notify import pending_notifications
from botopt.core.state._events import emit, events_dir, read_events, run_events
from botopt.core.watch._monitor import Monitor, get_status, run_monitor

from .conftest import wait_until

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def cfg(tmp_path):
    return load_config(overrides={"cache.dir": str(tmp_path / "c"),
                                  "monitor.check_interval": 30.0})


def root(cfg) -> Path:
    return cfg.cache.dir


def test_emit_never_raises_and_stays_fast(tmp_path):
    # No monitor, unwritable directory, a file where the directory should be: all fine.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    start = time.perf_counter()
    for _ in range(200):
        emit("run_started", _root=blocked, command="x")
        emit("run_started", _root=tmp_path / "ok", command="x", big="y" * 100_000)
    per_call = (time.perf_counter() - start) / 400
    assert per_call < 0.01
    events, _ = read_events(events_dir(tmp_path / "ok"))
    assert len(events) == 200 and events[0]["data"].get("truncated")


def test_concurrent_emitters_never_tear_lines(tmp_path):
    code = ("import sys\nfrom pathlib import Path\nfrom botopt.core.state._events import emit\n"
            "for i in range(300):\n    emit('signal_passed', _root=Path(sys.argv[1]), "
            "i=i, pad='z' * 500)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    raw = (events_dir(tmp_path) / "events.log").read_bytes().splitlines()
    assert len(raw) == 1200 and all(json.loads(line)["type"] == "signal_passed" for line in raw)


def test_handlers_queue_notifications(cfg):
    emit("run_failed", _root=root(cfg), command="signals", error="DataError: bad row")
    emit("regime_changed", _root=root(cfg), symbol="BTCUSDT", old="RANGE", new="TREND_UP")
    emit("regime_changed", _root=root(cfg), symbol="ETHUSDT", old="RANGE", new="TREND_UP",
         queued=True)
    result = run_monitor(cfg, once=True)
    assert result.events_handled == 3
    queued = pending_notifications(cfg)
    assert [q["type"] for q in queued] == ["alert", "regime_change"]
    assert "bad row" in queued[0]["data"]["message"]
    assert run_monitor(cfg, once=True).events_handled == 0  # each event handled once


def test_stale_alert_once_and_rearmed(cfg):
    now = [1000.0]
    sent: list = []
    mon = Monitor(cfg, clock=lambda: now[0], enqueue=sent.extend)
    for _ in range(30):  # 15 minutes of checks with no run finishing
        now[0] += 30
        mon.run_checks()
        mon.commit()
    stalled = [s for s in sent if "stalled" in s["data"]["message"]]
    assert len(stalled) == 1
    emit("run_finished", _root=root(cfg), command="signals", duration_s=0.2)
    mon.handle_pending()
    mon.state.last_finished = now[0]
    mon.commit()
    assert any("recovered" in s["data"]["message"] for s in sent)
    for _ in range(25):
        now[0] += 30
        mon.run_checks()
        mon.commit()
    assert len([s for s in sent if "stalled" in s["data"]["message"]]) == 2


def test_stuck_queue_and_failure_summary(cfg):
    from botopt.core.delivery._notify import enqueue

    enqueue(cfg, [{"type": "signal", "data": {"symbol": "X"}}], now=0.0)
    now = [10_000.0]
    sent: list = []
    mon = Monitor(cfg, clock=lambda: now[0], enqueue=sent.extend)
    for _ in range(3):
        now[0] += 30
        mon.run_checks()
        mon.commit()
    assert len([s for s in sent if "stuck" in s["data"]["message"]]) == 1
    for i in range(5):
        emit("run_failed", _root=root(cfg), command="signals", error=f"e{i}")
    mon.handle_pending()
    mon.commit()
    assert len([s for s in sent if "failed" in s["data"]["message"]]) == 1
    now[0] = time.time() + 30
    mon.run_checks()
    mon.commit()
    summary = [s for s in sent if "more failure" in s["data"]["message"]]
    assert len(summary) == 1 and "4 more" in summary[0]["data"]["message"]
    assert "e4" in summary[0]["data"]["message"]


def test_event_from_another_process_wakes_the_monitor(tmp_path):
    # Checks every hour and no deadline for ten minutes: only the emitter's datagram can make
    # this monitor read the log before the wait below gives up.
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c"),
                                 "monitor.check_interval": 3600.0})
    stop = threading.Event()
    ready = threading.Event()
    handled: list = []
    t = threading.Thread(target=run_monitor, kwargs=dict(
        config=cfg, stop_event=stop, ready=ready, enqueue=handled.extend))
    t.start()
    try:
        assert ready.wait(10)
        subprocess.run([sys.executable, "-c",
                        "import sys\nfrom pathlib import Path\n"
                        "from botopt.core.state._events import emit\n"
                        "emit('run_failed', _root=Path(sys.argv[1]), command='signals', "
                        "error='boom')\n", str(root(cfg))], check=True)
        assert wait_until(lambda: handled, timeout=30)
        assert "boom" in handled[0]["data"]["message"]
    finally:
        stop.set()
        t.join(10)


def test_two_monitors_never_double_handle(cfg):
    for i in range(50):
        emit("run_failed", _root=root(cfg), command="signals", error=f"e{i}")
    code = ("import sys\nfrom botopt.core import load_config\n"
            "from botopt.core.watch._monitor import run_monitor\n"
            "cfg = load_config(overrides={'cache.dir': sys.argv[1]})\n"
            "r = run_monitor(cfg, once=True)\nprint(r.events_handled, r.busy)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root(cfg))],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert sum(int(o[0]) for o in outs) == 50


def test_monitor_process_stops_cleanly_on_sigterm(cfg):
    p = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                          str(root(cfg)), "monitor"], stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: get_status(cfg)["monitor_running"], timeout=30)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert not get_status(cfg)["monitor_running"]


def test_a_monitor_seen_running_is_already_stopped_cleanly_by_sigterm(cfg):
    """The lock that says "running" was taken before the stop signals were caught: a
    SIGTERM in between (a service manager's stop, right after the start) killed the monitor
    with the default action (exit -15), as the CI run did under load. Polled as tightly as
    possible, the SIGTERM lands right after the lock is taken."""
    from botopt.core.watch._monitor import monitor_running

    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                              str(root(cfg)), "monitor"], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not monitor_running(cfg) and time.monotonic() < deadline:
            pass
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, p.stderr.read() if p.stderr else ""


def test_status_and_monitor_cli(cfg):
    with run_events("signals", root=root(cfg)) as counts:
        counts["symbols"] = 2
    with pytest.raises(RuntimeError):
        with run_events("signals", root=root(cfg)):
            raise RuntimeError("boom")
    base = ["--cache-dir", str(root(cfg))]
    status = runner.invoke(app, [*base, "status", "--json"])
    assert status.exit_code == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["runs_last_hour"] == 1 and data["failures_last_hour"] == 1
    assert data["last_run"]["ok"] is False and "boom" in data["last_run"]["error"]
    assert data["events_pending"] == 4 and data["monitor_running"] is False
    once = runner.invoke(app, [*base, "monitor", "--once", "--json"])
    # the 4, and its own run_started: `monitor --once` is a cron job recorded as a run
    assert once.exit_code == 0 and json.loads(once.stdout)["events_handled"] == 5
    after = json.loads(runner.invoke(app, [*base, "status", "--json"]).stdout)
    assert after["events_pending"] == 1  # its run_finished, read by the next monitor
    assert after["jobs"]["monitor"]["ok"] is True
    assert runner.invoke(app, [*base, "status"]).exit_code == 0


def test_signals_run_emits_events(tmp_path):
    from botopt.core.data._candles import _sample_dir

    c = tmp_path / "c"
    live = ["--cache-dir", str(c), "signals", "--data-dir", str(_sample_dir())]
    # An experiment (sample source, --as-of in the past) is invisible to the monitor.
    r = runner.invoke(app, ["--cache-dir", str(c), "signals", "-s", "BTCUSDT",
                            "--as-of", "2026-09-20"])
    assert r.exit_code == 0 and read_events(events_dir(c))[0] == []
    # A live run whose data is stale fails, and the monitor hears of it.
    r = runner.invoke(app, [*live, "-s", "BTCUSDT"])
    assert r.exit_code == 1 and "stale data" in r.stderr
    # A typo in the arguments is the user's to fix, never a failed run.
    bad = runner.invoke(app, [*live, "-s", "BTCUSDT", "--as-of", "yesterday"])
    assert bad.exit_code == 2
    types = [e["type"] for e in read_events(events_dir(c))[0]]
    assert types == ["run_started", "run_failed"]


def test_event_log_is_pruned_by_size(cfg):
    small = load_config(overrides={"cache.dir": str(root(cfg)),
                                   "monitor.event_max_bytes": 2000})
    for i in range(40):
        emit("signal_passed", _root=root(cfg), i=i, queued=True)
    run_monitor(small, once=True)
    d = events_dir(root(cfg))
    assert (d / "events.log.1").exists() and not (d / "events.log").exists()
    emit("signal_passed", _root=root(cfg), i=99, queued=True)
    assert run_monitor(small, once=True).events_handled == 1
    assert os.path.getsize(d / "events.log") < 2000


# -- deadlines, quiet events, scale -----------------------------------------------------------

def test_checks_are_scheduled_for_the_next_deadline_that_matters(cfg):
    from botopt.core.delivery._notify import enqueue

    now = [50_000.0]
    sent: list = []
    mc = cfg.monitor
    mon = Monitor(cfg, clock=lambda: now[0], enqueue=sent.extend)
    mon.run_checks()
    mon.commit()
    # Healthy and nothing queued: the next expected run plus grace.
    assert mon.next_deadline() == mon.state.last_finished + mc.stale_after
    enqueue(cfg, [{"type": "alert", "data": {"message": "x"}}], now=now[0] + 10)
    mon.handle_pending()  # the notify_queued event sets the oldest item's age limit
    assert mon.next_deadline() == min(now[0] + 10 + mc.stuck_after,
                                      mon.state.last_finished + mc.stale_after)
    now[0] = mon.state.last_finished + mc.stale_after
    assert mon.checks_due()
    mon.run_checks()
    mon.commit()
    assert [s for s in sent if "stalled" in s["data"]["message"]]
    # While stalled it looks every check_interval for the recovery (or sooner, when the
    # queued item reaches its age limit).
    assert mon.next_deadline() == min(now[0] + mc.check_interval, now[0] - 590 + mc.stuck_after)
    now[0] += 10
    mon.run_checks()
    mon.commit()
    assert [s for s in sent if "stuck" in s["data"]["message"]]
    assert mon.next_deadline() == now[0] + mc.check_interval


def test_routine_events_do_not_wake_the_monitor(tmp_path):
    import socket as socketlib

    from botopt.core.state._events import socket_path

    directory = events_dir(tmp_path)
    directory.mkdir(parents=True)
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    sock.bind(str(socket_path(directory)))
    sock.setblocking(False)
    try:
        emit("run_started", _root=tmp_path, command="signals")
        emit("run_finished", _root=tmp_path, command="signals", duration_s=0.1)
        emit("signal_passed", _root=tmp_path, symbol="X", queued=True)
        with pytest.raises(BlockingIOError):
            sock.recv(64)
        emit("run_failed", _root=tmp_path, command="signals", error="boom")
        assert sock.recv(64) == b"!"
    finally:
        sock.close()


@pytest.mark.slow  # over 2 s: a real monitor process waiting for a deadline
def test_a_stall_is_noticed_at_its_deadline_not_at_the_next_poll(tmp_path):
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c"), "monitor.stale_after": 1.0,
                                 "monitor.check_interval": 3600.0})
    stop, ready = threading.Event(), threading.Event()
    handled: list = []
    t = threading.Thread(target=run_monitor, kwargs=dict(
        config=cfg, stop_event=stop, ready=ready, enqueue=handled.extend))
    t.start()
    try:
        assert ready.wait(10)
        # a check_interval-driven monitor would wait an hour
        assert wait_until(lambda: handled, timeout=20)
        assert "stalled" in handled[0]["data"]["message"]
    finally:
        stop.set()
        t.join(10)


def test_twenty_thousand_failures_one_alert_then_one_summary(cfg):
    directory = events_dir(root(cfg))
    directory.mkdir(parents=True)
    t0 = time.time()
    with open(directory / "events.log", "w") as fh:
        for i in range(20_000):
            fh.write(json.dumps({"id": str(i), "t": t0 + i * 1e-3, "type": "run_failed",
                                 "pid": 1, "data": {"command": "signals",
                                                    "error": f"e{i}"}}) + "\n")
    now = [t0 + 30]
    sent: list = []
    mon = Monitor(cfg, clock=lambda: now[0], enqueue=sent.extend)
    assert mon.handle_pending() == 20_000
    mon.commit()
    assert [s["data"]["message"] for s in sent] == ["signals failed: e0"]
    now[0] += cfg.monitor.check_interval
    mon.run_checks()
    mon.commit()
    assert "19999 more failure(s)" in sent[-1]["data"]["message"] and "e19999" in sent[-1][
        "data"]["message"]


def test_a_dead_letter_alert_that_dies_is_not_alerted_again(cfg):
    sent: list = []
    mon = Monitor(cfg, enqueue=sent.extend)
    emit("notify_dead_letter", _root=root(cfg), id="a" * 32, notification_type="alert",
         reason="refused", about=None)
    emit("notify_dead_letter", _root=root(cfg), id="a" * 32, notification_type="alert",
         reason="refused", about=None)
    emit("notify_dead_letter", _root=root(cfg), id="b" * 32, notification_type="alert",
         reason="refused", about="a" * 32)
    mon.handle_pending()
    mon.commit()
    assert len(sent) == 1 and sent[0]["data"]["dead_letter"] == "a" * 32


def test_a_failing_disk_or_queue_costs_a_warning_not_the_monitor(cfg):
    emit("run_failed", _root=root(cfg), command="signals", error="boom")
    state = events_dir(root(cfg)) / "monitor_state.json"
    state.mkdir()  # the state file cannot be replaced: as on a read-only or full disk
    (state / "x").write_text("keep the directory non-empty")
    result = runner.invoke(app, ["--cache-dir", str(root(cfg)), "monitor", "--once"])
    # The checks ran; the run ends 1 with one line saying what is wrong with the disk, so
    # that cron mails it (the alerts cannot be kept anywhere else).
    assert result.exit_code == 1 and "not saved" in result.stderr
    assert "monitor: cannot save" in result.stderr and "Traceback" not in result.stderr

    from botopt.core.errors import NotifyError

    def broken(items):
        raise NotifyError("queue.db: disk I/O error")

    emit("run_failed", _root=root(cfg), command="fetch", error="bang")
    mon = Monitor(cfg, enqueue=broken)
    mon.handle_pending()
    mon.commit()  # the queue fails: the alert waits in the outbox
    sent: list = []
    mon._enqueue = sent.extend
    mon.commit()
    # (the state could not be saved, so the first failure is read again: at least once)
    assert [s["data"]["message"] for s in sent] == ["signals failed: boom"]


def test_a_log_truncated_in_place_is_read_again_from_its_start(cfg):
    """logrotate's copytruncate empties the file in place (same inode): the monitor's offset
    was past the end, so every new failure went unseen until the log grew back 10 MB."""
    for i in range(50):
        emit("run_started", _root=root(cfg), command="signals", pad="x" * 200, i=i)
    assert run_monitor(cfg, once=True).events_handled == 50
    log_path = events_dir(root(cfg)) / "events.log"
    with open(log_path, "r+b") as fh:
        fh.truncate(0)
    emit("run_failed", _root=root(cfg), command="signals", error="DataError: after rotation")
    assert run_monitor(cfg, once=True).events_handled == 1
    assert any("after rotation" in q["data"].get("message", "")
               for q in pending_notifications(cfg))
    # grown back past the old offset before the monitor looked: read from its start too
    with open(log_path, "r+b") as fh:
        fh.truncate(0)
    for i in range(60):
        emit("run_failed", _root=root(cfg), command=f"bot{i}", error="x" * 190)
    assert run_monitor(cfg, once=True).events_handled == 60


def test_a_nan_in_an_event_holds_no_alert_back(cfg):
    """emit wrote NaN as a bare token; the monitor could not queue that event's notification
    and, saving nothing, met it again every round: no later alert was ever queued, and
    `history --json` ended in an internal error."""
    emit("signal_passed", _root=root(cfg), symbol="BTCUSDT", direction="long",
         strength=float("nan"), p=[float("inf"), 1.0])
    raw = (events_dir(root(cfg)) / "events.log").read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    # as an older botopt wrote it
    with open(events_dir(root(cfg)) / "events.log", "a") as fh:
        fh.write(json.dumps({"id": "0" * 32, "t": time.time(), "type": "signal_passed",
                             "pid": 1, "data": {"symbol": "ETHUSDT", "direction": "long",
                                                "strength": float("nan")}}) + "\n")
    emit("run_failed", _root=root(cfg), command="mybot", error="insufficient balance")
    result = run_monitor(cfg, once=True)
    assert result.events_handled == 3 and not result.disk_problem
    queued = pending_notifications(cfg)
    assert [q["data"].get("strength") for q in queued if q["type"] == "signal"] == \
        ["nan", "nan"]
    assert any("insufficient balance" in q["data"].get("message", "") for q in queued)
    assert run_monitor(cfg, once=True).events_handled == 0
    out = runner.invoke(app, ["--cache-dir", str(root(cfg)), "history", "--json"])
    assert out.exit_code == 0, out.stderr
    json.loads(out.stdout)


@pytest.mark.parametrize("ahead", ["event", "state"])
def test_a_time_from_the_future_does_not_hold_off_the_stall_alert(cfg, ahead):
    """A run that finished while the clock was 20 days ahead (then set back), or a saved
    last_finished of 1e300, held off every stall alert until the clock caught up."""
    now = [time.time()]
    sent: list = []
    mon = Monitor(cfg, clock=lambda: now[0], enqueue=sent.extend)
    if ahead == "event":
        with open(events_dir(root(cfg)) / "events.log", "a") as fh:
            fh.write(json.dumps({"id": "1" * 32, "t": now[0] + 20 * 86400,
                                 "type": "run_finished", "pid": 1,
                                 "data": {"command": "signals", "duration_s": 0.2}}) + "\n")
        assert mon.handle_pending() == 1
    else:
        mon.state.last_finished = 1e300
    for _ in range(40):  # 20 minutes of checks, no run finishing
        now[0] += 30
        mon.run_checks()
        mon.commit()
    assert len([s for s in sent if "stalled" in s["data"]["message"]]) == 1


def test_status_counts_no_run_from_the_future(cfg):
    emit("run_finished", _root=root(cfg), command="signals", duration_s=0.1)
    with open(events_dir(root(cfg)) / "events.log", "a") as fh:
        fh.write(json.dumps({"id": "2" * 32, "t": time.time() + 86400,
                             "type": "run_finished", "pid": 1,
                             "data": {"command": "signals", "duration_s": 0.1}}) + "\n")
    status = get_status(cfg)
    assert status["runs_last_hour"] == 1, status


def test_status_reads_a_big_log_a_line_at_a_time(cfg):
    """An 8 MB log that no monitor rotated was read whole and parsed into a list (a 52 MB
    one: 930 MB and 12 s). It is parsed a line at a time now, keeping what status shows."""
    import tracemalloc

    now = time.time()
    path = events_dir(root(cfg)) / "events.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    filler = json.dumps({"id": "f" * 32, "t": now - 7200, "type": "signal_passed", "pid": 1,
                         "data": {"symbol": "BTCUSDT", "pad": "x" * 120}}) + "\n"
    with open(path, "w") as fh:
        fh.write(filler * 40_000)
        for i, (t, kind, cmd) in enumerate([(now - 7000, "run_failed", "fetch"),
                                            (now - 600, "run_finished", "signals"),
                                            (now - 300, "run_failed", "signals"),
                                            (now - 60, "notify_flushed", None)]):
            data = {"command": cmd, "duration_s": 0.1} if cmd else {"sent": 1}
            fh.write(json.dumps({"id": f"{i:032d}", "t": t, "type": kind, "pid": 1,
                                 "data": data}) + "\n")
        fh.write("not json\n")
    tracemalloc.start()
    status = get_status(cfg, now=now)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2 ** 20, peak  # the log is 8 MB; parsed whole it took 15 times that
    assert (status["runs_last_hour"], status["failures_last_hour"]) == (1, 1)
    assert status["last_run"]["command"] == "signals" and not status["last_run"]["ok"]
    assert set(status["jobs"]) == {"fetch", "signals"} and not status["jobs"]["fetch"]["ok"]
    assert status["last_flush_at"] == now - 60 and status["events_damaged"] == 1
    assert status["events_pending"] == 40_005  # no monitor has read it: every line


def test_status_after_the_clock_steps_back_shows_the_run_that_happened_last(cfg):
    """A run failed with the clock 3 hours ahead; the clock was set back and two runs
    succeeded. ``status`` picked the last run by the largest time: "signals FAILED at" a
    time to come, beside "runs / failures (1 h) 1 / 0", until the clock passed it (sweep
    G). A run stamped ahead of the clock now loses to any that is not."""
    now = time.time()
    path = events_dir(root(cfg)) / "events.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i, (t, kind) in enumerate([(now + 3 * 3600 - 3600, "run_failed"),
                                       (now - 3600 + 20, "run_finished"),
                                       (now - 10, "run_finished")]):
            fh.write(json.dumps({"id": f"{i:032d}", "t": t, "type": kind, "pid": 1,
                                 "data": {"command": "signals", "duration_s": 0.1}}) + "\n")
    status = get_status(cfg, now=now)
    assert status["last_run"]["ok"] and status["last_run"]["finished_at"] == now - 10
    assert status["jobs"]["signals"]["ok"]
    assert (status["runs_last_hour"], status["failures_last_hour"]) == (2, 0)
    alone = events_dir(root(cfg)) / "events.log"  # only a run from the future: shown
    alone.write_text(json.dumps({"id": "9" * 32, "t": now + 600, "type": "run_failed",
                                 "pid": 1, "data": {"command": "signals"}}) + "\n")
    assert not get_status(cfg, now=now)["last_run"]["ok"]


def test_doctor_tells_a_killed_monitor_from_a_cron_driven_one(cfg):
    """A long-running monitor killed (SIGKILL, the OOM killer) left a recent state file, and
    `doctor` called it "driven by cron": the user was told all was well while nothing
    watched the bot. It now says the monitor was stopped without a clean exit; one stopped
    by SIGTERM, or a cron's `--once`, reads as before."""
    from botopt.core.errors import BotoptError
    from botopt.core.watch._doctor import _monitor

    def serve() -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                              str(root(cfg)), "monitor"], stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: get_status(cfg)["monitor_running"], timeout=30)
        assert _monitor(cfg, time.time()) == "running"
        # its mark written (a kill before it finds the state as the last run left it)
        assert wait_until(lambda: state.is_file() and json.loads(
            state.read_text()).get("serving") is True, timeout=30)
        return p

    from botopt.core.state._workspace import state_dir
    from botopt.core.watch._monitor import STATE

    state = state_dir(cfg, "events") / STATE

    p = serve()
    p.kill()
    p.wait(timeout=10)
    with pytest.raises(BotoptError, match="without a clean exit") as info:
        _monitor(cfg, time.time())
    assert info.value.key == "monitor"
    p = serve()  # started again: running, and a clean stop clears the mark
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert _monitor(cfg, time.time()).startswith("driven by cron")
    p = serve()
    p.kill()
    p.wait(timeout=10)
    run_monitor(cfg, once=True)  # cron's round after it: the state is cron's now
    assert _monitor(cfg, time.time()).startswith("driven by cron")
