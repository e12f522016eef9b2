"""The local candle store that ``botopt fetch`` keeps up to date from the exchange.

Each symbol is one file named as freqtrade names it, ``{data_dir}/BTC_USDT-5m.feather``
(Arrow IPC, columns ``date`` (UTC, ms), open, high, low, close, volume), so the same directory
serves ``--source local``, freqtrade and botopt alike. Binance's BTCUSDT is mapped to
BTC_USDT through the exchange's symbol list (cached), never by guessing where the quote starts.
An older store's BTCUSDT-5m.feather is read and carried over into the new name (and left).

Only candles newer than the last stored one are downloaded (plus, with ``since``, any older
ones not stored yet). The merged frame is validated, then written to a temporary file and
renamed over the old one: readers see the old file or the new one, never a torn one, and a
crash leaves the old file as it was. A per-file lock, held from reading the old file to the
rename, serialises overlapping runs, so no run overwrites rows another has just added and the
second run downloads only what the first did not.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..base._config import Config, interval_ms
from ..base._fs import atomic_write_bytes
from ..errors import BotoptError, ConfigError, DataError, UsageError
from ..state._workspace import state_dir
from ._binance import BinanceClient
from ._candles import (
    candle_file_stem,
    existing_candle_file,
    parse_as_of,
    parse_symbols,
    read_candle_file,
    validate_candles,
)

if TYPE_CHECKING:
    import polars as pl


class CandleClient(Protocol):
    """Where fetch reads candles: ``BinanceClient`` or ``_ccxt.CcxtClient``."""

    @property
    def label(self) -> str: ...

    def resolve(self, symbol: str) -> tuple[str, str]: ...

    def klines(self, symbol: str, interval: str, *, start_ms: int | None = None,
               end_ms: int | None = None, now_ms: int | None = None,
               progress: Callable[[int], None] | None = None) -> pl.DataFrame: ...

log = logging.getLogger("botopt.store")

# Long enough for another run's large first download to finish; short enough that a stuck
# run cannot hold every later cron run hostage.
LOCK_TIMEOUT = 600.0
# With neither a stored file nor ``since``, Binance's default answer: its latest candles.
_DEFAULT_BATCH = 1000


@dataclass(frozen=True)
class FetchResult:
    """What one symbol's fetch did: rows added, rows now stored, their time span, the file."""

    symbol: str
    interval: str
    added: int
    total: int
    first: datetime | None
    last: datetime | None
    path: Path

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat().replace("+00:00", "Z") if t is not None else None

        return {"symbol": self.symbol, "interval": self.interval, "added": self.added,
                "total": self.total, "first": iso(self.first), "last": iso(self.last),
                "path": str(self.path)}


def store_path(data_dir: Path, pair: str, interval: str) -> Path:
    """Where fetch writes ``pair`` (freqtrade's BASE/QUOTE): ``BTC_USDT-5m.feather``."""
    return Path(data_dir) / f"{candle_file_stem(pair, interval)}.feather"


def _data_dir(config: Config, *, create: bool = True) -> Path:
    if config.data.data_dir is None:
        raise ConfigError("fetch needs a data directory: pass --data-dir or set data.data_dir",
                          key="data.data_dir")
    data_dir = Path(config.data.data_dir).expanduser()
    if not create:
        return data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data.data_dir {data_dir}: cannot create it "
                          f"({exc.strerror or exc})",
                          file=str(data_dir), key="data.data_dir") from exc
    return data_dir


def _since_ms(since: datetime | str | None, step: int, now: int) -> int | None:
    try:
        when = parse_as_of(since)
    except UsageError:
        raise UsageError(f"invalid --since {since!r}: use ISO 8601, e.g. 2026-01-01 or "
                         "2026-01-01T12:00:00Z", key="--since") from None
    if when is None:
        return None
    ms = int(when.timestamp() * 1000)
    if ms + step > now:
        from ..base._numfmt import fmt_minute

        raise UsageError(f"--since {fmt_minute(when)} UTC: no candle has closed since then",
                         key="--since")
    return ms // step * step


