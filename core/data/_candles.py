"""The canonical candle frame: loading from the sources, validation, and the as-of cut.

Every command that reads candles goes through ``load_candles`` so that validation and the
"only closed candles" rule are applied once, the same way, whatever the source.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..base._codec import json_loads
from ..base._config import Config, interval_ms
from ..base._symbols import binance_symbol, is_futures
from ..errors import ConfigError, DataError, UnknownSymbolError, UsageError, kind_of
from ._binance import BinanceClient

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("botopt.candles")

PRICE_COLUMNS = ("open", "high", "low", "close")
# Read in this order when a symbol has several: freqtrade's four OHLCV formats, then the plain
# CSV botopt has always accepted. freqtrade's fifth format, hdf5 (.h5), needs pytables.
FILE_SUFFIXES = ("feather", "parquet", "json", "json.gz", "csv")
UNSUPPORTED_SUFFIXES = {"h5": "hdf5"}
# BTCUSDT / ETH_BTC (file-style), BTC/USDT (freqtrade spot pair), XRP/USDT:USDT (futures);
# '-' inside a name as freqtrade keeps it (BTC-PERP, dated futures BTC/USD:BTC-210625), never
# first: a leading '-' would read as an option.
_SYMBOL_RE = re.compile(r"^(?:[A-Z0-9][A-Z0-9_-]*|[A-Z0-9][A-Z0-9-]*/[A-Z0-9][A-Z0-9-]*"
                        r"(?::[A-Z0-9][A-Z0-9-]*)?)$")
# Longer than any listed pair, short enough to be a file name.
_MAX_SYMBOL = 40
# freqtrade's candle types that live next to futures candles but are not OHLCV of the pair.
_NOT_CANDLES = {"mark": "mark prices", "index": "index prices",
                "premiumIndex": "premium index", "funding_rate": "funding rates"}



def parse_symbols(symbols: str | Iterable[str]) -> list[str]:
    """Normalise a comma-separated list (or iterable) of symbols: upper-case, unique, valid.

    Accepted: Binance's BTCUSDT, file-style ETH_BTC, and freqtrade's pairs BTC/USDT (spot) and
    XRP/USDT:USDT (futures). Each is kept as typed (upper-cased) so output shows it that way.
    """
    if isinstance(symbols, (bytes, bytearray)) or not isinstance(symbols, (str, Iterable)):
        raise UsageError(f"symbols must be text or a list of texts, not {kind_of(symbols)}",
                         key="--symbols")
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    odd = [x for x in items if not isinstance(x, str)]
    if odd:  # bytes would be read as their numbers: b"5m" was the symbols 53 and 109
        raise UsageError(f"a symbol must be text, not {kind_of(odd[0])}", key="--symbols")
    seen: dict[str, None] = {}
    files: dict[str, str] = {}  # candle file name -> the spelling that named it
    for raw in items:
        for part in str(raw).split(","):
            sym = part.strip().upper()
            if not sym:
                continue
            if len(sym) > _MAX_SYMBOL or not _SYMBOL_RE.match(sym):
                shown = part.strip() if len(part.strip()) <= 50 else part.strip()[:47] + "..."
                raise UsageError(f"invalid symbol {shown!r}: use up to {_MAX_SYMBOL} characters "
                                 "like BTCUSDT, ETH_BTC, freqtrade's ETH/BTC or BTC-PERP, or "
                                 "XRP/USDT:USDT for futures", symbol=shown, key="--symbols")
            _one_spelling(files, sym)
            seen[sym] = None  # ordered and unique; a list's "in" was quadratic
    if not seen:
        raise UsageError("no symbols given (e.g. --symbols BTCUSDT,ETH/BTC)", key="--symbols")
    return list(seen)



def _one_spelling(files: dict[str, str], sym: str) -> None:
    """Refuse ``sym`` when another spelling of its pair was named (``files``: candle file
    name -> spelling, filled here). ETH/BTC and ETH_BTC read one file: as two symbols the
    pair was judged beside itself (its own correlation blocking the copy) and counted
    twice."""
    # the file a local source reads (spot or futures/), the same as candle_file_stem's
    other = files.setdefault(f"{is_futures(sym)}:{pair_to_filename(sym)}", sym)
    if other != sym:
        raise UsageError(f"{other} and {sym} are the same pair: name it once", symbol=sym,
                         key="--symbols")


# A symbols file is a list of names: anything bigger is not one (10,000 pairs take ~150 KB).
_MAX_SYMBOLS_FILE = 4 << 20


def resolve_symbols(arg: str | None, config: Config) -> list[str]:
    """The symbols a command runs on, from what ``--symbols`` was given: None (the
    configured ``data.symbols``), ``all`` (every pair of ``data.interval`` in the data
    directory), ``@FILE`` (one per line with ``#`` comments, or freqtrade's pairs JSON
    ``["BTC/USDT", ...]`` / ``{"pairs": [...]}``), or a comma-separated list. A file lifts
    the command line's length limit (10,000 pairs are about 110 KB)."""
    if arg is None:
        return parse_symbols(config.data.symbols)
    text = arg.strip()
    if text.lower() == "all":
        return _all_pairs(config)
    if text.startswith("@"):
        return _symbols_file(Path(text[1:]).expanduser())
    return parse_symbols(arg)


