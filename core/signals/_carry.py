"""Features and regimes carried from one candle to the next.

A symbol's indicators at candle t are what TA-Lib computes over its WHOLE stored series up
to t (the file's first row onward). Every stage is causal, so only three things reach back
further than a few hundred rows, and a symbol's state carries exactly them, at an *anchor*
row S of its series:

- the nine recursions' values at S (``_features.SMOOTHERS``): from S on, each is the same
  two operations a row, so a slice that starts at S with them as seeds continues each
  recursion bit for bit;
- the rolling windows (Bollinger, volume z-score, volatility) are block sums over blocks of
  n rows counted from the series' first row; S is a multiple of every window length, so the
  slice's blocks are the whole series' blocks and each window adds the same values in the
  same order: bit for bit again. No ring is stored: the slice holds the rows;
- the regime's hysteresis: the last decisive trend/range label before S. Its volatility
  percentile reads the last ``vol_lookback`` rows, which the slice holds too.

So a run computes rows S..t (about ``vol_lookback`` + a window + a block, whatever the
series' length) and moves the anchor forward. The state is derived data (a cache entry in
one of 64 files per settings, ``CarryStore``): keyed by the source, symbol, interval,
feature and regime settings and code; guarded by the first row's time and a digest of
rows 0..S. A guard that fails (history rewritten, file replaced, settings changed) or a
state that cannot be read means the symbol is computed from its first row, which is also
what ``--no-cache`` does; the two are equal bit for bit (tests/test_carry.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..base._codec import digest, json_loads, settings_json
from ..base._config import Config
from ..base._fs import atomic_writer
from ..base._versions import stage_tag
from ..base._vocab import Regime
from ._features import SMOOTHERS, _columns, _with_nulls, feature_columns
from ._regime import detect_regime, regime_inputs

_FORMAT = 2  # 2: states by symbol in shared files; 1: a file per symbol
_STRETCH = 250_000  # rows per batch of symbols computed at once (features_and_regimes)


@dataclass(frozen=True)
class CarryState:
    """One symbol's carried state: the recursions' ``values`` at row ``anchor`` of a series
    whose first row opened at ``first_ms`` and whose rows 0..anchor digest to ``prefix``;
    ``prior``: the last decisive trend/range label before the anchor (None: none yet)."""

    anchor: int
    first_ms: int
    prefix: str
    values: tuple[float, ...]
    prior: str | None

    def to_obj(self, symbol: str) -> dict[str, Any]:
        obj: dict[str, Any] = {"anchor": self.anchor, "first": self.first_ms,
                               "prefix": self.prefix, "values": [v.hex() for v in self.values],
                               "prior": self.prior}
        obj["sum"] = _checksum(symbol, obj)
        return obj

    @classmethod
    def from_obj(cls, d: Any, symbol: str) -> CarryState | None:
        """The state, or None for anything that is not one (a damaged entry is a miss).
        The guard (first time, anchor, prefix) proves the state belongs to the data; the
        checksum, that its values and label are the ones saved: values scaled by a stray
        edit or a bad sector were used as they were, and the answers drifted from
        ``--no-cache`` for good (a state moves forward from its own values)."""
        if d is None:
            return None
        try:
            if d["sum"] != _checksum(symbol, d):
                return None
            values = tuple(float.fromhex(v) for v in d["values"])
            state = cls(anchor=d["anchor"], first_ms=d["first"], prefix=d["prefix"],
                        values=values, prior=d["prior"])
            ok = (type(state.anchor) is int and state.anchor > 0
                  and type(state.first_ms) is int and isinstance(state.prefix, str)
                  and len(values) == len(SMOOTHERS)
                  and all(math.isfinite(v) for v in values)
                  and state.prior in (None, *(r.value for r in Regime)))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            return None
        return state if ok else None


def _checksum(symbol: str, obj: Any) -> str:
    """A digest of a state entry's fields and its symbol's name, as saved."""
    return digest("carry-state", symbol, json.dumps(
        [obj["anchor"], obj["first"], obj["prefix"], obj["values"], obj["prior"]]))


# A scope's states are spread over this many files (a symbol's: a digest of the settings and
# its name), each a JSON object of states by symbol. One file per symbol was 10,000 files
# at 10,000 symbols: creating them was a quarter of a first run (5.8 s of 22 s) and reading
# them 0.7 s of a next candle's; a 2-symbol run still reads two small files at most.
_SHARDS = 64
# What one file keeps: a state not saved for this long is dropped (a series' anchor moves
# every ``block`` candles, 20 days at the largest interval), and at most this many states,
# the longest unsaved first, so symbols no list names any more do not pile up.
_KEEP_SECONDS = 60 * 86_400
_MAX_PER_FILE = 4_096


class CarryStore:
    """The states of one data scope and settings, in ``_SHARDS`` files under ``directory``.
    Reading and writing never fail a run: a state that cannot be read is a miss, one that
    cannot be written is computed again next time. ``save`` holds a state until ``flush``,
    which merges the held states into each file as it is on disk then (runs of other
    symbol lists sharing a file keep theirs). Two runs writing one file at the same moment
    may lose one's newer states: that costs the rows since the older anchor, never an
    answer (every state is checked against the data before use)."""

    def __init__(self, directory: Path, config: Config) -> None:
        self.dir = directory
        self.prefix = digest("carry", str(_FORMAT), stage_tag("carry"),
                             settings_json(config.features, config.regime),
                             config.data.source, config.data.interval, pl.__version__,
                             np.__version__)
        self._read: dict[int, dict[str, Any]] = {}
        self._held: dict[int, dict[str, CarryState]] = {}
        self._holding = False

    def _shard(self, symbol: str) -> int:
        return int(digest(self.prefix, symbol)[:8], 16) % _SHARDS

    def _path(self, symbol: str) -> Path:
        """The file that holds ``symbol``'s state."""
        return self._file(self._shard(symbol))

    def _file(self, k: int) -> Path:
        return self.dir / f"{self.prefix[:32]}.{k:02d}.json"

    def _entries(self, k: int) -> dict[str, Any]:
        if k not in self._read:
            self._read[k] = _read_entries(self._file(k))
        return self._read[k]

    def load(self, symbol: str) -> CarryState | None:
        k = self._shard(symbol)
        held = self._held.get(k, {}).get(symbol)
        if held is not None:
            return held
        return CarryState.from_obj(self._entries(k).get(symbol), symbol)

    def save(self, symbol: str, state: CarryState) -> None:
        self._held.setdefault(self._shard(symbol), {})[symbol] = state

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Within it, ``flush`` writes nothing; the states are written once at its end."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self.flush()

    def flush(self, clock: Callable[[], float] = time.time) -> None:
        """Write the held states (see the class)."""
        if self._holding:
            return
        held, self._held = self._held, {}
        if held:
            _drop_old_files(self.dir)
        now = float(clock())
        for k, states in sorted(held.items()):
            path = self._file(k)
            entries = _read_entries(path)
            for sym, st in states.items():
                entries[sym] = {**st.to_obj(sym), "at": now}
            # an entry without a finite save time (damaged) is dropped too: an infinite one
            # would never age out
            kept = sorted(((e["at"], sym) for sym, e in entries.items()
                           if isinstance(e, dict) and isinstance(e.get("at"), float)
                           and math.isfinite(e["at"]) and e["at"] > now - _KEEP_SECONDS),
                          reverse=True)
            entries = {sym: entries[sym] for _, sym in kept[:_MAX_PER_FILE]}
            try:
                with atomic_writer(path, fsync=False) as fh:
                    fh.write(json.dumps({"f": _FORMAT, "states": entries},
                                        separators=(",", ":")).encode())
            except OSError:
                continue  # a full or read-only disk: the next run starts from the first row
            self._read[k] = entries


