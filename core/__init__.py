"""botopt's library: the public API is what this module exports.

Submodules whose names start with an underscore are private and may change. Attributes are
loaded lazily (PEP 562) so that light commands such as ``botopt cache-stats`` never pay for
importing polars or numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> private module that defines it. Keep sorted by module.
_EXPORTS: dict[str, str] = {
    "BotoptError": ".errors",
    "CacheDirUnsafeError": ".errors",
    "CacheError": ".errors",
    "ConfigError": ".errors",
    "DataError": ".errors",
    "ModelError": ".errors",
    "NetworkError": ".errors",
    "NotifyError": ".errors",
    "StaleDataError": ".errors",
    "TelegramConfigError": ".errors",
    "UnknownSymbolError": ".errors",
    "UsageError": ".errors",
    "Config": ".base._config",
    "load_config": ".base._config",
    "INTERVALS": ".base._config",
    "interval_ms": ".base._config",
    "config_items": ".base._config",
    "write_starter_config": ".base._config",
    "DataStatus": ".base._vocab",
    "Direction": ".base._vocab",
    "EventType": ".base._vocab",
    "NotificationType": ".base._vocab",
    "Regime": ".base._vocab",
    "TelegramOutcome": ".base._vocab",
    "load_candles": ".data._candles",
    "validate_candles": ".data._candles",
    "parse_symbols": ".data._candles",
    "resolve_symbols": ".data._candles",
    "parse_as_of": ".data._candles",
    "BinanceClient": ".data._binance",
    "fetch_to_store": ".data._store",
    "plan_fetch": ".data._store",
    "compute_features": ".signals._features",
    "detect_regime": ".signals._regime",
    "AlphaEngineCoordinator": ".signals._engines",
    "Signal": ".signals._engines",
    "cached": ".state._cache",
    "cache_features": ".state._cache",
    "cache_predictions": ".state._cache",
    "cache_regime": ".state._cache",
    "cache_gate": ".state._cache",
    "get_cache_stats": ".state._cache_stats",
    "get_host_cache_stats": ".state._cache_stats",
    "clear_cache": ".state._cache_stats",
    "RollingCorrelation": ".signals._correlation",
    "batch_notify": ".delivery._notify",
    "flush_notifications": ".delivery._notify",
    "enqueue": ".delivery._notify",
    "pending_notifications": ".delivery._notify",
    "queue_stats": ".delivery._notify",
    "dead_letters": ".delivery._notify",
    "destination_names": ".delivery._notify",
    "destination_stats": ".delivery._notify",
    "retry_dead_letter": ".delivery._notify",
    "drop_dead_letter": ".delivery._notify",
    "emit": ".state._events",
    "run_events": ".state._events",
    "run_monitor": ".watch._monitor",
    "get_status": ".watch._monitor",
    "run_signals": ".signals._pipeline",
    "is_live": ".signals._pipeline",
    "SignalsResult": ".signals._results",
    "replay": ".backtest._replay",
    "Replay": ".backtest._replay",
    "update_correlation": ".signals._correlation",
    "history": ".watch._history",
    "train_and_save": ".signals._model_train",
    "crontab": ".watch._cron",
    "systemd_unit": ".watch._cron",
    "Check": ".watch._doctor",
    "run_checks": ".watch._doctor",
    "sample_clock": ".data._candles",
    "Workspace": ".state._workspace",
    "EvalSettings": ".backtest._evaluate",
    "Evaluation": ".backtest._evaluate",
    "evaluate": ".backtest._evaluate",
    "parse_horizons": ".backtest._evaluate",
    "Stats": ".backtest._evaluate",
    "Group": ".backtest._evaluate",
    "GateEffect": ".backtest._evaluate",
    "IC": ".backtest._evaluate",
    "Curve": ".backtest._evaluate",
    "WalkForwardPeriod": ".backtest._walkforward",
    "Backtest": ".backtest._run",
    "Comparison": ".backtest._run",
    "run_backtest": ".backtest._run",
    "compare_backtests": ".backtest._run",
    "parse_time": ".backtest._run",
    "write_csv": ".backtest._run",
    "write_report": ".backtest._report",
    "record_run": ".watch._monitor",
    "signals_runs": ".watch._history",
    "cache_report": ".watch._history",
    "CacheReport": ".watch._history",
    "reset_cache_stats": ".state._cache_stats",
    "fmt_minute": ".base._numfmt",
    "fmt_price": ".base._numfmt",
    "fmt_vs": ".base._numfmt",
    "fmt_time": ".base._numfmt",
    "collect_metrics": ".watch._metrics",
    "freqtrade_signals": ".backtest._freqtrade",
    "write_textfile": ".watch._metrics",
    "shared_data_error": ".state._redis",
}

__all__ = [
    "AlphaEngineCoordinator",
    "Backtest",
    "BinanceClient",
    "BotoptError",
    "CacheDirUnsafeError",
    "CacheError",
    "CacheReport",
    "Check",
    "Comparison",
    "Config",
    "ConfigError",
    "Curve",
    "DataError",
    "DataStatus",
    "Direction",
    "EvalSettings",
    "Evaluation",
    "EventType",
    "GateEffect",
    "Group",
    "IC",
    "INTERVALS",
    "ModelError",
    "NetworkError",
    "NotificationType",
    "NotifyError",
    "Regime",
    "Replay",
    "RollingCorrelation",
    "Signal",
    "SignalsResult",
    "StaleDataError",
    "Stats",
    "TelegramConfigError",
    "TelegramOutcome",
    "UnknownSymbolError",
    "UsageError",
    "WalkForwardPeriod",
    "Workspace",
    "batch_notify",
    "cache_features",
    "cache_gate",
    "cache_predictions",
    "cache_regime",
    "cache_report",
    "cached",
    "clear_cache",
    "collect_metrics",
    "compare_backtests",
    "compute_features",
    "config_items",
    "crontab",
    "dead_letters",
    "destination_names",
    "destination_stats",
    "detect_regime",
    "drop_dead_letter",
    "emit",
    "enqueue",
    "evaluate",
    "fetch_to_store",
    "flush_notifications",
    "fmt_minute",
    "fmt_price",
    "fmt_time",
    "fmt_vs",
    "freqtrade_signals",
    "get_cache_stats",
    "get_host_cache_stats",
    "get_status",
    "history",
    "interval_ms",
    "is_live",
    "load_candles",
    "load_config",
    "parse_as_of",
    "parse_horizons",
    "parse_symbols",
    "parse_time",
    "pending_notifications",
    "plan_fetch",
    "queue_stats",
    "record_run",
    "replay",
    "reset_cache_stats",
    "resolve_symbols",
    "retry_dead_letter",
    "run_backtest",
    "run_checks",
    "run_events",
    "run_monitor",
    "run_signals",
    "sample_clock",
    "shared_data_error",
    "signals_runs",
    "systemd_unit",
    "train_and_save",
    "update_correlation",
    "validate_candles",
    "write_csv",
    "write_report",
    "write_starter_config",
    "write_textfile",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'botopt.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover  (mypy sees the real types; runtime stays lazy)
    from .backtest._evaluate import (  # noqa: F401
        IC,
        Curve,
        EvalSettings,
        Evaluation,
        GateEffect,
        Group,
        Stats,
        evaluate,
        parse_horizons,
    )
    from .backtest._freqtrade import freqtrade_signals  # noqa: F401
    from .backtest._replay import Replay, replay  # noqa: F401
    from .backtest._report import write_report  # noqa: F401
    from .backtest._run import (  # noqa: F401
        Backtest,
        Comparison,
        compare_backtests,
        parse_time,
        run_backtest,
        write_csv,
    )
    from .backtest._walkforward import WalkForwardPeriod  # noqa: F401
    from .base._config import (  # noqa: F401
        INTERVALS,
        Config,
        config_items,
        interval_ms,
        load_config,
        write_starter_config,
    )
    from .base._numfmt import fmt_minute, fmt_price, fmt_time, fmt_vs  # noqa: F401
    from .base._vocab import (  # noqa: F401
        DataStatus,
        Direction,
        EventType,
        NotificationType,
        Regime,
        TelegramOutcome,
    )
    from .data._binance import BinanceClient  # noqa: F401
    from .data._candles import (  # noqa: F401
        load_candles,
        parse_as_of,
        parse_symbols,
        resolve_symbols,
        sample_clock,
        validate_candles,
    )
    from .data._store import fetch_to_store, plan_fetch  # noqa: F401
    from .delivery._notify import (  # noqa: F401
        batch_notify,
        dead_letters,
        destination_names,
        destination_stats,
        drop_dead_letter,
        enqueue,
        flush_notifications,
        pending_notifications,
        queue_stats,
        retry_dead_letter,
    )
    from .errors import (  # noqa: F401
        BotoptError,
        CacheDirUnsafeError,
        CacheError,
        ConfigError,
        DataError,
        ModelError,
        NetworkError,
        NotifyError,
        StaleDataError,
        TelegramConfigError,
        UnknownSymbolError,
        UsageError,
    )
    from .signals._correlation import RollingCorrelation, update_correlation  # noqa: F401
    from .signals._engines import AlphaEngineCoordinator, Signal  # noqa: F401
    from .signals._features import compute_features  # noqa: F401
    from .signals._model_train import train_and_save  # noqa: F401
    from .signals._pipeline import is_live, run_signals  # noqa: F401
    from .signals._regime import detect_regime  # noqa: F401
    from .signals._results import SignalsResult  # noqa: F401
    from .state._cache import (  # noqa: F401
        cache_features,
        cache_gate,
        cache_predictions,
        cache_regime,
        cached,
    )
    from .state._cache_stats import (  # noqa: F401
        clear_cache,
        get_cache_stats,
        get_host_cache_stats,
        reset_cache_stats,
    )
    from .state._events import emit, run_events  # noqa: F401
    from .state._redis import shared_data_error  # noqa: F401
    from .state._workspace import Workspace  # noqa: F401
    from .watch._cron import crontab, systemd_unit  # noqa: F401
    from .watch._doctor import Check, run_checks  # noqa: F401
    from .watch._history import CacheReport, cache_report, history, signals_runs  # noqa: F401
    from .watch._metrics import collect_metrics, write_textfile  # noqa: F401
    from .watch._monitor import get_status, record_run, run_monitor  # noqa: F401
