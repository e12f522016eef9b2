"""The cost freqtrade_signals adds to a freqtrade backtest, per pair-candle, next to what
freqtrade's own sample strategy spends on its TA-Lib indicators, on the real pairs.

freqtrade is not a botopt dependency, so this runs in freqtrade's environment (with botopt
installed there), not in ``botopt bench``:

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datadir", type=Path)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from ..core.backtest import _freqtrade

    frames = _frames(args.datadir, args.days)
    n = sum(len(df) for df in frames.values())
    config = {"datadir": str(args.datadir), "timeframe": "5m",
              "exchange": {"pair_whitelist": PAIRS}}
    sample, first, cached = [], [], []
    for _ in range(args.runs):
        os.environ["BOTOPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="botopt-bench-ft-")
        _freqtrade._memo.clear()
        sample.append(_sample(frames))
        first.append(_botopt(frames, config))
        _freqtrade._memo.clear()
        cached.append(_botopt(frames, config))

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
