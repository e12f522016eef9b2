"""Webhook and Discord destinations under the faults the Telegram tests use: 429 with
retry_after, 5xx, answers past the timeout, dropped connections, nonsense 200s, a SIGKILLed
notify-flush, a full disk. Each must lose nothing, deliver twice only under the same
idempotency key (at most twice), and leave nothing stuck.

Real components: the fakes in tests/fakes/webhook_servers.py are real HTTP servers on
127.0.0.1, reached through real ``requests``; real files, real ``botopt`` processes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botopt.core import load_config
from botopt.core.delivery._notify import (
    UNCONFIRMED_AFTER,
    dead_letters,
    enqueue,
    flush_notifications,
    pending_notifications,
    queue_stats,
)
from botopt.core.state._events import events_dir, read_events

from .fakes.telegram_server import FakeTelegram
from .fakes.webhook_servers import FakeDiscord, FakeReceiver
from .test_delivery import ROOT, TOKEN

SECRET = "test-secret-0123456789abcdef"


@pytest.fixture
def hook():
    fake = FakeReceiver(secret=SECRET).start()
    yield fake
    fake.stop()


@pytest.fixture
def discord():
    fake = FakeDiscord().start()
    yield fake
    fake.stop()


def toml(hook_url: str | None = None, discord_url: str | None = None, *, routes: str = "",
         timeout: float = 1.0, interval: float = 0.0, batch: int = 5) -> str:
    text = ""
    if hook_url:
        text += (f'[notify.destinations.hook]\ntype = "webhook"\nurl = "{hook_url}/in"\n'
                 f'secret = "{SECRET}"\ntimeout = {timeout}\nmin_interval = {interval}\n'
                 f"max_batch_size = {batch}\n")
    if discord_url:
        text += (f'[notify.destinations.disc]\ntype = "discord"\nurl = "{discord_url}"\n'
                 f"timeout = {timeout}\nmin_interval = {interval}\n"
                 f"max_batch_size = {min(batch, 10)}\n")
    return text + "[notify.routes]\n" + routes


def config(tmp_path: Path, text: str, **extra):
    p = tmp_path / "botopt.toml"
    p.write_text(text)
    return load_config(p, env={}, overrides={"cache.dir": str(tmp_path / "c"), **extra})


def one(tmp_path, which, hook, discord, **kw):
    """A config that routes everything to one destination: (config, its fake)."""
    if which == "hook":
        return config(tmp_path, toml(hook.url, routes='"*" = ["hook"]\n', **kw)), hook
    return config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n',
                                 **kw)), discord


def notes(n: int, kind: str = "alert") -> list[dict]:
    return [{"type": kind, "data": {"message": f"m{i:03d}"}} for i in range(n)]


def wait_until(check, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not check() and time.monotonic() < end:
        time.sleep(0.05)


def keys_by_id(fake) -> dict[str, set[str]]:
    """Each notification id -> the idempotency keys (webhook) or batch footers (Discord) it
    arrived under."""
    out: dict[str, set[str]] = defaultdict(set)
    if isinstance(fake, FakeReceiver):
        for key, ids in fake.deliveries:
            for n in ids:
                out[n].add(key)
    else:
        for m in fake.received:
            for e in m["embeds"]:
                _, nid, _, _, batch = e["footer"]["text"].split()
                out[nid].add(batch)
    return out


def seen(fake) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for nid in fake.ids_seen():
        counts[nid] += 1
    return counts


# -- the happy path ---------------------------------------------------------------------------

def test_a_webhook_batch_is_signed_keyed_and_verifiable_as_the_docs_say(tmp_path, hook):
    cfg = config(tmp_path, toml(hook.url, routes='"*" = ["hook"]\n'))
    ids = enqueue(cfg, notes(3))
    result = flush_notifications(cfg, force=True)
    assert result.notifications_sent == 3 and result.error is None
    assert hook.bad_signatures == 0 and len(hook.received) == 1
    doc = hook.received[0]
    assert doc["type"] == "alert" and doc["destination"] == "hook"
    assert [n["data"]["message"] for n in doc["notifications"]] == ["m000", "m001", "m002"]
    [(key, got)] = hook.deliveries
    assert key == doc["batch"] and len(set(got)) == 3
    assert len(ids) == 3 and queue_stats(cfg)["pending"] == 0


def test_the_documented_verification_snippet_accepts_ours_and_rejects_a_forgery(hook):
    """The few lines docs/notifications.md gives receivers, run verbatim on our request."""
    from botopt.core.delivery._http_dest import sign

    doc = (Path(ROOT) / "docs" / "notifications.md").read_text()
    snippet = doc.split("```python verify")[1].split("```")[0]
    space: dict = {}
    exec(snippet, space)  # noqa: S102 (our own documentation)
    body = b'{"batch":"k","notifications":[]}'
    ts = str(int(time.time()))
    good = {"X-Botopt-Timestamp": ts, "X-Botopt-Signature": sign(SECRET, ts, body)}
    assert space["verify"](SECRET.encode(), good, body)
    assert not space["verify"](SECRET.encode(), good, body + b" ")
    assert not space["verify"](b"another-secret-0123456789", good, body)
    old = str(int(time.time()) - 3600)
    stale = {"X-Botopt-Timestamp": old, "X-Botopt-Signature": sign(SECRET, old, body)}
    assert not space["verify"](SECRET.encode(), stale, body)  # a replay
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert good["X-Botopt-Signature"] == f"sha256={mac}"


def test_discord_gets_one_embed_per_notification_within_its_limits(tmp_path, discord):
    cfg = config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n',
                                batch=10))
    big = "x" * 5000  # over an embed's 4096: cut, and still within 6000 in all
    enqueue(cfg, [{"type": "signal", "data": {"symbol": f"S{i}USDT", "direction": "long",
                                              "note": big if i < 3 else "@everyone"}}
                  for i in range(10)])
    result = flush_notifications(cfg, force=True)
    assert result.notifications_sent == 10 and result.error is None, result.error
    assert discord.refused == []
    assert len(discord.received) >= 3  # 6000 characters over all embeds forces splits
    assert sum(len(m["embeds"]) for m in discord.received) == 10
    for m in discord.received:
        assert m["allowed_mentions"] == {"parse": []}  # "@everyone" in data pings no one
        assert len(m["content"]) <= 2000 and len(m["embeds"]) <= 10
    assert "S9USDT" in json.dumps(discord.received)


def test_a_notification_routed_to_three_destinations_reaches_each_once(tmp_path, hook,
                                                                       discord):
    tg = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    try:
        cfg = config(tmp_path, toml(hook.url, discord.webhook_url,
                                    routes='signal = ["telegram", "hook", "disc"]\n'
                                           'alert = ["hook"]\n'),
                     **{"telegram.token": TOKEN, "telegram.chat_id": "42",
                        "telegram.api_url": tg.url})
        enqueue(cfg, [{"type": "signal", "data": {"symbol": "BTCUSDT", "direction": "long"}},
                      {"type": "alert", "data": {"message": "only the hook"}},
                      {"type": "daily", "data": {"text": "default route"}}])
        stats = queue_stats(cfg)
        assert stats["pending"] == 5  # 3 copies + 1 + 1
        result = flush_notifications(cfg, force=True)
        assert result.error is None and result.notifications_sent == 5
        assert {d: c["notifications"] for d, c in result.by_destination.items()} == \
            {"telegram": 2, "hook": 2, "disc": 1}
        assert len(tg.received) == 2 and len(discord.received) == 1
        assert sorted(doc["type"] for doc in hook.received) == ["alert", "signal"]
    finally:
        tg.stop()


# -- the Telegram fault set, for each destination ---------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("which", ["hook", "disc"])
def test_429_holds_that_destination_for_retry_after_then_delivers(tmp_path, hook, discord,
                                                                   which):
    cfg, fake = one(tmp_path, which, hook, discord)
    enqueue(cfg, notes(2))
    fake.script = ["429:1.5"]
    result = flush_notifications(cfg, force=True)
    assert result.notifications_sent == 2 and result.rate_limited == 1
    assert result.by_destination[which]["rate_limited"] == 1
    assert fake.arrivals[1] - fake.arrivals[0] >= 1.4  # the wait it asked for was kept
    assert list(seen(fake).values()) == [1, 1]


def test_a_global_discord_429_holds_every_discord_webhook(tmp_path, discord):
    cfg = config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n'))
    enqueue(cfg, notes(1))
    discord.script = ["global:1.2"]
    assert flush_notifications(cfg, force=True, max_wait=0.1).notifications_sent == 0
    state = json.loads(next((tmp_path / "c").rglob("dest__discord_state.json")).read_text())
    assert state["_discord"]["not_before"] > time.time() + 0.5  # the shared hold is kept
    # the hold is over 1.3 s later (the flush's clock moved, not waited for)
    assert flush_notifications(cfg, force=True, max_wait=0.1).notifications_sent == 0
    assert flush_notifications(cfg, force=True,
                               clock=lambda: time.time() + 1.3).notifications_sent == 1


@pytest.mark.slow
def test_discord_s_own_bucket_is_respected_without_a_429(tmp_path, discord):
    """Five requests per two seconds, as Discord's webhook bucket: when X-RateLimit-Remaining
    reaches 0 we wait for X-RateLimit-Reset-After instead of earning a 429."""
    cfg = config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n',
                                batch=1))
    enqueue(cfg, notes(7))
    result = flush_notifications(cfg, force=True)
    assert result.notifications_sent == 7 and result.rate_limited == 0
    assert discord.arrived == 7  # no request was refused


@pytest.mark.slow
@pytest.mark.parametrize("which", ["hook", "disc"])
def test_5xx_is_retried_with_backoff_and_delivered_once(tmp_path, hook, discord, which):
    cfg, fake = one(tmp_path, which, hook, discord)
    enqueue(cfg, notes(3))
    fake.script = ["500", "500"]
    result = flush_notifications(cfg, force=True)
    assert result.notifications_sent == 3 and result.error is None
    assert fake.arrived == 3 and list(seen(fake).values()) == [1, 1, 1]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["hang:1.5", "drop", "cut"])
@pytest.mark.parametrize("which", ["hook", "disc"])
def test_an_unconfirmed_send_is_resent_once_under_the_same_key_then_dead(
        tmp_path, hook, discord, which, fault):
    """The request went out and no answer came (too late, or the connection dropped): not
    retried in the run; the next flush resends it once under the same key; then it waits in
    the dead letters. The receiver got it at most twice, and only under one key."""
    cfg, fake = one(tmp_path, which, hook, discord)
    ids = enqueue(cfg, notes(3))
    fake.always = fault
    first = flush_notifications(cfg, force=True)
    assert fake.arrived == 1 and first.failure  # no retry storm
    assert "may have been delivered" in first.error and queue_stats(cfg)["pending"] == 3
    assert {p["state"] for p in pending_notifications(cfg)} == {"unconfirmed"}
    for _ in range(3):
        flush_notifications(cfg, force=True)
    time.sleep(1.6 if fault.startswith("hang") else 0.1)
    assert fake.arrived == UNCONFIRMED_AFTER == 2
    counts = seen(fake)
    assert len(counts) == 3 and set(counts.values()) == {2}  # twice, never more
    if which == "hook":
        assert len({key for key, _ in fake.deliveries}) == 1  # the same Idempotency-Key
        assert len(fake.received) == 1  # so the receiver processed it once
    else:
        footers = {e["footer"]["text"] for m in fake.received for e in m["embeds"]}
        assert len(footers) == 3  # both copies carry the same batch key
    assert queue_stats(cfg)["pending"] == 0
    dead = dead_letters(cfg)
    assert len(dead) == 3 and all("may have been delivered" in d["reason"] for d in dead)
    events = [e for e in read_events(events_dir(tmp_path / "c"))[0]
              if e["type"] == "notify_dead_letter"]
    assert len(events) == 3 and {e["data"]["destination"] for e in events} == {which}
    assert len(ids) == 3


@pytest.mark.slow
@pytest.mark.parametrize("which", ["hook", "disc"])
def test_an_unconfirmed_send_that_then_succeeds_is_delivered_and_forgotten(
        tmp_path, hook, discord, which):
    cfg, fake = one(tmp_path, which, hook, discord)
    enqueue(cfg, notes(2))
    fake.script = ["hang:1.5"]
    assert flush_notifications(cfg, force=True).notifications_sent == 0
    enqueue(cfg, [{"type": "alert", "data": {"message": "new"}}])  # claimed with them...
    second = flush_notifications(cfg, force=True)
    assert second.notifications_sent == 3 and second.error is None
    wait_until(lambda: len(fake.ids_seen()) >= 5)
    if which == "hook":  # ...but sent apart: the resent batch keeps its key
        keys = [k for k, ids in fake.deliveries if len(ids) == 2]
        assert len(keys) == 2 and keys[0] == keys[1]
        assert sorted(len(ids) for _, ids in fake.deliveries) == [1, 2, 2]
        assert len(fake.received) == 2  # the duplicate was dropped by its key
    assert queue_stats(cfg)["pending"] == 0 and dead_letters(cfg) == []


@pytest.mark.parametrize("body", ["{}", "<html>proxy</html>", "", '{"id": 5}', "null"])
def test_a_discord_200_without_the_message_is_unconfirmed(tmp_path, discord, body):
    cfg = config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n'))
    enqueue(cfg, notes(1))
    discord.always = f"body:{body}"
    first = flush_notifications(cfg, force=True)
    assert first.failure and "without the message" in first.error
    for _ in range(3):
        flush_notifications(cfg, force=True)
    assert discord.arrived == UNCONFIRMED_AFTER
    assert len(dead_letters(cfg)) == 1 and queue_stats(cfg)["pending"] == 0


def test_a_webhook_2xx_of_any_body_is_delivered(tmp_path, hook):
    cfg = config(tmp_path, toml(hook.url, routes='"*" = ["hook"]\n'))
    enqueue(cfg, notes(1))
    hook.always = "body:<html>whatever</html>"
    assert flush_notifications(cfg, force=True).notifications_sent == 1
    assert queue_stats(cfg)["pending"] == 0 and hook.arrived == 1


@pytest.mark.parametrize("which", ["hook", "disc"])
def test_a_refusing_destination_finds_the_culprit_and_buries_only_it(tmp_path, hook,
                                                                      discord, which):
    cfg, fake = one(tmp_path, which, hook, discord)
    enqueue(cfg, notes(3))
    fake.script = ["400", "", "400", ""]  # the batch, then each alone: the middle one fails
    flush_notifications(cfg, force=True)
    for _ in range(2):  # it alone, refused again: after DEAD_AFTER refusals it is dead
        fake.script = ["400"]
        flush_notifications(cfg, force=True)
    assert queue_stats(cfg)["pending"] == 0
    assert len(dead_letters(cfg)) == 1
    assert len(seen(fake)) == 2  # the other two went out, once each


@pytest.mark.parametrize("which", ["hook", "disc"])
@pytest.mark.parametrize("answer", ["404", "307"])
def test_a_wrong_url_keeps_everything_queued_and_names_the_destination(tmp_path, hook,
                                                                        discord, which,
                                                                        answer):
    """A redirect too (Discord counted a 307 against the message: a dead letter after
    three flushes)."""
    cfg, fake = one(tmp_path, which, hook, discord)
    enqueue(cfg, notes(2))
    fake.always = answer
    result = flush_notifications(cfg, force=True)
    assert result.failure and which in result.error and fake.arrived == 1
    assert queue_stats(cfg)["pending"] == 2 and dead_letters(cfg) == []
    fake.always = None
    assert flush_notifications(cfg, force=True).notifications_sent == 2


def test_one_broken_destination_does_not_hold_up_the_others(tmp_path, hook, discord):
    cfg = config(tmp_path, toml(hook.url, discord.webhook_url,
                                routes='"*" = ["hook", "disc"]\n'))
    enqueue(cfg, notes(4))
    discord.always = "429:30"  # a wait far past this flush
    result = flush_notifications(cfg, force=True, max_wait=1.0)
    assert result.by_destination["hook"]["notifications"] == 4
    assert "rate limit" in result.error
    assert queue_stats(cfg)["pending"] == 4  # Discord's copies wait, nothing lost


@pytest.mark.parametrize("fault", ["hang:10", "driphead:0.5"])
def test_a_hanging_destination_cannot_hold_a_flush_past_its_budget(tmp_path, hook, fault):
    """``driphead``: the status line and headers a byte every 0.5 s, each read within the
    read timeout: the flush waited the whole 40 s of headers, past any budget."""
    cfg = config(tmp_path, toml(hook.url, routes='"*" = ["hook"]\n', timeout=30.0),
                 **{"telegram.flush_budget": 2.0})
    enqueue(cfg, notes(1))
    hook.always = fault
    start = time.monotonic()
    flush_notifications(cfg, force=True)
    assert time.monotonic() - start < 3.5
    assert queue_stats(cfg)["pending"] == 1


def test_connection_refused_is_transient_and_keeps_the_queue(tmp_path):
    cfg = config(tmp_path, toml("http://127.0.0.1:9", routes='"*" = ["hook"]\n'))
    enqueue(cfg, notes(2))
    result = flush_notifications(cfg, force=True, sleep=lambda s: None)
    assert result.failure and "unreachable" in result.error
    assert queue_stats(cfg)["pending"] == 2 and dead_letters(cfg) == []


def test_secrets_never_reach_errors_events_or_dead_letters(tmp_path, discord):
    cfg = config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n'))
    enqueue(cfg, notes(1))
    discord.always = "drop"
    for _ in range(3):
        r = flush_notifications(cfg, force=True)
        assert discord.token not in (r.error or "")
    assert discord.token not in json.dumps(dead_letters(cfg))
    for f in (tmp_path / "c").rglob("*"):
        if f.is_file():
            assert discord.token.encode() not in f.read_bytes(), f


# -- processes: SIGKILL, a full disk -------------------------------------------------------------

FLUSHER = r"""
import sys
from botopt.core import load_config
from botopt.core.delivery._notify import flush_notifications
cfg = load_config(sys.argv[1], env={}, overrides={"cache.dir": sys.argv[2]})
while True:
    flush_notifications(cfg, force=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("which", ["hook", "disc"])
def test_sigkill_of_notify_flush_mid_run_loses_nothing(tmp_path, hook, discord, which):
    cfg, fake = one(tmp_path, which, hook, discord, batch=2)
    fake.always = "hang:0.15"  # each answer takes a while: kills land mid-request
    enqueue(cfg, notes(30))
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        before = fake.arrived
        p = subprocess.Popen([sys.executable, "-c", FLUSHER, str(tmp_path / "botopt.toml"),
                              str(tmp_path / "c")], env={**os.environ, "PYTHONPATH": str(ROOT)})
        # Killed mid-request once its first request has been answered: the first is the
        # last kill's batch resent, and a batch killed in flight twice is a dead letter by
        # design (test_delivery). A kill at a fixed delay landed on that resend again
        # whenever a loaded machine slowed the start (a dead letter, then a part resent
        # under a key of its own, in one CI run).
        deadline = time.monotonic() + 60
        while fake.arrived < before + 2 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.1))
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
    fake.always = None
    while queue_stats(cfg)["pending"]:
        flush_notifications(cfg, force=True)
    counts = seen(fake)
    # None lost: each arrived, or was in flight at two kills (a loaded machine slows each
    # flush's start, so kills can land on one batch's resend again) and is a dead letter
    # saying so, by design (test_delivery), for the user to retry or drop.
    dead = dead_letters(cfg)
    assert all("may have been delivered" in d["reason"] for d in dead), dead
    buried = {d["id"][:12] for d in dead}  # Discord's footers show 12 characters
    assert len({n[:12] for n in counts} | buried) == 30, (sorted(counts), buried)
    assert sum(counts.values()) <= 30 + 2 * kills  # at most one batch resent per kill
    # A batch can be in flight at two kills in a row (its resend killed too, as on a loaded
    # machine): sent once per kill it was in flight at, never more.
    assert max(counts.values()) <= 1 + kills
    # duplicates share their key; the part of a batch whose rest was buried goes out under
    # a key of its own (docs/notifications.md), so only with nothing buried is it every one
    if not dead:
        assert all(len(k) == 1 for k in keys_by_id(fake).values())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ro", "full"])
