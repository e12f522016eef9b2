from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._context import get_state
from ._render import print_json, print_table


def bench(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, two groups at a "
                               "time: a smoke run in under a minute (the full run's figures "
                               "are the ones of record)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", file_okay=False,
                                            help="Also replay cron runs over this "
                                            "directory of 5m candle files."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON rows."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table."),
) -> None:
    """Measure botopt's speed-ups side by side and check the results are identical."""
    from ..benchmarks.suite import MODULES, run_all
    from ..benchmarks.suite import markdown as to_markdown
    from ._render import progress

    state = get_state(ctx)
    with progress(state, "benchmarks", len(MODULES)) as advance:
        seen: list[str] = []

        def step(name: str) -> None:
            if seen:
                advance()
            seen.append(name)

        rows = run_all(quick, data_dir, step)
        advance()
    if json_out:
        print_json([r.to_dict() for r in rows])
    elif markdown:
        print(to_markdown(rows), end="")
    elif not state.quiet:
        print_table(state, "botopt bench" + (" --quick" if quick else ""),
                    ["area", "case", "before", "after", "result", "claim", "identical"],
                    [(r.group, r.case, r.before, r.after, r.result, r.claim or "",
                      "-" if r.identical is None else
                      str(r.identical) + ("" if r.max_diff is None else
                                          f" ({r.max_diff:.1e})")) for r in rows])


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
