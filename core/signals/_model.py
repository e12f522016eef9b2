"""The prediction model: P(next candle closes up) for each symbol's latest features.

The baseline is a logistic regression in numpy on scale-free transforms of the features, so
one model serves BTC at 60,000 and a pair at 2e-05. It is trained deterministically (Newton
steps with a small L2 penalty) on a time-ordered split: the holdout is strictly later than
everything trained on. Users may plug in their own function instead
(``model.predict = "pkg.mod:fn"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from ..base._args import section
from ..base._codec import digest, json_loads
from ..base._config import FeaturesConfig, ModelConfig
from ..base._fs import atomic_write_bytes
from ..base._versions import stage_tag
from ..errors import ConfigError, ModelError

FORMAT = "botopt-logreg-1"
BUNDLED = "default_model.json"


def input_exprs(fc: FeaturesConfig) -> dict[str, pl.Expr]:
    """Scale-free model inputs, derived from the feature columns."""
    n = fc.adx_period
    close = pl.col("close")
    return {
        "rsi": pl.col(f"rsi_{fc.rsi_period}") * 0.01 - 0.5,
        "adx": pl.col(f"adx_{n}") * 0.01,
        "di_spread": (pl.col(f"plus_di_{n}") - pl.col(f"minus_di_{n}")) * 0.01,
        "ema_spread": (pl.col(f"ema_{fc.ema_fast}") - pl.col(f"ema_{fc.ema_slow}")) / close,
        "atr_rel": pl.col(f"atr_{fc.atr_period}") / close,
        "bb_width": pl.col(f"bb_width_{fc.bb_period}"),
        "vol": pl.col(f"vol_{fc.vol_period}"),
        "volume_z": pl.col(f"volume_z_{fc.volume_z_period}"),
        "log_return": pl.col("log_return"),
    }


def design_matrix(rows: pl.DataFrame, names: Sequence[str], fc: FeaturesConfig) -> np.ndarray:
    exprs = input_exprs(fc)
    unknown = [n for n in names if n not in exprs]
    if unknown:
        raise ModelError(f"model uses unknown input {unknown[0]!r}", key=unknown[0])
    return rows.select([exprs[n].alias(n) for n in names]).to_numpy().astype(np.float64)


# The inputs a model may name (``input_exprs``' keys, which do not depend on the settings).
_INPUTS = frozenset(input_exprs(FeaturesConfig()))


def _numbers(values: Any, key: str, limit: float = 1e100) -> tuple[float, ...]:
    """A model's list of finite numbers: a NaN or infinite weight made every probability
    NaN, so every signal read "no model probability", in silence."""
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{key} is not a list of numbers")
    try:
        out = tuple(float(v) for v in values)
    except OverflowError:
        raise ValueError(f"{key} holds an integer beyond a float's range") from None
    if not all(math.isfinite(v) and abs(v) <= limit for v in out):
        raise ValueError(f"{key} holds a value that is not finite or beyond {limit:g}")
    return out


class Predictor(Protocol):
    @property
    def version(self) -> str: ...

    def predict_proba(self, rows: pl.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class LogisticModel:
    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    features: FeaturesConfig
    meta: tuple[tuple[str, Any], ...] = ()

    @property
    def version(self) -> str:
        body = json.dumps([FORMAT, self.names, self.mean, self.std, self.weights, self.bias,
                           sorted(vars(self.features).items())], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def predict_proba(self, rows: pl.DataFrame) -> np.ndarray:
        """P(up) per row; NaN where an input is missing (warm-up)."""
        x = design_matrix(rows, self.names, self.features)
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        # Column by column, not a matmul or an axis sum: numpy picks the summation order of
        # those by array shape, so one row alone could differ in the last bit from the same
        # row in a batch, and a cached or batched answer must equal the single one exactly.
        logits = np.full(x.shape[0], self.bias, dtype=np.float64)
        for j, w in enumerate(self.weights):
            logits = logits + z[:, j] * w
        # exp of a logit past -709 is inf and P(up) its limit, 0: no warning on stderr
        # (a crash's candles reach it; sweep I)
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-logits))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "inputs": list(self.names),
                "mean": list(self.mean), "std": list(self.std),
                "weights": list(self.weights), "bias": self.bias,
                "features": vars(self.features), "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> LogisticModel:
        try:
            if d.get("format") != FORMAT:
                raise ValueError(f"format {str(d.get('format'))[:40]!r}, expected {FORMAT!r}")
            names = d["inputs"]
            if not isinstance(names, list) or not names or \
                    not all(isinstance(n, str) for n in names):
                raise ValueError("inputs is not a list of input names")
            if len(set(names)) != len(names):
                raise ValueError("inputs names an input twice")
            unknown = [n for n in names if n not in _INPUTS]
            if unknown:
                raise ValueError(f"unknown input {unknown[0][:40]!r}")
            # weights of standardised inputs are of order 1; 1e6 and more overflow a logit
            mean, std = _numbers(d["mean"], "mean"), _numbers(d["std"], "std")
            weights = _numbers(d["weights"], "weights", 1e6)
            if not len(names) == len(mean) == len(std) == len(weights):
                raise ValueError("inputs, mean, std and weights differ in length")
            bias = _numbers([d["bias"]], "bias", 1e6)[0]
            if not all(x > 0 for x in std):
                raise ValueError("a std is 0 or negative: an input would be divided by it")
            meta = d.get("meta", {})
            if not isinstance(meta, dict):
                raise ValueError("meta is not an object")
            settings = d["features"]
            if not isinstance(settings, dict):
                raise ValueError("features is not an object")
            fields = {f.name for f in dataclasses.fields(FeaturesConfig)}
            odd = [k for k in settings if k not in fields]
            if odd:
                raise ValueError(f"unknown features setting {str(odd[0])[:40]!r}")
            # held to a config file's bounds, as a section built in code is (a period of
            # 14.0 named a column "rsi_14.0")
            features = section(FeaturesConfig(**settings), FeaturesConfig, "features", where)
            model = cls(names=tuple(names), mean=mean, std=std, weights=weights, bias=bias,
                        features=features,
                        meta=tuple(sorted((str(k), v) for k, v in meta.items())))
        except (KeyError, TypeError, ValueError, OverflowError, ConfigError) as exc:
            raise ModelError(f"{where}: not a botopt model ({exc})", file=str(where)) from None
        if d.get("version") not in (None, model.version):
            raise ModelError(f"{where}: version hash does not match its weights (edited?)",
                             file=str(where))
        return model

    def save(self, path: Path) -> None:
        try:
            atomic_write_bytes(path, json.dumps(self.to_json(), indent=1).encode(),
                               mode=0o644)
        except OSError as exc:
            raise ModelError(f"cannot save the model to {path}: "
                             f"{exc.strerror or type(exc).__name__}", file=str(path)) from exc


@dataclass(frozen=True)
class TrainResult:
    model: LogisticModel
    train_rows: int
    holdout_rows: int
    holdout_start: str
    accuracy: float
    log_loss: float
    baseline_accuracy: float
    baseline_log_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.model.version, "train_rows": self.train_rows,
                "holdout_rows": self.holdout_rows, "holdout_start": self.holdout_start,
                "accuracy": self.accuracy, "log_loss": self.log_loss,
                "baseline_accuracy": self.baseline_accuracy,
                "baseline_log_loss": self.baseline_log_loss}


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def training_set(features: pl.DataFrame, interval_ms: int,
                 fc: FeaturesConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, open_time_ms) with y = next candle closes up. A row whose next candle is
    missing (gap, or the end) has no label and is dropped, as is a row with a null input."""
    exprs = input_exprs(fc)
    # the inputs made before the filter, so it copies them and not every feature column (a
    # walk-forward's chunk of 8 symbols and two years was 400 MB more)
    nxt = features.select(
        *(e.alias(n) for n, e in exprs.items()),
        "open_time",
        _next_ret=pl.col("log_return").shift(-1).over("symbol"),
        _next_t=pl.col("open_time").shift(-1).over("symbol"),
    ).filter((pl.col("_next_t") - pl.col("open_time")).dt.total_milliseconds() == interval_ms)
    x = nxt.select(list(exprs)).to_numpy().astype(np.float64)
    y = (nxt["_next_ret"].to_numpy() > 0).astype(np.float64)
    t = nxt["open_time"].dt.epoch("ms").to_numpy()
    keep = np.isfinite(x).all(axis=1)
    return x[keep], y[keep], t[keep]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, weights with the bias last) of the L2-penalised logistic regression of
    ``y`` on the standardised ``x``: the one fit of ``train_model`` and the backtest's
    walk-forward, so the walk-forward judges the model botopt really trains."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    a = np.hstack([(x - mean) / std, np.ones((len(y), 1))])
    w = np.zeros(a.shape[1])
    reg = np.eye(a.shape[1]) * l2
    reg[-1, -1] = 0.0
    for _ in range(25):  # Newton/IRLS: converges in a handful of steps, deterministically
        with np.errstate(over="ignore"):  # the limit, 0, without a warning
            p = 1 / (1 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) / len(y) + reg @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a / len(y) + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return mean, std, w


