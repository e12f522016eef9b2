"""Candles from any exchange ccxt knows (freqtrade's exchanges among them), spot and futures,
through the ``botopt[exchanges]`` extra, with the interface ``fetch_to_store`` uses:
``resolve`` then ``klines``.

freqtrade names pairs as ccxt does (``BTC/USDT``, a USDT-settled perpetual ``BTC/USDT:USDT``),
so a pair from freqtrade's whitelist is ccxt's unified symbol as it is. ccxt is imported here
only, by ``botopt fetch`` on an exchange other than Binance spot: no other command pays its
second of import time, and Binance spot keeps the direct client (no extra needed).

Only the markets of the one type asked for are loaded (ccxt's binance, bybit and okx load
every type unless told, several requests and megabytes a cron run does not need). Transient
failures (rate limits, 5xx, timeouts, dropped connections) are retried within the
``[binance]`` network budget (``max_retries``, ``max_wait_seconds``), which covers every
exchange: a cron run must end. Everything ccxt raises becomes botopt's one-line error here.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..base._config import Config, interval_ms
from ..base._http import reads_by
from ..base._http import session as http_session
from ..errors import ConfigError, DataError, NetworkError, UnknownSymbolError, UsageError
from ._binance import _frame

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("botopt.ccxt")

# Candles asked for per request; an exchange that caps lower (OKX: 300) answers fewer.
PAGE = 1000
# Without a stored file or --since: the latest this many closed candles, as the direct
# Binance client gives, whatever the exchange's own page size.
DEFAULT_BATCH = 1000
INSTALL_HINT = "pip install 'botopt[exchanges]'"

# The market types to load, per exchange and trading mode, in ccxt's words for each
# (options["fetchMarkets"]["types"]). Exchanges not listed load their default set.
_MARKET_TYPES: dict[str, dict[str, list[str]]] = {
    "binance": {"spot": ["spot"], "futures": ["linear"]},
    "bybit": {"spot": ["spot"], "futures": ["linear"]},
    "okx": {"spot": ["spot"], "futures": ["swap"]},
}


def is_futures_mode(config: Config) -> bool:
    """freqtrade's margin mode trades spot markets: only futures has candles of its own."""
    return config.data.trading_mode == "futures"


def uses_ccxt(config: Config) -> bool:
    """Binance spot keeps botopt's direct client; everything else goes through ccxt."""
    return config.data.exchange.lower() != "binance" or is_futures_mode(config)