def _all_pairs(config: Config) -> list[str]:
    """Every candle file of the interval in the data directory (spot and futures), as the
    names that find those files again, sorted."""
    if config.data.source == "binance":
        raise UsageError("--symbols all lists the data directory, and data.source is "
                         "binance: give the symbols, or use a local data directory",
                         key="--symbols")
    data_dir = Path(_sample_dir() if config.data.source == "sample"
                    else config.data.data_dir or ".")
    interval = config.data.interval
    found: set[str] = set()
    for sub, futures in ((data_dir, False), (data_dir / "futures", True)):
        try:
            names = os.listdir(sub)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UsageError(f"--symbols all: cannot list {sub}: {exc.strerror}",
                             file=str(sub), key="--symbols") from exc
        for name in names:
            parsed = _parse_name(name)
            if parsed is None or parsed[1] != interval or parsed[3] in UNSUPPORTED_SUFFIXES:
                continue
            pair, _, ctype, _ = parsed
            if ctype == ("futures" if futures else None):
                found.add(_pair_from_filename(pair, futures=True) if futures else pair)
    if not found:
        raise UsageError(f"--symbols all: no {interval} candle files in {data_dir}",
                         file=str(data_dir), key="--symbols")
    try:
        return parse_symbols(sorted(found))
    except UsageError as exc:
        raise UsageError(f"--symbols all: {data_dir}: {exc}",
                         file=str(data_dir), key="--symbols") from exc


def _symbols_file(path: Path) -> list[str]:
    """``@FILE``'s symbols; errors name the file and, for a bad name, its line."""

    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_SYMBOLS_FILE + 1)
        if len(raw) > _MAX_SYMBOLS_FILE:
            raise UsageError(f"symbols file {path}: larger than {_MAX_SYMBOLS_FILE >> 20} MiB; "
                             "it should list one symbol per line", file=str(path), key="--symbols")
        text = raw.decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"symbols file {path}: {exc.strerror or exc}",
                         file=str(path), key="--symbols") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"symbols file {path}: not UTF-8 text (byte {exc.start})",
                         file=str(path), key="--symbols") from exc
    if text.lstrip().startswith(("[", "{")):
        try:
            doc = json_loads(text)
        except ValueError as exc:
            raise UsageError(f"symbols file {path}: not valid JSON: {exc}",
                             file=str(path), key="--symbols") from exc
        pairs = doc.get("pairs") if isinstance(doc, dict) else doc
        if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
            raise UsageError(f'symbols file {path}: JSON must be a list of pair names or '
                             '{"pairs": [...]}', file=str(path), key="--symbols")
        lines = [(k + 1, p) for k, p in enumerate(pairs)]
        where = "item"
    else:
        lines = [(k + 1, line.split("#", 1)[0]) for k, line in enumerate(text.splitlines())]
        where = "line"
    out: dict[str, None] = {}  # ordered and unique, without a quadratic "in list"
    files: dict[str, str] = {}  # candle file name -> the spelling that named it
    for k, item in lines:
        if not item.strip():
            continue
        try:
            for sym in parse_symbols(item):
                _one_spelling(files, sym)  # across the file's lines too
                out[sym] = None
        except UsageError as exc:
            raise UsageError(f"symbols file {path}, {where} {k}: {exc}",
                             file=str(path), key="--symbols") from exc
    if not out:
        raise UsageError(f"symbols file {path}: no symbols in it", file=str(path), key="--symbols")
    return list(out)


def pair_to_filename(symbol: str) -> str:
    """freqtrade's rule (freqtrade.misc.pair_to_filename): these characters become ``_``."""
    for ch in "/ .@$+:":
        symbol = symbol.replace(ch, "_")
    return symbol



def candle_file_stem(symbol: str, interval: str) -> str:
    """The file name without its format suffix, relative to the data directory, as freqtrade
    names it: ``ETH_BTC-5m``, or ``futures/XRP_USDT_USDT-5m-futures`` for a futures pair."""
    name = f"{pair_to_filename(symbol)}-{interval}"
    return f"futures/{name}-futures" if is_futures(symbol) else name