def _drop_old_files(directory: Path) -> None:
    """Remove the files nothing will read: the first format's (a file per symbol, 32 hex
    digits then .json; 10,000 files at 10,000 symbols), and state files unwritten for
    ``_KEEP_SECONDS`` (other settings', whose states would all be dropped as too old)."""
    cutoff = time.time() - _KEEP_SECONDS  # file times are the wall clock's
    try:
        with os.scandir(directory) as entries:
            old = [e.path for e in entries if _hex(e.name[:32]) and (
                e.name[32:] == ".json" or (_STATE_NAME.fullmatch(e.name[32:]) is not None
                                           and e.stat().st_mtime < cutoff))]
        for path in old:
            os.unlink(path)
    except OSError:
        pass  # another run removed them first, or the directory is not there yet


def _hex(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


_STATE_NAME = re.compile(r"\.[0-9]{2}\.json")


def _read_entries(path: Path) -> dict[str, Any]:
    """A file's states by symbol, unchecked (each is checked as it is loaded); {} for a file
    that is absent or is not one."""
    try:
        d = json_loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(d, dict) or d.get("f") != _FORMAT or not isinstance(d.get("states"),
                                                                           dict):
        return {}
    states: dict[str, Any] = d["states"]
    return states


def block(config: Config) -> int:
    """Anchors are multiples of this: every rolling window's length."""
    fc = config.features
    return math.lcm(fc.bb_period, fc.volume_z_period, fc.vol_period)


def _back(config: Config) -> int:
    """How far before a series' end the anchor must stay so that every value the last row
    and its regime read is exact: the volatility lookback's rows each need a full window
    after the slice's first row (whose log return does not exist in the slice)."""
    fc = config.features
    return max(config.regime.vol_lookback + fc.vol_period, fc.bb_period, fc.volume_z_period)


def _seeded(config: Config) -> int:
    """The first row at which every recursion is past its seed row."""
    fc = config.features
    return max(fc.ema_fast - 1, fc.ema_slow - 1, fc.rsi_period, fc.atr_period,
               2 * fc.adx_period - 1)


def next_anchor(config: Config, rows: int) -> int | None:
    """The anchor a series of ``rows`` rows is saved at (None: too short to carry)."""
    b = block(config)
    anchor = (rows - _back(config)) // b * b
    return anchor if anchor >= max(_seeded(config) + 1, 1) else None


def row_hashes(candles: pl.DataFrame) -> np.ndarray:
    return candles.select("open_time", "open", "high", "low", "close", "volume") \
        .hash_rows(seed=0).to_numpy()


def _prefix(hashes: np.ndarray) -> str:
    return hashlib.blake2b(hashes.tobytes(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Carried:
    """What a carried computation gives: each symbol's last row with every feature column
    (``last``, the symbols in the order asked), its regime, and how many rows were
    computed (for the benchmarks; never part of an answer)."""

    last: pl.DataFrame
    regimes: dict[str, str]
    rows_computed: int


def features_and_regimes(config: Config, candles: pl.DataFrame, syms: Sequence[str],
                         store: CarryStore | None) -> Carried:
    """Each symbol's last feature row and regime over its whole series (``candles``: one
    run per symbol in ``syms`` order, from the series' first row), computing only the rows
    after each symbol's valid carried state, and saving the states moved forward.
    ``store`` None computes every series from its first row and saves nothing."""
    from ._features import _by_symbol

    wanted = list(syms)
    candles, lens = _by_symbol(candles)  # one run per symbol (load_candles' layout already)
    syms = candles.get_column("symbol").rle().struct.field("value").to_list()
    if sorted(syms) != sorted(wanted):
        raise ValueError("carried features: the symbols asked are not the frame's")
    starts = np.cumsum(lens) - lens
    hashes = row_hashes(candles) if store is not None else None
    first_ms = candles.get_column("open_time").dt.epoch("ms").to_numpy()[starts] \
        if len(syms) else np.zeros(0, dtype=np.int64)
    states: list[CarryState | None] = []
    for j, sym in enumerate(syms):
        st = store.load(sym) if store is not None else None
        if st is not None:
            n = int(lens[j])
            a = int(starts[j])
            assert hashes is not None
            if not (st.first_ms == int(first_ms[j]) and st.anchor <= n - _back(config)
                    and st.anchor % block(config) == 0
                    and _prefix(hashes[a:a + st.anchor + 1]) == st.prefix):
                st = None
        states.append(st)
    # Slice start per symbol: its anchor, or its first row.
    from_row = np.asarray([0 if s is None else s.anchor for s in states], dtype=np.int64)
    out_last: list[pl.DataFrame] = []
    regimes: dict[str, str] = {}
    computed = 0
    order: list[str] = []
    work = int((lens - from_row).sum())
    for resumed in (False, True):
        idx = [j for j, s in enumerate(states) if (s is not None) == resumed]
        if not idx:
            continue
        # In stretches of about _STRETCH rows: every value is per symbol (features, the
        # regime, the anchors), so the same bits, and the run's peak memory holds one
        # stretch's slices and feature columns, not every symbol's (about 0.4 GB of them
        # at 10,000 symbols x 330 rows).
        rows = np.cumsum(lens[idx] - from_row[idx])
        cut = np.searchsorted(rows, np.arange(_STRETCH, int(rows[-1]), _STRETCH), "right")
        for part_idx in np.split(np.asarray(idx), np.unique(np.clip(cut, 1, len(idx) - 1))):
            if not part_idx.size:
                continue
            part = _compute(config, candles, syms, part_idx.tolist(), starts, lens,
                            from_row, states, hashes, first_ms, store, work)
            out_last.append(part[0])
            regimes.update(part[1])
            computed += part[2]
        order += [syms[j] for j in idx]
    if store is not None:
        store.flush()
    last = pl.concat(out_last) if out_last else _empty_last(config, candles)
    if order != wanted:
        last = last.join(pl.DataFrame({"symbol": wanted}).with_row_index("_i"),
                         on="symbol").sort("_i").drop("_i")
    return Carried(last=last, regimes=regimes, rows_computed=computed)


def _empty_last(config: Config, candles: pl.DataFrame) -> pl.DataFrame:
    return candles.clear().with_columns(pl.lit(None, dtype=pl.Float64).alias(c)
                                        for c in feature_columns(config.features))


def _compute(config: Config, candles: pl.DataFrame, syms: Sequence[str], idx: list[int],
             starts: np.ndarray, lens: np.ndarray, from_row: np.ndarray,
             states: list[CarryState | None], hashes: np.ndarray | None,
             first_ms: np.ndarray, store: CarryStore | None, work: int
             ) -> tuple[pl.DataFrame, dict[str, str], int]:
    """One stretch of ``features_and_regimes``; ``work``: the rows of the whole run (for
    ``kernel_for``)."""
    fc = config.features
    js = np.asarray(idx, dtype=np.int64)
    a = starts[js] + from_row[js]
    n = lens[js] - from_row[js]
    if len(idx) == len(syms) and not from_row[js].any():
        frame = candles
    elif bool(np.all(a[1:] == a[:-1] + n[:-1])):
        # one run of rows (a first run's stretch of whole series): a view, not a copy of
        # every column (0.9 s over 10,000 symbols)
        frame = candles.slice(int(a[0]), int(n.sum()))
    else:
        frame = candles[np.repeat(a - np.cumsum(n) + n, n) + np.arange(int(n.sum()))]
    anchors = [next_anchor(config, int(lens[j])) for j in idx]
    # where the new anchor falls in each slice (0 when there is none: captured, unused)
    capture = np.asarray([0 if s is None else s - int(from_row[j])
                          for s, j in zip(anchors, idx, strict=True)], dtype=np.int64)
    resume = None
    if states[idx[0]] is not None:
        resume = np.asarray([states[j].values for j in idx], dtype=np.float64).T  # type: ignore[union-attr]
    inputs = regime_inputs(fc)
    out, last = _columns(frame, n, fc, inputs, resume, capture, work=work)
    carry = last.pop("_carry")
    whole = _with_nulls(frame.select("symbol"), out, inputs)
    prior = {syms[j]: (None if states[j] is None else states[j].prior) for j in idx}  # type: ignore[union-attr]
    regimes = detect_regime(whole, config.regime, fc, prior=prior)
    ends = np.cumsum(n)
    tail = _with_nulls(frame.gather(ends - 1), last, list(last))
    if store is not None:
        assert hashes is not None
        labels: _Labels | None = None  # read only when some anchor moves
        for k, j in enumerate(idx):
            new = anchors[k]
            st = states[j]
            if new is None or (st is not None and st.anchor == new):
                continue
            values = tuple(float(v) for v in carry[:, k])
            if not all(math.isfinite(v) for v in values):
                continue  # NaN in the data: no state, the series is computed whole
            lo = int(ends[k] - n[k])
            if labels is None:
                labels = _Labels(config, whole)
            found = labels.last_before(lo, lo + int(capture[k]))
            prior_new = found if found is not None else (None if st is None else st.prior)
            a0 = int(starts[j])
            store.save(syms[j], CarryState(
                anchor=new, first_ms=int(first_ms[j]),
                prefix=_prefix(hashes[a0:a0 + new + 1]), values=values, prior=prior_new))
    return tail, regimes, int(n.sum())


class _Labels:
    """Each row's own decisive trend/range label (``_regime``'s rule), asked for the last
    one in a range of rows: where the hysteresis stands at an anchor."""

    def __init__(self, config: Config, whole: pl.DataFrame) -> None:
        from ._regime import _decisive

        self.labels = whole.select(_decisive(config.regime, config.features)).to_series()
        self.at = np.flatnonzero(self.labels.is_not_null().to_numpy())

    def last_before(self, lo: int, hi: int) -> str | None:
        """The last decisive label in rows [lo, hi), or None."""
        k = int(np.searchsorted(self.at, hi)) - 1
        if k < 0 or self.at[k] < lo:
            return None
        found: str = self.labels[int(self.at[k])]
        return found



@dataclass
class SeriesPass:
    """A replay's walk along whole series, a stretch at a time, with each symbol's state
    carried in memory between stretches: the same state and slices as a cron line's runs
    (``features_and_regimes``), so memory holds a stretch, not the history, and each row's
    values are the whole series' (bit for bit)."""

    config: Config
    candles: pl.DataFrame  # canonical, one run per symbol, ascending
    starts: np.ndarray
    lens: np.ndarray
    states: list[CarryState | None]

    @classmethod
    def of(cls, config: Config, candles: pl.DataFrame) -> SeriesPass:
        lens = candles.get_column("symbol").rle().struct.field("len").to_numpy() \
            .astype(np.int64)
        return cls(config, candles, np.cumsum(lens) - lens, lens, [None] * len(lens))

    def stretch(self, upto: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
        """Every feature column and ``regime`` for each symbol's rows from its carried
        anchor (or its first row) to ``upto[j]`` (a row count; 0: nothing), and the frame
        row of each symbol's row 0 (rows before its slice are not in the frame: a caller
        asks only for rows at least ``_back`` after the previous stretch's end). The
        states then move to an anchor within reach of the next stretch."""
        from ._regime import regime_expr

        fc = self.config.features
        names = feature_columns(fc)
        js_all = [j for j in range(len(self.lens)) if upto[j] > 0]
        frames: list[pl.DataFrame] = []
        offset = np.zeros(len(self.lens), dtype=np.int64)
        at = 0
        # the groups before any state moves: a symbol is computed once per stretch
        groups = [[j for j in js_all if self.states[j] is None],
                  [j for j in js_all if self.states[j] is not None]]
        for resumed, js in zip((False, True), groups, strict=True):
            if not js:
                continue
            ja = np.asarray(js, dtype=np.int64)
            first = np.asarray([0 if self.states[j] is None else self.states[j].anchor  # type: ignore[union-attr]
                                for j in js], dtype=np.int64)
            n = upto[ja] - first
            rows = np.repeat(self.starts[ja] + first - np.cumsum(n) + n, n) \
                + np.arange(int(n.sum()))
            frame = self.candles[rows]
            anchors = [next_anchor(self.config, int(upto[j]) - 1) for j in js]
            capture = np.asarray([0 if a is None else max(0, a - int(f))
                                  for a, f in zip(anchors, first.tolist(), strict=True)],
                                 dtype=np.int64)
            resume = None if not resumed else np.asarray(
                [self.states[j].values for j in js], dtype=np.float64).T  # type: ignore[union-attr]
            out, last = _columns(frame, n, fc, names, resume, capture)
            carry = last.pop("_carry")
            prior = {str(j): (None if self.states[j] is None else self.states[j].prior)  # type: ignore[union-attr]
                     for j in js}
            part = _with_nulls(frame.with_columns(
                pl.Series("symbol", [str(j) for j in js]).gather(
                    np.repeat(np.arange(len(js)), n))), out, names)
            part = part.with_columns(regime_expr(self.config.regime, fc, prior)
                                     .alias("regime"))
            labels = _Labels(self.config, part)
            lo = np.cumsum(n) - n
            for k, j in enumerate(js):
                offset[j] = at + int(lo[k]) - int(first[k])
                new, st = anchors[k], self.states[j]
                if new is None or new < int(first[k]) or (st is not None and
                                                           st.anchor == new):
                    continue
                values = tuple(float(v) for v in carry[:, k])
                if not all(math.isfinite(v) for v in values):
                    self.states[j] = None  # NaN in the data: from the first row again
                    continue
                found = labels.last_before(int(lo[k]), int(lo[k]) + int(capture[k]))
                self.states[j] = CarryState(
                    anchor=new, first_ms=0, prefix="", values=values,
                    prior=found if found is not None else (None if st is None
                                                           else st.prior))
            at += part.height
            frames.append(part)
        whole = pl.concat(frames) if frames else pl.DataFrame()
        return whole, offset
