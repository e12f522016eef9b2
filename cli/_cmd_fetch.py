from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_table, progress


@opt.output_options
def fetch(
    ctx: typer.Context,
    *,
    symbols: Optional[str] = opt.SYMBOLS,
    interval: Optional[str] = opt.INTERVAL,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", file_okay=False,
                                            help="Local store to update (default: "
                                            "data.data_dir)."),
    since: Optional[str] = typer.Option(None, "--since", help="First candle wanted (ISO "
                                        "8601): older missing candles are back-filled. "
                                        "Default: the latest 1,000 for a new symbol."),
    as_of: Optional[str] = opt.AS_OF,
    out: opt.Output,
) -> None:
    """Download new closed candles into the local store, in freqtrade's layout: Binance spot
    directly, any other exchange (data.exchange) or futures through ccxt (pip install
    'botopt[exchanges]')."""
    from ..core import fetch_to_store, parse_as_of, plan_fetch, record_run, resolve_symbols

    state = get_state(ctx)
    # The exchange is where fetch reads from, whatever data.source says signals should read.
    cfg = state.config(data__source="binance", data__interval=interval,
                       data__data_dir=str(data_dir) if data_dir else None)
    syms = resolve_symbols(symbols, cfg)
    when = parse_as_of(as_of)
    now_ms = int(when.timestamp() * 1000) if when is not None else None
    # The estimate reads every stored file: worth it only when a bar will show it.
    total = sum(plan_fetch(cfg, syms, since=since,
                           now_ms=now_ms).values()) if state.shows_progress else 0
    # a replay's fetch (--as-of) is an experiment, not the feeder's heartbeat
    with record_run(cfg, "fetch", enabled=when is None) as counts, \
            progress(state, "fetching candles", total or None) as advance:
        results = fetch_to_store(cfg, syms, since=since, now_ms=now_ms,
                                 progress=lambda _s, n: advance(n))
        counts.update(symbols=len(results), added=sum(r.added for r in results.values()))
    if out.json:
        print_json({"interval": cfg.data.interval, "data_dir": str(cfg.data.data_dir),
                    "symbols": [r.to_dict() for r in results.values()]})
        return
    if not out.quiet:
        print_table(state, f"fetched into {cfg.data.data_dir}",
                    ["symbol", "added", "stored", "last candle (UTC)", "file"],
                    [(r.symbol, r.added, r.total,
                      f"{r.last:%Y-%m-%d %H:%M}" if r.last else "-", r.path.name)
                     for r in results.values()])


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch)
