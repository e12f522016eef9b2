"""Backtest replay: ``botopt.core.replay`` as a whole process, side by side with what a user
does without it, a shell loop of ``botopt signals --as-of T`` (one process per candle, one
cache, consecutive candles), timed on a sample of candles and scaled to the period.

Rows: the real pairs of ``../shared/data`` (the whole 20 days they hold; the goal is stated
for 30 days) against the loop; a second (cached) replay of the same period against the
first; and, outside ``--quick``, generated data: the cost per symbol-candle at 500 symbols
against 10, and 100 symbols with a year of 5m candles on disk (105,120 each): the replay's
peak memory with the year loaded, and its time over two periods extrapolated to the year
(labelled so).

    python -m botopt.benchmarks.bench_backtest [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._common import Row, main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles" / "5m"
FIVE = timedelta(minutes=5)
YEAR = 105_120

# One replay as a user's program runs it: a fresh process, polars and botopt imported.
REPLAY = """
import json, sys, time
from datetime import datetime
from botopt.core import load_config, replay
src, cache, syms, since, until, use_cache = sys.argv[1:7]
cfg = load_config(overrides={"data.source": "local", "data.data_dir": src, "cache.dir": cache})
r = replay(cfg, syms.split(","), datetime.fromisoformat(since), datetime.fromisoformat(until),
           use_cache=use_cache == "1")
import polars as pl
# hashed as text: a category's hash is its id, which depends on the order the process met
# the texts (a computed answer and one read back from the cache differ there). A slice at a
# time: the whole frame as text (a year's 7 million rows) would be the process's peak, not
# the replay's. Row hashes are per row, so the sum is the same.
c, digest = r.candidates, 0
for lo in range(0, c.height, 1 << 18):
    text = c.slice(lo, 1 << 18).with_columns(
        pl.col(pl.Categorical).cast(pl.String),
        pl.col("blocked_by", "gate_reasons").cast(pl.List(pl.String)))
    # numpy's uint64 sum wraps modulo 2**64, as the running digest does
    digest = (digest + int(text.hash_rows().to_numpy().sum(dtype="uint64"))) % 2**64
print(json.dumps({"rows": c.height, "passed": int(c["gate_passed"].sum()), "digest": digest}))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = tempfile.gettempdir() + "/botopt-bench-backtest-pyc"
    return env


