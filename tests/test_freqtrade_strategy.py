"""``botopt.core.freqtrade_signals`` inside the real freqtrade from the package index, in a
virtual environment of its own: the example strategy, run through freqtrade's own data loader
and signal pipeline on the real pairs, enters on exactly the candles and directions of botopt's
replay (``botopt backtest``'s passing signals) over the same period."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2026.9"
PAIRS = ["ADA/BTC", "DASH/BTC", "ETC/BTC", "ETH/BTC", "LTC/BTC", "NXT/BTC", "TRX/BTC",
         "XLM/BTC", "XMR/BTC", "ZEC/BTC"]
SINCE, UNTIL = "20180120", "20180122"

_SCRIPT = r"""
import importlib.util, json, sys
from pathlib import Path
from freqtrade.configuration import TimeRange
from freqtrade.data.history import load_pair_history

datadir, strategy_file, pairs, since, until = sys.argv[1:6]
pairs = pairs.split(",")
spec = importlib.util.spec_from_file_location("BotoptStrategy", strategy_file)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
config = {"timeframe": "5m", "datadir": Path(datadir), "stake_currency": "BTC",
          "exchange": {"name": "binance", "pair_whitelist": pairs}, "dry_run": True,
          "runmode": "backtest"}
strategy = mod.BotoptStrategy(config)
out = {}
timerange = TimeRange.parse_timerange(f"{since}-{until}")
for pair in pairs:
    df = load_pair_history(pair=pair, timeframe="5m", datadir=Path(datadir),
                           timerange=timerange, data_format="feather")
    df = strategy.ft_advise_signals(strategy.advise_indicators(df, {"pair": pair}),
                                    {"pair": pair})
    rows = df[(df["enter_long"] == 1) | (df["enter_short"] == 1)]
    out[pair] = [[int(r.date.timestamp() * 1000), "long" if r.enter_long == 1 else "short",
                  r.enter_tag] for r in rows.itertuples()]
print(json.dumps(out))
"""


def _venv() -> Path:
    """freqtrade VERSION and this botopt in a venv cached by version (re-runs are fast)."""
    base = Path(tempfile.gettempdir()) / f"botopt-freqtrade-{VERSION}"
    python = base / "bin" / "python"
    if (base / "ready").is_file():
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e",
                        str(ROOT)], check=True, capture_output=True, timeout=600)
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(base)], check=True, timeout=120)
        for args in (["freqtrade==" + VERSION], ["-e", str(ROOT)]):
            subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True,
                           capture_output=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        why = f"cannot install freqtrade {VERSION}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run the freqtrade test)")
        pytest.skip(why)
    (base / "ready").write_text(VERSION)
    return python


@pytest.mark.slow
def test_real_freqtrade_enters_on_botopt_replays_passing_signals(shared_data, tmp_path):
    python = _venv()
    datadir = shared_data / "candles" / "5m"
    env = {**os.environ, "BOTOPT_CACHE_DIR": str(tmp_path / "ft-cache")}
    env.pop("BOTOPT_CONFIG", None)
    done = subprocess.run([str(python), "-c", _SCRIPT, str(datadir),
                           str(ROOT / "docs" / "examples" / "BotoptStrategy.py"),
                           ",".join(PAIRS), SINCE, UNTIL], capture_output=True, text=True,
                          env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    entered = json.loads(done.stdout.strip().splitlines()[-1])

    from botopt.core import load_config, replay

    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(datadir),
                                 "data.interval": "5m", "cache.dir": str(tmp_path / "c")},
                      env={})
    t0 = datetime.strptime(SINCE, "%Y%m%d").replace(tzinfo=timezone.utc)
    t1 = datetime.strptime(UNTIL, "%Y%m%d").replace(tzinfo=timezone.utc)
    rep = replay(cfg, PAIRS, t0, t1)
    passed = rep.candidates.filter(rep.candidates["gate_passed"])
    want = sorted((r["symbol"].replace("_", "/"), int(r["candle_time"].timestamp() * 1000),
                   r["direction"], f"{r['engine']}:{r['regime']}")
                  for r in passed.iter_rows(named=True))
    end = int(t1.timestamp() * 1000)  # freqtrade's timerange may include the end candle
    got = sorted((pair, ms, d, tag) for pair, rows in entered.items()
                 for ms, d, tag in rows if ms < end)
    assert want, "the period must hold passing signals for the comparison to mean anything"
    assert got == want


def _exchange_info(pairs: list[str]) -> dict:
    """Binance's GET /api/v3/exchangeInfo for ``pairs``, shaped as the real one (the fields
    ccxt's binance parser reads): all freqtrade needs from an exchange to backtest."""
    def symbol(pair: str) -> dict:
        base, quote = pair.split("/")
        return {"symbol": base + quote, "status": "TRADING", "baseAsset": base,
                "baseAssetPrecision": 8, "quoteAsset": quote, "quotePrecision": 8,
                "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                               "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.00000001",
                     "maxPrice": "1000.00000000", "tickSize": "0.00000001"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00100000",
                     "maxQty": "100000000.00000000", "stepSize": "0.00100000"},
                    {"filterType": "NOTIONAL", "minNotional": "0.00010000",
                     "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                     "applyMaxToMarket": False, "avgPriceMins": 5}],
                "permissions": [], "permissionSets": [["SPOT"]]}
    return {"timezone": "UTC", "serverTime": 1516406400000, "rateLimits": [],
            "exchangeFilters": [], "symbols": [symbol(p) for p in pairs]}


