"""What ``botopt backtest`` reports, checked against independent references on the real pairs:
forward returns against a plain polars self-join by symbol, the IC against
scipy.stats.spearmanr, the t interval against scipy.stats.t, the walk-forward against the
truncated data; invariants with hypothesis (cost shifts every mean by exactly the cost; the IC
is unchanged by a monotone transform of strength)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botopt.core import EvalSettings, UsageError, evaluate, parse_horizons
from botopt.core.backtest._evaluate import forward_returns, ic_series, period_bounds, t975
from botopt.core.backtest._run import Backtest, write_csv
from botopt.core.backtest._walkforward import walk_forward

STEP = timedelta(minutes=5)


@dataclass(frozen=True)
class FakeReplay:
    """A replay's answer built by hand: the real closes, made-up candidates."""

    candidates: pl.DataFrame
    closes: pl.DataFrame
    interval: str
    since: datetime
    until: datetime
    symbols: tuple[str, ...]


def _closes(shared_data: Path, n_symbols: int = 10) -> pl.DataFrame:
    frames = []
    for f in sorted((shared_data / "candles" / "5m").glob("*-5m.feather"))[:n_symbols]:
        frames.append(pl.read_ipc(f).select(
            pl.lit(f.name.split("-")[0]).alias("symbol"),
            pl.col("date").dt.cast_time_unit("ms").dt.convert_time_zone("UTC")
            .alias("candle_time"), "close"))
    return pl.concat(frames).sort("candle_time", "symbol")


def _candidates(closes: pl.DataFrame, seed: int = 1, fraction: float = 0.3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    c = closes.sample(fraction=fraction, seed=seed).sort("candle_time", "symbol")
    n = c.height
    passed = rng.random(n) < 0.3
    gates = [[] if p else list(rng.choice(["min_strength", "cooldown_seconds",
                                           "min_probability"], rng.integers(1, 3),
                                          replace=False)) for p in passed]
    c = c.with_columns(
        regime=pl.Series(rng.choice(["RANGE", "TREND_UP", "HIGH_VOL"], n)),
        engine=pl.Series(rng.choice(["momentum", "trend", "mean_reversion"], n)),
        direction=pl.Series(rng.choice(["long", "short"], n)),
        strength=pl.Series(np.round(rng.random(n), 2)),  # rounded: ties, as real ones have
        p_up=pl.Series(rng.random(n)),
        gate_passed=pl.Series(passed),
        blocked_by=pl.Series(gates, dtype=pl.List(pl.String)),
        gate_reasons=pl.Series([[f"{g} reason" for g in x] for x in gates],
                               dtype=pl.List(pl.String)),
        data_status=pl.lit("ok"))
    return c.with_columns(p_dir=pl.when(pl.col("direction") == "long").then(pl.col("p_up"))
                          .otherwise(1 - pl.col("p_up")))


@pytest.fixture(scope="module")
def real(shared_data: Path) -> FakeReplay:
    closes = _closes(shared_data)
    cands = _candidates(closes)
    t = closes["candle_time"]
    return FakeReplay(cands, closes, "5m", t.min(), t.max() + STEP,
                      tuple(sorted(closes["symbol"].unique())))


@pytest.fixture(scope="module")
def real_eval(real: FakeReplay):
    return evaluate(real, EvalSettings(horizons=(1, 3, 12), cost_bps=10.0))


def _reference_returns(closes: pl.DataFrame, h: int) -> pl.DataFrame:
    """Plain polars: each symbol upsampled to every 5 minutes (a gap becomes null rows), then
    the close h rows later: the candle that opens h intervals later, or none."""
    full = closes.sort("symbol", "candle_time").upsample(
        "candle_time", every="5m", group_by="symbol").with_columns(pl.col("symbol").forward_fill())
    return full.with_columns(ref=pl.col("close").shift(-h).over("symbol") / pl.col("close") - 1
                             ).filter(pl.col("close").is_not_null()).select(
        "symbol", "candle_time", "ref")


@pytest.mark.parametrize("h", [1, 3, 12])
def test_forward_returns_equal_a_plain_polars_computation(real, real_eval, h) -> None:
    got = real_eval.table.join(_reference_returns(real.closes, h), on=["symbol", "candle_time"])
    assert got.height == real.candidates.height
    # ADA_BTC's gaps and the data's end leave some without a return, both ways alike
    assert got.filter(pl.col(f"ret_{h}").is_null() != pl.col("ref").is_null()).height == 0
    assert got[f"ret_{h}"].null_count() > 0
    ok = got.filter(pl.col("ref").is_not_null())
    np.testing.assert_allclose(ok[f"ret_{h}"].to_numpy(), ok["ref"].to_numpy(), rtol=1e-12)
    sign = np.where(ok["direction"].to_numpy() == "long", 1.0, -1.0)
    np.testing.assert_allclose(ok[f"net_{h}"].to_numpy(),
                               ok["ref"].to_numpy() * sign * 1e4 - 10.0, rtol=1e-9,
                               atol=1e-9)


def test_forward_returns_block_by_block_are_the_whole_tables(real, real_eval,
                                                           monkeypatch) -> None:
    """The signals are searched a block at a time (a year's at once were 600 MB of
    arrays): blocks that cut the period anywhere, and one block each, give the same table."""
    from botopt.core.backtest import _evaluate

    for block in (1, 997, 4096):
        monkeypatch.setattr(_evaluate, "_FORWARD_BLOCK", block if block > 1 else 10**9)
        got = forward_returns(real.candidates, real.closes, 300_000, [1, 3, 12], 10.0)
        assert got.equals(real_eval.table.select(got.columns)), block


def test_stats_equal_numpy_and_scipy(real_eval) -> None:
    from scipy import stats

    passed = real_eval.table.filter(pl.col("gate_passed"))
    for i, h in enumerate((1, 3, 12)):
        x = passed[f"net_{h}"].drop_nulls().to_numpy()
        s = real_eval.overall.returns[i]
        assert s.n == len(x) and s.horizon == h
        assert s.mean_bps == pytest.approx(x.mean(), rel=1e-9)
        assert s.median_bps == pytest.approx(np.median(x), rel=1e-9)
        assert s.hit_rate == pytest.approx((x > 0).mean())
        assert s.t_stat == pytest.approx(stats.ttest_1samp(x, 0).statistic, rel=1e-9)
        lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert (s.ci_low_bps, s.ci_high_bps) == (pytest.approx(lo, rel=1e-6),
                                                 pytest.approx(hi, rel=1e-6))


def test_t_quantile_matches_scipy() -> None:
    from scipy import stats

    for df in [*range(1, 200), 500, 1000, 10_000, 10**6]:
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4 if df <= 30
                                         else 2e-5), df


