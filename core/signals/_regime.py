"""Market regime per candle: TREND_UP, TREND_DOWN, RANGE or HIGH_VOL.

Rules (defaults from botopt.toml [regime]; sources in docs/regimes.md):

- ADX >= adx_trend (25) is a trend, its direction from +DI vs -DI (a tie counts as up);
- ADX <= adx_range (20) is a range;
- in between, the previous candle's trend/range label is kept (hysteresis), so a symbol does
  not flip between labels while ADX wanders around one threshold;
- before the first decisive ADX (warm-up), the trend/range label is RANGE;
- HIGH_VOL overrides the label for a candle whose realised volatility is above its
  ``vol_percentile`` percentile over the last ``vol_lookback`` candles (current one included,
  at least half of them with a value). It does not reset the trend/range state underneath.

The label is a pure function of the symbol's own feature history (never of the previous
run), which is what lets it be cached and still equal an uncached run.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from ..base._codec import digest, settings_json
from ..base._config import FeaturesConfig, RegimeConfig
from ..base._versions import stage_tag
from ..base._vocab import Regime

REGIMES: tuple[Regime, ...] = tuple(Regime)


def regime_inputs(fc: FeaturesConfig) -> list[str]:
    """The feature columns a regime label reads (over the symbol's whole history)."""
    n = fc.adx_period
    return [f"adx_{n}", f"plus_di_{n}", f"minus_di_{n}", f"vol_{fc.vol_period}"]


def _decisive(rc: RegimeConfig, fc: FeaturesConfig) -> pl.Expr:
    """A candle's own trend/range label where its ADX decides one, else null."""
    n = fc.adx_period
    adx, pdi, mdi = pl.col(f"adx_{n}"), pl.col(f"plus_di_{n}"), pl.col(f"minus_di_{n}")
    return (
        pl.when(adx >= rc.adx_trend)
        .then(pl.when(pdi >= mdi).then(pl.lit(Regime.TREND_UP.value))
              .otherwise(pl.lit(Regime.TREND_DOWN.value)))
        .when(adx <= rc.adx_range).then(pl.lit(Regime.RANGE.value))
        .otherwise(None)
    )


def _high_vol(vol: pl.Expr, threshold: pl.Expr, trend: pl.Expr) -> pl.Expr:
    return pl.when(vol > threshold).then(pl.lit(Regime.HIGH_VOL.value)).otherwise(trend)


def regime_expr(rc: RegimeConfig, fc: FeaturesConfig,
                prior: Mapping[str, str | None] | None = None) -> pl.Expr:
    """The per-candle regime label as an expression over a feature frame. ``prior``: per
    symbol, the hysteresis label from before the frame's first row (a carried slice)."""
    vol = pl.col(f"vol_{fc.vol_period}")
    trend = _decisive(rc, fc).forward_fill().over("symbol")
    if prior:
        trend = trend.fill_null(pl.col("symbol").replace_strict(
            dict(prior), default=None, return_dtype=pl.String))
    trend = trend.fill_null(Regime.RANGE.value)
    threshold = vol.rolling_quantile(
        quantile=rc.vol_percentile / 100.0, interpolation="linear",
        window_size=rc.vol_lookback, min_samples=max(1, rc.vol_lookback // 2),
    ).over("symbol")
    return _high_vol(vol, threshold, trend)


def _sections(config: object, features_config: object, fn: str
              ) -> tuple[RegimeConfig, FeaturesConfig]:
    """The regime and features settings from what a caller passes: sections, or a whole
    Config for either (its features serve when none are given apart)."""
    from ..base._args import section
    from ..base._config import Config

    rc = section(config, RegimeConfig, "regime", fn)
    if features_config is None and isinstance(config, Config):
        features_config = config
    return rc, section(features_config, FeaturesConfig, "features", fn)


def _checked_input(features: object, fc: FeaturesConfig, fn: str,
                   prior: Mapping[str, str | None] | None = None) -> pl.DataFrame:
    from ..base._args import frame
    from ..errors import UsageError

    cols = ["symbol", *regime_inputs(fc)]
    df: pl.DataFrame = frame(features, cols, fn, numeric=cols[1:])
    if prior is not None:
        if not isinstance(prior, Mapping):
            raise UsageError(f"{fn}: prior must map symbols to regimes", key="prior")
        bad = [(k, v) for k, v in prior.items() if v is not None and v not in _LABELS]
        if bad:
            raise UsageError(f"{fn}: prior gives {str(bad[0][0])[:40]} the regime "
                             f"{ascii(bad[0][1])[:40]}, not one of {', '.join(_LABELS)}",
                             key="prior", symbol=str(bad[0][0])[:40])
    return df


_LABELS = tuple(r.value for r in Regime)


def regime_series(features: pl.DataFrame, config: RegimeConfig | None = None,
                  features_config: FeaturesConfig | None = None) -> pl.DataFrame:
    """``features`` with a ``regime`` column, one label per candle."""
    rc, fc = _sections(config, features_config, "regime_series")
    features = _checked_input(features, fc, "regime_series")
    return features.with_columns(regime_expr(rc, fc).alias("regime"))


def detect_regime(features: pl.DataFrame, config: RegimeConfig | None = None,
                  features_config: FeaturesConfig | None = None,
                  prior: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Each symbol's regime at its last (closed) candle: {symbol: label}.

    Only the last candle's label is wanted, so only what it depends on is computed: the
    last decisive label (the hysteresis state) and the volatility quantile of the last
    window, instead of a label and a rolling quantile for every candle (1.7 s of a 2,000
    symbol run). Equal to the last ``regime_series`` label (tests/test_regime.py)."""
    import numpy as np

    rc, fc = _sections(config, features_config, "detect_regime")
    features = _checked_input(features, fc, "detect_regime", prior)
    sym = features.get_column("symbol")
    vol = pl.col(f"vol_{fc.vol_period}")
    runs = sym.rle()
    if features.height == 0 or runs.len() != sym.n_unique() or \
            features.select(vol.is_nan().any()).item():
        # Interleaved symbols, or NaN (which a quantile ranks, unlike null): per candle.
        labelled = features.with_columns(regime_expr(rc, fc, prior).alias("regime"))
        last = labelled.group_by("symbol", maintain_order=True).agg(pl.col("regime").last())
        return dict(zip(last["symbol"].to_list(), last["regime"].to_list(), strict=True))
    lens = runs.struct.field("len").to_numpy().astype(np.int64)
    ends = np.cumsum(lens)
    starts = ends - lens
    # The hysteresis state at the last candle is the last decisive label of the symbol. A
    # label is decisive exactly where ADX crosses a threshold (the DI comparison only picks
    # which trend), so no label strings are built for the whole history here.
    adx = pl.col(f"adx_{fc.adx_period}")
    at = features.select(pl.when((adx >= rc.adx_trend) | (adx <= rc.adx_range))
                         .then(pl.int_range(pl.len(), dtype=pl.Int64))
                         .otherwise(-1)).to_series().to_numpy()
    state = np.maximum.reduceat(at, starts)
    # The last candle's rolling window is the symbol's last vol_lookback rows: its quantile
    # over the non-null values, given at least min_samples of them (rolling_quantile's rule).
    tail = np.concatenate([np.arange(max(a, b - rc.vol_lookback), b)
                           for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
    threshold = features.select("symbol", vol).gather(tail).group_by(
        "symbol", maintain_order=True).agg(
        pl.when(vol.count() >= max(1, rc.vol_lookback // 2))
        .then(vol.quantile(rc.vol_percentile / 100.0, interpolation="linear")))
    has_state = state >= 0
    trend = pl.Series([None] * len(starts), dtype=pl.String).scatter(
        np.flatnonzero(has_state),
        features.gather(state[has_state]).select(_decisive(rc, fc)).to_series())
    if prior:
        names = runs.struct.field("value").to_list()
        trend = trend.fill_null(pl.Series([prior.get(s) for s in names], dtype=pl.String))
    last = features.gather(ends - 1).select(
        "symbol", _high_vol(vol, pl.lit(threshold.to_series(1)),
                            pl.lit(trend).fill_null(Regime.RANGE.value)).alias("regime"))
    return dict(zip(last["symbol"].to_list(), last["regime"].to_list(), strict=True))


def regime_keys(config: RegimeConfig, features_config: FeaturesConfig,
                fingerprints: Mapping[str, str]) -> dict[str, str]:
    """The regime cache key per symbol: its candles, the feature and regime settings, and
    the code of both stages (a regime is read off the whole feature history)."""
    prefix = digest("regime", stage_tag("regime"), settings_json(features_config, config))
    # the fingerprint's leading candle minute leads the key too (``time_ordered``)
    return {s: fp[:8] + digest(prefix, fp) for s, fp in fingerprints.items()}