def train_model(features: pl.DataFrame, *, interval_ms: int,
                features_config: FeaturesConfig | None = None,
                holdout_fraction: float = 0.2, l2: float = 1e-2) -> TrainResult:
    fc = features_config or FeaturesConfig()
    if isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float)) \
            or not 0.05 <= holdout_fraction <= 0.5:
        raise ModelError(f"holdout_fraction must be a number in 0.05..0.5, not "
                         f"{str(holdout_fraction)[:40]}", key="holdout_fraction")
    x, y, t = training_set(features, interval_ms, fc)
    if len(y) < 100:
        # no culprit: the data as a whole is too short
        raise ModelError(f"only {len(y)} labelled rows: not enough to train (need 100)")
    cut = np.quantile(t, 1 - holdout_fraction, method="lower")
    train, hold = t < cut, t >= cut
    if train.sum() < 50 or hold.sum() < 20:
        # no culprit: the data as a whole is too short on one side
        raise ModelError("not enough rows on one side of the time split")
    if y[train].min() == y[train].max():
        # Every candle of the data moved one way (a constant or steadily rising series):
        # a model would learn "always" and its accuracy would read 100 %.
        who = ", ".join(features.get_column("symbol").unique(maintain_order=True)
                        .cast(pl.String).to_list())
        raise ModelError(f"every labelled candle of {who[:80]} before the hold-out moved "
                         f"{'up' if y[train][0] == 1 else 'down or not at all'}: "
                         "nothing to learn from (train on more varied data)",
                         symbol=who[:80])
    mean, std, w = fit_logistic(x[train], y[train], l2)
    z = (x - mean) / std
    yt = y[train]
    names = tuple(input_exprs(fc))
    model = LogisticModel(names=names, mean=tuple(mean.tolist()), std=tuple(std.tolist()),
                          weights=tuple(w[:-1].tolist()), bias=float(w[-1]), features=fc,
                          meta=(("holdout_fraction", holdout_fraction), ("l2", l2),
                                ("train_rows", int(train.sum()))))
    with np.errstate(over="ignore"):  # the limit, 0, without a warning
        ph = 1 / (1 + np.exp(-(np.hstack([z[hold], np.ones((int(hold.sum()), 1))]) @ w)))
    yh = y[hold]
    base_p = float(yt.mean())
    majority = 1.0 if base_p >= 0.5 else 0.0
    from datetime import datetime, timezone

    return TrainResult(
        model=model, train_rows=int(train.sum()), holdout_rows=int(hold.sum()),
        holdout_start=datetime.fromtimestamp(cut / 1000, tz=timezone.utc).isoformat(),
        accuracy=float(np.mean((ph >= 0.5) == (yh == 1))), log_loss=_log_loss(yh, ph),
        baseline_accuracy=float(np.mean(yh == majority)),
        baseline_log_loss=_log_loss(yh, np.full_like(yh, base_p)),
    )


