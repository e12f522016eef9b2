"""The one code-version scheme: a cached result's key carries a hash of the code it came from.

A pipeline stage's key carries ``stage_tag(stage)``: a hash of the source of the botopt
modules that stage runs (``STAGE_MODULES``). Editing ``_features.py`` invalidates the
features, regimes, predictions and whole-run entries, and nothing else; a docstring edit in
``_monitor.py`` invalidates nothing. ``tests/test_versions.py`` keeps each list complete: it
fails when a stage's module starts importing a botopt module its list lacks.

A function cached with a decorator (``cache_features`` & co.) is the user's code, not
botopt's: its key carries ``function_tag(fn)``, a hash of that function's own code object and
of botopt's version.

Source bytes, not an AST, are hashed: reading a few files costs microseconds on the warm
path that answers without importing polars, where parsing would cost milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CORE = Path(__file__).parent.parent

# Module names under botopt.core, per stage. The whole run's entry depends on every stage,
# on the candle loading and validation that feed them, and on the pipeline that joins them.
_FEATURES = ("signals._features", "base._args", "base._codec", "base._config",
             "base._destinations", "base._redact", "base._symbols", "base._versions", "errors")
_REGIME = (*_FEATURES, "signals._regime", "base._vocab")
_PREDICTIONS = (*_FEATURES, "signals._model", "base._fs", "base._vocab")
# The gates read correlation rows that _correlation's code computes (on one BLAS thread,
# base._blas): an edit there may move a row's last bits and so a decision at the threshold.
_GATES = ("signals._gates", "signals._engines", "signals._regime", "signals._correlation",
          "base._blas", "base._codec", "base._frozen", "base._config", "base._destinations",
          "base._redact", "base._fs", "base._symbols", "base._versions", "base._vocab", "errors",
          "state._cooldowns", "state._cache", "state._entry_format", "state._paths",
          "state._regime_state", "state._workspace")
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "features": _FEATURES,
    "regime": _REGIME,
    "predictions": _PREDICTIONS,
    "gates": _GATES,
    "signals": tuple(sorted({*_REGIME, *_PREDICTIONS, *_GATES, "signals._pipeline",
                             "signals._results", "signals._effects", "data._candles",
                             "data._binance", "base._http", "signals._correlation",
                             "signals._carry",
                             "state._paths", "state._workspace", "state._cache",
                             "state._events", "state._regime_state", "state._cooldowns",
                             "state._entry_format", "base._redact", "base._blas",
                             "base._versions"})),
}
STAGE_MODULES["carry"] = (*_REGIME, "signals._carry", "base._fs")
STAGE_MODULES["backtest"] = (*STAGE_MODULES["signals"], "backtest._replay", "base._numfmt")


@functools.cache
def stage_tag(stage: str) -> str:
    """A hash of the source of the modules ``stage`` runs; changes when any of them does."""
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(set(STAGE_MODULES[stage])):
        h.update(name.encode() + b"\x00")
        h.update((_CORE / f"{name.replace('.', '/')}.py").read_bytes())
    return h.hexdigest()


def function_tag(fn: Callable[..., Any]) -> str:
    """Changes whenever the function's code (or botopt's version) does, so an edited function
    never serves a result computed by its old body. The code object is hashed with the code
    objects nested in it (comprehensions, lambdas, inner functions) by their contents:
    ``repr`` of a nested one holds its memory address, a new one in every process, so such
    a function never hit from one cron run to the next."""
    h = hashlib.blake2b(digest_size=12)
    h.update(_botopt_version().encode())
    code = getattr(fn, "__code__", None)
    if code is not None:
        _feed_code(h, code)
    return h.hexdigest()


@functools.cache
def _botopt_version() -> str:
    """Read once: a closure's captured functions are tagged at every call, and reading the
    installed metadata costs about a millisecond."""
    from importlib.metadata import version

    return version("botopt")


def _feed_code(h: Any, code: Any) -> None:
    h.update(b"code:" + code.co_code + b"\x00")
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                   code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            _feed_code(h, c)
        else:
            h.update(b"const:" + repr(c).encode() + b"\x00")
