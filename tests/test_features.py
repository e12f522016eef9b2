"""compute_features against TA-Lib, the independent reference, on real and random data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botopt.core import compute_features, load_candles, load_config
from botopt.core.base._config import FeaturesConfig
from botopt.core.signals._features import feature_columns

talib = pytest.importorskip("talib", reason="TA-Lib (the reference) is a test dependency")

ROOT = Path(__file__).resolve().parents[1]
REL_TOL = 1e-9
# Bollinger width near a flat window sits at TA-Lib's own rounding floor: it computes the
# variance as E[x^2] - E[x]^2, whose error is ~1e-16 of price^2, i.e. ~1e-8 of price in the
# std. Below that floor "relative error" compares two roundings of zero, so the width (a
# ratio to price) gets an absolute floor of 1e-7 there; every other column gets none.
ABS_FLOOR = {"bb_width": 1e-7}


def talib_reference(g: pl.DataFrame, fc: FeaturesConfig) -> dict[str, np.ndarray]:
    h, lo, c = (g[x].to_numpy() for x in ("high", "low", "close"))
    n = fc.adx_period
    upper, middle, lower = talib.BBANDS(c, fc.bb_period, fc.bb_std, fc.bb_std, 0)
    return {
        f"ema_{fc.ema_fast}": talib.EMA(c, fc.ema_fast),
        f"ema_{fc.ema_slow}": talib.EMA(c, fc.ema_slow),
        f"rsi_{fc.rsi_period}": talib.RSI(c, fc.rsi_period),
        f"atr_{fc.atr_period}": talib.ATR(h, lo, c, fc.atr_period),
        f"adx_{n}": talib.ADX(h, lo, c, n),
        f"plus_di_{n}": talib.PLUS_DI(h, lo, c, n),
        f"minus_di_{n}": talib.MINUS_DI(h, lo, c, n),
        f"bb_width_{fc.bb_period}": (upper - lower) / middle,
    }


def assert_matches_talib(features: pl.DataFrame, fc: FeaturesConfig) -> None:
    for (sym,), g in features.group_by("symbol", maintain_order=True):
        for col, ref in talib_reference(g, fc).items():
            mine = g[col].to_numpy().astype(float)  # nulls become NaN
            has = ~np.isnan(ref)
            assert np.isnan(mine[~has]).all(), f"{sym} {col}: value where TA-Lib has none"
            assert not np.isnan(mine[has]).any(), f"{sym} {col}: null where TA-Lib has a value"
            if has.any():
                floor = ABS_FLOOR.get(col.rsplit("_", 1)[0], 0.0)
                err = np.abs(mine[has] - ref[has])
                rel = np.where(err <= floor, 0.0,
                               err / np.maximum(np.abs(ref[has]), 1e-300))
                worst = int(np.argmax(rel))
                assert rel[worst] <= REL_TOL, (
                    f"{sym} {col}: relative error {rel[worst]:.3g} at row "
                    f"{np.flatnonzero(has)[worst]}")


def test_matches_talib_on_ten_real_pairs(shared_data):
    d = shared_data / "candles" / "5m"
    syms = sorted(p.name.split("-")[0] for p in d.glob("*-5m.feather"))
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    candles = load_candles(syms, config=cfg)
    assert candles["close"].min() < 1e-4  # the tiny-price pairs are in
    assert_matches_talib(compute_features(candles), FeaturesConfig())


def test_matches_talib_with_other_periods(shared_data):
    d = shared_data / "candles" / "5m"
    fc = FeaturesConfig(ema_fast=5, ema_slow=50, rsi_period=7, atr_period=21, adx_period=9,
                        bb_period=10, bb_std=1.5)
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    candles = load_candles(["ADA_BTC", "NXT_BTC"], config=cfg)
    assert_matches_talib(compute_features(candles, fc), fc)


def test_matches_talib_on_bundled_sample_data():
    files = sorted((ROOT / "sample_data").glob("*-5m.feather"))
    if not files:
        pytest.skip("sample_data not generated")
    candles = load_candles([p.name.split("-")[0] for p in files], config=load_config())
    assert_matches_talib(compute_features(candles), FeaturesConfig())


@st.composite
def ohlc_frames(draw):
    n = draw(st.integers(min_value=1, max_value=120))
    scale = draw(st.sampled_from([2e-5, 1.0, 60_000.0]))
    rets = draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))
    flat = draw(st.booleans())
    close = scale * np.exp(np.cumsum([0.0 if flat and i % 3 else r for i, r in
                                      enumerate(rets)]))
    spread = np.array(draw(st.lists(st.floats(0, 0.02), min_size=n, max_size=n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread / 2)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return pl.DataFrame({
        "symbol": ["X"] * n,
        "open_time": [t0 + timedelta(minutes=5 * k) for k in range(n)],
        "open": open_, "high": high, "low": low, "close": close,
        "volume": np.array(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n))),
    }).with_columns(pl.col("open_time").dt.cast_time_unit("ms"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ohlc_frames())
def test_matches_talib_on_random_series(frame):
    assert_matches_talib(compute_features(frame), FeaturesConfig())


def test_symbols_are_independent(shared_data):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    both = compute_features(load_candles(["ETH_BTC", "TRX_BTC", "XMR_BTC"], config=cfg))
    alone = compute_features(load_candles(["TRX_BTC"], config=cfg))
    assert both.filter(pl.col("symbol") == "TRX_BTC").equals(alone)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ohlc_frames(), min_size=2, max_size=4), st.booleans())
def test_a_symbol_alone_equals_the_same_symbol_in_a_batch(frames, flat_seams):
    # Some steps (shifts, flatness counts) run over the whole column and null what would
    # reach into the previous symbol; flat seams (the same constant candle at the end of one
    # symbol and the start of the next) are where a leak would show.
    parts = []
    for k, f in enumerate(frames):
        if flat_seams:
            edge = pl.int_range(pl.len())
            seam = (edge < 25) | (edge >= pl.len() - 25)
            f = f.with_columns(pl.when(seam).then(pl.lit(7.0)).otherwise(pl.col(c)).alias(c)
                               for c in ("open", "high", "low", "close", "volume"))
        parts.append(f.with_columns(symbol=pl.lit(f"S{k}")))
    batch = compute_features(pl.concat(parts))
    for part in parts:
        alone = compute_features(part)
        assert batch.filter(pl.col("symbol") == part["symbol"][0]).equals(alone)


def test_columns_and_warmup_nulls():
    fc = FeaturesConfig()
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    n = 60
    close = 100 + np.sin(np.arange(n))
    frame = pl.DataFrame({
        "symbol": ["A"] * n, "open_time": [t0 + timedelta(minutes=5 * k) for k in range(n)],
        "open": close, "high": close + 1, "low": close - 1, "close": close,
        "volume": np.arange(n, dtype=float) % 7,
    }).with_columns(pl.col("open_time").dt.cast_time_unit("ms"))
    out = compute_features(frame, fc)
    assert out.columns == [*frame.columns, *feature_columns(fc)]
    first_valid = {c: out[c].is_not_null().arg_true()[0] for c in feature_columns(fc)}
    assert first_valid == {"ema_12": 11, "ema_26": 25, "rsi_14": 14, "atr_14": 14,
                           "adx_14": 27, "plus_di_14": 14, "minus_di_14": 14,
                           "bb_width_20": 19, "vol_20": 20, "volume_z_20": 19,
                           "log_return": 1}
    assert not out.select(pl.all().exclude("symbol", "open_time").is_nan().any()).row(0)[0]


def test_interleaved_input_is_grouped_first(shared_data):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    candles = load_candles(["ETH_BTC", "XMR_BTC"], config=cfg)
    interleaved = candles.sort("open_time", "symbol")
    assert compute_features(interleaved).equals(compute_features(candles))


def test_a_batch_on_huge_pages_matches_talib_and_each_symbol_alone():
    # 130 symbols x 300 bars: two chunks, and the smoothers' buffer (300 x 8 x 128 values)
    # is big enough to be placed on a 2 MiB boundary (_empty), which small frames never are.
    from botopt.benchmarks._common import synthetic_candles

    candles = synthetic_candles(130, 300, seed=7)
    batch = compute_features(candles)
    syms = candles["symbol"].unique(maintain_order=True).to_list()
    picked = [syms[0], syms[127], syms[128], syms[-1]]  # both sides of the chunk seam
    assert_matches_talib(batch.filter(pl.col("symbol").is_in(picked)), FeaturesConfig())
    for sym in picked:
        alone = compute_features(candles.filter(pl.col("symbol") == sym))
        assert batch.filter(pl.col("symbol") == sym).equals(alone)


def test_empty_places_big_arrays_on_a_huge_page_boundary():
    from botopt.core.signals._features import _empty

    big, small = _empty((300, 1024)), _empty((10, 10))
    assert big.shape == (300, 1024) and big.flags.c_contiguous and big.flags.writeable
    assert big.ctypes.data % (1 << 21) == 0
    assert small.shape == (10, 10)
    big[...] = 1.0  # the whole array is usable memory
    assert big.sum() == 300 * 1024


def test_the_whole_config_is_accepted_and_anything_else_refused_in_one_line():
    from botopt.core.base._config import Config
    from botopt.core.errors import UsageError
    from botopt.core.signals._features import compute_features_split

    fc = FeaturesConfig(ema_fast=5, rsi_period=7)
    cfg = Config(features=fc)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    n = 80
    close = 100 + np.sin(np.arange(n))
    frame = pl.DataFrame({
        "symbol": ["A"] * n, "open_time": [t0 + timedelta(minutes=5 * k) for k in range(n)],
        "open": close, "high": close + 1, "low": close - 1, "close": close,
        "volume": np.arange(n, dtype=float) % 7,
    }).with_columns(pl.col("open_time").dt.cast_time_unit("ms"))
    assert compute_features(frame, cfg).equals(compute_features(frame, fc))
    assert "ema_5" in compute_features(frame, cfg).columns
    whole, tail = compute_features_split(frame, cfg, ["ema_5"])
    assert tail.equals(compute_features_split(frame, fc, ["ema_5"])[1])
    with pytest.raises(UsageError, match="wants a FeaturesConfig or a Config, not a table") as e:
        compute_features(frame, {"ema_fast": 5})  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
