from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json


@opt.output_options
def metrics(
    ctx: typer.Context,
    *,
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", dir_okay=False,
        help="Write the figures to this *.prom file (atomically, for node_exporter's "
        "textfile collector) instead of printing them."),
    out: opt.Output,
) -> None:
    """Prometheus figures: last successful run per command, durations, signals passed
    and blocked per gate, cache hit ratios, queue depth, dead letters and 429s.

    Exit 1 when a source could not be read (the file is still written, with
    botopt_metrics_source_errors saying which)."""
    from ..core import BotoptError, collect_metrics, write_textfile

    state = get_state(ctx)
    result = collect_metrics(state.config())
    if output is not None:
        write_textfile(output, result.text)
    if out.json:
        print_json({"families": result.families, "samples": result.samples,
                    "errors": result.errors, "text": result.text})
    elif output is None:
        print(result.text, end="")
    elif not out.quiet:
        print(f"wrote {result.samples} sample(s) of {result.families} metric(s) to {output}")
    if result.errors:
        raise BotoptError("metrics: cannot read " + "; ".join(
            f"{source} ({why})" for source, why in result.errors.items()))


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics)
