"""Notifications against a fake Bot API on 127.0.0.1: batching, limits, errors, crashes."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import batch_notify, load_config
from botopt.core.delivery._notify import enqueue, flush_notifications, queue_stats
from botopt.core.delivery._notify_format import MAX_LEN, render_batch, telegram_length
from botopt.core.errors import TelegramConfigError, UsageError
from botopt.core.state._workspace import set_default_root

from .fakes.telegram_server import FakeTelegram, VirtualClock, parse_entities

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TOKEN = "123456789:AAtesttokentesttokentesttokentest"


@pytest.fixture
def vclock():
    return VirtualClock()


@pytest.fixture
def fake(vclock):
    server = FakeTelegram(token=TOKEN, clock=vclock.time).start()
    yield server
    server.stop()


def make_config(tmp_path, fake, chat="-1001", **extra):
    return load_config(overrides={"cache.dir": str(tmp_path / "cache"), "telegram.token": TOKEN,
                                  "telegram.chat_id": chat, "telegram.api_url": fake.url,
                                  **extra})


def flush(cfg, vclock, **kw):
    return flush_notifications(cfg, clock=vclock.time, sleep=vclock.sleep, **kw)


def items(n, kind="signal"):
    return [{"type": kind, "data": {"symbol": f"S{i}", "direction": "long", "close": 1.5,
                                    "n": i}} for i in range(n)]


def test_groups_by_type_at_most_five_per_message(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(12) + items(3, "alert"), now=vclock.time())
    result = flush(cfg, vclock)  # only the full groups are due yet
    assert (result.notifications_sent, result.messages_sent, result.remaining) == (10, 2, 5)
    vclock.sleep(31)
    result = flush(cfg, vclock)
    assert (result.notifications_sent, result.messages_sent, result.remaining) == (5, 2, 0)
    texts = [m["shown"] for m in fake.received]
    assert sum(t.count("long S") for t in texts) == 12
    assert all(t.count("long S") <= 5 and "⚠️" not in t for t in texts if "Signals" in t)
    assert 429 not in fake.responses


@pytest.mark.parametrize("size", [2.5, -1, 0, 51, "5", True, 10 ** 30, None])
def test_a_bad_batch_size_is_refused_before_anything_is_queued(tmp_path, fake, size):
    cfg = make_config(tmp_path, fake)
    if size is None:  # the default: the config's
        assert len(batch_notify(items(2), max_batch_size=size, config=cfg)) == 2
        return
    with pytest.raises(UsageError, match="max_batch_size") as info:
        batch_notify(items(2), max_batch_size=size, config=cfg)
    assert info.value.key == "max_batch_size"
    assert queue_stats(cfg)["pending"] == 0


@pytest.mark.parametrize("stored", [2.5, -1, 0, "x", 10 ** 15])
def test_a_queue_holding_a_bad_batch_size_still_flushes_whole(tmp_path, fake, vclock,
                                                             stored):
    """Rows queued with a size no flush can use (2.5 jammed every later flush with a
    TypeError; -1 sent nothing): the default size is used, nothing stuck or lost."""
    import sqlite3

    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(7), now=vclock.time())
    db = tmp_path / "cache" / "notify" / "queue.db"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE queue SET batch = ?", (stored,))
    result = flush(cfg, vclock, force=True)
    assert result.error is None and (result.notifications_sent, result.remaining) == (7, 0)
    assert result.messages_sent == 2  # five, then two


def test_force_sends_everything(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(2), now=vclock.time())
    assert flush(cfg, vclock).notifications_sent == 0
    assert flush(cfg, vclock, force=True).notifications_sent == 2


def test_values_are_escaped(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, [{"type": "alert", "data": {"message": "<b>x</b> & </i> AT&T"}}])
    assert flush(cfg, vclock, force=True).messages_sent == 1
    assert "<b>x</b> & </i> AT&T" in fake.received[0]["shown"]


def test_429_waits_retry_after_and_remembers_it(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(5))
    fake.script = ["429:7"]
    t0 = vclock.time()
    assert flush(cfg, vclock).notifications_sent == 5
    assert vclock.time() - t0 >= 7
    # A 429 with a long retry_after: this run stops, the next run does not hammer.
    enqueue(cfg, items(5))
    fake.script = ["429:120"]
    r = flush(cfg, vclock)
    assert r.notifications_sent == 0 and r.remaining == 5 and r.next_retry_at
    before = len(fake.responses)
    r2 = flush(cfg, vclock)
    assert len(fake.responses) == before and r2.remaining == 5  # nothing sent yet
    vclock.sleep(121)
    assert flush(cfg, vclock).notifications_sent == 5


def test_group_pacing_never_provokes_429(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(150))
    sent = 0
    for _ in range(20):
        r = flush(cfg, vclock)
        sent += r.notifications_sent
        if not r.remaining:
            break
        vclock.sleep(max(0.0, (r.next_retry_at or vclock.time()) - vclock.time()))
    assert sent == 150 and 429 not in fake.responses and len(fake.received) == 30


def test_5xx_is_retried_and_a_dropped_connection_waits_for_the_next_flush(tmp_path, fake,
                                                                          vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(5))
    fake.script = ["500"]
    assert flush(cfg, vclock).notifications_sent == 5
    # the server read the request, then closed without answering: it may have delivered, so
    # (as after a timeout) the batch is not resent in this run, but by the next flush
    enqueue(cfg, items(5))
    fake.script = ["drop"]
    before = fake.arrived
    first = flush(cfg, vclock)
    assert first.notifications_sent == 0 and first.remaining == 5
    assert "may have been delivered" in (first.error or "")
    assert fake.arrived == before + 1  # one request: not resent within the run
    assert flush(cfg, vclock).notifications_sent == 5
    enqueue(cfg, items(5))
    fake.script = ["500"] * 10
    r = flush(cfg, vclock)
    assert r.notifications_sent == 0 and r.remaining == 5 and r.failed == 5


def test_too_long_splits_and_parse_error_resends_plain(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(5))
    fake.script = ["long"]
    assert flush(cfg, vclock).notifications_sent == 5
    assert len(fake.received) >= 2 and fake.received[0]["parse_mode"] is None
    fake.received.clear()
    enqueue(cfg, items(5))
    fake.script = ["parse"]
    assert flush(cfg, vclock).notifications_sent == 5
    assert fake.received[0]["parse_mode"] is None and "<b>" not in fake.received[0]["text"]


@pytest.mark.parametrize("action, text", [("401", "401"), ("403", "blocked"),
                                          ("chat", "chat not found")])
def test_fatal_answers_stop_and_keep_the_queue(tmp_path, fake, vclock, action, text):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(5))
    fake.script = [action]
    with pytest.raises(TelegramConfigError, match=text) as info:
        flush(cfg, vclock)
    assert TOKEN not in str(info.value)
    assert queue_stats(cfg)["pending"] == 5 and queue_stats(cfg)["claimed"] == 0


@pytest.mark.slow  # 3-5 s: real waits for Telegram's gap and the unreachable API's retries
def test_cli_flush_exit_codes_and_token_never_printed(tmp_path, fake):
    env = {"BOTOPT_TELEGRAM_TOKEN": TOKEN, "BOTOPT_TELEGRAM_CHAT_ID": "-1001",
           "BOTOPT_TELEGRAM_API_URL": fake.url}
    base = ["--cache-dir", str(tmp_path / "c")]
    add = runner.invoke(app, [*base, "notify", "add", "--type", "trade_executed", "--data",
                              '{"symbol": "BTCUSDT", "side": "buy", "price": 60000}'], env=env)
    assert add.exit_code == 0, add.stderr
    dry = runner.invoke(app, [*base, "notify-flush", "--dry-run", "--force"], env=env)
    assert dry.exit_code == 0 and "BTCUSDT" in dry.stdout and not fake.received
    ok = runner.invoke(app, [*base, "notify-flush", "--force", "--json"], env=env)
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout) == {"notifications_sent": 1, "messages_sent": 1,
                                     "remaining": 0, "failed": 0, "dead_lettered": 0,
                                     "refused": 0, "next_retry_at": None, "error": None}
    runner.invoke(app, [*base, "notify", "add", "--type", "alert", "--data", "{}"], env=env)
    bad = runner.invoke(app, [*base, "--debug", "notify-flush", "--force"],
                        env={**env, "BOTOPT_TELEGRAM_TOKEN": "999:" + "x" * 30})
    assert bad.exit_code == 2 and "401" in bad.stderr
    for out in (add, dry, ok, bad):
        assert TOKEN not in out.stdout + out.stderr and "x" * 30 not in out.stderr
    down = runner.invoke(app, [*base, "--debug", "notify-flush", "--force"],
                         env={**env, "BOTOPT_TELEGRAM_API_URL": "http://127.0.0.1:9"})
    # Unreachable: exit 1 with one line saying why and when the next try is.
    assert down.exit_code == 1 and "x" * 30 not in down.stderr and TOKEN not in down.stderr
    error_lines = [ln for ln in down.stderr.splitlines() if ln.startswith("botopt: error:")]
    assert len(error_lines) == 1 and "not everything due was delivered" in error_lines[0]
    assert "next try after" in error_lines[0]
    missing = runner.invoke(app, [*base, "notify-flush"], env={})
    assert missing.exit_code == 2 and "BOTOPT_TELEGRAM_TOKEN" in missing.stderr


@pytest.mark.parametrize("args, stdin, message", [
    (["--type", "Bad Type", "--data", "{}"], None, "not a lower_case name"),
    (["--type", "alert", "--data", "[1, 2]"], None, "data must be a JSON object"),
    (["--type", "alert", "--data", "{oops"], None, "--data is not JSON"),
    (["--stdin"], '{"type": "alert", "data": {}}\nnot json\n', "stdin line 2"),
    ([], None, "give --type and --data"),
])
def test_notify_add_bad_input(tmp_path, args, stdin, message):
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "notify", "add", *args],
                           input=stdin)
    assert result.exit_code == 2 and message in result.stderr
    listing = runner.invoke(app, ["--cache-dir", str(tmp_path), "notify", "list", "--json"])
    assert json.loads(listing.stdout)["notifications"] == []  # nothing half-queued


def test_notify_list_gives_the_total_when_it_shows_fewer(tmp_path):
    """5,000 queued looked like 100: the list stopped there and its title said "100
    queued". The total is always given; --limit shows more."""
    base = ["--cache-dir", str(tmp_path)]
    lines = "\n".join(json.dumps({"type": "alert", "data": {"message": f"m{i}"}})
                      for i in range(130))
    assert runner.invoke(app, [*base, "notify", "add", "--stdin"], input=lines).exit_code == 0
    plain = runner.invoke(app, [*base, "notify", "list"])
    assert plain.stdout.startswith("130 queued (the oldest 100 shown; --limit N for more)")
    data = json.loads(runner.invoke(app, [*base, "notify", "list", "--json"]).stdout)
    assert data["total"] == 130 and len(data["notifications"]) == 100
    wide = runner.invoke(app, [*base, "notify", "list", "--limit", "500", "--json"])
    assert len(json.loads(wide.stdout)["notifications"]) == 130
    dead = json.loads(runner.invoke(app, [*base, "notify", "list", "--failed",
                                          "--json"]).stdout)
    assert dead == {"dead_letters": [], "total": 0}


