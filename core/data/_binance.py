"""Binance's public klines endpoint as a source of closed candles.

``GET {api_url}/api/v3/klines`` answers at most 1,000 rows per request, so we page forward by
``startTime`` (inclusive, on the open time). The last row Binance sends is usually the candle
still forming; we keep only candles whose close time has passed.

Retries are ours rather than urllib3's ``Retry``: Binance's rules need the answer's body and
a budget shared across the whole call. 429 (rate limited) and 418 (IP banned) carry a
``Retry-After`` in seconds that we honour exactly, within ``max_wait_seconds``; past that we
stop at once with a NetworkError saying when to retry, because a cron run that sleeps through
a ban only piles up behind the next one. 5xx answers, timeouts and dropped connections back
off exponentially with jitter. Any other 4xx is final and never retried: Binance would answer
the same, and hammering it with bad requests counts against the IP.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base._config import BinanceConfig, interval_ms
from ..base._fs import atomic_write_json, read_json
from ..base._http import reads_by
from ..base._http import session as http_session
from ..base._symbols import binance_symbol
from ..errors import (
    BotoptError,
    ConfigError,
    DataError,
    NetworkError,
    UnknownSymbolError,
    UsageError,
)

if TYPE_CHECKING:
    import polars as pl
    import requests

log = logging.getLogger("botopt.binance")

PAGE = 1000
# Binance allows 6,000 request weight per minute per IP (klines cost 2). Other bots often share
# the IP, so we pause until the next minute when the reported use gets close to the limit.
WEIGHT_LIMIT = 6000
WEIGHT_PAUSE_AT = 5000
# The symbol list is cached this long; a symbol missing from a copy older than
# SYMBOLS_RECHECK makes one fresh request (a new listing), a younger copy none.
SYMBOLS_TTL = 86_400.0
SYMBOLS_RECHECK = 600.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"botopt/{version('botopt')}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "botopt"


class BinanceClient:
    """Closed candles from Binance's public REST API (no API key needed).

    ``session``: a ``requests.Session`` to reuse (its headers are left alone); by default
    one of our own, which keeps connections alive across pages. ``sleep`` is how the client
    waits, replaceable so that tests of long back-offs need not take that long.
    """

    def __init__(self, config: BinanceConfig | None = None,
                 session: requests.Session | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 state_dir: Path | None = None) -> None:
        self.config = config or BinanceConfig()
        # Where a ban is remembered and the symbol list cached across runs; None: neither.
        self.state_dir = state_dir
        if session is None:
            session = http_session()
            session.headers["User-Agent"] = _user_agent()
        self.session = session
        self.sleep = sleep
        self.requests_made = 0
        self.used_weight: int | None = None
        self.label = "Binance"

    def klines(self, symbol: str, interval: str, *, start_ms: int | None = None,
               end_ms: int | None = None, limit: int | None = None,
               now_ms: int | None = None,
               progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """Closed candles of ``symbol`` in the canonical frame, oldest first.

        ``start_ms``/``end_ms`` bound the open times (inclusive). ``limit`` keeps the last
        ``limit`` closed candles (fewer where Binance has gaps). With neither ``start_ms`` nor
        ``limit`` Binance's latest 1,000 candles are asked for. A candle is closed when
        ``open + interval <= now_ms`` (default: the local clock). ``progress`` is called
        with the number of rows of each page received.
        """
        step = interval_ms(interval)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if limit is not None:
            if limit <= 0:
                raise UsageError(f"limit must be positive, got {limit}",
                                 symbol=symbol, source="binance", key="limit")
            if start_ms is None:
                last_closed = now // step * step - step
                if end_ms is not None:
                    last_closed = min(last_closed, end_ms // step * step)
                start_ms = last_closed - (limit - 1) * step
        api_symbol = binance_symbol(symbol)  # BTC/USDT and BTC_USDT are BTCUSDT to Binance
        rows: list[list[Any]] = []
        try:
            self._pages(api_symbol, interval, step, start_ms, end_ms, now, rows, progress)
        except KeyboardInterrupt as exc:
            # The caller may keep what arrived before Ctrl-C (fetch does).
            try:
                exc.partial = _frame(symbol, rows, step, now)  # type: ignore[attr-defined]
            except DataError:
                pass
            raise
        df = _frame(symbol, rows, step, now)
        return df.tail(limit) if limit is not None else df

    def _pages(self, api_symbol: str, interval: str, step: int, start_ms: int | None,
               end_ms: int | None, now: int, rows: list[list[Any]],
               progress: Callable[[int], None] | None) -> None:
        """Append pages of rows to ``rows`` (in place, so an interrupt keeps them)."""
        symbol = api_symbol
        cursor = start_ms
        while True:
            params: dict[str, Any] = {"symbol": api_symbol, "interval": interval, "limit": PAGE}
            if cursor is not None:
                params["startTime"] = cursor
            if end_ms is not None:
                params["endTime"] = end_ms
            page = _rows(self._get("/api/v3/klines", params, symbol), symbol)
            if progress is not None:
                progress(len(page))
            if not page:
                break
            rows += page
            if cursor is None or len(page) < PAGE:
                break  # the latest rows were asked for, or the range is exhausted
            try:
                nxt = int(page[-1][0]) + step
            except (IndexError, TypeError, ValueError):
                break  # _frame names the malformed row
            if nxt <= cursor or nxt + step > now or (end_ms is not None and nxt > end_ms):
                break  # nothing closed is left to ask for
            cursor = nxt

    def _get(self, path: str, params: dict[str, Any], sym: str) -> Any:
        """The 200 answer of ``GET path``; errors, retries and bans as the module says."""
        import requests

        cfg = self.config
        url = f"{cfg.api_url.rstrip('/')}{path}"
        self._refuse_during_ban()
        waited = 0.0
        attempt = 0
        while True:
            last = attempt >= cfg.max_retries
            try:
                self.requests_made += 1
                # the whole answer within three read timeouts, not each read of it: a
                # server trickling its headers held a cron run as long as it liked
                with reads_by(time.monotonic() + cfg.connect_timeout + 3 * cfg.read_timeout):
                    resp = self.session.get(url, params=params,
                                            timeout=(cfg.connect_timeout, cfg.read_timeout))
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema) as exc:
                raise ConfigError(f"binance.api_url {cfg.api_url!r} is not a usable URL "
                                  f"({type(exc).__name__})", key="binance.api_url") from exc
            except requests.RequestException as exc:
                if last or waited >= cfg.max_wait_seconds:
                    raise NetworkError(
                        f"Binance unreachable at {cfg.api_url} for {sym} after {attempt + 1} "
                        f"attempt(s) ({type(exc).__name__}); try again later",
                        symbol=sym, source="binance") from exc
                log.info("Binance %s for %s; retrying", type(exc).__name__, sym)
                waited += self._backoff(attempt, waited)
                attempt += 1
                continue
            self._note_weight(resp)
            if resp.status_code == 200:
                return resp
            code, msg = _error_body(resp)
            what = f"HTTP {resp.status_code}" + (f" {code} {msg}" if code is not None else "")
            if resp.status_code in (429, 418):
                wait = _retry_after(resp)
                if wait is None:
                    wait = min(_BACKOFF_BASE * 2 ** attempt, _BACKOFF_CAP)
                if last or waited + wait > cfg.max_wait_seconds:
                    until = datetime.fromtimestamp(time.time() + wait, tz=timezone.utc)
                    kind = "banned this IP" if resp.status_code == 418 else "rate-limited us"
                    self._remember_ban(until, resp.status_code, kind)
                    raise NetworkError(
                        f"Binance {kind} ({what}): retry after {wait:.0f} s "
                        f"({until:%Y-%m-%d %H:%M:%S} UTC)", symbol=sym, source="binance")
                log.info("Binance %s for %s: waiting %.1f s as asked", resp.status_code, sym,
                         wait)
                self.sleep(wait)
                waited += wait
                attempt += 1
                continue
            if resp.status_code >= 500:
                if last or waited >= cfg.max_wait_seconds:
                    raise NetworkError(f"Binance answered {what} for {sym} after "
                                       f"{attempt + 1} attempt(s); try again later",
                                       symbol=sym, source="binance")
                log.info("Binance %s for %s; retrying", resp.status_code, sym)
                waited += self._backoff(attempt, waited)
                attempt += 1
                continue
            raise _refusal(resp.status_code, code, what, path, params, sym)

    # -- a ban outlives the run that got it -----------------------------------------------

    def _ban_file(self) -> Path | None:
        if self.state_dir is None:
            return None
        import hashlib

        tag = hashlib.blake2b(self.config.api_url.encode(), digest_size=6).hexdigest()
        return self.state_dir / f"ban-{tag}.json"

    def _remember_ban(self, until: datetime, status: int, kind: str) -> None:
        path = self._ban_file()
        if path is None:
            return
        try:
            atomic_write_json(path, {"until": until.timestamp(), "status": status,
                                     "kind": kind, "api_url": self.config.api_url})
        except OSError as exc:
            log.warning("cannot remember the Binance ban in %s: %s", path, exc.strerror)

    def _refuse_during_ban(self) -> None:
        """Binance extends a ban for every request made during it: make none until it ends."""
        path = self._ban_file()
        if path is None:
            return
        try:
            ban = read_json(path)
            until = float(ban["until"]) if ban else 0.0
        except (ValueError, TypeError, KeyError, OSError):
            return  # a damaged note must not stop fetching for good
        if until > time.time():
            when = datetime.fromtimestamp(until, tz=timezone.utc)
            raise NetworkError(
                f"Binance {ban.get('kind', 'banned this IP')} (HTTP {ban.get('status')}) until "
                f"{when:%Y-%m-%d %H:%M:%S} UTC; not calling it before then (remembered in "
                f"{path})", source="binance")

    # -- the symbol list --------------------------------------------------------------------

    def symbol_list(self, max_age: float = SYMBOLS_TTL) -> dict[str, tuple[str, str]]:
        """Binance's spot symbols as {"BTCUSDT": ("BTC", "USDT")}, from exchangeInfo.

        Cached in ``state_dir`` for ``max_age`` seconds (the list is ~20 request weight and
        several MB; it changes when Binance lists a coin, not every minute).
        """
        path = None
        if self.state_dir is not None:
            import hashlib

            tag = hashlib.blake2b(self.config.api_url.encode(), digest_size=6).hexdigest()
            path = self.state_dir / f"symbols-{tag}.json"
            try:
                cached = read_json(path)
                if cached and time.time() - float(cached["fetched_at"]) < max_age:
                    return {k: (v[0], v[1]) for k, v in cached["symbols"].items()}
            except (ValueError, TypeError, KeyError, IndexError, OSError):
                pass  # fetched again below
        resp = self._get("/api/v3/exchangeInfo", {}, "the symbol list")
        try:
            body = resp.json()
            symbols = {str(e["symbol"]): (str(e["baseAsset"]), str(e["quoteAsset"]))
                       for e in body["symbols"]}
        except (ValueError, TypeError, KeyError):
            raise DataError("Binance exchangeInfo: expected {\"symbols\": [{\"symbol\", "
                            "\"baseAsset\", \"quoteAsset\"}, ...]}, got "
                            f"{resp.text[:80]!r}", source="binance") from None
        if path is not None:
            try:
                atomic_write_json(path, {"fetched_at": time.time(),
                                         "symbols": {k: list(v) for k, v in symbols.items()}})
            except OSError as exc:
                log.warning("cannot cache the Binance symbol list in %s: %s", path,
                            exc.strerror)
        return symbols

    def resolve(self, symbol: str) -> tuple[str, str]:
        """(Binance's symbol, freqtrade's pair) for BTCUSDT, BTC_USDT or BTC/USDT, looked up in
        the symbol list (refreshed once if the symbol is not in a cached copy)."""
        binance_symbol(symbol)  # refuses futures pairs
        for max_age in (SYMBOLS_TTL, SYMBOLS_RECHECK):
            for sym, (base, quote) in self.symbol_list(max_age).items():
                if symbol in (sym, f"{base}_{quote}", f"{base}/{quote}"):
                    return sym, f"{base}/{quote}"
        raise UnknownSymbolError(f"symbol {symbol} is not listed on Binance (not in its "
                                 "exchangeInfo symbol list)", symbol=symbol,
                                 source="binance")

    def _backoff(self, attempt: int, waited: float) -> float:
        budget = max(0.0, self.config.max_wait_seconds - waited)
        # Jitter keeps overlapping cron runs from retrying in lockstep.
        wait: float = min(_BACKOFF_BASE * 2 ** attempt, _BACKOFF_CAP, budget) * \
            random.uniform(0.5, 1)
        self.sleep(wait)
        return wait

    def _note_weight(self, resp: Any) -> None:
        raw = resp.headers.get("X-MBX-USED-WEIGHT-1M")
        try:
            self.used_weight = int(raw) if raw is not None else None
        except ValueError:
            self.used_weight = None
        if self.used_weight is not None and self.used_weight >= WEIGHT_PAUSE_AT \
                and resp.status_code == 200:
            # Binance's weight window is the calendar minute: the next one starts afresh.
            pause = 60.5 - time.time() % 60
            if pause <= self.config.max_wait_seconds:
                log.info("Binance request weight %d/%d used; pausing %.1f s",
                         self.used_weight, WEIGHT_LIMIT, pause)
                self.sleep(pause)


def _rows(resp: Any, sym: str) -> list[list[Any]]:
    try:
        rows = resp.json()
    except ValueError:
        raise DataError(f"Binance klines for {sym}: the answer is not JSON "
                        f"({resp.text[:80]!r})", symbol=sym, source="binance") from None
    if not isinstance(rows, list):
        raise DataError(f"Binance klines for {sym}: expected a list of rows, got "
                        f"{str(rows)[:80]}", symbol=sym, source="binance")
    return rows


def _refusal(status: int, code: int | None, what: str, path: str, params: dict[str, Any],
             sym: str) -> BotoptError:
    """The error for an answer that retrying cannot change (a 4xx other than 429/418)."""
    if code == -1121:
        return UnknownSymbolError(f"symbol {sym} is not listed on Binance "
                                  "(-1121 Invalid symbol.)", symbol=sym, source="binance")
    if code == -1120:
        return UsageError(f"interval {params.get('interval')} refused by Binance "
                          "(-1120 Invalid interval.)", source="binance")
    if status == 451:
        return ConfigError(f"Binance refuses requests from this location ({what}); set "
                           "binance.api_url (BOTOPT_BINANCE_API_URL) to an endpoint "
                           "you may use", key="binance.api_url", source="binance")
    if status == 403:
        return NetworkError(f"Binance's firewall refused the request for {sym} ({what})"
                            "; try again later", symbol=sym, source="binance")
    return DataError(f"Binance refused {path.rsplit('/', 1)[-1]} for {sym} ({what})",
                     symbol=sym, source="binance")


def _error_body(resp: Any) -> tuple[int | None, str]:
    """Binance's ``{"code": -1121, "msg": "..."}``, or (None, text) for anything else."""
    try:
        body = resp.json()
    except ValueError:
        return None, " ".join(resp.text.split())[:120]
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        return body["code"], " ".join(str(body.get("msg", "")).split())[:160]
    return None, str(body)[:120]