def test_a_full_or_read_only_disk_during_a_flush_loses_nothing(tmp_path, hook, mode):
    """notify-flush with the cache on a full or read-only disk (as test_faults runs the
    Telegram commands): one line, no traceback; once the disk is back everything goes out,
    a batch sent without being recorded at most twice and under its one key."""
    from .test_faults import _clean, _under

    cfg = config(tmp_path, toml(hook.url, routes='"*" = ["hook"]\n'))
    enqueue(cfg, notes(3))
    cache = tmp_path / "c"
    result = _under(mode, cache, ("--config", str(tmp_path / "botopt.toml"), "notify-flush",
                                  "--force"), hook.url)
    _clean(result)
    assert SECRET not in result.stderr + result.stdout
    flush_notifications(cfg, force=True)
    assert queue_stats(cfg)["pending"] == 0 and dead_letters(cfg) == []
    counts = seen(hook)
    assert len(counts) == 3 and max(counts.values()) <= 2
    assert all(len(k) == 1 for k in keys_by_id(hook).values())


# -- what a user sees: metrics, notify list, status ---------------------------------------------

@pytest.mark.slow
def test_metrics_list_and_status_per_destination(tmp_path, hook, discord):
    """Queue depth, dead letters and 429s per destination in the textfile (read by
    prometheus_client's parser), each figure equal to what the fakes and `notify list` saw;
    no secret in any label or line."""
    from prometheus_client.parser import text_string_to_metric_families
    from typer.testing import CliRunner

    from botopt.cli.main import app

    text = toml(hook.url, discord.webhook_url, routes='"*" = ["hook", "disc"]\n')
    (tmp_path / "botopt.toml").write_text(text)
    runner = CliRunner()

    def cli(*args: str):
        return runner.invoke(app, ["--config", str(tmp_path / "botopt.toml"), "--cache-dir",
                                   str(tmp_path / "c"), *args])

    for i in range(3):
        assert cli("notify", "add", "-t", "alert", "-d", json.dumps({"m": i})).exit_code == 0
    discord.script = ["429:1", "drop", "drop"]  # a 429, then unconfirmed twice: dead
    hook.script = ["429:1"]
    for _ in range(3):
        cli("notify-flush", "--force")
    assert cli("notify", "add", "-t", "alert", "-d", '{"m": "later"}').exit_code == 0
    out = tmp_path / "botopt.prom"
    res = cli("metrics", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    raw = out.read_text()
    assert discord.token not in raw and SECRET not in raw
    figures: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(raw):
        for s in fam.samples:
            if "destination" in s.labels:
                figures[(s.name, s.labels["destination"])] = s.value
    assert figures[("botopt_rate_limited_total", "hook")] == 1
    assert figures[("botopt_rate_limited_total", "disc")] == 1
    # the Telegram chat is not in use: it has no series (with a route there it would)
    assert not any(dest == "telegram" for _, dest in figures)
    failed = json.loads(cli("notify", "list", "--failed", "--json").stdout)["dead_letters"]
    assert {d["destination"] for d in failed} == {"disc"} and len(failed) == 3
    assert figures[("botopt_dead_letter_notifications", "disc")] == 3
    assert figures[("botopt_dead_lettered_total", "disc")] == 3
    assert figures[("botopt_dead_letter_notifications", "hook")] == 0
    queued = json.loads(cli("notify", "list", "--json").stdout)["notifications"]
    assert sorted(q["destination"] for q in queued) == ["disc", "hook"]
    assert all(q["type"] == "alert" for q in queued)
    assert figures[("botopt_queue_depth_notifications", "hook")] == 1
    assert figures[("botopt_queue_depth_notifications", "disc")] == 1
    table = cli("notify", "list").stdout
    assert "disc" in table and "hook" in table
    status = json.loads(cli("status", "--json").stdout)["destinations"]
    assert status["disc"] == {"pending": 1, "dead_letters": 3,
                              "oldest_created_at": pytest.approx(time.time(), abs=60)}
    plain = cli("status").stdout
    assert "queued for disc / dead" in plain and "1 / 3" in plain


# -- the shared (Redis) queue -------------------------------------------------------------------

@pytest.mark.slow
def test_destinations_on_the_shared_queue_keep_every_guarantee(redis_server, tmp_path, hook,
                                                               discord):
    """The same rules on Redis: one copy per destination, an unconfirmed webhook send resent
    once under its key (read back from the server), Discord's 429 held, per-destination
    figures from the server's streams and dead letters."""
    from botopt.core.delivery._notify import destination_stats

    tg = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    try:
        cfg = config(tmp_path, toml(hook.url, discord.webhook_url,
                                    routes='"*" = ["telegram", "hook", "disc"]\n'),
                     **{"state.url": redis_server.url, "telegram.token": TOKEN,
                        "telegram.chat_id": "42", "telegram.api_url": tg.url,
                        "state.claim_timeout": 12.0})
        enqueue(cfg, notes(3))
        stats = queue_stats(cfg)
        assert stats["pending"] == 9
        assert {d: s["pending"] for d, s in destination_stats(stats).items()} == \
            {"telegram": 3, "hook": 3, "disc": 3}
        hook.script = ["hang:1.5"]
        discord.script = ["429:1"]
        first = flush_notifications(cfg, force=True)
        assert first.by_destination["telegram"]["notifications"] == 3
        assert first.by_destination["disc"]["notifications"] == 3
        assert first.by_destination["disc"]["rate_limited"] == 1
        assert "may have been delivered" in first.error
        second = flush_notifications(cfg, force=True)
        assert second.error is None and second.notifications_sent == 3
        wait_until(lambda: len(hook.deliveries) >= 2)
        assert len({k for k, _ in hook.deliveries}) == 1 and len(hook.received) == 1
        assert queue_stats(cfg)["pending"] == 0
        assert len(tg.received) == 1 and len(discord.received) == 1
        # a dead letter on the server is counted under its destination
        enqueue(cfg, [{"type": "alert", "data": {"m": "x"}}])
        discord.always = "drop"
        for _ in range(2):
            flush_notifications(cfg, force=True)
        per = destination_stats(queue_stats(cfg))
        assert per["disc"]["dead_letters"] == 1 and per["disc"]["pending"] == 0
        assert [d["destination"] for d in dead_letters(cfg)] == ["disc"]
        assert [p["destination"] for p in pending_notifications(cfg)] == []
    finally:
        tg.stop()


# -- routing: a property ------------------------------------------------------------------------

KINDS = ("signal", "alert", "trade_exited")
NAMES = ("hook", "hook2", "disc")


@pytest.mark.slow
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(routes=st.fixed_dictionaries({k: st.lists(st.sampled_from(NAMES), min_size=1,
                                                  max_size=3, unique=True) for k in KINDS}),
       kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=12),
       faults=st.lists(st.sampled_from(["", "500"]), max_size=4),
       batch=st.integers(1, 4))
