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

from ..base._frozen import quick_init
from ..base._fs import JsonState


@quick_init
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
    def forget(self, records: Sequence[CooldownRecord]) -> None: ...


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

    def forget(self, records: Sequence[CooldownRecord]) -> None:
        """Remove ``records`` (this run's, whose notifications could not be queued), so a
        later run on their candle records and queues them again."""
        keys = {r.key() for r in records}
        if not keys:
            return

        def change(doc: Any) -> tuple[Any, None]:
            current = self._parse(doc)
            kept = [r for r in current if r.key() not in keys]
            if len(kept) == len(current):
                return None, None
            return {"records": [{"symbol": r.symbol, "direction": r.direction,
                                 "candle_time": r.candle_time.isoformat()}
                                for r in kept]}, None

        self._doc.update(change, {"records": []})

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


# Records are kept this long beyond the cooldown itself: a symbol whose candles lag the
# newest record by up to this is still judged against its own.
KEEP_MARGIN = timedelta(days=2)


def keep_for(cooldown_seconds: float) -> timedelta:
    """How long a store keeps records for a cooldown of ``cooldown_seconds``. A record
    dropped before its cooldown ended let the same signal pass again: every store kept 2
    days whatever the cooldown, so a 5-day cooldown at 1d candles repeated signals on day 3
    (sweep G)."""
    return KEEP_MARGIN + timedelta(seconds=cooldown_seconds)


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


class RecordLog:
    """Cooldown records held in memory between a replay's steps, merged by ``merge_records``'
    rule with the same list as a result, in the same order. While every record arrives no
    older than those before it (a replay's steps go forward in candle time), the list is
    sorted by time and a merge, the pruning and ``since`` are bisections over the times
    instead of scans of two days of records each candle (1.7 ms a candle at 100 symbols);
    the first record that would break the order turns it into ``merge_records`` itself."""

    def __init__(self) -> None:
        # The records are ``_all[_lo:]``: the pruned ones are skipped by moving ``_lo`` and
        # dropped from the list only once they are half of it, so a step's merge costs its
        # new records, not a copy of two days of them (3 % of a replay at 100 symbols).
        self._all: list[CooldownRecord] = []
        self._times: list[datetime] = []  # the records' times, ascending while sorted
        self._lo = 0
        self._sorted = True

    @property
    def records(self) -> list[CooldownRecord]:
        return self._all[self._lo:]

    @records.setter
    def records(self, value: list[CooldownRecord]) -> None:
        self._all, self._lo = list(value), 0

    def merge(self, new_items: Sequence[CooldownRecord], keep: timedelta) -> None:
        from bisect import bisect_left, bisect_right

        if not new_items:
            return
        if self._sorted:
            new_times = [r.candle_time for r in new_items]
            first = min(new_times)
            if self._times and first < self._times[-1] or \
                    any(a > b for a, b in zip(new_times, new_times[1:], strict=False)):
                self._sorted = False
        if not self._sorted:
            self.records, _ = merge_records(self.records, new_items, keep)
            return
        # the records that can share a new item's key: those at its time, the list's tail
        at = bisect_left(self._times, first, self._lo)
        known = {r.key() for r in self._all[at:]}
        added = [r for r in new_items if r.key() not in known]
        if not added:
            return
        self._all.extend(added)
        self._times.extend(r.candle_time for r in added)
        # newest is the last
        self._lo = bisect_right(self._times, self._times[-1] - keep, self._lo)
        if self._lo > 1024 and 2 * self._lo > len(self._all):
            del self._all[:self._lo], self._times[:self._lo]
            self._lo = 0

    def since(self, lo: datetime) -> list[CooldownRecord]:
        """The records newer than ``lo``, in order."""
        if not self._sorted:
            return [r for r in self.records if r.candle_time > lo]
        from bisect import bisect_right

        return self._all[bisect_right(self._times, lo, self._lo):]
