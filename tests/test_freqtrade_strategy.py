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

datadir, strategy_file, pairs, since, until = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4], sys.argv[5]
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
