from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._context import get_state


def cron(
    ctx: typer.Context,
    symbols: Optional[str] = opt.SYMBOLS,
    log_dir: Optional[Path] = typer.Option(
        None, "--log-dir", file_okay=False, help="Where the jobs' logs and locks go; "
        "created if missing (default: the user log directory)."),
    fetch_every: int = typer.Option(5, "--fetch-every", min=1, max=59,
                                    help="Minutes between fetches of the local store."),
    systemd: bool = typer.Option(False, "--systemd", help="Print a systemd user unit for "
                                 "the long-running monitor instead."),
) -> None:
    """Print a crontab for this install (absolute paths, log directory, flock)."""
    from ..core import crontab, parse_symbols, systemd_unit
    from ..core.watch._cron import default_log_dir, make_log_dir

    state = get_state(ctx)
    cfg = state.config()
    if systemd:
        print(systemd_unit(cfg), end="")
        return
    syms = parse_symbols(symbols) if symbols is not None else None
    logs = make_log_dir(log_dir or default_log_dir())
    plan = crontab(cfg, logs, symbols=syms, fetch_every=fetch_every)
    print(plan.text, end="")
    state.notice(f"logs go to {logs}; install with: botopt cron > botopt.cron && "
                 "crontab botopt.cron (replaces your crontab; see docs/cron.md)")


def register(app: typer.Typer) -> None:
    app.command("cron")(cron)
