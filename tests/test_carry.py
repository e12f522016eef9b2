"""Carried features (core/signals/_carry.py): any sequence of next-candle steps, each
computing only the rows after a symbol's carried state, equals a fresh computation over the
whole series, bit for bit; a state that no longer fits its data is detected and the series
computed from its first row."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botopt.core import compute_features, load_candles, load_config
from botopt.core.base._config import Config, FeaturesConfig, RegimeConfig
from botopt.core.signals._carry import (
    CarryStore,
    _back,
    block,
    features_and_regimes,
    next_anchor,
)
from botopt.core.signals._features import feature_columns
from botopt.core.signals._regime import detect_regime

from .test_features import assert_matches_talib

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _series(sym: str, closes: np.ndarray, rng: np.random.Generator, start: int = 0
            ) -> pl.DataFrame:
    n = len(closes)
    spread = rng.uniform(0.0, 0.02, n)
    # gaps in time: a row may open several intervals after the previous one
    steps = np.cumsum(rng.choice([1, 1, 1, 1, 2, 7], n)) + start
    return pl.DataFrame({
        "symbol": sym,
        "open_time": [T0 + timedelta(minutes=5 * int(k)) for k in steps],
        "open": closes, "high": closes * (1 + spread), "low": closes * (1 - spread),
        "close": closes, "volume": rng.uniform(0.0, 5.0, n).round(1),
    }).with_columns(pl.col("open_time").dt.cast_time_unit("ms"))


def _closes(rng: np.random.Generator, n: int) -> np.ndarray:
    c = 100 * np.exp(np.cumsum(rng.normal(0, rng.choice([0.0005, 0.01, 0.05]), n)))
    flat = rng.random(n) < 0.05  # runs of unchanged prices: flat windows, zero changes
    for i in np.flatnonzero(flat):
        if i:
            c[i] = c[i - 1]
    return c


def reference(frame: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, dict[str, str]]:
    """The uncached path: the whole series' features, each symbol's last row, its regime."""
    full = compute_features(frame, config.features)
    last = full.group_by("symbol", maintain_order=True).tail(1)
    return last, detect_regime(full, config.regime, config.features)


def assert_same(got, frame: pl.DataFrame, config: Config, syms: list[str]) -> None:
    last, regimes = reference(frame, config)
    cols = ["symbol", "open_time", "close", *feature_columns(config.features)]
    want = last.select(cols)
    have = got.last.select(cols)
    assert have["symbol"].to_list() == syms
    assert have.equals(want), (have.transpose(include_header=True),
                               want.transpose(include_header=True))
    assert got.regimes == regimes


small_configs = st.builds(
    lambda ef, es, rsi, adx, bb, vz, vol, lb: Config(
        features=FeaturesConfig(ema_fast=ef, ema_slow=es, rsi_period=rsi, atr_period=rsi,
                                adx_period=adx, bb_period=bb, volume_z_period=vz,
                                vol_period=vol),
        regime=RegimeConfig(vol_lookback=lb, adx_trend=22.0, adx_range=18.0,
                            vol_percentile=80.0)),
    st.integers(2, 6), st.integers(7, 15), st.integers(2, 8), st.integers(2, 7),
    st.integers(2, 6), st.integers(2, 6), st.integers(2, 6), st.integers(4, 40))

# one step of the stream: per symbol how many rows arrive (0: a late file), and what
# else happens to it
events = st.lists(st.tuples(st.lists(st.integers(0, 5), min_size=4, max_size=4),
                            st.sampled_from(["none", "none", "none", "rewrite", "drop",
                                             "add", "replace"])),
                  min_size=3, max_size=12)


@pytest.mark.slow
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=small_configs, seed=st.integers(0, 2**32 - 1), steps=events,
       first=st.integers(0, 200))
def test_any_sequence_of_steps_equals_the_whole_series(tmp_path_factory, config, seed,
                                                       steps, first):
    rng = np.random.default_rng(seed)
    store = CarryStore(tmp_path_factory.mktemp("carry"), config)
    names = ["A", "B", "C", "D"]
    full = {s: _series(s, _closes(rng, 600), rng) for s in names}
    upto = {s: first + int(rng.integers(0, 40)) for s in names}
    live = ["A", "B", "C"]
    for grow, event in steps:
        for k, s in enumerate(names):
            upto[s] = min(upto[s] + grow[k], full[s].height)
        victim = live[int(rng.integers(len(live)))]
        if event == "rewrite" and upto[victim] > 2:
            # an old row changed (history rewritten): the carried state must not stand
            row = int(rng.integers(0, upto[victim] - 1))
            f = full[victim]
            full[victim] = f.with_columns(pl.when(pl.int_range(pl.len()) == row)
                                          .then(pl.col("close") * 1.001)
                                          .otherwise(pl.col("close")).alias("close"))
        elif event == "drop" and len(live) > 1:
            live.remove(victim)
        elif event == "add":
            live = sorted(set(live) | {names[int(rng.integers(len(names)))]})
        elif event == "replace":
            # the file replaced by another market's: a different first row
            full[victim] = _series(victim, _closes(rng, 600), rng, start=3)
        frame = pl.concat([full[s].head(max(1, upto[s])) for s in live])
        got = features_and_regimes(config, frame, live, store)
        assert_same(got, frame, config, live)


def test_the_next_candle_computes_a_constant_number_of_rows(tmp_path):
    """Whatever the series' length, a next-candle run computes about the regime's lookback
    plus a window plus a block per symbol, not the series."""
    config = Config()
    rng = np.random.default_rng(3)
    store = CarryStore(tmp_path, config)
    limit = _back(config) + block(config) + 1
    for n in (2_000, 20_000):
        frame = pl.concat([_series(s, _closes(rng, n + 1), rng) for s in ("A", "B")])
        first = frame.group_by("symbol", maintain_order=True).head(n)
        assert features_and_regimes(config, first, ["A", "B"], store).rows_computed == 2 * n
        got = features_and_regimes(config, frame, ["A", "B"], store)
        assert got.rows_computed <= 2 * limit
        assert_same(got, frame, config, ["A", "B"])


def test_a_short_series_carries_nothing_and_is_computed_whole(tmp_path):
    config = Config()
    assert next_anchor(config, 100) is None
    rng = np.random.default_rng(5)
    frame = _series("A", _closes(rng, 100), rng)
    got = features_and_regimes(config, frame, ["A"], CarryStore(tmp_path, config))
    assert got.rows_computed == 100
    assert not list(tmp_path.iterdir())
    assert_same(got, frame, config, ["A"])


@pytest.mark.parametrize("damage", [b"", b"{", b"[]", b'{"f": 1}', b'{"f": 2, "states": []}',
                                    b"\xff\xfe" * 40, "nan", "anchor", "prior", "entry",
                                    "values", "scaled", "nudged", "label", "no-sum"])
def test_a_damaged_state_is_a_miss_never_a_wrong_answer(tmp_path, damage):
    config = Config()
    rng = np.random.default_rng(7)
    frame = _series("A", _closes(rng, 1_200), rng)
    store = CarryStore(tmp_path, config)
    features_and_regimes(config, frame.head(1_000), ["A"], store)
    (path,) = tmp_path.iterdir()
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        whole = json.loads(path.read_bytes())
        d = whole["states"]["A"]
        if damage == "nan":
            d["values"][0] = float("nan").hex()
        elif damage == "anchor":
            d["anchor"] = d["anchor"] + 1  # not on a block, or past the guard
        elif damage == "entry":
            whole["states"]["A"] = [1, 2]
        elif damage == "values":
            d["values"] = d["values"][:-1]
        elif damage in ("scaled", "nudged"):  # values still finite, still a state's shape:
            # used as saved, they sent the answers off --no-cache for good (sweep F, H3)
            factor = 1e12 if damage == "scaled" else 1.01
            d["values"] = [(float.fromhex(v) * factor).hex() for v in d["values"]]
        elif damage == "label":
            d["prior"] = "TREND_DOWN" if d["prior"] != "TREND_DOWN" else "TREND_UP"
        elif damage == "no-sum":
            del d["sum"]
        else:
            d["prior"] = "SIDEWAYS"
        path.write_text(json.dumps(whole))
    # the next run's store (a store is one run's view: it keeps what it read and wrote)
    got = features_and_regimes(config, frame, ["A"], CarryStore(tmp_path, config))
    assert got.rows_computed == 1_200  # computed from the first row
    assert_same(got, frame, config, ["A"])


def test_settings_change_the_state_s_key(tmp_path):
    a = CarryStore(tmp_path, Config())
    b = CarryStore(tmp_path, Config(features=FeaturesConfig(ema_fast=9)))
    assert a._path("A") != b._path("A")


def test_an_unwritable_store_costs_the_state_not_the_answer(tmp_path):
    config = Config()
    rng = np.random.default_rng(11)
    frame = _series("A", _closes(rng, 1_000), rng)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        got = features_and_regimes(config, frame, ["A"], CarryStore(ro / "gone", config))
    finally:
        ro.chmod(0o700)
    assert_same(got, frame, config, ["A"])


def test_on_the_real_pairs_every_next_candle_equals_talib_over_the_whole_file(
        tmp_path, shared_data):
    """Candle by candle over the real files, from an empty state: each run's last rows are
    the whole file's (bit for bit), and the whole file's features are TA-Lib's."""
    cfg = load_config(overrides={"data.source": "local",
                                 "data.data_dir": str(shared_data / "candles" / "5m")})
    syms = ["ETH_BTC", "ADA_BTC", "NXT_BTC"]
    frame = load_candles(syms, config=cfg, as_of="2018-01-30T05:00:00Z")
    assert_matches_talib(compute_features(frame, cfg.features), cfg.features)
    names = frame.get_column("symbol").unique(maintain_order=True).to_list()
    store = CarryStore(tmp_path, cfg)
    times = frame.get_column("open_time").unique().sort()
    for t in times[2_000:2_000 + 40].to_list() + times[-3:].to_list():
        part = frame.filter(pl.col("open_time") <= t)
        got = features_and_regimes(cfg, part, names, store)
        assert_same(got, part, cfg, names)
    assert got.rows_computed <= 3 * (_back(cfg) + block(cfg) + 1)


