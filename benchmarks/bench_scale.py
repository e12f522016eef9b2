"""Scale: whole ``botopt signals`` processes over a freqtrade-layout directory of N symbols x
1,200 5-minute candles, each against the floor: a plain polars process that reads every file
and stacks them (what any tool must do to look at the data at all).

Runs, each a fresh process: the first run (empty cache), the next candle's run (same cache,
5 minutes later), and a warm run (same time again: nothing new). Peak memory is the child's
own ``ru_maxrss`` (os.wait4), as a ratio to the floor's. ``identical``: the next-candle and
warm answers (``--json``) equal those of a bot that made the same two runs with
``--no-cache``.

    python -m botopt.benchmarks.bench_scale [--quick]      # --quick: 2, 50, 500 symbols
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._common import Row, main

BARS = 1200
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
# The floor: read every file and stack them, nothing else.
FLOOR = """
import sys
from pathlib import Path
import polars as pl
frames = [pl.read_ipc(p).with_columns(symbol=pl.lit(p.name.split("-")[0]))
          for p in sorted(Path(sys.argv[1]).glob("*-5m.feather"))]
print(pl.concat(frames).height)
"""
GOALS = {2000: {"first": 5.0, "next": 2.5, "warm": 0.5, "memory": 2.5}}


def write_dir(d: Path, n: int, bars: int = BARS + 1) -> list[str]:
    """n symbols of seeded random-walk candles in the freqtrade layout (feather)."""
    import numpy as np
    import polars as pl

    from ._common import synthetic_candles

    syms = [f"S{i:04d}USDT" for i in range(n)]
    chunk = 250  # bounded memory while writing 2,000 symbols
    for lo in range(0, n, chunk):
        k = min(chunk, n - lo)
        df = synthetic_candles(k, bars, seed=lo + 1)  # starts at START
        for j, part in enumerate(df.partition_by("symbol", maintain_order=True)):
            part.select(pl.col("open_time").alias("date"), "open", "high", "low", "close",
                        "volume").write_ipc(d / f"{syms[lo + j]}-5m.feather")
        del df
    assert np.all([(d / f"{s}-5m.feather").is_file() for s in syms])
    return syms


def run_process(args: list[str]) -> tuple[float, int, bytes]:
    """(wall seconds, peak RSS in bytes of this child alone, stdout)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"{args[:6]}... exited {p.returncode}")
        out.seek(0)
        return wall, usage.ru_maxrss * 1024, out.read()


def measure(n: int, repeat: int) -> dict[str, tuple[float, int]]:
    """Median wall time and peak memory of each run kind at n symbols."""
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in
                                                    ("floor", "first", "next", "warm")}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        syms = write_dir(data, n)
        t1 = START + timedelta(minutes=5 * BARS)  # BARS candles closed; one more later
        t2 = t1 + timedelta(minutes=5)
        floor = [sys.executable, "-c", FLOOR, str(data)]

        def signals(cache: Path, at: datetime, *extra: str) -> list[str]:
            return [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(cache),
                    "signals", "--data-dir", str(data), "--symbols", ",".join(syms),
                    "--as-of", at.isoformat(), "--json", *extra]

        for k in range(repeat):
            cache = Path(tmp) / f"cache{k}"
            results["floor"].append(run_process(floor)[:2])
            *first, _ = run_process(signals(cache, t1))
            results["first"].append((first[0], first[1]))
            *nxt, out_next = run_process(signals(cache, t2))
            results["next"].append((nxt[0], nxt[1]))
            *warm, out_warm = run_process(signals(cache, t2))
            results["warm"].append((warm[0], warm[1]))
            if k == 0:
                # The same two runs uncached, so cooldowns recorded at t1 are the same too.
                run_process(signals(Path(tmp) / "cold", t1, "--no-cache"))
                *_, out_cold = run_process(signals(Path(tmp) / "cold", t2, "--no-cache"))
                same = out_next == out_cold == out_warm
    med = {k: (statistics.median(t for t, _ in v), int(statistics.median(m for _, m in v)))
           for k, v in results.items()}
    med["identical"] = (float(same), 0)
    return med


def run(quick: bool = False) -> list[Row]:
    rows: list[Row] = []
    for n in ([2, 50, 500] if quick else [2, 50, 500, 2000]):
        m = measure(n, 1 if n >= 2000 or quick else 3)
        floor_t, floor_mem = m["floor"]
        same = bool(m["identical"][0])
        goals = GOALS.get(n, {})
        for kind, label in (("first", "first run, empty cache"),
                            ("next", "next candle's run"), ("warm", "warm run, nothing new")):
            t, _ = m[kind]
            goal = goals.get(kind)
            rows.append(Row("scale", f"{n} symbols x {BARS} 5m candles: {label} vs floor",
                            f"floor {floor_t:.2f} s", f"{kind} {t:.2f} s", floor_t, t,
                            "ratio", claim=f"goal <= {goal}x" if goal else None,
                            identical=None if kind == "first" else same,
                            note="whole processes; floor = polars reads and stacks the files"))
        peak = max(m[k][1] for k in ("first", "next", "warm"))
        goal = goals.get("memory")
        rows.append(Row("scale", f"{n} symbols x {BARS} 5m candles: peak memory vs floor",
                        f"floor {floor_mem / 2**20:.0f} MiB", f"peak {peak / 2**20:.0f} MiB",
                        floor_mem, peak, "ratio", claim=f"goal <= {goal}x" if goal else None,
                        note="largest of the three runs (ru_maxrss of the child)"))
    return rows


if __name__ == "__main__":
    main(run, __doc__ or "")
