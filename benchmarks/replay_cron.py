"""Replay cron runs (every 60 s, 0.2-4 s of start jitter, over 5-minute candles) with and
without the cache, with a clock that moves with the runs.

Prints, per cache, the computations avoided next to the bot authors' claims, checks that
every cached answer equals the uncached one, and times whole processes: a cron replay of
real ``botopt signals`` processes (cached against ``--no-cache``), a warm ``botopt signals``
and ``botopt cache-stats`` next to a bare typer + rich command, the cache's write time on a
500-symbol run, and a cron cycle cached vs uncached from 2 to 2,000 symbols.

    python -m botopt.benchmarks.replay_cron [--quick]
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ._common import Row, main

CLAIMS = {"features": "80%", "predictions": "75%", "regime": "95%", "gates": "90%"}
STAGES = ("features", "regime", "predictions", "gates")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles" / "5m"
SEED_TTLS = {"cache.features_ttl": 60, "cache.predictions_ttl": 30, "cache.regime_ttl": 300,
             "cache.gates_ttl": 10}


_env: dict[str, str] | None = None


def _process_env() -> dict[str, str]:
    """The environment of timed processes: bytecode cached (in a private directory) as in
    any installed copy, so botopt is not compiled anew on every start while typer and rich,
    the yardstick, load theirs from site-packages."""
    global _env
    if _env is None:
        import atexit
        import os
        import shutil

        prefix = tempfile.mkdtemp(prefix="botopt-bench-pyc-")
        atexit.register(shutil.rmtree, prefix, True)
        _env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        _env["PYTHONPYCACHEPREFIX"] = prefix
    return _env


def _cron_times(start: datetime, runs: int, seed: int = 14) -> list[datetime]:
    """A run a minute, each started 0.2-4 s late, as cron does."""
    rng = random.Random(seed)
    return [start + timedelta(seconds=60 * k + rng.uniform(0.2, 4.0)) for k in range(runs)]


def replay(label: str, base: dict[str, object], variants: dict[str, dict[str, object]],
           symbols: list[str], start: datetime, minutes: int) -> list[Row]:
    """One uncached bot, and one cached bot per settings variant, run by run side by side,
    the cache's clock moving with the runs. Each bot has its own state directory
    (cooldowns, regimes, queue): a cached bot's day must equal an uncached bot's."""
    from ..core.base._config import load_config
    from ..core.signals._pipeline import _run_signals, _Stages
    from ..core.state._cache import CacheManager

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
        for now in _cron_times(start, minutes):
            clock[0] = now.timestamp()
            t0 = time.perf_counter()
            b = _run_signals(fresh_cfg, symbols, as_of=now, use_cache=False, stages=fresh)
            t_fresh += time.perf_counter() - t0
            for note, cfg, mgr, stages in runs:
                t0 = time.perf_counter()
                a = _run_signals(cfg, symbols, as_of=now, manager=mgr, stages=stages)
                t_cached[note] += time.perf_counter() - t0
                identical[note] &= a == b
        for _, _, mgr, _ in runs:
            mgr.close()
    rows = []
    for note, _, _, cached in runs:
        for stage in STAGES:
            before, after = getattr(fresh, stage), getattr(cached, stage)
            rows.append(Row("cache", f"{label}: {stage} computations ({note})",
                            f"{before} uncached", f"{after} cached", before, after,
                            "reduction", claim=f"authors: {CLAIMS[stage]} fewer; goal 78%",
                            identical=identical[note]))
        rows.append(Row("cache", f"{label}: in-process run time ({note})",
                        f"{t_fresh / minutes * 1e3:.1f} ms/run",
                        f"{t_cached[note] / minutes * 1e3:.1f} ms/run",
                        t_fresh, t_cached[note], "speedup", identical=identical[note]))
    return rows


def _botopt(at: datetime, *args: str) -> list[str]:
    return [sys.executable, "-m", "botopt.benchmarks._clocked", str(at.timestamp()), "--",
            *args]


def cron_processes(quick: bool, data_dir: Path | None) -> list[Row]:
    """Whole ``botopt signals`` processes, one a minute with jitter, the process clock moved
    to the run's time: cached against ``--no-cache``, each bot in its own directory."""
    # --quick: 3 runs, one candle's (1 computation in 3); 15 runs span three candles
    runs = 3 if quick else 15
    if data_dir is not None:
        syms = sorted(p.name.split("-")[0] for p in data_dir.glob("*-5m.*"))[:4]
        src = ["--source", "local", "--data-dir", str(data_dir)]
        start = datetime(2018, 1, 25, 13, 0, tzinfo=timezone.utc)
        label = f"{data_dir.name}, {len(syms)} pairs"
    else:
        syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
        src, start, label = [], datetime(2026, 9, 20, 6, 0, tzinfo=timezone.utc), \
            "sample, 4 symbols"
    t_cached = t_fresh = 0.0
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        # Bytecode (botopt's, and polars' where the install has none) is written once, by
        # a run of its own, not charged to whichever bot happens to run first.
        subprocess.run(_botopt(start, "--cache-dir", f"{tmp}/warm-up", "--quiet", "signals",
                               "--symbols", ",".join(syms), *src, "--as-of",
                               start.isoformat(), "--no-cache"),
                       check=True, capture_output=True, env=_process_env())
        for now in _cron_times(start, runs):
            common = ["--quiet", "signals", "--symbols", ",".join(syms), *src,
                      "--as-of", now.isoformat(), "--json"]
            t0 = time.perf_counter()
            a = subprocess.run(_botopt(now, "--cache-dir", f"{tmp}/cached", *common),
                               check=True, capture_output=True, env=_process_env()).stdout
            t1 = time.perf_counter()
            b = subprocess.run(_botopt(now, "--cache-dir", f"{tmp}/uncached", *common,
                                       "--no-cache"), check=True, capture_output=True,
                               env=_process_env()).stdout
            t_fresh += time.perf_counter() - t1
            t_cached += t1 - t0
            identical &= json.loads(a) == json.loads(b)
        from ..core.state._cache_stats import get_cache_stats

        stats = get_cache_stats(Path(tmp) / "cached")
    # the fewest computations: one per candle the runs fall in (5-minute candles)
    candles = len({int(t.timestamp()) // 300 for t in _cron_times(start, runs)})
    bound = 100.0 * (1 - candles / runs)
    rows = []
    for stage in STAGES:
        # --no-cache computes every stage on every run; a cached miss is a computation.
        before = runs * (1 if stage == "gates" else len(syms))
        after = stats[stage]["misses"]
        rows.append(Row("cron", f"{label}, {runs} processes: {stage} computations",
                        f"{before} --no-cache", f"{after} cached", before, after,
                        "reduction", claim=f"goal: {bound - 2:.0f}% fewer (bound {bound:.0f}%)",
                        identical=identical))
    rows.append(Row("cron", f"{label}, {runs} processes: whole-process time",
                    f"--no-cache {t_fresh / runs * 1e3:.0f} ms/run",
                    f"cached {t_cached / runs * 1e3:.0f} ms/run", t_fresh, t_cached,
                    "speedup", claim="goal: 1.6x faster", identical=identical))
    return rows


def _synthetic_dir(root: Path, n: int) -> tuple[list[str], datetime]:
    from ..core.data._store import _write
    from ._common import synthetic_candles

    df = synthetic_candles(n, 1100)
    for (sym,), g in df.group_by("symbol", maintain_order=True):
        _write(root / f"{sym}-5m.feather", g)
    # Past the history the features need, 5 s into a minute.
    return [f"S{i:04d}" for i in range(n)], \
        datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=5 * 1095, seconds=5)


def write_rows(n: int) -> list[Row]:
    """The cache's write time on a next-candle run: the run's entries written as it does
    (one transaction) against the same entries written one transaction each."""
    from ..core.base._config import load_config
    from ..core.signals._pipeline import _run_signals
    from ..core.state._cache import CacheManager

    with tempfile.TemporaryDirectory() as tmp:
        syms, start = _synthetic_dir(Path(tmp), n)
        cfg = load_config(overrides={"data.source": "local", "data.data_dir": tmp,
                                     "cache.dir": f"{tmp}/c"})
        mgr = CacheManager.from_config(cfg)
        _run_signals(cfg, syms, as_of=start, manager=mgr, notify=False)
        captured: list[Any] = []
        store = mgr._backend()
        real = store.write
        store.write = lambda rows, stats, now: (captured.extend(rows), real(rows, stats, now))[1]
        mgr.write_seconds = 0.0
        nxt = start + timedelta(minutes=5)
        a = _run_signals(cfg, syms, as_of=nxt, manager=mgr, notify=False)
        batched = mgr.write_seconds
        one_by_one = CacheManager.from_config(cfg, root=Path(tmp) / "c2")
        t0 = time.perf_counter()
        for name, key, value, expire_at, seconds in captured:
            one_by_one._commit([(name, key, value, expire_at, seconds)], {})
        each = time.perf_counter() - t0
        same = a == _run_signals(cfg, syms, as_of=nxt, use_cache=False, notify=False)
    return [Row("cache", f"{n} symbols, next-candle run: cache write time",
                f"{len(captured)} transactions {each:.3f} s",
                f"one transaction {batched:.3f} s (encoding included)", each, batched,
                "speedup", claim="goal: <= 0.05 s", identical=same)]


def cycle_rows(sizes: list[int]) -> list[Row]:
    """A cron cycle of 5-minute candles run every minute (one new candle, four runs on it):
    cached against uncached, in-process, at each size."""
    from ..core.base._config import load_config
    from ..core.signals._pipeline import _run_signals
    from ..core.state._cache import CacheManager

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            syms, start = _synthetic_dir(Path(tmp), n)
            cfg = load_config(overrides={"data.source": "local", "data.data_dir": tmp,
                                         "cache.dir": f"{tmp}/c"})
            clock = [start.timestamp()]
            mgr = CacheManager.from_config(cfg, clock=lambda c=clock: c[0])
            _run_signals(cfg, syms, as_of=start, manager=mgr, notify=False)
            t_cached = t_fresh = 0.0
            same = True
            for now in _cron_times(start + timedelta(minutes=5), 5):
                clock[0] = now.timestamp()
                t0 = time.perf_counter()
                a = _run_signals(cfg, syms, as_of=now, manager=mgr, notify=False)
                t1 = time.perf_counter()
                b = _run_signals(cfg, syms, as_of=now, use_cache=False, notify=False)
                t_fresh += time.perf_counter() - t1
                t_cached += t1 - t0
                same &= a == b
            mgr.close()
        rows.append(Row("cache", f"{n} symbols: cron cycle (1 new candle + 4 runs on it)",
                        f"uncached {t_fresh:.3f} s", f"cached {t_cached:.3f} s", t_fresh,
                        t_cached, "speedup", claim="goal: cached faster at every size",
                        identical=same))
    return rows


def _process_times(commands: list[list[str]], runs: int) -> list[float]:
    """Median wall time of each command. Runs are interleaved (a, b, c, a, b, c, ...) so a
    noisy neighbour slows every command alike instead of whichever ran at the time."""
    samples: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for args, out in zip(commands, samples, strict=True):
            t0 = time.perf_counter()
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=_process_env())
            out.append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def process_rows(quick: bool) -> list[Row]:
    runs = 3 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        bare = [sys.executable, "-m", "botopt.benchmarks.bare_typer"]
        sig = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "--quiet",
               "signals", "--symbols", "BTCUSDT,ETHUSDT", "--as-of", "2026-09-20T12:00:30Z"]
        stats = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "cache-stats"]
        for warm_up in ([*sig, "--no-cache"], sig, bare, stats):  # bytecode, then the cache
            subprocess.run(warm_up, check=True, capture_output=True, env=_process_env())
        t_bare, t_sig, t_stats = _process_times([bare, sig, stats], runs)
        # Identical: the warm (cached) answer equals a --no-cache run's; cache-stats prints
        # what the library reads.
        warm = subprocess.run([*sig, "--json"], check=True, capture_output=True).stdout
        cold = subprocess.run([*sig, "--json", "--no-cache"], check=True,
                              capture_output=True).stdout
        from ..core.base._config import effective_lives, load_config
        from ..core.state._cache_stats import get_cache_stats

        cli_stats = json.loads(subprocess.run([*stats, "--json"], check=True,
                                              capture_output=True).stdout)["caches"]
        lives = effective_lives(load_config(overrides={"cache.dir": tmp}))
        lib_stats = json.loads(json.dumps(get_cache_stats(Path(tmp), ttls=lives)))
    return [
        Row("startup", "warm `botopt signals` (2 symbols) vs bare typer+rich",
            f"bare {t_bare * 1e3:.0f} ms", f"signals {t_sig * 1e3:.0f} ms", t_bare, t_sig,
            "speedup", claim="goal <= 1.3x (issue 23)", identical=warm == cold),
        Row("startup", "`botopt cache-stats` vs bare typer+rich",
            f"bare {t_bare * 1e3:.0f} ms", f"cache-stats {t_stats * 1e3:.0f} ms", t_bare,
            t_stats, "speedup", claim="goal <= 1.15x (issue 23)",
            identical=cli_stats == lib_stats),
    ]


