"""``botopt signals``: candles -> features -> regime -> engines -> model -> gates.

All symbols go through every stage together, and each stage's result is cached under a key
made of what it depends on:

=============  ==============================================================  ============
cache          key                                                              value
=============  ==============================================================  ============
features       symbol's candle fingerprint, feature settings, code hash         last row
regime         candle fingerprint, feature + regime settings, code hash         label
predictions    model version, the symbol's last feature row (content hash),     P(up)
               code hash
gates          every gate input, relevant cooldown records, correlations,       decisions
               code hash
signals        data scope, file contents, as-of candle slot, symbols, all       the result
               settings, cooldown state, code hash
=============  ==============================================================  ============

Each key's recipe lives beside its stage (``features_keys``, ``regime_keys``,
``prediction_keys``, ``gates_key``); this module owns only the whole-run key. A stage's code
hash (``botopt.core.base._versions.stage_tag``) covers the source of the modules that stage
runs, and nothing else: one scheme for every stage. The answer's types are in ``_results``,
and what a live run records (cooldowns, regime history, notifications, events) is in
``_effects``.

Everything downstream of the features reads only each symbol's last row, so that row is what
the features cache keeps (a few hundred bytes of JSON instead of a frame of the whole
history; docs/performance.md has the sizes).
Cached and uncached runs both rebuild the rows from that same form, so they agree exactly.

The ``signals`` entry lets a warm cron run answer without importing polars or numpy: its key
is computed from the raw bytes of the candle files and the candle slot the as-of time falls
in, which determine the closed candles exactly. Every entry lives for its candle slot plus a
grace (``botopt.core.base._config.effective_lives``), and a run's writes are one transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base._codec import json_loads, settings_json
from ..base._config import Config, candle_age, candle_ages, max_staleness, warmup_candles
from ..base._frozen import quick_init
from ..base._fs import atomic_writer
from ..base._versions import stage_tag
from ..base._vocab import DataStatus, Direction
from ..data._candles import (
    files_dir,
    find_candle_files,
    load_candles,
    parse_symbols,
    sample_clock,
)
from ..errors import BotoptError, CacheError, StaleDataError, format_age
from ..state._cache import MISS, time_ordered
from ..state._workspace import Workspace, data_scope
from . import _effects
from ._gates import (
    GateDecision,
    GateInput,
    evaluate_gates,
    gates_key,
)
from ._results import SignalsResult, SymbolResult

if TYPE_CHECKING:
    import polars as pl

    from ..state._cache import CacheManager
    from ..state._cooldowns import CooldownRecord, Cooldowns
    from ._carry import CarryStore
    from ._engines import Signal
    from ._model import Predictor

log = logging.getLogger("botopt.pipeline")


# -- fingerprints that need neither polars nor numpy ------------------------------------------

def _file_digest(path: Path) -> str:
    # sha256 runs on the CPU's SHA instructions where there are some: a quarter faster
    # than blake2b over 2,000 candle files (115 MB) on the machine of docs/performance.md.
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def _source_digest(spec: Any) -> str:
    """The digest of a plug-in module's source file. A module without one (built-in, frozen,
    a source that cannot be read) is keyed by the Python version it ships with: only an
    upgrade changes it, and a broken plug-in then fails in the computation, with the same
    clean error as ``--no-cache``."""
    import sys

    origin = spec.origin if spec is not None and spec.has_location else None
    if origin:
        try:
            return _file_digest(Path(origin))
        except OSError:
            pass
    return f"nosrc-{sys.version.split()[0]}"


def _model_digest(config: Config) -> str:
    mc = config.model
    if mc.predict:
        import importlib.util

        try:
            spec = importlib.util.find_spec(mc.predict.partition(":")[0])
        except (ImportError, ValueError):
            # Unimportable: no run key can hold an answer for it, and the computation then
            # gives the same clean ModelError as --no-cache does.
            spec = None
        return f"{mc.predict}:{_source_digest(spec)}"
    if mc.path is not None:
        return _file_digest(Path(mc.path)) if Path(mc.path).is_file() else "missing"
    from importlib.resources import files

    return hashlib.blake2b(files("botopt.core").joinpath("default_model.json").read_bytes(),
                           digest_size=16).hexdigest()


# A file changed less than this long ago may change again within the same timestamp tick.
_SETTLED_NS = 2_000_000_000


def _file_digests(paths: Sequence[Path], memo: Path | None,
                  seen: list[tuple[Path, list[int]]] | None = None) -> list[str]:
    """Content digests of ``paths``, reading only the files that changed.

    ``memo`` (a JSON file in the workspace) keeps, per file, the digest with the file's
    (inode, size, mtime, ctime) when it was read; the same four now mean the same bytes, so
    the file is not read again (a warm run at 2,000 symbols read and hashed 115 MB). As git
    trusts its index: only for a file that had settled when it was read (its last change
    more than 2 s before), since a write within the same clock tick could leave the times
    unchanged. ctime catches a copy that restores an old mtime (cp -p, rsync -t): no tool
    can set it. A memo that cannot be read or written costs the reads, never the answer."""
    known: Any = {}
    if memo is not None:
        try:
            known = json_loads(memo.read_bytes())
        except (OSError, ValueError):
            known = {}
    if not isinstance(known, dict):
        known = {}
    now = time.time_ns()
    # Other cron lines' files stay remembered: two lines with different symbols would
    # otherwise evict each other's entries and re-read everything every run.
    kept = dict(known)
    out = []
    for path in paths:
        st = os.stat(path)
        sig = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        if seen is not None:
            seen.append((path, sig))
        rec = known.get(str(path))
        if isinstance(rec, list) and len(rec) == 2 and rec[0] == sig and \
                isinstance(rec[1], str):
            digest = rec[1]
        else:
            digest = _file_digest(path)
        out.append(digest)
        if now - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
            kept[str(path)] = [sig, digest]
        else:
            kept.pop(str(path), None)
    if memo is not None and kept != known:
        try:
            with atomic_writer(memo, fsync=False) as fh:
                fh.write(json.dumps(kept).encode())
        except OSError:
            pass  # the next run reads the files again
    return out


def _run_key(config: Config, symbols: Sequence[str], as_of: datetime,
             cooldown_digest: str, memo: Path | None = None,
             seen: list[tuple[Path, list[int]]] | None = None) -> str | None:
    """Key of a whole run, or None when the inputs cannot be fingerprinted cheaply.
    ``seen`` receives each candle file's (inode, size, mtime, ctime) as its digest was
    taken (``unchanged_since``)."""
    data_dir = files_dir(config)
    if data_dir is None:
        return None  # Binance: the data only exists after a network round trip
    step = config.data.interval.ms
    slot = int(as_of.timestamp() * 1000) // step
    files = _file_digests(find_candle_files(data_dir, symbols, config.data.interval),
                          memo, seen)
    parts = [stage_tag("signals"), data_scope(config), list(symbols), files, slot,
             config.data.interval, config.data.source,
             settings_json(config.features, config.regime, config.gates, config.correlation,
                           config.model),
             _model_digest(config), cooldown_digest]
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=20).hexdigest()


def unchanged_since(seen: Sequence[tuple[Path, list[int]]]) -> bool:
    """Whether every file of ``seen`` is as it was when its digest was taken. A run's key is
    made from the files' digests before the candles are read: a file replaced in between
    (a download landing) gave its new answer under the old bytes' key, served again when
    the old bytes came back. Any write moves a file's ctime (no tool can set it back), so
    this catches a change and a change undone alike; the run's answer is then not kept."""
    for path, sig in seen:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] != sig:
            return False
    return True


