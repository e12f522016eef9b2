"""Typed configuration: frozen dataclasses, validated once at load, then passed down.

Precedence, lowest to highest: defaults < botopt.toml < BOTOPT_<SECTION>_<KEY> < flags.
The file is found from ``--config``, ``BOTOPT_CONFIG``, ``./botopt.toml``, then the user config
directory. Every value remembers where it came from so ``botopt config show`` can say so.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigError, UsageError, kind_of
from ._destinations import (
    ANY_TYPE,
    TELEGRAM,
    DestinationConfig,
    parse_destinations,
    parse_routes,
    redacted_url,
    route,
)
from ._redact import (
    redact_url,
    register_secret,
    url_has_credentials,
    url_passwords,
    url_userinfo_password,
)

INTERVALS: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
)
# Any whole number of minutes, hours or days is a candle interval for local files (freqtrade's
# own test data has 4m and 8m); Binance serves only INTERVALS. Weeks are left out: Binance's
# start on Monday, not on a multiple of 7 days since the epoch.
INTERVAL_RE = re.compile(r"[1-9][0-9]{0,3}[mhd]")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


# Weekly and monthly candles are not a fixed grid from the epoch (weeks open on Mondays,
# months last 28-31 days), which the staleness, grid and carry rules assume: said, not
# only refused.
_CALENDAR_NOTE = {"w": "; weekly candles are not supported (they open on Mondays, not on "
                       "a grid from 1970)",
                  "M": "; monthly candles are not supported (a month has no fixed length)"}


def interval_ms(interval: str) -> int:
    """Length of a candle interval in milliseconds ("5m" -> 300000); any whole number of
    minutes, hours or days (Binance's own are INTERVALS)."""
    if isinstance(interval, Interval) and interval.valid:
        return interval.ms
    if not INTERVAL_RE.fullmatch(interval):
        raise UsageError(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}",
                         key="data.interval")
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]


class Interval(str):
    """A candle interval, parsed once where the config is loaded and carried as this value
    from there (``cfg.data.interval``): its text ("5m", what files, keys and output show) and
    its length. A ``str`` so that every place that shows or stores it is unchanged."""

    ms: int
    valid: bool

    def __new__(cls, text: str) -> Interval:
        self = super().__new__(cls, text)
        # The config's validation names the bad key; until then an invalid text is carried
        # and only asking for its length fails.
        self.valid = bool(INTERVAL_RE.fullmatch(text))
        self.ms = int(text[:-1]) * _UNIT_MS[text[-1]] if self.valid else 0
        return self

    @property
    def seconds(self) -> float:
        return interval_ms(self) / 1000

    @property
    def delta(self) -> timedelta:
        return timedelta(milliseconds=interval_ms(self))

    @property
    def on_exchange(self) -> bool:
        """Binance serves it (local files may have any whole number of m, h or d)."""
        return str(self) in INTERVALS
SOURCES: tuple[str, ...] = ("sample", "local", "binance")
SECRET_KEYS = frozenset({"telegram.token"})


@dataclass(frozen=True)
class DataConfig:
    source: str = "sample"
    data_dir: Path | None = None
    interval: Interval = Interval("5m")
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    # Seconds the newest closed candle may lag the run's clock before its symbol is blocked
    # as stale; None means two candle intervals (a fetch may miss one cron beat, not two).
    max_staleness: float | None = None
    # freqtrade's config.json: pairs, timeframe, exchange, trading mode and data folder come
    # from it unless set here (docs/freqtrade.md).
    freqtrade_config: Path | None = None
    # Who keeps the candle files fresh: "botopt" (`botopt fetch` in the crontab),
    # "freqtrade" (its download-data or live bot) or "none"; empty: freqtrade when a
    # freqtrade config or data folder is used, else botopt.
    feeder: str = ""
    exchange: str = "binance"
    trading_mode: str = "spot"
    # Where `fetch` reaches a ccxt exchange instead of its own hosts (a proxy, a mirror);
    # empty: the exchange's own. Binance spot's direct client uses binance.api_url.
    exchange_api_url: str = ""


FEEDERS: tuple[str, ...] = ("botopt", "freqtrade", "none")
TRADING_MODES: tuple[str, ...] = ("spot", "futures", "margin")


def effective_feeder(data: DataConfig) -> str:
    """Who feeds the candles: the setting, else freqtrade for a freqtrade config or data
    folder (its own download-data or live bot writes them), else botopt."""
    if data.feeder:
        return data.feeder
    if data.freqtrade_config is not None:
        return "freqtrade"
    return "botopt" if data.source != "local" else "freqtrade"


@dataclass(frozen=True)
class BinanceConfig:
    api_url: str = "https://api.binance.com"
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    max_retries: int = 5
    # Upper bound on any single wait (Retry-After included); a cron run must end.
    max_wait_seconds: float = 60.0


@dataclass(frozen=True)
class CacheConfig:
    dir: Path | None = None
    enabled: bool = True
    # None: the entry lives for its candle (``effective_lives`` below); a number
    # of seconds overrides that.
    features_ttl: float | None = None
    predictions_ttl: float | None = None
    regime_ttl: float | None = None
    gates_ttl: float | None = None


