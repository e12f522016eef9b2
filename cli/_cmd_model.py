from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_table

model_app = typer.Typer(help="Train and inspect the prediction model.", no_args_is_help=True)

@model_app.command("train")
@opt.candle_options
@opt.output_options
def train(
    ctx: typer.Context,
    *,
    candles: opt.CandleArgs,
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Where to save the model JSON (default: "
        "model.json in the cache directory). Point model.path at it to use it."),
    holdout: float = typer.Option(0.2, "--holdout", min=0.05, max=0.5,
                                  help="Fraction of the latest candles held out."),
    out: opt.Output,
) -> None:
    """Train the logistic-regression model; report holdout accuracy vs the majority."""
    from ..core import resolve_symbols, train_and_save

    state = get_state(ctx)
    cfg = state.config(announce_sample_data=True,
                       **candles.overrides())
    # the symbols as every candle command reads them: a list, "all" or @FILE
    syms = resolve_symbols(candles.symbols, cfg)
    result, path = train_and_save(cfg, syms, as_of=candles.as_of, output=output,
                                  holdout_fraction=holdout)
    if out.json:
        print_json({**result.to_dict(), "path": str(path)})
        return
    if out.quiet:
        return
    print_table(state, f"model {result.model.version} saved to {path}",
                ["", "accuracy", "log loss"],
                [("model (holdout)", f"{result.accuracy:.4f}", f"{result.log_loss:.4f}"),
                 ("majority baseline", f"{result.baseline_accuracy:.4f}",
                  f"{result.baseline_log_loss:.4f}")])
    state.notice(f"trained on {result.train_rows} rows, held out {result.holdout_rows} "
                 f"from {result.holdout_start}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
