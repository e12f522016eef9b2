"""Issue 27's done-when: a freqtrade user's first week, driven in a clean environment (the
installed package, an empty temp HOME, cron's bare ``env -i``): ``--freqtrade-config`` with
a config in freqtrade's own format, ``doctor``, the crontab from ``botopt cron --no-fetch``,
a failing feeder noticed by ``status`` and the monitor, and a Telegram message whose
numbers are rounded (fake Bot API on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from .fakes.telegram_server import FakeTelegram
from .test_cron import TOKEN, cron_run, live_rows, parse

# freqtrade's tests/testdata/testconfigs/main_test_config.json, trimmed to what a user's has,
# with its comments and trailing commas, and the pairs botopt's sample can make live.
FT_CONFIG = """{
    // freqtrade's config, as the user already has it
    "max_open_trades": 3,
    "stake_currency": "USDT",
    "timeframe": "5m",
    "dry_run": true,
    "exchange": {
        "name": "binance",
        "key": "your_exchange_key",
        "secret": "your_exchange_secret",
        "ccxt_config": {},
        "pair_whitelist": ["BTC/USDT", "ETH/USDT",],
        "pair_blacklist": ["DOGE/BTC"]
    },
    "pairlists": [{"method": "StaticPairList"}],
    "telegram": {"enabled": false, "token": "your_telegram_token", "chat_id": "x"},
    "user_data_dir": "%s",
}
"""


def botopt(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed botopt, as a new user in an empty HOME runs it (no BOTOPT_* set)."""
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "botopt.cli.main", *args], env=env,
                          cwd=home, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


def bot_of(job: str) -> list[str]:
    """The botopt command of a crontab job: between flock's lock file and --quiet."""
    words = shlex.split(job.split(" >>")[0])
    return words[5:words.index("--quiet")]


@pytest.mark.slow
def test_a_freqtrade_users_first_week(tmp_path):
    home = tmp_path / "home"
    data = home / "ft" / "user_data" / "data" / "binance"
    data.mkdir(parents=True)
    for sym, pair in (("BTCUSDT", "BTC_USDT"), ("ETHUSDT", "ETH_USDT")):
        rows = live_rows(sym)  # freqtrade's download-data just ran
        pl.DataFrame({"date": [r[0] for r in rows], **{c: [float(r[i]) for r in rows]
                      for i, c in enumerate(("open", "high", "low", "close", "volume"), 1)}}
                     ).with_columns(pl.from_epoch("date", time_unit="ms").dt.replace_time_zone(
                         "UTC")).write_ipc(data / f"{pair}-5m.feather")
    ft = home / "ft" / "user_data" / "config.json"
    ft.write_text(FT_CONFIG % (home / "ft" / "user_data"))
    telegram = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    try:
        cfg = home / "botopt.toml"
        cfg.write_text(f'[data]\nfreqtrade_config = "ft/user_data/config.json"\n\n'
                       f'[telegram]\ntoken = "{TOKEN}"\nchat_id = "-1001"\n'
                       f'batch_interval = 0.0\napi_url = "{telegram.url}"\n')
        cfg.chmod(0o600)
        base = ["--config", str(cfg)]

        shown = botopt(home, *base, "config", "show", "--json")
        assert shown.returncode == 0, shown.stderr
        doctor = botopt(home, *base, "doctor", "--json")
        checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]} \
            if doctor.stdout.lstrip().startswith("{") else \
            {c["check"]: c for c in json.loads(doctor.stdout)}
        for name in ("config", "data", "cache", "telegram", "model"):
            assert checks[name]["ok"], checks[name]
        assert "BTC/USDT" in checks["data"]["message"] or "2 symbol" in checks["data"]["message"]

        printed = botopt(home, *base, "cron", "--no-fetch", "--log-dir", str(home / "logs"))
        assert printed.returncode == 0, printed.stderr
        env, jobs, first = parse(printed.stdout)
        assert not first and not any(" fetch" in j for j in jobs) and len(jobs) == 3
        assert TOKEN not in printed.stdout  # the token stays in the 0600 botopt.toml
        for _ in range(2):
            for job in jobs:
                run = cron_run(env, job)
                assert (run.returncode, run.stdout, run.stderr) == (0, "", ""), job
        assert all(p.stat().st_size == 0 for p in (home / "logs").glob("*.log"))

        # a message people read, delivered by the crontab's own notify line under env -i
        item = {"symbol": "XLM/BTC", "direction": "short", "close": 4.3440000000000004e-05,
                "engine": "momentum", "strength": 0.3154936457164521,
                "p_dir": 0.504325633768604, "candle_time": "2026-12-05T12:05:00Z"}
        added = botopt(home, *base, "notify", "add", "-t", "signal", "-d", json.dumps(item))
        assert added.returncode == 0, added.stderr
        notify_job = next(j for j in jobs if "notify-flush" in j)
        assert cron_run(env, notify_job).returncode == 0
        texts = [m["text"] for m in telegram.received]
        assert any("@ 0.00004344 (momentum, strength 0.32, p 0.50)" in t
                   and "candle 12:05 UTC" in t for t in texts), texts

        # a failing feeder: botopt feeding from an exchange it cannot reach, from cron
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        fetch = cron_run({**env, "BOTOPT_DATA_FEEDER": "botopt",
                          "BOTOPT_BINANCE_API_URL": f"http://127.0.0.1:{dead}",
                          "BOTOPT_BINANCE_MAX_RETRIES": "0"},
                         shlex.join([*bot_of(jobs[0]), "--quiet", "fetch", "--data-dir",
                                     str(home / "feed")]))
        assert fetch.returncode == 1 and "Traceback" not in fetch.stderr
        status = botopt(home, *base, "status")
        assert "fetch FAILED" in status.stdout
        monitor_job = next(j for j in jobs if "monitor --once" in j)
        assert cron_run(env, monitor_job).returncode == 0
        assert cron_run(env, notify_job).returncode == 0
        assert any("fetch failed" in m["text"] for m in telegram.received)
    finally:
        telegram.stop()
