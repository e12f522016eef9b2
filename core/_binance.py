"""Binance's public klines endpoint, as a source of closed candles.

``GET {api_url}/api/v3/klines`` returns at most 1,000 rows per request; we page forward by
``startTime``. Retries follow Binance's rules: 429 (rate limit) and 418 (IP ban) carry a
``Retry-After`` in seconds, which we honour exactly, up to ``max_wait_seconds``; 5xx, timeouts
and dropped connections back off exponentially. Other 4xx answers are final: -1121 "Invalid
symbol." becomes an UnknownSymbolError naming the symbol. We do not use urllib3's Retry here
because it would also retry on our behalf inside ``requests`` and hide the Retry-After budget
that a cron run must keep bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import polars as pl

from botopt.core._candles import interval_ms
from botopt.core._config import BinanceConfig
from botopt.core.errors import DataError, NetworkError, UnknownSymbolError, UsageError

log = logging.getLogger("botopt.binance")
PAGE = 1000


class BinanceClient:
    def __init__(self, config: BinanceConfig | None = None, session: Any = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import requests

        self.config = config or BinanceConfig()
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "botopt")
        self.sleep = sleep
        self.requests_made = 0

    def _get(self, params: dict[str, Any]) -> list[list[Any]]:
        import requests

        cfg = self.config
        url = f"{cfg.api_url.rstrip('/')}/api/v3/klines"
        waited = 0.0
        for attempt in range(cfg.max_retries + 1):
            last = attempt == cfg.max_retries
            try:
                self.requests_made += 1
                resp = self.session.get(url, params=params,
                                        timeout=(cfg.connect_timeout, cfg.read_timeout))
            except requests.RequestException as exc:
                reason = f"{type(exc).__name__}"
                if last:
                    raise NetworkError(f"Binance unreachable at {cfg.api_url} after "
                                       f"{attempt + 1} attempts ({reason})") from None
                waited += self._backoff(attempt, waited)
                continue
            if resp.status_code == 200:
                try:
                    rows = resp.json()
                except ValueError:
                    raise DataError("Binance klines: answer is not JSON") from None
                if not isinstance(rows, list):
                    raise DataError(f"Binance klines: unexpected answer {str(rows)[:100]}")
                return rows
            code, msg = self._error(resp)
            if resp.status_code in (429, 418):
                wait = self._retry_after(resp, attempt)
                if last or waited + wait > cfg.max_wait_seconds:
                    raise NetworkError(
                        f"Binance rate limit ({resp.status_code}{f' {code}' if code else ''}"
                        f"): retry after {wait:.0f} s")
                log.info("Binance %s: waiting %.1f s", resp.status_code, wait)
                self.sleep(wait)
                waited += wait
                continue
            if resp.status_code >= 500:
                if last:
                    raise NetworkError(f"Binance answered {resp.status_code} "
                                       f"{attempt + 1} times; try again later")
                waited += self._backoff(attempt, waited)
                continue
            if code == -1121:
                raise UnknownSymbolError(f"symbol {params['symbol']} is not listed on Binance "
                                         "(-1121 Invalid symbol.)")
            if code == -1120:
                raise UsageError(f"interval {params['interval']} refused by Binance "
                                 "(-1120 Invalid interval.)")
            raise DataError(f"Binance answered {resp.status_code} for {params['symbol']}: "
                            f"{code} {msg}".strip())
        raise NetworkError("Binance: retries exhausted")  # pragma: no cover

    @staticmethod
    def _error(resp: Any) -> tuple[int | None, str]:
        try:
            body = resp.json()
            return body.get("code"), str(body.get("msg", ""))
        except (ValueError, AttributeError):
            return None, resp.text[:200]

    def _retry_after(self, resp: Any, attempt: int) -> float:
        try:
            return max(0.0, float(resp.headers.get("Retry-After", "")))
        except ValueError:
            return min(2.0 ** attempt, 30.0)

    def _backoff(self, attempt: int, waited: float) -> float:
        wait = min(0.5 * 2 ** attempt, max(0.0, self.config.max_wait_seconds - waited), 8.0)
        self.sleep(wait)
        return wait

    def klines(self, symbol: str, interval: str, *, start_ms: int | None = None,
               end_ms: int | None = None, limit: int | None = None,
               now_ms: int | None = None, progress: Callable[[int], None] | None = None
               ) -> pl.DataFrame:
        """Closed candles of ``symbol`` from ``start_ms`` (inclusive) to ``end_ms``, paged.

        A candle is closed when its close time is before ``now_ms`` (default: now); the
        still-open last candle is dropped.
        """
        step = interval_ms(interval)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        rows: list[list[Any]] = []
        cursor = start_ms
        while True:
            params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": PAGE}
            if cursor is not None:
                params["startTime"] = cursor
            if end_ms is not None:
                params["endTime"] = end_ms
            page = self._get(params)
            rows += page
            if progress:
                progress(len(page))
            if len(page) < PAGE or cursor is None and start_ms is None:
                break
            cursor = int(page[-1][0]) + step
            if end_ms is not None and cursor > end_ms:
                break
        return _frame(symbol, rows, step, now, limit)


def _frame(symbol: str, rows: list[list[Any]], step: int, now: int,
           limit: int | None) -> pl.DataFrame:
    try:
        closed = [r for r in rows if int(r[6]) < now and int(r[0]) + step <= now]
        df = pl.DataFrame({
            "symbol": [symbol] * len(closed),
            "open_time": [int(r[0]) for r in closed],
            **{name: [float(r[i]) for r in closed] for i, name in
               ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (5, "volume"))},
        }, schema={"symbol": pl.String, "open_time": pl.Int64, "open": pl.Float64,
                   "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                   "volume": pl.Float64})
    except (IndexError, TypeError, ValueError) as exc:
        raise DataError(f"Binance klines for {symbol}: malformed row ({exc})") from None
    df = df.unique("open_time", keep="last").sort("open_time").with_columns(
        pl.from_epoch("open_time", time_unit="ms").dt.cast_time_unit("ms")
        .dt.replace_time_zone("UTC"))
    return df.tail(limit) if limit else df
