"""Failures that only long, faulty use shows (issue 24): an answer that may or may not mean
"delivered", a damaged queue, a full or read-only disk, a closed pipe, hostile state files.

Everything runs against real components: the fake Bot API on 127.0.0.1 through real
``requests``, real ``botopt`` processes, real files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
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

from .fakes.telegram_server import FakeTelegram, VirtualClock
from .test_delivery import TOKEN, botopt, errors

runner = CliRunner()


def invoke(cache: Path, *args: str, url: str):
    """``botopt(...)`` in this process: the same settings, no interpreter start."""
    env = {"BOTOPT_TELEGRAM_TOKEN": TOKEN, "BOTOPT_TELEGRAM_CHAT_ID": "42",
           "BOTOPT_TELEGRAM_API_URL": url, "BOTOPT_TELEGRAM_MAX_RETRIES": "3",
           "BOTOPT_TELEGRAM_FLUSH_BUDGET": "50"}
    result = runner.invoke(app, ["--cache-dir", str(cache), *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (args, result.exception)
    return result


@pytest.fixture
def server():
    fake = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    yield fake
    fake.stop()


def cfg_for(cache: Path, url: str, **extra):
    return load_config(overrides={"cache.dir": str(cache), "telegram.token": TOKEN,
                                  "telegram.chat_id": "42", "telegram.api_url": url,
                                  "telegram.timeout": 1.0, **extra})


def wait_received(server, n: int, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while len(server.received) < n and time.monotonic() < end:
        time.sleep(0.05)


# -- delivery: an answer that does not say "delivered" ---------------------------------------

@pytest.mark.slow
def test_a_timed_out_send_is_not_retried_in_the_run_and_is_sent_at_most_twice(tmp_path,
                                                                              server):
    """Telegram answers OK, but only after our timeout: it delivered every time. The batch
    reaches the chat at most twice (the brief's one batch in flight), then waits in the
    dead letters for a person, whatever the next flushes do."""
    cfg = cfg_for(tmp_path / "c", server.url)
    enqueue(cfg, [{"type": "alert", "data": {"message": f"m{i}"}} for i in range(3)])
    server.always = "hang:1.5"
    first = flush_notifications(cfg, force=True)
    assert server.arrived == 1  # no retry storm within the run
    assert first.failure and "did not answer" in first.error
    assert "may have been delivered" in first.error
    assert queue_stats(cfg)["pending"] == 3
    for _ in range(4):
        flush_notifications(cfg, force=True)
    # Every flush has returned, and a request is counted as it arrives (before its answer):
    # no third delivery can still be on its way, so waiting out the hangs adds nothing.
    assert server.arrived == UNCONFIRMED_AFTER == 2
    wait_received(server, 2)
    assert len(server.received) == 2  # delivered twice, never more
    assert queue_stats(cfg)["pending"] == 0
    dead = dead_letters(cfg)
    assert len(dead) == 3 and all("may have been delivered" in d["reason"] for d in dead)
    types = [e["type"] for e in read_events(events_dir(tmp_path / "c"))[0]]
    assert types.count("notify_dead_letter") == 3  # the monitor alerts on each


@pytest.mark.slow
def test_a_timed_out_send_that_then_succeeds_is_delivered_and_forgotten(tmp_path, server):
    cfg = cfg_for(tmp_path / "c", server.url)
    enqueue(cfg, [{"type": "alert", "data": {"message": "once"}}])
    server.script = ["hang:1.5"]
    assert flush_notifications(cfg, force=True).notifications_sent == 0
    second = flush_notifications(cfg, force=True)
    assert second.notifications_sent == 1 and second.error is None
    wait_received(server, 2)
    assert len(server.received) == 2 and queue_stats(cfg)["pending"] == 0
    assert dead_letters(cfg) == []


@pytest.mark.parametrize("body", [
    "{}", "<html><body>Proxy says hello</body></html>", '{"ok": true}',
    '{"ok": "true", "result": {"message_id": 1}}', '{"ok": true, "result": []}',
    '{"ok": true, "result": {"message_id": "7"}}', "null", "[1, 2]", ""])
def test_a_200_that_is_not_the_bot_api_is_counted_backed_off_and_dead_lettered(
        tmp_path, server, body):
    cfg = cfg_for(tmp_path / "c", server.url)
    enqueue(cfg, [{"type": "alert", "data": {"message": "x"}}])
    server.always = f"body:{body}"
    # Telegram's 1 s gap between sends passes on a virtual clock, not the wall's
    vc = VirtualClock(time.time())
    first = flush_notifications(cfg, force=True, clock=vc.time, sleep=vc.sleep)
    assert server.arrived == 1  # backed off: not resent in the same run
    assert first.failure and "not a Bot API answer" in first.error
    assert "200: OK" not in first.error
    assert [p["attempts"] for p in pending_notifications(cfg)] == [1]
    for _ in range(3):
        flush_notifications(cfg, force=True, clock=vc.time, sleep=vc.sleep)
    assert server.arrived == UNCONFIRMED_AFTER
    [dead] = dead_letters(cfg)
    assert "not a Bot API answer" in dead["reason"] and queue_stats(cfg)["pending"] == 0


def test_notify_flush_says_what_a_200_without_telegram_means(tmp_path, server):
    cache = tmp_path / "c"
    server.always = "body:{}"
    assert botopt(cache, "notify", "add", "-t", "alert", "-d", "{}",
                  url=server.url).returncode == 0
    result = botopt(cache, "notify-flush", "--force", url=server.url)
    assert result.returncode == 1
    [line] = errors(result)
    assert "not a Bot API answer" in line and "200: OK" not in line
    assert "next try after" in line and TOKEN not in result.stderr


# -- a damaged notify/queue.db is kept aside and rebuilt -------------------------------------

def _truncated(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE queue (id TEXT)")
    con.executemany("INSERT INTO queue VALUES (?)", [(str(i) * 50,) for i in range(2000)])
    con.commit()
    con.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _wrong_schema(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE queue (note TEXT)")
    con.execute("INSERT INTO queue VALUES ('not ours')")
    con.commit()
    con.close()


def _view(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE VIEW queue AS SELECT 1 AS id")
    con.commit()
    con.close()


@pytest.mark.slow
@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(os.urandom(8192)),
    lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000),
    _truncated, _wrong_schema, _view])
def test_a_damaged_queue_is_kept_aside_and_notify_keeps_working(tmp_path, server, damage):
    cache = tmp_path / "c"
    (cache / "notify").mkdir(parents=True)
    db = cache / "notify" / "queue.db"
    damage(db)
    original = db.read_bytes()
    add = botopt(cache, "notify", "add", "-t", "alert", "-d", '{"message": "after"}',
                 url=server.url)
    assert add.returncode == 0, add.stderr
    assert "Traceback" not in add.stderr and "internal error" not in add.stderr
    warnings = [ln for ln in add.stderr.splitlines() if "damaged" in ln]
    assert len(warnings) == 1 and "kept as queue.db.corrupt-" in warnings[0]
    [aside] = (cache / "notify").glob("queue.db.corrupt-*[0-9a-f]")
    assert aside.read_bytes() == original  # nothing deleted: a person can still read it
    listed = botopt(cache, "notify", "list", "--json", url=server.url)
    assert listed.returncode == 0 and "damaged" not in listed.stderr  # one warning only
    assert botopt(cache, "notify-flush", "--force", url=server.url).returncode == 0
    assert [r["shown"] for r in server.received] and "after" in server.received[0]["shown"]


# -- disks and pipes ------------------------------------------------------------------------

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
COMMANDS = [("status",), ("monitor", "--once"), ("cache-clear",), ("cache-stats",),
            ("history",), ("signals",), ("signals", "--no-cache"), ("correlations",),
            ("notify", "list"), ("notify", "list", "--failed"),
            ("notify", "add", "-t", "alert", "-d", '{"message": "disk"}'),
            ("notify-flush", "--force"), ("config", "show")]


def _prepared(tmp_path: Path, server) -> Path:
    cache = tmp_path / "c"
    for args in (("signals",), ("monitor", "--once"),
                 ("notify", "add", "-t", "alert", "-d", '{"message": "before"}')):
        assert botopt(cache, *args, url=server.url).returncode == 0
    return cache


def _under(mode: str, cache: Path, args: tuple[str, ...], url: str):
    """Run botopt with ``cache`` read-only or on a full disk. As root (CI containers): a
    private mount namespace (a read-only bind mount, or a tiny tmpfs filled up), so nothing
    outside this process sees it; otherwise file modes and RLIMIT_FSIZE."""
    import shutil
    import subprocess
    import sys

    if ROOT_USER and shutil.which("unshare"):
        if mode == "ro":
            setup = f'mount --bind -o ro "{cache}" "{cache}"'
        else:
            setup = (f'cp -a "{cache}" "{cache}.copy" && mount -t tmpfs -o size=2m tmpfs '
                     f'"{cache}" && cp -a "{cache}.copy/." "{cache}" && '
                     f'(dd if=/dev/zero of="{cache}/filler" bs=4k 2>/dev/null || true)')
        probe = subprocess.run(["unshare", "-m", "sh", "-c", setup], capture_output=True)
        if probe.returncode == 0:
            shutil.rmtree(f"{cache}.copy", ignore_errors=True)
            return botopt(cache, "--cache-dir", str(cache), *args, url=url,
                          wrap=["unshare", "-m", "sh", "-c", setup + ' && exec "$@"', "sh"])
    if mode == "ro":
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        try:
            return botopt(cache, *args, url=url)
        finally:
            for p in [cache, *cache.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)
    del sys
    return botopt(cache, *args, url=url, fsize=1)


def _clean(result) -> None:
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 1:
        assert len(errors(result)) == 1, result.stderr


@pytest.mark.slow  # whole processes
def test_a_read_only_cache_shows_its_figures_and_names_what_cannot_be_done(tmp_path, server):
    """A read-only cache (a mounted backup, another user's cache), written by runs that
    closed cleanly: ``cache-stats`` showed every figure as zero with a warning (SQLite could
    not make its shared-memory file there), ``status`` ended in "cannot create cache
    directory .../events", and ``cache-clear`` blamed an old ``stats.db`` that was never
    there (sweep E, F4)."""
    cache = tmp_path / "c"
    for _ in range(2):  # a miss, then a hit
        assert botopt(cache, "--quiet", "signals", url=server.url).returncode == 0
    db = cache / "cache" / "entries" / "cache.db"
    con = sqlite3.connect(db)  # the last writer closing: the log merged, its files gone
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    want = json.loads(botopt(cache, "cache-stats", "--json", url=server.url).stdout)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    assert want["caches"]["signals"]["hits"] == 1
    shown = _under("ro", cache, ("cache-stats", "--json"), server.url)
    assert shown.returncode == 0 and "unreadable" not in shown.stderr, shown.stderr
    assert json.loads(shown.stdout)["caches"] == want["caches"]
    status = _under("ro", cache, ("status",), server.url)
    assert status.returncode == 0 and "cannot create" not in status.stderr, status.stderr
    cleared = _under("ro", cache, ("cache-clear",), server.url)
    assert cleared.returncode == 1 and len(errors(cleared)) == 1, cleared.stderr
    assert str(db) in errors(cleared)[0] and "stats.db" not in cleared.stderr


@pytest.mark.slow  # 5-10 s each: every command as a whole process
@pytest.mark.parametrize("mode", ["ro", "full"])
def test_every_command_under_a_read_only_or_full_disk_ends_cleanly(tmp_path, server, mode):
    cache = _prepared(tmp_path, server)
    before = queue_stats(cfg_for(cache, server.url))["pending"]
    for args in COMMANDS:
        result = _under(mode, cache, args, server.url)
        _clean(result)
        if args[0] == "monitor" and result.returncode == 1:
            assert "monitor" in errors(result)[0]  # it ran, and says what is wrong
    # The disk is back: nothing was lost, and everything works again.
    assert queue_stats(cfg_for(cache, server.url))["pending"] >= before
    assert botopt(cache, "monitor", "--once", url=server.url).returncode == 0
    assert botopt(cache, "notify-flush", "--force", url=server.url).returncode == 0
    assert any("before" in r["shown"] for r in server.received)


def test_a_monitor_on_a_read_only_disk_still_runs_its_checks(tmp_path, server):
    cache = _prepared(tmp_path, server)
    result = _under("ro", cache, ("monitor", "--once", "--json"), server.url)
    _clean(result)
    if result.returncode == 1:
        assert "alerts are kept" in errors(result)[0]
        assert json.loads(result.stdout)["disk_problem"]


@pytest.mark.parametrize("args", COMMANDS)
def test_a_cache_dir_that_is_a_regular_file_is_a_config_error(tmp_path, server, args):
    """Every command through the CLI in this process (the error handling is the same; the
    read-only and full-disk suite above runs them as processes)."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    result = invoke(afile, *args, url=server.url)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if args[0] == "config":
        assert result.exit_code in (0, 2)  # reading nothing is no error
        return
    assert result.exit_code == 2, result.stderr
    [line] = errors(result)
    assert "not a directory" in line and "afile" in line
    assert afile.read_text() == "not a directory"


@pytest.mark.slow
@pytest.mark.parametrize("args", [("cache-stats",), ("status",), ("history",),
                                  ("signals", "--json"), ("notify", "list"),
                                  ("config", "show"), ("--help",)])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, server, args):
    import subprocess
    import sys

    cache = tmp_path / "c"
    assert invoke(cache, "signals", url=server.url).exit_code == 0  # state to show
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                             str(cache), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader went away before reading a byte (`| head -0`)
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err and "internal error" not in err
    assert "Exception ignored" not in err
    # 141: as cat or yes end when their reader is gone; click itself renders --help and
    # ends a broken pipe there with 1, quietly.
    assert code in ((0, 1) if args == ("--help",) else (0, 141))


# -- hostile state ---------------------------------------------------------------------------

GOOD = {"id": "0" * 32, "t": 1_796_479_800.0, "type": "run_finished", "pid": 1,
        "data": {"command": "signals", "duration_s": 1.0}}
HOSTILE = {
    "t 1e300": '{"id":"a","t":1e300,"type":"run_failed","data":{"command":"signals","error":"x"}}',
    "t -1e300": '{"id":"a","t":-1e300,"type":"run_failed","data":{"command":"signals"}}',
    "t NaN": '{"id":"a","t":NaN,"type":"run_failed","data":{"command":"signals"}}',
    "t Infinity": '{"id":"a","t":Infinity,"type":"run_finished","data":{"command":"x"}}',
    "t huge int": '{"id":"a","t":' + "9" * 40 + ',"type":"run_failed","data":{}}',
    "t year 5138": '{"id":"a","t":1e11,"type":"run_finished","data":{"command":"signals"}}',
    "t str": '{"id":"a","t":"yesterday","type":"run_failed","data":{}}',
    "t bool": '{"id":"a","t":true,"type":"run_failed","data":{}}',
    "data str": '{"id":"a","t":1796479900,"type":"run_failed","data":"oops"}',
    "data list": '{"id":"a","t":1796479900,"type":"run_failed","data":[1]}',
    "command dict": '{"id":"a","t":1796479900,"type":"run_failed","data":{"command":{"x":1}}}',
    "error list": '{"id":"a","t":1796479900,"type":"run_failed","data":{"error":["a"]}}',
    "duration str": '{"id":"a","t":1796479900,"type":"run_finished","data":{"duration_s":"s"}}',
    "duration 1e308": '{"id":"a","t":1796479900,"type":"run_finished",'
                      '"data":{"duration_s":1e308}}',
    "type int": '{"id":"a","t":1796479900,"type":5,"data":{}}',
    "unknown type": '{"id":"a","t":1796479900,"type":"weird_thing","data":{"command":"z"}}',
    "top-level list": "[1, 2, 3]",
    "garbage": "\x00\xff not json",
    "deep": "[" * 100_000,
}


VIEWS = (("history",), ("history", "--json"), ("status",), ("status", "--json"),
         ("monitor", "--once"))


def check_view(args: tuple[str, ...], code: int, out: str, err: str) -> None:
    assert code == 0, (args, err)
    assert "Traceback" not in err and "internal error" not in err
    assert "1e+300" not in out and "5138" not in out and "FAILED" not in out, out
    assert "nan" not in out.lower().replace("nanos", ""), out
    assert "weird_thing" not in out and "None" not in out, out
    if args == ("status", "--json"):
        last = json.loads(out)["last_run"]
        assert last["command"] == "signals" and last["ok"] is True


def events_log(cache: Path, *lines: str) -> None:
    (cache / "events").mkdir(parents=True)
    (cache / "events" / "events.log").write_text(
        "\n".join([json.dumps(GOOD), *lines]) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("line", list(HOSTILE.values()), ids=list(HOSTILE))
def test_absurd_events_are_skipped_by_history_status_and_the_monitor(tmp_path, server, line):
    """Each hostile line alone, through the CLI in this process (every view, the exit code,
    the output); the whole processes are run once, on all of them together, below."""
    cache = tmp_path / "c"
    events_log(cache, line)
    for args in VIEWS:
        result = invoke(cache, *args, url=server.url)
        check_view(args, result.exit_code, result.stdout, result.stderr)
    assert not alerts_about(cache, "FAILED")


@pytest.mark.slow
def test_every_absurd_event_at_once_is_skipped_by_whole_processes(tmp_path, server):
    cache = tmp_path / "c"
    events_log(cache, *HOSTILE.values())
    for args in VIEWS:
        result = botopt(cache, *args, url=server.url)
        check_view(args, result.returncode, result.stdout, result.stderr)
    assert not alerts_about(cache, "FAILED")


def alerts_about(cache: Path, word: str) -> list[str]:
    cfg = load_config(overrides={"cache.dir": str(cache)})
    return [str(n["data"]) for n in pending_notifications(cfg) if word in str(n["data"])]


def test_a_failure_without_a_command_is_not_blamed_on_notify_flush(tmp_path, server):
    cache = tmp_path / "c"
    (cache / "events").mkdir(parents=True)
    (cache / "events" / "events.log").write_text(json.dumps(
        {**GOOD, "type": "run_failed", "data": {"error": "boom"}}) + "\n")
    hist = botopt(cache, "history", "--since", "3000d", url=server.url)
    assert "boom" in hist.stdout and "notify-flush" not in hist.stdout
    status = botopt(cache, "status", url=server.url)
    assert "None" not in status.stdout and "a run FAILED" in status.stdout


@pytest.mark.parametrize("target", ["posixpath:basename", "codecs:lookup", "builtins:len",
                                    "zipimport:zipimporter"])
def test_a_plugin_without_a_source_file_fails_the_same_with_and_without_the_cache(
        tmp_path, server, target):
    """Frozen and built-in modules have no source to fingerprint: the cache key falls back
    to the Python version, and the run fails in the model, as with --no-cache. (Through the
    CLI in this process: the plug-in is imported by name either way.)"""
    lines = []
    for extra in ([], ["--no-cache"], []):
        result = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals", *extra],
                               env={"BOTOPT_MODEL_PREDICT": target})
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("botopt: error:")]
        lines.append(line)
    assert lines[0] == lines[1] == lines[2] and f"model {target} failed" in lines[0]


