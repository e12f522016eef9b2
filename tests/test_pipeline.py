"""The signals pipeline: batch == per-symbol, cached == uncached, only closed candles."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config
from botopt.core.signals._pipeline import _run_signals, _Stages
from botopt.core.state._cache import CacheManager

runner = CliRunner()
SAMPLE = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
T0 = datetime(2026, 9, 19, 6, 0, 30, tzinfo=timezone.utc)


def cfg_for(tmp_path, **extra):
    return load_config(overrides={"cache.dir": str(tmp_path / "cache"), **extra})


def test_batch_equals_sequential_on_sample_data(tmp_path):
    # kept apart from the real-data check below, which is skipped when the shared data is absent
    cfg = cfg_for(tmp_path)
    for minutes in (0, 600, 3000):
        now = T0 + timedelta(minutes=minutes)
        batch = _run_signals(cfg, SAMPLE, as_of=now, use_cache=False, notify=False)
        seq = _run_signals(cfg, SAMPLE, as_of=now, use_cache=False, notify=False,
                          batch=False)
        assert batch == seq


def test_batch_equals_sequential_on_real_data(tmp_path, shared_data):
    real = cfg_for(tmp_path, **{"data.source": "local",
                                "data.data_dir": str(shared_data / "candles" / "5m")})
    syms = ["ADA_BTC", "DASH_BTC", "ETC_BTC", "ETH_BTC", "LTC_BTC", "NXT_BTC", "TRX_BTC",
            "XLM_BTC", "XMR_BTC", "ZEC_BTC"]
    now = datetime(2018, 1, 25, 13, 2, tzinfo=timezone.utc)
    assert _run_signals(real, syms, as_of=now, use_cache=False, notify=False) == \
        _run_signals(real, syms, as_of=now, use_cache=False, notify=False, batch=False)


@pytest.mark.slow
def test_cached_equals_uncached_over_a_replay(tmp_path):
    """An hour of cron runs every 60 s: each cached answer equals the uncached one, and the
    caches are actually used."""
    clock = [T0.timestamp()]
    cfg = cfg_for(tmp_path, **{"cache.features_ttl": 600, "cache.regime_ttl": 600,
                               "cache.predictions_ttl": 600, "cache.gates_ttl": 600})
    mgr = CacheManager.from_config(cfg, clock=lambda: clock[0])
    stages = _Stages()
    for k in range(60):
        now = T0 + timedelta(seconds=60 * k)
        clock[0] = now.timestamp()
        cached = _run_signals(cfg, SAMPLE[:3], as_of=now, manager=mgr, stages=stages)
        fresh = _run_signals(cfg, SAMPLE[:3], as_of=now, use_cache=False,
                            notify=False)
        assert cached == fresh, now
    counts = mgr.counters()
    assert counts["signals"]["hits"] >= 40  # 4 of 5 minutes share a candle
    assert stages.features <= 3 * 13  # one computation per symbol per new candle (+1)


def test_new_candle_invalidates_and_ttl_expires(tmp_path):
    clock = [T0.timestamp()]
    cfg = cfg_for(tmp_path)
    mgr = CacheManager.from_config(cfg, clock=lambda: clock[0])
    a = _run_signals(cfg, ["BTCUSDT"], as_of=T0, manager=mgr)
    b = _run_signals(cfg, ["BTCUSDT"], as_of=T0 + timedelta(minutes=5), manager=mgr)
    assert a.symbols[0].candle_time + timedelta(minutes=5) == b.symbols[0].candle_time
    assert not b.from_cache
    clock[0] += 20  # within every TTL (the shortest stage here, predictions, is 30 s)
    assert _run_signals(cfg, ["BTCUSDT"], as_of=T0 + timedelta(minutes=5), manager=mgr
                       ).from_cache
    clock[0] += 3600  # every TTL has passed: recomputed, same answer
    c = _run_signals(cfg, ["BTCUSDT"], as_of=T0 + timedelta(minutes=5), manager=mgr)
    assert not c.from_cache and c == b


def test_changed_setting_is_a_miss(tmp_path):
    cfg = cfg_for(tmp_path)
    mgr = CacheManager.from_config(cfg)
    _run_signals(cfg, SAMPLE[:2], as_of=T0, manager=mgr)
    other = cfg_for(tmp_path, **{"gates.min_strength": 0.0, "gates.min_probability": 0.0})
    r = _run_signals(other, SAMPLE[:2], as_of=T0, manager=CacheManager.from_config(other))
    assert not r.from_cache
    assert r == _run_signals(other, SAMPLE[:2], as_of=T0, use_cache=False, notify=False)


def test_passed_signal_recorded_once_and_cooldown_blocks_later(tmp_path):
    cfg = cfg_for(tmp_path, **{"gates.min_strength": 0.0, "gates.min_probability": 0.0,
                               "gates.block_high_vol": False, "gates.min_volume_z": -99.0,
                               "gates.correlation_threshold": 1.0})
    first = _run_signals(cfg, SAMPLE, as_of=T0, notify=True)
    assert first.passed and first.new_signals == first.passed
    again = _run_signals(cfg, SAMPLE, as_of=T0)
    assert again == first and again.new_signals == []
    # What the cache served equals a fresh computation against the updated cooldown state.
    assert _run_signals(cfg, SAMPLE, as_of=T0, use_cache=False, notify=False) == first
    later = _run_signals(cfg, SAMPLE, as_of=T0 + timedelta(minutes=5), use_cache=False)
    blocked = [s for s in later.symbols if any(r.startswith("cooldown") for r in
                                                 s.gate_reasons)]
    same_dir = {(s.symbol, s.direction) for s in first.passed}
    assert all((s.symbol, s.direction) in same_dir for s in blocked)
    assert blocked or not same_dir & {(s.symbol, s.direction) for s in later.symbols}


def test_signals_json_cli(tmp_path):
    result = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals", "--symbols",
                                 "btcusdt,ETHUSDT,SOLUSDT", "--as-of", "2026-09-20T12:00Z",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["as_of"] == "2026-09-20T12:00:00Z" and out["interval"] == "5m"
    assert out["source"] == "sample"
    assert {s["symbol"] for s in out["signals"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for s in out["signals"]:
        assert s["candle_time"] == "2026-09-20T11:55:00Z"
        assert s["regime"] in ("TREND_UP", "TREND_DOWN", "RANGE", "HIGH_VOL")
        assert set(s["gate"]) == {"passed", "reasons"} and isinstance(s["gate"]["passed"], bool)
        assert s["direction"] in ("long", "short", "flat")
    no_cache = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals", "--symbols",
                                   "BTCUSDT,ETHUSDT,SOLUSDT", "--as-of", "2026-09-20T12:00Z",
                                   "--json", "--no-cache"])
    assert json.loads(no_cache.stdout) == out
    plain = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals", "-s", "BTCUSDT",
                                "--as-of", "2026-09-20T12:00Z"])
    assert plain.exit_code == 0 and "BTCUSDT" in plain.stdout and "\x1b[" not in plain.stdout


@pytest.mark.parametrize("n", [1, 2])
def test_single_symbol_and_pairs_work(tmp_path, n):
    r = _run_signals(cfg_for(tmp_path), SAMPLE[:n], as_of=T0)
    assert len(r.symbols) == n


def test_cron_with_a_moving_clock_and_default_settings(tmp_path):
    """Cron as it runs: a minute apart, 0.2-4 s of start jitter, the clock moving with the
    runs, no cache settings. Every answer equals an uncached bot's (its own state), and
    4 runs in 5 are answered from the cache (the bound with 5m candles: 80 %)."""
    import random

    rng = random.Random(14)
    clock = [0.0]
    cfg = cfg_for(tmp_path / "cached")
    ref = cfg_for(tmp_path / "uncached")
    mgr = CacheManager.from_config(cfg, clock=lambda: clock[0])
    cached, fresh = _Stages(), _Stages()
    start = datetime(2026, 9, 19, 6, 0, tzinfo=timezone.utc)
    runs = 30
    for k in range(runs):
        now = start + timedelta(seconds=60 * k + rng.uniform(0.2, 4.0))
        clock[0] = now.timestamp()
        a = _run_signals(cfg, SAMPLE[:4], as_of=now, manager=mgr, stages=cached)
        b = _run_signals(ref, SAMPLE[:4], as_of=now, use_cache=False, stages=fresh)
        assert a == b, now
    assert fresh.features == 4 * runs and fresh.gates == runs
    for stage in ("features", "regime", "predictions", "gates"):
        assert getattr(cached, stage) <= 0.22 * getattr(fresh, stage), stage
    assert mgr.counters()["signals"]["hits"] == runs - runs // 5


def _write_dir(path, frames):
    from botopt.core.data._store import _write

    path.mkdir(parents=True)
    for sym, df in frames.items():
        _write(path / f"{sym}-5m.feather", df)
    return path


def _sample_frames(scale: dict[str, float] | None = None, copy: dict[str, str] | None = None):
    """The bundled candles per symbol; ``copy`` replaces a symbol's prices by another's
    (a perfectly correlated pair), ``scale`` multiplies a symbol's prices."""
    import polars as pl

    from botopt.core import load_candles

    base = load_candles(SAMPLE, config=load_config(), as_of="2100-01-01")
    frames = {str(k[0]): v for k, v in base.partition_by("symbol", as_dict=True).items()}
    out = {}
    for s in SAMPLE:
        src = frames[(copy or {}).get(s, s)].with_columns(symbol=pl.lit(s))
        f = (scale or {}).get(s, 1.0)
        out[s] = src.with_columns(pl.col("open", "high", "low", "close") * f)
    return out


