"""Technical features for all symbols at once, matching TA-Lib's definitions and seeding.

Every recursive smoother (EMA, Wilder's RSI/ATR/DI/ADX) is written as polars' ``ewm_mean``
with ``adjust=False`` over a column that is null during the warm-up and holds TA-Lib's seed
(the simple average, or for DI the scaled partial sum) at the first output bar. That keeps the
whole computation in a handful of vectorised passes ``.over("_g")`` with no Python loop
per symbol, and each symbol's values depend on its own rows only.

Indicators run over rows, as TA-Lib does: a gap in time is not filled or bridged by a fake
candle (log returns across a gap are still computed between the neighbouring rows, because
that is what a user's TA-Lib code sees too).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from botopt.core._config import Config, FeaturesConfig

FEATURES_VERSION = "2"


def _features_config(config: FeaturesConfig | Config | None) -> FeaturesConfig:
    if config is None:
        return FeaturesConfig()
    if isinstance(config, Config):
        return config.features
    return config


def feature_columns(config: FeaturesConfig | Config | None = None) -> list[str]:
    """Names of the feature columns ``compute_features`` adds, in order."""
    fc = _features_config(config)
    return [
        f"ema_{fc.ema_fast}", f"ema_{fc.ema_slow}", f"rsi_{fc.rsi_period}",
        f"atr_{fc.atr_period}", f"adx_{fc.adx_period}", f"plus_di_{fc.adx_period}",
        f"minus_di_{fc.adx_period}", f"bb_width_{fc.bb_period}", f"vol_{fc.vol_period}",
        f"volume_z_{fc.volume_z_period}", "log_return",
    ]


def _smooth(x: pl.Expr, idx: pl.Expr, first: int, seed: pl.Expr, alpha: float) -> pl.Expr:
    """null before row ``first``, ``seed`` at ``first``, then y += alpha * (x - y)."""
    src = pl.when(idx < first).then(None).when(idx == first).then(seed).otherwise(x)
    return src.ewm_mean(alpha=alpha, adjust=False).over("_g")


def _ratio(num: pl.Expr, den: pl.Expr, scale: float = 100.0) -> pl.Expr:
    # TA-Lib answers 0 where the denominator vanishes (flat prices), never inf or NaN.
    return pl.when(den == 0).then(0.0).otherwise(scale * num / den)


def _rolling_std(x: pl.Expr, n: int, ddof: int) -> pl.Expr:
    """Rolling std that is exactly 0 on a constant window, as the definition says.

    Streaming variance formulas leave rounding residue (~1e-8 of the level) on flat stretches;
    flat stretches are common in thin markets, and 0 vs 1e-16 decides whether a z-score exists.
    """
    flat = x.rolling_max(n) == x.rolling_min(n)
    return pl.when(flat).then(0.0).otherwise(x.rolling_std(n, ddof=ddof)).over("_g")


def compute_features(candles: pl.DataFrame,
                     config: FeaturesConfig | Config | None = None) -> pl.DataFrame:
    """Add the feature columns (see ``feature_columns``) to a canonical candle frame.

    Warm-up bars are null. Values match TA-Lib (EMA, RSI, ATR, ADX, PLUS_DI, MINUS_DI,
    BBANDS) on every bar where TA-Lib gives one. ``bb_width`` is (upper - lower) / middle of
    BBANDS(period, k, k, SMA); ``vol`` is the sample standard deviation of log returns;
    ``volume_z`` is (volume - mean) / sample std of volume over its window.
    """
    fc = _features_config(config)
    n_rsi, n_atr, n_adx = fc.rsi_period, fc.atr_period, fc.adx_period
    c, h, lo = pl.col("close"), pl.col("high"), pl.col("low")
    i = pl.col("_i")
    prev_c = pl.col("_pc")

    runs_of_symbol = candles["symbol"].rle().len() if candles.height else 0
    if runs_of_symbol != candles["symbol"].n_unique():
        candles = candles.sort("symbol", "open_time", maintain_order=True)
    # Windows over a sorted integer key partition much faster than over the symbol strings,
    # and the row index within each symbol comes straight from the run lengths.
    runs = candles["symbol"].rle().struct.field("len").to_numpy().astype(np.int64)
    starts = np.repeat(np.cumsum(runs) - runs, runs)
    out = candles.with_columns(
        _g=pl.col("symbol").rle_id().set_sorted(),
        _i=pl.Series(np.arange(candles.height, dtype=np.int64) - starts),
    )
    out = out.with_columns(
        _pc=c.shift(1).over("_g"),
        _up=(h - h.shift(1)).over("_g"),
        _down=(lo.shift(1) - lo).over("_g"),
    )
    up, down = pl.col("_up"), pl.col("_down")
    out = out.with_columns(
        _tr=pl.when(i == 0).then(None).otherwise(
            pl.max_horizontal(h - lo, (h - prev_c).abs(), (lo - prev_c).abs())),
        _pdm=pl.when(i == 0).then(None).when((up > 0) & (up > down)).then(up).otherwise(0.0),
        _mdm=pl.when(i == 0).then(None).when((down > 0) & (up < down)).then(down)
        .otherwise(0.0),
        _gain=(c - prev_c).clip(lower_bound=0.0),
        _loss=(prev_c - c).clip(lower_bound=0.0),
    )

    def ema(n: int) -> pl.Expr:
        return _smooth(c, i, n - 1, c.rolling_mean(n).over("_g"), 2.0 / (n + 1))

    def wilder_mean(col: str, n: int) -> pl.Expr:
        # Seed: the mean of the first n values, which start at row 1 (row 0 has no change).
        x = pl.col(col)
        return _smooth(x, i, n, x.rolling_mean(n).over("_g"), 1.0 / n)

    def wilder_sum(col: str, n: int) -> pl.Expr:
        # TA-Lib's DI keeps Wilder *sums* seeded with the first n-1 values and applies one
        # recursion step at row n; divided by n it is the same recursion as a Wilder mean.
        x = pl.col(col)
        seed = (x.rolling_sum(n - 1).shift(1).over("_g") * (1 - 1.0 / n) + x) * (1.0 / n)
        return _smooth(x, i, n, seed, 1.0 / n)

    out = out.with_columns(
        ema(fc.ema_fast).alias(f"ema_{fc.ema_fast}"),
        ema(fc.ema_slow).alias(f"ema_{fc.ema_slow}"),
        wilder_mean("_gain", n_rsi).alias("_avg_gain"),
        wilder_mean("_loss", n_rsi).alias("_avg_loss"),
        wilder_mean("_tr", n_atr).alias(f"atr_{n_atr}"),
        wilder_sum("_pdm", n_adx).alias("_sum_pdm"),
        wilder_sum("_mdm", n_adx).alias("_sum_mdm"),
        wilder_sum("_tr", n_adx).alias("_sum_tr"),
    )
    gain, loss = pl.col("_avg_gain"), pl.col("_avg_loss")
    out = out.with_columns(
        _ratio(gain, gain + loss).alias(f"rsi_{n_rsi}"),
        _ratio(pl.col("_sum_pdm"), pl.col("_sum_tr")).alias(f"plus_di_{n_adx}"),
        _ratio(pl.col("_sum_mdm"), pl.col("_sum_tr")).alias(f"minus_di_{n_adx}"),
    )
    pdi, mdi = pl.col(f"plus_di_{n_adx}"), pl.col(f"minus_di_{n_adx}")
    out = out.with_columns(_dx=_ratio((pdi - mdi).abs(), pdi + mdi))
    dx = pl.col("_dx")
    log_ret = (c / prev_c).log()
    volume = pl.col("volume")
    out = out.with_columns(
        # ADX: the mean of the first n DX values (rows n..2n-1), then Wilder.
        _smooth(dx, i, 2 * n_adx - 1, dx.rolling_mean(n_adx).over("_g"), 1.0 / n_adx)
        .alias(f"adx_{n_adx}"),
        (2 * fc.bb_std * _rolling_std(c, fc.bb_period, ddof=0)
         / c.rolling_mean(fc.bb_period).over("_g")).alias(f"bb_width_{fc.bb_period}"),
        log_ret.alias("log_return"),
        _ratio(volume - volume.rolling_mean(fc.volume_z_period).over("_g"),
               _rolling_std(volume, fc.volume_z_period, ddof=1), scale=1.0)
        .alias(f"volume_z_{fc.volume_z_period}"),
    )
    out = out.with_columns(
        _rolling_std(pl.col("log_return"), fc.vol_period, ddof=1).alias(f"vol_{fc.vol_period}"),
    )
    return out.select(*candles.columns, *feature_columns(fc))
