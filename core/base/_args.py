"""What a public library function is handed, checked where it enters.

The CLI's inputs are checked by ``load_config`` and the candle loaders; a library caller
hands sections and frames directly, and a wrong one surfaced deep inside as polars'
ColumnNotFoundError, an AttributeError or a ZeroDivisionError (``FeaturesConfig(adx_period=0)``).
These checks turn each into one line naming the argument, the column or the setting.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, TypeVar

from ..errors import ConfigError, UsageError, kind_of

S = TypeVar("S")

# A canonical candle frame's columns (``load_candles``' output), the prices and volume last.
CANDLE_COLUMNS = ("symbol", "open_time", "open", "high", "low", "close", "volume")


def section(config: Any, cls: type[S], name: str, fn: str) -> S:
    """The ``name`` section (of type ``cls``) from what a caller passes: the section, the
    whole Config, or None for the defaults; its numbers checked against the bounds a file's
    settings are held to."""
    from ._config import Config

    if config is None:
        return cls()
    if isinstance(config, Config):
        # checked too: a Config built in code (``Config(features=FeaturesConfig(bb_period=0))``)
        # never went through ``load_config``, and a period of 0 crashed the compiled features
        config = getattr(config, name)
    if not isinstance(config, cls):
        raise UsageError(f"{fn} wants a {cls.__name__} or a Config, not {kind_of(config)}",
                         key="config")
    # once per distinct section (calls on the hot path repeat), told apart by its values'
    # types too: FeaturesConfig(rsi_period=14.0) equals the checked (rsi_period=14)
    types = tuple(type(v) for v in vars(config).values())
    try:
        _checked(config, name, types)
    except TypeError:  # a field holds something unhashable: not one of its types
        _check_section(config, name)
    return config


@functools.lru_cache(maxsize=64)
def _checked(value: Any, name: str, types: tuple[type, ...]) -> None:
    _check_section(value, name)


def _check_section(value: Any, name: str) -> None:
    """A section built in code (``load_config`` checks the others): every number finite
    and within ``BOUNDS``; the features' periods whole numbers of candles, the fast EMA
    shorter than the slow."""
    from ._config import BOUNDS, GENERIC_LIMIT

    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        key = f"{name}.{f.name}"
        if f.type in ("int", int) and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{key}: expected an integer, got {kind_of(v)}", key=key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        low, high, why = BOUNDS.get(key, (-GENERIC_LIMIT, GENERIC_LIMIT, "a sane value"))
        if not (math.isfinite(v) and low <= v <= high):
            raise ConfigError(f"{key}: must be between {low:g} and {high:g} ({why}), got {v!r}",
                              key=key)
    if name == "features" and value.ema_fast >= value.ema_slow:
        raise ConfigError("features.ema_fast: must be shorter than features.ema_slow",
                          key="features.ema_fast")


def frame(value: Any, columns: Sequence[str], fn: str, numeric: Sequence[str] = ()) -> Any:
    """``value`` when it is a polars DataFrame holding ``columns``, the ``numeric`` ones of
    a numeric type; else a UsageError naming the argument or the first column at fault."""
    import polars as pl

    if not isinstance(value, pl.DataFrame):
        raise UsageError(f"{fn} wants a polars DataFrame, not {kind_of(value)}", key="frame")
    schema = value.schema
    for c in columns:
        if c not in schema:
            raise UsageError(f"{fn}: the frame has no {c!r} column (it has: "
                             f"{', '.join(list(schema)[:12]) or 'none'})", key=c)
    for c in numeric:
        if not schema[c].is_numeric():
            raise UsageError(f"{fn}: column {c!r} holds {schema[c]}, not numbers", key=c)
    return value
