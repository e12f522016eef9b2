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
        notify: Optional[bool] = typer.Option(
            None, "--notify/--no-notify",
            help="Record cooldowns and queue notifications for passed signals. Default: only "
            "live runs do (not sample data, not an --as-of in the past)."),
    ) -> None:
        """Compute ranked, gated signals from the last closed candles of each symbol."""
        from botopt.core._candles import parse_as_of, parse_symbols
        from botopt.core._events import run_events
        from botopt.core._pipeline import is_live, run_signals

        state = get_state(ctx)
        cfg = state.config(announce_sample_data=True,
                           **opt.data_overrides(interval, source, data_dir))
        # Arguments are checked before the run is announced: a typo is the user's to fix
        # at the prompt, never a "signals failed" alert in the chat.
        syms = parse_symbols(symbols if symbols is not None else cfg.data.symbols)
        when = parse_as_of(as_of)
        live = is_live(cfg, when)
        with run_events("signals", enabled=live) as counts:
            result = run_signals(cfg, syms, as_of=when, use_cache=not no_cache,
                                 notify=notify)
            counts.update(symbols=len(result.symbols), passed=len(result.passed),
                          cached=result.from_cache,
                          stale=[s.symbol for s in result.symbols if s.data_status == "stale"])
        if result.clock == "sample":
            state.notice(f"sample data: the clock is the end of the bundled data, "
                         f"{result.as_of:%Y-%m-%d %H:%M} UTC (--as-of picks another moment); "
                         "nothing is recorded or queued")
        elif not result.recorded and any(s.gate_passed for s in result.symbols):
            state.notice("not a live run: nothing recorded or queued (--notify queues)")
        if json_out:
            print_json(result.to_dict())
            return
        if state.quiet:
            return
        rows = [(s.symbol, f"{s.candle_time:%Y-%m-%d %H:%M}", f"{s.close:.8g}",
                 s.regime or "-", s.direction or "-",
                 "-" if s.strength is None else f"{s.strength:.2f}",
                 "-" if s.p_dir is None else f"{s.p_dir:.2f}",
                 "-" if s.gate_passed is None else ("pass" if s.gate_passed else
                                                    "block: " + "; ".join(s.gate_reasons)))
                for s in result.symbols]
        print_table(state, f"signals as of {result.as_of:%Y-%m-%d %H:%M} UTC "
                    f"({result.interval}, {result.source})",
                    ["symbol", "candle (UTC)", "close", "regime", "signal", "strength",
                     "p(dir)", "gate"], rows)