def parse_as_of(value: str | datetime | None) -> datetime | None:
    """Parse --as-of: ISO 8601 (naive means UTC) or epoch seconds. Returns an aware UTC time."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None
    if not isinstance(value, str):  # a date, a number: a time or text is asked for
        raise UsageError(f"invalid --as-of: a datetime or ISO 8601 text, not "
                         f"{kind_of(value)}", key="--as-of")
    text = value.strip()
    try:
        epoch = re.fullmatch(r"(\d{9,11})(?:\.(\d+))?", text)
        if epoch:
            # whole seconds and microseconds, the rest cut off (as ISO text's digits past
            # the sixth are): through a float, 100 ns before a close rounded up to it and
            # answered from the next candle (sweep G)
            micros = int(((epoch.group(2) or "") + "000000")[:6])
            return datetime.fromtimestamp(int(epoch.group(1)), tz=timezone.utc) + \
                timedelta(microseconds=micros)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except (ValueError, OverflowError):
        raise UsageError(f"invalid --as-of {value[:60]!r}: use ISO 8601, e.g. "
                         "2018-01-20T12:00:00Z", key="--as-of") from None
    try:
        return (dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None
                else dt.astimezone(timezone.utc))
    except (ValueError, OverflowError):
        # valid text, but its UTC time is past the calendar (9999-12-31T23:59-05:00)
        raise UsageError(f"--as-of {value[:60]!r} is outside the calendar in UTC (years "
                         "1 to 9999)", key="--as-of") from None


def _to_canonical(df: pl.DataFrame, symbol: str, where: str) -> pl.DataFrame:
    import polars as pl

    return _canonical(df, pl.Series([symbol] * df.height, dtype=pl.String), where)


def _canonical(df: pl.DataFrame, symbol: pl.Series, where: str) -> pl.DataFrame:
    """The canonical frame of raw candles (one file's, or many files' stacked) whose symbol
    column is ``symbol``; ``where`` names the source in errors."""
    import polars as pl

    time_col = "open_time" if "open_time" in df.columns else "date" if "date" in df.columns \
        else None
    if time_col is None:
        raise DataError(f"{where}: no 'date' or 'open_time' column (columns: "
                        f"{', '.join(df.columns)})", file=where)
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}", file=where)
    t = _times(df, time_col, where)
    if time_col == "open_time" and "date" in df.columns:
        # Both: freqtrade's name and Binance's. Which one is the candle's time is a guess
        # when they disagree (open_time was taken in silence): said, not guessed.
        other = _times(df, "date", where)
        differ = t.ne_missing(other)
        if differ.any():
            row = int(differ.arg_true()[0])
            raise DataError(f"{where}: row {row + 1}: columns 'date' ({other[row]}) and "
                            f"'open_time' ({t[row]}) disagree; keep the one that is the "
                            "candle's open time", file=where, row=row + 1, key="date")
    for c in ("open", "high", "low", "close", "volume"):
        kind = df.schema[c]
        if not (kind.is_numeric() or kind in (pl.String, pl.Null)):
            # a cast would read true/false as 1/0, a date as its day count: never numbers
            raise DataError(f"{where}: column {c!r} holds {kind} values, not numbers",
                            file=where, key=c)
    try:
        return pl.DataFrame({
            "symbol": symbol,
            "open_time": t,
            **{c: df.get_column(c).cast(pl.Float64) for c in
               ("open", "high", "low", "close", "volume")},
        })
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{where}: non-numeric price or volume values", file=where) from exc


def _times(df: pl.DataFrame, time_col: str, where: str) -> pl.Series:
    """``time_col`` as UTC milliseconds, checked to lie in the calendar."""
    import polars as pl

    t = df.get_column(time_col)
    if t.dtype == pl.String:
        try:
            t = t.str.to_datetime(time_zone="UTC", time_unit="ms")
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{where}: column {time_col!r} has unparseable times",
                            file=where) from exc
    elif t.dtype.is_integer():
        # Integers are epoch milliseconds, as Binance and freqtrade's JSON store them.
        _in_calendar(t.cast(pl.Int64, strict=False), where, time_col, integers=True)
        t = pl.from_epoch(t, time_unit="ms").dt.replace_time_zone("UTC")
    elif t.dtype == pl.Datetime("ms", "UTC"):
        pass  # already canonical: no copy of the column (19 MB at 2,000 symbols)
    elif isinstance(t.dtype, pl.Datetime):
        t = t.dt.replace_time_zone("UTC") if t.dtype.time_zone is None \
            else t.dt.convert_time_zone("UTC")
    else:
        raise DataError(f"{where}: column {time_col!r} has type {t.dtype}, expected a time",
                        file=where)
    t = t.dt.cast_time_unit("ms")
    # the physical integers are the epoch ms: a view, not a copy of the column (96 MB at
    # 10,000 symbols)
    _in_calendar(t.to_physical(), where, time_col, integers=False)
    return t


# The calendar's ends in epoch ms (years 1 and 9999): a time past them cannot be shown or
# compared as a date, and integers in microseconds or nanoseconds read as milliseconds land
# there (year 50,000 and on). They were internal errors ("date value out of range").
_MAX_MS = 253_402_300_799_999
_MIN_MS = -62_135_596_800_000


def _in_calendar(ms: pl.Series, where: str, col: str, integers: bool) -> None:
    """Raise a DataError naming the row when a time (``ms``: epoch milliseconds, integers)
    lies outside the calendar."""
    import numpy as np

    lo, hi = ms.min(), ms.max()  # two reductions; the rows are searched only when needed
    if integers and lo is not None and 0 < lo and hi < 10**11:  # type: ignore[operator]
        # as milliseconds, every time before March 1973: epoch seconds (no market then)
        raise DataError(f"{where}: row 1: {col} {ms[0]} looks like epoch seconds (as "
                        "milliseconds every time is before 1973); botopt reads integer times "
                        "as epoch milliseconds, as Binance and freqtrade store them",
                        file=where, row=1)
    if lo is None or (_MIN_MS <= lo and hi <= _MAX_MS):  # type: ignore[operator]
        return
    bad = np.flatnonzero(((ms < _MIN_MS) | (ms > _MAX_MS)).fill_null(False).to_numpy())
    row = int(bad[0])
    value = ms[row]
    hint = (" (epoch microseconds or nanoseconds? botopt reads integer times as epoch "
            "milliseconds, as Binance and freqtrade store them)") if integers else ""
    raise DataError(f"{where}: row {row + 1}: {col} {value} ms is outside the "
                    f"calendar (years 1 to 9999){hint}", file=where, row=row + 1)


def _with_suffix(data_dir: Path, stem: str) -> Path | None:
    for suffix in FILE_SUFFIXES:
        p = data_dir / f"{stem}.{suffix}"
        if p.is_file():
            return p
    return None


@functools.lru_cache(maxsize=8)
def _split_names(data_dir: Path, interval: str, mtime_ns: int) -> dict[str, list[str]]:
    """{joined name: [BASE_QUOTE stems]} of the directory's candle files at ``interval``.

    One listing per directory state (its mtime is part of the key: adding or renaming a file
    changes it), not one per symbol: looking each of 2,000 symbols up by a glob over 2,000
    files was quadratic."""
    out: dict[str, set[str]] = {}
    tail = f"-{interval}."
    for name in os.listdir(data_dir):
        stem, sep, suffix = name.partition(tail)
        if sep and "_" in stem and suffix in FILE_SUFFIXES:
            out.setdefault(stem.replace("_", ""), set()).add(stem)
    return {k: sorted(v) for k, v in out.items()}


def existing_candle_file(data_dir: Path, symbol: str, interval: str) -> Path | None:
    """The symbol's candle file in the first readable format found, or None.

    freqtrade's name comes first (BTC/USDT and BTC_USDT read BTC_USDT-5m.*); an older botopt
    store's joined name (BTCUSDT-5m.*) is read when that is missing. Binance's BTCUSDT reads
    the one BASE_QUOTE file that joins to it (what fetch writes), else BTCUSDT-5m.*; two such
    files (A_BC and AB_C) are ambiguous, and an error.
    """
    if is_futures(symbol) or not data_dir.is_dir():
        return _with_suffix(data_dir, candle_file_stem(symbol, interval))
    joined = binance_symbol(symbol)
    if symbol != joined:  # typed with a separator: that is the name wanted
        return _with_suffix(data_dir, candle_file_stem(symbol, interval)) or \
            _with_suffix(data_dir, f"{joined}-{interval}")
    split = _split_names(data_dir, interval, data_dir.stat().st_mtime_ns).get(joined, [])
    if len(split) > 1:
        raise UsageError(f"symbol {symbol} matches several files in {data_dir} "
                         f"({', '.join(split)}); name one of them, e.g. --symbols {split[0]}",
                         symbol=symbol, file=str(data_dir))
    return (_with_suffix(data_dir, f"{split[0]}-{interval}") if split else None) or \
        _with_suffix(data_dir, f"{joined}-{interval}")


def _parse_name(name: str) -> tuple[str, str | None, str | None, str] | None:
    """(pair stem, interval, candle type, format) of a freqtrade file name, or None."""
    for suffix in (*FILE_SUFFIXES, *UNSUPPORTED_SUFFIXES):
        if name.endswith(f".{suffix}"):
            stem, fmt = name[: -len(suffix) - 1], suffix
            break
    else:
        return None
    if stem.endswith("-trades"):
        return stem[: -len("-trades")], None, "trades", fmt
    m = re.fullmatch(r"(.+)-(\d+[a-zA-Z]{1,2})(?:-([A-Za-z_]+))?", stem)
    return (m.group(1), m.group(2), m.group(3), fmt) if m else None


def classify_data_file(path: Path) -> tuple[str, str]:
    """(kind, explanation) of a file in a freqtrade data directory, from its name alone.

    kind is ``candles``, ``futures-candles``, ``unsupported`` (hdf5), ``not-candles`` (trades,
    mark prices, funding rates, ...) or ``other``. The explanation is one line for the user.
    """
    name = path.name
    parsed = _parse_name(name)
    if parsed is None:
        return "other", f"{name}: not a freqtrade candle file (PAIR-interval.format)"
    pair, interval, ctype, fmt = parsed
    if ctype == "trades":
        return "not-candles", (f"{name}: trades, not candles; never read (freqtrade "
                               "trades-to-ohlcv turns them into candles)")
    if ctype in _NOT_CANDLES:
        return "not-candles", f"{name}: {_NOT_CANDLES[ctype]}, not candles; never read"
    if ctype not in (None, "futures"):
        return "other", f"{name}: candle type {ctype!r} is not one botopt reads"
    if fmt in UNSUPPORTED_SUFFIXES:
        return "unsupported", (f"{name}: freqtrade's {UNSUPPORTED_SUFFIXES[fmt]} format, which "
                               "botopt does not read; convert it with freqtrade convert-data "
                               f"--format-from {UNSUPPORTED_SUFFIXES[fmt]} --format-to feather")
    if ctype == "futures":
        return "futures-candles", (f"{name}: {interval} futures candles, --symbols "
                                   f"{_pair_from_filename(pair, futures=True)}")
    return "candles", f"{name}: {interval} candles, --symbols {pair}"


def _pair_from_filename(stem: str, *, futures: bool) -> str:
    # freqtrade's own inverse (rebuild_pair_from_filename) guesses where the base ends, so
    # this is only used in hints, never to pick a file.
    parts = stem.split("_")
    if futures and len(parts) == 3:
        return f"{parts[0]}/{parts[1]}:{parts[2]}"
    return f"{parts[0]}/{'_'.join(parts[1:])}" if len(parts) >= 2 else stem


def _missing_hints(data_dir: Path, symbol: str, interval: str) -> tuple[list[str], Path | None]:
    """Files that look like the symbol's but are not usable candles; and an hdf5 twin."""
    base = pair_to_filename(symbol)
    loose = None if is_futures(symbol) else binance_symbol(symbol)
    hints: list[str] = []
    other_tf: list[str] = []
    h5: Path | None = None
    for folder in (data_dir, data_dir / "futures"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            parsed = _parse_name(p.name)
            if parsed is None or (parsed[0] != base and parsed[0].replace("_", "") != loose):
                continue
            pair, tf, ctype, _ = parsed
            kind, why = classify_data_file(p)
            rel = p.relative_to(data_dir)
            if kind == "unsupported" and tf == interval and \
                    (ctype == "futures") == is_futures(symbol):
                h5 = p
            elif kind == "futures-candles" and not is_futures(symbol):
                hints.append(f"{rel} holds futures candles: use --symbols "
                             f"{_pair_from_filename(pair, futures=True)}")
            elif kind == "candles" and is_futures(symbol):
                hints.append(f"{rel} holds spot candles: use --symbols "
                             f"{_pair_from_filename(pair, futures=False)}")
            elif kind in ("candles", "futures-candles"):
                if tf not in other_tf:
                    other_tf.append(str(tf))
            else:
                hints.append(why.replace(p.name, str(rel), 1))
    if other_tf:
        hints.insert(0, f"candles at {', '.join(other_tf)} (use --interval)")
    return hints, h5


def find_candle_file(data_dir: Path, symbol: str, interval: str) -> Path:
    """The symbol's candle file, or an error saying what is there instead."""
    p = existing_candle_file(data_dir, symbol, interval)
    if p is not None:
        return p
    if not data_dir.is_dir():
        if data_dir.exists():  # a file where the directory should be: the setting is wrong
            raise ConfigError(f"data directory {data_dir} is not a directory",
                              file=str(data_dir), key="data.data_dir")
        raise DataError(f"data directory not found: {data_dir}", symbol=symbol,
                        source=str(data_dir))
    stem = candle_file_stem(symbol, interval)
    for suffix in FILE_SUFFIXES:
        odd = data_dir / f"{stem}.{suffix}"
        if os.path.lexists(odd):  # there, and not a file to read: say that, not "missing"
            raise DataError(f"{odd} is not a regular file (a directory, a pipe or a broken "
                            "link?)", symbol=symbol, file=str(odd))
    hints, h5 = _missing_hints(data_dir, symbol, interval)
    if h5 is not None:
        raise DataError(f"symbol {symbol}: {h5} is in freqtrade's hdf5 format, which botopt "
                        "does not read; convert it with freqtrade convert-data --format-from "
                        f"hdf5 --format-to feather --datadir {data_dir}", symbol=symbol,
                        source=str(data_dir), file=str(h5))
    stem = candle_file_stem(symbol, interval)
    found = f"; found instead: {'; '.join(hints[:4])}" if hints else ""
    raise UnknownSymbolError(
        f"symbol {symbol} not found in {data_dir} (looked for {stem}.feather, .parquet, "
        f".json, .json.gz, .csv){found}", symbol=symbol, source=str(data_dir))


@functools.lru_cache(maxsize=8)
def _listing(data_dir: Path, mtime_ns: int) -> dict[str, bool]:
    """{name: is a file} of the directory's entries, for one directory state (as
    ``_split_names``): a run asks for its files several times (groups, keys, loading), and
    at 10,000 symbols each listing and its stat per file cost 70 ms. The entry's type comes
    with the listing (a stat only for a link)."""
    with os.scandir(data_dir) as entries:
        return {e.name: e.is_file() for e in entries}


def find_candle_files(data_dir: Path, symbols: Sequence[str], interval: str) -> list[Path]:
    """``find_candle_file`` for each symbol, from one listing of the directory instead of
    a few stats per symbol (0.2 s for 2,000 symbols, paid twice per run). The file chosen is
    a file by the listing; futures pairs, names typed with a separator, and anything not
    plainly there (missing, ambiguous, not a file) go to ``find_candle_file`` itself, with
    its errors."""
    try:
        mtime = data_dir.stat().st_mtime_ns
        split = _split_names(data_dir, interval, mtime)
        names = _listing(data_dir, mtime)
    except OSError:
        return [find_candle_file(data_dir, s, interval) for s in symbols]
    out = []
    for sym in symbols:
        found = None
        if not is_futures(sym) and binance_symbol(sym) == sym and len(split.get(sym, ())) < 2:
            for stem in [f"{x}-{interval}" for x in split.get(sym, ())] + [f"{sym}-{interval}"]:
                name = next((f"{stem}.{x}" for x in FILE_SUFFIXES if f"{stem}.{x}" in names),
                            None)
                if name is not None:
                    found = data_dir / name
                    break
        out.append(found if found is not None and names[found.name]
                   else find_candle_file(data_dir, sym, interval))
    return out


def _read_json_rows(path: Path) -> pl.DataFrame:
    """freqtrade's json/jsongz: a list of [ms, open, high, low, close, volume] rows."""
    import gzip

    import polars as pl

    blob = path.read_bytes()
    if path.name.endswith(".gz"):
        blob = gzip.decompress(blob)
    rows = json_loads(blob)
    if not isinstance(rows, list):
        raise ValueError(f"expected a list of [date, open, high, low, close, volume] rows, "
                         f"got {type(rows).__name__}")
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) < 6 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in r[:6]):
            raise ValueError(f"row {i + 1} is not [date, open, high, low, close, volume]: "
                             f"{str(r)[:60]}")
        if not -2**63 <= r[0] < 2**63:  # past 64 bits: an internal error in polars
            raise ValueError(f"row {i + 1}: date {str(r[0])[:30]} is not a time in epoch "
                             "milliseconds (years 1 to 9999)")
    cols = list(zip(*(r[:6] for r in rows), strict=True)) if rows else [()] * 6
    return pl.DataFrame({
        "date": pl.Series(cols[0], dtype=pl.Int64),
        **{c: pl.Series(v, dtype=pl.Float64) for c, v in
           zip(("open", "high", "low", "close", "volume"), cols[1:], strict=True)}})


