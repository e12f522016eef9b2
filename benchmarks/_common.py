"""Shared pieces for the benchmarks: timing, synthetic candles, result rows."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any


@dataclass
class Row:
    """One line of the performance table: what was done before and after, side by side."""

    group: str
    case: str
    before: str
    after: str
    before_value: float
    after_value: float
    # "speedup" (before/after time), "reduction" (fewer operations) or "ratio" (after as a
    # multiple of before, e.g. a run against the floor that any tool must pay)
    kind: str
    claim: str | None = None
    identical: bool | None = None
    max_diff: float | None = None
    note: str = ""

    @property
    def result(self) -> str:
        if self.kind == "speedup":
            ratio = self.before_value / self.after_value if self.after_value else float("inf")
            return f"{ratio:,.1f}x faster" if ratio >= 1 else f"{1 / ratio:,.2f}x slower"
        if self.before_value == 0:
            return "n/a"
        if self.kind == "ratio":
            return f"{self.after_value / self.before_value:,.2f}x"
        return f"{(1 - self.after_value / self.before_value):.0%} fewer"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result}


def best_time(fn: Callable[[], Any], repeat: int = 3, min_time: float = 0.05) -> float:
    """Best-of-``repeat`` seconds per call (each sample loops until ``min_time``)."""
    best = float("inf")
    for _ in range(repeat):
        n = 0
        start = time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


@contextmanager
def features_kernel(mode: str) -> Iterator[None]:
    """``BOTOPT_KERNEL`` set to ``mode`` (numpy, numba, auto) inside the block, as it was
    after: one process measures or compares both feature paths."""
    from ..core.signals._features import KERNEL_ENV

    before = os.environ.get(KERNEL_ENV)
    os.environ[KERNEL_ENV] = mode
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KERNEL_ENV, None)
        else:
            os.environ[KERNEL_ENV] = before


def synthetic_candles(n_symbols: int, n_bars: int, seed: int = 1,
                      start: datetime | None = None) -> Any:
    """Seeded random-walk candles (prices from 2e-5 to 6e4), canonical botopt frame, the
    first opening at ``start`` (default 2026-01-01 UTC)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    t0 = int((start or datetime(2026, 1, 1, tzinfo=timezone.utc)).timestamp() * 1000)
    times = t0 + 300_000 * np.arange(n_bars, dtype=np.int64)
    levels = 10.0 ** rng.uniform(-4.7, 4.8, n_symbols)
    vols = rng.uniform(0.001, 0.01, n_symbols)
    rets = rng.standard_normal((n_symbols, n_bars)) * vols[:, None]
    close = levels[:, None] * np.exp(np.cumsum(rets, axis=1))
    open_ = np.concatenate([levels[:, None], close[:, :-1]], axis=1)
    spread = np.abs(rng.standard_normal((n_symbols, n_bars))) * vols[:, None]
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = rng.lognormal(5, 1, (n_symbols, n_bars))
    return pl.DataFrame({
        "symbol": np.repeat([f"S{i:04d}" for i in range(n_symbols)], n_bars),
        "open_time": np.tile(times, n_symbols),
        "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(),
        "close": close.ravel(), "volume": volume.ravel(),
    }).with_columns(pl.from_epoch("open_time", time_unit="ms").dt.cast_time_unit("ms")
                    .dt.replace_time_zone("UTC"))


def main(run: Callable[[bool], list[Row]], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args()
    rows = run(args.quick)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    width = max(len(r.case) for r in rows)
    for r in rows:
        ident = "" if r.identical is None else f"  identical={r.identical}" + (
            f" (max diff {r.max_diff:.1e})" if r.max_diff is not None else "")
        print(f"{r.group:<14} {r.case:<{width}}  {r.before:>22}  {r.after:>22}  "
              f"{r.result:>14}{'  claim ' + r.claim if r.claim else ''}{ident}")
