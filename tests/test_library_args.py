"""The public library's boundary: what a careless caller hands it gets one line naming the
argument, column or setting (a hostile sweep found AttributeError, ZeroDivisionError and
polars' own errors from deep inside), and a shuffled frame gives the sorted frame's answer."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from botopt.core import (
    AlphaEngineCoordinator,
    RollingCorrelation,
    compute_features,
    detect_regime,
    load_candles,
    load_config,
    parse_symbols,
    update_correlation,
    validate_candles,
)
from botopt.core.backtest._run import parse_time
from botopt.core.base._config import FeaturesConfig, RegimeConfig
from botopt.core.base._numfmt import fmt_minute, fmt_time
from botopt.core.delivery._notify import pending_notifications
from botopt.core.errors import ConfigError, UsageError

AS_OF = "2026-09-20T12:00Z"


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def candles(cfg):
    return load_candles(["BTCUSDT", "ETHUSDT"], config=cfg, as_of=AS_OF)


@pytest.fixture(scope="module")
def features(candles):
    return compute_features(candles)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("bad, says", [
    (None, "wants a polars DataFrame, not nothing"),
    ({"close": [1.0]}, "wants a polars DataFrame, not a table"),
    ("drop:close", "has no 'close' column"),
    ("text:close", "column 'close' holds String, not numbers"),
    ("text:open_time", "column 'open_time' holds String, not times"),
    ("repeat", "BTCUSDT's candle 2 opens at the same time as the one before it"),
])
def test_compute_features_names_what_is_wrong_with_its_frame(candles, bad, says):
    if bad == "repeat":
        bad = pl.concat([candles.head(5), candles.head(5)])
    elif isinstance(bad, str):
        how, col = bad.split(":")
        bad = candles.drop(col) if how == "drop" else \
            candles.with_columns(pl.col(col).cast(pl.String))
    with pytest.raises(UsageError, match=says) as info:
        compute_features(bad)
    one_line(info.value)


def test_a_shuffled_frame_gives_the_sorted_frames_features(candles, features):
    """Each symbol's rows are put in time order, runs kept where they are: a shuffled
    symbol gave indicators over its rows' order, in silence."""
    eth = candles.filter(pl.col("symbol") == "ETHUSDT").sample(fraction=1, shuffle=True, seed=2)
    btc = candles.filter(pl.col("symbol") == "BTCUSDT").sample(fraction=1, shuffle=True, seed=3)
    out = compute_features(pl.concat([eth, btc]))
    assert out["symbol"].unique(maintain_order=True).to_list() == ["ETHUSDT", "BTCUSDT"]
    assert out.sort("symbol", "open_time").equals(features.sort("symbol", "open_time"))


@pytest.mark.parametrize("section, key", [
    (FeaturesConfig(adx_period=0), "features.adx_period"),  # ZeroDivisionError before
    (FeaturesConfig(ema_fast=-3), "features.ema_fast"),  # an EMA of -1e33 before
    (FeaturesConfig(ema_fast=30), "features.ema_fast"),  # not shorter than the slow one
    (FeaturesConfig(bb_std=float("nan")), "features.bb_std"),
    (FeaturesConfig(rsi_period=14.0), "features.rsi_period"),  # "rsi_14.0" not found
    (FeaturesConfig(rsi_period=[14]), "features.rsi_period"),  # unhashable too
])
def test_a_section_built_in_code_is_held_to_the_files_bounds(candles, section, key):
    with pytest.raises(ConfigError, match=key) as info:
        compute_features(candles, section)
    assert info.value.key == key and one_line(info.value)


def test_regimes_and_engines_take_the_whole_config_as_features_do(cfg, features):
    assert detect_regime(features, cfg) == detect_regime(features, cfg.regime, cfg.features)
    whole, section = AlphaEngineCoordinator(cfg), AlphaEngineCoordinator(cfg.features)
    last = features.filter(pl.col("symbol") == "BTCUSDT")
    assert whole.generate_all_signals(last, "RANGE") == \
        section.generate_all_signals(last, "RANGE")
    with pytest.raises(ConfigError, match="regime.vol_lookback"):
        detect_regime(features, RegimeConfig(vol_lookback=0))  # polars' ShapeError before