# -- the stages -------------------------------------------------------------------------------

def candle_fingerprints(candles: pl.DataFrame, interval: str) -> dict[str, str]:
    """Per symbol: interval, last closed candle time, row count and a hash of the rows;
    led by the last candle's open time in minutes (8 hex digits, ``time_ordered``)."""
    import numpy as np
    import polars as pl

    rows = candles.select("open_time", "open", "high", "low", "close", "volume") \
        .hash_rows(seed=0).to_numpy()
    runs = candles.get_column("symbol").rle()
    if runs.len() != candles.get_column("symbol").n_unique():  # interleaved: by group
        hashes = candles.with_columns(_h=pl.Series(rows))
        groups = [(str(k[0]), g["_h"].to_numpy(), g["open_time"][-1]) for k, g in
                  hashes.group_by("symbol", maintain_order=True)]
    else:  # one run per symbol (load_candles' order): slices, no group frames
        ends = np.cumsum(runs.struct.field("len").to_numpy().astype(np.int64))
        lasts = candles.get_column("open_time").gather(ends - 1).to_list()
        groups = [(str(sym), rows[a:b], t) for sym, a, b, t in zip(
            runs.struct.field("value").to_list(), [0, *ends[:-1].tolist()], ends.tolist(),
            lasts, strict=True)]
    out: dict[str, str] = {}
    for sym, hs, last in groups:
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{sym}|{interval}|{last}|{len(hs)}|{pl.__version__}".encode())
        h.update(hs.tobytes())
        out[sym] = time_ordered(int(last.timestamp()), h.hexdigest())
    return out


