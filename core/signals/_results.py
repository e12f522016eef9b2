"""What a signals run answers: one ``SymbolResult`` per symbol inside a ``SignalsResult``.

They are plain frozen dataclasses with a JSON form (``to_dict``/``from_dict``), which is what
``--json`` prints and what the whole-run cache entry stores; so a cached answer and a computed
one are the same objects, and this module needs neither polars nor numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..base._vocab import DataStatus
from ._gates import directional_probability


def iso(t: datetime) -> str:
    """UTC ISO-8601 with a Z, as every JSON botopt writes carries times."""
    if t.tzinfo is not timezone.utc:
        # Candle times come as ZoneInfo("UTC"), whose offset lookups cost 50 us a time:
        # the same instant labelled timezone.utc prints the same text.
        t = t.replace(tzinfo=timezone.utc) if getattr(t.tzinfo, "key", None) == "UTC" \
            else t.astimezone(timezone.utc)
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SymbolResult:
    symbol: str
    candle_time: datetime
    close: float
    regime: str | None = None
    direction: str | None = None
    strength: float | None = None
    p_up: float | None = None  # the model's P(next candle closes up)
    engine: str | None = None
    gate_passed: bool | None = None
    gate_reasons: tuple[str, ...] = ()
    data_status: DataStatus = DataStatus.OK
    # The run's clock minus the close of ``candle_time``; set on every run, cached or not.
    age_seconds: float | None = None

    @property
    def p_dir(self) -> float | None:
        """P(the signal's own direction): what is shown and gated on."""
        return directional_probability(self.p_up, self.direction)

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "candle_time": iso(self.candle_time), "close": self.close,
            "regime": self.regime, "direction": self.direction, "strength": self.strength,
            "p_dir": self.p_dir, "p_up": self.p_up, "engine": self.engine,
            "data_status": self.data_status, "age_seconds": self.age_seconds,
            "gate": {"passed": self.gate_passed, "reasons": list(self.gate_reasons)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SymbolResult:
        return cls(symbol=d["symbol"],
                   candle_time=datetime.fromisoformat(d["candle_time"].replace("Z", "+00:00")),
                   close=d["close"], regime=d["regime"], direction=d["direction"],
                   strength=d["strength"], p_up=d["p_up"], engine=d["engine"],
                   gate_passed=d["gate"]["passed"], gate_reasons=tuple(d["gate"]["reasons"]),
                   data_status=DataStatus(d["data_status"]), age_seconds=d["age_seconds"])


@dataclass(frozen=True)
class SignalsResult:
    as_of: datetime
    interval: str
    source: str
    symbols: list[SymbolResult] = field(default_factory=list)
    # Which clock ``as_of`` is: "now" (the wall clock), "as-of" (given by the caller) or
    # "sample" (the end of the bundled sample data, whose candles are all from the past).
    clock: str = "now"
    # Whether this run recorded cooldowns and queued notifications (live runs only).
    recorded: bool = field(default=False, compare=False)
    # Side effects of this run (not part of the answer, so not compared or cached).
    new_signals: list[SymbolResult] = field(default_factory=list, compare=False)
    regime_changes: list[tuple[str, str | None, str]] = field(default_factory=list,
                                                              compare=False)
    from_cache: bool = field(default=False, compare=False)

    @property
    def passed(self) -> list[SymbolResult]:
        return [s for s in self.symbols if s.gate_passed]

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": iso(self.as_of), "clock": self.clock, "interval": self.interval,
                "source": self.source, "signals": [s.to_dict() for s in self.symbols]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalsResult:
        return cls(as_of=datetime.fromisoformat(d["as_of"].replace("Z", "+00:00")),
                   interval=d["interval"], source=d["source"], clock=d["clock"],
                   symbols=[SymbolResult.from_dict(s) for s in d["signals"]])