def test_breakdowns_partition_the_candidates(real, real_eval) -> None:
    for by in ("engine", "regime", "direction", "symbol"):
        groups = real_eval.breakdown(by)
        assert sum(g.candidates for g in groups) == real.candidates.height
        assert sum(g.signals for g in groups) == int(real.candidates["gate_passed"].sum())
        counts = dict(real.candidates.filter(pl.col("gate_passed"))
                      .group_by(by).len().iter_rows())
        assert {g.value: g.signals for g in groups if g.signals} == counts
    assert len(real_eval.breakdown("symbol")) == 10


def test_gate_counts_and_blocked_returns(real, real_eval) -> None:
    blocked = real.candidates.filter(~pl.col("gate_passed"))
    gates = {g.gate: g for g in real_eval.gates}
    assert set(gates) == {"min_strength", "cooldown_seconds", "min_probability"}
    for name, g in gates.items():
        mine = blocked.filter(pl.col("blocked_by").list.contains(name))
        assert g.blocked == mine.height
        assert g.alone == mine.filter(pl.col("blocked_by").list.len() == 1).height
        ref = real_eval.table.filter(~pl.col("gate_passed")
                                     & pl.col("blocked_by").list.contains(name))
        assert g.returns[0].mean_bps == pytest.approx(ref["net_1"].mean(), rel=1e-9)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_ic_equals_scipy_spearmanr_per_candle(real_eval) -> None:
    from scipy.stats import spearmanr

    sign = pl.when(pl.col("direction") == "short").then(-1.0).otherwise(1.0)
    df = real_eval.table.with_columns(signed_strength=sign * pl.col("strength"),
                                      signed_p_dir=sign * (pl.col("p_dir") - 0.5))
    for factor, h in (("signed_strength", 1), ("signed_p_dir", 12)):
        got = dict(ic_series(df, factor, h).iter_rows())
        ref = {}
        for (t,), part in df.filter(pl.col(f"ret_{h}").is_not_null()) \
                .partition_by("candle_time", as_dict=True).items():
            if part.height < 3:
                continue
            rho = spearmanr(part[factor].to_numpy(), part[f"ret_{h}"].to_numpy()).statistic
            if np.isfinite(rho):
                ref[t] = rho
        assert len(ref) > 1000
        assert set(got) == set(ref)
        np.testing.assert_allclose([got[t] for t in sorted(ref)],
                                   [ref[t] for t in sorted(ref)], atol=1e-12)
    ic = {(i.factor, i.horizon): i for i in real_eval.ic}[("strength", 1)]
    series = ic_series(df, "signed_strength", 1)["ic"].to_numpy()
    assert ic.periods == len(series) and ic.mean == pytest.approx(series.mean())
    assert ic.t_stat == pytest.approx(series.mean() / (series.std(ddof=1)
                                                       / math.sqrt(len(series))))


