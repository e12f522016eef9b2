"""What a backtest reports: forward returns, hit rates, the information coefficient and what
the gates did, computed from a replay's candidates and closes (polars and numpy, no pandas).

Every return is in basis points of the signal's own direction (a short earns when the price
falls) after ``cost_bps``, a round trip of fees and slippage taken once per signal whatever the
horizon. Statistics come from one aggregation per breakdown (``_aggregate``), so the overall
row and every group's row are the same computation on different rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import UsageError

if TYPE_CHECKING:
    import polars as pl

# Where the breakdowns come from: the candidates' columns, in the order a report shows them.
BREAKDOWNS = ("engine", "regime", "direction", "symbol")
# A horizon beyond this many candles (about a year of 5m candles) is a typo, not a question.
MAX_HORIZON = 100_000
# Cost above 10 % per round trip is no venue's fee; a negative cost would be a rebate
# bigger than any spread, and would flatter every signal.
MAX_COST_BPS = 1000.0
DEFAULT_HORIZONS = (1, 3, 12)
DEFAULT_COST_BPS = 10.0
_FORWARD_BLOCK = 1 << 20  # signals whose forward returns are found at once
FACTORS = ("strength", "p_dir")


class ReplayLike(Protocol):
    """What evaluation reads of ``botopt.core.backtest`` replay's answer."""

    @property
    def candidates(self) -> pl.DataFrame: ...
    @property
    def closes(self) -> pl.DataFrame: ...
    @property
    def interval(self) -> str: ...
    @property
    def since(self) -> datetime: ...
    @property
    def until(self) -> datetime: ...
    @property
    def symbols(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation's own knobs (the signals' are the Config's). Validated when built."""

    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    cost_bps: float = DEFAULT_COST_BPS
    walk_forward_periods: int = 4

    def __post_init__(self) -> None:
        if not self.horizons:
            raise UsageError("--horizons: give at least one horizon, e.g. 1,3,12", key="--horizons")
        for h in self.horizons:
            if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_HORIZON:
                raise UsageError(f"--horizons: {h!r} is not a whole number of candles in "
                                 f"1..{MAX_HORIZON:,}", key="--horizons")
        if len(set(self.horizons)) != len(self.horizons):
            raise UsageError(f"--horizons: {list(self.horizons)} repeats a horizon",
                             key="--horizons")
        c = self.cost_bps
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) \
                or not 0 <= c <= MAX_COST_BPS:
            raise UsageError(f"--cost-bps: {c!r} is not a cost in 0..{MAX_COST_BPS:g} basis "
                             "points (a round trip of fees and slippage)", key="--cost-bps")
        if not 1 <= self.walk_forward_periods <= 100:
            raise UsageError(f"walk_forward_periods {self.walk_forward_periods!r} not in 1..100",
                             key="walk_forward_periods")


def parse_horizons(text: str) -> tuple[int, ...]:
    """``"1,3,12"`` -> (1, 3, 12), sorted; a one-line UsageError naming the bad item."""
    out = []
    for item in text.split(","):
        s = item.strip()
        if not re.fullmatch(r"[0-9]{1,7}", s):  # "1.5", "-1", "nan", "1e9", "", "１" end here
            raise UsageError(f"--horizons: {s[:20]!r} is not a whole number of candles in "
                             f"1..{MAX_HORIZON:,}", key="--horizons")
        out.append(int(s))
    horizons = tuple(sorted(out))
    EvalSettings(horizons=horizons)  # the range and repeat checks, in one place
    return horizons


# ---------------------------------------------------------------- the result's dataclasses


@dataclass(frozen=True)
class Stats:
    """Net signed returns (bps) of some signals at one horizon. ``n`` counts the signals whose
    horizon candle exists; the rest (the end of the data, a gap) have no return."""

    horizon: int
    n: int
    hit_rate: float | None
    mean_bps: float | None
    median_bps: float | None
    ci_low_bps: float | None
    ci_high_bps: float | None
    t_stat: float | None

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class Group:
    """One row of a breakdown: ``by`` = ``value`` (``"all"`` = ``"all"`` for the whole run)."""

    by: str
    value: str
    candidates: int
    signals: int  # candidates that passed every gate
    returns: tuple[Stats, ...]  # of the signals, one per horizon
    candidate_returns: tuple[Stats, ...]  # of every candidate, passed or not

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "value": self.value, "candidates": self.candidates,
                "signals": self.signals, "returns": [s.to_dict() for s in self.returns],
                "candidate_returns": [s.to_dict() for s in self.candidate_returns]}


