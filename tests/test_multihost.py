"""Several hosts, one bot, against a real Redis server: hosts are separate processes, each
with its own HOME and local cache directory (botopt.benchmarks.multihost drives them).

Time is compressed 5x or 10x on both sides (the fake Bot API's clock and the hosts' pacing),
so Telegram's 20 messages a minute per group are 20 per 12 or 6 real seconds; counts are
exact."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from botopt.benchmarks.multihost import KINDS, plan, run_fleet

from .test_shared_state import host_env

ROOT = Path(__file__).resolve().parents[1]
N, HOSTS = 300, 3


def check_batches(outcome) -> None:
    per_type = Counter(i["type"] for h in plan(N, HOSTS) for i in h)
    by_type = outcome.messages_by_type()
    for kind in KINDS:
        assert by_type.get(kind, 0) <= math.ceil(per_type[kind] / 5), (kind, by_type)


@pytest.mark.slow
def test_three_hosts_share_pacing_and_batches(redis_server):
    # 5x, not 10x: the pacing's margins (250 ms a chat, 2 s a group window) shrink with the
    # scale, and a loaded test machine delays requests by tens of ms.
    shared = run_fleet(redis_server.url, N, HOSTS, scale=5.0, deadline=120)
    assert shared.lost == 0 and shared.sent_twice == 0
    assert shared.too_many == 0, shared.responses
    check_batches(shared)
    assert all(code == 0 for code in shared.exit_codes), shared.exit_codes


@pytest.mark.slow
def test_sigkill_of_flushing_hosts_loses_nothing(redis_server):
    out = run_fleet(redis_server.url, N, HOSTS, scale=10.0, deadline=120, kills=5, seed=11)
    assert out.exit_codes.count(-9) == 5
    assert out.lost == 0
    # A resend only for what was in flight at a kill: at most one batch (5) per kill.
    assert out.sent_twice <= 5 * 5, out.sent_twice


@pytest.mark.slow
def test_redis_restart_with_aof_mid_run_loses_nothing(redis_server):
    done = threading.Event()

    def chaos(elapsed: float) -> None:
        if elapsed > 4 and not done.is_set():
            done.set()
            redis_server.restart()  # SIGKILL, then start again on the same AOF

    out = run_fleet(redis_server.url, N, HOSTS, scale=10.0, deadline=120, chaos=chaos)
    assert done.is_set() and out.lost == 0


@pytest.mark.slow
def test_redis_outage_of_30s_loses_nothing_and_delivers_after(redis_server):
    state = {"down_at": None, "up_at": None}

    def chaos(elapsed: float) -> None:
        if state["down_at"] is None and elapsed > 3:
            state["down_at"] = elapsed
            redis_server.stop()
        elif state["up_at"] is None and state["down_at"] is not None \
                and elapsed > state["down_at"] + 30:
            state["up_at"] = elapsed
            redis_server.start()

    out = run_fleet(redis_server.url, N, HOSTS, scale=10.0, deadline=150, chaos=chaos)
    assert state["up_at"] is not None and out.lost == 0
    assert out.seconds > state["up_at"]  # the rest went out after the outage


def live_data(directory: Path, symbols: list[str]) -> None:
    """Sample candles moved so that the last one closed just now."""
    directory.mkdir(parents=True)
    step = timedelta(minutes=5)
    now = datetime.now(timezone.utc)
    last = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5) - step
    for sym in symbols:
        df = pl.read_ipc(ROOT / "sample_data" / f"{sym}-5m.feather").tail(1500)
        shift = last - df.get_column("date").max()
        df.with_columns(pl.col("date") + shift).write_ipc(
            directory / f"{sym[:-4]}_USDT-5m.feather")


@pytest.mark.slow
def test_two_hosts_on_one_candle_queue_each_signal_once(redis_server, tmp_path):
    from botopt.core.state._queue import LocalQueue
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_queue import SharedQueue

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    data = tmp_path / "data"
    live_data(data, symbols)
    extra = {"BOTOPT_DATA_SOURCE": "local", "BOTOPT_DATA_DATA_DIR": str(data),
             "BOTOPT_GATES_MIN_STRENGTH": "0", "BOTOPT_GATES_MIN_PROBABILITY": "0",
             "BOTOPT_GATES_BLOCK_HIGH_VOL": "false", "BOTOPT_GATES_MIN_VOLUME_Z": "-1000",
             "BOTOPT_GATES_CORRELATION_THRESHOLD": "1"}
    # Both hosts judge the candles closed at one moment, as two cron jobs of one minute do:
    # a pinned --as-of (live for one interval, --notify records as a live run does) instead
    # of the wall clock, where a candle could close between the two starts.
    as_of = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "botopt.cli.main", "--cache-dir",
         str(tmp_path / f"h{i}" / "cache"), "signals", "-s", ",".join(symbols),
         "--as-of", as_of, "--notify", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=host_env(tmp_path / f"h{i}", redis_server.url, **extra))
        for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    answers = [{(s["symbol"], s["direction"], s["candle_time"], s["gate"]["passed"])
                for s in json.loads(o[0])["signals"]} for o in outs]
    assert answers[0] == answers[1]
    passed = {(sym, d, t) for sym, d, t, ok in answers[0] if ok}
    assert passed  # the permissive gates let signals through
    queued = [p for p in SharedQueue(SharedState(redis_server.url, "botopt"),
                                     LocalQueue(tmp_path)).pending(1000)
              if p["type"] == "signal"]
    keys = Counter((p["data"]["symbol"], p["data"]["direction"], p["data"]["candle_time"])
                   for p in queued)
    assert set(keys) == passed and set(keys.values()) == {1}, keys


@pytest.mark.slow
def test_signals_not_queued_with_the_server_up_are_queued_by_the_next_run(redis_server,
                                                                        tmp_path):
    """The queue on the server refused the notifications (here: an account without its keys)
    and the local spool could not take them either (here: a full disk), while the
    cooldowns and regime changes had gone to the server: the signals were taken for
    notified by every later run and host, lost for good (sweep E, F2, left open on the
    shared state). What could not be queued is now taken back where it was recorded, so
    the next run on the candle queues exactly what a run with a working queue did."""
    import redis

    from botopt.core.state._queue import LocalQueue
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_queue import SharedQueue

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    data = tmp_path / "data"
    live_data(data, symbols)
    admin = redis.Redis.from_url(redis_server.url)
    # every key of the namespace but the queue's: the run is whole, the queue refused
    admin.acl_setuser("noqueue", enabled=True, passwords=["+pw"], channels=["*"],
                      keys=[f"gap:{part}*" for part in ("cache", "cooldowns", "events",
                                                        "regimes", "signal", "host")],
                      commands=["+@all"])
    limited = redis_server.url.replace("redis://", "redis://noqueue:pw@")
    extra = {"BOTOPT_DATA_SOURCE": "local", "BOTOPT_DATA_DATA_DIR": str(data),
             "BOTOPT_GATES_MIN_STRENGTH": "0", "BOTOPT_GATES_MIN_PROBABILITY": "0",
             "BOTOPT_GATES_BLOCK_HIGH_VOL": "false", "BOTOPT_GATES_MIN_VOLUME_Z": "-1000",
             "BOTOPT_GATES_CORRELATION_THRESHOLD": "1"}
    now = datetime.now(timezone.utc).replace(microsecond=0)
    before, at = (now - timedelta(minutes=5)).isoformat(), now.isoformat()

    def run(ns: str, as_of: str, url: str = redis_server.url, fsize: int = 0) -> str:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        home = tmp_path / ns
        done = subprocess.run(
            [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(home / "cache"),
             "signals", "-s", ",".join(symbols), "--as-of", as_of, "--notify"],
            capture_output=True, text=True, timeout=120, preexec_fn=limit if fsize else None,
            env=host_env(home, url, BOTOPT_STATE_NAMESPACE=ns, **extra))
        assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr
        return done.stderr

    def queued(ns: str) -> list[tuple[str, str]]:
        rows = SharedQueue(SharedState(redis_server.url, ns),
                           LocalQueue(tmp_path / ns / "cache" / "notify")).pending(1000)
        return sorted((r["type"], json.dumps(r["data"], sort_keys=True)) for r in rows)

    for ns in ("ref", "gap"):
        run(ns, before)
    run("ref", at)
    assert "not queued" in run("gap", at, limited, fsize=8 * 1024)  # and the disk full
    want = queued("ref")
    assert len(queued("gap")) < len(want)  # the candle's notifications: not queued
    run("gap", at)  # a working queue again, the same candle
    assert any(kind == "signal" for kind, _ in want)
    assert queued("gap") == want
