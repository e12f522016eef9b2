"""The last regime seen per symbol, so a regime change is reported once across runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from ..base._fs import JsonState
from ..base._vocab import Regime

_REGIMES = frozenset(r.value for r in Regime)


class RegimeHistory(Protocol):
    """Each symbol's last regime: ``RegimeState`` here, or the shared server's. ``update``
    returns the changes (symbol, old, new) it recorded, each once."""

    def update(self, seen: Iterable[tuple[str, str, datetime]]
               ) -> list[tuple[str, str | None, str]]: ...

    def revert(self, changes: Sequence[tuple[str, str | None, str, datetime]]) -> None: ...


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
                old = _record(state.get(sym))  # None: new, or a damaged record
                if old is not None and old[1] >= t:
                    continue
                if old is not None and old[0] != regime:
                    changes.append((sym, old[0], regime))
                state[sym] = [regime, t.isoformat()]
                dirty = True
            return (state if dirty else None), changes

        return self._doc.update(change, {}) or []

    def revert(self, changes: Sequence[tuple[str, str | None, str, datetime]]) -> None:
        """Undo ``changes`` (symbol, old, new, candle) whose notifications could not be
        queued: each symbol's old regime back, dated just before its candle, so a later run
        on that candle reports the change again. A record another run moved on is left."""
        undo = {sym: (old, new, at) for sym, old, new, at in changes if old is not None}
        if not undo:
            return

        def change(state: Any) -> tuple[Any, None]:
            if not isinstance(state, dict):
                return None, None
            dirty = False
            for sym, (old, new, at) in undo.items():
                if state.get(sym) == [new, at.isoformat()]:
                    state[sym] = [old, (at - timedelta(milliseconds=1)).isoformat()]
                    dirty = True
            return (state if dirty else None), None

        self._doc.update(change, {})


# A record dated further ahead than this is damaged: kept, it was "newer" than every
# candle to come (a time in 9999), and the symbol's changes were never reported again.
_AHEAD = timedelta(days=1)


def _record(raw: Any) -> tuple[str, datetime] | None:
    """A stored (regime, candle time), or None when it is not one: an unknown regime, a
    time that does not parse or has no zone, or one from the future."""
    if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], str)
            and isinstance(raw[1], str) and raw[0] in _REGIMES):
        return None
    try:
        t = datetime.fromisoformat(raw[1])
    except ValueError:
        return None
    if t.tzinfo is None or t > datetime.now(timezone.utc) + _AHEAD:
        return None
    return raw[0], t
