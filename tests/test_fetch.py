"""``botopt fetch``: the local candle store kept up to date from a fake Binance on 127.0.0.1.

Real sockets, real files, real locks and real processes: overlapping runs are two ``botopt``
processes, a crash is a SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import fetch_to_store
from botopt.core.base._config import load_config
from botopt.core.data._store import plan_fetch, store_path
from botopt.core.errors import ConfigError, DataError, UnknownSymbolError, UsageError

from .fakes.binance_server import FakeBinance, rows_from_frame

ROOT = Path(__file__).resolve().parents[1]
STEP = 300_000
runner = CliRunner()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


class Market:
    """A fake Binance whose clock the test moves: candle ``i`` is open at ``now(i)``."""

    def __init__(self, n: int = 3000, **kw) -> None:
        self.rows = {s: rows_from_frame(pl.read_ipc(ROOT / "sample_data" / f"{s}-5m.feather")
                                        .head(n)) for s in ("BTCUSDT", "ETHUSDT")}
        self.clock = self.now(1500)
        self.fake = FakeBinance(self.rows, now_ms=lambda: self.clock, **kw).start()

    def now(self, i: int) -> int:
        """Two minutes into candle ``i``: candles before it are closed, it is still open."""
        return self.rows["BTCUSDT"][i][0] + 120_000

    def open(self, i: int) -> int:
        return self.rows["BTCUSDT"][i][0]

    def klines(self) -> list[dict[str, str]]:
        return self.fake.klines_requests()


@pytest.fixture
def market():
    m = Market()
    yield m
    m.fake.stop()


def config(market: Market, data_dir: Path):
    return load_config(overrides={"data.data_dir": str(data_dir),
                                  "binance.api_url": market.fake.url,
                                  "binance.max_retries": 1})


def stored(path: Path) -> pl.DataFrame:
    return pl.read_ipc(path)


def expected(market: Market, symbol: str, first: int, last: int) -> list[float]:
    """Closes of candles ``first..last`` (inclusive) as Binance sent them."""
    return [float(f"{r[4]:.8f}") for r in market.rows[symbol][first:last + 1]]


def test_first_fetch_takes_the_latest_closed_candles(market, tmp_path):
    cfg = config(market, tmp_path)
    res = fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)["BTCUSDT"]
    df = stored(store_path(tmp_path, "BTC/USDT", "5m"))
    # the latest 1,000 closed ones: the open candle 1500 is not asked for
    assert market.klines()[0]["endTime"] == str(market.open(1499) + 120_000)
    assert df["close"].to_list() == expected(market, "BTCUSDT", 500, 1499)
    assert df.columns == ["date", "open", "high", "low", "close", "volume"]
    assert (res.added, res.total) == (1000, 1000)
    assert res.last == datetime.fromtimestamp(market.open(1499) / 1000, tz=timezone.utc)


def test_later_runs_download_only_new_candles_and_match_one_big_fetch(market, tmp_path):
    cfg = config(market, tmp_path / "a")
    since = iso(market.open(0))
    fetch_to_store(cfg, ["BTCUSDT"], since=since, now_ms=market.clock)
    for i in (1501, 1502, 1510, 2700):  # one, then one more, then eight, then 1,190 new
        market.clock = market.now(i)
        before = len(market.klines())
        res = fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)["BTCUSDT"]
        asked = market.klines()[before:]
        assert int(asked[0]["startTime"]) == res.last.timestamp() * 1000 - (res.added - 1) * STEP
        assert res.total == i
    incremental = stored(store_path(tmp_path / "a", "BTC/USDT", "5m"))
    fetch_to_store(config(market, tmp_path / "b"), ["BTCUSDT"], since=since, now_ms=market.clock)
    assert incremental.equals(stored(store_path(tmp_path / "b", "BTC/USDT", "5m")))
    assert incremental["close"].to_list() == expected(market, "BTCUSDT", 0, 2699)


def test_nothing_new_means_no_request_and_no_rewrite(market, tmp_path):
    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    path = store_path(tmp_path, "BTC/USDT", "5m")
    before, stat = len(market.klines()), path.stat()
    market.clock += 60_000  # candle 1500 is still open
    res = fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)["BTCUSDT"]
    assert res.added == 0 and len(market.klines()) == before
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_since_back_fills_older_candles_and_keeps_stored_ones(market, tmp_path):
    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["ETHUSDT"], now_ms=market.clock)  # candles 500..1499
    res = fetch_to_store(cfg, ["ETHUSDT"], since=iso(market.open(100) + 60_000),
                         now_ms=market.clock)["ETHUSDT"]
    # since is rounded down to the candle that contains it
    assert market.klines()[-1]["startTime"] == str(market.open(100))
    assert market.klines()[-1]["endTime"] == str(market.open(499))
    assert (res.added, res.total) == (400, 1400)
    assert stored(store_path(tmp_path, "ETH/USDT", "5m"))["close"].to_list() == \
        expected(market, "ETHUSDT", 100, 1499)


def test_plan_fetch_estimates_the_download(market, tmp_path):
    cfg = config(market, tmp_path)
    assert plan_fetch(cfg, ["BTCUSDT"], now_ms=market.clock) == {"BTCUSDT": 1000}
    assert plan_fetch(cfg, ["BTCUSDT"], since=iso(market.open(1000)),
                      now_ms=market.clock) == {"BTCUSDT": 500}
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    assert plan_fetch(cfg, ["BTCUSDT"], now_ms=market.now(1510)) == {"BTCUSDT": 10}
    assert plan_fetch(cfg, ["BTCUSDT"], now_ms=market.clock) == {"BTCUSDT": 0}


def test_a_csv_store_is_carried_over_into_feather(market, tmp_path):
    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    feather = store_path(tmp_path, "BTC/USDT", "5m")
    csv = tmp_path / "BTCUSDT-5m.csv"
    stored(feather).write_csv(csv)
    feather.unlink()
    market.clock = market.now(1503)
    res = fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)["BTCUSDT"]
    assert (res.added, res.total) == (3, 1003)
    assert stored(feather)["close"].to_list() == expected(market, "BTCUSDT", 500, 1502)
    assert csv.exists()  # the user's file is left alone


def test_a_damaged_store_is_reported_and_left_as_it_is(market, tmp_path):
    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    path = store_path(tmp_path, "BTC/USDT", "5m")
    df = stored(path)
    damaged = df.with_columns(pl.when(pl.int_range(pl.len()) == 9).then(-1.0)
                              .otherwise(pl.col("close")).alias("close"))
    damaged.write_ipc(path)
    blob = path.read_bytes()
    market.clock = market.now(1505)
    with pytest.raises(DataError, match=r"BTCUSDT .*feather.*row 10"):
        fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    assert path.read_bytes() == blob
    path.write_bytes(b"not arrow at all")
    with pytest.raises(DataError, match=r"BTC_USDT-5m\.feather: cannot read candles"):
        fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    assert path.read_bytes() == b"not arrow at all"


def test_bad_arguments_name_the_culprit(market, tmp_path):
    cfg = config(market, tmp_path)
    with pytest.raises(UsageError, match="invalid --since 'last tuesday'"):
        fetch_to_store(cfg, ["BTCUSDT"], since="last tuesday", now_ms=market.clock)
    with pytest.raises(UsageError, match="no candle has closed since then"):
        fetch_to_store(cfg, ["BTCUSDT"], since=iso(market.clock), now_ms=market.clock)
    with pytest.raises(ConfigError, match="data directory"):
        fetch_to_store(load_config(overrides={"binance.api_url": market.fake.url}),
                       ["BTCUSDT"], now_ms=market.clock)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=re.escape(f"data.data_dir {blocker}/sub: cannot create")):
        fetch_to_store(config(market, blocker / "sub"), ["BTCUSDT"], now_ms=market.clock)


def test_a_lock_held_too_long_is_an_error_and_touches_nothing(market, tmp_path):
    from filelock import FileLock

    from botopt.core.errors import BotoptError, exit_code_for

    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    path = store_path(tmp_path, "BTC/USDT", "5m")
    blob, asked = path.read_bytes(), len(market.klines())
    with FileLock(str(tmp_path / ".BTC_USDT-5m.feather.lock")):  # a stuck fetch
        with pytest.raises(BotoptError, match="another botopt fetch has held its lock for "
                                              "0.2 s; try again later") as err:
            fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.now(1510), lock_timeout=0.2)
    assert exit_code_for(err.value) == 1
    assert path.read_bytes() == blob and len(market.klines()) == asked


def test_stray_temporaries_of_a_crashed_writer_are_removed(market, tmp_path):
    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    stray = tmp_path / ".BTC_USDT-5m.feather.k3j2l1.tmp"
    stray.write_bytes(b"half a file")
    other = tmp_path / ".ETH_USDT-5m.feather.abcdef.tmp"
    other.write_bytes(b"not ours to touch in this run")
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.now(1502))
    assert not stray.exists() and other.exists()


# --- real processes ---------------------------------------------------------------------------

def botopt(market: Market, data_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BOTOPT_BINANCE_API_URL": market.fake.url, "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "botopt.cli.main", "fetch", "-s", "BTCUSDT", "--data-dir",
         str(data_dir), "--as-of", iso(market.clock), "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_requests(market: Market, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while len(market.klines()) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the fetch never reached the server"
        time.sleep(0.01)


@pytest.mark.slow
def test_overlapping_runs_download_once_and_leave_one_clean_file(tmp_path):
    # 2 pages: the first run holds the lock for ~3 s, longer than the second needs to start
    market = Market(delay=1.5)
    try:
        first = botopt(market, tmp_path, "--since", iso(market.open(0)))
        wait_for_requests(market, 1, first)
        second = botopt(market, tmp_path, "--since", iso(market.open(0)))
        outs = [p.communicate(timeout=60) for p in (first, second)]
        assert [p.returncode for p in (first, second)] == [0, 0], outs
        a, b = (json.loads(out)["symbols"][0] for out, _ in outs)
        # The second run waited for the lock, then found everything stored already.
        assert (a["added"], b["added"], b["total"]) == (1500, 0, 1500)
        assert len(market.klines()) == 2  # 1,000 + 501 rows: one run's worth, not two
        df = stored(store_path(tmp_path, "BTC/USDT", "5m"))
        assert df["close"].to_list() == expected(market, "BTCUSDT", 0, 1499)
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        market.fake.stop()


def test_a_run_killed_mid_download_leaves_the_old_file_intact(tmp_path):
    market = Market(delay=5.0)
    try:
        cfg = config(market, tmp_path)
        market.fake.delay = 0.0
        fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
        path = store_path(tmp_path, "BTC/USDT", "5m")
        blob = path.read_bytes()
        market.fake.delay = 5.0
        market.clock = market.now(1600)
        proc = botopt(market, tmp_path)
        wait_for_requests(market, 2, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert path.read_bytes() == blob
        # The next run takes over: the dead process's lock does not block it.
        market.fake.delay = 0.0
        rerun = botopt(market, tmp_path)
        out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        assert json.loads(out)["symbols"][0]["added"] == 100
        assert stored(path)["close"].to_list() == expected(market, "BTCUSDT", 500, 1599)
    finally:
        market.fake.stop()


# --- the command ------------------------------------------------------------------------------

def test_fetch_command_json_table_and_errors(market, tmp_path):
    env = {"BOTOPT_BINANCE_API_URL": market.fake.url, "BOTOPT_BINANCE_MAX_RETRIES": "1"}
    base = ["--cache-dir", str(tmp_path / "c"), "fetch", "--data-dir", str(tmp_path / "d"),
            "--as-of", iso(market.clock)]
    res = runner.invoke(app, [*base, "-s", "BTCUSDT,ETHUSDT", "--json"], env=env)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert [s["symbol"] for s in out["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert [s["added"] for s in out["symbols"]] == [1000, 1000]
    assert out["symbols"][0]["last"] == iso(market.open(1499))
    table = runner.invoke(app, [*base, "-s", "BTCUSDT"], env=env)
    assert table.exit_code == 0 and "BTCUSDT" in table.stdout and "1000" in table.stdout
    quiet = runner.invoke(app, ["--quiet", *base, "-s", "BTCUSDT"], env=env)
    assert quiet.exit_code == 0 and quiet.stdout == ""
    # what fetch stored, signals reads
    sig = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals", "--data-dir",
                              str(tmp_path / "d"), "-s", "BTCUSDT", "--as-of",
                              iso(market.clock), "--json"], env=env)
    assert sig.exit_code == 0, sig.stderr
    assert json.loads(sig.stdout)["signals"][0]["candle_time"] == iso(market.open(1499))
    cases = [
        (["-s", "NOPEUSDT"], 2, "symbol NOPEUSDT is not listed on Binance"),
        (["-s", "BTCUSDT", "--since", "soon"], 2, "invalid --since 'soon'"),
        (["-s", "btc usdt"], 2, "btc usdt"),
    ]
    for args, code, message in cases:
        bad = runner.invoke(app, [*base, *args], env=env)
        assert bad.exit_code == code, (args, bad.stderr)
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
    market.fake.stop()
    down = runner.invoke(app, [*base, "-s", "BTCUSDT", "--as-of", iso(market.now(1600))],
                         env=env)
    assert down.exit_code == 1
    assert len(down.stderr.strip().splitlines()) == 1 and market.fake.url.split("//")[1] \
        in down.stderr


# --- freqtrade's names, the symbol list, bans, Ctrl-C -------------------------------------------

def test_fetch_writes_freqtrades_names_for_every_spelling(market, tmp_path):
    cfg = config(market, tmp_path)
    for typed in ("BTCUSDT", "BTC_USDT", "BTC/USDT", "eth/usdt"):
        res = fetch_to_store(cfg, [typed], now_ms=market.clock)
        (sym, r), = res.items()
        assert sym == typed.upper() and r.symbol == typed.upper()  # shown as typed
        assert r.path.name == ("ETH_USDT" if "ETH" in sym else "BTC_USDT") + "-5m.feather"
    assert sorted(p.name for p in tmp_path.glob("*.feather")) == ["BTC_USDT-5m.feather",
                                                                  "ETH_USDT-5m.feather"]
    # the symbol list was asked for once; later runs used the cached copy
    assert len(market.fake.info_requests()) == 1
    with pytest.raises(UsageError, match="XRP/USDT:USDT is a futures pair"):
        fetch_to_store(cfg, ["XRP/USDT:USDT"], now_ms=market.clock)
    with pytest.raises(UnknownSymbolError, match="symbol DOGE/USDT is not listed on Binance"):
        fetch_to_store(cfg, ["BTCUSDT", "DOGE/USDT"], now_ms=market.clock)
    assert len(market.fake.info_requests()) == 1  # a fresh copy: no second request


def test_the_split_comes_from_the_symbol_list_not_a_guess(tmp_path):
    rows = rows_from_frame(pl.read_ipc(ROOT / "sample_data" / "BTCUSDT-5m.feather").head(1200))
    fake = FakeBinance({"XYZW": rows}, assets={"XYZW": ("XY", "ZW")},
                       now_ms=lambda: rows[-1][0] + 120_000).start()
    try:
        cfg = load_config(overrides={"data.data_dir": str(tmp_path),
                                     "binance.api_url": fake.url})
        res = fetch_to_store(cfg, ["XYZW"])["XYZW"]
        assert res.path == tmp_path / "XY_ZW-5m.feather"
        assert fake.klines_requests()[0]["symbol"] == "XYZW"
        again = fetch_to_store(cfg, ["XY/ZW"])["XY/ZW"]
        assert again.path == res.path and again.added == 0
    finally:
        fake.stop()


def test_an_old_joined_store_is_carried_over_and_still_read(market, tmp_path):
    cfg = config(market, tmp_path)
    fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)
    new = store_path(tmp_path, "BTC/USDT", "5m")
    old = tmp_path / "BTCUSDT-5m.feather"  # what botopt 0.1's fetch wrote
    new.rename(old)
    market.clock = market.now(1502)
    res = fetch_to_store(cfg, ["BTCUSDT"], now_ms=market.clock)["BTCUSDT"]
    assert (res.added, res.total, res.path) == (2, 1002, new)
    assert old.exists() and stored(old).height == 1000  # left as it was
    sig = runner.invoke(app, ["signals", "--data-dir", str(tmp_path), "-s", "BTCUSDT",
                              "--as-of", iso(market.clock), "--json"])
    assert sig.exit_code == 0, sig.stderr
    assert json.loads(sig.stdout)["signals"][0]["candle_time"] == iso(market.open(1501))


def test_a_ban_is_remembered_across_runs(market, tmp_path):
    ban = {"code": -1003, "msg": "Way too much request weight used; IP banned until "
           "1660090423228."}
    market.fake.script = [(200, {"symbols": [{"symbol": "BTCUSDT", "baseAsset": "BTC",
                                              "quoteAsset": "USDT"}]}, {}),
                          (418, ban, {"Retry-After": "3600"})]
    env = {"BOTOPT_BINANCE_API_URL": market.fake.url}
    args = ["--cache-dir", str(tmp_path / "c"), "fetch", "-s", "BTCUSDT", "--data-dir",
            str(tmp_path / "d"), "--as-of", iso(market.clock)]
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 1 and "banned this IP" in first.stderr
    asked = len(market.fake.requests)
    for _ in range(2):  # the next cron runs
        again = runner.invoke(app, args, env=env)
        assert again.exit_code == 1
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1 and "not calling it before then" in lines[0], lines
        assert "banned this IP (HTTP 418) until" in lines[0]
    assert len(market.fake.requests) == asked  # Binance was not asked again
    # once the ban has ended, fetch goes back to work
    note = next((tmp_path / "c" / "binance").glob("ban-*.json"))
    note.write_text(json.dumps({"until": time.time() - 1, "status": 418}))
    assert runner.invoke(app, args, env=env).exit_code == 0


@pytest.mark.slow
def test_ctrl_c_keeps_the_pages_already_downloaded(tmp_path):
    market = Market(delay=2.0)
    try:
        proc = botopt(market, tmp_path, "--since", iso(market.open(0)))
        wait_for_requests(market, 2, proc)  # the first page (1,000 rows) has arrived
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        df = stored(store_path(tmp_path, "BTC/USDT", "5m"))
        assert df["close"].to_list() == expected(market, "BTCUSDT", 0, 999)
        # the next run goes on from there
        market.fake.delay = 0.0
        rerun = botopt(market, tmp_path)
        out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        assert json.loads(out)["symbols"][0]["added"] == 500
    finally:
        market.fake.stop()
