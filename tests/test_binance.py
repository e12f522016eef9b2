"""The Binance klines client against a fake Binance on 127.0.0.1 (real sockets, real requests)."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import BinanceClient
from botopt.core.base._config import BinanceConfig
from botopt.core.errors import (
    ConfigError,
    DataError,
    NetworkError,
    UnknownSymbolError,
    UsageError,
)

from .fakes.binance_server import FakeBinance, rows_from_frame

ROOT = Path(__file__).resolve().parents[1]
STEP = 300_000
runner = CliRunner()


def sample_rows(symbol: str, n: int) -> list:
    return rows_from_frame(pl.read_ipc(ROOT / "sample_data" / f"{symbol}-5m.feather").head(n))


@pytest.fixture
def server():
    rows = {"BTCUSDT": sample_rows("BTCUSDT", 2600), "ETHUSDT": sample_rows("ETHUSDT", 2600)}
    # "now" is two minutes into the 2,501st candle: Binance serves it, but it is still open.
    now = rows["BTCUSDT"][2500][0] + 120_000
    fake = FakeBinance(rows, now_ms=lambda: now).start()
    yield fake
    fake.stop()


def client_for(server, sleeps: list[float] | None = None, **cfg) -> BinanceClient:
    config = BinanceConfig(api_url=server.url, max_retries=cfg.pop("max_retries", 3),
                           max_wait_seconds=cfg.pop("max_wait_seconds", 5.0), **cfg)
    if sleeps is None:
        return BinanceClient(config)
    return BinanceClient(config, sleep=sleeps.append)


def opens(rows) -> list[int]:
    return [r[0] for r in rows]


def test_pages_by_start_time_and_equals_the_source(server):
    client = client_for(server)
    src = server.candles["BTCUSDT"]
    df = client.klines("BTCUSDT", "5m", start_ms=src[0][0], now_ms=server.now_ms())
    assert df.schema == pl.Schema({"symbol": pl.String, "open_time": pl.Datetime("ms", "UTC"),
                                   "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                                   "close": pl.Float64, "volume": pl.Float64})
    # 2,501 rows are served (the last still open): three pages, the open candle dropped.
    assert df["open_time"].dt.epoch("ms").to_list() == opens(src[:2500])
    for i, col in enumerate(("open", "high", "low", "close", "volume"), start=1):
        assert df[col].to_list() == [r[i] for r in src[:2500]], col
    sent = server.klines_requests()
    assert [int(q["startTime"]) for q in sent] == [src[0][0], src[1000][0], src[2000][0]]
    assert all(q["limit"] == "1000" and q["interval"] == "5m" for q in sent)
    assert client.requests_made == 3
    assert server.headers[0]["User-Agent"].startswith("botopt")


def test_open_candle_dropped_and_latest_without_start(server):
    df = client_for(server).klines("ETHUSDT", "5m", now_ms=server.now_ms())
    src = server.candles["ETHUSDT"]
    # Binance's latest 1,000 rows end with the open candle: 999 closed ones are left.
    assert df["open_time"].dt.epoch("ms").to_list() == opens(src[1501:2500])
    assert "startTime" not in server.klines_requests()[0]


def test_limit_and_end_bound_the_closed_candles(server):
    src = server.candles["BTCUSDT"]
    client = client_for(server)
    last = client.klines("BTCUSDT", "5m", limit=1500, now_ms=server.now_ms())
    assert last["open_time"].dt.epoch("ms").to_list() == opens(src[1000:2500])
    window = client.klines("BTCUSDT", "5m", start_ms=src[10][0], end_ms=src[1209][0],
                           now_ms=server.now_ms())
    assert window["open_time"].dt.epoch("ms").to_list() == opens(src[10:1210])
    upto = client.klines("BTCUSDT", "5m", end_ms=src[99][0], limit=5, now_ms=server.now_ms())
    assert upto["open_time"].dt.epoch("ms").to_list() == opens(src[95:100])


@pytest.mark.slow  # over 2 s: waits out Binance's real Retry-After twice
def test_retry_after_honoured_on_429_and_418(server):
    client = client_for(server)
    body = {"code": -1003, "msg": "Too many requests; current request has limited."}
    server.script = [(429, body, {"Retry-After": "1"}), (418, body, {"Retry-After": "1"})]
    df = client.klines("ETHUSDT", "5m", start_ms=server.candles["ETHUSDT"][2400][0],
                       now_ms=server.now_ms())
    assert df.height == 100
    gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
    assert gaps[0] >= 1.0 and gaps[1] >= 1.0


def test_retry_after_beyond_the_budget_gives_up_at_once_saying_when(server):
    client = client_for(server, max_wait_seconds=60)
    ban = {"code": -1003, "msg": "Way too much request weight used; IP banned until "
           "1660090423228. Please use WebSocket Streams for live updates to avoid bans."}
    server.script = [(418, ban, {"Retry-After": "3600"})]
    t0 = time.monotonic()
    with pytest.raises(NetworkError, match=r"banned this IP \(HTTP 418 -1003 .*retry after "
                       r"3600 s \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)") as err:
        client.klines("ETHUSDT", "5m", now_ms=server.now_ms())
    assert time.monotonic() - t0 < 1.0 and len(server.requests) == 1
    assert "\n" not in str(err.value)
    server.script = [(429, {"code": -1003, "msg": "Too many requests."}, {"Retry-After": "2"})]
    with pytest.raises(NetworkError, match="rate-limited us .*retry after 2 s"):
        client_for(server, max_wait_seconds=1).klines("ETHUSDT", "5m")


def test_recorded_error_bodies(server, shared_data):
    """The real, truncated 429 body and the real 418 body from ../shared/data."""
    errors = json.loads((shared_data / "http" / "binance" / "errors_with_provenance.json")
                        .read_text())
    sleeps: list[float] = []
    server.script = [(429, errors["rate_limited_429_sapi"]["body_text"], {"Retry-After": "0"}),
                     (400, errors["invalid_symbol"]["body"], {})]
    with pytest.raises(UnknownSymbolError, match="NOPE"):
        client_for(server, sleeps).klines("NOPE", "5m")
    assert sleeps == [0.0]
    server.script = [(418, errors["ip_banned_418"]["body_text"], {"Retry-After": "7200"})]
    with pytest.raises(NetworkError, match="IP banned until 1660090423228"):
        client_for(server).klines("BTCUSDT", "5m")


def test_429_without_retry_after_backs_off(server):
    sleeps: list[float] = []
    server.script = [(429, {"code": -1003, "msg": "Too many requests."}, {})] * 2
    assert client_for(server, sleeps).klines("BTCUSDT", "5m", now_ms=server.now_ms()).height
    assert len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1] <= 8


def test_5xx_and_dropped_connections_retried_then_network_error(server):
    sleeps: list[float] = []
    server.script = ["500", "drop", (503, "<html>Service Unavailable</html>", {})]
    df = client_for(server, sleeps).klines("BTCUSDT", "5m", now_ms=server.now_ms())
    assert df.height == 999 and len(sleeps) == 3 and len(server.requests) == 4
    server.script = ["500"] * 10
    with pytest.raises(NetworkError, match=r"HTTP 500 -1000 .* after 4 attempt\(s\); try again"):
        client_for(server, []).klines("BTCUSDT", "5m")


@pytest.mark.slow
def test_read_timeout_retried_then_network_error(server):
    client = client_for(server, [], read_timeout=0.3)
    server.script = [("slow", 1.0)]
    assert client.klines("BTCUSDT", "5m", now_ms=server.now_ms()).height == 999
    server.script = [("slow", 1.0)] * 4
    with pytest.raises(NetworkError, match="ReadTimeout"):
        client.klines("BTCUSDT", "5m")


@pytest.mark.slow
def test_an_answer_trickling_in_is_cut_at_three_read_timeouts_and_retried(server):
    """The status line and headers a byte every 0.2 s, each read within the 0.3 s read
    timeout: the run waited the whole trickle (40 s of headers and body here, for ever from
    a hostile server). The answer now has three read timeouts; then it is retried."""
    from botopt.benchmarks._loopback import DripHead

    client = client_for(server, [], read_timeout=0.3)
    server.script = [(200, DripHead.of("[]" + " " * 200, 0.2), {})]
    began = time.monotonic()
    assert client.klines("BTCUSDT", "5m", now_ms=server.now_ms()).height == 999
    assert time.monotonic() - began < 8 and client.requests_made == 2


def test_unreachable_server_is_a_network_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: connection refused
    cfg = BinanceConfig(api_url=f"http://127.0.0.1:{port}", max_retries=1)
    with pytest.raises(NetworkError, match=r"unreachable .* after 2 attempt\(s\)"):
        BinanceClient(cfg, sleep=lambda s: None).klines("BTCUSDT", "5m")


def test_invalid_symbol_names_it_and_is_not_retried(server):
    with pytest.raises(UnknownSymbolError, match=r"symbol NOPEUSDT is not listed on Binance "
                       r"\(-1121 Invalid symbol.\)") as info:
        client_for(server).klines("NOPEUSDT", "5m")
    assert len(server.requests) == 1
    # the culprit as attributes too, for a caller that reacts rather than prints
    assert (info.value.symbol, info.value.source) == ("NOPEUSDT", "binance")


def test_other_client_errors_are_final_and_quote_binance(server):
    with pytest.raises(UsageError, match="interval 2h refused by Binance"):
        client_for(server).klines("BTCUSDT", "2h")
    server.script = [(400, {"code": -1100, "msg": "Illegal characters found in parameter "
                            "'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."}, {})]
    with pytest.raises(DataError, match=r"HTTP 400 -1100 Illegal characters"):
        client_for(server).klines("BTCUSDT", "5m")
    server.script = [(451, {"code": 0, "msg": "Service unavailable from a restricted location "
                            "according to 'b. Eligibility' in https://www.binance.com/en/terms."},
                      {})]
    with pytest.raises(ConfigError, match="binance.api_url") as info:
        client_for(server).klines("BTCUSDT", "5m")
    assert info.value.key == "binance.api_url"
    assert len(server.requests) == 3
    with pytest.raises(ConfigError, match="binance.api_url 'api.binance.com'"):
        BinanceClient(BinanceConfig(api_url="api.binance.com")).klines("BTCUSDT", "5m")


def test_malformed_answers_are_data_errors(server):
    server.script = [(200, "<html>maintenance</html>", {})]
    with pytest.raises(DataError, match="not JSON"):
        client_for(server).klines("BTCUSDT", "5m")
    server.script = [(200, [[1700000000000, "1", "2", "0.5", "1.5", "10", 1700000299999],
                            [1700000300000, "1", None]], {})]
    with pytest.raises(DataError, match="BTCUSDT: malformed row 2") as info:
        client_for(server).klines("BTCUSDT", "5m", now_ms=1800000000000)
    assert (info.value.symbol, info.value.row) == ("BTCUSDT", 2)


def test_an_answer_with_two_candles_at_one_time_is_refused(server):
    """Two different candles at one open time were made one in silence (the last kept): a
    file with the same fault stops the command. A row repeated whole, or rows out of order,
    are still read as the one sorted series they are."""
    a = [1700000000000, "1", "2", "0.5", "1.5", "10", 1700000299999]
    b = [1700000300000, "1.5", "2", "1", "1.8", "12", 1700000599999]
    other = [1700000300000, "1.5", "2", "1", "1.7", "12", 1700000599999]
    server.script = [(200, [a, b, other], {})]
    with pytest.raises(DataError, match="BTCUSDT: two different candles open at "
                                        "2023-11-14 22:18 UTC") as info:
        client_for(server).klines("BTCUSDT", "5m", now_ms=1800000000000)
    assert info.value.symbol == "BTCUSDT"
    server.script = [(200, [b, a, b], {})]
    df = client_for(server).klines("BTCUSDT", "5m", now_ms=1800000000000)
    assert df["open_time"].dt.epoch("ms").to_list() == [a[0], b[0]]
    assert df["close"].to_list() == [1.5, 1.8]


def test_pauses_when_the_ip_weight_is_nearly_used(server):
    sleeps: list[float] = []
    server.used_weight = 5400
    client = client_for(server, sleeps, max_wait_seconds=120)
    client.klines("BTCUSDT", "5m", now_ms=server.now_ms())
    assert client.used_weight == 5400 and len(sleeps) == 1 and 0 < sleeps[0] <= 61


def test_recorded_binance_rows_parse(shared_data):
    rows = json.loads((shared_data / "http" / "binance" /
                       "nautilus_http_spot_market_klines.json").read_text())
    candles = {"BTCUSDT": [(int(r[0]), *(float(x) for x in r[1:6])) for r in rows]}
    now = int(rows[-1][0]) + 30_000  # inside the last recorded row, which was still open
    fake = FakeBinance(candles, interval="1m", now_ms=lambda: now).start()
    try:
        df = BinanceClient(BinanceConfig(api_url=fake.url)).klines(
            "BTCUSDT", "1m", start_ms=int(rows[0][0]), now_ms=now)
    finally:
        fake.stop()
    assert df.height == len(rows) - 1
    assert df["close"].to_list() == [float(r[4]) for r in rows[:-1]]
    assert df["open_time"].dt.epoch("ms").to_list() == [int(r[0]) for r in rows[:-1]]


def test_signals_from_binance_through_the_cli(server, tmp_path):
    env = {"BOTOPT_BINANCE_API_URL": server.url}
    as_of = datetime.fromtimestamp(server.now_ms() / 1000, tz=timezone.utc).isoformat()
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
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        "botopt: error: symbol NOPEUSDT is not listed on Binance (-1121 Invalid symbol.)"]
