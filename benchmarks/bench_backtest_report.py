"""The whole ``botopt backtest`` command (replay, evaluation, model walk-forward) as a user
runs it: a second run of the same period against the first, both whole processes on the real
pairs of ``../shared/data``. The replay's own rows are in bench_backtest; this one shows what
the evaluation and the walk-forward add on top of a cached replay.

    python -m botopt.benchmarks.bench_backtest_report [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._common import Row, main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles" / "5m"


def _backtest(src: Path, cache: Path, syms: list[str], since: datetime,
              until: datetime) -> tuple[float, dict]:
    args = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(cache), "--quiet",
            "backtest", "--data-dir", str(src), "--symbols", ",".join(syms), "--since",
            since.isoformat(), "--until", until.isoformat(), "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, check=True).stdout
    return time.perf_counter() - t0, json.loads(out)


def run(quick: bool = False, data_dir: Path | None = None) -> list[Row]:
    src = data_dir or SHARED
    if not src.is_dir():
        return []
    syms = sorted(p.name.split("-")[0] for p in src.glob("*-5m.feather"))
    end = datetime(2018, 1, 30, 4, 55, tzinfo=timezone.utc)
    since = end - timedelta(days=2 if quick else 19)
    with tempfile.TemporaryDirectory() as tmp:
        first, a = _backtest(src, Path(tmp) / "c", syms, since, end)
        again, b = _backtest(src, Path(tmp) / "c", syms, since, end)
    days = (end - since) / timedelta(days=1)
    span = f"{days:.0f} day" + ("" if round(days) == 1 else "s")
    return [Row("backtest", f"`botopt backtest` {span} x {len(syms)} real pairs "
                "(replay, evaluation, walk-forward): second run vs the first",
                f"first {first:.2f} s", f"second {again:.2f} s", first, again, "ratio",
                claim="goal <= 0.2x", identical=a == b,
                note=f"whole processes; {a['overall']['candidates']:,} candidates, "
                     f"{a['overall']['signals']:,} signals")]


if __name__ == "__main__":
    main(run, __doc__ or "")
