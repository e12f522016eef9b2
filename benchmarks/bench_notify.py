"""Notifications: a burst of 200 over 4 types, batched vs one message per notification, sent
through a fake Bot API that enforces Telegram's per-group limit (20 messages a minute).

Time is virtual (the flush's sleeps advance a shared clock), so the minutes of pacing a real
group needs take milliseconds here; the count of messages and of 429s is what is measured.

    python -m botopt.benchmarks.bench_notify [--quick]
"""

from __future__ import annotations

import re
import tempfile

from ._common import Row, main

TOKEN = "123456789:AAbenchbenchbenchbenchbenchbench"


def _send_all(batch_size: int, n: int) -> tuple[int, int, set[int], float]:
    from ..core.base._config import load_config
    from ..core.delivery._notify import enqueue, flush_notifications, queue_stats
    from .fake_telegram import FakeTelegram, VirtualClock

    clock = VirtualClock()
    server = FakeTelegram(token=TOKEN, clock=clock.time).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(overrides={
                "cache.dir": tmp, "telegram.token": TOKEN, "telegram.chat_id": "-1001",
                "telegram.api_url": server.url, "telegram.max_batch_size": batch_size})
            kinds = ["signal", "regime_change", "trade_executed", "alert"]
            enqueue(cfg, [{"type": kinds[i % 4], "data": {"symbol": f"S{i}", "n": i}}
                          for i in range(n)], now=clock.time())
            start = clock.time()
            for _ in range(200):  # cron runs; each waits within its flush budget
                r = flush_notifications(cfg, force=True, clock=clock.time, sleep=clock.sleep)
                if not queue_stats(cfg)["pending"]:
                    break
                if r.next_retry_at:
                    clock.sleep(max(0.0, r.next_retry_at - clock.time()))
            delivered = {int(x) for m in server.received
                         for x in re.findall(r"\bS(\d+)\b", m["shown"])}
            return (len(server.received), server.responses.count(429), delivered,
                    clock.time() - start)
    finally:
        server.stop()


def run(quick: bool = False) -> list[Row]:
    n = 200
    single_msgs, single_429, single_ids, single_t = _send_all(1, n)
    batched_msgs, batched_429, batched_ids, batched_t = _send_all(5, n)
    return [
        Row("notify", f"burst of {n} over 4 types: messages sent",
            f"{single_msgs} (one each)", f"{batched_msgs} (batched)", single_msgs,
            batched_msgs, "reduction", claim="authors: 70% fewer; bound 80%",
            identical=single_ids == batched_ids == set(range(n)),
            note=f"429s provoked: {single_429} unbatched, {batched_429} batched; "
                 f"virtual minutes to deliver: {single_t / 60:.1f} vs {batched_t / 60:.1f}"),
    ]


if __name__ == "__main__":
    main(run, __doc__ or "")
