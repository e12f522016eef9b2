"""botopt's signals inside a freqtrade strategy: ``freqtrade_signals`` fills ``enter_long``,
``enter_short`` and ``enter_tag`` on freqtrade's dataframe from the very step a cron run of
``botopt signals`` calls (``replay``), so freqtrade's backtesting, dry-run and live see what
``botopt signals --as-of`` would have said at each candle's close.

It imports neither freqtrade nor pandas: it takes freqtrade's dataframe and config as they come
and only touches their columns and keys, so botopt does not depend on freqtrade.

Where it lives: in botopt.core (the backtest layer, above signals) and re-exported by
``botopt.core``, because the layout has only botopt.core and botopt.cli; a strategy writes
``from botopt.core import freqtrade_signals`` and pays for polars only when it first runs.

Cost: the period's replay runs once per process for all the whitelist's pairs (the gates'
correlation and cooldowns look across symbols, so one pair's signals need all of them) and is
kept in memory and in the workspace's replay cache; each pair's call then only maps the passing
candidates onto its rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..base._config import Config, interval_ms, load_config
from ..errors import ConfigError, UsageError

# (config path, data dir, timeframe, pairs, since, until) -> {symbol: {candle ms: (dir, tag)}}
_memo: dict[tuple[Any, ...], dict[str, dict[int, tuple[str, str]]]] = {}


def _pairs(ft_config: Mapping[str, Any]) -> list[str]:
    exchange = ft_config.get("exchange")
    pairs = exchange.get("pair_whitelist") if isinstance(exchange, Mapping) else None
    pairs = ft_config.get("botopt_pairs", pairs)
    if not isinstance(pairs, (list, tuple)) or not pairs or \
            not all(isinstance(p, str) for p in pairs):
        raise ConfigError("freqtrade config: exchange.pair_whitelist (or botopt_pairs) must "
                          "list the pairs botopt judges together", key="pair_whitelist")
    return list(pairs)


def botopt_config(ft_config: Mapping[str, Any]) -> Config:
    """botopt's configuration for a freqtrade run: the file ``botopt_config`` names (else the
    usual search), with the data read from freqtrade's own ``datadir`` and ``timeframe``."""
    datadir, timeframe = ft_config.get("datadir"), ft_config.get("timeframe")
    if not datadir or not isinstance(timeframe, str):
        raise ConfigError("freqtrade config: datadir and timeframe are needed",
                          key="datadir")
    path = ft_config.get("botopt_config")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"freqtrade config: botopt_config must be the path of a botopt "
                          f"TOML file, not {type(path).__name__}", key="botopt_config")
    return load_config(path, overrides={"data.source": "local",
                                        "data.data_dir": str(Path(str(datadir))),
                                        "data.interval": timeframe})


def _signals_for(config: Config, pairs: list[str], since: datetime, until: datetime
                 ) -> dict[str, dict[int, tuple[str, str]]]:
    key = (config.path, config.data.data_dir, config.data.interval, tuple(pairs), since,
           until)
    hit = _memo.get(key)
    if hit is not None:
        return hit
    from ..data._candles import parse_symbols
    from ._replay import replay

    syms = parse_symbols(pairs)
    result = replay(config, syms, since, until)
    passed = result.candidates.filter(result.candidates["gate_passed"])
    out: dict[str, dict[int, tuple[str, str]]] = {s: {} for s in syms}
    for row in passed.iter_rows(named=True):
        ms = int(row["candle_time"].timestamp() * 1000)
        out.setdefault(row["symbol"], {})[ms] = (row["direction"],
                                                 f"{row['engine']}:{row['regime']}")
    _memo.clear()  # one period at a time: a live bot's window moves every candle
    _memo[key] = out
    return out


