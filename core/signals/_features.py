"""Technical features for all symbols at once, matching TA-Lib's definitions and seeding.

The plan: a (bars x symbols) numpy array per input, row t = a symbol's t-th candle (a symbol
with fewer candles is padded with NaN below its last row). Then every step is a row
operation over all symbols at once:

- changes from the previous row, true range, directional movement, gains: whole-array
  elementwise operations on slices, in place where they can be;
- the eight recursive smoothers (EMA, Wilder's RSI/ATR/DI) run as ONE recursion over a
  (bars x 8 symbols) array, y[t] = (1 - k) y[t-1] + k x[t] with k per column: 2 numpy
  calls per bar for all of them, then ADX the same way; each starts at TA-Lib's seed (the
  simple average, or for DI the scaled partial sum, summed row by row in TA-Lib's order);
- rolling windows are block prefix and suffix sums (each window adds at most n values
  fresh: no running sum that carries rounding from values long gone); the three windows
  run side by side as one array;
- arrays of 2 MiB and more sit on huge pages (``_empty``): in a VM, faulting fresh 4 KiB
  pages in cost as much as the arithmetic.

Each symbol's values depend on its own column only and every operation is elementwise in a
fixed order, so a symbol computed alone equals the same symbol in a batch bit for bit (a
property test checks it). What it costs against TA-Lib, and what the plans before it cost,
is in docs/performance.md ("Features"), not here: figures go stale, a docstring is not rerun.

Indicators run over rows, as TA-Lib does: a gap in time is not filled or bridged by a fake
candle (log returns across a gap are still computed between the neighbouring rows, because
that is what a user's TA-Lib code sees too).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl

from ..base._args import CANDLE_COLUMNS, frame, section
from ..base._codec import digest, settings_json
from ..base._config import Config, FeaturesConfig
from ..base._versions import stage_tag
from ..errors import UsageError

_CHUNK = 128  # symbols computed together: arrays of 1 MB at 1,000 bars, memory bounded

# The compiled features (``_kernel``, numba from the ``fast`` extra) cost about 0.5 s to
# load in a process that has not (numba's import and the cached machine code); from this
# many candles in one job they save more than that (docs/performance.md, "Compiled
# features"). A process that has loaded them uses them for every size.
KERNEL_MIN_ROWS = 5_000_000
KERNEL_ENV = "BOTOPT_KERNEL"  # "numpy": never the compiled loops; "auto" (default); "numba"
_KERNEL_MODES = ("auto", "numpy", "numba")
_kernel_state: dict[str, ModuleType | None] = {}
_kernel_failure: dict[str, str] = {}
log = logging.getLogger("botopt.features")


def kernel_for(rows: int) -> ModuleType | None:
    """The compiled features for a job over ``rows`` candles, or None for numpy's.

    Both give the same bits (tests/test_kernel.py), so this decides speed only: compiled
    when numba is installed and already loaded in this process, or when the job is large
    enough to pay for loading it (``KERNEL_MIN_ROWS``), or always with
    ``BOTOPT_KERNEL=numba``. A numba that cannot be imported or cannot compile here (a
    version mismatch, no writable cache) means numpy, for the process's lifetime."""
    mode = _kernel_mode()
    if mode == "numpy" or (mode == "auto" and rows < KERNEL_MIN_ROWS
                           and "kernel" not in _kernel_state):
        return None
    module = _load_kernel()
    if module is None and mode == "numba":
        why = _kernel_failure.get("why")
        raise UsageError(f"{KERNEL_ENV}=numba, but " + (
            f"numba does not work here ({why}); unset it for the numpy path" if why else
            "numba is not installed: pip install 'botopt[fast]', or unset it"),
            key=KERNEL_ENV)
    return module


def _first_call(module: ModuleType) -> None:
    """The compiled features' first call, which compiles them or loads numba's on-disk
    cache: any failure shows here, once, not in the middle of a run."""
    one = np.ones(40)
    one.flags.writeable = False  # as the frame's own buffers are: that signature
    _indicators_compiled(module, one, one, one, one, np.array([40]), FeaturesConfig(), None,
                         None)


def _kernel_mode() -> str:
    raw = os.environ.get(KERNEL_ENV, "auto")
    mode = raw.strip().lower() or "auto"
    if mode not in _KERNEL_MODES:
        raise UsageError(f"{KERNEL_ENV}={raw.strip()[:40]!r}: expected one of "
                         f"{', '.join(_KERNEL_MODES)}", key=KERNEL_ENV)
    return mode


