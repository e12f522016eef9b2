"""``botopt fetch`` through ccxt (``botopt[exchanges]``): the real ccxt exchange classes, their
URLs pointed (``data.exchange_api_url``) at fake exchanges on 127.0.0.1 that answer as the
real APIs do: OKX spot and perpetual swaps (benchmarks/fake_okx.py) and Binance spot
(benchmarks/fake_binance.py). References: the rows the fake serves, and for Binance the
direct client's store of the same candles."""

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
from botopt.core.base._config import load_config
from botopt.core.data._candles import read_candle_file
from botopt.core.data._store import fetch_to_store
from botopt.core.errors import (
    ConfigError,
    DataError,
    NetworkError,
    UnknownSymbolError,
    UsageError,
    exit_code_for,
)

from .fakes.binance_server import FakeBinance, rows_from_frame
from .fakes.okx_server import FakeOkx

ccxt = pytest.importorskip("ccxt", reason="ccxt (botopt[exchanges]) is not installed")

ROOT = Path(__file__).resolve().parents[1]
STEP = 300_000
runner = CliRunner()


def sample_rows(n: int = 3000) -> dict[str, list]:
    return {s: rows_from_frame(pl.read_ipc(ROOT / "sample_data" / f"{s}-5m.feather").head(n))
            for s in ("BTCUSDT", "ETHUSDT")}


class Okx:
    """A fake OKX whose clock the test moves: candle ``i`` is open at ``now(i)``."""

    def __init__(self) -> None:
        rows = sample_rows()
        self.rows = {"BTC-USDT": rows["BTCUSDT"], "ETH-USDT": rows["ETHUSDT"]}
        self.clock = self.now(1500)
        self.fake = FakeOkx(self.rows, now_ms=lambda: self.clock).start()

    def now(self, i: int) -> int:
        return self.rows["BTC-USDT"][i][0] + 120_000

    def open(self, i: int) -> int:
        return self.rows["BTC-USDT"][i][0]


@pytest.fixture
def okx():
    m = Okx()
    yield m
    m.fake.stop()


def cfg(url: str, data_dir: Path, **extra):
    return load_config(overrides={"data.data_dir": str(data_dir), "data.exchange": "okx",
                                  "data.exchange_api_url": url, "binance.max_retries": 2,
                                  "binance.max_wait_seconds": 5, **extra})


def when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def want(rows: list, first_ms: int, last_ms: int) -> pl.DataFrame:
    """What the exchange holds between two open times, as fetch must store it."""
    sel = [r for r in rows if first_ms <= r[0] <= last_ms]
    return pl.DataFrame({"t": [r[0] for r in sel],
                         **{c: [float(f"{r[i]:.8f}") for r in sel]
                            for i, c in enumerate(("open", "high", "low", "close", "volume"),
                                                  start=1)}})


def got(path: Path) -> pl.DataFrame:
    df = pl.read_ipc(path)
    return df.select(pl.col("date").dt.epoch("ms").alias("t"), "open", "high", "low", "close",
                     "volume")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["spot", "futures"])
def test_okx_candles_stored_in_freqtrades_layout(okx, tmp_path, mode):
    c = cfg(okx.fake.url, tmp_path, **{"data.trading_mode": mode})
    pair = "BTC/USDT:USDT" if mode == "futures" else "BTC/USDT"
    since = okx.open(100)
    res = fetch_to_store(c, [pair, "ETH_USDT"], since=when(since), now_ms=okx.clock)
    name = {"spot": ("BTC_USDT-5m.feather", "ETH_USDT-5m.feather"),
            "futures": ("futures/BTC_USDT_USDT-5m-futures.feather",
                        "futures/ETH_USDT_USDT-5m-futures.feather")}[mode]
    assert [str(r.path.relative_to(tmp_path)) for r in res.values()] == list(name)
    last = okx.open(1499)
    for (sym, r), pair_id in zip(res.items(), ("BTC-USDT", "ETH-USDT"), strict=True):
        assert got(r.path).equals(want(okx.rows[pair_id], since, last)), sym
        assert r.added == r.total > 1000  # several of OKX's 300-row pages
    # only the one market type asked for was loaded
    kinds = {q.get("instType") for q in okx.fake.requests
             if q["_path"] == "/api/v5/public/instruments"}
    assert kinds == {"SWAP" if mode == "futures" else "SPOT"}
    # the next run asks only for what closed since, and adds it
    okx.clock = okx.now(1502)
    before = len(okx.fake.candle_requests())
    again = fetch_to_store(c, [pair], now_ms=okx.clock)
    assert again[pair].added == 2
    assert len(okx.fake.candle_requests()) - before == 1
    assert got(again[pair].path).equals(want(okx.rows["BTC-USDT"], since, okx.open(1501)))
    # and botopt reads the file back as freqtrade's (futures pair name included)
    back = read_candle_file(again[pair].path, pair)
    assert back.height == again[pair].total


