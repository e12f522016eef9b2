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
    from ..data._candles import parse_symbols

    config = botopt_config(ft_config)
    pairs = _pairs(ft_config)
    pair = metadata.get("pair")
    if not isinstance(pair, str):
        raise UsageError("freqtrade metadata has no pair", key="pair")
    symbol = parse_symbols([pair])[0]
    if symbol not in parse_symbols(pairs):
        pairs = [*pairs, pair]
    dates = dataframe["date"]
    signals: dict[int, tuple[str, str]] = {}
    if len(dataframe):
        step = timedelta(milliseconds=interval_ms(config.data.interval))
        since = _utc(dates.iloc[0].to_pydatetime())
        until = _utc(dates.iloc[-1].to_pydatetime()) + step
        signals = _signals_for(config, pairs, since, until).get(symbol, {})
    # Whole columns from one pass over the rows: setting cells one by one costs ~100 us each.
    found = [signals.get(t) for t in _ms(dates).tolist()] if signals else [None] * len(dates)
    dataframe["enter_long"] = [1 if f is not None and f[0] == "long" else 0 for f in found]
    dataframe["enter_short"] = [1 if f is not None and f[0] == "short" else 0 for f in found]
    dataframe["enter_tag"] = [f[1] if f is not None else None for f in found]
    return dataframe


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _ms(dates: Any) -> Any:
    """The dates as integer milliseconds (pandas 2 may hold them in s, ms, us or ns)."""
    try:
        return dates.dt.as_unit("ms").astype("int64")
    except AttributeError:  # pandas < 2: always nanoseconds
        return dates.astype("int64") // 1_000_000
