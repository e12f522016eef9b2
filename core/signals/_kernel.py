"""The features compiled with numba (the ``fast`` extra): one pass per symbol.

``_features`` computes every indicator as whole-array numpy operations over a (bars x
symbols) layout; the recursions and the windows' block sums go row by row, a numpy call per
row, which at a few symbols costs far more than the arithmetic, and each step reads and
writes whole arrays. Here each symbol's rows (contiguous in the candle frame) go through
scalar code that does the same operations on the same values in the same order: no
reassociation, no fused multiply-add (numba compiles without fast-math, and LLVM fuses only
where told to), and numpy's error model (a division by zero is inf or NaN, as numpy's, not
an exception), so the bits are numpy's. What is not plain IEEE arithmetic stays in numpy
around this: the logarithm (numpy's own implementation, not the C library's), and the
exact two-pass standard deviation of nearly flat windows (numpy's pairwise sums).
tests/test_kernel.py compares both paths bit for bit.

This module imports numba: about 0.2 s, its cached machine code another 0.2-0.3 s, and the
first time on a machine a compile of a few seconds (cached on disk after that).
``_features.kernel_for`` decides when that pays; nothing else imports this module.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Rows of ``out`` in ``indicators``: the recursions' and ratios' columns, then per rolling
# window (Bollinger, volume z-score, volatility) its mean and standard deviation.
EMA_F, EMA_S, RSI, ATR, ADX, PDI, MDI, BB_MEAN, BB_STD, VZ_MEAN, VZ_STD, VOL_MEAN, VOL = \
    range(13)
ROWS = 13
# Bits of ``flat``: the window's variance is within rounding of zero (see
# ``_features._rolling_std``), recomputed two-pass by the caller.
FLAT_BB, FLAT_VZ, FLAT_VOL = 1, 2, 4


@njit(cache=True, nogil=True, error_model="numpy")
def _seed(x: np.ndarray, p: int, first: int, n: int, wilder: bool, mask: int
          ) -> float:  # pragma: no cover - compiled
    """TA-Lib's seed at row ``first`` from column p of the ring ``x`` (row r at r & mask):
    the mean of rows first-n+1..first, or for DI the sum of rows first-n+1..first-1, one
    Wilder step with row ``first``, divided by n; summed row by row in that order, as
    ``_features._mean_seed`` / ``_wilder_sum_seed``."""
    total = 0.0
    if wilder:
        for r in range(first - n + 1, first):
            total = total + x[r & mask, p]
        seed: float = (total * (1 - 1.0 / n) + x[first & mask, p]) * (1.0 / n)
        return seed
    for r in range(first - n + 1, first + 1):
        total = total + x[r & mask, p]
    mean: float = total / n
    return mean


@njit(cache=True, nogil=True, error_model="numpy")
def _ratio(num: float, den: float, scale: float) -> float:  # pragma: no cover - compiled
    # TA-Lib answers 0 where the denominator vanishes (flat prices), never inf or NaN.
    if den == 0:
        return 0.0
    return (num * scale) / den


@njit(cache=True, nogil=True, error_model="numpy")
def _max0(x: float) -> float:  # pragma: no cover - compiled
    # np.maximum(x, 0.0): NaN stays NaN
    return x if (x >= 0.0 or x != x) else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def indicators(h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray,
               log_ret: np.ndarray, runs: np.ndarray, periods: np.ndarray,
               resume: np.ndarray, capture: np.ndarray, out: np.ndarray,
               flat: np.ndarray, carry: np.ndarray) -> None:  # pragma: no cover - compiled
    """Every symbol's indicators into ``out`` (``ROWS`` x rows, NaN where null) and
    ``flat``; symbol s is the ``runs[s]`` rows after the previous symbols'.

    ``periods``: EMA fast and slow, RSI, ATR, ADX, Bollinger, volume z-score, volatility.
    ``resume`` (symbols x 9, or 0 rows): the recursions' values at each symbol's row 0,
    in ``_features.SMOOTHERS``' order, instead of TA-Lib's seeds. ``capture`` (a row per
    symbol, or empty): the recursions' values there go to ``carry`` (9 x symbols).

    One pass over each symbol's rows, every stage a row at a time: the recursions side by
    side (each is a chain of dependent operations; the processor overlaps them), the
    windows' block sums as their blocks fill. What a stage reads back (a seed's first n
    inputs, a block's rows for its suffix sums) is at most the longest period behind, so
    the inputs live in a ring of that many rows, in cache, whatever the series' length."""
    n_fast, n_slow, n_rsi, n_atr, n_adx = periods[0], periods[1], periods[2], periods[3], \
        periods[4]
    # the recursions in SMOOTHERS' order: first output row, n, Wilder-sum seed, k
    firsts = np.array([n_fast - 1, n_slow - 1, n_rsi, n_rsi, n_atr, n_adx, n_adx, n_adx,
                       2 * n_adx - 1])
    ns = np.array([n_fast, n_slow, n_rsi, n_rsi, n_atr, n_adx, n_adx, n_adx, n_adx])
    wilder = np.array([False, False, False, False, False, True, True, True, False])
    ks = np.array([2.0 / (n_fast + 1), 2.0 / (n_slow + 1), 1.0 / n_rsi, 1.0 / n_rsi,
                   1.0 / n_atr, 1.0 / n_adx, 1.0 / n_adx, 1.0 / n_adx, 1.0 / n_adx])
    decay = 1.0 - ks
    # the windows (Bollinger, volume z-score, volatility): sums of x and x^2 over n rows
    wn = np.array([periods[5], periods[6], periods[7]])
    ddof = np.array([0, 1, 1])
    mean_row = np.array([BB_MEAN, VZ_MEAN, VOL_MEAN])
    std_row = np.array([BB_STD, VZ_STD, VOL])
    longest = 1
    for p in range(9):
        longest = max(longest, ns[p])
    for w in range(3):
        longest = max(longest, wn[w])
    size = 1
    while size < longest:
        size *= 2
    mask = size - 1
    xs = np.empty((size, 9))  # the recursions' inputs (8: DX), row t at t & mask
    wx = np.empty((size, 6))  # the windows' inputs: x, x^2 for each window
    y = np.empty(9)
    fs = np.empty(9, dtype=np.int64)
    pre = np.empty(6)
    suf = np.empty((longest, 6))
    pos = np.empty(3, dtype=np.int64)
    sums = np.empty(6)
    resumed = resume.shape[0] > 0
    captured = capture.shape[0] > 0
    a = 0
    for s in range(len(runs)):
        bars = runs[s]
        for p in range(9):
            fs[p] = 0 if resumed else firsts[p]  # past the series: NaN throughout
        pos[:] = 0
        if captured:
            carry[:, s] = np.nan
        for t in range(bars):
            i = a + t
            ri = t & mask
            if t == 0:
                xs[ri, 2:8] = np.nan  # no change before the first row
            else:
                pc = c[i - 1]
                # np.maximum / np.minimum: NaN if either is
                hi = h[i] if (h[i] >= pc or h[i] != h[i]) else pc
                low = lo[i] if (lo[i] <= pc or lo[i] != lo[i]) else pc
                tr = hi - low
                up = h[i] - h[i - 1]
                down = lo[i - 1] - lo[i]
                d = c[i] - pc
                xs[ri, 2] = _max0(d)
                xs[ri, 3] = _max0(-d)
                xs[ri, 4] = tr
                xs[ri, 5] = _max0(up) * (1.0 if up > down else 0.0)
                xs[ri, 6] = _max0(down) * (1.0 if down > up else 0.0)
                xs[ri, 7] = tr
            xs[ri, 0] = xs[ri, 1] = c[i]
            for p in range(8):
                f = fs[p]
                if t > f:
                    y[p] = xs[ri, p] * ks[p] + y[p] * decay[p]
                elif t == f:
                    y[p] = resume[s, p] if resumed else \
                        _seed(xs, p, f, ns[p], wilder[p], mask)
                else:
                    y[p] = np.nan
            pdi = _ratio(y[5], y[7], 100.0)
            mdi = _ratio(y[6], y[7], 100.0)
            xs[ri, 8] = _ratio(abs(pdi - mdi), pdi + mdi, 100.0)
            # ADX: the mean of the first n DX values (rows n..2n-1), then Wilder.
            f = fs[8]
            if t > f:
                y[8] = xs[ri, 8] * ks[8] + y[8] * decay[8]
            elif t == f:
                y[8] = resume[s, 8] if resumed else _seed(xs, 8, f, n_adx, False, mask)
            else:
                y[8] = np.nan
            out[EMA_F, i] = y[0]
            out[EMA_S, i] = y[1]
            out[RSI, i] = _ratio(y[2], y[2] + y[3], 100.0)
            out[ATR, i] = y[4]
            out[ADX, i] = y[8]
            out[PDI, i] = pdi
            out[MDI, i] = mdi
            if captured and t == capture[s]:
                carry[:, s] = y
            wx[ri, 0] = c[i]
            wx[ri, 1] = c[i] * c[i]
            wx[ri, 2] = v[i]
            wx[ri, 3] = v[i] * v[i]
            wx[ri, 4] = log_ret[i]
            wx[ri, 5] = log_ret[i] * log_ret[i]
            flat[i] = 0
            for w in range(3):
                n, r = wn[w], pos[w]
                # rows in blocks of n from row 0: the window ending at row i of a block is
                # the previous block's suffix from i + 1 plus this block's prefix to i,
                # prefixes summed forward, suffixes backward (``_features._window_sum``)
                for q in range(2 * w, 2 * w + 2):
                    pre[q] = wx[ri, q] if r == 0 else pre[q] + wx[ri, q]
                    if r == n - 1:
                        sums[q] = pre[q]
                    elif t < n:
                        sums[q] = np.nan
                    else:
                        sums[q] = suf[r + 1, q] + pre[q]
                if r == n - 1:  # the block is whole: its suffixes, for the next block
                    pos[w] = 0
                    for q in range(2 * w, 2 * w + 2):
                        acc = wx[ri, q]
                        suf[n - 1, q] = acc
                        for k in range(n - 2, -1, -1):
                            acc = acc + wx[(t - (n - 1) + k) & mask, q]
                            suf[k, q] = acc
                else:
                    pos[w] = r + 1
                # ``_features._rolling_std`` up to the square root; windows within rounding
                # of flat get a bit in ``flat`` (the caller recomputes them two-pass)
                s1 = sums[2 * w]
                m = s1 / n
                nm2 = s1 * m
                var = (sums[2 * w + 1] - nm2) * (1.0 / (n - ddof[w]))
                if var < 0.0:  # rounding; NaN (warm-up) stays NaN, as np.maximum keeps it
                    var = 0.0
                if var <= nm2 * (1e-10 / n):
                    flat[i] |= 1 << w
                out[mean_row[w], i] = m
                out[std_row[w], i] = np.sqrt(var)
        a += bars
