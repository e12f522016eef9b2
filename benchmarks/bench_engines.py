"""Alpha engines: one vectorised batch call vs one call per symbol.

    python -m botopt.benchmarks.bench_engines [--quick]
"""

from __future__ import annotations

from ._common import Row, best_time, main, synthetic_candles


def run(quick: bool = False) -> list[Row]:
    import random

    from ..core.signals._engines import AlphaEngineCoordinator
    from ..core.signals._features import compute_features
    from ..core.signals._regime import REGIMES

    rows = []
    coord = AlphaEngineCoordinator()
    for n in ([2, 10, 100] if quick else [2, 10, 100, 500]):
        feats = compute_features(synthetic_candles(n, 200, seed=n))
        frames = {str(k[0]): v for k, v in
                  feats.partition_by("symbol", as_dict=True, maintain_order=True).items()}
        rng = random.Random(n)
        regimes = {s: rng.choice(REGIMES) for s in frames}
        batch = coord.generate_all_signals_batch(frames, regimes)
        single = {s: coord.generate_all_signals(f, regimes[s]) for s, f in frames.items()}
        repeat = 2 if quick else 3
        t_batch = best_time(lambda fr=frames, rg=regimes: coord.generate_all_signals_batch(
            fr, rg), repeat)
        t_loop = best_time(lambda fr=frames, rg=regimes: [
            coord.generate_all_signals(f, rg[s]) for s, f in fr.items()], repeat)
        rows.append(Row("engines", f"{n} symbols: batch vs per-symbol",
                        f"per-symbol {t_loop * 1e3:.2f} ms", f"batch {t_batch * 1e3:.2f} ms",
                        t_loop, t_batch, "speedup",
                        claim="authors: 60% faster; target 10x at 100",
                        identical=batch == single, max_diff=None))
    return rows


if __name__ == "__main__":
    main(run, __doc__ or "")