@dataclass(frozen=True)
class GateEffect:
    """What one gate did: the candidates it blocked (``alone``: blocked by it and no other
    gate, so it alone decided) and their returns, to set beside the passed signals'."""

    gate: str
    blocked: int
    alone: int
    returns: tuple[Stats, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "blocked": self.blocked, "alone": self.alone,
                "returns": [s.to_dict() for s in self.returns]}


@dataclass(frozen=True)
class IC:
    """alphalens' information coefficient: per candle, the Spearman rank correlation across
    symbols between a factor and the forward return; then the mean, std and t-stat of that
    series (``periods`` candles had at least 3 symbols with both values, not all tied)."""

    factor: str
    horizon: int
    periods: int
    mean: float | None
    std: float | None
    t_stat: float | None

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class Curve:
    """Cumulative net return (bps) of holding each passed signal for one candle, equally
    weighted among the signals of the same candle: one point per candle with a signal."""

    name: str
    times: tuple[datetime, ...]
    cum_bps: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        from ..signals._results import iso

        return {"name": self.name, "times": [iso(t) for t in self.times],
                "cum_bps": [round(v, 6) for v in self.cum_bps]}


@dataclass(frozen=True)
class Evaluation:
    settings: EvalSettings
    interval: str
    since: datetime
    until: datetime
    symbols: tuple[str, ...]
    overall: Group
    groups: tuple[Group, ...]
    gates: tuple[GateEffect, ...]
    ic: tuple[IC, ...]
    curves: tuple[Curve, ...]
    # Every candidate with its forward returns (what --csv writes); not part of the JSON.
    table: pl.DataFrame

    def breakdown(self, by: str) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.by == by)

    def to_dict(self) -> dict[str, Any]:
        from ..signals._results import iso

        return {"interval": self.interval, "since": iso(self.since), "until": iso(self.until),
                "symbols": list(self.symbols),
                "settings": {"horizons": list(self.settings.horizons),
                             "cost_bps": self.settings.cost_bps},
                "overall": self.overall.to_dict(),
                "breakdowns": {by: [g.to_dict() for g in self.breakdown(by)]
                               for by in BREAKDOWNS},
                "gates": [g.to_dict() for g in self.gates],
                "ic": [i.to_dict() for i in self.ic],
                "curves": [c.to_dict() for c in self.curves]}


def _clean(v: Any) -> Any:
    """JSON has no NaN: a statistic that does not exist is null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ---------------------------------------------------------------- statistics


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (scipy.stats.t.ppf
# (0.975, df), to 4 decimals; tests check them and the expansion below against scipy).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """Student's t 97.5 % quantile: the table to 30 degrees of freedom, then the Cornish-Fisher
    expansion in 1/df (error below 1e-5 there); scipy is not a runtime dependency."""
    if df < 1:
        raise ValueError("df >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def _stats(horizon: int, n: int, mean: float | None, median: float | None,
           std: float | None, hits: float | None) -> Stats:
    """A t interval for the mean: the signals are many and their mean's sampling law is
    near normal; a bootstrap would cost a resample per group and horizon for the same band."""
    if n == 0:
        return Stats(horizon, 0, None, None, None, None, None, None)
    lo = hi = t = None
    if n >= 2 and std is not None and math.isfinite(std):
        se = std / math.sqrt(n)
        half = t975(n - 1) * se
        lo, hi = mean - half, mean + half  # type: ignore[operator]
        t = mean / se if se > 0 else None  # type: ignore[operator]
    return Stats(horizon, n, hits, mean, median, lo, hi, t)


def _aggregate(df: pl.DataFrame, by: Sequence[str], horizons: Sequence[int]
               ) -> dict[tuple[Any, ...], tuple[int, tuple[Stats, ...]]]:
    """Per group of ``by`` (the whole frame when empty): its row count and one Stats per
    horizon of the ``net_<h>`` columns, whose nulls (a return that does not exist) are left
    out. Each group's rows are gathered once per horizon and its figures computed with
    numpy: polars' grouped count, std and median held 600 to 800 MB at once for a year of
    100 symbols (7 million rows), the evaluation's peak; this holds two columns' worth."""
    import numpy as np
    import polars as pl

    if by:
        g = df.select(*by, _i=pl.int_range(pl.len(), dtype=pl.UInt32)) \
            .group_by(list(by)).agg("_i")
        keys = g.select(list(by)).rows()
        lens = g.get_column("_i").list.len().to_numpy().astype(np.int64)
        idx = g.get_column("_i").explode().to_numpy()
        del g
    else:
        keys, lens, idx = [()], np.array([df.height], dtype=np.int64), None
    starts = (np.cumsum(lens) - lens).tolist()
    figures: list[list[Stats]] = [[] for _ in keys]
    for h in horizons:
        col = df.get_column(f"net_{h}").cast(pl.Float64)
        values = col.to_numpy() if idx is None else col.to_numpy()[idx]  # a null is NaN
        del col
        for k, (a, n_rows) in enumerate(zip(starts, lens.tolist(), strict=True)):
            part = values[a:a + n_rows]
            part = part[~np.isnan(part)]
            n = int(part.size)
            if not n:
                figures[k].append(_stats(h, 0, None, None, None, None))
                continue
            figures[k].append(_stats(h, n, float(part.mean()), float(np.median(part)),
                                     float(part.std(ddof=1)) if n >= 2 else None,
                                     float(np.count_nonzero(part > 0)) / n))
        del values
    return {key: (int(n_rows), tuple(f))
            for key, n_rows, f in zip(keys, lens.tolist(), figures, strict=True)}


def _name(value: Any) -> str:
    """A group's label: a missing engine or regime shows as "-", as the signals table does."""
    return "-" if value is None else str(value)


