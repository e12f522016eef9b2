"""Symbol names as the exchanges spell them. A leaf module: both the candle store and the
Binance client use these, and neither may import the other at module level."""

from __future__ import annotations

from ..errors import UsageError


def is_futures(symbol: str) -> bool:
    return ":" in symbol


def binance_symbol(symbol: str) -> str:
    """Binance's name of a spot pair: BTC/USDT and BTC_USDT are BTCUSDT (joining is exact;
    only the reverse, BTCUSDT -> BTC/USDT, needs the exchange's symbol list)."""
    if is_futures(symbol):
        raise UsageError(f"{symbol} is a futures pair: botopt reads futures candles from a "
                         "freqtrade data directory only (Binance's spot API has none)",
                         symbol=symbol)
    return symbol.replace("/", "").replace("_", "")
