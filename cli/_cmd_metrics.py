from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from botopt.cli import _options as opt
from botopt.cli._context import get_state
from botopt.cli._render import print_json


def register(app: typer.Typer) -> None:
    @app.command("metrics")
    def metrics(
        ctx: typer.Context,
        output: Optional[Path] = typer.Option(
            None, "--output", "-o", dir_okay=False,
            help="Write the figures to this *.prom file (atomically, for node_exporter's "
            "textfile collector) instead of printing them."),
        json_out: bool = opt.JSON,
    ) -> None:
        """Prometheus figures: last successful run per command, durations, signals passed
        and blocked per gate, cache hit ratios, queue depth, dead letters and 429s.

        Exit 1 when a source could not be read (the file is still written, with
        botopt_metrics_source_errors saying which)."""
        from botopt.core import BotoptError, collect_metrics, write_textfile

        state = get_state(ctx)
        result = collect_metrics(state.config())
        if output is not None:
            write_textfile(output, result.text)
        if json_out:
            print_json({"families": result.families, "samples": result.samples,
                        "errors": result.errors, "text": result.text})
        elif output is None:
            print(result.text, end="")
        elif not state.quiet:
            print(f"wrote {result.samples} sample(s) of {result.families} metric(s) to "
                  f"{output}")
        if result.errors:
            raise BotoptError("metrics: cannot read " + "; ".join(
                f"{source} ({why})" for source, why in result.errors.items()))
