"""The fast paths added for 2,000-symbol runs give exactly what the plain paths give.

Each fast path keeps its plain twin (the file-by-file loader, per-symbol frames); these tests
run both on the same input and compare answers and errors, bit for bit.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from botopt.core import load_candles, load_config
from botopt.core.data import _candles
from botopt.core.errors import DataError

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def cfg_local(d: Path):
    return load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                  "data.interval": "5m"})


def feather(d: Path, sym: str, n: int, *, seed: int, unit: str = "ms", skip: int = 0,
            reorder: bool = False, extra: bool = False, naive: bool = False) -> None:
    rng = np.random.default_rng(seed)
    t = [T0 + timedelta(minutes=5 * i) for i in range(n + skip) if not (skip and i == n // 2)]
    t = t[:n]
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(t))))
    df = pl.DataFrame({"date": pl.Series(t, dtype=pl.Datetime("ms", "UTC")),
                       "open": close, "high": close * 1.01, "low": close * 0.99,
                       "close": close, "volume": rng.uniform(1, 10, len(t))})
    df = df.with_columns(pl.col("date").dt.cast_time_unit(unit))  # type: ignore[arg-type]
    if naive:
        df = df.with_columns(pl.col("date").dt.replace_time_zone(None))
    if reorder:
        df = df.select("date", "close", "volume", "open", "low", "high")
    if extra:
        df = df.with_columns(trades=pl.lit(3, dtype=pl.Int64))
    df.write_ipc(d / f"{sym}-5m.feather")


def both(syms, cfg, monkeypatch, **kw):
    """(fast answer, plain answer): a frame or the error's text, for each path."""
    def one():
        try:
            return load_candles(syms, config=cfg, **kw)
        except DataError as exc:
            return f"{type(exc).__name__}: {exc}"
    fast = one()
    with monkeypatch.context() as m:
        m.setattr(_candles, "_read_stacked", lambda *a: None)
        plain = one()
    return fast, plain


def same(fast, plain) -> bool:
    if isinstance(fast, str) or isinstance(plain, str):
        return fast == plain
    return fast.schema == plain.schema and fast.equals(plain)


def test_stacked_read_is_taken_and_equals_file_by_file(tmp_path, monkeypatch):
    syms = [f"S{i:02d}USDT" for i in range(6)]
    for i, s in enumerate(syms):
        feather(tmp_path, s, 50 + 7 * i, seed=i, skip=i % 2)
    cfg = cfg_local(tmp_path)
    stacked = _candles._read_stacked(syms, cfg)
    assert stacked is not None  # the fast path answers for plain freqtrade feather files
    assert stacked[1] == {s: str(tmp_path / f"{s}-5m.feather") for s in syms}
    fast, plain = both(syms, cfg, monkeypatch, as_of="2030-01-01", limit=40)
    assert same(fast, plain)
    assert fast["symbol"].rle().struct.field("value").to_list() == syms


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["ms", "ns", "us"]),
                          st.booleans(), st.booleans(), st.booleans(), st.booleans()),
                min_size=2, max_size=5),
       st.sampled_from([None, 10]), st.integers(0, 3))
def test_stacked_read_equals_file_by_file_on_any_mix(tmp_path_factory, monkeypatch, files,
                                                     limit, defect):
    """Mixed time units, naive times, column orders, extra columns, empty files and bad rows:
    the answer, or the first error, is the file-by-file path's."""
    d = tmp_path_factory.mktemp("mix")
    syms = [f"M{i}USDT" for i in range(len(files))]
    for i, (n, unit, reorder, extra, naive, gap) in enumerate(files):
        feather(d, syms[i], n, seed=i, unit=unit, reorder=reorder, extra=extra,
                naive=naive, skip=int(gap))
    if defect and files[defect % len(files)][0] > 3:
        p = d / f"{syms[defect % len(files)]}-5m.feather"
        df = pl.read_ipc(p)
        df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(-1.0)
                        .otherwise(pl.col("low")).alias("low")).write_ipc(p)
    fast, plain = both(syms, cfg_local(d), monkeypatch, as_of="2030-01-01", limit=limit)
    assert same(fast, plain), (fast, plain)


