"""The last regime seen per symbol, so a regime change is reported once across runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..base._fs import JsonState


class RegimeHistory(Protocol):
    """Each symbol's last regime: ``RegimeState`` here, or the shared server's. ``update``
    returns the changes (symbol, old, new) it recorded, each once."""

    def update(self, seen: Iterable[tuple[str, str, datetime]]
               ) -> list[tuple[str, str | None, str]]: ...


class RegimeState:
    def __init__(self, path: Path, root: Path | None = None) -> None:
        self.path = path
        self._doc = JsonState(path, "regime state", timeout=5, root=root)

    def update(self, seen: Iterable[tuple[str, str, datetime]]
               ) -> list[tuple[str, str | None, str]]:
        """Record (symbol, regime, candle_time); return (symbol, old, new) for changes.

        Only a newer candle can change the record, so replaying old times or two runs on
        the same candle never report a change twice. A symbol's first regime is recorded
        without being reported.
        """
        items = list(seen)

        def change(state: Any) -> tuple[Any, list[tuple[str, str | None, str]]]:
            if not isinstance(state, dict):
                state = {}
            changes: list[tuple[str, str | None, str]] = []
            dirty = False
            for sym, regime, t in items:
                old = state.get(sym)
                if not (isinstance(old, list) and len(old) == 2 and isinstance(old[1], str)):
                    old = None  # a damaged record: as if the symbol were new
                if old is not None and datetime.fromisoformat(old[1]) >= t:
                    continue
                if old is not None and old[0] != regime:
                    changes.append((sym, old[0], regime))
                state[sym] = [regime, t.isoformat()]
                dirty = True
            return (state if dirty else None), changes

        return self._doc.update(change, {}) or []