def _ranges(span: tuple[int, int] | None, since: int | None, step: int,
            now: int) -> list[tuple[int | None, int | None]]:
    """(start, end) open-time ranges to download, given the stored (first, last) span."""
    if span is None:
        return [(since, None)]
    first, last = span
    out: list[tuple[int | None, int | None]] = []
    if since is not None and since < first:
        out.append((since, first - step))
    if last + 2 * step <= now:  # the next candle has closed: worth a request
        out.append((last + step, None))
    return out


def _span(df: pl.DataFrame) -> tuple[int, int] | None:
    if df.height == 0:
        return None
    ms = df.get_column("open_time").dt.epoch("ms")
    return int(ms.min()), int(ms.max())  # type: ignore[arg-type]


def _write(path: Path, df: pl.DataFrame) -> None:
    buf = io.BytesIO()
    path.parent.mkdir(parents=True, exist_ok=True)  # futures/ for a futures pair
    df.drop("symbol").rename({"open_time": "date"}).write_ipc(buf, compression="zstd")
    # 0644: the store is data the user may share with freqtrade, not botopt's private state.
    atomic_write_bytes(path, buf.getvalue(), mode=0o644)


def _remove_stray_temporaries(path: Path) -> None:
    # atomic_write_bytes leaves ".{name}.*.tmp" only when a writer died before its rename;
    # under the lock nobody else is writing this file, so they are safe to delete.
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            log.info("removed %s left by an interrupted fetch", tmp)
        except OSError:
            pass


