"""State a per-minute cron leaves behind stops growing: a simulated week of enqueues on a real
Redis server, and the local backend's files, compared day 7 against day 1 (issue 24's soak
goal: <= 1.2x). Time is moved, never slept: the shared queue's seen marks take a shift of the
server's clock, the local stores take the time as an argument."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from botopt.core import load_config
from botopt.core.base._vocab import EventType
from botopt.core.state._cooldowns import CooldownRecord, CooldownStore
from botopt.core.state._events import _line, events_dir, first_event_time
from botopt.core.state._queue import FlushRules, LocalQueue
from botopt.core.state._redis import SharedState
from botopt.core.state._redis_queue import SEEN_MS, SharedQueue

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
DAY = 86400.0


def nid(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:32]  # as long as a signal's id


def namespace_size(r: Any, ns: str) -> tuple[int, int]:
    """(keys, bytes) of a namespace: every key's MEMORY USAGE (exact: SAMPLES 0)."""
    keys = list(r.scan_iter(match=f"{ns}:*", count=1000))
    return len(keys), sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)


def flush_all(r: Any, q: SharedQueue) -> None:
    """What a flush does once Telegram said ok: claim, acknowledge, delete."""
    for kind in q.types():
        stream = q.stream(kind)
        for _, entries in r.xreadgroup("flush", "sim", {stream: ">"}, count=10_000) or []:
            ids = [eid for eid, _ in entries]
            if ids:
                r.xack(stream, "flush", *ids)
                r.xdel(stream, *ids)
        r.xgroup_delconsumer(stream, "flush", "sim")


