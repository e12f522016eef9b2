"""The notification queue on a real Redis server: batching, delivery, dead letters, claims
taken over from a dead host, and the local queue moved over after an outage."""

from __future__ import annotations

import math
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core.base._config import load_config
from botopt.core.delivery._notify import (
    dead_letters,
    enqueue,
    flush_notifications,
    pending_notifications,
    queue_stats,
)
from botopt.core.state._redis_queue import SCALE_ENV

from .fakes.telegram_server import FakeTelegram
from .redis_server import age_claims

TOKEN = "123456789:AAtesttokentesttokentesttokentest"
runner = CliRunner()


def env_for(url: str, telegram: FakeTelegram | None, cache: Path, **extra: str
            ) -> dict[str, str]:
    env = {"BOTOPT_STATE_URL": url, "BOTOPT_CACHE_DIR": str(cache),
           "BOTOPT_TELEGRAM_TOKEN": TOKEN, "BOTOPT_TELEGRAM_CHAT_ID": "-1001",
           "BOTOPT_TELEGRAM_BATCH_INTERVAL": "0", "BOTOPT_STATE_CLAIM_TIMEOUT": "12",
           "BOTOPT_TELEGRAM_TIMEOUT": "5", **extra}
    if telegram is not None:
        env["BOTOPT_TELEGRAM_API_URL"] = telegram.url
    return env


def config(url, telegram, cache, **extra):
    return load_config(overrides={"cache.dir": str(cache)}, env=env_for(url, telegram, cache,
                                                                        **extra))


@pytest.fixture
def telegram():
    fake = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    yield fake
    fake.stop()


def tokens(fake: FakeTelegram) -> list[str]:
    return [t for m in fake.received for t in re.findall(r"tok-[a-z]+-\d+", m["shown"])]


def items(kind: str, n: int, start: int = 0) -> list[dict]:
    return [{"type": kind, "data": {"symbol": f"tok-{kind}-{i:04d}"}}
            for i in range(start, start + n)]


def test_shared_queue_batches_and_delivers_once(redis_server, telegram, tmp_path,
                                                monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "100")  # Telegram's 1.25 s gap per chat: 12.5 ms
    cfg = config(redis_server.url, telegram, tmp_path / "c")
    enqueue(cfg, items("alpha", 12) + items("beta", 3))
    stats = queue_stats(cfg)
    assert stats["pending"] == 15 and stats["by_type"] == {"alpha": 12, "beta": 3}
    assert not (tmp_path / "c" / "notify" / "queue.db").exists()  # nothing local
    result = flush_notifications(cfg)
    assert result.notifications_sent == 15 and result.remaining == 0, result
    assert sorted(tokens(telegram)) == sorted(i["data"]["symbol"] for i in
                                              items("alpha", 12) + items("beta", 3))
    assert len(telegram.received) == math.ceil(12 / 5) + 1
    assert queue_stats(cfg)["pending"] == 0 and queue_stats(cfg)["claimed"] == 0


@pytest.mark.slow
def test_dead_letters_on_the_shared_queue(redis_server, telegram, tmp_path, monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "100")  # Telegram's 1.25 s gap per chat: 12.5 ms
    cfg = config(redis_server.url, telegram, tmp_path / "c")
    env = env_for(redis_server.url, telegram, tmp_path / "c")
    telegram.refuse_containing = "tok-bad-0000"
    enqueue(cfg, items("bad", 1) + items("good", 2))
    for _ in range(3):
        flush_notifications(cfg)
    assert sorted(tokens(telegram)) == ["tok-good-0000", "tok-good-0001"]
    dead = dead_letters(cfg)
    assert [d["data"]["symbol"] for d in dead] == ["tok-bad-0000"] and dead[0]["attempts"] == 3
    assert pending_notifications(cfg) == []
    listed = runner.invoke(app, ["notify", "list", "--failed", "--json"], env=env)
    assert listed.exit_code == 0 and "tok-bad-0000" in listed.stdout
    assert runner.invoke(app, ["notify", "retry", dead[0]["id"][:8]], env=env).exit_code == 0
    assert [p["data"]["symbol"] for p in pending_notifications(cfg)] == ["tok-bad-0000"]
    telegram.refuse_containing = None
    assert flush_notifications(cfg).notifications_sent == 1
    assert tokens(telegram)[-1] == "tok-bad-0000" and dead_letters(cfg) == []
    telegram.refuse_containing = "tok-bad"
    enqueue(cfg, items("bad", 1, start=1))
    for _ in range(3):
        flush_notifications(cfg)
    (d,) = dead_letters(cfg)
    assert runner.invoke(app, ["notify", "drop", d["id"]], env=env).exit_code == 0
    assert dead_letters(cfg) == [] and queue_stats(cfg)["pending"] == 0


