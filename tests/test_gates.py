"""Gates: each rule alone and together, reasons recorded, cooldowns shared across runs."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botopt.core.base._config import GatesConfig
from botopt.core.signals._gates import CooldownRecord, CooldownStore, GateInput, evaluate_gates

T = datetime(2026, 9, 20, 12, 0, tzinfo=timezone.utc)
CFG = GatesConfig(min_strength=0.3, min_probability=0.55, block_high_vol=True,
                  min_volume_z=-1.0, cooldown_seconds=1800, correlation_threshold=0.8)


def cand(symbol="A", direction="long", strength=0.6, p=0.7, regime="TREND_UP", vz=0.0,
         t=T):
    return GateInput(symbol, t, direction, strength, p, regime, vz)


def test_each_gate_alone():
    assert evaluate_gates([cand()], [], CFG)[0].passed
    cases = {
        "strength 0.10 < 0.30": cand(strength=0.1),
        "p_dir 0.40 < 0.55": cand(p=0.4),
        "p_dir 0.30 < 0.55": cand(direction="short", p=0.7),
        "regime HIGH_VOL": cand(regime="HIGH_VOL"),
        "volume z -2.00 < -1.00": cand(vz=-2.0),
        "no model probability": cand(p=None),
        "no directional signal": cand(direction="flat"),
    }
    for reason, c in cases.items():
        d = evaluate_gates([c], [], CFG)[0]
        assert not d.passed and reason in d.reasons, (reason, d)


def test_a_value_just_below_its_limit_does_not_print_as_the_limit():
    d = evaluate_gates([cand(p=0.5489, strength=0.2999)], [], CFG)[0]
    assert list(d.reasons) == ["strength 0.2999 < 0.30", "p_dir 0.549 < 0.55"]
    odd = GatesConfig(min_strength=0.3, min_probability=0.555, min_volume_z=-1.0)
    d = evaluate_gates([cand(p=0.5549)], [], odd)[0]
    assert list(d.reasons) == ["p_dir 0.55 < 0.555"]  # the limit is never rounded


def test_all_failing_reasons_are_listed():
    d = evaluate_gates([cand(strength=0.1, p=0.2, regime="HIGH_VOL")], [], CFG)[0]
    assert len(d.reasons) == 3


def test_cooldown_uses_candle_time_and_ignores_the_same_candle():
    rec = [CooldownRecord("A", "long", T - timedelta(minutes=10))]
    assert "cooldown" in evaluate_gates([cand()], rec, CFG)[0].reasons[0]
    assert evaluate_gates([cand(direction="short", p=0.2)], rec, CFG)[0].passed
    assert evaluate_gates([cand(t=T + timedelta(hours=1))], rec, CFG)[0].passed
    same = [CooldownRecord("A", "long", T)]
    assert evaluate_gates([cand()], same, CFG)[0].passed


def test_correlation_gate():
    corr = (["A", "B", "C"], np.array([[1, 0.9, 0.1], [0.9, 1, 0.2], [0.1, 0.2, 1]]))
    ds = evaluate_gates([cand("A", strength=0.5), cand("B", strength=0.9),
                         cand("C", strength=0.4)], [], CFG, corr)
    assert [d.passed for d in ds] == [False, True, True]
    assert "correlated 0.90 with active B long" in ds[0].reasons
    active = [CooldownRecord("B", "long", T - timedelta(minutes=5))]
    assert not evaluate_gates([cand("A")], active, CFG, corr)[0].passed
    assert evaluate_gates([cand("A")], active, CFG, None)[0].passed  # no matrix: no gate


def test_cooldown_store_between_runs(tmp_path):
    path = tmp_path / "cooldowns.json"
    first = CooldownStore(path).record([CooldownRecord("A", "long", T)])
    assert len(first) == 1
    again = CooldownStore(path).record([CooldownRecord("A", "long", T),
                                        CooldownRecord("B", "short", T)])
    assert [r.symbol for r in again] == ["B"]
    assert {r.symbol for r in CooldownStore(path).snapshot()} == {"A", "B"}
    path.write_text("{broken")
    assert CooldownStore(path).snapshot() == []


WRITER = r"""
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from botopt.core.signals._gates import CooldownRecord, CooldownStore
store = CooldownStore(Path(sys.argv[1]))
base = datetime(2026, 9, 20, tzinfo=timezone.utc)
for i in range(30):
    store.record([CooldownRecord(f"S{sys.argv[2]}", "long", base + timedelta(minutes=5 * i))])