def test_seen_marks_stay_bounded_over_a_week_and_still_refuse_repeats(redis_server, tmp_path):
    ns = "wk"
    hosts = [SharedQueue(SharedState(redis_server.url, ns), LocalQueue(tmp_path / h), host=h)
             for h in ("h1", "h2", "h3")]
    r = hosts[0].r
    # Written by a botopt before the sorted set (a per-id key, 7 days): still honoured.
    r.set(f"{ns}:nq:seen:{nid(-1)}", "1", px=7 * DAY_MS)

    def enqueue(q: SharedQueue, at_ms: int, ids: list[str], kind: str = "signal") -> int:
        q.seen_shift_ms = at_ms
        return q.add_shared([(i, kind, at_ms / 1000, '{"s": 1}', 5) for i in ids])[0]

    assert enqueue(hosts[0], 0, [nid(-1)]) == 0
    sizes: dict[int, tuple[int, int]] = {}
    n = 0
    step = 30 * MINUTE_MS  # every 30 minutes, queued by all three hosts
    for minute_ms in range(step, 7 * DAY_MS + 1, step):
        ids = [nid(n + k) for k in range(4)]  # 200 marks a day: a skiplist, not a listpack
        kind = "signal" if n % 12 else "regime"
        n += 4
        added = [enqueue(q, minute_ms, ids, kind) for q in hosts]
        assert added == [4, 0, 0]  # the other hosts' spools repeat it: refused
        if minute_ms % (6 * 3600_000) == 0:  # a flush every 6 hours is as good here
            flush_all(r, hosts[0])
        if minute_ms % DAY_MS == 0:
            sizes[minute_ms // DAY_MS] = namespace_size(r, ns)
    keys1, mem1 = sizes[1]
    keys7, mem7 = sizes[7]
    assert keys7 <= keys1 * 1.2 and mem7 <= mem1 * 1.2, sizes
    # the marks are one key, holding about a retention's worth of ids, not a week's
    assert r.zcard(f"{ns}:nq:seen") <= 4 * (SEEN_MS // step + 1)
    end = 7 * DAY_MS
    # An id repeated within the retention is refused, by any host; after it, taken again.
    last = nid(n - 4)
    assert enqueue(hosts[1], end + SEEN_MS - 2 * step, [last]) == 0
    assert enqueue(hosts[2], end + SEEN_MS + step, [last]) == 1



def test_shared_cooldown_marks_are_a_constant_number_of_keys(redis_server, tmp_path):
    # Three hosts record the same passed signal every 30 minutes for a week: one host wins
    # each, and the marks that make it so are one sorted set, not a key per signal. Memory
    # fills the 2-day keep (the cooldown window, by design) and then stays.
    from botopt.core.state._redis_store import RedisCooldownStore

    ns = "cd"
    stores = [RedisCooldownStore(SharedState(redis_server.url, ns), "sc",
                                 CooldownStore(tmp_path / f"{h}.json")) for h in "abc"]
    r = stores[0].shared.client
    start = datetime(2026, 11, 1, tzinfo=UTC)
    old = CooldownRecord("OLD_BTC", "long", start)
    r.set(f"{ns}:signal:sc:" + "\x1f".join(old.key()), "1", px=2 * DAY_MS)  # an older botopt's
    stores[0].shift_ms = 0
    assert stores[0].record([old]) == []
    r.delete(f"{ns}:signal:sc:" + "\x1f".join(old.key()))  # it expires by itself, in real time
    sizes = {}
    for i in range(7 * 48):
        rec = CooldownRecord(f"S{i % 10}_BTC", "long", start + timedelta(minutes=30 * (i + 1)))
        won = []
        for st in stores:
            st.shift_ms = (i + 1) * 30 * MINUTE_MS
            won.append(len(st.record([rec])))
        assert won == [1, 0, 0]
        if (i + 1) % 48 == 0:
            sizes[(i + 1) // 48] = namespace_size(r, ns)
    assert {k for k, _ in sizes.values()} == {3}, sizes  # records, version, marks
    assert sizes[7][1] <= sizes[2][1] * 1.2 and sizes[7][1] <= sizes[1][1] * 2.2, sizes
    # A host with stale candles records a signal of a candle older than the records keep
    # (dropped from them at once): another host with the same stale candles is refused.
    stale = CooldownRecord("STALE_BTC", "long", start + timedelta(days=1))
    assert len(stores[1].record([stale])) == 1
    assert stores[2].record([stale]) == []

# -- the local backend ----------------------------------------------------------------------

def files_size(directory: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in directory.glob(pattern) if p.is_file())


@pytest.mark.slow  # 84 fsynced commands: under 1 s on a quiet disk, several on a busy one
def test_local_queue_keeps_nothing_of_delivered_notifications(tmp_path):
    # A week of a per-minute cron's notifications, queued and delivered two hours at a time
    # (a minute at a time behaves alike, 120 times slower): delivered rows are deleted,
    # SQLite reuses their pages, and the WAL goes with the last connection of each command.
    q = LocalQueue(tmp_path)
    t0 = 1_790_000_000.0
    now = [t0]
    rules = FlushRules(force=True, batch_interval=0.0, max_batch_size=40)
    sizes, n = {}, 0
    for cycle in range(7 * 12):
        now[0] = t0 + cycle * 7200
        q.add([(nid(n + i), "signal", now[0] + i * 60, '{"symbol": "ETH_BTC"}', 40)
               for i in range(120)])
        n += 120
        with q.session("-1001", rules, lambda: now[0]) as s:
            assert s is not None
            while (batch := s.next_batch(set())) is not None:
                s.deliver([i for i, _ in batch[1]])
        if (cycle + 1) % 12 == 0:
            sizes[(cycle + 1) // 12] = files_size(tmp_path, "queue.db*")
    assert q.stats()["pending"] == 0
    assert sizes[7] <= sizes[1] * 1.2, sizes


def test_cooldown_records_are_bounded_by_their_keep(tmp_path):
    # One signal passes every 30 minutes for a week. Records older than ``keep`` (2 days,
    # by candle time) before the newest go, so the file grows for 2 days and then no more:
    # after day 7 it is within 1.2x of day 2, and about twice day 1 (the cooldown window).
    store = CooldownStore(tmp_path / "cooldowns.json", keep=timedelta(days=2))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    sizes = {}
    for i in range(7 * 48):
        t = start + timedelta(minutes=30 * (i + 1))
        assert store.record([CooldownRecord(f"S{i % 10}_BTC", "long", t)])
        if (i + 1) % 48 == 0:
            sizes[(i + 1) // 48] = (tmp_path / "cooldowns.json").stat().st_size
    assert sizes[7] <= sizes[2] * 1.2 and sizes[7] <= sizes[1] * 2.2, sizes
    assert len(store.snapshot()) <= 2 * 48 + 1


def test_event_log_is_rotated_by_its_first_event_age_under_a_cron(tmp_path):
    # Two weeks of runs every 5 minutes on the events' own clock, ending now, with
    # ``monitor --once`` every 6 hours. The log's file is appended to all the time (its
    # ctime is always about now), so the age bound must come from the events inside it:
    # events.log never holds more than event_max_age plus one monitor interval.
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")}, env={})
    from botopt.core.watch._monitor import run_monitor

    d = events_dir(cfg.cache.dir)
    d.mkdir(parents=True)
    log = d / "events.log"
    end = time.time()
    t0 = end - 14 * DAY
    age = cfg.monitor.event_max_age
    oldest_kept = []
    for step in range(14 * 288):
        t = t0 + step * 300
        with open(log, "ab") as fh:
            fh.write(_line(EventType.RUN_STARTED, {"command": "signals"}, t=t))
            fh.write(_line(EventType.RUN_FINISHED, {"command": "signals", "duration_s": 0.5},
                           t=t + 1))
        if step % 72 == 71:
            run_monitor(cfg, once=True, clock=lambda t=t: t + 2)
            first = first_event_time(log)
            if first is not None:
                oldest_kept.append(t + 2 - first)
    assert (d / "events.log.1").exists()
    assert max(oldest_kept) <= age + 6 * 3600, max(oldest_kept) / DAY


def test_cache_statistics_are_one_row_per_cache(tmp_path):
    # A week of per-minute runs adds their hits and misses to one row per cache: the counts
    # grow, the rows and the file do not (sampled: a run every 2 hours). Each run is a
    # process that closes the cache, and its WAL with it (held open, the WAL stops at SQLite's
    # auto-checkpoint, about 4 MB).
    from botopt.core.state._cache import _STATS, DiskcacheStore

    store = DiskcacheStore(tmp_path / "entries")
    sizes = {}
    for i in range(7 * 12):
        store.write([], {"features": (3, 1, 0.5), "regime": (1, 0, 0.1)}, 1_790_000_000.0 + i)
        store.close()
        if (i + 1) % 12 == 0:
            sizes[(i + 1) // 12] = files_size(tmp_path / "entries", "cache.db*")
    rows = store._conn().execute("SELECT key FROM Cache WHERE key LIKE ?",
                                 (_STATS + "%",)).fetchall()
    store.close()
    assert sorted(r[0] for r in rows) == [_STATS + "features", _STATS + "regime"]
    assert sizes[7] <= sizes[1] * 1.2, sizes


def test_stage_entries_are_kept_their_life_and_a_short_margin(tmp_path, monkeypatch):
    # A cron over 5-minute candles with the wall clock moving (diskcache's garbage
    # collection reads it): each candle's run writes its entries (life 10 minutes) and the
    # store holds about two candles' worth, not the hour's that a long margin kept: the key
    # index, which every candle's run rewrites nearly whole, grows with what is held.
    import time as time_module

    from botopt.core.state._cache import DiskcacheStore

    clock = [1_790_000_000.0]
    monkeypatch.setattr(time_module, "time", lambda: clock[0])
    store = DiskcacheStore(tmp_path / "entries")
    held = []
    for candle in range(30):
        for minute in range(5):  # a run a minute; one in five has a new candle
            clock[0] += 60
            rows = [("features", f"{candle:04d}{k:036x}", b"v", clock[0] + 600, 0.0)
                    for k in range(100)] if minute == 0 else []
            store.write(rows, {"features": (0, len(rows), 0.0)}, clock[0])
            store.close()
        held.append(store._conn().execute(
            "SELECT COUNT(*) FROM Cache WHERE tag = 'features'").fetchone()[0])
        store.close()
    assert max(held[10:]) <= 3 * 100, held


def _state(anchor: int, k: int = 0):
    from botopt.core.signals._carry import CarryState
    from botopt.core.signals._features import SMOOTHERS

    return CarryState(anchor=anchor, first_ms=1_515_560_100_000, prefix="ab" * 16,
                      values=tuple(1.0 / (j + 3 + k) for j in range(len(SMOOTHERS))),
                      prior="RANGE")


def test_carried_states_are_a_bounded_set_of_files_overwritten(tmp_path):
    # A week of 5-minute candles on 200 symbols, the anchor moving forward each run: at
    # most one file per shard, replaced, never a file per run or per symbol.
    from botopt.core.signals._carry import _SHARDS, CarryStore

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")}, env={})
    sizes = {}
    for run in range(7 * 4):  # every 6 hours here; every 5 minutes writes the same files
        store = CarryStore(tmp_path / "carry", cfg)  # a run's own, as in a cron line
        for s in range(200):
            store.save(f"S{s}_BTC", _state(500 + 12 * run, run))
        store.flush()
        if (run + 1) % 4 == 0:
            files = list((tmp_path / "carry").iterdir())
            sizes[(run + 1) // 4] = (len(files), sum(p.stat().st_size for p in files))
    assert sizes[7][0] == sizes[1][0] <= _SHARDS and sizes[7][1] <= sizes[1][1] * 1.2, sizes
    again = CarryStore(tmp_path / "carry", cfg)
    assert all(again.load(f"S{s}_BTC") == _state(500 + 12 * 27, 27) for s in range(200))


def test_carried_states_of_other_lists_are_kept_and_old_ones_dropped(tmp_path):
    from botopt.core.signals import _carry
    from botopt.core.signals._carry import CarryStore

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")}, env={})
    # Two cron lines whose symbols share files: each run merges into the file on disk.
    a, b = CarryStore(tmp_path, cfg), CarryStore(tmp_path, cfg)
    a.load("A0")
    b.load("B0")  # both read every file they need before either writes
    for s in range(300):
        a.save(f"A{s}", _state(600))
        b.save(f"B{s}", _state(720))
    a.flush(clock=lambda: 1_000.0)
    b.flush(clock=lambda: 1_000.0)
    fresh = CarryStore(tmp_path, cfg)
    assert all(fresh.load(f"A{s}") == _state(600) and fresh.load(f"B{s}") == _state(720)
               for s in range(300))
    # States unsaved for 60 days are dropped when their file is next written; then the
    # file keeps at most _MAX_PER_FILE, the most recently saved.
    c = CarryStore(tmp_path, cfg)
    c.save("C", _state(840))
    c.flush(clock=lambda: 1_000.0 + 61 * 86_400)
    fresh = CarryStore(tmp_path, cfg)
    assert fresh.load("C") == _state(840)
    assert sum(fresh.load(f"{x}{s}") is not None for x in "AB" for s in range(300)) < 600
    same = fresh._path("C")
    assert all(fresh.load(f"{x}{s}") is None for x in "AB" for s in range(300)
               if fresh._path(f"{x}{s}") == same)
    old = _carry._MAX_PER_FILE
    _carry._MAX_PER_FILE = 3
    try:
        d = CarryStore(tmp_path, cfg)
        names = [f"D{s}" for s in range(2_000) if d._path(f"D{s}") == same][:5]
        for k, name in enumerate(names):
            d.save(name, _state(960))
            d.flush(clock=lambda k=k: 2e9 + k)
    finally:
        _carry._MAX_PER_FILE = old
    assert [CarryStore(tmp_path, cfg).load(n) is not None for n in names] == \
        [False, False, True, True, True]
    # A damaged entry whose save time is not finite never outlives the next write.
    path = fresh._path("C")
    whole = json.loads(path.read_bytes())
    whole["states"]["junk"] = {"at": float("inf")}
    whole["states"]["nan"] = {"at": float("nan")}
    path.write_text(json.dumps(whole))
    e = CarryStore(tmp_path, cfg)
    e.save(names[0], _state(960))
    e.flush(clock=lambda: 2e9 + 10)
    assert not {"junk", "nan"} & set(json.loads(path.read_bytes())["states"])


def test_the_event_log_start_skips_a_damaged_first_line(tmp_path):
    log = tmp_path / "events.log"
    log.write_bytes(b'{"t": 1e300, "type": "x"}\n\x00\x00garbage\n'
                    + _line(EventType.RUN_STARTED, {"command": "signals"}, t=1_790_000_000.0))
    assert first_event_time(log) == 1_790_000_000.0
    log.write_bytes(b"garbage only\n")
    assert first_event_time(log) is None
    assert first_event_time(tmp_path / "missing.log") is None


def test_the_first_formats_carried_state_files_are_removed(tmp_path):
    # Format 1 kept a file per symbol (32 hex digits, .json): at 10,000 symbols, 10,000
    # files that nothing reads any more. The first write of the new files removes them.
    from botopt.core.signals._carry import CarryStore

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")}, env={})
    tmp_path.joinpath("carry").mkdir()
    old = [tmp_path / "carry" / f"{k:032x}.json" for k in range(50)]
    for p in old:
        p.write_text("{}")
    other = tmp_path / "carry" / "notes.json"
    other.write_text("{}")
    store = CarryStore(tmp_path / "carry", cfg)
    store.flush()  # nothing held: nothing written, nothing removed
    assert all(p.exists() for p in old)
    store.save("A", _state(600))
    store.flush()
    assert not any(p.exists() for p in old) and other.exists()
    assert CarryStore(tmp_path / "carry", cfg).load("A") == _state(600)


def test_carried_state_files_of_settings_no_longer_used_are_removed(tmp_path):
    # A settings change leaves the old settings' files behind; once unwritten for 60 days
    # (every state in them would be dropped as too old) the next write removes them.
    import dataclasses
    import os
    import time

    from botopt.core.base._config import FeaturesConfig
    from botopt.core.signals._carry import CarryStore

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")}, env={})
    other = dataclasses.replace(cfg, features=FeaturesConfig(ema_fast=9))
    old = CarryStore(tmp_path, cfg)
    old.save("A", _state(600))
    old.flush()
    (stale,) = list(tmp_path.iterdir())
    later = CarryStore(tmp_path, other)
    later.save("A", _state(600))
    later.flush()
    assert stale.exists() and len(list(tmp_path.iterdir())) == 2
    past = time.time() - 61 * 86_400
    os.utime(stale, (past, past))
    later.save("B", _state(720))
    later.flush()
    assert not stale.exists()
    fresh = CarryStore(tmp_path, other)
    assert fresh.load("A") == _state(600) and fresh.load("B") == _state(720)
