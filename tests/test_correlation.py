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
from botopt.core.base import _fs
from botopt.core.errors import CacheDirUnsafeError, UsageError
from botopt.core.signals._correlation import (
    aligned_window,
    recent_rows,
    update_correlation,
)

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    states = list((tmp_path / "correlation").rglob("*.ring"))
    assert states
    for f in states:
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


# -- the cron path: batched frames, persistence, keys ------------------------------------

@st.composite
def frame_chunks(draw):
    """Chunks of multi-symbol candles as cron would see them: most symbols get the next
    candles, some skip (gaps), some join late, some are flat or nearly flat."""
    syms = [f"S{i}" for i in range(draw(st.integers(2, 6)))]
    kinds = {s: draw(st.sampled_from(["walk", "walk", "flat", "near_flat"])) for s in syms}
    closes = dict.fromkeys(syms, 100.0)
    t = 0
    chunks = []
    for _ in range(draw(st.integers(1, 8))):
        n = draw(st.integers(1, 30))
        present = {s: draw(st.floats(0.3, 1.0)) for s in syms if draw(st.booleans()) or t}
        rows = []
        for _k in range(n):
            t += STEP
            for s, p in present.items():
                if draw(st.floats(0, 1)) > p:
                    continue  # a missing candle
                if kinds[s] == "walk":
                    closes[s] *= math.exp(draw(st.floats(-0.02, 0.02)))
                elif kinds[s] == "near_flat":
                    closes[s] *= math.exp(1e-3 + 1e-9 * draw(st.floats(-1, 1)))
                rows.append((s, t, closes[s]))
        chunks.append((rows, draw(st.sampled_from(["as is", "shuffled", "by symbol"])),
                       draw(st.booleans())))
    return syms, chunks


def multi_frame(rows) -> pl.DataFrame:
    return pl.DataFrame({
        "symbol": [s for s, _, _ in rows],
        "open_time": [datetime.fromtimestamp(t / 1000, tz=timezone.utc) for _, t, _ in rows],
        "close": [c for _, _, c in rows],
    }, schema={"symbol": pl.String, "open_time": pl.Datetime("ms", "UTC"),
               "close": pl.Float64})


