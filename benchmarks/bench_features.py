"""Features: botopt's batch vs a per-symbol TA-Lib loop vs a per-symbol loop of botopt.

Same candles for every side; wall time, best of N; the TA-Lib rows alternate the two sides.
Each TA-Lib row is measured for the numpy path and, when numba (the ``fast`` extra) is
installed, for the compiled one, already loaded (what a process pays after its first large
call); a last row is what loading it costs a fresh process.

    python -m botopt.benchmarks.bench_features [--quick]
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ._common import Row, best_time, features_kernel, main, synthetic_candles


def _load_cost(runs: int) -> Row:
    """A fresh process that imports the features, with and without loading the compiled
    ones: what the first large call pays once (numba's import and its cached code)."""
    code = ("import time; t = time.perf_counter(); "
            "from botopt.core.signals import _features as F; {load}"
            "print(time.perf_counter() - t)")

    def run(load: str) -> float:
        out = subprocess.run([sys.executable, "-c", code.format(load=load)],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip())
    run("F._load_kernel(); ")  # compiles on a machine that never has
    bare = min(run("") for _ in range(runs))
    loaded = min(run("F._load_kernel(); ") for _ in range(runs))
    return Row("features", "loading the compiled features in a fresh process",
               f"import {bare * 1e3:.0f} ms", f"+ load {loaded * 1e3:.0f} ms", bare, loaded,
               "ratio", note=f"paid once per process, {(loaded - bare) * 1e3:.0f} ms: why "
               "a job below 5 million candles stays on numpy unless BOTOPT_KERNEL=numba")


def _talib_loop(arrays: list[tuple[Any, Any, Any]]) -> list[Any]:
    import talib

    out = []
    for h, lo, c in arrays:
        out.append((talib.EMA(c, 12), talib.EMA(c, 26), talib.RSI(c, 14),
                    talib.ATR(h, lo, c, 14), talib.ADX(h, lo, c, 14),
                    talib.PLUS_DI(h, lo, c, 14), talib.MINUS_DI(h, lo, c, 14),
                    talib.BBANDS(c, 20, 2, 2, 0)))
    return out


def run(quick: bool = False) -> list[Row]:
    import numpy as np
    import polars as pl

    from ..core.signals._features import compute_features

    try:
        import talib  # noqa: F401
        have_talib = True
    except ImportError:
        have_talib = False
    have_numba = importlib.util.find_spec("numba") is not None
    rows = []
    for n in ([1, 10] if quick else [1, 10, 100, 500]):
        candles = synthetic_candles(n, 1000, seed=n)
        parts = candles.partition_by("symbol", maintain_order=True)
        repeat = 2 if quick else 3
        with features_kernel("numpy"):
            batch = compute_features(candles)
            loop = pl.concat([compute_features(p) for p in parts])
            t_batch = best_time(lambda c=candles: compute_features(c), repeat)
            t_loop = best_time(lambda ps=parts: [compute_features(p) for p in ps], repeat)
        num = [c for c in batch.columns if batch.schema[c] == pl.Float64]
        a, b = batch.select(num).to_numpy(), loop.select(num).to_numpy()
        same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        diff = float(np.nanmax(np.abs(a - b))) if same_nan else float("inf")
        size = f"{n} symbol{'s' * (n > 1)} x 1000 bars"
        rows.append(Row("features", f"{size}: batch vs per-symbol loop (numpy)",
                        f"loop {t_loop * 1e3:.1f} ms", f"batch {t_batch * 1e3:.1f} ms",
                        t_loop, t_batch, "speedup", identical=same_nan and diff == 0.0,
                        max_diff=diff))
        if have_talib:
            arrays = [(p["high"].to_numpy(), p["low"].to_numpy(), p["close"].to_numpy())
                      for p in parts]
            paths = ["numpy", "numba"] if have_numba else ["numpy"]
            for path in paths:
                with features_kernel(path):
                    compiled = compute_features(candles)
                    rows.append(_against_talib(size, path, arrays, candles, compiled, batch,
                                               repeat, lambda c=candles: compute_features(c)))
    if have_numba:
        rows.append(_load_cost(2 if quick else 3))
    return rows


def _against_talib(size: str, path: str, arrays: list[tuple[Any, Any, Any]], candles: Any,
                   mine_all: Any, numpy_batch: Any, repeat: int, fn: Callable[[], Any]) -> Row:
    import numpy as np
    import polars as pl

    # Alternating samples, so load from other work on a shared machine falls on both sides
    # alike; the row's ratio is best against best, the note gives the per-round range.
    talib_s, batch_s = [], []
    for _ in range(repeat + 2):
        talib_s.append(best_time(lambda ar=arrays: _talib_loop(ar), 1))
        batch_s.append(best_time(fn, 1))
    t_talib, t_batch = min(talib_s), min(batch_s)
    ratios = sorted(b / t for t, b in zip(talib_s, batch_s, strict=True))
    ref = _talib_loop(arrays[:1])[0]
    mine = mine_all.filter(pl.col("symbol") == candles["symbol"][0])
    rel = 0.0
    for col, r in zip(["ema_12", "ema_26", "rsi_14", "atr_14", "adx_14", "plus_di_14",
                       "minus_di_14"], ref[:7], strict=True):
        m = mine[col].to_numpy().astype(float)
        ok = ~np.isnan(r)
        rel = max(rel, float(np.max(np.abs(m[ok] - r[ok]) / np.abs(r[ok]))))
    same = mine_all.equals(numpy_batch)
    what = "compiled (numba, loaded)" if path == "numba" else "numpy"
    return Row("features", f"{size}: batch, {what}, vs TA-Lib loop",
               f"TA-Lib {t_talib * 1e3:.1f} ms", f"batch {t_batch * 1e3:.1f} ms",
               t_talib, t_batch, "speedup",
               claim="target: within 3x at 10 symbols, 2x at 500",
               identical=rel <= 1e-9 and same, max_diff=rel,
               note=("TA-Lib: 8 of the 11 columns (EMA x2, RSI, ATR, ADX, +DI, -DI, "
                     "BBANDS) per symbol on ready numpy arrays; botopt: the candle frame "
                     "in, a frame with all 11 columns (nulls for warm-up) out; per-round "
                     f"ratios {ratios[0]:.2f}-{ratios[-1]:.2f}x; max_diff is relative to "
                     "TA-Lib; identical also means the same bits as the numpy path"))


if __name__ == "__main__":
    main(run, __doc__ or "")
