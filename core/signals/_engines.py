"""Alpha engines: small pure functions of a symbol's latest features, chosen by regime.

Each engine is a row in ``ENGINES``: a name, the regimes where it is active, and a function
that turns the feature columns into three polars expressions (direction, strength, reason).
Because an engine is an expression, the per-symbol call and the batch call run exactly the
same arithmetic: the batch just evaluates it over one frame holding every symbol's last row,
which is where its speed comes from.

An engine whose inputs are null (warm-up) gives no signal for that symbol.

Degenerate markets: where an indicator is undefined at the last candle (no price range, a
close that has not moved for a whole window, returns with zero variance, no trades), the
formulas still produce numbers (TA-Lib answers RSI 0 on flat prices), and those numbers
would read as the strongest possible signal. The ``guard`` rule runs first: a degenerate
symbol gets one flat signal of strength 0 from the engine ``guard``, whose reason says what is
undefined, and no engine runs for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import polars as pl

from ..base._codec import register_type
from ..base._config import Config, FeaturesConfig
from ..base._frozen import quick_init
from ..base._vocab import Direction, Regime
from ..errors import UsageError
from ._regime import REGIMES


@quick_init
@dataclass(frozen=True)
class Signal:
    """One engine's view of one symbol at one closed candle."""

    symbol: str
    candle_time: datetime
    engine: str
    direction: str
    strength: float
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "candle_time": self.candle_time.astimezone(timezone.utc).isoformat(),
            "engine": self.engine,
            "direction": self.direction,
            "strength": self.strength,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signal:
        return cls(symbol=d["symbol"], candle_time=datetime.fromisoformat(d["candle_time"]),
                   engine=d["engine"], direction=d["direction"], strength=float(d["strength"]),
                   reasons=tuple(d["reasons"]))


register_type(Signal)


@dataclass(frozen=True)
class Exprs:
    """The feature columns as polars expressions (`pl.col(...)`), for the configured periods."""

    ema_fast: pl.Expr
    ema_slow: pl.Expr
    rsi: pl.Expr
    atr: pl.Expr
    adx: pl.Expr
    pdi: pl.Expr
    mdi: pl.Expr
    bb_width: pl.Expr
    vol: pl.Expr
    volume_z: pl.Expr
    log_return: pl.Expr
    close: pl.Expr
    volume: pl.Expr

    @classmethod
    def of(cls, fc: FeaturesConfig) -> Exprs:
        n = fc.adx_period
        return cls(
            ema_fast=pl.col(f"ema_{fc.ema_fast}"), ema_slow=pl.col(f"ema_{fc.ema_slow}"),
            rsi=pl.col(f"rsi_{fc.rsi_period}"), atr=pl.col(f"atr_{fc.atr_period}"),
            adx=pl.col(f"adx_{n}"), pdi=pl.col(f"plus_di_{n}"), mdi=pl.col(f"minus_di_{n}"),
            bb_width=pl.col(f"bb_width_{fc.bb_period}"), vol=pl.col(f"vol_{fc.vol_period}"),
            volume_z=pl.col(f"volume_z_{fc.volume_z_period}"),
            log_return=pl.col("log_return"), close=pl.col("close"), volume=pl.col("volume"),
        )


EngineFn = Callable[[Exprs], tuple[pl.Expr, pl.Expr, pl.Expr]]


@dataclass(frozen=True)
class Engine:
    name: str
    regimes: frozenset[str]
    inputs: Callable[[Exprs], list[pl.Expr]]
    rule: EngineFn


def _unit(x: pl.Expr) -> pl.Expr:
    return x.clip(0.0, 1.0)


def _per(x: pl.Expr, scale: float) -> pl.Expr:
    # Multiply by the reciprocal: polars divides a one-row column by a literal differently
    # from a long one (last-bit differences), and batch must equal per-symbol exactly.
    return x * (1.0 / scale)


def _side(long: pl.Expr, short: pl.Expr) -> pl.Expr:
    return pl.when(long).then(pl.lit(Direction.LONG.value)) \
        .when(short).then(pl.lit(Direction.SHORT.value)) \
        .otherwise(pl.lit(Direction.FLAT.value))


