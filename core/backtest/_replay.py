"""``replay``: the live pipeline's step, driven once per candle over a past period.

A cron run of ``botopt signals`` calls ``_pipeline.step`` once, with the state the previous
runs left (cooldown records, the rolling correlation); a replay calls the very same step for
every candle open time in the period, with each symbol's closed candles up to that time (its
whole stored series, as a live ``--as-of`` run loads it) and the state carried
in memory / in a private temporary directory. So the replay's signals and gate decisions are
the ones the live runs would have made, by construction, and a test checks it against real
``botopt signals --as-of`` processes (tests/test_replay.py).

A replay records nothing: no cooldowns, regime history, notifications or events reach the
workspace; the live bot is untouched.

Candle times: the period is the candles that opened in ``[since, until)``; the step for the
candle opening at ``t`` runs at ``as_of = t + interval`` (its close), as a cron run just after
that close would, and a symbol's row is taken from the step where that candle is its newest.
A symbol whose data starts inside the period joins at its first closed candle (a live run that
named it earlier would have stopped with "no candle closed").
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base._config import Config, candle_age, interval_ms
from ..base._numfmt import fmt_minute
from ..base._vocab import DataStatus, Direction
from ..data._candles import load_candles, parse_symbols
from ..errors import DataError, UsageError
from ..signals._gates import (
    CooldownRecord,
    directional_probability,
    gate_name,
)
from ..signals._results import iso
from ..state._cooldowns import RecordLog, keep_for

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Replay:
    """What a replay found. ``candidates``: one row per (symbol, candle_time) where an engine
    gave a direction, with the gates' decision; ``closes``: every candle's close from
    ``since`` to the end of the data (forward returns may look past ``until``)."""

    candidates: pl.DataFrame
    closes: pl.DataFrame
    interval: str
    since: datetime
    until: datetime
    symbols: tuple[str, ...]


def _utc(t: datetime, name: str) -> datetime:
    if not isinstance(t, datetime):
        raise UsageError(f"{name} must be a date and time, not {t!r}", key=name)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def replay(config: Config, symbols: Sequence[str], since: datetime, until: datetime, *,
           progress: Callable[[int, int], None] | None = None,
           use_cache: bool = True) -> Replay:
    """Replay the live pipeline over the candles that opened in ``[since, until)``.

    ``progress(done, total)`` is called after each candle time. Raises UsageError for an
    empty or reversed period, DataError when the period holds no candle of the data, and
    UnknownSymbolError for a symbol the data source does not have."""
    syms = parse_symbols(symbols)
    since, until = _utc(since, "since"), _utc(until, "until")
    if until < since:
        raise UsageError(f"--until {iso(until)} is before --since {iso(since)}", key="until")
    if until == since:
        raise UsageError(f"empty period: --since and --until are both {iso(since)}",
                         key="until")
    store = _ReplayCache.of(config, syms, since, until) if use_cache else None
    hit = store.get() if store is not None else None
    if hit is not None:
        if progress is not None:
            progress(1, 1)
        return Replay(candidates=hit[0], closes=hit[1], interval=config.data.interval,
                      since=since, until=until, symbols=tuple(syms))
    result = _replay(config, syms, since, until, progress)
    if store is not None:
        store.put(result.candidates, result.closes)
    return result


class _ReplayCache:
    """A replay's answer kept in the workspace (``backtest/``, two Arrow IPC files per
    entry), keyed by everything it depends on: the candle files' contents, every setting a
    step reads, the model, the symbols, the period and the code (``stage_tag``). A cache,
    not state: a damaged or unwritable entry costs the computation, never the answer."""

    KEEP = 16  # entries; the oldest go first

    def __init__(self, directory: Path, key: str,
                 seen: list[tuple[Path, list[int]]] | None = None) -> None:
        self.dir = directory
        self.key = key
        self.seen = seen or []  # the files as their digests were taken

    @classmethod
    def of(cls, config: Config, syms: list[str], since: datetime, until: datetime
           ) -> _ReplayCache | None:
        import hashlib
        import json

        from ..base._codec import settings_json
        from ..base._versions import stage_tag
        from ..data._candles import files_dir, find_candle_files
        from ..errors import BotoptError
        from ..signals._pipeline import _digest_memo, _file_digests, _model_digest
        from ..state._workspace import Workspace, data_scope

        data_dir = files_dir(config)
        if data_dir is None:
            return None  # Binance: the data only exists after the network round trip
        try:
            ws = Workspace.of(config)
            files = find_candle_files(data_dir, syms, config.data.interval)
            seen: list[tuple[Path, list[int]]] = []
            digests = _file_digests(files, _digest_memo(ws), seen)
            directory = ws.dir("backtest")
        except OSError:
            return None
        except BotoptError as exc:
            if isinstance(exc, DataError):
                raise  # an unknown symbol: the same error as without the cache
            return None
        parts = [stage_tag("backtest"), data_scope(config), syms, digests, iso(since),
                 iso(until), config.data.interval, config.data.source,
                 config.data.max_staleness,
                 settings_json(config.features, config.regime, config.gates,
                               config.correlation, config.model), _model_digest(config)]
        key = hashlib.blake2b(json.dumps(parts, default=str).encode(),
                              digest_size=20).hexdigest()
        return cls(directory, key, seen)

    def _paths(self) -> tuple[Path, Path]:
        return (self.dir / f"{self.key}.candidates.arrow",
                self.dir / f"{self.key}.closes.arrow")

    def get(self) -> tuple[pl.DataFrame, pl.DataFrame] | None:
        import io

        import polars as pl

        try:  # read whole: a mapped file could be pruned by another replay under it
            a, b = (pl.read_ipc(io.BytesIO(p.read_bytes())) for p in self._paths())
        except Exception:  # noqa: BLE001  (absent or damaged: computed again)
            return None
        if a.schema != _candidates_frame([]).schema or b.columns != ["symbol", "candle_time",
                                                                     "close"]:
            return None
        return a, b

    def put(self, candidates: pl.DataFrame, closes: pl.DataFrame) -> None:
        from ..base._fs import atomic_writer
        from ..signals._pipeline import unchanged_since

        if not unchanged_since(self.seen):
            return  # a file changed while it was read: the answer is not the key's
        try:
            for frame, path in zip((candidates, closes), self._paths(), strict=True):
                with atomic_writer(path, fsync=False) as fh:
                    frame.write_ipc(fh)
            entries = sorted(self.dir.glob("*.candidates.arrow"),
                             key=lambda p: p.stat().st_mtime, reverse=True)
            for old in entries[self.KEEP:]:
                stem = old.name.split(".")[0]
                for p in self.dir.glob(f"{stem}.*.arrow"):
                    p.unlink(missing_ok=True)
        except OSError:
            pass  # a full or read-only disk: the next replay computes again


def _replay(config: Config, syms: list[str], since: datetime, until: datetime,
            progress: Callable[[int, int], None] | None) -> Replay:
    import polars as pl

    from ..signals._model import load_model
    from ..state._cache import CacheManager

    model = load_model(config.model, config.features)  # a bad model fails before the work
    book = _Book(load_candles(syms, config=config), syms)  # the only holder of the frame
    lo, hi = _ms(since), _ms(until)
    grid = book.grid(lo, hi)
    if not grid.size:
        book.explain_empty(since, until)
    manager = CacheManager(root=Path(tempfile.gettempdir()), enabled=False)
    total = int(book.needed(lo, hi).size + grid.size)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    driver = _Driver(config, book, manager)
    parts: list[pl.DataFrame] = []  # a frame per chunk: a dict per row costs ten times more
    own: dict[int, Any] = {}
    # The period in chunks of candle times, each chunk's windows prepared in one batch and
    # dropped once stepped through: memory holds one batch, not the period.
    per = max(1, _BATCH_ROWS // len(syms))
    whole = 0  # parts[:whole] are compacted blocks
    with _without_cycle_collection():
        for c in range(0, int(grid.size), per):
            _chunk(config, book, driver, model, manager, grid[c:c + per], own, parts, tick)
            if len(parts) - whole >= 64:
                # Small frames carry fixed overheads: the newest are compacted into a block.
                # Only those: compacting everything held copied the period's rows again
                # and again, and at the end held them twice.
                parts[whole:] = [pl.concat(parts[whole:], rechunk=True)]
                whole += 1
    # The closes made last, from the candles' three columns they need, the others let go
    # first: made at the start, they were held beside the candles through the whole
    # replay, into its peak at the end (200 MB at a year of 100 symbols).
    del driver, own
    book.release()
    closes = book.closes(lo)
    # Each part is sorted and the parts follow each other in time, so together they are
    # sorted: no sort of the whole (a second copy of a year's candidates at its peak).
    return Replay(candidates=pl.concat(parts) if parts else _candidates_frame([]),
                  closes=closes, interval=config.data.interval, since=since, until=until,
                  symbols=tuple(syms))


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused for the steps. Each step makes and drops thousands
    of small objects (tuples, decisions, reasons) while a chunk's 100,000 prepared rows stay
    alive, so the collector kept walking those rows for cycles there are none of: 15 % of
    a replay's time (tests/test_replay.py checks the steps leave no cycle behind).
    Reference counting still frees everything the steps drop; the collector's previous
    state is restored even on an error."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _chunk(config: Config, book: _Book, driver: _Driver, model: Any, manager: Any,
           times: Any, own: dict[int, Any], parts: list[pl.DataFrame],
           tick: Callable[[int], None]) -> None:
    """One chunk of candle times: its rows prepared in one batch, then stepped through;
    ``own`` keeps only the rows a later step may still see as a symbol's newest."""
    step = interval_ms(config.data.interval)
    t_hi = int(times[-1]) + 1
    fresh = [r for r in book.needed(int(times[0]), t_hi).tolist() if r not in own]
    book.stretch(config, t_hi)
    made = _prepare(config, book, fresh, model, manager)
    own.update(made)
    gin = driver.gin
    gin.update(_gate_inputs(config, made, book.ms))
    tick(len(fresh))
    rows: list[tuple[Any, ...]] = []
    for t, at in zip(times.tolist(), book.newest_each(times), strict=True):
        now = datetime.fromtimestamp((t + step) / 1000, tz=timezone.utc)
        rows.extend(driver.step(t, now, own, at))
        tick(1)
    parts.append(_candidates_frame(rows))
    newest = set(book.newest(t_hi - 1)[1])
    for r in [r for r in own if r not in newest]:
        del own[r]
        gin.pop(r, None)


