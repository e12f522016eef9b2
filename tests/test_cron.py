"""``botopt cron``: the printed crontab runs as cron runs it (``env -i``, no TTY, only the
crontab's own variables) and is silent when all goes well."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from botopt.cli.main import app

from .fakes.binance_server import FakeBinance, rows_from_frame
from .fakes.telegram_server import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
STEP = 300_000
TOKEN = "123456789:AAtesttokentesttokentesttokentest"
runner = CliRunner()


def live_rows(symbol: str, n: int = 1500) -> list:
    """Sample candles moved so that the last one closed just now (the fake uses the clock)."""
    rows = rows_from_frame(pl.read_ipc(ROOT / "sample_data" / f"{symbol}-5m.feather").head(n))
    last = int(time.time() * 1000) // STEP * STEP - STEP
    shift = last - rows[-1][0]
    return [(t + shift, *rest) for t, *rest in rows]


@pytest.fixture
def install(tmp_path):
    binance = FakeBinance({"BTCUSDT": live_rows("BTCUSDT"),
                           "ETHUSDT": live_rows("ETHUSDT")}).start()
    telegram = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    cfg = tmp_path / "botopt.toml"
    cfg.write_text(f"""[data]
source = "local"
data_dir = "{tmp_path / 'data'}"
symbols = ["BTC/USDT", "ETHUSDT"]
feeder = "botopt"

[binance]
api_url = "{binance.url}"

