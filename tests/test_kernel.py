"""The compiled features (numba, the ``fast`` extra) against the numpy path, bit for bit,
and when each is used: a small run never imports numba."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.benchmarks._common import features_kernel as kernel
from botopt.cli.main import app
from botopt.core import UsageError, compute_features, load_candles, load_config
from botopt.core.base._config import FeaturesConfig
from botopt.core.signals._features import (
    KERNEL_ENV,
    SMOOTHERS,
    _columns,
    compute_features_split,
    feature_columns,
    kernel_for,
)

pytest.importorskip("numba", reason="numba (the fast extra) is a test dependency")

ROOT = Path(__file__).resolve().parents[1]


def both(fn, *args, **kwargs):
    with kernel("numpy"):
        plain = fn(*args, **kwargs)
    with kernel("numba"):
        compiled = fn(*args, **kwargs)
    return plain, compiled


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values and NaN in the same places (0.0 and -0.0 compare equal, as the output
    columns do)."""
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


@st.composite
def candle_frames(draw):
    """Several symbols of different lengths (0 rows to a few hundred) whose prices are
    random walks over nine orders of magnitude, with flat stretches (the two-pass std's
    windows), repeated highs and lows (directional movement ties), zero volumes, and
    exact-zero changes."""
    frames = []
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for k in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 260))
        scale = draw(st.sampled_from([1e-8, 2e-5, 1.0, 60_000.0, 3e9]))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        rets = rng.normal(0, draw(st.sampled_from([1e-9, 1e-4, 0.03])), n)
        if draw(st.booleans()):
            rets[rng.random(n) < 0.6] = 0.0  # long flat stretches
        close = scale * np.exp(np.cumsum(rets))
        open_ = np.concatenate([close[:1], close[:-1]])
        spread = rng.random(n) * draw(st.sampled_from([0.0, 1e-6, 0.02]))
        high = np.maximum(open_, close) * (1 + spread)
        low = np.minimum(open_, close) * (1 - spread / 2)
        volume = rng.random(n) * 1e6
        volume[rng.random(n) < 0.3] = 0.0
        frames.append(pl.DataFrame({
            "symbol": [f"S{k}"] * n,
            "open_time": [t0 + timedelta(minutes=5 * i) for i in range(n)],
            "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        }, schema_overrides={"symbol": pl.String, "open_time": pl.Datetime("ms", "UTC")}))
    return pl.concat(frames)


@st.composite
def periods(draw):
    fast = draw(st.integers(1, 15))
    return FeaturesConfig(
        ema_fast=fast, ema_slow=fast + draw(st.integers(1, 30)),
        rsi_period=draw(st.integers(1, 20)), atr_period=draw(st.integers(1, 20)),
        adx_period=draw(st.integers(1, 20)), bb_period=draw(st.integers(1, 30)),
        bb_std=draw(st.sampled_from([0.0, 2.0, 2.5])), vol_period=draw(st.integers(1, 30)),
        volume_z_period=draw(st.integers(1, 30)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candle_frames(), st.one_of(st.just(FeaturesConfig()), periods()))
def test_the_compiled_features_equal_the_numpy_features_bit_for_bit(candles, fc):
    plain, compiled = both(compute_features, candles, fc)
    assert plain.columns == compiled.columns
    for col in feature_columns(fc):
        a = plain[col].to_numpy().astype(float)
        b = compiled[col].to_numpy().astype(float)
        assert same_bits(a, b), col
        assert plain[col].null_count() == compiled[col].null_count(), col


HOSTILE = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e308, 1e-308, 5e-324]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candle_frames(), st.data())
def test_hostile_values_give_the_same_bits_on_both_paths(candles, data):
    # compute_features takes any numeric frame: NaN, infinities, zeros, negative and
    # subnormal prices must propagate the same way through both paths (NaN where numpy's
    # maximum gives NaN, 0 where a ratio's denominator vanishes)
    n = candles.height
    if not n:
        return
    cols = {}
    for col in ("high", "low", "close", "volume"):
        x = candles[col].to_numpy().copy()
        at = data.draw(st.lists(st.integers(0, n - 1), max_size=6))
        x[at] = data.draw(st.lists(st.sampled_from(HOSTILE), min_size=len(at),
                                   max_size=len(at)))
        cols[col] = x
    candles = candles.with_columns(pl.Series(k, v) for k, v in cols.items())
    with np.errstate(all="ignore"):
        plain, compiled = both(compute_features, candles)
    for col in feature_columns():
        assert same_bits(plain[col].to_numpy().astype(float),
                         compiled[col].to_numpy().astype(float)), col


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candle_frames(), st.data())
def test_resuming_and_capturing_give_the_same_bits_on_both_paths(candles, data):
    # The carried step's use: capture the recursions at a row, resume a later slice from
    # given values. Both paths get the same inputs; each output and carried value must match.
    fc = FeaturesConfig()
    runs = candles.get_column("symbol").rle().struct.field("len").to_numpy().astype(np.int64)
    if not runs.size:
        return
    capture = np.array([data.draw(st.integers(0, max(int(r) - 1, 0))) for r in runs])
    resume = np.array(data.draw(st.lists(
        st.lists(st.floats(0, 1e4), min_size=len(runs), max_size=len(runs)),
        min_size=len(SMOOTHERS), max_size=len(SMOOTHERS))))
    names = feature_columns(fc)
    for res in (None, resume):
        (out_a, last_a), (out_b, last_b) = both(_columns, candles, runs, fc, names, res,
                                                capture)
        for name in names:
            assert same_bits(out_a[name], out_b[name]), name
            assert same_bits(last_a[name], last_b[name]), name
        assert same_bits(last_a["_carry"], last_b["_carry"])


def test_the_split_call_and_the_real_pairs_agree(shared_data):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d)})
    candles = load_candles(["ETH_BTC", "TRX_BTC", "XMR_BTC", "NXT_BTC", "ZEC_BTC"], config=cfg)
    plain, compiled = both(compute_features, candles)
    assert plain.equals(compiled)
    (wa, ta), (wb, tb) = both(compute_features_split, candles, None, ["adx_14"])
    assert wa.equals(wb) and ta.equals(tb)