def _trend_following(c: Exprs) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    # Ride an established trend: EMAs and directional movement agree.
    long = (c.ema_fast > c.ema_slow) & (c.pdi > c.mdi)
    short = (c.ema_fast < c.ema_slow) & (c.mdi > c.pdi)
    separation = (c.ema_fast - c.ema_slow).abs() / c.atr
    strength = _unit(_per(c.adx - 20.0, 30.0)) * _unit(separation)
    reason = pl.format("ema spread {} ATR, adx {}", separation.round(2), c.adx.round(1))
    return _side(long, short), strength, reason


def _mean_reversion(c: Exprs) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    # Fade stretched moves when there is no trend to fight.
    long, short = c.rsi < 30.0, c.rsi > 70.0
    strength = pl.when(long).then(_unit(_per(30.0 - c.rsi, 20.0))) \
        .when(short).then(_unit(_per(c.rsi - 70.0, 20.0))).otherwise(0.0)
    return _side(long, short), strength, pl.format("rsi {}", c.rsi.round(1))


def _breakout(c: Exprs) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    # A candle far outside recent volatility on above-average volume.
    sigmas = c.log_return / c.vol
    long = (sigmas > 2.0) & (c.volume_z > 1.0)
    short = (sigmas < -2.0) & (c.volume_z > 1.0)
    strength = _unit(_per(sigmas.abs() - 2.0, 3.0)) * _unit(_per(c.volume_z, 3.0))
    reason = pl.format("return {} sigma, volume z {}", sigmas.round(2), c.volume_z.round(2))
    return _side(long, short), strength, reason


def _momentum(c: Exprs) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    # Persistent but not yet overbought/oversold pressure in the trend's direction.
    long = (c.rsi > 55.0) & (c.rsi < 70.0) & (c.ema_fast > c.ema_slow)
    short = (c.rsi < 45.0) & (c.rsi > 30.0) & (c.ema_fast < c.ema_slow)
    strength = pl.when(long | short).then(_unit(_per((c.rsi - 50.0).abs(), 20.0))).otherwise(0.0)
    return _side(long, short), strength, pl.format("rsi {}", c.rsi.round(1))


GUARD = "guard"


def degenerate_reason(c: Exprs, fc: FeaturesConfig) -> pl.Expr:
    """Why the indicators are undefined at this candle (a string), or null when they are not.

    Each test is exact, not a tolerance: the features are exactly 0 on a flat window by
    construction (see ``_rolling_std`` in _features), so these fire only on truly flat data.
    """
    return (
        pl.when(c.atr == 0).then(pl.lit(
            f"flat market: no price range in {fc.atr_period}+ candles (indicators undefined)"))
        .when(c.bb_width == 0).then(pl.lit(
            f"flat market: close unchanged for {fc.bb_period} candles (indicators undefined)"))
        # volume_z is 0 on a constant window; a 0 volume at the end of one means no trades.
        .when((c.volume == 0) & (c.volume_z == 0)).then(pl.lit(
            f"no trades: zero volume for {fc.volume_z_period} candles"))
        .when(c.vol == 0).then(pl.lit(
            f"zero variance: returns constant for {fc.vol_period} candles"))
        .otherwise(None)
    )


ENGINES: tuple[Engine, ...] = (
    Engine("trend_following", frozenset({Regime.TREND_UP, Regime.TREND_DOWN}),
           lambda c: [c.ema_fast, c.ema_slow, c.pdi, c.mdi, c.adx, c.atr], _trend_following),
    Engine("mean_reversion", frozenset({Regime.RANGE, Regime.HIGH_VOL}), lambda c: [c.rsi],
           _mean_reversion),
    Engine("breakout", frozenset({Regime.RANGE, Regime.TREND_UP, Regime.TREND_DOWN}),
           lambda c: [c.log_return, c.vol, c.volume_z], _breakout),
    Engine("momentum", frozenset({Regime.TREND_UP, Regime.TREND_DOWN, Regime.RANGE}),
           lambda c: [c.rsi, c.ema_fast, c.ema_slow], _momentum),
)