def freqtrade_signals(dataframe: Any, metadata: Mapping[str, Any],
                      ft_config: Mapping[str, Any]) -> Any:
    """Fill ``enter_long``, ``enter_short`` (1 on a candle whose passing botopt signal is
    long/short, else 0) and ``enter_tag`` (``engine:regime``) on freqtrade's ``dataframe``
    for the pair ``metadata["pair"]``; returns the dataframe.

    The signal on a row is botopt's at that candle's close, so freqtrade enters at the next
    candle's open, as a cron run of ``botopt signals`` just after the close would have."""
    from ..data._candles import pair_to_filename, parse_symbols

    config = botopt_config(ft_config)
    pairs = _pairs(ft_config)
    pair = metadata.get("pair") if isinstance(metadata, Mapping) else None
    if not isinstance(pair, str):
        raise UsageError("freqtrade metadata has no pair", key="pair")
    symbol = parse_symbols([pair])[0]
    # The whitelist's spelling of the pair (ETH/BTC for a metadata ETH_BTC): the same
    # candle file, so the same symbol, never a second one judged beside it.
    spelled = {pair_to_filename(s): s for s in parse_symbols(pairs)}
    symbol = spelled.get(pair_to_filename(symbol), symbol)
    if symbol not in spelled.values():
        pairs = [*pairs, pair]
    step_ms = interval_ms(config.data.interval)
    ms = _dates_ms(dataframe, step_ms, config.data.interval)
    signals: dict[int, tuple[str, str]] = {}
    if ms.size:
        step = timedelta(milliseconds=step_ms)
        since = datetime.fromtimestamp(int(ms[0]) / 1000, tz=timezone.utc)
        until = datetime.fromtimestamp(int(ms[-1]) / 1000, tz=timezone.utc) + step
        signals = _signals_for(config, pairs, since, until).get(symbol, {})
    # Whole columns from one pass over the rows: setting cells one by one costs ~100 us each.
    found = [signals.get(t) for t in ms.tolist()] if signals else [None] * len(ms)
    dataframe["enter_long"] = [1 if f is not None and f[0] == "long" else 0 for f in found]
    dataframe["enter_short"] = [1 if f is not None and f[0] == "short" else 0 for f in found]
    dataframe["enter_tag"] = [f[1] if f is not None else None for f in found]
    return dataframe


def _dates_ms(dataframe: Any, step_ms: int, interval: str) -> Any:
    """The dataframe's ``date`` column as integer ms, checked as freqtrade makes it: dates
    (naive ones read as UTC), ascending, each on a candle boundary of the timeframe. A
    frame that is not so would silently match no signal (a date 2 minutes off the grid) or
    be read as a period backwards."""
    import numpy as np

    columns = getattr(dataframe, "columns", None)
    if columns is None or not hasattr(dataframe, "iloc"):
        raise UsageError(f"freqtrade_signals takes freqtrade's pandas dataframe, not "
                         f"{type(dataframe).__name__}", key="dataframe")
    if "date" not in columns:
        raise UsageError("freqtrade dataframe has no 'date' column (freqtrade's candles "
                         "have one: date, open, high, low, close, volume)", key="date")
    dates = dataframe["date"]
    if not str(getattr(dates, "dtype", "")).startswith("datetime64"):
        raise UsageError(f"freqtrade dataframe: 'date' holds {getattr(dates, 'dtype', '?')}, "
                         "not dates (datetime64)", key="date")
    if bool(dates.isna().any()):
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise UsageError(f"freqtrade dataframe row {row}: 'date' is empty", key="date")
    ms = np.asarray(_ms(dates), dtype=np.int64)
    back = np.flatnonzero(np.diff(ms) <= 0)
    if back.size:
        row = int(back[0]) + 1
        raise UsageError(f"freqtrade dataframe row {row}: dates are not ascending and unique "
                         f"({dates.iloc[row]} after {dates.iloc[row - 1]})", key="date")
    off = np.flatnonzero(ms % step_ms)
    if off.size:
        row = int(off[0])
        raise UsageError(f"freqtrade dataframe row {row}: {dates.iloc[row]} is not on a "
                         f"{interval} candle boundary", key="date")
    return ms


def _ms(dates: Any) -> Any:
    """The dates as integer milliseconds (pandas 2 may hold them in s, ms, us or ns)."""
    try:
        return dates.dt.as_unit("ms").astype("int64")
    except AttributeError:  # pandas < 2: always nanoseconds
        return dates.astype("int64") // 1_000_000