def test_new_symbol_gets_the_latest_thousand_closed_candles(okx, tmp_path):
    res = fetch_to_store(cfg(okx.fake.url, tmp_path), ["BTCUSDT"], now_ms=okx.clock)
    r = res["BTCUSDT"]
    assert r.path.name == "BTC_USDT-5m.feather"  # the joined name mapped by the market list
    first = okx.open(1499) - 999 * STEP
    assert got(r.path).equals(want(okx.rows["BTC-USDT"], first, okx.open(1499)))


def test_binance_through_ccxt_stores_what_the_direct_client_stores(tmp_path):
    rows = sample_rows()
    clock = rows["BTCUSDT"][1500][0] + 120_000
    fake = FakeBinance(rows, now_ms=lambda: clock).start()
    try:
        from botopt.core.data._ccxt import CcxtClient

        base = {"data.exchange_api_url": fake.url, "binance.api_url": fake.url}
        via = load_config(overrides={**base, "data.data_dir": str(tmp_path / "ccxt")})
        direct = load_config(overrides={**base, "data.data_dir": str(tmp_path / "direct")})
        since = when(rows["BTCUSDT"][100][0])
        a = fetch_to_store(via, ["BTC/USDT", "ETHUSDT"], since=since, now_ms=clock,
                           client=CcxtClient(via))
        paths = {q["_path"] for q in fake.requests}
        assert paths == {"/api/v3/exchangeInfo", "/api/v3/klines"}  # spot markets only
        b = fetch_to_store(direct, ["BTC/USDT", "ETHUSDT"], since=since, now_ms=clock)
        for sym in b:
            assert a[sym].path.name == b[sym].path.name
            assert a[sym].total == b[sym].total > 1000
            assert pl.read_ipc(a[sym].path).equals(pl.read_ipc(b[sym].path))
    finally:
        fake.stop()


def test_binance_futures_through_ccxt(tmp_path):
    """USDⓈ-M perpetuals: only /fapi/v1 is asked (no spot, no coin-margined markets), the
    files are freqtrade's futures files, the candles the exchange's."""
    rows = sample_rows()
    clock = rows["BTCUSDT"][1500][0] + 120_000
    fake = FakeBinance(rows, now_ms=lambda: clock).start()
    try:
        c = load_config(overrides={"data.exchange_api_url": fake.url,
                                   "data.data_dir": str(tmp_path),
                                   "data.trading_mode": "futures"})
        since = rows["BTCUSDT"][100][0]
        res = fetch_to_store(c, ["BTC/USDT:USDT", "ETHUSDT"], since=when(since),
                             now_ms=clock)
        assert sorted({q["_path"] for q in fake.requests}) == ["/fapi/v1/exchangeInfo",
                                                                "/fapi/v1/klines"]
        for (sym, r), src in zip(res.items(), ("BTCUSDT", "ETHUSDT"), strict=True):
            assert r.path == tmp_path / "futures" / f"{src[:3]}_USDT_USDT-5m-futures.feather"
            assert got(r.path).equals(want(rows[src], since, rows[src][1499][0])), sym
    finally:
        fake.stop()