def _retry_after(resp: Any) -> float | None:
    """Seconds from ``Retry-After`` (Binance sends seconds; an HTTP date is accepted too)."""
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:  # inf or nan would overflow the "retry after" time we print: treat as a day
        return max(0.0, min(seconds, 86_400.0)) if seconds == seconds else None
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(86_400.0, max(0.0, when.timestamp() - time.time()))


def _frame(symbol: str, rows: list[list[Any]], step: int, now: int, *,
           source: str = "Binance klines") -> pl.DataFrame:
    """The rows (open time, o, h, l, c, v, ...) as the canonical frame, closed candles only,
    sorted, unique. ``source`` names them in an error."""
    import polars as pl

    opens: list[int] = []
    values: list[list[float]] = [[], [], [], [], []]
    for i, r in enumerate(rows):
        try:
            t = int(r[0])
            vals = [float(r[j]) for j in range(1, 6)]
            if not 0 <= t < 253_402_300_800_000:  # 1970 .. 9999: what a datetime can hold
                raise ValueError("open time out of range")
        except (IndexError, KeyError, TypeError, ValueError, OverflowError):
            raise DataError(f"{source} for {symbol}: malformed row {i + 1}: "
                            f"{str(r)[:80]}", symbol=symbol, source=source.split()[0].lower(),
                            row=i + 1) from None
        if t + step > now:
            continue  # still open: its close time has not passed
        opens.append(t)
        for col, v in zip(values, vals, strict=True):
            col.append(v)
    df = pl.DataFrame(
        {"symbol": [symbol] * len(opens), "open_time": opens,
         **dict(zip(("open", "high", "low", "close", "volume"), values, strict=True))},
        schema={"symbol": pl.String, "open_time": pl.Int64, "open": pl.Float64,
                "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                "volume": pl.Float64})
    # A row repeated whole (pages that overlap) is one candle; two different candles at one
    # open time are an answer that cannot be vouched for: which one is the market's?
    whole = df.unique(maintain_order=True)
    if whole.height != whole.get_column("open_time").n_unique():
        t = whole.filter(pl.col("open_time").is_duplicated()).get_column("open_time")[0]
        at = datetime.fromtimestamp(t / 1000, tz=timezone.utc)
        raise DataError(f"{source} for {symbol}: two different candles open at "
                        f"{at:%Y-%m-%d %H:%M} UTC", symbol=symbol,
                        source=source.split()[0].lower())
    return whole.sort("open_time").with_columns(
        pl.from_epoch("open_time", time_unit="ms").dt.cast_time_unit("ms")
        .dt.replace_time_zone("UTC"))
