from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from botopt.cli import _options as opt
from botopt.cli._context import get_state
from botopt.cli._render import print_json, print_matrix


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
        from botopt.core import load_candles, parse_as_of, resolve_symbols, update_correlation

        state = get_state(ctx)
        cfg = state.config(announce_sample_data=True,
                           **opt.data_overrides(interval, source, data_dir),
                           correlation__window=window)
        syms = resolve_symbols(symbols, cfg)
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
        print_matrix(state, title, syms, data["matrix"])
