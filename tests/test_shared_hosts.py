"""Several hosts on one real Redis server (tests/redis_server.py), issue 24's list: consumer
groups stay bounded, cross-host times are on the server's clock, cooldowns recorded during an
outage are merged up, and the commands that read state read the shared state."""

from __future__ import annotations

import time

import pytest

from botopt.core.base._config import load_config
from botopt.core.delivery._notify import enqueue, flush_notifications
from botopt.core.state._redis import SharedState
from botopt.core.watch._monitor import run_monitor

from .fakes.telegram_server import FakeTelegram

TOKEN = "123456789:AAtesttokentesttokentesttokentest"


@pytest.fixture
def telegram():
    fake = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    yield fake
    fake.stop()


def host_cfg(url: str, cache, telegram: FakeTelegram | None = None, **extra: str):
    env = {"BOTOPT_STATE_URL": url, "BOTOPT_TELEGRAM_TOKEN": TOKEN,
           "BOTOPT_TELEGRAM_CHAT_ID": "-1001", "BOTOPT_TELEGRAM_TIMEOUT": "1",
           "BOTOPT_STATE_CLAIM_TIMEOUT": "2", "BOTOPT_MONITOR_STALE_AFTER": "600", **extra}
    if telegram is not None:
        env["BOTOPT_TELEGRAM_API_URL"] = telegram.url
    return load_config(overrides={"cache.dir": str(cache)}, env=env)


def consumers(r, stream: str, group: str) -> list[str]:
    return [c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            for c in r.xinfo_consumers(stream, group)]


SCALE = 100.0

# Slow: 60 runs of three hosts and the dead members' claim and idle time (4.5 s) run out.
@pytest.mark.slow
@pytest.mark.parametrize("runs", [60, 500])
def test_runs_on_3_hosts_leave_a_bounded_set_of_consumers(redis_server, telegram, tmp_path,
                                                          monkeypatch, runs):
    monkeypatch.setenv("BOTOPT_TEST_TIME_SCALE", repr(SCALE))  # Telegram's 1 s gap: 10 ms
    cfgs = [host_cfg(redis_server.url, tmp_path / f"h{i}", telegram,
                     BOTOPT_TELEGRAM_BATCH_INTERVAL="0") for i in range(3)]
    enqueue(cfgs[0], [{"type": kind, "data": {"message": f"msg-{kind}"}}
                      for kind in "abc"])
    r = SharedState(redis_server.url, "botopt").client
    # A flush and a monitor that died holding an entry each: taken over after the claim
    # timeout, then (holding nothing, long idle) deleted.
    r.xreadgroup("flush", "dead-flush", {"botopt:nq:s:a": ">"}, count=1)
    r.xgroup_create("botopt:events", "monitors", id="0", mkstream=True)
    r.xadd("botopt:events", {"e": b'{"type":"run_finished","t":1,"data":{}}'})
    r.xreadgroup("monitors", "dead-monitor", {"botopt:events": ">"}, count=1)
    most = 0
    for i in range(runs):
        cfg = cfgs[i % 3]
        enqueue(cfg, [{"type": "abc"[i % 3], "data": {"message": f"run-{i}"}}])
        # The scaled clock and sleep go with the scaled pacing script (as in
        # benchmarks/multihost.py): with the wall clock's, each group-limit wait was slept
        # at full length (this test took 445 s at 500 runs).
        assert flush_notifications(cfg, clock=lambda: time.time() * SCALE,
                                   sleep=lambda s: time.sleep(max(0.0, s) / SCALE)
                                   ).remaining <= 1  # the dead flush holds one
        if i % 5 == 0:
            run_monitor(cfg, once=True, enqueue=lambda alerts: None)
        if i == runs // 2:
            time.sleep(4.5)  # the dead members' claims and idle time run out
        if i % 10 == 0:
            most = max(most, *(len(consumers(r, f"botopt:nq:s:{k}", "flush")) for k in "abc"),
                       len(consumers(r, "botopt:events", "monitors")))
    assert most <= 2  # the dead one, and none per run
    for kind in "abc":
        assert consumers(r, f"botopt:nq:s:{kind}", "flush") == []
    assert consumers(r, "botopt:events", "monitors") == []
    # nothing lost on the way: the dead flush's entry was taken over and delivered
    shown = " ".join(m["shown"] for m in telegram.received)
    assert "msg-a" in shown and all(f"run-{i} " in shown + " " or f"run-{i}\n" in shown
                                    for i in range(runs))
    assert r.xpending("botopt:events", "monitors")["pending"] == 0