def test_every_notification_reaches_every_routed_destination_exactly_once(
        tmp_path_factory, routes, kinds, faults, batch):
    from botopt.core.state._queue import copy_id

    tmp = tmp_path_factory.mktemp("route")
    hooks = {n: FakeReceiver(secret=SECRET).start() for n in ("hook", "hook2")}
    disc = FakeDiscord().start()
    try:
        # No fault here is a hang: a generous timeout, so that a fake starved of the CPU
        # under a loaded CI run (its threads share this process's GIL) is not taken for
        # an unanswered request and resent, which Discord (no idempotency key) counts twice.
        text = toml(hooks["hook"].url, disc.webhook_url, batch=batch, timeout=20.0)
        text = text.replace("[notify.routes]\n", "[notify.destinations.hook2]\n"
                            f'type = "webhook"\nurl = "{hooks["hook2"].url}/in"\n'
                            f'secret = "{SECRET}"\nmin_interval = 0\n'
                            f"max_batch_size = {batch}\n[notify.routes]\n")
        text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in routes.items())
        text += '"*" = ["hook"]\n'  # no type here goes by it; without it: telegram
        cfg = config(tmp, text)
        for fake in (*hooks.values(), disc):
            fake.script = list(faults)
        ids = enqueue(cfg, [{"type": k, "data": {"i": i}} for i, k in enumerate(kinds)])
        for _ in range(10):
            if not queue_stats(cfg)["pending"]:
                break
            flush_notifications(cfg, force=True, sleep=lambda s: None)
        assert queue_stats(cfg)["pending"] == 0 and dead_letters(cfg) == []
        for name in NAMES:
            want = sorted(copy_id(nid, name) for nid, k in zip(ids, kinds, strict=True)
                          if name in routes[k])
            fake = disc if name == "disc" else hooks[name]
            got = sorted(fake.ids_seen())
            if name == "disc":
                want = sorted(w[:12] for w in want)
            assert got == want, name  # each exactly once, and nothing it was not routed
    finally:
        for fake in (*hooks.values(), disc):
            fake.stop()


