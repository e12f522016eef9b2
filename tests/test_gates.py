"""Gates: each rule alone and together, reasons recorded, cooldowns shared across runs."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

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
    cfg = GatesConfig(min_strength=0.0, min_probability=0.0, block_high_vol=False,
                      min_volume_z=-9.0, cooldown_seconds=1800, correlation_threshold=0.5)
    seen = 0
    for seed in range(12):
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
    assert seen > 20  # the gate blocked often enough to compare something


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