def test_empty_and_missing_files_name_the_same_culprit(tmp_path, monkeypatch):
    feather(tmp_path, "AUSDT", 20, seed=1)
    feather(tmp_path, "BUSDT", 0, seed=2)
    feather(tmp_path, "CUSDT", 20, seed=3)
    cfg = cfg_local(tmp_path)
    fast, plain = both(["AUSDT", "BUSDT", "CUSDT"], cfg, monkeypatch, as_of="2030-01-01")
    assert isinstance(fast, str) and "BUSDT" in fast and fast == plain
    (tmp_path / "CUSDT-5m.feather").write_bytes(b"")
    fast, plain = both(["AUSDT", "CUSDT"], cfg, monkeypatch, as_of="2030-01-01")
    assert isinstance(fast, str) and "CUSDT-5m.feather" in fast and fast == plain


def test_real_freqtrade_files_stacked_equal_file_by_file(shared_data, monkeypatch):
    d = shared_data / "candles" / "5m"
    syms = sorted(p.name.split("-")[0] for p in d.glob("*-5m.feather"))
    cfg = cfg_local(d)
    assert _candles._read_stacked(syms, cfg) is not None
    fast, plain = both(syms, cfg, monkeypatch, as_of="2100-01-01")
    assert same(fast, plain)


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_symbols(tmp_path, monkeypatch, n):
    syms = [f"O{i}USDT" for i in range(n)]
    for i, s in enumerate(syms):
        feather(tmp_path, s, 30, seed=i)
    fast, plain = both(syms, cfg_local(tmp_path), monkeypatch, as_of="2030-01-01")
    assert same(fast, plain)


# -- regime: the last label alone equals the per-candle series' last label ----------------

def _regime_frame(symbols, data):
    parts = []
    for s, (adx, pdi, mdi, vol) in zip(symbols, data, strict=True):
        n = len(adx)
        parts.append(pl.DataFrame({
            "symbol": [s] * n,
            "open_time": [T0 + timedelta(minutes=5 * i) for i in range(n)],
            "adx_14": pl.Series(adx, dtype=pl.Float64),
            "plus_di_14": pl.Series(pdi, dtype=pl.Float64),
            "minus_di_14": pl.Series(mdi, dtype=pl.Float64),
            "vol_20": pl.Series(vol, dtype=pl.Float64)}))
    return pl.concat(parts)


# NaN too: polars ranks it above every number (NaN >= 25 holds), and the fast path must
# follow the same rules as the per-candle expression.
_value = st.one_of(st.none(), st.sampled_from([10.0, 20.0, 22.0, 25.0, 30.0, float("nan")]),
                   st.floats(0, 100, allow_nan=False))
_vol = st.one_of(st.none(), st.sampled_from([0.01, 0.02]), st.floats(0, 0.1, allow_nan=False),
                 st.just(float("nan")))


@pytest.mark.slow  # over 2 s: a 200-example hypothesis run
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40).flatmap(lambda n: st.tuples(
           *(st.lists(v, min_size=n, max_size=n) for v in (_value, _value, _value, _vol)))),
           min_size=1, max_size=4),
       st.integers(1, 12), st.sampled_from([50.0, 75.0, 90.0, 99.0]))
def test_detect_regime_equals_the_series_last_label(data, lookback, pct):
    from botopt.core.base._config import FeaturesConfig, RegimeConfig
    from botopt.core.signals._regime import detect_regime, regime_series

    rc = RegimeConfig(vol_lookback=lookback, vol_percentile=pct)
    fc = FeaturesConfig()
    df = _regime_frame([f"S{i}" for i in range(len(data))], data)
    series = regime_series(df, rc, fc).group_by("symbol", maintain_order=True).agg(
        pl.col("regime").last())
    assert detect_regime(df, rc, fc) == dict(series.iter_rows())


# -- gates: the vectorised correlation check equals the plain loop ------------------------