SKEW = 15 * 60.0


def test_stopped_reporting_is_judged_on_the_servers_clock(redis_server, tmp_path):
    """Hosts 15 min fast and slow, and monitors as skewed: no false "stopped" or "stalled"
    alert, and a host that really stops is named once."""
    from botopt.core.state._workspace import Workspace
    from botopt.core.watch._monitor import Monitor

    extra = {"BOTOPT_MONITOR_STALE_AFTER": "3"}
    for name, skew in (("fast", SKEW), ("slow", -SKEW)):
        cfg = host_cfg(redis_server.url, tmp_path / name, BOTOPT_STATE_HOST_ID=name, **extra)
        ws = Workspace(tmp_path / name, cfg, clock=lambda s=skew: time.time() + s)
        ws.events().emit("run_finished", command="signals", duration_s=0.1)
    alerts: list[str] = []
    monitors = [Monitor(host_cfg(redis_server.url, tmp_path / f"m{i}", **extra),
                        clock=lambda s=skew: time.time() + s,
                        enqueue=lambda batch: alerts.extend(n["data"]["message"]
                                                            for n in batch))
                for i, skew in enumerate((SKEW, -SKEW))]
    for m in monitors:
        m.handle_pending()
        m.run_checks()
        m.commit()
    assert alerts == []
    # Both hosts stop: 3.3 s pass on the server's clock, the only one judged. Its record of
    # each host's last finished run moves back instead of the test waiting (a real server's
    # TIME cannot be moved); each host is then named once, by one monitor.
    r = SharedState(redis_server.url, "botopt").client
    for h, t in r.hgetall("botopt:hosts").items():
        r.hset("botopt:hosts", h, repr(float(t) - 3.3))
    for m in monitors:
        m.handle_pending()
        m.run_checks()
        m.commit()
    stopped = sorted(a.split()[1] for a in alerts if "stopped reporting" in a)
    assert stopped == ["fast", "slow"], alerts


@pytest.mark.slow  # waits out a real 2 s batching window on the server's clock
def test_batching_windows_are_on_the_servers_clock(redis_server, telegram, tmp_path):
    """A partial batch waits batch_interval on the server's clock, whatever the clock of
    the host that queued it (10 min fast or slow) or of the one that flushes."""
    cfgs = [host_cfg(redis_server.url, tmp_path / f"h{i}", telegram,
                     BOTOPT_TELEGRAM_BATCH_INTERVAL="2") for i in range(2)]
    enqueue(cfgs[0], [{"type": "fast", "data": {"message": "from-fast"}}],
            now=time.time() + 600)
    enqueue(cfgs[0], [{"type": "slow", "data": {"message": "from-slow"}}],
            now=time.time() - 600)
    assert flush_notifications(cfgs[1]).notifications_sent == 0  # not due yet: not unbatched
    time.sleep(2.3)
    result = flush_notifications(cfgs[1])
    assert result.notifications_sent == 2 and result.remaining == 0  # not held back 10 min
    from botopt.core.delivery._notify import queue_stats

    enqueue(cfgs[0], [{"type": "fast", "data": {"message": "x"}}], now=time.time() + 600)
    oldest = queue_stats(cfgs[1])["oldest_created_at"]
    assert abs(oldest - time.time()) < 5  # its age on the server's clock, not the host's


@pytest.mark.parametrize("url,secret", [
    ("redis://h:6379/0?password=Qz8xPw4uLm", "Qz8xPw4uLm"),
    ("redis://h:6379/0?db=0&password=Qz8x%23Pw", "Qz8x"),
    ("rediss://botopt:Qz8xPw4uLm@h:6380/1", "Qz8xPw4uLm"),
])
def test_a_password_in_the_url_is_never_shown(url, secret, tmp_path, monkeypatch):
    """config show, the crontab (which must not copy it) and connection errors."""
    from typer.testing import CliRunner

    from botopt.cli.main import app

    monkeypatch.setenv("BOTOPT_STATE_URL", url)
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "--json"])
    assert shown.exit_code == 0 and secret not in shown.stdout + shown.stderr
    assert "***" in shown.stdout
    cron = runner.invoke(app, ["--cache-dir", str(tmp_path), "cron"])
    assert cron.exit_code == 0, cron.stderr
    assert secret not in cron.stdout
    assert not any(line.startswith("BOTOPT_STATE_URL=") for line in cron.stdout.splitlines())
    assert "state.url comes from BOTOPT_STATE_URL" in cron.stdout
    # nothing listens on h:6379: the failure names the server without the password
    listed = runner.invoke(app, ["--cache-dir", str(tmp_path), "notify", "list", "--json"],
                           env={"BOTOPT_STATE_URL": url.replace("//h:", "//127.0.0.1:")
                                .replace(":6379", ":9").replace(":6380", ":9")})
    assert secret not in listed.stdout + listed.stderr