@dataclass(frozen=True)
class PluginPredictor:
    """A user's ``pkg.mod:fn`` taking the rows frame and returning one P(up) per row."""

    target: str
    fn: Any
    version: str

    def predict_proba(self, rows: pl.DataFrame) -> np.ndarray:
        try:
            out = self.fn(rows)
            arr = np.array([math.nan if v is None else float(v) for v in out], dtype=float)
        except Exception as exc:
            raise ModelError(f"model {self.target} failed: {type(exc).__name__}: {exc}",
                             key="model.predict") from exc
        if arr.shape != (rows.height,):
            raise ModelError(f"model {self.target} returned {arr.size} values for "
                             f"{rows.height} rows", key="model.predict")
        if np.any((arr < 0) | (arr > 1)):
            raise ModelError(f"model {self.target} returned a probability outside [0, 1]",
                             key="model.predict")
        return arr


def _load_plugin(target: str) -> PluginPredictor:
    mod_name, _, fn_name = target.partition(":")
    if not mod_name or not fn_name:
        raise ModelError(f"model.predict {target!r}: expected 'package.module:function'",
                         key="model.predict")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise ModelError(f"model.predict {target!r}: cannot import {mod_name} "
                         f"({type(exc).__name__}: {exc})", key="model.predict") from exc
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelError(f"model.predict {target!r}: {mod_name} has no function {fn_name}",
                         key="model.predict")
    # The cache key must change when the user's code changes: hash the module's source.
    src = getattr(mod, "__file__", None)
    try:
        digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()[:16] if src else "nosrc"
    except OSError:  # frozen, built-in, unreadable: the Python version is its version
        digest = f"nosrc-{sys.version.split()[0]}"
    return PluginPredictor(target, fn, f"plugin:{target}:{digest}")


