"""The canonical candle frame: loading from the sources, validation, and the as-of cut.

Every command that reads candles goes through ``load_candles`` so that validation and the
"only closed candles" rule are applied once, the same way, whatever the source.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botopt.core._config import INTERVALS, Config
from botopt.core.errors import DataError, UnknownSymbolError, UsageError

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("botopt.candles")

CANDLE_COLUMNS = ("symbol", "open_time", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
FILE_SUFFIXES = ("feather", "parquet", "csv")
# 1-40 characters: longer than any listed pair, short enough to be a file name.
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]{1,40}$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def interval_ms(interval: str) -> int:
    """Length of a candle interval in milliseconds ("5m" -> 300000)."""
    if interval not in INTERVALS:
        raise UsageError(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]


def parse_symbols(symbols: str | Iterable[str]) -> list[str]:
    """Normalise a comma-separated list (or iterable) of symbols: upper-case, unique, valid."""
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    out: list[str] = []
    for raw in items:
        for part in str(raw).split(","):
            sym = part.strip().upper()
            if not sym:
                continue
            if not _SYMBOL_RE.match(sym):
                shown = part.strip() if len(part.strip()) <= 50 else part.strip()[:47] + "..."
                raise UsageError(f"invalid symbol {shown!r}: use up to 40 letters, digits and "
                                 "_ (e.g. BTCUSDT or ETH_BTC)")
            if sym not in out:
                out.append(sym)
    if not out:
        raise UsageError("no symbols given (e.g. --symbols BTCUSDT,ETHUSDT)")
    return out


def parse_as_of(value: str | datetime | None) -> datetime | None:
    """Parse --as-of: ISO 8601 (naive means UTC) or epoch seconds. Returns an aware UTC time."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None
    text = value.strip()
    try:
        if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), tz=timezone.utc)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
        # In UTC a time near year 9999 can overflow (9999-12-31T23:59-05:00).
        return (dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None
                else dt.astimezone(timezone.utc))
    except (ValueError, OverflowError):
        raise UsageError(f"invalid --as-of {value[:60]!r}: use ISO 8601, e.g. "
                         "2018-01-20T12:00:00Z") from None


def _to_canonical(df: pl.DataFrame, symbol: str, where: str) -> pl.DataFrame:
    import polars as pl

    time_col = "open_time" if "open_time" in df.columns else "date" if "date" in df.columns \
        else None
    if time_col is None:
        raise DataError(f"{where}: no 'date' or 'open_time' column (columns: "
                        f"{', '.join(df.columns)})")
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
    t = df.get_column(time_col)
    if t.dtype == pl.String:
        try:
            t = t.str.to_datetime(time_zone="UTC", time_unit="ms")
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{where}: column {time_col!r} has unparseable times") from exc
    elif t.dtype.is_integer():
        # Integers are epoch milliseconds, as Binance and freqtrade's JSON store them.
        t = pl.from_epoch(t, time_unit="ms").dt.replace_time_zone("UTC")
    elif isinstance(t.dtype, pl.Datetime):
        t = t.dt.replace_time_zone("UTC") if t.dtype.time_zone is None \
            else t.dt.convert_time_zone("UTC")
    else:
        raise DataError(f"{where}: column {time_col!r} has type {t.dtype}, expected a time")
    try:
        return pl.DataFrame({
            "symbol": pl.Series([symbol] * df.height, dtype=pl.String),
            "open_time": t.dt.cast_time_unit("ms"),
            **{c: df.get_column(c).cast(pl.Float64) for c in
               ("open", "high", "low", "close", "volume")},
        })
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{where}: non-numeric price or volume values") from exc


def existing_candle_file(data_dir: Path, symbol: str, interval: str) -> Path | None:
    """The symbol's file in the first format found (feather, parquet, csv), or None."""
    for suffix in FILE_SUFFIXES:
        p = data_dir / f"{symbol}-{interval}.{suffix}"
        if p.is_file():
            return p
    return None


def find_candle_file(data_dir: Path, symbol: str, interval: str) -> Path:
    p = existing_candle_file(data_dir, symbol, interval)
    if p is not None:
        return p
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    raise UnknownSymbolError(
        f"symbol {symbol} not found in {data_dir} "
        f"(looked for {symbol}-{interval}.feather, .parquet, .csv)")


