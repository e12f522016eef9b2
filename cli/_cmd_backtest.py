from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from . import _options as opt
from ._context import AppState, get_state
from ._render import print_json, print_table

if TYPE_CHECKING:
    from ..core import Backtest, Curve, Group, Stats

_BARS = "▁▂▃▄▅▆▇█"
# Off a terminal a long symbol list would bury the rest; --json and --csv carry them all.
_MAX_SYMBOL_ROWS = 20


def sparkline(curve: Curve, since: datetime, until: datetime, width: int = 20) -> str:
    """The curve's level at the end of each of ``width`` equal slices of the period."""
    if not curve.times:
        return ""
    span = (until - since) / width
    levels, k, level = [], 0, 0.0
    for i in range(width):
        end = since + span * (i + 1)
        while k < len(curve.times) and curve.times[k] < end:
            level = curve.cum_bps[k]
            k += 1
        levels.append(level)
    lo, hi = min(levels), max(levels)
    if hi == lo:
        return _BARS[3] * width
    return "".join(_BARS[round((v - lo) / (hi - lo) * (len(_BARS) - 1))] for v in levels)


def _num(v: float | None, spec: str = "+.1f") -> str:
    return "-" if v is None else format(v, spec)


def _cell(s: Stats) -> str:
    """``-6.9 t-2.0 45%``: mean net bps, its t-stat, the hit rate (n in the signals column)."""
    if s.n == 0:
        return "-"
    hit = "-" if s.hit_rate is None else f"{100 * s.hit_rate:.0f}%"
    t = "" if s.t_stat is None else f" t{s.t_stat:+.1f}"
    return f"{_num(s.mean_bps)}{t} {hit}"


def _group_rows(run: Backtest, spark: bool) -> list[list[Any]]:
    ev = run.evaluation
    curves = {c.name: c for c in ev.curves}
    groups: list[Group] = [ev.overall]
    for by in ("engine", "regime", "direction", "symbol"):
        part = list(ev.breakdown(by))
        if by == "symbol" and len(part) > _MAX_SYMBOL_ROWS:
            continue
        groups += part
    rows = []
    for g in groups:
        row: list[Any] = [g.by, g.value, g.candidates, g.signals,
                          *(_cell(s) for s in g.returns)]
        if g.by in ("all", "engine"):
            c = curves.get(g.value)
            last = c.cum_bps[-1] if c and c.cum_bps else None
            row.append((sparkline(c, ev.since, ev.until) + " " if spark and c else "")
                       + _num(last, "+.0f"))
        else:
            row.append("")
        rows.append(row)
    return rows


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _render(state: AppState, run: Backtest) -> None:
    from ..core import fmt_minute

    ev = run.evaluation
    hs = ev.settings.horizons
    spark = state.is_terminal
    head = f"backtest {fmt_minute(ev.since)} to {fmt_minute(ev.until)} UTC " \
           f"({ev.interval}, {_count(len(ev.symbols), 'symbol')}, {run.label}); net bps after " \
           f"{ev.settings.cost_bps + 0.0:g} bps cost: mean, t-stat, hit rate"
    print_table(state, head, ["by", "group", "candidates", "signals",
                              *(f"h={h}" for h in hs), "cum bps (h=1)"],
                _group_rows(run, spark))
    rows = [[g.gate, g.blocked, g.alone, *(_cell(s) for s in g.returns)] for g in ev.gates]
    rows.append(["(passed)", ev.overall.signals, "", *(_cell(s) for s in ev.overall.returns)])
    print_table(state, "what the gates did: the candidates each gate blocked (alone: no other "
                "gate did) next to the passed signals", ["gate", "candidates", "alone",
                                                         *(f"h={h}" for h in hs)], rows)
    print_table(state, "information coefficient (Spearman across symbols per candle)",
                ["factor", "h", "candles", "mean", "std", "t"],
                [[i.factor, i.horizon, i.periods, _num(i.mean, "+.4f"), _num(i.std, ".4f"),
                  _num(i.t_stat, "+.2f")] for i in ev.ic])
    print_table(state, "model walk-forward (trained only on earlier data) vs the majority "
                "baseline", ["from", "to", "train", "test", "accuracy", "majority",
                             "log loss", "baseline", "note"],
                [[fmt_minute(p.start), fmt_minute(p.end), p.train_rows,
                  p.test_rows, _num(p.accuracy, ".3f"), _num(p.baseline_accuracy, ".3f"),
                  _num(p.log_loss, ".4f"), _num(p.baseline_log_loss, ".4f"),
                  p.skipped or p.note or ""] for p in run.walk_forward])