def test_a_flat_window_is_zero_on_both_paths():
    # 40 identical candles, then one that moves: the windows over the flat part have std
    # exactly 0 (two-pass), so volume_z and bb_width are 0 there, not rounding noise
    n = 60
    close = np.where(np.arange(n) < 40, 123.456, 123.5)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    candles = pl.DataFrame({
        "symbol": ["F"] * n, "open_time": [t0 + timedelta(minutes=5 * i) for i in range(n)],
        "open": close, "high": close, "low": close, "close": close, "volume": np.full(n, 7.0),
    }, schema_overrides={"open_time": pl.Datetime("ms", "UTC")})
    plain, compiled = both(compute_features, candles)
    assert plain.equals(compiled)
    assert compiled["bb_width_20"][19:40].to_list() == [0.0] * 21


def test_the_kernel_setting_is_checked_and_named():
    with kernel("numpy"):
        assert kernel_for(10**9) is None
    with kernel("fast please"), pytest.raises(UsageError, match=KERNEL_ENV) as info:
        kernel_for(1)
    assert info.value.key == KERNEL_ENV
    runner = CliRunner()
    sample = ROOT / "sample_data"
    result = runner.invoke(app, ["signals", "--symbols", "BTCUSDT", "--no-cache",
                                 "--data-dir", str(sample)],
                           env={KERNEL_ENV: "turbo"})
    assert result.exit_code == 2, result.output
    assert KERNEL_ENV in result.output and "Traceback" not in result.output


def _python(code: str, env: dict[str, str] | None = None) -> str:
    full = {k: v for k, v in os.environ.items() if k != KERNEL_ENV}
    full.update(env or {})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


SMALL_RUN = """
import sys
from botopt.benchmarks._common import synthetic_candles
from botopt.core import compute_features
from botopt.core.signals import _features
{setup}
compute_features(synthetic_candles(20, 1000))
print("numba" in sys.modules)
"""