@pytest.mark.slow
def test_transient_failures_are_retried_within_the_budget(okx, tmp_path):
    from botopt.core.data._ccxt import CcxtClient

    c = cfg(okx.fake.url, tmp_path)
    waits: list[float] = []
    okx.fake.script[:] = [None, "429", "503", "drop"]  # markets fine, then three faults
    okx.fake.script[0] = (200, {"code": "0", "msg": "",
                                "data": okx.fake._instruments("SPOT")["data"]}, {})
    c3 = cfg(okx.fake.url, tmp_path, **{"binance.max_retries": 3})
    res = fetch_to_store(c3, ["BTC/USDT"], now_ms=okx.clock,
                         client=CcxtClient(c3, sleep=waits.append))
    assert res["BTC/USDT"].total == 1000 and len(waits) == 3
    assert all(0 < w <= 8 for w in waits)
    # past the budget: one line, the exchange and symbol named, a NetworkError (exit 1)
    client = CcxtClient(c, sleep=waits.append)
    client.markets()
    okx.fake.script[:] = ["429"] * 3
    with pytest.raises(NetworkError, match=r"okx spot BTC/USDT \(candles\): rate limited "
                       "after 3 tries") as err:
        fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock + 10 * STEP, client=client)
    assert exit_code_for(err.value) == 1 and "\n" not in str(err.value)
    okx.fake.script[:] = ["503"] * 3
    with pytest.raises(NetworkError, match="unreachable or failing after 3 tries"):
        fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock + 10 * STEP, client=client)
    okx.fake.script[:] = ["429"] * 3  # the market list rate limited too
    with pytest.raises(NetworkError, match=r"okx spot \(markets\): rate limited"):
        fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock, client=CcxtClient(c, sleep=waits.append))


@pytest.mark.slow
def test_an_answer_trickling_in_is_cut_and_retried(okx, tmp_path):
    """The status line and headers a byte every 0.2 s, each read within ccxt's timeout:
    the fetch waited the whole trickle. Each call's answer now has three request timeouts
    (here 3 x 0.6 s), then it is retried as any timeout."""
    from botopt.benchmarks._loopback import DripHead
    from botopt.core.data._ccxt import CcxtClient

    c = cfg(okx.fake.url, tmp_path, **{"binance.connect_timeout": 0.3,
                                       "binance.read_timeout": 0.3})
    client = CcxtClient(c, sleep=lambda s: None)
    client.markets()
    okx.fake.script[:] = [(200, DripHead.of('{"code":"0","msg":"","data":[]}' + " " * 200,
                                            0.2), {})]
    began = time.monotonic()
    res = fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock, client=client)
    assert res["BTC/USDT"].total == 1000
    assert time.monotonic() - began < 15  # the trickle alone lasts 50 s


NEXT = "1789448400000"  # an open time inside the range the second fetch asks for


@pytest.mark.slow
@pytest.mark.parametrize("body", [
    "<html><body>502 Bad Gateway</body></html>",  # a proxy's page with a 200
    '{"code":"0","da',  # cut off
    '{"code":"0","msg":"","data":[["NEXT","NaN","2","0.5","1.5","10","0","0","1"]]}',
    '{"code":"0","msg":"","data":[["NEXT","1","2","0.5","inf","10","0","0","1"]]}',
    '{"code":"0","msg":"","data":[["NEXT"]]}',
])
def test_nonsense_answers_are_one_line_data_errors_and_nothing_is_written(okx, tmp_path,
                                                                          body):
    c = cfg(okx.fake.url, tmp_path)
    fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock)  # a good store first
    path = tmp_path / "BTC_USDT-5m.feather"
    before = path.read_bytes()
    okx.clock = okx.now(1510)
    assert okx.open(1500) == int(NEXT)
    from botopt.core.data._ccxt import CcxtClient

    client = CcxtClient(c, sleep=lambda s: None)
    client.markets()
    okx.fake.script[:] = [(200, body.replace("NEXT", NEXT), {})] * 3
    with pytest.raises((DataError, NetworkError)) as err:
        fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock, client=client)
    msg = str(err.value)
    assert "BTC/USDT" in msg and "okx" in msg and "\n" not in msg and "Traceback" not in msg
    assert path.read_bytes() == before  # the stored file untouched
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("body", [
    '{"code":"0","msg":"","data":{"oops":1}}',
    '{"code":"0","msg":"","data":[["abc","1","2","0.5","1.5","10","0","0","1"]]}',
])
def test_json_of_another_shape_reads_as_no_candles_and_loses_nothing(okx, tmp_path, body):
    """ccxt's parsers read a JSON answer of another shape as an empty page: nothing is
    written, and the next run asks for the same candles again."""
    c = cfg(okx.fake.url, tmp_path)
    fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock)
    okx.clock = okx.now(1510)
    okx.fake.script[:] = [None, (200, body, {})]
    okx.fake.script[0] = (200, okx.fake._instruments("SPOT"), {})
    assert fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock)["BTC/USDT"].added == 0
    assert fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock)["BTC/USDT"].added == 10


