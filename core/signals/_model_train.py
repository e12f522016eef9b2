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
    if output is not None:
        output = _model_target(Path(output))
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


def _model_target(path: Path) -> Path:
    """Where ``model train -o`` may write: a new file, or a model it replaces. A device or
    pipe was replaced by a regular file; any file (a botopt.toml) was overwritten."""
    from ..base._codec import json_loads
    from ..base._fs import regular_target
    from ..errors import UsageError
    from ._model import FORMAT

    real = regular_target(path, "--output")
    try:
        with open(real, "rb") as fh:
            head = fh.read(1 << 20)
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise UsageError(f"--output: cannot read {path}: {exc.strerror}", file=str(path),
                         key="--output") from None
    try:
        doc = json_loads(head)
    except ValueError:
        doc = None
    if head and not (isinstance(doc, dict) and doc.get("format") == FORMAT):
        raise UsageError(f"--output: {path} exists and is not a botopt model; name another "
                         "file, or remove it first", file=str(path), key="--output")
    return real
