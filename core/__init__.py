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
    "BotoptError": "botopt.core.errors",
    "CacheDirUnsafeError": "botopt.core.errors",
    "CacheError": "botopt.core.errors",
    "ConfigError": "botopt.core.errors",
    "DataError": "botopt.core.errors",
    "ModelError": "botopt.core.errors",
    "NetworkError": "botopt.core.errors",
    "NotifyError": "botopt.core.errors",
    "StaleDataError": "botopt.core.errors",
    "TelegramConfigError": "botopt.core.errors",
    "UnknownSymbolError": "botopt.core.errors",
    "UsageError": "botopt.core.errors",
    "Config": "botopt.core._config",
    "load_config": "botopt.core._config",
    "INTERVALS": "botopt.core._config",
    "interval_ms": "botopt.core._config",
    "config_items": "botopt.core._config",
    "write_starter_config": "botopt.core._config",
    "DataStatus": "botopt.core._vocab",
    "Direction": "botopt.core._vocab",
    "EventType": "botopt.core._vocab",
    "NotificationType": "botopt.core._vocab",
    "Regime": "botopt.core._vocab",
    "TelegramOutcome": "botopt.core._vocab",
    "load_candles": "botopt.core._candles",
    "validate_candles": "botopt.core._candles",
    "parse_symbols": "botopt.core._candles",
    "parse_as_of": "botopt.core._candles",
    "BinanceClient": "botopt.core._binance",
    "fetch_to_store": "botopt.core._store",
    "plan_fetch": "botopt.core._store",
    "compute_features": "botopt.core._features",
    "detect_regime": "botopt.core._regime",
    "AlphaEngineCoordinator": "botopt.core._engines",
    "Signal": "botopt.core._engines",
    "cached": "botopt.core._cache",
    "cache_features": "botopt.core._cache",
    "cache_predictions": "botopt.core._cache",
    "cache_regime": "botopt.core._cache",
    "cache_gate": "botopt.core._cache",
    "get_cache_stats": "botopt.core._cache",
    "clear_cache": "botopt.core._cache",
    "RollingCorrelation": "botopt.core._correlation",
    "batch_notify": "botopt.core._notify",
    "flush_notifications": "botopt.core._notify",
    "enqueue": "botopt.core._notify",
    "pending_notifications": "botopt.core._notify",
    "dead_letters": "botopt.core._notify",
    "retry_dead_letter": "botopt.core._notify",
    "drop_dead_letter": "botopt.core._notify",
    "emit": "botopt.core._events",
    "run_events": "botopt.core._events",
    "run_monitor": "botopt.core._monitor",
    "get_status": "botopt.core._monitor",
    "run_signals": "botopt.core._pipeline",
    "is_live": "botopt.core._pipeline",
    "SignalsResult": "botopt.core._pipeline",
    "update_correlation": "botopt.core._correlation",
    "history": "botopt.core._history",
    "train_and_save": "botopt.core._model_train",
    "crontab": "botopt.core._cron",
    "systemd_unit": "botopt.core._cron",
    "Check": "botopt.core._doctor",
    "run_checks": "botopt.core._doctor",
    "sample_clock": "botopt.core._candles",
    "Workspace": "botopt.core._workspace",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'botopt.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover  (mypy sees the real types; runtime stays lazy)
    from botopt.core._binance import BinanceClient  # noqa: F401
    from botopt.core._cache import (  # noqa: F401
        cache_features,
        cache_gate,
        cache_predictions,
        cache_regime,
        cached,
        clear_cache,
        get_cache_stats,
    )
    from botopt.core._candles import (  # noqa: F401
        load_candles,
        parse_as_of,
        parse_symbols,
        sample_clock,
        validate_candles,
    )
    from botopt.core._config import (  # noqa: F401
        INTERVALS,
        Config,
        config_items,
        interval_ms,
        load_config,
        write_starter_config,
    )
    from botopt.core._correlation import RollingCorrelation, update_correlation  # noqa: F401
    from botopt.core._cron import crontab, systemd_unit  # noqa: F401
    from botopt.core._doctor import Check, run_checks  # noqa: F401
    from botopt.core._engines import AlphaEngineCoordinator, Signal  # noqa: F401
    from botopt.core._events import emit, run_events  # noqa: F401
    from botopt.core._features import compute_features  # noqa: F401
    from botopt.core._history import history  # noqa: F401
    from botopt.core._model_train import train_and_save  # noqa: F401
    from botopt.core._monitor import get_status, run_monitor  # noqa: F401
    from botopt.core._notify import (  # noqa: F401
        batch_notify,
        dead_letters,
        drop_dead_letter,
        enqueue,
        flush_notifications,
        pending_notifications,
        retry_dead_letter,
    )
    from botopt.core._pipeline import SignalsResult, is_live, run_signals  # noqa: F401
    from botopt.core._regime import detect_regime  # noqa: F401
    from botopt.core._store import fetch_to_store, plan_fetch  # noqa: F401
    from botopt.core._vocab import (  # noqa: F401
        DataStatus,
        Direction,
        EventType,
        NotificationType,
        Regime,
        TelegramOutcome,
    )
    from botopt.core._workspace import Workspace  # noqa: F401
    from botopt.core.errors import (  # noqa: F401
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