def _gate_inputs(config: Config, made: dict[int, Any], ms: Any) -> dict[int, Any]:
    """Per prepared row with a direction: what the gates read of it (``gate_input``), what
    blocks it on its own values (``own_reasons``), and what its candidate row holds
    whatever the gates decide (its values, the names of its own reasons' gates, its candle
    time in ms, read from ``ms``, the rows' open times). The reasons for all of a
    stretch's rows in one array pass, where each step made them for its own few."""
    from ..signals._gates import own_reasons
    from ..signals._pipeline import gate_input

    flat = Direction.FLAT
    keys = [r for r, o in made.items() if o.best is not None and o.best.direction != flat]
    inputs = [gate_input(made[r]) for r in keys]
    reasons = own_reasons(inputs, config.gates)
    out = {}
    for r, c, m, t in zip(keys, inputs, reasons, ms[keys].tolist(), strict=True):
        o, b = made[r], made[r].best
        head = (o.close, o.regime, b.engine, str(b.direction), b.strength, o.p_up,
                directional_probability(o.p_up, b.direction))
        names = tuple(dict.fromkeys(gate_name(x) for x in m))
        out[r] = (c, tuple(m), head, names, t)
    return out


# Candle rows whose features, engines and model run together: a stretch's features and
# Own answers are what memory holds, not the period's; each stretch also recomputes about
# 330 rows per symbol before it (the carried slice), so a stretch is much longer than that.
_BATCH_ROWS = 100_000


