"""Signals that are never wrong: stale data, warm-up, degenerate markets, experiments kept
private, a model that disagrees with the settings, and the probability that is shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botopt.core import AlphaEngineCoordinator, compute_features, load_config, run_signals
from botopt.core.errors import ModelError, StaleDataError
from botopt.core.signals._pipeline import is_live

STEP = timedelta(minutes=5)
PERMISSIVE = """
[gates]
min_strength = 0.0
min_probability = 0.0
block_high_vol = false
min_volume_z = -99.0
correlation_threshold = 1.0
"""


def last_closed_open(now: datetime) -> datetime:
    """Open time of the newest 5m candle closed by ``now``."""
    slot = datetime.fromtimestamp(int(now.timestamp()) // 300 * 300, tz=timezone.utc)
    return slot - STEP


def trend(n: int, seed: int = 1, drift: float = 0.002) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + 0.001 * rng.standard_normal(n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = 0.002 * close
    return {"open": open_, "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread, "close": close,
            "volume": 1000 + 100 * rng.random(n)}


def write(d: Path, symbol: str, last_open: datetime, cols: dict[str, np.ndarray]) -> None:
    n = len(cols["close"])
    dates = [last_open - STEP * (n - 1 - i) for i in range(n)]
    pl.DataFrame({"date": pl.Series(dates, dtype=pl.Datetime("ms", "UTC")), **cols}
                 ).write_ipc(d / f"{symbol}-5m.feather")


def botopt(home: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    """botopt as cron runs it: a whole process, no terminal, its own HOME."""
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "botopt.cli.main", *args],
                          capture_output=True, text=True, env={**base, **(env or {})},
                          cwd=home, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.mark.slow
def test_stale_symbols_blocked_with_their_age_and_all_stale_exits_1(tmp_path, home):
    now = datetime.now(timezone.utc)
    d = tmp_path / "data"
    d.mkdir()
    write(d, "FRESHUSDT", last_closed_open(now), trend(400))
    write(d, "OLDUSDT", last_closed_open(now) - 6 * STEP, trend(400, seed=2))
    r = botopt(home, "signals", "--data-dir", str(d), "-s", "FRESHUSDT,OLDUSDT", "--json")
    assert r.returncode == 0, r.stderr
    rows = {s["symbol"]: s for s in json.loads(r.stdout)["signals"]}
    old = rows["OLDUSDT"]
    assert old["data_status"] == "stale" and not old["gate"]["passed"]
    assert old["gate"]["reasons"][0].startswith("stale data: last candle 3")  # 30-35 min
    assert old["age_seconds"] >= 1800
    assert rows["FRESHUSDT"]["data_status"] == "ok" and rows["FRESHUSDT"]["age_seconds"] < 300
    # The monitor alerts once on the stale symbol (a second run is no new alert).
    assert botopt(home, "signals", "--data-dir", str(d), "-s", "FRESHUSDT,OLDUSDT"
                  ).returncode == 0
    assert botopt(home, "monitor", "--once").returncode == 0
    listed = botopt(home, "notify", "list", "--json")
    alerts = [n["data"]["message"] for n in json.loads(listed.stdout)["notifications"]
              if n["type"] == "alert"]
    assert [a for a in alerts if a.startswith("stale data")] == [
        "stale data: no recent candles for OLDUSDT; they are blocked (is botopt fetch "
        "running?)"]
    alone = botopt(home, "signals", "--data-dir", str(d), "-s", "OLDUSDT")
    assert alone.returncode == 1 and alone.stdout == ""
    assert alone.stderr.count("\n") == 1 and "OLDUSDT 3" in alone.stderr
    assert "stale data for every symbol" in alone.stderr
    # The monitor hears of it: the live run failed.
    events = (home / ".cache" / "botopt" / "events" / "events.log").read_text()
    assert '"run_failed"' in events and "stale data" in events


def test_max_staleness_setting_and_cached_equals_uncached_inside_one_slot(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    write(d, "AAAUSDT", t0 - STEP, trend(300))
    write(d, "BBBUSDT", t0 - 2 * STEP, trend(300, seed=3))
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path / "c"),
                                 "data.max_staleness": 400.0})
    syms = ["AAAUSDT", "BBBUSDT"]
    # Same candle slot, but BBB turns stale between the two runs (age 360 s, then 450 s).
    first = run_signals(cfg, syms, as_of=t0 + timedelta(seconds=60))
    second = run_signals(cfg, syms, as_of=t0 + timedelta(seconds=150))
    assert {r.symbol: r.data_status for r in first.symbols}["BBBUSDT"] == "ok"
    assert {r.symbol: r.data_status for r in second.symbols}["BBBUSDT"] == "stale"
    for when, got in ((60, first), (150, second)):
        fresh = run_signals(cfg, syms, as_of=t0 + timedelta(seconds=when), use_cache=False)
        assert got == fresh
    third = run_signals(cfg, syms, as_of=t0 + timedelta(seconds=200))
    assert third.from_cache and third == run_signals(
        cfg, syms, as_of=t0 + timedelta(seconds=200), use_cache=False)
    with pytest.raises(StaleDataError) as info:
        run_signals(cfg, ["BBBUSDT"], as_of=t0 + timedelta(hours=3))
    assert set(info.value.ages) == {"BBBUSDT"} and info.value.limit == 400.0
    assert load_config(overrides={"data.max_staleness": None}).data.max_staleness is None
    for bad in ("nan", "inf", "-5", "0"):
        with pytest.raises(Exception, match="data.max_staleness"):
            load_config(overrides={"data.max_staleness": bad})


def test_too_little_history_is_warming_up(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    write(d, "NEWUSDT", t0 - STEP, trend(31))
    write(d, "OLDUSDT", t0 - STEP, trend(400))
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path / "c")})
    r = {s.symbol: s for s in run_signals(cfg, ["NEWUSDT", "OLDUSDT"], as_of=t0,
                                          use_cache=False).symbols}
    assert r["NEWUSDT"].gate_reasons == ("warming up: 31 of 165 candles",)
    assert r["NEWUSDT"].data_status == "warming_up" and not r["NEWUSDT"].gate_passed
    assert r["OLDUSDT"].data_status == "ok"
    with pytest.raises(Exception, match="features.history"):
        load_config(overrides={"features.history": 100})


def _series(kind: str, n: int, level: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "constant":
        close = np.full(n, level)
    elif kind == "stepwise":  # moves, then stops for longer than any window
        moves = np.concatenate([rng.standard_normal(n - 60) * 0.01, np.zeros(60)])
        close = level * np.exp(np.cumsum(moves))
    else:  # "zero volume": prices may even move (a broken feed), trades do not
        close = level * np.exp(np.cumsum(rng.standard_normal(n) * 0.01))
    open_ = np.concatenate([[close[0]], close[:-1]])
    volume = np.zeros(n) if kind == "zero_volume" else 1 + rng.random(n)
    if kind == "stepwise":
        volume[-60:] = 0.0
    return {"open": open_, "high": np.maximum(open_, close), "low": np.minimum(open_, close),
            "close": close, "volume": volume}


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["constant", "stepwise", "zero_volume"]),
       level=st.sampled_from([2.2e-5, 1.0, 60000.0]), n=st.integers(200, 260),
       seed=st.integers(0, 10_000))
def test_degenerate_markets_are_flat_with_a_reason(tmp_path, kind, level, n, seed):
    # one directory per example: hypothesis may draw the same kind, n and seed twice
    d = Path(tempfile.mkdtemp(prefix=f"{kind}{n}{seed}-", dir=tmp_path))
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    write(d, "DEGUSDT", t0 - STEP, _series(kind, n, level, seed))
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path / "c"), "gates.min_strength": 0.0,
                                 "gates.min_probability": 0.0, "gates.min_volume_z": -99.0,
                                 "gates.block_high_vol": False})
    (row,) = run_signals(cfg, ["DEGUSDT"], as_of=t0, use_cache=False,
                         notify=False).symbols
    assert row.direction == "flat" and row.strength == 0.0 and not row.gate_passed
    assert row.data_status == "degenerate"
    assert row.gate_reasons[0].startswith(("flat market", "no trades", "zero variance"))
    # The public engine API says the same, whatever the regime.
    feats = compute_features(pl.read_ipc(d / "DEGUSDT-5m.feather").rename(
        {"date": "open_time"}).with_columns(symbol=pl.lit("DEGUSDT")))
    for regime in ("TREND_UP", "RANGE", "HIGH_VOL"):
        sigs = AlphaEngineCoordinator(cfg.features).generate_all_signals(feats, regime)
        assert [(s.engine, s.direction, s.strength) for s in sigs] == [("guard", "flat", 0.0)]


@pytest.mark.slow
def test_experiments_queue_and_record_nothing(tmp_path, home):
    now = datetime.now(timezone.utc)
    d = tmp_path / "data"
    d.mkdir()
    write(d, "UPUSDT", last_closed_open(now), trend(400, drift=0.004))
    (home / "botopt.toml").write_text(PERMISSIVE)
    base = ["signals", "--data-dir", str(d), "-s", "UPUSDT", "--json"]

    def queued() -> int:
        r = botopt(home, "notify", "list", "--json")
        assert r.returncode == 0, r.stderr
        return len(json.loads(r.stdout)["notifications"])

    past = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    for args in (["--as-of", past], ["--no-notify"]):
        r = botopt(home, *base, *args)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["signals"][0]["gate"]["passed"]
    sample = botopt(home, "signals", "--source", "sample", "--json")
    assert sample.returncode == 0 and json.loads(sample.stdout)["clock"] == "sample"
    assert queued() == 0
    log = home / ".cache" / "botopt" / "events" / "events.log"
    assert "signal_passed" not in log.read_text()  # the --no-notify run was live, no more
    live = botopt(home, *base)
    assert live.returncode == 0 and json.loads(live.stdout)["signals"][0]["gate"]["passed"]
    assert queued() == 1
    forced = botopt(home, *base, "--as-of", past, "--notify")
    assert forced.returncode == 0 and queued() == 2


def test_is_live():
    local = load_config(overrides={"data.source": "local", "data.data_dir": "/x"})
    now = datetime.now(timezone.utc)
    assert is_live(local, None) and is_live(local, now)
    assert not is_live(local, now - timedelta(hours=1))
    assert not is_live(local, now + timedelta(days=1))
    assert not is_live(load_config(), None)  # sample data


def test_model_trained_on_other_settings_is_a_clean_error(home):
    r = botopt(home, "signals", "--as-of", "2026-09-20",
               env={"BOTOPT_FEATURES_RSI_PERIOD": "21"})
    assert r.returncode == 1 and r.stdout == ""
    err = r.stderr.splitlines()[-1]  # after the sample-data notice
    assert err.startswith("botopt: error: the bundled model")
    assert "features.rsi_period = 14" in err and "botopt model train" in err
    with pytest.raises(ModelError, match="rsi_period"):
        run_signals(load_config(overrides={"features.rsi_period": 21,
                                           "cache.dir": str(home / "c")}),
                    ["BTCUSDT"], use_cache=False)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["nonexistent.module:fn", "json:nope", "nodots"])
def test_bad_model_predict_same_error_with_and_without_cache(home, target):
    env = {"BOTOPT_MODEL_PREDICT": target}
    cached = botopt(home, "signals", "-s", "BTCUSDT", env=env)
    uncached = botopt(home, "signals", "-s", "BTCUSDT", "--no-cache", env=env)
    assert cached.returncode == uncached.returncode == 1
    assert cached.stderr.splitlines()[-1] == uncached.stderr.splitlines()[-1]
    assert "internal error" not in cached.stderr and "model.predict" in cached.stderr


def test_shown_and_gated_probability_is_that_of_the_direction(tmp_path):
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")})
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    seen = set()
    for hours in range(0, 72, 6):
        when = datetime(2026, 9, 14, tzinfo=timezone.utc) + timedelta(hours=hours)
        for s in run_signals(cfg, syms, as_of=when, notify=False).symbols:
            d = s.to_dict()
            if s.direction == "long":
                assert d["p_dir"] == d["p_up"]
            elif s.direction == "short":
                assert d["p_dir"] == pytest.approx(1 - d["p_up"], abs=0)
            else:
                assert d["p_dir"] is None
            seen.add(s.direction)
            for reason in s.gate_reasons:
                if reason.startswith("p_dir"):
                    assert float(reason.split()[1]) == pytest.approx(d["p_dir"], abs=5e-3)
    assert {"long", "short"} <= seen


def _rows(last_open: datetime, n: int, bad_at: int | None = None) -> list[tuple]:
    cols = trend(n)
    out = []
    for i in range(n):
        t = int((last_open - STEP * (n - 1 - i)).timestamp() * 1000)
        row = [t, *(float(cols[c][i]) for c in ("open", "high", "low", "close", "volume"))]
        if i == bad_at:
            row[2] = float("inf")  # high
        out.append(tuple(row))
    return out


def test_exchange_outage_is_stale_data_too(home):
    from .fakes.binance_server import FakeBinance

    now = datetime.now(timezone.utc)
    # The exchange stopped producing candles 40 minutes ago.
    fake = FakeBinance({"BTCUSDT": _rows(last_closed_open(now) - 8 * STEP, 300)}).start()
    try:
        r = botopt(home, "signals", "--source", "binance", "-s", "BTCUSDT",
                   env={"BOTOPT_BINANCE_API_URL": fake.url})
    finally:
        fake.stop()
    assert r.returncode == 1 and "stale data for every symbol" in r.stderr
    assert "BTCUSDT 4" in r.stderr  # 40-45 min


def test_fetch_never_writes_a_row_signals_would_refuse(tmp_path, home):
    from .fakes.binance_server import FakeBinance

    now = datetime.now(timezone.utc)
    fake = FakeBinance({"BTCUSDT": _rows(last_closed_open(now), 50, bad_at=42)}).start()
    try:
        r = botopt(home, "fetch", "-s", "BTCUSDT", "--data-dir", str(tmp_path / "store"),
                   env={"BOTOPT_BINANCE_API_URL": fake.url})
    finally:
        fake.stop()
    assert r.returncode == 1 and "internal error" not in r.stderr
    assert "row 43" in r.stderr and "high is not a finite number" in r.stderr
    assert not list((tmp_path / "store").glob("*.feather"))


@pytest.mark.parametrize("interval", ["1h", "1d"])
def test_a_run_as_of_a_superseded_candle_is_not_live_at_long_intervals(interval):
    """Any ``--as-of`` within one interval of the clock was live: at 1d, a run as of
    yesterday recorded cooldowns and queued the signals of a candle a newer one had
    superseded (sweep G). Live now: the clock's own candle slot, or within 5 minutes of
    the clock (a cron line's pinned time across a close); 5m keeps its one interval."""
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": "/x",
                                 "data.interval": interval})
    step = cfg.data.interval.delta
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    now = datetime.now(timezone.utc)
    slot = epoch + (now - epoch) // step * step  # when the clock's slot began
    assert is_live(cfg, slot + timedelta(seconds=1))  # the same candle is answered
    assert is_live(cfg, now - timedelta(minutes=4))  # a pinned time just before a close
    assert not is_live(cfg, slot - step + timedelta(minutes=10))  # the slot before
    assert not is_live(cfg, slot + step + timedelta(minutes=10))  # the next slot
    five = load_config(overrides={"data.source": "local", "data.data_dir": "/x"})
    assert is_live(five, now - timedelta(minutes=4))
    assert not is_live(five, now - timedelta(minutes=6))