def _empty(horizons: Sequence[int]) -> tuple[Stats, ...]:
    return tuple(_stats(h, 0, None, None, None, None) for h in horizons)


# ---------------------------------------------------------------- forward returns


def forward_returns(candidates: pl.DataFrame, closes: pl.DataFrame, interval_ms: int,
                    horizons: Sequence[int], cost_bps: float) -> pl.DataFrame:
    """The candidates with, per horizon h: ``ret_<h>`` (the price's simple return from the
    signal candle's close to the close h candles later, a fraction) and ``net_<h>`` (that
    return in bps, signed by the direction, minus the cost). The close h candles later is
    the candle that opens exactly h intervals later: in a gap or past the data's end there
    is none, and both columns are null. Horizon 1 is always there (the curves read it)."""
    import numpy as np
    import polars as pl

    directed = candidates.get_column("direction").is_in(["long", "short"])
    # A replay's candidates all have a direction: the table is then the candidates' own
    # columns and the new ones, not a copy (at a year of 100 symbols a copy is 600 MB, and
    # a join and a sort made two more). Rows stay in the candidates' order (time, symbol).
    df = candidates if bool(directed.all()) else candidates.filter(directed)
    # The new columns are made in numpy (see the end): an expression reading them beside
    # the candidates' columns made polars copy the whole table first.
    short = (df.get_column("direction") == "short").fill_null(False).to_numpy()
    # One key per close (the symbol's number, open time): the candle h intervals after a
    # signal is found by binary search, whatever gaps lie between. The symbols are numbered
    # by their category ids, which every frame in the process shares (no join of the
    # table), made dense among the closes' symbols so the key cannot overflow.
    code = pl.col("symbol").cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(-1)
    epoch = pl.col("candle_time").dt.epoch("ms").fill_null(-1)
    if closes.select(pl.any_horizontal(pl.col("symbol", "candle_time").is_null().any())
                     ).item():
        closes = closes.drop_nulls(["symbol", "candle_time"])  # a close of nothing: none
    ids = np.sort(closes.select(code.unique()).to_series().to_numpy())

    def key(frame: pl.DataFrame) -> Any:
        c, ms = (frame.select(code).to_series().to_numpy(),
                 frame.select(epoch).to_series().to_numpy())
        at = np.minimum(np.searchsorted(ids, c), max(len(ids) - 1, 0))
        dense = np.where(ids[at] == c, at, -1) if len(ids) else np.full(len(c), -1)
        del c, at
        dense <<= 42
        dense += ms
        return dense

    keys = key(closes)
    by_key = np.argsort(keys, kind="stable")
    keys = keys[by_key]
    later_close = closes.get_column("close").cast(pl.Float64).to_numpy()[by_key]
    del by_key
    n_rows = df.height
    hs = sorted(set(horizons) | {1})
    rets = {h: np.empty(n_rows) for h in hs}
    nets = {h: np.empty(n_rows) for h in hs}
    last = max(len(keys) - 1, 0)
    # A block of signals at a time, its keys and closes read from a slice of the table:
    # each signal's search and return arrays made for the whole table at once were 600 MB
    # at a year of 100 symbols, beside the table.
    for a in range(0, n_rows, _FORWARD_BLOCK):
        b = min(a + _FORWARD_BLOCK, n_rows)
        part = df.slice(a, b - a)
        base = key(part)
        # The signals searched in key order (binary searches of sorted needles stay in
        # cache, 4x faster), their returns put back in the table's order.
        order = np.argsort(base, kind="stable")
        base = base[order]
        close = part.get_column("close").cast(pl.Float64).to_numpy()[order]
        del part
        start = np.searchsorted(keys, base) if len(keys) \
            else np.zeros(len(base), dtype=np.int64)
        for h in hs:
            target = base + h * interval_ms
            # Without a gap the candle h later is h rows on; search only where it is not.
            pos = np.minimum(start + h, last)
            miss = np.flatnonzero(keys[pos] != target) if len(keys) else np.arange(0)
            pos[miss] = np.minimum(np.searchsorted(keys, target[miss]), last)
            found = keys[pos] == target if len(keys) else np.zeros(len(target), dtype=bool)
            with np.errstate(divide="ignore", invalid="ignore"):
                ret = np.where(found, later_close[pos] / close - 1.0, np.nan) \
                    if len(keys) else np.full(len(target), np.nan)
            ret[~np.isfinite(ret)] = np.nan  # a zero close gives no return, not inf
            out = rets[h][a:b]
            out[order] = ret
            # no column of the signed return before the cost: at a year of 100 symbols
            # each is 56 MB, and nothing read it
            nets[h][a:b] = out * np.where(short[a:b], -1.0, 1.0) * 1e4 - cost_bps
    del keys, later_close
    # Made in the table's chunks: a column in one chunk beside the candidates' many (a
    # replay's come in parts) made every later filter of them rechunk what it read first,
    # whole (600 to 800 MB at once for the statistics at a year of 100 symbols).
    lens = df.get_column("close").chunk_lengths()
    for h in hs:
        df = df.with_columns(_chunked(f"ret_{h}", rets.pop(h), lens),
                             _chunked(f"net_{h}", nets.pop(h), lens))
    return df


