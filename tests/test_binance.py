"""The Binance client and `botopt fetch` against a fake API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import BinanceClient, load_candles, load_config
from botopt.core._config import BinanceConfig
from botopt.core._store import fetch_to_store
from botopt.core.errors import NetworkError, UnknownSymbolError
from tests.fakes.binance_server import FakeBinance

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
STEP = 300_000


def sample_rows(symbol: str, n: int | None = None):
    df = pl.read_ipc(ROOT / "sample_data" / f"{symbol}-5m.feather")
    rows = [(int(r[0].timestamp() * 1000), *r[1:]) for r in df.iter_rows()]
    return rows[:n] if n else rows


@pytest.fixture
def server():
    rows = {"BTCUSDT": sample_rows("BTCUSDT", 2600), "ETHUSDT": sample_rows("ETHUSDT", 2600)}
    # "now" is inside the 2,501st candle: it is still open and must never be returned.
    now = rows["BTCUSDT"][2500][0] + 120_000
    fake = FakeBinance(rows, now_ms=lambda: now).start()
    yield fake
    fake.stop()


def cfg(server, tmp_path, **extra):
    return load_config(overrides={"binance.api_url": server.url, "binance.max_retries": 3,
                                  "binance.max_wait_seconds": 5.0,
                                  "data.data_dir": str(tmp_path / "data"),
                                  "cache.dir": str(tmp_path / "cache"), **extra})


def now_of(server) -> int:
    return server.now_ms()


def test_pagination_equals_source_and_drops_open_candle(server, tmp_path):
    client = BinanceClient(cfg(server, tmp_path).binance)
    start = server.candles["BTCUSDT"][0][0]
    df = client.klines("BTCUSDT", "5m", start_ms=start, now_ms=now_of(server))
    assert df.height == 2500 and client.requests_made == 3
    expect = [r[4] for r in server.candles["BTCUSDT"][:2500]]
    assert df["close"].to_list() == pytest.approx(expect, rel=1e-9)
    assert df["open_time"].dt.epoch("ms").to_list() == [r[0] for r in
                                                       server.candles["BTCUSDT"][:2500]]


def test_retry_after_honoured_on_429_and_418(server, tmp_path):
    client = BinanceClient(cfg(server, tmp_path).binance)
    body = {"code": -1003, "msg": "Too many requests; current request has limited."}
    server.script = [(429, body, {"Retry-After": "1"}), (418, body, {"Retry-After": "1"})]
    t0 = time.monotonic()
    df = client.klines("ETHUSDT", "5m", start_ms=server.candles["ETHUSDT"][2400][0],
                       now_ms=now_of(server))
    assert time.monotonic() - t0 >= 2.0 and df.height > 0
    assert server.times[1] - server.times[0] >= 1.0 and server.times[2] - server.times[1] >= 1.0
    server.script = [(418, body, {"Retry-After": "3600"})]
    with pytest.raises(NetworkError, match="retry after 3600"):
        client.klines("ETHUSDT", "5m", now_ms=now_of(server))


def test_5xx_and_dropped_connections_retried_then_network_error(server, tmp_path):
    client = BinanceClient(cfg(server, tmp_path).binance, sleep=lambda s: None)
    server.script = ["500", "drop"]
    assert client.klines("BTCUSDT", "5m", now_ms=now_of(server)).height > 0
    server.script = ["500"] * 10
    with pytest.raises(NetworkError, match="try again later"):
        client.klines("BTCUSDT", "5m", now_ms=now_of(server))


def test_invalid_symbol(server, tmp_path):
    with pytest.raises(UnknownSymbolError, match="NOPEUSDT"):
        BinanceClient(cfg(server, tmp_path).binance).klines("NOPEUSDT", "5m")


def test_recorded_binance_rows_parse(shared_data, tmp_path):
    rows = json.loads((shared_data / "http" / "binance" /
                       "nautilus_http_spot_market_klines.json").read_text())
    candles = {"BTCUSDT": [(int(r[0]), *(float(x) for x in r[1:6])) for r in rows]}
    now = int(rows[-1][0]) + 30_000  # the last recorded row is the open one
    fake = FakeBinance(candles, now_ms=lambda: now).start()
    try:
        fake.candles = candles
        df = BinanceClient(BinanceConfig(api_url=fake.url)).klines(
            "BTCUSDT", "1m", start_ms=int(rows[0][0]), now_ms=now)
        assert df.height == len(rows) - 1
        assert df["close"][0] == float(rows[0][4])
    finally:
        fake.stop()


def test_fetch_incremental_and_readable_by_local_source(server, tmp_path):
    c = cfg(server, tmp_path)
    first = fetch_to_store(c, ["BTCUSDT"], "5m", since=datetime(2026, 9, 10, tzinfo=timezone.utc),
                           now_ms=now_of(server))
    assert first[0].added == 2500
    n_requests = len(server.requests)
    later = now_of(server) + 10 * STEP
    server.now_ms = lambda: later
    second = fetch_to_store(c, ["BTCUSDT"], "5m", now_ms=later)
    assert second[0].added == 10 and len(server.requests) - n_requests == 1
    assert int(server.requests[-1]["startTime"]) == server.candles["BTCUSDT"][2500][0]
    local = load_config(overrides={"data.source": "local", "data.data_dir": str(tmp_path / "data")})
    df = load_candles(["BTCUSDT"], config=local, as_of="2030-01-01")
    assert df.height == 2510
    raw = pl.read_ipc(tmp_path / "data" / "BTCUSDT-5m.feather")
    assert raw.columns == ["date", "open", "high", "low", "close", "volume"]


def test_source_binance_for_signals(server, tmp_path):
    env = {"BOTOPT_BINANCE_API_URL": server.url}
    as_of = datetime.fromtimestamp(now_of(server) / 1000, tz=timezone.utc).isoformat()
    result = runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "--source",
                                 "binance", "-s", "BTCUSDT,ETHUSDT", "--as-of", as_of,
                                 "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    last_closed = server.candles["BTCUSDT"][2499][0]
    assert out["signals"][0]["candle_time"] == datetime.fromtimestamp(
        last_closed / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    bad = runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "--source", "binance",
                              "-s", "NOPEUSDT", "--as-of", as_of], env=env)
    assert bad.exit_code == 2 and "NOPEUSDT" in bad.stderr and "Traceback" not in bad.stderr


def test_fetch_cli(server, tmp_path):
    env = {"BOTOPT_BINANCE_API_URL": server.url}
    base = ["--cache-dir", str(tmp_path / "c"), "fetch", "--data-dir", str(tmp_path / "d")]
    ok = runner.invoke(app, [*base, "-s", "ETHUSDT", "--json"], env=env)
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["symbols"][0]["symbol"] == "ETHUSDT"
    assert runner.invoke(app, [*base, "-s", "NOPEUSDT"], env=env).exit_code == 2
    nodir = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), "fetch", "-s", "ETHUSDT"],
                          env=env)
    assert nodir.exit_code == 2 and "--data-dir" in nodir.stderr
    bad_since = runner.invoke(app, [*base, "-s", "ETHUSDT", "--since", "soon"], env=env)
    assert bad_since.exit_code == 2


FETCHER = r"""
import sys
from botopt.core import load_config
from botopt.core._store import fetch_to_store
cfg = load_config(overrides={"binance.api_url": sys.argv[1], "data.data_dir": sys.argv[2]})
fetch_to_store(cfg, ["BTCUSDT"], "5m", now_ms=int(sys.argv[3]))
"""


def test_concurrent_fetches_leave_one_consistent_file(server, tmp_path):
    args = [server.url, str(tmp_path / "data"), str(now_of(server))]
    procs = [subprocess.Popen([sys.executable, "-c", FETCHER, *args],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    df = pl.read_ipc(tmp_path / "data" / "BTCUSDT-5m.feather")
    # the latest 1,000 rows Binance returns, less the one still open
    assert df["date"].is_sorted() and df["date"].n_unique() == df.height == 999
    assert not list((tmp_path / "data").glob("*.tmp"))