def run(quick: bool = False, data_dir: Path | None = None) -> list[Row]:
    sample = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    start = datetime(2026, 9, 20, 0, 0, tzinfo=timezone.utc)
    minutes = 30 if quick else 1440
    variants: dict[str, dict[str, object]] = {"default settings": {}}
    if not quick:  # the old defaults' rows: what the defaults' change bought
        variants["seed TTLs 60/30/300/10 s"] = SEED_TTLS
    rows = replay("sample, 5 symbols", {}, variants, sample, start, minutes)
    real = data_dir or (SHARED if SHARED.is_dir() else None)
    if real is not None:
        from ..core.base._config import load_config
        from ..core.data._candles import load_candles

        syms = sorted(p.name.split("-")[0] for p in real.glob("*-5m.*"))[:10]
        cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(real)})
        first = load_candles(syms, config=cfg, as_of="2100-01-01")["open_time"]
        # Start a day in, so the features have their history.
        begin = first.min() + timedelta(days=1)
        rows += replay(f"{real.name}, {len(syms)} pairs",
                       {"data.source": "local", "data.data_dir": str(real)},
                       {"default settings": {}}, syms, begin, 30 if quick else 360)
    rows += cron_processes(quick, real)
    # --quick keeps the cron-sized runs (bench --quick must stay under a minute); the
    # full run adds the scale sizes
    rows += write_rows(50 if quick else 500)
    rows += cycle_rows([2, 50] if quick else [2, 50, 500, 2000])
    rows += process_rows(quick)
    return rows


if __name__ == "__main__":
    main(run, __doc__ or "")