@dataclass(frozen=True)
class FeaturesConfig:
    ema_fast: int = 12
    ema_slow: int = 26
    rsi_period: int = 14
    atr_period: int = 14
    adx_period: int = 14
    bb_period: int = 20
    bb_std: float = 2.0
    vol_period: int = 20
    volume_z_period: int = 20
    # How many closed candles the pipeline loads per symbol (warm-up + regime lookback).
    history: int = 1000


@dataclass(frozen=True)
class RegimeConfig:
    adx_trend: float = 25.0
    adx_range: float = 20.0
    vol_percentile: float = 90.0
    vol_lookback: int = 288


def warmup_candles(fc: FeaturesConfig, rc: RegimeConfig) -> int:
    """Closed candles a symbol needs before its indicators are stable enough to trade on.

    A recursive smoother starts at its first output bar with a seed and forgets that seed
    geometrically; TA-Lib calls the time it takes its unstable period, and the usual practice
    is about three periods. So: each smoother's first output bar plus three periods (EMA(n):
    n-1+3n, RSI/ATR(n): n+3n, ADX(n): 2n-1+3n), the rolling windows once full, and the
    HIGH_VOL rule once half its lookback of volatility values exists. With the defaults it is
    the volatility lookback that decides: 20 + 1 + 144 = 165 candles.
    """
    return max(
        4 * fc.ema_slow,
        4 * fc.rsi_period + 1,
        4 * fc.atr_period + 1,
        5 * fc.adx_period,
        fc.bb_period,
        fc.volume_z_period,
        fc.vol_period + 1 + max(1, rc.vol_lookback // 2),
    )


@dataclass(frozen=True)
class ModelConfig:
    path: Path | None = None
    predict: str | None = None


@dataclass(frozen=True)
class GatesConfig:
    min_strength: float = 0.3
    min_probability: float = 0.5
    block_high_vol: bool = True
    min_volume_z: float = -2.0
    cooldown_seconds: float = 1800.0
    correlation_threshold: float = 0.8


@dataclass(frozen=True)
class CorrelationConfig:
    window: int = 288
    min_periods: int = 30


@dataclass(frozen=True)
class TelegramConfig:
    token: str | None = None
    chat_id: str | None = None
    api_url: str = "https://api.telegram.org"
    max_batch_size: int = 5
    batch_interval: float = 30.0
    timeout: float = 10.0
    max_retries: int = 3
    # Every notify-flush ends within this many seconds, whatever Telegram does (fits a
    # cron minute); what is left stays queued for the next run.
    flush_budget: float = 50.0


@dataclass(frozen=True)
class NotifyConfig:
    # Times in messages: HH:MM in this IANA zone (e.g. "Europe/Berlin"); UTC by default.
    timezone: str = "UTC"
    # [notify.destinations.NAME] tables and [notify.routes] (core/base/_destinations.py);
    # tuples so that the config stays hashable. The default route: all to [telegram].
    destinations: tuple[DestinationConfig, ...] = ()
    routes: tuple[tuple[str, tuple[str, ...]], ...] = ((ANY_TYPE, (TELEGRAM,)),)

    def destination(self, name: str) -> DestinationConfig | None:
        return next((d for d in self.destinations if d.name == name), None)

    def route(self, kind: str) -> tuple[str, ...]:
        return route(self.routes, kind)


@dataclass(frozen=True)
class MonitorConfig:
    check_interval: float = 30.0
    stale_after: float = 600.0
    stuck_after: float = 600.0
    event_max_age: float = 7 * 86400.0
    event_max_bytes: int = 10_000_000
    # A run started by hand at a terminal that fails is told to that person at once; the
    # monitor forwards it to the chat only with this on.
    forward_interactive: bool = False


@dataclass(frozen=True)
class StateConfig:
    """Where shared state lives. Empty ``url``: on this machine (the default). A
    ``redis://`` / ``rediss://`` / ``unix://`` URL: on that Redis or Valkey server, shared by
    every host with the same url and namespace (docs/multi-host.md)."""

    url: str = ""
    namespace: str = "botopt"
    # How this host is named in events and alerts (empty: its host name).
    host_id: str = ""
    # Seconds a notification claimed by a host may stay unacknowledged before another host
    # takes it over (the claimant died). Must exceed one Telegram request (telegram.timeout).
    claim_timeout: float = 60.0


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    binance: BinanceConfig = BinanceConfig()
    cache: CacheConfig = CacheConfig()
    features: FeaturesConfig = FeaturesConfig()
    regime: RegimeConfig = RegimeConfig()
    model: ModelConfig = ModelConfig()
    gates: GatesConfig = GatesConfig()
    correlation: CorrelationConfig = CorrelationConfig()
    telegram: TelegramConfig = TelegramConfig()
    notify: NotifyConfig = NotifyConfig()
    monitor: MonitorConfig = MonitorConfig()
    state: StateConfig = StateConfig()
    # Where each "section.key" value came from: default, file:<path>, env:<VAR>, flag.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def is_default(self) -> bool:
        """True when no file, variable or flag set anything: the offline sample-data mode."""
        return all(src == "default" for src in self.sources.values())


# Resolved once (the annotations are strings, ``from __future__ import annotations``):
# ``get_type_hints`` evaluates every field's text each call, about a millisecond a section,
# and every run starts by loading the configuration.
_CONFIG_HINTS = typing.get_type_hints(Config)
SECTIONS: dict[str, type] = {
    f.name: _CONFIG_HINTS[f.name]
    for f in dataclasses.fields(Config)
    if f.name not in ("sources", "path")
}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A section's field types, resolved once per process."""
    return typing.get_type_hints(cls)


def _user_config_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("botopt")) / "botopt.toml"


