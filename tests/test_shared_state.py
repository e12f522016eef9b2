"""Shared state on a real Redis server (tests/redis_server.py): config, redaction, the shared
cache across hosts (separate processes, each with its own HOME and cache directory), and the
fallback when the server cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core.base._config import load_config
from botopt.core.base._redact import redact, redact_url
from botopt.core.errors import ConfigError

runner = CliRunner()
ARGS = ["signals", "-s", "BTCUSDT,ETHUSDT", "--json", "--as-of", "2026-09-20T12:00:03Z"]


def host_env(home: Path, url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTOPT_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), **extra)
    if url is not None:
        env["BOTOPT_STATE_URL"] = url
    home.mkdir(parents=True, exist_ok=True)
    return env


def host(home: Path, url: str | None, *args: str, **extra: str
         ) -> subprocess.CompletedProcess[str]:
    """One botopt command on a 'host': its own process, HOME and local cache directory."""
    return subprocess.run([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                           str(home / "cache"), *args], capture_output=True, text=True,
                          env=host_env(home, url, **extra), cwd=home, timeout=120)


@pytest.mark.parametrize("url,why", [
    ("http://127.0.0.1:6379", "scheme http:// is not redis://"),
    ("redis://", "has no host"),
    ("redis://h:99999", "not a URL"),
    ("redis://h:6379/x", "database 'x' is not a number"),
    ("redis://h:6379 ", "spaces"),
    ("unix://", "needs a socket path"),
])
def test_bad_state_url_is_a_config_error_naming_the_key(url, why):
    with pytest.raises(ConfigError) as err:
        load_config(env={"BOTOPT_STATE_URL": url})
    assert str(err.value).startswith("state.url (env:BOTOPT_STATE_URL): ")
    assert why in str(err.value)


def test_state_url_cli_error_exit_2_and_password_hidden(tmp_path):
    bad = "redis://botopt:s3cretPass@h:6379/zz"
    r = runner.invoke(app, ["signals", "-s", "BTCUSDT"], env={"BOTOPT_STATE_URL": bad})
    assert r.exit_code == 2 and "state.url" in r.stderr
    assert "s3cretPass" not in r.stderr + r.stdout and len(r.stderr.strip().splitlines()) == 1
    ns = runner.invoke(app, ["config", "show"], env={"BOTOPT_STATE_NAMESPACE": "a b"})
    assert ns.exit_code == 2 and "state.namespace" in ns.stderr


@pytest.mark.parametrize("option", ["socket_timeout=abc", "db=abc", "max_connections=x",
                                    "socket_connect_timeout=-1", "socket_timeout=1e309",
                                    "health_check_interval=x", "ssl_cert_reqs=bogus"])
def test_a_url_option_the_redis_client_refuses_is_a_config_error(tmp_path, option):
    """redis-py refuses these when it parses the URL or first connects (ValueError,
    OverflowError, TypeError): every command ended in an internal error."""
    url = f"redis://botopt:s3cretPass@127.0.0.1:9/0?{option}"
    for args in (["notify", "add", "-t", "alert", "-d", '{"message": "m"}'],
                 ["signals", "-s", "BTCUSDT"]):
        r = runner.invoke(app, ["--cache-dir", str(tmp_path), "--quiet", *args],
                          env={"BOTOPT_STATE_URL": url})
        assert r.exit_code == 2, (option, r.stderr)
        assert r.stderr.splitlines()[-1].startswith(
            "botopt: error: state.url: an option the redis client refuses"), r.stderr
        assert "internal error" not in r.stderr and "s3cretPass" not in r.stderr


def test_credentials_redacted_everywhere():
    url = "rediss://botopt:p%40ss-W0rd@redis.example.com:6380/1"
    assert redact_url(url) == "rediss://botopt:***@redis.example.com:6380/1"
    assert "p%40ss-W0rd" not in redact(f"Error connecting to {url}: refused")
    cfg = load_config(env={"BOTOPT_STATE_URL": url})
    # registered at load: the bare password is hidden too, wherever it turns up
    assert redact("AUTH p@ss-W0rd failed") == "AUTH *** failed"
    shown = runner.invoke(app, ["config", "show", "--json"], env={"BOTOPT_STATE_URL": url})
    assert shown.exit_code == 0 and "p%40ss" not in shown.stdout and "p@ss" not in shown.stdout
    assert "botopt:***@redis.example.com" in shown.stdout
    assert cfg.state.url == url


def test_local_backend_never_imports_redis(tmp_path):
    code = ("import sys\nfrom botopt.cli.main import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('REDIS', 'redis' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, "--cache-dir", str(tmp_path / "c"),
                          *ARGS], capture_output=True, text=True, env=host_env(tmp_path, None))
    assert "REDIS False" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow  # over 2 s: host processes on a real server
def test_a_url_whose_options_are_checked_still_has_every_connection(redis_server, tmp_path):
    """The options are checked on a connection built outside the pool: one made by the
    pool counted against ?max_connections=1 and left none for the run."""
    url = redis_server.url + ("&" if "?" in redis_server.url else "?") + "max_connections=1"
    r = host(tmp_path / "a", url, *ARGS)
    assert r.returncode == 0, r.stderr
    assert "unreachable" not in r.stderr and "Too many" not in r.stderr


def test_cache_entry_computed_on_host_a_is_a_hit_on_host_b(redis_server, tmp_path):
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_store import cache_stats

    a = host(tmp_path / "a", redis_server.url, *ARGS)
    assert a.returncode == 0, a.stderr
    b = host(tmp_path / "b", redis_server.url, *ARGS)
    assert b.returncode == 0, b.stderr
    fresh = host(tmp_path / "c", None, *ARGS, "--no-cache")
    assert json.loads(a.stdout) == json.loads(b.stdout) == json.loads(fresh.stdout)
    # B computed nothing: its one lookup (the whole-run entry) was a hit written by A ...
    counts, entries = cache_stats(SharedState(redis_server.url, "botopt"))
    assert counts["signals"][:2] == (1, 1), counts
    assert counts["features"][:2] == (0, 2) and entries["features"][0] == 2
    # ... and nothing of the cache was written on either host's disk.
    for h in ("a", "b"):
        assert not (tmp_path / h / "cache" / "cache" / "entries").exists()
    # A stage entry is a hit on a host that changes only the whole-run key (another
    # symbol order gives the same stages).
    c = host(tmp_path / "d", redis_server.url, "signals", "-s", "ETHUSDT,BTCUSDT", "--json",
             "--as-of", "2026-09-20T12:00:03Z")
    assert c.returncode == 0, c.stderr
    counts, _ = cache_stats(SharedState(redis_server.url, "botopt"))
    assert counts["features"][:2] == (2, 2), counts


def test_cache_entries_expire_on_the_server(redis_server):
    from botopt.core.state._cache import CacheManager
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_store import RedisCacheStore

    shared = SharedState(redis_server.url, "ttl-test")
    mgr = CacheManager(root=Path("/nonexistent"), _store=RedisCacheStore(shared))
    assert mgr.set("features", "k", {"a": [1, 2.5]}, ttl=30)
    (key,) = list(shared.client.scan_iter(match="ttl-test:cache:*"))
    assert 29_000 < shared.client.pttl(key) <= 30_000
    assert shared.client.get(key)[:2] == b"b1"  # the local store's header, then the codec
    assert mgr.get("features", "k") == {"a": [1, 2.5]}
    shared.client.set(key, b"\x80\x04pickled")  # a planted foreign value: a miss, removed
    assert mgr.get("features", "k") is not None and not shared.client.exists(key)


def test_unreachable_server_signals_answers_with_one_warning(tmp_path):
    from .redis_server import free_port

    url = f"redis://botopt:hunter2pw@127.0.0.1:{free_port()}/0"
    r = host(tmp_path / "a", url, *ARGS)
    fresh = host(tmp_path / "b", None, *ARGS, "--no-cache")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(fresh.stdout)
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "unreachable" in warnings[0], r.stderr
    assert "hunter2pw" not in r.stderr and "botopt:***@127.0.0.1" in r.stderr


def test_doctor_checks_the_shared_server(tmp_path):
    from .redis_server import free_port, start_server

    on = start_server(tmp_path / "aof")
    off = start_server(tmp_path / "noaof", appendonly=False)
    try:
        base = ["--cache-dir", str(tmp_path / "c"), "doctor", "--json"]
        res = runner.invoke(app, base, env={"BOTOPT_STATE_URL": on.url})
        state = {c["check"]: c for c in json.loads(res.stdout)["checks"]}["state"]
        assert state["ok"] and "AOF on (appendfsync always)" in state["message"], state
        assert "redis 7" in state["message"] or "valkey" in state["message"]
        res = runner.invoke(app, base, env={"BOTOPT_STATE_URL": off.url})
        state = {c["check"]: c for c in json.loads(res.stdout)["checks"]}["state"]
        assert not state["ok"] and "persistence (AOF) is off" in state["message"]
        assert "loses every queued notification" in state["message"] and res.exit_code == 1
        url = f"redis://u:pw-secret-1@127.0.0.1:{free_port()}/0"
        res = runner.invoke(app, base, env={"BOTOPT_STATE_URL": url})
        state = {c["check"]: c for c in json.loads(res.stdout)["checks"]}["state"]
        # (not "unreachable": another test may have registered a short secret inside it)
        assert not state["ok"] and "check state.url, the network" in state["message"]
        assert "pw-secret-1" not in res.stdout + res.stderr
    finally:
        on.stop()
        off.stop()


@pytest.mark.slow
def test_cache_stats_show_every_hosts_figures(redis_server, tmp_path):
    for h in ("a", "b"):
        assert host(tmp_path / h, redis_server.url, *ARGS).returncode == 0
    out = host(tmp_path / "c", redis_server.url, "cache-stats", "--json")
    caches = json.loads(out.stdout)["caches"]
    assert (caches["signals"]["hits"], caches["signals"]["misses"]) == (1, 1)
    assert caches["features"]["entries"] == 2 and caches["features"]["size_bytes"] > 0
    local = host(tmp_path / "c", None, "cache-stats", "--json")
    assert json.loads(local.stdout)["caches"]["signals"]["hits"] == 0


@pytest.mark.slow  # over 2 s: host processes on a real server
def test_cache_clear_empties_the_shared_cache(redis_server, tmp_path):
    assert host(tmp_path / "a", redis_server.url, *ARGS).returncode == 0
    one = host(tmp_path / "b", redis_server.url, "cache-clear", "--cache", "features")
    assert one.returncode == 0, one.stderr
    caches = json.loads(host(tmp_path / "b", redis_server.url, "cache-stats", "--json"
                             ).stdout)["caches"]
    assert caches["features"]["entries"] == 0 and caches["features"]["misses"] == 0
    assert caches["regime"]["entries"] == 2
    assert host(tmp_path / "b", redis_server.url, "cache-clear").returncode == 0
    caches = json.loads(host(tmp_path / "b", redis_server.url, "cache-stats", "--json"
                             ).stdout)["caches"]
    assert all(c["entries"] == 0 for c in caches.values())
    redis_server.stop()
    down = host(tmp_path / "b", redis_server.url, "cache-clear")
    assert down.returncode == 1 and "unreachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_cooldowns_and_regimes_are_recorded_once_across_hosts(redis_server, tmp_path):
    from datetime import datetime, timedelta, timezone

    from botopt.core.signals._gates import CooldownRecord, CooldownStore
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_store import RedisCooldownStore, RedisRegimeState
    from botopt.core.state._regime_state import RegimeState

    t = datetime(2026, 9, 20, 12, 0, tzinfo=timezone.utc)
    hosts = [SharedState(redis_server.url, "once") for _ in range(2)]  # two connections
    cool = [RedisCooldownStore(h, "scope", CooldownStore(tmp_path / f"c{i}.json"))
            for i, h in enumerate(hosts)]
    recs = [CooldownRecord("BTCUSDT", "long", t), CooldownRecord("ETHUSDT", "short", t)]
    before = cool[1].digest()
    assert cool[0].record(recs) == recs
    assert cool[1].record(recs) == [] and cool[1].digest() != before
    assert cool[1].record([*recs, CooldownRecord("BTCUSDT", "long", t + timedelta(minutes=5))]
                          ) == [CooldownRecord("BTCUSDT", "long", t + timedelta(minutes=5))]
    assert sorted(r.key() for r in cool[0].snapshot()) == sorted(
        r.key() for r in [*recs, CooldownRecord("BTCUSDT", "long", t + timedelta(minutes=5))])
    reg = [RedisRegimeState(h, "scope", RegimeState(tmp_path / f"r{i}.json"))
           for i, h in enumerate(hosts)]
    assert reg[0].update([("BTCUSDT", "TREND_UP", t)]) == []  # first sight: not a change
    later = t + timedelta(minutes=5)
    assert reg[0].update([("BTCUSDT", "RANGE", later)]) == [("BTCUSDT", "TREND_UP", "RANGE")]
    assert reg[1].update([("BTCUSDT", "RANGE", later)]) == []  # the other host: once only
    assert reg[1].update([("BTCUSDT", "HIGH_VOL", t)]) == []  # an older candle changes nothing
    # the server gone: both fall back to the local files (after one warning), never fail
    redis_server.stop()
    assert cool[0].record([CooldownRecord("SOLUSDT", "long", t)]) == [
        CooldownRecord("SOLUSDT", "long", t)]
    assert hosts[0].down is not None and (tmp_path / "c0.json").exists()


@pytest.mark.slow
def test_cache_stats_per_host_next_to_the_total(redis_server, tmp_path):
    """Two hosts (their own processes, HOMEs, cache dirs and host ids) on one real server:
    each host's figures are its own, and they add up to the total."""
    runs = [("host-a", "a"), ("host-b", "b"), ("host-b", "b")]
    for host_id, home in runs:
        r = host(tmp_path / home, redis_server.url, *ARGS, BOTOPT_STATE_HOST_ID=host_id)
        assert r.returncode == 0, r.stderr
    out = host(tmp_path / "c", redis_server.url, "cache-stats", "--json",
               BOTOPT_STATE_HOST_ID="host-c")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    hosts, caches = got["hosts"], got["caches"]
    # host-a computed the run; host-b found it whole in the shared cache, twice
    assert hosts["host-a"]["signals"]["misses"] == 1 and hosts["host-a"]["signals"]["hits"] == 0
    assert hosts["host-b"]["signals"] == {"hits": 2, "misses": 0, "hit_rate": 1.0,
                                          "time_saved_seconds":
                                          hosts["host-b"]["signals"]["time_saved_seconds"]}
    assert "host-c" not in hosts  # reading the figures counts nothing
    for name, total in caches.items():
        for field in ("hits", "misses"):
            assert total[field] == sum(h.get(name, {}).get(field, 0) for h in hosts.values())
    # the table: the total, then one row per host and cache that saw traffic
    table = host(tmp_path / "c", redis_server.url, "cache-stats").stdout
    assert "every host" in table and "per host" in table
    assert any(line.split()[:2] == ["host-b", "signals"] for line in table.splitlines())
    # a local cache has no host breakdown
    local = json.loads(host(tmp_path / "c", None, "cache-stats", "--json").stdout)
    assert "hosts" not in local
    # cache-clear drops every host's counters with the totals
    assert host(tmp_path / "c", redis_server.url, "cache-clear").returncode == 0
    after = json.loads(host(tmp_path / "c", redis_server.url, "cache-stats", "--json").stdout)
    assert after["hosts"] == {}


def test_a_garbled_statistics_field_counts_as_zero(redis_server):
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_store import cache_stats, host_cache_stats

    shared = SharedState(redis_server.url, "garbled")
    key = shared.key("cache-stats", "features")
    shared.client.hset(key, mapping={"hits": "7", "misses": "x", "saved": "nan",
                                     "hits@h1": "3", "misses@h1": "1e999", "saved@h1": "0.5"})
    counts, _ = cache_stats(shared)
    assert counts["features"] == (7, 0, 0.0)
    assert host_cache_stats(shared) == {"h1": {"features": (3, 0, 0.5)}}