@pytest.mark.slow
@settings(max_examples=int(__import__("os").environ.get("BOTOPT_HYPOTHESIS_EXAMPLES", 60)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_chunks(), st.integers(3, 40), st.integers(2, 10))
def test_batched_frames_equal_sequential_and_definition(tmp_path_factory, case, window,
                                                        min_periods):
    syms, chunks = case
    batch = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    seq = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    path = tmp_path_factory.mktemp("state") / "s"
    for rows, order, roundtrip in chunks:
        if not rows:
            continue
        f = multi_frame(rows)
        # One run per symbol (as load_candles gives) takes the fast path; others are sorted.
        batch.update_frame(f.sample(fraction=1.0, shuffle=True, seed=1) if order == "shuffled"
                           else f.sort("symbol", "open_time") if order == "by symbol" else f)
        for s in dict.fromkeys(r[0] for r in rows):
            seq.update(s, f.filter(pl.col("symbol") == s))
        if roundtrip:
            saved = batch
            batch.save(path)
            batch = RollingCorrelation.load(path)
            # Loading does not re-anchor: the running sums come back bit for bit, and the
            # symbols x symbols P is never stored (rebuilt only when a full matrix needs it).
            for name in ("_sum", "_sq", "_scale", "returns"):
                assert np.array_equal(getattr(batch, name), getattr(saved, name),
                                      equal_nan=True)
            assert batch._prod is None
            assert batch._slides == saved._slides
            # Rows asked for before any matrix come from the ring, without P.
            assert close_enough(batch.rows(batch.symbols[:2]),
                                batch.full_matrix()[1][:2], 1e-12)
            assert batch._prod is None
        names, m = batch.matrix()
        full_names, full = batch.full_matrix()
        assert names == full_names
        assert close_enough(m, full, 1e-12)
        seq_names, seq_m = seq.matrix()
        order = [seq_names.index(s) for s in names]
        assert close_enough(m, seq_m[np.ix_(order, order)], 1e-12)
        assert close_enough(batch.rows(names[:2]), full[:2], 1e-12)
        assert np.all(np.isnan(m) | ((m >= -1) & (m <= 1)))


def test_near_zero_variance_matches_the_definition():
    rng = np.random.default_rng(3)
    rc = RollingCorrelation(window=200, min_periods=30, interval_ms=STEP)
    x = 1e-3 + 1e-12 * rng.standard_normal(260)  # variance 1e-18 of its mean squared
    y = rng.standard_normal(260) * 1e-3 + (x - 1e-3) * 1e9
    for t in range(260):
        rc.update("NEAR", {t * STEP: float(x[t])})
        rc.update("MOVE", {t * STEP: float(y[t])})
    _, m = rc.matrix()
    ref = np.corrcoef(x[-200:], y[-200:])[0, 1]
    assert abs(m[0, 1] - ref) <= 1e-12 and abs(m[0, 1]) > 0.1


def test_build_from_empty_and_next_candle_match_numpy(tmp_path):
    rng = np.random.default_rng(5)
    n, window = 40, 100
    rets = 1e-3 * (rng.standard_normal((window + 5, 1)) + rng.standard_normal((window + 5, n)))
    closes = 50.0 * np.exp(np.cumsum(rets, axis=0))
    syms = [f"S{i:02d}" for i in range(n)]

    def candles(lo, hi):
        return multi_frame([(s, t * STEP, float(closes[t, j])) for j, s in enumerate(syms)
                            for t in range(lo, hi)])

    rc = RollingCorrelation(window=window, min_periods=30, interval_ms=STEP)
    rc.update_frame(candles(0, window + 1))
    names, r = aligned_window(candles(0, window + 1), window, STEP)
    assert close_enough(rc.matrix()[1], np.corrcoef(r.T), 1e-12)
    for k in range(window + 1, window + 5):
        rc.save(tmp_path / "s")
        rc = RollingCorrelation.load(tmp_path / "s")
        rc.update_frame(candles(k, k + 1))
        _, r = aligned_window(candles(0, k + 1), window, STEP)
        assert close_enough(rc.matrix()[1], np.corrcoef(r.T), 1e-12)


def _write_dir(d, syms, start, rows, seed):
    """A freqtrade-layout directory: symbol 1 is symbol 0 scaled, so their correlation is 1."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    for k, s in enumerate(syms):
        c = base * (1 + k) if k < 2 else 10 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
        pl.DataFrame({
            "date": [start + timedelta(minutes=5 * i) for i in range(rows)],
            "open": c, "high": c * 1.01, "low": c * 0.99, "close": c,
            "volume": np.ones(rows)}).with_columns(
            pl.col("date").dt.cast_time_unit("ms")).write_ipc(d / f"{s}-5m.feather")


def test_state_is_keyed_by_data_source(tmp_path, shared_data):
    """Issue 12: A, then B, then B uncached give B's answer; never A's."""
    a = shared_data / "candles" / "5m"
    b = tmp_path / "b"
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    t = datetime(2018, 1, 22, tzinfo=timezone.utc)
    _write_dir(b, syms, datetime(2018, 1, 20, tzinfo=timezone.utc), 800, 1)

    def cfg(d):
        return load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                      "cache.dir": str(tmp_path / "cache")})

    def corr(d, **kw):
        c = cfg(d)
        return update_correlation(c, load_candles(syms, config=c, as_of=t, limit=289), **kw)

    on_a = corr(a)
    on_b = corr(b)
    fresh_b = corr(b, full=True)
    assert close_enough(on_b.matrix, fresh_b.matrix, 1e-12)
    assert on_b.matrix[0, 1] == pytest.approx(1.0) and on_a.matrix[0, 1] < 0.9
    args = ["--cache-dir", str(tmp_path / "cli"), "correlations", "--symbols",
            ",".join(syms), "--as-of", "2018-01-22T00:00Z", "--json"]
    outs = [json.loads(runner.invoke(app, [*args, "--data-dir", str(d), *extra]).stdout)
            for d, extra in ((a, []), (b, []), (b, ["--full"]))]
    assert outs[1]["matrix"] == outs[2]["matrix"] != outs[0]["matrix"]


def test_unwritable_state_dir_degrades_with_one_warning(tmp_path, shared_data, caplog):
    d = shared_data / "candles" / "5m"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path / "ok")})
    candles = load_candles(syms, config=cfg, as_of="2018-01-22T00:00Z", limit=289)
    want = update_correlation(cfg, candles, full=True)
    # Root ignores permission bits, so "unwritable" is a path that cannot be a directory.
    caplog.clear()
    _fs._refused.clear()  # a refusing disk is reported once per process
    with caplog.at_level("WARNING", logger="botopt"):
        got = update_correlation(cfg, candles, state_dir=blocker / "correlation")
    assert close_enough(got.matrix, want.matrix, 1e-12)
    warned = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "cannot write under" in warned[0], warned
    # A cache directory that is a regular file is a configuration error naming it (issue 24:
    # exit 2 "not a directory"), not a run that silently degrades.
    bad = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(blocker)})
    with pytest.raises(CacheDirUnsafeError, match="not a directory") as err:
        update_correlation(bad, candles)
    assert err.value.file == str(blocker)


def test_damaged_state_is_rebuilt_and_unused_symbols_pruned(tmp_path, shared_data, caplog):
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path)})
    three = load_candles(["ETH_BTC", "LTC_BTC", "XMR_BTC"], config=cfg,
                         as_of="2018-01-22T00:00Z", limit=289)
    update_correlation(cfg, three)
    (state,) = (tmp_path / "correlation").rglob("*.ring")
    assert RollingCorrelation.load(state.with_suffix("")).symbols == ["ETH_BTC", "LTC_BTC",
                                                                      "XMR_BTC"]
    two = three.filter(pl.col("symbol") != "XMR_BTC")
    got = update_correlation(cfg, two)
    assert RollingCorrelation.load(state.with_suffix("")).symbols == ["ETH_BTC", "LTC_BTC"]
    assert close_enough(got.matrix, update_correlation(cfg, two, full=True).matrix, 1e-12)
    state.write_bytes(state.read_bytes()[:200])  # cut short, as by a full disk
    with caplog.at_level("WARNING", logger="botopt.correlation"):
        again = update_correlation(cfg, two)
    assert close_enough(again.matrix, got.matrix, 1e-12)
    assert any("unreadable" in r.message for r in caplog.records)


@st.composite
def return_steps(draw):
    """Cron-shaped input: each step, the symbols (in a random order) each get one return or
    none (a gap); some series are flat or nearly flat."""
    n = draw(st.integers(2, 6))
    kinds = draw(st.lists(st.sampled_from(["normal", "flat", "near_flat"]), min_size=n,
                          max_size=n))
    steps = []
    for _ in range(draw(st.integers(1, 50))):
        order = draw(st.permutations(range(n)))
        step = []
        for j in order:
            if draw(st.integers(0, 5)) == 0:
                continue  # a gap
            base = {"normal": 0.0, "flat": 1e-3, "near_flat": 1e-3}[kinds[j]]
            # Nearly flat as in the other property tests: 1e-9 around 1e-3. At 1e-12 the
            # deviations keep only ~7 significant digits (the ulp of 1e-3 is 2e-19), so two
            # correct computations of one correlation differ by ~1e-7: 1e-12 cannot hold.
            noise = {"normal": 1e-2, "flat": 0.0, "near_flat": 1e-9}[kinds[j]]
            # A lattice, not any float: a return of 1e-178 squares to zero in every
            # implementation differently (the same exclusion as the regime test's).
            step.append((j, base + noise * draw(st.integers(-1000, 1000)) / 1000))
        steps.append(step)
    return n, steps


@pytest.mark.slow  # 3-5 s: a big hypothesis run; the batched updates are checked fast above
@settings(max_examples=int(__import__("os").environ.get("BOTOPT_HYPOTHESIS_EXAMPLES", 60)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(return_steps(), st.integers(3, 30), st.integers(2, 8))
def test_one_return_at_a_time_matches_the_definition(case, window, min_periods):
    """The single-value paths (the first symbol of a candle slides the window, the others
    fill its row one by one and recompute only their rows) after every single update."""
    n, steps = case
    rc = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    for t, step in enumerate(steps, start=1):
        for j, v in step:
            assert rc.update(f"S{j}", {t * STEP: v}) == 1
            names, m = rc.matrix()
            full_names, full = rc.full_matrix()
            assert names == full_names
            assert close_enough(m, full, 1e-12)
            assert close_enough(full, reference(rc.returns, min_periods), 1e-12)
            assert rc.update(f"S{j}", {t * STEP: v}) == 0  # not newer: ignored


@pytest.mark.parametrize("unit", ["ns", "us", "ms"])
def test_candle_runs_times_in_any_unit_equal_polars_epoch(unit):
    """Open times are read as int64 straight from numpy; they must equal polars' own epoch
    in ms for every time unit, before 1970 too (floor, not truncation)."""
    from botopt.core.signals._correlation import candle_runs

    times = [datetime(1969, 12, 31, 23, 55, 0, 999, tzinfo=timezone.utc),
             datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
             datetime(2026, 11, 26, 1, 25, 0, 500, tzinfo=timezone.utc)]
    df = pl.DataFrame({"symbol": ["A", "A", "B"], "open_time": times, "close": [1, 2, 3]}) \
        .with_columns(pl.col("open_time").dt.cast_time_unit(unit))
    names, starts, ends, t, c = candle_runs(df)
    assert names == ["A", "B"] and starts.tolist() == [0, 2] and ends.tolist() == [2, 3]
    assert t.tolist() == df["open_time"].dt.epoch("ms").to_list()
    assert c.dtype == np.float64 and c.tolist() == [1.0, 2.0, 3.0]


# -- what the gates read: rows on demand, no symbols x symbols ------------------------------

@pytest.mark.slow
@settings(max_examples=int(__import__("os").environ.get("BOTOPT_HYPOTHESIS_EXAMPLES", 60)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_chunks(), st.integers(3, 40), st.integers(2, 10), st.randoms(use_true_random=False))
def test_rows_on_demand_equal_the_matrix_and_the_definition(tmp_path_factory, case, window,
                                                            min_periods, rnd):
    from botopt.core.signals._correlation import CorrelationRows

    syms, chunks = case
    rc = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    path = tmp_path_factory.mktemp("state") / "s"
    for rows, _, roundtrip in chunks:
        if not rows:
            continue
        rc.update_frame(multi_frame(rows))
        if roundtrip:
            rc.save(path)
            rc = RollingCorrelation.load(path)
        order = list(rc.symbols)
        rnd.shuffle(order)  # the caller's order, not the state's
        lazy = CorrelationRows(rc, order)
        ref = reference(rc.returns[:, [rc.symbols.index(s) for s in order]], min_periods)
        np.fill_diagonal(ref, [1.0 if (~np.isnan(rc.returns[:, rc.symbols.index(s)])).sum()
                               >= min_periods and np.nanmax(rc.returns[:, rc.symbols.index(s)])
                               != np.nanmin(rc.returns[:, rc.symbols.index(s)])
                               else np.nan for s in order] if len(order) else [])
        n = len(order)
        got = np.array([lazy[i, np.arange(n)] for i in range(n)]).reshape(n, n)
        whole = np.asarray(lazy)
        assert close_enough(got, whole, 1e-12)
        assert close_enough(got[~np.eye(n, dtype=bool)], ref[~np.eye(n, dtype=bool)], 1e-12)
        if n:
            cols = np.array([rnd.randrange(n) for _ in range(3)])
            assert close_enough(lazy[0, cols], got[0, cols], 0.0)
            assert close_enough(np.array([lazy[0, int(cols[0])]]), got[0, cols[:1]], 0.0)


def test_rows_fingerprint_is_the_data():
    from botopt.core.base._codec import fingerprint
    from botopt.core.signals._correlation import CorrelationRows

    rng = np.random.default_rng(3)
    rows = [(f"S{j}", STEP * (k + 1), 100 * math.exp(0.01 * rng.standard_normal()))
            for k in range(40) for j in range(4)]
    a = RollingCorrelation(window=30, min_periods=5, interval_ms=STEP)
    b = RollingCorrelation(window=30, min_periods=5, interval_ms=STEP)
    a.update_frame(multi_frame(rows))
    b.update_frame(multi_frame(rows))
    syms = ["S0", "S1", "S2", "S3"]
    fa = fingerprint((syms, CorrelationRows(a, syms)))
    assert fa == fingerprint((syms, CorrelationRows(b, syms)))
    assert fa != fingerprint((syms, CorrelationRows(a, syms[::-1])))
    b.update_frame(multi_frame([("S0", STEP * 41, 101.0)]))
    assert fa != fingerprint((syms, CorrelationRows(b, syms)))
    c = RollingCorrelation(window=30, min_periods=6, interval_ms=STEP)
    c.update_frame(multi_frame(rows))
    assert fa != fingerprint((syms, CorrelationRows(c, syms)))


def test_gates_decide_the_same_on_rows_and_on_the_matrix():
    from botopt.core.base._config import GatesConfig
    from botopt.core.signals._correlation import CorrelationRows
    from botopt.core.signals._gates import CooldownRecord, GateInput, evaluate_gates

    rng = np.random.default_rng(7)
    n, t0 = 12, datetime(2026, 1, 1, tzinfo=timezone.utc)
    factor = rng.standard_normal(80)
    rows = [(f"S{j}", STEP * (k + 1),
             100 * math.exp(0.01 * (factor[:k + 1].sum() * (j % 3 == 0)
                                    + rng.standard_normal())))
            for k in range(80) for j in range(n)]
    rc = RollingCorrelation(window=60, min_periods=10, interval_ms=STEP)
    rc.update_frame(multi_frame(rows))
    syms = list(rc.symbols)
    cands = [GateInput(symbol=s, candle_time=t0, direction="long", strength=1 - j / 20,
                       probability=0.9, regime="TREND_UP", volume_z=2.0, engine="e")
             for j, s in enumerate(syms)]
    recs = [CooldownRecord(symbol="S3", direction="long", candle_time=t0 - timedelta(minutes=5))]
    cfg = GatesConfig(correlation_threshold=0.2)
    lazy = evaluate_gates(cands, recs, cfg, (syms, CorrelationRows(rc, syms)))
    dense = evaluate_gates(cands, recs, cfg, (syms, rc.matrix()[1]))
    assert lazy == dense
    assert any("correlated" in r for d in lazy for r in d.reasons)


def test_rows_together_equal_rows_one_at_a_time():
    """The active signals' rows computed as one array equal ``_row_from_sums`` row by row,
    to the bit: without gaps (the arrays' path), with a flat and a nearly flat series (the
    exact path for their rows) and with a gap (row by row)."""
    rng = np.random.default_rng(11)
    n, w = 40, 60
    rets = rng.normal(size=(w + 1, n)) * 1e-3
    rets[:, 3] = 0.0  # flat
    rets[:, 5] = 1e-12 * rng.normal(size=w + 1) + 0.0  # nearly flat
    closes = 100 * np.exp(np.cumsum(rets, axis=0))
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 300_000
    syms = [f"S{i:02d}" for i in range(n)]
    for gap in (False, True):
        rc = RollingCorrelation(window=w, min_periods=20, interval_ms=300_000)
        keep = np.ones((w + 1) * n, dtype=bool)
        if gap:
            keep[7 * (w + 1) + 30] = False  # one candle missing in S07
        starts = np.arange(n) * (w + 1)
        lens = np.array([int(keep[a:a + w + 1].sum()) for a in starts])
        rc.update_runs(syms, np.cumsum(lens) - lens, np.cumsum(lens),
                       np.tile(t0 + 300_000 * np.arange(w + 1), n)[keep],
                       closes.T.ravel()[keep])
        assert bool(np.count_nonzero(rc._missing)) == gap
        idx = np.array([0, 3, 5, 9, 17, 39])
        prows = rc._prows(idx)
        together = rc._rows_from_sums(idx, prows)
        alone = np.array([rc._row_from_sums(int(j), prows[k]) for k, j in enumerate(idx)])
        assert together.tobytes() == alone.tobytes()
        assert np.isnan(together[1]).sum() >= n - 1  # the flat row took the exact path


# -- the fast paths (a first run over aligned symbols, a one-candle cron step) ------------

class _GeneralOnly(RollingCorrelation):
    """The general path only: the two fast paths decline."""

    def _build_aligned(self, *args):
        return 0

    def _next_candle(self, *args):
        return 0


class _Counting(RollingCorrelation):
    """Counts how often the fast paths took a frame (so the test below cannot pass by
    never reaching them)."""

    def __post_init__(self):
        super().__post_init__()
        self.fast = 0

    def _build_aligned(self, *args):
        taken = super()._build_aligned(*args)
        self.fast += bool(taken)
        return taken

    def _next_candle(self, *args):
        taken = super()._next_candle(*args)
        self.fast += bool(taken)
        return taken


@st.composite
def aligned_streams(draw):
    """A first frame of every symbol over the same times, then frames of one candle per
    symbol, sometimes with a symbol missing, a candle skipped, a symbol's history in the
    frame, a zero close (no finite return) or a flat symbol."""
    n = draw(st.integers(2, 6))
    window = draw(st.integers(3, 30))
    first = draw(st.integers(window + 1, window + 8))
    syms = [f"S{i}" for i in range(n)]
    flat = {s: draw(st.booleans()) and draw(st.booleans()) for s in syms}
    close = dict.fromkeys(syms, 100.0)
    hist: dict[str, list] = {s: [] for s in syms}

    def candle(s, t):
        if not flat[s]:
            close[s] *= math.exp(draw(st.floats(-0.02, 0.02)))
        c = 0.0 if draw(st.integers(0, 30)) == 0 else close[s]
        hist[s].append((s, t * STEP, c))

    for t in range(first):
        for s in syms:
            candle(s, t)
    frames = [[r for s in syms for r in hist[s]]]
    t = first
    for _ in range(draw(st.integers(1, 3 * window))):
        kind = draw(st.sampled_from(["next"] * 6 + ["missing", "skip", "history"]))
        t += 2 if kind == "skip" else 1
        gone = draw(st.sampled_from(syms)) if kind == "missing" else None
        rows = []
        for s in syms:
            if s == gone:
                continue
            candle(s, t)
            rows.extend(hist[s][-3:] if kind == "history" else hist[s][-1:])
        frames.append(rows)
    return window, draw(st.integers(2, window)), frames


@pytest.mark.slow
@settings(max_examples=int(__import__("os").environ.get("BOTOPT_HYPOTHESIS_EXAMPLES", 60)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(aligned_streams(), st.booleans())
def test_fast_paths_equal_the_general_path_bit_for_bit(case, with_matrix):
    window, min_periods, frames = case
    fast = _Counting(window=window, min_periods=min_periods, interval_ms=STEP)
    general = _GeneralOnly(window=window, min_periods=min_periods, interval_ms=STEP)
    for rows in frames:
        f = multi_frame(rows)
        assert fast.update_frame(f) == general.update_frame(f)
        for name in ("returns", "_sum", "_sq", "_scale", "_missing"):
            assert np.array_equal(getattr(fast, name), getattr(general, name),
                                  equal_nan=True), name
        assert (fast.end_ms, fast._slides) == (general.end_ms, general._slides)
        assert fast.last_time == general.last_time
        assert np.array_equal(list(fast.last_close.values()),
                              list(general.last_close.values()), equal_nan=True)
        if with_matrix:  # P held and updated by the rank-2 step from here on
            assert np.array_equal(fast.matrix()[1], general.matrix()[1], equal_nan=True)
            assert np.array_equal(fast._prod, general._prod)
    assert fast.fast >= 1  # the first frame always takes the aligned build


@pytest.mark.slow
@settings(max_examples=int(__import__("os").environ.get("BOTOPT_HYPOTHESIS_EXAMPLES", 60)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_chunks(), st.integers(3, 40), st.integers(2, 10))
def test_recent_rows_give_the_state_the_whole_history_gives(case, window, min_periods):
    """A run hands the correlation only each symbol's last rows (``recent_rows``), so it
    can let the history go: the state must take the same bits as from the whole frame."""
    syms, chunks = case
    whole = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    recent = RollingCorrelation(window=window, min_periods=min_periods, interval_ms=STEP)
    history: list = []
    for rows, _, with_history in chunks:
        if not rows:
            continue
        # a cron run's frame holds each symbol's whole series (with_history) or new rows
        history = history + rows if with_history else rows
        f = multi_frame(history).sort("symbol", "open_time")
        short = recent_rows(f, window)
        assert whole.update_frame(f) == recent.update_frame(short)
        for name in ("returns", "_sum", "_sq", "_scale", "_missing"):
            assert np.array_equal(getattr(whole, name), getattr(recent, name),
                                  equal_nan=True), name
        assert (whole.end_ms, whole._slides, whole.last_time) == \
            (recent.end_ms, recent._slides, recent.last_time)
        assert np.array_equal(list(whole.last_close.values()),
                              list(recent.last_close.values()), equal_nan=True)
        assert np.array_equal(whole.matrix()[1], recent.matrix()[1], equal_nan=True)


def test_recent_rows_keep_each_symbols_last_window_plus_three():
    rows = [(s, t * STEP, 1.0 + t) for s, n in (("A", 30), ("B", 5), ("C", 14))
            for t in range(n)]
    short = recent_rows(multi_frame(rows), 10)
    assert short.group_by("symbol", maintain_order=True).len().rows() == \
        [("A", 13), ("B", 5), ("C", 13)]
    assert short.filter(pl.col("symbol") == "A")["close"].to_list() == \
        [1.0 + t for t in range(17, 30)]


def test_fast_paths_are_taken_by_a_first_run_and_a_cron_step():
    rc = _Counting(window=20, min_periods=5, interval_ms=STEP)
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.01, (40, 3)), 0))
    rows = [(f"S{j}", t * STEP, float(closes[t, j])) for j in range(3) for t in range(30)]
    rc.update_frame(multi_frame(rows))
    for t in range(30, 40):
        rc.update_frame(multi_frame([(f"S{j}", t * STEP, float(closes[t, j]))
                                     for j in range(3)]))
    assert rc.fast == 11
    assert close_enough(rc.matrix()[1], rc.full_matrix()[1], 1e-12)


# -- the state file: updated in place, a torn write detected -------------------------------

def _cron_state(tmp_path, n=6, window=40, steps=3):
    """A state saved after a first run, then ``steps`` one-candle steps each saved in place;
    returns (state, its path, closes, the next candle's index)."""
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.01, (200, n)), 0))
    syms = [f"S{j}" for j in range(n)]

    def rows(lo, hi):
        return multi_frame([(s, t * STEP, float(closes[t, j])) for j, s in enumerate(syms)
                            for t in range(lo, hi)])

    path = tmp_path / "state"
    rc = RollingCorrelation(window=window, min_periods=5, interval_ms=STEP)
    rc.update_frame(rows(0, window + 10))
    rc.save(path, "src")
    k = window + 10
    for _ in range(steps):
        rc = RollingCorrelation.load(path, "src")
        rc.update_frame(rows(k, k + 1))
        rc.save(path, "src")
        k += 1
    return rc, path, rows, k


