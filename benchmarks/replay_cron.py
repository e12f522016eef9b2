"""Replay a day of cron runs (every 60 s over 5-minute candles) with and without the cache.

Prints, per cache, the computations avoided next to the bot authors' claims, checks that
every cached answer equals the uncached one, and times whole processes: a warm
``botopt signals`` and ``botopt cache-stats`` next to a bare typer + rich command.

    python -m botopt.benchmarks.replay_cron [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from botopt.benchmarks._common import Row, main

CLAIMS = {"features": "80%", "predictions": "75%", "regime": "95%", "gates": "90%"}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles" / "5m"


def replay(label: str, overrides: dict[str, object], symbols: list[str], start: datetime,
           minutes: int, ttl_note: str) -> list[Row]:
    from botopt.core._cache import CacheManager
    from botopt.core._config import load_config
    from botopt.core._pipeline import _Stages, run_signals

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(overrides={**overrides, "cache.dir": tmp})
        clock = [start.timestamp()]
        mgr = CacheManager.from_config(cfg, clock=lambda: clock[0])
        cached, fresh = _Stages(), _Stages()
        identical = True
        t_cached = t_fresh = 0.0
        for k in range(minutes):
            now = start + timedelta(seconds=60 * k + 5)
            clock[0] = now.timestamp()
            t0 = time.perf_counter()
            a = run_signals(cfg, symbols, as_of=now, manager=mgr, stages=cached)
            t1 = time.perf_counter()
            b = run_signals(cfg, symbols, as_of=now, use_cache=False, side_effects=False,
                            stages=fresh)
            t2 = time.perf_counter()
            t_cached += t1 - t0
            t_fresh += t2 - t1
            identical &= a == b
        mgr.close()
    rows = []
    for stage in ("features", "regime", "predictions", "gates"):
        before, after = getattr(fresh, stage), getattr(cached, stage)
        rows.append(Row("cache", f"{label}: {stage} computations ({ttl_note})",
                        f"{before} uncached", f"{after} cached", before, after, "reduction",
                        claim=f"authors: {CLAIMS[stage]} fewer", identical=identical))
    rows.append(Row("cache", f"{label}: in-process run time ({ttl_note})",
                    f"{t_fresh / minutes * 1e3:.1f} ms/run",
                    f"{t_cached / minutes * 1e3:.1f} ms/run",
                    t_fresh, t_cached, "speedup", identical=identical))
    return rows


def _process_time(args: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def process_rows(quick: bool) -> list[Row]:
    runs = 5 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        bare = [sys.executable, "-m", "botopt.benchmarks.bare_typer"]
        sig = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "--quiet",
               "signals", "--symbols", "BTCUSDT,ETHUSDT", "--as-of", "2026-09-20T12:00:30Z"]
        stats = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "cache-stats"]
        subprocess.run(sig, check=True)  # warm the cache
        t_bare = _process_time(bare, runs)
        t_sig = _process_time(sig, runs)
        t_stats = _process_time(stats, runs)
        # Identical: the warm (cached) answer equals a --no-cache run's; cache-stats prints
        # what the library reads.
        warm = subprocess.run([*sig, "--json"], check=True, capture_output=True).stdout
        cold = subprocess.run([*sig, "--json", "--no-cache"], check=True,
                              capture_output=True).stdout
        from botopt.core._cache import get_cache_stats

        cli_stats = json.loads(subprocess.run([*stats, "--json"], check=True,
                                              capture_output=True).stdout)["caches"]
        lib_stats = json.loads(json.dumps(get_cache_stats(Path(tmp))))
    return [
        Row("startup", "warm `botopt signals` (2 symbols) vs bare typer+rich",
            f"bare {t_bare * 1e3:.0f} ms", f"signals {t_sig * 1e3:.0f} ms", t_bare, t_sig,
            "speedup", claim="target: within 1.5x", identical=warm == cold),
        Row("startup", "`botopt cache-stats` vs bare typer+rich",
            f"bare {t_bare * 1e3:.0f} ms", f"cache-stats {t_stats * 1e3:.0f} ms", t_bare,
            t_stats, "speedup", claim="target: within 1.2x",
            identical=cli_stats == lib_stats),
    ]


def run(quick: bool = False, data_dir: Path | None = None) -> list[Row]:
    sample = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    start = datetime(2026, 9, 20, 0, 0, tzinfo=timezone.utc)
    minutes = 60 if quick else 1440
    long_ttl = {"cache.features_ttl": 600, "cache.predictions_ttl": 600,
                "cache.regime_ttl": 600, "cache.gates_ttl": 600}
    rows = replay("sample, 5 symbols", {}, sample, start, minutes, "default TTLs")
    rows += replay("sample, 5 symbols", long_ttl, sample, start, minutes, "TTLs 600 s")
    real = data_dir or (SHARED if SHARED.is_dir() else None)
    if real is not None:
        from botopt.core._candles import load_candles
        from botopt.core._config import load_config

        syms = sorted(p.name.split("-")[0] for p in real.glob("*-5m.*"))[:10]
        cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(real)})
        first = load_candles(syms, config=cfg, as_of="2100-01-01")["open_time"]
        # Start a day in, so the features have their history.
        begin = first.min() + timedelta(days=1)
        rows += replay(f"{real.name}, {len(syms)} pairs", {"data.source": "local",
                                                          "data.data_dir": str(real)},
                       syms, begin, 30 if quick else 360, "default TTLs")
    rows += process_rows(quick)
    return rows


if __name__ == "__main__":
    main(run, __doc__ or "")
