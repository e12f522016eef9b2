"""``botopt metrics``: the bot's figures in Prometheus' text format, for node_exporter's
textfile collector.

Run from cron every minute, so it must start fast and read little: the text format is written
here (a few lines of escaping) rather than through prometheus-client, whose import alone costs
about 50 ms (it pulls in http.server and wsgiref) against botopt's whole CLI start-up of about
90 ms. The tests parse the output with prometheus-client's own parser.

Counters (``_total``) must only grow, but the event log they come from is rotated by the
monitor. So the counts are kept in a small state file beside the log, advanced by the events
not yet counted: each event has an id, and the ids of the last ``_OVERLAP`` seconds are kept, so
an event written late (another process, another host's clock) is counted once, not lost.
A damaged state file starts the counts afresh, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import hashlib
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ..base._codec import json_loads
from ..base._config import Config
from ..base._fs import JsonState, atomic_write_bytes
from ..base._vocab import EventType
from ..errors import UsageError
from ..state._events import events_dir
from ..state._paths import cache_dir_for

log = logging.getLogger("botopt.metrics")
STATE_NAME = "metrics_state.json"
_OVERLAP = 300.0  # seconds of event ids kept: how late an event may be written and still count
_MAX_LABEL = 100  # characters of a label value taken from an event (a host or command name)
_STATE_VERSION = 1


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    name: str
    kind: str  # gauge or counter
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(Sample(labels, float(value)))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``families``."""
    out = []
    for f in families:
        if not f.samples:
            continue
        # HELP escapes only backslash and newline (the format's rule for docstrings).
        out.append(f"# HELP {f.name} " + f.help.replace("\\", "\\\\").replace("\n", "\\n"))
        out.append(f"# TYPE {f.name} {f.kind}")
        for s in f.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(s.labels.items()))
            out.append(f"{f.name}{{{labels}}} {_number(s.value)}" if labels
                       else f"{f.name} {_number(s.value)}")
    return "\n".join(out) + "\n"


# ---- the counts kept between runs ----------------------------------------------------------

def _fresh() -> dict[str, Any]:
    return {"version": _STATE_VERSION, "through": 0.0, "seen": {}, "runs": {}, "signals": {},
            "delivery": {}}


