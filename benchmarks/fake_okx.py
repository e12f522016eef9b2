"""A fake OKX public API (v5) on 127.0.0.1, spot and perpetual swaps, as the real one answers.

Behaviour from OKX's v5 REST documentation (and the answers ccxt's okx parser documents):

- ``GET /api/v5/public/instruments?instType=SPOT|SWAP``: ``{"code": "0", "msg": "", "data":
  [...]}``, one instrument per listed pair with every field as a string (``instId``
  ``BTC-USDT`` / ``BTC-USDT-SWAP``, ``baseCcy``/``quoteCcy`` for spot, ``uly``,
  ``instFamily``, ``settleCcy``, ``ctVal``, ``ctType`` for swaps, ``state`` ``live`` ...);
  another ``instType`` answers an empty list;
- ``GET /api/v5/market/candles`` (only the latest 1,440 candles) and
  ``/api/v5/market/history-candles`` (all of them): ``instId``, ``bar`` (``1m`` ... ``1H``,
  ``4H``, ``1D``), ``limit`` (default 100, at most 300), ``after`` (older than, exclusive)
  and ``before`` (newer than, exclusive); rows newest first, nine strings each ``[ts, o, h,
  l, c, vol, volCcy, volCcyQuote, confirm]``, the candle still forming included with
  ``confirm`` ``"0"``;
- errors as OKX sends them: 51001 "Instrument ID does not exist", 51000 "Parameter bar
  error", 429 with 50011 "Too Many Requests", 503 with 50001 "Service temporarily
  unavailable".

``script`` injects answers for the next requests, in order: ``(status, body, headers)`` (a
``str`` body is sent verbatim), ``"drop"`` (close the connection after reading the request),
``"429"``, ``"503"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from ._loopback import Answer, Loopback

BARS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
        "1H": 3_600_000, "2H": 7_200_000, "4H": 14_400_000, "1D": 86_400_000}
CT_VAL = 0.01  # each swap contract is 0.01 of the base currency
RECENT = 1440  # what /market/candles still serves; older ones only /market/history-candles

Row = tuple[int, float, float, float, float, float]


def _now() -> int:
    return int(time.time() * 1000)


def _num(v: float) -> str:
    return f"{v:.8f}".rstrip("0").rstrip(".") or "0"


@dataclass
class FakeOkx(Loopback):
    """``candles``: {``"BTC-USDT"``: rows sorted by open time}; each pair is listed as spot
    and as a USDT-settled perpetual (``BTC-USDT-SWAP``) with the same rows."""

    keep_alive = True

    candles: dict[str, list[Row]]
    bar: str = "5m"
    now_ms: Callable[[], int] = _now
    script: list[Any] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        url = urlparse(path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append({**q, "_path": url.path})
            action = self.script.pop(0) if self.script else None
        if action == "drop":
            return 0, "", {}
        if action == "429":
            return 429, {"msg": "Too Many Requests", "code": "50011"}, {}
        if action == "503":
            return 503, {"code": "50001", "msg": "Service temporarily unavailable, please try "
                         "again later.", "data": []}, {}
        if action is not None:
            return action  # type: ignore[no-any-return]
        if url.path == "/api/v5/public/instruments":
            return 200, self._instruments(q.get("instType", "")), {}
        if url.path in ("/api/v5/market/candles", "/api/v5/market/history-candles"):
            return self._candles(url.path.endswith("/candles"), q)
        return 404, "<html><body><h1>404 Not Found</h1></body></html>", {}

    def candle_requests(self) -> list[dict[str, str]]:
        return [q for q in self.requests if "candles" in q["_path"]]

    def _instruments(self, inst_type: str) -> dict[str, Any]:
        if inst_type == "SPOT":
            data = [_spot(pair) for pair in self.candles]
        elif inst_type == "SWAP":
            data = [_swap(pair) for pair in self.candles]
        else:
            data = []
        return {"code": "0", "msg": "", "data": data}

    def _candles(self, recent_only: bool, q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        inst = q.get("instId", "")
        pair = inst[:-5] if inst.endswith("-SWAP") else inst
        if pair not in self.candles:
            return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}, {}
        step = BARS.get(q.get("bar", "1m"))
        if step is None:
            return 400, {"code": "51000", "msg": "Parameter bar error", "data": []}, {}
        try:
            limit = min(int(q.get("limit", 100)), 300)
            after = int(q["after"]) if "after" in q else None
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            return 400, {"code": "51000", "msg": "Parameter limit error", "data": []}, {}
        if q.get("bar", "1m") != self.bar:
            return 200, {"code": "0", "msg": "", "data": []}, {}
        now = self.now_ms()
        rows = [r for r in self.candles[pair] if r[0] <= now]
        if recent_only:
            rows = rows[-RECENT:]
        rows = [r for r in rows if (after is None or r[0] < after)
                and (before is None or r[0] > before)]
        newest = list(reversed(rows))[:limit]
        swap = inst.endswith("-SWAP")
        data = [[str(r[0]), *(_num(v) for v in r[1:5]), *_volumes(r[5], r[4], swap),
                 "0" if r[0] + step > now else "1"] for r in newest]
        return 200, {"code": "0", "msg": "", "data": data}, {}


def _volumes(base: float, close: float, swap: bool) -> list[str]:
    """vol, volCcy, volCcyQuote: spot counts the base then the quote currency; a swap counts
    contracts (``ctVal`` 0.01 of the base each) then the base currency."""
    if swap:
        return [_num(base / CT_VAL), _num(base), _num(base * close)]
    return [_num(base), _num(base * close), _num(base * close)]


def _spot(pair: str) -> dict[str, str]:
    base, quote = pair.split("-")
    return {"alias": "", "auctionEndTime": "", "baseCcy": base, "category": "1",
            "ctMult": "", "ctType": "", "ctVal": "", "ctValCcy": "", "expTime": "",
            "instFamily": "", "instId": pair, "instType": "SPOT", "lever": "10",
            "listTime": "1548133413000", "lotSz": "0.00000001", "maxIcebergSz": "9999999999",
            "maxLmtAmt": "1000000", "maxLmtSz": "9999999999", "maxMktAmt": "1000000",
            "maxMktSz": "1000000", "maxStopSz": "1000000", "maxTriggerSz": "9999999999",
            "maxTwapSz": "9999999999", "minSz": "0.00001", "optType": "", "quoteCcy": quote,
            "ruleType": "normal", "settleCcy": "", "state": "live", "stk": "",
            "tickSz": "0.1", "uly": ""}


def _swap(pair: str) -> dict[str, str]:
    base, quote = pair.split("-")
    return {"alias": "", "auctionEndTime": "", "baseCcy": "", "category": "1",
            "ctMult": "1", "ctType": "linear", "ctVal": "0.01", "ctValCcy": base,
            "expTime": "", "instFamily": pair, "instId": f"{pair}-SWAP", "instType": "SWAP",
            "lever": "100", "listTime": "1573557408000", "lotSz": "0.01",
            "maxIcebergSz": "100000000", "maxLmtAmt": "20000000", "maxLmtSz": "100000000",
            "maxMktAmt": "", "maxMktSz": "12000", "maxStopSz": "12000",
            "maxTriggerSz": "100000000", "maxTwapSz": "100000000", "minSz": "0.01",
            "optType": "", "quoteCcy": "", "ruleType": "normal", "settleCcy": quote,
            "state": "live", "stk": "", "tickSz": "0.1", "uly": pair}
