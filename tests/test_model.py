"""The baseline model: deterministic, time-ordered, honest about the majority baseline."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import compute_features, load_candles, load_config
from botopt.core.base._config import ModelConfig
from botopt.core.errors import ModelError
from botopt.core.signals._model import LogisticModel, load_model, train_model, training_set

runner = CliRunner()


@pytest.fixture(scope="module")
def real_features(shared_data):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    return compute_features(load_candles(["ETH_BTC", "LTC_BTC", "XMR_BTC"], config=cfg))


def test_training_is_deterministic_and_time_ordered(real_features):
    a = train_model(real_features, interval_ms=300_000)
    b = train_model(real_features, interval_ms=300_000)
    assert a.model == b.model and a.model.version == b.model.version
    x, y, t = training_set(real_features, 300_000, a.model.features)
    cut = np.quantile(t, 0.8, method="lower")
    assert a.train_rows == int((t < cut).sum()) and a.holdout_rows == int((t >= cut).sum())
    assert 0.0 <= a.accuracy <= 1.0 and a.log_loss > 0
    # Honest comparison: reported next to the baseline, whatever the outcome.
    assert abs(a.baseline_accuracy - 0.5) < 0.2


def test_labels_never_cross_a_gap(shared_data):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    f = compute_features(load_candles(["ADA_BTC"], config=cfg))  # ADA lacks 40 slots
    x, y, t = training_set(f, 300_000, load_config().features)
    nxt = dict(zip(f["open_time"].dt.epoch("ms").to_list()[:-1],
                   f["open_time"].dt.epoch("ms").to_list()[1:], strict=True))
    assert all(nxt[int(ti)] - int(ti) == 300_000 for ti in t)


def test_save_load_round_trip_and_batch_equals_single(real_features, tmp_path):
    result = train_model(real_features, interval_ms=300_000)
    path = tmp_path / "m.json"
    result.model.save(path)
    loaded = load_model(ModelConfig(path=path))
    rows = real_features.group_by("symbol", maintain_order=True).tail(1)
    assert np.array_equal(loaded.predict_proba(rows), result.model.predict_proba(rows))
    batch = loaded.predict_proba(rows)
    singles = [loaded.predict_proba(rows[i:i + 1])[0] for i in range(rows.height)]
    assert list(batch) == singles
    data = json.loads(path.read_text())
    data["weights"][0] += 1.0
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="version hash does not match"):
        load_model(ModelConfig(path=path))


def _bundled() -> dict:
    from importlib.resources import files

    data = json.loads(files("botopt.core").joinpath("default_model.json").read_bytes())
    del data["version"]  # edited by hand: no hash to match
    return data


@pytest.mark.parametrize("edit, says", [
    ({"weights": [float("nan")] * 9}, "weights holds a value that is not finite"),
    ({"weights": [1e308] * 9}, "weights holds a value"),
    ({"std": [0.0] * 9}, "a std is 0 or negative"),
    ({"std": [-1.0] * 9}, "a std is 0 or negative"),
    ({"bias": 10 ** 400}, "bias"),
    ({"bias": True}, "bias is not a list of numbers"),
    ({"meta": ["x"]}, "meta is not an object"),
    ({"meta": None}, "meta is not an object"),
    ({"inputs": ["rsi"] * 9}, "inputs names an input twice"),
    ({"inputs": [[1]] * 9}, "inputs is not a list of input names"),
    ({"inputs": ["nope", *_bundled()["inputs"][1:]]}, "unknown input 'nope'"),
    ({"inputs": [], "mean": [], "std": [], "weights": []}, "inputs is not a list"),
    ({"features": {"rsi_period": 14.0}}, "features.rsi_period: expected an integer"),
    ({"features": {"rsi_period": 0}}, "features.rsi_period: must be between 1 and"),
    ({"features": {"ema_fast": 30}}, "features.ema_fast: must be shorter"),
    ({"features": {"nope": 1}}, "unknown features setting 'nope'"),
    ({"features": []}, "features is not an object"),
    ({"mean": "abc"}, "mean is not a list of numbers"),
])
def test_a_model_file_that_cannot_predict_is_refused_naming_it(tmp_path, edit, says):
    """A NaN weight or a zero std loaded in silence and made every probability NaN: every
    signal blocked as "no model probability". Other shapes ended in AttributeError,
    polars' DuplicateError or ColumnNotFoundError, OverflowError or a zip error."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**_bundled(), **edit}))
    with pytest.raises(ModelError, match=says) as info:
        load_model(ModelConfig(path=path))
    assert info.value.file == str(path)


def test_training_on_one_class_or_a_bad_holdout_is_refused(real_features, tmp_path):
    rising = real_features.filter(pl.col("symbol") == "ETH_BTC").with_columns(
        pl.lit(1e-3).alias("log_return"))  # every next candle closes up
    with pytest.raises(ModelError, match="moved up: nothing to learn from"):
        train_model(rising, interval_ms=300_000)
    for bad in (-0.5, 1.5, float("nan"), "0.2", True):
        with pytest.raises(ModelError, match="holdout_fraction") as info:
            train_model(real_features, interval_ms=300_000, holdout_fraction=bad)
        assert info.value.key == "holdout_fraction"


def test_bundled_default_model_loads():
    model = load_model(ModelConfig())
    assert isinstance(model, LogisticModel) and len(model.version) == 16