def _prepare(config: Config, book: _Book, need: list[int], model: Any,
             manager: Any) -> dict[int, Any]:
    """``prepare`` for the given rows (each a symbol's candle that some step sees as its
    newest). A live run's features at a candle are TA-Lib's over the symbol's whole series
    up to it, and every stage is causal, so they are the row's values in the one pass over
    the whole series (``_Book.features``); only engines and the model run here, over many
    rows at once, each row named as a symbol of its own. A row's answer depends on its own
    values only, so each equals what the live run at that candle computes."""
    import numpy as np

    from ..base._config import warmup_candles
    from ..signals._pipeline import own_rows

    if not need:
        return {}
    rows = np.asarray(need, dtype=np.int64)
    names = [str(i) for i in need]
    last, regimes = book.rows(rows, names)
    # the candles a live run would load: the rows from its symbol's first
    count = rows - book.starts[np.searchsorted(book.starts, rows, side="right") - 1] + 1
    want = warmup_candles(config.features, config.regime)
    blocks = {names[k]: (DataStatus.WARMING_UP, f"warming up: {int(n)} of {want} candles")
              for k, n in enumerate(count.tolist()) if n < want}
    real = book.symbols_of(rows)
    prepared = own_rows(config, last, regimes, blocks, names, model=model,
                        manager=manager, labels=real, named=True)
    return dict(zip(need, prepared, strict=True))


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class _Book:
    """The loaded candles (one run per symbol, times ascending) and the windows of them
    each step sees."""

    def __init__(self, frame: pl.DataFrame, syms: list[str]) -> None:
        import numpy as np
        import polars as pl

        # symbols as categories: a year of 100 symbols is 10 million rows, 16 bytes a row
        # as text (a string view), 4 as a category
        frame = frame.with_columns(pl.col("symbol").cast(pl.Categorical))
        self.frame = frame
        self.syms = syms
        lens = frame.get_column("symbol").rle().struct.field("len").to_numpy()
        self.lens = lens.astype(np.int64)
        self.starts = np.cumsum(self.lens) - self.lens
        self.ms: Any = frame.get_column("open_time").dt.epoch("ms").to_numpy()
        self.candles: Any = frame.select("symbol", "open_time", "open", "high", "low", "close",
                                    "volume")
        self._pass: Any = None
        self._stretch: Any = None
        self._offset: Any = None

    def stretch(self, config: Config, t_hi: int) -> None:
        """Features and regimes for every row that opened before ``t_hi``, from where the
        previous stretch's carried states stand (``_carry.SeriesPass``): a live run's
        features at a candle are the whole series' at that row, and memory holds one
        stretch, not the history."""
        import numpy as np
        import polars as pl

        from ..signals._carry import SeriesPass

        if self._pass is None:
            self._pass = SeriesPass.of(config, self.candles)
        upto = np.asarray([int(np.searchsorted(self.times(j), t_hi))
                           for j in range(len(self.syms))], dtype=np.int64)
        whole, self._offset = self._pass.stretch(upto)
        rest = [c for c in whole.columns if c not in ("symbol", "open_time", "regime")]
        # the form a live run's last rows take (``_pipeline._rows_frame``)
        self._stretch = whole.select("open_time", *(pl.col(c).cast(pl.Float64)
                                                    for c in rest), "regime")

    def rows(self, rows: Any, names: list[str]) -> tuple[pl.DataFrame, list[str]]:
        """The feature rows at ``rows`` (of the current stretch) named ``names`` (one
        pseudo-symbol each), and their regimes."""
        import numpy as np
        import polars as pl

        j = np.searchsorted(self.starts, rows, side="right") - 1
        got = self._stretch[self._offset[j] + rows - self.starts[j]]
        regimes = got.get_column("regime").to_list()
        last = got.drop("regime").insert_column(0, pl.Series("symbol", names,
                                                              dtype=pl.String))
        return last, regimes

    def symbols_of(self, rows: Any) -> list[str]:
        """The symbol of each of ``rows`` (one search for all of them)."""
        import numpy as np

        j = np.searchsorted(self.starts, rows, side="right") - 1
        return [self.syms[k] for k in j.tolist()]

    def needed(self, lo: int, hi: int) -> Any:
        """The rows some step of the period sees as a symbol's newest: those that opened
        in [lo, hi), and each symbol's last row before lo (still its newest at the first
        steps when its data has a gap there)."""
        import numpy as np

        out = []
        for j in range(len(self.syms)):
            t = self.times(j)
            a, b = int(np.searchsorted(t, lo)), int(np.searchsorted(t, hi))
            out.append(int(self.starts[j]) + np.arange(max(0, a - 1), b))
        return np.concatenate(out).astype(np.int64)

    def times(self, j: int) -> Any:
        a = int(self.starts[j])
        return self.ms[a:a + int(self.lens[j])]

    def grid(self, lo: int, hi: int) -> Any:
        import numpy as np

        return np.unique(self.ms[(self.ms >= lo) & (self.ms < hi)])

    def explain_empty(self, since: datetime, until: datetime) -> None:
        """Raise the DataError that says why no candle opened in the period."""
        first = min(range(len(self.syms)), key=lambda j: self.times(j)[0])
        last = max(range(len(self.syms)), key=lambda j: self.times(j)[-1])
        t0, t1 = int(self.times(first)[0]), int(self.times(last)[-1])

        def at(ms: int) -> str:
            return f"{fmt_minute(datetime.fromtimestamp(ms / 1000, tz=timezone.utc))} UTC"

        period = f"{fmt_minute(since)} to {fmt_minute(until)} UTC"
        if _ms(until) <= t0:
            raise DataError(f"the period {period} is before the data "
                            f"({self.syms[first]} starts {at(t0)})", symbol=self.syms[first])
        if _ms(since) > t1:
            raise DataError(f"the period {period} is after the data "
                            f"({self.syms[last]} ends {at(t1)})", symbol=self.syms[last])
        raise DataError(f"no candle of {', '.join(self.syms)} opened in {period}",
                        symbol=self.syms[0] if self.syms else None, key="since")

    def newest(self, t: int) -> tuple[list[int], list[int]]:
        """(symbol indexes, their newest rows) at ``t``: each symbol's last candle that
        opened by ``t``, for the symbols that have one."""
        import numpy as np

        js, rows = [], []
        for j in range(len(self.syms)):
            n = int(np.searchsorted(self.times(j), t, side="right"))
            if n:
                js.append(j)
                rows.append(int(self.starts[j]) + n - 1)
        return js, rows

    def newest_each(self, times: Any) -> Iterator[tuple[list[int], list[int]]]:
        """``newest(t)`` for each of the ascending ``times``: one search per symbol for all
        of them, not one per symbol and time (0.45 ms a candle at 100 symbols)."""
        import numpy as np

        if not len(times):
            return
        counts = np.stack([np.searchsorted(self.times(j), times, side="right")
                           for j in range(len(self.syms))])  # symbols x times
        rows = counts + self.starts[:, None] - 1
        for k in range(len(times)):
            js = np.flatnonzero(counts[:, k])
            yield js.tolist(), rows[js, k].tolist()

    def release(self) -> None:
        """Let go of all but what ``closes`` reads, once the steps are done."""
        self.frame = self.frame.select("symbol", "open_time", "close")
        self.candles = self._pass = self._stretch = self._offset = self.ms = None

    def closes(self, lo: int) -> pl.DataFrame:
        import numpy as np
        import polars as pl

        # by time, then by the symbol's text: its rank among the symbols as the sort key
        # (a category sorts as its text only in newer polars)
        rank = np.argsort(np.argsort(np.asarray(self.syms)))
        key = pl.Series("_k", np.repeat(rank, self.lens), dtype=pl.UInt32)
        return self.frame.select("symbol", pl.col("open_time").alias("candle_time"),
                                 "close", key) \
            .filter(pl.col("candle_time").dt.epoch("ms") >= lo) \
            .sort("candle_time", "_k").drop("_k")