def test_a_signal_that_predicts_perfectly_has_ic_one(real) -> None:
    # the factor *is* the next return: every candle's rank correlation is exactly 1
    ref = _reference_returns(real.closes, 1)
    cands = real.candidates.join(ref, on=["symbol", "candle_time"]).filter(
        pl.col("ref").is_not_null()).with_columns(
        direction=pl.when(pl.col("ref") >= 0).then(pl.lit("long")).otherwise(pl.lit("short")),
        strength=pl.col("ref").abs()).drop("ref")
    ev = evaluate(replace(real, candidates=cands), EvalSettings(horizons=(1,), cost_bps=0))
    ic = ev.ic[0]
    assert ic.factor == "strength" and ic.mean == pytest.approx(1.0) and ic.periods > 1000
    assert ev.overall.candidate_returns[0].hit_rate == pytest.approx(
        (cands.join(ref, on=["symbol", "candle_time"])["ref"] != 0).mean())


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(cost=st.floats(0, 1000, allow_nan=False), seed=st.integers(0, 50))
def test_cost_shifts_every_mean_and_median_by_exactly_the_cost(shared_data, cost, seed) -> None:
    closes = _CLOSES.get("c")
    if closes is None:
        closes = _CLOSES["c"] = _closes(shared_data, 4).tail(4000)
    rep = FakeReplay(_candidates(closes, seed, 0.5), closes, "5m",
                     closes["candle_time"].min(), closes["candle_time"].max(), ())
    free = evaluate(rep, EvalSettings(horizons=(1, 3), cost_bps=0.0))
    paid = evaluate(rep, EvalSettings(horizons=(1, 3), cost_bps=cost))
    for a, b in zip((free.overall, *free.groups), (paid.overall, *paid.groups), strict=True):
        assert (a.by, a.value, a.signals) == (b.by, b.value, b.signals)
        for sa, sb in zip(a.returns + a.candidate_returns, b.returns + b.candidate_returns,
                          strict=True):
            assert sa.n == sb.n
            if sa.n:
                assert sb.mean_bps == pytest.approx(sa.mean_bps - cost, abs=1e-6)
                assert sb.median_bps == pytest.approx(sa.median_bps - cost, abs=1e-6)
    # the IC ranks raw returns: a cost cannot move it
    assert [i.mean for i in free.ic] == [i.mean for i in paid.ic]


_CLOSES: dict[str, pl.DataFrame] = {}


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(power=st.sampled_from([1 / 3, 3.0, 5.0]), scale=st.floats(1e-3, 1e3),
       seed=st.integers(0, 50))
def test_ic_is_invariant_to_monotone_transforms_of_strength(shared_data, power, scale,
                                                            seed) -> None:
    closes = _CLOSES.get("c")
    if closes is None:
        closes = _CLOSES["c"] = _closes(shared_data, 4).tail(4000)
    cands = _candidates(closes, seed, 0.9)
    rep = FakeReplay(cands, closes, "5m", closes["candle_time"].min(),
                     closes["candle_time"].max(), ())
    other = replace(rep, candidates=cands.with_columns(
        strength=pl.col("strength") ** power * scale))
    a = evaluate(rep, EvalSettings(horizons=(1,))).ic[0]
    b = evaluate(other, EvalSettings(horizons=(1,))).ic[0]
    assert a.factor == "strength" and a.periods == b.periods > 0
    assert b.mean == pytest.approx(a.mean, abs=1e-12)


