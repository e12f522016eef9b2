"""What a person at a terminal sees: the signals table fits the window (a real pty), pass and
block are coloured there, help answers -h, completion can be installed."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from typer.testing import CliRunner

from botopt.cli._cmd_signals import short_reason
from botopt.cli.main import app

ALL = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT"
AS_OF = "2026-09-22T12:00Z"  # one pass, blocks with long reasons (correlation, two reasons)
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
runner = CliRunner()


def on_terminal(cols: int, *args: str) -> str:
    """stdout of botopt run on a pseudo-terminal ``cols`` wide (stderr kept apart)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    proc = subprocess.Popen([sys.executable, "-m", "botopt.cli.main", *args], stdout=slave,
                            stdin=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return out.decode().replace("\r\n", "\n")


@pytest.mark.slow
@pytest.mark.parametrize("cols", [80, 60, 50])
def test_signals_table_fits_the_terminal_without_cutting(tmp_path, cols):
    raw = on_terminal(cols, "--cache-dir", str(tmp_path), "signals", "-s", ALL, "--as-of",
                      AS_OF)
    text = ANSI.sub("", raw)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= cols, text
    assert "…" not in text
    full = json.loads(runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "-s", ALL,
                                          "--as-of", AS_OF, "--json"]).stdout)
    cells = re.sub(r"\s+", " ", text)
    for s in full["signals"]:
        assert s["symbol"] in text and s["regime"] in text
        for reason in s["gate"]["reasons"]:  # every reason, shortened, none cut
            assert short_reason(reason) in cells or all(
                w in cells for w in short_reason(reason).split()), (reason, text)
    if cols >= 66:
        assert "close" in text
    assert "\x1b[1;32mpass" in raw and "\x1b[31m" in raw  # pass green, block red


def test_plain_output_keeps_the_full_reasons(tmp_path):
    res = runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "-s", ALL, "--as-of",
                              AS_OF])
    assert res.exit_code == 0
    assert "block: correlated 0.81 with active BTCUSDT short" in res.stdout
    assert "\x1b[" not in res.stdout


def test_short_reasons():
    assert short_reason("p_dir 0.48 < 0.50") == "p 0.48<0.50"
    assert short_reason("stale data: last candle 3 h 5 min ago") == "stale 3 h 5 min"
    assert short_reason("warming up: 31 of 165 candles") == "warm-up 31/165"
    assert short_reason("correlated 0.81 with active BTCUSDT short") == "corr 0.81 BTCUSDT"
    assert short_reason("no directional signal") == "no signal"
    assert short_reason("regime HIGH_VOL") == "HIGH_VOL"


def test_dash_h_and_completion():
    for args in (["-h"], ["signals", "-h"], ["notify", "list", "-h"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and "Usage:" in res.stdout, args
    assert "--install-completion" in runner.invoke(app, ["-h"]).stdout


def test_smaller_items(tmp_path):
    from botopt.core.delivery._notify_format import FORMATTERS

    base = ["--cache-dir", str(tmp_path)]
    # config show names the cache directory in use
    shown = json.loads(runner.invoke(app, [*base, "config", "show", "--json"]).stdout)
    assert shown["settings"]["cache.dir"] == {"value": str(tmp_path), "source": "flag"}
    default = json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)
    assert default["settings"]["cache.dir"]["value"].endswith("botopt")
    # --symbols '' is an error, not the default symbols
    for cmd in (["signals"], ["correlations"], ["fetch", "--data-dir", str(tmp_path / "d")],
                ["model", "train"]):
        res = runner.invoke(app, [*base, *cmd, "--symbols", ""])
        assert res.exit_code == 2 and "no symbols given" in res.stderr, (cmd, res.stderr)
    # notify list: ISO times in JSON, "…" where the table cuts data
    long = json.dumps({"message": "x" * 100})
    assert runner.invoke(app, [*base, "notify", "add", "-t", "alert", "-d", long]).exit_code == 0
    listed = json.loads(runner.invoke(app, [*base, "notify", "list", "--json"]).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                        listed["notifications"][0]["created"])
    table = runner.invoke(app, [*base, "notify", "list"]).stdout
    assert '{"message": "' + "x" * 46 + "…" in table
    # status: the last error in the table, ISO times in JSON
    from botopt.core.data._candles import _sample_dir

    # A live run (local data; sample runs are experiments the monitor never sees).
    assert runner.invoke(app, [*base, "signals", "--data-dir", str(_sample_dir()), "-s",
                               "NOPEUSDT"]).exit_code == 2
    status = runner.invoke(app, [*base, "status"]).stdout
    assert re.search(r"last error\s+UnknownSymbolError: symbol NOPEUSDT not found", status)
    data = json.loads(runner.invoke(app, [*base, "status", "--json"]).stdout)
    assert data["last_run"]["finished_at"].endswith("Z")
    # no double space without a side
    assert FORMATTERS["trade_exited"]({"symbol": "ETHUSDT"}) == "💱 <b>Exited ETHUSDT</b>"


def test_notify_failed_alert_reads_once(tmp_path):
    from botopt.core.state._events import emit

    emit("notify_failed", _root=tmp_path, error="Telegram answered 404: Not Found")
    base = ["--cache-dir", str(tmp_path)]
    assert runner.invoke(app, [*base, "monitor", "--once"]).exit_code == 0
    queued = json.loads(runner.invoke(app, [*base, "notify", "list", "--json"]).stdout)
    messages = [n["data"]["message"] for n in queued["notifications"]]
    assert "notify-flush failed: Telegram answered 404: Not Found" in messages
    assert not any("failed failed" in m for m in messages)


def test_data_in_a_table_is_text_never_markup_or_terminal_codes(tmp_path):
    """A "[/x]" in a notification's or an event's data ended `notify list`, `history` and
    `status` on a terminal with rich's MarkupError; ESC sequences and line breaks in event
    data reached the terminal (and cron's mail) raw."""
    from botopt.core.state._events import emit

    base = ["--cache-dir", str(tmp_path)]
    data = json.dumps({"message": "[/x] [bold]loud[/bold]"})
    assert runner.invoke(app, [*base, "notify", "add", "-t", "alert", "-d", data]).exit_code == 0
    emit("run_failed", _root=tmp_path, command="my\nbot\x1b[31m[/x]",
         error="l1\nl2\x1b]0;title\x07")
    listed = ANSI.sub("", on_terminal(200, *base, "notify", "list"))  # exit 0 checked there
    assert "[/x] [bold]loud[/bold]" in listed
    for command in ("history", "status"):
        raw = on_terminal(200, *base, command)
        shown = ANSI.sub("", raw)
        assert "my\\nbot\\x1b[31m[/x]" in shown and "l1\\nl2\\x1b]0;title\\x07" in shown
        assert "\x1b]0;" not in raw and "\x07" not in raw
        plain = runner.invoke(app, [*base, command])
        assert plain.exit_code == 0 and "\x1b" not in plain.stdout
