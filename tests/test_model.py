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