def test_notify_add_stdin_and_batch_notify(tmp_path):
    lines = "\n".join(json.dumps({"type": "trade_exited", "data": {"symbol": f"S{i}"}})
                      for i in range(3))
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "notify", "add", "--stdin"],
                           input=lines)
    assert result.exit_code == 0
    set_default_root(tmp_path)
    try:
        ids = batch_notify([{"type": "trade_executed", "data": {"symbol": "X"}}],
                           max_batch_size=5)
    finally:
        set_default_root(None)
    assert len(ids) == 1
    with pytest.raises(UsageError):
        batch_notify([{"type": "", "data": {}}])


def test_two_flushes_at_once_never_double_send(tmp_path, fake, vclock):
    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(40))
    from filelock import FileLock

    lock = FileLock(str(tmp_path / "cache" / "notify" / "flush.lock"))
    with lock:  # another flush holds the lock
        r = flush_notifications(cfg, force=True)
        assert r.skipped and r.notifications_sent == 0 and not fake.received


FLUSHER = r"""
import sys, time
from botopt.core import load_config
from botopt.core.delivery._notify import flush_notifications
cfg = load_config(overrides={"cache.dir": sys.argv[1], "telegram.token": sys.argv[2],
                             "telegram.chat_id": "42", "telegram.api_url": sys.argv[3]})
while True:
    flush_notifications(cfg, force=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    server = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    try:
        cfg = load_config(overrides={"cache.dir": str(tmp_path), "telegram.token": TOKEN,
                                     "telegram.chat_id": "42", "telegram.api_url": server.url,
                                     "telegram.max_batch_size": 2})
        data = [{"type": "alert", "data": {"message": f"n{i:03d}"}} for i in range(60)]
        enqueue(cfg, data)
        rng = random.Random(5)
        kills = 0
        for _ in range(12):
            p = subprocess.Popen([sys.executable, "-c", FLUSHER, str(tmp_path), TOKEN,
                                  server.url], env={**os.environ, "PYTHONPATH": str(ROOT)})
            time.sleep(rng.uniform(0.3, 1.2))
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
        while queue_stats(cfg)["pending"]:
            flush_notifications(cfg, force=True, sleep=lambda s: None)
        shown = [m["shown"] for m in server.received]
        seen = [f"n{i:03d}" for i in range(60) if any(f"n{i:03d}" in t for t in shown)]
        assert len(seen) == 60
        deliveries = sum(t.count("⚠️") for t in shown)
        assert deliveries <= 60 + 2 * kills  # at most one resent batch per kill
    finally:
        server.stop()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=3000), min_size=1,
                max_size=6))
def test_messages_fit_and_keep_every_character(texts):
    batch = [(str(i), {"message": t}) for i, t in enumerate(texts)]
    messages = render_batch("alert", batch)
    for m in messages:
        assert telegram_length(m.text, m.parse_mode) <= MAX_LEN
        if m.parse_mode == "HTML":
            parse_entities(m.text)  # well-formed for Telegram
    shown = "".join(parse_entities(m.text) if m.parse_mode else m.text for m in messages)
    for t in texts:
        assert "".join(t.split()) in "".join(shown.split())


@pytest.mark.parametrize("value", ["\u202eBTCUSDT", "\u202e\u202dX", "\u2067abc",
                                   "\u202cX\u202e", "\u2068\u202e\u2069\u202e"])
def test_a_values_direction_controls_stay_within_it(value):
    """An unclosed right-to-left override in a value reversed botopt's own text after it
    (the direction, the price) in the chat. Closed at the value's end, every character
    kept."""
    import unicodedata

    [m] = render_batch("signal", [("1", {"symbol": value, "direction": "LONG",
                                         "price": 1.5})])
    shown = parse_entities(m.text)
    assert value in shown
    # Unicode's bidi classes, not the code's list: what is still open at the end
    open_ = {"LRE": 0, "LRI": 1, "RLE": 0, "RLI": 1, "LRO": 0, "RLO": 0, "FSI": 1}
    depth = [0, 0]
    for c in shown[shown.index(value):]:
        kind = unicodedata.bidirectional(c)
        if kind in open_:
            depth[open_[kind]] += 1
        elif kind in ("PDF", "PDI"):
            k = 0 if kind == "PDF" else 1
            depth[k] = max(0, depth[k] - 1)
    assert depth == [0, 0], ascii(shown)


def test_utf16_counting():
    assert telegram_length("😀" * 2048) == 4096 and telegram_length("&amp;<b>a</b>") == 2
    big = render_batch("alert", [("1", {"message": "😀" * 5000})])
    assert len(big) == 3 and all(telegram_length(m.text, m.parse_mode) <= MAX_LEN for m in big)


@pytest.fixture
def read_only_cache(tmp_path):
    """A cache directory that can be made read-only for real: a tmpfs remounted read-only
    (root, who writes through permissions), else permissions taken away."""
    d = tmp_path / "ro"
    d.mkdir()
    mounted = False
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(d)],
                           capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"root, and cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted = True

    def freeze() -> None:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        else:
            for p in [d, *d.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)

    yield d, freeze
    if mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
    else:
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_notify_list_reads_a_queue_where_nothing_may_be_written(read_only_cache):
    """A read-only cache (a mounted backup, a snapshot) refused `notify list`: opening the
    queue wrote to it (WAL mode). Listing writes nothing: it reads the queue as it is."""
    d, freeze = read_only_cache
    base = ["--cache-dir", str(d)]
    lines = "\n".join(json.dumps({"type": "alert", "data": {"message": f"m{i}"}})
                      for i in range(3))
    assert runner.invoke(app, [*base, "notify", "add", "--stdin"], input=lines).exit_code == 0
    before = json.loads(runner.invoke(app, [*base, "notify", "list", "--json"]).stdout)
    freeze()
    listing = runner.invoke(app, [*base, "notify", "list", "--json"])
    assert listing.exit_code == 0, listing.stderr
    assert json.loads(listing.stdout) == before and before["total"] == 3
    dead = runner.invoke(app, [*base, "notify", "list", "--failed", "--json"])
    assert dead.exit_code == 0 and json.loads(dead.stdout)["total"] == 0
    # what writes still says why it cannot, in one line
    added = runner.invoke(app, [*base, "notify", "add", "-t", "alert", "-d", "{}"])
    assert added.exit_code == 1 and len(added.stderr.strip().splitlines()) == 1
    assert "read-only" in added.stderr or "permission" in added.stderr, added.stderr


def test_a_planted_huge_notification_is_a_dead_letter_not_a_budget_overrun(tmp_path, fake,
                                                                         vclock):
    """10 MB of data planted in the queue (botopt queues at most 32 KB) was split into
    messages on every flush, each past its budget, and stayed queued for the next."""
    import sqlite3

    from botopt.core.delivery._notify import dead_letters

    cfg = make_config(tmp_path, fake)
    enqueue(cfg, items(2, "alert") + items(1, "alert"), now=vclock.time())
    db = tmp_path / "cache" / "notify" / "queue.db"
    with sqlite3.connect(db) as con:
        nid = con.execute("SELECT id FROM queue LIMIT 1").fetchone()[0]
        con.execute("UPDATE queue SET data = ? WHERE id = ?",
                    (json.dumps({"text": "C" * 10_000_000}), nid))
    result = flush(cfg, vclock, force=True)
    assert result.dead_lettered == 1 and result.notifications_sent == 2
    [dead] = dead_letters(cfg)
    assert "more than botopt queues" in dead["reason"] and dead["id"] == nid
    assert len(dead["data"]["text"]) == 10_000_000  # kept whole for a person to read


def test_status_reads_an_empty_queue_on_a_read_only_cache(read_only_cache):
    """A read-only cache where nothing was ever queued (no notify/ directory): `status`'s
    notifications row said "cannot create cache directory .../notify"; nothing queued is
    an empty queue, and reading it creates nothing."""
    d, freeze = read_only_cache
    base = ["--cache-dir", str(d)]
    # a process of its own: one in this process keeps the cache's databases open, and a
    # file system with files open for writing cannot be remounted read-only
    subprocess.run([sys.executable, "-m", "botopt.cli.main", *base, "signals", "--symbols",
                    "BTCUSDT"], check=True, capture_output=True)
    assert not (d / "notify").exists()
    freeze()
    result = runner.invoke(app, [*base, "status", "--json"])
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)["notifications"]
    assert "error" not in row and row["pending"] == 0 and row["dead_letters"] == 0, row
    assert not (d / "notify").exists()


def test_retrying_a_dead_letter_queued_again_since_says_so(tmp_path):
    """sweep K: a signal's id is its symbol, candle and direction, so the same signal can be
    queued again while its dead letter waits; `notify retry` then ended in "UNIQUE
    constraint failed: queue.id" (exit 1). It says the notification is queued already."""
    cache = tmp_path / "c"
    base = ["--cache-dir", str(cache)]
    sig = json.dumps({"symbol": "BTCUSDT", "direction": "long", "engine": "trend",
                      "candle_time": "2026-12-08T00:00:00Z"})
    assert runner.invoke(app, [*base, "notify", "add", "-t", "signal", "-d", sig]).exit_code == 0
    db = cache / "notify" / "queue.db"
    with sqlite3.connect(db) as con:  # as a flush buries it after its last try
        con.execute("INSERT INTO dead(id, type, created, data, batch, attempts, failed_at, "
                    "reason) SELECT id, type, created, data, batch, 3, created, 'refused' "
                    "FROM queue")
        nid = con.execute("SELECT id FROM queue").fetchone()[0]
        con.execute("DELETE FROM queue")
    assert runner.invoke(app, [*base, "notify", "add", "-t", "signal", "-d", sig]).exit_code == 0
    again = runner.invoke(app, [*base, "notify", "retry", nid[:8]])
    assert again.exit_code == 2, again.output
    assert len(again.stderr.strip().splitlines()) == 1
    assert "queued already" in again.stderr and "UNIQUE" not in again.stderr
    listed = json.loads(runner.invoke(app, [*base, "notify", "list", "--json"]).stdout)
    assert [n["id"] for n in listed["notifications"]] == [nid]


