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
    no_fetch: bool = typer.Option(False, "--no-fetch", help="Leave the fetch line out "
                                  "whatever data.feeder says (freqtrade feeds the data)."),
    metrics_file: Optional[Path] = typer.Option(
        None, "--metrics-file", dir_okay=False, help="Add the job that writes `botopt "
        "metrics` to this *.prom file in node_exporter's textfile directory (default: "
        "the line is there, commented out)."),
    systemd: bool = typer.Option(False, "--systemd", help="Print a systemd user unit for "
                                 "the long-running monitor instead."),
) -> None:
    """Print a crontab for this install (absolute paths, log directory, flock)."""
    from ..core import crontab, systemd_unit
    from ..core.watch._cron import default_log_dir, make_log_dir

    state = get_state(ctx)
    cfg = state.config()
    if systemd:
        print(systemd_unit(cfg), end="")
        return
    logs = make_log_dir(log_dir or default_log_dir())
    plan = crontab(cfg, logs, symbols=symbols, fetch_every=fetch_every, fetch=not no_fetch,
                   metrics_file=metrics_file)
    print(plan.text, end="")
    state.notice(f"logs go to {logs}; install with: botopt cron > botopt.cron && "
                 "crontab botopt.cron (replaces your crontab; see docs/cron.md)")


def register(app: typer.Typer) -> None:
    app.command("cron")(cron)