def find_config_file(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to read, or None. An explicit path that does not exist is an error."""
    env = os.environ if env is None else env
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            if p.exists():  # /dev/null, a directory, a pipe: not a file to read settings from
                raise ConfigError(f"config file {p} is not a regular file", file=str(p))
            raise ConfigError(f"config file not found: {p}", file=str(p))
        return p
    from_env = env.get("BOTOPT_CONFIG")
    if from_env:
        p = Path(from_env).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (from BOTOPT_CONFIG)",
                              file=str(p), key="BOTOPT_CONFIG")
        return p
    for candidate in (Path.cwd() / "botopt.toml", _user_config_file()):
        if candidate.is_file():
            return candidate
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _shown(value: Any, key: str) -> str:
    """A rejected value as an error message may show it: a secret's only by its type."""
    if key in SECRET_KEYS:
        return f"{kind_of(value)} (value hidden)"
    if key == "state.url" and isinstance(value, str):
        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _coerce(value: Any, tp: Any, key: str, origin: str, from_text: bool) -> Any:
    """Check (file values) or parse (env/flag text) one value against its declared type."""
    where = f"{key} ({origin})"
    opt_origin = typing.get_origin(tp)
    if opt_origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_text and value == ""):
            return None
        return _coerce(value, args[0], key, origin, from_text)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        raise ConfigError(f"{where}: expected true or false, got {_shown(value, key)}", key=key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # ASCII only: Python's int() also reads other scripts' digits ("٣" is 3), which a
        # variable holds by a paste from elsewhere, not by intent
        if from_text and isinstance(value, str) and value.isascii():
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {_shown(value, key)}", key=key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str) and value.isascii():
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {_shown(value, key)}", key=key)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and key == "telegram.chat_id":
            return str(value)  # chat ids are often written as bare integers
        raise ConfigError(f"{where}: expected a string, got {_shown(value, key)}", key=key)
    if tp is Interval:
        if isinstance(value, str):
            return Interval(value)
        raise ConfigError(f"{where}: expected a string, got {_shown(value, key)}", key=key)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ConfigError(f"{where}: expected a path, got {_shown(value, key)}", key=key)
    if typing.get_origin(tp) is tuple:
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {_shown(value, key)}", key=key)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}", key=key)  # pragma: no cover


_DAY = 86_400.0
_YEAR = 365 * _DAY
# Allowed range of every number, and why: (low, high, unit or reason). A key missing here
# still has to be finite and within GENERIC_LIMIT. Keep one line per key (easy merges).
BOUNDS: dict[str, tuple[float, float, str]] = {
    "binance.connect_timeout": (0.1, 300, "seconds: a cron run must end"),
    "binance.read_timeout": (0.1, 300, "seconds: a cron run must end"),
    "binance.max_retries": (0, 20, "tries"),
    "binance.max_wait_seconds": (0, 3600, "seconds: a cron run must end"),
    "cache.features_ttl": (0, 30 * _DAY, "seconds (30 days at most)"),
    "cache.predictions_ttl": (0, 30 * _DAY, "seconds (30 days at most)"),
    "cache.regime_ttl": (0, 30 * _DAY, "seconds (30 days at most)"),
    "cache.gates_ttl": (0, 30 * _DAY, "seconds (30 days at most)"),
    "features.ema_fast": (1, 10_000, "candles"),
    "features.ema_slow": (1, 10_000, "candles"),
    "features.rsi_period": (1, 10_000, "candles"),
    "features.atr_period": (1, 10_000, "candles"),
    "features.adx_period": (1, 10_000, "candles"),
    "features.bb_period": (1, 10_000, "candles"),
    "features.bb_std": (0, 100, "standard deviations"),
    "features.vol_period": (1, 10_000, "candles"),
    "features.volume_z_period": (1, 10_000, "candles"),
    "features.history": (1, 1_000_000, "candles loaded per symbol"),
    "regime.adx_trend": (0, 100, "ADX runs from 0 to 100"),
    "regime.adx_range": (0, 100, "ADX runs from 0 to 100"),
    "regime.vol_percentile": (0, 100, "a percentile"),
    "regime.vol_lookback": (1, 1_000_000, "candles"),
    "gates.min_strength": (0, 1, "strength runs from 0 to 1"),
    "gates.min_probability": (0, 1, "a probability"),
    "gates.min_volume_z": (-1000, 1000, "a z-score"),
    "gates.cooldown_seconds": (0, _YEAR, "seconds (a year at most)"),
    "gates.correlation_threshold": (-1, 1, "a correlation"),
    "correlation.window": (2, 100_000, "candles: the stored state grows with the window"),
    "correlation.min_periods": (2, 100_000, "candles"),
    "telegram.max_batch_size": (1, 50, "notifications per message"),
    "telegram.batch_interval": (0, _DAY, "seconds"),
    "telegram.timeout": (0.5, 300, "seconds"),
    "telegram.max_retries": (0, 10, "tries"),
    "telegram.flush_budget": (1, 3600, "seconds: a flush must end"),
    "monitor.check_interval": (0.01, _DAY, "seconds"),
    "monitor.stale_after": (0.01, 30 * _DAY, "seconds"),
    "monitor.stuck_after": (0.01, 30 * _DAY, "seconds"),
    "monitor.event_max_age": (1, _YEAR, "seconds"),
    "monitor.event_max_bytes": (1000, 10**11, "bytes"),
    "state.claim_timeout": (1, _DAY, "seconds"),
}
GENERIC_LIMIT = 1e12


