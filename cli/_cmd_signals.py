from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("signals")
    def signals(ctx: typer.Context) -> None:
        """Compute ranked, gated signals for the last closed candles (in progress)."""
        raise typer.Exit(1)
