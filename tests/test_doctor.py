"""``botopt doctor`` passes on a good set-up and names each broken part of a bad one."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app

from .fakes.binance_server import FakeBinance
from .fakes.telegram_server import FakeTelegram
from .test_cron import TOKEN, live_rows

runner = CliRunner()


@pytest.fixture
def setup(tmp_path):
    binance = FakeBinance({"BTCUSDT": live_rows("BTCUSDT")}).start()
    telegram = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    cfg = tmp_path / "botopt.toml"
    cfg.write_text(f"""[data]
source = "local"
data_dir = "{tmp_path / 'data'}"
symbols = ["BTC/USDT"]

[binance]
api_url = "{binance.url}"

[telegram]
token = "{TOKEN}"
chat_id = "-1001"
api_url = "{telegram.url}"
""")
    cfg.chmod(0o600)
    base = ["--config", str(cfg), "--cache-dir", str(tmp_path / "cache")]
    assert runner.invoke(app, [*base, "fetch"]).exit_code == 0
    assert runner.invoke(app, [*base, "monitor", "--once"]).exit_code == 0
    yield tmp_path, cfg, base, telegram
    binance.stop()
    telegram.stop()


def doctor(base, *extra):
    res = runner.invoke(app, [*base, "doctor", "--json", *extra])
    return res.exit_code, {c["check"]: c for c in json.loads(res.stdout)["checks"]}


def test_a_good_setup_passes_every_check(setup):
    _, _, base, telegram = setup
    code, checks = doctor(base, "--send-test")
    assert code == 0, checks
    assert list(checks) == ["config", "data", "cache", "telegram", "model", "monitor",
                           "jobs"]
    assert all(c["ok"] for c in checks.values())
    assert "@botopt_test_bot sent a test message" in checks["telegram"]["message"]
    assert [m["text"] for m in telegram.received] == ["botopt doctor: test message, all good"]
    plain = runner.invoke(app, [*base, "doctor"])
    assert plain.exit_code == 0
    assert [ln.split()[:2] for ln in plain.stdout.splitlines()] == [
        ["ok", n] for n in ("config", "data", "cache", "telegram", "model", "monitor",
                              "jobs")]
    assert runner.invoke(app, [*base, "--quiet", "doctor"]).stdout == ""


def test_each_broken_part_is_named_with_what_to_do(setup):
    tmp_path, cfg, base, telegram = setup
    # stale data: the store's last candle is a day old
    data = tmp_path / "data" / "BTC_USDT-5m.feather"
    import polars as pl

    df = pl.read_ipc(data)
    df.with_columns(pl.col("date") - pl.duration(days=1)).write_ipc(data)
    (tmp_path / "cache").chmod(0o777)  # others may write the cache
    cfg.write_text(cfg.read_text().replace('chat_id = "-1001"', 'chat_id = "-999"')
                   + '\n[model]\npath = "/nonexistent/model.json"\n')
    cfg.chmod(0o644)  # token in a world-readable file
    os.utime(tmp_path / "cache" / "events" / "monitor_state.json",
             (time.time() - 3600, time.time() - 3600))  # the monitor stopped an hour ago
    code, checks = doctor(base)
    assert code == 1
    assert {n for n, c in checks.items() if not c["ok"]} == {
        "config", "data", "cache", "telegram", "model", "monitor", "jobs"}
    assert f"chmod 600 {cfg}" in checks["config"]["message"]
    assert "stale candles" in checks["data"]["message"] and "botopt fetch" in \
        checks["data"]["message"]
    assert "writable by other users" in checks["cache"]["message"]
    assert "chat -999 not reachable" in checks["telegram"]["message"]
    assert "model file not found: /nonexistent/model.json" in checks["model"]["message"]
    assert checks["monitor"]["message"] == "not checked until the cache directory is fixed"
    (tmp_path / "cache").chmod(0o700)
    code, checks = doctor(base)
    assert checks["cache"]["ok"] and not checks["monitor"]["ok"]
    assert "botopt monitor --once" in checks["monitor"]["message"]
    (tmp_path / "cache").chmod(0o777)
    plain = runner.invoke(app, [*base, "doctor"])
    assert plain.exit_code == 1 and TOKEN not in plain.output
    fails = [ln for ln in plain.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 7


def test_a_refused_token_and_a_bad_config_are_named(setup):
    tmp_path, cfg, base, telegram = setup
    telegram.token = "123456789:BBothertokenothertokenothertoken"  # revoked at BotFather
    code, checks = doctor(base)
    assert code == 1 and checks["telegram"]["message"].startswith(
        "Telegram refused the token (401 Unauthorized)")
    assert TOKEN not in json.dumps(checks)
    cfg.write_text(cfg.read_text().replace(TOKEN, TOKEN + "  # from BotFather"))
    res = runner.invoke(app, [*base, "doctor"])
    assert res.exit_code == 1
    assert res.stdout.startswith("FAIL config    telegram.token (file:")
    assert "contains '#'" in res.stdout and TOKEN not in res.output


def test_binance_source_is_checked_without_breaking_a_ban(setup):
    tmp_path, cfg, base, _ = setup
    cfg.write_text(cfg.read_text().replace('source = "local"', 'source = "binance"'))
    code, checks = doctor(base)
    assert checks["data"]["ok"] and "Binance answers" in checks["data"]["message"]
    from botopt.core.base._config import load_config
    from botopt.core.data._binance import BinanceClient

    # a ban an earlier fetch remembered, written where fetch writes it
    client = BinanceClient(load_config(cfg).binance, state_dir=tmp_path / "cache" / "binance")
    note = client._ban_file()
    assert note is not None
    note.write_text(json.dumps({"until": time.time() + 600, "status": 418,
                                "kind": "banned this IP"}))
    code, checks = doctor(base)
    assert code == 1 and "not calling it before then" in checks["data"]["message"]


@pytest.mark.parametrize("max_staleness,stale", [(None, True), (1800, False)])
def test_doctor_and_signals_share_one_staleness_rule(setup, max_staleness, stale):
    # The store is cut back until its newest candle closed 10-15 min ago. 5m candles by
    # default may lag two intervals (10 min): both commands call it stale (doctor used to
    # allow 20 min while signals blocked at 10); with data.max_staleness = 1800 both accept it.
    tmp_path, cfg, base, _ = setup
    import polars as pl

    if max_staleness is not None:
        cfg.write_text(cfg.read_text().replace(
            'symbols = ["BTC/USDT"]', f'symbols = ["BTC/USDT"]\nmax_staleness = {max_staleness}'))
    data = tmp_path / "data" / "BTC_USDT-5m.feather"
    df = pl.read_ipc(data)
    closed = df.get_column("date").max().timestamp() + 300  # type: ignore[union-attr]
    age = time.time() - closed
    drop = int((600 - age) // 300) + 1 if age <= 600 else 0
    df.head(df.height - drop).write_ipc(data)
    _, checks = doctor(base)
    assert checks["data"]["ok"] is (not stale), checks["data"]
    res = runner.invoke(app, [*base, "signals", "--json", "--no-notify"])
    assert (res.exit_code != 0) is stale, res.output
    if stale:
        assert "stale" in res.output


def test_a_monitor_state_dated_ahead_is_not_a_negative_age(tmp_path):
    """`touch -d '+1 hour'` on the monitor's state printed "last ran -3599 s ago"."""
    import os
    import time

    from botopt.core import load_config
    from botopt.core.state._workspace import state_dir
    from botopt.core.watch._doctor import _monitor
    from botopt.core.watch._monitor import STATE

    cfg = load_config(overrides={"cache.dir": str(tmp_path)})
    path = state_dir(cfg, "events") / STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    now = time.time()
    os.utime(path, (now + 3600, now + 3600))
    assert "in the future" in _monitor(cfg, now) and "-" not in _monitor(cfg, now)
    os.utime(path, (now - 10, now - 10))
    assert _monitor(cfg, now) == "driven by cron (last ran 10 s ago)"
