"""Generate botopt's bundled sample candles: ``python sample_data/generate.py``.

Synthetic, seeded and committed, so the data is ours to redistribute and the files can be
re-created bit for bit (tests/test_sample_data.py checks that). What makes it realistic
enough to exercise botopt:

- a common market factor plus idiosyncratic noise, so symbols correlate (about 0.6-0.8);
- GARCH(1,1)-style volatility clustering with an intraday (UTC hour) seasonality;
- scripted regimes, the same for all symbols: quiet range, trend up, a volatility shock,
  trend down, range again (dates in sample_data/README.md);
- consistent OHLC (open = previous close, high/low around both) and volume that rises with
  the absolute return and the volatility state;
- one deliberate 3-candle gap in SOLUSDT (2026-09-17 00:00-00:10 UTC), because real data
  has gaps and botopt must handle them without filling.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

SEED = 20260901
START = datetime(2026, 9, 10, tzinfo=timezone.utc)
DAYS = 21
STEP_MS = 300_000
SYMBOLS = {  # start price, beta to the market factor, idiosyncratic vol scale, base volume
    "BTCUSDT": (60_000.0, 1.0, 0.45, 120.0),
    "ETHUSDT": (2_500.0, 1.2, 0.60, 1_800.0),
    "SOLUSDT": (150.0, 1.5, 0.85, 25_000.0),
    "BNBUSDT": (550.0, 0.9, 0.65, 4_000.0),
    "XRPUSDT": (0.55, 1.1, 0.90, 3_000_000.0),
}
# (first day, last day exclusive, drift per candle, volatility multiplier, name)
REGIMES = [
    (0, 4, 0.0, 0.8, "quiet range"),
    (4, 9, 0.00012, 1.0, "trend up"),
    (9, 11, -0.00005, 3.0, "volatility shock"),
    (11, 16, -0.0001, 1.2, "trend down"),
    (16, 21, 0.0, 0.9, "range"),
]
GAP = ("SOLUSDT", datetime(2026, 9, 17, tzinfo=timezone.utc), 3)


def generate() -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(SEED)
    n = DAYS * 288
    t0 = int(START.timestamp() * 1000)
    times = t0 + STEP_MS * np.arange(n, dtype=np.int64)
    hour = (times // 3_600_000) % 24
    # Busier during the European/US overlap, quieter in the Asian night.
    season = 0.75 + 0.5 * np.exp(-0.5 * ((hour - 15) / 3.0) ** 2)
    drift = np.zeros(n)
    volmult = np.ones(n)
    for d0, d1, mu, vm, _ in REGIMES:
        drift[d0 * 288:d1 * 288] = mu
        volmult[d0 * 288:d1 * 288] = vm

    # GARCH(1,1) on the market factor: sigma2_t = w + a*eps_{t-1}^2 + b*sigma2_{t-1}.
    base = 0.0012
    w, a, b = base ** 2 * 0.05, 0.08, 0.87
    sigma2 = np.empty(n)
    eps = np.empty(n)
    sigma2[0] = base ** 2
    z = rng.standard_t(df=5, size=n) / np.sqrt(5 / 3)
    for t in range(n):
        if t:
            sigma2[t] = w + a * eps[t - 1] ** 2 + b * sigma2[t - 1]
        eps[t] = np.sqrt(sigma2[t]) * z[t]
    market = eps * season * volmult + drift

    out = {}
    for sym, (p0, beta, idio, vol0) in SYMBOLS.items():
        noise = rng.standard_normal(n) * base * idio * 1.5 * season * np.sqrt(volmult)
        ret = beta * market + noise
        close = p0 * np.exp(np.cumsum(ret))
        open_ = np.concatenate([[p0], close[:-1]]) * (1 + rng.normal(0, 2e-5, n))
        span = np.abs(rng.normal(0, 1, n)) * np.sqrt(sigma2) * season * volmult * 0.8
        high = np.maximum(open_, close) * (1 + span * rng.uniform(0.2, 1.0, n))
        low = np.minimum(open_, close) * (1 - span * rng.uniform(0.2, 1.0, n))
        activity = np.abs(ret) / (base * season) + volmult
        volume = vol0 * season * activity * rng.lognormal(0, 0.35, n)
        # Round like an exchange would: 8 significant digits of price, 5 decimals of volume.
        digits = 8 - int(np.floor(np.log10(p0))) - 1
        frame = pl.DataFrame({
            "date": pl.Series(times).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "open": np.round(open_, digits), "high": np.round(high, digits),
            "low": np.round(low, digits), "close": np.round(close, digits),
            "volume": np.round(volume, 5),
        })
        frame = frame.with_columns(
            pl.max_horizontal("high", "open", "close").alias("high"),
            pl.min_horizontal("low", "open", "close").alias("low"),
        )
        if sym == GAP[0]:
            gap_ms = int(GAP[1].timestamp() * 1000)
            frame = frame.filter(~pl.col("date").dt.epoch("ms").is_between(
                gap_ms, gap_ms + (GAP[2] - 1) * STEP_MS))
        out[sym] = frame
    return out


def write(directory: Path) -> list[Path]:
    paths = []
    for sym, frame in generate().items():
        path = directory / f"{sym}-5m.feather"
        frame.write_ipc(path, compression="zstd")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(__file__).resolve().parent):
        print(p)
