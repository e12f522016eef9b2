"""cache-stats explains itself: runs answered whole from the cache beside the stage caches
(consulted only when a run is computed), --since for a period, --reset for the counters."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config
from botopt.core.state._events import emit, run_events

runner = CliRunner()


def test_runs_answered_whole_are_counted_for_cron_and_by_hand(tmp_path):
    root = tmp_path / "c"
    for cached in (True, True, True, False):  # cron: 3 of 4 answered whole
        with run_events("signals", root=root, interactive=False) as counts:
            counts["cached"] = cached
    with run_events("signals", root=root, interactive=True) as counts:
        counts["cached"] = False
    with run_events("fetch", root=root, interactive=False):
        pass  # not a signals run
    emit("run_finished", _root=root, command="signals", cached=True)  # a line of its own
    res = runner.invoke(app, ["--cache-dir", str(root), "cache-stats", "--json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)["runs"]
    assert runs["cron"] == {"runs": 5, "from_cache": 4, "rate": 0.8}
    assert runs["by_hand"] == {"runs": 1, "from_cache": 0, "rate": 0.0}
    plain = runner.invoke(app, ["--cache-dir", str(root), "cache-stats"]).stdout
    assert "answered whole from the cache 4 (80.0%)" in plain
    assert "consulted only by the runs the whole-run cache did not answer" in plain
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    res = runner.invoke(app, ["--cache-dir", str(root), "cache-stats", "--since", later,
                              "--json"])
    assert json.loads(res.stdout)["runs"]["cron"]["runs"] == 0  # nothing in that period
    bad = runner.invoke(app, ["--cache-dir", str(root), "cache-stats", "--since", "soon"])
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_reset_zeroes_the_counters_and_keeps_the_entries(tmp_path):
    root = tmp_path / "c"
    args = ["--cache-dir", str(root), "signals", "--as-of", "2026-09-30T12:00"]
    for _ in range(2):
        assert runner.invoke(app, args).exit_code == 0
    before = json.loads(runner.invoke(app, ["--cache-dir", str(root), "cache-stats",
                                            "--json"]).stdout)["caches"]
    assert before["signals"]["hits"] == 1 and before["features"]["misses"] >= 1
    res = runner.invoke(app, ["--cache-dir", str(root), "cache-stats", "--reset", "--json"])
    assert res.exit_code == 0, res.output
    after = json.loads(res.stdout)["caches"]
    assert all(c["hits"] == 0 and c["misses"] == 0 for c in after.values())
    assert after["signals"]["entries"] == before["signals"]["entries"] >= 1
    assert runner.invoke(app, args).exit_code == 0  # the entry still answers
    again = json.loads(runner.invoke(app, ["--cache-dir", str(root), "cache-stats",
                                           "--json"]).stdout)["caches"]
    assert again["signals"]["hits"] == 1 and again["signals"]["misses"] == 0


def test_reset_is_refused_on_a_shared_server(tmp_path):
    from botopt.core import reset_cache_stats
    from botopt.core.errors import UsageError

    cfg = load_config(overrides={"state.url": "redis://127.0.0.1:1/0"})
    try:
        reset_cache_stats(tmp_path, config=cfg)
    except UsageError as exc:
        assert "this host's cache only" in str(exc)
    else:
        raise AssertionError("a shared server's counters were reset")


def test_cache_clear_on_a_full_disk_keeps_the_healthy_database(tmp_path):
    """`cache-clear --cache signals` on a full disk took the refused write for damage:
    it deleted the whole database (every cache's entries) and said it was unreadable
    (sweep E, F3). A refused write is now one line, exit 1, and the file stays whole."""
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cache = tmp_path / "c"
    base = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for t in ("2026-09-20T12:00:30Z", "2026-09-20T12:05:30Z"):
        subprocess.run([*base, "--quiet", "signals", "--symbols", "BTCUSDT,ETHUSDT",
                        "--as-of", t], check=True, env=env, capture_output=True)
    db = cache / "cache" / "entries" / "cache.db"
    before = db.read_bytes()

    def full() -> None:  # writes past 20 KiB fail, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, 20 * 1024))

    done = subprocess.run([*base, "cache-clear", "--cache", "signals"], env=env, text=True,
                          capture_output=True, preexec_fn=full)
    assert done.returncode == 1, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("botopt: error")]
    assert len(errors) == 1 and "cannot clear signals" in errors[0] and str(db) in errors[0]
    assert "removed" not in done.stderr and "internal error" not in done.stderr
    assert db.read_bytes() == before  # every cache's entries still there
