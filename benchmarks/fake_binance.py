"""A fake Binance spot API on 127.0.0.1 serving ``GET /api/v3/klines`` as the real one does.

Behaviour copied from Binance's REST documentation and the recorded answers in
``../shared/data/http/binance/``: rows are the 12-field arrays with prices and volumes as
strings and the close time as ``open + step - 1``; ``startTime``/``endTime`` filter on the
open time, inclusive; ``limit`` defaults to 500 and is capped at 1,000; without
``startTime`` the latest rows are served; the current, still open candle is included; every
answer carries ``X-MBX-USED-WEIGHT-1M``. Errors use Binance's bodies: -1121 "Invalid
symbol." and -1120 "Invalid interval." with HTTP 400.

``GET /api/v3/exchangeInfo`` answers the real shape (``timezone``, ``serverTime``,
``rateLimits``, ``exchangeFilters``, ``symbols`` with ``symbol``, ``status``, ``baseAsset``,
``quoteAsset``, precisions, order types, ``permissionSets`` ...) for every symbol in
``candles`` plus ``extra_symbols``; ``assets`` gives each symbol's (base, quote).

The USDⓈ-M futures API answers the same way under ``/fapi/v1/``: ``klines`` (the same
12-field rows; ``limit`` up to 1,500) and ``exchangeInfo`` listing every symbol as a USDT
perpetual (``contractType`` ``PERPETUAL``, ``marginAsset``, ``deliveryDate`` 4133404800000,
``onboardDate``, price and quantity precisions, the futures filters and order types).

``script`` injects answers for the next requests, in order: ``(status, body, headers)``
(a ``str`` body is sent verbatim, e.g. a truncated JSON), ``"drop"`` (close the connection
without an answer), ``"500"``, or ``("slow", seconds)`` (stall, then answer normally).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from ._loopback import Answer, Loopback

STEPS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
         "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}

Row = tuple[int, float, float, float, float, float]  # open ms, o, h, l, c, v


def _now() -> int:
    return int(time.time() * 1000)


@dataclass
class FakeBinance(Loopback):
    """``candles``: {symbol: rows sorted by open time}; ``interval`` is what they are."""

    content_type = "application/json;charset=UTF-8"
    keep_alive = True  # as requests' pooled sessions expect

    candles: dict[str, list[Row]]
    interval: str = "5m"
    now_ms: Callable[[], int] = _now
    script: list[Any] = field(default_factory=list)
    delay: float = 0.0  # seconds added to every klines answer, to make fetches overlap
    used_weight: int | None = None  # X-MBX-USED-WEIGHT-1M to report instead of the count
    # symbol -> (base, quote); symbols not given are split before a known quote asset
    assets: dict[str, tuple[str, str]] = field(default_factory=dict)
    extra_symbols: dict[str, tuple[str, str]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> Answer:
        return self.handle(path, headers)

    def info_requests(self) -> list[dict[str, str]]:
        return [q for q in self.requests if q.get("_path") == "/api/v3/exchangeInfo"]

    def klines_requests(self) -> list[dict[str, str]]:
        return [q for q in self.requests if q.get("_path") in ("/api/v3/klines",
                                                               "/fapi/v1/klines")]

    def handle(self, path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        url = urlparse(path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append({**q, "_path": url.path})
            self.headers.append(headers)
            self.times.append(time.monotonic())
            action = self.script.pop(0) if self.script else None
            weight = self.used_weight if self.used_weight is not None else 2 * len(self.requests)
        if action == "drop":
            return 0, "", {}
        if action == "500":
            return 500, {"code": -1000, "msg": "An unknown error occurred while processing "
                         "the request."}, {}
        if isinstance(action, tuple) and action[0] == "slow":
            time.sleep(action[1])
        elif action is not None:
            return action  # type: ignore[no-any-return]
        if self.delay:
            time.sleep(self.delay)
        if url.path == "/api/v3/exchangeInfo":
            status, body = 200, self._exchange_info()
        elif url.path == "/fapi/v1/exchangeInfo":
            status, body = 200, self._futures_info()
        else:
            status, body = self._klines(url.path, q)
        return status, body, {"X-MBX-USED-WEIGHT-1M": str(weight)}

    def _klines(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        if path not in ("/api/v3/klines", "/fapi/v1/klines"):
            return 404, "<html><body><h1>404 Not Found</h1></body></html>"
        if "symbol" not in q:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was "
                         "empty/null, or malformed."}
        sym = q["symbol"]
        step = STEPS.get(q.get("interval", ""))
        if step is None:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        if sym not in self.candles:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if q.get("interval") != self.interval:
            return 200, []  # a real symbol at another interval: not modelled, so no rows
        limit = min(int(q.get("limit", 500)), 1500 if path.startswith("/fapi") else 1000)
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
        now = self.now_ms()
        rows = [r for r in self.candles[sym] if r[0] <= now
                and (start is None or r[0] >= start) and (end is None or r[0] <= end)]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return 200, [kline_row(r, step) for r in rows]


    def _exchange_info(self) -> dict[str, Any]:
        listed = {**{s: self.assets.get(s) or _split(s) for s in self.candles},
                  **self.extra_symbols}
        return {
            "timezone": "UTC", "serverTime": self.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 61000}],
            "exchangeFilters": [],
            "symbols": [_symbol_entry(sym, base, quote) for sym, (base, quote) in listed.items()],
        }


    def _futures_info(self) -> dict[str, Any]:
        listed = {**{s: self.assets.get(s) or _split(s) for s in self.candles},
                  **self.extra_symbols}
        return {
            "timezone": "UTC", "serverTime": self.now_ms(), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 1200}],
            "exchangeFilters": [], "assets": [],
            "symbols": [_futures_entry(sym, base, quote)
                        for sym, (base, quote) in listed.items()],
        }


def _futures_entry(symbol: str, base: str, quote: str) -> dict[str, Any]:
    """One USDⓈ-M perpetual as /fapi/v1/exchangeInfo lists it."""
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": base, "quoteAsset": quote, "marginAsset": quote, "pricePrecision": 2,
        "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0,
        "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "filters": [
            {"minPrice": "556.80", "maxPrice": "4529764", "filterType": "PRICE_FILTER",
             "tickSize": "0.10"},
            {"stepSize": "0.001", "filterType": "LOT_SIZE", "maxQty": "1000",
             "minQty": "0.001"},
            {"stepSize": "0.001", "filterType": "MARKET_LOT_SIZE", "maxQty": "120",
             "minQty": "0.001"},
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"notional": "100", "filterType": "MIN_NOTIONAL"},
            {"multiplierDown": "0.9500", "multiplierUp": "1.0500",
             "multiplierDecimal": "4", "filterType": "PERCENT_PRICE"}],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


_QUOTES = ("USDT", "FDUSD", "USDC", "BTC", "ETH", "BNB", "EUR", "TRY")


def _split(symbol: str) -> tuple[str, str]:
    for q in _QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    raise ValueError(f"give FakeBinance(assets=...) for {symbol}")


def _symbol_entry(symbol: str, base: str, quote: str) -> dict[str, Any]:
    """One ``symbols`` entry shaped like Binance's (filters trimmed to the common three)."""
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
             "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False,
             "avgPriceMins": 5}],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER",
                                            "EXPIRE_BOTH"],
    }


def kline_row(r: Row, step: int) -> list[Any]:
    """One row as Binance writes it (see nautilus_http_spot_market_klines.json)."""
    return [r[0], f"{r[1]:.8f}", f"{r[2]:.8f}", f"{r[3]:.8f}", f"{r[4]:.8f}", f"{r[5]:.8f}",
            r[0] + step - 1, f"{r[4] * r[5]:.8f}", 100, f"{r[5] / 2:.8f}",
            f"{r[4] * r[5] / 2:.8f}", "0"]


def rows_from_frame(df: Any) -> list[Row]:
    """Rows from a freqtrade-layout polars frame (``date`` + ohlcv)."""
    ms = df["date"].dt.epoch("ms").to_list()
    cols = [df[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    return [(t, *vals) for t, *vals in zip(ms, *cols, strict=True)]