class AlphaEngineCoordinator:
    """Runs the engines active in each symbol's regime."""

    def __init__(self, config: FeaturesConfig | Config | None = None,
                 engines: tuple[Engine, ...] = ENGINES) -> None:
        from ..base._args import section

        fc = section(config, FeaturesConfig, "features", "AlphaEngineCoordinator")
        self.engines = engines
        cols = Exprs.of(fc)
        guard = degenerate_reason(cols, fc)
        exprs: list[pl.Expr] = [guard.alias(f"{GUARD}.reason")]
        for e in engines:
            direction, strength, reason = e.rule(cols)
            valid = pl.all_horizontal(x.is_not_null() & x.is_not_nan()
                                      for x in e.inputs(cols))
            active = pl.col("_regime").is_in(list(e.regimes)) & valid & guard.is_null()
            exprs += [
                pl.when(active).then(direction).otherwise(None).alias(f"{e.name}.direction"),
                pl.when(active).then(strength.cast(pl.Float64)).otherwise(None)
                .alias(f"{e.name}.strength"),
                pl.when(active).then(reason).otherwise(None).alias(f"{e.name}.reason"),
            ]
        self._exprs = exprs

    def _frame(self, last_rows: pl.DataFrame, regimes: list[str]
               ) -> tuple[pl.DataFrame, int, list[tuple[str, int, int, int]]]:
        """Every engine's columns over the rows: (frame, the guard's position, per engine
        its name and the positions of its direction, strength and reason)."""
        bad = sorted({r for r in regimes if r not in REGIMES})
        if bad:
            raise UsageError(f"unknown regime {bad[0]!r}", key=bad[0])
        if not isinstance(last_rows, pl.DataFrame):
            from ..errors import kind_of

            raise UsageError(f"the engines want a polars DataFrame of features, not "
                             f"{kind_of(last_rows)}", key="features")
        try:
            frame = last_rows.with_columns(_regime=pl.Series(regimes, dtype=pl.String)) \
                .select("symbol", "open_time", *self._exprs)
        except (pl.exceptions.ColumnNotFoundError, pl.exceptions.InvalidOperationError,
                pl.exceptions.SchemaError) as exc:
            # polars' message names the column first ("rsi_14" not found, ...)
            first = (str(exc).strip().splitlines() or [""])[0].split(";")[0][:120]
            raise UsageError(f"the engines cannot read the features frame ({first}): give "
                             "them compute_features' columns", key="features") from exc
        # rows as tuples read by position: a dict per row cost a third of a replay's
        # preparation
        at = {c: k for k, c in enumerate(frame.columns)}
        engines = [(e.name, at[f"{e.name}.direction"], at[f"{e.name}.strength"],
                    at[f"{e.name}.reason"]) for e in self.engines]
        return frame, at[f"{GUARD}.reason"], engines

    def _evaluate(self, last_rows: pl.DataFrame, regimes: list[str]) -> dict[str, list[Signal]]:
        frame, guard, engines = self._frame(last_rows, regimes)
        return {row[0]: _row_signals(row, guard, engines) for row in frame.iter_rows()}

    def best_for_rows(self, last_rows: pl.DataFrame, regimes: list[str]
                      ) -> tuple[list[str | None], list[Signal | None]]:
        """Per row (in order): the guard's reason (None: the indicators are defined) and
        ``best_signal`` of the row's signals, without making a ``Signal`` for every engine
        (what ``prepare`` keeps of them; at 100 rows a candle over a replay's period the
        others were a tenth of the replay). The choice is one ``argmax`` over the engines'
        strengths (the first of the strongest, as ``best_signal``'s ``max``); a row with a
        NaN or infinite strength, where the two could differ, is chosen by ``best_signal``.
        Equal to ``signals_for_rows`` then ``best_signal`` (tests/test_engines.py)."""
        import numpy as np

        frame, guard, engines = self._frame(last_rows, regimes)
        n = frame.height
        guards: list[str | None] = frame.to_series(guard).to_list()
        if not engines or not n:
            return guards, [None] * n
        flat = Direction.FLAT
        usable = np.column_stack([
            frame.select((pl.nth(d).is_not_null() & (pl.nth(d) != flat)).fill_null(False))
            .to_series().to_numpy() for _, d, _, _ in engines])
        strength = np.column_stack([frame.to_series(st).cast(pl.Float64).to_numpy()
                                    for _, _, st, _ in engines])
        key = np.where(usable, strength, -np.inf)
        pick = key.argmax(axis=1)
        has = usable.any(axis=1)
        odd = (usable & ~np.isfinite(strength)).any(axis=1)  # max's own rule, below
        symbols = frame.to_series(0).to_list()
        times = frame.to_series(1).to_list()
        dirs = [frame.to_series(d).to_list() for _, d, _, _ in engines]
        whys = [frame.to_series(why).to_list() for _, _, _, why in engines]
        best: list[Signal | None] = [None] * n
        for r in np.flatnonzero(has & ~odd).tolist():
            e = int(pick[r])
            best[r] = Signal(symbol=symbols[r], candle_time=times[r],
                             engine=engines[e][0], direction=dirs[e][r],
                             strength=float(strength[r, e]), reasons=(whys[e][r],))
        for r in np.flatnonzero(odd).tolist():  # the reference path's own choice
            best[r] = best_signal(_row_signals(frame.row(r), guard, engines))
        return guards, best

    def generate_all_signals(self, features: pl.DataFrame, regime: str) -> list[Signal]:
        """Signals for one symbol from its feature frame (its last row is evaluated)."""
        _frame_of(features, "generate_all_signals")
        if features.height == 0:
            return []
        return next(iter(self._evaluate(features.tail(1), [regime]).values()))

    def signals_for_rows(self, last_rows: pl.DataFrame, regimes: list[str]
                         ) -> dict[str, list[Signal]]:
        """Signals for a frame of one last row per symbol and their regimes (in its row
        order); equal to ``generate_all_signals_batch`` on the same rows."""
        return self._evaluate(last_rows, regimes)

    def generate_all_signals_batch(self, symbols_features: Mapping[str, pl.DataFrame],
                                   current_regimes: Mapping[str, str]
                                   ) -> dict[str, list[Signal]]:
        """Signals for many symbols in one vectorised evaluation; equal to calling
        ``generate_all_signals`` for each symbol."""
        for s, f in symbols_features.items():
            _frame_of(f, f"generate_all_signals_batch ({str(s)[:40]})")
        syms = [s for s, f in symbols_features.items() if f.height]
        if not syms:
            return {s: [] for s in symbols_features}
        missing = [s for s in syms if s not in current_regimes]
        if missing:
            raise UsageError(f"no regime given for symbol {missing[0]}", symbol=missing[0])
        last = pl.concat([symbols_features[s].tail(1).with_columns(symbol=pl.lit(s))
                          for s in syms], how="vertical_relaxed")
        result = self._evaluate(last, [current_regimes[s] for s in syms])
        return {s: result.get(s, []) for s in symbols_features}