def test_types_without_a_route_still_go_to_telegram_and_say_so(tmp_path, hook):
    from botopt.core.errors import ConfigError

    cfg = config(tmp_path, toml(hook.url, routes='signal = ["hook"]\n'))
    assert cfg.notify.route("alert") == ("telegram",)
    with pytest.raises(ConfigError) as info:
        flush_notifications(cfg, force=True)
    assert info.value.key == "telegram.token" and '"*"' in str(info.value)


def test_copies_for_a_destination_removed_from_the_config_become_dead_letters(tmp_path, hook,
                                                                              discord):
    cfg = config(tmp_path, toml(hook.url, discord.webhook_url,
                                routes='"*" = ["hook", "disc"]\n'))
    enqueue(cfg, notes(2))
    later = config(tmp_path, toml(hook.url, routes='"*" = ["hook"]\n'))  # disc removed
    result = flush_notifications(later, force=True)
    assert result.by_destination["hook"]["notifications"] == 2 and result.dead_lettered == 2
    dead = dead_letters(later)
    assert {d["destination"] for d in dead} == {"disc"} and "no longer" in dead[0]["reason"]
    assert queue_stats(later)["pending"] == 0 and discord.arrived == 0


def test_a_second_telegram_chat_is_a_destination_with_its_own_pacing(tmp_path, hook):
    tg = FakeTelegram(token=TOKEN, enforce_limits=True).start()
    try:
        text = toml(hook.url, routes='alert = ["ops", "telegram"]\n"*" = ["hook"]\n')
        text = text.replace("[notify.routes]\n", "[notify.destinations.ops]\n"
                            f'type = "telegram"\ntoken = "{TOKEN}"\nchat_id = "-1001"\n'
                            f'url = "{tg.url}"\nmin_interval = 1.0\n[notify.routes]\n')
        cfg = config(tmp_path, text, **{"telegram.token": TOKEN, "telegram.chat_id": "42",
                                        "telegram.api_url": tg.url})
        enqueue(cfg, notes(2) + [{"type": "signal", "data": {"symbol": "BTCUSDT"}}])
        result = flush_notifications(cfg, force=True)
        assert result.error is None, result.error
        assert sorted(m["chat_id"] for m in tg.received) == ["-1001", "42"]
        assert len(hook.received) == 1 and hook.received[0]["type"] == "signal"
        assert next((tmp_path / "c").rglob("dest_ops_state.json")).exists()
    finally:
        tg.stop()


