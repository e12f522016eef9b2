"""Generate docs/cli.md from the commands' own --help: ``python -m botopt.cli._docgen``.

tests/test_cli.py regenerates it and fails when the committed file differs, so the reference
can never miss a command or drift from the code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

HEADER = """# CLI reference

Generated from `--help` by `python -m botopt.cli._docgen > docs/cli.md`; do not edit by hand.
Global options (`--config`, `--cache-dir`, `--quiet`, `--debug`) go before the command:
`botopt --cache-dir /tmp/c signals ...`.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""


def iter_commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (sub)command below ``group`` (typer vendors click, so this is duck-typed)."""
    ctx = typer.Context(group)
    out: list[tuple[tuple[str, ...], Any]] = []
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        out.append(((*prefix, name), cmd))
        if hasattr(cmd, "list_commands"):
            out.extend(iter_commands(cmd, (*prefix, name)))
    return out


def render() -> str:
    from .main import app

    os.environ["COLUMNS"] = "100"
    root = typer.main.get_command(app)
    parts = [HEADER]
    for path, cmd in [((), root), *iter_commands(root)]:
        title = " ".join(("botopt", *path))
        with typer.Context(cmd, info_name=title, terminal_width=100, max_content_width=100
                           ) as ctx:
            text = cmd.get_help(ctx)
        parts.append(f"## `{title}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