def _row_values(frame: pl.DataFrame, wanted: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each wanted symbol's last row of a feature frame, in the form the features cache
    keeps: one selection for all symbols (a one-row frame per symbol cost 0.7 ms each)."""
    import numpy as np
    import polars as pl

    cols = [c for c in frame.columns if c not in ("symbol", "open_time")]
    runs = frame.get_column("symbol").rle()
    if runs.len() == frame.get_column("symbol").n_unique():  # one run per symbol
        last = frame.gather(np.cumsum(runs.struct.field("len").to_numpy()
                                      .astype(np.int64)) - 1)
    else:
        last = frame.group_by("symbol", maintain_order=True).tail(1)
    last = last.filter(pl.col("symbol").is_in(list(wanted)))
    c = ",".join(cols)
    return {row[0]: {"c": c, "t": row[1], "v": list(row[2:])} for row in last.select(
        "symbol", pl.col("open_time").dt.epoch("ms"),
        *(pl.col(x).cast(pl.Float64) for x in cols)).iter_rows()}


def _rows_frame(values: Mapping[str, Mapping[str, Any]], syms: list[str]) -> pl.DataFrame:
    """Every symbol's last feature row, rebuilt from the cached form as one frame in the
    order of ``syms`` (every feature column is Float64)."""
    import polars as pl

    names = values[syms[0]]["c"] if syms else ""
    if any(values[s]["c"] != names for s in syms):
        raise ValueError("feature rows of different columns in one run")
    cols = names.split(",") if names else []
    vs = [values[s]["v"] for s in syms]
    schema = {"symbol": pl.String, "open_time": pl.Int64, **{c: pl.Float64 for c in cols}}
    return pl.DataFrame({"symbol": syms, "open_time": [values[s]["t"] for s in syms],
                         **{c: [v[j] for v in vs] for j, c in enumerate(cols)}},
                        schema=schema) \
        .with_columns(pl.col("open_time").cast(pl.Datetime("ms", "UTC")))


@dataclass
class _Stages:
    """What each stage computed (benchmarks count these; the answer never depends on it)."""

    features: int = 0
    regime: int = 0
    predictions: int = 0
    gates: int = 0


# How far an ``--as-of`` may be from the wall clock, across a candle close, and still speak
# for the present (a cron line that pins the time a moment before running).
LIVE_GRACE = timedelta(minutes=5)


def is_live(config: Config, as_of: datetime | None) -> bool:
    """Whether a run speaks for the present: only live runs record cooldowns and queue
    notifications. Sample data is never live, nor is a replay: an ``as_of`` in another
    candle slot than the wall clock's (it answers from another candle than the newest
    closed one), unless it is within ``LIVE_GRACE`` (and one interval) of the clock, as a
    cron line's pinned time taken just before a close is. One whole interval of grace made
    a daily run ``--as-of`` yesterday live: it queued the signals of a superseded candle
    (sweep G)."""
    if config.data.source == "sample":
        return False
    if as_of is None:
        return True
    step = config.data.interval.delta
    now = datetime.now(timezone.utc)
    if abs(as_of - now) <= min(step, LIVE_GRACE):
        return True
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (as_of - epoch) // step == (now - epoch) // step


def run_signals(config: Config, symbols: Sequence[str], *, as_of: datetime | None = None,
                use_cache: bool = True, notify: bool | None = None,
                workspace: Workspace | None = None) -> SignalsResult:
    """Compute ranked, gated signals for ``symbols`` at ``as_of`` (default: now; for the
    bundled sample data, the end of that data).

    ``notify``: record cooldowns and queue notifications for the passed signals. The default
    (None) does so for live runs only (``is_live``): experiments compute the same answer and
    leave no trace. Raises StaleDataError when every symbol's data is stale.

    State (cache, cooldowns, regime history, correlation, queue, events) comes from
    ``workspace`` (default: the Config's). ``use_cache=False`` computes every stage (the
    same answer).
    """
    return _run_signals(config, symbols, as_of=as_of, use_cache=use_cache, notify=notify,
                        workspace=workspace)


def _run_signals(config: Config, symbols: Sequence[str], *, as_of: datetime | None = None,
                 use_cache: bool = True, notify: bool | None = None,
                 workspace: Workspace | None = None, manager: CacheManager | None = None,
                 batch: bool = True, stages: _Stages | None = None) -> SignalsResult:
    """``run_signals`` with the switches tests and benchmarks need: ``manager`` replaces the
    workspace's cache (an injected clock), ``batch=False`` runs features, regime, engines and
    model one symbol at a time (the reference path; same answer, slower), and ``stages``
    counts the computations each stage did."""
    syms = parse_symbols(symbols)
    if as_of is not None:
        now, clock = as_of, "as-of"
    elif config.data.source == "sample":
        now, clock = sample_clock(), "sample"
    else:
        now, clock = datetime.now(timezone.utc), "now"
    record = notify if notify is not None else is_live(config, as_of)
    ws = workspace or Workspace.of(config)
    mgr = manager or ws.cache
    if not use_cache:
        mgr = mgr.disabled()
    with mgr.batch():  # one write transaction for the run's entries and statistics
        result = _run(config, ws, syms, now, mgr, batch, record,
                      stages if stages is not None else _Stages())
    result = dataclasses.replace(result, clock=clock, recorded=record)
    stale = {r.symbol: r.age_seconds or 0.0 for r in result.symbols
             if r.data_status == DataStatus.STALE}
    if stale and len(stale) == len(result.symbols):
        from ..base._config import effective_feeder

        raise StaleDataError(stale, max_staleness(config), effective_feeder(config.data))
    return result


# -- data checks that come before any gate ---------------------------------------------------

def _stale_symbols(config: Config, last: Mapping[str, datetime], now: datetime) -> set[str]:
    limit = max_staleness(config)
    return {s for s, age in candle_ages(config, last, now).items() if age > limit}


_STALE = "stale data"  # placeholder in the cached answer; _apply_clock says how old


def _apply_clock(config: Config, result: SignalsResult, now: datetime) -> SignalsResult:
    """Ages and stale reasons follow the clock of this run, cached answer or not."""
    rows = []
    for r in result.symbols:
        age = candle_age(config, r.candle_time, now)
        reasons = r.gate_reasons
        if r.data_status == DataStatus.STALE:
            reasons = stale_reasons(reasons, age)
        rows.append(dataclasses.replace(r, age_seconds=age, gate_reasons=reasons))
    return dataclasses.replace(result, as_of=now, symbols=rows)


def stale_reasons(reasons: tuple[str, ...], age: float) -> tuple[str, ...]:
    """A stale symbol's reasons with the clock applied (its age in place of ``_STALE``)."""
    return (f"stale data: last candle {format_age(age)} ago",) + tuple(
        x for x in reasons if x != _STALE)


