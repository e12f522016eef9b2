"""Options shared by the commands that read candles, declared once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar, cast

import typer

SYMBOLS = typer.Option(None, "--symbols", "-s",
                       help="Comma-separated symbols: BTCUSDT, ETH_BTC, freqtrade's ETH/BTC, "
                       "or XRP/USDT:USDT (futures) (default: data.symbols).")
INTERVAL = typer.Option(None, "--interval", "-i", help="Candle interval: 1m 3m 5m 15m 30m "
                        "1h 2h 4h 6h 8h 12h 1d, or e.g. 8m for local files (default: "
                        "data.interval).")
SOURCE = typer.Option(None, "--source", help="Candle source: sample, local or binance "
                      "(default: data.source).")
DATA_DIR = typer.Option(None, "--data-dir", help="A freqtrade data directory (PAIR-interval."
                        "feather|parquet|json|json.gz|csv, futures/ for futures); implies "
                        "--source local.",
                        file_okay=False)
AS_OF = typer.Option(None, "--as-of", help="Behave as if it were this time (ISO 8601, UTC "
                     "if no offset): only candles closed by then are used.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def data_overrides(interval: Optional[str], source: Optional[str],
                   data_dir: Optional[Path]) -> dict[str, object]:
    """Config overrides for the candle options (``--data-dir`` alone means a local source)."""
    if data_dir is not None and source is None:
        source = "local"
    return {"data__interval": interval, "data__source": source,
            "data__data_dir": str(data_dir) if data_dir else None}


@dataclass(frozen=True)
class CandleArgs:
    """The candle options as given (None: the config's value), one value for a command."""

    symbols: Optional[str]
    interval: Optional[str]
    source: Optional[str]
    data_dir: Optional[Path]
    as_of: Optional[str]

    def overrides(self) -> dict[str, object]:
        return data_overrides(self.interval, self.source, self.data_dir)


@dataclass(frozen=True)
class Output:
    """How a data command prints: ``--json`` (its own flag) and ``--quiet`` (the global one)."""

    json: bool
    quiet: bool


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


_CANDLE_PARAMS = [_param("symbols", Optional[str], SYMBOLS),
                  _param("interval", Optional[str], INTERVAL),
                  _param("source", Optional[str], SOURCE),
                  _param("data_dir", Optional[Path], DATA_DIR),
                  _param("as_of", Optional[str], AS_OF)]
_OUTPUT_PARAMS = [_param("json_out", bool, JSON)]

F = TypeVar("F", bound=Callable[..., Any])


def _expand(placeholder: str, params: list[inspect.Parameter],
            build: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Callable[[F], F]:
    """A decorator that shows typer ``params`` where ``fn`` has the parameter ``placeholder``
    (so the options keep their place in --help) and calls ``fn`` with one value built from
    them. typer reads the signature, so the options are declared once, here."""
    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        if placeholder not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no parameter {placeholder!r}")
        shown = [q for p in sig.parameters.values()
                 for q in (params if p.name == placeholder else [p.replace(
                     kind=inspect.Parameter.KEYWORD_ONLY)])]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {p.name: kwargs.pop(p.name) for p in params}
            kwargs[placeholder] = build(given, kwargs)
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=shown)  # type: ignore[attr-defined]
        return cast(F, wrapper)
    return decorate


def _output(given: dict[str, Any], kwargs: dict[str, Any]) -> Output:
    from ._context import get_state

    ctx = kwargs.get("ctx")
    return Output(json=given["json_out"], quiet=ctx is not None and get_state(ctx).quiet)


candle_options = _expand("candles", _CANDLE_PARAMS, lambda given, _kw: CandleArgs(**given))
candle_options.__doc__ = "--symbols --interval --source --data-dir --as-of, in place of `candles`."
output_options = _expand("out", _OUTPUT_PARAMS, _output)
output_options.__doc__ = "--json in place of `out` (an Output that also knows --quiet)."