def _load_kernel() -> ModuleType | None:
    """Load the compiled features now if numba is installed (None if not, or if it fails):
    for a long-lived process whose many small calls together pay for the import.
    ``BOTOPT_KERNEL=numpy`` still wins."""
    if _kernel_mode() == "numpy":
        return None
    if "kernel" in _kernel_state:
        return _kernel_state["kernel"]
    module: ModuleType | None = None
    try:
        if importlib.util.find_spec("numba") is not None:
            module = importlib.import_module(f"{__package__}._kernel")
            try:
                _first_call(module)
            except Exception:  # noqa: BLE001 - as any cache of botopt's: a damaged one
                # (a file cut by a full disk, another numba's) is dropped and rebuilt once
                for fn in vars(module).values():
                    cache = getattr(fn, "_cache", None)
                    if cache is not None and hasattr(cache, "flush"):
                        cache.flush()
                _first_call(module)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional speed-up: numpy
        module = None
        # said where it is asked for by name, and to a --debug run: a numba that cannot
        # cache (no writable directory) or reads a damaged cache file, not "not installed"
        _kernel_failure["why"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" \
            if str(exc) else type(exc).__name__
        log.debug("compiled features unavailable, numpy computes them: %s",
                  _kernel_failure["why"])
    _kernel_state["kernel"] = module
    return module


def feature_columns(config: FeaturesConfig | None = None) -> list[str]:
    """Names of the feature columns ``compute_features`` adds, in order."""
    fc = config or FeaturesConfig()
    return [
        f"ema_{fc.ema_fast}", f"ema_{fc.ema_slow}", f"rsi_{fc.rsi_period}",
        f"atr_{fc.atr_period}", f"adx_{fc.adx_period}", f"plus_di_{fc.adx_period}",
        f"minus_di_{fc.adx_period}", f"bb_width_{fc.bb_period}", f"vol_{fc.vol_period}",
        f"volume_z_{fc.volume_z_period}", "log_return",
    ]


class _Layout:
    """Long (symbol-major) columns <-> (bars x symbols) arrays. When every symbol has the
    same number of candles, which is what a cron run loads, this is a reshape."""

    def __init__(self, runs: np.ndarray) -> None:
        self.runs = runs
        self.n = len(runs)
        self.bars = int(runs.max()) if self.n else 0
        self.equal = bool((runs == self.bars).all())
        if not self.equal:
            starts = np.cumsum(runs) - runs
            self.code = np.repeat(np.arange(self.n), runs)
            self.row = np.arange(int(runs.sum())) - np.repeat(starts, runs)

    def wide(self, col: np.ndarray) -> np.ndarray:
        if self.equal:
            return np.ascontiguousarray(col.reshape(self.n, self.bars).T)
        out = np.full((self.bars, self.n), np.nan)
        out[self.row, self.code] = col
        return out

    def long(self, x: np.ndarray) -> np.ndarray:
        return x.T.ravel() if self.equal else x[self.row, self.code]

    def put_long(self, x: np.ndarray, dest: np.ndarray) -> None:
        """``dest[:] = long(x)`` without the intermediate copy when it is a reshape."""
        if self.equal:
            dest.reshape(self.n, self.bars)[...] = x.T
        else:
            dest[...] = x[self.row, self.code]


def _prev(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def _mean_seed(x: np.ndarray, first: int, n: int) -> np.ndarray:
    """The mean of rows first-n+1..first, added row by row in TA-Lib's order."""
    total = np.zeros(x.shape[1])
    if first >= len(x):
        return total + np.nan
    for k in range(n - 1, -1, -1):
        total = total + x[first - k]
    return total / n


def _wilder_sum_seed(x: np.ndarray, first: int, n: int) -> np.ndarray:
    """TA-Lib's DI seed: the sum of rows first-n+1..first-1, one Wilder step with row
    ``first``, divided by n (the smoother then runs as a Wilder mean)."""
    total = np.zeros(x.shape[1])
    if first >= len(x):
        return total + np.nan
    for k in range(n - 1, 0, -1):
        total = total + x[first - k]
    seed: np.ndarray = (total * (1 - 1.0 / n) + x[first]) * (1.0 / n)
    return seed


def _smooth(parts: list[tuple[np.ndarray, int, np.ndarray, float]]) -> list[np.ndarray]:
    """Run the recursions (input, seed row, seed, k) side by side as one array: null before
    the seed row, the seed at it, then y = (1 - k) y + k x. The k x terms are one
    vectorized pass into the output buffer, so each bar is 2 numpy calls over every
    smoother and every symbol at once (TA-Lib's y + (x - y) k rounds differently, by ulps
    that the stable recursion does not grow: the tests hold it to TA-Lib)."""
    bars, n = parts[0][0].shape
    y = _empty((bars, n * len(parts)))
    seed_at: dict[int, list[tuple[slice, np.ndarray]]] = {}
    for j, (x, first, seed, k) in enumerate(parts):
        cols = slice(j * n, (j + 1) * n)
        np.multiply(x, k, out=y[:, cols])
        seed_at.setdefault(first, []).append((cols, seed))
    decay = np.repeat([1.0 - p[3] for p in parts], n)
    rows = list(y)
    tmp = np.empty_like(decay)
    # Between two seed rows the loop body is the two calls and nothing else.
    firsts = sorted(t for t in seed_at if t < bars)
    for t0, t1 in zip(firsts, [*firsts[1:], bars][:len(firsts)], strict=True):
        if t0 > firsts[0]:  # the other smoothers' step at this seed row
            np.multiply(rows[t0 - 1], decay, out=tmp)
            np.add(rows[t0], tmp, out=rows[t0])
        for cols, seed in seed_at[t0]:
            rows[t0][cols] = seed
        for t in range(t0 + 1, t1):
            np.multiply(rows[t - 1], decay, out=tmp)
            np.add(rows[t], tmp, out=rows[t])
    for j, (_, first, _, _) in enumerate(parts):
        y[:first, j * n:(j + 1) * n] = np.nan  # before the seed: garbage, now null
    return [y[:, j * n:(j + 1) * n] for j in range(len(parts))]


def _ratio(num: np.ndarray, den: np.ndarray, scale: float = 100.0,
           out: np.ndarray | None = None) -> np.ndarray:
    """scale * num / den, in ``out`` when given (it may be ``num``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.multiply(num, scale, out=out) if scale != 1.0 or out is not None \
            else num.copy()
        np.divide(out, den, out=out)
    # TA-Lib answers 0 where the denominator vanishes (flat prices), never inf or NaN.
    np.copyto(out, 0.0, where=den == 0)
    return out


def _window_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last n rows at every row (NaN before row n-1). Rows are cut in blocks of
    n: a window is a suffix of one block plus a prefix of the next, each summed within its
    block, so every window adds at most n values fresh (no running sum carries rounding from
    values long gone) and the whole costs about three passes instead of n."""
    bars, m = x.shape
    if bars < n:
        return np.full_like(x, np.nan)
    blocks = -(-bars // n)
    if blocks * n == bars:
        xb = x.reshape(blocks, n, m)
    else:
        xb = np.zeros((blocks * n, m))
        xb[:bars] = x  # the padding below only reaches windows past the last row
        xb = xb.reshape(blocks, n, m)
    pre = _empty(xb.shape)
    suf = _empty(xb.shape)
    pre[:, 0] = xb[:, 0]
    suf[:, n - 1] = xb[:, n - 1]
    for i in range(1, n):
        np.add(pre[:, i - 1], xb[:, i], out=pre[:, i])
        np.add(suf[:, n - i], xb[:, n - 1 - i], out=suf[:, n - 1 - i])
    # The window ending at row i of a block: the previous block's suffix from i + 1 plus
    # this block's prefix to i (written over the prefix; the block's last row is whole).
    np.add(suf[:-1, 1:], pre[1:, :n - 1], out=pre[1:, :n - 1])
    pre[0, :n - 1] = np.nan
    return pre.reshape(blocks * n, m)[:bars]


def _rolling_stds(specs: list[tuple[np.ndarray, int, int]]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``_rolling_std`` for several (x, n, ddof): inputs with the same window side by side
    as one array, so the sums, the flatness check and the square root are one pass each
    (per column the arithmetic is unchanged)."""
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(specs)
    by_n: dict[int, list[int]] = {}
    for i, (_, n, _) in enumerate(specs):
        by_n.setdefault(n, []).append(i)
    for n, idx in by_n.items():
        m = specs[idx[0]][0].shape[1]
        xs = np.concatenate([specs[i][0] for i in idx], axis=1, out=_empty(
            (len(specs[idx[0]][0]), m * len(idx))))
        mean, std = _rolling_std(xs, n, np.repeat([n - specs[i][2] for i in idx], m))
        for j, i in enumerate(idx):
            out[i] = mean[:, j * m:(j + 1) * m], std[:, j * m:(j + 1) * m]
    return out


def _rolling_std(x: np.ndarray, n: int, dof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over the last n rows from the window's sums (sum of squares less n
    mean^2, as TA-Lib's BBANDS computes it), 0 where rounding makes it negative; ``dof``
    per column is n - ddof.

    That formula loses digits where the std is tiny next to the mean (about 1e-5 of it and
    below: a nearly flat market), so those windows, rare elsewhere, are recomputed two-pass
    from their values; and a window whose values are all equal has std exactly 0, as the
    definition says (0 vs 1e-16 decides whether a z-score exists)."""
    s1 = _window_sum(x, n)
    var = _window_sum(np.multiply(x, x, out=_empty(x.shape)), n)
    mean = np.divide(s1, n, out=_empty(s1.shape))
    s1 *= mean  # n mean^2
    var -= s1
    var *= 1.0 / dof
    np.maximum(var, 0.0, out=var)  # keeps NaN (warm-up)
    s1 *= 1e-10 / n
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(var <= s1)
    np.sqrt(var, out=var)
    if rows.size:
        window = x[rows[:, None] - np.arange(n), cols[:, None]]
        dev = window - window.mean(axis=1)[:, None]
        exact = np.sqrt((dev * dev).sum(axis=1) / dof[cols])
        exact[(window == window[:, :1]).all(axis=1)] = 0.0
        var[rows, cols] = exact
    return mean, var


def compute_features(candles: pl.DataFrame,
                     config: FeaturesConfig | Config | None = None) -> pl.DataFrame:
    """Add the feature columns (see ``feature_columns``) to a canonical candle frame.

    Warm-up bars are null. Values match TA-Lib (EMA, RSI, ATR, ADX, PLUS_DI, MINUS_DI,
    BBANDS) on every bar where TA-Lib gives one. ``bb_width`` is (upper - lower) / middle of
    BBANDS(period, k, k, SMA); ``vol`` is the sample standard deviation of log returns;
    ``volume_z`` is (volume - mean) / sample std of volume over its window.
    ``config`` is the ``features`` section or the whole ``Config`` (its ``features`` is used).
    """
    fc = _features_section(config)
    candles, runs = _symbol_runs(_candles_in(candles, "compute_features"), "compute_features")
    if not candles.height:
        return candles.with_columns(pl.lit(None, dtype=pl.Float64).alias(c)
                                    for c in feature_columns(fc))
    names = feature_columns(fc)
    out, _ = _columns(candles, runs, fc, names)
    return _with_nulls(candles, out, names)


def _with_nulls(candles: pl.DataFrame, columns: dict[str, np.ndarray], names: list[str]
                ) -> pl.DataFrame:
    """``candles`` with ``columns`` added (arrays, NaN for null) as float columns with nulls.

    ``nan_to_null`` as each series is built, and ``hstack``: no query at all (at 10 x 1,000
    rows, a query per column cost a fifth of the features' time; one ``fill_nan`` query
    over all of them 280 us where this takes 70). And memory: each array is let go as soon
    as its column exists, so the peak holds the output columns and one more, never twice
    them (a single query over all the columns would hold the NaN and the null versions of
    every column at once: 880 MB more at 10,000 x 1,000)."""
    series = [pl.Series(n, columns.pop(n), nan_to_null=True) for n in names]
    # hstack refuses a name the frame has, which with_columns replaces in place (features
    # computed twice over)
    fresh = not any(n in candles.schema for n in names)
    return candles.hstack(series) if fresh else candles.with_columns(series)


def compute_features_split(candles: pl.DataFrame, config: FeaturesConfig | Config | None,
                           full: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``compute_features`` for a caller that needs the whole history of a few columns
    only: (the candles with the ``full`` feature columns, each symbol's last row with every
    feature column). The same values as ``compute_features``; at 2,000 symbols the feature
    columns nobody reads in full are 110 MB not held."""
    fc = _features_section(config)
    names = feature_columns(fc)
    if isinstance(full, str) or not isinstance(full, (list, tuple)):
        raise UsageError("compute_features_split: full must be a list of feature column "
                         f"names, not {type(full).__name__}", key="full")
    for k, name in enumerate(full):
        if name not in names or name in full[:k]:
            why = "named twice" if name in names else "not a feature column"
            raise UsageError(f"compute_features_split: {str(name)[:40]!r} in full is {why} "
                             f"(the columns: {', '.join(names)})", key="full")
    full = list(full)
    candles, runs = _symbol_runs(_candles_in(candles, "compute_features_split"),
                                 "compute_features_split")
    if not candles.height:
        whole = compute_features(candles, fc)
        return whole.select(*dict.fromkeys([*candles.columns, *full])), whole
    out, last = _columns(candles, runs, fc, full)
    whole = _with_nulls(candles, out, full)
    tail = _with_nulls(candles.gather(np.cumsum(runs) - 1), last, list(last))
    return whole, tail


def _features_section(config: object) -> FeaturesConfig:
    """The features settings from what a caller naturally passes: the section, the whole
    Config (the first thing one tries), or None for the defaults."""
    return section(config, FeaturesConfig, "features", "compute_features")


def _candles_in(candles: object, fn: str) -> pl.DataFrame:
    """A candle frame as the features read it: a polars frame with the canonical columns."""
    df: pl.DataFrame = frame(candles, CANDLE_COLUMNS, fn, numeric=CANDLE_COLUMNS[2:])
    t = df.schema["open_time"]
    if not (t.is_temporal() or t.is_integer()):
        raise UsageError(f"{fn}: column 'open_time' holds {t}, not times", key="open_time")
    if t == pl.UInt64 and bool((df.get_column("open_time") >= 2**63).any()):
        raise UsageError(f"{fn}: column 'open_time' holds times past 64-bit integers",
                         key="open_time")
    s = df.schema["symbol"]
    if not (s == pl.String or isinstance(s, (pl.Categorical, pl.Enum))):
        raise UsageError(f"{fn}: column 'symbol' holds {s}, not names", key="symbol")
    for col in ("symbol", "open_time"):
        # a null symbol's rows were never put in time order, a null time was a candle
        nulls = df.get_column(col).null_count()
        if nulls:
            row = int(df.get_column(col).is_null().arg_true()[0]) + 1
            raise UsageError(f"{fn}: row {row} has no {col}", key=col, row=row)
    return df


def _symbol_runs(candles: pl.DataFrame, fn: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The frame with each symbol's rows in one run and in time order, and the runs'
    lengths (``_by_symbol`` then ``_in_time_order``). A frame that already is so, as
    loaded candles are, is checked by comparing neighbours natively and in numpy, no query
    (at 10 symbols the two functions' queries cost a fifth of the features); any other
    goes through them."""
    t = candles.get_column("open_time").to_physical()  # no nulls: ``_candles_in``
    if candles.height < 2 or not t.dtype.is_integer():
        return _in_time_order(*_by_symbol(candles), fn)
    same, starts, firsts = symbol_runs(candles.get_column("symbol"))
    times = t.to_numpy()
    if len(set(firsts)) != len(starts) or (times[1:] <= times[:-1])[same].any():
        return _in_time_order(*_by_symbol(candles), fn)  # reorders, or says which row
    return candles, np.diff(np.append(starts, candles.height)).astype(np.int64)


def symbol_runs(sym: pl.Series) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(whether each row after the first has the row before's symbol, where each run of
    one symbol starts, each run's symbol) of a non-empty symbol column without nulls.
    Neighbours are compared natively: no query, no string hashing per row; the runs'
    names are read one by one when few (a gather costs 40 us even for ten)."""
    same = (sym.head(-1) == sym.tail(-1)).to_numpy()
    starts = np.concatenate(([0], np.flatnonzero(~same) + 1))
    names = [sym[int(i)] for i in starts] if starts.size <= 64 else \
        sym.gather(starts).to_list()
    return same, starts, names


def _in_time_order(candles: pl.DataFrame, runs: np.ndarray, fn: str
                   ) -> tuple[pl.DataFrame, np.ndarray]:
    """The frame (one run per symbol) with each symbol's rows in time order, as interleaved
    symbols are put (a shuffled symbol gave indicators over its rows' order, in silence);
    a time repeated within a symbol is refused: which row is the candle?"""
    if candles.height < 2:
        return candles, runs
    same = pl.col("symbol") == pl.col("symbol").shift()
    # the times as 64-bit integers before the difference: an Int8 column's wrapped
    # (100 - -100 = -56), which sorted ascending times again and again
    t = pl.col("open_time").to_physical().cast(pl.Int64)
    step = candles.select(pl.when(same).then(t.diff())).to_series()
    if (step < 0).any():
        # each symbol's run kept where it is (``runs`` still holds), its rows sorted, by a
        # column whose name is none of the caller's (a "_run" of theirs was dropped)
        tmp = "_run"
        while tmp in candles.schema:
            tmp += "_"
        run = pl.Series(tmp, np.repeat(np.arange(len(runs)), runs))
        candles = candles.with_columns(run).sort(tmp, "open_time", maintain_order=True) \
            .drop(tmp)
        return _in_time_order(candles, runs, fn)
    repeated = step == 0
    if repeated.any():
        row = int(repeated.arg_true()[0])
        sym = str(candles["symbol"][row])
        ends = np.cumsum(runs)
        k = row - int((ends - runs)[np.searchsorted(ends, row, side="right")]) + 1
        raise UsageError(f"{fn}: {sym}'s candle {k} opens at the same time as the one before "
                         "it", symbol=sym, row=k)
    return candles, runs


def _by_symbol(candles: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """The frame with each symbol's rows in one run, and the runs' lengths."""
    if not candles.height:
        return candles, np.zeros(0, dtype=np.int64)
    # One run-length pass: each symbol is in one run exactly when the runs' symbols are
    # distinct, which is checked on the runs (a few hundred), not the rows.
    rle = candles["symbol"].rle()
    if rle.struct.field("value").n_unique() != len(rle):
        candles = candles.sort("symbol", "open_time", maintain_order=True)
        rle = candles["symbol"].rle()
    return candles, rle.struct.field("len").to_numpy().astype(np.int64)


def _columns(candles: pl.DataFrame, runs: np.ndarray, fc: FeaturesConfig, full: list[str],
             resume: np.ndarray | None = None, capture: np.ndarray | None = None,
             work: int | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({name: the column for every row} for ``full``, {name: each symbol's last value}
    for every feature column). ``resume`` / ``capture``: see ``_indicators`` (per symbol,
    columns in the symbols' order); the captured values are ``last["_carry"]``. ``work``:
    the rows of the whole job this call is part of (``kernel_for``), else this call's."""
    fc = _features_section(fc)  # a Config built in code was never checked (cached: cheap)
    _check_layout(candles.height, runs, resume, capture)
    # Views of the frame's own buffers where it can (validated candles have no nulls):
    # only the (bars x symbols) chunks below are copies.
    inputs = [np.asarray(candles.get_column(k).to_numpy(), dtype=np.float64)
              for k in ("high", "low", "close", "volume")]
    out = {name: _empty(candles.height) for name in full}
    last = {name: np.empty(len(runs)) for name in feature_columns(fc)}
    if capture is not None:
        last["_carry"] = np.empty((len(SMOOTHERS), len(runs)))
    # Symbols in chunks: memory stays bounded (a few dozen arrays of chunk x bars) whatever
    # the universe, and a symbol's arithmetic does not depend on its chunk.
    ends = np.cumsum(runs)
    kernel = kernel_for(candles.height if work is None else work)
    # The answer must not depend on the caller's np.seterr: overflow, a zero price or a
    # window of one are inf or NaN (then null) on both paths, never an exception on one
    # and a value on the other, and never a warning on stderr.
    with np.errstate(all="ignore"):
        _fill(candles, runs, fc, inputs, out, last, ends, kernel, resume, capture)
    return out, last


def _fill(candles: pl.DataFrame, runs: np.ndarray, fc: FeaturesConfig,
          inputs: list[np.ndarray], out: dict[str, np.ndarray], last: dict[str, np.ndarray],
          ends: np.ndarray, kernel: ModuleType | None, resume: np.ndarray | None,
          capture: np.ndarray | None) -> None:
    """``_columns``' loop over chunks of symbols, filling ``out`` and ``last``."""
    for lo_sym in range(0, len(runs), _CHUNK):
        part = runs[lo_sym:lo_sym + _CHUNK]
        a, b = int(ends[lo_sym] - runs[lo_sym]), int(ends[lo_sym + len(part) - 1])
        sl = slice(lo_sym, lo_sym + len(part))
        chunk_resume = None if resume is None else resume[:, sl]
        chunk_capture = None if capture is None else capture[sl]
        if kernel is not None:
            h, lo, c, v = (x[a:b] for x in inputs)
            cols = _indicators_compiled(kernel, h, lo, c, v, part, fc, chunk_resume,
                                        chunk_capture)
            rows_last = np.cumsum(part) - 1
            for name, x in cols.items():
                if name in out:
                    out[name][a:b] = x
                if name != "_carry":
                    last[name][sl] = x[rows_last]
        else:
            lay = _Layout(part)
            h, lo, c, v = (lay.wide(x[a:b]) for x in inputs)
            cols = _indicators(h, lo, c, v, fc, chunk_resume, chunk_capture)
            for name, x in cols.items():
                if name in out:
                    lay.put_long(x, out[name][a:b])
                if name != "_carry":
                    last[name][sl] = x[part - 1, np.arange(len(part))]
        if capture is not None:
            last["_carry"][:, sl] = cols.pop("_carry")
        del cols


def _check_layout(height: int, runs: np.ndarray, resume: np.ndarray | None,
                  capture: np.ndarray | None) -> None:
    """The runs cover the frame and the carried rows are inside them: the compiled path
    reads and writes without bounds checks, so a caller's mistake must stop here."""
    n = len(runs)
    if int(np.sum(runs)) != height or (n and int(np.min(runs)) < 1):
        raise ValueError(f"features: symbol runs of {int(np.sum(runs))} rows for a frame of "
                         f"{height}")
    if resume is not None and np.shape(resume) != (len(SMOOTHERS), n):
        raise ValueError(f"features: resume of shape {np.shape(resume)}, not "
                         f"{(len(SMOOTHERS), n)}")
    if capture is not None and (len(capture) != n or (n and (
            int(np.min(capture)) < 0 or bool((np.asarray(capture) >= runs).any())))):
        raise ValueError("features: a captured row outside its symbol's rows")


_PAGE = 1 << 21  # a huge page
_MIN_HUGE = _PAGE


def _empty(shape: int | tuple[int, ...]) -> np.ndarray:
    """``np.empty`` that fresh memory fills at a page fault per 2 MiB, not per 4 KiB.

    Filling fresh memory costs a fault per page, which in a VM can cost more than the
    arithmetic that fills it (measured: half of the features' time at 500 symbols). numpy
    asks the kernel for huge pages from 4 MiB up, but only whole aligned 2 MiB ranges get
    them: from 2 MiB up the array starts on a 2 MiB boundary of a slightly larger buffer
    (at most 2 MiB of address space more; the part before the start is never touched).
    Smaller arrays are plain ``np.empty``: a huge page would be mostly unused."""
    size = int(np.prod(shape))
    if 8 * size < _MIN_HUGE:
        return np.empty(shape)
    raw = np.empty((-(-8 * size // _PAGE) + 1) * _PAGE // 8)
    start = (-raw.ctypes.data % _PAGE) // 8
    return raw[start:start + size].reshape(shape)


# The recursions a symbol's features carry from one candle to the next, in ``_indicators``'
# order (docs/architecture.md, "Carried features").
SMOOTHERS = ("ema_fast", "ema_slow", "avg_gain", "avg_loss", "atr", "s_pdm", "s_mdm", "s_tr",
             "adx")


def _indicators(h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray,
                fc: FeaturesConfig, resume: np.ndarray | None = None,
                capture: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every feature column as (bars x symbols) arrays, NaN where null.

    ``resume`` (len(SMOOTHERS) x symbols): the rows are a slice of each series whose row 0
    is a row where the recursions are past their seeds, and these are their values there:
    each recursion starts from them instead of TA-Lib's seed (the step from row 0 on is the
    same two operations, so the values equal the whole series' bit for bit). ``capture``
    (a row per symbol): the recursions' values at that row are returned as ``"_carry"``."""
    n_rsi, n_atr, n_adx = fc.rsi_period, fc.atr_period, fc.adx_period
    # Changes from the previous row are slices, not shifted copies; row 0 has none.
    tr, up, down, d, log_ret = (np.empty_like(c) for _ in range(5))
    for x in (tr, up, down, d, log_ret):
        x[:1] = np.nan
    pc = c[:-1]
    # TA-Lib's true range, the largest of h - l, |h - pc| and |l - pc|, is
    # max(h, pc) - min(l, pc) with the same rounding (rounding is monotonic): 3 passes, not 7.
    np.maximum(h[1:], pc, out=tr[1:])
    np.subtract(tr[1:], np.minimum(lo[1:], pc, out=d[1:]), out=tr[1:])
    np.subtract(h[1:], h[:-1], out=up[1:])
    np.subtract(lo[:-1], lo[1:], out=down[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        # +DM is up where up > 0 and up > down, else 0: max(up, 0) where up > down.
        pdm = np.maximum(up, 0.0)
        pdm *= up > down
        mdm = np.maximum(down, 0.0)
        mdm *= down > up
        pdm[0] = mdm[0] = np.nan
        np.subtract(c[1:], pc, out=d[1:])
        gain = np.maximum(d, 0.0)
        loss = np.negative(d, out=d)
        np.maximum(loss, 0.0, out=loss)
        np.divide(c[1:], pc, out=log_ret[1:])
        np.log(log_ret, out=log_ret)
    parts = [
        (c, fc.ema_fast - 1, _mean_seed, fc.ema_fast, 2.0 / (fc.ema_fast + 1)),
        (c, fc.ema_slow - 1, _mean_seed, fc.ema_slow, 2.0 / (fc.ema_slow + 1)),
        # Wilder means: the first n values start at row 1 (row 0 has no change).
        (gain, n_rsi, _mean_seed, n_rsi, 1.0 / n_rsi),
        (loss, n_rsi, _mean_seed, n_rsi, 1.0 / n_rsi),
        (tr, n_atr, _mean_seed, n_atr, 1.0 / n_atr),
        # TA-Lib's DI keeps Wilder *sums*; divided by n it is the same recursion.
        (pdm, n_adx, _wilder_sum_seed, n_adx, 1.0 / n_adx),
        (mdm, n_adx, _wilder_sum_seed, n_adx, 1.0 / n_adx),
        (tr, n_adx, _wilder_sum_seed, n_adx, 1.0 / n_adx),
    ]
    ema_f, ema_s, avg_gain, avg_loss, atr, s_pdm, s_mdm, s_tr = _smooth([
        (x, first, seed(x, first, n), k) if resume is None else (x, 0, resume[j], k)
        for j, (x, first, seed, n, k) in enumerate(parts)])
    del gain, loss, pdm, mdm, tr, up, down, parts
    pdi, mdi = _ratio(s_pdm, s_tr), _ratio(s_mdm, s_tr)
    dx = np.subtract(pdi, mdi)
    np.abs(dx, out=dx)
    _ratio(dx, pdi + mdi, out=dx)
    # ADX: the mean of the first n DX values (rows n..2n-1), then Wilder.
    (adx,) = _smooth([(dx, 2 * n_adx - 1, _mean_seed(dx, 2 * n_adx - 1, n_adx), 1.0 / n_adx)
                      if resume is None else (dx, 0, resume[8], 1.0 / n_adx)])
    carry = None
    if capture is not None:
        at = (capture, np.arange(len(capture)))
        carry = np.stack([x[at] for x in (ema_f, ema_s, avg_gain, avg_loss, atr, s_pdm,
                                          s_mdm, s_tr, adx)])
    (bb_mean, bb_std), (vz_mean, vz_std), (_, vol) = _rolling_stds([
        (c, fc.bb_period, 0), (v, fc.volume_z_period, 1), (log_ret, fc.vol_period, 1)])
    bb_width = np.multiply(bb_std, 2 * fc.bb_std)
    bb_width /= bb_mean
    volume_z = np.subtract(v, vz_mean)
    _ratio(volume_z, vz_std, scale=1.0, out=volume_z)
    names = feature_columns(fc)
    values = [ema_f, ema_s, _ratio(avg_gain, avg_gain + avg_loss), atr, adx, pdi, mdi,
              bb_width, vol, volume_z, log_ret]
    out = dict(zip(names, values, strict=True))
    if carry is not None:
        out["_carry"] = carry
    return out


def _indicators_compiled(kernel: ModuleType, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                         v: np.ndarray, runs: np.ndarray, fc: FeaturesConfig,
                         resume: np.ndarray | None, capture: np.ndarray | None
                         ) -> dict[str, np.ndarray]:
    """``_indicators`` through the compiled kernel, on long columns (each symbol's rows in
    one run, ``runs`` long): the same columns, bit for bit, long instead of wide."""
    rows = len(c)
    starts = np.cumsum(runs) - runs
    log_ret = np.empty(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(c[1:], c[:-1], out=log_ret[1:])
        log_ret[starts] = np.nan  # a symbol's first row has no change
        np.log(log_ret, out=log_ret)
    k = kernel
    out = np.empty((k.ROWS, rows))
    flat = np.empty(rows, dtype=np.uint8)
    n_sym = len(runs)
    carry = np.empty((len(SMOOTHERS), n_sym if capture is not None else 0))
    periods = np.array([fc.ema_fast, fc.ema_slow, fc.rsi_period, fc.atr_period,
                        fc.adx_period, fc.bb_period, fc.volume_z_period, fc.vol_period],
                       dtype=np.int64)
    k.indicators(h, lo, c, v, log_ret, runs.astype(np.int64), periods,
                 np.zeros((0, len(SMOOTHERS))) if resume is None
                 else np.ascontiguousarray(resume.T, dtype=np.float64),
                 np.zeros(0, dtype=np.int64) if capture is None
                 else np.asarray(capture, dtype=np.int64), out, flat, carry)
    # Windows within rounding of flat: two-pass from their values, as ``_rolling_std``.
    for bit, x, n, ddof, row in ((k.FLAT_BB, c, fc.bb_period, 0, k.BB_STD),
                                 (k.FLAT_VZ, v, fc.volume_z_period, 1, k.VZ_STD),
                                 (k.FLAT_VOL, log_ret, fc.vol_period, 1, k.VOL)):
        (at,) = np.nonzero(flat & bit)
        if at.size:
            window = x[at[:, None] - np.arange(n)]
            dev = window - window.mean(axis=1)[:, None]
            exact = np.sqrt((dev * dev).sum(axis=1) / (n - ddof))
            exact[(window == window[:, :1]).all(axis=1)] = 0.0
            out[row, at] = exact
    bb_width = np.multiply(out[k.BB_STD], 2 * fc.bb_std)
    bb_width /= out[k.BB_MEAN]
    volume_z = np.subtract(v, out[k.VZ_MEAN])
    _ratio(volume_z, out[k.VZ_STD], scale=1.0, out=volume_z)
    values = [out[k.EMA_F], out[k.EMA_S], out[k.RSI], out[k.ATR], out[k.ADX], out[k.PDI],
              out[k.MDI], bb_width, out[k.VOL], volume_z, log_ret]
    cols = dict(zip(feature_columns(fc), values, strict=True))
    if capture is not None:
        cols["_carry"] = carry
    return cols


def features_keys(config: FeaturesConfig, fingerprints: Mapping[str, str]) -> dict[str, str]:
    """The features cache key per symbol: its candles (``candle_fingerprints``), the
    feature settings and the code that computes them (``stage_tag``)."""
    prefix = digest("features", stage_tag("features"), settings_json(config))
    # the fingerprint's leading candle minute leads the key too (``time_ordered``)
    return {s: fp[:8] + digest(prefix, fp) for s, fp in fingerprints.items()}
