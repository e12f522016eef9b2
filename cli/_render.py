"""Rendering helpers: rich tables on a terminal, aligned plain text elsewhere, JSON on demand."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botopt.cli._context import AppState


def iso(t: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC (``2026-09-20T12:00:00.123Z``), as every JSON shows it."""
    if t is None:
        return None
    from datetime import datetime, timezone

    try:
        return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # a damaged state file's absurd time
        return str(t)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with "…" saying so."""
    return text if len(text) <= width else text[: width - 1] + "…"


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n")


def print_table(state: AppState, title: str | None, columns: Sequence[str],
                rows: Sequence[Sequence[Any]], styles: Sequence[str | None] | None = None) -> None:
    """A rich table on a terminal; tab-free aligned plain text (cron mail, pipes) elsewhere."""
    if state.is_terminal:
        from rich.table import Table

        table = Table(title=title)
        for i, col in enumerate(columns):
            table.add_column(col, style=(styles[i] if styles else None))
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        state.console.print(table)
        return
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    if title:
        sys.stdout.write(title + "\n")
    for r in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


@contextmanager
def progress(state: AppState, description: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on a terminal; a silent stand-in elsewhere.

    Yields a callable ``advance(n=1)``.
    """
    if not state.shows_progress:
        yield lambda n=1: None
        return
    from rich.progress import Progress

    with Progress(console=state.err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