def _warming(config: Config, candles: pl.DataFrame) -> dict[str, tuple[DataStatus, str]]:
    """{symbol: (WARMING_UP, reason)} for symbols with fewer candles than the indicators
    need (staleness, the other data block, depends on the clock: ``decide`` sees it)."""
    import polars as pl

    need = warmup_candles(config.features, config.regime)
    runs = candles.get_column("symbol").rle()
    if runs.len() == candles.get_column("symbol").n_unique():
        # One run per symbol (load_candles' layout): no group table over 2 million keys
        # (100 MB at 2,000 symbols, the run's peak).
        per = pl.DataFrame({"symbol": runs.struct.field("value"),
                            "n": runs.struct.field("len")})
    else:
        per = candles.group_by("symbol", maintain_order=True).agg(pl.len().alias("n"))
    return {s: (DataStatus.WARMING_UP, f"warming up: {n} of {need} candles")
            for s, n in zip(per["symbol"].to_list(), per["n"].to_list(), strict=True)
            if n < need}


# -- the run ----------------------------------------------------------------------------------

def _run(config: Config, ws: Workspace, syms: list[str], now: datetime,
         manager: CacheManager, batch: bool, record: bool,
         stages: _Stages) -> SignalsResult:
    cooldowns = ws.cooldowns(config)
    memo = _digest_memo(ws) if manager.enabled else None
    seen: list[tuple[Path, list[int]]] = []
    run_key = _run_key(config, syms, now, cooldowns.digest(), memo, seen) \
        if manager.enabled else None
    start = time.perf_counter()
    result = _cached_run(config, manager, run_key, now)
    if result is None:
        result = _compute(config, ws, syms, now, manager, batch, cooldowns, stages)
        if run_key is not None and not unchanged_since(seen):
            run_key = None  # read from other bytes than the key's: not kept under it
        if run_key is not None:
            manager.set("signals", run_key, result.to_dict(), time.perf_counter() - start)
        result = _apply_clock(config, result, now)
    if record:
        # Also after a hit: an experiment (which records nothing) may have stored this
        # answer, and recording is idempotent (a cooldown record is added once).
        result = _effects.record(config, ws, result, cooldowns)
        if run_key is not None:
            # Recording changed the cooldown state; the next run on this candle still gets
            # this answer (a record for the current candle never blocks it), so store it
            # under the new state too and let that run skip all the work.
            after = _run_key(config, syms, now, cooldowns.digest(), memo)
            if after is not None and after != run_key:
                manager.set("signals", after, result.to_dict(), time.perf_counter() - start)
    return result


def _digest_memo(ws: Workspace) -> Path | None:
    """Where the candle files' digests are remembered, or None (no usable workspace)."""
    try:
        return ws.dir("digests") / "candle-files.json"
    except (OSError, BotoptError):  # unusable or untrusted: no memo, every file read
        return None


def _cached_run(config: Config, manager: CacheManager, run_key: str | None,
                now: datetime) -> SignalsResult | None:
    """The whole-run entry for this key, brought to this run's clock, or None."""
    if run_key is None:
        return None
    hit = manager.get("signals", run_key)
    if hit is not MISS:
        cached = SignalsResult.from_dict(hit)
        # The entry holds for its candle slot, but a symbol may turn stale inside it.
        last = {r.symbol: r.candle_time for r in cached.symbols}
        if _stale_symbols(config, last, now) == {
                r.symbol for r in cached.symbols if r.data_status == DataStatus.STALE}:
            manager.count("signals", hits=1)
            return dataclasses.replace(_apply_clock(config, cached, now), from_cache=True)
    manager.count("signals", misses=1)
    return None


def _compute(config: Config, ws: Workspace, syms: list[str], now: datetime,
             manager: CacheManager, batch: bool, cooldowns: Cooldowns, stages: _Stages
             ) -> SignalsResult:
    from ._model import load_model

    # The model first: one that cannot serve these settings fails before the work.
    model = load_model(config.model, config.features)
    limit = history_limit(config)
    parts = ((group, load_candles(group, config=config, as_of=now, limit=limit))
             for group in _groups(config, syms))
    carry = _carry_store(config, ws) if manager.enabled else None
    # The carried states written once, after every group: a group's symbols spread over
    # every file, so writing per group rewrote each file once a group (1.4 s at 10,000).
    with carry.holding() if carry is not None else nullcontext():
        return step(config, parts, now, model=model, manager=manager, batch=batch,
                    records=cooldowns.snapshot(),
                    correlate=lambda c, s: _correlation_for_gates(config, ws, c, s),
                    stages=stages, carry=carry)


