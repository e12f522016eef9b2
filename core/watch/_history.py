"""``botopt history``: what happened while nobody watched, read back from the event log.

The cron log is empty on success by design (``--quiet``), so the record of which signals
passed last night is the event log that every run appends to. The monitor rotates it to
``events.log.1`` by age and size (monitor.event_max_age / event_max_bytes), so history reaches
back one rotation: at least ``event_max_age`` unless the size bound cut it first.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..base._codec import finite, json_loads
from ..base._config import Config
from ..base._vocab import EventType
from ..errors import UsageError
from ..state._events import valid_event
from ..state._workspace import Workspace

# history type -> the event types behind it
TYPES: dict[str, tuple[str, ...]] = {
    "signal": (EventType.SIGNAL_PASSED,),
    "regime": (EventType.REGIME_CHANGED,),
    "flush": (EventType.NOTIFY_FLUSHED,),
    "failure": (EventType.RUN_FAILED, EventType.NOTIFY_FAILED),
}
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


_YEAR_ONE = datetime(1, 1, 2, tzinfo=timezone.utc).timestamp()


def parse_since(value: str | None, now: float) -> float:
    """``--since``: a duration back from now (30m, 12h, 7d, 2w) or an ISO time. Default 24h."""
    if value is None:
        return now - 86400
    # at most 9 digits: a longer number is no period a log holds (and 5,000 digits are
    # past what int() reads); 999,999,999 weeks back reads everything
    m = re.fullmatch(r"\s*([0-9]{1,9})\s*([mhdw])\s*", value)
    if m:
        # no earlier than year 1 (the --json output prints the start as a date)
        return max(now - int(m.group(1)) * _UNIT_S[m.group(2)], _YEAR_ONE)
    # Imported here: the candle readers (and their HTTP client) are what ``cache-stats``,
    # which imports this module for ``cache_report``, would otherwise load on every start.
    from ..data._candles import parse_as_of

    try:
        when = parse_as_of(value)
    except UsageError:
        when = None
    if when is None:
        raise UsageError(f"invalid --since {value[:40]!r}: use a duration (30m, 12h, 7d) or "
                         "ISO 8601 (2026-01-01T00:00Z)", key="--since")
    return when.timestamp()


def parse_types(value: str | None) -> set[str]:
    if value is None:
        return set(TYPES)
    wanted = {t.strip().lower() for t in value.split(",") if t.strip()}
    unknown = sorted(wanted - set(TYPES))
    if unknown or not wanted:
        raise UsageError(f"invalid --type {value!r}: use one or more of {', '.join(TYPES)}",
                         key="--type")
    return wanted


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


def _summary(kind: str, d: dict[str, Any], event: str = "") -> str:
    if kind == "signal":
        strength = d.get("strength")
        s = f" strength {strength:.2f}" if isinstance(strength, (int, float)) else ""
        candle = str(d.get("candle_time") or "").replace("T", " ").rstrip("Z")[:16]
        return f"{d.get('symbol')} {d.get('direction')}{s} ({d.get('engine')}, candle {candle})"
    if kind == "regime":
        return f"{d.get('symbol')} {d.get('old') or '-'} -> {d.get('new')}"
    if kind == "flush":
        return f"{d.get('notifications')} notification(s) in {d.get('messages')} message(s)"
    where = f"{d['command']}: " if d.get("command") else (
        "notify-flush: " if event == EventType.NOTIFY_FAILED else "")
    return where + str(d.get("error", ""))


def history(config: Config, *, since: float, types: set[str],
            root: Path | None = None) -> list[dict[str, Any]]:
    """Matching events since ``since`` (epoch s), oldest first, as dicts with ISO times."""
    ws = Workspace.of(config) if root is None else Workspace(root, config)
    wanted = {ev: kind for kind in types for ev in TYPES[kind]}
    out = []
    for raw_lines in ws.event_lines(since):
        for raw in raw_lines:
            try:
                ev = json_loads(raw)
            except (ValueError, RecursionError):
                continue  # a torn or foreign line
            if not valid_event(ev):  # absurd time, data of the wrong type: damaged
                continue
            kind, t = wanted.get(ev["type"]), float(ev["t"])
            if kind is None or t < since:
                continue
            data = finite(ev.get("data", {}))  # an old NaN: --json must stay JSON
            entry = {"time": iso_time(t), "type": kind, "event": ev["type"],
                     "summary": _summary(kind, data, ev["type"]), "data": data}
            if isinstance(ev.get("host"), str):  # several hosts: which one it came from
                entry["host"] = ev["host"][:100]
            out.append(entry)
    out.sort(key=lambda e: e["time"])
    return out


def signals_runs(config: Config, *, since: float) -> dict[str, Any]:
    """Live ``signals`` runs since ``since``: how many, and how many the whole-run cache
    answered (the stage caches are consulted only by the others), for cron and by hand."""
    ws = Workspace.of(config)
    out: dict[str, dict[str, float]] = {k: {"runs": 0, "from_cache": 0}
                                        for k in ("cron", "by_hand")}
    for raw_lines in ws.event_lines(since):
        for raw in raw_lines:
            try:
                ev = json_loads(raw)
                t = float(ev["t"])
                data = ev["data"]
                if ev["type"] != EventType.RUN_FINISHED or data.get("command") != "signals" \
                        or t < since:
                    continue
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a torn or foreign line
            row = out["by_hand" if data.get("interactive") is True else "cron"]
            row["runs"] += 1
            row["from_cache"] += 1 if data.get("cached") is True else 0
    for row in out.values():
        row["rate"] = round(row["from_cache"] / row["runs"], 4) if row["runs"] else 0.0
    return out


@dataclass(frozen=True)
class CacheReport:
    """What ``botopt cache-stats`` shows: the ``signals`` runs and how many the whole-run
    cache answered, the stage caches' figures, each host's where several share the store
    (None for one host), and what the figures cover (a directory, or a server)."""

    runs: dict[str, Any]
    caches: dict[str, dict[str, Any]]
    hosts: dict[str, dict[str, dict[str, Any]]] | None
    where: str


def cache_report(config: Config, *, since: float, reset: bool = False) -> CacheReport:
    """The figures of ``cache-stats``; ``reset`` first starts the counters again at zero
    (refused with a one-line UsageError where the counters are every host's)."""
    from ..base._config import effective_lives
    from ..state._cache_stats import get_cache_stats, get_host_cache_stats, reset_cache_stats

    ws = Workspace.of(config)
    if reset:
        reset_cache_stats(ws.root, config=config)
    caches = get_cache_stats(ws.root, ttls=effective_lives(config), config=config)
    statistics = ws.cache_statistics()
    hosts = get_host_cache_stats(ws.root, config=config) if statistics.per_host else None
    return CacheReport(runs=signals_runs(config, since=since), caches=caches,
                       hosts=hosts, where=statistics.where)


def now() -> float:
    return time.time()
