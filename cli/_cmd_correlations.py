from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from botopt.cli import _options as opt
from botopt.cli._context import get_state
from botopt.cli._render import print_json


def _style(v: float | None) -> str:
    if v is None:
        return "dim"
    if v >= 0.8:
        return "bold white on red"
    if v >= 0.5:
        return "black on dark_orange"
    if v >= 0.2:
        return "black on yellow"
    if v > -0.2:
        return ""
    return "white on blue"


def register(app: typer.Typer) -> None:
    @app.command("correlations")
    def correlations(
        ctx: typer.Context,
        symbols: Optional[str] = opt.SYMBOLS,
        interval: Optional[str] = opt.INTERVAL,
        source: Optional[str] = opt.SOURCE,
        data_dir: Optional[Path] = opt.DATA_DIR,
        as_of: Optional[str] = opt.AS_OF,
        window: Optional[int] = typer.Option(None, "--window", min=2,
                                             help="Window in candles (default: "
                                             "correlation.window)."),
        full: bool = typer.Option(False, "--full", help="Recompute from scratch instead of "
                                  "updating the stored state."),
        json_out: bool = opt.JSON,
    ) -> None:
        """Rolling correlation matrix of log returns, updated incrementally."""
        from botopt.core import load_candles, parse_as_of, parse_symbols, update_correlation

        state = get_state(ctx)
        cfg = state.config(announce_sample_data=True,
                           **opt.data_overrides(interval, source, data_dir),
                           correlation__window=window)
        syms = parse_symbols(symbols if symbols is not None else cfg.data.symbols)
        win = cfg.correlation.window
        candles = load_candles(syms, config=cfg, as_of=parse_as_of(as_of), limit=win + 1)
        result = update_correlation(cfg, candles, full=full)
        data = result.to_dict()
        if json_out:
            print_json(data)
            return
        if state.quiet:
            return
        title = f"correlation of {cfg.data.interval} log returns, last {win} candles to " \
                f"{data['as_of']}"
        if not state.is_terminal:
            width = max(len(s) for s in syms)
            # columns as wide as the longest name: XRP/USDT:USDT cut to 7 read as XRP/USD
            col = max(7, width)
            print(title)
            print(" " * width + "  " + "  ".join(f"{s:>{col}}" for s in syms))
            for s, row in zip(syms, data["matrix"], strict=True):
                cells = "  ".join(f"{'-':>{col}}" if v is None else f"{v:{col}.3f}"
                                  for v in row)
                print(f"{s:<{width}}  {cells}")
            return
        from rich.table import Table

        table = Table(title=title)
        table.add_column("")
        for s in syms:
            table.add_column(s, justify="right")
        for s, row in zip(syms, data["matrix"], strict=True):
            table.add_row(s, *(f"[{_style(v)}]{'-' if v is None else f'{v:.2f}'}[/]"
                               if _style(v) else ('-' if v is None else f"{v:.2f}")
                               for v in row))
        state.console.print(table)
