"""Rolling cross-symbol correlation, updated only where new candles arrived.

Definition (docs/correlation.md): log close-to-close returns, no return across a gap; the
window is the last ``window`` candle open times ending at the newest closed candle held; a pair
uses the times where both symbols have a return (pairwise complete), Pearson with the centred
two-pass formula in float64, at least ``min_periods`` common returns, NaN for zero variance,
clipped to [-1, 1]; the diagonal is 1 where the symbol has enough returns.

How it is incremental: the aligned returns live in a (window x symbols) array, and for every
pair we keep running sums over the times both have a return: count, sum of x, sum of x^2 (each
side) and sum of x*y. A new candle for one symbol adds one row of terms, O(symbols), and only
that symbol's row and column of the matrix are recomputed from the sums, O(symbols). When the
window's end moves, the dropped time's terms are subtracted from every pair, O(symbols^2).

Exactness: the sums are rebuilt from the aligned returns ("re-anchored") every ``window``
slides, so rounding from additions and subtractions cannot accumulate; and any pair whose
variance from the sums is within rounding of zero is recomputed exactly (two-pass, with
zero variance meaning all values equal), so a flat stretch gives null exactly as the reference
does. tests/test_correlation.py checks matrix() == full_matrix() to 1e-12 after random update
sequences and after 100,000 updates.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from botopt.core._config import Config
from botopt.core.errors import UsageError

log = logging.getLogger("botopt.correlation")
STATE_FORMAT = 1


def _row(r: np.ndarray, i: int, min_periods: int) -> np.ndarray:
    """Correlations of column ``i`` with every column of ``r`` (NaN = no return)."""
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
        out = sxy / np.sqrt(sxx * syy)
        # Zero variance means all values equal; a rounded mean can leave sxx at 1e-35.
        x_flat = np.where(both, x, np.inf).min(axis=0) == np.where(both, x, -np.inf).max(axis=0)
        y_flat = np.where(both, r, np.inf).min(axis=0) == np.where(both, r, -np.inf).max(axis=0)
    out = np.clip(out, -1.0, 1.0)
    out[(n < min_periods) | x_flat | y_flat] = np.nan
    out[i] = np.nan if n[i] < min_periods or x_flat[i] else 1.0
    return out


@dataclass
class RollingCorrelation:
    window: int = 288
    min_periods: int = 30
    interval_ms: int = 300_000
    symbols: list[str] = field(default_factory=list)
    end_ms: int | None = None  # open time of the newest candle in the window
    returns: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    last_time: dict[str, int] = field(default_factory=dict)
    last_close: dict[str, float] = field(default_factory=dict)
    _matrix: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    _dirty: set[int] = field(default_factory=set)
    _all_dirty: bool = True
    _slides: int = 0

    def __post_init__(self) -> None:
        if self.window < 2 or self.min_periods < 2:
            raise UsageError("correlation window and min_periods must be at least 2")
        if self.returns.size == 0:
            self.returns = np.full((self.window, len(self.symbols)), np.nan)
        if self._matrix.shape != (len(self.symbols),) * 2:
            self._matrix = np.full((len(self.symbols),) * 2, np.nan)
            self._all_dirty = True
        # list.index is O(symbols) per update: at 500 symbols it was 5 % of an update
        self._pos = {s: k for k, s in enumerate(self.symbols)}
        self._anchor()

    # -- running sums --------------------------------------------------------------------

    def _anchor(self) -> None:
        """Rebuild every pair's sums exactly from the aligned returns."""
        r = self.returns
        m = (~np.isnan(r)).astype(np.float64)
        x = np.where(np.isnan(r), 0.0, r)
        self._count = m.T @ m
        self._sum = x.T @ m  # [i, j]: sum of x_i over the times i and j share
        self._sq = (x * x).T @ m
        self._prod = x.T @ x
        # Every x^2 that went in or out since this anchor: the scale of the rounding left in
        # the sums, which decides when a small variance cannot be trusted.
        self._scale = self._sq.copy()
        self._slides = 0

    def _add(self, k: int, j: int, value: float, sign: float = 1.0) -> None:
        """Add (sign +1) or take back (sign -1) symbol j's return at window row k."""
        row = self.returns[k]
        m = (~np.isnan(row)).astype(np.float64)
        m[j] = 1.0
        row[j] = value
        x = np.where(m > 0, row, 0.0)
        for mat, mine, theirs, sgn in (
                (self._count, m, m, sign), (self._sum, value * m, x * m, sign),
                (self._sq, value * value * m, x * x * m, sign),
                (self._prod, value * x, value * x, sign),
                (self._scale, value * value * m, x * x * m, 1.0)):
            mat[j, :] += sgn * mine
            mat[:, j] += sgn * theirs
            mat[j, j] -= sgn * mine[j]  # the diagonal got the term twice
        if sign < 0:
            row[j] = np.nan
        self._dirty.add(j)

    def _drop_rows(self, rows: np.ndarray) -> None:
        r = self.returns[rows]
        m = (~np.isnan(r)).astype(np.float64)
        x = np.where(np.isnan(r), 0.0, r)
        self._count -= m.T @ m
        self._sum -= x.T @ m
        self._sq -= (x * x).T @ m
        self._scale += (x * x).T @ m
        self._prod -= x.T @ x

    # -- updates -------------------------------------------------------------------------

    def _slide_to(self, end_ms: int) -> None:
        if self.end_ms is not None and end_ms <= self.end_ms:
            return
        steps = self.window if self.end_ms is None else (end_ms - self.end_ms) // \
            self.interval_ms
        self.end_ms = end_ms
        self._all_dirty = True
        if steps >= self.window:
            self.returns[:] = np.nan
            self._anchor()
            return
        self._drop_rows(np.arange(steps))
        self.returns[:-steps] = self.returns[steps:]
        self.returns[-steps:] = np.nan
        self._slides += steps
        if self._slides >= self.window:
            self._anchor()  # bound the rounding that additions and subtractions accumulate

    def _column(self, symbol: str) -> int:
        j = self._pos.get(symbol)
        if j is not None:
            return j
        self.symbols.append(symbol)
        n = len(self.symbols)
        self._pos[symbol] = n - 1
        self.returns = np.hstack([self.returns, np.full((self.window, 1), np.nan)])
        grown = np.full((n, n), np.nan)
        grown[:n - 1, :n - 1] = self._matrix
        self._matrix = grown
        for name in ("_count", "_sum", "_sq", "_prod", "_scale"):
            old = getattr(self, name)
            new = np.zeros((n, n))
            new[:n - 1, :n - 1] = old
            setattr(self, name, new)
        return n - 1

    def update(self, symbol: str, candles_or_returns: Any) -> int:
        """Feed new data for one symbol: a candle frame (``open_time``, ``close``), or a
        mapping {open_time_ms: log_return}. Data not newer than what the symbol already has
        is ignored. Returns the number of new candles taken."""
        points = self._points(symbol, candles_or_returns)
        if not points:
            return 0
        j = self._column(symbol)
        self._slide_to(max(self.end_ms or points[-1][0], points[-1][0]))
        assert self.end_ms is not None
        for t, ret in points:
            k = self.window - 1 - (self.end_ms - t) // self.interval_ms
            if 0 <= k < self.window and ret is not None and np.isnan(self.returns[k, j]):
                self._add(k, j, ret)
        self._dirty.add(j)
        return len(points)
    def _points(self, symbol: str, data: Any) -> list[tuple[int, float | None]]:
        last = self.last_time.get(symbol)
        if isinstance(data, Mapping):
            pts = sorted((int(t), float(v)) for t, v in data.items()
                         if last is None or int(t) > last)
            if pts:
                self.last_time[symbol] = pts[-1][0]
            return [(t, v) for t, v in pts]
        times = data["open_time"].dt.epoch("ms").to_numpy()
        closes = data["close"].to_numpy().astype(np.float64)
        order = np.argsort(times, kind="stable")
        times, closes = times[order], closes[order]
        out: list[tuple[int, float | None]] = []
        prev_t, prev_c = last, self.last_close.get(symbol)
        for t, c in zip(times.tolist(), closes.tolist(), strict=True):
            if last is not None and t <= last:
                continue
            ret = math.log(c / prev_c) if prev_t is not None and prev_c is not None \
                and t - prev_t == self.interval_ms else None
            out.append((t, ret))
            prev_t, prev_c = t, c
        if out:
            self.last_time[symbol] = prev_t  # type: ignore[assignment]
            self.last_close[symbol] = prev_c  # type: ignore[assignment]
        return out

    def remove(self, symbol: str) -> None:
        j = self._pos.get(symbol)
        if j is None:
            return
        self.symbols.pop(j)
        self._pos = {s: k for k, s in enumerate(self.symbols)}
        self.returns = np.delete(self.returns, j, axis=1)
        self._matrix = np.delete(np.delete(self._matrix, j, axis=0), j, axis=1)
        for name in ("_count", "_sum", "_sq", "_prod", "_scale"):
            setattr(self, name, np.delete(np.delete(getattr(self, name), j, axis=0), j,
                                          axis=1))
        self.last_time.pop(symbol, None)
        self.last_close.pop(symbol, None)
        self._dirty = {d - (d > j) for d in self._dirty if d != j}

    # -- results -------------------------------------------------------------------------

    def _row_from_sums(self, i: int) -> np.ndarray:
        n = self._count[i]
        sx, sy = self._sum[i], self._sum[:, i]
        with np.errstate(invalid="ignore", divide="ignore"):
            vx = self._sq[i] - sx * sx / n
            vy = self._sq[:, i] - sy * sy / n
            cov = self._prod[i] - sx * sy / n
            out = np.clip(cov / np.sqrt(vx * vy), -1.0, 1.0)
            # Within rounding of zero variance: decide exactly from the returns themselves.
            doubt = (vx <= 1e-6 * self._scale[i]) | (vy <= 1e-6 * self._scale[:, i]) | ~(
                np.isfinite(out))
        out[n < self.min_periods] = np.nan
        doubt &= n >= self.min_periods
        if doubt.any():
            exact = _row(self.returns, i, self.min_periods)
            out[doubt] = exact[doubt]
        out[i] = np.nan if n[i] < self.min_periods or doubt[i] and np.isnan(out[i]) else 1.0
        return out

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """The current matrix, recomputing only rows whose data changed."""
        rows = range(len(self.symbols)) if self._all_dirty else sorted(self._dirty)
        for i in rows:
            row = self._row_from_sums(i)
            self._matrix[i, :] = row
            self._matrix[:, i] = row
        self._dirty.clear()
        self._all_dirty = False
        # A read-only view, not a copy: copying would make every update O(symbols^2).
        view = self._matrix.view()
        view.flags.writeable = False
        return list(self.symbols), view

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

    # -- persistence (JSON + .npy, never pickle) ---------------------------------------------

    def save(self, path: Path) -> None:
        import io

        from botopt.core._fs import atomic_write_bytes

        meta = {"format": STATE_FORMAT, "window": self.window,
                "min_periods": self.min_periods, "interval_ms": self.interval_ms,
                "symbols": self.symbols, "end_ms": self.end_ms,
                "last_time": self.last_time, "last_close": self.last_close}
        self.matrix()
        buf = io.BytesIO()
        np.save(buf, self.returns, allow_pickle=False)
        np.save(buf, self._matrix, allow_pickle=False)
        atomic_write_bytes(path.with_suffix(".npy"), buf.getvalue())
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta).encode())

    @classmethod
    def load(cls, path: Path) -> RollingCorrelation:
        import io

        meta = json.loads(path.with_suffix(".json").read_bytes())
        if meta.get("format") != STATE_FORMAT:
            raise ValueError("unknown state format")
        buf = io.BytesIO(path.with_suffix(".npy").read_bytes())
        returns = np.load(buf, allow_pickle=False)
        matrix = np.load(buf, allow_pickle=False)
        n = len(meta["symbols"])
        if returns.shape != (meta["window"], n) or matrix.shape != (n, n):
            raise ValueError("state arrays do not match their metadata")
        return cls(window=meta["window"], min_periods=meta["min_periods"],
                   interval_ms=meta["interval_ms"], symbols=list(meta["symbols"]),
                   end_ms=meta["end_ms"], returns=returns,
                   last_time={k: int(v) for k, v in meta["last_time"].items()},
                   last_close={k: float(v) for k, v in meta["last_close"].items()},
                   _matrix=matrix, _all_dirty=False)


