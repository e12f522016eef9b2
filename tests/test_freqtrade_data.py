"""freqtrade's data directory as botopt's: every OHLCV format, futures, and the files that are
not candles, on a lookalike of freqtrade's tests/testdata generated here."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_candles, load_config, parse_symbols
from botopt.core.data._candles import (
    candle_file_stem,
    classify_data_file,
    find_candle_file,
    pair_to_filename,
    read_candle_file,
)
from botopt.core.errors import DataError, UnknownSymbolError, UsageError

from .freqtrade_lookalike import CANDLE_FILES, NOT_CANDLES, make_testdata

runner = CliRunner()
AS_OF = "2019-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def testdata(tmp_path_factory) -> tuple[Path, dict[str, pl.DataFrame]]:
    root = tmp_path_factory.mktemp("testdata")
    return root, make_testdata(root)


def cfg(d: Path, interval: str):
    return load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                  "data.interval": interval})


def test_file_names_follow_freqtrades_rule():
    # freqtrade.misc.pair_to_filename: / space . @ $ + : become _
    assert pair_to_filename("ETH/BTC") == "ETH_BTC"
    assert pair_to_filename("XRP/USDT:USDT") == "XRP_USDT_USDT"
    assert pair_to_filename("1000PEPE/USDT") == "1000PEPE_USDT"
    assert candle_file_stem("ETH/BTC", "5m") == "ETH_BTC-5m"
    assert candle_file_stem("XRP/USDT:USDT", "1h") == "futures/XRP_USDT_USDT-1h-futures"
    assert parse_symbols("eth/btc, XRP/USDT:USDT,BTCUSDT") == ["ETH/BTC", "XRP/USDT:USDT",
                                                              "BTCUSDT"]
    for bad in ("BTC-USDT", "BTC/", "/USDT", "XRP/USDT:", "BTC//USDT", "a b"):
        with pytest.raises(UsageError, match="invalid symbol"):
            parse_symbols(bad)


@pytest.mark.parametrize("rel", sorted(CANDLE_FILES))
def test_every_ohlcv_file_reads_back_what_was_written(testdata, rel):
    root, written = testdata
    pair, interval = CANDLE_FILES[rel]
    want = written[rel]
    frames = [read_candle_file(root / rel, pair)]
    found = find_candle_file(root, pair, interval)
    if found == root / rel:
        frames.append(load_candles([pair], config=cfg(root, interval), as_of=AS_OF))
    else:  # freqtrade's data has the same candles twice: the first format in order wins
        assert found.suffix == ".feather" and found.parent == (root / rel).parent
    for df in frames:
        assert df["symbol"].unique().to_list() == [pair]  # as the user typed it
        assert df["open_time"].to_list() == want["date"].to_list()
        for col in ("open", "high", "low", "close", "volume"):
            assert df[col].to_list() == pytest.approx(want[col].to_list(), rel=1e-12)


@pytest.mark.parametrize("rel", sorted(CANDLE_FILES))
def test_every_ohlcv_file_works_as_data_dir_from_the_cli(testdata, rel, tmp_path):
    root, written = testdata
    pair, interval = CANDLE_FILES[rel]
    # The run's clock: just after the file's last candle closed (a later one is stale data).
    last = written[rel]["date"].max()
    step = written[rel]["date"].diff().min()
    res = runner.invoke(app, ["--cache-dir", str(tmp_path), "signals", "--data-dir", str(root),
                              "-s", pair, "-i", interval, "--as-of",
                              (last + step).isoformat(), "--json"])
    assert res.exit_code == 0, res.stderr
    assert [s["symbol"] for s in json.loads(res.stdout)["signals"]] == [pair]


def test_every_file_that_is_not_candles_is_named_as_such(testdata):
    root, _ = testdata
    kinds = {str(p.relative_to(root)): classify_data_file(p)
             for p in root.rglob("*") if p.is_file()}
    for rel in CANDLE_FILES:
        assert kinds[rel][0] in ("candles", "futures-candles"), kinds[rel]
    for rel, what in NOT_CANDLES.items():
        kind, why = kinds[rel]
        if rel.endswith(".h5") and what == "hdf5":
            assert kind == "unsupported" and "freqtrade convert-data" in why
        else:
            assert kind == "not-candles" and f"{what}, not candles" in why, why


def test_non_candle_files_are_never_picked_up_and_are_named_in_the_error(testdata):
    root, _ = testdata
    with pytest.raises(UnknownSymbolError) as err:
        find_candle_file(root, "XRP/USDT:USDT", "8h")
    msg = str(err.value)
    assert "futures/XRP_USDT_USDT-8h-funding_rate.feather: funding rates, not candles" in msg
    assert "futures/XRP_USDT_USDT-8h-mark.feather: mark prices, not candles" in msg
    assert "candles at 1h, 5m (use --interval)" in msg
    with pytest.raises(UnknownSymbolError, match="XRP_ETH-trades.feather: trades, not candles"):
        find_candle_file(root, "XRP/ETH", "1h")
    # the futures file is not read as spot; the error says how to ask for it
    with pytest.raises(UnknownSymbolError, match=r"use --symbols XRP/USDT:USDT"):
        find_candle_file(root, "XRP_USDT_USDT", "5m")


def test_hdf5_only_empty_and_corrupt_files_are_named(tmp_path):
    (tmp_path / "ONLY_BTC-5m.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    res = runner.invoke(app, ["signals", "--data-dir", str(tmp_path), "-s", "ONLY/BTC"])
    assert res.exit_code == 1
    assert "ONLY_BTC-5m.h5 is in freqtrade's hdf5 format" in res.stderr
    assert "freqtrade convert-data --format-from hdf5 --format-to feather" in res.stderr
    cases = {"EMPTY_BTC-5m.feather": (b"", "the file is empty (0 bytes)"),
             "TORN_BTC-5m.feather": (b"ARROW1\x00\x00garbage", "not a valid feather file"),
             "BAD_BTC-5m.json.gz": (b"not gzip", "not a valid json.gz file"),
             "ROWS_BTC-5m.json": (b'[[1514764800000, 1, 2, 0.5, 1.5, 10], [1, "x"]]',
                                  "row 2 is not [date, open, high, low, close, volume]"),
             "EMPTY_BTC-5m.parquet": (b"", "the file is empty (0 bytes)")}
    for name, (blob, message) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataError, match="cannot read candles") as err:
            read_candle_file(tmp_path / name, "X")
        assert name in str(err.value) and message in str(err.value)
        assert (err.value.file, err.value.symbol) == (str(tmp_path / name), "X")
        res = runner.invoke(app, ["signals", "--data-dir", str(tmp_path), "-s",
                                  name.split("-")[0].replace("_", "/")])
        if name.endswith(".parquet"):
            continue  # EMPTY_BTC has a feather file too, read first
        assert res.exit_code == 1 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_binance_and_file_style_names_find_each_others_files(tmp_path, testdata):
    root, written = testdata
    # BTCUSDT-style input finds the BASE_QUOTE file fetch writes, and the reverse
    a = load_candles(["ETHBTC"], config=cfg(root, "5m"), as_of=AS_OF)
    assert a["symbol"].unique().to_list() == ["ETHBTC"] and a.height == 400
    old = tmp_path / "BTCUSDT-5m.feather"
    written["ADA_BTC-5m.feather"].write_ipc(old)
    for sym in ("BTC/USDT", "BTC_USDT", "BTCUSDT"):
        assert find_candle_file(tmp_path, sym, "5m") == old
    # once fetch has written the freqtrade name, every spelling reads that one
    new = tmp_path / "BTC_USDT-5m.feather"
    new.write_bytes(old.read_bytes())
    for sym in ("BTC/USDT", "BTC_USDT", "BTCUSDT"):
        assert find_candle_file(tmp_path, sym, "5m") == new
    (tmp_path / "BT_CUSDT-5m.feather").write_bytes(old.read_bytes())
    with pytest.raises(UsageError, match="matches several files"):
        find_candle_file(tmp_path, "BTCUSDT", "5m")
    assert find_candle_file(tmp_path, "BTC/USDT", "5m") == new  # typed exactly: no doubt
