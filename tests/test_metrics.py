"""``botopt metrics``: the node_exporter textfile, read back by prometheus-client's own parser,
with every figure checked against what the real runs that produced it reported."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core.watch._metrics import Family, render

from .test_cron import (
    cron_run,
    install,  # noqa: F401  (the fixture: fake Binance + Telegram)
)
from .test_cron import parse as parse_crontab

runner = CliRunner()
# Prometheus' naming rule: the unit (plural) or _total at the end of every name.
UNITS = ("_seconds", "_total", "_ratio", "_bytes", "_notifications", "_errors")


def cli(cfg: Path, cache: Path, *args: str):
    return runner.invoke(app, ["--config", str(cfg), "--cache-dir", str(cache), *args])


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric family -> {sorted labels: value}, as Prometheus reads the file."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(figures, name, **labels):
    return figures[name][tuple(sorted(labels.items()))]


def write_metrics(cfg, cache, out):
    res = cli(cfg, cache, "metrics", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    return parse(out.read_text())


@pytest.mark.slow  # over 2 s: whole cron-like runs, then the textfile parsed
def test_metrics_file_parses_and_every_figure_matches_the_runs(install, tmp_path):  # noqa: F811
    tmp, cfg, _, telegram = install
    cache, out = tmp / "cache", tmp / "textfile" / "botopt.prom"
    out.parent.mkdir()
    assert cli(cfg, cache, "fetch").exit_code == 0
    sig = cli(cfg, cache, "signals", "--json")
    assert sig.exit_code == 0, sig.stderr
    signals = json.loads(sig.stdout)["signals"]
    assert cli(cfg, cache, "signals", "-s", "NOPEUSDT").exit_code == 2  # a failed run
    # Telegram: one 429, then a notification it refuses until it is a dead letter
    assert cli(cfg, cache, "notify", "add", "-t", "alert", "-d", '{"m": "poison"}'
               ).exit_code == 0
    telegram.refuse_containing = "poison"
    telegram.script = ["429:1"]
    for _ in range(4):
        cli(cfg, cache, "notify-flush", "--force")
    assert cli(cfg, cache, "notify", "add", "-t", "alert", "-d", '{"m": "later"}'
               ).exit_code == 0

    text_before = write_metrics(cfg, cache, out)
    f = text_before
    host = next(iter(f["botopt_runs_total"]))
    host = dict(host)["host"]
    assert one(f, "botopt_runs_total", host=host, command="signals", outcome="ok") == 1
    assert one(f, "botopt_runs_total", host=host, command="signals", outcome="failed") == 1
    assert one(f, "botopt_last_success_timestamp_seconds", host=host, command="signals") \
        < one(f, "botopt_last_failure_timestamp_seconds", host=host, command="signals") \
        <= one(f, "botopt_metrics_timestamp_seconds")
    assert 0 < one(f, "botopt_run_duration_seconds", host=host, command="signals") < 120
    assert one(f, "botopt_symbols_processed_total", host=host) == len(signals)
    passed = sum(1 for s in signals if s["gate"]["passed"])
    assert one(f, "botopt_signals_passed_total", host=host) == passed
    blocked = {dict(k)["gate"]: v for k, v in f.get("botopt_signals_blocked_total", {}).items()}
    n_blocked = len(signals) - passed
    assert (n_blocked == 0) == (not blocked) and sum(blocked.values()) >= n_blocked
    assert "other" not in blocked  # every reason has its gate's name
    # 429s as the fake Bot API counted its own answers; dead letters as `notify` lists them
    assert one(f, "botopt_rate_limited_total", destination="telegram") \
        == telegram.responses.count(429) == 1
    failed = json.loads(cli(cfg, cache, "notify", "list", "--failed", "--json").stdout)
    assert one(f, "botopt_dead_letter_notifications", destination="telegram") \
        == len(failed["dead_letters"]) == failed["total"] == 1
    assert one(f, "botopt_dead_lettered_total", destination="telegram") == 1
    assert one(f, "botopt_queue_depth_notifications", destination="telegram") == 1
    stats = json.loads(cli(cfg, cache, "cache-stats", "--json").stdout)["caches"]
    for name, s in stats.items():
        assert one(f, "botopt_cache_hit_ratio", cache=name) == pytest.approx(s["hit_rate"])
        assert one(f, "botopt_cache_misses_total", cache=name) == s["misses"]
    assert all(v == 0 for v in f["botopt_metrics_source_errors"].values())

    # the file as node_exporter wants it: readable by its user, no temporary left beside it
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["botopt.prom"]
    for fam in text_string_to_metric_families(out.read_text()):
        assert fam.name.endswith(UNITS) or fam.type == "counter", fam.name
        assert fam.documentation and fam.type in ("gauge", "counter")
    assert all(name.endswith(UNITS) for name in f)

    # run again: nothing counted twice; one more run counts once, across a log rotation
    assert write_metrics(cfg, cache, out)["botopt_runs_total"] == f["botopt_runs_total"]
    log = cache / "events" / "events.log"
    os.replace(log, log.with_name("events.log.1"))
    assert cli(cfg, cache, "signals").exit_code == 0
    g = write_metrics(cfg, cache, out)
    assert one(g, "botopt_runs_total", host=host, command="signals", outcome="ok") == 2
    assert one(g, "botopt_symbols_processed_total", host=host) == 2 * len(signals)
    assert one(g, "botopt_rate_limited_total", destination="telegram") == 1


def test_damaged_state_and_log_lines_never_stop_it(install, tmp_path):  # noqa: F811
    tmp, cfg, _, _ = install
    cache, out = tmp / "cache", tmp / "botopt.prom"
    assert cli(cfg, cache, "fetch").exit_code == 0
    assert cli(cfg, cache, "signals").exit_code == 0
    state = cache / "events" / "metrics_state.json"
    for damage in (b"\x00\xff not json", b"[1, 2]", b'{"version": 1, "through": NaN}',
                   json.dumps({"version": 1, "through": 0, "seen": {}, "runs": {
                       "h": {"signals": {"ok": -5}}}, "signals": {}, "delivery": {}}
                              ).encode()):
        state.write_bytes(damage)
        f = write_metrics(cfg, cache, out)
        runs = {dict(k)["outcome"]: v for k, v in f["botopt_runs_total"].items()}
        assert runs == {"ok": 1, "failed": 0}, damage  # counted afresh from the log
    # hostile lines in the log: skipped; a hostile host or command name: one escaped label
    with open(cache / "events" / "events.log", "ab") as fh:
        fh.write(b'garbage\n{"t": "x"}\n{"t": 1e400, "type": "run_finished"}\n[]\n')
        fh.write(json.dumps({"id": "a", "t": os.path.getmtime(state), "type": "run_finished",
                             "host": 'h"o\\st\nx', "data": {"command": "sig}nals",
                                                             "duration_s": float("inf"),
                                                             "symbols": -3}}).encode() + b"\n")
    f = write_metrics(cfg, cache, out)
    shown = 'h"o\\st?x'  # control characters become "?"; quotes and backslashes escaped
    odd = {k: v for k, v in f["botopt_runs_total"].items() if ("host", shown) in k}
    assert odd == {(("command", "sig}nals"), ("host", shown), ("outcome", "ok")): 1,
                   (("command", "sig}nals"), ("host", shown), ("outcome", "failed")): 0}


def test_output_path_is_checked_and_a_failed_write_is_one_line(install, tmp_path):  # noqa: F811
    tmp, cfg, _, _ = install
    cache = tmp / "cache"
    res = cli(cfg, cache, "metrics", "-o", str(tmp / "botopt.txt"))
    assert res.exit_code == 2 and "*.prom" in res.stderr
    res = cli(cfg, cache, "metrics", "-o", str(tmp / "nope" / "botopt.prom"))
    assert res.exit_code == 2 and "does not exist" in res.stderr
    locked = tmp / "ro"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        res = cli(cfg, cache, "metrics", "-o", str(locked / "botopt.prom"))
        assert res.exit_code == 1 and "cannot write" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    printed = cli(cfg, cache, "metrics")
    assert printed.exit_code == 0 and "botopt_metrics_timestamp_seconds" in printed.stdout
    parse(printed.stdout)


def test_unreachable_queue_server_is_reported_in_the_file_and_the_exit_code(tmp_path):
    # its own process, as cron runs it (redis-py is imported there, not in this one)
    from .test_shared_state import host

    out = tmp_path / "botopt.prom"
    res = host(tmp_path / "h", "redis://127.0.0.1:9", "metrics", "-o", str(out))
    assert res.returncode == 1 and "queue" in res.stderr
    assert [x for x in res.stderr.splitlines() if "metrics" in x] == [
        res.stderr.splitlines()[-1]], res.stderr  # one line says which source, at the end
    f = parse(out.read_text())
    # the queue and the cache statistics are every host's, on the server: both flagged; the
    # events this host reads are its own log's
    assert one(f, "botopt_metrics_source_errors", source="queue") == 1
    assert one(f, "botopt_metrics_source_errors", source="cache") == 1
    assert one(f, "botopt_metrics_source_errors", source="events") == 0


def test_cron_offers_the_line_and_it_runs_as_cron_runs_it(install):  # noqa: F811
    tmp, cfg, _, _ = install
    cache, logs = tmp / "cache", tmp / "logs"
    default = cli(cfg, cache, "cron", "--log-dir", str(logs))
    assert default.exit_code == 0
    commented = [x for x in default.stdout.splitlines() if " metrics -o " in x]
    assert len(commented) == 1 and commented[0].startswith("# * * * * * flock")
    assert cli(cfg, cache, "cron", "--log-dir", str(logs), "--metrics-file",
               str(tmp / "botopt.txt")).exit_code == 2
    out = tmp / "textfile" / "botopt.prom"
    out.parent.mkdir()
    res = cli(cfg, cache, "cron", "--log-dir", str(logs), "--metrics-file", str(out))
    env, jobs, _ = parse_crontab(res.stdout)
    job, = [j for j in jobs if " metrics " in j]
    run = cron_run(env, job)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert (logs / "metrics.log").read_text() == ""  # silent when all is well
    assert "botopt_metrics_timestamp_seconds" in parse(out.read_text())


_text = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(labels=st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True), _text,
                              max_size=3),
       value=st.floats(allow_nan=False) | st.integers(-2**60, 2**60).map(float),
       help_text=_text.map(str.strip))  # the parser trims a HELP text's ends
def test_render_round_trips_through_the_prometheus_parser(labels, value, help_text):
    fam = Family("botopt_x_seconds", "gauge", help_text)
    fam.add(value, **labels)
    parsed, = text_string_to_metric_families(render([fam]))
    sample, = parsed.samples
    assert sample.labels == labels
    assert sample.value == value
    assert parsed.documentation == help_text


_RUN = """
import sys
from botopt.core import Workspace, load_config, run_events
# the Workspace hands out the shared event sink, as a signals run's events take it
sink = Workspace.of(load_config()).events()
for i in range(int(sys.argv[1])):
    with run_events("signals", sink=sink) as counts:
        counts.update(symbols=3, passed=1, blocked={"min_strength": 2})
