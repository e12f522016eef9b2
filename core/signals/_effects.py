"""What a live signals run leaves behind: cooldowns, regime history, notifications, events.

Computing signals is a pure function of the data and the settings; this module is the one
place that records them. A (symbol, direction, candle) is recorded once, so a signal is
queued once however many runs see it, and a regime change is reported once. ``_pipeline``
calls ``record`` only for live runs (``is_live``) unless ``notify`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import logging

from ..base._config import Config
from ..base._vocab import DataStatus, Direction, EventType, NotificationType
from ..errors import NotifyError
from ..state._cooldowns import CooldownRecord, Cooldowns
from ..state._events import EventSink
from ..state._workspace import Workspace
from ._results import SignalsResult, SymbolResult, iso

log = logging.getLogger("botopt.pipeline")


def record(config: Config, ws: Workspace, result: SignalsResult,
           cooldowns: Cooldowns) -> SignalsResult:
    """Cooldowns, regime changes and notifications: each reported once across runs."""
    records = [CooldownRecord(r.symbol, r.direction or Direction.FLAT, r.candle_time)
               for r in result.symbols if r.gate_passed]
    recorded = cooldowns.record(records)
    added = {(r.symbol, r.direction, r.candle_time) for r in recorded}
    new = [s for s in result.symbols
           if (s.symbol, s.direction, s.candle_time) in added]
    regimes = ws.regimes(config)
    at = {s.symbol: s.candle_time for s in result.symbols}
    changes = regimes.update(
        [(s.symbol, s.regime, s.candle_time) for s in result.symbols
         if s.regime and s.data_status != DataStatus.STALE])
    if not publish(config, new, changes, events=ws.events()):
        # Not queued (a full disk, a damaged queue): what this run recorded is taken back,
        # so the next run on the candle finds the signals and changes new and queues them.
        # Kept, every later run took them for notified already: lost for good.
        # Each store takes back what it recorded where it recorded it (the shared server's
        # stores: on the server, or on their local fallback).
        if recorded:
            cooldowns.forget(recorded)
        if changes:
            regimes.revert([(sym, old, new_, at[sym]) for sym, old, new_ in changes])
    return dataclasses.replace(result, new_signals=new, regime_changes=changes)


_SIGNAL_FIELDS = ("symbol", "candle_time", "close", "regime", "direction", "strength", "p_dir",
                  "engine")


def publish(config: Config, new: list[SymbolResult],
            changes: list[tuple[str, str | None, str]], *,
            events: EventSink | None = None) -> bool:
    """Queue notifications and emit events for what is new; whether they were queued. A
    broken queue costs a warning: it must never fail or slow the signals run itself."""
    from ..delivery._notify import enqueue

    items = [{"type": NotificationType.SIGNAL, "data": {k: v for k, v in s.to_dict().items()
                                         if k in _SIGNAL_FIELDS}} for s in new]
    items += [{"type": NotificationType.REGIME_CHANGE,
               "data": {"symbol": sym, "old": old, "new": new_}}
              for sym, old, new_ in changes]
    queued = True
    try:
        enqueue(config, items)
    except NotifyError as exc:
        queued = False
        log.warning("notifications not queued: %s", exc)
    emit = (events or Workspace.of(config).events()).emit
    for s in new:
        emit(EventType.SIGNAL_PASSED, symbol=s.symbol, direction=s.direction, engine=s.engine,
             strength=s.strength, candle_time=iso(s.candle_time), queued=queued)
    for sym, old, new_ in changes:
        emit(EventType.REGIME_CHANGED, symbol=sym, old=old, new=new_, queued=queued)
    return queued or not items
