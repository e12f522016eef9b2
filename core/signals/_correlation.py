"""Rolling cross-symbol correlation, shaped for cron: one batched step per new candle.

Definition (docs/correlation.md): log close-to-close returns, no return across a gap; the
window is the last ``window`` candle open times ending at the newest closed candle held; a pair
uses the times where both symbols have a return (pairwise complete), Pearson in float64, at
least ``min_periods`` common returns, NaN for zero variance, clipped to [-1, 1]; the diagonal
is 1 where the symbol has enough returns.

State. The returns live in a ring of ``window`` rows (row = candle time // interval mod
window), NaN where a symbol has no return; a slide never moves data, it overwrites rows.
Only one per-pair sum is kept, P = sum of x_i * x_j (NaN counted as 0), because it is the only
one that costs a matrix product to rebuild. Everything else a pair needs (its count, and each
side's sum and sum of squares over the common times) follows exactly from per-symbol totals
plus a correction for the few symbols with a missing return in the window: for a symbol j
with no gap, "the times both have" is just "the times i has". So a cron step is:

- build from empty: fill the ring, then P = X'X, one matrix product;
- next candle for the whole universe: P += new'new - old'old, one rank-2 product;
- one symbol's new candle (no slide): P's row and column, O(symbols);
- a matrix row from the sums: O(symbols + gappy symbols x window).

Exactness: P is rebuilt exactly ("re-anchored") every ``window`` slides so rounding from
additions and subtractions cannot accumulate, and a pair whose variance is within 1e-3 of the
scale of everything that passed through its sums is recomputed exactly (two-pass), so flat or
nearly flat series give what the definition gives. The state on disk holds P and the totals,
so loading does not re-anchor. tests/test_correlation.py checks against numpy.corrcoef and a
pair-by-pair reference to 1e-12 under hypothesis (gaps, flat stretches, new and removed
symbols, long slides) and after 100,000 updates.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ..base._blas import one_blas_thread, pinnable
from ..base._codec import json_loads
from ..base._config import Config
from ..base._fs import atomic_writer, refused_write
from ..errors import CacheError, UsageError
from ..state._workspace import state_dir as default_dir

log = logging.getLogger("botopt.correlation")
# 4: one fixed-layout file (header with a digest, metadata, then the ring, the per-symbol
# totals and times), updated in place. 3: the same in an .npz, rewritten whole every run;
# 2 also held P (symbols x symbols: 786 MB per run at 10,000 symbols). 2 and 3 are read
# (2 without its P) and replaced.
STATE_FORMAT = 4
_LEGACY_FORMATS = (2, 3)
_SUFFIX = ".ring"
_MAGIC = b"BOTOPTRC"
# magic, format, symbols, window, min_periods, interval_ms, end_ms, slides, metadata bytes;
# then a 32-byte digest
_HEAD_FIELDS = "<8sQQQQqqqQ"
_NO_TIME = int(np.iinfo(np.int64).min)  # no end / no last time
# A pair whose variance is below this share of the squares that went through its sums is
# recomputed from the returns: below it, cancellation could cost more than 1e-12.
_DOUBT = 1e-3
_TEMP = 1 << 19  # elements (4 MiB): the largest temporary the rank-2 step and the matrix use
# Frames up to this many rows are checked for one row per symbol in Python (a list of
# strings), where polars' run-length encoding costs more than the cron step itself.
_SMALL_FRAME = 1024
# Correlation rows computed per product by CorrelationRows: the rows in flight are about
# 2 x this x symbols floats (20 MB at 10,000 symbols), however many are asked.
_ROWS_BATCH = 128
# Up to this many symbols, the gates' correlation rows are the whole matrix, computed at the
# first read (``CorrelationRows._rows_of``); above it, only the rows read, in batches.
_WHOLE_MAX = 256
# Held correlation rows are joined into one array for reading while they are at most this
# many elements (32 MB); above it (thousands of active signals among 10,000 symbols) the
# reads go part by part, so the rows are never held twice.
_JOIN_MAX = 1 << 22


def _row(r: np.ndarray, i: int, min_periods: int) -> np.ndarray:
    """Correlations of column ``i`` with every column of ``r`` (NaN = no return), two-pass.
    This is the definition; the fast paths fall back to it where they cannot be trusted."""
    x = r[:, i:i + 1]
    both = ~np.isnan(x) & ~np.isnan(r)
    n = both.sum(axis=0)
    xs = np.where(both, x, 0.0)
    ys = np.where(both, r, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xs.sum(axis=0) / n
        my = ys.sum(axis=0) / n
        dx = np.where(both, x - mx, 0.0)
        dy = np.where(both, r - my, 0.0)
        sxy = (dx * dy).sum(axis=0)
        sxx = (dx * dx).sum(axis=0)
        syy = (dy * dy).sum(axis=0)
        out: np.ndarray = sxy / np.sqrt(sxx * syy)
        # Zero variance means all values equal; a rounded mean can leave sxx at 1e-35.
        x_flat = np.where(both, x, np.inf).min(axis=0) == np.where(both, x, -np.inf).max(axis=0)
        y_flat = np.where(both, r, np.inf).min(axis=0) == np.where(both, r, -np.inf).max(axis=0)
    out = np.clip(out, -1.0, 1.0)
    out[(n < min_periods) | x_flat | y_flat] = np.nan
    out[i] = np.nan if n[i] < min_periods or x_flat[i] else 1.0
    return out


def _zeros(r: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(r), 0.0, r)


def _epoch_ms(times: Any) -> np.ndarray:
    """Open times in ms since the epoch, floored like polars' ``dt.epoch("ms")``."""
    import polars as pl

    if isinstance(times.dtype, pl.Datetime) and not times.null_count():
        a = times.to_numpy()  # zero-copy datetime64, without a polars plan per call
        unit = np.datetime_data(a.dtype)[0]
        per_ms = {"ns": 1_000_000, "us": 1_000, "ms": 1}.get(unit)
        if per_ms is not None:
            ms: np.ndarray = a.view(np.int64)
            return ms // per_ms if per_ms != 1 else ms
    epoch: np.ndarray = times.dt.epoch("ms").to_numpy()
    return epoch


def recent_rows(candles: Any, window: int) -> Any:
    """The rows of ``candles`` (one run per symbol, ascending, as ``load_candles`` gives
    them) that ``update_runs`` reads for a ``window``: each symbol's last window + 3
    (window + 2 rows and the close before them), columns ``symbol``, ``open_time`` and
    ``close``. Fed these instead of the whole history, the state takes the same values from
    the same rows, so a run can let each group's history go once its features are done.
    The frame is new memory, gathered in one piece: a filtered slice kept the group's
    buffers alive (200 MB where the rows themselves are 70 at 10,000 symbols)."""
    import polars as pl

    runs = candles.get_column("symbol").rle().struct.unnest()
    lens = runs.get_column("len").to_numpy().astype(np.int64)
    kept = np.minimum(lens, window + 3)
    ends = np.cumsum(lens)
    at = np.repeat(ends - kept - np.cumsum(kept) + kept, kept) + np.arange(int(kept.sum()))
    t = candles.get_column("open_time")
    return pl.DataFrame([
        runs.get_column("value").gather(np.repeat(np.arange(lens.size), kept))
        .alias("symbol"),
        pl.Series("open_time", t.to_physical().to_numpy()[at]).cast(t.dtype),
        pl.Series("close", candles.get_column("close").to_numpy()[at])])


def candle_runs(candles: Any) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray]:
    """(symbols in order of appearance, run starts, run ends, open times in ms, closes) of a
    candle frame, each symbol's rows one run sorted by time. ``load_candles`` output is
    already so (checked in one pass over integers, no string hashing per row); any other
    frame is sorted."""
    import polars as pl

    # Series methods, not a select: at one candle per symbol (the cron step) the plan would
    # cost more than the data.
    sym = candles.get_column("symbol")
    times = candles.get_column("open_time")
    for col, what in ((sym, "symbol"), (times, "open_time")):
        if col.null_count():  # a null symbol was stored in the state and broke it for good
            row = int(col.is_null().arg_true()[0]) + 1
            raise UsageError(f"correlation: row {row} of the candles has no {what}", key=what,
                             row=row)
    t = _epoch_ms(times)
    close = candles.get_column("close")
    c = (close if close.dtype == pl.Float64 else close.cast(pl.Float64)).to_numpy()
    names = sym.to_list() if sym.len() <= _SMALL_FRAME else None
    if names is not None and len(set(names)) == len(names):
        # One row per symbol (a cron step's frame): runs of one row, nothing to check.
        # rle's struct alone costs more than the step at 50 symbols.
        one = np.arange(len(names) + 1, dtype=np.int64)
        return names, one[:-1], one[1:], t, c
    # several rows of some symbol (a first run, a backtest): its runs, each ascending in
    # time (a run boundary is no step in time)
    from ._features import symbol_runs  # polars' module: not on a warm run's import path

    same, starts, names = symbol_runs(sym)
    lens = np.diff(np.append(starts, t.size)).astype(np.int64)
    ok = len(set(names)) == len(names) and bool((t[1:] > t[:-1])[same].all())
    del same
    if not ok:
        names = list(dict.fromkeys(names))
        frame = candles.select(
            pl.col("symbol").cast(pl.Enum(names)).to_physical().alias("k"),
            pl.col("open_time").dt.epoch("ms").alias("t"),
            pl.col("close").cast(pl.Float64).alias("c")).sort("k", "t", maintain_order=True)
        lens = np.bincount(frame["k"].to_numpy(), minlength=len(names)).astype(np.int64)
        t, c = frame["t"].to_numpy(), frame["c"].to_numpy()
    ends = np.cumsum(lens)
    return names, ends - lens, ends, t, c


