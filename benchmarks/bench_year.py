"""A whole year of 5m candles x 100 symbols, measured whole (issue 22's goal row): the
replay in one process, and the whole ``botopt backtest`` (replay, evaluation, walk-forward)
as a user runs it, each against its goal (60 s, 2 GiB of peak RSS). Not in ``botopt
bench``: each takes 10-15 minutes on a 2-core machine; ``bench_backtest``'s row extrapolates
the time from two short periods instead. ``--quick`` replays 30 days of the same data.

    python -m botopt.benchmarks.bench_year [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from ._common import Row, main
from .bench_backtest import FIVE, YEAR, _generated, _process, _replay


def run(quick: bool = False) -> list[Row]:
    from .bench_scale import START

    warm = 1000  # candles before the period: every symbol past its warm-up
    candles = 30 * 288 if quick else YEAR
    first = START - timedelta(days=400)  # a year that has closed by the clock
    since = first + FIVE * warm
    until = since + FIVE * candles
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "year"
        syms = _generated(data, 100, warm + YEAR, first)
        wall, rss, out = _replay(data, Path(tmp) / "c1", syms, since, until)
        bt_wall, bt_rss, _ = _process([
            sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(Path(tmp) / "c2"),
            "--quiet", "backtest", "--data-dir", str(data), "--symbols", "all",
            "--since", since.isoformat(), "--until", until.isoformat(), "--json",
            "--no-cache"])
    what = f"100 symbols x {candles:,} candles"
    gib = 2 * 2**30
    return [
        Row("year", f"{what}: replay time", "goal 60 s", f"{wall:,.1f} s", 60.0, wall,
            "ratio", claim="goal <= 1.00x",
            note=f"one process; {out['rows']:,} candidates, {out['passed']:,} passed"),
        Row("year", f"{what}: replay peak memory", "goal 2,048 MiB",
            f"{rss / 2**20:,.0f} MiB", gib, rss, "ratio", claim="goal <= 1.00x",
            note="ru_maxrss of the replay's process"),
        Row("year", f"{what}: whole `botopt backtest` time", "goal 60 s",
            f"{bt_wall:,.1f} s", 60.0, bt_wall, "ratio", claim="goal <= 1.00x",
            note="replay, evaluation and walk-forward, --no-cache --json"),
        Row("year", f"{what}: whole `botopt backtest` peak memory", "goal 2,048 MiB",
            f"{bt_rss / 2**20:,.0f} MiB", gib, bt_rss, "ratio", claim="goal <= 1.00x",
            note="ru_maxrss of the command's process"),
    ]


if __name__ == "__main__":
    main(run, __doc__ or "")
