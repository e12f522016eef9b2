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
    "Config": "botopt.core.base._config",
    "load_config": "botopt.core.base._config",
    "INTERVALS": "botopt.core.base._config",
    "interval_ms": "botopt.core.base._config",
    "config_items": "botopt.core.base._config",
    "write_starter_config": "botopt.core.base._config",
    "DataStatus": "botopt.core.base._vocab",
    "Direction": "botopt.core.base._vocab",
    "EventType": "botopt.core.base._vocab",
    "NotificationType": "botopt.core.base._vocab",
    "Regime": "botopt.core.base._vocab",
    "TelegramOutcome": "botopt.core.base._vocab",
    "load_candles": "botopt.core.data._candles",
    "validate_candles": "botopt.core.data._candles",
    "parse_symbols": "botopt.core.data._candles",
    "parse_as_of": "botopt.core.data._candles",
    "BinanceClient": "botopt.core.data._binance",
    "fetch_to_store": "botopt.core.data._store",
    "plan_fetch": "botopt.core.data._store",
    "compute_features": "botopt.core.signals._features",
    "detect_regime": "botopt.core.signals._regime",
    "AlphaEngineCoordinator": "botopt.core.signals._engines",
    "Signal": "botopt.core.signals._engines",
    "cached": "botopt.core.state._cache",
    "cache_features": "botopt.core.state._cache",
    "cache_predictions": "botopt.core.state._cache",
    "cache_regime": "botopt.core.state._cache",
    "cache_gate": "botopt.core.state._cache",
    "get_cache_stats": "botopt.core.state._cache",
    "clear_cache": "botopt.core.state._cache",
    "RollingCorrelation": "botopt.core.signals._correlation",
    "batch_notify": "botopt.core.delivery._notify",
    "flush_notifications": "botopt.core.delivery._notify",
    "enqueue": "botopt.core.delivery._notify",
    "pending_notifications": "botopt.core.delivery._notify",
    "dead_letters": "botopt.core.delivery._notify",
    "retry_dead_letter": "botopt.core.delivery._notify",
    "drop_dead_letter": "botopt.core.delivery._notify",
    "emit": "botopt.core.state._events",
    "run_events": "botopt.core.state._events",
    "run_monitor": "botopt.core.watch._monitor",
    "get_status": "botopt.core.watch._monitor",
    "run_signals": "botopt.core.signals._pipeline",
    "is_live": "botopt.core.signals._pipeline",
    "SignalsResult": "botopt.core.signals._results",
    "replay": "botopt.core.backtest._replay",
    "Replay": "botopt.core.backtest._replay",
    "update_correlation": "botopt.core.signals._correlation",
    "history": "botopt.core.watch._history",
    "train_and_save": "botopt.core.signals._model_train",
    "crontab": "botopt.core.watch._cron",
    "systemd_unit": "botopt.core.watch._cron",
    "Check": "botopt.core.watch._doctor",
    "run_checks": "botopt.core.watch._doctor",
    "sample_clock": "botopt.core.data._candles",
    "Workspace": "botopt.core.state._workspace",
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
    from .backtest._replay import Replay, replay  # noqa: F401
    from .base._config import (  # noqa: F401
        INTERVALS,
        Config,
        config_items,
        interval_ms,
        load_config,
        write_starter_config,
    )
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
        sample_clock,
        validate_candles,
    )
    from .data._store import fetch_to_store, plan_fetch  # noqa: F401
    from .delivery._notify import (  # noqa: F401
        batch_notify,
        dead_letters,
        drop_dead_letter,
        enqueue,
        flush_notifications,
        pending_notifications,
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
        clear_cache,
        get_cache_stats,
    )
    from .state._events import emit, run_events  # noqa: F401
    from .state._workspace import Workspace  # noqa: F401
    from .watch._cron import crontab, systemd_unit  # noqa: F401
    from .watch._doctor import Check, run_checks  # noqa: F401
    from .watch._history import history  # noqa: F401
    from .watch._monitor import get_status, run_monitor  # noqa: F401
