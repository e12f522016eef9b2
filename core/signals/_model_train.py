"""``botopt model train``: load candles, compute features, train, save."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..base._config import Config
from ..data._candles import load_candles, parse_symbols
from ..state._workspace import Workspace
from ._features import compute_features
from ._model import TrainResult, train_model


def train_and_save(config: Config, symbols: str | Sequence[str] | None, *,
                   as_of: str | None = None, output: Path | str | None = None,
                   holdout_fraction: float = 0.2) -> tuple[TrainResult, Path]:
    syms = parse_symbols(symbols if symbols is not None else config.data.symbols)
    candles = load_candles(syms, config=config, as_of=as_of)
    features = compute_features(candles, config.features)
    result = train_model(features, interval_ms=config.data.interval.ms,
                         features_config=config.features, holdout_fraction=holdout_fraction)
    if output is None:
        output = Workspace.of(config).dir() / "model.json"
    output = Path(output)  # a str from a library caller
    result.model.save(output)
    return result, output