def _render_compare(state: AppState, a: Backtest, b: Backtest) -> None:
    hs = a.evaluation.settings.horizons
    other = {(g.by, g.value): g for g in (b.evaluation.overall, *b.evaluation.groups)}
    rows = []
    for g in (a.evaluation.overall, *a.evaluation.groups):
        if g.by == "symbol" and len(a.evaluation.breakdown("symbol")) > _MAX_SYMBOL_ROWS:
            continue
        h = other.pop((g.by, g.value), None)
        rows.append([g.by, g.value, g.signals, h.signals if h else 0,
                     *(x for i in range(len(hs)) for x in (
                         _cell(g.returns[i]), _cell(h.returns[i]) if h else "-"))])
    for (by, value), h in other.items():  # groups only the other configuration has
        if by != "symbol" or len(b.evaluation.breakdown("symbol")) <= _MAX_SYMBOL_ROWS:
            rows.append([by, value, 0, h.signals,
                         *(x for s in h.returns for x in ("-", _cell(s)))])
    print_table(state, f"A = {a.label}, B = {b.label}: passed signals, net bps after "
                f"{a.evaluation.settings.cost_bps + 0.0:g} bps cost (mean, t-stat, hit rate)",
                ["by", "group", "signals A", "signals B",
                 *(f"h={h} {x}" for h in hs for x in "AB")], rows)


@contextmanager
def _progress(state: AppState) -> Iterator[Callable[[int, int], None] | None]:
    if not state.shows_progress:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=state.err, transient=True) as bar:
        task = bar.add_task("replaying candles", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@opt.output_options
def backtest(
    ctx: typer.Context,
    *,
    since: str = typer.Option(..., "--since", help="First candle open time (ISO 8601, "
                              "UTC if no offset), e.g. 2018-01-20."),
    until: str = typer.Option(..., "--until", help="End of the period: candles that "
                              "open before it are replayed."),
    symbols: Optional[str] = opt.SYMBOLS,
    interval: Optional[str] = opt.INTERVAL,
    source: Optional[str] = opt.SOURCE,
    data_dir: Optional[Path] = opt.DATA_DIR,
    horizons: str = typer.Option("1,3,12", "--horizons", help="Forward-return horizons "
                                 "in candles, comma-separated."),
    cost_bps: float = typer.Option(10.0, "--cost-bps", help="Fees and slippage per "
                                   "round trip, in basis points, taken from every return."),
    out: opt.Output,
    csv_file: Optional[Path] = typer.Option(None, "--csv", dir_okay=False,
                                            help="Write every candidate with its forward "
                                            "returns to this CSV file."),
    report: Optional[Path] = typer.Option(None, "--report", dir_okay=False,
                                          help="Write a self-contained FILE.html (curves "
                                          "and breakdowns) or FILE.png (curves); needs "
                                          "botopt[report]."),
    compare: Optional[Path] = typer.Option(None, "--compare", dir_okay=False,
                                           help="A second botopt.toml, backtested on the "
                                           "same period and shown side by side."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Bypass every cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (and "
                               "--json); files are still written."),
) -> None:
    """Replay the signals over a past period and report what following them earned:
    forward returns per engine, regime, direction, symbol and gate, the information
    coefficient and the model walk-forward. Records nothing, notifies no one."""
    from ..core import (
        EvalSettings,
        compare_backtests,
        load_config,
        parse_horizons,
        parse_time,
        resolve_symbols,
        run_backtest,
    )

    state = get_state(ctx)
    state.quiet = out.quiet or quiet
    overrides = opt.data_overrides(interval, source, data_dir)
    cfg = state.config(announce_sample_data=True, **overrides)
    # Everything the user typed is checked before the (long) replay starts.
    settings = EvalSettings(horizons=parse_horizons(horizons), cost_bps=cost_bps)
    syms = resolve_symbols(symbols, cfg)
    t0, t1 = parse_time(since, "--since"), parse_time(until, "--until")
    if report is not None and report.suffix.lower() not in (".html", ".htm", ".png"):
        from ..core import UsageError

        raise UsageError(f"--report {report}: name a .html or .png file")
    other_cfg = None
    if compare is not None:
        flags = {k.replace("__", "."): v for k, v in overrides.items() if v is not None}
        if state.cache_dir is not None:
            flags["cache.dir"] = str(state.cache_dir)
        other_cfg = load_config(compare, overrides=flags)
    with _progress(state) as progress:
        if other_cfg is None:
            runs = [run_backtest(cfg, syms, t0, t1, settings=settings, progress=progress,
                                 use_cache=not no_cache)]
        else:
            cmp = compare_backtests(cfg, other_cfg, syms, t0, t1, settings=settings,
                                    progress=progress, use_cache=not no_cache)
            runs = [cmp.base, cmp.other]
    _outputs(state, runs, csv_file, report)
    if out.json:
        print_json(runs[0].to_dict() if len(runs) == 1 else
                   {"base": runs[0].to_dict(), "other": runs[1].to_dict()})
    elif not state.quiet:
        if len(runs) == 1:
            _render(state, runs[0])
        else:
            _render_compare(state, runs[0], runs[1])


def _outputs(state: AppState, runs: Sequence[Backtest], csv_file: Path | None,
             report: Path | None) -> None:
    from ..core import write_csv, write_report

    if csv_file is not None:
        n = write_csv(runs[0].evaluation, csv_file)
        state.notice(f"wrote {n} candidates to {csv_file}")
    if report is not None:
        write_report(runs, report)
        state.notice(f"wrote the report to {report}")


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