def _frame_of(features: object, fn: str) -> None:
    if not isinstance(features, pl.DataFrame):
        from ..errors import kind_of

        raise UsageError(f"{fn} wants a polars DataFrame of features, not "
                         f"{kind_of(features)}", key="features")


def _row_signals(row: tuple[Any, ...], guard: int,
                 engines: list[tuple[str, int, int, int]]) -> list[Signal]:
    """One row of ``AlphaEngineCoordinator._frame`` as its signals: the guard's (when the
    indicators are undefined), then each engine's that has a direction."""
    sym, when = row[0], row[1]
    sigs = []
    if row[guard] is not None:
        sigs.append(Signal(symbol=sym, candle_time=when, engine=GUARD,
                           direction=Direction.FLAT, strength=0.0, reasons=(row[guard],)))
    for name, d, st, why in engines:
        if row[d] is not None:
            sigs.append(Signal(symbol=sym, candle_time=when, engine=name, direction=row[d],
                               strength=float(row[st]), reasons=(row[why],)))
    return sigs


def best_signal(signals: list[Signal]) -> Signal | None:
    """The strongest non-flat signal (ties: the engine listed first)."""
    candidates = [s for s in signals if s.direction != Direction.FLAT]
    return max(candidates, key=lambda s: s.strength, default=None)
