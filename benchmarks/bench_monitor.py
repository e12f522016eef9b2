"""Activity monitor: event-driven (wake on a datagram or the next 30 s check) vs the old
10 s polling loop doing the same work, over simulated minutes of cron activity.

Time is compressed by SCALE (1 simulated second = SCALE real seconds) so a run takes
seconds; wake-ups are counted and latencies reported in simulated seconds. CPU time is the
monitor thread's own (time.thread_time).

    python -m botopt.benchmarks.bench_monitor [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from botopt.benchmarks._common import Row, main

SCALE = 0.01


def _simulate(mode: str, minutes: int) -> dict[str, Any]:
    from botopt.core._config import load_config
    from botopt.core._events import emit
    from botopt.core._monitor import Monitor, run_monitor

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(overrides={"cache.dir": tmp, "monitor.check_interval": 30 * SCALE,
                                     "monitor.stale_after": 600 * SCALE})
        handled: list[tuple[float, float]] = []  # (emitted, handled) real times

        def enqueue(items: list[dict[str, Any]]) -> None:
            now = time.time()
            for it in items:
                if it["type"] == "regime_change":
                    handled.append((float(it["data"]["symbol"]), now))

        stop = threading.Event()
        ready = threading.Event()
        out: dict[str, Any] = {}

        def serve() -> None:
            cpu0 = time.thread_time()
            if mode == "events":
                r = run_monitor(cfg, stop_event=stop, ready=ready, enqueue=enqueue)
                out["wakeups"] = r.wakeups
            else:
                mon = Monitor(cfg, enqueue=enqueue)
                ready.set()
                wakeups = 0
                while not stop.wait(10 * SCALE):
                    wakeups += 1
                    mon.handle_pending()
                    if mon.checks_due():
                        mon.run_checks()
                    mon.commit()
                out["wakeups"] = wakeups
            out["cpu"] = time.thread_time() - cpu0

        t = threading.Thread(target=serve)
        t.start()
        ready.wait(10)
        root = Path(tmp)
        start = time.time()
        for minute in range(minutes):  # a cron run every minute; a regime change each 5
            target = start + minute * 60 * SCALE
            time.sleep(max(0.0, target - time.time()))
            emit("run_started", _root=root, command="signals")
            emit("run_finished", _root=root, command="signals", duration_s=0.2)
            if minute % 5 == 0:
                emit("regime_changed", _root=root, symbol=repr(time.time()), old="RANGE",
                     new="TREND_UP")
        time.sleep(max(0.0, start + minutes * 60 * SCALE - time.time()))
        stop.set()
        t.join(30)
        lat = sorted((h - e) / SCALE for e, h in handled)
        out["latency_median"] = statistics.median(lat) if lat else float("nan")
        out["latency_p99"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else \
            float("nan")
        out["handled"] = len(lat)
        return out


def run(quick: bool = False) -> list[Row]:
    minutes = 5 if quick else 30
    poll = _simulate("poll", minutes)
    event = _simulate("events", minutes)
    same = poll["handled"] == event["handled"]
    return [
        Row("monitor", f"{minutes} simulated min: wake-ups", f"polling {poll['wakeups']}",
            f"event-driven {event['wakeups']}", poll["wakeups"], event["wakeups"],
            "reduction", claim="authors: 90% fewer checks", identical=same,
            note=f"CPU {poll['cpu'] * 1e3:.1f} ms vs {event['cpu'] * 1e3:.1f} ms"),
        Row("monitor", f"{minutes} simulated min: event-to-handler latency (median, sim s)",
            f"polling {poll['latency_median']:.2f} s",
            f"event-driven {event['latency_median']:.3f} s", poll["latency_median"],
            event["latency_median"], "speedup", identical=same,
            note=f"p99 {poll['latency_p99']:.2f} s vs {event['latency_p99']:.3f} s"),
    ]


if __name__ == "__main__":
    main(run, __doc__ or "")