OPEN_GATES = {"gates.min_strength": 0.0, "gates.min_probability": 0.0,
              "gates.block_high_vol": False, "gates.min_volume_z": -99.0}


def test_switching_data_dirs_never_mixes_state(tmp_path):
    """Run A, then B, then B with --no-cache: equal answers; cooldowns, regime history and
    correlation state are kept apart per data directory."""
    a_dir = _write_dir(tmp_path / "A", _sample_frames())
    b_dir = _write_dir(tmp_path / "B", _sample_frames(copy={"ETHUSDT": "BTCUSDT"}))
    base = {"cache.dir": str(tmp_path / "c"), "data.source": "local", **OPEN_GATES}
    cfg_a = load_config(overrides={**base, "data.data_dir": str(a_dir)})
    cfg_b = load_config(overrides={**base, "data.data_dir": str(b_dir)})
    # The same B bot in a directory of its own, that never saw A.
    alone = load_config(overrides={**base, "cache.dir": str(tmp_path / "alone"),
                                   "data.data_dir": str(b_dir)})
    # Replays of the past are experiments that record nothing: notify=True records them.
    for k in range(3):
        now = T0 + timedelta(minutes=5 * k)
        _run_signals(cfg_a, SAMPLE, as_of=now, notify=True)
        b = _run_signals(cfg_b, SAMPLE, as_of=now, notify=True)
        assert b == _run_signals(cfg_b, SAMPLE, as_of=now, use_cache=False, notify=True)
        assert b == _run_signals(alone, SAMPLE, as_of=now, use_cache=False, notify=True)
    scopes = sorted(p.name for p in (tmp_path / "c" / "state").iterdir())
    assert len(scopes) == 2 and len(list((tmp_path / "c" / "correlation").iterdir())) == 2
    for scope in scopes:
        assert (tmp_path / "c" / "state" / scope / "regimes.json").is_file()
    assert not (tmp_path / "c" / "gates").exists()  # regimes.json is not under gates/


