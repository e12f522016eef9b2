from __future__ import annotations

import typer

from ._context import get_state
from ._render import print_json, print_table

config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)

@config_app.command("show")
def show(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print every setting in effect, where it came from, secrets masked."""
    from ..core import config_items

    state = get_state(ctx)
    cfg = state.config(announce_sample_data=True)
    from ..core.state._paths import cache_dir_for

    # The cache directory in use, not "None": it is where queues and state live.
    rows = [(k, str(cache_dir_for(cfg)), f"{src} (platform cache directory)")
            if k == "cache.dir" and v is None else (k, v, src)
            for k, v, src in config_items(cfg)]
    if json_out:
        print_json({"path": str(cfg.path) if cfg.path else None,
                    "settings": {k: {"value": v, "source": s} for k, v, s in rows}})
        return
    if state.quiet:
        return
    title = f"config: {cfg.path}" if cfg.path else "config: no file (defaults)"
    print_table(state, title, ["key", "value", "source"], rows)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