"""


def test_concurrent_processes_lose_no_record(tmp_path):
    path = tmp_path / "cooldowns.json"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i)])
             for i in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(CooldownStore(path).snapshot()) == 120


def test_record_log_equals_merge_records():
    """A replay's record index (bisections while the records come in time order) holds the
    very list ``merge_records`` makes, in order, and hands out the same records ``since`` a
    time: in order, with duplicates, with several at one candle, and after a record older
    than the newest breaks the order (then it is merge_records itself)."""
    import random

    from botopt.core.state._cooldowns import RecordLog, merge_records

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    keep = timedelta(hours=3)
    for seed in range(40):
        rng = random.Random(seed)
        log, plain = RecordLog(), []
        t = 0
        for _ in range(120):
            t += rng.choice([0, 1, 1, 2, 7])
            back = seed % 4 == 0 and rng.random() < 0.05  # out of order now and then
            batch = [CooldownRecord(rng.choice("ABCDE"), rng.choice(["long", "short"]),
                                    t0 + timedelta(minutes=5 * (t - (9 if back else
                                                                     rng.choice([0, 0, 1])))))
                     for _ in range(rng.choice([0, 1, 2, 3]))]
            if plain and rng.random() < 0.2:  # a record already there, e.g. the oldest
                batch = [rng.choice(plain), *batch]
            plain, _ = merge_records(plain, batch, keep)
            log.merge(batch, keep)
            assert log.records == plain
            lo = t0 + timedelta(minutes=5 * (t - rng.choice([0, 3, 12, 40])))
            assert log.since(lo) == [r for r in plain if r.candle_time > lo]


class _OneRowAtATime:
    """Correlation rows that can only be read one candidate at a time (no ``columns``)."""

    def __init__(self, rows):
        self.rows = rows

    def __getitem__(self, key):
        return self.rows[key]

    def prepare(self, cols):  # rows computed ahead, as for the block's reads
        if hasattr(self.rows, "prepare"):
            self.rows.prepare(cols)

    def __fingerprint__(self):
        return self.rows.__fingerprint__()


@pytest.mark.parametrize("batches", [None, (3, 2)])
def test_correlation_reads_at_once_equal_one_at_a_time(batches, monkeypatch):
    """The gates read every candidate against the active signals in one block; the
    decisions and printed correlations equal reading each candidate's row alone, for rows
    computed on demand and for a plain matrix, with recorded signals (a candidate's own
    among them) and this run's passed ones. ``batches``: rows computed per product and
    reads taken per chunk made small, as 10,000 symbols' hundreds of active signals make
    them, so the rows come in several batches and the block in several chunks."""
    import random

    from botopt.core.signals import _correlation, _gates

    if batches is not None:
        monkeypatch.setattr(_correlation, "_ROWS_BATCH", batches[0])
        monkeypatch.setattr(_gates, "_READS", batches[1])
        # the rows read, not the whole matrix that few symbols get
        monkeypatch.setattr(_correlation, "_WHOLE_MAX", 0)

    from botopt.core.signals._correlation import CorrelationRows, RollingCorrelation

    rng = np.random.default_rng(7)
    syms = [f"S{i:02d}" for i in range(24)]
    base = rng.normal(size=(80, 3))
    rets = base[:, rng.integers(0, 3, len(syms))] + 0.6 * rng.normal(size=(80, len(syms)))
    rc = RollingCorrelation(window=60, min_periods=20, interval_ms=300_000)
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 300_000
    closes = 100 * np.exp(np.cumsum(rets, axis=0))
    n = closes.shape[0]
    rc.update_runs(syms, np.arange(len(syms)) * n, np.arange(1, len(syms) + 1) * n,
                   np.tile(t0 + 300_000 * np.arange(n), len(syms)), closes.T.ravel())
    seen = blocked_alone = 0
    for seed in range(24):
        # every other round, candidates weaker than 0.45 are blocked on their own: their
        # correlation reasons are read after those that can pass, against the signals
        # active at their place in the order
        cfg = GatesConfig(min_strength=0.45 * (seed % 2), min_probability=0.0,
                          block_high_vol=False, min_volume_z=-9.0, cooldown_seconds=1800,
                          correlation_threshold=0.5)
        r = random.Random(seed)
        cands = [cand(s, direction=r.choice(["long", "short", "flat"]),
                      strength=r.random(), p=0.5) for s in syms]
        records = [CooldownRecord(s, r.choice(["long", "short"]),
                                  T - timedelta(minutes=5 * r.randint(0, 8)))
                   for s in r.sample(syms, 6)]
        order = r.sample(syms, len(syms))
        lazy, alone = CorrelationRows(rc, order), CorrelationRows(rc, order)
        block = evaluate_gates(cands, records, cfg, (order, lazy))
        single = evaluate_gates(cands, records, cfg, (order, _OneRowAtATime(alone)))
        assert block == single
        # the same rows computed in the same batches (a batch's product differs from a
        # single row's in the last bit): the values read are the same to the bit
        assert np.array_equal(lazy._slot, alone._slot)
        assert np.array_equal(lazy.held(), alone.held())  # the rows computed, bit for bit
        whole = np.asarray(CorrelationRows(rc, order))
        assert evaluate_gates(cands, records, cfg, (order, whole)) == evaluate_gates(
            cands, records, cfg, (order, _OneRowAtATime(whole)))
        seen += sum(any(x.startswith("correlated") for x in d.reasons) for d in block)
        blocked_alone += sum(len(d.reasons) > 1 and d.reasons[-1].startswith("correlated")
                             for d in block)
    assert seen > 20  # the gate blocked often enough to compare something
    assert blocked_alone > 10  # and often for candidates blocked on their own too


def test_gate_name_by_first_character_equals_the_table_scan():
    """``gate_name`` checks only the prefixes sharing a reason's first character: the same
    name as scanning the whole table in order, for every kind of reason and near misses."""
    from botopt.core.signals._gates import _GATE_NAMES, gate_name

    def scan(reason):
        return next((n for p, n in _GATE_NAMES if reason.startswith(p)), "other")

    reasons = [p + "x" for p, _ in _GATE_NAMES] + [p[:-1] for p, _ in _GATE_NAMES] + [
        "", "n", "no", "no volume", "strength", "cooldown:", "correlated", "volume zz",
        "stale data: last candle 15m ago", "warming up: 3 of 300 candles", "regime RANGE"]
    assert [gate_name(r) for r in reasons] == [scan(r) for r in reasons]
    assert {gate_name(p + "x") for p, _ in _GATE_NAMES} == {n for _, n in _GATE_NAMES}


def _gates_by_the_definition(cands, records, cfg, names, m):
    """The correlation gate as its definition reads, one candidate and one active signal at
    a time: strongest first, each non-flat candidate is blocked by the first active signal
    of its direction correlated above the threshold, the active signals being the
    cooldown's records (another symbol's, up to the candidate's candle) and then the
    signals passed before it, in the order they passed."""
    out = [list(d.reasons) for d in evaluate_gates(cands, records, cfg, None)]
    at = {s: k for k, s in enumerate(names)}
    cooldown = timedelta(seconds=cfg.cooldown_seconds)
    passed: dict[str, list[str]] = {"long": [], "short": []}
    for i in sorted(range(len(cands)), key=lambda i: (-cands[i].strength, cands[i].symbol)):
        c = cands[i]
        if c.direction != "flat" and c.symbol in at:
            active = [r.symbol for r in records if r.direction == c.direction
                      and r.symbol in at and r.symbol != c.symbol
                      and c.candle_time - cooldown < r.candle_time <= c.candle_time]
            for a in active + passed[c.direction]:
                v = m[at[c.symbol], at[a]]
                if v > cfg.correlation_threshold:
                    out[i].append(f"correlated {v:.2f} with active {a} {c.direction}")
                    break
        if not out[i] and c.symbol in at:
            passed[c.direction].append(c.symbol)
    return out


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_correlation_gate_equals_its_definition(data):
    """Any candidates (some blocked on their own, some outside the matrix, two candle
    times), any records and any threshold: the gates' block reads give the reasons the
    definition gives, read one candidate and one signal at a time."""
    pool = [f"S{i}" for i in range(9)]
    names = data.draw(st.permutations(pool)).copy()[:data.draw(st.integers(2, 9))]
    size = len(pool)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    m = rng.uniform(-1, 1, (size, size))
    m = (m + m.T) / 2
    m[rng.random((size, size)) < 0.1] = np.nan
    np.fill_diagonal(m, 1.0)
    m = m[:len(names), :len(names)]
    syms = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=9, unique=True))
    strength = st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9])
    cands = [cand(s, direction=data.draw(st.sampled_from(["long", "short", "flat"])),
                  strength=data.draw(strength), p=data.draw(st.sampled_from([0.3, 0.7, 0.7])),
                  t=T - timedelta(minutes=5 * data.draw(st.integers(0, 1)))) for s in syms]
    # records mostly of the candidates' own symbols: a strong candidate in its cooldown is
    # blocked on its own yet read before weaker ones pass
    records = [CooldownRecord(data.draw(st.sampled_from(syms + pool[:2])),
                              data.draw(st.sampled_from(["long", "short"])),
                              T - timedelta(minutes=5 * data.draw(st.integers(-1, 8))))
               for _ in range(data.draw(st.integers(0, 8)))]
    cfg = GatesConfig(min_strength=data.draw(st.sampled_from([0.0, 0.4, 0.6])),
                      min_probability=data.draw(st.sampled_from([0.0, 0.55])),
                      block_high_vol=False, min_volume_z=-9.0,
                      cooldown_seconds=1800,
                      correlation_threshold=data.draw(st.sampled_from([-0.5, 0.0, 0.3, 0.6])))
    got = [list(d.reasons) for d in evaluate_gates(cands, records, cfg, (names, m))]
    assert got == _gates_by_the_definition(cands, records, cfg, names, m)
    assert [not r for r in got] == [d.passed for d in evaluate_gates(cands, records, cfg,
                                                                     (names, m))]


def test_a_signal_passed_after_a_blocked_candidate_does_not_block_it():
    """A strong candidate blocked on its own (its probability) is judged before a weaker one
    passes: that pass is not among its active signals; one passed before it is."""
    names = ["A", "B", "C"]
    m = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.95], [0.9, 0.95, 1.0]])
    cfg = GatesConfig(min_strength=0.0, min_probability=0.55, block_high_vol=False,
                      min_volume_z=-9.0, cooldown_seconds=1800, correlation_threshold=0.5)
    a, c = evaluate_gates([cand("A", strength=0.9, p=0.3), cand("C", strength=0.5)], [],
                          cfg, (names, m))
    assert a.reasons == ("p_dir 0.30 < 0.55",) and c.passed
    c, b = evaluate_gates([cand("C", strength=0.9), cand("B", strength=0.5, p=0.3)], [],
                          cfg, (names, m))
    assert c.passed and b.reasons == ("p_dir 0.30 < 0.55", "correlated 0.95 with active C long")


@pytest.mark.slow  # 30 runs
def test_a_cooldown_longer_than_two_days_holds_at_daily_candles(tmp_path):
    """Every cooldown store kept its records 2 days whatever the cooldown, so a 5-day
    cooldown at 1d candles let a symbol and direction pass again on day 3 or 4 (sweep G;
    the backtest kept them as long, so it agreed with the repeats). Daily live runs over
    sample candles relabelled as days: no symbol and direction passes twice within 5 days,
    and a record older than 2 days is what blocks some of them, its day named."""
    import json
    from pathlib import Path

    import polars as pl
    from typer.testing import CliRunner

    from botopt.cli.main import app

    root = Path(__file__).resolve().parents[1] / "sample_data"
    data = tmp_path / "daily"
    data.mkdir()
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    for path in sorted(root.glob("*-5m.feather")):
        df = pl.read_ipc(path).sort("date").tail(500)
        days = pl.datetime_range(start, start + timedelta(days=df.height - 1), "1d",
                                 time_unit="ms", time_zone="UTC", eager=True)
        df.with_columns(date=days).write_ipc(data / path.name.replace("-5m", "-1d"))
    (tmp_path / "botopt.toml").write_text(
        "[gates]\nmin_probability = 0.45\nmin_strength = 0.2\ncooldown_seconds = 432000\n"
        "correlation_threshold = 1.0\n")
    env = {"BOTOPT_CONFIG": str(tmp_path / "botopt.toml"), "BOTOPT_DATA_SOURCE": "local",
           "BOTOPT_DATA_DATA_DIR": str(data), "BOTOPT_DATA_INTERVAL": "1d"}
    last: dict[tuple[str, str], datetime] = {}
    repeats, old_blocks = [], 0
    for k in range(470, 500):
        as_of = start + timedelta(days=k, hours=1)  # just after day k-1's candle closed
        result = CliRunner().invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals",
                                          "-s", "all", "--as-of", as_of.isoformat(),
                                          "--json", "--notify"], env=env)
        assert result.exit_code == 0, result.output
        for s in json.loads(result.stdout)["signals"]:
            t = datetime.fromisoformat(s["candle_time"].replace("Z", "+00:00"))
            key = (s["symbol"], s["direction"])
            if s["gate"]["passed"]:
                if key in last and t - last[key] < timedelta(days=5):
                    repeats.append((key, last[key], t))
                last[key] = t
            elif any(r.startswith("cooldown") for r in s["gate"]["reasons"]) and \
                    key in last and t - last[key] > timedelta(days=2):
                old_blocks += 1
                # the day is named: at 1d candles "at 00:00" said nothing
                assert f"signal at {last[key]:%Y-%m-%d} 00:00" in " ".join(
                    s["gate"]["reasons"]), s["gate"]["reasons"]
    assert repeats == []
    assert old_blocks > 0  # the test reaches cooldowns past the old 2-day keep
