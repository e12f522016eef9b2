"""The cost freqtrade_signals adds to a freqtrade backtest, per pair-candle, next to what
freqtrade's own sample strategy spends on its TA-Lib indicators, on the real pairs.

freqtrade is not a botopt dependency, so this measures in freqtrade's environment (with
botopt installed there): ``botopt bench`` run there gives its ``freqtrade`` rows, run
anywhere else one row saying they were skipped. By hand:

    python -m botopt.benchmarks.bench_freqtrade DATADIR [--days 2] [--runs 3]

Each run is a fresh process state for botopt (a new cache directory, the in-memory memo
cleared): "first" replays botopt's step over the period, "cached" is the same backtest run
again (the workspace's replay cache, as a second `freqtrade backtesting` would find it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from ._common import Row

PAIRS = ["ADA/BTC", "DASH/BTC", "ETC/BTC", "ETH/BTC", "LTC/BTC", "NXT/BTC", "TRX/BTC",
         "XLM/BTC", "XMR/BTC", "ZEC/BTC"]


def _frames(datadir: Path, days: int) -> dict:
    from freqtrade.configuration import TimeRange
    from freqtrade.data.history import load_pair_history

    start = 20180120
    tr = TimeRange.parse_timerange(f"{start}-{start + days}")
    return {p: load_pair_history(pair=p, timeframe="5m", datadir=datadir, timerange=tr,
                                 data_format="feather") for p in PAIRS}


def _sample(frames: dict) -> float:
    from freqtrade.templates.sample_strategy import SampleStrategy

    strategy = SampleStrategy({"timeframe": "5m", "stake_currency": "BTC"})
    t = time.perf_counter()
    for pair, df in frames.items():
        strategy.populate_indicators(df.copy(), {"pair": pair})
    return time.perf_counter() - t


def _botopt(frames: dict, config: dict) -> float:
    from ..core import freqtrade_signals

    t = time.perf_counter()
    for pair, df in frames.items():
        freqtrade_signals(df.copy(), {"pair": pair}, config)
    return time.perf_counter() - t


def measure(datadir: Path, days: int, runs: int) -> tuple[int, list[float], list[float],
                                                         list[float]]:
    """(pair-candles, seconds of the sample strategy's indicators, of freqtrade_signals'
    first run, of its cached run), one of each per run, side by side."""
    from ..core.backtest import _freqtrade

    frames = _frames(datadir, days)
    n = sum(len(df) for df in frames.values())
    config = {"datadir": str(datadir), "timeframe": "5m",
              "exchange": {"pair_whitelist": PAIRS}}
    sample, first, cached = [], [], []
    before = os.environ.get("BOTOPT_CACHE_DIR")
    try:
        for _ in range(runs):
            os.environ["BOTOPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="botopt-bench-ft-")
            _freqtrade._memo.clear()
            sample.append(_sample(frames))
            first.append(_botopt(frames, config))
            _freqtrade._memo.clear()
            cached.append(_botopt(frames, config))
    finally:
        if before is None:
            os.environ.pop("BOTOPT_CACHE_DIR", None)
        else:
            os.environ["BOTOPT_CACHE_DIR"] = before
    return n, sample, first, cached


def run(quick: bool = False, data_dir: Path | None = None) -> list[Row]:
    """The ``freqtrade`` rows of ``botopt bench``: measured when freqtrade (with TA-Lib) is
    importable here, else one row saying they were skipped."""
    import importlib.util

    from .bench_backtest import SHARED

    datadir = data_dir or SHARED
    if importlib.util.find_spec("freqtrade") is None or \
            importlib.util.find_spec("talib") is None:
        return [Row("freqtrade", "freqtrade_signals' cost rows skipped: freqtrade is not "
                    "installed here (run botopt bench in freqtrade's environment)", "-", "-",
                    0.0, 0.0, "ratio")]
    if not datadir.is_dir():
        return [Row("freqtrade", f"freqtrade_signals' cost rows skipped: no data at {datadir}",
                    "-", "-", 0.0, 0.0, "ratio")]
    n, sample, first, cached = measure(datadir, 2, 1 if quick else 3)

    def us(xs: list[float]) -> str:
        return f"{min(xs) / n * 1e6:.1f}-{max(xs) / n * 1e6:.1f} us"

    rows = []
    for name, xs in (("first run", first), ("cached replay", cached)):
        rows.append(Row(
            "freqtrade", f"freqtrade_signals ({name}) per pair-candle vs the sample "
            "strategy's TA-Lib indicators", f"sample {us(sample)}", f"botopt {us(xs)}",
            statistics.median(sample), statistics.median(xs), "ratio", claim="goal <= 2x",
            note=f"{len(PAIRS)} real pairs x 2 days ({n} pair-candles), {len(xs)} run(s), "
                 "medians"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datadir", type=Path)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n, sample, first, cached = measure(args.datadir, args.days, args.runs)

    def us(xs: list[float]) -> str:
        return f"{min(xs) / n * 1e6:.1f}-{max(xs) / n * 1e6:.1f} us"

    print(f"{n} pair-candles ({len(PAIRS)} pairs x {args.days} days), {args.runs} runs")
    print(f"sample strategy's TA-Lib indicators: {us(sample)} a pair-candle")
    print(f"freqtrade_signals, first run:        {us(first)} a pair-candle, "
          f"{min(first) / max(sample):.0f}-{max(first) / min(sample):.0f}x")
    print(f"freqtrade_signals, cached replay:    {us(cached)} a pair-candle, "
          f"{min(cached) / max(sample):.1f}-{max(cached) / min(sample):.1f}x "
          f"(median {statistics.median(cached) / statistics.median(sample):.1f}x)")


if __name__ == "__main__":
    main()