def _check_numbers(cfg: Config) -> None:
    """Every int and float setting: finite (no nan, no inf) and within its BOUNDS."""
    for sec_name in SECTIONS:
        section = getattr(cfg, sec_name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = f"{sec_name}.{f.name}"
            where = f"{key} ({cfg.sources.get(key, 'default')})"
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number, got {value}", key=key)
            low, high, why = BOUNDS.get(key, (-GENERIC_LIMIT, GENERIC_LIMIT, "a sane value"))
            if not low <= value <= high:
                raise ConfigError(f"{where}: must be between {low:g} and {high:g} ({why}), "
                                  f"got {value:g}", key=key)


def _http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    if not (url.startswith(("http://", "https://")) and len(url) > 8 and url.isprintable()):
        return False
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:  # a bracketed host that is not an address
        return False


def _validate(cfg: Config) -> None:
    src = cfg.sources

    def bad(key: str, msg: str) -> ConfigError:
        # a table's entry (notify.destinations.NAME.token) came with its table
        origin = src.get(key) or src.get(".".join(key.split(".")[:2]), "default")
        return ConfigError(f"{key} ({origin}): {msg}", key=key)

    _check_numbers(cfg)

    if cfg.data.feeder not in ("", *FEEDERS):
        raise bad("data.feeder", f"must be one of {', '.join(FEEDERS)}, got {cfg.data.feeder!r}")
    if cfg.data.trading_mode not in TRADING_MODES:
        raise bad("data.trading_mode", f"must be one of {', '.join(TRADING_MODES)}, got "
                  f"{cfg.data.trading_mode!r}")
    url = cfg.data.exchange_api_url
    if url and not _http_url(url):
        raise bad("data.exchange_api_url", "must be an http:// or https:// URL")
    for key, url in (("telegram.api_url", cfg.telegram.api_url),
                     ("binance.api_url", cfg.binance.api_url)):
        # "" or ftp://: every flush read "Telegram unreachable", run after run
        if not _http_url(url):
            raise bad(key, "must be an http:// or https:// URL")
    if cfg.data.source not in SOURCES:
        raise bad("data.source", f"must be one of {', '.join(SOURCES)}, got {cfg.data.source!r}")
    if not cfg.data.interval.valid or (
            cfg.data.source == "binance" and not cfg.data.interval.on_exchange):
        raise bad("data.interval", f"unknown interval {cfg.data.interval!r}; "
                  f"use one of {', '.join(INTERVALS)}"
                  + ("" if cfg.data.source == "binance" else " (or other minutes, hours "
                     "or days, e.g. 8m, for local files)") + _CALENDAR_NOTE.get(
                         str(cfg.data.interval).strip()[-1:], ""))
    if cfg.data.source == "local" and cfg.data.data_dir is None:
        raise bad("data.data_dir", "source 'local' needs a data directory (--data-dir)")
    for name in ("features_ttl", "predictions_ttl", "regime_ttl", "gates_ttl"):
        ttl = getattr(cfg.cache, name)
        if ttl is not None and not ttl >= 0:  # also refuses NaN
            raise bad(f"cache.{name}", "must be zero or more seconds")
    for f in dataclasses.fields(FeaturesConfig):
        if f.name != "bb_std" and getattr(cfg.features, f.name) < 1:
            raise bad(f"features.{f.name}", "must be at least 1")
    if cfg.features.ema_fast >= cfg.features.ema_slow:
        raise bad("features.ema_fast", "must be shorter than features.ema_slow")
    need = warmup_candles(cfg.features, cfg.regime)
    if cfg.features.history < need:
        raise bad("features.history", f"{cfg.features.history} candles cannot warm up the "
                  f"indicators (they need {need}); raise it or shorten the periods")
    stale = cfg.data.max_staleness
    if stale is not None and not 0 < stale <= 30 * 86400:
        raise bad("data.max_staleness", "must be more than 0 and at most 30 days "
                  "(2592000 seconds)")
    if not cfg.regime.adx_range <= cfg.regime.adx_trend:
        raise bad("regime.adx_range", "must not exceed regime.adx_trend")
    if not 0 < cfg.regime.vol_percentile < 100:
        raise bad("regime.vol_percentile", "must be between 0 and 100")
    if cfg.correlation.window < 2 or cfg.correlation.min_periods < 2:
        raise bad("correlation.window", "window and min_periods must be at least 2")
    if not 1 <= cfg.telegram.max_batch_size <= 50:
        raise bad("telegram.max_batch_size", "must be between 1 and 50")
    if cfg.telegram.batch_interval < 0:
        raise bad("telegram.batch_interval", "must be zero or more seconds")
    if cfg.monitor.check_interval <= 0:
        raise bad("monitor.check_interval", "must be more than zero seconds")
    if cfg.telegram.token is not None:
        problem = token_problem(cfg.telegram.token)
        if problem:
            raise bad("telegram.token", problem)
    for dest in cfg.notify.destinations:
        problem = token_problem(dest.token) if dest.token is not None else None
        if problem:
            raise bad(f"notify.destinations.{dest.name}.token", problem)
        register_secret(dest.token)
    _check_state(cfg, bad)
    if cfg.notify.timezone not in ("UTC", ""):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(cfg.notify.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise bad("notify.timezone", f"unknown time zone {cfg.notify.timezone[:60]!r}; "
                      "use an IANA name such as Europe/Berlin, or UTC") from None


_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def state_url_problem(url: str) -> str | None:
    """What is wrong with a ``state.url`` (never quoting its password), or None."""
    from urllib.parse import urlsplit

    if url != url.strip() or any(c.isspace() for c in url):
        return "has spaces or a line break in it; remove them"
    password = url_userinfo_password(url)
    if password and any(c in password for c in "#?@"):
        # urlsplit would cut the URL there and quote the password's start as a host or port
        return ("its password has a '#', '?' or '@' in it: percent-encode it "
                "(# as %23, ? as %3F, @ as %40)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if url_has_credentials(url):  # the parser's text may quote a piece of the password
            return ("is not a URL: check its host and port, and percent-encode the "
                    "password's '/', '#', '?' and '@'")
        return f"is not a URL ({exc})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return (f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not "
                "redis://, rediss:// or unix://; e.g. redis://host:6379/0")
    if parts.scheme == "unix":
        return None if parts.path else "unix:// needs a socket path, e.g. unix:///run/redis.sock"
    if not parts.hostname:
        return "has no host; e.g. redis://host:6379/0"
    if port == 0:
        return "port 0 is not a port"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"database {db[:20]!r} is not a number (redis://host:6379/0)"
    return None


# The settings that hold a URL: a password written into one (a proxy's, a server's) is a
# secret like the token, hidden from every message and from ``config show``.
URL_KEYS = ("state.url", "telegram.api_url", "binance.api_url", "data.exchange_api_url")


def _check_state(cfg: Config, bad: Any) -> None:
    for key in URL_KEYS:
        section, name = key.split(".")
        for password in url_passwords(getattr(getattr(cfg, section), name) or ""):
            register_secret(password)  # hidden from every message from here on
    url = cfg.state.url
    if url:
        problem = state_url_problem(url)
        if problem:
            raise bad("state.url", problem)
    if not _NAMESPACE_RE.fullmatch(cfg.state.namespace):
        raise bad("state.namespace", "must be 1 to 64 letters, digits, '_', '.' or '-'")
    if cfg.state.host_id and not _NAMESPACE_RE.fullmatch(cfg.state.host_id):
        raise bad("state.host_id", "must be 1 to 64 letters, digits, '_', '.' or '-'")
    if url and cfg.state.claim_timeout <= cfg.telegram.timeout:
        raise bad("state.claim_timeout", "must be longer than telegram.timeout (a claim "
                  "is held while a message is being sent)")


_TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")


def token_problem(token: str) -> str | None:
    """What is wrong with a bot token's shape (never quoting it), or None.

    Telegram's tokens are ``<bot id>:<secret>``: digits, a colon, then 30+ characters of
    ``[A-Za-z0-9_-]``. The usual breakage is what crontab and .env files do to a line: a
    trailing ``# comment`` or spaces become part of the value.
    """
    if "#" in token:
        return ("contains '#': a comment after the value is part of it in crontab and .env "
                "files; put the comment on its own line")
    if token != token.strip():
        return ("has spaces or a line break around it (a crontab or .env line with trailing "
                "spaces?); remove them")
    if not _TOKEN_RE.fullmatch(token):
        return (f"does not look like a bot token ({len(token)} characters; expected digits, "
                "a colon, then 30 or more of A-Z a-z 0-9 _ -); copy it again from @BotFather")
    return None


def _read_toml(file: Path) -> dict[str, Any]:
    # imported here: a run without a configuration file (defaults, variables, flags) never
    # parses TOML, and the parser is 4 ms of a cron command's start-up
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        return tomllib.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (bad byte at offset {exc.start}); "
                          "save it as UTF-8", file=str(file)) from None
    except RecursionError:
        raise ConfigError(f"{file}: invalid TOML: nested too deeply", file=str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}", file=str(file)) from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}", file=str(file)) from exc