def _own_reasons(c, config):
    """A candidate's own reasons as they were computed, one candidate at a time (the gates
    now test all candidates at once: ``own_reasons``)."""
    import math

    from botopt.core.base._vocab import Direction, Regime
    from botopt.core.signals._gates import _below, directional_probability

    reasons = []
    if c.direction == Direction.FLAT:
        reasons.append("no directional signal")
    if c.strength < config.min_strength:
        reasons.append(_below("strength", c.strength, config.min_strength))
    p = directional_probability(c.probability, c.direction)
    if c.direction == Direction.FLAT:
        pass
    elif p is None:
        reasons.append("no model probability")
    elif p < config.min_probability:
        reasons.append(_below("p_dir", p, config.min_probability))
    if config.block_high_vol and c.regime == Regime.HIGH_VOL:
        reasons.append("regime HIGH_VOL")
    if c.volume_z is None or math.isnan(c.volume_z):
        reasons.append("no volume z-score")
    elif c.volume_z < config.min_volume_z:
        reasons.append(_below("volume z", c.volume_z, config.min_volume_z))
    return reasons


def test_own_reasons_at_once_equal_one_at_a_time():
    """The own reasons tested as arrays over all candidates equal the one-candidate tests,
    over every combination of the inputs' edge values (None, NaN, at and near each limit)."""
    import itertools

    from botopt.core.base._config import GatesConfig
    from botopt.core.signals._gates import GateInput, own_reasons

    nan = float("nan")
    cands = [GateInput(symbol=f"S{k}", candle_time=T0, direction=d, strength=s,
                       probability=p, regime=r, volume_z=v)
             for k, (d, s, p, r, v) in enumerate(itertools.product(
                 ["long", "short", "flat"], [0.0, 0.2999, 0.3, 0.9, nan],
                 [None, nan, 0.0, 0.45, 0.5499, 0.55, 0.999], ["RANGE", "HIGH_VOL"],
                 [None, nan, -0.5, 0.0, 0.2]))]
    for cfg in (GatesConfig(min_strength=0.3, min_probability=0.55, min_volume_z=0.0),
                GatesConfig(min_strength=0.3, min_probability=0.45, min_volume_z=-1.0,
                            block_high_vol=False)):
        got = own_reasons(cands, cfg)
        assert got == [_own_reasons(c, cfg) for c in cands]
        assert any(got) and not all(got)  # both kinds are in the comparison


def _gates_reference(candidates, records, config, correlation=None):
    """evaluate_gates as it was: a Python loop over every active signal per candidate."""
    import math

    from botopt.core.signals._gates import GateDecision

    cooldown = timedelta(seconds=config.cooldown_seconds)
    history = list(records)
    index = {s: i for i, s in enumerate(correlation[0])} if correlation else {}
    order = sorted(range(len(candidates)),
                   key=lambda i: (-candidates[i].strength, candidates[i].symbol))
    passed_now: list = []
    decisions: dict = {}
    for i in order:
        c = candidates[i]
        reasons = _own_reasons(c, config)
        for r in history:
            if (r.symbol == c.symbol and r.direction == c.direction
                    and c.candle_time - cooldown < r.candle_time < c.candle_time):
                when = f"{r.candle_time:%H:%M}" if r.candle_time.date() == \
                    c.candle_time.date() else f"{r.candle_time:%Y-%m-%d %H:%M}"
                reasons.append(f"cooldown: {c.direction} signal at {when}")
                break
        if correlation is not None and c.symbol in index:
            matrix = correlation[1]
            active = [(r.symbol, r.candle_time) for r in history
                      if r.direction == c.direction and r.symbol != c.symbol
                      and c.candle_time - cooldown < r.candle_time <= c.candle_time]
            active += [(o.symbol, o.candle_time) for o in passed_now
                       if o.direction == c.direction]
            for other, _ in active:
                j = index.get(other)
                if j is None:
                    continue
                rho = float(matrix[index[c.symbol], j])
                if not math.isnan(rho) and rho > config.correlation_threshold:
                    reasons.append(f"correlated {rho:.2f} with active {other} {c.direction}")
                    break
        decision = GateDecision(passed=not reasons, reasons=tuple(reasons))
        if decision.passed:
            passed_now.append(c)
        decisions[i] = decision
    return [decisions[i] for i in range(len(candidates))]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.integers(2, 9).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.sampled_from(["long", "short", "flat"]),
                       st.floats(0, 1), st.one_of(st.none(), st.floats(0, 1)),
                       st.integers(0, 2)), min_size=n, max_size=n),
    st.lists(st.tuples(st.integers(0, n + 1), st.sampled_from(["long", "short"]),
                       st.integers(-8, 2)), max_size=12),
    st.lists(st.one_of(st.sampled_from([float("nan"), -0.5, 0.5, 0.99]), st.floats(-1, 1)),
             min_size=n * n, max_size=n * n),
    st.booleans())),
       st.floats(0.1, 0.95))
