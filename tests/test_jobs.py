"""Every cron job is a run: a failing feeder is seen by status, doctor, history and the
monitor; a run typed at a terminal that fails is told there and not forwarded as an alert."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config
from botopt.core.delivery._notify import pending_notifications
from botopt.core.state._events import emit, read_events, run_events
from botopt.core.watch._monitor import Monitor, run_monitor

runner = CliRunner()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: every request is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def base(tmp_path):
    cfg = tmp_path / "botopt.toml"
    cfg.write_text(f"""[data]
source = "local"
data_dir = "{tmp_path / 'data'}"
symbols = ["BTCUSDT"]
feeder = "botopt"

[binance]
api_url = "http://127.0.0.1:{closed_port()}"
max_retries = 0
""")
    return ["--config", str(cfg), "--cache-dir", str(tmp_path / "cache")]


def test_a_failing_fetch_is_seen_by_status_doctor_history_and_the_monitor(base, tmp_path):
    res = runner.invoke(app, [*base, "fetch"])  # as cron runs it: no terminal
    assert res.exit_code == 1 and "Traceback" not in res.output
    status = json.loads(runner.invoke(app, [*base, "status", "--json"]).stdout)
    job = status["jobs"]["fetch"]
    assert job["ok"] is False and job["interactive"] is False
    assert "NetworkError" in job["error"]
    plain = runner.invoke(app, [*base, "status"]).stdout
    assert "fetch FAILED" in plain
    doctor = json.loads(runner.invoke(app, [*base, "doctor", "--json"]).stdout)
    jobs = next(c for c in doctor["checks"] if c["check"] == "jobs") \
        if isinstance(doctor, dict) else next(c for c in doctor if c["check"] == "jobs")
    assert not jobs["ok"] and jobs["message"].startswith("fetch failed 0 min ago: Network")
    hist = runner.invoke(app, [*base, "history", "--type", "failure", "--json"])
    assert hist.exit_code == 0 and "fetch" in hist.stdout
    once = runner.invoke(app, [*base, "monitor", "--once"])
    assert once.exit_code == 0, once.output
    cfg = load_config(Path(base[1]), overrides={"cache.dir": base[3]})
    alerts = [n["data"]["message"] for n in pending_notifications(cfg) if n["type"] == "alert"]
    assert len(alerts) == 1 and alerts[0].startswith("fetch failed: NetworkError")


def test_support_jobs_are_not_the_bots_heartbeat(tmp_path):
    """A fetch, flush or monitor run finishing does not hide a bot whose signals stopped."""
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")})
    now = [1_000_000.0]
    mon = Monitor(cfg, clock=lambda: now[0])
    mon.load_state()
    root = tmp_path / "c"
    with run_events("signals", root=root, interactive=False):
        pass
    mon.handle_pending()
    signals_at = mon.state.last_finished
    for cmd in ("fetch", "notify-flush", "monitor"):
        with run_events(cmd, root=root, interactive=False):
            pass
    mon.handle_pending()
    assert mon.state.last_finished == signals_at


def stale_store(tmp_path: Path, shared_data: Path) -> Path:
    data = tmp_path / "ft" / "user_data" / "data" / "binance"
    data.mkdir(parents=True)
    shutil.copy(shared_data / "candles" / "5m" / "ETH_BTC-5m.feather", data)
    return data


def run_at_a_terminal(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """botopt with a pseudo-terminal as stdin: a person typing the command."""
    import pty

    leader, follower = pty.openpty()
    try:
        return subprocess.run([sys.executable, "-m", "botopt.cli.main", *args], stdin=follower,
                              capture_output=True, text=True, timeout=120, env=env)
    finally:
        os.close(leader)
        os.close(follower)


@pytest.mark.slow
@pytest.mark.parametrize("forward", [False, True])
def test_a_failed_run_by_hand_is_told_at_once_and_not_an_alert(tmp_path, shared_data,
                                                              forward):
    data = stale_store(tmp_path, shared_data)
    cache = tmp_path / "cache"
    env = {**os.environ, "BOTOPT_CACHE_DIR": str(cache)}
    if forward:
        env["BOTOPT_MONITOR_FORWARD_INTERACTIVE"] = "true"
    res = run_at_a_terminal(["signals", "--data-dir", str(data), "--symbols", "ETH/BTC"], env)
    assert res.returncode == 1
    # told at once, with the way out for data downloaded for backtesting and the feeder
    assert "stale data for every symbol" in res.stderr and "--as-of" in res.stderr
    assert "freqtrade" in res.stderr  # a data folder: freqtrade feeds it by default
    failed = [e for e in read_events(cache / "events")[0] if e["type"] == "run_failed"]
    assert failed and failed[-1]["data"]["interactive"] is True
    cfg = load_config(overrides={"cache.dir": str(cache)},
                      env={k: v for k, v in env.items() if k.startswith("BOTOPT_")})
    run_monitor(cfg, once=True)
    alerts = [n for n in pending_notifications(cfg) if n["type"] == "alert"]
    assert len(alerts) == (1 if forward else 0)


def test_the_same_failure_from_cron_is_an_alert(tmp_path, shared_data):
    data = stale_store(tmp_path, shared_data)
    cache = tmp_path / "cache"
    res = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(cache),
                          "signals", "--data-dir", str(data), "--symbols", "ETH/BTC"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    failed = [e for e in read_events(cache / "events")[0] if e["type"] == "run_failed"]
    assert failed and "interactive" not in failed[-1]["data"]
    cfg = load_config(overrides={"cache.dir": str(cache)})
    run_monitor(cfg, once=True)
    alerts = [n["data"]["message"] for n in pending_notifications(cfg) if n["type"] == "alert"]
    assert len(alerts) == 1 and alerts[0].startswith("signals failed: StaleDataError")


def test_a_users_own_job_records_itself_with_record_run(tmp_path):
    from botopt.core import record_run

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")})
    with pytest.raises(OSError):
        with record_run(cfg, "metrics"):
            raise OSError("disk full")
    emit("noise", _root=tmp_path / "c")
    events = read_events(tmp_path / "c" / "events")[0]
    types = [(e["type"], e["data"].get("command")) for e in events]
    assert ("run_failed", "metrics") in types
