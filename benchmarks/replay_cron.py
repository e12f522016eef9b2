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


def replay(label: str, base: dict[str, object], variants: dict[str, dict[str, object]],
           symbols: list[str], start: datetime, minutes: int) -> list[Row]:
    """One uncached pass, and one cached pass per TTL variant, minute by minute side by side.

    The uncached answer does not depend on TTLs, so every variant is compared with the same
    uncached pass (one day of uncached runs costs as much as the cached ones). Each pass is a
    whole bot with its own state directory (cooldowns, regimes, queue): a cached bot's day
    must equal an uncached bot's day, minute by minute."""
    from botopt.core._cache import CacheManager
    from botopt.core._config import load_config
    from botopt.core._pipeline import _Stages, run_signals

    with tempfile.TemporaryDirectory() as tmp:
        clock = [start.timestamp()]
        fresh_cfg = load_config(overrides={**base, "cache.dir": f"{tmp}/uncached"})
        runs = []
        for i, (note, overrides) in enumerate(variants.items()):
            cfg = load_config(overrides={**base, **overrides, "cache.dir": f"{tmp}/{i}"})
            runs.append((note, cfg, CacheManager.from_config(cfg, clock=lambda: clock[0]),
                         _Stages()))
        fresh = _Stages()
        identical = dict.fromkeys(variants, True)
        t_cached = dict.fromkeys(variants, 0.0)
        t_fresh = 0.0
        for k in range(minutes):
            now = start + timedelta(seconds=60 * k + 5)
            clock[0] = now.timestamp()
            t0 = time.perf_counter()
            b = run_signals(fresh_cfg, symbols, as_of=now, use_cache=False, stages=fresh)
            t_fresh += time.perf_counter() - t0
            for note, cfg, mgr, stages in runs:
                t0 = time.perf_counter()
                a = run_signals(cfg, symbols, as_of=now, manager=mgr, stages=stages)
                t_cached[note] += time.perf_counter() - t0
                identical[note] &= a == b
        for _, _, mgr, _ in runs:
            mgr.close()
    rows = []
    for note, _, _, cached in runs:
        for stage in ("features", "regime", "predictions", "gates"):
            before, after = getattr(fresh, stage), getattr(cached, stage)
            rows.append(Row("cache", f"{label}: {stage} computations ({note})",
                            f"{before} uncached", f"{after} cached", before, after,
                            "reduction", claim=f"authors: {CLAIMS[stage]} fewer",
                            identical=identical[note]))
        rows.append(Row("cache", f"{label}: in-process run time ({note})",
                        f"{t_fresh / minutes * 1e3:.1f} ms/run",
                        f"{t_cached[note] / minutes * 1e3:.1f} ms/run",
                        t_fresh, t_cached[note], "speedup", identical=identical[note]))
    return rows


def _process_times(commands: list[list[str]], runs: int) -> list[float]:
    """Median wall time of each command. Runs are interleaved (a, b, c, a, b, c, ...) so a
    noisy neighbour slows every command alike instead of whichever ran at the time."""
    samples: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for args, out in zip(commands, samples, strict=True):
            t0 = time.perf_counter()
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            out.append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def process_rows(quick: bool) -> list[Row]:
    runs = 5 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        bare = [sys.executable, "-m", "botopt.benchmarks.bare_typer"]
        sig = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "--quiet",
               "signals", "--symbols", "BTCUSDT,ETHUSDT", "--as-of", "2026-09-20T12:00:30Z"]
        stats = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "cache-stats"]
        subprocess.run(sig, check=True)  # warm the cache
        t_bare, t_sig, t_stats = _process_times([bare, sig, stats], runs)
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
    rows = replay("sample, 5 symbols", {}, {"default TTLs": {}, "TTLs 600 s": long_ttl},
                  sample, start, minutes)
    real = data_dir or (SHARED if SHARED.is_dir() else None)
    if real is not None:
        from botopt.core._candles import load_candles
        from botopt.core._config import load_config

        syms = sorted(p.name.split("-")[0] for p in real.glob("*-5m.*"))[:10]
        cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(real)})
        first = load_candles(syms, config=cfg, as_of="2100-01-01")["open_time"]
        # Start a day in, so the features have their history.
        begin = first.min() + timedelta(days=1)
        rows += replay(f"{real.name}, {len(syms)} pairs",
                       {"data.source": "local", "data.data_dir": str(real)},
                       {"default TTLs": {}}, syms, begin, 30 if quick else 360)
    rows += process_rows(quick)
    return rows


if __name__ == "__main__":
    main(run, __doc__ or "")
