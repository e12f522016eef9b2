from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from botopt.cli import _options as opt
from botopt.cli._context import get_state
from botopt.cli._render import print_json, print_table


def register(app: typer.Typer) -> None:
    @app.command("signals")
    def signals(
        ctx: typer.Context,
        symbols: Optional[str] = opt.SYMBOLS,
        interval: Optional[str] = opt.INTERVAL,
        source: Optional[str] = opt.SOURCE,
        data_dir: Optional[Path] = opt.DATA_DIR,
        as_of: Optional[str] = opt.AS_OF,
        json_out: bool = opt.JSON,
        no_cache: bool = typer.Option(False, "--no-cache", help="Bypass every cache."),
    ) -> None:
        """Compute ranked, gated signals from the last closed candles of each symbol."""
        from botopt.core._candles import parse_as_of, parse_symbols
        from botopt.core._events import run_events
        from botopt.core._pipeline import run_signals

        state = get_state(ctx)
        cfg = state.config(announce_sample_data=True,
                           **opt.data_overrides(interval, source, data_dir))
        syms = parse_symbols(symbols if symbols else cfg.data.symbols)
        with run_events("signals") as counts:
            result = run_signals(cfg, syms, as_of=parse_as_of(as_of), use_cache=not no_cache)
            counts.update(symbols=len(result.symbols), passed=len(result.passed),
                          cached=result.from_cache)
        if json_out:
            print_json(result.to_dict())
            return
        if state.quiet:
            return
        rows = [(s.symbol, f"{s.candle_time:%Y-%m-%d %H:%M}", f"{s.close:.8g}",
                 s.regime or "-", s.direction or "-",
                 "-" if s.strength is None else f"{s.strength:.2f}",
                 "-" if s.probability is None else f"{s.probability:.2f}",
                 "-" if s.gate_passed is None else ("pass" if s.gate_passed else
                                                    "block: " + "; ".join(s.gate_reasons)))
                for s in result.symbols]
        print_table(state, f"signals as of {result.as_of:%Y-%m-%d %H:%M} UTC "
                    f"({result.interval}, {result.source})",
                    ["symbol", "candle (UTC)", "close", "regime", "signal", "strength",
                     "prob", "gate"], rows)