def plan_fetch(config: Config, symbols: Sequence[str], interval: str | None = None, *,
               since: datetime | str | None = None, now_ms: int | None = None) -> dict[str, int]:
    """An estimate of the candles ``fetch_to_store`` will download per symbol (for a
    progress bar's total). Reads only the stored files; no lock, no network."""
    interval = interval or config.data.interval
    step = interval_ms(interval)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    data_dir = _data_dir(config, create=False)
    since_ms = _since_ms(since, step, now)
    out = {}
    for sym in parse_symbols(symbols):
        src = existing_candle_file(data_dir, sym, interval)
        span = None
        if src is not None:
            try:
                span = _span(read_candle_file(src, sym))
            except DataError:
                span = None  # fetch_to_store will report it properly
        n = 0
        for start, end in _ranges(span, since_ms, step, now):
            if start is None:
                n += _DEFAULT_BATCH
            else:
                n += max(0, ((end if end is not None else now - step) - start) // step + 1)
        out[sym] = n
    return out


def fetch_to_store(config: Config, symbols: Sequence[str], interval: str | None = None, *,
                   since: datetime | str | None = None,
                   progress: Callable[[str, int], None] | None = None,
                   now_ms: int | None = None,
                   client: CandleClient | None = None,
                   lock_timeout: float = LOCK_TIMEOUT) -> dict[str, FetchResult]:
    """Bring ``{data_dir}/{SYMBOL}-{interval}.feather`` (futures:
    ``futures/{SYMBOL}-{interval}-futures.feather``) up to date from the exchange: Binance
    spot directly, any other exchange or futures through ccxt (``uses_ccxt``).

    ``since``: the first candle wanted (ISO 8601 or datetime; UTC if naive). Without it a
    symbol not stored yet gets Binance's latest 1,000 closed candles, and stored symbols only new
    ones; with it, missing older candles back to ``since`` are added too. Nothing stored is
    ever deleted. ``now_ms`` replaces the clock (only candles closed by then are kept).
    ``progress(symbol, rows)`` is called per page received. Symbols are processed in order
    and the first error stops the run (files already updated stay updated). A symbol whose
    file another fetch has locked for ``lock_timeout`` seconds is an error.
    """
    from filelock import FileLock, Timeout

    interval = interval or config.data.interval
    step = interval_ms(interval)
    syms = parse_symbols(symbols)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    since_ms = _since_ms(since, step, now)
    data_dir = _data_dir(config)
    client = client or _client(config, syms)
    names = {sym: client.resolve(sym) for sym in syms}  # every name checked before any write
    results: dict[str, FetchResult] = {}
    for sym in syms:
        api_symbol, pair = names[sym]
        path = store_path(data_dir, pair, interval)
        lock = FileLock(str(data_dir / f".{path.name}.lock"), timeout=lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise BotoptError(f"{path}: another botopt fetch has held its lock for "
                              f"{lock_timeout:g} s; try again later", file=str(path)) from None
        try:
            results[sym] = _fetch_one(client, (sym, api_symbol, pair), interval, step,
                                      data_dir, path, since_ms, now, progress)
        finally:
            lock.release()
    return results


def _client(config: Config, symbols: Sequence[str]) -> CandleClient:
    """Binance spot's direct client, or ccxt for any other exchange or futures (the
    ``botopt[exchanges]`` extra, imported only here)."""
    from ._ccxt import CcxtClient, uses_ccxt

    if uses_ccxt(config):
        return CcxtClient(config)
    futures = [s for s in symbols if ":" in s]
    if futures:
        raise UsageError(f"{futures[0]} is a futures pair: fetch futures with "
                         'data.trading_mode = "futures" (needs '
                         "pip install 'botopt[exchanges]')", symbol=futures[0],
                         key="data.trading_mode")
    return BinanceClient(config.binance, state_dir=state_dir(config, "binance"))


def _fetch_one(client: CandleClient, names: tuple[str, str, str], interval: str, step: int,
               data_dir: Path, path: Path, since_ms: int | None, now: int,
               progress: Callable[[str, int], None] | None) -> FetchResult:
    import polars as pl

    sym, api_symbol, pair = names
    _remove_stray_temporaries(path)
    src = existing_candle_file(data_dir, pair, interval)
    old = read_candle_file(src, sym) if src is not None else None
    if old is not None and old.height:
        # Never rewrite a file we cannot vouch for: the user must see what is wrong with it.
        validate_candles(old, symbol=sym, interval=interval, source=str(src))
    span = _span(old) if old is not None else None
    pages = (lambda n: progress(sym, n)) if progress is not None else None
    parts = [old] if old is not None else []
    for start, end in _ranges(span, since_ms, step, now):
        if end is None:
            # Bounded by the last closed candle: a replay (now_ms) must not see the future,
            # and without a start Binance then gives its latest 1,000 *closed* candles.
            end = now - step
        try:
            got = client.klines(api_symbol, interval, start_ms=start, end_ms=end, now_ms=now,
                                progress=pages)
        except KeyboardInterrupt as exc:
            # Ctrl-C in a long download: keep the pages received, if they extend the stored
            # candles without a hole (a back-fill cut short would leave one for good).
            partial = getattr(exc, "partial", None)
            if partial is not None and partial.height and (span is None or start == span[1]
                                                           + step):
                kept = _merge([*parts, partial.with_columns(pl.lit(sym).alias("symbol"))])
                validate_candles(kept, symbol=sym, interval=interval, source=client.label)
                _write(path, kept)
                log.warning("%s: interrupted; kept the %d candle(s) downloaded", sym,
                            partial.height)
            raise
        parts.append(got.with_columns(pl.lit(sym).alias("symbol")))
    merged = _merge(parts) if parts else None
    if merged is None or merged.height == 0:
        after = "" if since_ms is None else \
            f" since {datetime.fromtimestamp(since_ms / 1000, timezone.utc):%Y-%m-%d %H:%M} UTC"
        raise DataError(f"{client.label} has no closed {interval} candles for {sym}{after}",
                        symbol=sym, source=client.label)
    validate_candles(merged, symbol=sym, interval=interval, source=client.label)
    before = old.height if old is not None else 0
    added = merged.height - before
    if added or src != path:
        _write(path, merged)
        if src is not None and src != path:
            log.info("%s: carried %s over into %s (the old file is left as it was)", sym,
                     src.name, path.name)
    times = merged.get_column("open_time")
    log.info("%s: %d new %s candle(s), %d stored", sym, added, interval, merged.height)
    return FetchResult(sym, interval, added, merged.height, times[0], times[-1], path)


def _merge(parts: list[pl.DataFrame]) -> pl.DataFrame:
    import polars as pl

    return pl.concat(parts, how="vertical").unique("open_time", keep="first").sort("open_time")