def test_curves_sum_the_per_candle_mean_of_passed_signals(real_eval) -> None:
    curves = {c.name: c for c in real_eval.curves}
    assert set(curves) == {"all", "momentum", "trend", "mean_reversion"}
    passed = real_eval.table.filter(pl.col("gate_passed") & pl.col("net_1").is_not_null())
    for name, c in curves.items():
        part = passed if name == "all" else passed.filter(pl.col("engine") == name)
        per = part.group_by("candle_time").agg(pl.col("net_1").mean()).sort("candle_time")
        assert list(c.times) == per["candle_time"].to_list()
        assert c.cum_bps[-1] == pytest.approx(per["net_1"].sum(), rel=1e-9)


def test_empty_candidates_give_zero_counts_not_errors(real) -> None:
    ev = evaluate(replace(real, candidates=real.candidates.head(0)))
    assert ev.overall.candidates == 0 and ev.overall.returns[0].mean_bps is None
    # every symbol of the run still has its row, of zeros; no other breakdown has one
    assert [g.value for g in ev.groups] == sorted(real.symbols) and ev.gates == ()
    assert all(g.by == "symbol" and g.candidates == 0 for g in ev.groups)
    assert all(i.periods == 0 and i.mean is None for i in ev.ic)
    assert ev.to_dict()["overall"]["signals"] == 0


def test_json_form_is_strict_json(real_eval) -> None:
    import json

    d = json.loads(json.dumps(real_eval.to_dict(), allow_nan=False))
    assert set(d) == {"interval", "since", "until", "symbols", "settings", "overall",
                      "breakdowns", "gates", "ic", "curves"}
    assert d["settings"] == {"horizons": [1, 3, 12], "cost_bps": 10.0}
    assert set(d["breakdowns"]) == {"engine", "regime", "direction", "symbol"}
    s = d["overall"]["returns"][0]
    assert set(s) == {"horizon", "n", "hit_rate", "mean_bps", "median_bps", "ci_low_bps",
                      "ci_high_bps", "t_stat"}
    assert d["since"].endswith("Z")


@pytest.mark.parametrize("text", ["0", "-1", "nan", "1.5", "", "1,,3", "1e9", "100001",
                                  "9" * 30, "1,1", "inf", "１"])