class CcxtClient:
    """One ccxt exchange, its markets of one type, and candles paged forward from them.

    ``exchange``: a ccxt exchange object to use instead of building one from the config;
    ``sleep``: how back-offs wait (tests pass a recorder).
    """

    def __init__(self, config: Config, exchange: Any = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = config.data.exchange.lower()
        self.futures = is_futures_mode(config)
        self.net = config.binance
        self.sleep = sleep
        self.ex = exchange if exchange is not None else make_exchange(config)
        self._markets: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {'futures' if self.futures else 'spot'}"

    def _call(self, what: str, symbol: str | None, fn: Callable[[], Any]) -> Any:
        """``fn()`` with ccxt's transient failures retried within the network budget."""
        import ccxt

        limited = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)
        waited = 0.0
        # each call's answers within three request timeouts, not each read of them: a
        # server trickling its headers held a fetch as long as it liked
        per = self.net.connect_timeout + self.net.read_timeout
        for attempt in range(self.net.max_retries + 1):
            try:
                with reads_by(time.monotonic() + 3 * per):
                    return fn()
            except ccxt.NetworkError as exc:  # rate limits, 5xx, timeouts, dropped connections
                budget = self.net.max_wait_seconds - waited
                if attempt == self.net.max_retries or budget <= 0:
                    raise _convert(exc, self.label, symbol, what,
                                   tries=attempt + 1) from exc
                base = 2.0 if isinstance(exc, limited) else 0.5
                wait = min(base * 2 ** attempt, 8.0, budget) * random.uniform(0.5, 1)
                log.info("%s %s: %s; retrying in %.1f s", self.label, what,
                         type(exc).__name__, wait)
                self.sleep(wait)
                waited += wait
            except Exception as exc:  # noqa: BLE001 - every ccxt answer is converted here
                raise _convert(exc, self.label, symbol, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def markets(self) -> dict[str, Any]:
        if self._markets is None:
            got = self._call("markets", None, self.ex.load_markets)
            if not isinstance(got, dict):
                raise DataError(f"{self.label}: its market list is not a list of markets "
                                f"({type(got).__name__})", source=self.name)
            self._markets = got
        return self._markets

    def resolve(self, symbol: str) -> tuple[str, str]:
        """(ccxt's symbol, freqtrade's pair): the same unified name. BTC/USDT, BTC_USDT and
        the exchange's own id (BTCUSDT, BTC-USDT) name a spot market; in futures mode
        BTC/USDT also names its perpetual settled in the quote, BTC/USDT:USDT."""
        if ":" in symbol and not self.futures:
            raise UsageError(f"{symbol} is a futures pair: fetch it with data.trading_mode = "
                             '"futures" (freqtrade\'s trading_mode)', symbol=symbol,
                             key="data.trading_mode")
        markets = {k: m for k, m in self.markets().items()
                   if isinstance(m, dict) and self._wanted(m)}
        slash = symbol.replace("_", "/", 1) if "/" not in symbol else symbol
        names = [symbol, slash]
        if self.futures and ":" not in slash and "/" in slash:
            names.append(f"{slash}:{slash.split('/', 1)[1]}")
        for name in names:
            if name in markets:
                return name, name
        by_id = sorted(k for k, m in markets.items()
                       if symbol in (str(m.get("id", "")).upper(),
                                     f"{m.get('base', '')}{m.get('quote', '')}"))
        if len(by_id) == 1:
            return by_id[0], by_id[0]
        if len(by_id) > 1:
            raise UsageError(f"symbol {symbol} names several {self.label} markets "
                             f"({', '.join(by_id[:5])}); name one of them", symbol=symbol,
                             source=self.name)
        raise UnknownSymbolError(f"symbol {symbol} is not listed on {self.label} (not in its "
                                 "market list)", symbol=symbol, source=self.name)

    def _wanted(self, market: dict[str, Any]) -> bool:
        if self.futures:
            return bool(market.get("swap") or market.get("future"))
        return bool(market.get("spot"))

    def klines(self, symbol: str, interval: str, *, start_ms: int | None = None,
               end_ms: int | None = None, now_ms: int | None = None,
               progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """Closed candles of ``symbol`` with open times in [``start_ms``, ``end_ms``]; without
        a start, the latest ``DEFAULT_BATCH`` closed ones."""
        if interval not in (getattr(self.ex, "timeframes", None) or {}):
            offered = ", ".join(list(getattr(self.ex, "timeframes", None) or {})[:20])
            raise UsageError(f"{self.label} has no {interval} candles (it offers: "
                             f"{offered or 'none'})", key="data.interval", source=self.name)
        step = interval_ms(interval)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        end = now - step if end_ms is None else min(end_ms, now - step)
        since = (end // step - DEFAULT_BATCH + 1) * step if start_ms is None else start_ms
        rows: list[list[Any]] = []
        page_len = 0
        while since <= end:
            page = self._page(symbol, interval, since)
            page_len = max(page_len, len(page))
            fresh = [r for r in page if since <= r[0] <= end]
            rows += fresh
            if progress is not None and fresh:
                progress(len(fresh))
            if fresh:
                since = fresh[-1][0] + step
            elif page and page[-1][0] > end:
                break  # the exchange has nothing in the range left
            else:
                # A hole in the exchange's history longer than a page: step over it rather
                # than stop, or the next run would ask for the same empty page for ever.
                since += max(page_len, 100) * step
        return _frame(symbol, rows, step, now, source=f"{self.label} candles")

    def _page(self, symbol: str, interval: str, since: int) -> list[list[Any]]:
        page = self._call("candles", symbol,
                          lambda: self.ex.fetch_ohlcv(symbol, interval, since=since, limit=PAGE))
        if getattr(self.ex, "enableLastJsonResponse", False) and \
                self.ex.last_json_response is None and self.ex.last_http_response:
            # ccxt reads a body that is not JSON (a proxy's HTML page, a cut-off answer)
            # as "no candles"; it is not an answer from the exchange.
            raise DataError(f"{self.label} candles for {symbol}: the answer is not the "
                            f"exchange's (not JSON: {str(self.ex.last_http_response)[:60]!r})",
                            symbol=symbol, source=self.name)
        if not isinstance(page, list):
            raise DataError(f"{self.label} candles for {symbol}: not a list of rows "
                            f"({type(page).__name__})", symbol=symbol, source=self.name)
        good: list[list[Any]] = []
        for i, r in enumerate(page):
            if not (isinstance(r, list) and len(r) >= 6 and _int_ms(r[0])
                    and all(_finite(v) for v in r[1:6])):
                raise DataError(f"{self.label} candles for {symbol}: malformed row {i + 1}: "
                                f"{str(r)[:80]}", symbol=symbol, source=self.name, row=i + 1)
            good.append(r)
        return sorted(good, key=lambda r: r[0])


def _int_ms(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 253_402_300_800_000


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def make_exchange(config: Config) -> Any:
    """The ccxt exchange object for ``data.exchange`` and ``data.trading_mode``."""
    try:
        import ccxt
    except ImportError:
        raise UsageError(f"fetching from {config.data.exchange} ({config.data.trading_mode}) "
                         f"needs ccxt: {INSTALL_HINT} (Binance spot works without "
                         "it)", key="data.exchange") from None
    name = config.data.exchange.lower()
    if name not in ccxt.exchanges:
        raise ConfigError(f"data.exchange {config.data.exchange[:40]!r} is not an exchange "
                          "ccxt knows (freqtrade's names: binance, bybit, okx, kraken, gate, "
                          "kucoin, htx, bitget, ...)", key="data.exchange")
    net = config.binance
    mode = "futures" if is_futures_mode(config) else "spot"
    ex = getattr(ccxt, name)({
        "enableRateLimit": True,
        # kept so that a body that is not JSON can be told from an empty page (_page)
        "enableLastJsonResponse": True, "enableLastHttpResponse": True,
        "timeout": int(1000 * (net.connect_timeout + net.read_timeout)),
        # ours: its reads honour ``reads_by``; proxies from the environment ignored, as
        # ccxt's own session does by default
        "session": _session(),
        "options": {"defaultType": "swap" if mode == "futures" else "spot"},
    })
    types = _MARKET_TYPES.get(name, {}).get(mode)
    if types is not None:
        fetch_markets = ex.options.get("fetchMarkets")
        ex.options["fetchMarkets"] = {**(fetch_markets if isinstance(fetch_markets, dict)
                                         else {}), "types": types}
    url = config.data.exchange_api_url
    if url:  # a proxy or a test server standing in for the exchange's own hosts
        ex.urls["api"] = _rebase(ex.urls.get("api"), url.rstrip("/"))
    return ex


def _session() -> Any:
    s = http_session()
    s.trust_env = False
    return s


def _rebase(api: Any, base: str) -> Any:
    """The exchange's API URLs with their scheme and host replaced by ``base``."""
    from urllib.parse import urlsplit

    if isinstance(api, str):
        parts = urlsplit(api)
        return base + parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(api, dict):
        return {k: _rebase(v, base) for k, v in api.items()}
    return api


def _convert(exc: Exception, label: str, symbol: str | None, what: str, *,
             tries: int = 1) -> Exception:
    """ccxt's exceptions as botopt's: one line naming the exchange and symbol."""
    import ccxt

    from ..base._redact import redact

    where = f"{label}{' ' + symbol if symbol else ''} ({what})"
    text = redact(" ".join(str(exc).split())[:200]) or type(exc).__name__
    kind = type(exc).__name__
    after = f" after {tries} tries" if tries > 1 else ""
    if isinstance(exc, ccxt.BadSymbol):
        return UnknownSymbolError(f"{where}: not listed ({text})", symbol=symbol,
                                  source=label.split()[0])
    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return NetworkError(f"{where}: rate limited{after} ({kind}); try again later")
    if isinstance(exc, ccxt.NetworkError):
        return NetworkError(f"{where}: unreachable or failing{after} ({kind}: {text})")
    if isinstance(exc, ccxt.BaseError):
        return DataError(f"{where}: the exchange refused ({kind}: {text})", symbol=symbol,
                         source=label.split()[0])
    return DataError(f"{where}: an answer ccxt could not read ({kind}: {text})",
                     symbol=symbol, source=label.split()[0])