class _Driver:
    """The state a cron line carries between runs, held in memory for a replay: the
    cooldown records (merged by the stores' one rule) and the rolling correlation (saved
    after each update and loaded by the next step, as a cron run's state file is), so each
    ``decide`` gets exactly what the live run at that candle would have."""

    def __init__(self, config: Config, book: _Book, manager: Any) -> None:
        import numpy as np

        self.config = config
        self.book = book
        self.manager = manager
        self.records = RecordLog()
        self._state: Any = None
        self._ts = book.ms
        self._cs = book.frame.get_column("close").cast(float).to_numpy()
        self._np = np
        # a run hands the correlation every closed candle; it reads only the last
        # window + 2 and the row before them
        self._keep = config.correlation.window + 3
        # per symbol: the newest row the state has taken (-1: none). The rows up to it are
        # not new to the state and only the last of them is read (the close before the
        # first new row), so a step hands the rows from it on: the same update as the
        # last window + 3 rows, without a hundred times the copying.
        self._taken = np.full(len(book.syms), -1, dtype=np.int64)
        self._cooldown = timedelta(seconds=config.gates.cooldown_seconds)
        # how long a cron run's store keeps records: a replay forgets them exactly then
        self._keep_records = keep_for(config.gates.cooldown_seconds)
        # per prepared row with a direction: its gate input and own reasons (_gate_inputs)
        self.gin: dict[int, Any] = {}

    def _correlate(self, js: list[int], rows: list[int]) -> Any:
        from ..signals._correlation import CorrelationRows, RollingCorrelation, _bring_up_to_date

        np = self._np
        cc = self.config

        def fresh() -> RollingCorrelation:
            return RollingCorrelation(window=cc.correlation.window,
                                      min_periods=cc.correlation.min_periods,
                                      interval_ms=interval_ms(cc.data.interval))

        rc = fresh() if self._state is None else self._state.reloaded()
        ends = np.asarray(rows, dtype=np.int64) + 1
        firsts = np.maximum(self.book.starts[js], ends - self._keep)
        taken = self._taken[js]
        if self._state is not None and not np.any(ends - 1 < taken):
            # forward in time, as a replay goes (else: the whole window, as a run hands it)
            firsts = np.maximum(firsts, taken)
        lens = ends - firsts
        idx = np.repeat(firsts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        new_ends = np.cumsum(lens)
        names = [self.book.syms[j] for j in js]
        rc, _ = _bring_up_to_date(
            rc, (names, new_ends - lens, new_ends, self._ts[idx], self._cs[idx]), fresh)
        # what the run saves (an unchanged state is the one saved before); the gates read
        # rows of this object on demand, as the run reads them after saving
        self._state = rc
        self._taken[js] = ends - 1
        return names, CorrelationRows(rc, names)

    def step(self, t: int, now: datetime, own: dict[int, Any],
             at: tuple[list[int], list[int]] | None = None) -> list[tuple[Any, ...]]:
        """The step at ``now`` (the close of the candle opening at ``t``); ``at``: the
        symbols' newest rows at ``t`` (``_Book.newest``), when the caller has them. Returns
        the candidate rows (in ``_COLUMNS`` order) of the symbols whose newest candle is
        ``t`` and that have a direction, and records what passed as a cron run records it.

        The decisions are ``judge``'s, the gates' half of the live ``decide``; the rows are
        made from them directly, not from a live answer's row for every symbol (sorted,
        then read back: a third of the step at 100 symbols)."""
        from ..signals._pipeline import answer_key, judge, stale_reasons

        js, rows = at if at is not None else self.book.newest(t)
        owned = [own[r] for r in rows]
        gin = self.gin
        prepared = [gin.get(r) for r in rows] if gin else None
        # The gates read a record only within the cooldown before a candidate's candle (its
        # own cooldown, the correlation gate's active signals): the others, up to two days
        # of them, are kept for the merge but not handed over (the same decisions).
        lo = min(o.candle_time for o in owned) - self._cooldown
        relevant = self.records.since(lo)
        # Decisions for the symbols with a direction only: a flat one is never shown,
        # never passes and so never weighs on another's decision.
        blocks, decisions = judge(self.config, owned, now, records=relevant,
                                  correlate=lambda names: self._correlate(js, rows),
                                  manager=self.manager, directed=True, prepared=prepared)
        out: list[tuple[Any, ...]] = []
        passed: list[int] = []
        ok = str(DataStatus.OK)
        for k, g in enumerate(prepared or ()):
            if g is None:  # no direction: never passes, never shown
                continue
            sym = owned[k].symbol
            d = decisions.get(sym)  # None: blocked by its data
            took = d is not None and d.passed
            if took:
                passed.append(k)
            if g[4] != t:  # not its newest candle: judged, not shown
                continue
            if d is not None:
                reasons = d.reasons
                mine = len(g[1])
                # the reasons are its own (named ahead), then a cooldown's and a
                # correlation's, at most one each
                blocked = g[3] if len(reasons) == mine else \
                    g[3] + tuple(gate_name(x) for x in reasons[mine:])
                status = ok
            else:
                block = blocks[sym]
                status = str(block[0])
                blocked = (status,)
                reasons = (block[1],)
                if block[0] == DataStatus.STALE:  # the clock applied, as a live run's is
                    reasons = stale_reasons(reasons, candle_age(
                        self.config, owned[k].candle_time, now))
            out.append((sym, t, *g[2], took, reasons, blocked, status))
        if len(passed) > 1:
            # in the order of the live answer's rows, which is the order a cron run
            # records them in: the whole sort, as the answer is sorted, so even a NaN
            # strength keeps its place
            went = set(passed)
            keys = [answer_key(k in went, o.best.strength if o.best else 0.0, o.symbol)
                    for k, o in enumerate(owned)]
            passed = [k for k in sorted(range(len(owned)), key=keys.__getitem__)
                      if k in went]
        self.records.merge([CooldownRecord(owned[k].symbol, owned[k].best.direction
                                           if owned[k].best else Direction.FLAT,
                                           owned[k].candle_time) for k in passed],
                           self._keep_records)
        return out


_COLUMNS = ("symbol", "candle_time", "close", "regime", "engine", "direction", "strength",
            "p_up", "p_dir", "gate_passed", "gate_reasons", "blocked_by", "data_status")


def _candidates_frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """The candidate rows as a frame, sorted by candle time then symbol.

    The text columns are categorical: a year of 100 symbols is 7 million rows, and a text
    costs 16 bytes a row or more (a string view and, past 12 bytes, its characters), a
    category 4. Their values are few: symbols, regimes, engines, directions, statuses, gate
    names, and reasons, whose numbers are printed to two decimals (a year of 100 symbols has
    a few thousand distinct reasons)."""
    import polars as pl

    text, names = pl.String, pl.Categorical
    types: list[Any] = [text, pl.Int64, pl.Float64, text, text, text, pl.Float64, pl.Float64,
                        pl.Float64, pl.Boolean, pl.List(text), pl.List(text), text]
    # column by column: a frame from row dicts cost 30 us a row
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(_COLUMNS)
    series = []
    for n, c, d in zip(_COLUMNS, cols, types, strict=True):
        if d == pl.List(pl.String):
            # lists of text as one joined text split by polars: 20x faster than building
            # list values from Python (a reason never holds the separator: it is a control
            # character no reason is built with)
            joined = pl.Series(n, ["\x1f".join(x) if x else None for x in c],
                               dtype=pl.String)
            series.append(joined.str.split("\x1f").fill_null(pl.lit([], dtype=d)))
        else:
            series.append(pl.Series(n, list(c), dtype=d))
    # sorted as text, then made categories (a category sorts as its text only in newer
    # polars; the order must not depend on the version)
    return pl.DataFrame(series).sort("candle_time", "symbol").with_columns(
        pl.col("candle_time").cast(pl.Datetime("ms", "UTC")),
        *(pl.col(n).cast(names) for n in _NAMED),
        *(pl.col(n).cast(pl.List(names)) for n in ("blocked_by", "gate_reasons")))


# the candidate columns kept as categories
_NAMED = ("symbol", "regime", "engine", "direction", "data_status")
