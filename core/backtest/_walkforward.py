"""The model judged walk-forward: for each test period, botopt's logistic model is fitted only
on rows whose label was known before the period began, then scored on the period's rows
against the majority baseline of its own training labels.

The features are computed once over the whole history: every indicator at a candle reads only
that candle and earlier ones (the replay's look-ahead tests hold them to it), so slicing the
rows by time is the same as recomputing them on truncated data. They are computed a few
symbols at a time and only the model's inputs kept (float32), and a fit reads at most the
``MAX_TRAIN_ROWS`` most recent training rows: a year of 5m candles of 100 symbols is 10 million
rows, whose features at once would take gigabytes and whose full fits minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..base._config import Config, interval_ms

MIN_TRAIN_ROWS = 100  # as ``train_model``: fewer rows fit noise
# About 10 days of 5m candles of 20 symbols; more old rows change the fit little and cost
# time linearly (Newton steps over every row).
MAX_TRAIN_ROWS = 250_000
_CHUNK = 8  # symbols whose features are computed together


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
    import numpy as np

    from ..data._candles import load_candles
    from ..signals._features import compute_features
    from ..signals._model import training_set

    if not periods:
        return ()
    step = interval_ms(config.data.interval)
    # A label is the next candle's close: the last test row needs the candle after it.
    end = max(b for _, b in periods) + timedelta(milliseconds=2 * step)
    xs, ys, ts = [], [], []
    for i in range(0, len(symbols), _CHUNK):
        candles = load_candles(symbols[i:i + _CHUNK], config=config, as_of=end)
        features = compute_features(candles, config.features)
        x, y, t = training_set(features, step, config.features)
        del candles, features
        xs.append(x.astype(np.float32))
        ys.append(y.astype(np.int8))
        ts.append(t)
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")  # time order: a training window is a slice of it
    # The inputs stay in the order they were computed and each period gathers its rows
    # through ``order``: reordered whole, they were a second copy (about 400 MB at a year
    # of 100 symbols), and the parts a third.
    x = np.concatenate(xs)
    del xs
    y, t = np.concatenate(ys)[order], t[order]
    return tuple(_period(x, order, y, t, a, b, step) for a, b in periods)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _period(x: Any, order: Any, y: Any, t: Any, start: datetime, end: datetime,
            step: int) -> WalkForwardPeriod:
    """``y`` and ``t`` in time order; ``x[order]`` is ``x`` in time order."""
    import numpy as np

    from ..signals._model import _log_loss, fit_logistic

    # The row at t is labelled by the candle opening at t + step, which closes at t + 2 step.
    known = int(np.searchsorted(t, _ms(start) - 2 * step, side="right"))
    lo, hi = np.searchsorted(t, [_ms(start), _ms(end)], side="left")
    n_test = int(hi - lo)
    first = max(0, known - MAX_TRAIN_ROWS)
    n_train = known - first
    if n_train < MIN_TRAIN_ROWS:
        return WalkForwardPeriod(start, end, n_train, n_test,
                                 skipped=f"{n_train} training rows before it "
                                 f"(need {MIN_TRAIN_ROWS})")
    if n_test == 0:
        return WalkForwardPeriod(start, end, n_train, 0, skipped="no labelled test rows")
    xt, yt = x[order[first:known]].astype(np.float64), y[first:known].astype(np.float64)
    mean, std, w = fit_logistic(xt, yt)
    del xt
    z = (x[order[lo:hi]].astype(np.float64) - mean) / std
    p = 1 / (1 + np.exp(-(z @ w[:-1] + w[-1])))
    yh = y[lo:hi].astype(np.float64)
    base_p = float(yt.mean())
    majority = 1.0 if base_p >= 0.5 else 0.0
    return WalkForwardPeriod(
        start, end, n_train, n_test, accuracy=float(np.mean((p >= 0.5) == (yh == 1))),
        log_loss=_log_loss(yh, p), baseline_accuracy=float(np.mean(yh == majority)),
        baseline_log_loss=_log_loss(yh, np.full_like(yh, base_p)))