def test_claims_of_a_dead_host_are_taken_over_after_the_timeout(redis_server, telegram,
                                                                 tmp_path):
    from botopt.core.state._redis import SharedState

    cfg = config(redis_server.url, telegram, tmp_path / "c", BOTOPT_STATE_CLAIM_TIMEOUT="6")
    enqueue(cfg, items("alpha", 5))
    r = SharedState(redis_server.url, "botopt").client
    # A host claims the batch and dies before sending it.
    got = r.xreadgroup("flush", "dead-host", {"botopt:nq:s:alpha": ">"}, count=5)
    assert len(got[0][1]) == 5
    first = flush_notifications(cfg)
    assert first.notifications_sent == 0 and telegram.received == []  # not idle long enough
    assert age_claims(r, "botopt:nq:s:alpha", "flush", 5.8) == 5
    assert flush_notifications(cfg).notifications_sent == 0  # 5.8 s: still not long enough
    age_claims(r, "botopt:nq:s:alpha", "flush", 6.2)
    second = flush_notifications(cfg)
    assert second.notifications_sent == 5 and len(telegram.received) == 1
    assert queue_stats(cfg) | {"last_flush_at": None} == queue_stats(cfg) | {
        "last_flush_at": None, "pending": 0, "claimed": 0}


@pytest.mark.slow
def test_a_send_a_dead_host_left_in_flight_is_resent_at_most_once(redis_server, telegram,
                                                                   tmp_path):
    """A host killed after its request reached Telegram and before the answer: the flush
    that took its claims over resent the batch uncounted, so a batch whose senders were
    killed K times in a row went out K + 1 times (the local queue counts such sends since
    sweep E; on the shared queue it was left open). A takeover now reads what the dead host
    was sending: resent once as an unconfirmed send, and a second interrupted send makes it
    a dead letter saying it may have been delivered."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from botopt.core.state._redis import SharedState

    ns = "midsend"
    cache = tmp_path / "c"
    extra = {"BOTOPT_STATE_NAMESPACE": ns, "BOTOPT_STATE_CLAIM_TIMEOUT": "6"}
    cfg = config(redis_server.url, telegram, cache, **extra)
    env = {**os.environ, **env_for(redis_server.url, telegram, cache, **extra),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = SharedState(redis_server.url, ns).client
    enqueue(cfg, items("alpha", 2))
    telegram.always = "hang:1.0"  # each request recorded, and answered a second later
    stops = 0
    for _ in range(4):
        before = telegram.arrived
        p = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", "notify-flush",
                              "--force"], env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while telegram.arrived == before and p.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        if p.poll() is not None:  # nothing sent: the batch is a dead letter by now
            break
        time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        stops += 1
        time.sleep(1.2)  # the fake answers (the message was delivered)
        age_claims(r, f"{ns}:nq:s:alpha", "flush", 6.5)  # the dead host's claims idle
    telegram.always = None
    flush_notifications(cfg)
    for tok in ("tok-alpha-0000", "tok-alpha-0001"):
        assert 1 <= tokens(telegram).count(tok) <= 2, (tok, stops)
    dead = dead_letters(cfg)
    assert stops == 2 and len(dead) == 2, (stops, dead)
    assert all("stopped while sending" in d["reason"] for d in dead)
    assert r.hlen(f"{ns}:nq:sending") == 0 and queue_stats(cfg)["pending"] == 0


@pytest.mark.slow
def test_outage_queues_locally_then_moves_over(redis_server, telegram, tmp_path):
    from .test_shared_state import host

    home = tmp_path / "h"
    url = redis_server.url
    env = {k: v for k, v in env_for(url, telegram, home / "cache").items()
           if k != "BOTOPT_CACHE_DIR"}
    redis_server.stop()
    add = host(home, url, "notify", "add", "--type", "alpha", "--data",
               '{"symbol": "tok-alpha-0001"}', **env)
    assert add.returncode == 0, add.stderr
    assert add.stderr.count("WARNING") == 1 and "unreachable" in add.stderr
    assert (home / "cache" / "notify" / "queue.db").exists()
    flush = host(home, url, "notify-flush", **env)
    assert flush.returncode == 1
    assert len(flush.stderr.strip().splitlines()) == 1 and "unreachable" in flush.stderr
    redis_server.start()
    flush = host(home, url, "notify-flush", **env)
    assert flush.returncode == 0, flush.stderr
    assert tokens(telegram) == ["tok-alpha-0001"]
    again = host(home, url, "notify-flush", **env)
    assert again.returncode == 0 and tokens(telegram) == ["tok-alpha-0001"]


def test_dry_run_shows_the_shared_queue(redis_server, telegram, tmp_path):
    cfg = config(redis_server.url, telegram, tmp_path / "c")
    enqueue(cfg, items("alpha", 7))
    dry = flush_notifications(cfg, dry_run=True)
    assert len(dry.messages) == 2 and dry.remaining == 7 and telegram.received == []
    assert sorted(t for m in dry.messages for t in re.findall(r"tok-[a-z]+-\d+", m.text)) == [
        i["data"]["symbol"] for i in items("alpha", 7)]
    assert queue_stats(cfg)["pending"] == 7


def test_an_unreadable_dead_letter_on_the_server_is_said_not_a_crash(redis_server, telegram,
                                                                       tmp_path, monkeypatch):
    """A value in the dead-letter hash that botopt did not write (garbage, 100,000 '[', a
    row without its time): `notify list --failed` ended in an internal error. It lists the
    others and says which one it cannot read; `notify retry` of that one is one line."""
    import redis

    from botopt.core.state._redis import SharedState

    monkeypatch.setenv(SCALE_ENV, "100")
    cfg = config(redis_server.url, telegram, tmp_path / "c")
    env = env_for(redis_server.url, telegram, tmp_path / "c")
    telegram.refuse_containing = "tok-bad-0000"
    enqueue(cfg, items("bad", 1))
    for _ in range(3):
        flush_notifications(cfg)
    assert len(dead_letters(cfg)) == 1
    key = SharedState(redis_server.url, cfg.state.namespace).key("nq", "dead")
    client = redis.Redis.from_url(redis_server.url)
    client.hset(key, mapping={"feedfacefeedface": b"\xff not json",
                              "deadbeefdeadbeef": "[" * 100_000,
                              "0badc0de0badc0de": '{"type": "alert"}'})
    client.close()
    listed = runner.invoke(app, ["notify", "list", "--failed", "--json"], env=env)
    assert listed.exit_code == 0, listed.stderr
    body = listed.stdout[listed.stdout.index("{"):]
    import json

    assert [d["data"]["symbol"] for d in json.loads(body)["dead_letters"]] == ["tok-bad-0000"]
    assert "internal error" not in listed.stderr and "unreadable" in listed.stderr
    retry = runner.invoke(app, ["notify", "retry", "deadbeef"], env=env)
    assert retry.exit_code == 1 and "unreadable" in retry.stderr
    assert len(retry.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("plant, command", [
    (lambda r, ns: r.set(f"{ns}:nq:dead", "x"), ["notify", "list", "--failed"]),
    (lambda r, ns: r.set(f"{ns}:nq:meta", "x"), ["notify", "list"]),
    (lambda r, ns: r.hset(f"{ns}:nq:meta", "last_flush_at", "abc"), ["notify", "list"]),
    (lambda r, ns: r.hset(f"{ns}:nq:dead", "d4", '{"failed_at": 1, "type": "alert"}'),
     ["notify", "list", "--failed"]),
    (lambda r, ns: r.hset(f"{ns}:hosts", "h1", "abc"), ["monitor", "--once"]),
])
def test_a_damaged_shared_key_is_one_line_never_an_internal_error(redis_server, tmp_path,
                                                                  plant, command):
    """A key of the namespace holding data of another shape (a string where a hash is
    kept, a field that is not a number) ended the command in an internal error."""
    import redis

    ns = "dmg" + str(abs(hash(str(tmp_path))) % 10_000)
    env = env_for(redis_server.url, None, tmp_path / "c", BOTOPT_STATE_NAMESPACE=ns)
    client = redis.Redis.from_url(redis_server.url)
    plant(client, ns)
    result = runner.invoke(app, command, env=env)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    if result.exit_code:  # where the reader did not already skip it: one line, the server
        assert result.exit_code == 1
        [line] = [x for x in result.stderr.splitlines() if x.startswith("botopt: error")]
        assert "state.url" in line or "shared state" in line, result.stderr


@pytest.mark.parametrize("plant, aside", [
    (lambda r, ns: r.sadd(f"{ns}:nq:types", "ghost"), None),
    (lambda r, ns: (r.set(f"{ns}:nq:s:ghost", "x"), r.sadd(f"{ns}:nq:types", "ghost")),
     "nq:s:ghost"),
    (lambda r, ns: r.set(f"{ns}:nq:s:alpha", "x"), "nq:s:alpha"),
    (lambda r, ns: r.set(f"{ns}:nq:types", "x"), "nq:types"),
    (lambda r, ns: r.xgroup_destroy(f"{ns}:nq:s:alpha", "flush"), None),
    (lambda r, ns: r.set(f"{ns}:tg:chat:-1001:sent", "x"), "tg:chat:-1001:sent"),
    (lambda r, ns: r.lpush(f"{ns}:tg:chat:-1001:hold", "x"), "tg:chat:-1001:hold"),
    (lambda r, ns: r.set(f"{ns}:tg:bot:sent", "x"), "tg:bot:sent"),
    (lambda r, ns: r.set(f"{ns}:nq:tries", "x"), "nq:tries"),
    (lambda r, ns: r.set(f"{ns}:nq:errors", "x"), "nq:errors"),
    (lambda r, ns: r.set(f"{ns}:nq:seen", "x"), "nq:seen"),
], ids=["type-without-stream", "stream-a-string-type", "stream-a-string", "types-a-string",
        "stream-without-group", "chat-sends", "chat-hold", "bot-sends", "tries", "errors",
        "seen"])
def test_a_damaged_queue_key_is_moved_aside_and_every_alert_still_goes(
        redis_server, telegram, tmp_path, monkeypatch, caplog, plant, aside):
    """A key of the queue holding another type (a stray command, another program on the
    namespace), a type whose stream is gone, a stream without its group: each stopped
    every flush on every host ("unreachable"), or kept the next alerts on one host's local
    spool for good. The key is now moved aside (kept for a week, said in a warning) and
    every alert, queued before and after the damage, is delivered once."""
    import redis

    monkeypatch.setenv(SCALE_ENV, "100")
    ns = "tidy" + str(abs(hash(str(tmp_path))) % 100_000)
    cfg = config(redis_server.url, telegram, tmp_path / "c", BOTOPT_STATE_NAMESPACE=ns)
    client = redis.Redis.from_url(redis_server.url)
    enqueue(cfg, items("alpha", 2))
    plant(client, ns)
    with caplog.at_level("WARNING", logger="botopt"):
        enqueue(cfg, items("alpha", 2, start=2))
        result = flush_notifications(cfg)
    assert sorted(tokens(telegram)) == [f"tok-alpha-{i:04d}" for i in range(
        2 if aside == "nq:s:alpha" else 0, 4)], result  # the two in a string are aside
    assert queue_stats(cfg)["pending"] == 0 and result.remaining == 0
    assert not (tmp_path / "c" / "notify" / "queue.db").exists() or \
        pending_notifications(load_config(env={"BOTOPT_CACHE_DIR": str(tmp_path / "c")})) \
        == []  # nothing left behind on this host's spool
    if aside is not None:
        assert 0 < client.ttl(f"{ns}:{aside}:aside") <= 7 * 86400
        assert any(f"{ns}:{aside} held a" in r.getMessage() for r in caplog.records)
    client.close()


@contextmanager
def _answering(reply: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on 127.0.0.1 that is not a well-behaved Redis: each command it receives is
    answered by ``reply(connection)``. Yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                while not stop.is_set() and conn.recv(65536):
                    reply(conn)
            except OSError:
                pass

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        srv.close()


def test_a_server_that_is_not_redis_sends_the_run_local(tmp_path):
    """A server answering every command with an integer made redis-py raise AttributeError
    in its handshake: every command ended in an internal error instead of going local."""
    with _answering(lambda conn: conn.sendall(b":42\r\n")) as port:
        env = env_for(f"redis://127.0.0.1:{port}/0", None, tmp_path / "c")
        added = runner.invoke(app, ["notify", "add", "-t", "alert", "-d", "{}"], env=env)
        assert added.exit_code == 0, added.stderr  # queued here until the server is back
        assert "internal error" not in added.stderr and "unreachable" in added.stderr
        listed = runner.invoke(app, ["notify", "list"], env=env)  # what this host holds
        assert listed.exit_code == 0 and "internal error" not in listed.stderr
        assert listed.stdout.startswith("1 queued")


def test_a_server_dripping_its_reply_is_given_up_by_the_deadline(tmp_path):
    """A reply dripping a byte every 50 ms never trips the socket timeout (it bounds one
    read), so each command waited the whole drip: 50 s here, minutes in the wild, with the
    per-minute cron's next runs piling up. A command's reply now has three socket timeouts
    (here 3 x 0.5 s), then the server is given up for the run, as in an outage."""
    import time

    def drip(conn: socket.socket) -> None:
        for b in b"$1000\r\n" + b"x" * 1000 + b"\r\n":
            conn.sendall(bytes([b]))
            time.sleep(0.05)

    with _answering(drip) as port:
        env = env_for(f"redis://127.0.0.1:{port}/0?socket_timeout=0.5", None,
                      tmp_path / "c")
        began = time.monotonic()
        added = runner.invoke(app, ["notify", "add", "-t", "alert", "-d", "{}"], env=env)
        took = time.monotonic() - began
    assert added.exit_code == 0, added.stderr  # queued here until the server is back
    assert "unreachable" in added.stderr and "Timeout" in added.stderr
    assert took < 10, took  # the deadline (1.5 s) and the start-up, not the 50 s drip
    assert len(pending_notifications(load_config(env={
        "BOTOPT_CACHE_DIR": str(tmp_path / "c")}))) == 1


def test_a_database_the_server_refuses_is_a_setting_to_fix(redis_server, tmp_path):
    """The server refusing the URL's database (or its credentials) exited 1, as an outage:
    only the setting can fix it (exit 2, naming state.url)."""
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    env = env_for(url, None, tmp_path / "c")
    for command in (["notify-flush", "--force"], ["notify", "list"]):
        result = runner.invoke(app, command, env=env)
        if result.exit_code == 0:  # a listing may go local, saying why
            assert "DB index is out of range" in result.stderr
            continue
        assert result.exit_code == 2 and "state.url" in result.stderr, result.stderr


def test_a_garbage_cooldown_record_is_skipped_not_the_run(redis_server, tmp_path):
    import redis

    from botopt.core.state._cooldowns import CooldownStore
    from botopt.core.state._redis import SharedState
    from botopt.core.state._redis_store import RedisCooldownStore

    ns = "cd" + str(abs(hash(str(tmp_path))) % 10_000)
    shared = SharedState(redis_server.url, ns)
    store = RedisCooldownStore(shared, "scope", CooldownStore(tmp_path / "cooldowns.json"))
    redis.Redis.from_url(redis_server.url).zadd(store.zset, {"garbage": 1,
                                                             b"\xff\xfe": 2})
    assert store.snapshot() == []


def test_a_refused_pipeline_command_is_described_without_its_arguments():
    """An OOM warning quoted the pipeline's SET with a cached value's raw bytes."""
    import redis

    from botopt.core.state._redis import SharedState

    exc = redis.exceptions.OutOfMemoryError(
        "Command # 1 (SET bo:cache:features b'\\x01\\x02\\xff\\x00') of pipeline caused "
        "error: OOM command not allowed when used memory > 'maxmemory'.")
    text = SharedState("redis://127.0.0.1:1/0", "bo").describe(exc)
    assert text == ("OutOfMemoryError: SET in a pipeline: OOM command not allowed when used "
                    "memory > 'maxmemory'.")


def test_a_cache_entry_of_another_type_is_skipped_and_cache_clear_removes_it(
        redis_server, tmp_path):
    """A hash where an entry's string is kept (WRONGTYPE for STRLEN) ended cache-stats and,
    worse, cache-clear, the command that is to remove it, with "unreachable"."""
    import redis

    ns = "cc" + str(abs(hash(str(tmp_path))) % 10_000)
    env = env_for(redis_server.url, None, tmp_path / "c", BOTOPT_STATE_NAMESPACE=ns)
    client = redis.Redis.from_url(redis_server.url)
    client.hset(f"{ns}:cache:signals\x1fk", "a", "b")
    client.set(f"{ns}:cache:signals\x1fok", "x" * 10)
    client.lpush(f"{ns}:cache-stats:features", "junk")
    stats = runner.invoke(app, ["cache-stats", "--json"], env=env)
    assert stats.exit_code == 0, stats.stderr
    assert "another type" in stats.stderr
    cleared = runner.invoke(app, ["cache-clear"], env=env)
    assert cleared.exit_code == 0, cleared.stderr
    assert not list(client.scan_iter(f"{ns}:cache*"))


def test_what_a_run_takes_back_is_taken_back_on_the_server(redis_server, tmp_path):
    """A run whose notifications could not be queued takes back its cooldowns and regime
    changes where it recorded them. On the shared state that was done only when the server
    was away, so with the server up they stood, and no later run or host reported them
    (sweep E, F2); the take-back now goes to the server even if the failed enqueue marked
    it away meanwhile, and a record another run moved on since is left."""
    from datetime import datetime, timedelta, timezone

    from botopt.core.state._cooldowns import CooldownRecord
    from botopt.core.state._redis import _states
    from botopt.core.state._workspace import Workspace

    cfg = config(redis_server.url, None, tmp_path / "c", BOTOPT_STATE_NAMESPACE="takeback")
    ws = Workspace.of(cfg)

    def another_run() -> Workspace:
        """As another process: its own connection to the server (not this one's, marked
        away below as the failed enqueue marks it)."""
        _states.clear()
        return Workspace(Workspace.root_for(cfg), cfg)

    t1 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    t2 = t1 + timedelta(minutes=5)
    regimes = ws.regimes(cfg)
    assert regimes.update([("BTCUSDT", "TREND_UP", t1), ("ETHUSDT", "TREND_UP", t1)]) \
        == []
    change = regimes.update([("BTCUSDT", "RANGE", t2), ("ETHUSDT", "RANGE", t2)])
    assert sorted(change) == [("BTCUSDT", "TREND_UP", "RANGE"),
                              ("ETHUSDT", "TREND_UP", "RANGE")]
    # ETHUSDT moved on by another run before the take-back: its record is left
    assert another_run().regimes(cfg).update([("ETHUSDT", "TREND_DOWN", t2 + timedelta(minutes=5))])
    regimes.shared.lost(ConnectionError("the enqueue failed"), quiet=True)
    regimes.revert([(s, old, new, t2) for s, old, new in change])
    later = another_run().regimes(cfg)  # the next run on the candle: BTCUSDT's change is new again
    assert later.update([("BTCUSDT", "RANGE", t2)]) == [("BTCUSDT", "TREND_UP", "RANGE")]
    assert later.update([("ETHUSDT", "RANGE", t2)]) == []

    cooldowns = ws.cooldowns(cfg)
    rec = CooldownRecord("BTCUSDT", "long", t2)
    assert cooldowns.record([rec]) == [rec]
    assert another_run().cooldowns(cfg).record([rec]) == []  # recorded once: no other run queues it
    cooldowns.shared.lost(ConnectionError("the enqueue failed"), quiet=True)
    cooldowns.forget([rec])
    assert rec not in another_run().cooldowns(cfg).snapshot()
    assert another_run().cooldowns(cfg).record([rec]) == [rec]  # the next run records and queues it