def test_a_cron_run_reads_its_carried_state_and_equals_no_cache(tmp_path, shared_data):
    """Real runs through the pipeline: cached runs candle after candle (carried) equal the
    same runs with --no-cache, and the carried states are in the workspace."""
    from botopt.core import run_signals

    cfg = load_config(overrides={"data.source": "local",
                                 "data.data_dir": str(shared_data / "candles" / "5m"),
                                 "cache.dir": str(tmp_path / "c")})
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    start = datetime(2018, 1, 25, 10, tzinfo=timezone.utc)
    for k in range(6):
        at = start + timedelta(minutes=5 * k)
        cached = run_signals(cfg, syms, as_of=at)
        plain = run_signals(cfg, syms, as_of=at, use_cache=False)
        assert cached.to_dict() == plain.to_dict()
    assert list(Path(tmp_path / "c").rglob("carry/*/*.json"))
    # They are derived data: clearing every cache takes them, and the answer stays the same.
    from botopt.core import clear_cache

    clear_cache(root=Path(tmp_path / "c"), config=cfg)
    assert not list(Path(tmp_path / "c").rglob("carry/*/*.json"))
    assert run_signals(cfg, syms, as_of=at).to_dict() == plain.to_dict()


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=small_configs, seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.integers(1, 150), min_size=1, max_size=8))
def test_a_replay_s_stretches_equal_the_whole_series(config, seed, cuts):
    """The replay's walk (``SeriesPass``): stretch after stretch, with the states carried in
    memory, every new row's features and regime equal one pass over the whole series."""
    from botopt.core.signals._carry import SeriesPass
    from botopt.core.signals._regime import regime_series

    rng = np.random.default_rng(seed)
    names = ["A", "B", "C"]
    frame = pl.concat([_series(s, _closes(rng, int(rng.integers(50, 500))), rng)
                       for s in names])
    whole = regime_series(compute_features(frame, config.features), config.regime,
                          config.features)
    cols = [c for c in whole.columns if c != "symbol"]
    walk = SeriesPass.of(config, frame)
    done = np.zeros(3, dtype=np.int64)
    for cut in cuts:
        upto = np.minimum(done + cut, walk.lens)
        got, offset = walk.stretch(upto)
        for j in range(3):
            rows = np.arange(done[j], upto[j])
            want = whole[walk.starts[j] + rows].select(cols)
            assert got[offset[j] + rows].select(cols).equals(want), (j, rows[:3])
        done = upto