def test_a_token_in_a_webhook_url_query_is_hidden_too(tmp_path):
    from botopt.core.base._redact import redact

    text = toml("http://127.0.0.1:9", routes='"*" = ["hook"]\n')
    cfg = config(tmp_path, text.replace("/in", "/in?token=abcdefgh12345678"))
    assert cfg.notify.destination("hook") is not None
    assert "abcdefgh12345678" not in redact("GET /in?token=abcdefgh12345678 failed")


@pytest.mark.parametrize("body, lowest, highest", [
    ('{"retry_after": -5, "global": false}', 1.0, 1.5),
    ('{"retry_after": 1e300, "global": false}', 3500, 3601),
    ('{"retry_after": "soon"}', 4.0, 5.5),
    ('{"retry_after": null}', 4.0, 5.5),
    ("<html>slow down</html>", 4.0, 5.5),
    ('{"retry_after": 0.0001, "global": "yes"}', 1.0, 1.5),
])
def test_absurd_discord_retry_after_is_clamped(tmp_path, discord, body, lowest, highest):
    cfg = config(tmp_path, toml(None, discord.webhook_url, routes='"*" = ["disc"]\n'))
    enqueue(cfg, notes(1))
    discord.script = [f"raw429:{body}"]
    before = time.time()
    result = flush_notifications(cfg, force=True, max_wait=0.1)
    assert result.rate_limited == 1 and result.notifications_sent == 0
    state = json.loads(next((tmp_path / "c").rglob("dest_disc_state.json")).read_text())
    wait = state["disc"]["not_before"] - before
    assert lowest <= wait <= highest, wait
    assert queue_stats(cfg)["pending"] == 1
    listed = pending_notifications(cfg)
    assert [p["state"] for p in listed] == ["pending"]