@pytest.mark.slow
@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.sampled_from("AB"), min_size=2, max_size=4),
       factor=st.floats(0.5, 2.0), step=st.integers(0, 3))
def test_cached_equals_no_cache_after_switching_dirs(tmp_path_factory, order, factor, step):
    tmp = tmp_path_factory.mktemp("switch")
    dirs = {"A": _write_dir(tmp / "A", _sample_frames()),
            "B": _write_dir(tmp / "B", _sample_frames(
                scale={"SOLUSDT": factor},
                copy={"ETHUSDT": "BTCUSDT", "XRPUSDT": "BNBUSDT"}))}
    base = {"cache.dir": str(tmp / "c"), "data.source": "local", **OPEN_GATES}
    for i, name in enumerate(order):
        cfg = load_config(overrides={**base, "data.data_dir": str(dirs[name])})
        # The same bot with a directory to itself: what "never mixed" means.
        alone = load_config(overrides={**base, "data.data_dir": str(dirs[name]),
                                       "cache.dir": str(tmp / f"alone-{name}")})
        now = T0 + timedelta(minutes=5 * (i // 2 + step))
        cached = _run_signals(cfg, SAMPLE, as_of=now, notify=True)
        assert cached == _run_signals(cfg, SAMPLE, as_of=now, use_cache=False, notify=True)
        assert cached == _run_signals(alone, SAMPLE, as_of=now, use_cache=False, notify=True)


def test_library_run_writes_nothing_under_home(tmp_path):
    """run_signals, then get_status, with cache.dir set: every file (events.log included)
    lands in cache.dir; HOME stays empty."""
    import os

    from botopt.core import get_status

    home = tmp_path / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c"), **OPEN_GATES,
                                 "gates.correlation_threshold": 1.0})
    result = _run_signals(cfg, SAMPLE, as_of=T0, notify=True)
    assert result.new_signals  # something was queued and emitted
    status = get_status(cfg)
    assert status["notifications"]["pending"] >= len(result.new_signals) or status
    assert (tmp_path / "c" / "events" / "events.log").read_text().count("signal_passed") \
        == len(result.new_signals)
    assert list(home.rglob("*")) == []


