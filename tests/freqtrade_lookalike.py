"""A small lookalike of freqtrade's tests/testdata folder, generated (their data is GPL-3.0).

Same names, folders and formats as freqtrade writes them (freqtrade.misc.pair_to_filename,
IDataHandler._pair_data_filename, the feather/parquet/json/jsongz handlers): spot candles in
the top folder, futures candles as ``futures/PAIR_SETTLE-tf-futures.*``, and the files that
are not candles (trades, mark prices, funding rates, hdf5 copies) next to them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl

T0_MS = 1_514_764_800_000  # 2018-01-01, like freqtrade's test data
STEP_MS = {"1m": 60_000, "4m": 240_000, "5m": 300_000, "8m": 480_000, "30m": 1_800_000,
           "1h": 3_600_000, "8h": 28_800_000}

# (relative path, format) of every OHLCV file; the pair to ask for is the expected symbol.
CANDLE_FILES: dict[str, tuple[str, str]] = {
    "ADA_BTC-5m.feather": ("ADA/BTC", "5m"),
    "ETH_BTC-5m.parquet": ("ETH/BTC", "5m"),
    "UNITTEST_BTC-1m.json": ("UNITTEST/BTC", "1m"),
    "UNITTEST_BTC-5m.feather": ("UNITTEST/BTC", "5m"),
    "UNITTEST_BTC-30m.json.gz": ("UNITTEST/BTC", "30m"),
    "UNITTEST_BTC-8m.feather": ("UNITTEST/BTC", "8m"),
    "UNITTEST_BTC-8m.json.gz": ("UNITTEST/BTC", "8m"),
    "NOPAIR_XXX-4m.json": ("NOPAIR/XXX", "4m"),
    "XRP_ETH-5m.feather": ("XRP/ETH", "5m"),
    "futures/XRP_USDT_USDT-5m-futures.feather": ("XRP/USDT:USDT", "5m"),
    "futures/XRP_USDT_USDT-1h-futures.json.gz": ("XRP/USDT:USDT", "1h"),
}
NOT_CANDLES: dict[str, str] = {
    "UNITTEST_BTC-5m.h5": "hdf5",
    "XRP_ETH-trades.feather": "trades",
    "XRP_ETH-trades.json.gz": "trades",
    "XRP_ETH-trades.parquet": "trades",
    "XRP_ETH-trades.h5": "trades",
    "futures/XRP_USDT_USDT-1h-mark.feather": "mark prices",
    "futures/XRP_USDT_USDT-8h-mark.feather": "mark prices",
    "futures/XRP_USDT_USDT-8h-funding_rate.feather": "funding rates",
    "futures/UNITTEST_USDT_USDT-1h-mark.h5": "mark prices",
}


def ohlcv(n: int, interval: str, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 0.05 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.002, n)) * close
    return pl.DataFrame({
        "date": pl.Series([T0_MS + i * STEP_MS[interval] for i in range(n)])
        .cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
        "open": open_, "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread, "close": close,
        "volume": rng.uniform(10, 1000, n)})


def write(path: Path, df: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".feather"):
        # freqtrade writes pandas' datetime64[ns, UTC] with lz4
        df.with_columns(pl.col("date").dt.cast_time_unit("ns")).write_ipc(path, compression="lz4")
    elif name.endswith(".parquet"):
        df.write_parquet(path)
    elif name.endswith((".json", ".json.gz")):
        rows = [[int(r[0]), *r[1:]] for r in df.with_columns(pl.col("date").dt.epoch("ms")).rows()]
        blob = json.dumps(rows).encode()
        path.write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
    else:
        raise ValueError(name)


def make_testdata(root: Path, n: int = 400) -> dict[str, pl.DataFrame]:
    """Write the lookalike under ``root``; returns the frame written to each candle file."""
    written = {}
    for i, (rel, (_, interval)) in enumerate(sorted(CANDLE_FILES.items())):
        df = ohlcv(n, interval, seed=i)
        write(root / rel, df)
        written[rel] = df
    for rel, what in NOT_CANDLES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".h5"):
            p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # hdf5 signature; never opened
        elif what == "trades":
            trades = pl.DataFrame({"timestamp": [T0_MS, T0_MS + 1000], "id": ["1", "2"],
                                   "type": [None, None], "side": ["buy", "sell"],
                                   "price": [0.1, 0.2], "amount": [1.0, 2.0],
                                   "cost": [0.1, 0.4]})
            if rel.endswith(".parquet"):
                trades.write_parquet(p)
            elif rel.endswith(".json.gz"):
                p.write_bytes(gzip.compress(json.dumps(trades.rows()).encode()))
            else:
                trades.write_ipc(p)
        else:
            write(p, ohlcv(50, "8h" if "-8h-" in rel else "1h", seed=99))
    return written