def test_doctor_checks_and_test_sends_each_destination(tmp_path, hook, discord):
    from botopt.core.watch._doctor import run_checks

    cfg = config(tmp_path, toml(hook.url, discord.webhook_url,
                                routes='"*" = ["hook", "disc"]\n'))
    checks = {c.name: c for c in run_checks(cfg)}
    assert checks["telegram"].ok and "not used" in checks["telegram"].message
    assert checks["destination disc"].ok and discord.token not in \
        checks["destination disc"].message and discord.arrived == 0
    sent = {c.name: c for c in run_checks(cfg, send_test=True)}
    assert sent["destination hook"].ok and sent["destination disc"].ok
    assert hook.bad_signatures == 0 and len(hook.received) == 1
    assert hook.received[0]["type"] == "doctor_test" and len(discord.received) == 1
    hook.always, discord.always = "404", "401"
    broken = {c.name: c for c in run_checks(cfg, send_test=True)}
    assert not broken["destination hook"].ok and "404" in broken["destination hook"].message
    assert not broken["destination disc"].ok and discord.token not in \
        broken["destination disc"].message


# -- every fault at random, both destinations at once -------------------------------------------

FAULTS = ["", "", "", "500", "hang:1.2", "drop", "lost", "body:{}", "429:1"]


@pytest.mark.slow  # 3-7 s a seed; the fast subset keeps each fault's own test
@pytest.mark.parametrize("seed", range(1, 7))
@pytest.mark.parametrize("backend", ["local", "redis"])
def test_random_faults_lose_nothing_duplicate_only_under_one_key_and_leave_nothing_stuck(
        tmp_path, hook, discord, seed, backend, request):
    """The goal row, measured: under a random schedule of every fault above on both
    destinations, each notification reaches each destination or its dead letters (lost: 0),
    reaches it at most twice and then only under one idempotency key (webhook) or one batch
    footer (Discord), and the queue ends empty (stuck: 0)."""
    rng = random.Random(seed)
    shared = {"state.url": request.getfixturevalue("redis_server").url,
              "state.claim_timeout": 12.0} if backend == "redis" else {}
    cfg = config(tmp_path, toml(hook.url, discord.webhook_url, batch=3,
                                routes='"*" = ["hook", "disc"]\n'), **shared)
    for fake in (hook, discord):
        fake.script = [rng.choice(FAULTS) for _ in range(12)]
    ids = enqueue(cfg, [{"type": rng.choice(["alert", "signal"]), "data": {"i": i}}
                        for i in range(12)])
    for _ in range(12):
        if not queue_stats(cfg)["pending"]:
            break
        flush_notifications(cfg, force=True, sleep=lambda s: None)
    assert queue_stats(cfg)["pending"] == 0  # stuck: 0
    time.sleep(1.3)  # a late answer's processing has landed
    from botopt.core.state._queue import copy_id

    dead = {d["id"] for d in dead_letters(cfg)}
    for name, fake in (("hook", hook), ("disc", discord)):
        counts = seen(fake)
        for nid in ids:
            cid = copy_id(nid, name)
            key = cid[:12] if name == "disc" else cid
            assert counts.get(key, 0) >= 1 or cid in dead, (name, nid)  # lost: 0
            assert counts.get(key, 0) <= 2
    for fake in (hook, discord):  # twice only under the same key
        assert all(len(k) == 1 for k in keys_by_id(fake).values())