"""


@pytest.mark.slow
def test_several_hosts_each_report_every_hosts_runs_and_the_shared_queue(redis_server,
                                                                         tmp_path):
    import subprocess
    import sys

    from .test_shared_state import host, host_env

    homes = {h: tmp_path / h for h in ("host-a", "host-b")}
    for name, runs in (("host-a", 2), ("host-b", 3)):
        env = host_env(homes[name], redis_server.url, BOTOPT_STATE_HOST_ID=name)
        done = subprocess.run([sys.executable, "-c", _RUN, str(runs)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    added = host(homes["host-b"], redis_server.url, "notify", "add", "-t", "alert", "-d",
                 '{"m": "x"}', BOTOPT_STATE_HOST_ID="host-b")
    assert added.returncode == 0, added.stderr
    for name in homes:
        res = host(homes[name], redis_server.url, "metrics", BOTOPT_STATE_HOST_ID=name)
        assert res.returncode == 0, res.stderr
        f = parse(res.stdout)
        assert {dict(k)["host"]: v for k, v in f["botopt_runs_total"].items()
                if dict(k)["outcome"] == "ok"} == {"host-a": 2, "host-b": 3}
        assert one(f, "botopt_signals_blocked_total", host="host-b", gate="min_strength") == 6
        assert one(f, "botopt_queue_depth_notifications", destination="telegram") == 1
        assert all(v == 0 for v in f["botopt_metrics_source_errors"].values())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4000), seed=st.integers(0, 2**32), since=st.floats(-10, 1.1e6),
       pad=st.integers(0, 200))
def test_the_log_tail_holds_every_line_from_since_on(tmp_path_factory, n, seed, since, pad):
    """The bisection over a large log (lines in time order up to a minute's disorder, as
    concurrent writers leave them) never drops a line at or after ``since``."""
    import random

    from botopt.core.state._events import read_tail

    rnd = random.Random(seed)
    times = sorted(rnd.uniform(0, 1e6) for _ in range(n))
    lines = [json.dumps({"id": str(i), "t": t + rnd.uniform(-60, 60), "x": "p" * pad}).encode()
             for i, t in enumerate(times)]
    path = tmp_path_factory.mktemp("log") / "events.log"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    got = set(read_tail(path, since))
    assert {x for x in lines if json.loads(x)["t"] >= since} <= got
    # and it reads little more than that: the lines from the slack (600 s) and the disorder
    # (2 x 60 s) before since on, plus the bisection's last 64 KiB step
    needed = sum(len(x) + 1 for x in lines if json.loads(x)["t"] >= since - 720)
    assert sum(len(x) + 1 for x in got) <= needed + 65536 + 2 * max(map(len, lines)) + 2


def test_runs_after_the_clock_steps_back_are_counted_once():
    """The events were counted from a high-water mark that only moved forward: with the
    clock stepped back 3 hours (NTP, a restored VM), every run until the clock passed the
    mark again was skipped, so a failed run never reached ``botopt_runs_total`` and the
    alert on failures never fired (sweep G). The events are the log's lines, all of them
    handed to every count, as the log's tail is read with its overlap."""
    from botopt.core.watch._metrics import _fresh, advance

    h = 3600.0
    log: list[bytes] = []

    def run(at: float, ok: bool) -> None:
        kind = "run_finished" if ok else "run_failed"
        log.append(json.dumps({"id": f"e{len(log)}", "t": at, "type": kind,
                               "data": {"command": "signals"}}).encode())

    def counted(now: float) -> dict:
        nonlocal doc
        doc = advance(doc, list(log), now, "vm")
        return doc["runs"]["vm"]["signals"]

    doc = _fresh()
    day = 1_516_492_800.0  # 2018-01-21 00:00 UTC
    run(day + 20 * h, True)
    assert counted(day + 20 * h + 10)["ok"] == 1
    run(day + 23 * h, True)  # the clock 3 h ahead
    assert counted(day + 23 * h + 10)["ok"] == 2
    run(day + 21 * h, False)  # stepped back
    after = counted(day + 21 * h + 10)
    assert after["failed"] == 1 and after["last_failure"] == day + 21 * h
    assert after["last_success"] <= day + 21 * h + 10  # never ahead of the clock
    run(day + 22 * h, True)
    assert counted(day + 22 * h + 10)["ok"] == 3
    run(day + 24 * h, True)
    final = counted(day + 24 * h + 10)
    assert (final["ok"], final["failed"]) == (4, 1)  # each once
    assert counted(day + 24 * h + 20) == final