# Candle file bytes loaded at once. A run holds one group's whole series (features, their
# fingerprints and the carried states' guards read every row), so its peak memory follows
# this, not the number of symbols: 10,000 symbols x 1,200 candles held at once was 1.5 GiB.
# Groups change no answer (``prepare`` is per symbol, bit for bit) and cost about a
# millisecond each.
GROUP_BYTES = 48 << 20


def _groups(config: Config, syms: list[str]) -> list[list[str]]:
    """``syms`` cut, in order, into groups of at most ``GROUP_BYTES`` of candle files (a
    file larger than that is a group of its own). One group where the files cannot be
    sized: Binance (its answers are ``features.history`` rows long), or a file that is not
    there, which ``load_candles`` then names."""
    data_dir = files_dir(config)
    if data_dir is None or len(syms) < 2:
        return [syms]
    try:
        sizes = [p.stat().st_size for p in
                 find_candle_files(data_dir, syms, config.data.interval)]
    except (BotoptError, OSError):
        return [syms]
    groups: list[list[str]] = [[]]
    held = 0
    for sym, size in zip(syms, sizes, strict=True):
        if groups[-1] and held + size > GROUP_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(sym)
        held += size
    return groups


def history_limit(config: Config) -> int | None:
    """The candles a run reads per symbol: the whole stored series (None) where the series
    has a fixed first row (files, the sample), so indicators are TA-Lib's over the file and
    a carried state can stand for the rows before the new ones; the last
    ``features.history`` for Binance, whose answers start wherever the request does."""
    return config.features.history if config.data.source == "binance" else None


def _carry_store(config: Config, ws: Workspace) -> CarryStore | None:
    """Where the carried per-symbol states live (derived data, beside the cache), or None:
    a source without a fixed first row, or no usable directory (then every series is
    computed from its first row, the same answer)."""
    if history_limit(config) is not None:
        return None
    from ._carry import CarryStore

    try:
        return CarryStore(ws.dir("carry", data_scope(config)), config)
    except (OSError, BotoptError):
        return None


Correlate = Callable[["pl.DataFrame", list[str]], "tuple[list[str], Any] | None"]


def step(config: Config, parts: Iterable[tuple[list[str], pl.DataFrame]], now: datetime, *,
         model: Predictor, manager: CacheManager, records: list[CooldownRecord],
         correlate: Correlate, batch: bool = True, stages: _Stages | None = None,
         carry: CarryStore | None = None) -> SignalsResult:
    """The state-carrying step: the signals at ``now`` from each symbol's closed candles up
    to it and the state carried from the previous step: the cooldown ``records`` and the
    rolling correlation (``correlate(recent, syms)`` brings it up to date from each
    symbol's last candles and returns the matrix).

    ``parts``: (symbols, their candles as ``load_candles`` gives them, at most
    ``features.history`` each) per group of symbols, taken one at a time, so a run over
    many symbols holds one group's history, not every symbol's (a lazy iterable loads each
    group when its turn comes). The answer is the same however the symbols are grouped.

    It is two halves: ``prepare`` (what each symbol's own candles decide: features, regime,
    engines, model; no state, so a replay runs it for many candles at once) and ``decide``
    (the gates, with the carried state). A cron run calls it once; ``botopt.core.backtest``
    calls the halves for every candle. It records nothing: what passed is the driver's to
    record."""
    import polars as pl

    from ._correlation import recent_rows

    stages = stages if stages is not None else _Stages()
    own: list[Own] = []
    recent: list[pl.DataFrame] = []
    for syms, candles in parts:
        own += prepare(config, candles, syms, model=model, manager=manager, batch=batch,
                       stages=stages, carry=carry)
        recent.append(recent_rows(candles, config.correlation.window))
        del candles  # before the next group loads
    held = recent[0] if len(recent) == 1 else pl.concat(recent, rechunk=False)
    del recent
    return decide(config, own, now, records=records,
                  correlate=lambda names: correlate(held, names), manager=manager,
                  stages=stages)


@quick_init
@dataclass(frozen=True)
class Own:
    """What a symbol's own candles decide at its newest candle, before any carried state:
    its best signal, regime, P(up), volume z-score, and the block its data puts on it
    (warming up or degenerate; staleness depends on the clock and is ``decide``'s)."""

    symbol: str
    candle_time: datetime
    close: float
    regime: str
    best: Signal | None
    p_up: float | None
    volume_z: float | None
    block: tuple[DataStatus, str] | None


def prepare(config: Config, candles: pl.DataFrame, syms: list[str], *, model: Predictor,
            manager: CacheManager, batch: bool = True, stages: _Stages | None = None,
            labels: Sequence[str] | None = None, carry: CarryStore | None = None
            ) -> list[Own]:
    """The stateless half of ``step``, one ``Own`` per symbol of ``syms`` (in that order).
    Each symbol's answer depends on its own rows only, bit for bit, however many symbols
    are computed together (tests/test_pipeline.py: batch == sequential). ``labels``: the
    symbol names the model is shown instead of ``syms`` (a replay's windows are named by
    row; a user's model plugin must see the pair's name, as in a live run)."""
    stages = stages if stages is not None else _Stages()
    blocks = _warming(config, candles)
    rows, regimes = _features_and_regimes(config, candles, syms, manager, batch, stages,
                                          carry)
    # One frame of every symbol's last row; the per-symbol reference path slices it.
    last = _rows_frame(rows, syms)
    return own_rows(config, last, [regimes[s] for s in syms], blocks, syms, model=model,
                    manager=manager, rows=rows, batch=batch, stages=stages, labels=labels)