def _finite(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _valid_state(doc: Any) -> bool:
    """Only what this module writes: anything else is a damaged or foreign file."""
    if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION:
        return False
    if not _finite(doc.get("through")) or not isinstance(doc.get("seen"), dict):
        return False
    if not all(isinstance(doc.get(k), dict) for k in ("runs", "signals", "delivery")):
        return False
    numbers: list[Any] = list(doc["seen"].values())
    for per_host in (*doc["runs"].values(), *doc["signals"].values(),
                     *doc["delivery"].values()):
        if not isinstance(per_host, dict):
            return False
        for v in per_host.values():
            numbers += list(v.values()) if isinstance(v, dict) else [v]
    return all(_finite(v) and v >= 0 for v in numbers)


def _label(value: Any, default: str) -> str:
    text = value if isinstance(value, str) and value else default
    return "".join(c if c.isprintable() else "?" for c in text[:_MAX_LABEL])


def _count(doc: dict[str, Any], ev: dict[str, Any], host: str) -> None:
    """Add one event to the counts."""
    kind, t = ev.get("type"), float(ev["t"])
    raw = ev.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if kind in (EventType.RUN_FINISHED, EventType.RUN_FAILED):
        command = _label(data.get("command"), "unknown")
        run = doc["runs"].setdefault(host, {}).setdefault(command, {})
        ok = kind == EventType.RUN_FINISHED
        key = "ok" if ok else "failed"
        run[key] = run.get(key, 0) + 1
        stamp = "last_success" if ok else "last_failure"
        run[stamp] = max(run.get(stamp, 0.0), t)
        duration = data.get("duration_s")
        if _finite(duration) and duration >= 0 and (ok and t >= run.get("last_success", 0.0)):
            run["duration"] = float(duration)
        if ok and command == "signals":
            _count_signals(doc["signals"].setdefault(host, {}), data)
    elif kind in (EventType.NOTIFY_FLUSHED, EventType.NOTIFY_FAILED,
                  EventType.NOTIFY_DEAD_LETTER):
        dest = doc["delivery"].setdefault(_label(data.get("destination"), "telegram"), {})
        if kind == EventType.NOTIFY_DEAD_LETTER:
            dest["dead_lettered"] = dest.get("dead_lettered", 0) + 1
        n = data.get("rate_limited")
        if _finite(n) and 0 < n < 1e9:
            dest["rate_limited"] = dest.get("rate_limited", 0) + int(n)


def _count_signals(signals: dict[str, Any], data: dict[str, Any]) -> None:
    for key in ("symbols", "passed"):
        n = data.get(key)
        if _finite(n) and 0 <= n < 1e9:
            signals[key] = signals.get(key, 0) + int(n)
    blocked = data.get("blocked")
    if isinstance(blocked, dict):
        per_gate = signals.setdefault("blocked", {})
        for gate, n in blocked.items():
            if _finite(n) and 0 < n < 1e9:
                g = _label(gate, "other")
                per_gate[g] = per_gate.get(g, 0) + int(n)


def advance(doc: dict[str, Any], lines: Iterable[bytes], now: float,
            local_host: str) -> dict[str, Any]:
    """``doc`` with the events of ``lines`` not yet counted added to it."""
    since = _since(doc, now)
    stepped_back = doc["through"] - _OVERLAP > now
    seen: dict[str, float] = doc["seen"]
    for raw in lines:
        try:
            ev = json_loads(raw)
            t = float(ev["t"])
            eid = str(ev.get("id") or hashlib.blake2b(raw, digest_size=8).hexdigest())
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            continue  # a torn or foreign line (history and the monitor skip it too)
        if not math.isfinite(t) or t <= since or t > now + _OVERLAP or eid in seen:
            continue
        seen[eid] = t
        _count(doc, ev, _label(ev.get("host"), local_host))
    # A clock stepped back (NTP, a restored VM): the count goes on from now. Kept at its
    # high-water mark, every event until the clock passed it again was skipped as already
    # counted (a failed run never reached botopt_runs_total; sweep G). The ids kept below
    # stop the events of the last minutes being counted twice.
    doc["through"] = now if stepped_back else max(doc["through"], now)
    if stepped_back:  # a "last success" ahead of the clock would hide every failure after
        for commands in doc["runs"].values():
            for run in commands.values():
                for stamp in ("last_success", "last_failure"):
                    if run.get(stamp, 0.0) > now:
                        run[stamp] = now
    doc["seen"] = {k: v for k, v in seen.items() if v > now - _OVERLAP}
    return doc


def _since(doc: dict[str, Any], now: float) -> float:
    """The time before which every event has been counted: the last count's, or, when the
    clock has gone back since, the clock's now (both less the overlap)."""
    return min(float(doc["through"]), now) - _OVERLAP


# ---- the figures ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricsResult:
    text: str
    families: int
    samples: int
    errors: dict[str, str]  # source -> why its figures are missing


def _event_lines(config: Config, root: Path, since: float) -> list[bytes]:
    """Event lines from about ``since`` on: the local logs (the rotated one first), then,
    with ``state.url``, the shared stream's."""
    from ..state._workspace import Workspace

    return [line for chunk in Workspace(root, config).event_lines(since) for line in chunk]


def _run_families(doc: dict[str, Any]) -> list[Family]:
    last_ok = Family("botopt_last_success_timestamp_seconds", "gauge",
                     "When each command last finished without error (Unix time).")
    last_bad = Family("botopt_last_failure_timestamp_seconds", "gauge",
                      "When each command last failed (Unix time).")
    duration = Family("botopt_run_duration_seconds", "gauge",
                      "How long the last successful run of each command took.")
    runs = Family("botopt_runs_total", "counter", "Runs of each command by outcome.")
    for host, commands in sorted(doc["runs"].items()):
        for command, r in sorted(commands.items()):
            lab = {"host": host, "command": command}
            if "last_success" in r:
                last_ok.add(r["last_success"], **lab)
            if "last_failure" in r:
                last_bad.add(r["last_failure"], **lab)
            if "duration" in r:
                duration.add(r["duration"], **lab)
            for outcome in ("ok", "failed"):
                runs.add(r.get(outcome, 0), **lab, outcome=outcome)
    return [last_ok, last_bad, duration, runs]


def _signal_families(doc: dict[str, Any]) -> list[Family]:
    symbols = Family("botopt_symbols_processed_total", "counter",
                     "Symbols judged by successful signals runs.")
    passed = Family("botopt_signals_passed_total", "counter",
                    "Signals that passed every gate.")
    blocked = Family("botopt_signals_blocked_total", "counter",
                     "Symbols blocked, by the gate that blocked them (a symbol blocked by two "
                     "gates counts in both; unusable data counts under its data status).")
    for host, s in sorted(doc["signals"].items()):
        symbols.add(s.get("symbols", 0), host=host)
        passed.add(s.get("passed", 0), host=host)
        for gate, n in sorted(s.get("blocked", {}).items()):
            blocked.add(n, host=host, gate=gate)
    return [symbols, passed, blocked]


def _delivery_families(doc: dict[str, Any], queues: dict[str, dict[str, Any]]
                       ) -> list[Family]:
    limited = Family("botopt_rate_limited_total", "counter",
                     "429 (rate limit) answers from each destination.")
    dead_total = Family("botopt_dead_lettered_total", "counter",
                        "Notifications moved to the dead letters, per destination.")
    depth = Family("botopt_queue_depth_notifications", "gauge",
                   "Notifications queued and not yet delivered, per destination.")
    dead = Family("botopt_dead_letter_notifications", "gauge",
                  "Notifications in the dead letters now, per destination.")
    oldest = Family("botopt_queue_oldest_age_seconds", "gauge",
                    "Age of the oldest queued notification, per destination.")
    for dest in sorted(set(doc["delivery"]) | set(queues)):
        d = doc["delivery"].get(dest, {})
        limited.add(d.get("rate_limited", 0), destination=dest)
        dead_total.add(d.get("dead_lettered", 0), destination=dest)
    for dest, q in sorted(queues.items()):
        depth.add(q["pending"], destination=dest)
        dead.add(q["dead_letters"], destination=dest)
        oldest.add(q["oldest_age"], destination=dest)
    return [limited, dead_total, depth, dead, oldest]


def _cache_families(stats: dict[str, dict[str, Any]]) -> list[Family]:
    ratio = Family("botopt_cache_hit_ratio", "gauge",
                   "Hits over lookups of each cache since it was last cleared.")
    hits = Family("botopt_cache_hits_total", "counter", "Cache hits.")
    misses = Family("botopt_cache_misses_total", "counter", "Cache misses.")
    size = Family("botopt_cache_size_bytes", "gauge", "Bytes each cache holds.")
    for name, s in stats.items():
        ratio.add(s["hit_rate"], cache=name)
        hits.add(s["hits"], cache=name)
        misses.add(s["misses"], cache=name)
        size.add(s["size_bytes"], cache=name)
    return [ratio, hits, misses, size]


def _queues(config: Config, now: float) -> dict[str, dict[str, Any]]:
    from ..delivery._notify import destination_names, destination_stats, queue_stats
    from ..state._workspace import Workspace

    # With the server down the queue falls back to this host's spool: a depth that leaves
    # out every other host's notifications is not the queue's figure, so the file flags the
    # source instead of reporting a partial depth.
    Workspace.of(config).check_shared()
    q = queue_stats(config)
    out = {}
    # every destination in use has its series, at 0 when nothing waits for it
    per = destination_stats(q, destination_names(config))
    for dest in sorted(per):
        d = per[dest]
        oldest = d.get("oldest_created_at")
        out[dest] = {"pending": int(d.get("pending", 0)),
                     "dead_letters": int(d.get("dead_letters", 0)),
                     "oldest_age": max(0.0, now - float(oldest)) if _finite(oldest) else 0.0}
    return out


def _cache_stats(config: Config, root: Path) -> dict[str, dict[str, Any]]:
    from ..state._cache_stats import get_cache_stats

    return get_cache_stats(root, config=config)  # the Workspace picks this host or all hosts


def _guarded(errors: dict[str, str], source: str, read: Callable[[], Any], empty: Any) -> Any:
    """One source's figures, or ``empty`` and the reason: a queue on an unreachable server
    must not cost the run figures (the file says which source failed)."""
    from ..errors import BotoptError

    try:
        return read()
    except (BotoptError, OSError) as exc:
        errors[source] = str(exc)[:300]  # the command's one error line names it
        return empty


def collect_metrics(config: Config, *, now: float | None = None, root: Path | None = None,
            host: str | None = None) -> MetricsResult:
    """Every figure: counts advanced from the event log (kept in ``metrics_state.json``
    beside it), the queue and the caches read as they are now."""
    now = time.time() if now is None else now
    root = root or cache_dir_for(config)
    directory = events_dir(root)
    local_host = _label(host or config.state.host_id or socket.gethostname(), "localhost")
    errors: dict[str, str] = {}
    store = JsonState(directory / STATE_NAME, "metrics state", root=root)

    def change(doc: Any) -> tuple[Any, Any]:
        if doc is not None and not _valid_state(doc):
            log.warning("metrics state %s is damaged; counting afresh", store.path)
            doc = None
        doc = doc or _fresh()
        lines = _event_lines(config, root, _since(doc, now))
        new = advance(doc, lines, now, local_host)
        return new, new

    doc = _guarded(errors, "events", lambda: _update(store, change), None)
    if doc is None:  # the state could not be saved: report what is known without saving
        doc = store.read(None)
        doc = doc if _valid_state(doc) else _fresh()
    queues = _guarded(errors, "queue", lambda: _queues(config, now), {})
    caches = _guarded(errors, "cache", lambda: _cache_stats(config, root), {})
    fams = [*_run_families(doc), *_signal_families(doc), *_delivery_families(doc, queues),
            *_cache_families(caches)]
    errs = Family("botopt_metrics_source_errors", "gauge",
                  "1 when a source's figures could not be read this time (see stderr).")
    for source in ("events", "queue", "cache"):
        errs.add(1 if source in errors else 0, source=source)
    stamp = Family("botopt_metrics_timestamp_seconds", "gauge",
                   "When this file was written (Unix time).")
    stamp.add(now)
    fams += [errs, stamp]
    return MetricsResult(render(fams), sum(1 for f in fams if f.samples),
                         sum(len(f.samples) for f in fams), errors)


def _update(store: JsonState, change: Callable[[Any], tuple[Any, Any]]) -> Any:
    result = store.update(change, None)
    if result is None:
        raise OSError("metrics state not saved (locked or the disk refused it)")
    return result


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as node_exporter's textfile collector wants it: whole or
    not at all (a temporary file in the same directory, renamed over the old one), readable
    by the exporter's user. The collector only reads ``*.prom``."""
    if path.suffix != ".prom":
        raise UsageError(f"metrics file {path}: the textfile collector reads only *.prom "
                         "files; name it e.g. botopt.prom", file=str(path), key="--metrics-file")
    if not path.parent.is_dir():
        raise UsageError(f"metrics file {path}: directory {path.parent} does not exist",
                         file=str(path), key="--metrics-file")
    try:
        atomic_write_bytes(path, text.encode(), mode=0o644)
    except OSError as exc:
        from ..errors import BotoptError

        raise BotoptError(f"metrics file {path}: cannot write it ({exc.strerror})",
                          file=str(path), key="--metrics-file") from exc
