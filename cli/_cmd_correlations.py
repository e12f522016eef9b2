from __future__ import annotations

from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_matrix


@opt.candle_options
@opt.output_options
def correlations(
    ctx: typer.Context,
    *,
    candles: opt.CandleArgs,
    window: Optional[int] = typer.Option(None, "--window", min=2,
                                         help="Window in candles (default: "
                                         "correlation.window)."),
    full: bool = typer.Option(False, "--full", help="Recompute from scratch instead of "
                              "updating the stored state."),
    out: opt.Output,
) -> None:
    """Rolling correlation matrix of log returns, updated incrementally."""
    from ..core import load_candles, parse_as_of, parse_symbols, update_correlation

    state = get_state(ctx)
    cfg = state.config(announce_sample_data=True,
                       **candles.overrides(),
                       correlation__window=window)
    syms = parse_symbols(candles.symbols if candles.symbols is not None else cfg.data.symbols)
    win = cfg.correlation.window
    frames = load_candles(syms, config=cfg, as_of=parse_as_of(candles.as_of), limit=win + 1)
    result = update_correlation(cfg, frames, full=full)
    data = result.to_dict()
    if out.json:
        print_json(data)
        return
    if out.quiet:
        return
    title = f"correlation of {cfg.data.interval} log returns, last {win} candles to " \
            f"{data['as_of']}"
    print_matrix(state, title, syms, data["matrix"])


def register(app: typer.Typer) -> None:
    app.command("correlations")(correlations)
