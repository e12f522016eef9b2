"""``replay``: the live step driven per candle. Equal to live runs made candle by candle with
the state a cron line carries, blind to the future, and clear about bad periods."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botopt.core import DataError, UnknownSymbolError, UsageError, load_config, replay
from botopt.core.base._vocab import Direction
from botopt.core.signals._gates import _GATE_NAMES, gate_name
from botopt.core.signals._pipeline import _run_signals
from botopt.core.state._workspace import Workspace

PAIRS = ["ADA_BTC", "DASH_BTC", "ETC_BTC", "ETH_BTC", "LTC_BTC", "NXT_BTC", "TRX_BTC",
         "XLM_BTC", "XMR_BTC", "ZEC_BTC"]
FIVE = timedelta(minutes=5)
UTC = timezone.utc
COLUMNS = ["symbol", "candle_time", "close", "regime", "engine", "direction", "strength",
           "p_up", "p_dir", "gate_passed", "gate_reasons", "blocked_by", "data_status"]


def real_config(tmp_path: Path, data_dir: Path, **extra):
    return load_config(overrides={"cache.dir": str(tmp_path / "cache"), "data.source": "local",
                                  "data.data_dir": str(data_dir), **extra})


def live_rows(cfg, syms, times, root: Path) -> list[dict]:
    """What cron runs at each candle's close say, from an empty cache, recording cooldowns
    as a live run does (``notify=True``): the rows of the symbols whose newest candle that
    is and that have a direction."""
    ws = Workspace(root, cfg)
    out = []
    for t in times:
        res = _run_signals(cfg, syms, as_of=t + FIVE, notify=True, workspace=ws)
        for r in res.symbols:
            if r.candle_time == t and r.direction in (Direction.LONG, Direction.SHORT):
                out.append({"symbol": r.symbol, "candle_time": t, "close": r.close,
                            "regime": r.regime, "engine": r.engine,
                            "direction": str(r.direction), "strength": r.strength,
                            "p_up": r.p_up, "p_dir": r.p_dir,
                            "gate_passed": r.gate_passed,
                            "gate_reasons": list(r.gate_reasons),
                            "data_status": str(r.data_status)})
    ws.close()
    return sorted(out, key=lambda d: (d["candle_time"], d["symbol"]))


def replay_rows(rep) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "blocked_by"}
            for row in rep.candidates.iter_rows(named=True)]


LOOSE = {"gates.correlation_threshold": 0.0, "gates.min_probability": 0.3,
         "gates.min_strength": 0.1}  # signals pass, and the correlation gate decides too


def check_equal_to_live(tmp_path, shared_data, start: datetime, n: int,
                        **extra) -> list[dict]:
    cfg = real_config(tmp_path, shared_data / "candles" / "5m", **extra)
    times = [start + FIVE * k for k in range(n)]
    rep = replay(cfg, PAIRS, times[0], times[-1] + FIVE)
    live = live_rows(cfg, PAIRS, times, tmp_path / "live")
    got = replay_rows(rep)
    assert len(got) == len(live) and got == live
    # the comparison has teeth: signals, passes and blocks of several gates are in it
    assert any(r["gate_passed"] for r in live) and any(not r["gate_passed"] for r in live)
    assert any(x.startswith("cooldown") for r in live for x in r["gate_reasons"])
    return live


def test_equal_to_live_runs_on_real_pairs(tmp_path, shared_data):
    check_equal_to_live(tmp_path, shared_data, datetime(2018, 1, 20, 7, 0, tzinfo=UTC), 16)


def test_equal_to_live_runs_with_the_correlation_gate(tmp_path, shared_data):
    live = check_equal_to_live(tmp_path, shared_data,
                               datetime(2018, 1, 26, 10, 0, tzinfo=UTC), 14, **LOOSE)
    assert any(x.startswith("correlated") for r in live for x in r["gate_reasons"])


@pytest.mark.slow
def test_equal_to_live_runs_over_hundreds_of_candles(tmp_path, shared_data):
    # 300 candles of all ten pairs: every candidate and gate decision
    check_equal_to_live(tmp_path, shared_data, datetime(2018, 1, 24, 0, 0, tzinfo=UTC), 300)


def _cli_rows(root: Path, data_dir: Path, syms, times) -> list[dict]:
    """Real ``botopt signals --as-of`` processes, one per candle, sharing one cache and
    state directory as a cron line does (``--notify``: a replay of the past records
    cooldowns only when asked)."""
    out = []
    for t in times:
        proc = subprocess.run(
            [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(root), "signals",
             "--source", "local", "--data-dir", str(data_dir), "--symbols", ",".join(syms),
             "--as-of", (t + FIVE).isoformat(), "--notify", "--json"],
            capture_output=True, check=True, text=True)
        for r in json.loads(proc.stdout)["signals"]:
            when = datetime.fromisoformat(r["candle_time"].replace("Z", "+00:00"))
            if when == t and r["direction"] in ("long", "short"):
                out.append({"symbol": r["symbol"], "candle_time": t, "close": r["close"],
                            "regime": r["regime"], "engine": r["engine"],
                            "direction": r["direction"], "strength": r["strength"],
                            "p_up": r["p_up"], "p_dir": r["p_dir"],
                            "gate_passed": r["gate"]["passed"],
                            "gate_reasons": r["gate"]["reasons"],
                            "data_status": r["data_status"]})
    return sorted(out, key=lambda d: (d["candle_time"], d["symbol"]))


@pytest.mark.slow
def test_equal_to_live_processes(tmp_path, shared_data, clean_env, monkeypatch):
    """As processes a user's cron starts, with gates loose enough that signals pass and
    the correlation gate (and the state it carries) decides too."""
    data = shared_data / "candles" / "5m"
    (tmp_path / "botopt.toml").write_text(
        "[gates]\ncorrelation_threshold = 0.0\nmin_probability = 0.3\nmin_strength = 0.1\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "x"), "data.source": "local",
                                 "data.data_dir": str(data)})
    assert cfg.gates.correlation_threshold == 0.0
    start = datetime(2018, 1, 26, 10, 0, tzinfo=UTC)
    times = [start + FIVE * k for k in range(14)]
    live = _cli_rows(tmp_path / "live", data, PAIRS, times)
    got = replay_rows(replay(cfg, PAIRS, times[0], times[-1] + FIVE, use_cache=False))
    assert got == live
    assert any(x.startswith("correlated") for r in live for x in r["gate_reasons"])


@pytest.fixture(scope="module")
def live_period(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("prop")
    cfg = real_config(root, shared_data / "candles" / "5m",
                      **LOOSE)
    start = datetime(2018, 1, 17, 22, 0, tzinfo=UTC)
    times = [start + FIVE * k for k in range(30)]
    return cfg, times, live_rows(cfg, PAIRS, times, root / "live")


@pytest.mark.slow
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(0, 29))
def test_any_candle_equals_the_live_run(live_period, k):
    """A replay from the period's start to a drawn candle T says at T what the live run at
    T said, with the state the live runs before it left."""
    cfg, times, live = live_period
    rep = replay(cfg, PAIRS, times[0], times[k] + FIVE, use_cache=False)
    at = [r for r in replay_rows(rep) if r["candle_time"] == times[k]]
    assert at == [r for r in live if r["candle_time"] == times[k]]


def test_a_model_plugin_sees_the_pairs_names(tmp_path, shared_data, monkeypatch):
    # a user's model may read the symbol column: a replay shows it the pair, as live does
    (tmp_path / "pairmodel.py").write_text(
        "def predict(rows):\n"
        "    return [0.9 if s in ('ETH_BTC', 'LTC_BTC') else 0.1 for s in rows['symbol']]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_equal_to_live(tmp_path, shared_data, datetime(2018, 1, 20, 7, 0, tzinfo=UTC), 8,
                        **{"model.predict": "pairmodel:predict"})


def test_columns_and_types(tmp_path, shared_data):
    cfg = real_config(tmp_path, shared_data / "candles" / "5m")
    since = datetime(2018, 1, 20, 7, 0, tzinfo=UTC)
    rep = replay(cfg, PAIRS[:3], since, since + FIVE * 6)
    c = rep.candidates
    assert c.columns == COLUMNS
    assert c.schema["candle_time"] == pl.Datetime("ms", "UTC")
    assert c.schema["gate_passed"] == pl.Boolean
    # names as categories (a year of candidates fits in memory), their text unchanged
    for name in ("symbol", "regime", "engine", "direction", "data_status"):
        assert c.schema[name] == pl.Categorical, name
    assert c.schema["blocked_by"] == c.schema["gate_reasons"] == pl.List(pl.Categorical)
    assert rep.closes.schema["symbol"] == pl.Categorical
    assert set(c["symbol"].to_list()) <= set(PAIRS[:3])
    assert c.height and c.equals(c.sort("candle_time", "symbol"))
    assert set(c["direction"]) <= {"long", "short"}
    assert c.filter(pl.col("gate_passed"))["blocked_by"].list.len().max() in (0, None)
    assert (c.filter(~pl.col("gate_passed"))["blocked_by"].list.len() > 0).all()
    # closes: every candle from since to the end of the data, for forward returns
    assert rep.closes.columns == ["symbol", "candle_time", "close"]
    assert rep.closes["candle_time"].min() == since
    assert rep.closes["candle_time"].max() == datetime(2018, 1, 30, 4, 50, tzinfo=UTC)
    assert rep.symbols == tuple(PAIRS[:3]) and rep.interval == "5m"


def test_every_gate_reason_has_a_stable_name():
    assert gate_name("strength 0.03 < 0.30") == "min_strength"
    assert gate_name("correlated 0.91 with active ETH_BTC long") == "correlation_threshold"
    assert gate_name("cooldown: long signal at 10:05") == "cooldown_seconds"
    assert gate_name("p_dir 0.49 < 0.50") == "min_probability"
    assert gate_name("regime HIGH_VOL") == "block_high_vol"
    assert gate_name("something new") == "other"
    assert len({n for _, n in _GATE_NAMES}) == 7


def test_a_replay_records_nothing(tmp_path, shared_data):
    cfg = real_config(tmp_path, shared_data / "candles" / "5m")
    since = datetime(2018, 1, 20, 7, 0, tzinfo=UTC)
    rep = replay(cfg, PAIRS[:4], since, since + FIVE * 12, use_cache=False)
    assert rep.candidates["gate_passed"].any()
    assert not (tmp_path / "cache").exists()
    replay(cfg, PAIRS[:4], since, since + FIVE * 12)  # cached: an entry, still no state
    assert {p.name for p in (tmp_path / "cache").iterdir()} <= {"backtest", "digests"}


def test_the_cached_replay_equals_the_computed_one(tmp_path, shared_data):
    src = shared_data / "candles" / "5m"
    (tmp_path / "d").mkdir()
    for s in PAIRS[:3]:
        (tmp_path / "d" / f"{s}-5m.feather").write_bytes((src / f"{s}-5m.feather").read_bytes())
    cfg = real_config(tmp_path, tmp_path / "d")
    since = datetime(2018, 1, 20, 7, 0, tzinfo=UTC)
    calls = []
    first = replay(cfg, PAIRS[:3], since, since + FIVE * 12, progress=lambda d, t: calls.append(t))
    assert calls and calls[-1] > 1  # computed
    calls.clear()
    again = replay(cfg, PAIRS[:3], since, since + FIVE * 12, progress=lambda d, t: calls.append(t))
    assert calls == [1]  # answered from the entry
    assert again.candidates.equals(first.candidates) and again.closes.equals(first.closes)
    assert again.candidates.equals(replay(cfg, PAIRS[:3], since, since + FIVE * 12,
                                          use_cache=False).candidates)
    # a damaged entry is computed again, and so is a changed data file
    for p in (tmp_path / "cache" / "backtest").glob("*.candidates.arrow"):
        p.write_bytes(b"garbage")
    calls.clear()
    assert replay(cfg, PAIRS[:3], since, since + FIVE * 12,
                  progress=lambda d, t: calls.append(t)).candidates.equals(first.candidates)
    assert calls[-1] > 1
    eth = tmp_path / "d" / "ETC_BTC-5m.feather"
    df = pl.read_ipc(io.BytesIO(eth.read_bytes()))
    df.with_columns(pl.col("open", "high", "low", "close") * 1.05).write_ipc(eth)
    moved = replay(cfg, PAIRS[:3], since, since + FIVE * 12)
    assert not moved.closes.equals(first.closes)


# -- no look-ahead ---------------------------------------------------------------------------

def _truncated_copy(src: Path, dest: Path, syms, last: datetime) -> None:
    dest.mkdir()
    for s in syms:
        df = pl.read_ipc(src / f"{s}-5m.feather")
        df.filter(pl.col("date") <= last).write_ipc(dest / f"{s}-5m.feather")


def test_no_look_ahead(tmp_path, shared_data):
    """Truncating the data right after T changes nothing computed for T or before, for
    every feature, engine, gate and the correlation state (in the spirit of freqtrade's
    lookahead-analysis)."""
    src = shared_data / "candles" / "5m"
    since = datetime(2018, 1, 21, 9, 0, tzinfo=UTC)
    cut = since + FIVE * 11
    _truncated_copy(src, tmp_path / "cut", PAIRS, cut)
    full = replay(real_config(tmp_path, src), PAIRS, since, since + FIVE * 40)
    short = replay(real_config(tmp_path, tmp_path / "cut"), PAIRS, since, cut + FIVE)
    before = full.candidates.filter(pl.col("candle_time") <= cut)
    assert before.height and before.equals(short.candidates)


# -- hostile input ---------------------------------------------------------------------------

def test_bad_periods_are_one_line_errors(tmp_path, shared_data):
    cfg = real_config(tmp_path, shared_data / "candles" / "5m")
    t = datetime(2018, 1, 20, tzinfo=UTC)
    with pytest.raises(UsageError, match="before --since"):
        replay(cfg, PAIRS[:2], t, t - FIVE)
    with pytest.raises(UsageError, match="empty period"):
        replay(cfg, PAIRS[:2], t, t)
    with pytest.raises(DataError, match="before the data .*starts 2018-01-10 04:55"):
        replay(cfg, PAIRS[:2], datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 2, 1,
                                                                         tzinfo=UTC))
    with pytest.raises(DataError, match="after the data .*ends 2018-01-30 04:50"):
        replay(cfg, PAIRS[:2], datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 2, 1,
                                                                         tzinfo=UTC))
    with pytest.raises(UnknownSymbolError, match="NOPE_BTC"):
        replay(cfg, ["ETH_BTC", "NOPE_BTC"], t, t + FIVE)
    with pytest.raises(UsageError, match="since"):
        replay(cfg, PAIRS[:2], "2018-01-20", t)  # type: ignore[arg-type]
    for exc in (UsageError, DataError):
        assert "\n" not in str(exc)


def test_one_symbol_naive_times_and_a_gap(tmp_path, shared_data):
    # ADA_BTC lacks 40 slots: a gap inside the period is no row and no error; naive = UTC
    cfg = real_config(tmp_path, shared_data / "candles" / "5m")
    ada = pl.read_ipc(shared_data / "candles" / "5m" / "ADA_BTC-5m.feather")
    t = ada["date"].to_list()
    gap = next(i for i in range(1000, len(t)) if t[i] - t[i - 1] > FIVE)
    since = t[gap - 5].replace(tzinfo=None)
    rep = replay(cfg, ["ADA_BTC"], since, since + FIVE * 20)
    times = set(rep.candidates["candle_time"].to_list())
    assert not times - set(t[gap - 5:gap + 20])  # only real candles
    assert rep.since.tzinfo is not None


def test_a_symbol_that_starts_mid_period(tmp_path, shared_data):
    src = shared_data / "candles" / "5m"
    (tmp_path / "d").mkdir()
    start = datetime(2018, 1, 21, 0, 0, tzinfo=UTC)
    for s in ("ETH_BTC", "LTC_BTC"):
        (tmp_path / "d" / f"{s}-5m.feather").write_bytes((src / f"{s}-5m.feather").read_bytes())
    late = pl.read_ipc(src / "XMR_BTC-5m.feather").filter(pl.col("date") >= start)
    late.write_ipc(tmp_path / "d" / "XMR_BTC-5m.feather")
    cfg = real_config(tmp_path, tmp_path / "d")
    rep = replay(cfg, ["ETH_BTC", "LTC_BTC", "XMR_BTC"], start - FIVE * 10,
                 start + FIVE * 10)
    xmr = rep.candidates.filter(pl.col("symbol") == "XMR_BTC")
    # it joins at its first candle, warming up (no gate may pass it)
    assert xmr.height == 0 or (xmr["data_status"] == "warming_up").all()
    assert rep.candidates.filter(pl.col("symbol") != "XMR_BTC").height


@pytest.mark.slow
def test_a_replay_in_many_chunks_equals_one_chunk(tmp_path, shared_data, monkeypatch):
    """A long replay steps through its period in chunks, each chunk's candidates sorted
    and the chunks compacted 64 at a time: the candidates equal one chunk's, row for row
    (ADA_BTC's gaps included)."""
    from botopt.core.backtest import _replay

    cfg = real_config(tmp_path, shared_data / "candles" / "5m")
    since = datetime(2018, 1, 22, 0, 0, tzinfo=UTC)
    until = since + 700 * FIVE
    pairs = PAIRS[::-1]  # asked in an order that is not the answer's
    one = replay(cfg, pairs, since, until, use_cache=False).candidates
    monkeypatch.setattr(_replay, "_BATCH_ROWS", 50)  # 5 candle times a chunk: 140 chunks
    many = replay(cfg, pairs, since, until, use_cache=False).candidates
    assert one.n_chunks() == 1 and many.n_chunks() > 1
    assert many.equals(one) and one.height > 1000
    assert many.equals(many.sort("candle_time", "symbol"))  # by time, then symbol


def test_the_steps_leave_no_cycle_for_the_paused_collector(tmp_path, shared_data,
                                                          monkeypatch):
    """A replay pauses Python's cycle collector while it steps (its time went to walking the
    prepared rows): that is only sound if the steps make no reference cycles, which would
    pile up until it resumes. A replay over real pairs leaves nothing for the collector, and
    the collector's state is back as it was, also after an error.

    The count is taken in a fresh process: in a test worker, threads left by other tests
    (fake servers, monitors) free cyclic garbage of their own while the replay runs, which
    once made this count 32 in CI with nothing of the replay's in it."""
    import gc

    script = f"""
import gc, sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from botopt.core import load_config, replay
cfg = load_config(overrides={{"cache.dir": {str(tmp_path / "cache")!r}, "data.source": "local",
                              "data.data_dir": {str(shared_data / "candles" / "5m")!r}}})
since = datetime(2018, 1, 20, 7, 0, tzinfo=timezone.utc)
five = timedelta(minutes=5)
pairs = {PAIRS!r}
replay(cfg, pairs, since, since + five, use_cache=False)  # imports, first-use caches
gc.collect()
assert gc.isenabled()
gc.set_debug(gc.DEBUG_SAVEALL)
rep = replay(cfg, pairs, since, since + five * 150, use_cache=False)
assert rep.candidates.height > 100, rep.candidates.height
assert gc.isenabled()
n = gc.collect()
print(n, dict(Counter(type(o).__name__ for o in gc.garbage)))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "0", proc.stdout  # what the collector found, by type

    cfg = real_config(tmp_path, shared_data / "candles" / "5m")
    since = datetime(2018, 1, 20, 7, 0, tzinfo=UTC)
    replay(cfg, PAIRS[:2], since, since + FIVE * 3, use_cache=False)
    assert gc.isenabled()
    gc.disable()
    try:
        replay(cfg, PAIRS[:2], since, since + FIVE * 3, use_cache=False)
        assert not gc.isenabled()  # left paused when the caller had paused it
    finally:
        gc.enable()
    # a user's model that fails inside the steps
    (tmp_path / "failmodel.py").write_text(
        "def predict(rows):\n    raise RuntimeError('model down')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bad = real_config(tmp_path, shared_data / "candles" / "5m",
                      **{"model.predict": "failmodel:predict"})
    with pytest.raises(Exception, match="model down"):
        replay(bad, PAIRS[:2], since, since + FIVE * 3, use_cache=False)
    assert gc.isenabled()
