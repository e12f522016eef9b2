"""``botopt fetch``: keep a local, freqtrade-layout candle store up to date from Binance.

Each file is ``{data_dir}/{SYMBOL}-{interval}.feather`` with columns ``date``, open, high, low,
close, volume. Only candles newer than the last stored one are downloaded; the merged file is
written to a temporary name and renamed over the old one under a per-file lock, so a crash
or an overlapping fetch never leaves a torn or half-merged file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from botopt.core._binance import BinanceClient
from botopt.core._candles import interval_ms, read_candle_file, validate_candles
from botopt.core._config import Config
from botopt.core._fs import atomic_write_bytes
from botopt.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class FetchResult:
    symbol: str
    added: int
    total: int
    last: datetime | None
    path: Path

    def to_dict(self) -> dict[str, object]:
        return {"symbol": self.symbol, "added": self.added, "total": self.total,
                "last": self.last.isoformat().replace("+00:00", "Z") if self.last else None,
                "path": str(self.path)}


def fetch_to_store(config: Config, symbols: Sequence[str], interval: str | None = None, *,
                   since: datetime | None = None, client: BinanceClient | None = None,
                   now_ms: int | None = None,
                   progress: Callable[[str, int], None] | None = None) -> list[FetchResult]:
    from filelock import FileLock

    if config.data.data_dir is None:
        raise ConfigError("fetch needs a data directory: --data-dir or data.data_dir")
    interval = interval or config.data.interval
    step = interval_ms(interval)
    data_dir = Path(config.data.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {data_dir}: {exc.strerror}") from exc
    client = client or BinanceClient(config.binance)
    results = []
    for sym in symbols:
        path = data_dir / f"{sym}-{interval}.feather"
        with FileLock(str(path) + ".lock", timeout=120):
            old = read_candle_file(path, sym) if path.exists() else None
            if old is not None and old.height:
                start = int(old["open_time"].dt.epoch("ms").max()) + step
            elif since is not None:
                start = int(since.timestamp() * 1000) // step * step
            else:
                start = None  # Binance answers the latest 1,000 candles
            new = client.klines(sym, interval, start_ms=start, now_ms=now_ms,
                                progress=(lambda n, s=sym: progress(s, n)) if progress
                                else None)
            merged = new if old is None else pl.concat([old, new]).unique(
                "open_time", keep="last").sort("open_time")
            if merged.height == 0:
                raise DataError(f"Binance returned no closed {interval} candles for {sym}")
            validate_candles(merged, symbol=sym, interval=interval, source="binance")
            added = merged.height - (old.height if old is not None else 0)
            if added or old is None:
                buf = io.BytesIO()
                merged.drop("symbol").rename({"open_time": "date"}).write_ipc(buf)
                atomic_write_bytes(path, buf.getvalue(), mode=0o644)
            last = merged["open_time"][-1]
            results.append(FetchResult(sym, added, merged.height,
                                       last.astimezone(timezone.utc) if last else None, path))
    return results