@pytest.mark.parametrize("password", ["ab#cdefgh", "ab?cdefgh", "ab@cdefgh", "ab/cdefgh"])
def test_an_unencoded_character_in_a_password_never_leaks_a_prefix(password):
    from botopt.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(env={"BOTOPT_STATE_URL": f"redis://botopt:{password}@h:6379/0"})
    message = str(err.value)
    assert message.startswith("state.url (env:BOTOPT_STATE_URL): ")
    assert "cdefgh" not in message and "'ab'" not in message and "percent-encode" in message


def test_cooldowns_recorded_during_an_outage_are_honoured_once_it_is_back(redis_server,
                                                                         tmp_path):
    from datetime import datetime, timezone

    from botopt.core.signals._gates import CooldownRecord
    from botopt.core.state._redis import shared_state
    from botopt.core.state._workspace import Workspace

    candle = datetime(2026, 9, 20, 12, 0, tzinfo=timezone.utc)
    seen = CooldownRecord("BTCUSDT", "long", candle)
    # the outage: nothing listens there, so host A records (and queues) it locally
    down = host_cfg("redis://127.0.0.1:9/0", tmp_path / "a")
    local = Workspace(tmp_path / "a", down).cooldowns()
    assert shared_state(down.state).down is not None
    assert local.record([seen]) == [seen]
    # back: neither host A nor host B calls it new again, and A's local copy went up
    up_a = host_cfg(redis_server.url, tmp_path / "a")
    up_b = host_cfg(redis_server.url, tmp_path / "b")
    assert Workspace(tmp_path / "a", up_a).cooldowns().record([seen]) == []
    assert Workspace(tmp_path / "b", up_b).cooldowns().record([seen]) == []
    assert seen in Workspace(tmp_path / "b", up_b).cooldowns().snapshot()
    assert Workspace(tmp_path / "a", down).cooldowns().snapshot() == []  # merged, not kept
    later = CooldownRecord("BTCUSDT", "long", candle.replace(hour=13))
    assert Workspace(tmp_path / "b", up_b).cooldowns().record([later]) == [later]


def test_status_reads_every_hosts_runs_from_the_server(redis_server, tmp_path):
    import json

    from typer.testing import CliRunner

    from botopt.cli.main import app
    from botopt.core.state._workspace import Workspace

    edge = host_cfg(redis_server.url, tmp_path / "edge", BOTOPT_STATE_HOST_ID="edge-1")
    events = Workspace(tmp_path / "edge", edge).events()
    events.emit("run_started", command="signals")
    events.emit("run_finished", command="signals", duration_s=0.25)
    env = {"BOTOPT_STATE_URL": redis_server.url, "BOTOPT_TELEGRAM_TIMEOUT": "1",
           "BOTOPT_STATE_CLAIM_TIMEOUT": "2"}
    viewer = ["--cache-dir", str(tmp_path / "viewer"), "status"]
    shown = CliRunner().invoke(app, [*viewer, "--json"], env=env)
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["last_run"]["host"] == "edge-1" and data["last_run"]["ok"]
    assert data["runs_last_hour"] == 1
    plain = CliRunner().invoke(app, viewer, env=env)
    assert "signals ok" in plain.stdout and "on edge-1" in plain.stdout


