"""Events on a real Redis server: one stream for all hosts, read by monitors in a consumer
group (each event handled once, a dead monitor's events taken over), the host of each run,
and an alert when a host stops reporting."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from botopt.core.base._config import load_config
from botopt.core.base._vocab import EventType
from botopt.core.state._redis import SharedState
from botopt.core.state._workspace import Workspace
from botopt.core.watch._monitor import Monitor

from .redis_server import age_claims
from .test_shared_state import host_env


def cfg_for(url, cache, **extra):
    env = {"BOTOPT_STATE_URL": url, "BOTOPT_STATE_CLAIM_TIMEOUT": "11",
           "BOTOPT_TELEGRAM_TIMEOUT": "2", "BOTOPT_MONITOR_STALE_AFTER": "600", **extra}
    return load_config(overrides={"cache.dir": str(cache)}, env=env)


def finished(shared: SharedState, host: str, t: float) -> None:
    """A run_finished the server recorded at ``t`` (its stream id: the server's clock)."""
    shared.client.xadd("botopt:events", {"e": json.dumps(
        {"id": f"{host}{t}", "t": t, "type": "run_finished", "pid": 1, "host": host,
         "data": {"command": "signals"}})}, id=f"{int(t * 1000)}-*")


def test_each_event_is_handled_by_one_monitor_and_taken_over_from_a_dead_one(
        redis_server, tmp_path):
    cfg = cfg_for(redis_server.url, tmp_path / "c", BOTOPT_STATE_HOST_ID="host-a")
    events = Workspace.of(cfg).events()  # the workspace decides: the shared stream
    for i in range(6):
        events.emit(EventType.SIGNAL_PASSED, symbol=f"S{i}", direction="long", queued=True)
    shared = SharedState(redis_server.url, "botopt")
    raw = shared.client.xrange("botopt:events")
    assert len(raw) == 6 and all(json.loads(f[b"e"])["host"] == "host-a" for _, f in raw)
    assert not (tmp_path / "c" / "events" / "events.log").exists()  # nothing local
    first, second = Monitor(cfg), Monitor(cfg)
    assert first.handle_pending() == 6 and second.handle_pending() == 0
    # the first monitor dies before acknowledging: after the claim timeout the second one
    # handles the same events, once
    later = Monitor(cfg_for(redis_server.url, tmp_path / "c", BOTOPT_STATE_CLAIM_TIMEOUT="6"))
    assert age_claims(shared.client, "botopt:events", "monitors", 5.8) == 6
    assert later.handle_pending() == 0  # 5.8 s idle: the first one may still be working
    age_claims(shared.client, "botopt:events", "monitors", 6.2)
    assert later.handle_pending() == 6
    later.commit()
    assert second.handle_pending() == 0 and later.handle_pending() == 0
    assert shared.client.xpending("botopt:events", "monitors")["pending"] == 0


def test_a_host_that_stops_reporting_is_alerted_once_and_its_return(redis_server, tmp_path):
    cfg = cfg_for(redis_server.url, tmp_path / "c")
    shared = SharedState(redis_server.url, "botopt")
    now = time.time()
    finished(shared, "host-a", now - 1000)
    finished(shared, "host-b", now - 10)
    queued: list[list[dict]] = []
    monitors = [Monitor(cfg, clock=lambda: now, enqueue=queued.append) for _ in range(2)]
    for m in monitors:
        m.handle_pending()
        m.run_checks()
        m.commit()
    alerts = [n["data"]["message"] for batch in queued for n in batch]
    assert [a for a in alerts if "stopped reporting" in a] == [
        "host host-a stopped reporting: no run finished there for 16 min"]
    assert not any("bot stalled" in a for a in alerts)  # host-b still runs
    finished(shared, "host-a", now + 1)
    queued.clear()
    for m in monitors:
        m.handle_pending()
        m.commit()
    assert [n["data"]["message"] for b in queued for n in b] == [
        "host host-a is reporting again: a run finished there"]


def test_run_events_of_a_host_process_carry_its_id(redis_server, tmp_path):
    home = tmp_path / "h"
    r = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                        str(home / "cache"), "notify", "add", "--type", "alert", "--data",
                        '{"message": "x"}'], capture_output=True, text=True,
                       env=host_env(home, redis_server.url, BOTOPT_STATE_HOST_ID="edge-1"))
    assert r.returncode == 0, r.stderr
    shared = SharedState(redis_server.url, "botopt")
    events = [json.loads(f[b"e"]) for _, f in shared.client.xrange("botopt:events")]
    assert events and {e["host"] for e in events} == {"edge-1"}


@pytest.mark.slow  # over 2 s: host processes on a real server
def test_history_shows_every_hosts_events(redis_server, tmp_path):
    for name in ("edge-1", "edge-2"):
        home = tmp_path / name
        env = host_env(home, redis_server.url, BOTOPT_STATE_HOST_ID=name,
                       BOTOPT_TELEGRAM_TOKEN="123456789:AAtesttokentesttokentesttokentest",
                       BOTOPT_TELEGRAM_CHAT_ID="-1001", BOTOPT_TELEGRAM_MAX_RETRIES="0",
                       BOTOPT_TELEGRAM_BATCH_INTERVAL="0",
                       BOTOPT_TELEGRAM_API_URL="http://127.0.0.1:9")  # nothing listens
        base = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(home / "cache")]
        subprocess.run([*base, "notify", "add", "-t", "alert", "-d", '{"message": "m"}'],
                       env=env, check=True, capture_output=True)
        r = subprocess.run([*base, "notify-flush"], capture_output=True, text=True, env=env)
        assert r.returncode == 1, r.stderr  # Telegram unreachable: a failure event
    home = tmp_path / "viewer"
    out = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                          str(home / "cache"), "history", "--type", "failure", "--json"],
                         capture_output=True, text=True, env=host_env(home, redis_server.url))
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)["events"]
    # Each host's failed flush: its notify_failed event and, since every cron job is a run
    # (issue 27), the job's own run_failed; every one carries its host.
    assert sorted({e["host"] for e in events}) == ["edge-1", "edge-2"]
    assert sorted(e["host"] for e in events if e["event"] == "notify_failed") == \
        ["edge-1", "edge-2"]