def own_rows(config: Config, last: pl.DataFrame, regime_list: Sequence[str],
             blocks: dict[str, tuple[DataStatus, str]], syms: list[str], *,
             model: Predictor, manager: CacheManager, rows: Mapping[str, Any] | None = None,
             batch: bool = True, stages: _Stages | None = None,
             labels: Sequence[str] | None = None, named: bool = False) -> list[Own]:
    """``prepare``'s second half: engines and model over feature rows (``last``: one row
    per name of ``syms``, in order, with every feature column; ``regimes`` and the data
    ``blocks`` per name). A replay calls it with many candles' rows of one series at once.
    ``rows``: the rows' cached form, for the predictions' keys (needed with a cache).
    ``named``: each ``Own`` carries its label as its symbol (a replay's rows are many
    candles of one symbol; renaming them afterwards cost a copy each)."""
    import polars as pl

    from ._engines import GUARD, AlphaEngineCoordinator, best_signal

    stages = stages if stages is not None else _Stages()
    regimes = dict(zip(syms, regime_list, strict=True))
    times = _datetimes(last.get_column("open_time"))
    closes = last.get_column("close").to_list()
    vz = last.get_column(f"volume_z_{config.features.volume_z_period}").to_list()

    coord = AlphaEngineCoordinator(config.features)
    if batch:
        guards, best_list = coord.best_for_rows(last, list(regime_list))
        best = dict(zip(syms, best_list, strict=True))
        for s, why in zip(syms, guards, strict=True):
            if why is not None and s not in blocks:
                blocks[s] = (DataStatus.DEGENERATE, why)
    else:  # the reference path: every engine's signals, then the best of them
        signals = {s: coord.generate_all_signals(last.slice(i, 1), regimes[s])
                   for i, s in enumerate(syms)}
        best = {s: best_signal(signals[s]) for s in syms}
        for s in syms:
            guard = next((x for x in signals[s] if x.engine == GUARD), None)
            if guard is not None and s not in blocks:
                blocks[s] = (DataStatus.DEGENERATE, guard.reasons[0])
    shown = last if labels is None else last.with_columns(
        symbol=pl.Series(list(labels), dtype=pl.String))
    probs = _predictions(model, rows, shown, syms, manager, batch, stages)
    out = list(labels) if named and labels is not None else syms
    return [Own(symbol=out[i], candle_time=times[i], close=float(closes[i]),
                regime=regimes[s], best=best[s], p_up=probs[s],
                volume_z=vz[i], block=blocks.get(s)) for i, s in enumerate(syms)]


def _datetimes(col: pl.Series) -> list[Any]:
    """``col.to_list()`` of a datetime column, each distinct value converted once: a
    replay's rows are a hundred symbols' at each candle time, and making a datetime per
    row was 4 % of it. The objects are polars' own conversion's."""
    if col.len() < 64:
        return col.to_list()
    distinct = col.unique()
    as_object = dict(zip(distinct.to_physical().to_list(), distinct.to_list(), strict=True))
    return [as_object[v] for v in col.to_physical().to_list()]


def decide(config: Config, own: Sequence[Own], now: datetime, *,
           records: list[CooldownRecord], correlate: Callable[[list[str]], Any],
           manager: CacheManager, stages: _Stages | None = None) -> SignalsResult:
    """The stateful half of ``step``: the gates at ``now`` over the symbols' ``own``
    answers, with the carried cooldown ``records`` and ``correlate(symbols)`` (the rolling
    correlation brought up to date: (symbols, matrix) or None)."""
    blocks, decisions = judge(config, own, now, records=records, correlate=correlate,
                              manager=manager, stages=stages)
    results = []
    for o in own:
        b, d = o.best, decisions[o.symbol]
        results.append(SymbolResult(
            symbol=o.symbol, candle_time=o.candle_time, close=o.close, regime=o.regime,
            direction=b.direction if b else Direction.FLAT, strength=b.strength if b else 0.0,
            p_up=o.p_up, engine=b.engine if b else None,
            gate_passed=d.passed, gate_reasons=d.reasons,
            data_status=blocks[o.symbol][0] if o.symbol in blocks else DataStatus.OK))
    results.sort(key=lambda r: answer_key(r.gate_passed, r.strength, r.symbol))
    return SignalsResult(as_of=now, interval=config.data.interval, source=config.data.source,
                         symbols=results)


def answer_key(passed: bool | None, strength: float | None, symbol: str
               ) -> tuple[bool, float, str]:
    """The order of an answer's rows, which is the order a run records what passed (its
    cooldowns): passed first, strongest first, then by symbol."""
    return (not passed, -(strength or 0.0), symbol)