@pytest.mark.slow  # over 2 s: a server stopped and processes waiting out its connect timeout
def test_with_the_server_down_notify_list_shows_the_spool_and_cache_stats_fails(
        redis_server, tmp_path):
    import json

    from .test_shared_state import host

    home, url = tmp_path / "h", redis_server.url
    assert host(home, url, "cache-stats", "--json").returncode == 0
    redis_server.stop()
    add = host(home, url, "notify", "add", "-t", "alert", "-d", '{"message": "spooled"}')
    assert add.returncode == 0, add.stderr
    listed = host(home, url, "notify", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "spooled" in listed.stdout and listed.stderr.count("WARNING") == 1
    stats = host(home, url, "cache-stats", "--json")
    assert stats.returncode == 1 and stats.stdout == ""  # not zeros that pass for figures
    assert len(stats.stderr.strip().splitlines()) == 1 and "unreachable" in stats.stderr
    redis_server.start()
    assert json.loads(host(home, url, "cache-stats", "--json").stdout)["caches"]


# INFO server of Valkey 9.1 (abridged, as the server prints it): it answers redis_version
# too, the Redis release it is compatible with.
VALKEY_INFO = """# Server
redis_version:7.2.4
server_name:valkey
valkey_version:9.1.0
valkey_release_stage:ga
redis_mode:standalone
"""


def test_doctor_names_valkey_and_redis_by_their_own_version(redis_server):
    from botopt.core.state._redis import SharedState, describe_server, server_info

    info = dict(line.split(":", 1) for line in VALKEY_INFO.splitlines() if ":" in line)
    assert describe_server(info, {"aof_enabled": "1"})[
        "server"] == "valkey" and describe_server(info, {})["version"] == "9.1.0"
    real = server_info(SharedState(redis_server.url, "botopt"))
    raw = SharedState(redis_server.url, "botopt").client.info("server")
    assert real["server"] == "redis" and real["version"] == raw["redis_version"]


def test_history_table_has_a_host_column_with_several_hosts(redis_server, tmp_path):
    from typer.testing import CliRunner

    from botopt.cli.main import app
    from botopt.core.state._workspace import Workspace

    for name in ("edge-1", "edge-2"):
        cfg = host_cfg(redis_server.url, tmp_path / name, BOTOPT_STATE_HOST_ID=name)
        Workspace(tmp_path / name, cfg).events().emit(
            "run_failed", command="signals", error=f"DataError: on {name}")
    env = {"BOTOPT_STATE_URL": redis_server.url, "BOTOPT_TELEGRAM_TIMEOUT": "1",
           "BOTOPT_STATE_CLAIM_TIMEOUT": "2"}
    shown = CliRunner().invoke(app, ["--cache-dir", str(tmp_path / "v"), "history",
                                     "--type", "failure"], env=env)
    assert shown.exit_code == 0, shown.stderr
    assert any("host" in line and "type" in line and "what" in line
               for line in shown.stdout.splitlines())  # the header
    rows = [line for line in shown.stdout.splitlines() if "DataError" in line]
    assert any("edge-1" in r for r in rows) and any("edge-2" in r for r in rows)


def test_a_shared_host_id_or_another_chat_in_the_namespace_is_named(redis_server, telegram,
                                                                    tmp_path, caplog):
    from botopt.core.watch._doctor import _state

    def flush_warnings(cfg) -> list[str]:
        caplog.clear()
        flush_notifications(cfg)
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    one = host_cfg(redis_server.url, tmp_path / "one", telegram, BOTOPT_STATE_HOST_ID="edge")
    assert flush_warnings(one) == []
    assert flush_warnings(one) == []  # the same install again: nothing to say
    # a cloned container: another install under the same name
    clone = host_cfg(redis_server.url, tmp_path / "clone", telegram,
                     BOTOPT_STATE_HOST_ID="edge")
    (warning,) = flush_warnings(clone)
    assert "state.host_id 'edge' is used by two installs" in warning
    with pytest.raises(Exception, match="used by two installs"):
        _state(one)
    # a host that sends elsewhere
    other = host_cfg(redis_server.url, tmp_path / "other", telegram,
                     BOTOPT_STATE_HOST_ID="edge-2", BOTOPT_TELEGRAM_CHAT_ID="-1002")
    (warning,) = flush_warnings(other)
    assert "different Telegram chats (edge not to this one's)" in warning


def test_events_of_an_outage_reach_the_monitors_once_the_server_is_back(redis_server,
                                                                       tmp_path):
    import json

    from botopt.core.state._redis import shared_state
    from botopt.core.state._workspace import Workspace

    cfg = host_cfg(redis_server.url, tmp_path / "h", BOTOPT_STATE_HOST_ID="edge")
    events = Workspace(tmp_path / "h", cfg).events()
    redis_server.stop()
    events.emit("run_failed", command="signals", error="DataError: during the outage")
    assert (tmp_path / "h" / "events" / "shared-spool.log").exists()
    redis_server.start()
    shared_state(cfg.state).reset()  # a later run: the server answers again
    events.emit("run_finished", command="signals", duration_s=0.1)
    stream = [json.loads(f[b"e"]) for _, f in
              shared_state(cfg.state).client.xrange("botopt:events")]
    assert [e["type"] for e in stream] == ["run_finished", "run_failed"]
    assert stream[1]["data"]["error"] == "DataError: during the outage"
    assert not list((tmp_path / "h" / "events").glob("shared-spool*"))
    events.emit("run_finished", command="signals", duration_s=0.1)  # moved once only
    assert shared_state(cfg.state).client.xlen("botopt:events") == 3