def test_plugin_model(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text(textwrap.dedent("""
        def predict(rows):
            return [0.9] * rows.height
        def broken(rows):
            return [2.0] * rows.height
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    m = load_model(ModelConfig(predict="mymodel:predict"))
    rows = pl.DataFrame({"x": [1, 2]})
    assert list(m.predict_proba(rows)) == [0.9, 0.9] and m.version.startswith("plugin:")
    with pytest.raises(ModelError, match="outside"):
        load_model(ModelConfig(predict="mymodel:broken")).predict_proba(rows)
    with pytest.raises(ModelError, match="has no function nothere"):
        load_model(ModelConfig(predict="mymodel:nothere"))
    sys.modules.pop("mymodel", None)


@pytest.mark.parametrize("target, message", [
    ("no_such_module_xyz:predict", "cannot import no_such_module_xyz"),
    ("justaname", "expected 'package.module:function'"),
])
def test_bad_plugin_via_cli_exit_1(tmp_path, target, message):
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "-s", "BTCUSDT",
                                 "--as-of", "2026-09-20", "--no-cache"],
                           env={"BOTOPT_MODEL_PREDICT": target})
    assert result.exit_code == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_file_via_cli(tmp_path):
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "-s", "BTCUSDT",
                                 "--as-of", "2026-09-20"],
                           env={"BOTOPT_MODEL_PATH": str(tmp_path / "nope.json")})
    assert result.exit_code == 1 and "model file not found" in result.stderr


def test_model_train_cli(tmp_path, shared_data):
    out = tmp_path / "model.json"
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "model", "train", "--data-dir",
                                 str(shared_data / "candles" / "5m"), "--symbols",
                                 "ETH_BTC,XMR_BTC", "--output", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"accuracy", "log_loss", "baseline_accuracy", "baseline_log_loss"} <= set(report)
    assert load_model(ModelConfig(path=out)).version == report["version"]
    too_little = runner.invoke(app, ["--cache-dir", str(tmp_path), "model", "train",
                                     "--symbols", "BTCUSDT", "--as-of", "2026-09-10T03:00Z"])
    assert too_little.exit_code == 1 and "not enough to train" in too_little.stderr


def test_model_train_writes_only_a_new_file_or_a_model(tmp_path, shared_data):
    """-o replaced a device or pipe with a regular file and overwrote any file (a
    botopt.toml); "-o ''" named the current directory. -s all and @FILE were refused."""
    import os

    data = ["--cache-dir", str(tmp_path / "c"), "model", "train", "--data-dir",
            str(shared_data / "candles" / "5m")]
    (tmp_path / "syms.txt").write_text("ETH_BTC\nXMR_BTC\n")
    out = tmp_path / "m.json"
    ok = runner.invoke(app, [*data, "-s", f"@{tmp_path / 'syms.txt'}", "-o", str(out), "-q"])
    assert ok.exit_code == 0, ok.stderr
    again = runner.invoke(app, [*data, "-s", "ETH_BTC,XMR_BTC", "-o", str(out), "-q"])
    assert again.exit_code == 0, again.stderr  # a model is replaced by a model
    keep = tmp_path / "botopt.toml"
    keep.write_text("[data]\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, says in ((keep, "exists and is not a botopt model"), (fifo, "is a pipe"),
                         (tmp_path, "is a directory"), ("", "no file named")):
        bad = runner.invoke(app, [*data, "-s", "ETH_BTC,XMR_BTC", "-o", str(target)])
        assert bad.exit_code == 2 and says in bad.stderr, bad.stderr
    assert keep.read_text() == "[data]\n" and fifo.is_fifo()
    every = runner.invoke(app, [*data, "-s", "all", "--as-of", "2018-01-28", "--json"])
    assert every.exit_code == 0, every.stderr


def test_a_rug_pull_prints_no_numpy_warning(tmp_path):
    """A price doubling for 15 candles, then one candle to a millionth of the peak: the
    model's logit passed -709 and numpy printed "RuntimeWarning: overflow encountered in
    exp" with its source line on stderr of ``signals`` and ``backtest`` (sweep I). P(up)
    is the limit, 0, and nothing but botopt's own lines reaches stderr."""
    import subprocess
    from datetime import timedelta
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = pl.read_ipc(root / "sample_data" / "ETHUSDT-5m.feather").sort("date").tail(1000)
    mult = np.ones(src.height)
    at = src.height - 40
    for i in range(at, at + 15):
        mult[i:] *= 2.0
    mult[at + 15:] *= 1e-6
    o, h, lo, c = (src[k].to_numpy() * mult for k in ("open", "high", "low", "close"))
    o[1:] = np.where(mult[1:] != mult[:-1], c[:-1], o[1:])
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"date": src["date"], "open": o, "high": np.maximum(h, np.maximum(o, c)),
                  "low": np.minimum(lo, np.minimum(o, c)), "close": c,
                  "volume": src["volume"]}).write_ipc(data / "RUG_USDT-5m.feather")
    end = src["date"][-1] + timedelta(minutes=5)
    for args in (["signals", "--as-of", end.isoformat()],
                 ["backtest", "--since", src["date"][at].isoformat(),
                  "--until", end.isoformat()]):
        done = subprocess.run(
            [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(tmp_path / "c"),
             *args, "--data-dir", str(data), "-s", "RUG_USDT", "--json", "--no-cache"],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr and ".py:" not in done.stderr, done.stderr