@pytest.mark.parametrize("stretch", [1, 700, 2_500])
def test_symbols_computed_in_stretches_equal_all_at_once(tmp_path, monkeypatch, stretch):
    """features_and_regimes computes its symbols in batches of about _STRETCH rows (the
    run's peak memory): every value is per symbol, so any batching gives the same bits,
    on a first run (whole series) and on a next candle (from carried states), and saves the
    same states."""
    from botopt.core.signals import _carry

    config = Config()
    rng = np.random.default_rng(11)
    names = [f"S{k}" for k in range(7)]
    frame = pl.concat([_series(s, _closes(rng, 1_200 + 37 * k), rng)
                       for k, s in enumerate(names)])
    first = frame.group_by("symbol", maintain_order=True).head(1_150)
    runs = {}
    for label, size in (("all", 10**9), ("stretches", stretch)):
        monkeypatch.setattr(_carry, "_STRETCH", size)
        store = CarryStore(tmp_path / label, config)
        a = features_and_regimes(config, first, names, store)
        b = features_and_regimes(config, frame, names, store)
        # the states saved, without the time each was saved at
        saved = sorted(json.dumps({k: {**v, "at": None} for k, v in
                                   json.loads(p.read_bytes())["states"].items()})
                       for p in (tmp_path / label).rglob("*.json"))
        runs[label] = (a, b, saved)
    for x, y in zip(runs["all"][:2], runs["stretches"][:2], strict=True):
        assert x.last.equals(y.last) and x.regimes == y.regimes
        assert x.rows_computed == y.rows_computed
    assert runs["all"][2] == runs["stretches"][2] and runs["all"][2]
    assert_same(runs["stretches"][1], frame, config, names)