def test_a_small_run_never_imports_numba_and_a_large_one_does():
    # the cron-sized call: numba is installed here, and still not imported
    assert _python(SMALL_RUN.format(setup="")) == "False"
    # past the threshold (lowered to this call's 20,000 rows): loaded and used
    assert _python(SMALL_RUN.format(setup="_features.KERNEL_MIN_ROWS = 20_000")) == "True"
    assert _python(SMALL_RUN.format(setup=""), {KERNEL_ENV: "numba"}) == "True"


def test_a_numba_that_cannot_be_imported_means_the_numpy_path(tmp_path):
    # A numba whose import fails (here a stand-in package that raises, as a numba built
    # for another numpy does): the large call is computed by numpy, the same answer; and
    # asking for numba by name says it does not work, in one line.
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('numba built for another numpy')\n")
    code = SMALL_RUN.format(setup="_features.KERNEL_MIN_ROWS = 1") + \
        "print(_features.kernel_for(10**9) is None)\n"
    assert _python(code, {"PYTHONPATH": str(tmp_path)}).split() == ["False", "True"]
    with pytest.raises(AssertionError, match=r"numba does not work here \(ImportError: "
                                             "numba built for another numpy\\)"):
        _python(SMALL_RUN.format(setup=""), {"PYTHONPATH": str(tmp_path),
                                             KERNEL_ENV: "numba"})


def test_the_kernel_module_is_imported_only_by_the_features():
    # numba is optional: the one module that imports it is loaded by kernel_for alone
    users = [p for p in (ROOT / "core").rglob("*.py")
             if "_kernel" in p.read_text() and p.name not in ("_kernel.py", "_features.py")]
    assert users == []
    assert "import numba" not in (ROOT / "core" / "signals" / "_features.py").read_text()


# -- sweep J: what reaches the features, checked where it enters (both paths) -------------

def _frame(n: int = 60, symbols: tuple[str | None, ...] = ("A",)) -> pl.DataFrame:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    c = 100 + np.sin(np.arange(n * len(symbols)) / 5.0)
    return pl.DataFrame({
        "symbol": [s for s in symbols for _ in range(n)],
        "open_time": [t0 + timedelta(minutes=5 * i) for _ in symbols for i in range(n)],
        "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": np.ones(len(c)),
    }, schema_overrides={"symbol": pl.String, "open_time": pl.Datetime("ms", "UTC")})


@pytest.mark.parametrize("mode", ["numpy", "numba"])
def test_a_config_built_in_code_is_checked_before_the_features(mode):
    # a whole Config skipped the section's bounds: a period of 0 segfaulted the compiled
    # path (no bounds checks there) and was a ZeroDivisionError on numpy's
    from botopt.core import Config
    from botopt.core.errors import ConfigError

    cfg = Config(features=FeaturesConfig(bb_period=0))
    with kernel(mode), pytest.raises(ConfigError, match="features.bb_period") as info:
        compute_features(_frame(), cfg)
    assert info.value.key == "features.bb_period"


def test_the_split_call_refuses_a_full_list_it_cannot_honour():
    df = _frame()
    for full, why in ((["bogus"], "not a feature column"), (["close"], "not a feature column"),
                      (["adx_14", "adx_14"], "named twice"), ("ema_12", "list")):
        with pytest.raises(UsageError, match=why) as info:
            compute_features_split(df, None, full)
        assert info.value.key == "full"
    # an empty frame that already has the feature columns: as compute_features does it
    empty = compute_features(df).head(0)
    whole, tail = compute_features_split(empty, None, ["adx_14"])
    assert whole.columns == empty.columns and tail.height == 0


@pytest.mark.parametrize("col", ["symbol", "open_time"])
def test_a_null_symbol_or_time_is_refused_with_its_row(col):
    # a null symbol's rows were never put in time order; a null time was used as a candle
    df = _frame(symbols=("A", "B")).with_row_index("i").with_columns(
        pl.when(pl.col("i") == 70).then(None).otherwise(pl.col(col)).alias(col)).drop("i")
    with pytest.raises(UsageError, match=f"row 71 has no {col}") as info:
        compute_features(df)
    assert info.value.key == col and info.value.row == 71