def _chunked(name: str, values: Any, lens: Sequence[int]) -> pl.Series:
    """``values`` (NaN as null) as a Series in chunks of ``lens`` rows."""
    import polars as pl

    if len(lens) <= 1:
        return pl.Series(name, values, nan_to_null=True)
    parts, a = [], 0
    for n in lens:
        parts.append(pl.Series(name, values[a:a + n], nan_to_null=True))
        a += n
    return pl.concat(parts, rechunk=False)


def _signed(factor: str) -> pl.Expr:
    """A factor signed by the direction (``signed_<factor>``), so a short's strength ranks
    against the price's fall: made where the IC reads it, not kept in the table."""
    import polars as pl

    sign = pl.when(pl.col("direction") == "short").then(-1.0).otherwise(1.0)
    value = pl.col("p_dir") - 0.5 if factor == "p_dir" else pl.col(factor)
    return (sign * value).alias(f"signed_{factor}")


# ---------------------------------------------------------------- the information coefficient


def ic_series(df: pl.DataFrame, factor: str, horizon: int) -> pl.DataFrame:
    """Per candle (``candle_time``, ``ic``): Spearman's rho across symbols of ``factor`` and
    ``ret_<horizon>`` (ties share their average rank, as scipy.stats.spearmanr and alphalens
    rank). Candles with fewer than 3 symbols, or where
    either side is all ties, have no IC and are left out."""
    import polars as pl

    ret = f"ret_{horizon}"
    # the three columns it reads, then filtered: a filter of the whole table copies every
    # column (a gigabyte at a year of 100 symbols, six times over)
    d = df.select("candle_time", factor, ret).filter(
        pl.col(factor).is_not_null() & pl.col(factor).is_finite()
        & pl.col(ret).is_not_null() & pl.col(ret).is_finite())
    per = d.group_by("candle_time").agg(
        _n=pl.len(), _sf=pl.col(factor).n_unique(), _sr=pl.col(ret).n_unique(),
        ic=pl.corr(factor, ret, method="spearman"))
    return per.filter((pl.col("_n") >= 3) & (pl.col("_sf") > 1) & (pl.col("_sr") > 1)
                      & pl.col("ic").is_finite()).select("candle_time", "ic").sort("candle_time")


def _ic(df: pl.DataFrame, factor: str, horizon: int) -> IC:
    s = ic_series(df.select("candle_time", _signed(factor), f"ret_{horizon}"),
                  f"signed_{factor}", horizon)["ic"]
    n = s.len()
    mean = s.mean() if n else None
    std = s.std() if n >= 2 else None
    t = (mean / (std / math.sqrt(n)) if mean is not None and std  # type: ignore[operator]
         else None)
    return IC(factor, horizon, n, mean, std, t)  # type: ignore[arg-type]


