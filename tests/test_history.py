"""``botopt history``: passed signals, regime changes, flushes and failures from the event log
that real runs wrote."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app

from .fakes.telegram_server import FakeTelegram
from .test_cron import TOKEN

runner = CliRunner()
ALL = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT"


@pytest.mark.slow  # over 2 s: a day of real signals runs
def test_history_of_real_runs_filtered_by_type_and_since(tmp_path):
    tg = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    env = {"BOTOPT_TELEGRAM_TOKEN": TOKEN, "BOTOPT_TELEGRAM_CHAT_ID": "-1001",
           "BOTOPT_TELEGRAM_API_URL": tg.url}
    base = ["--cache-dir", str(tmp_path)]
    try:
        for t in ("2026-09-20T12:00Z", "2026-09-21T12:00Z", "2026-09-22T12:00Z"):
            # Replays of the sample data are experiments: --notify records them anyway.
            res = runner.invoke(app, [*base, "signals", "-s", ALL, "--as-of", t, "--json",
                                      "--notify"], env=env)
            assert res.exit_code == 0, res.stderr
        passed = [(s["symbol"], s["direction"]) for s in json.loads(res.stdout)["signals"]
                  if s["gate"]["passed"]]
        from botopt.core.data._candles import _sample_dir

        live = [*base, "signals", "--data-dir", str(_sample_dir()), "-s", "NOPEUSDT"]
        assert runner.invoke(app, live, env=env).exit_code == 2
        assert runner.invoke(app, [*base, "notify-flush", "--force"], env=env).exit_code == 0
    finally:
        tg.stop()
    out = json.loads(runner.invoke(app, [*base, "history", "--json"]).stdout)
    kinds = [e["type"] for e in out["events"]]
    assert {"signal", "regime", "flush", "failure"} <= set(kinds)
    signals = [(e["data"]["symbol"], e["data"]["direction"]) for e in out["events"]
               if e["type"] == "signal"]
    assert passed and set(passed) <= set(signals)
    failure, = [e for e in out["events"] if e["type"] == "failure"]
    assert "NOPEUSDT" in failure["summary"] and failure["summary"].startswith("signals: ")
    flush, = [e for e in out["events"] if e["type"] == "flush"]
    assert flush["data"]["messages"] >= 1
    only = json.loads(runner.invoke(app, [*base, "history", "-t", "signal,failure",
                                          "--json"]).stdout)
    assert {e["type"] for e in only["events"]} == {"signal", "failure"}
    # events older than --since are left out: age the whole log by two days
    log = tmp_path / "events" / "events.log"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({**e, "t": e["t"] - 2 * 86400}) + "\n" for e in lines))
    assert json.loads(runner.invoke(app, [*base, "history", "--json"]).stdout)["events"] == []
    week = json.loads(runner.invoke(app, [*base, "history", "--since", "3d", "--json"]).stdout)
    assert len(week["events"]) == len(out["events"])
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    assert len(json.loads(runner.invoke(app, [*base, "history", "--since", iso, "--json"])
                          .stdout)["events"]) == len(out["events"])
    log.rename(log.with_name("events.log.1"))  # rotated by the monitor: still history
    rotated = json.loads(runner.invoke(app, [*base, "history", "--since", "3d", "--json"]).stdout)
    assert rotated["events"] == week["events"]
    table = runner.invoke(app, [*base, "history", "--since", "3d"])
    assert table.exit_code == 0 and "failure  signals: UnknownSymbolError" in table.stdout


def test_history_bad_options_and_empty_log(tmp_path):
    base = ["--cache-dir", str(tmp_path)]
    bad = runner.invoke(app, [*base, "history", "--type", "trades"])
    assert bad.exit_code == 2 and "invalid --type 'trades'" in bad.stderr
    bad = runner.invoke(app, [*base, "history", "--since", "last week"])
    assert bad.exit_code == 2 and "invalid --since 'last week'" in bad.stderr
    empty = runner.invoke(app, [*base, "history"])
    assert empty.exit_code == 0 and empty.stdout.startswith("0 event(s)")


@pytest.mark.parametrize("command", [["history", "--json"], ["history"], ["cache-stats"]])
@pytest.mark.parametrize("since", ["99999999999999999999d", "9" * 5000 + "d"])
def test_a_since_past_any_calendar_is_a_usage_error(tmp_path, command, since):
    """An overflowing timestamp and an integer of 5,000 digits were internal errors."""
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), *command, "--since", since])
    assert result.exit_code == 2 and "invalid --since" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_longest_since_reads_everything(tmp_path):
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "history", "--json", "--since",
                                 "999999999w"])
    assert result.exit_code == 0 and json.loads(result.stdout)["since"].startswith("0001-")
