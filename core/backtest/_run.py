"""``botopt backtest``'s one core call: replay, evaluate, judge the model walk-forward; and two
configurations side by side on the same period (``--compare``)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..base._config import Config
from ..base._fs import output_writer
from ..errors import BotoptError, UsageError
from ._evaluate import (
    EvalSettings,
    Evaluation,
    evaluate_table,
    forward_returns,
    period_bounds,
)
from ._walkforward import WalkForwardPeriod, walk_forward

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Backtest:
    """One configuration's backtest: the evaluation of its replay and the model's
    walk-forward. ``label`` names the configuration (its file, or "default")."""

    label: str
    evaluation: Evaluation
    walk_forward: tuple[WalkForwardPeriod, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.label, **self.evaluation.to_dict(),
                "walk_forward": [p.to_dict() for p in self.walk_forward]}


def parse_time(value: str | datetime, flag: str) -> datetime:
    """``--since``/``--until``: ISO 8601 (UTC when no offset) or epoch seconds."""
    from ..data._candles import parse_as_of

    try:
        t = parse_as_of(value) if value is not None else None
    except UsageError:
        t = None
    if t is None:
        raise UsageError(f"invalid {flag} {str(value)[:60]!r}: use ISO 8601, e.g. "
                         "2018-01-20 or 2018-01-20T12:00:00Z", key=flag)
    return t


def _label(config: Config) -> str:
    return str(config.path) if config.path is not None else "default"


def run_backtest(config: Config, symbols: Sequence[str], since: datetime, until: datetime, *,
                 settings: EvalSettings | None = None, progress: Progress | None = None,
                 use_cache: bool = True) -> Backtest:
    """The whole backtest of ``config`` over the candles that opened in [since, until)."""
    from ..base._config import interval_ms
    from ._replay import replay

    st = settings or EvalSettings()
    rep = replay(config, symbols, since, until, progress=progress, use_cache=use_cache)
    # The walk-forward runs between the replay and the evaluation: the replay's candles
    # (a gigabyte at a year of 100 symbols), let go at its end, stay with polars' allocator
    # for a second or two before the system gets them back (measured), and the
    # evaluation's arrays, made at once, came on top of them.
    periods = period_bounds(*_data_span(rep), st.walk_forward_periods)
    wf = walk_forward(config, rep.symbols, periods)
    table = forward_returns(rep.candidates, rep.closes, interval_ms(rep.interval),
                            st.horizons, st.cost_bps)
    about = (rep.interval, rep.since, rep.until, rep.symbols)
    # The replay is let go once the returns are found: the table keeps the candidates'
    # columns it shares, and the closes (200 MB at a year of 100 symbols) are not carried
    # into the statistics' peak.
    del rep
    ev = evaluate_table(table, *about, st)
    return Backtest(_label(config), ev, wf)


def _data_span(rep: Any) -> tuple[datetime, datetime]:
    """The part of the requested period the data covers: from its first candle in the
    period to the close of its last. Walk-forward periods cut over the request were years
    of nothing around a few days of data (``--since 0001-01-01``: four periods of 2,500
    years, one holding every row)."""
    from datetime import timedelta, timezone

    from ..base._config import interval_ms

    times = rep.closes.get_column("candle_time")  # every candle from ``since`` on
    if times.is_empty():
        return rep.since, rep.until
    step = timedelta(milliseconds=interval_ms(rep.interval))
    first, last = (t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t
                   for t in (times.min(), times.max()))
    return max(rep.since, first), min(rep.until, last + step)


@dataclass(frozen=True)
class Comparison:
    """Two configurations on the same symbols, period and evaluation settings."""

    base: Backtest
    other: Backtest

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "other": self.other.to_dict()}


def compare_backtests(config: Config, other: Config, symbols: Sequence[str], since: datetime,
                      until: datetime, *, settings: EvalSettings | None = None,
                      progress: Progress | None = None, use_cache: bool = True) -> Comparison:
    """``run_backtest`` of both; ``progress`` counts the two replays' candles as one task."""
    total: list[int] = [0]

    def first(done: int, n: int) -> None:
        total[0] = n
        if progress:
            progress(done, 2 * n)

    def second(done: int, n: int) -> None:
        if progress:
            progress(total[0] + done, total[0] + n)

    a = run_backtest(config, symbols, since, until, settings=settings, progress=first,
                     use_cache=use_cache)
    b = run_backtest(other, symbols, since, until, settings=settings, progress=second,
                     use_cache=use_cache)
    return Comparison(a, b)


# The CSV's columns, in order: the candidate, the gates' verdict, then the returns.
_CSV_HEAD = ("symbol", "candle_time", "close", "regime", "engine", "direction", "strength",
             "p_up", "p_dir", "gate_passed", "blocked_by", "gate_reasons", "data_status")


def write_csv(evaluation: Evaluation, path: Path) -> int:
    """Every candidate with its forward returns, one row each; returns the row count.
    ``ret_<h>`` is the price's return (a fraction), ``net_<h>`` the signed return after cost
    in bps; empty where the horizon candle does not exist."""
    import polars as pl

    from ..signals._results import iso

    hs = evaluation.settings.horizons
    cols = [*_CSV_HEAD, *(f"ret_{h}" for h in hs), *(f"net_{h}" for h in hs)]
    df = evaluation.table.with_columns(
        pl.col("blocked_by").cast(pl.List(pl.String)).list.join(";"),
        pl.col("gate_reasons").cast(pl.List(pl.String)).list.join("; "))
    try:
        with output_writer(path) as raw:
            fh = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            w = csv.writer(fh)
            w.writerow(cols)
            for row in df.select(cols).iter_rows():
                w.writerow([_cell(v, iso) for v in row])
            fh.flush()
            fh.detach()  # the handle is the writer's to close (and to rename into place)
    except OSError as exc:
        raise BotoptError(f"cannot write {path}: {exc.strerror or type(exc).__name__}",
                          file=str(path)) from exc
    return df.height


def _cell(v: Any, iso: Callable[[datetime], str]) -> Any:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return v
