"""The bundled sample data is what the committed, seeded script generates, and it is usable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl

from botopt.core import load_candles, load_config

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "sample_data" / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_files_equal_the_seeded_script(tmp_path):
    _generator().write(tmp_path)
    for sym in SYMBOLS:
        fresh = pl.read_ipc(tmp_path / f"{sym}-5m.feather")
        committed = pl.read_ipc(ROOT / "sample_data" / f"{sym}-5m.feather")
        assert fresh.equals(committed), sym


def test_loads_and_validates_through_botopt():
    candles = load_candles(SYMBOLS, config=load_config(), as_of="2026-10-01T00:00:00Z")
    counts = dict(candles.group_by("symbol").len().iter_rows())
    assert counts == {**{s: 6048 for s in SYMBOLS}, "SOLUSDT": 6045}
    span = candles.group_by("symbol").agg(pl.col("open_time").min().alias("a"),
                                          pl.col("open_time").max().alias("b"))
    assert span["a"].n_unique() == 1 and span["b"].n_unique() == 1


def test_correlated_and_has_regimes():
    candles = load_candles(SYMBOLS, config=load_config(), as_of="2026-10-01T00:00:00Z")
    wide = candles.with_columns(r=pl.col("close").log().diff().over("symbol")).pivot(
        on="symbol", index="open_time", values="r").drop_nulls()
    corr = np.corrcoef(wide.select(SYMBOLS).to_numpy().T)
    off = corr[~np.eye(len(SYMBOLS), dtype=bool)]
    assert 0.4 < off.min() and off.max() < 0.9
    btc = candles.filter(pl.col("symbol") == "BTCUSDT").with_columns(
        day=(pl.col("open_time") - pl.col("open_time").min()).dt.total_days(),
        r=pl.col("close").log().diff())
    daily = btc.group_by("day").agg(pl.col("r").std().alias("vol"), pl.col("r").sum().alias("ret"))
    vol = dict(daily.select("day", "vol").iter_rows())
    ret = dict(daily.select("day", "ret").iter_rows())
    assert np.mean([vol[d] for d in (9, 10)]) > 2 * np.mean([vol[d] for d in range(4)])
    assert sum(ret[d] for d in range(4, 9)) > 0.05 and sum(ret[d] for d in range(11, 16)) < -0.05


def test_sample_clock_is_the_close_of_the_last_bundled_candle():
    from datetime import timedelta

    from botopt.core import sample_clock

    candles = load_candles(SYMBOLS, config=load_config(), as_of="2100-01-01T00:00:00Z")
    last = candles.group_by("symbol").agg(pl.col("open_time").max())["open_time"]
    assert set(last.to_list()) == {sample_clock() - timedelta(minutes=5)}
    # Without --as-of a sample run uses that clock, so its newest candle is fresh.
    assert load_candles(SYMBOLS, config=load_config())["open_time"].max() == last.max()
