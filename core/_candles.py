"""The canonical candle frame: loading from the sources, validation, and the as-of cut.

Every command that reads candles goes through ``load_candles`` so that validation and the
"only closed candles" rule are applied once, the same way, whatever the source.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from botopt.core._config import INTERVALS, Config
from botopt.core.errors import DataError, UnknownSymbolError, UsageError

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("botopt.candles")

CANDLE_COLUMNS = ("symbol", "open_time", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
FILE_SUFFIXES = ("feather", "parquet", "csv")
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]+$")
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
                raise UsageError(f"invalid symbol {part.strip()!r}: use letters, digits and _ "
                                 "(e.g. BTCUSDT or ETH_BTC)")
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
    except (ValueError, OverflowError):
        raise UsageError(f"invalid --as-of {value!r}: use ISO 8601, e.g. 2018-01-20T12:00:00Z"
                         ) from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


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


# Beyond these no market quotes or trades (BTC in satoshis is ~1e13, whole-exchange volumes of
# meme coins ~1e16): a larger value is a unit error or garbage, and squared in a variance it
# would overflow to inf and silently turn a feature into NaN.
MAX_PRICE = 1e15
MAX_VOLUME = 1e20


def _checks(interval: str) -> list[tuple[pl.Expr, str]]:
    """(defect mask, what is wrong) for a canonical frame holding one or more symbols, sorted
    as given. The order is the order of the questions a user would ask: a missing time makes
    every time comparison meaningless, so it comes first."""
    import polars as pl

    step = interval_ms(interval)
    ms = pl.col("open_time").dt.epoch("ms")
    # diff() across a symbol boundary compares two files: masked, not a defect.
    same = pl.col("symbol") == pl.col("symbol").shift(1)
    diff = pl.when(same).then(ms.diff())
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("open_time").is_null(), "open time is missing"),
        (diff < 0, "open times are not sorted ascending"),
        (diff == 0, "duplicate open time"),
    ]
    for col in PRICE_COLUMNS:
        x = pl.col(col)
        checks.append((x.is_null() | ~x.is_finite(), f"{col} is not a finite number"))
        checks.append((x <= 0, f"{col} is not positive"))
        checks.append((x > MAX_PRICE, f"{col} is above {MAX_PRICE:g} (wrong unit?)"))
    v = pl.col("volume")
    checks += [
        (v.is_null() | ~v.is_finite(), "volume is not a finite number"),
        (v < 0, "volume is negative"),
        (v > MAX_VOLUME, f"volume is above {MAX_VOLUME:g} (wrong unit?)"),
        (pl.col("high") < pl.max_horizontal("open", "close"), "high is below max(open, close)"),
        (pl.col("low") > pl.min_horizontal("open", "close"), "low is above min(open, close)"),
        ((ms % step) != 0, f"open time is not on a {interval} boundary (wrong interval?)"),
    ]
    return checks


def validate_frame(df: pl.DataFrame, *, interval: str,
                   sources: Mapping[str, str] | None = None) -> None:
    """Validate a canonical frame of any number of symbols in one pass.

    Raises DataError naming the symbol, its source (file or exchange) and the 1-based row of
    that symbol's data for the first defect found. Gaps (missing candles) are allowed: they
    are real and are logged at debug level only.
    """
    import polars as pl

    sources = sources or {}
    if df.height == 0:
        raise DataError("no candles")
    checks = _checks(interval)
    masks = df.select([expr.fill_null(False).alias(f"c{i}")
                       for i, (expr, _) in enumerate(checks)])
    anyhit = masks.select(pl.all().any()).row(0)
    for i, (_, what) in enumerate(checks):
        if not anyhit[i]:
            continue
        at = int(masks.get_column(f"c{i}").arg_true()[0])
        symbol = df.get_column("symbol")[at]
        start = int(df.get_column("symbol").head(at + 1).eq(symbol).arg_true()[0])
        # rows of one symbol are contiguous in a frame built by load_candles
        row = at - start + 1
        t = df.get_column("open_time")[at]
        when = f" ({t:%Y-%m-%d %H:%M} UTC)" if t is not None else " (no time)"
        src = sources.get(symbol)
        where = f"{symbol} ({src})" if src else symbol
        raise DataError(f"{where}: row {row}{when}: {what}")
    if log.isEnabledFor(logging.DEBUG):
        _log_gaps(df, interval)
    empty = [s for s in sources if s not in set(df.get_column("symbol").unique().to_list())]
    if empty:
        raise DataError(f"{empty[0]} ({sources[empty[0]]}): no candles")


def _log_gaps(df: pl.DataFrame, interval: str) -> None:
    import polars as pl

    step = interval_ms(interval)
    missing = pl.col("open_time").dt.epoch("ms").diff() // step - 1
    gaps = df.group_by("symbol", maintain_order=True).agg(
        (missing > 0).sum().alias("gaps"), missing.clip(lower_bound=0).sum().alias("missing"))
    for sym, n, m in gaps.iter_rows():
        if n:
            log.debug("%s: %d gap(s), %d missing candle(s); not filled", sym, n, m)


def validate_candles(df: pl.DataFrame, *, symbol: str, interval: str,
                     source: str | None = None) -> None:
    """Validate one symbol's canonical frame (see ``validate_frame``)."""
    if df.height == 0:
        raise DataError(f"{symbol} ({source}): no candles" if source else f"{symbol}: no candles")
    validate_frame(df, interval=interval, sources={symbol: source} if source else None)


# The bundled sample data ends with the candle that opens 2026-09-30 23:55 UTC. Its runs use
# this clock, not the wall clock: against today every sample candle would be stale.
# tests/test_sample_data.py checks it against the files.
_SAMPLE_CLOCK = datetime(2026, 10, 1, tzinfo=timezone.utc)


def sample_clock() -> datetime:
    """The clock of sample-data runs: the close of the last bundled candle."""
    return _SAMPLE_CLOCK


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

    Only closed candles are kept: open_time + interval <= as_of (default: now, or the
    sample data's clock for the sample source). ``limit`` keeps
    the last ``limit`` closed candles of each symbol. Raises DataError/UnknownSymbolError.
    The files are stacked first and validated as one frame: one pass of the checks, whatever
    the number of symbols.
    """
    import polars as pl

    syms = parse_symbols(symbols)
    interval = config.data.interval
    step = interval_ms(interval)
    cut = parse_as_of(as_of) or (sample_clock() if config.data.source == "sample"
                                 else datetime.now(timezone.utc))
    end_ms = int(cut.timestamp() * 1000)
    parts, sources = [], {}
    for sym in syms:
        df, sources[sym] = _load_one(sym, config, end_ms, limit)
        if df.height == 0:
            raise DataError(f"{sym} ({sources[sym]}): no candles")
        parts.append(df)
    frame = pl.concat(parts, how="vertical", rechunk=False)
    del parts
    validate_frame(frame, interval=interval, sources=sources)
    closed = frame.filter((pl.col("open_time").dt.epoch("ms") + step) <= end_ms)
    counts = dict(closed.group_by("symbol").len().iter_rows())
    for sym in syms:
        if not counts.get(sym):
            first = frame.filter(pl.col("symbol") == sym).get_column("open_time")[0]
            raise DataError(f"{sym} ({sources[sym]}): no candle closed by "
                            f"{cut:%Y-%m-%d %H:%M} UTC (data starts {first:%Y-%m-%d %H:%M} UTC)")
    del frame
    if limit is not None and any(n > limit for n in counts.values()):
        closed = closed.filter(
            pl.int_range(pl.len()).over("symbol") >= pl.len().over("symbol") - limit)
    return closed