# -- the soak, short ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_short_soak_loses_nothing_and_sends_nothing_thrice():
    """45 simulated cron minutes under random faults (the longest that fits about 3 minutes
    of CI on 2 shared cores, not a whole day; docs/reliability.md has the long run)."""
    from botopt.benchmarks import soak

    if not soak.SHARED.is_dir():
        pytest.skip(f"the real pairs are not in {soak.SHARED}")
    s = soak.simulate(45 / 1440, seed=11)
    assert s["queued"] >= 40 and s["lost"] == 0, s
    assert s["internal_errors"] == [], s
    assert s["delivered_3x_or_more"] == 0 and s["delivered_twice"] <= s["dup_allowance"], s
    assert s["stuck"] == 0 and s["cache_diffs"] == 0, s
    assert sum(v for k, v in s["faults"].items() if k != "dead letters retried at the end")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("args", [("cache-stats",), ("cache-stats", "--json"),
                                  ("config", "show")])
def test_output_onto_a_full_disk_names_standard_output(tmp_path, args):
    """``botopt cache-stats > /dev/full``: one line naming standard output (it said "cannot
    use a file: the disk is full"), exit 1, nothing else."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                               str(tmp_path / "c"), *args], stdout=full,
                              stderr=subprocess.PIPE, env=env, timeout=60)
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1, err
    # (a notice may come first: no configuration file, the bundled sample data)
    assert err[-1] == "botopt: error: cannot use standard output: the disk is full", err
    assert not [line for line in err if "rror" in line or "Trace" in line][:-1], err


@pytest.mark.parametrize("limit_kib", [8])
def test_a_signal_not_queued_on_a_full_disk_is_queued_by_the_next_run(tmp_path, shared_data,
                                                                      limit_kib):
    """On a full disk a live run recorded its passed signals' cooldowns (a small file that
    fitted) but could not queue their notifications: every later run on the candle took
    them for notified, and they were lost for good (sweep E, F2). What could not be queued
    is now taken back, so the next run on the candle queues exactly what a run with room
    would have (the reference)."""
    import resource
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "BOTOPT_DATA_SOURCE": "local",
           "BOTOPT_DATA_DATA_DIR": str(shared_data / "candles" / "5m")}

    def botopt(cache: Path, *args: str, fsize: int | None = None) -> str:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        done = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--cache-dir",
                               str(cache), *args], env=env, text=True, capture_output=True,
                              preexec_fn=limit if fsize else None)
        assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr
        return done.stdout

    def run(cache: Path, at: str, fsize: int | None = None) -> str:
        return botopt(cache, "--quiet", "signals", "--symbols", "all", "--as-of", at,
                      "--notify", fsize=fsize)

    def queued(cache: Path) -> list[tuple[str, str]]:
        rows = json.loads(botopt(cache, "notify", "list", "--json"))["notifications"]
        return sorted((r["type"], json.dumps(r["data"], sort_keys=True)) for r in rows)

    ref, full = tmp_path / "ref", tmp_path / "full"
    for cache in (ref, full):
        run(cache, "2018-01-25T12:10:30Z")
    run(ref, "2018-01-25T12:15:30Z")
    run(full, "2018-01-25T12:15:30Z", fsize=limit_kib * 1024)  # the disk full
    run(full, "2018-01-25T12:15:30Z")  # room again, the same candle
    want = queued(ref)
    assert any(kind == "signal" for kind, _ in want)  # the candle passes signals
    assert queued(full) == want