# ---------------------------------------------------------------- curves


def _curves(df: pl.DataFrame) -> tuple[Curve, ...]:
    import polars as pl

    passed = df.select("engine", "candle_time", "net_1", "gate_passed") \
        .filter(pl.col("gate_passed") & pl.col("net_1").is_not_null())
    out = []
    for name, part in [("all", passed), *sorted(
            (_name(k[0]), g) for k, g in passed.partition_by("engine", as_dict=True).items())]:
        per = part.group_by("candle_time").agg(pl.col("net_1").mean()).sort("candle_time")
        cum = per["net_1"].cum_sum()
        out.append(Curve(name, tuple(per["candle_time"].to_list()), tuple(cum.to_list())))
    return tuple(out)


# ---------------------------------------------------------------- the whole evaluation


def evaluate(replay: ReplayLike, settings: EvalSettings | None = None) -> Evaluation:
    """Every figure of ``botopt backtest`` for one replay."""
    from ..base._config import interval_ms

    st = settings or EvalSettings()
    df = forward_returns(replay.candidates, replay.closes, interval_ms(replay.interval),
                         st.horizons, st.cost_bps)
    return evaluate_table(df, replay.interval, replay.since, replay.until, replay.symbols, st)


def evaluate_table(df: pl.DataFrame, interval: str, since: datetime, until: datetime,
                   symbols: Sequence[str], st: EvalSettings) -> Evaluation:
    """``evaluate`` from ``forward_returns``' table: ``run_backtest`` calls it once the
    replay's closes are let go (200 MB at a year of 100 symbols)."""
    import polars as pl

    hs = st.horizons
    passed = df.select(*BREAKDOWNS, *(f"net_{h}" for h in hs), "gate_passed") \
        .filter(pl.col("gate_passed"))
    overall = _groups(df, passed, None, hs)[0]
    groups = []
    for by in BREAKDOWNS:
        part = _groups(df, passed, by, hs)
        if by == "symbol":
            # a symbol of the run with no candidate is a row of zeros, not absent: "no row"
            # read as "not in the run" (sweep I, I6)
            seen = {g.value for g in part}
            part = sorted([*part, *(Group("symbol", s, 0, 0, _empty(hs), _empty(hs))
                                    for s in dict.fromkeys(symbols) if s not in seen)],
                          key=lambda g: g.value)
        groups += part
    del passed
    return Evaluation(
        settings=st, interval=interval, since=since, until=until, symbols=tuple(symbols),
        overall=overall, groups=tuple(groups), gates=_gates(df, hs),
        ic=tuple(_ic(df, f, h) for f in FACTORS for h in hs), curves=_curves(df), table=df)


def _groups(df: pl.DataFrame, passed: pl.DataFrame, by: str | None,
            hs: Sequence[int]) -> list[Group]:
    """The breakdown by column ``by`` (None: the one overall row), sorted by value."""
    keys = (by,) if by else ()
    every, sig = _aggregate(df, keys, hs), _aggregate(passed, keys, hs)
    none = (0, _empty(hs))
    out = [Group(by or "all", _name(k[0]) if by else "all", n, *sig.get(k, none), cr)
           for k, (n, cr) in every.items()]
    return sorted(out, key=lambda g: g.value)


def _gates(df: pl.DataFrame, hs: Sequence[int]) -> tuple[GateEffect, ...]:
    """Per gate (or data status) named in a blocked candidate's ``blocked_by``: the
    candidates it blocked, and those it alone blocked. Each gate's rows are taken from the
    table in turn: the blocked rows exploded by gate, with their returns, were a second
    table (300 MB at a year of 100 symbols)."""
    import polars as pl

    nets = [f"net_{h}" for h in hs]
    lists = df.get_column("blocked_by")
    blocked = ~df.get_column("gate_passed")
    sole = lists.list.len() == 1
    names = lists.filter(blocked).explode().drop_nulls().unique().cast(pl.String).to_list()
    out = []
    for gate in sorted(names):
        has = blocked & lists.list.contains(gate)
        n, returns = _aggregate(df.select(nets).filter(has), (), hs)[()]
        out.append(GateEffect(gate, n, int((has & sole).sum()), returns))
    return tuple(out)


def period_bounds(since: datetime, until: datetime, periods: int) -> list[tuple[datetime,
                                                                                datetime]]:
    """``periods`` consecutive spans of equal length from ``since`` to ``until``."""
    span = (until - since) / periods
    edges = [since + span * i for i in range(periods)] + [until]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