def test_gates_equal_the_plain_loop(case, threshold):
    from botopt.core.base._config import GatesConfig
    from botopt.core.signals._gates import CooldownRecord, GateInput, evaluate_gates

    n, cands, recs, corr, partial = case
    cfg = GatesConfig(correlation_threshold=threshold, min_strength=0.1,
                      min_probability=0.2, min_volume_z=-5.0)
    names = [f"S{i}" for i in range(n + 2)]  # S{n}, S{n+1}: records of unknown symbols
    candidates = [GateInput(symbol=names[i], candle_time=T0 + timedelta(minutes=5 * dt),
                            direction=d, strength=s, probability=p, regime="RANGE",
                            volume_z=0.0) for i, (d, s, p, dt) in enumerate(cands)]
    records = [CooldownRecord(names[k], d, T0 + timedelta(minutes=5 * m))
               for k, d, m in recs]
    known = names[: n - 1] if partial else names[:n]  # a candidate outside the matrix too
    k = len(known)
    matrix = np.array(corr, dtype=np.float64).reshape(n, n)[:k, :k]
    for correlation in (None, (known, matrix)):
        assert evaluate_gates(candidates, records, cfg, correlation) == \
            _gates_reference(candidates, records, cfg, correlation)


def test_candle_fingerprints_equal_the_per_group_hash(tmp_path):
    """The slices of one hash column give each symbol the key a group frame gave, whether
    the symbols come in runs (load_candles) or interleaved."""
    import hashlib

    from botopt.core.signals._pipeline import candle_fingerprints

    def reference(candles):
        hashes = candles.with_columns(_h=candles.select(
            "open_time", "open", "high", "low", "close", "volume").hash_rows(seed=0))
        out = {}
        for (sym,), g in hashes.group_by("symbol", maintain_order=True):
            h = hashlib.blake2b(digest_size=20)
            h.update(f"{sym}|5m|{g['open_time'][-1]}|{g.height}|{pl.__version__}".encode())
            h.update(g["_h"].to_numpy().tobytes())
            minute = int(g["open_time"][-1].timestamp()) // 60  # leads: time-ordered keys
            out[str(sym)] = f"{minute:08x}" + h.hexdigest()
        return out

    syms = [f"F{i}USDT" for i in range(5)]
    for i, s in enumerate(syms):
        feather(tmp_path, s, 20 + 3 * i, seed=i, skip=i % 2)
    c = load_candles(syms, config=cfg_local(tmp_path), as_of="2030-01-01")
    got = candle_fingerprints(c, "5m")
    assert got == reference(c) and len(set(got.values())) == 5
    shuffled = c.sample(fraction=1.0, shuffle=True, seed=3)
    assert candle_fingerprints(shuffled, "5m") == reference(shuffled)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 30), st.booleans()), min_size=1, max_size=4),
       st.integers(0, 40), st.sampled_from([None, 1, 5, 25]))
def test_closed_and_limit_equal_the_plain_filters(tmp_path_factory, files, cut, limit):
    """The as-of cut and the per-symbol limit, taken as one gather of ranges, equal the
    plain filters (closed: open_time + interval <= as-of; then each symbol's last rows)."""
    d = tmp_path_factory.mktemp("cut")
    syms = [f"C{i}USDT" for i in range(len(files))]
    for i, (n, gap) in enumerate(files):
        feather(d, syms[i], n, seed=i, skip=int(gap))
    cfg = cfg_local(d)
    as_of = T0 + timedelta(minutes=5 * cut)
    everything = load_candles(syms, config=cfg, as_of="2100-01-01")
    closed = everything.filter(pl.col("open_time") + timedelta(minutes=5) <= as_of)
    if limit is not None:
        closed = closed.filter(pl.int_range(pl.len()).over("symbol")
                               >= pl.len().over("symbol").cast(pl.Int64) - limit)
    try:
        got = load_candles(syms, config=cfg, as_of=as_of, limit=limit)
    except DataError as exc:
        missing = [s for s in syms if s not in set(closed["symbol"].to_list())]
        assert missing and str(exc).startswith(f"{missing[0]} (") and "no candle closed" \
            in str(exc)
        return
    assert got.equals(closed)


