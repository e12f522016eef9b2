from __future__ import annotations

from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_table


@opt.output_options
def history(
    ctx: typer.Context,
    *,
    since: Optional[str] = typer.Option(None, "--since", help="How far back: 30m, 12h, "
                                        "7d or an ISO time (default: 24h)."),
    type_: Optional[str] = typer.Option(None, "--type", "-t", help="Comma-separated: "
                                        "signal, regime, flush, failure (default: all)."),
    out: opt.Output,
) -> None:
    """Signals that passed, regime changes, flushes and failures, from the event log."""
    from ..core import history as read_history
    from ..core.watch._history import iso_time, now, parse_since, parse_types

    state = get_state(ctx)
    t0 = parse_since(since, now())
    kinds = parse_types(type_)
    events = read_history(state.config(), since=t0, types=kinds)
    if out.json:
        print_json({"since": iso_time(t0), "events": events})
        return
    if out.quiet:
        return
    rows = [(e["time"].replace("T", " ").rstrip("Z"), e["type"], e["summary"])
            for e in events]
    if any("host" in e for e in events):  # several hosts: which one each came from
        print_table(state, f"{len(events)} event(s)", ["time (UTC)", "host", "type", "what"],
                    [(t, e.get("host", "-"), kind, what)
                     for (t, kind, what), e in zip(rows, events, strict=True)])
        return
    print_table(state, f"{len(events)} event(s)", ["time (UTC)", "type", "what"], rows)


def register(app: typer.Typer) -> None:
    app.command("history")(history)
