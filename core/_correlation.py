"""Rolling cross-symbol correlation, updated only where new candles arrived.

Definition (docs/correlation.md): log close-to-close returns, no return across a gap; the
window is the last ``window`` candle open times ending at the newest closed candle held; a pair
uses the times where both symbols have a return (pairwise complete), Pearson with the centred
two-pass formula in float64, at least ``min_periods`` common returns, NaN for zero variance,
clipped to [-1, 1]; the diagonal is 1 where the symbol has enough returns.

How it is incremental: the aligned returns live in a (window x symbols) array. When a symbol
gets a candle that does not move the window's end, only that symbol's row and column are
recomputed, O(symbols x window). When the end moves, every pair's window changes and all
rows are recomputed. Each entry is always computed by the same row function, from the same
numbers, in the same order, as ``full_matrix``: there are no running sums, so there is no
drift to re-anchor, and incremental equals full to the last bit.
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
    out = np.clip(out, -1.0, 1.0)
    out[(n < min_periods) | (sxx == 0) | (syy == 0)] = np.nan
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
    _all_dirty: bool = False

    def __post_init__(self) -> None:
        if self.window < 2 or self.min_periods < 2:
            raise UsageError("correlation window and min_periods must be at least 2")
        if self.returns.size == 0:
            self.returns = np.full((self.window, len(self.symbols)), np.nan)
            self._matrix = np.full((len(self.symbols),) * 2, np.nan)
            self._all_dirty = True

    # -- updates -----------------------------------------------------------------------------

    def _slide_to(self, end_ms: int) -> None:
        if self.end_ms is not None and end_ms <= self.end_ms:
            return
        steps = self.window if self.end_ms is None else (end_ms - self.end_ms) // \
            self.interval_ms
        if steps >= self.window:
            self.returns[:] = np.nan
        elif steps > 0:
            self.returns[:-steps] = self.returns[steps:]
            self.returns[-steps:] = np.nan
        self.end_ms = end_ms
        self._all_dirty = True

    def _column(self, symbol: str) -> int:
        if symbol not in self.symbols:
            self.symbols.append(symbol)
            self.returns = np.hstack([self.returns, np.full((self.window, 1), np.nan)])
            n = len(self.symbols)
            grown = np.full((n, n), np.nan)
            grown[:n - 1, :n - 1] = self._matrix
            self._matrix = grown
        return self.symbols.index(symbol)

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
            if 0 <= k < self.window and ret is not None:
                self.returns[k, j] = ret
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
        if symbol not in self.symbols:
            return
        j = self.symbols.index(symbol)
        self.symbols.pop(j)
        self.returns = np.delete(self.returns, j, axis=1)
        self._matrix = np.delete(np.delete(self._matrix, j, axis=0), j, axis=1)
        self.last_time.pop(symbol, None)
        self.last_close.pop(symbol, None)
        self._dirty = {d - (d > j) for d in self._dirty if d != j}

    # -- results -----------------------------------------------------------------------------

    def _fill_row(self, m: np.ndarray, i: int) -> None:
        row = _row(self.returns, i, self.min_periods)
        m[i, :] = row
        m[:, i] = row

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """The current matrix, recomputing only rows whose data changed."""
        rows = range(len(self.symbols)) if self._all_dirty else sorted(self._dirty)
        for i in rows:
            self._fill_row(self._matrix, i)
        self._dirty.clear()
        self._all_dirty = False
        return list(self.symbols), self._matrix.copy()

    def rows_pending(self) -> list[str]:
        if self._all_dirty:
            return list(self.symbols)
        return [self.symbols[i] for i in sorted(self._dirty)]

    def full_matrix(self) -> tuple[list[str], np.ndarray]:
        """The reference: every entry recomputed from the aligned returns."""
        n = len(self.symbols)
        m = np.full((n, n), np.nan)
        for i in range(n):
            self._fill_row(m, i)
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
                   _matrix=matrix)


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