def _process(args: list[str]) -> tuple[float, int, bytes]:
    """(wall seconds, the child's peak RSS in bytes, stdout)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, env=_env())
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{args[:5]}... failed")
        out.seek(0)
        return wall, usage.ru_maxrss * 1024, out.read()


def _replay(src: Path, cache: Path, syms: list[str], since: datetime, until: datetime,
            use_cache: bool = False) -> tuple[float, int, dict]:
    wall, rss, out = _process([sys.executable, "-c", REPLAY, str(src), str(cache),
                               ",".join(syms), since.isoformat(), until.isoformat(),
                               "1" if use_cache else "0"])
    return wall, rss, json.loads(out)


def _loop(src: Path, cache: Path, syms: list[str], times: list[datetime]) -> float:
    """Seconds per ``botopt signals --as-of`` process over consecutive candles."""
    walls = []
    for t in times:
        walls.append(_process([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                               str(cache), "--quiet", "signals", "--source", "local",
                               "--data-dir", str(src), "--symbols", ",".join(syms),
                               "--as-of", (t + FIVE).isoformat(), "--json"])[0])
    return statistics.median(walls)


def real_rows(quick: bool, data_dir: Path) -> list[Row]:
    syms = sorted(p.name.split("-")[0] for p in data_dir.glob("*-5m.feather"))
    start = datetime(2018, 1, 10, 5, 0, tzinfo=timezone.utc)
    end = datetime(2018, 1, 30, 4, 55, tzinfo=timezone.utc)
    since = end - timedelta(days=1) if quick else start
    n = int((end - since) / FIVE)
    with tempfile.TemporaryDirectory() as tmp:
        first, _, out = _replay(data_dir, Path(tmp) / "c", syms, since, end, use_cache=True)
        again, _, out2 = _replay(data_dir, Path(tmp) / "c", syms, since, end, use_cache=True)
        sample = [since + FIVE * (n // 2 + k) for k in range(3 if quick else 12)]
        per_run = _loop(data_dir, Path(tmp) / "loop", syms, sample)
    loop = per_run * n
    days = n / 288
    span = f"{days:.0f} day" + ("" if round(days) == 1 else "s")
    return [
        Row("backtest", f"{span} x {len(syms)} real pairs ({n:,} candles): replay "
            "vs a loop of `signals --as-of` per candle",
            f"loop {loop:,.0f} s ({per_run:.2f} s x {n:,})", f"replay {first:.1f} s",
            loop, first, "speedup", claim="goal >= 300x (30 days)",
            note=f"whole processes; the loop timed on {len(sample)} candles and scaled; "
                 f"{out['rows']:,} candidates, {out['passed']:,} passed"),
        Row("backtest", f"{span} x {len(syms)} real pairs: second (cached) replay "
            "vs the first", f"first {first:.2f} s", f"cached {again:.2f} s", first, again,
            "ratio", claim="goal <= 0.2x", identical=out == out2,
            note="whole processes, each importing botopt and polars"),
    ]


def _generated(d: Path, n: int, bars: int, start: datetime | None = None) -> list[str]:
    from .bench_scale import START, write_dir

    d.mkdir()
    return write_dir(d, n, bars, start or START)


def scale_rows() -> list[Row]:
    from .bench_scale import START

    rows = []
    warm = 1000  # candles before the period: every symbol past its warm-up
    candles = 96  # 8 hours: a sample; the cost is linear in candles (one step each)
    since = START + FIVE * warm
    until = since + FIVE * candles
    per: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 500):
            syms = _generated(Path(tmp) / f"d{n}", n, warm + candles)
            wall, _, _ = _replay(Path(tmp) / f"d{n}", Path(tmp) / f"c{n}", syms, since, until)
            per[n] = wall / (n * candles)
            if n == 500:
                rows.append(Row(
                    "backtest", f"500 symbols x {candles} candles: cost per symbol-candle vs "
                    "10 symbols", f"10: {per[10] * 1e3:.2f} ms", f"500: {per[500] * 1e3:.2f} ms",
                    per[10], per[500], "ratio", claim="goal <= 1.5x",
                    note="whole processes, generated random walks"))
        # A year of 100 symbols on disk (the replay loads all of it: its memory is real),
        # replayed over two lengths of period; the year's time is extrapolated from the
        # difference (the per-candle gates dominate; a whole year takes most of an hour on
        # this machine, too long for a bench run).
        # A year that has closed: generated candles after the clock are not closed yet,
        # and a replay (as a live run) leaves them out.
        first = START - timedelta(days=400)
        syms = _generated(Path(tmp) / "year", 100, warm + YEAR, first)
        y_since = first + FIVE * warm
        runs = {c: _replay(Path(tmp) / "year", Path(tmp) / f"cy{c}", syms, y_since,
                           y_since + FIVE * c)[:2] for c in (3 * candles, 9 * candles)}
    (w1, m1), (w3, m3) = runs[3 * candles], runs[9 * candles]
    slope = (w3 - w1) / (6 * candles)
    year = w1 + slope * (YEAR - 3 * candles)
    rows.append(Row("backtest", f"100 symbols, a year of 5m candles ({YEAR:,} each): "
                    "replay time", "goal 60 s", f"{year:,.0f} s (extrapolated)", 60.0, year,
                    "ratio", claim="goal <= 60 s (1.00x)",
                    note=f"the year's data loaded; periods of {3 * candles} and "
                         f"{9 * candles} candles measured ({w1:.1f} s, {w3:.1f} s), the "
                         "year extrapolated linearly"))
    rows.append(Row("backtest", "100 symbols, a year of 5m candles on disk: peak memory of "
                    f"a {9 * candles}-candle replay", "goal 2,048 MiB",
                    f"{max(m1, m3) / 2**20:,.0f} MiB", 2 * 2**30, max(m1, m3), "ratio",
                    claim="goal <= 1.00x",
                    note=f"ru_maxrss of the replay's process ({m1 / 2**20:,.0f} and "
                         f"{m3 / 2**20:,.0f} MiB); the candidates frame grows with the "
                         "period (about 67 rows a candle here), not measured over a year"))
    return rows


def run(quick: bool = False, data_dir: Path | None = None) -> list[Row]:
    real = data_dir or (SHARED if SHARED.is_dir() else None)
    rows = real_rows(quick, real) if real is not None else []
    if not quick:
        rows += scale_rows()
    return rows


if __name__ == "__main__":
    main(run, __doc__ or "")