def read_candle_file(path: Path, symbol: str) -> pl.DataFrame:
    """Read one candle file (any supported format) into the canonical frame, not yet
    validated. An empty, truncated or corrupt file is a DataError naming it as such."""
    import polars as pl

    name = path.name
    fmt = next((s for s in FILE_SUFFIXES if name.endswith(f".{s}")), path.suffix.lstrip("."))
    if fmt in UNSUPPORTED_SUFFIXES:
        raise DataError(f"{path}: freqtrade's {UNSUPPORTED_SUFFIXES[fmt]} format, which botopt "
                        "does not read; convert it with freqtrade convert-data --format-from "
                        f"{UNSUPPORTED_SUFFIXES[fmt]} --format-to feather", symbol=symbol,
                        file=str(path))
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: cannot read candles: the file is empty (0 bytes); "
                            "delete it and download the data again", symbol=symbol,
                            file=str(path))
        if fmt == "feather":
            raw = pl.read_ipc(path)
        elif fmt == "parquet":
            raw = pl.read_parquet(path)
        elif fmt in ("json", "json.gz"):
            raw = _read_json_rows(path)
        else:
            _ends_whole(path, symbol)
            raw = pl.read_csv(path, try_parse_dates=False)
    except DataError:
        raise
    except (OSError, EOFError, ValueError, pl.exceptions.PolarsError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read candles: not a valid {fmt} file, corrupt or "
                        f"truncated ({type(exc).__name__}: {detail[:120]})", symbol=symbol,
                        file=str(path)) from exc
    return _to_canonical(raw, symbol, str(path))