def judge(config: Config, own: Sequence[Own], now: datetime, *,
          records: list[CooldownRecord], correlate: Callable[[list[str]], Any],
          manager: CacheManager, stages: _Stages | None = None, directed: bool = False,
          prepared: Sequence[Any] | None = None
          ) -> tuple[dict[str, tuple[DataStatus, str]], dict[str, GateDecision]]:
    """``decide`` without the answer's rows: per symbol, the block its data puts on it
    (stale, warming up, degenerate; a stale one's reason is ``_STALE`` until the clock is
    applied) and its gate decision. A replay makes its candidate rows straight from these
    (the same decisions, without a result row per symbol and candle).

    ``directed``: decisions only for the symbols with a direction (a replay shows no
    other). A flat candidate never passes, so it is never an active signal and never
    recorded: the others' decisions are the same without it.

    ``prepared`` (with ``directed``): per symbol of ``own``, its ``gate_input`` and its
    ``own_reasons`` first (then anything the caller keeps with them), or None for one
    without a direction: a replay computes them for a
    whole stretch of candles at once (the reasons are one array pass over 100,000 rows,
    not one per candle over a hundred)."""
    stages = stages if stages is not None else _Stages()
    stale = _stale_symbols(config, {o.symbol: o.candle_time for o in own}, now)
    blocks: dict[str, tuple[DataStatus, str]] = {}
    for o in own:
        block = (DataStatus.STALE, _STALE) if o.symbol in stale else o.block
        if block is not None:
            blocks[o.symbol] = block
    return blocks, _gate(config, correlate, manager, own, blocks, records, stages, directed,
                         prepared)


def gate_input(o: Own) -> GateInput:
    """What the gates read of a symbol's own answer."""
    b = o.best
    return GateInput(
        symbol=o.symbol, candle_time=o.candle_time,
        direction=b.direction if b else Direction.FLAT, strength=b.strength if b else 0.0,
        probability=o.p_up, regime=o.regime, volume_z=o.volume_z,
        engine=b.engine if b else "")


def _gate(config: Config, correlate: Callable[[list[str]], Any], manager: CacheManager,
          own: Sequence[Own], blocks: Mapping[str, tuple[DataStatus, str]],
          records: list[CooldownRecord], stages: _Stages, directed: bool = False,
          prepared: Sequence[Any] | None = None) -> dict[str, GateDecision]:
    """Gate decisions per symbol. A symbol the data blocks (stale, warming up, degenerate)
    is kept out of the gates altogether: it must not count as an active signal for the
    correlation gate of another. ``directed``, ``prepared``: see ``judge``."""
    candidates = []
    mine: list[tuple[str, ...]] | None = [] if prepared is not None else None
    unblocked = 0  # whether the run reads the correlation counts flat candidates too
    flat = Direction.FLAT
    for k, o in enumerate(own):
        if o.symbol in blocks:
            continue
        unblocked += 1
        b = o.best
        if directed and (b is None or b.direction == flat):
            continue
        if prepared is not None and mine is not None:
            c, m = prepared[k][:2]
            candidates.append(c)
            mine.append(m)
        else:
            candidates.append(gate_input(o))
    eligible = [c.symbol for c in candidates]
    correlation = correlate([o.symbol for o in own]) if unblocked > 1 else None

    def gate() -> list[GateDecision]:
        stages.gates += 1
        return evaluate_gates(candidates, records, config.gates, correlation, own=mine)

    decided: list[GateDecision] = []
    if candidates:
        gkey = "gates"
        if manager.enabled:  # a replay's steps look nothing up: no key to pay for
            named = set(eligible)  # a list's `in`: records x symbols comparisons
            relevant = sorted((r.symbol, r.direction, r.candle_time.isoformat())
                              for r in records if r.symbol in named)
            corr_part = None if correlation is None else (list(correlation[0]),
                                                          correlation[1])
            gkey = gates_key(config.gates, candidates, relevant, corr_part)
        decided = manager.get_or_compute("gates", gkey, gate)
    out: dict[str, GateDecision] = dict(zip(eligible, decided, strict=True))
    if directed:
        return out  # the blocked ones' decisions: their block, read by the caller
    for s, (_, reason) in blocks.items():
        out[s] = GateDecision(passed=False, reasons=(reason,))
    return out


def _predictions(model: Predictor, rows: Mapping[str, Any] | None, last: pl.DataFrame,
                 syms: list[str], manager: CacheManager, batch: bool, stages: _Stages
                 ) -> dict[str, float | None]:
    """P(up) per symbol, keyed by the model's version and the feature row's content."""
    from ._model import prediction_keys

    at = {s: i for i, s in enumerate(syms)}

    def predict(missing: list[str]) -> dict[str, float | None]:
        stages.predictions += len(missing)
        probs: Sequence[float]
        if batch:
            # every row missing (a first run, a replay's stretch): the frame as it is,
            # not a gathered copy of it
            frame = last if missing == syms else last.gather([at[s] for s in missing])
            probs = model.predict_proba(frame).tolist()
        else:
            probs = [float(model.predict_proba(last.slice(at[s], 1))[0]) for s in missing]
        return {s: (None if p != p else float(p)) for s, p in zip(missing, probs,
                                                                   strict=True)}

    keys = prediction_keys(model.version, {s: rows[s] for s in syms}) \
        if manager.enabled and rows is not None else {s: s for s in syms}
    return manager.get_or_compute_many("predictions", keys, predict)