def test_bad_horizons_are_one_line_usage_errors(text) -> None:
    with pytest.raises(UsageError, match="--horizons") as e:
        parse_horizons(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cost", [-1.0, math.nan, math.inf, 1e6, True])
def test_bad_costs_are_usage_errors(cost) -> None:
    with pytest.raises(UsageError, match="--cost-bps"):
        EvalSettings(cost_bps=cost)


def test_good_horizons_sorted() -> None:
    assert parse_horizons(" 12, 1,3 ") == (1, 3, 12)
    assert parse_horizons("100000") == (100000,)


def test_period_bounds_cover_the_period() -> None:
    a = datetime(2018, 1, 20, tzinfo=timezone.utc)
    b = a + timedelta(days=3)
    spans = period_bounds(a, b, 4)
    assert spans[0][0] == a and spans[-1][1] == b and len(spans) == 4
    assert all(x[1] == y[0] for x, y in zip(spans, spans[1:], strict=False))


def _wf_config(shared_data: Path, cache_dir: Path):
    from botopt.core import load_config

    return load_config(None, overrides={"data.source": "local",
                                        "data.data_dir": str(shared_data / "candles" / "5m"),
                                        "cache.dir": str(cache_dir)})


def test_walk_forward_never_sees_its_test_period(shared_data, cache_dir, clean_env,
                                                 tmp_path) -> None:
    """Deleting every candle after a test period's end (but the one its last label needs)
    leaves that period's figures unchanged: nothing later was read."""
    cfg = _wf_config(shared_data, cache_dir)
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
    a = datetime(2018, 1, 20, tzinfo=timezone.utc)
    periods = period_bounds(a, a + timedelta(days=2), 2)
    full = walk_forward(cfg, syms, periods)
    assert all(p.skipped is None for p in full)
    assert all(0.3 < p.accuracy < 0.7 and p.log_loss > 0 for p in full)
    assert full[0].train_rows < full[1].train_rows  # an expanding window
    # the first period alone, on files cut right after it
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    end = periods[0][1] + 2 * STEP
    for s in syms:
        src = shared_data / "candles" / "5m" / f"{s}-5m.feather"
        pl.read_ipc(src).filter(pl.col("date") < end).write_ipc(cut_dir / src.name)
    from botopt.core import load_config

    cut = load_config(None, overrides={"data.source": "local", "data.data_dir": str(cut_dir),
                                       "cache.dir": str(cache_dir)})
    again = walk_forward(cut, syms, periods[:1])
    assert again[0] == full[0]


def test_walk_forward_without_history_says_why(shared_data, cache_dir, clean_env) -> None:
    cfg = _wf_config(shared_data, cache_dir)
    a = datetime(2018, 1, 10, 5, tzinfo=timezone.utc)  # the data starts 04:55
    p = walk_forward(cfg, ["ETH_BTC"], period_bounds(a, a + timedelta(hours=1), 1))[0]
    assert p.accuracy is None and p.skipped is not None and "training rows" in p.skipped


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_html_report_is_self_contained_with_curves(real_eval, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from botopt.core import write_report

    run = Backtest("default", real_eval, ())
    out = write_report([run], tmp_path / "r.html")
    page = out.read_text(encoding="utf-8")
    p = _Page()
    p.feed(page)
    assert "svg" in p.tags and "path" in p.tags and "table" in p.tags
    assert "script" not in p.tags and "http://" not in page.split("<svg", 1)[0]
    text = " ".join(p.text)
    for name in ("momentum", "trend", "mean_reversion", "information coefficient",
                 "min_strength", "ADA_BTC"):
        assert name in page, name
    assert "what the gates did" in text
    png = write_report([run, run], tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UsageError, match=r"\.html or \.png"):
        write_report([run], tmp_path / "r.pdf")


def test_csv_has_one_row_per_candidate(real, real_eval, tmp_path) -> None:
    n = write_csv(real_eval, tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert n == len(rows) == real.candidates.height == real_eval.overall.candidates
    assert {"net_1", "net_3", "net_12", "ret_1", "gate_passed", "blocked_by"} <= set(rows[0])
    first = real_eval.table.row(0, named=True)
    assert rows[0]["symbol"] == first["symbol"]
    assert float(rows[0]["net_1"] or "nan") == pytest.approx(first["net_1"]) or \
        first["net_1"] is None


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 50))
def test_flipping_every_direction_negates_gross_returns(shared_data, seed) -> None:
    closes = _CLOSES.get("c")
    if closes is None:
        closes = _CLOSES["c"] = _closes(shared_data, 4).tail(4000)
    cands = _candidates(closes, seed, 0.5)
    rep = FakeReplay(cands, closes, "5m", closes["candle_time"].min(),
                     closes["candle_time"].max(), ())
    flipped = replace(rep, candidates=cands.with_columns(
        direction=pl.when(pl.col("direction") == "long").then(pl.lit("short"))
        .otherwise(pl.lit("long"))))
    a = evaluate(rep, EvalSettings(horizons=(1, 3), cost_bps=0.0))
    b = evaluate(flipped, EvalSettings(horizons=(1, 3), cost_bps=0.0))
    for sa, sb in zip(a.overall.candidate_returns, b.overall.candidate_returns, strict=True):
        assert sb.n == sa.n and sb.mean_bps == pytest.approx(-sa.mean_bps, abs=1e-9)
        assert sb.t_stat == pytest.approx(-sa.t_stat, abs=1e-9)
    for ia, ib in zip(a.ic, b.ic, strict=True):  # the signed factor flips with it
        assert ib.mean == pytest.approx(-ia.mean, abs=1e-12)


def test_odd_values_in_candidates_never_break_the_evaluation(real) -> None:
    """NaN / inf / null strength and probabilities, a missing engine or regime, a zero close:
    left out of the figures that need them, never an error, never NaN in the JSON."""
    import json

    bad = real.candidates.head(400).with_columns(
        strength=pl.when(pl.int_range(pl.len()) % 3 == 0).then(float("nan"))
        .when(pl.int_range(pl.len()) % 3 == 1).then(float("inf")).otherwise(None),
        p_dir=pl.lit(float("nan")), engine=pl.lit(None, dtype=pl.String),
        regime=pl.lit(None, dtype=pl.String))
    closes = real.closes.with_columns(close=pl.when(pl.int_range(pl.len()) % 50 == 0)
                                      .then(0.0).otherwise(pl.col("close")))
    ev = evaluate(replace(real, candidates=bad, closes=closes))
    d = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    assert d["overall"]["candidates"] == 400
    assert [g["value"] for g in d["breakdowns"]["engine"]] == ["-"]
    assert all(i["periods"] == 0 for i in d["ic"])
    assert d["overall"]["candidate_returns"][0]["n"] > 0


def test_report_without_matplotlib_names_the_extra(real_eval, tmp_path, monkeypatch) -> None:
    import sys

    from botopt.core import write_report

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a missing package raises
    with pytest.raises(UsageError, match=r"botopt\[report\]") as e:
        write_report([Backtest("default", real_eval, ())], tmp_path / "r.html")
    assert "\n" not in str(e.value) and not (tmp_path / "r.html").exists()


def test_walk_forward_fits_on_the_most_recent_rows_only(shared_data, cache_dir, clean_env,
                                                        monkeypatch) -> None:
    from botopt.core.backtest import _walkforward

    cfg = _wf_config(shared_data, cache_dir)
    a = datetime(2018, 1, 20, tzinfo=timezone.utc)
    periods = period_bounds(a, a + timedelta(days=1), 2)
    monkeypatch.setattr(_walkforward, "MAX_TRAIN_ROWS", 500)
    capped = walk_forward(cfg, ["ETH_BTC", "LTC_BTC"], periods)
    assert [p.train_rows for p in capped] == [500, 500]
    assert all(p.accuracy is not None for p in capped)


def _walk_forward_by_definition(cfg, syms, periods, cap):
    """Every symbol's rows at once, in one stable time order; each period fits on the last
    ``cap`` rows whose label was known before it (no row dropped ahead of time)."""
    from botopt.core.data._candles import load_candles
    from botopt.core.signals._features import compute_features
    from botopt.core.signals._model import _log_loss, fit_logistic, training_set

    step = int(STEP.total_seconds() * 1000)
    end = max(b for _, b in periods) + 2 * STEP
    parts = [training_set(compute_features(load_candles([s], config=cfg, as_of=end),
                                           cfg.features), step, cfg.features) for s in syms]
    x = np.concatenate([p[0].astype(np.float32) for p in parts])
    y = np.concatenate([p[1] for p in parts])
    t = np.concatenate([p[2] for p in parts])
    o = np.argsort(t, kind="stable")
    x, y, t = x[o].astype(np.float64), y[o], t[o]
    out = []
    for a, b in periods:
        ms = lambda d: int(d.timestamp() * 1000)  # noqa: E731
        known = int(np.sum(t <= ms(a) - 2 * step))
        test = (t >= ms(a)) & (t < ms(b))
        mean, std, w = fit_logistic(x[max(0, known - cap):known], y[max(0, known - cap):known])
        p = 1 / (1 + np.exp(-(((x[test] - mean) / std) @ w[:-1] + w[-1])))
        out.append((min(known, cap), int(test.sum()), float(np.mean((p >= 0.5) == (y[test] == 1))),
                    _log_loss(y[test], p)))
    return out


@pytest.mark.parametrize("cap", [300, 2000, 7000])
def test_walk_forward_equals_its_definition_with_old_rows_dropped(
        shared_data, cache_dir, clean_env, monkeypatch, cap) -> None:
    """The walk-forward drops, chunk by chunk, the old rows no window can read: each period
    still fits on exactly the rows it would with every row kept (caps below, near and above
    what one chunk holds before the first period; a chunk of one symbol, so rows are dropped
    from chunks already computed; periods shorter than a window, which reach back past the
    first period's start)."""
    from botopt.core.backtest import _walkforward

    cfg = _wf_config(shared_data, cache_dir)
    syms = ["ETH_BTC", "LTC_BTC", "XMR_BTC", "ADA_BTC"]
    a = datetime(2018, 1, 16, 3, 7, tzinfo=timezone.utc)
    periods = period_bounds(a, a + timedelta(hours=9), 3)
    monkeypatch.setattr(_walkforward, "MAX_TRAIN_ROWS", cap)
    monkeypatch.setattr(_walkforward, "_CHUNK", 1)
    got = walk_forward(cfg, syms, periods)
    want = _walk_forward_by_definition(cfg, syms, periods, cap)
    for g, (n_train, n_test, acc, loss) in zip(got, want, strict=True):
        assert (g.train_rows, g.test_rows) == (n_train, n_test)
        assert g.accuracy == pytest.approx(acc, abs=1e-12)
        assert g.log_loss == pytest.approx(loss, rel=1e-9)


def test_symbols_as_text_or_missing(real) -> None:
    """A replay made by hand may carry its symbols as text: the same figures as categories.
    A candidate and a close that name no symbol are never each other's."""
    text = pl.col("symbol").cast(pl.String)
    as_text = replace(real, candidates=real.candidates.with_columns(text),
                      closes=real.closes.with_columns(text))
    assert evaluate(as_text).to_dict() == evaluate(real).to_dict()
    nobody = real.candidates.head(5).with_columns(symbol=pl.lit(None, dtype=pl.Categorical))
    later = nobody.select("symbol", pl.col("candle_time") + timedelta(minutes=5), "close")
    closes = pl.concat([real.closes, later.with_columns(pl.col("symbol")
                                                        .cast(real.closes.schema["symbol"]))])
    got = forward_returns(nobody, closes, 300_000, [1], 10.0)
    assert got.height == 5 and got["ret_1"].null_count() == 5


def test_walk_forward_on_a_market_that_never_moved_says_its_figures_say_little(
        shared_data, cache_dir, clean_env, tmp_path) -> None:
    """A pair whose closes stop moving: its test rows were all "not up", and the period
    read accuracy 1.000 against a majority of 1.000 with nothing said (sweep I). The
    figures stay (they are what was measured) with a note; a pair that moves has none."""
    from botopt.core import load_config

    src = shared_data / "candles" / "5m" / "ETH_BTC-5m.feather"
    df = pl.read_ipc(src).sort("date")
    a = datetime(2018, 1, 20, tzinfo=timezone.utc)
    flat = df.with_columns(
        [pl.when(pl.col("date") >= a - timedelta(days=1)).then(pl.lit(0.09))
         .otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")])
    d = tmp_path / "flat"
    d.mkdir()
    flat.write_ipc(d / "K_BTC-5m.feather")
    df.write_ipc(d / "ETH_BTC-5m.feather")
    cfg = load_config(None, overrides={"data.source": "local", "data.data_dir": str(d),
                                       "cache.dir": str(cache_dir)})
    periods = period_bounds(a, a + timedelta(days=1), 1)
    (still,) = walk_forward(cfg, ["K_BTC"], periods)
    assert still.accuracy == 1.0 and still.note is not None and "say little" in still.note
    (moving,) = walk_forward(cfg, ["ETH_BTC"], periods)
    assert moving.note is None and moving.accuracy is not None


def test_a_symbol_without_candidates_has_a_row_of_zeros(real) -> None:
    """A symbol of the run that produced no candidate had no row in the per-symbol
    breakdown, which read as "not in the run" (sweep I, I6): it has one, with zeros."""
    quiet = real.symbols[3]
    cands = real.candidates.filter(pl.col("symbol") != quiet)
    ev = evaluate(FakeReplay(cands, real.closes, real.interval, real.since, real.until,
                             real.symbols), EvalSettings(horizons=(1, 3), cost_bps=10.0))
    rows = {g.value: g for g in ev.breakdown("symbol")}
    assert list(rows) == sorted(real.symbols)
    assert rows[quiet].candidates == 0 and rows[quiet].signals == 0
    assert all(s.n == 0 for s in (*rows[quiet].returns, *rows[quiet].candidate_returns))
    assert sum(g.candidates for g in rows.values()) == cands.height
