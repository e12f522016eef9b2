"""Issue 24's remaining members of its classes: every state file botopt keeps, damaged every
way a disk or a person damages it, under every command; notify and fetch on a read-only disk;
a Telegram that reads the request and hangs up.

Real ``botopt`` processes, real files, the fake Bot API and the fake Binance on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from botopt.core.delivery._notify import dead_letters, pending_notifications

from .fakes.telegram_server import FakeTelegram
from .test_delivery import TOKEN, botopt, config, errors
from .test_fetch import Market, iso

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def server(monkeypatch, tmp_path):
    """The fake Bot API, and a fake Binance that ``fetch`` reads (its symbol list is state)."""
    fake = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    market = Market()
    monkeypatch.setenv("BOTOPT_BINANCE_API_URL", market.fake.url)
    monkeypatch.setenv("BOTOPT_BINANCE_MAX_RETRIES", "0")
    fake.market = market
    fake.fetch = ("fetch", "-s", "BTCUSDT", "--data-dir", str(tmp_path / "data"), "--as-of",
                  iso(market.clock))
    yield fake
    market.fake.stop()
    fake.stop()


# -- every state file, every damage, every command --------------------------------------------

# Every command a user or cron runs, each reading some of the state; cache-clear last (it
# removes what the others read).
COMMANDS: list[tuple[str, ...]] = [
    ("signals",), ("signals", "--notify"), ("signals", "--no-cache"), ("correlations",),
    ("status",), ("history",), ("monitor", "--once"), ("cache-stats",),
    ("notify", "list"), ("notify", "list", "--failed"),
    ("notify", "add", "-t", "alert", "-d", '{"message": "after"}'),
    ("notify-flush", "--force"), ("doctor",), ("config", "show"), ("metrics",),
    ("backtest", "-s", "BTCUSDT", "--since", "2026-09-29T00:00", "--until", "2026-09-29T04:00"),
    ("fetch",), ("cache-clear",),
]


def _prepared(tmp_path: Path, server) -> Path:
    """A cache directory as a day of cron leaves it: every state file botopt keeps."""
    cache = tmp_path / "c"
    for args in (("signals", "--notify"), ("signals",), ("correlations",), ("monitor", "--once"),
                 ("notify", "add", "-t", "alert", "-d", '{"message": "sent"}'),
                 ("notify-flush", "--force"), ("metrics",), COMMANDS[-3], ("fetch",),
                 ("notify", "add", "-t", "alert", "-d", '{"message": "before"}')):
        r = botopt(cache, *_args(args, server), url=server.url)
        assert r.returncode == 0, (args, r.stderr)
    return cache


def _args(args: tuple[str, ...], server) -> tuple[str, ...]:
    return server.fetch if args == ("fetch",) else args


def state_files(cache: Path) -> list[Path]:
    """Every file botopt keeps, locks and temporary files aside (they hold nothing)."""
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")
                  and ".corrupt-" not in p.name and not p.name.endswith(("-wal", "-shm")))


def _sqlite_other_schema(p: Path) -> None:
    p.unlink()
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE other (x)")
    con.execute("INSERT INTO other VALUES (1)")
    con.commit()
    con.close()


def _wrong_schema(p: Path) -> None:
    """Readable, well-formed, and not what botopt wrote there."""
    if p.read_bytes()[:16] == b"SQLite format 3\x00":
        _sqlite_other_schema(p)
    elif p.suffix == ".ring":  # the correlation state's header, of a format never written
        import struct

        p.write_bytes(b"BOTOPTRC" + struct.pack("<Q", 99) + bytes(200))
    elif p.suffix == ".log" or ".log." in p.name:
        p.write_text('["a list"]\n{"t": "soon", "type": 7}\n"text"\n')
    else:
        p.write_text(json.dumps({"version": 999, "rows": "none", "x": [1, {"y": None}]}))


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 3)]),
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 16),
    "empty": lambda p: p.write_bytes(b""),
    # Python's JSON parser recurses per level: RecursionError, not a ValueError
    "nested": lambda p: p.write_bytes(b"[" * 100_000),
    "wrong-schema": _wrong_schema,
}


def _check(result, args: tuple[str, ...], where: str) -> None:
    assert "Traceback" not in result.stderr, (where, args, result.stderr)
    assert "internal error" not in result.stderr, (where, args, result.stderr)
    assert result.returncode in (0, 1, 2), (where, args, result.returncode, result.stderr)
    if result.returncode:
        assert len(errors(result)) == 1, (where, args, result.stderr)


def _queued(cache: Path, url: str) -> set[str]:
    """Every notification message botopt still holds: pending, dead, or kept aside in a
    damaged queue moved out of the way."""
    cfg = config(cache, url)
    held = {n["data"].get("message", "") for n in pending_notifications(cfg)}
    held |= {d.get("data", {}).get("message", "") for d in dead_letters(cfg)}
    for aside in (cache / "notify").glob("queue.db.corrupt-*"):
        if aside.name.endswith(("-wal", "-shm")):
            continue
        try:
            con = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
            held |= {json.loads(d).get("message", "") for (d,) in
                     con.execute("SELECT data FROM queue")}
        except (sqlite3.Error, ValueError):
            held.add("<kept aside, unreadable>")
    return held


def _sweep(tmp_path: Path, server, damage: str, pick: Callable[[list[Path]], list[Path]]
           ) -> list[str]:
    cache = _prepared(tmp_path, server)
    files = pick(state_files(cache))
    assert files
    for f in files:
        DAMAGES[damage](f)
    seen: list[str] = []
    for args in COMMANDS:
        result = botopt(cache, *_args(args, server), url=server.url, budget=10, retries=1)
        _check(result, args, f"{damage} {[str(f.relative_to(cache)) for f in files]}")
        seen.append(f"{' '.join(args)}: {result.returncode}")
        if args[0] == "notify" and args[1] == "add":
            assert result.returncode == 0, result.stderr  # queueing always works
    # Nothing queued is lost: "before" is pending, sent, dead or kept aside where the queue
    # itself was damaged (a person can read it there).
    held = _queued(cache, server.url)
    delivered = " ".join(r["shown"] for r in server.received)
    assert "after" in delivered or "after" in held, (damage, held)
    if any(f.name == "queue.db" for f in files):
        # the damage itself took the queue's rows: what is left of it is kept aside, never
        # deleted (an empty file held nothing to keep)
        aside = list((cache / "notify").glob("queue.db.corrupt-*"))
        assert "before" in delivered or "before" in held or aside or \
            damage in ("empty", "wrong-schema")
        if damage == "wrong-schema" and not aside:  # botopt's tables beside another's
            con = sqlite3.connect(cache / "notify" / "queue.db")
            assert con.execute("SELECT x FROM other").fetchall() == [(1,)]
            con.close()
    else:
        assert "before" in delivered or "before" in held, (damage, held)
    return seen


@pytest.mark.slow
def test_the_state_files_are_the_ones_botopt_keeps(tmp_path, server):
    """The sweep below damages what a working install has: if botopt starts keeping a new
    file, it shows up here, and the sweep covers it without an edit."""
    names = {str(p.relative_to(tmp_path / "c")).split("/")[0] + "/" + p.name.split("-")[0]
             for p in state_files(_prepared(tmp_path, server))}
    for expected in ("cache/cache.db", "notify/queue.db", "events/events.log",
                     "events/monitor_state.json", "digests/candle", "notify/telegram_state.json"):
        assert any(n.startswith(expected.split("/")[0]) and expected.split("/")[1] in n
                   for n in names), (expected, names)
    assert any(n.startswith("correlation/") for n in names)
    assert any(n.endswith("cooldowns.json") for n in names)
    assert any(n.endswith("regimes.json") for n in names)
    for kept in ("events/metrics_state.json", "backtest/", "binance/"):
        assert any(n.startswith(kept.split("/")[0]) for n in names), (kept, names)


# About 25 s a damage (19 processes, 11 s on an idle machine): all with the slow tests (the
# fast subset keeps the per-command damage tests of test_faults and test_cache).
@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_every_state_file_damaged_at_once_under_every_command(tmp_path, server, damage):
    _sweep(tmp_path, server, damage, lambda files: files)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BOTOPT_FULL_SWEEP"), reason=(
    "about 5 minutes: the all-at-once sweep covers every file in CI; "
    "set BOTOPT_FULL_SWEEP=1 to damage each file alone"))
def test_each_state_file_damaged_alone_under_every_command(tmp_path, server):
    """One file at a time, so that a command stopping at the first damaged file does not
    hide how it treats the others; each file gets one damage, in turn (every kind meets
    several files; all four for every file would take four times as long)."""
    probe = _prepared(tmp_path / "probe", server)
    kinds = list(DAMAGES)
    for i, rel in enumerate(f.relative_to(probe) for f in state_files(probe)):
        sub = tmp_path / str(rel).replace("/", "_")
        sub.mkdir()
        _sweep(sub, server, kinds[i % len(kinds)],
               lambda files, rel=rel: [f for f in files
                                       if f.parts[-len(rel.parts):] == rel.parts])
        shutil.rmtree(sub, ignore_errors=True)


# -- a read-only disk: notify and fetch say what failed, naming the path ------------------------

def _read_only(path: Path, args: list[str], env_extra: dict[str, str] | None = None):
    """``args`` run with ``path`` bind-mounted read-only in a private mount namespace (root),
    else with its write bits removed (the caller puts them back)."""
    if ROOT_USER and shutil.which("unshare"):
        setup = f'mount --bind -o ro "{path}" "{path}"'
        if subprocess.run(["unshare", "-m", "sh", "-c", setup]).returncode == 0:
            return ["unshare", "-m", "sh", "-c", setup + ' && exec "$@"', "sh", *args]
    if ROOT_USER:
        pytest.skip("root without unshare: file modes cannot make a directory read-only")
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return args


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ("notify", "add", "-t", "alert", "-d", '{"message": "ro"}'), ("notify", "list"),
    ("notify", "list", "--failed"), ("notify-flush", "--force"),
    ("notify", "list", "--json")])
def test_notify_commands_on_a_read_only_disk_say_what_failed(tmp_path, server, args):
    cache = tmp_path / "c"
    assert botopt(cache, "notify", "add", "-t", "alert", "-d", '{"message": "kept"}',
                  url=server.url).returncode == 0
    wrap = _read_only(cache, [])
    result = botopt(cache, *args, url=server.url, wrap=wrap or None)
    if not wrap:  # the write bits were removed: put them back for the checks below
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    if args[:2] == ("notify", "list"):  # a listing writes nothing: it reads the queue
        assert result.returncode == 0, result.stderr
        assert ("kept" in result.stdout) != ("--failed" in args)
        return
    assert result.returncode == 1, result.stderr
    [line] = errors(result)
    assert "unable to open database file" not in line and "readonly database" not in line
    assert str(cache / "notify") in line  # the path: queue.db or the flush lock
    assert "read-only" in line.lower() or "permission denied" in line.lower()
    # nothing lost: the disk is back and the notification is still there
    assert [n["data"]["message"] for n in pending_notifications(config(cache, server.url))] \
        == ["kept"]


def test_fetch_into_a_read_only_data_directory(tmp_path, server):
    data = tmp_path / "data"
    first = botopt(tmp_path / "c", *server.fetch, url=server.url)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    later = list(server.fetch)
    later[-1] = iso(int(datetime.fromisoformat(later[-1].replace("Z", "+00:00")).timestamp()
                        * 1000) + 3_600_000)  # an hour later: twelve new candles to write
    server.market.clock += 3_600_000
    wrap = _read_only(data, [])
    result = botopt(tmp_path / "c", *later, url=server.url, wrap=wrap or None)
    if not wrap:
        for p in [data, *data.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert result.returncode == 1, result.stderr
    [line] = errors(result)
    assert str(data) in line and ("read-only" in line or "permission denied" in line)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # nothing half-written
    # the disk is back: the next fetch adds the hour
    again = botopt(tmp_path / "c", *later, "--json", url=server.url)
    assert again.returncode == 0 and json.loads(again.stdout)["symbols"][0]["added"] == 12


# -- a Telegram that reads the request, then hangs up -----------------------------------------

@pytest.mark.slow
def test_a_dropped_connection_after_sending_is_unconfirmed_not_retried(tmp_path, server):
    """The server read the whole request and closed without answering (it may have
    delivered): like a timeout, the run does not resend it; the next flush does, once."""
    cache = tmp_path / "c"
    assert botopt(cache, "notify", "add", "-t", "alert", "-d", '{"message": "m"}',
                  url=server.url).returncode == 0
    server.script = ["drop"]
    first = botopt(cache, "notify-flush", "--force", url=server.url, retries=3)
    assert first.returncode == 1
    [line] = errors(first)
    assert "without an answer" in line and "may have been delivered" in line
    assert server.arrived == 1  # not retried within the run
    assert botopt(cache, "notify-flush", "--force", url=server.url).returncode == 0
    assert server.arrived == 2 and len(server.received) == 1
    assert pending_notifications(config(cache, server.url)) == []


def test_a_refused_connection_is_still_retried_within_the_run(tmp_path):
    """Nothing was sent, so nothing can be delivered twice: retried, then exit 1."""
    cache = tmp_path / "c"
    url = "http://127.0.0.1:9"
    assert botopt(cache, "notify", "add", "-t", "alert", "-d", "{}", url=url).returncode == 0
    result = botopt(cache, "notify-flush", "--force", url=url, budget=10, retries=1)
    assert result.returncode == 1 and "Telegram unreachable" in errors(result)[0]
    assert "may have been delivered" not in result.stderr


# -- the soak on the Redis backend, short -------------------------------------------------------

@pytest.mark.slow
def test_a_short_redis_soak_of_three_hosts_loses_nothing(tmp_path):
    """Six simulated minutes of three hosts on a real redis-server, the server down for the
    last of them (the outage) and one host's clock 15 minutes behind: about 80 processes.
    The longer run's table is in docs/reliability.md."""
    from botopt.benchmarks import soak

    from .redis_server import require_binary

    require_binary()
    if not soak.SHARED.is_dir():
        pytest.skip(f"the real pairs are not in {soak.SHARED}")
    s = soak.simulate(6 / 1440, seed=5, backend="redis")
    assert s["hosts"] == 3 and s["queued"] >= 15 and s["lost"] == 0, s
    assert s["internal_errors"] == [], s
    assert s["delivered_3x_or_more"] == 0 and s["delivered_twice"] <= s["dup_allowance"], s
    assert s["signals_delivered_twice"] == 0 and s["stuck"] == 0, s
    assert s["faults"].get("redis 5-minute outage") == 1, s