def test_a_symbol_column_of_lists_is_refused_in_one_line():
    df = _frame().with_columns(pl.concat_list("symbol").alias("symbol"))
    with pytest.raises(UsageError, match="column 'symbol' holds List"):
        compute_features(df)


def test_a_column_named_run_survives_a_reordering():
    # the reordering's temporary column was "_run": the caller's was overwritten, dropped
    df = _frame(symbols=("A", "B")).with_columns(pl.lit("keep me").alias("_run"))
    out = compute_features(df.reverse())
    assert out["_run"].to_list() == ["keep me"] * df.height
    key = ["symbol", "open_time"]
    assert out.drop("_run").sort(key).equals(compute_features(df.drop("_run")).sort(key))


@pytest.mark.parametrize("times", [[-100, 100, 0], [100, -100, 0]])
def test_small_integer_times_are_ordered_without_wrapping(times):
    # Int8 differences wrapped (100 - -100 = -56): sorted times re-sorted until a
    # RecursionError, reversed ones kept in the wrong order
    c = np.array([100.0, 101.0, 102.0])
    df = pl.DataFrame({"symbol": ["A", "A", "B"], "open_time": pl.Series(times, dtype=pl.Int8),
                       "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": c})
    out = compute_features(df)
    assert out.select("symbol", "open_time").rows() == [("A", -100), ("A", 100), ("B", 0)]


def test_the_answer_does_not_depend_on_the_callers_error_settings():
    # np.seterr(all="raise") made zero prices a FloatingPointError, and huge prices or a
    # window of one raise on the numpy path while the compiled one answered
    df = _frame(symbols=("A", "B"))
    cases = [(df.with_columns(pl.lit(0.0).alias(c) for c in ("high", "low", "close")), None),
             (df.with_columns(pl.col("close", "high", "low") * 1e300), None),
             (df, FeaturesConfig(vol_period=1, volume_z_period=1))]
    before = np.seterr(all="raise")
    try:
        for frame, fc in cases:
            plain, compiled = both(compute_features, frame, fc)
            assert plain.equals(compiled)
    finally:
        np.seterr(**before)


@pytest.mark.parametrize("mode", ["numpy", "numba"])
def test_runs_and_captured_rows_outside_the_frame_stop_before_the_arithmetic(mode):
    # the compiled path reads and writes without bounds checks: runs longer than the frame
    # corrupted the heap ("double free"), a captured row past its symbol read garbage
    df = _frame(symbols=("A", "B"))
    fc, names = FeaturesConfig(), feature_columns()
    with kernel(mode):
        with pytest.raises(ValueError, match="runs"):
            _columns(df, np.array([60, 61]), fc, names)
        with pytest.raises(ValueError, match="captured row"):
            _columns(df, np.array([60, 60]), fc, names, None, np.array([0, 60]))
        with pytest.raises(ValueError, match="resume"):
            _columns(df, np.array([60, 60]), fc, names, np.zeros((9, 1)), np.array([0, 1]))


@pytest.mark.slow
def test_a_damaged_numba_cache_is_rebuilt_not_given_up(tmp_path):
    # numba's cache file cut short (a full disk, a killed compile): the first call failed
    # with UnpicklingError and the compiled path was off until someone removed the files;
    # like any cache of botopt's, it is dropped and rebuilt, the answer unchanged
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "nb"), KERNEL_ENV: "numba"}
    code = SMALL_RUN.format(setup="") + "print(_features.kernel_for(1) is not None)\n"
    assert _python(code, env).split() == ["True", "True"]
    damaged = list((tmp_path / "nb").rglob("*.nbc"))
    assert damaged
    for f in damaged:
        f.write_bytes(f.read_bytes()[:100])
    assert _python(code, env).split() == ["True", "True"]
