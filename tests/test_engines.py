"""The batch path returns exactly what the one-symbol-at-a-time path returns."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botopt.core import AlphaEngineCoordinator, Signal, compute_features, load_candles, load_config
from botopt.core.errors import UsageError
from botopt.core.signals._engines import ENGINES, best_signal
from botopt.core.signals._regime import REGIMES

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]


@pytest.fixture(scope="module")
def feature_frames() -> dict[str, pl.DataFrame]:
    cfg = load_config()
    feats = compute_features(load_candles(SYMBOLS, config=cfg, as_of="2026-10-01"))
    frames = {}
    # Many distinct (symbol, time) cases: each symbol cut at several points of its history.
    for sym in SYMBOLS:
        f = feats.filter(pl.col("symbol") == sym)
        for cut in range(10, f.height, 97):
            frames[f"{sym}_{cut}"] = f.head(cut).with_columns(symbol=pl.lit(f"{sym}_{cut}"))
    return frames


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_batch_equals_per_symbol(feature_frames, data):
    names = data.draw(st.lists(st.sampled_from(sorted(feature_frames)), min_size=1,
                               max_size=40, unique=True))
    regimes = {n: data.draw(st.sampled_from(REGIMES)) for n in names}
    coord = AlphaEngineCoordinator()
    batch = coord.generate_all_signals_batch({n: feature_frames[n] for n in names}, regimes)
    assert list(batch) == names
    for n in names:
        assert batch[n] == coord.generate_all_signals(feature_frames[n], regimes[n])


def test_best_for_rows_equals_the_best_of_all_signals(feature_frames):
    """What ``prepare`` keeps (the guard's reason and the best signal per row, made without
    a Signal per engine) equals every engine's signals then ``best_signal``, in every
    regime, over rows where several engines fire and rows that are warming up."""
    coord = AlphaEngineCoordinator()
    names = sorted(feature_frames)
    last = pl.concat([feature_frames[n].tail(1) for n in names], how="vertical_relaxed")
    several = 0
    for k in range(len(REGIMES)):
        regimes = [REGIMES[(k + i) % len(REGIMES)] for i in range(len(names))]
        every = coord.signals_for_rows(last, regimes)
        guards, best = coord.best_for_rows(last, regimes)
        assert best == [best_signal(every[n]) for n in names]
        assert guards == [next((x.reasons[0] for x in every[n] if x.engine == "guard"),
                               None) for n in names]
        several += sum(len([x for x in every[n] if x.direction != "flat"]) > 1
                       for n in names)
    assert several > 10  # the choice between engines is in the comparison


def test_engines_follow_their_regimes(feature_frames):
    coord = AlphaEngineCoordinator()
    frame = feature_frames["BTCUSDT_5927"]
    for regime in REGIMES:
        engines = {s.engine for s in coord.generate_all_signals(frame, regime)}
        assert engines == {e.name for e in ENGINES if regime in e.regimes}
    assert {e.name for e in ENGINES} == {"trend_following", "mean_reversion", "breakout",
                                         "momentum"}


@pytest.mark.slow
def test_signals_are_well_formed_and_fire(feature_frames):
    coord = AlphaEngineCoordinator()
    fired = 0
    for name, frame in feature_frames.items():
        for regime in REGIMES:
            for s in coord.generate_all_signals(frame, regime):
                assert s.symbol == name and s.direction in ("long", "short", "flat")
                assert 0.0 <= s.strength <= 1.0 and s.reasons
                assert s.candle_time == frame["open_time"][-1]
                fired += s.direction != "flat"
                assert Signal.from_dict(s.to_dict()) == s
    assert fired > 50  # the engines are not dead code on three weeks of data


def test_warm_up_gives_no_signal(feature_frames):
    assert AlphaEngineCoordinator().generate_all_signals(feature_frames["ETHUSDT_10"],
                                                         "TREND_UP") == []


def test_signal_equality_and_best():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    a = Signal("X", t, "momentum", "long", 0.5, ("rsi 60",))
    assert a == dataclasses.replace(a) and hash(a) == hash(dataclasses.replace(a))
    b = dataclasses.replace(a, engine="breakout", strength=0.7)
    flat = dataclasses.replace(a, direction="flat", strength=0.9)
    assert best_signal([a, b, flat]) == b and best_signal([flat]) is None


def test_missing_or_unknown_regime_is_a_usage_error(feature_frames):
    coord = AlphaEngineCoordinator()
    f = feature_frames["BTCUSDT_5927"]
    with pytest.raises(UsageError, match="no regime given for symbol A"):
        coord.generate_all_signals_batch({"A": f}, {})
    with pytest.raises(UsageError, match="SIDEWAYS"):
        coord.generate_all_signals(f, "SIDEWAYS")
