"""The model judged walk-forward: for each test period, botopt's logistic model is fitted only
on rows whose label was known before the period began, then scored on the period's rows
against the majority baseline of its own training labels.

The features are computed over the whole history: every indicator at a candle reads only that
candle and earlier ones (the replay's look-ahead tests hold them to it), so slicing the rows by
time is the same as recomputing them on truncated data. A fit reads at most the
``MAX_TRAIN_ROWS`` most recent training rows. A year of 5m candles of 100 symbols is 10
million rows, whose features at once would take gigabytes and whose full fits minutes; their
model inputs alone, held for scoring, were a gigabyte more at the command's peak. So the
inputs are made a few symbols at a time, twice: the first pass keeps only the rows some fit
can read and the models are fitted; the second makes the inputs again and scores each chunk's
test rows, keeping sums.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..base._config import Config, interval_ms

MIN_TRAIN_ROWS = 100  # as ``train_model``: fewer rows fit noise
# About 10 days of 5m candles of 20 symbols; more old rows change the fit little and cost
# time linearly (Newton steps over every row).
MAX_TRAIN_ROWS = 250_000
_CHUNK = 4  # symbols whose features are computed together (two years of 4: 150 MB)


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
    note: str | None = None  # what to keep in mind reading them

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
    # The row at t is labelled by the candle opening at t + step, which closes at t + 2 step:
    # a period's training rows are those at or before its cut.
    cuts = [_ms(a) - 2 * step for a, _ in periods]
    spans = [(_ms(a), _ms(b)) for a, b in periods]

    def inputs() -> Iterator[tuple[Any, Any, Any]]:
        for i in range(0, len(symbols), _CHUNK):
            candles = load_candles(symbols[i:i + _CHUNK], config=config, as_of=end)
            features = compute_features(candles, config.features)
            del candles
            yield training_set(features, step, config.features)

    # Pass 1: the rows some fit can read, and each period's test row count.
    xs, ys, ts = [], [], []
    n_test = [0] * len(periods)
    for x, y, t in inputs():
        for k, (lo, hi) in enumerate(spans):
            n_test[k] += int(np.count_nonzero((t >= lo) & (t < hi)))
        fit = t <= max(cuts)
        xs.append(x[fit].astype(np.float32))
        ys.append(y[fit].astype(np.int8))
        ts.append(t[fit])
        del x, y, t, fit
        _drop_unreachable(xs, ys, ts, cuts, MAX_TRAIN_ROWS)
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")  # time order: a training window is a slice of it
    x, y, t = np.concatenate(xs)[order], np.concatenate(ys)[order], t[order]
    del xs, ys, ts, order
    out: list[WalkForwardPeriod | _Score] = []
    for (a, b), cut, n in zip(periods, cuts, n_test, strict=True):
        known = int(np.searchsorted(t, cut, side="right"))
        first = max(0, known - MAX_TRAIN_ROWS)
        n_train = known - first
        if n_train < MIN_TRAIN_ROWS:
            out.append(WalkForwardPeriod(a, b, n_train, n, skipped=f"{n_train} training rows "
                                         f"before it (need {MIN_TRAIN_ROWS})"))
        elif n == 0:
            out.append(WalkForwardPeriod(a, b, n_train, 0, skipped="no labelled test rows"))
        else:
            out.append(_Score(a, b, n_train, x[first:known], y[first:known]))
    del x, y, t
    # Pass 2: the inputs made again, each chunk's test rows scored by its period's model.
    if any(isinstance(o, _Score) for o in out):
        for x, y, t in inputs():
            for o, (lo, hi) in zip(out, spans, strict=True):
                if isinstance(o, _Score):
                    test = (t >= lo) & (t < hi)
                    o.add(x[test], y[test])
    return tuple(o.period() if isinstance(o, _Score) else o for o in out)


def _drop_unreachable(xs: list[Any], ys: list[Any], ts: list[Any], cuts: Sequence[int],
                      keep: int) -> None:
    """Drop, in place, the rows no fit can read: a fit reads the ``keep`` newest rows at
    or before its cut, so a row stays when, for some cut, it is at or before it and as
    recent as the ``keep``-th newest of those (rows at that time all stay). A later
    chunk's rows can only raise that bound, so a row dropped now is never needed; what
    stays keeps its order, so the stable time sort orders it as it ordered the whole."""
    import numpy as np

    every = np.concatenate(ts)
    bounds = []
    for cut in cuts:
        old = every[every <= cut]
        oldest = np.partition(old, old.size - keep)[old.size - keep] \
            if old.size > keep else np.iinfo(np.int64).min
        bounds.append((oldest, cut))
    for k, t in enumerate(ts):
        stay = np.zeros(len(t), dtype=bool)
        for oldest, cut in bounds:
            stay |= (t >= oldest) & (t <= cut)
        if not stay.all():
            xs[k], ys[k], ts[k] = xs[k][stay], ys[k][stay], t[stay]


class _Score:
    """One period's model, fitted on its training rows, and the sums of its test rows'
    scores against the majority baseline of those training labels."""

    def __init__(self, start: datetime, end: datetime, n_train: int, x: Any, y: Any) -> None:
        import numpy as np

        from ..signals._model import fit_logistic

        self.start, self.end, self.n_train = start, end, n_train
        yt = y.astype(np.float64)
        self.mean, self.std, self.w = fit_logistic(x.astype(np.float64), yt)
        self.base_p = float(yt.mean())
        self.majority = 1.0 if self.base_p >= 0.5 else 0.0
        self.n = self.right = self.base_right = self.ups = 0
        self.loss = self.base_loss = 0.0

    def add(self, x: Any, y: Any) -> None:
        """Test rows, as ``training_set`` gives them (float64, scored as the float32 the
        fit's rows are kept in)."""
        import numpy as np

        z = (x.astype(np.float32).astype(np.float64) - self.mean) / self.std
        with np.errstate(over="ignore"):  # the limit, 0, without a warning (sweep I)
            p = 1 / (1 + np.exp(-(z @ self.w[:-1] + self.w[-1])))
        yh = y.astype(np.float64)
        self.ups += int(np.count_nonzero(yh == 1))
        self.n += len(yh)
        self.right += int(np.count_nonzero((p >= 0.5) == (yh == 1)))
        self.base_right += int(np.count_nonzero(yh == self.majority))
        self.loss += _loss_sum(yh, p)
        self.base_loss += _loss_sum(yh, np.full_like(yh, self.base_p))

    def period(self) -> WalkForwardPeriod:
        n = self.n
        # A period whose test rows all have one label (candles that never closed up, as a
        # flat or halted market's) scores the majority's 1.000 and a model that learnt
        # the same: figures that look perfect and say nothing (sweep I)
        one = "every test row is 'up'" if self.ups == n else \
            "no test row is 'up'" if self.ups == 0 else None
        return WalkForwardPeriod(self.start, self.end, self.n_train, n,
                                 accuracy=self.right / n, log_loss=self.loss / n,
                                 baseline_accuracy=self.base_right / n,
                                 baseline_log_loss=self.base_loss / n,
                                 note=None if one is None else f"{one} (a market that did "
                                 "not move?): the figures say little")


def _loss_sum(y: Any, p: Any) -> float:
    """The summed log loss of ``_model._log_loss`` (its mean), so chunks add up."""
    import numpy as np

    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)