@pytest.mark.slow
def test_freqtrade_backtesting_trades_enter_after_botopt_replays_long_signals(
        shared_data, tmp_path):
    """`freqtrade backtesting` itself (a real process) with the example strategy: its trades
    open at the open of the candle after each passing long signal, with its tag. Set so every
    signal can trade: no cap on open trades and an exit on the entry candle (a negative ROI),
    so no open trade hides the next signal. Spot only: shorts need freqtrade's futures mode
    (the test above checks them through freqtrade's signal pipeline)."""
    import threading
    import zipfile
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    python = _venv()
    info = json.dumps(_exchange_info(PAIRS)).encode()

    class Exchange(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/api/v3/exchangeInfo"
            body = info if ok else b'{"code": -1121, "msg": "Invalid symbol."}'
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Exchange)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    ccxt = {"urls": {"api": {"public": url, "private": url}},
            "options": {"fetchMarkets": ["spot"]}}
    datadir = shared_data / "candles" / "5m"
    user = tmp_path / "user_data"
    (user / "strategies").mkdir(parents=True)
    (user / "strategies" / "BotoptStrategy.py").write_text(
        (ROOT / "docs" / "examples" / "BotoptStrategy.py").read_text())
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "max_open_trades": -1, "stake_currency": "BTC", "stake_amount": 0.001,
        "dry_run": True, "dry_run_wallet": 1000, "timeframe": "5m", "trading_mode": "spot",
        "minimal_roi": {"0": -1}, "dataformat_ohlcv": "feather",
        "exchange": {"name": "binance", "pair_whitelist": PAIRS, "ccxt_config": ccxt,
                     "ccxt_async_config": ccxt},
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "same"}, "exit_pricing": {"price_side": "same"}}))
    env = {**os.environ, "BOTOPT_CACHE_DIR": str(tmp_path / "ft-cache")}
    env.pop("BOTOPT_CONFIG", None)
    try:
        done = subprocess.run(
            [str(python), "-m", "freqtrade", "backtesting", "-c", str(config), "--userdir",
             str(user), "--datadir", str(datadir), "--strategy", "BotoptStrategy",
             "--timerange", f"{SINCE}-{UNTIL}", "--export", "trades"],
            capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    finally:
        server.shutdown()
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    archive, = (user / "backtest_results").glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        name, = [n for n in z.namelist() if n.endswith(".json") and "_config" not in n]
        trades = json.loads(z.read(name))["strategy"]["BotoptStrategy"]["trades"]
    got = sorted((t["pair"], t["open_date"], t["enter_tag"], t["is_short"]) for t in trades)

    from botopt.core import load_config, replay

    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(datadir),
                                 "data.interval": "5m", "cache.dir": str(tmp_path / "c")},
                      env={})
    t0 = datetime.strptime(SINCE, "%Y%m%d").replace(tzinfo=timezone.utc)
    t1 = datetime.strptime(UNTIL, "%Y%m%d").replace(tzinfo=timezone.utc)
    rep = replay(cfg, PAIRS, t0, t1)
    longs = rep.candidates.filter(rep.candidates["gate_passed"]
                                  & (rep.candidates["direction"] == "long"))
    step = 300  # freqtrade enters at the next candle's open
    want = sorted((r["symbol"], datetime.fromtimestamp(r["candle_time"].timestamp() + step,
                                                       timezone.utc).isoformat(sep=" "),
                   f"{r['engine']}:{r['regime']}", False)
                  for r in longs.iter_rows(named=True)
                  if r["candle_time"].timestamp() + step < t1.timestamp())
    assert want, "the period must hold passing long signals"
    assert got == want