def test_a_symbol_shorter_than_the_history_keeps_its_candles(tmp_path):
    """Regression: the limit filter computed len - limit in UInt32, so a symbol with fewer
    candles than ``features.history`` lost them all whenever another symbol had more, and
    ``botopt signals`` died with "internal error: KeyError"."""
    from typer.testing import CliRunner

    from botopt.cli.main import app

    feather(tmp_path, "LONGUSDT", 1200, seed=0)
    feather(tmp_path, "NEWUSDT", 300, seed=1)
    got = load_candles(["LONGUSDT", "NEWUSDT"], config=cfg_local(tmp_path),
                       as_of="2100-01-01", limit=1000)
    assert dict(got.group_by("symbol").len().iter_rows()) == {"LONGUSDT": 1000,
                                                              "NEWUSDT": 300}
    res = CliRunner().invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals",
                                   "--data-dir", str(tmp_path), "--symbols",
                                   "LONGUSDT,NEWUSDT", "--as-of", "2024-01-05T04:00:00Z",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert {"LONGUSDT", "NEWUSDT"} <= set(res.output.split('"'))


_NAMES = ["AAAUSDT-5m.feather", "AAAUSDT-5m.csv", "AAA_USDT-5m.parquet", "AAA_USDT-5m.json",
          "BBB_USDT-5m.feather", "BB_BUSDT-5m.csv", "CCCUSDT-5m.json.gz", "CCCUSDT-1h.feather",
          "DDD_USDT-5m.h5", "EEEUSDT-5m.feather/", "EEEUSDT-5m.csv", "FFF_BTC-5m.csv",
          "futures/XRP_USDT_USDT-5m-futures.feather"]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(set(_NAMES), ["EEEUSDT", "AAAUSDT", "CCCUSDT"])
@example({"EEEUSDT-5m.feather/"}, ["EEEUSDT"])
@given(st.sets(st.sampled_from(_NAMES)),
       st.lists(st.sampled_from(["AAAUSDT", "AAA_USDT", "AAA/USDT", "BBBUSDT", "CCCUSDT",
                                 "DDDUSDT", "EEEUSDT", "FFFBTC", "FFF/BTC", "XRP/USDT:USDT",
                                 "ZZZUSDT"]), min_size=1, max_size=5, unique=True))
def test_find_candle_files_equals_one_lookup_per_symbol(tmp_path_factory, names, syms):
    """One listing finds the same file per symbol as find_candle_file, or the same error
    (missing, ambiguous A_BC / AB_C, hdf5, a directory where a file should be)."""
    from botopt.core.data._candles import find_candle_file, find_candle_files
    from botopt.core.errors import BotoptError

    d = tmp_path_factory.mktemp("names")
    for name in names:
        p = d / name.rstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            p.mkdir()
        else:
            p.write_text("x")

    def answer(fn):
        try:
            return fn()
        except BotoptError as exc:
            return f"{type(exc).__name__}: {exc}"

    one = answer(lambda: [find_candle_file(d, s, "5m") for s in syms])
    assert answer(lambda: find_candle_files(d, syms, "5m")) == one


# -- the run key's file digests: remembered by stat, never trusted for a changed file -----