def check_features(model: LogisticModel, fc: FeaturesConfig, where: str) -> None:
    """Refuse a model trained on other feature settings than the configured ones.

    Its inputs name columns by period (``rsi_14``) and its weights were fitted on values
    computed with the settings recorded in it: with any other setting it would either miss
    a column or read a different quantity under the same name.
    """
    for f in dataclasses.fields(FeaturesConfig):
        if f.name == "history":  # how much is loaded, not what a value means
            continue
        trained, configured = getattr(model.features, f.name), getattr(fc, f.name)
        if trained != configured:
            raise ModelError(
                f"{where} was trained with features.{f.name} = {trained!r}, but the "
                f"configuration sets {configured!r}: run `botopt model train` (and point "
                f"model.path at the result) or reset features.{f.name}",
                file=str(where), key=f"features.{f.name}")


def load_model(config: ModelConfig | None = None,
               features: FeaturesConfig | None = None) -> Predictor:
    """The configured model. Given the feature settings, a LogisticModel is also checked
    against them (``check_features``): a model trained on other features stops the run."""
    mc = config or ModelConfig()
    fc = features
    if mc.predict:
        return _load_plugin(mc.predict)
    if mc.path is not None:
        path = Path(mc.path)
        try:
            data = json_loads(path.read_bytes())
        except FileNotFoundError:
            raise ModelError(f"model file not found: {path}",
                             file=str(path), key="model.path") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise ModelError(f"{path}: cannot read model ({type(exc).__name__})",
                             file=str(path), key="model.path") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{path}: not a botopt model (not a JSON object)",
                             file=str(path), key="model.path")
        model = LogisticModel.from_json(data, str(path))
        where = f"model {path}"
    else:
        from importlib.resources import files

        data = json.loads(files("botopt.core").joinpath(BUNDLED).read_bytes())
        model = LogisticModel.from_json(data, f"bundled {BUNDLED}")
        where = f"the bundled model ({BUNDLED})"
    if fc is not None:
        check_features(model, fc, where)
    return model


def prediction_keys(version: str, rows: Mapping[str, Any]) -> dict[str, str]:
    """The predictions cache key per symbol: the model (its ``version``: a hash of the
    weights, or of a plug-in's source), the code, and the content of the feature row."""
    from ..state._cache import time_ordered

    prefix = digest("predictions", stage_tag("predictions"), version)
    # led by the row's candle minute (``time_ordered``) where the row has its time
    return {s: time_ordered(row["t"] // 1000, digest(prefix, repr(row)))
            if isinstance(row, Mapping) and type(row.get("t")) is int
            else digest(prefix, repr(row)) for s, row in rows.items()}
