from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from botopt.cli import _options as opt
from botopt.cli._context import get_state
from botopt.cli._render import print_json, print_table, progress


def register(app: typer.Typer) -> None:
    @app.command("fetch")
    def fetch(
        ctx: typer.Context,
        symbols: Optional[str] = opt.SYMBOLS,
        interval: Optional[str] = opt.INTERVAL,
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", file_okay=False,
                                                help="Local store to update (default: "
                                                "data.data_dir)."),
        since: Optional[str] = typer.Option(None, "--since", help="First candle to download "
                                            "when a symbol is not stored yet (ISO 8601)."),
        json_out: bool = opt.JSON,
    ) -> None:
        """Download new closed candles from Binance into the local store."""
        from botopt.core._candles import parse_as_of, parse_symbols
        from botopt.core._store import fetch_to_store

        state = get_state(ctx)
        cfg = state.config(data__interval=interval,
                           data__data_dir=str(data_dir) if data_dir else None)
        syms = parse_symbols(symbols if symbols else cfg.data.symbols)
        start = parse_as_of(since) if since else None
        with progress(state, "fetching candles", None) as advance:
            results = fetch_to_store(cfg, syms, cfg.data.interval, since=start,
                                     progress=lambda _s, n: advance(n))
        if json_out:
            print_json({"interval": cfg.data.interval,
                        "symbols": [r.to_dict() for r in results]})
            return
        if not state.quiet:
            print_table(state, f"fetched into {cfg.data.data_dir}",
                        ["symbol", "added", "stored", "last candle (UTC)"],
                        [(r.symbol, r.added, r.total,
                          f"{r.last:%Y-%m-%d %H:%M}" if r.last else "-") for r in results])