def _features_and_regimes(config: Config, candles: pl.DataFrame, syms: list[str],
                          manager: CacheManager, batch: bool, stages: _Stages,
                          carry: CarryStore | None = None
                          ) -> tuple[dict[str, Any], dict[str, str]]:
    """Each symbol's last feature row (cached form) and regime, from the caches or computed
    for all the misses at once. A regime needs the whole feature history, which the
    features cache does not keep, so a regime miss recomputes that symbol's features."""

    from ._features import (
        compute_features,
        compute_features_split,
        features_keys,
    )
    from ._regime import detect_regime, regime_inputs, regime_keys

    if manager.enabled:
        fps = candle_fingerprints(candles, config.data.interval)
        fps = {s: fps[s] for s in syms}
        fkeys = features_keys(config.features, fps)
        rkeys = regime_keys(config.regime, config.features, fps)
    else:  # nothing is looked up: no keys to pay for
        fkeys = rkeys = {s: s for s in syms}
    rows = _keyed(manager.get_many("features", list(fkeys.values())), fkeys)
    regimes = _keyed(manager.get_many("regime", list(rkeys.values())), rkeys)
    need = [s for s in syms if s not in rows or s not in regimes]
    manager.count("features", hits=len(syms) - len(need), misses=len(need))
    manager.count("regime", hits=len(regimes), misses=len(syms) - len(regimes))
    if not need:
        return rows, regimes
    stages.features += len(need)
    start = time.perf_counter()
    fresh_rows: dict[str, Any] = {}
    if batch and carry is not None:
        # Only the rows after each symbol's carried state (``_carry``): the same values as
        # the whole series' computation below, bit for bit.
        from ._carry import features_and_regimes

        carried = features_and_regimes(config, _only(candles, need, syms), need, carry)
        fresh_rows = _row_values(carried.last, [s for s in need if s not in rows])
        manager.set_many("features", {fkeys[s]: v for s, v in fresh_rows.items()},
                         (time.perf_counter() - start) / len(need))
        rows.update(fresh_rows)
        todo = [s for s in need if s not in regimes]
        manager.set_many("regime", {rkeys[s]: carried.regimes[s] for s in todo},
                         (time.perf_counter() - start) / len(need))
        stages.regime += len(todo)
        regimes.update({s: carried.regimes[s] for s in todo})
        return rows, regimes
    if batch:
        # One frame for every stage: no per-symbol partitions, and only the feature
        # columns are new memory (the candle columns are shared with ``candles``): in full
        # only those the regime reads, the rest as each symbol's last row.
        full, tail = compute_features_split(_only(candles, need, syms), config.features,
                                            regime_inputs(config.features))
        fresh_rows = _row_values(tail, [s for s in need if s not in rows])
        del tail
    else:
        frames = {str(k[0]): v for k, v in candles.partition_by(
            "symbol", as_dict=True, maintain_order=True).items()}
        each = {s: compute_features(frames[s], config.features) for s in need}
        del frames
        for s in need:
            if s not in rows:
                fresh_rows.update(_row_values(each[s], [s]))
    manager.set_many("features", {fkeys[s]: v for s, v in fresh_rows.items()},
                     (time.perf_counter() - start) / len(need))
    rows.update(fresh_rows)
    todo = [s for s in need if s not in regimes]
    if todo:
        stages.regime += len(todo)
        start = time.perf_counter()
        if batch:
            fresh = detect_regime(_only(full, todo, need), config.regime, config.features)
        else:
            fresh = {s: detect_regime(each[s], config.regime, config.features)[s]
                     for s in todo}
        manager.set_many("regime", {rkeys[s]: fresh[s] for s in todo},
                         (time.perf_counter() - start) / len(todo))
        regimes.update(fresh)
    return rows, regimes


def _only(frame: pl.DataFrame, wanted: list[str], present: list[str]) -> pl.DataFrame:
    """The rows of ``wanted`` symbols, in the frame's order (``wanted`` keeps the order of
    ``present``, the frame's symbols); the frame itself when that is all of them."""
    import polars as pl

    if len(wanted) == len(present):
        return frame
    return frame.filter(pl.col("symbol").is_in(wanted))


def _keyed(found: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    return {s: found[k] for s, k in keys.items() if k in found}


def _correlation_for_gates(config: Config, ws: Workspace, candles: pl.DataFrame,
                           syms: list[str]) -> tuple[list[str], Any] | None:
    """The stored rolling correlation matrix, brought up to date (only moved symbols).
    A disk that refuses the write costs the stored state (one warning), never the run."""
    if len(syms) < 2:
        return None
    from ._correlation import update_correlation

    try:
        result = update_correlation(config, candles, state_dir=ws.correlation_dir(config),
                                    rows_only=True)
    except (OSError, CacheError) as exc:
        ws.disk_refused(exc)  # from now on: a private temporary directory, not kept
        result = update_correlation(config, candles, full=True, rows_only=True)
    return list(result.symbols), result.matrix


