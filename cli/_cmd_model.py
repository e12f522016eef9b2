from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_table


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(help="Train and inspect the prediction model.", no_args_is_help=True)
    app.add_typer(model_app, name="model")

    @model_app.command("train")
    def train(
        ctx: typer.Context,
        symbols: Optional[str] = opt.SYMBOLS,
        interval: Optional[str] = opt.INTERVAL,
        source: Optional[str] = opt.SOURCE,
        data_dir: Optional[Path] = opt.DATA_DIR,
        as_of: Optional[str] = opt.AS_OF,
        output: Optional[Path] = typer.Option(
            None, "--output", "-o", help="Where to save the model JSON (default: "
            "model.json in the cache directory). Point model.path at it to use it."),
        holdout: float = typer.Option(0.2, "--holdout", min=0.05, max=0.5,
                                      help="Fraction of the latest candles held out."),
        json_out: bool = opt.JSON,
    ) -> None:
        """Train the logistic-regression model; report holdout accuracy vs the majority."""
        from ..core import train_and_save

        state = get_state(ctx)
        cfg = state.config(announce_sample_data=True,
                           **opt.data_overrides(interval, source, data_dir))
        result, path = train_and_save(cfg, symbols, as_of=as_of, output=output,
                                      holdout_fraction=holdout)
        if json_out:
            print_json({**result.to_dict(), "path": str(path)})
            return
        if state.quiet:
            return
        print_table(state, f"model {result.model.version} saved to {path}",
                    ["", "accuracy", "log loss"],
                    [("model (holdout)", f"{result.accuracy:.4f}", f"{result.log_loss:.4f}"),
                     ("majority baseline", f"{result.baseline_accuracy:.4f}",
                      f"{result.baseline_log_loss:.4f}")])
        state.notice(f"trained on {result.train_rows} rows, held out {result.holdout_rows} "
                     f"from {result.holdout_start}")