def test_state_is_updated_in_place_and_equals_a_whole_write(tmp_path):
    import io

    rc, path, rows, k = _cron_state(tmp_path)
    ring = path.with_suffix(".ring")
    whole = io.BytesIO()
    rc.write(whole, "src")
    assert ring.read_bytes() == whole.getvalue()  # the in-place writes give the same file
    before = ring.stat().st_ino
    rc = RollingCorrelation.load(path, "src")
    rc.update_frame(rows(k, k + 1))
    writes = rc._in_place_writes(ring, "src")
    assert writes is not None
    # one ring row, the six per-symbol arrays, the header: not the ring
    assert len(writes) == 8 and sum(len(bytes(d)) for _, d in writes) < rc.returns.nbytes
    rc.save(path, "src")
    assert ring.stat().st_ino == before  # in place, not replaced
    back = RollingCorrelation.load(path, "src")
    for name in ("returns", "_sum", "_sq", "_scale"):
        assert np.array_equal(getattr(back, name), getattr(rc, name), equal_nan=True)
    assert (back.last_time, back.end_ms, back._slides) == (rc.last_time, rc.end_ms,
                                                           rc._slides)
    # a new symbol changes the layout: the file is replaced whole
    grown = RollingCorrelation.load(path, "src")
    grown.update("NEW", {STEP * (k - 1): 0.01})
    assert grown._in_place_writes(ring, "src") is None


