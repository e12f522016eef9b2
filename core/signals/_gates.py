"""Gates: the per-signal decision to pass or block, with every reason recorded.

Evaluation is a pure function of its inputs (candidates, a snapshot of the cooldown records,
the correlation matrix, the config), so a cached decision equals an uncached one. Recording
passed signals into the cooldown store is a separate step done under a file lock, because
overlapping cron runs share that store.

Time is candle time, never the wall clock: replays with ``--as-of`` give the same decisions.
A record made for the very candle being evaluated does not block it (re-running a minute
later on the same candle must give the same answer, not "cooldown").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..base._codec import fingerprint, register_type, settings_json
from ..base._config import GatesConfig
from ..base._frozen import quick_init
from ..base._versions import stage_tag
from ..base._vocab import Direction, Regime

# The cooldown records and their stores are state (kept between runs, local or shared); the
# gates read them. Re-exported: they are part of what a gate is decided on.
from ..state._cooldowns import CooldownRecord as CooldownRecord
from ..state._cooldowns import Cooldowns as Cooldowns
from ..state._cooldowns import CooldownStore as CooldownStore
from ..state._cooldowns import merge_records as merge_records


@quick_init
@dataclass(frozen=True)
class GateInput:
    symbol: str
    candle_time: datetime
    direction: str
    strength: float
    probability: float | None  # P(up) from the model; None when it has no value
    regime: str
    volume_z: float | None
    engine: str = ""


@quick_init
@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateDecision:
        return cls(bool(d["passed"]), tuple(d["reasons"]))


register_type(GateDecision)


def directional_probability(p_up: float | None, direction: str | None) -> float | None:
    """P(the signal's direction): P(up) for long, 1 - P(up) for short, None for flat."""
    if p_up is None or math.isnan(p_up) or direction not in (Direction.LONG, Direction.SHORT):
        return None
    return p_up if direction == Direction.LONG else 1.0 - p_up


def _below(name: str, value: float, limit: float, bound: str | None = None) -> str:
    """``"probability 0.499 < 0.50"``: as many decimals as it takes for the value not to
    print as the limit (a reason reading "0.50 < 0.50" helps nobody). ``bound``: the
    limit's text (``_bound(limit)``) when the caller has it."""
    for digits in range(2, 7):
        shown = f"{value:.{digits}f}"
        if shown != f"{limit:.{digits}f}":
            return f"{name} {shown} < {_bound(limit) if bound is None else bound}"
    return f"{name} {value!r} < {limit!r}"


def _bound(limit: float) -> str:
    """The limit as configured: 0.55 as "0.55", 0.555 as "0.555", never rounded."""
    return f"{limit:.2f}" if float(f"{limit:.2f}") == limit else f"{limit:g}"


def evaluate_gates(
    candidates: Sequence[GateInput],
    records: Iterable[CooldownRecord],
    config: GatesConfig,
    correlation: tuple[Sequence[str], Any] | None = None,
    own: Sequence[Sequence[str]] | None = None,
) -> list[GateDecision]:
    """One decision per candidate, in the order given.

    Candidates are judged strongest first, so for the correlation gate a stronger signal in
    this run counts as already active for a weaker, correlated one. ``own``: the
    candidates' ``own_reasons`` when the caller has them.
    """
    cooldown = timedelta(seconds=config.cooldown_seconds)
    history = list(records)
    mine = own_reasons(candidates, config) if own is None else [list(m) for m in own]
    own_records: dict[str, list[CooldownRecord]] = {}
    for r in history:
        own_records.setdefault(r.symbol, []).append(r)
    corr = _Active(correlation, history, cooldown)
    order = sorted(range(len(candidates)),
                   key=lambda i: (-candidates[i].strength, candidates[i].symbol))
    decisions: list[GateDecision] = [_PASS] * len(candidates)
    flat = Direction.FLAT
    threshold = config.correlation_threshold
    for i, c in enumerate(candidates):
        if c.symbol in own_records:
            for r in own_records[c.symbol]:
                if r.direction == c.direction and \
                        c.candle_time - cooldown < r.candle_time < c.candle_time:
                    # the day too when it is another (at 1d candles "at 00:00" said nothing)
                    when = f"{r.candle_time:%H:%M}" if r.candle_time.date() == \
                        c.candle_time.date() else f"{r.candle_time:%Y-%m-%d %H:%M}"
                    mine[i].append(f"cooldown: {c.direction} signal at {when}")
                    break
    # Each candidate that passes becomes an active signal whose correlation row the next
    # ones read. Computed as each passes, a row is one product that reads the whole window
    # of returns (23 MB at 10,000 symbols: 1.2 ms); the rows of every candidate that can
    # still pass (nothing of its own blocks it) are computed first, a product per 128 of
    # them, which reads the window once per batch. The same rows whichever way the
    # candidates are then read (the batches are a function of the candidates).
    corr.prepare([c.symbol for c, m in zip(candidates, mine, strict=True)
                  if not m and c.direction != flat])
    # A candidate blocked by its own reasons or a cooldown cannot pass: it never becomes an
    # active signal, so only the ones that can pass are read in turn. The others' reads
    # are made at the end, all of a list of active signals at once: such a candidate is
    # read against the active signals as they stood at its turn (the recorded ones and
    # the passed ones before it), a prefix of the final list, so its hit is the final
    # list's first hit when that lies within its prefix.
    later: list[tuple[int, int]] = []  # (candidate, passed signals of its direction then)
    for i in order:
        c = candidates[i]
        reasons = mine[i]
        if reasons:
            # A flat candidate has no active signals of its direction to be correlated
            # with (nothing flat passes, nor is recorded): no read.
            if c.direction != flat:
                later.append((i, corr.count(c.direction)))
            else:
                decisions[i] = GateDecision(passed=False, reasons=tuple(reasons))
            continue
        hit = corr.first_correlated(c, threshold)
        if hit is not None:
            reasons.append(f"correlated {hit[1]:.2f} with active {hit[0]} {c.direction}")
            decisions[i] = GateDecision(passed=False, reasons=tuple(reasons))
        else:
            corr.passed(c)
    hits = corr.first_correlated_within(candidates, later, threshold)
    for i, _ in later:
        reasons = mine[i]
        hit = hits.get(i)
        if hit is not None:
            reasons.append(f"correlated {hit[1]:.2f} with active {hit[0]} "
                           f"{candidates[i].direction}")
        decisions[i] = GateDecision(passed=False, reasons=tuple(reasons))
    return decisions


_PASS = GateDecision(passed=True)
_NONE_PASSED: tuple[list[str], list[int]] = ([], [])
_DIRECTION_CODES: dict[str, int] = {Direction.FLAT: 0, Direction.LONG: 1, Direction.SHORT: 2}


def own_reasons(candidates: Sequence[GateInput], config: GatesConfig) -> list[list[str]]:
    """What blocks each candidate on its own inputs, before cooldowns and correlation: the
    tests as arrays over all candidates at once (a candle's 100 symbols, or a run's
    10,000), the reasons' text made only for the tests that fail."""
    import numpy as np

    n = len(candidates)
    if not n:
        return []
    # one pass over the candidates: (strength, P(up), volume z, direction's code,
    # regime blocks); numpy reads None as NaN in a float array
    codes = _DIRECTION_CODES
    high = Regime.HIGH_VOL if config.block_high_vol else None
    cols = np.array([(c.strength, c.probability, c.volume_z, codes.get(c.direction, 3),
                      c.regime == high) for c in candidates], dtype=np.float64).T
    strength, p_up, vz, code = cols[0], cols[1], cols[2], cols[3]
    is_flat, is_long, is_short = code == 0, code == 1, code == 2
    # P(the signal's own direction), NaN where ``directional_probability`` is None
    p_dir = np.where(is_long, p_up, np.where(is_short, 1.0 - p_up, math.nan))
    weak = strength < config.min_strength  # NaN is never below: no reason, as before
    no_p = ~is_flat & np.isnan(p_dir)
    low_p = ~is_flat & (p_dir < config.min_probability)
    high_vol = cols[4] != 0
    no_vz = np.isnan(vz)
    low_vz = vz < config.min_volume_z
    out: list[list[str]] = [[] for _ in range(n)]
    any_ = is_flat | weak | no_p | low_p | high_vol | no_vz | low_vz
    # each limit's text made once, not for each reason that quotes it
    bounds = [_bound(x) for x in (config.min_strength, config.min_probability,
                                  config.min_volume_z)]
    idx = np.flatnonzero(any_)
    # the failing rows' tests and values as Python objects: one conversion, not a numpy
    # scalar read per test and candidate
    tests = np.stack([is_flat, weak, no_p, low_p, high_vol, no_vz, low_vz])[:, idx].T
    values = np.stack([strength, p_dir, vz])[:, idx].T
    for i, (flat, w, nop, lowp, hv, novz, lowvz), (sv, pv, zv) in zip(
            idx.tolist(), tests.tolist(), values.tolist(), strict=True):
        reasons = out[i]
        if flat:
            reasons.append("no directional signal")
        if w:
            reasons.append(_below("strength", sv, config.min_strength, bounds[0]))
        if nop:
            reasons.append("no model probability")
        elif lowp:
            reasons.append(_below("p_dir", pv, config.min_probability, bounds[1]))
        if hv:
            reasons.append("regime HIGH_VOL")
        if novz:
            reasons.append("no volume z-score")
        elif lowvz:
            reasons.append(_below("volume z", zv, config.min_volume_z, bounds[2]))
    return out


# Active signals read against every candidate at once: a chunk of reads is this many rows
# of symbols floats (20 MB at 10,000 symbols), whatever the number of active signals.
_READS = 256


class _Block:
    """Every candidate's reads against one list of active signals, ``matrix[i, cols[k]]``,
    kept only as what the gate asks of them: per candidate the first ``k`` above the
    threshold (-1: none) and its value, and the same excluding the candidate's own record
    (a symbol's own record is not "another" active signal). The reads themselves are let
    go chunk by chunk: kept, they were active signals x symbols floats (189 MB for 2,364
    signals passed among 10,000 symbols, then copied as the block grew). It grows by the
    signals that pass, only their reads new."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.size = 0
        self.first: Any = None
        self.first_value: Any = None
        self.other: Any = None  # the first above it that is not the candidate's own record
        self.other_value: Any = None

    def extend(self, vals: Any, cols: Any, n_recorded: int) -> None:
        """Take the reads of the list's next ``len(vals)`` signals: ``vals[k, i]`` against
        candidate ``i``, of the signals ``cols`` (their symbols' indexes); the list's
        first ``n_recorded`` are recorded signals."""
        import numpy as np

        if self.first is None:
            n = vals.shape[1]
            self.first = np.full(n, -1, dtype=np.int64)
            self.other = np.full(n, -1, dtype=np.int64)
            self.first_value = np.full(n, np.nan)
            self.other_value = np.full(n, np.nan)
        above = vals > self.threshold  # NaN is never above
        self._take(vals, above, self.first, self.first_value)
        own = np.flatnonzero(self.size + np.arange(len(vals)) < n_recorded)
        above[own, cols[own]] = False
        self._take(vals, above, self.other, self.other_value)
        self.size += len(vals)

    def _take(self, vals: Any, above: Any, first: Any, value: Any) -> None:
        import numpy as np

        new = np.flatnonzero((first < 0) & above.any(axis=0))
        at = above[:, new].argmax(axis=0)
        first[new] = self.size + at
        value[new] = vals[at, new]


class _Active:
    """The correlation gate's "active signals": the cooldown records of the same direction
    within the cooldown (other symbols), then this run's passed signals in the order they
    passed. The first of them correlated above the threshold blocks a candidate.

    One candidate's check is one vector read of its matrix row over the active symbols'
    columns; looping over them in Python was quadratic (1.2 s at 2,000 symbols). The list
    of active signals changes only when one passes, so the reads of every candidate against
    it are one block (``columns``), made when a candidate first reads it."""

    def __init__(self, correlation: tuple[Sequence[str], Any] | None,
                 history: list[CooldownRecord], cooldown: timedelta) -> None:
        import numpy as np

        self.index = {s: i for i, s in enumerate(correlation[0])} if correlation else {}
        m = correlation[1] if correlation else None
        # Rows computed on demand (CorrelationRows) are read as they are: m[i, cols].
        self.matrix = m if m is None or hasattr(type(m), "__fingerprint__") \
            else np.asarray(m, dtype=np.float64)
        # Every candidate's read against a list of active signals at once: out[k, i] =
        # matrix[i, cols[k]]; None: read one candidate's row at a time.
        mat: Any = self.matrix
        self._columns: Any = None
        # Every value at hand (a plain matrix, or rows made as the whole matrix): a
        # candidate's read is one index, cheaper than keeping a block up to date.
        self._direct = isinstance(mat, np.ndarray) or bool(getattr(mat, "whole", bool)())
        self._holds: Any = None  # whether a symbol's own row is computed already
        # computes the rows a read of some columns needs (CorrelationRows)
        self._prepare: Any = getattr(mat, "prepare", None)
        if mat is not None and hasattr(mat, "columns"):
            self._columns, self._holds = mat.columns, mat.holds
        elif isinstance(mat, np.ndarray):
            self._columns = lambda cols: mat[:, cols].T
            self._holds = lambda i: True
        self.history = history
        self.cooldown = cooldown
        self._recorded: dict[tuple[str, datetime], tuple[list[str], Any, set[int]]] = {}
        self._joined: dict[tuple[str, datetime], tuple[int, list[str], Any, set[int]]] = {}
        self._blocks: dict[tuple[str, datetime], _Block] = {}
        self._passed: dict[str, tuple[list[str], list[int]]] = {}
        # per (direction, candle time), when its block was last found up to date (or its
        # list empty: no block): (this run's passed signals counted, the block, the
        # recorded columns, threshold, names, columns, how many are recorded)
        self._ready: dict[tuple[str, datetime], tuple[int, _Block | None, set[int], float,
                                                      list[str], Any, int]] = {}

    def prepare(self, symbols: Sequence[str]) -> None:
        """Compute the correlation rows of ``symbols`` now, in batches (rows computed on
        demand only; a plain matrix has them all)."""
        import numpy as np

        if self._prepare is not None and symbols:
            self._prepare(np.array([self.index[s] for s in symbols if s in self.index],
                                   dtype=np.int64))

    def count(self, direction: str) -> int:
        """This run's passed signals of ``direction`` so far."""
        return len(self._passed.get(direction, _NONE_PASSED)[0])

    def first_correlated_within(self, candidates: Sequence[GateInput],
                                reads: list[tuple[int, int]], threshold: float
                                ) -> dict[int, tuple[str, float]]:
        """``first_correlated`` for each (candidate, passed) of ``reads`` against the
        active signals it had at its turn, when ``passed`` signals of its direction had
        passed: per candidate with a hit, (symbol, correlation). Read after every
        candidate's turn: one block per list of active signals, read for all of its
        candidates at once."""
        import numpy as np

        out: dict[int, tuple[str, float]] = {}
        if self.matrix is None or not reads:
            return out
        groups: dict[tuple[str, datetime], list[tuple[int, int, int]]] = {}
        for i, p in reads:
            c = candidates[i]
            j = self.index.get(c.symbol)
            if j is not None:
                groups.setdefault((c.direction, c.candle_time), []).append((i, j, p))
        for key, items in groups.items():
            c0 = candidates[items[0][0]]
            names, cols, recorded = self._active(c0)
            n_recorded = len(cols) - self.count(c0.direction)
            if not cols.size:
                continue
            if self._columns is None:  # no column reads: each candidate's own row
                for i, j, p in items:
                    mask = np.ones(n_recorded + p, dtype=bool)
                    if j in recorded:  # its own record is not "another" active signal
                        mask[:n_recorded] = cols[:n_recorded] != j
                    keep = np.flatnonzero(mask)
                    if keep.size:
                        row = np.asarray(self.matrix[j, cols[keep]], dtype=np.float64)
                        above = np.flatnonzero(row > threshold)  # NaN is never above
                        if above.size:
                            out[i] = (names[int(keep[above[0]])], float(row[above[0]]))
                continue
            block = self._blocks.get(key)
            if block is not None and (block.threshold != threshold or block.size > len(cols)):
                block = None
            if block is None:
                block = _Block(threshold)
                self._blocks[key] = block
            if block.size < len(cols):
                self._extend(block, cols, n_recorded)
            js = np.array([j for _, j, _ in items], dtype=np.int64)
            own = np.array([j in recorded for _, j, _ in items], dtype=bool)
            k = np.where(own, block.other[js], block.first[js])
            v = np.where(own, block.other_value[js], block.first_value[js])
            limit = n_recorded + np.array([p for _, _, p in items], dtype=np.int64)
            for n in np.flatnonzero((k >= 0) & (k < limit)).tolist():
                out[items[n][0]] = (names[int(k[n])], float(v[n]))
        return out

    def passed(self, c: GateInput) -> None:
        names, cols = self._passed.setdefault(c.direction, ([], []))
        j = self.index.get(c.symbol)
        if j is not None:
            names.append(c.symbol)
            cols.append(j)

    def _records(self, c: GateInput) -> tuple[list[str], Any, set[int]]:
        """Recorded active signals for a direction and candle time: names, columns, and
        the columns as a set."""
        import numpy as np

        key = (c.direction, c.candle_time)
        if key not in self._recorded:
            found = [(r.symbol, self.index[r.symbol]) for r in self.history
                     if r.direction == c.direction and r.symbol in self.index
                     and c.candle_time - self.cooldown < r.candle_time <= c.candle_time]
            self._recorded[key] = ([n for n, _ in found],
                                   np.array([j for _, j in found], dtype=np.int64),
                                   {j for _, j in found})
        return self._recorded[key]

    def _active(self, c: GateInput) -> tuple[list[str], Any, set[int]]:
        """The recorded active signals, then this run's passed ones: names, columns, the
        recorded columns as a set. Kept until a signal of the direction passes: most
        candidates of a run see the same list (rebuilding it per candidate was most of the
        gates' cost in a replay)."""
        import numpy as np

        more, more_cols = self._passed.get(c.direction, ([], []))
        key = (c.direction, c.candle_time)
        held = self._joined.get(key)
        if held is None or held[0] != len(more):
            names, cols, seen = self._records(c)
            held = (len(more), names + more,
                    np.concatenate([cols, np.asarray(more_cols, dtype=np.int64)]), seen)
            self._joined[key] = held
        return held[1], held[2], held[3]

    def _extend(self, block: _Block, cols: Any, n_recorded: int) -> None:
        """``block`` extended to every signal of ``cols``: their rows computed as one read of
        them computes them (the same batches, so the same bits), then read a slice at a
        time, so no active signals x symbols copy is made."""
        new = cols[block.size:]
        if self._prepare is not None:
            self._prepare(new)
        for a in range(0, len(new), _READS):
            part = new[a:a + _READS]
            block.extend(self._columns(part), part, n_recorded)

    @staticmethod
    def _found(block: _Block, i: int, own: bool, names: list[str]) -> tuple[str, float] | None:
        k = int(block.other[i] if own else block.first[i])
        if k < 0:
            return None
        return names[k], float(block.other_value[i] if own else block.first_value[i])

    def first_correlated(self, c: GateInput, threshold: float) -> tuple[str, float] | None:

        if self.matrix is None:
            return None
        i = self.index.get(c.symbol)
        if i is None:
            return None
        if self._direct:
            names, cols, recorded = self._active(c)
            return self._read(i, names, cols, recorded, self.count(c.direction), threshold)
        key = (c.direction, c.candle_time)
        held = self._ready.get(key)
        if held is not None and held[3] == threshold and \
                held[0] == len(self._passed.get(c.direction, _NONE_PASSED)[0]):
            # The common read: no signal of the direction passed since this list was last
            # read, so its block is up to date (or the list is empty): the answer is read
            # off the block as below, without rebuilding the list to find that out.
            block, names, cols, n_recorded = held[1], held[4], held[5], held[6]
            if block is None:
                return None
            return self._found(block, i, i in held[2], names)
        names, cols, recorded = self._active(c)
        # the recorded signals come first, this run's passed ones after them
        n_recorded = len(cols) - len(self._passed.get(c.direction, ([], []))[0])
        if not cols.size:
            self._ready[key] = (0, None, recorded, threshold, names, cols, 0)
            return None
        # The reads of every candidate against this list at once, built by the first
        # candidate whose own read computes the same rows (all of the list's, or all but
        # its own when that one is held already), in the same batch: a batch's product may
        # differ from single rows' in the last bit.
        key = (c.direction, c.candle_time)
        block = self._blocks.get(key)
        if block is not None and (block.threshold != threshold or block.size > len(cols)):
            block = None
        if block is not None and block.size < len(cols):
            # Signals passed since: only their rows are new (the list only grows at its
            # end), the rows a single read would compute now, in the same batch.
            self._extend(block, cols, n_recorded)
        if block is None and self._columns is not None and (i not in recorded
                                                            or self._holds(i)):
            block = _Block(threshold)
            self._extend(block, cols, n_recorded)
            self._blocks[key] = block
        if block is not None:
            if block.size == len(cols):
                self._ready[key] = (len(cols) - n_recorded, block, recorded, threshold,
                                    names, cols, n_recorded)
            return self._found(block, i, i in recorded, names)
        return self._read(i, names, cols, recorded, len(cols) - n_recorded, threshold)

    def _read(self, i: int, names: list[str], cols: Any, recorded: set[int], passed: int,
              threshold: float) -> tuple[str, float] | None:
        """Candidate ``i``'s own read of the active signals (``passed`` of them this
        run's, after the recorded ones)."""
        import numpy as np

        n_recorded = len(cols) - passed
        if i in recorded:  # a symbol's own record is not "another" active signal
            keep = np.ones(len(cols), dtype=bool)
            keep[:n_recorded] = cols[:n_recorded] != i
            names = [x for x, k in zip(names, keep.tolist(), strict=True) if k]
            cols = cols[keep]
        if not cols.size:
            return None
        mat: Any = self.matrix  # never None here: a run without one has no active reads
        row = mat[i, cols]
        above = np.flatnonzero(row > threshold)  # NaN is never above
        if not above.size:
            return None
        k = int(above[0])
        return names[k], float(row[k])


# What blocked a candidate, as a stable name (the [gates] setting each reason comes from):
# the reasons are for people and may be reworded, tallies need names that stay.
_GATE_NAMES = (("no directional signal", "direction"), ("strength ", "min_strength"),
               ("p_dir ", "min_probability"), ("no model probability", "min_probability"),
               ("regime ", "block_high_vol"), ("no volume z-score", "min_volume_z"),
               ("volume z ", "min_volume_z"), ("cooldown: ", "cooldown_seconds"),
               ("correlated ", "correlation_threshold"))


# The table by each prefix's first character, in the table's order: a reason is checked
# against the one to three prefixes that can match it (the same first match as the whole
# table's scan; a replay names every reason of every candidate).
_GATE_NAMES_BY_FIRST: dict[str, tuple[tuple[str, str], ...]] = {}
for _prefix, _name in _GATE_NAMES:
    _GATE_NAMES_BY_FIRST[_prefix[0]] = (*_GATE_NAMES_BY_FIRST.get(_prefix[0], ()),
                                       (_prefix, _name))
del _prefix, _name


def gate_name(reason: str) -> str:
    """The stable name of the gate a reason from ``evaluate_gates`` comes from ("other"
    for a reason this table does not know: tests/test_replay.py checks none is left)."""
    for prefix, name in _GATE_NAMES_BY_FIRST.get(reason[:1], ()):
        if reason.startswith(prefix):
            return name
    return "other"


def gates_key(config: GatesConfig, candidates: Sequence[GateInput],
              relevant: Sequence[tuple[str, str, str]], correlation: Any) -> str:
    """The gates cache key: every input a decision reads (the candidates, the cooldown
    records that concern them, the correlations), the gate settings and the code."""
    # The candidates as one JSON text: hashing 2,000 x 8 fields one by one cost 0.6 s.
    cands = json.dumps([[c.symbol, c.candle_time.isoformat(), c.direction, c.strength,
                         c.probability, c.regime, c.volume_z, c.engine] for c in candidates])
    return fingerprint(["gates", stage_tag("gates"), settings_json(config), cands,
                        list(relevant), correlation])
