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
    "load_candles": "botopt.core._candles",
    "validate_candles": "botopt.core._candles",
    "parse_symbols": "botopt.core._candles",
    "parse_as_of": "botopt.core._candles",
    "interval_ms": "botopt.core._candles",
    "BinanceClient": "botopt.core._binance",
    "fetch_to_store": "botopt.core._store",
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
    "emit": "botopt.core._events",
    "run_monitor": "botopt.core._monitor",
    "get_status": "botopt.core._monitor",
    "run_signals": "botopt.core._pipeline",
    "is_live": "botopt.core._pipeline",
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


if TYPE_CHECKING:  # pragma: no cover
    from botopt.core._config import INTERVALS, Config, load_config  # noqa: F401
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
