from __future__ import annotations

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json


@opt.output_options
def doctor(
    ctx: typer.Context,
    *,
    send_test: bool = typer.Option(False, "--send-test", help="Also send a Telegram test "
                                   "message to the configured chat."),
    out: opt.Output,
) -> None:
    """Check config, data, cache, Telegram, model and monitor; say what to fix."""
    from ..core import Check, run_checks
    from ..core.errors import ConfigError

    state = get_state(ctx)
    try:
        cfg = state.config()
    except ConfigError as exc:  # nothing else can be checked without a config
        checks = [Check("config", False, str(exc))]
    else:
        checks = run_checks(cfg, send_test=send_test)
    failed = [c for c in checks if not c.ok]
    if out.json:
        print_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    elif not out.quiet or failed:
        for c in checks:
            if out.quiet and c.ok:
                continue
            mark = "ok  " if c.ok else "FAIL"
            if state.is_terminal:
                mark = f"[green]{mark}[/green]" if c.ok else f"[bold red]{mark}[/bold red]"
                from rich.markup import escape

                state.console.print(f"{mark} {c.name:<9} {escape(c.message)}",
                                    soft_wrap=True,
                                    markup=True, highlight=False)
            else:
                print(f"{mark} {c.name:<9} {c.message}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