@dataclass(frozen=True)
class CorrelationResult:
    symbols: list[str]
    matrix: np.ndarray
    window: int
    as_of: datetime | None
    rows_updated: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"symbols": self.symbols, "window": self.window,
                "as_of": self.as_of.isoformat().replace("+00:00", "Z") if self.as_of else None,
                "matrix": [[None if math.isnan(v) else round(float(v), 12) for v in row]
                           for row in self.matrix],
                "rows_updated": self.rows_updated}


def update_correlation(config: Config, candles: Any, *, full: bool = False,
                       window: int | None = None) -> CorrelationResult:
    """Bring the stored state up to date with ``candles`` (only symbols whose last closed
    candle moved) and return the matrix for the symbols in ``candles``."""
    from filelock import FileLock, Timeout

    from botopt.core._candles import interval_ms
    from botopt.core._paths import state_dir

    win = window or config.correlation.window
    step = interval_ms(config.data.interval)
    syms = list(dict.fromkeys(candles["symbol"].to_list()))
    frames = {str(k[0]): v for k, v in
              candles.partition_by("symbol", as_dict=True, maintain_order=True).items()}
    path = state_dir(config, "correlation") / \
        f"{config.data.interval}-w{win}-m{config.correlation.min_periods}"

    def fresh() -> RollingCorrelation:
        return RollingCorrelation(window=win, min_periods=config.correlation.min_periods,
                                  interval_ms=step)

    def compute(rc: RollingCorrelation) -> tuple[RollingCorrelation, bool]:
        newest = {s: int(frames[s]["open_time"].dt.epoch("ms")[-1]) for s in syms}
        # A state ahead of these candles (an earlier --as-of) cannot be rolled back.
        if any(rc.last_time.get(s, -1) > newest[s] for s in syms) or \
                (rc.end_ms is not None and rc.end_ms > max(newest.values())):
            rc = fresh()
        tail = (win + 1)
        for s in syms:
            rc.update(s, frames[s].tail(tail) if s not in rc.last_time else frames[s])
        return rc, True

    rc = fresh()
    updated: list[str] = []
    try:
        with FileLock(str(path) + ".lock", timeout=5):
            if not full:
                try:
                    rc = RollingCorrelation.load(path)
                    if rc.window != win or rc.interval_ms != step:
                        rc = fresh()
                except FileNotFoundError:
                    pass
                except (ValueError, KeyError, OSError) as exc:
                    log.warning("correlation state %s unreadable (%s); rebuilding", path, exc)
                    rc = fresh()
            rc, _ = compute(rc)
            updated = rc.rows_pending()
            rc.save(path)
    except Timeout:
        log.warning("correlation state %s is busy; computing without it", path)
        rc, _ = compute(fresh())
        updated = rc.rows_pending()
    names, m = rc.matrix()
    idx = [names.index(s) for s in syms]
    end = datetime.fromtimestamp(rc.end_ms / 1000, tz=timezone.utc) if rc.end_ms else None
    return CorrelationResult(symbols=syms, matrix=m[np.ix_(idx, idx)], window=win,
                             as_of=end, rows_updated=[s for s in updated if s in syms])


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


def as_list(matrix: np.ndarray) -> Sequence[Sequence[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]