_HOSTILE = r"""
import json, sys
import pandas as pd
import polars as pl
from botopt.core import freqtrade_signals
from botopt.core.errors import BotoptError

datadir = sys.argv[1]
raw = pl.read_ipc(f"{datadir}/ETH_BTC-5m.feather")
base = pd.DataFrame({c: raw[c].to_numpy() for c in raw.columns})
base["date"] = pd.to_datetime(base["date"], utc=True)
base = base[(base.date >= "2018-01-20") & (base.date < "2018-01-21")].reset_index(drop=True)
cfg = {"datadir": datadir, "timeframe": "5m",
       "exchange": {"pair_whitelist": ["ETH/BTC", "LTC/BTC"]}}
shifted = base.copy()
shifted["date"] = shifted["date"] + pd.Timedelta(minutes=2)
text = base.copy()
text["date"] = text["date"].astype(str)
cases = {
    "no date column": (base.drop(columns=["date"]), {"pair": "ETH/BTC"}, cfg),
    "date as index": (base.set_index("date"), {"pair": "ETH/BTC"}, cfg),
    "dates as text": (text, {"pair": "ETH/BTC"}, cfg),
    "reversed": (base.iloc[::-1], {"pair": "ETH/BTC"}, cfg),
    "off the grid": (shifted, {"pair": "ETH/BTC"}, cfg),
    "a polars frame": (raw, {"pair": "ETH/BTC"}, cfg),
    "a dict": (base.to_dict("list"), {"pair": "ETH/BTC"}, cfg),
    "botopt_config not a path": (base.copy(), {"pair": "ETH/BTC"}, {**cfg, "botopt_config": 5}),
}
out = {}
for name, (df, md, c) in cases.items():
    try:
        freqtrade_signals(df, md, c)
        out[name] = "ok"
    except BotoptError as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # what the test is there to catch
        out[name] = f"LEAKED {type(exc).__name__}: {exc}"
spelled = {}
for pair in ("ETH/BTC", "ETH_BTC"):
    df = freqtrade_signals(base.copy(), {"pair": pair}, cfg)
    spelled[pair] = [int(df["enter_long"].sum()), int(df["enter_short"].sum())]
print(json.dumps({"errors": out, "spelled": spelled}))
"""


@pytest.mark.slow
def test_hostile_dataframes_get_a_botopt_error_naming_the_culprit(shared_data, tmp_path):
    """Frames freqtrade never makes, through real pandas: each a botopt error naming the
    column, row or key (they leaked KeyError, AttributeError and TypeError from pandas and
    pathlib, or matched no signal in silence); the pair spelled as its file name is the
    whitelist's pair (it judged a second copy of the pair and passed nothing)."""
    python = _venv()
    env = {**os.environ, "BOTOPT_CACHE_DIR": str(tmp_path / "ft-cache")}
    env.pop("BOTOPT_CONFIG", None)
    done = subprocess.run([str(python), "-c", _HOSTILE, str(shared_data / "candles" / "5m")],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    errors = got["errors"]
    assert not [k for k, v in errors.items() if v == "ok" or v.startswith("LEAKED")], errors
    assert "'date' column" in errors["no date column"] == errors["date as index"]
    assert "not dates" in errors["dates as text"]
    assert "row 1: dates are not ascending" in errors["reversed"]
    assert "row 0" in errors["off the grid"] and "5m candle boundary" in errors["off the grid"]
    assert "pandas dataframe" in errors["a polars frame"] and "dict" in errors["a dict"]
    assert "botopt_config" in errors["botopt_config not a path"]
    assert got["spelled"]["ETH_BTC"] == got["spelled"]["ETH/BTC"] != [0, 0]