def _ends_whole(path: Path, symbol: str) -> None:
    """A CSV's last line must end: one cut inside its last field (a writer still appending,
    a copy interrupted) parsed as a shorter number (a volume of 361.48 for 361.481159) and
    changed the answer in silence. Every CSV writer ends its last line."""
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) not in (b"\n", b"\r"):
            raise DataError(f"{path}: the last line does not end (a writer still appending, "
                            "or a copy cut short); if the file is complete, end it with a "
                            "line break", symbol=symbol, file=str(path))


# Beyond these no market quotes or trades (BTC in satoshis is ~1e13, whole-exchange volumes of
# meme coins ~1e16): a larger value is a unit error or garbage, and squared in a variance it
# would overflow to inf and silently turn a feature into NaN.
MAX_PRICE = 1e15
MAX_VOLUME = 1e20
# Below these no market quotes or trades either (a meme coin priced in BTC is ~1e-10, a
# volume's smallest step 1e-8): a smaller positive value is a unit error, and squared in a
# variance it underflows to 0, so a moving price read as "flat market" (sweep I). A volume
# of exactly 0 (no trades) is a volume.
MIN_PRICE = 1e-20
MIN_VOLUME = 1e-20


def _checks(interval: str) -> list[tuple[pl.Expr, str]]:
    """(defect mask, what is wrong) for a canonical frame holding one or more symbols, sorted
    as given. The order is the order of the questions a user would ask: a missing time makes
    every time comparison meaningless, so it comes first."""
    import polars as pl

    step = interval_ms(interval)
    ms = pl.col("open_time").dt.epoch("ms")
    # diff() across a symbol boundary compares two files: masked, not a defect. Run ids,
    # not the strings shifted: a copy of 4 bytes a row instead of 16 (the strings' views).
    run = pl.col("symbol").rle_id()
    same = run == run.shift(1)
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
        # (after "not positive": a row at or below 0 is named by that check first)
        checks.append((x < MIN_PRICE, f"{col} is below {MIN_PRICE:g} (wrong unit?)"))
    v = pl.col("volume")
    checks += [
        (v.is_null() | ~v.is_finite(), "volume is not a finite number"),
        (v < 0, "volume is negative"),
        (v > MAX_VOLUME, f"volume is above {MAX_VOLUME:g} (wrong unit?)"),
        ((v > 0) & (v < MIN_VOLUME), f"volume is below {MIN_VOLUME:g} but not 0 (wrong unit?)"),
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

    from ..base._args import CANDLE_COLUMNS, frame

    frame(df, CANDLE_COLUMNS, "validate_frame", numeric=CANDLE_COLUMNS[2:])
    sources = sources or {}
    if df.height == 0:
        # no culprit: an empty frame names no symbol (callers name the symbols they asked for)
        raise DataError("no candles")
    checks = _checks(interval)
    # Whether each check fails anywhere, without keeping its mask: only a failing check's
    # mask is built again, to find its first row.
    anyhit = df.select([expr.fill_null(False).any().alias(f"c{i}")
                        for i, (expr, _) in enumerate(checks)]).row(0)
    for i, (expr, what) in enumerate(checks):
        if not anyhit[i]:
            continue
        at = int(df.select(expr.fill_null(False).arg_true().first()).item())
        symbol = df.get_column("symbol")[at]
        start = int(df.get_column("symbol").head(at + 1).eq(symbol).arg_true()[0])
        # rows of one symbol are contiguous in a frame built by load_candles
        row = at - start + 1
        t = df.get_column("open_time")[at]
        when = f" ({t:%Y-%m-%d %H:%M} UTC)" if t is not None else " (no time)"
        src = sources.get(symbol)
        where = f"{symbol} ({src})" if src else symbol
        raise DataError(f"{where}: row {row}{when}: {what}", symbol=symbol, file=src, row=row)
    if log.isEnabledFor(logging.DEBUG):
        _log_gaps(df, interval)
    present = set(df.get_column("symbol").unique().to_list())
    empty = [s for s in sources if s not in present]
    if empty:
        raise DataError(f"{empty[0]} ({sources[empty[0]]}): no candles", symbol=empty[0],
                        file=sources[empty[0]])


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
    from ..base._args import CANDLE_COLUMNS, frame

    if frame(df, CANDLE_COLUMNS, "validate_candles", numeric=CANDLE_COLUMNS[2:]).height == 0:
        raise DataError(f"{symbol} ({source}): no candles" if source else f"{symbol}: no candles",
                        symbol=symbol, file=source)
    others = df.get_column("symbol").unique().to_list()
    if others != [symbol]:
        # one symbol's rows, as named: another's would be validated (and its rows numbered)
        # under this name
        other = next(str(x) for x in others if x != symbol)
        raise UsageError(f"validate_candles: the frame holds {other[:40]}'s candles, not only "
                         f"{symbol}'s", symbol=other[:40], key="symbol")
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


def files_dir(config: Config) -> Path | None:
    """The directory the candle files are read from: the bundled sample's, the configured
    one, or None (Binance, whose candles come over the network, or no directory)."""
    if config.data.source == "binance":
        return None
    if config.data.source == "sample":
        return _sample_dir()
    return None if config.data.data_dir is None else Path(config.data.data_dir)


def _load_one(symbol: str, config: Config, end_ms: int | None,
              limit: int | None) -> tuple[pl.DataFrame, str]:
    interval = config.data.interval
    source = config.data.source
    if source == "binance":
        step = interval_ms(interval)
        start = None if limit is None or end_ms is None else end_ms - (limit + 1) * step
        df = BinanceClient(config.binance).klines(
            symbol, interval, start_ms=start, end_ms=end_ms, now_ms=end_ms)
        return df, "binance"
    data_dir = _sample_dir() if source == "sample" else config.data.data_dir
    assert data_dir is not None  # config validation guarantees a dir for "local"
    path = find_candle_file(Path(data_dir), symbol, interval)
    return read_candle_file(path, symbol), str(path)


def _read_stacked(syms: list[str], config: Config
                  ) -> tuple[pl.DataFrame, dict[str, str]] | None:
    """Every symbol's feather file read by one multi-file scan (polars reads them in
    parallel) and canonicalised as one frame; or None when the files are not all feather
    files of one schema, or anything is amiss. The caller then reads file by file, which
    finds the same first culprit and names it exactly as before: this path only ever
    answers when that one would have read every file without an error.

    Reading and canonicalising 2,000 files one by one cost about 2 ms a file (a Python
    round trip and a small frame each); one scan is about the floor's own read."""
    import numpy as np
    import polars as pl

    data_dir = files_dir(config)
    if data_dir is None or len(syms) < 2:
        return None
    try:
        paths = find_candle_files(data_dir, syms, config.data.interval)
    except (DataError, UsageError):
        return None  # the file-by-file path raises it, in the symbol order
    names = [str(p) for p in paths]
    if len(set(names)) != len(names) or not all(n.endswith(".feather") for n in names):
        return None
    try:
        # No projection: a file with a column the first one lacks is then an error (and the
        # file-by-file path decides), where a projection would silently ignore it.
        # The streaming engine: the in-memory one materialises every row's file path (a
        # string per row) before the run ids replace it, about half the frame again at
        # 4,000 symbols (peak after reading 484 -> 344 MiB). Same rows, same order.
        raw = pl.scan_ipc(names, include_file_paths="_file") \
            .with_columns(pl.col("_file").rle_id()).collect(engine="streaming")
        ids = raw.get_column("_file").to_numpy()
        counts = np.bincount(ids, minlength=len(names)) if ids.size else ids
        if len(counts) != len(names) or not counts.all():
            return None  # an empty file (or none): the file-by-file path says which
        symbol = pl.Series(syms, dtype=pl.String).gather(raw.get_column("_file"))
        frame = _canonical(raw.drop("_file"), symbol, names[0])
    except (DataError, OSError, ValueError, pl.exceptions.PolarsError):
        return None
    return frame, dict(zip(syms, names, strict=True))


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

    from ..base._config import Config

    if not isinstance(config, Config):
        raise UsageError(f"load_candles wants a Config (load_config()), not {kind_of(config)}",
                         key="config")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= 100_000_000):
        raise UsageError(f"limit must be a whole number of candles of at least 1, not "
                         f"{str(limit)[:40]}", key="limit")
    syms = parse_symbols(symbols)
    interval = config.data.interval
    step = interval_ms(interval)
    cut = parse_as_of(as_of) or (sample_clock() if config.data.source == "sample"
                                 else datetime.now(timezone.utc))
    end_ms = int(cut.timestamp() * 1000)
    stacked = _read_stacked(syms, config)
    if stacked is not None:
        frame, sources = stacked
    else:
        parts, sources = [], {}
        for sym in syms:
            df, sources[sym] = _load_one(sym, config, end_ms, limit)
            if df.height == 0:
                raise DataError(f"{sym} ({sources[sym]}): no candles", symbol=sym,
                                file=sources[sym])
            parts.append(df)
        frame = pl.concat(parts, how="vertical", rechunk=False)
        del parts
    validate_frame(frame, interval=interval, sources=sources)
    stack = [frame]  # handed over: _closed frees each column once its rows are taken
    del frame
    return _closed(stack, syms, sources, end_ms - step, cut, limit)


