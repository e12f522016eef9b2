"""Options shared by the commands that read candles, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

SYMBOLS = typer.Option(None, "--symbols", "-s",
                       help="Comma-separated symbols: BTCUSDT, ETH_BTC, freqtrade's ETH/BTC, "
                       "or XRP/USDT:USDT (futures); @FILE (one per line, # comments, or "
                       "freqtrade's pairs JSON); all (every pair of the interval in the data "
                       "directory) (default: data.symbols).")
INTERVAL = typer.Option(None, "--interval", "-i", help="Candle interval: 1m 3m 5m 15m 30m "
                        "1h 2h 4h 6h 8h 12h 1d, or e.g. 8m for local files (default: "
                        "data.interval).")
SOURCE = typer.Option(None, "--source", help="Candle source: sample, local or binance "
                      "(default: data.source).")
DATA_DIR = typer.Option(None, "--data-dir", help="A freqtrade data directory (PAIR-interval."
                        "feather|parquet|json|json.gz|csv, futures/ for futures); implies "
                        "--source local.",
                        file_okay=False)
AS_OF = typer.Option(None, "--as-of", help="Behave as if it were this time (ISO 8601, UTC "
                     "if no offset): only candles closed by then are used.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def data_overrides(interval: Optional[str], source: Optional[str],
                   data_dir: Optional[Path]) -> dict[str, object]:
    """Config overrides for the candle options (``--data-dir`` alone means a local source)."""
    if data_dir is not None and source is None:
        source = "local"
    return {"data__interval": interval, "data__source": source,
            "data__data_dir": str(data_dir) if data_dir else None}
