"""Incremental correlation equals a full recomputation and numpy.corrcoef."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import RollingCorrelation, load_candles, load_config
from botopt.core._correlation import aligned_window, update_correlation

runner = CliRunner()
STEP = 300_000


def reference(r: np.ndarray, min_periods: int) -> np.ndarray:
    """Pairwise-complete Pearson written independently, pair by pair, with numpy.corrcoef."""
    n = r.shape[1]
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            m = ~np.isnan(r[:, i]) & ~np.isnan(r[:, j])
            if m.sum() < min_periods:
                continue
            x, y = r[m, i], r[m, j]
            if np.all(x == x[0]) or np.all(y == y[0]):
                continue
            out[i, j] = np.clip(np.corrcoef(x, y)[0, 1], -1, 1)
    return out


def close_enough(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return bool(np.array_equal(np.isnan(a), np.isnan(b))
                and np.nanmax(np.abs(np.nan_to_num(a - b)), initial=0) <= tol)


@st.composite
def update_sequences(draw):
    syms = [f"S{i}" for i in range(draw(st.integers(2, 5)))]
    ops = []
    closes = {s: 100.0 for s in syms}
    times = {s: 0 for s in syms}
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["candles", "candles", "candles", "remove", "gap"]))
        s = draw(st.sampled_from(syms))
        if kind == "remove":
            ops.append(("remove", s, None))
            continue
        if kind == "gap":
            times[s] += STEP * draw(st.integers(1, 5))
        n = draw(st.integers(1, 60))
        constant = draw(st.booleans())
        rows = []
        for _k in range(n):
            times[s] += STEP
            if not constant:
                closes[s] *= math.exp(draw(st.floats(-0.02, 0.02)))
            rows.append((times[s], closes[s]))
        ops.append(("candles", s, rows))
    return ops


def frame(sym: str, rows) -> pl.DataFrame:
    return pl.DataFrame({
        "symbol": [sym] * len(rows),
        "open_time": [datetime.fromtimestamp(t / 1000, tz=timezone.utc) for t, _ in rows],
        "close": [c for _, c in rows],
    }).with_columns(pl.col("open_time").dt.cast_time_unit("ms"))


@settings(max_examples=int(__import__("os").environ.get("BOTOPT_HYPOTHESIS_EXAMPLES", 60)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(update_sequences(), st.integers(3, 40), st.integers(2, 10))
def test_incremental_equals_full_after_any_updates(ops, window, min_periods):
    rc = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    for kind, sym, rows in ops:
        if kind == "remove":
            rc.remove(sym)
        else:
            rc.update(sym, frame(sym, rows))
        names, m = rc.matrix()
        full_names, full = rc.full_matrix()
        assert names == full_names
        assert close_enough(m, full, 1e-12)
        assert close_enough(full, reference(rc.returns, min_periods), 1e-12)
        assert np.all(np.isnan(m) | ((m >= -1) & (m <= 1)))


def test_many_updates_do_not_drift():
    rng = np.random.default_rng(7)
    rc = RollingCorrelation(window=50, min_periods=10, interval_ms=STEP)
    syms = [f"S{i}" for i in range(4)]
    t = 0
    updates = 0
    while updates < 100_000:
        t += STEP
        for s in syms:
            rc.update(s, {t: float(rng.normal(0, 1e-3))})
            updates += 1
        if t % (STEP * 5000) == 0:
            assert close_enough(rc.matrix()[1], rc.full_matrix()[1], 1e-12)
    assert close_enough(rc.matrix()[1], rc.full_matrix()[1], 1e-12)


def test_only_rows_with_new_candles_are_recomputed():
    rc = RollingCorrelation(window=10, min_periods=3, interval_ms=STEP)
    for s in ("A", "B", "C"):
        rc.update(s, {t * STEP: float(np.sin(t * (ord(s) - 60))) for t in range(1, 11)})
    rc.matrix()
    rc.update("D", {t * STEP: float(np.cos(t)) for t in range(1, 10)})  # end unchanged
    assert rc.rows_pending() == ["D"]
    rc.matrix()
    rc.update("D", {10 * STEP: 0.3})
    assert rc.rows_pending() == ["D"]
    rc.update("A", {11 * STEP: 0.1})  # the window's end moves: every pair changes
    assert rc.rows_pending() == ["A", "B", "C", "D"]


def test_real_pairs_match_numpy_corrcoef(shared_data, tmp_path):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path)})
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC", "ZEC_BTC", "ADA_BTC", "TRX_BTC"]
    candles = load_candles(syms, config=cfg, as_of="2018-01-22T00:00Z", limit=289)
    result = update_correlation(cfg, candles)
    names, r = aligned_window(candles, 288, STEP)
    assert names == result.symbols
    complete = [j for j in range(len(names)) if not np.isnan(r[:, j]).any()]
    assert len(complete) >= 3
    sub = np.corrcoef(r[:, complete].T)
    assert close_enough(result.matrix[np.ix_(complete, complete)], sub, 1e-12)
    assert close_enough(result.matrix, reference(r, 30), 1e-12)


def test_state_persists_between_runs_and_updates_only_moved_symbols(tmp_path, shared_data):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path)})
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    t = datetime(2018, 1, 22, 0, 0, tzinfo=timezone.utc)
    first = update_correlation(cfg, load_candles(syms, config=cfg, as_of=t, limit=300))
    assert first.rows_updated == syms
    same = update_correlation(cfg, load_candles(syms, config=cfg, as_of=t, limit=300))
    assert same.rows_updated == [] and close_enough(same.matrix, first.matrix, 0)
    later = load_candles(syms, config=cfg, as_of=t + timedelta(minutes=5), limit=300)
    moved = update_correlation(cfg, later)
    full = update_correlation(cfg, later, full=True)
    assert close_enough(moved.matrix, full.matrix, 1e-12)
    files = list((tmp_path / "correlation").iterdir())
    assert files and not any(f.suffix in (".pkl", ".pickle") for f in files)
    # A damaged state is rebuilt with a warning, not a failure.
    for f in (tmp_path / "correlation").glob("*.npy"):
        f.write_bytes(b"garbage")
    assert close_enough(update_correlation(cfg, later).matrix, full.matrix, 1e-12)


def test_correlations_cli(tmp_path, shared_data):
    d = shared_data / "candles" / "5m"
    args = ["--cache-dir", str(tmp_path), "correlations", "--data-dir", str(d), "--symbols",
            "ETH_BTC,LTC_BTC,NXT_BTC", "--as-of", "2018-01-22T00:00Z", "--window", "100"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["symbols"] == ["ETH_BTC", "LTC_BTC", "NXT_BTC"] and out["window"] == 100
    assert out["as_of"] == "2018-01-21T23:55:00Z"
    assert [out["matrix"][i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    full = json.loads(runner.invoke(app, [*args, "--json", "--full"]).stdout)
    assert full["matrix"] == out["matrix"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0 and "ETH_BTC" in plain.stdout
    bad = runner.invoke(app, [*args[:-2], "--window", "1"])
    assert bad.exit_code == 2


def test_zero_variance_is_null_not_zero():
    rc = RollingCorrelation(window=20, min_periods=5, interval_ms=STEP)
    rc.update("FLAT", {t * STEP: 0.0 for t in range(1, 21)})
    rc.update("MOVE", {t * STEP: float(t % 3) for t in range(1, 21)})
    _, m = rc.matrix()
    assert math.isnan(m[0, 1]) and math.isnan(m[0, 0]) and m[1, 1] == 1.0


@pytest.mark.parametrize("bad", [(1, 30), (288, 1)])
def test_bad_parameters(bad):
    from botopt.core.errors import UsageError

    with pytest.raises(UsageError):
        RollingCorrelation(window=bad[0], min_periods=bad[1])