@pytest.mark.parametrize("which", ["hook", "disc"])
def test_a_huge_answer_is_classified_as_any_other(tmp_path, hook, discord, which):
    """50 MB of junk in a 200 (we read at most 256 kB of it): a webhook's 2xx is
    delivered; Discord's lacks the message, so it is unconfirmed."""
    cfg, fake = one(tmp_path, which, hook, discord, timeout=5.0)
    enqueue(cfg, notes(1))
    fake.script = ["big:50"]
    result = flush_notifications(cfg, force=True)
    if which == "hook":
        assert result.notifications_sent == 1 and result.error is None
    else:
        assert result.failure and "without the message" in result.error
        assert queue_stats(cfg)["pending"] == 1


@pytest.mark.slow
def test_notify_flush_says_per_destination_and_names_a_broken_one_in_one_line(tmp_path, hook,
                                                                               discord):
    from .test_delivery import botopt, errors

    (tmp_path / "botopt.toml").write_text(toml(hook.url, discord.webhook_url,
                                               routes='"*" = ["hook", "disc"]\n'))
    cache = tmp_path / "c"
    conf = ("--config", str(tmp_path / "botopt.toml"))
    assert botopt(cache, *conf, "notify", "add", "-t", "alert", "-d", "{}",
                  url="http://127.0.0.1:9").returncode == 0
    discord.always = "404"
    run = botopt(cache, *conf, "notify-flush", "--force", url="http://127.0.0.1:9")
    assert run.returncode == 1 and "(disc 0, hook 1)" in run.stdout
    [line] = errors(run)
    assert "disc" in line and "404" in line and discord.token not in run.stderr
    discord.always = None
    run = botopt(cache, *conf, "notify-flush", "--force", "--json", url="http://127.0.0.1:9")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["destinations"]["disc"]["notifications"] == 1