def test_warm_cron_run_answers_without_polars_or_numpy(tmp_path):
    """Within the candle slot a new process answers from the whole-run entry without
    importing polars or numpy, and the answer equals --no-cache."""
    import subprocess
    import sys

    c = str(tmp_path / "c")
    args = ["--cache-dir", c, "signals", "-s", "BTCUSDT,ETHUSDT", "--json"]
    first = runner.invoke(app, [*args, "--as-of", "2026-09-20T12:00:03Z"])
    assert first.exit_code == 0, first.stderr
    code = ("import sys\nfrom botopt.cli.main import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('polars', 'numpy') if m in sys.modules])\n")
    later = subprocess.run([sys.executable, "-c", code, *args, "--as-of",
                            "2026-09-20T12:03:59Z"], capture_output=True, text=True)
    assert "HEAVY []" in later.stdout, later.stdout + later.stderr
    answer = json.loads(later.stdout.split("HEAVY")[0])
    fresh = runner.invoke(app, [*args, "--as-of", "2026-09-20T12:03:59Z", "--no-cache"])
    assert answer == json.loads(fresh.stdout)


REAL = ["ADA_BTC", "DASH_BTC", "ETC_BTC", "ETH_BTC", "LTC_BTC", "NXT_BTC", "TRX_BTC",
        "XLM_BTC", "XMR_BTC", "ZEC_BTC"]


@pytest.mark.slow
def test_runs_in_groups_equal_one_group_on_real_pairs(tmp_path, shared_data, monkeypatch):
    """A run loads its symbols a group of files at a time (``GROUP_BYTES``) and hands the
    correlation only their last rows: a cron line of runs, each file a group of its own,
    answers what one group and an uncached bot answer, gates open so the correlation and
    cooldown gates decide."""
    from botopt.core.signals import _pipeline

    over = {"data.source": "local", "data.data_dir": str(shared_data / "candles" / "5m"),
            **OPEN_GATES, "gates.correlation_threshold": 0.1}
    bots = {name: cfg_for(tmp_path / name, **over) for name in ("grouped", "whole", "ref")}
    assert len(_pipeline._groups(bots["whole"], REAL)) == 1
    start = datetime(2018, 1, 24, 9, 0, 20, tzinfo=timezone.utc)
    blocked = 0
    for k in range(8):
        now = start + timedelta(minutes=5 * k)
        monkeypatch.setattr(_pipeline, "GROUP_BYTES", 1)  # every file its own group
        assert len(_pipeline._groups(bots["grouped"], REAL)) == len(REAL)
        grouped = _run_signals(bots["grouped"], REAL, as_of=now)
        monkeypatch.undo()
        whole = _run_signals(bots["whole"], REAL, as_of=now)
        ref = _run_signals(bots["ref"], REAL, as_of=now, use_cache=False)
        assert grouped == whole == ref, now
        blocked += sum(any("correl" in r for r in s.gate_reasons) for s in ref.symbols)
    assert blocked  # the correlation gate took part


def test_a_file_replaced_while_a_run_reads_it_is_never_cached_under_the_old_bytes(
        tmp_path, monkeypatch):
    """A run's key is made from the files' digests before the candles are read. A download
    landing in between gave the new file's answer under the old bytes' key, and when the
    old bytes came back (a restore, a second writer) the cache served the other answer
    (sweep F, H2). The file is replaced here right after the key is made; the answer of
    that run is not kept, and the old bytes back give exactly --no-cache's answer."""
    import os

    from botopt.core.data._store import _write
    from botopt.core.signals import _pipeline

    a = _sample_frames()
    b = _sample_frames(scale={"ETHUSDT": 1.5})
    data = _write_dir(tmp_path / "d", a)
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c"), "data.source": "local",
                                 "data.data_dir": str(data), **OPEN_GATES})
    path = data / "ETHUSDT-5m.feather"

    def put(frames) -> None:
        tmp = data / "new.tmp"
        _write(tmp, frames["ETHUSDT"])
        os.replace(tmp, path)  # as a downloader lands a file

    real = _pipeline._run_key
    swapped: list[bool] = []

    def key_then_swap(*args, **kwargs):
        key = real(*args, **kwargs)
        if not swapped:
            swapped.append(True)
            put(b)  # after the key, before the candles are read
        return key

    monkeypatch.setattr(_pipeline, "_run_key", key_then_swap)
    on_b = _run_signals(cfg, SAMPLE, as_of=T0, notify=False)
    assert on_b == _run_signals(cfg, SAMPLE, as_of=T0, use_cache=False, notify=False)
    put(a)  # the old bytes back: the key of the first run again
    back = _run_signals(cfg, SAMPLE, as_of=T0, notify=False)
    assert back == _run_signals(cfg, SAMPLE, as_of=T0, use_cache=False, notify=False)
    assert back != on_b  # the two files' answers differ, so the check has teeth
