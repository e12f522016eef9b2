from __future__ import annotations

from pathlib import Path

import typer

from ._context import get_state


def init(
    ctx: typer.Context,
    path: Path = typer.Argument(Path("botopt.toml"), help="Where to write the config."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter botopt.toml."""
    from ..core import write_starter_config

    written = write_starter_config(path, force=force)
    get_state(ctx).notice(f"wrote {written}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