def test_dry_run_shows_each_destination_and_sends_nothing(tmp_path, hook, discord):
    cfg = config(tmp_path, toml(hook.url, discord.webhook_url,
                                routes='alert = ["hook", "disc"]\n"*" = ["hook"]\n'))
    enqueue(cfg, notes(2))
    result = flush_notifications(cfg, force=True, dry_run=True)
    shown = [m.text for m in result.messages]
    assert sum("[to hook]" in t for t in shown) == 1 and sum("[to disc]" in t for t in shown) == 1
    assert hook.arrived == discord.arrived == 0 and queue_stats(cfg)["pending"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("which", ["hook", "disc"])
def test_a_disk_that_fills_while_a_send_is_in_flight_loses_nothing(tmp_path, hook, discord,
                                                                   which):
    """The worst moment for a full disk: the batch has gone out, its deletion cannot be
    written. notify-flush ends with one line; the next flush sends that batch again, under
    the same key, and the receiver keeps it once."""
    import resource

    cfg, fake = one(tmp_path, which, hook, discord, timeout=5.0)
    enqueue(cfg, notes(3))
    fake.script = ["hang:1.0"]  # processed at once, answered a second later
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", "--config",
                          str(tmp_path / "botopt.toml"), "--cache-dir", str(tmp_path / "c"),
                          "notify-flush", "--force"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_until(lambda: fake.arrived >= 1)
    resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (1, 1))  # the disk is full from now on
    out, err = p.communicate(timeout=60)
    assert "Traceback" not in err and p.returncode in (0, 1), err
    assert len([line for line in err.splitlines() if line.startswith("botopt: error")]) <= 1
    assert "Telegram" not in err  # the files and limits are named as this destination's
    flush_notifications(cfg, force=True)
    assert queue_stats(cfg)["pending"] == 0 and dead_letters(cfg) == []
    counts = seen(fake)
    assert len(counts) == 3 and max(counts.values()) <= 2
    assert all(len(k) == 1 for k in keys_by_id(fake).values())
    if which == "hook":
        assert len(hook.received) == 1  # the resend was dropped by its key


def test_an_absurd_retry_after_names_who_asked(caplog):
    """A webhook's 429 warned "Telegram asked to wait 1e+308 s"."""
    from botopt.core.delivery._http_dest import _retry_after
    from botopt.core.state._queue import RETRY_AFTER_MAX

    assert _retry_after("1e308", "webhook destination hook") == RETRY_AFTER_MAX
    assert "webhook destination hook asked to wait 1e308 s" in caplog.text
    assert "Telegram" not in caplog.text


def test_a_retry_after_past_the_float_range_is_the_longest_wait(caplog):
    """sweep K: Discord's JSON can hold an integer of 400 digits; float() of it raised
    OverflowError, an internal error that ended every flush before the other destinations
    were served. It is the longest wait (and a negative one the shortest)."""
    from botopt.core.delivery._http_dest import _retry_after
    from botopt.core.delivery._telegram import RETRY_AFTER_MIN, clamp_retry_after
    from botopt.core.state._queue import RETRY_AFTER_MAX

    assert _retry_after(10 ** 400, "discord destination disc") == RETRY_AFTER_MAX
    assert clamp_retry_after(-(10 ** 400)) == RETRY_AFTER_MIN
    assert "(401 digits)" in caplog.text and "0" * 100 not in caplog.text


def test_telegram_is_served_after_another_destination_in_one_flush(tmp_path, discord):
    """sweep K: Telegram's channel was made, on first use, from the client of the batch
    being sent; with a Discord batch due first, the Telegram batch went through Discord's
    client (an internal error on every flush, the Telegram queue stuck)."""
    tg = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    try:
        cfg = config(tmp_path, toml(None, discord.webhook_url,
                                    routes='alert = ["disc"]\n"*" = ["telegram"]\n'),
                     **{"telegram.token": TOKEN, "telegram.chat_id": "42",
                        "telegram.api_url": tg.url})
        enqueue(cfg, [{"type": "alert", "data": {"message": "to discord"}}])
        enqueue(cfg, [{"type": "daily", "data": {"text": "to telegram"}}])
        result = flush_notifications(cfg, force=True)
        assert result.error is None and result.notifications_sent == 2
        assert len(discord.received) == 1 and len(tg.received) == 1
    finally:
        tg.stop()


def test_what_a_destination_says_reaches_the_terminal_as_plain_text():
    """sweep K: the same for a webhook's or Discord's refusal."""
    import requests

    from botopt.core.delivery._http_dest import _said

    resp = requests.models.Response()
    resp.reason = "Bad\x1b[0m Request"
    shown = _said({"message": "no\x07 \u202eway\x1b[2J"}, resp)
    assert shown == " (no? ?way?[2J)" and all(ch.isprintable() for ch in shown)
    assert _said(None, resp) == " (Bad?[0m Request)"
