"""Technical features for all symbols at once, matching TA-Lib's definitions and seeding.

Every recursive smoother (EMA, Wilder's RSI/ATR/DI/ADX) is written as polars' ``ewm_mean``
with ``adjust=False`` over a column that is null during the warm-up and holds TA-Lib's seed
(the simple average, or for DI the scaled partial sum) at the first output bar. That keeps the
whole computation in a handful of vectorised passes with no Python loop per symbol, and each
symbol's values depend on its own rows only (a property test checks it bit for bit).

Where the time goes (500 symbols x 1,000 bars): ``.over()`` is the cost, not the arithmetic.
An elementwise expression inside ``.over()`` is evaluated group by group, so inputs are built
as plain columns first and only the recursions and rolling windows run per symbol. Exact steps
(shifts, integer counts) run over the whole column and null the rows that would reach into
the previous symbol; the seeds, one number per symbol, are summed in numpy instead of by a
rolling window over every row. Those three changes took the batch from about 370 ms to 280 ms
(single-threaded polars: 490 to 290 ms); a per-symbol TA-Lib loop takes about 40 ms.

Indicators run over rows, as TA-Lib does: a gap in time is not filled or bridged by a fake
candle (log returns across a gap are still computed between the neighbouring rows, because
that is what a user's TA-Lib code sees too).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from botopt.core._config import Config, FeaturesConfig

# Part of every features cache key: bump it when any value may change, even in the last
# bit, so a cached answer stays the answer this code gives.
FEATURES_VERSION = "3"


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


def _smooth_source(x: pl.Expr, idx: pl.Expr, first: int, seed: pl.Expr) -> pl.Expr:
    """null before row ``first``, ``seed`` at ``first``, then ``x``: the input of _smooth."""
    return pl.when(idx < first).then(None).when(idx == first).then(seed).otherwise(x)


def _smooth(src: pl.Expr, alpha: float) -> pl.Expr:
    """y = seed at the first non-null row, then y += alpha * (x - y). ``src`` is a column
    made by _smooth_source beforehand: an elementwise expression inside ``.over()`` is
    evaluated group by group, which cost more than the recursion itself."""
    return src.ewm_mean(alpha=alpha, adjust=False).over("_g")


class _Seeds:
    """TA-Lib's seeds, one per symbol, placed at the row where each smoother starts.

    A seed is one number per symbol, but a rolling window ``.over()`` the symbols computes it
    for every row: summing the few rows in numpy costs a fraction. The sum runs element by
    element in row order, as TA-Lib's own loop does, and a symbol's seed reads its own rows
    only, so adding symbols to a batch cannot change it.
    """

    def __init__(self, runs: np.ndarray, height: int) -> None:
        self.starts = np.cumsum(runs) - runs
        self.runs = runs
        self.height = height

    def place(self, first: int, seed: Callable[[np.ndarray], np.ndarray]) -> pl.Series:
        """A column null everywhere but at row ``first`` of each symbol long enough to have
        it, where it holds ``seed(base)`` (``base``: those symbols' row ``first``)."""
        ok = self.runs > first
        base = self.starts[ok] + first
        col = np.full(self.height, np.nan)
        col[base] = seed(base)
        return pl.Series(col).fill_nan(None)

    def mean(self, values: np.ndarray, first: int, n: int) -> pl.Series:
        """The mean of rows first-n+1..first."""
        def seed(base: np.ndarray) -> np.ndarray:
            total = np.zeros(len(base))
            for k in range(n - 1, -1, -1):
                total = total + values[base - k]
            return total / n
        return self.place(first, seed)

    def wilder_sum(self, values: np.ndarray, first: int, n: int) -> pl.Series:
        """TA-Lib's DI seed: the sum of rows first-n+1..first-1, one Wilder step with row
        ``first``, divided by n (the smoother then runs as a Wilder mean)."""
        def seed(base: np.ndarray) -> np.ndarray:
            total = np.zeros(len(base))
            for k in range(n - 1, 0, -1):
                total = total + values[base - k]
            return (total * (1 - 1.0 / n) + values[base]) * (1.0 / n)
        return self.place(first, seed)


def _ratio(num: pl.Expr, den: pl.Expr, scale: float = 100.0) -> pl.Expr:
    # TA-Lib answers 0 where the denominator vanishes (flat prices), never inf or NaN.
    return pl.when(den == 0).then(0.0).otherwise(scale * num / den)


def _rolling_std(x: pl.Expr, idx: pl.Expr, n: int, ddof: int) -> pl.Expr:
    """Rolling std that is exactly 0 on a constant window, as the definition says.

    Streaming variance formulas leave rounding residue (~1e-8 of the level) on flat stretches;
    flat stretches are common in thin markets, and 0 vs 1e-16 decides whether a z-score exists.
    A window is flat when none of its last n-1 steps changed the value: an integer count, so
    it is exact over the whole column. Its window reaches into the previous symbol only on
    the warm-up rows (``idx < n - 1``), which are ruled out.
    """
    changed = (x != x.shift(1)).cast(pl.Int32)
    flat = (changed.rolling_sum(n - 1) == 0) & (idx >= n - 1)
    return pl.when(flat).then(0.0).otherwise(x.rolling_std(n, ddof=ddof).over("_g"))


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
    # A shift is exact, so it runs over the whole column; row 0 of each symbol, which would
    # see the previous symbol's last row, is nulled.
    first_row = i == 0
    out = out.with_columns(
        _pc=pl.when(first_row).then(None).otherwise(c.shift(1)),
        _up=pl.when(first_row).then(None).otherwise(h - h.shift(1)),
        _down=pl.when(first_row).then(None).otherwise(lo.shift(1) - lo),
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

    seeds = _Seeds(runs, out.height)

    def arr(col: str) -> np.ndarray:
        return out.get_column(col).to_numpy().astype(np.float64)  # null -> NaN

    close, tr = arr("close"), arr("_tr")

    def ema_source(n: int) -> pl.Expr:
        return _smooth_source(c, i, n - 1, pl.lit(seeds.mean(close, n - 1, n)))

    def wilder_mean_source(col: str, n: int) -> pl.Expr:
        # Seed: the mean of the first n values, which start at row 1 (row 0 has no change).
        values = tr if col == "_tr" else arr(col)
        return _smooth_source(pl.col(col), i, n, pl.lit(seeds.mean(values, n, n)))

    def wilder_sum_source(col: str, n: int) -> pl.Expr:
        # TA-Lib's DI keeps Wilder *sums* seeded with the first n-1 values and applies one
        # recursion step at row n; divided by n it is the same recursion as a Wilder mean.
        values = tr if col == "_tr" else arr(col)
        return _smooth_source(pl.col(col), i, n, pl.lit(seeds.wilder_sum(values, n, n)))

    smoothed = {
        f"ema_{fc.ema_fast}": (ema_source(fc.ema_fast), 2.0 / (fc.ema_fast + 1)),
        f"ema_{fc.ema_slow}": (ema_source(fc.ema_slow), 2.0 / (fc.ema_slow + 1)),
        "_avg_gain": (wilder_mean_source("_gain", n_rsi), 1.0 / n_rsi),
        "_avg_loss": (wilder_mean_source("_loss", n_rsi), 1.0 / n_rsi),
        f"atr_{n_atr}": (wilder_mean_source("_tr", n_atr), 1.0 / n_atr),
        "_sum_pdm": (wilder_sum_source("_pdm", n_adx), 1.0 / n_adx),
        "_sum_mdm": (wilder_sum_source("_mdm", n_adx), 1.0 / n_adx),
        "_sum_tr": (wilder_sum_source("_tr", n_adx), 1.0 / n_adx),
    }
    out = out.with_columns(src.alias(f"_src{k}") for k, (src, _) in enumerate(smoothed.values()))
    out = out.with_columns(_smooth(pl.col(f"_src{k}"), alpha).alias(name)
                           for k, (name, (_, alpha)) in enumerate(smoothed.items()))
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
        _src_adx=_smooth_source(dx, i, 2 * n_adx - 1,
                                pl.lit(seeds.mean(arr("_dx"), 2 * n_adx - 1, n_adx))))
    out = out.with_columns(
        _smooth(pl.col("_src_adx"), 1.0 / n_adx).alias(f"adx_{n_adx}"),
        (2 * fc.bb_std * _rolling_std(c, i, fc.bb_period, ddof=0)
         / c.rolling_mean(fc.bb_period).over("_g")).alias(f"bb_width_{fc.bb_period}"),
        log_ret.alias("log_return"),
        _ratio(volume - volume.rolling_mean(fc.volume_z_period).over("_g"),
               _rolling_std(volume, i, fc.volume_z_period, ddof=1), scale=1.0)
        .alias(f"volume_z_{fc.volume_z_period}"),
    )
    out = out.with_columns(
        _rolling_std(pl.col("log_return"), i, fc.vol_period, ddof=1).alias(f"vol_{fc.vol_period}"),
    )
    return out.select(*candles.columns, *feature_columns(fc))