def test_a_killed_or_torn_state_write_is_detected_and_rebuilt(tmp_path):
    """A save killed after any of its writes, or whose pages reach the disk in any order
    but all of them, leaves a file ``load`` rejects (never a silently wrong state)."""
    rc, path, rows, k = _cron_state(tmp_path)
    ring = path.with_suffix(".ring")
    old = ring.read_bytes()
    new_state = RollingCorrelation.load(path, "src")
    new_state.update_frame(rows(k, k + 1))
    writes = [(off, bytes(d)) for off, d in new_state._in_place_writes(ring, "src")]

    def applied(subset):
        buf = bytearray(old)
        for off, data in subset:
            buf[off:off + len(data)] = data
        return bytes(buf)

    cases = [writes[:i] for i in range(1, len(writes))]  # killed after the i-th write
    cases += [writes[:i] + writes[i + 1:] for i in range(len(writes))]  # one write lost
    off, data = writes[0]
    cases.append(writes[1:] + [(off, data[:len(data) // 2])])  # a row written half
    whole = applied(writes)
    rejected = 0
    for subset in cases:
        torn = applied(subset)
        ring.write_bytes(torn)
        try:
            RollingCorrelation.load(path, "src")
        except ValueError as exc:
            assert "digest mismatch" in str(exc) or "do not match" in str(exc)
            rejected += 1
        else:  # only where the lost writes changed nothing (e.g. the same last closes)
            assert torn == whole
    assert rejected >= len(cases) - 2
    ring.write_bytes(whole)  # all of them: the new state
    back = RollingCorrelation.load(path, "src")
    assert np.array_equal(back.returns, new_state.returns, equal_nan=True)
    # The caller rebuilds a rejected state from the candles: update_correlation's path.
    ring.write_bytes(applied(writes[:-2]))
    from botopt.core.signals._correlation import _load_state

    fresh = _load_state(path, "src", lambda: RollingCorrelation(
        window=rc.window, min_periods=rc.min_periods, interval_ms=STEP), False)
    assert fresh.end_ms is None and not fresh.symbols


@pytest.mark.parametrize("change", ["close", "last_close", "delete", "backfill", "replace",
                                    None])
def test_candles_changed_under_the_state_are_taken_again(tmp_path, shared_data, caplog,
                                                         change):
    """The state only takes newer candles, so a row rewritten inside its window (a close
    corrected, a row deleted or back-filled, a file replaced by another pair's) was kept as
    it had been: `correlations` and the correlation gate answered 0.05 where --no-cache
    said 1.00 (sweep F, H1). Such a state is rebuilt now, equal to a full computation; an
    unchanged history never is (None: 12 next candles, each saved and loaded)."""
    import logging

    from botopt.core.signals import _correlation

    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path)})
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    t = datetime(2018, 1, 22, 0, 0, tzinfo=timezone.utc)
    whole = load_candles(syms, config=cfg, as_of=t + timedelta(hours=1), limit=400)
    cut = t.replace(tzinfo=timezone.utc)

    def upto(frame, when):
        return frame.filter(pl.col("open_time") < when)

    eth = pl.col("symbol") == "ETH_BTC"
    n_eth = whole.filter(eth).height
    gap_at = cut - timedelta(minutes=60)
    before = whole
    if change == "backfill":  # the state first sees ETH with a gap in its window
        before = whole.filter(~(eth & (pl.col("open_time") == gap_at)))
    update_correlation(cfg, upto(before, cut))
    after = whole
    if change == "close":
        after = whole.with_columns(pl.when(eth & (pl.col("open_time") == gap_at))
                                   .then(pl.col("close") * 1.02).otherwise(pl.col("close")))
    elif change == "last_close":
        last = cut - timedelta(minutes=5)
        after = whole.with_columns(pl.when(eth & (pl.col("open_time") == last))
                                   .then(pl.col("close") * 1.02).otherwise(pl.col("close")))
    elif change == "delete":
        after = whole.filter(~(eth & (pl.col("open_time") == gap_at)))
    elif change == "replace":  # ETH's file now holds LTC's prices
        ltc = whole.filter(pl.col("symbol") == "LTC_BTC").select(
            "open_time", pl.col("close").alias("lc"))
        after = whole.join(ltc, on="open_time", how="left").with_columns(
            close=pl.when(eth & pl.col("lc").is_not_null()).then(pl.col("lc"))
            .otherwise(pl.col("close"))).drop("lc").sort("symbol", "open_time")
        assert after.filter(eth).get_column("close").tail(5).to_list() == \
            ltc.get_column("lc").tail(5).to_list()
    assert n_eth > 300
    steps = 12 if change is None else 1
    with caplog.at_level(logging.DEBUG, logger=_correlation.log.name):
        for k in range(1, steps + 1):
            now = upto(after, cut + timedelta(minutes=5 * k))
            got = update_correlation(cfg, now).matrix
            full = update_correlation(cfg, now, full=True, state_dir=tmp_path / "f").matrix
            assert np.array_equal(got, full, equal_nan=True) if change else \
                close_enough(got, full, 1e-12), (change, k)
    rebuilt = any("changed under it" in r.getMessage() for r in caplog.records)
    assert rebuilt is (change is not None)


@pytest.mark.parametrize("batch", [1, 2, 1024])
def test_a_row_rewritten_in_any_batch_of_symbols_is_found(tmp_path, shared_data, monkeypatch,
                                                          batch):
    """``rewritten`` compares a batch of symbols at a time (its arrays over 10,000 symbols
    at once were the next candle's peak memory): a close corrected in the last symbol's
    window is found whatever the batch, and an unchanged history is not."""
    from botopt.core.signals import _correlation
    from botopt.core.signals._correlation import candle_runs, rewritten

    monkeypatch.setattr(_correlation, "_CHECK_BATCH", batch)
    d = shared_data / "candles" / "5m"
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                 "cache.dir": str(tmp_path)})
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    t = datetime(2018, 1, 22, 0, 0, tzinfo=timezone.utc)
    whole = load_candles(syms, config=cfg, as_of=t, limit=400)
    rc = RollingCorrelation(window=288, min_periods=30, interval_ms=300_000)
    rc.update_frame(whole)
    assert not rewritten(rc, candle_runs(whole))
    at = whole.filter(pl.col("symbol") == "XMR_BTC").get_column("open_time")[-50]
    changed = whole.with_columns(
        pl.when((pl.col("symbol") == "XMR_BTC") & (pl.col("open_time") == at))
        .then(pl.col("close") * 1.02).otherwise(pl.col("close")))
    assert rewritten(rc, candle_runs(changed))


