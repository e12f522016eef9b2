"""Cooldown records: the signals that passed, kept between runs so a symbol is not signalled
again within the cooldown. ``CooldownStore`` keeps them on this host; the shared server's store
(``_redis_store``) keeps them for several hosts under the same ``Cooldowns`` protocol. The
gates (``signals``) read a snapshot; the Workspace hands out the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ..base._fs import JsonState


@dataclass(frozen=True)
class CooldownRecord:
    symbol: str
    direction: str
    candle_time: datetime

    def key(self) -> tuple[str, str, str]:
        return (self.symbol, self.direction, self.candle_time.isoformat())


class Cooldowns(Protocol):
    """Where passed signals are kept between runs: ``CooldownStore`` on this host, or the
    shared server's store with several hosts. ``record`` returns only what it added, so a
    signal is queued by the one run (on whichever host) that recorded it."""

    def digest(self) -> str: ...
    def snapshot(self) -> list[CooldownRecord]: ...
    def record(self, passed: Iterable[CooldownRecord]) -> list[CooldownRecord]: ...


class CooldownStore:
    """Passed signals, kept between runs in a JSON file (``JsonState``: atomic replace under
    a file lock)."""

    def __init__(self, path: Path, keep: timedelta = timedelta(days=2),
                 root: Path | None = None) -> None:
        self.path = path
        self.keep = keep
        self._doc = JsonState(path, "cooldown state", root=root)

    @staticmethod
    def _parse(doc: Any) -> list[CooldownRecord]:
        try:
            return [CooldownRecord(r["symbol"], r["direction"],
                                   datetime.fromisoformat(r["candle_time"]))
                    for r in doc["records"]]
        except (ValueError, KeyError, TypeError):
            import logging

            logging.getLogger("botopt.gates").warning(
                "cooldown state is damaged; starting afresh")
            return []

    def digest(self) -> str:
        """A hash of the stored records (part of the whole-run cache key)."""
        import hashlib

        raw = self._doc.raw()
        return "empty" if raw is None else hashlib.blake2b(raw, digest_size=16).hexdigest()

    def snapshot(self) -> list[CooldownRecord]:
        return self._parse(self._doc.read({"records": []}))

    def record(self, passed: Iterable[CooldownRecord]) -> list[CooldownRecord]:
        """Add records; return those that were not there yet (first run to see them wins)."""
        new_items = list(passed)
        if not new_items:
            return []

        def change(doc: Any) -> tuple[Any, list[CooldownRecord]]:
            merged, added = merge_records(self._parse(doc), new_items, self.keep)
            if not added:
                return None, []
            return {"records": [{"symbol": r.symbol, "direction": r.direction,
                                 "candle_time": r.candle_time.isoformat()}
                                for r in merged]}, added

        return self._doc.update(change, {"records": []}) or []

    def drain(self, push: Callable[[list[CooldownRecord]], Any]) -> int:
        """Hand every record to ``push`` and forget them, under the file's lock (the shared
        store takes over what was recorded here during an outage). When ``push`` raises,
        nothing is forgotten."""
        if not self.path.exists():
            return 0

        def change(doc: Any) -> tuple[Any, int]:
            records = self._parse(doc)
            if not records:
                return None, 0
            push(records)
            return {"records": []}, len(records)

        return int(self._doc.update(change, {"records": []}) or 0)


def merge_records(current: list[CooldownRecord], new_items: Sequence[CooldownRecord],
                  keep: timedelta) -> tuple[list[CooldownRecord], list[CooldownRecord]]:
    """(records kept, records added): the new ones not there yet appended, then those older
    than ``keep`` before the newest dropped. The one rule of every cooldown store (a file,
    the shared server, a backtest's memory), so a replay carries what a cron run would."""
    if not new_items:
        return current, []
    # Only records at a new item's candle time can share its key (equal keys mean equal
    # times): a replay merges every candle, and formatting each record's key was its cost.
    times = {r.candle_time for r in new_items}
    known = {r.key() for r in current if r.candle_time in times}
    added = [r for r in new_items if r.key() not in known]
    if not added:
        return current, []
    merged = current + added
    newest = max(r.candle_time for r in merged)
    return [r for r in merged if r.candle_time > newest - keep], added
