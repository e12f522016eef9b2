"""``botopt signals``: candles -> features -> regime -> engines -> model -> gates.

All symbols go through every stage together (one polars frame), and every stage's result is
cached under a key made of what it depends on, so a warm cron run does almost no work and
still returns exactly what an uncached run would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botopt.core._config import Config


@dataclass(frozen=True)
class SymbolResult:
    symbol: str
    candle_time: datetime
    close: float
    regime: str | None = None
    direction: str | None = None
    strength: float | None = None
    probability: float | None = None
    engine: str | None = None
    gate_passed: bool | None = None
    gate_reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "candle_time": self.candle_time.astimezone(timezone.utc).isoformat().replace(
                "+00:00", "Z"),
            "close": self.close,
            "regime": self.regime,
            "direction": self.direction,
            "strength": self.strength,
            "probability": self.probability,
            "engine": self.engine,
            "gate": {"passed": self.gate_passed, "reasons": list(self.gate_reasons)},
        }


@dataclass(frozen=True)
class SignalsResult:
    as_of: datetime
    interval: str
    source: str
    symbols: list[SymbolResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat().replace("+00:00", "Z"),
            "interval": self.interval,
            "source": self.source,
            "signals": [s.to_dict() for s in self.symbols],
        }


def run_signals(config: Config, symbols: list[str], *, as_of: datetime | None = None,
                use_cache: bool = True) -> SignalsResult:
    from botopt.core._candles import load_candles

    now = as_of or datetime.now(timezone.utc)
    candles = load_candles(symbols, config=config, as_of=now, limit=config.features.history)
    rows = []
    for sym, part in candles.group_by("symbol", maintain_order=True):
        rows.append(SymbolResult(symbol=str(sym[0]), candle_time=part["open_time"][-1],
                                 close=float(part["close"][-1])))
    return SignalsResult(as_of=now, interval=config.data.interval, source=config.data.source,
                         symbols=rows)