@pytest.mark.slow
def test_a_signal_queued_by_three_hosts_during_an_outage_is_held_once(redis_server, tmp_path):
    """Found by the Redis soak: while the server is down each host has only its own
    cooldowns, so all three queue the same signal in their local spools; when the spools
    move up, the server holds it once (a signal's id is the signal), and alerts stay three."""
    from .test_shared_state import host

    signal_data = json.dumps({"symbol": "BTCUSDT", "candle_time": "2026-09-20T12:00:00Z",
                              "direction": "long", "engine": "momentum", "close": 1.5,
                              "strength": 0.5, "p_dir": 0.6, "regime": "TREND_UP"})
    url = redis_server.url
    redis_server.stop()
    for h in ("a", "b", "c"):
        r = host(tmp_path / h, url, "notify", "add", "-t", "signal", "-d", signal_data,
                 BOTOPT_STATE_HOST_ID=f"host-{h}")
        assert r.returncode == 0, r.stderr  # spooled locally
    redis_server.start()
    for h in ("a", "b", "c"):
        r = host(tmp_path / h, url, "notify", "add", "-t", "alert", "-d",
                 json.dumps({"message": h}), BOTOPT_STATE_HOST_ID=f"host-{h}")
        assert r.returncode == 0, r.stderr  # the server is back: the spool moves up
    listed = host(tmp_path / "a", url, "notify", "list", "--json",
                  BOTOPT_STATE_HOST_ID="host-a")
    rows = json.loads(listed.stdout)["notifications"]
    kinds = sorted(r["type"] for r in rows)
    assert kinds == ["alert", "alert", "alert", "signal"], listed.stdout
