from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional

import typer

from . import _options as opt
from ._context import AppState, get_state
from ._render import print_json, print_table

if TYPE_CHECKING:
    from ..core import SignalsResult

# Gate reasons as a narrow terminal shows them; --json and plain output keep the full text.
_SHORT = [(re.compile(p), r) for p, r in (
    (r"^no directional signal$", "no signal"),
    (r"^p_dir ", "p "),
    (r"^stale data: last candle (.*) ago$", r"stale \1"),
    (r"^warming up: (\d+) of (\d+) candles$", r"warm-up \1/\2"),
    (r"^strength ", "str "),
    (r"^no model probability$", "no prob"),
    (r"^no volume z-score$", "no vol z"),
    (r"^volume z ", "vol z "),
    (r"^correlated (\S+) with active (\S+) \w+$", r"corr \1 \2"),
    (r"^cooldown: \w+ signal at ", "cooldown "),
    (r"^regime ", ""),
    (r" < ", "<"),
)]


def short_reason(reason: str) -> str:
    for pat, repl in _SHORT:
        reason = pat.sub(repl, reason)
    return reason


def _full_rows(result: SignalsResult) -> list[tuple[Any, ...]]:
    return [(s.symbol, f"{s.candle_time:%Y-%m-%d %H:%M}", f"{s.close:.8g}",
             s.regime or "-", s.direction or "-",
             "-" if s.strength is None else f"{s.strength:.2f}",
             "-" if s.p_dir is None else f"{s.p_dir:.2f}",
             "-" if s.gate_passed is None else ("pass" if s.gate_passed else
                                                "block: " + "; ".join(s.gate_reasons)))
            for s in result.symbols]


def _terminal_table(state: AppState, result: SignalsResult) -> None:
    """Fit the console: short reasons wrapped one per line, fewer columns when narrow."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    width = state.console.width
    same_time = len({s.candle_time for s in result.symbols}) <= 1
    cols = ["symbol", "candle", "close", "regime", "signal", "str", "p(dir)", "gate"]
    if same_time or width < 72:
        cols.remove("candle")  # the title gives the one candle time
    if width < 66:
        cols.remove("close")
    if width < 56:
        cols.remove("str")
        cols.remove("p(dir)")
    first = result.symbols[0].candle_time if result.symbols else None
    title = f"signals as of {result.as_of:%Y-%m-%d %H:%M} UTC ({result.interval}"
    title += f", candle {first:%m-%d %H:%M})" if same_time and first else ")"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  expand=False)
    for c in cols:
        table.add_column(c, overflow="fold", no_wrap=c != "gate",
                         justify="right" if c in ("close", "str", "p(dir)") else "left")
    for s in result.symbols:
        if s.gate_passed is None:
            gate = Text("-")
        elif s.gate_passed:
            gate = Text("pass", style="bold green")
        else:
            gate = Text("\n".join(short_reason(r) for r in s.gate_reasons), style="red")
        cells: dict[str, str | Text] = {
                 "symbol": s.symbol, "candle": f"{s.candle_time:%m-%d %H:%M}",
                 "close": f"{s.close:.6g}", "regime": s.regime or "-",
                 "signal": s.direction or "-",
                 "str": "-" if s.strength is None else f"{s.strength:.2f}",
                 "p(dir)": "-" if s.p_dir is None else f"{s.p_dir:.2f}",
                 "gate": gate}
        table.add_row(*(cells[c] for c in cols))
    state.console.print(table)


@opt.candle_options
@opt.output_options
def signals(
    ctx: typer.Context,
    *,
    candles: opt.CandleArgs,
    out: opt.Output,
    no_cache: bool = typer.Option(False, "--no-cache", help="Bypass every cache."),
    notify: Optional[bool] = typer.Option(
        None, "--notify/--no-notify",
        help="Record cooldowns and queue notifications for passed signals. Default: only "
        "live runs do (not sample data, not an --as-of in the past)."),
) -> None:
    """Compute ranked, gated signals from the last closed candles of each symbol."""
    from ..core import (
        DataStatus,
        Workspace,
        is_live,
        parse_as_of,
        parse_symbols,
        run_events,
        run_signals,
    )

    state = get_state(ctx)
    cfg = state.config(announce_sample_data=True,
                       **candles.overrides())
    # Arguments are checked before the run is announced: a typo is the user's to fix
    # at the prompt, never a "signals failed" alert in the chat.
    syms = parse_symbols(candles.symbols if candles.symbols is not None else cfg.data.symbols)
    when = parse_as_of(candles.as_of)
    live = is_live(cfg, when)
    with run_events("signals", enabled=live,
                    sink=Workspace.of(cfg).events()) as counts:
        result = run_signals(cfg, syms, as_of=when, use_cache=not no_cache,
                             notify=notify)
        counts.update(symbols=len(result.symbols), passed=len(result.passed),
                      cached=result.from_cache,
                      stale=[s.symbol for s in result.symbols
                             if s.data_status == DataStatus.STALE])
    if result.clock == "sample":
        state.notice(f"sample data: the clock is the end of the bundled data, "
                     f"{result.as_of:%Y-%m-%d %H:%M} UTC (--as-of picks another moment); "
                     "nothing is recorded or queued")
    elif not result.recorded and any(s.gate_passed for s in result.symbols):
        state.notice("not a live run: nothing recorded or queued (--notify queues)")
    if out.json:
        print_json(result.to_dict())
        return
    if out.quiet:
        return
    if state.is_terminal:
        _terminal_table(state, result)
        return
    print_table(state, f"signals as of {result.as_of:%Y-%m-%d %H:%M} UTC "
                f"({result.interval}, {result.source})",
                ["symbol", "candle (UTC)", "close", "regime", "signal", "strength",
                 "p(dir)", "gate"], _full_rows(result))


def register(app: typer.Typer) -> None:
    app.command("signals")(signals)