def test_symbols_and_exchanges_that_do_not_exist(okx, tmp_path):
    c = cfg(okx.fake.url, tmp_path)
    with pytest.raises(UnknownSymbolError, match="NOPE/USDT is not listed on okx spot"):
        fetch_to_store(c, ["BTC/USDT", "NOPE/USDT"], now_ms=okx.clock)
    assert not list(tmp_path.iterdir())  # every name checked before anything is written
    with pytest.raises(UsageError, match=r"BTC/USDT:USDT is a futures pair.*trading_mode"):
        fetch_to_store(c, ["BTC/USDT:USDT"], now_ms=okx.clock)
    with pytest.raises(ConfigError, match="'nosuchx' is not an exchange ccxt knows") as err:
        fetch_to_store(cfg(okx.fake.url, tmp_path, **{"data.exchange": "nosuchx"}),
                       ["BTC/USDT"], now_ms=okx.clock)
    assert exit_code_for(err.value) == 2
    with pytest.raises(UsageError, match="okx spot has no 7m candles"):
        fetch_to_store(c, ["BTC/USDT"], "7m", now_ms=okx.clock)
    # Binance spot's direct client cannot fetch futures: it says what to set
    with pytest.raises(UsageError, match=r"futures pair.*botopt\[exchanges\]"):
        fetch_to_store(load_config(overrides={"data.data_dir": str(tmp_path)}),
                       ["BTC/USDT:USDT"], now_ms=okx.clock)
    with pytest.raises(ConfigError, match="data.exchange_api_url"):
        cfg("ftp://x", tmp_path)


def test_okx_down_is_a_network_error(okx, tmp_path):
    c = cfg(okx.fake.url, tmp_path, **{"binance.max_retries": 0})
    okx.fake.stop()
    with pytest.raises(NetworkError, match=r"okx spot \(markets\): unreachable"):
        fetch_to_store(c, ["BTC/USDT"], now_ms=okx.clock)
    okx.fake.start()  # for the fixture's stop


def freqtrade_config(tmp_path: Path, url: str) -> Path:
    """freqtrade's own keys, as a futures user on OKX writes them."""
    p = tmp_path / "config.json"
    p.write_text(json.dumps({
        "trading_mode": "futures", "margin_mode": "isolated", "timeframe": "5m",
        "stake_currency": "USDT", "user_data_dir": str(tmp_path / "ud"),
        "exchange": {"name": "okx", "pair_whitelist": ["BTC/USDT:USDT", "ETH/USDT:USDT"]},
    }))
    return p


def test_cli_fetch_for_a_freqtrade_futures_config(okx, tmp_path):
    ft = freqtrade_config(tmp_path, okx.fake.url)
    env = {"BOTOPT_DATA_EXCHANGE_API_URL": okx.fake.url, "BOTOPT_BINANCE_MAX_RETRIES": "1",
           "BOTOPT_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--freqtrade-config", str(ft), "fetch", "--json",
            "--as-of", when(okx.clock).isoformat()]
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    paths = [Path(s["path"]) for s in out["symbols"]]
    assert [p.relative_to(tmp_path / "ud" / "data" / "okx") for p in paths] == [
        Path("futures/BTC_USDT_USDT-5m-futures.feather"),
        Path("futures/ETH_USDT_USDT-5m-futures.feather")]
    assert all(s["added"] == 1000 for s in out["symbols"])


