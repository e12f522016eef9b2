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

from botopt.core.base._codec import digest, settings_json
from botopt.core.base._config import FeaturesConfig, RegimeConfig
from botopt.core.base._versions import stage_tag
from botopt.core.base._vocab import Regime

REGIMES: tuple[Regime, ...] = tuple(Regime)


def regime_expr(rc: RegimeConfig, fc: FeaturesConfig) -> pl.Expr:
    """The per-candle regime label as an expression over a feature frame."""
    n = fc.adx_period
    adx, pdi, mdi = pl.col(f"adx_{n}"), pl.col(f"plus_di_{n}"), pl.col(f"minus_di_{n}")
    vol = pl.col(f"vol_{fc.vol_period}")
    decisive = (
        pl.when(adx >= rc.adx_trend)
        .then(pl.when(pdi >= mdi).then(pl.lit(Regime.TREND_UP.value))
              .otherwise(pl.lit(Regime.TREND_DOWN.value)))
        .when(adx <= rc.adx_range).then(pl.lit(Regime.RANGE.value))
        .otherwise(None)
    )
    trend = decisive.forward_fill().over("symbol").fill_null(Regime.RANGE.value)
    threshold = vol.rolling_quantile(
        quantile=rc.vol_percentile / 100.0, interpolation="linear",
        window_size=rc.vol_lookback, min_samples=max(1, rc.vol_lookback // 2),
    ).over("symbol")
    return pl.when(vol > threshold).then(pl.lit(Regime.HIGH_VOL.value)).otherwise(trend)


def regime_series(features: pl.DataFrame, config: RegimeConfig | None = None,
                  features_config: FeaturesConfig | None = None) -> pl.DataFrame:
    """``features`` with a ``regime`` column, one label per candle."""
    rc, fc = config or RegimeConfig(), features_config or FeaturesConfig()
    return features.with_columns(regime_expr(rc, fc).alias("regime"))


def detect_regime(features: pl.DataFrame, config: RegimeConfig | None = None,
                  features_config: FeaturesConfig | None = None) -> dict[str, str]:
    """Each symbol's regime at its last (closed) candle: {symbol: label}."""
    labelled = regime_series(features, config, features_config)
    last = labelled.group_by("symbol", maintain_order=True).agg(pl.col("regime").last())
    return dict(zip(last["symbol"].to_list(), last["regime"].to_list(), strict=True))


def regime_keys(config: RegimeConfig, features_config: FeaturesConfig,
                fingerprints: Mapping[str, str]) -> dict[str, str]:
    """The regime cache key per symbol: its candles, the feature and regime settings, and
    the code of both stages (a regime is read off the whole feature history)."""
    prefix = digest("regime", stage_tag("regime"), settings_json(features_config, config))
    return {s: digest(prefix, fp) for s, fp in fingerprints.items()}