[telegram]
token = "{TOKEN}"
chat_id = "-1001"
batch_interval = 0.0
api_url = "{telegram.url}"
""")
    cfg.chmod(0o600)
    yield tmp_path, cfg, binance, telegram
    binance.stop()
    telegram.stop()


def parse(text: str) -> tuple[dict[str, str], list[str], list[str]]:
    """(variables, job commands, the first-fetch command) of a crontab as cron reads it."""
    env, jobs, first = {}, [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            if "run the first fetch once" in line:
                first = shlex.split(lines[i + 1].lstrip("# "))
            continue
        m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if m:
            assert "#" not in m.group(2), f"a comment would become part of {m.group(1)}"
            env[m.group(1)] = m.group(2)
        elif line.strip():
            jobs.append(line.split(None, 5)[5].replace("\\%", "%"))
    return env, jobs, first


def cron_run(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    """As cron does: a bare environment, /bin/sh -c, no terminal."""
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh",
                           "-c", command], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=180, start_new_session=True)


@pytest.mark.slow
def test_printed_crontab_runs_under_env_i_and_is_silent(install):
    tmp_path, cfg, binance, telegram = install
    logs = tmp_path / "logs"
    res = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--config", str(cfg),
                          "--cache-dir", str(tmp_path / "cache"), "cron", "--log-dir",
                          str(logs)], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert logs.is_dir()  # created by the command
    env, jobs, first = parse(res.stdout)
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"  # no venv on it: paths are absolute
    assert env["BOTOPT_CONFIG"] == str(cfg)
    assert first and Path(first[0]).is_absolute()
    assert [j.split()[:5] for j in jobs] == [["flock", "-n", "-E", "0",
                                              str(logs / n)] for n in
                                             ("fetch.lock", "signals.lock", "notify.lock",
                                              "monitor.lock")]
    # the first fetch, as the header says, then every job twice, as cron would
    done = cron_run(env, shlex.join(first))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "BTC_USDT-5m.feather").is_file()
    added = runner.invoke(app, ["--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
                                "notify", "add", "-t", "alert", "-d", '{"message": "hello"}'])
    assert added.exit_code == 0, added.stderr
    for _ in range(2):
        for job in jobs:
            run = cron_run(env, job)
            assert (run.returncode, run.stdout, run.stderr) == (0, "", ""), job
    assert {p.name: p.stat().st_size for p in logs.glob("*.log")} == {
        "fetch.log": 0, "signals.log": 0, "notify.log": 0, "monitor.log": 0}
    assert any("hello" in m["text"] for m in telegram.received)
    # a run skipped because the previous one still holds the lock exits 0, silently
    with open(logs / "signals.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        skipped = cron_run(env, jobs[1])
    assert (skipped.returncode, skipped.stdout, skipped.stderr) == (0, "", "")


def test_crontab_never_writes_the_token_and_flags_one_cron_cannot_see(install, monkeypatch):
    tmp_path, cfg, _, _ = install
    cfg.write_text(cfg.read_text().replace(f'token = "{TOKEN}"\n', ""))
    monkeypatch.setenv("BOTOPT_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("BOTOPT_GATES_MIN_STRENGTH", "0.4")
    res = runner.invoke(app, ["--config", str(cfg), "cron", "--log-dir", str(tmp_path / "l")])
    assert res.exit_code == 0, res.stderr
    assert TOKEN not in res.stdout
    assert "telegram.token comes from BOTOPT_TELEGRAM_TOKEN in your shell" in res.stdout
    env, _, _ = parse(res.stdout)
    assert env["BOTOPT_GATES_MIN_STRENGTH"] == "0.4"  # the shell's settings go with it
    unit = runner.invoke(app, ["--config", str(cfg), "cron", "--systemd"])
    exec_line, = [ln for ln in unit.stdout.splitlines() if ln.startswith("ExecStart=")]
    assert Path(exec_line.split("=", 1)[1].split()[0]).is_absolute()
    assert f"Environment=BOTOPT_CONFIG={cfg}" in unit.stdout


def test_sample_source_says_what_to_set(tmp_path):
    res = runner.invoke(app, ["cron", "--log-dir", str(tmp_path / "l")])
    assert res.exit_code == 0
    assert "data.source is 'sample'" in res.stdout and "fetch" not in res.stdout
    assert os.path.isdir(tmp_path / "l")


def _cron_jobs(*args: str, after: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    res = runner.invoke(app, [*args, "cron", *after])
    assert res.exit_code == 0, res.output
    return res.stdout, [line.split()[5:] and line for line in res.stdout.splitlines()
                        if line and not line.startswith("#") and "=" not in line.split()[0]]


def test_fetch_line_only_when_botopt_feeds(install, tmp_path):
    _, cfg, _, _ = install
    text, jobs = _cron_jobs("--config", str(cfg))
    assert sum(" fetch " in j for j in jobs) == 1  # data.feeder = "botopt"
    text, jobs = _cron_jobs("--config", str(cfg), after=("--no-fetch",))  # forced off
    assert not any(" fetch " in j for j in jobs) and len(jobs) == 3
    cfg.write_text(cfg.read_text().replace('feeder = "botopt"', 'feeder = "freqtrade"'))
    text, jobs = _cron_jobs("--config", str(cfg))
    assert not any(" fetch " in j for j in jobs)
    assert "data.feeder is 'freqtrade': no fetch line" in text


def test_a_freqtrade_config_means_freqtrade_feeds(tmp_path):
    ft = tmp_path / "config.json"
    ft.write_text('{"timeframe": "5m", "exchange": {"name": "binance", "pair_whitelist": '
                  '["ETH/BTC"]}}')
    text, jobs = _cron_jobs("--freqtrade-config", str(ft), "--cache-dir", str(tmp_path / "c"))
    assert not any(" fetch " in j for j in jobs) and len(jobs) == 3
    env, _, _ = parse(text)
    assert env["BOTOPT_DATA_FREQTRADE_CONFIG"] == str(ft)  # cron sees the same config


@pytest.mark.parametrize("args, env, culprit", [
    (["cron", "--log-dir", "LOGS\ngs"], {}, "--log-dir"),
    (["cron"], {"BOTOPT_CACHE_DIR": "CACHE\n8"}, "BOTOPT_CACHE_DIR"),
    (["cron", "--systemd"], {"BOTOPT_CACHE_DIR": "CACHE\r8"}, "BOTOPT_CACHE_DIR"),
    (["cron", "--metrics-file", "M\nx.prom"], {}, "--metrics-file"),
    (["cron"], {"BOTOPT_GATES_MIN_STRENGTH": "0.5\n* * * * * rm -rf ~"},
     "BOTOPT_GATES_MIN_STRENGTH"),
])
def test_a_line_break_in_a_value_is_refused_not_split_into_crontab_lines(
        tmp_path, monkeypatch, args, env, culprit):
    """A path with a line break split a crontab line: cron got half a command and a stray
    line to run (a variable could carry a whole job)."""
    def here(text: str) -> str:
        return text.replace("LOGS", str(tmp_path / "l")).replace(
            "CACHE", str(tmp_path / "c")).replace("M\n", str(tmp_path / "m") + "\n")

    for k, v in env.items():
        monkeypatch.setenv(k, here(v))
    if "BOTOPT_CACHE_DIR" not in env:
        monkeypatch.setenv("BOTOPT_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(app, [here(a) for a in args])
    assert result.exit_code == 2, result.stdout + result.stderr
    # (a number's variable is refused by the config first, which names it too)
    assert culprit in result.stderr and ("line break" in result.stderr
                                         or "expected a number" in result.stderr)
    assert result.stdout == "" and not (tmp_path / "l\ngs").exists()