def test_a_null_symbol_or_time_is_refused_and_never_stored(tmp_path):
    """sweep J: a cron-step frame (one row per symbol) with a null symbol was taken, its
    None saved among the state's symbols, and every later run on that state failed ("symbols
    must be a list of symbol names"); a null in a frame to sort was a raw TypeError, a null
    time an IndexError. Each is now a one-line error naming the row, the state untouched;
    and a stored state that fails its checks is rebuilt, not an error for ever."""
    from botopt.core.signals._correlation import update_correlation

    cfg = load_config(overrides={"cache.dir": str(tmp_path)})
    t0 = datetime(2026, 9, 20, tzinfo=timezone.utc)
    rng = np.random.default_rng(3)
    frames = [pl.DataFrame({"symbol": [f"S{j}" for j in range(3)],
                            "open_time": [t0 + timedelta(minutes=5 * k)] * 3,
                            "close": 100 * np.exp(rng.normal(0, 0.01, 3))},
                           schema_overrides={"open_time": pl.Datetime("ms", "UTC")})
              for k in range(40)]
    whole = pl.concat(frames).sort("symbol", "open_time")
    state = tmp_path / "corr"
    assert update_correlation(cfg, whole, state_dir=state).symbols == ["S0", "S1", "S2"]
    step = frames[-1].with_columns(open_time=pl.col("open_time") + timedelta(minutes=5))
    for col in ("symbol", "open_time"):
        bad = step.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(None)
                                .otherwise(pl.col(col)).alias(col))
        for frame in (bad, bad.reverse()):
            with pytest.raises(UsageError, match=f"row . of the candles has no {col}") as e:
                update_correlation(cfg, frame, state_dir=state)
            assert e.value.key == col
    assert update_correlation(cfg, step, state_dir=state).symbols == ["S0", "S1", "S2"]
    # a state whose stored symbols fail the load's checks (as the old code saved them):
    # rebuilt from the candles
    from botopt.core.signals._correlation import source_identity, state_name

    path = state / state_name(cfg, cfg.correlation.window, source_identity(cfg))
    stored = RollingCorrelation.load(path, source_identity(cfg))
    stored.symbols[1] = None
    stored.save(path, source_identity(cfg))
    with pytest.raises(UsageError, match="symbols must be a list"):
        RollingCorrelation.load(path, source_identity(cfg))
    assert update_correlation(cfg, pl.concat([whole, step]).sort("symbol", "open_time"),
                              state_dir=state).symbols == ["S0", "S1", "S2"]