@pytest.mark.parametrize("call, says", [
    (lambda f, c: detect_regime(c), "detect_regime: the frame has no 'adx_14' column"),
    (lambda f, c: detect_regime(None), "detect_regime wants a polars DataFrame"),
    (lambda f, c: detect_regime(f, prior={"BTCUSDT": "BOGUS"}),
     "prior gives BTCUSDT the regime 'BOGUS'"),
    (lambda f, c: detect_regime(f, prior={"BTCUSDT": "\u202eEVIL"}), "'\\\\u202eEVIL'"),
    (lambda f, c: AlphaEngineCoordinator().generate_all_signals(c, "RANGE"),
     'cannot read the features frame \\(unable to find column "atr_14"\\)'),
    (lambda f, c: AlphaEngineCoordinator().generate_all_signals(None, "RANGE"),
     "generate_all_signals wants a polars DataFrame of features, not nothing"),
    (lambda f, c: AlphaEngineCoordinator().generate_all_signals_batch({"X": 5}, {"X": "RANGE"}),
     "generate_all_signals_batch \\(X\\) wants a polars DataFrame"),
    (lambda f, c: AlphaEngineCoordinator({"ema_fast": 5}), "not a table"),
])
def test_regimes_and_engines_name_what_is_wrong(features, candles, call, says):
    with pytest.raises(UsageError, match=says) as info:
        call(features, candles)
    one_line(info.value)


def test_candle_checks_name_the_column_or_the_other_symbol(cfg, candles, tmp_path):
    with pytest.raises(UsageError, match="holds ETHUSDT's candles, not only BTCUSDT's"):
        validate_candles(candles, symbol="BTCUSDT", interval="5m")
    with pytest.raises(UsageError, match="column 'close' holds String"):
        validate_candles(candles.with_columns(pl.col("close").cast(pl.String)),
                         symbol="BTCUSDT", interval="5m")
    with pytest.raises(UsageError, match="update_correlation: the frame has no 'close'"):
        update_correlation(cfg, candles.drop("close"), state_dir=tmp_path)
    with pytest.raises(UsageError, match="update_correlation wants a polars DataFrame"):
        update_correlation(cfg, None, state_dir=tmp_path)


@pytest.mark.parametrize("call, says", [
    (lambda: load_config(overrides=["gates.min_strength"]), "overrides must map"),
    (lambda: load_config(overrides={1: 2}), "overrides must map"),
    (lambda: load_config(env=5), "env must map variable names"),
    (lambda: parse_symbols(b"5m"), "symbols must be text or a list of texts, not bytes"),
    (lambda: parse_symbols([b"BTCUSDT"]), "a symbol must be text, not bytes"),
    (lambda: RollingCorrelation(window=10 ** 12), "correlation window must be a whole number"),
    (lambda: RollingCorrelation(interval_ms=0), "correlation interval_ms"),
    (lambda: RollingCorrelation(symbols="ABC"), "symbols must be a list"),
    (lambda: RollingCorrelation().rows(["ZZZ"]), "ZZZ is not in this correlation state"),
    (lambda: load_candles(["BTCUSDT"], config=load_config(), limit="10"), "limit must be"),
    (lambda: load_candles(["BTCUSDT"], config=load_config(), limit=-1), "limit must be"),
    (lambda: load_candles(["BTCUSDT"], config=None), "load_candles wants a Config"),
    (lambda: load_candles(["BTCUSDT"], config=load_config(), as_of=5), "a datetime or ISO"),
    (lambda: parse_time(None, "--since"), "invalid --since 'None'"),
    (lambda: parse_time(date(2024, 1, 1), "--until"), "invalid --until"),
    (lambda: fmt_time(datetime(2024, 1, 1), "Mars/Base"), "unknown time zone 'Mars/Base'"),
    (lambda: fmt_minute("2024-01-01"), "fmt_minute wants a datetime, not a string"),
])
def test_library_arguments_are_named_in_one_line(call, says):
    with pytest.raises(UsageError, match=says) as info:
        call()
    one_line(info.value)


def test_a_listing_limit_that_is_not_a_number_is_named_not_blamed_on_the_queue(tmp_path):
    cfg = load_config(overrides={"cache.dir": str(tmp_path)})
    with pytest.raises(UsageError, match="limit must be a whole number"):
        pending_notifications(cfg, limit="a")  # was "queue.db: datatype mismatch"


@pytest.mark.parametrize("key", ["telegram.api_url", "binance.api_url"])
@pytest.mark.parametrize("url", ["", "ftp://x", "not a url", "https://", "http://[bad"])
def test_an_api_url_that_is_not_one_is_refused_at_load(key, url):
    """Accepted before: every flush then failed as "Telegram unreachable", run after run."""
    with pytest.raises(ConfigError, match=f"{key}.*must be an http:// or https:// URL"):
        load_config(overrides={key: url})