@dataclass
class RollingCorrelation:
    window: int = 288
    min_periods: int = 30
    interval_ms: int = 300_000
    symbols: list[str] = field(default_factory=list)
    end_ms: int | None = None  # open time of the newest candle in the window
    returns: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # ring, see above
    last_time: dict[str, int] = field(default_factory=dict)
    last_close: dict[str, float] = field(default_factory=dict)
    # sum of x_i x_j over the window (missing = 0); None = not held. It is held in memory
    # only, from the first full matrix on, and never stored: it is symbols x symbols.
    _prod: np.ndarray | None = None
    _sum: np.ndarray = field(default_factory=lambda: np.empty(0))  # per symbol, in window
    _sq: np.ndarray = field(default_factory=lambda: np.empty(0))  # its squares
    _scale: np.ndarray = field(default_factory=lambda: np.empty(0))  # squares through P
    _slides: int = 0

    def __post_init__(self) -> None:
        for key, v, high in (("window", self.window, 100_000),
                             ("min_periods", self.min_periods, 100_000),
                             ("interval_ms", self.interval_ms, 10**12)):
            # the config's bounds: a window of 10**12 allocated terabytes at the first update
            if isinstance(v, bool) or not isinstance(v, int) or not \
                    (2 if key != "interval_ms" else 1) <= v <= high:
                raise UsageError(f"correlation {key} must be a whole number in "
                                 f"{2 if key != 'interval_ms' else 1}..{high:,}, not "
                                 f"{str(v)[:40]}", key=f"correlation.{key}")
        if not isinstance(self.symbols, list) or not all(isinstance(s, str)
                                                          for s in self.symbols):
            raise UsageError("symbols must be a list of symbol names", key="symbols")
        n = len(self.symbols)
        if self.returns.size == 0:
            self.returns = np.full((self.window, n), np.nan)
        self._pos = {s: k for k, s in enumerate(self.symbols)}
        self._matrix: np.ndarray | None = None
        self._view: np.ndarray | None = None
        # Each symbol's variance over the whole window, kept between rows (invalidated by
        # any change but one symbol's new value, which updates its own entry).
        self._vy: np.ndarray | None = None
        self._vy_ok = False
        self._dirty: set[int] = set()
        self._all_dirty = True
        self._x0: np.ndarray | None = None
        # The file this state was loaded from or saved to, with its layout, and the ring
        # rows changed since (None: unknown, the file is replaced whole on save).
        self._on_disk: tuple[str, tuple[Any, ...]] | None = None
        self._ring_dirty: set[int] | None = None
        self._identity = ""
        if self._prod is not None and self._prod.shape != (n, n):
            self._prod = None
        if any(a.shape != (n,) for a in (self._sum, self._sq, self._scale)):
            self._anchor()
        self._missing = np.isnan(self.returns).sum(axis=0)

    # -- running sums --------------------------------------------------------------------

    def _anchor(self) -> None:
        """Rebuild every sum exactly from the ring (P too, one matrix product, if held)."""
        x = _zeros(self.returns)
        self._x0 = x
        if self._prod is not None:
            self._prod = x.T @ x  # numpy runs a.T @ a as SYRK: symmetric to the last bit
        self._sum = x.sum(axis=0)
        self._sq = (x * x).sum(axis=0)
        self._scale = self._sq.copy()
        self._missing = np.isnan(self.returns).sum(axis=0)
        self._slides = 0
        self._vy = None

    def _mark(self, rows: Any) -> None:
        """Ring rows changed (for the next in-place save)."""
        if self._ring_dirty is not None:
            self._ring_dirty.update(rows)

    def _reset(self) -> None:
        n = len(self.symbols)
        self.returns[:] = np.nan
        self._ring_dirty = None
        self._x0 = None
        if self._prod is not None:
            self._prod = np.zeros((n, n))
        self._sum, self._sq, self._scale = np.zeros(n), np.zeros(n), np.zeros(n)
        self._missing = np.full(n, self.window)
        self._slides = 0
        self._vy = None

    def _slot(self, t: np.ndarray | int) -> Any:
        return (np.asarray(t) // self.interval_ms) % self.window

    def _columns(self, names: Sequence[str]) -> np.ndarray:
        """Column indices of ``names``, adding new symbols all at once (one reallocation)."""
        new = [s for s in dict.fromkeys(names) if s not in self._pos]
        if new:
            self._vy = None
            n0, k = len(self.symbols), len(new)
            n = n0 + k
            self.symbols.extend(new)
            self._pos.update({s: n0 + i for i, s in enumerate(new)})
            self.returns = np.hstack([self.returns, np.full((self.window, k), np.nan)])
            self._ring_dirty = None
            self._x0 = None
            if self._prod is not None:
                grown = np.zeros((n, n))
                grown[:n0, :n0] = self._prod
                self._prod = grown
            for name in ("_sum", "_sq", "_scale"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(k)]))
            self._missing = np.concatenate([self._missing, np.full(k, self.window)])
            if self._matrix is not None:
                m = np.full((n, n), np.nan)
                m[:n0, :n0] = self._matrix
                self._matrix = m
            self._dirty.update(range(n0, n))
        return np.array([self._pos[s] for s in names], dtype=np.int64)

    def _apply(self, cols: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        """Take returns (``values``, NaN = a candle without a return) at ``times`` for
        ``cols``: slide the window to the newest time, then write every value that falls in
        it, updating P with one product over the ring rows touched."""
        if times.size == 0:
            return
        newest = int(times.max())
        old_end = self.end_ms
        r = self.returns
        if old_end is not None and newest <= old_end and bool((cols == cols[0]).all()):
            self._fill_one(int(cols[0]), times, values)
            return
        dropped = np.empty(0, dtype=np.int64)
        reset = False
        if old_end is None or newest > old_end:
            steps = self.window if old_end is None else (newest - old_end) // self.interval_ms
            self.end_ms = newest
            self._all_dirty = True
            if old_end is None or steps >= self.window:
                self._reset()
                reset = True
            else:
                dropped = self._slot(old_end + self.interval_ms *
                                     np.arange(1, steps + 1, dtype=np.int64))
                self._slides += steps
        end = newest if self.end_ms is None else self.end_ms
        start = end - (self.window - 1) * self.interval_ms
        ok = (times >= start) & (times <= end) & np.isfinite(values)
        cols, times, values = cols[ok], times[ok], values[ok]
        slots = self._slot(times)
        if reset:
            r[slots, cols] = values
            self._anchor()  # build from empty: one matrix product
            return
        # Only empty cells are filled; a value never replaces one already held. Masks over
        # the ring rows, not np.isin / np.union1d: those sort, and cost more than the step.
        gone = np.zeros(self.window, dtype=bool)
        gone[dropped] = True
        keep = gone[slots] | np.isnan(r[slots, cols])
        cols, slots, values = cols[keep], slots[keep], values[keep]
        gone[slots] = True
        touched = np.flatnonzero(gone)
        if not touched.size:
            return
        before_raw = r[touched]
        self._x0 = None
        r[dropped] = np.nan
        r[slots, cols] = values
        self._mark(touched.tolist())
        self._rows_changed(touched.size, before_raw, r[touched])
        if not self._all_dirty:
            self._dirty.update(np.unique(cols).tolist())

    def _rows_changed(self, touched: int, before_raw: np.ndarray,
                      after_raw: np.ndarray) -> None:
        """The sums after ``touched`` ring rows went from ``before_raw`` to ``after_raw``
        (both rows x symbols): totals, then P by one product (or a re-anchor)."""
        before, after = _zeros(before_raw), _zeros(after_raw)
        if touched == 1:
            # A reduction over one row is that row (numpy starts from the first element,
            # not from 0 + it): the same bits without six reductions.
            a0, b0 = after[0], before[0]
            sq_a, sq_b = a0 * a0, b0 * b0
            self._sum += a0 - b0
            self._missing += np.isnan(after_raw[0]).astype(np.int64) - np.isnan(before_raw[0])
        else:
            self._sum += after.sum(axis=0) - before.sum(axis=0)
            sq_a, sq_b = (after * after).sum(axis=0), (before * before).sum(axis=0)
            self._missing += np.isnan(after_raw).sum(axis=0) - \
                np.isnan(before_raw).sum(axis=0)
        self._sq += sq_a - sq_b
        self._scale += sq_a + sq_b
        self._vy = None
        if self._slides >= self.window or 2 * touched >= self.window:
            self._anchor()  # due (bounds the rounding that updates leave) or cheaper
        elif self._prod is not None:
            # Every pair at once: P += new'new - old'old over the rows touched (rank 2 for
            # the cron step: the new candle's row in, the oldest row out).
            a = np.concatenate([after, before])
            b = np.concatenate([after, before])
            b[len(after):] *= -1.0
            p = self._prod
            n = p.shape[0]
            rows = max(1, _TEMP // max(n, 1))  # bounded temporary memory
            tmp = np.empty((min(rows, n), n))
            for i in range(0, n, rows):
                t = tmp[:min(rows, n - i)]
                np.matmul(a[:, i:i + rows].T, b, out=t)
                np.add(p[i:i + rows], t, out=p[i:i + rows])

    def _fill_one(self, j: int, times: np.ndarray, values: np.ndarray) -> None:
        """One symbol's returns, window end unchanged: only P's row and column j change,
        O(symbols) per value."""
        assert self.end_ms is not None
        r = self.returns
        if times.size == 1:
            self._fill_scalar(j, int(times[0]), float(values[0]))
            return
        self._dirty.add(j)
        ok = (times > self.end_ms - self.window * self.interval_ms) & np.isfinite(values)
        slots = self._slot(times[ok])
        values = values[ok]
        empty = np.isnan(r[slots, j])
        slots, values = slots[empty], values[empty]
        if not slots.size:
            return
        r[slots, j] = values
        self._mark(slots.tolist())
        self._x0 = None
        if self._prod is not None:
            xs = _zeros(r[slots])
            self._prod[j, :] += values @ xs  # the diagonal gets sum(v^2): xs[:, j] is v
            self._prod[:, j] = self._prod[j, :]
        sq = float(values @ values)
        self._sum[j] += values.sum()
        self._sq[j] += sq
        self._scale[j] += sq
        self._missing[j] -= slots.size
        self._touch_vy(j)

    def _fill_scalar(self, j: int, t: int, v: float) -> None:
        """``_fill_one`` for one value, the common case: at 500 symbols numpy's per-call
        overhead costs more than the arithmetic, so every step here is one call."""
        assert self.end_ms is not None
        r = self.returns
        self._dirty.add(j)
        k = (t // self.interval_ms) % self.window
        if t <= self.end_ms - self.window * self.interval_ms or not math.isfinite(v) \
                or not math.isnan(r[k, j]):
            return
        r[k, j] = v
        if self._ring_dirty is not None:
            self._ring_dirty.add(k)
        if self._x0 is not None:
            self._x0[k, j] = v
        p = self._prod
        if p is not None:
            x = r[k] * v
            x[np.isnan(x)] = 0.0  # a symbol without a return at t adds nothing
            np.add(p[j], x, out=x)  # x[j] is v * v: the diagonal's term
            p[j] = x
            p[:, j] = x  # from x, not from p[j]: overlapping operands would make numpy copy
        self._sum[j] += v
        self._sq[j] += v * v
        self._scale[j] += v * v
        self._missing[j] -= 1
        self._touch_vy(j)

    def _touch_vy(self, j: int) -> None:
        """Symbol j's totals changed: its entry of the cached variances, the same
        arithmetic as the whole vector."""
        if self._vy is None:
            return
        v = self._sq[j] - self._sum[j] * self._sum[j] / self.window
        self._vy[j] = v
        if not v > _DOUBT * self._scale[j]:
            self._vy_ok = False
        elif not self._vy_ok:
            self._vy = None  # j may have been the doubtful one: check them all again

    # -- updates -------------------------------------------------------------------------

    def update(self, symbol: str, candles_or_returns: Any) -> int:
        """Feed new data for one symbol: a candle frame (``open_time``, ``close``), or a
        mapping {open_time_ms: log_return}. Data not newer than what the symbol already has
        is ignored. Returns the number of new candles taken."""
        last = self.last_time.get(symbol)
        j0 = self._pos.get(symbol)
        # type() first: an isinstance check against the Mapping ABC costs microseconds.
        if (type(candles_or_returns) is dict or isinstance(candles_or_returns, Mapping)) \
                and len(candles_or_returns) == 1 and j0 is not None and self.end_ms is not None:
            ((t, v),) = candles_or_returns.items()
            t = int(t)
            if last is not None and t <= last:
                return 0
            self.last_time[symbol] = t
            if t <= self.end_ms:  # no slide: the O(symbols) path, in scalars
                self._fill_scalar(j0, t, float(v))
            else:
                self._apply(np.array([j0]), np.array([t]), np.array([float(v)]))
            return 1
        if isinstance(candles_or_returns, Mapping):
            pts = sorted((int(t), float(v)) for t, v in candles_or_returns.items()
                         if last is None or int(t) > last)
            if not pts:
                return 0
            times = np.array([t for t, _ in pts], dtype=np.int64)
            values = np.array([v for _, v in pts])
            self.last_time[symbol] = int(times[-1])
        else:
            data = candles_or_returns
            times = data["open_time"].dt.epoch("ms").to_numpy().astype(np.int64)
            closes = data["close"].to_numpy().astype(np.float64)
            times, values = self._returns_of(symbol, times, closes)
            if not times.size:
                return 0
        j = self._columns([symbol])
        self._apply(np.repeat(j, times.size), times, values)
        return int(times.size)

    def _returns_of(self, symbol: str, times: np.ndarray,
                    closes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The symbol's candles newer than it had, as (times, log returns; NaN across a
        gap), and its new last time and close recorded."""
        order = np.argsort(times, kind="stable")
        times, closes = times[order], closes[order]
        last = self.last_time.get(symbol)
        prev_t = np.concatenate([[-1 if last is None else last], times[:-1]])
        prev_c = np.concatenate([[self.last_close.get(symbol, np.nan)], closes[:-1]])
        new = times > (last if last is not None else np.iinfo(np.int64).min)
        with np.errstate(invalid="ignore", divide="ignore"):
            rets = np.where(times - prev_t == self.interval_ms, np.log(closes / prev_c),
                            np.nan)
        times, rets = times[new], rets[new]
        if times.size:
            self.last_time[symbol] = int(times[-1])
            self.last_close[symbol] = float(closes[new][-1])
        return times, rets

    def update_frame(self, candles: Any) -> int:
        """Feed every symbol's new candles from one frame (``symbol``, ``open_time``,
        ``close``) in one batched step: the cron path. Returns the number of new candles."""
        return self.update_runs(*candle_runs(candles))

    def update_runs(self, names: Sequence[str], starts: np.ndarray, ends: np.ndarray,
                    t: np.ndarray, c: np.ndarray) -> int:
        """``update_frame`` on arrays: symbol ``names[k]`` owns rows ``starts[k]:ends[k]``
        of open times ``t`` (ms, ascending within the run) and closes ``c``.

        Only a symbol's last window + 2 rows can reach the window (window returns, the
        close before the first, and one row of slack), so only those are read: a cron
        run's frame holds far more history (for the features) than the correlation needs.
        """
        if not len(names):
            return 0
        # The two common cases first, in a few whole-array operations each and with the
        # general path's arithmetic (the same bits): a first run over aligned symbols, and
        # a cron step of one new candle for every symbol.
        if self.end_ms is None and not self.symbols:
            taken = self._build_aligned(names, starts, ends, t, c)
            if taken:
                return taken
        elif len(names) == len(self.symbols):
            taken = self._next_candle(names, starts, ends, t, c)
            if taken:
                return taken
        cols_of_run = np.arange(len(names)) if list(names) == self.symbols else \
            self._columns(names)
        lo = np.maximum(starts, ends - (self.window + 2))
        cnt = ends - lo
        offsets = np.cumsum(cnt) - cnt
        run = np.repeat(np.arange(len(names)), cnt)
        idx = np.arange(int(cnt.sum())) - np.repeat(offsets - lo, cnt)
        ts, cs = t[idx], c[idx]
        floor = int(np.iinfo(np.int64).min)
        nn = len(names)
        # map over the dict's get: a comprehension costs twice as much at 500 symbols.
        last = np.fromiter(map(self.last_time.get, names, repeat(floor, nn)), np.int64, nn)
        known = last != floor
        prev_t = np.empty_like(ts)
        prev_c = np.empty_like(cs)
        prev_t[1:], prev_c[1:] = ts[:-1], cs[:-1]
        has = cnt > 0
        first = offsets[has]
        # A run's first row read continues from the row before it in the frame or, when
        # the frame starts there, from what the state last took.
        cut = lo[has] > starts[has]
        before = np.maximum(lo[has] - 1, 0)
        prev_t[first] = np.where(cut, t[before], np.where(known[has], last[has], -1))
        with_rows = names if np.count_nonzero(has) == nn else \
            [names[k] for k in np.flatnonzero(has).tolist()]
        prev_c[first] = np.where(cut, c[before], np.fromiter(
            map(self.last_close.get, with_rows, repeat(np.nan, len(with_rows))), np.float64,
            len(with_rows)))
        with np.errstate(invalid="ignore", divide="ignore"):
            rets = np.where(ts - prev_t == self.interval_ms, np.log(cs / prev_c), np.nan)
        new = ts > last[run]
        if not np.count_nonzero(new):
            return 0
        moved = np.flatnonzero(has & (t[np.maximum(ends - 1, 0)] > last))
        moved_names = names if moved.size == nn else [names[k] for k in moved.tolist()]
        self.last_time.update(zip(moved_names, t[ends[moved] - 1].tolist(), strict=True))
        self.last_close.update(zip(moved_names, c[ends[moved] - 1].tolist(), strict=True))
        self._apply(cols_of_run[run[new]], ts[new], rets[new])
        return int(new.sum())

    def _build_aligned(self, names: Sequence[str], starts: np.ndarray, ends: np.ndarray,
                       t: np.ndarray, c: np.ndarray) -> int:
        """Build from empty when every symbol's last window + 1 candles are at the same
        times, one interval apart (a universe's first run): the ring written whole, one
        transposed copy instead of a scatter, then one anchoring. 0 (nothing done) when the
        frame is not so. The returns are the general path's (the same division and log of
        the same closes); so are the cells (every window time, non-finite left empty)."""
        m, step = self.window + 1, self.interval_ms
        nn = len(names)
        lens = ends - starts
        if int(lens.min()) < m:
            return 0
        if bool((lens == lens[0]).all()) and starts[0] == 0 and ends[-1] == t.size:
            tt = t.reshape(nn, -1)[:, -m:]  # runs are contiguous (candle_runs): views
            cc = c.reshape(nn, -1)[:, -m:]
        else:
            at = (ends - m)[:, None] + np.arange(m)
            tt, cc = t[at], c[at]
        t0 = tt[0]
        if not (bool((np.diff(t0) == step).all()) and bool((tt == t0).all())):
            return 0
        self._columns(names)
        with np.errstate(invalid="ignore", divide="ignore"):
            rets = np.log(cc[:, 1:] / cc[:, :-1])
        r = self.returns
        self._ring_dirty = None
        r[self._slot(t0[1:])] = rets.T
        r[~np.isfinite(r)] = np.nan
        self.last_time.update(zip(names, tt[:, -1].tolist(), strict=True))
        self.last_close.update(zip(names, cc[:, -1].tolist(), strict=True))
        self.end_ms = int(t0[-1])
        self._all_dirty = True
        self._anchor()
        return int(np.minimum(lens, m + 1).sum())  # the rows the general path takes

    def _next_candle(self, names: Sequence[str], starts: np.ndarray, ends: np.ndarray,
                     t: np.ndarray, c: np.ndarray) -> int:
        """The cron step when every symbol of the state, in its order, has exactly one new
        candle, the one after the window's end, and last took the candle at the end: one
        ring row replaced, as ``_apply`` replaces it. 0 (nothing done) otherwise."""
        end, step = self.end_ms, self.interval_ms
        assert end is not None
        nn = len(names)
        last_rows = ends - 1
        if np.count_nonzero(ends - starts) != nn:
            return 0
        tl = t[last_rows]
        if not bool((tl == end + step).all()) or \
                (names if type(names) is list else list(names)) != self.symbols:
            return 0
        last = np.fromiter(map(self.last_time.get, names, repeat(-1, nn)), np.int64, nn)
        if not bool((last == end).all()):
            return 0
        # The close before the new one: the frame's row before it where the run has one
        # (as the general path reads it), else the close the state took last.
        long = (ends - starts >= 2).nonzero()[0]
        if long.size == nn:  # every run has it (a frame with history)
            prev_t, prev_c = t[last_rows - 1], c[last_rows - 1]
        else:
            prev_c = np.fromiter(map(self.last_close.get, names, repeat(np.nan, nn)),
                                 np.float64, nn)
            prev_t = np.full(nn, end)
            prev_t[long] = t[last_rows[long] - 1]
            prev_c[long] = c[last_rows[long] - 1]
        if long.size and not bool((prev_t <= end).all()):
            return 0  # rows between the window's end and the new candle: general path
        cl = c[last_rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            rets = np.where(tl - prev_t == step, np.log(cl / prev_c), np.nan)
        rets[~np.isfinite(rets)] = np.nan
        self.last_time.update(zip(names, tl.tolist(), strict=True))
        self.last_close.update(zip(names, cl.tolist(), strict=True))
        self.end_ms = end + step
        self._all_dirty = True
        self._slides += 1
        k = (end + step) // step % self.window  # _slot, in Python ints
        r = self.returns
        before_raw = r[k:k + 1].copy()
        self._x0 = None
        r[k] = rets
        self._mark((k,))
        self._rows_changed(1, before_raw, r[k:k + 1])
        return nn

    def remove(self, symbol: str) -> None:
        self.drop([symbol])

    def drop(self, symbols: Sequence[str]) -> None:
        """Forget ``symbols`` (all at once: one reallocation)."""
        gone = sorted({self._pos[s] for s in symbols if s in self._pos})
        if not gone:
            return
        keep = np.setdiff1d(np.arange(len(self.symbols)), gone)
        self._vy = None
        for s in symbols:
            self.last_time.pop(s, None)
            self.last_close.pop(s, None)
        self.symbols = [self.symbols[k] for k in keep]
        self._pos = {s: k for k, s in enumerate(self.symbols)}
        self.returns = self.returns[:, keep]
        self._ring_dirty = None
        self._x0 = None
        if self._prod is not None:
            self._prod = self._prod[np.ix_(keep, keep)]
        for name in ("_sum", "_sq", "_scale", "_missing"):
            setattr(self, name, getattr(self, name)[keep])
        if self._matrix is not None:
            self._matrix = self._matrix[np.ix_(keep, keep)]
        new_pos = {int(old): k for k, old in enumerate(keep)}
        self._dirty = {new_pos[d] for d in self._dirty if d in new_pos}

    # -- results -------------------------------------------------------------------------

    def _zeros_ring(self) -> np.ndarray:
        """The ring with 0 for a missing return, kept until the ring changes."""
        if self._x0 is None:
            self._x0 = _zeros(self.returns)
        return self._x0

    def _held_prod(self) -> np.ndarray:
        """P, built (one SYRK over the ring) the first time a full matrix needs it, then
        kept up to date by every update while this object lives."""
        if self._prod is None:
            x = self._zeros_ring()
            self._prod = x.T @ x
        return self._prod

    def _prow(self, i: int) -> np.ndarray:
        """Row i of P: read from P when held, else one product over the ring, O(window x
        symbols), so a few rows never cost the symbols x symbols P."""
        if self._prod is not None:
            row: np.ndarray = self._prod[i]
            return row
        x = self._zeros_ring()
        out: np.ndarray
        if pinnable():
            # One OpenBLAS thread: 2.7x faster than einsum's loop (0.8 against 2.2 ms at
            # 10,000 symbols x 288; a run's gates compute a row per signal that passes),
            # and the same bits on any machine, where the threaded call's would depend on
            # the thread count and on a busy machine cost 100x its arithmetic.
            with one_blas_thread():
                out = x[:, i] @ x
        else:  # another BLAS cannot be pinned: einsum's own loop, no threads
            out = np.einsum("w,wn->n", x[:, i], x)
        return out

    def _prows(self, idx: np.ndarray) -> np.ndarray | None:
        """Rows ``idx`` of P when not held: one matrix product for all of them."""
        if self._prod is not None or idx.size < 2:
            return None
        x = self._zeros_ring()
        rows: np.ndarray = np.ascontiguousarray(x[:, idx].T) @ x
        return rows

    def _row_from_sums(self, i: int, prow: np.ndarray | None = None) -> np.ndarray:
        """Row ``i`` from P and the totals: O(symbols) when no symbol has a gap in the
        window, plus O(window) per symbol that has one."""
        r, w = self.returns, self.window
        s, q, miss = self._sum, self._sq, self._missing
        if w >= self.min_periods and not np.count_nonzero(miss):  # cheaper than .any()
            return self._row_complete(i, prow)
        gappy = np.flatnonzero(miss)
        cnt = (w - miss[i]) - miss
        sx = np.full(len(s), s[i])  # x_i summed over the times both have
        qx = np.full(len(s), q[i])
        sy, qy = s, q  # x_j summed over the times both have
        if gappy.size:
            xi = r[:, i]
            holes = np.isnan(r[:, gappy])
            xi0 = np.where(np.isnan(xi), 0.0, xi)
            sx[gappy] -= xi0 @ holes
            qx[gappy] -= (xi0 * xi0) @ holes
            if miss[i]:
                lost = r[np.isnan(xi)]
                cnt = cnt + np.isnan(lost).sum(axis=0)
                lost0 = _zeros(lost)
                sy = s - lost0.sum(axis=0)
                qy = q - (lost0 * lost0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            vx = qx - sx * sx / cnt
            vy = qy - sy * sy / cnt
            out: np.ndarray = ((self._prow(i) if prow is None else prow) - sx * sy / cnt) \
                / np.sqrt(vx * vy)
            doubt = ~(vx > _DOUBT * self._scale[i]) | ~(vy > _DOUBT * self._scale)
        np.clip(out, -1.0, 1.0, out=out)
        few = cnt < self.min_periods
        out[few] = np.nan
        doubt &= ~few
        if doubt.any():
            exact = _row(r, i, self.min_periods)
            out[doubt] = exact[doubt]
            out[i] = exact[i]
        else:
            out[i] = np.nan if few[i] else 1.0
        return out

    def _rows_from_sums(self, idx: np.ndarray, prows: np.ndarray | None) -> np.ndarray:
        """``_row_from_sums`` of each of ``idx`` (``prows``: their rows of P, or None), as
        one array. When no symbol has a gap, the rows are computed together: the same
        elementwise operations as ``_row_complete``'s, in the same order, on arrays of
        rows (each element's arithmetic, so its bits, unchanged; a replay at 100 symbols
        computes about 36 rows a candle, each a handful of numpy calls when alone)."""
        w = self.window
        if prows is None or w < self.min_periods or np.count_nonzero(self._missing):
            return np.array([self._row_from_sums(j, None if prows is None else prows[k])
                             for k, j in enumerate(idx.tolist())])
        s, q, scale = self._sum, self._sq, self._scale
        vy = self._vy
        if vy is None:
            vy = self._vy = q - s * s / w
            self._vy_ok = bool((vy > _DOUBT * scale).all())
        si = s[idx]
        vx = q[idx] - si * si / w
        sure = (vx > _DOUBT * scale[idx]) & self._vy_ok
        out: np.ndarray = prows  # a fresh product (``_prows``): taken over, not copied
        out -= (si / w)[:, None] * s
        with np.errstate(invalid="ignore", divide="ignore"):  # the unsure rows: replaced
            out /= np.sqrt(vx[:, None] * vy)
        np.minimum(out, 1.0, out=out)
        np.maximum(out, -1.0, out=out)
        out[np.arange(idx.size), idx] = 1.0
        for k in np.flatnonzero(~sure).tolist():  # a flat or nearly flat series
            out[k] = _row(self.returns, int(idx[k]), self.min_periods)
        return out

    def _row_complete(self, i: int, prow: np.ndarray | None = None) -> np.ndarray:
        """Row ``i`` when no symbol has a gap: every pair has the whole window in common,
        so the sums are per symbol and the row is a handful of vector operations."""
        s, q, w = self._sum, self._sq, self.window
        si = s[i]
        vx = q[i] - si * si / w
        vy = self._vy
        if vy is None:
            vy = self._vy = q - s * s / w
            self._vy_ok = bool((vy > _DOUBT * self._scale).all())
        if not (vx > _DOUBT * self._scale[i] and self._vy_ok):
            return _row(self.returns, i, self.min_periods)  # a flat or nearly flat series
        # Every variance is positive here, so no errstate (a context manager per row).
        out: np.ndarray = (self._prow(i) if prow is None else prow) - (si / w) * s
        out /= np.sqrt(vx * vy)
        np.minimum(out, 1.0, out=out)  # np.clip's wrapper costs more than both
        np.maximum(out, -1.0, out=out)
        out[i] = 1.0
        return out

    def _full(self) -> np.ndarray:
        """Every row at once: O(symbols^2) elementwise plus O(symbols x gappy x window)."""
        r, w, mp = self.returns, self.window, self.min_periods
        s, q, miss, scale = self._sum, self._sq, self._missing, self._scale
        n = len(s)
        if w < mp:
            return np.full((n, n), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            # Pairs of symbols without a gap: count w, totals per symbol.
            v = q - s * s / w
            d = 1.0 / np.sqrt(v)
            u = s * d / math.sqrt(w)
            # Outer products keep the matrix symmetric to the bit. In place, blockwise:
            # at 500 symbols every pass over the matrix costs as much as the update.
            # einsum's outer is the fastest here (ufunc.outer broadcasts, matmul with k = 1
            # takes a slow BLAS path and competes for threads).
            out: np.ndarray = np.einsum("i,j->ij", d, d)
            out *= self._held_prod()
            rows = max(1, _TEMP // max(n, 1))
            tmp = np.empty((min(rows, n), n))
            for i in range(0, n, rows):
                t = tmp[:min(rows, n - i)]
                np.einsum("i,j->ij", u[i:i + rows], u, out=t)
                np.subtract(out[i:i + rows], t, out=out[i:i + rows])
        if n > 256:
            np.clip(out, -1.0, 1.0, out=out)  # one pass; two (minimum, maximum) cost more
        else:  # ... but below, np.clip's Python wrapper costs more than both passes
            np.maximum(out, -1.0, out=out)
            np.minimum(out, 1.0, out=out)
        # .nonzero()[0], not np.flatnonzero: its wrapper costs more than the pass at 50
        doubt_rows = set((~(v > _DOUBT * scale) & (miss == 0)).nonzero()[0].tolist())
        gappy = miss.nonzero()[0]
        if gappy.size:
            holes = np.isnan(r[:, gappy]).astype(np.float64)
            x = _zeros(r)
            cnt = (w - miss)[:, None] - miss[gappy][None, :]
            cnt[gappy] += (holes.T @ holes).astype(np.int64)
            sx = s[:, None] - x.T @ holes  # x_i over the times j (gappy) has
            qx = q[:, None] - (x * x).T @ holes
            xg = x[:, gappy]
            sy = np.broadcast_to(s[gappy], cnt.shape).copy()  # x_j over the times i has
            qy = np.broadcast_to(q[gappy], cnt.shape).copy()
            sy[gappy] -= holes.T @ xg
            qy[gappy] -= holes.T @ (xg * xg)
            with np.errstate(invalid="ignore", divide="ignore"):
                vx = qx - sx * sx / cnt
                vy = qy - sy * sy / cnt
                blk = (self._held_prod()[:, gappy] - sx * sy / cnt) / np.sqrt(vx * vy)
                doubt = ~(vx > _DOUBT * scale[:, None]) | ~(vy > _DOUBT * scale[gappy])
            np.clip(blk, -1.0, 1.0, out=blk)
            few = cnt < mp
            blk[few] = np.nan
            doubt &= ~few
            doubt_rows.update(np.flatnonzero(doubt.any(axis=1)).tolist())
            sub = blk[gappy]
            out[:, gappy] = blk
            out[gappy, :] = blk.T
            out[np.ix_(gappy, gappy)] = np.triu(sub) + np.triu(sub, 1).T
        out.flat[::n + 1] = np.where(w - miss >= mp, 1.0, np.nan)  # the diagonal
        for i in sorted(doubt_rows):
            exact = _row(r, i, mp)
            out[i, :] = exact
            out[:, i] = exact
        return out

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """The current matrix, recomputing only rows whose data changed (all of them when
        the window moved, in one pass)."""
        n = len(self.symbols)
        if self._matrix is None or self._all_dirty or 8 * len(self._dirty) > n:
            self._matrix = self._full()
        else:
            for i in sorted(self._dirty):
                row = self._row_from_sums(i)
                self._matrix[i, :] = row
                self._matrix[:, i] = row
        self._dirty.clear()
        self._all_dirty = False
        # A read-only view, not a copy: copying would make every update O(symbols^2). Made
        # once per matrix buffer; it shows later row updates (copy it to keep a snapshot).
        if self._view is None or self._view.base is not self._matrix:
            self._view = self._matrix.view()
            self._view.flags.writeable = False
        return list(self.symbols), self._view

    def rows(self, symbols: Sequence[str]) -> np.ndarray:
        """The rows of ``symbols`` against every symbol, from the sums, without building
        the matrix: what a correlation gate reads (the candidates against the active)."""
        unknown = [s for s in symbols if s not in self._pos]
        if unknown:
            raise UsageError(f"{str(unknown[0])[:40]} is not in this correlation state",
                             symbol=str(unknown[0])[:40])
        out = np.empty((len(symbols), len(self.symbols)))
        for k, s in enumerate(symbols):
            out[k] = self._row_from_sums(self._pos[s])
        return out

    def rows_pending(self) -> list[str]:
        if self._all_dirty:
            return list(self.symbols)
        return [self.symbols[i] for i in sorted(self._dirty)]

    def full_matrix(self) -> tuple[list[str], np.ndarray]:
        """The reference: every pair recomputed from the aligned returns, two-pass."""
        n = len(self.symbols)
        m = np.full((n, n), np.nan)
        for i in range(n):
            m[i, :] = _row(self.returns, i, self.min_periods)
        return list(self.symbols), m

    # -- persistence (one fixed-layout file, updated in place; never pickle) --------------

    def _sections(self, identity: str) -> tuple[bytes, list[np.ndarray]]:
        """The file's parts after the header: the metadata (what fixes the layout), then
        the arrays, each C-contiguous, in their order on disk."""
        n = len(self.symbols)
        meta = json.dumps({"format": STATE_FORMAT, "identity": identity,
                           "symbols": self.symbols}).encode()
        meta += b" " * (-len(meta) % 8)  # the arrays start 8-byte aligned
        lt = np.fromiter(map(self.last_time.get, self.symbols, repeat(_NO_TIME, n)),
                         np.int64, n)
        has_c = np.fromiter(map(self.last_close.__contains__, self.symbols), np.float64, n)
        lc = np.fromiter(map(self.last_close.get, self.symbols, repeat(np.nan, n)),
                         np.float64, n)
        return meta, [self.returns, self._sum, self._sq, self._scale, lt, lc, has_c]

    def _header(self, meta: bytes, arrays: list[np.ndarray]) -> bytes:
        """Magic, sizes, the scalars, and a digest of them and of every byte after the
        header: a torn or partly written file never matches its digest."""
        fields = struct.pack(_HEAD_FIELDS, _MAGIC, STATE_FORMAT, len(self.symbols),
                             self.window, self.min_periods, self.interval_ms,
                             _NO_TIME if self.end_ms is None else self.end_ms,
                             self._slides, len(meta))
        h = hashlib.blake2b(fields, digest_size=32)
        h.update(meta)
        for a in arrays:
            h.update(np.ascontiguousarray(a).data)
        return fields + h.digest()

    def write(self, fh: Any, identity: str = "") -> None:
        """The whole state to an open binary file (see ``save``)."""
        meta, arrays = self._sections(identity)
        fh.write(self._header(meta, arrays))
        fh.write(meta)
        for a in arrays:
            fh.write(np.ascontiguousarray(a).data)

    def save(self, path: Path, identity: str = "") -> None:
        """Write the state to ``path`` + ".ring". When the file on disk is the one this
        state was loaded from or last saved to, with the same layout (symbols, window),
        only what changed is written in place: the ring rows that took new returns, the
        per-symbol totals and times, then the header with the digest of the whole new
        content (at 10,000 symbols about 0.5 MB instead of the 23 MB ring). Otherwise the
        file is replaced whole, atomically. No fsync: this is a cache; a write cut by a
        crash, even one whose pages reach the disk out of order, leaves a file whose
        digest does not match, which ``load`` rejects and the caller rebuilds."""
        target = Path(str(path) + _SUFFIX)
        writes = self._in_place_writes(target, identity)
        if writes is None:
            with atomic_writer(target, fsync=False) as fh:
                self.write(fh, identity)
        else:
            fd = os.open(target, os.O_WRONLY)
            try:
                for offset, data in writes:
                    if os.pwrite(fd, data, offset) != memoryview(data).nbytes:
                        # a short write (a full disk): reported like any refused write;
                        # the header is not written, so the digest rejects the file
                        raise OSError(errno.ENOSPC, "short write", str(target))
            finally:
                os.close(fd)
        self._on_disk = (str(target), self._layout(identity))
        self._ring_dirty = set()
        legacy = Path(str(path) + ".npz")  # format 2 and 3, replaced by this file
        if legacy.exists():
            legacy.unlink(missing_ok=True)

    def _layout(self, identity: str) -> tuple[Any, ...]:
        return (identity, self.window, self.min_periods, self.interval_ms,
                tuple(self.symbols))

    def _in_place_writes(self, target: Path, identity: str) -> list[tuple[int, Any]] | None:
        """The (offset, bytes) writes that turn the file this state came from into this
        state, the header last; None when the file must be replaced whole."""
        if self._on_disk != (str(target), self._layout(identity)) or \
                self._ring_dirty is None or not target.exists():
            return None
        meta, arrays = self._sections(identity)
        head = self._header(meta, arrays)
        base = len(head) + len(meta)
        row = len(self.symbols) * 8
        out: list[tuple[int, Any]] = [(base + k * row, self.returns[k].data)
                                      for k in sorted(self._ring_dirty)]
        off = base + self.returns.nbytes
        for a in arrays[1:]:
            out.append((off, np.ascontiguousarray(a).data))
            off += a.nbytes
        if target.stat().st_size != off:
            return None
        out.append((0, head))
        return out

    def reloaded(self) -> RollingCorrelation:
        """What ``load`` gives after ``save`` of this state, without the file: the stored
        fields copied, the derived ones rebuilt as loading rebuilds them. A backtest
        carries the state from one candle's step to the next with it, so each step
        computes exactly what a cron run computes from the state file."""
        rc = type(self)(window=self.window, min_periods=self.min_periods,
                        interval_ms=self.interval_ms, symbols=list(self.symbols),
                        end_ms=self.end_ms, returns=self.returns.copy(),
                        last_time=dict(self.last_time), last_close=dict(self.last_close),
                        _sum=self._sum.copy(), _sq=self._sq.copy(),
                        _scale=self._scale.copy(), _slides=self._slides)
        rc._all_dirty = False  # as after load
        return rc

    @classmethod
    def load(cls, path: Path | Any, identity: str | None = None) -> RollingCorrelation:
        """Read a state written by ``save`` (or by ``write``, given the open file), or a
        legacy ``.npz`` (formats 2 and 3) when there is no ``.ring`` file. Raises
        FileNotFoundError, or ValueError for a file that is damaged (its digest does not
        match: cut, torn, partly updated), of another format or (given ``identity``)
        another source."""
        if hasattr(path, "read"):
            return cls._from_bytes(path.read(), identity)
        target = Path(str(path) + _SUFFIX)
        try:
            with open(target, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                buf = bytearray(size)  # writable: the arrays are views of it, no copy
                if fh.readinto(buf) != size:
                    raise ValueError("not a readable state file: short read")
        except FileNotFoundError:
            legacy = Path(str(path) + ".npz")
            if legacy.exists():
                return cls._load_npz(legacy, identity)
            raise
        except OSError as exc:
            raise ValueError(f"not a readable state file: {type(exc).__name__}") from exc
        rc = cls._from_bytes(buf, identity)
        rc._on_disk = (str(target), rc._layout(identity or rc._identity))
        rc._ring_dirty = set()
        return rc

    @classmethod
    def _from_bytes(cls, buf: Any, identity: str | None) -> RollingCorrelation:
        head = struct.calcsize(_HEAD_FIELDS)
        if len(buf) < head + 32 or bytes(buf[:8]) != _MAGIC:
            raise ValueError("not a readable state file: no header")
        _, fmt, n, window, min_periods, interval_ms, end_ms, slides, meta_len = \
            struct.unpack_from(_HEAD_FIELDS, buf)
        if fmt != STATE_FORMAT:
            raise ValueError("unknown state format")
        base = head + 32 + meta_len
        sizes = [window * n] + [n] * 6
        if window < 1 or len(buf) != base + 8 * sum(sizes):
            raise ValueError("state arrays do not match their metadata")
        mv = memoryview(buf)
        h = hashlib.blake2b(mv[:head], digest_size=32)
        h.update(mv[head + 32:])
        if h.digest() != bytes(mv[head:head + 32]):
            raise ValueError("digest mismatch (a cut or torn write)")
        try:
            meta = json_loads(bytes(mv[head + 32:base]))
        except ValueError as exc:
            raise ValueError(f"not a readable state file: {type(exc).__name__}") from exc
        if identity is not None and meta.get("identity") != identity:
            raise ValueError("state of another data source")
        syms = list(meta["symbols"])
        if len(syms) != n:
            raise ValueError("state arrays do not match their metadata")
        arrays, off = [], base
        for k, size in enumerate(sizes):
            arrays.append(np.frombuffer(buf, dtype=np.int64 if k == 4 else np.float64,
                                        count=size, offset=off))
            off += 8 * size
        ring, sm, sq, scale, lt, lc, has_c = arrays
        rc = cls(window=window, min_periods=min_periods, interval_ms=interval_ms,
                 symbols=syms, end_ms=None if end_ms == _NO_TIME else int(end_ms),
                 returns=ring.reshape(window, n),
                 last_time={s: v for s, v in zip(syms, lt.tolist(), strict=True)
                            if v != _NO_TIME},
                 last_close={s: v for s, v, h in zip(syms, lc.tolist(), has_c.tolist(),
                                                     strict=True) if h},
                 _sum=sm, _sq=sq, _scale=scale, _slides=int(slides))
        rc._identity = meta.get("identity", "")
        rc._all_dirty = False  # no data changed; the matrix is computed when asked for
        return rc

    @classmethod
    def _load_npz(cls, src: Path, identity: str | None) -> RollingCorrelation:
        """A format 2 or 3 file (one .npz): read once, then replaced by the ring file."""
        try:
            with np.load(src, allow_pickle=False) as z:
                # Only what is read is decompressed: a format 2 file's P is never loaded.
                arrays = {k: z[k] for k in ("meta", "returns", "sum", "sq", "scale")}
            meta = json_loads(arrays["meta"].tobytes())
        except FileNotFoundError:
            raise
        except (OSError, KeyError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a readable state file: {type(exc).__name__}") from exc
        if meta.get("format") not in _LEGACY_FORMATS:
            raise ValueError("unknown state format")
        if identity is not None and meta.get("identity") != identity:
            raise ValueError("state of another data source")
        n = len(meta["symbols"])
        shapes = {"returns": (meta["window"], n), "sum": (n,), "sq": (n,), "scale": (n,)}
        if any(arrays[k].shape != v or arrays[k].dtype != np.float64
               for k, v in shapes.items()):
            raise ValueError("state arrays do not match their metadata")
        rc = cls(window=meta["window"], min_periods=meta["min_periods"],
                   interval_ms=meta["interval_ms"], symbols=list(meta["symbols"]),
                   end_ms=meta["end_ms"], returns=arrays["returns"],
                   last_time={k: int(v) for k, v in meta["last_time"].items()},
                   last_close={k: float(v) for k, v in meta["last_close"].items()},
                   _sum=arrays["sum"], _sq=arrays["sq"],
                   _scale=arrays["scale"], _slides=int(meta["slides"]))
        rc._all_dirty = False  # no data changed; the matrix is computed when asked for
        return rc


class CorrelationRows:
    """The correlation matrix of ``symbols`` as the gates read it, ``m[i, cols]``, without
    building it: symbols x symbols is 800 MB and one SYRK at 10,000 symbols. The gates read
    a candidate against the active signals (``cols``, few, the same for many candidates),
    so by symmetry the entries are columns of the active symbols' rows: each active
    symbol's row is computed once, from the running sums like ``matrix()``'s updated rows
    (O(window x symbols), one matrix-vector product), and every read is an index into them.
    Its cache identity is the ring's data (``__fingerprint__``); ``numpy.asarray`` gives
    the whole matrix."""

    def __init__(self, rc: RollingCorrelation, symbols: Sequence[str]) -> None:
        self._rc = rc
        self._cols = np.array([rc._pos[s] for s in symbols], dtype=np.int64)
        self._whole = np.array_equal(self._cols, np.arange(len(rc.symbols)))
        self.shape = (len(symbols), len(symbols))
        n = len(rc.symbols)
        self._slot = np.full(n, -1, dtype=np.int64)  # state column -> held row
        # The computed rows, one array per batch (held rows k0.. of ``_parts[p]`` start at
        # ``_starts[p]``): one growing buffer copied every held row at each growth, a
        # peak of 2.5x the rows (about 470 MB for 2,364 active signals at 10,000 symbols).
        self._parts: list[np.ndarray] = []
        self._starts: list[int] = []
        self._count = 0
        self._joined: np.ndarray | None = None  # the parts joined (``_gather``)

    def __len__(self) -> int:
        return self.shape[0]

    def held(self) -> np.ndarray:
        """The rows computed so far, in the order they were computed."""
        if not self._parts:
            return np.empty((0, len(self._slot)))
        return self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)

    def prepare(self, cols: np.ndarray) -> None:
        """Compute the rows a read of ``cols`` computes (so a read of them in parts after
        this finds them held, in the batches one read makes)."""
        self._rows_of(self._cols[cols])

    def _rows_of(self, state_cols: np.ndarray) -> np.ndarray:
        """The held rows of ``state_cols``, computing those not held yet in batches of
        ``_ROWS_BATCH`` (in column order: the batches, so the bits, are a function of the
        rows asked for, as the gates' equal reads need; and the product and the rows in
        flight stay a few tens of MB whatever the number of active signals)."""
        missing = self._slot[state_cols] < 0
        if missing.any() and len(self._slot) <= _WHOLE_MAX and not self._count \
                and pinnable():
            # Few symbols: every row at once, the matrix itself (``matrix()``: one SYRK
            # and a few passes over symbols^2 values), cheaper than the rows the reads ask
            # for one batch at a time, and the same values whichever rows are asked first.
            # One BLAS thread, as for the rows: the threaded SYRK's bits depend on the
            # thread count (another BLAS cannot be pinned: the rows' path then).
            with one_blas_thread():
                whole = np.array(self._rc.matrix()[1])
            self._parts, self._starts = [whole], [0]
            self._slot = np.arange(len(whole), dtype=np.int64)
            self._count = len(whole)
            self._joined = None
            missing = self._slot[state_cols] < 0
        if missing.any():  # most reads find every row held: no sort then
            todo_all = np.unique(state_cols[missing])
            rc = self._rc
            for a in range(0, todo_all.size, _ROWS_BATCH):
                todo = todo_all[a:a + _ROWS_BATCH]
                # One BLAS thread: OpenBLAS's threaded product of a few million
                # multiplications and more differs from its one-thread product in the last
                # bits, so the rows (and a replay's equality with live runs) would depend
                # on the machine's thread count; for the gates' small products the threads
                # also cost more than they save (docs/performance.md, fourth session).
                if todo.size > 1 and rc._prod is None:  # a product (``_prows``)
                    with one_blas_thread():
                        pr = rc._prows(todo)
                else:
                    pr = rc._prows(todo)  # None: no product to make
                got = rc._rows_from_sums(todo, pr)
                del pr
                self._parts.append(got)
                self._starts.append(self._count)
                self._slot[todo] = self._count + np.arange(todo.size)
                self._count += todo.size
        slots: np.ndarray = self._slot[state_cols]
        return slots

    def _gather(self, slots: np.ndarray, cols: Any) -> np.ndarray:
        """``held()[slots][:, cols]``: from the parts joined when they are small, else
        part by part without joining them."""
        if len(self._parts) == 1:
            one: np.ndarray = self._parts[0][np.ix_(slots, np.atleast_1d(cols))]
            return one
        if self._count * len(self._slot) <= _JOIN_MAX:
            # A replay's step computes a few batches of rows and reads them a few dozen
            # times: reading part by part cost each read a dozen numpy calls; joining
            # costs one copy of rows that are a few hundred kB, per batch computed.
            if self._joined is None or len(self._joined) != self._count:
                self._joined = np.concatenate(self._parts)
            got: np.ndarray = self._joined[np.ix_(slots, np.atleast_1d(cols))]
            return got
        part = np.searchsorted(self._starts, slots, side="right") - 1
        out = np.empty((slots.size, np.size(cols)))
        for p in np.unique(part).tolist():
            sel = part == p
            out[sel] = self._parts[p][np.ix_(slots[sel] - self._starts[p],
                                             np.atleast_1d(cols))]
        return out

    def __getitem__(self, key: tuple[int, Any]) -> Any:
        i, cols = key
        if not isinstance(i, (int, np.integer)):
            raise TypeError("CorrelationRows reads one row at a time: m[i, cols]")
        want = self._cols[cols]
        one = np.ndim(want) == 0
        want = np.atleast_1d(want)
        at = self._rows_of(want)
        out = self._gather(at, int(self._cols[i]))[:, 0]  # m[j, i] = m[i, j]
        return out[0] if one else out

    def whole(self) -> bool:
        """Whether a read computes the whole matrix (few symbols, ``_WHOLE_MAX``): then
        any read order gives the same values, and a single read is one index."""
        return len(self._slot) <= _WHOLE_MAX and pinnable()

    def holds(self, i: int) -> bool:
        """Whether row ``i`` is computed already (then a read of any columns computes the
        same rows with or without it)."""
        return bool(self._slot[self._cols[i]] >= 0)

    def columns(self, cols: np.ndarray) -> np.ndarray:
        """``out[k, i] = self[i, cols[k]]`` for every ``i``: the reads of every candidate
        against the same active signals at once (the rows computed are those one read of
        ``cols`` computes, so every value is the one a read gives)."""
        at = self._rows_of(self._cols[cols])
        if self._whole:
            part = np.searchsorted(self._starts, at, side="right") - 1
            if part.size and (part == part[0]).all():  # one copy, not two
                rows: np.ndarray = self._parts[int(part[0])][at - self._starts[int(part[0])]]
                return rows
        return self._gather(at, self._cols)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        names, m = self._rc.matrix()
        m = m[np.ix_(self._cols, self._cols)]
        return m if dtype is None else m.astype(dtype)

    def __fingerprint__(self) -> bytes:
        rc = self._rc
        h = hashlib.blake2b(digest_size=20)
        h.update(f"rows:{rc.window}:{rc.min_periods}:{self._cols.size}".encode())
        ring = rc.returns if np.array_equal(self._cols, np.arange(len(rc.symbols))) \
            else rc.returns[:, self._cols]
        h.update(np.ascontiguousarray(ring).tobytes())
        return h.digest()


@dataclass(frozen=True)
class CorrelationResult:
    symbols: list[str]
    matrix: Any  # numpy array; CorrelationRows when asked for rows only
    window: int
    as_of: datetime | None
    rows_updated: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"symbols": self.symbols, "window": self.window,
                "as_of": self.as_of.isoformat().replace("+00:00", "Z") if self.as_of else None,
                "matrix": [[None if math.isnan(v) else round(float(v), 12) for v in row]
                           for row in self.matrix],
                "rows_updated": self.rows_updated}


def source_identity(config: Config) -> str:
    """What the candles come from: the state of one source must never serve another."""
    src = config.data.source
    if src == "local":
        return f"local:{Path(str(config.data.data_dir)).expanduser().resolve()}"
    if src == "binance":
        return f"binance:{config.binance.api_url.rstrip('/')}"
    return src


def state_name(config: Config, window: int, identity: str) -> str:
    """The state's file name: readable settings, then a digest of the source identity."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{config.data.interval}-w{window}-m{config.correlation.min_periods}-" \
        f"{config.data.source}-{digest}"


def update_correlation(config: Config, candles: Any, *, full: bool = False,
                       window: int | None = None, state_dir: Path | None = None,
                       rows_only: bool = False) -> CorrelationResult:
    """Bring the stored state up to date with ``candles`` (only symbols whose last closed
    candle moved) and return the matrix for the symbols in ``candles``.

    The state is kept in ``state_dir`` (default: the cache's ``correlation/``) under a name
    made of the interval, window, min_periods and the data source's identity, and holds
    exactly the symbols of the last call (others are pruned). Where it cannot be stored
    (read-only directory, disk full) the answer is computed without it and one warning is
    logged; a damaged state file is rebuilt with a warning. ``rows_only`` answers a
    ``CorrelationRows`` (what the gates read, on demand) instead of the whole matrix."""
    from filelock import FileLock, Timeout

    win = window or config.correlation.window
    from ..base._args import frame

    frame(candles, ("symbol", "open_time", "close"), "update_correlation", numeric=("close",))
    identity = source_identity(config)
    runs = candle_runs(candles)
    syms = list(runs[0])

    def fresh() -> RollingCorrelation:
        return RollingCorrelation(window=win, min_periods=config.correlation.min_periods,
                                  interval_ms=config.data.interval.ms)

    path: Path | None = None
    try:
        if state_dir is None:
            state_dir = default_dir(config, "correlation")
        else:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / state_name(config, win, identity)
        with FileLock(str(path) + ".lock", timeout=5):
            rc, changed = _bring_up_to_date(_load_state(path, identity, fresh, full), runs,
                                            fresh)
            if changed:
                try:
                    rc.save(path, identity)
                except OSError as exc:  # the answer is unaffected; the disk is reported
                    refused_write(state_dir, exc)
    except Timeout:
        log.warning("correlation state %s is busy; computing without it", path)
        rc, _ = _bring_up_to_date(fresh(), runs, fresh)
    except (OSError, CacheError) as exc:
        # Unwritable (read-only, full, not creatable): read what is there, store nothing.
        refused_write(state_dir if state_dir is not None else Path("."), exc)
        start = fresh() if path is None else _load_state(path, identity, fresh, full)
        rc, _ = _bring_up_to_date(start, runs, fresh)
    asked = set(syms)  # a list's `in` made this 0.74 s at 10,000 symbols
    updated = [s for s in rc.rows_pending() if s in asked]
    end = datetime.fromtimestamp(rc.end_ms / 1000, tz=timezone.utc) if rc.end_ms else None
    if rows_only:
        return CorrelationResult(symbols=syms, matrix=CorrelationRows(rc, syms), window=win,
                                 as_of=end, rows_updated=updated)
    names, m = rc.matrix()
    if names != syms:
        pos = {s: i for i, s in enumerate(names)}
        idx = [pos[s] for s in syms]
        m = m[np.ix_(idx, idx)]
    return CorrelationResult(symbols=syms, matrix=m, window=win, as_of=end,
                             rows_updated=updated)


def _load_state(path: Path, identity: str, fresh: Callable[[], RollingCorrelation],
                full: bool) -> RollingCorrelation:
    """The stored state, or a fresh one (asked for, absent, damaged or of other settings)."""
    want = fresh()
    if full:
        return want
    try:
        rc = RollingCorrelation.load(path, identity)
    except FileNotFoundError:
        return want
    except (ValueError, UsageError) as exc:  # UsageError: a stored value out of bounds
        log.warning("correlation state %s unreadable (%s); rebuilding", path, exc)
        return want
    if (rc.window, rc.min_periods, rc.interval_ms) != (want.window, want.min_periods,
                                                      want.interval_ms):
        return want
    return rc


def _bring_up_to_date(rc: RollingCorrelation, runs: Any,
                      fresh: Any) -> tuple[RollingCorrelation, bool]:
    """Prune symbols no longer asked for, then take the new candles. Returns the state and
    whether it changed (an unchanged state is not written again)."""
    names, starts, ends, t, _ = runs
    wanted = set(names)
    gone = [s for s in rc.symbols if s not in wanted]
    rc.drop(gone)
    newest = dict(zip(names, t[ends - 1].tolist(), strict=True))
    # A state ahead of these candles (an earlier --as-of, or a pruned symbol that held the
    # newest candle) cannot be rolled back; nor can one whose candles changed since it
    # took them (a close rewritten, a row deleted or back-filled, a file replaced).
    if any(rc.last_time.get(s, -1) > newest[s] for s in names) or (
            rc.end_ms is not None and rc.end_ms > max(newest.values())):
        rc = fresh()
    elif rewritten(rc, runs):
        log.debug("correlation state: candles changed under it; rebuilt")
        rc = fresh()
    taken = rc.update_runs(*runs)
    return rc, bool(taken or gone)


def rewritten(rc: RollingCorrelation, runs: Any) -> bool:
    """Whether the candles ``runs`` (as ``update_runs`` takes them) disagree with what the
    state took of them: a return it holds in its window that the candles now give another
    value (or none), or a symbol's last close taken that is no longer there. The state
    only ever takes newer candles, so rows changed under it were kept as they had been:
    ``correlations`` and the correlation gate answered from the old rows, unlike
    ``--no-cache`` (sweep F, H1). Only each symbol's last window + 2 rows are read; a
    replay, which hands each step the rows from the last one taken, costs one comparison
    per symbol. The returns are computed as the state computes them (the same bits)."""
    if rc.end_ms is None or not rc.symbols:
        return False
    names, starts, ends, t, c = runs
    held = np.fromiter(map(rc._pos.get, names, repeat(-1, len(names))), np.int64,
                       len(names))
    every = np.flatnonzero((held >= 0) & (ends > starts))
    # Symbols a batch at a time: the check reads window + 2 rows of each, and its index
    # arrays over all of them at once were about 200 MB at 10,000 symbols, the next
    # candle's peak memory (issue 23's goal is 600 MB for the whole run).
    return any(_rewritten(rc, names, starts, ends, t, c, held, every[a:a + _CHECK_BATCH])
               for a in range(0, every.size, _CHECK_BATCH))


_CHECK_BATCH = 1024  # symbols per batch of ``rewritten``'s comparison


def _rewritten(rc: RollingCorrelation, names: Any, starts: np.ndarray, ends: np.ndarray,
               t: np.ndarray, c: np.ndarray, held: np.ndarray, k: np.ndarray) -> bool:
    """``rewritten`` for the symbols at ``k`` in ``names``."""
    end = rc.end_ms
    assert end is not None  # ``rewritten`` returned before
    step = rc.interval_ms
    col = held[k]
    last = np.fromiter(map(rc.last_time.get, [names[i] for i in k.tolist()],
                           repeat(-1, k.size)), np.int64, k.size)
    st, en = starts[k], ends[k]
    lo = np.maximum(st, en - (rc.window + 2))
    cnt = en - lo
    run = np.repeat(np.arange(k.size), cnt)
    idx = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt - lo, cnt)
    ts, cs = t[idx], c[idx]
    # the close the state took last: still there, the same (when the rows reach back to it)
    reach = last >= t[lo]
    at_last = ts == last[run]
    seen = np.zeros(k.size, dtype=bool)
    seen[run[at_last]] = True
    if bool((reach & ~seen).any()):
        return True
    took = np.fromiter(map(rc.last_close.get, [names[i] for i in k[run[at_last]].tolist()],
                           repeat(np.nan, int(at_last.sum()))), np.float64,
                       int(at_last.sum()))
    if not np.array_equal(cs[at_last], took, equal_nan=True):
        return True
    # the returns held in the window, recomputed from the rows before them
    first = end - (rc.window - 1) * step
    old = (idx > st[run]) & (ts >= first) & (ts <= np.minimum(last[run], end))
    if not old.any():
        return False
    i = idx[old]
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(t[i] - t[i - 1] == step, np.log(c[i] / c[i - 1]), np.nan)
    want[~np.isfinite(want)] = np.nan
    have = rc.returns[rc._slot(t[i]), col[run[old]]]
    return not np.array_equal(want, have, equal_nan=True)


def aligned_window(candles: Any, window: int, step: int) -> tuple[list[str], np.ndarray]:
    """(symbols, window x symbols returns with NaN) straight from candles: the input that
    ``numpy.corrcoef`` and tests use as an independent check."""
    syms = list(dict.fromkeys(candles["symbol"].to_list()))
    end = int(candles["open_time"].dt.epoch("ms").max())
    out = np.full((window, len(syms)), np.nan)
    for j, s in enumerate(syms):
        g = candles.filter(candles["symbol"] == s)
        t = g["open_time"].dt.epoch("ms").to_numpy()
        c = g["close"].to_numpy()
        ok = np.diff(t) == step
        rets = np.log(c[1:] / c[:-1])
        k = window - 1 - (end - t[1:]) // step
        sel = ok & (k >= 0)
        out[k[sel], j] = rets[sel]
    return syms, out

