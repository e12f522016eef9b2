"""The model judged walk-forward: for each test period, botopt's logistic model is fitted only
on rows whose label was known before the period began, then scored on the period's rows
against the majority baseline of its own training labels.

The features are computed once over the whole history: every indicator at a candle reads only
that candle and earlier ones (the replay's look-ahead tests hold them to it), so slicing the
rows by time is the same as recomputing them on truncated data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..base._config import Config, interval_ms

MIN_TRAIN_ROWS = 100  # as ``train_model``: fewer rows fit noise


@dataclass(frozen=True)
class WalkForwardPeriod:
    start: datetime
    end: datetime
    train_rows: int
    test_rows: int
    accuracy: float | None = None
    log_loss: float | None = None
    baseline_accuracy: float | None = None
    baseline_log_loss: float | None = None
    skipped: str | None = None  # why this period has no figures

    def to_dict(self) -> dict[str, Any]:
        from ..signals._results import iso

        d = dict(vars(self))
        d["start"], d["end"] = iso(self.start), iso(self.end)
        return d


def walk_forward(config: Config, symbols: Sequence[str],
                 periods: Sequence[tuple[datetime, datetime]]) -> tuple[WalkForwardPeriod, ...]:
    """One ``WalkForwardPeriod`` per ``(start, end)``: test rows are the candles that opened
    in it; training rows every candle whose next candle closed by ``start``."""
    from ..data._candles import load_candles
    from ..signals._features import compute_features
    from ..signals._model import training_set

    if not periods:
        return ()
    step = interval_ms(config.data.interval)
    # A label is the next candle's close: the last test row needs the candle after it.
    end = max(b for _, b in periods) + timedelta(milliseconds=2 * step)
    candles = load_candles(symbols, config=config, as_of=end)
    features = compute_features(candles, config.features)
    x, y, t = training_set(features, step, config.features)
    return tuple(_period(x, y, t, a, b, step) for a, b in periods)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _period(x: Any, y: Any, t: Any, start: datetime, end: datetime,
            step: int) -> WalkForwardPeriod:
    import numpy as np

    from ..signals._model import _log_loss, fit_logistic

    # The row at t is labelled by the candle opening at t + step, which closes at t + 2 step.
    train = t + 2 * step <= _ms(start)
    test = (t >= _ms(start)) & (t < _ms(end))
    n_train, n_test = int(train.sum()), int(test.sum())
    if n_train < MIN_TRAIN_ROWS:
        return WalkForwardPeriod(start, end, n_train, n_test,
                                 skipped=f"{n_train} training rows before it "
                                 f"(need {MIN_TRAIN_ROWS})")
    if n_test == 0:
        return WalkForwardPeriod(start, end, n_train, 0, skipped="no labelled test rows")
    mean, std, w = fit_logistic(x[train], y[train])
    z = (x[test] - mean) / std
    p = 1 / (1 + np.exp(-(z @ w[:-1] + w[-1])))
    yt, yh = y[train], y[test]
    base_p = float(yt.mean())
    majority = 1.0 if base_p >= 0.5 else 0.0
    return WalkForwardPeriod(
        start, end, n_train, n_test, accuracy=float(np.mean((p >= 0.5) == (yh == 1))),
        log_loss=_log_loss(yh, p), baseline_accuracy=float(np.mean(yh == majority)),
        baseline_log_loss=_log_loss(yh, np.full_like(yh, base_p)))