# Settings that are TOML tables, not values: only a file sets them.
TABLE_KEYS = frozenset({"notify.destinations", "notify.routes"})


def _apply_tables(values: dict[str, dict[str, Any]], file: Path | None) -> None:
    """``[notify.destinations.*]`` and ``[notify.routes]`` into their typed form: the routes
    may only name destinations that exist."""
    notify = values["notify"]
    dests = parse_destinations(notify.get("destinations", {}), file)
    notify["destinations"] = dests
    names = {TELEGRAM, *(d.name for d in dests)}
    notify["routes"] = parse_routes(notify.get("routes", {}), names, file)


def _apply_file(file: Path, values: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    """The file's layer: every section and key known, every value of its key's type."""
    for sec_name, sec_val in _read_toml(file).items():
        if sec_name not in SECTIONS:
            raise ConfigError(f"{file}: unknown section [{sec_name}]; "
                              f"known: {', '.join(SECTIONS)}", file=str(file), key=sec_name)
        if not isinstance(sec_val, dict):
            raise ConfigError(f"{file}: {sec_name} must be a table [{sec_name}]",
                              file=str(file), key=sec_name)
        hints = _hints(SECTIONS[sec_name])
        for key, val in sec_val.items():
            full = f"{sec_name}.{key}"
            if full in TABLE_KEYS:
                values[sec_name][key] = val  # parsed with the whole file (_apply_tables)
                sources[full] = f"file:{file}"
                continue
            if key not in hints:
                raise ConfigError(f"{file}: unknown key {full}; "
                                  f"known in [{sec_name}]: {', '.join(hints)}",
                                  file=str(file), key=full)
            values[sec_name][key] = _coerce(val, hints[key], full, f"file {file}", False)
            sources[full] = f"file:{file}"


def _apply_freqtrade(values: dict[str, dict[str, Any]], sources: dict[str, str],
                     file: Path | None) -> None:
    """freqtrade's settings fill every data key botopt's own layers left at its default."""
    ft_path = values["data"].get("freqtrade_config")
    if ft_path is None:
        return
    if not ft_path.is_absolute() and sources["data.freqtrade_config"].startswith("file:") \
            and file is not None:
        # written in botopt.toml: relative to that file, as add_config_files are to theirs
        ft_path = file.absolute().parent / ft_path
    ft_path = ft_path.absolute()
    values["data"]["freqtrade_config"] = ft_path
    from ._freqtrade import read_freqtrade_config

    ft = read_freqtrade_config(ft_path)
    origin = f"freqtrade:{ft_path}"
    derived: dict[str, Any] = {
        "source": "local", "data_dir": ft.data_dir, "exchange": ft.exchange,
        "trading_mode": ft.trading_mode,
        # typed here as every other layer types it at load: the one place it is parsed
        "interval": Interval(ft.timeframe) if ft.timeframe else None,
        "symbols": ft.pairs or None,
    }
    for key, val in derived.items():
        full = f"data.{key}"
        if val is None or sources.get(full) != "default":
            continue
        values["data"][key] = val
        sources[full] = origin
    if not ft.pairs and sources["data.symbols"] == "default":
        raise ConfigError(f"freqtrade config {ft_path}: exchange.pair_whitelist is empty "
                          "(a dynamic pairlist?); set data.symbols or --symbols",
                          file=str(ft_path), key="exchange.pair_whitelist")


# Variables named like a setting that are not one: the flags' own variables.
_NOT_SETTINGS = frozenset({"BOTOPT_CACHE_DIR"})
_warned_variables: set[str] = set()  # once a process (the freqtrade helper loads per pair)


def _warn_unknown_variables(env: Mapping[str, str]) -> None:
    """A warning for each ``BOTOPT_<SECTION>_<KEY>`` of a known section whose key is not a
    setting (``BOTOPT_GATES_MIN_STRENGHT``): it was ignored in silence, the default used,
    where the same typo in botopt.toml is an error. A warning, not an error: the variable
    may be another program's, and cron mails it on every run."""
    for var in env:
        if not var.startswith("BOTOPT_") or var in _NOT_SETTINGS or var in _warned_variables:
            continue
        rest = var[len("BOTOPT_"):].lower()
        for sec_name, sec_cls in SECTIONS.items():
            if not rest.startswith(sec_name + "_"):
                continue
            keys = list(_hints(sec_cls))
            if rest[len(sec_name) + 1:] in keys:
                break
            import difflib  # only with a name to suggest for (a library caller skips it)
            import logging

            near = difflib.get_close_matches(rest[len(sec_name) + 1:], keys, n=1)
            hint = f" (did you mean BOTOPT_{sec_name.upper()}_{near[0].upper()}?)" \
                if near else ""
            logging.getLogger("botopt.config").warning(
                "%s is not a setting of [%s]; ignored%s", var[:80], sec_name, hint)
            _warned_variables.add(var)
            break


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective configuration. Raises ConfigError naming the offending key.

    ``overrides`` are command-line flags as {"section.key": value}; None values are ignored.
    """
    if overrides is not None and not (isinstance(overrides, Mapping) and all(
            isinstance(k, str) for k in overrides)):
        raise UsageError("overrides must map \"section.key\" names to values, not "
                         f"{kind_of(overrides)}", key="overrides")
    if env is not None and not isinstance(env, Mapping):
        raise UsageError(f"env must map variable names to text, not {kind_of(env)}",
                         key="env")
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    sources: dict[str, str] = {}
    for sec_name, sec_cls in SECTIONS.items():
        for f in dataclasses.fields(sec_cls):
            sources[f"{sec_name}.{f.name}"] = "default"
    if file is not None:
        _apply_file(file, values, sources)

    for sec_name, sec_cls in SECTIONS.items():
        hints = _hints(sec_cls)
        for key in hints:
            var = f"BOTOPT_{sec_name.upper()}_{key.upper()}"
            if var in env and f"{sec_name}.{key}" in TABLE_KEYS:
                raise ConfigError(f"{var}: {sec_name}.{key} is a table; set it in "
                                  f"botopt.toml ([{sec_name}.{key}...])",
                                  key=f"{sec_name}.{key}")
            if var in env:
                full = f"{sec_name}.{key}"
                values[sec_name][key] = _coerce(env[var], hints[key], full, f"env:{var}", True)
                sources[full] = f"env:{var}"

    _warn_unknown_variables(env)
    for full, val in (overrides or {}).items():
        if val is None:
            continue
        sec_name, _, key = full.partition(".")
        if sec_name not in SECTIONS or key not in _hints(SECTIONS[sec_name]):
            # a library caller's typo: named like the file's, never a KeyError
            known = ", ".join(_hints(SECTIONS[sec_name])) if sec_name in SECTIONS \
                else ", ".join(SECTIONS)
            raise ConfigError(f"unknown setting {full[:80]!r} in overrides; known"
                              f"{f' in [{sec_name}]' if sec_name in SECTIONS else ' sections'}:"
                              f" {known}", key=full[:80])
        hints = _hints(SECTIONS[sec_name])
        from_text = isinstance(val, str) and hints[key] is not str
        values[sec_name][key] = _coerce(val, hints[key], full, "flag", from_text)
        sources[full] = "flag"

    _apply_freqtrade(values, sources, file)
    _apply_tables(values, file)
    cfg = Config(
        **{name: SECTIONS[name](**values[name]) for name in SECTIONS},
        sources=types.MappingProxyType(sources),
        path=file,
    )
    _validate(cfg)
    return cfg


CANDLE_LIVES = 2  # pipeline entries live this many candle intervals unless a TTL is set


def effective_lives(config: Config) -> dict[str, tuple[float, str]]:
    """Per pipeline cache: (seconds an entry lives, how that was decided). A derived setting:
    validation, ``config show`` and the cache all read it here."""
    cc = config.cache
    candle = CANDLE_LIVES * config.data.interval.seconds
    out: dict[str, tuple[float, str]] = {}
    for name in ("features", "predictions", "regime", "gates"):
        set_ttl = getattr(cc, f"{name}_ttl")
        out[name] = (float(set_ttl), "set") if set_ttl is not None else \
            (candle, f"{CANDLE_LIVES} x {config.data.interval} candles")
    # The whole-run entry is keyed by its candle slot; it never outlives a stage it stands for.
    life = min(out[n][0] for n in ("features", "predictions", "regime"))
    out["signals"] = (life, "candle slot" if life == candle else "shortest stage")
    return out


def max_staleness(config: Config) -> float:
    """Seconds the newest closed candle may lag the clock before its symbol is stale: the one
    rule that ``signals`` blocks on, ``doctor`` warns on and the monitor reports (from the
    runs' events). Default two intervals: a fetch may miss one cron beat, not two."""
    if config.data.max_staleness is not None:
        return config.data.max_staleness
    return 2 * config.data.interval.seconds


def candle_age(config: Config, open_time: datetime, now: datetime) -> float:
    """Seconds from the close of the candle that opened at ``open_time`` to ``now``."""
    return _age(open_time, config.data.interval.delta, now)


def candle_ages(config: Config, open_times: Mapping[str, datetime], now: datetime
                ) -> dict[str, float]:
    """``candle_age`` of each candle (a replay asks it of every symbol at every candle:
    the interval's length is read once)."""
    close = config.data.interval.delta
    return {k: _age(t, close, now) for k, t in open_times.items()}


def _age(open_time: datetime, close: timedelta, now: datetime) -> float:
    return (now - (open_time + close)).total_seconds()


def describe_life(seconds: float, how: str) -> str:
    return f"{seconds:g} s ({how})"


def config_items(cfg: Config) -> list[tuple[str, Any, str]]:
    """(key, value, source) for every setting, secrets masked: what ``config show`` prints."""
    lives = {f"cache.{n}_ttl": life for n, life in effective_lives(cfg).items()}
    rows: list[tuple[str, Any, str]] = []
    for sec_name in SECTIONS:
        section = getattr(cfg, sec_name)
        for f in dataclasses.fields(section):
            key = f"{sec_name}.{f.name}"
            val = getattr(section, f.name)
            if key in TABLE_KEYS:
                rows += _table_items(cfg, key)
                continue
            if key in SECRET_KEYS and val:
                val = "***"
            elif key in URL_KEYS and val:
                val = redact_url(val)
            elif isinstance(val, Path):
                val = str(val)
            elif isinstance(val, tuple):
                val = list(val)
            if key in lives:
                val = f"{lives[key][0]:g} s ({lives[key][1]})"
            rows.append((key, val, cfg.sources.get(key, "default")))
    return rows


def _table_items(cfg: Config, key: str) -> list[tuple[str, Any, str]]:
    """``config show``'s rows for the destinations and routes, every secret masked."""
    src = cfg.sources.get(key, "default")
    if key == "notify.routes":
        return [(f"{key}.{kind}", list(names), src) for kind, names in cfg.notify.routes]
    rows: list[tuple[str, Any, str]] = []
    for d in cfg.notify.destinations:
        for f in dataclasses.fields(d):
            val = getattr(d, f.name)
            if f.name == "name" or (val is None and f.name in ("secret", "token", "chat_id")):
                continue
            if f.name in ("secret", "token"):
                val = "***"
            elif f.name == "url":
                val = redacted_url(d)
            rows.append((f"notify.destinations.{d.name}.{f.name}", val, src))
    return rows


STARTER_CONFIG = """\
# botopt configuration. Every key is optional; the value shown is the default.
# Environment variables override this file: BOTOPT_<SECTION>_<KEY>, e.g. BOTOPT_DATA_SOURCE.
# Command-line flags override both. `botopt config show` prints what is in effect.

[data]
# sample: bundled offline data; local: a freqtrade-style directory; binance: the public API
source = "sample"
# data_dir = "~/freqtrade/user_data/data/binance"
interval = "5m"
symbols = ["BTCUSDT", "ETHUSDT"]
# Block a symbol whose newest closed candle is older than this many seconds
# (default: two intervals, 600 at 5m).
# max_staleness = 600.0

[binance]
api_url = "https://api.binance.com"
connect_timeout = 5.0
read_timeout = 15.0
max_retries = 5
max_wait_seconds = 60.0

[cache]
# dir = "~/.cache/botopt"
enabled = true
# Entries are keyed by the data, so by default they live for their candle (2 intervals:
# 10 min at 5m). A number of seconds overrides that per cache:
# features_ttl = 600.0
# predictions_ttl = 600.0
# regime_ttl = 600.0
# gates_ttl = 600.0

[features]
ema_fast = 12
ema_slow = 26
rsi_period = 14
atr_period = 14
adx_period = 14
bb_period = 20
bb_std = 2.0
vol_period = 20
volume_z_period = 20
history = 1000

[regime]
adx_trend = 25.0
adx_range = 20.0
vol_percentile = 90.0
vol_lookback = 288

[model]
# path = "~/botopt-model.json"
# predict = "mypackage.mymodule:predict"

[gates]
min_strength = 0.3
min_probability = 0.5
block_high_vol = true
min_volume_z = -2.0
cooldown_seconds = 1800.0
correlation_threshold = 0.8

[correlation]
window = 288
min_periods = 30

[telegram]
# Keep the bot token in botopt.toml (mode 600, as `botopt init` writes it): the
# crontab `botopt cron` prints points at that file, and cron does not see your
# shell's variables.
# token = "123456:ABC..."
# chat_id = "-1001234567890"
api_url = "https://api.telegram.org"
max_batch_size = 5
batch_interval = 30.0
timeout = 10.0
max_retries = 3
flush_budget = 50.0

[notify]
# Times in Telegram messages: HH:MM in this IANA time zone (e.g. "Europe/Berlin").
timezone = "UTC"

# More destinations besides the [telegram] chat, and which notification types go where
# (docs/notifications.md). Without [notify.routes] everything goes to the Telegram chat.
# [notify.destinations.orders]
# type = "webhook"
# url = "https://bot.example.com/botopt"
# secret = "..."          # python3 -c 'import secrets; print(secrets.token_hex(32))'
# [notify.destinations.team]
# type = "discord"
# url = "https://discord.com/api/webhooks/ID/TOKEN"
# [notify.routes]
# signal = ["telegram", "team", "orders"]
# "*" = ["telegram"]

[monitor]
check_interval = 30.0
stale_after = 600.0
stuck_after = 600.0
event_max_age = 604800.0
event_max_bytes = 10000000
# Failures of runs typed at a terminal are shown there; true also sends them to the chat.
forward_interactive = false

[state]
# Empty: state stays on this machine. Several hosts, one bot: the same Redis or Valkey URL
# and namespace on every host (docs/multi-host.md). Prefer the environment for a password:
# BOTOPT_STATE_URL="rediss://botopt:PASSWORD@redis.example.com:6379/0"
url = ""
namespace = "botopt"
# host_id = "host-1"   (default: the host name)
claim_timeout = 60.0
"""


def write_starter_config(path: Path, *, force: bool = False) -> Path:
    """Write STARTER_CONFIG to ``path``; refuse to overwrite unless ``force``. The file is
    written whole or not at all (a temporary file renamed), 0600 (the bot token goes there),
    and only ever a regular file: a device or pipe at ``path`` is refused."""
    from ._fs import atomic_writer, regular_target

    real = regular_target(path, "init")
    if real.exists() and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite)", file=str(path))
    try:
        with atomic_writer(real, mode=0o600, replace=force) as fh:
            fh.write(STARTER_CONFIG.encode())
    except FileExistsError:  # made by another process since the check
        raise ConfigError(f"{path} already exists (use --force to overwrite)",
                          file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}", file=str(path)) from exc
    return path
