"""The yardstick for start-up time: a bare typer + rich command that prints a table."""

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False)


@app.command()
def main() -> None:
    """Print a small table."""
    table = Table()
    for col in ("cache", "hits", "misses"):
        table.add_column(col)
    table.add_row("features", "1", "2")
    Console().print(table)


if __name__ == "__main__":
    app()