def test_adding_the_same_signal_twice_says_it_was_queued_once(tmp_path):
    """sweep K: two lines of the same signal (its id is its symbol, candle, direction and
    engine) made one notification, and `notify add` said "queued 2"."""
    base = ["--cache-dir", str(tmp_path / "c")]
    sig = {"symbol": "BTCUSDT", "direction": "long", "engine": "trend",
           "candle_time": "2026-12-08T00:00:00Z"}
    lines = "\n".join(json.dumps({"type": "signal", "data": {**sig, "close": c}})
                      for c in (1, 2))
    added = runner.invoke(app, [*base, "notify", "add", "--stdin"], input=lines)
    assert added.exit_code == 0, added.output
    assert "queued 1 notification(s); 1 repeated a signal" in added.stderr
    listed = json.loads(runner.invoke(app, [*base, "notify", "list", "--json"]).stdout)
    assert [n["data"]["close"] for n in listed["notifications"]] == [1]


def test_a_send_counted_unconfirmed_is_listed_as_unconfirmed():
    """sweep K: a 2xx that is not the Bot API's answer is counted as an unconfirmed send
    ("[unconfirmed 1]" in its note), but `notify list` called it refused."""
    from botopt.core.delivery._notify import _state

    note = "Telegram answered 200 with a JSON list, not a Bot API answer [unconfirmed 1]"
    assert _state({"attempts": 1, "last_error": note}) == "unconfirmed"
    assert _state({"attempts": 1, "last_error": "Telegram answered 400: bad"}) == "refused"
    assert _state({"attempts": 1, "last_error": "timed out (it may have been delivered)"}) \
        == "unconfirmed"