def _closed(stack: list[pl.DataFrame], syms: list[str], sources: Mapping[str, str],
            last_ms: int, cut: datetime, limit: int | None) -> pl.DataFrame:
    """Each symbol's candles that opened by ``last_ms`` (so closed by the cut), the last
    ``limit`` of them.

    ``frame`` is load_candles' validated stack: one run per symbol in ``syms`` order, times
    strictly ascending. So a symbol's closed candles are a prefix of its run, and the rows
    kept are one range per symbol, chosen by one mask (a filter, a group count and a
    windowed filter cost 0.6 s at 2,000 symbols)."""
    import numpy as np
    import polars as pl

    frame = stack.pop()
    lens = frame.get_column("symbol").rle().struct.field("len").to_numpy().astype(np.int64)
    starts = np.cumsum(lens) - lens
    t = frame.get_column("open_time")
    # Each run ascends (validated): when every run's last candle is closed, so is every
    # row, and no mask over every row is built (a cron run's common case).
    if limit is None and bool(
            (t.gather(starts + lens - 1).dt.epoch("ms").to_numpy() <= last_ms).all()):
        return frame
    ms = t.dt.epoch("ms").to_numpy()
    n_closed = np.add.reduceat((ms <= last_ms).astype(np.int64), starts)
    for k in np.flatnonzero(n_closed == 0).tolist()[:1]:
        from ..base._numfmt import fmt_minute  # four-digit years: --as-of 0001-01-01

        first = frame.get_column("open_time")[int(starts[k])]
        raise DataError(f"{syms[k]} ({sources[syms[k]]}): no candle closed by "
                        f"{fmt_minute(cut)} UTC (data starts {fmt_minute(first)} UTC)",
                        symbol=syms[k], file=sources[syms[k]])
    keep = n_closed if limit is None else np.minimum(n_closed, limit)
    if np.array_equal(keep, lens):
        return frame
    # a row's place in its run, kept if in [n_closed - keep, n_closed): a mask, because
    # polars filters 2 million rows 30x faster than it gathers them
    at = np.arange(len(ms)) - np.repeat(starts, lens)
    mask = pl.Series((at >= np.repeat(n_closed - keep, lens)) & (at < np.repeat(n_closed, lens)))
    del ms, at
    # Column by column, each freed once taken: the peak is the stack plus one column, not
    # two stacks (about 100 MB less at 2,000 symbols).
    cols = []
    for name in frame.columns:
        cols.append(frame.get_column(name).filter(mask))
        frame = frame.drop(name)
    return pl.DataFrame(cols)
