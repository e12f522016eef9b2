"""The last regime seen per symbol, so a regime change is reported once across runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from botopt.core._fs import atomic_write_bytes

log = logging.getLogger("botopt.regime")


class RegimeState:
    def __init__(self, path: Path) -> None:
        self.path = path

    def update(self, seen: Iterable[tuple[str, str, datetime]]
               ) -> list[tuple[str, str | None, str]]:
        """Record (symbol, regime, candle_time); return (symbol, old, new) for changes.

        Only a newer candle can change the record, so replaying old times or two runs on
        the same candle never report a change twice. A symbol's first regime is recorded
        without being reported.
        """
        from filelock import FileLock, Timeout

        items = list(seen)
        changes: list[tuple[str, str | None, str]] = []
        try:
            with FileLock(str(self.path) + ".lock", timeout=5):
                try:
                    state = json.loads(self.path.read_bytes())
                except FileNotFoundError:
                    state = {}
                except ValueError:
                    log.warning("regime state %s is damaged; starting afresh", self.path)
                    state = {}
                dirty = False
                for sym, regime, t in items:
                    old = state.get(sym)
                    if old is not None and datetime.fromisoformat(old[1]) >= t:
                        continue
                    if old is not None and old[0] != regime:
                        changes.append((sym, old[0], regime))
                    state[sym] = [regime, t.isoformat()]
                    dirty = True
                if dirty:
                    atomic_write_bytes(self.path, json.dumps(state, sort_keys=True).encode())
        except Timeout:
            log.warning("regime state %s is locked by another run; not updated", self.path)
        return changes
