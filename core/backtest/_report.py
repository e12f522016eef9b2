"""``--report FILE.html|.png``: the cumulative return curves and the breakdowns as one
self-contained file. Drawn with matplotlib (the ``botopt[report]`` extra), imported here only:
it writes SVG that an HTML page embeds inline (no script, no network, a few tens of KB, opens
anywhere) and PNG from the same figure, where plotly would inline megabytes of JavaScript."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..base._fs import output_writer
from ..base._numfmt import fmt_minute
from ..errors import BotoptError, UsageError
from ._evaluate import Group, Stats
from ._run import Backtest

EXTRA = "pip install 'botopt[report]'"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(f"--report needs matplotlib: {EXTRA}", key="--report") from None
    matplotlib.use("Agg")  # files only: never a window, never a display server
    import matplotlib.pyplot as plt

    return plt


def _figure(runs: Sequence[Backtest]) -> Any:
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 3.6 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        for c in run.evaluation.curves:
            ax.step(list(c.times), list(c.cum_bps), where="post", label=c.name,
                    linewidth=2.2 if c.name == "all" else 1.2)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(f"{run.label}: cumulative net return of passed signals, one candle "
                     f"each (bps, cost {run.evaluation.settings.cost_bps:g})", fontsize=9)
        ax.set_ylabel("bps")
        if run.evaluation.curves and run.evaluation.curves[0].times:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no passed signal with a next candle", ha="center",
                    transform=ax.transAxes)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def write_report(runs: Sequence[Backtest], path: Path) -> Path:
    """``path`` ending .html: a page with the curves (inline SVG) and every breakdown;
    .png: the curves alone. Two runs are a comparison, drawn one above the other."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise UsageError(f"--report {path}: name a .html or .png file", file=str(path))
    fig = _figure(runs)
    plt = _pyplot()
    try:
        if suffix == ".png":
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=110)
            data = png.getvalue()
        else:
            buf = io.StringIO()
            fig.savefig(buf, format="svg")
            data = _page(runs, buf.getvalue()).encode("utf-8")
        with output_writer(path) as fh:
            fh.write(data)
    except OSError as exc:
        raise BotoptError(f"cannot write {path}: {exc.strerror or type(exc).__name__}",
                          file=str(path)) from exc
    finally:
        plt.close(fig)
    return path


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _stats_cells(s: Stats) -> str:
    ci = "-" if s.ci_low_bps is None else f"{s.ci_low_bps:.1f} .. {s.ci_high_bps:.1f}"
    return "".join(f"<td>{html.escape(x)}</td>" for x in (
        str(s.n), _fmt(None if s.hit_rate is None else 100 * s.hit_rate), _fmt(s.mean_bps),
        _fmt(s.median_bps), ci, _fmt(s.t_stat, ".2f")))


_STATS_HEAD = "<th>n</th><th>hit %</th><th>mean</th><th>median</th><th>95% CI</th><th>t</th>"


def _group_table(title: str, groups: Sequence[Group], horizons: Sequence[int]) -> str:
    rows = []
    for g in groups:
        for i, h in enumerate(horizons):
            lead = (f"<td rowspan={len(horizons)}>{html.escape(g.value)}</td>"
                    f"<td rowspan={len(horizons)}>{g.candidates}</td>"
                    f"<td rowspan={len(horizons)}>{g.signals}</td>") if i == 0 else ""
            rows.append(f"<tr>{lead}<td>{h}</td>{_stats_cells(g.returns[i])}"
                        f"{_stats_cells(g.candidate_returns[i])}</tr>")
    return (f"<h3>{html.escape(title)}</h3><table><tr><th rowspan=2></th>"
            "<th rowspan=2>candidates</th><th rowspan=2>signals</th><th rowspan=2>h</th>"
            "<th colspan=6>signals (passed), net bps</th>"
            "<th colspan=6>all candidates, net bps</th></tr>"
            f"<tr>{_STATS_HEAD}{_STATS_HEAD}</tr>{''.join(rows)}</table>")


def _section(run: Backtest) -> str:
    ev = run.evaluation
    hs = ev.settings.horizons
    parts = [f"<h2>{html.escape(run.label)}</h2>",
             _group_table("overall", [ev.overall], hs)]
    for by in ("engine", "regime", "direction", "symbol"):
        parts.append(_group_table(f"by {by}", ev.breakdown(by), hs))
    gate_rows = "".join(
        f"<tr><td>{html.escape(g.gate)}</td><td>{g.blocked}</td><td>{g.alone}</td>"
        f"<td>{h}</td>{_stats_cells(g.returns[i])}{_stats_cells(ev.overall.returns[i])}</tr>"
        for g in ev.gates for i, h in enumerate(hs))
    parts.append("<h3>what the gates did (blocked next to passed)</h3><table><tr>"
                 "<th>gate</th><th>blocked</th><th>alone</th><th>h</th>"
                 f"{_STATS_HEAD}{_STATS_HEAD}</tr>{gate_rows}</table>")
    ic_rows = "".join(f"<tr><td>{i.factor}</td><td>{i.horizon}</td><td>{i.periods}</td>"
                      f"<td>{_fmt(i.mean, '.4f')}</td><td>{_fmt(i.std, '.4f')}</td>"
                      f"<td>{_fmt(i.t_stat, '.2f')}</td></tr>" for i in ev.ic)
    parts.append("<h3>information coefficient</h3><table><tr><th>factor</th><th>h</th>"
                 f"<th>candles</th><th>mean</th><th>std</th><th>t</th></tr>{ic_rows}</table>")
    wf_rows = "".join(
        f"<tr><td>{fmt_minute(p.start)}</td><td>{fmt_minute(p.end)}</td>"
        f"<td>{p.train_rows}</td><td>{p.test_rows}</td><td>{_fmt(p.accuracy, '.3f')}</td>"
        f"<td>{_fmt(p.baseline_accuracy, '.3f')}</td><td>{_fmt(p.log_loss, '.4f')}</td>"
        f"<td>{_fmt(p.baseline_log_loss, '.4f')}</td>"
        f"<td>{html.escape(p.skipped or p.note or '')}</td>"
        "</tr>" for p in run.walk_forward)
    parts.append("<h3>model walk-forward</h3><table><tr><th>from</th><th>to</th><th>train</th>"
                 "<th>test</th><th>accuracy</th><th>majority</th><th>log loss</th>"
                 f"<th>baseline</th><th></th></tr>{wf_rows}</table>")
    return "\n".join(parts)


def _page(runs: Sequence[Backtest], svg: str) -> str:
    ev = runs[0].evaluation
    title = (f"botopt backtest {fmt_minute(ev.since)} to {fmt_minute(ev.until)} UTC, "
             f"{ev.interval}, {len(ev.symbols)} symbol{'' if len(ev.symbols) == 1 else 's'}")
    svg = svg[svg.index("<svg"):]  # the XML prolog and doctype are not for inline SVG
    style = ("body{font-family:sans-serif;font-size:13px;margin:2em}"
             "table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "th{background:#f3f3f3}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{style}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>symbols: {html.escape(', '.join(ev.symbols))};"
            f" horizons {', '.join(map(str, ev.settings.horizons))} candles; cost "
            f"{ev.settings.cost_bps:g} bps per round trip. Returns are signed by the signal's "
            f"direction, after cost. See docs/backtest.md for what each figure means.</p>"
            f"<div class='curves'>{svg}</div>"
            + "".join(_section(r) for r in runs) + "</body></html>\n")