def test_file_digests_reuse_only_unchanged_settled_files(tmp_path, monkeypatch):
    import os

    from botopt.core.signals import _pipeline

    files = []
    for i in range(3):
        feather(tmp_path, f"D{i}USDT", 20, seed=i)
        files.append(tmp_path / f"D{i}USDT-5m.feather")
    memo = tmp_path / "memo" / "candle-files.json"
    truth = [_pipeline._file_digest(p) for p in files]
    reads: list[Path] = []
    real = _pipeline._file_digest
    monkeypatch.setattr(_pipeline, "_file_digest", lambda p: reads.append(p) or real(p))
    # Just written: read every time, and not remembered (a write in the same tick could
    # leave the times as they are).
    assert _pipeline._file_digests(files, memo) == truth and len(reads) == 3
    assert _pipeline._file_digests(files, memo) == truth and len(reads) == 6
    # Settled (the clock moved on): read once more, then remembered.
    later = _pipeline._SETTLED_NS + 10**9
    import time

    clock = time.time_ns
    monkeypatch.setattr(_pipeline.time, "time_ns", lambda: clock() + later)
    assert _pipeline._file_digests(files, memo) == truth and len(reads) == 9
    assert _pipeline._file_digests(files, memo) == truth and len(reads) == 9
    # Two cron lines on different symbols share the memo without evicting each other.
    assert _pipeline._file_digests(files[:1], memo) == truth[:1] and len(reads) == 9
    assert _pipeline._file_digests(files[1:], memo) == truth[1:] and len(reads) == 9
    # Rewritten in place with the same size and its old mtime put back (cp -p, rsync -t):
    # ctime still moves, so the file is read again and its new digest given.
    st = os.stat(files[1])
    data = bytearray(files[1].read_bytes())
    data[-20] ^= 0xFF
    files[1].write_bytes(bytes(data))
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(files[1]).st_size == st.st_size
    got = _pipeline._file_digests(files, memo)
    assert got[1] == real(files[1]) != truth[1] and reads[9:] == [files[1]]
    # A damaged memo costs the reads, not the answer.
    memo.write_text("{not json")
    assert _pipeline._file_digests(files, memo) == [real(p) for p in files]


def test_warm_run_after_an_in_place_rewrite_is_not_served_stale(tmp_path):
    """Whole runs: a file rewritten in place (same size, old mtime restored) after its
    digest was remembered gives a new answer, equal to an uncached run's."""
    import os

    from botopt.core import load_config, run_signals

    for i in range(3):
        feather(tmp_path, f"W{i}USDT", 400, seed=i)
    for p in tmp_path.glob("*.feather"):  # settled: changed long ago
        os.utime(p, ns=(1, 1))
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(tmp_path),
                                 "cache.dir": str(tmp_path / "cache")})
    syms = ["W0USDT", "W1USDT", "W2USDT"]
    at = T0 + timedelta(minutes=5 * 400)
    first = run_signals(cfg, syms, as_of=at, notify=False)
    again = run_signals(cfg, syms, as_of=at, notify=False)
    assert again.from_cache and again == first
    p = tmp_path / "W1USDT-5m.feather"
    df = pl.read_ipc(p)
    df.with_columns((pl.col("close") * 1.001).alias("close"),
                    (pl.col("high") * 1.002).alias("high")).write_ipc(p)
    os.utime(p, ns=(1, 1))
    fresh = run_signals(cfg, syms, as_of=at, notify=False)
    plain = run_signals(cfg, syms, as_of=at, notify=False, use_cache=False)
    assert not fresh.from_cache and fresh == plain
    assert [s.close for s in fresh.symbols] != [s.close for s in first.symbols]


def test_features_split_equals_compute_features():
    """The pipeline's split (a few columns in full, every column's last row) gives the
    values compute_features gives, across chunk boundaries, uneven lengths and symbols
    that come interleaved."""
    from botopt.benchmarks._common import synthetic_candles
    from botopt.core.base._config import FeaturesConfig
    from botopt.core.signals._features import compute_features, compute_features_split
    from botopt.core.signals._regime import regime_inputs

    fc = FeaturesConfig()
    candles = synthetic_candles(131, 80, seed=5)
    candles = candles.filter(~((pl.col("symbol") == candles["symbol"][0])
                               & (pl.int_range(pl.len()) % 7 == 3)))  # gaps, uneven runs
    for frame in (candles, candles.sample(fraction=1.0, shuffle=True, seed=2)):
        whole = compute_features(frame, fc)
        full, tail = compute_features_split(frame, fc, regime_inputs(fc))
        keep = [c for c in whole.columns if c in full.columns]
        assert full.columns == keep and full.equals(whole.select(keep))
        last = whole.group_by("symbol", maintain_order=True).tail(1)
        assert tail.columns == whole.columns and tail.equals(last)