def read_candle_file(path: Path, symbol: str) -> pl.DataFrame:
    """Read a freqtrade-layout file into the canonical frame (not yet validated)."""
    import polars as pl

    try:
        if path.suffix == ".feather":
            raw = pl.read_ipc(path)
        elif path.suffix == ".parquet":
            raw = pl.read_parquet(path)
        else:
            raw = pl.read_csv(path, try_parse_dates=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: cannot read candles ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return _to_canonical(raw, symbol, str(path))


def validate_candles(df: pl.DataFrame, *, symbol: str, interval: str,
                     source: str | None = None) -> None:
    """Raise DataError naming symbol, source and (1-based data) row for the first defect.

    Gaps (missing candles) are allowed: they are real and are logged at debug level only.
    """
    import polars as pl

    where = f"{symbol} ({source})" if source else symbol
    if df.height == 0:
        raise DataError(f"{where}: no candles")
    step = interval_ms(interval)
    ms = pl.col("open_time").dt.epoch("ms")
    checks: list[tuple[pl.Expr, str]] = [
        (ms.diff() < 0, "open times are not sorted ascending"),
        (ms.diff() == 0, "duplicate open time"),
    ]
    for col in PRICE_COLUMNS:
        checks.append((pl.col(col).is_nan() | pl.col(col).is_null(), f"{col} is NaN or missing"))
        checks.append((pl.col(col) <= 0, f"{col} is not positive"))
    checks += [
        (pl.col("volume").is_nan() | pl.col("volume").is_null(), "volume is NaN or missing"),
        (pl.col("volume") < 0, "volume is negative"),
        (pl.col("high") < pl.max_horizontal("open", "close"), "high is below max(open, close)"),
        (pl.col("low") > pl.min_horizontal("open", "close"), "low is above min(open, close)"),
        ((ms % step) != 0, f"open time is not on a {interval} boundary (wrong interval?)"),
    ]
    masks = df.select(
        [expr.fill_null(False).alias(f"c{i}") for i, (expr, _) in enumerate(checks)])
    anyhit = masks.select(pl.all().any()).row(0)
    for i, (_, what) in enumerate(checks):
        if anyhit[i]:
            row = int(masks.get_column(f"c{i}").arg_true()[0])
            t = df.get_column("open_time")[row]
            raise DataError(f"{where}: row {row + 1} ({t:%Y-%m-%d %H:%M} UTC): {what}")
    if log.isEnabledFor(logging.DEBUG):
        diffs = df.get_column("open_time").dt.epoch("ms").diff().drop_nulls()
        gaps = diffs.filter(diffs > step)
        if gaps.len():
            n, missing = gaps.len(), int(((gaps // step) - 1).sum())
            log.debug("%s: %d gap(s), %d missing candle(s); not filled", where, n, missing)


def _sample_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("botopt.sample_data")))


def _load_one(symbol: str, config: Config, end_ms: int | None,
              limit: int | None) -> tuple[pl.DataFrame, str]:
    interval = config.data.interval
    source = config.data.source
    if source == "binance":
        from botopt.core._binance import BinanceClient

        step = interval_ms(interval)
        start = None if limit is None or end_ms is None else end_ms - (limit + 1) * step
        df = BinanceClient(config.binance).klines(
            symbol, interval, start_ms=start, end_ms=end_ms, now_ms=end_ms)
        return df, "binance"
    data_dir = _sample_dir() if source == "sample" else config.data.data_dir
    assert data_dir is not None  # config validation guarantees a dir for "local"
    path = find_candle_file(Path(data_dir), symbol, interval)
    return read_candle_file(path, symbol), str(path)


def load_candles(
    symbols: Sequence[str],
    *,
    config: Config,
    as_of: datetime | str | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """Load, validate and concatenate candles for ``symbols``.

    Only closed candles are kept: open_time + interval <= as_of (default: now). ``limit`` keeps
    the last ``limit`` closed candles of each symbol. Raises DataError/UnknownSymbolError.
    """
    import polars as pl

    syms = parse_symbols(symbols)
    interval = config.data.interval
    step = interval_ms(interval)
    cut = parse_as_of(as_of) or datetime.now(timezone.utc)
    end_ms = int(cut.timestamp() * 1000)
    frames = []
    for sym in syms:
        df, where = _load_one(sym, config, end_ms, limit)
        validate_candles(df, symbol=sym, interval=interval, source=where)
        closed = df.filter(
            (pl.col("open_time").dt.epoch("ms") + step) <= end_ms)
        if closed.height == 0:
            first = df.get_column("open_time")[0]
            raise DataError(f"{sym} ({where}): no candle closed by {cut:%Y-%m-%d %H:%M} UTC "
                            f"(data starts {first:%Y-%m-%d %H:%M} UTC)")
        if limit is not None and closed.height > limit:
            closed = closed.tail(limit)
        frames.append(closed)
    return pl.concat(frames, how="vertical")


def last_closed(candles: pl.DataFrame) -> list[dict[str, Any]]:
    """Per symbol, the last closed candle's open time and close (input order kept)."""
    import polars as pl

    last = candles.group_by("symbol", maintain_order=True).agg(
        pl.col("open_time").last(), pl.col("close").last())
    return last.to_dicts()
