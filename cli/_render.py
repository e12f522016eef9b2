"""Rendering helpers: rich tables on a terminal, aligned plain text elsewhere, JSON on demand."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._context import AppState


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


# C0 and C1 control characters and DEL, as a cell shows them: written raw, an event's or a
# notification's ESC sequences reached the terminal (or the log a user later cats) and a line
# break split a row.
_CONTROLS = {c: (f"\\x{c:02x}" if c != 10 else "\\n")
             for c in (*range(0, 32), 127, *range(0x80, 0xA0)) if c != 9}
_CONTROLS[9] = " "


def cell(value: Any) -> str:
    """A table cell's text: control characters shown as escapes, None as empty."""
    return "" if value is None else str(value).translate(_CONTROLS)


def print_table(state: AppState, title: str | None, columns: Sequence[str],
                rows: Sequence[Sequence[Any]], styles: Sequence[str | None] | None = None) -> None:
    """A rich table on a terminal; tab-free aligned plain text (cron mail, pipes) elsewhere.
    Cells are text, never rich markup: a "[/x]" in a notification's data ended the command
    with rich's MarkupError on a terminal."""
    if state.is_terminal:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title)
        for i, col in enumerate(columns):
            table.add_column(col, style=(styles[i] if styles else None))
        for row in rows:
            table.add_row(*(Text(cell(v)) for v in row))
        state.console.print(table)
        return
    cells = [[str(c) for c in columns]] + [[cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    if title:
        sys.stdout.write(title + "\n")
    for r in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def _corr_style(v: float | None) -> str:
    if v is None:
        return "dim"
    if v >= 0.8:
        return "bold white on red"
    if v >= 0.5:
        return "black on dark_orange"
    if v >= 0.2:
        return "black on yellow"
    if v > -0.2:
        return ""
    return "white on blue"


def print_matrix(state: AppState, title: str, names: Sequence[str],
                 matrix: Sequence[Sequence[float | None]]) -> None:
    """A labelled square matrix of values in [-1, 1] (None shown as "-"): coloured cells on a
    terminal, aligned columns elsewhere."""
    if not state.is_terminal:
        width = max(len(s) for s in names)
        # columns as wide as the longest name: XRP/USDT:USDT cut to 7 read as XRP/USD
        col = max(7, width)
        print(title)
        print(" " * width + "  " + "  ".join(f"{s:>{col}}" for s in names))
        for s, row in zip(names, matrix, strict=True):
            cells = "  ".join(f"{'-':>{col}}" if v is None else f"{v:{col}.3f}" for v in row)
            print(f"{s:<{width}}  {cells}")
        return
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    for s in names:
        table.add_column(s, justify="right")
    for s, row in zip(names, matrix, strict=True):
        table.add_row(s, *(f"[{_corr_style(v)}]{'-' if v is None else f'{v:.2f}'}[/]"
                           if _corr_style(v) else ('-' if v is None else f"{v:.2f}")
                           for v in row))
    state.console.print(table)


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