def test_cli_errors_exit_codes(okx, tmp_path):
    env = {"BOTOPT_DATA_EXCHANGE_API_URL": okx.fake.url, "BOTOPT_BINANCE_MAX_RETRIES": "0",
           "BOTOPT_DATA_EXCHANGE": "okx", "BOTOPT_CACHE_DIR": str(tmp_path / "cache")}
    base = ["fetch", "--data-dir", str(tmp_path / "d"), "--as-of", when(okx.clock).isoformat()]
    bad = runner.invoke(app, [*base, "-s", "NOPE/USDT"], env=env)
    assert bad.exit_code == 2 and "NOPE/USDT is not listed on okx spot" in bad.output
    assert "Traceback" not in bad.output
    unknown = runner.invoke(app, [*base, "-s", "BTC/USDT"],
                            env={**env, "BOTOPT_DATA_EXCHANGE": "nosuchx"})
    assert unknown.exit_code == 2 and "not an exchange ccxt knows" in unknown.output
    okx.fake.script[:] = ["429"] * 5
    limited = runner.invoke(app, [*base, "-s", "BTC/USDT"], env=env)
    assert limited.exit_code == 1 and "rate limited" in limited.output


def test_without_the_extra_the_message_names_it(tmp_path):
    """A real process where ccxt cannot be imported (as when the extra is not installed)."""
    code = ("import sys, runpy; sys.modules['ccxt'] = None; "
            f"sys.argv = ['botopt', 'fetch', '--data-dir', {str(tmp_path)!r}, '-s', "
            "'BTC/USDT']; runpy.run_module('botopt.cli.main', run_name='__main__')")
    env = {**os.environ, "BOTOPT_DATA_EXCHANGE": "kraken", "NO_COLOR": "1",
           "BOTOPT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'botopt[exchanges]'" in lines[0], proc.stderr
    assert "kraken" in lines[0] and "Traceback" not in proc.stderr
    # Binance spot needs no extra: the direct client is chosen without importing ccxt
    code2 = ("import sys; sys.modules['ccxt'] = None; "
             "from botopt.core.base._config import load_config; "
             "from botopt.core.data._store import _client; "
             f"print(type(_client(load_config(overrides={{'data.data_dir': {str(tmp_path)!r}}}),"
             " ['BTCUSDT'])).__name__)")
    ok = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True,
                        env=env | {"BOTOPT_DATA_EXCHANGE": "binance"}, timeout=60)
    assert ok.stdout.strip() == "BinanceClient", ok.stderr


@pytest.mark.slow
def test_doctor_names_the_missing_extra_when_botopt_feeds_another_exchange(tmp_path):
    code = ("import sys, runpy; sys.modules['ccxt'] = None; "
            "sys.argv = ['botopt', 'doctor', '--json']; "
            "runpy.run_module('botopt.cli.main', run_name='__main__')")
    base = {**os.environ, "BOTOPT_DATA_SOURCE": "local", "BOTOPT_DATA_DATA_DIR": str(tmp_path),
            "BOTOPT_DATA_FEEDER": "botopt", "BOTOPT_CACHE_DIR": str(tmp_path / "cache"),
            "NO_COLOR": "1"}

    def data_check(**env: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**base, **env}, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        return {c["check"]: c for c in json.loads(proc.stdout)["checks"]}["data"]

    okx = data_check(BOTOPT_DATA_EXCHANGE="okx")
    assert not okx["ok"] and "pip install 'botopt[exchanges]'" in okx["message"]
    assert "okx" in okx["message"]
    # Binance spot needs no extra: the data check goes on to the files (missing here)
    binance = data_check(BOTOPT_DATA_EXCHANGE="binance")
    assert "botopt[exchanges]" not in binance["message"]
