from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_candles, load_config, parse_as_of, parse_symbols
from botopt.core.base._config import interval_ms
from botopt.core.errors import ConfigError, DataError, UnknownSymbolError, UsageError

runner = CliRunner()
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def rows(n: int = 5, step_min: int = 5) -> list[dict]:
    out = []
    for i in range(n):
        p = 100.0 + i
        out.append({"date": (T0 + timedelta(minutes=step_min * i)).isoformat(),
                    "open": p, "high": p + 2, "low": p - 2, "close": p + 1, "volume": 10.0})
    return out


def write_csv(d: Path, symbol: str, data: list[dict], interval: str = "5m") -> Path:
    p = d / f"{symbol}-{interval}.csv"
    pl.DataFrame(data).write_csv(p)
    return p


def invoke_signals(d: Path, *extra: str):
    return runner.invoke(app, ["signals", "--data-dir", str(d), "--as-of", "2030-01-01", *extra])


def cfg_local(d: Path, interval: str = "5m"):
    return load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                  "data.interval": interval})


def test_reads_csv_canonical(tmp_path):
    write_csv(tmp_path, "AAAUSDT", rows())
    df = load_candles(["aaausdt"], config=cfg_local(tmp_path), as_of="2030-01-01")
    assert df.columns == ["symbol", "open_time", "open", "high", "low", "close", "volume"]
    assert df.schema["open_time"] == pl.Datetime("ms", "UTC")
    assert df.height == 5 and df["symbol"].unique().to_list() == ["AAAUSDT"]


@pytest.mark.parametrize(
    "mutate, message, row",
    [
        (lambda r: r.__setitem__(2, {**r[2], "date": r[1]["date"]}), "duplicate open time", 3),
        (lambda r: r.__setitem__(3, {**r[3], "date": r[0]["date"]}), "not sorted", 4),
        (lambda r: r.__setitem__(1, {**r[1], "close": float("nan")}),
         "close is not a finite number", 2),
        (lambda r: r.__setitem__(2, {**r[2], "high": float("inf")}),
         "high is not a finite number", 3),
        (lambda r: r.__setitem__(4, {**r[4], "volume": float("-inf")}),
         "volume is not a finite number", 5),
        (lambda r: r.__setitem__(1, {**r[1], "open": 1e300, "high": 1e300}),
         "open is above 1e+15", 2),
        (lambda r: r.__setitem__(3, {**r[3], "volume": 1e25}), "volume is above 1e+20", 4),
        (lambda r: r.__setitem__(2, {**r[2], "date": None}), "open time is missing", 3),
        (lambda r: r.__setitem__(4, {**r[4], "low": -1.0}), "low is not positive", 5),
        (lambda r: r.__setitem__(2, {**r[2], "high": r[2]["close"] - 0.5}),
         "high is below max(open, close)", 3),
        (lambda r: r.__setitem__(1, {**r[1], "low": r[1]["open"] + 0.5}),
         "low is above min(open, close)", 2),
        (lambda r: r.__setitem__(3, {**r[3], "volume": -5.0}), "volume is negative", 4),
        (lambda r: r.__setitem__(2, {**r[2], "date": (T0 + timedelta(minutes=11)).isoformat()}),
         "not on a 5m boundary", 3),
    ],
)
def test_bad_rows_name_symbol_file_row_and_exit_1(tmp_path, mutate, message, row):
    data = rows()
    mutate(data)
    path = write_csv(tmp_path, "BADUSDT", data)
    with pytest.raises(DataError) as info:
        load_candles(["BADUSDT"], config=cfg_local(tmp_path), as_of="2030-01-01")
    text = str(info.value)
    assert "BADUSDT" in text and str(path) in text and f"row {row} " in text and message in text
    result = invoke_signals(tmp_path, "--symbols", "BADUSDT")
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_file(tmp_path):
    pl.DataFrame(schema={"date": pl.String, "open": pl.Float64, "high": pl.Float64,
                         "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64}
                 ).write_csv(tmp_path / "EMPTYUSDT-5m.csv")
    result = invoke_signals(tmp_path, "-s", "EMPTYUSDT")
    assert result.exit_code == 1 and "EMPTYUSDT" in result.stderr and "no candles" in result.stderr


def test_missing_column_and_garbage_file(tmp_path):
    pl.DataFrame({"date": ["2024-01-01T00:00:00Z"], "open": [1.0]}).write_csv(
        tmp_path / "COLSUSDT-5m.csv")
    result = invoke_signals(tmp_path, "-s", "COLSUSDT")
    assert result.exit_code == 1 and "missing column(s) high" in result.stderr
    (tmp_path / "JUNKUSDT-5m.feather").write_bytes(b"not arrow at all")
    result = invoke_signals(tmp_path, "-s", "JUNKUSDT")
    assert result.exit_code == 1 and "JUNKUSDT-5m.feather" in result.stderr


def test_unknown_symbol_exit_2(tmp_path):
    write_csv(tmp_path, "AAAUSDT", rows())
    with pytest.raises(UnknownSymbolError, match="ZZZUSDT"):
        load_candles(["ZZZUSDT"], config=cfg_local(tmp_path))
    result = invoke_signals(tmp_path, "-s", "AAAUSDT,ZZZUSDT")
    assert result.exit_code == 2 and "symbol ZZZUSDT not found" in result.stderr


@pytest.mark.parametrize("make", ["directory", "broken link", "pipe"])
def test_a_candle_file_that_is_not_a_file_says_so(tmp_path, make):
    """It said "not found ... found instead: candles at 5m (use --interval)" at 5m."""
    import os

    odd = tmp_path / "AAAUSDT-5m.feather"
    if make == "directory":
        odd.mkdir()
    elif make == "broken link":
        odd.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(odd)
    result = invoke_signals(tmp_path, "-s", "AAAUSDT")
    assert result.exit_code == 1, result.stderr
    assert f"{odd} is not a regular file" in result.stderr and "found instead" not in \
        result.stderr


def test_missing_data_dir(tmp_path):
    result = invoke_signals(tmp_path / "nowhere", "-s", "AAAUSDT")
    assert result.exit_code == 1 and "data directory not found" in result.stderr
    (tmp_path / "afile").write_text("not a directory")
    for path in (tmp_path / "afile", Path("/dev/null")):
        result = invoke_signals(path, "-s", "AAAUSDT")  # the flag: click checks it
        assert result.exit_code == 2 and str(path) in result.stderr, result.stderr
        with pytest.raises(ConfigError, match=f"data directory {path} is not a directory"):
            load_candles(["AAAUSDT"], config=cfg_local(path))  # the setting


@pytest.mark.parametrize("args, culprit", [
    (["--interval", "7x"], "data.interval"),
    (["--source", "ftp"], "data.source"),
    (["--as-of", "yesterday-ish"], "--as-of"),
    (["--symbols", "BTC-USDT"], "BTC-USDT"),
    (["--symbols", " , "], "no symbols"),
])
def test_usage_errors_exit_2(tmp_path, args, culprit):
    write_csv(tmp_path, "AAAUSDT", rows())
    result = runner.invoke(app, ["signals", "--data-dir", str(tmp_path), "-s", "AAAUSDT", *args])
    assert result.exit_code == 2, result.output
    assert culprit in result.stderr and "Traceback" not in result.stderr


def test_nothing_closed_yet(tmp_path):
    write_csv(tmp_path, "AAAUSDT", rows())
    result = runner.invoke(app, ["signals", "--data-dir", str(tmp_path), "-s", "AAAUSDT",
                                 "--as-of", "2024-01-01T00:04:59Z"])
    assert result.exit_code == 1 and "no candle closed by" in result.stderr


def test_parse_symbols_normalises():
    assert parse_symbols("btcusdt, ETHUSDT,btcUSDT,,eth_btc") == ["BTCUSDT", "ETHUSDT", "ETH_BTC"]
    with pytest.raises(UsageError):
        parse_symbols("BTC USDT")  # a dash is freqtrade's (BTC-PERP); a space is not


def test_parse_as_of_forms():
    want = datetime(2018, 1, 20, 12, 0, tzinfo=timezone.utc)
    for text in ("2018-01-20T12:00:00Z", "2018-01-20 12:00", "2018-01-20T13:00+01:00",
                 str(int(want.timestamp()))):
        assert parse_as_of(text) == want


@pytest.mark.parametrize("text", ["1516208399.9999999", "1516208399.999999999",
                                  "2018-01-17T16:59:59.9999999Z"])
def test_an_as_of_just_before_a_close_stays_before_it(text):
    """Epoch seconds went through a float: 100 ns before 17:00 rounded up to 17:00 and the
    run answered from the candle that closed then, while the same instant as ISO text was
    cut to the microsecond (sweep G). Both are cut now."""
    got = parse_as_of(text)
    assert got is not None and got < datetime(2018, 1, 17, 17, 0, tzinfo=timezone.utc)
    assert got == datetime(2018, 1, 17, 16, 59, 59, 999_999, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00"])
def test_an_as_of_past_the_calendar_in_utc_says_so(text):
    """Valid ISO 8601 whose UTC time leaves the calendar was told to "use ISO 8601"."""
    with pytest.raises(UsageError, match="outside the calendar in UTC"):
        parse_as_of(text)


def test_interval_lengths():
    assert interval_ms("5m") == 300_000 and interval_ms("1d") == 86_400_000
    assert interval_ms("8m") == 480_000 and interval_ms("2d") == 172_800_000  # local files
    for bad in ("7x", "0m", "m5", "1w", "5"):
        with pytest.raises(UsageError):
            interval_ms(bad)
    # Binance serves only its own intervals
    with pytest.raises(ConfigError, match="data.interval .*unknown interval '8m'"):
        load_config(overrides={"data.source": "binance", "data.interval": "8m"})
    # weeks and months say why, not only "unknown" (sweep G)
    for text, why in (("1w", "weekly candles are not supported"),
                      ("1M", "monthly candles are not supported")):
        with pytest.raises(ConfigError, match=why):
            load_config(overrides={"data.source": "local", "data.data_dir": "/x",
                                   "data.interval": text})


def test_gaps_allowed_and_reported_in_debug(tmp_path):
    data = rows(10)
    del data[4:7]
    write_csv(tmp_path, "GAPUSDT", data)
    result = runner.invoke(app, ["--debug", "signals", "--data-dir", str(tmp_path), "-s",
                                 "GAPUSDT", "--as-of", "2024-01-01T00:50", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "1 gap(s), 3 missing candle(s)" in result.stderr
    assert json.loads(result.stdout)["signals"][0]["candle_time"] == "2024-01-01T00:45:00Z"


def test_local_shared_data_freqtrade_layout(shared_data):
    d = shared_data / "candles" / "5m"
    df = load_candles(["ETH_BTC", "NXT_BTC"], config=cfg_local(d))
    assert set(df["symbol"].unique()) == {"ETH_BTC", "NXT_BTC"}
    assert df.filter(pl.col("symbol") == "NXT_BTC")["close"].max() < 1e-4
    one = load_candles(["UNITTEST_BTC"], config=cfg_local(shared_data / "candles" / "1m", "1m"))
    assert one.height == 13681


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(min_value=0, max_value=20 * 24 * 60))
def test_as_of_never_shows_an_unclosed_candle(shared_data, minutes):
    """signals --json on the real pairs: the candle shown closed by --as-of, and is the last
    one that did."""
    d = shared_data / "candles" / "5m"
    as_of = datetime(2018, 1, 10, 5, 0, tzinfo=timezone.utc) + timedelta(minutes=minutes,
                                                                        seconds=minutes % 7)
    result = runner.invoke(app, ["signals", "--data-dir", str(d), "--symbols",
                                 "ADA_BTC,TRX_BTC,ETH_BTC", "--as-of", as_of.isoformat(),
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["as_of"] == as_of.isoformat().replace("+00:00", "Z")
    for sig in out["signals"]:
        t = datetime.fromisoformat(sig["candle_time"].replace("Z", "+00:00"))
        assert t + timedelta(minutes=5) <= as_of
        raw = pl.read_ipc(d / f"{sig['symbol']}-5m.feather")
        closed = raw.filter(pl.col("date").dt.epoch("ms") + 300_000
                            <= int(as_of.timestamp() * 1000))
        assert closed["date"].max() == t


def test_second_symbol_defect_names_its_own_file_and_row(tmp_path):
    write_csv(tmp_path, "AAAUSDT", rows(7))
    data = rows(6)
    data[4] = {**data[4], "close": float("inf")}
    path = write_csv(tmp_path, "BBBUSDT", data)
    with pytest.raises(DataError) as info:
        load_candles(["AAAUSDT", "BBBUSDT"], config=cfg_local(tmp_path), as_of="2030-01-01")
    assert str(info.value).startswith(f"BBBUSDT ({path}): row 5 ")
    # the same culprit as attributes, for a caller that reacts to it
    assert (info.value.symbol, info.value.file, info.value.row) == ("BBBUSDT", str(path), 5)


def test_null_times_never_hide_unsorted_rows(tmp_path):
    # A null between two rows used to make the sortedness check compare nothing.
    data = rows(5)
    data[1], data[2] = {**data[2]}, {**data[1], "date": None}
    write_csv(tmp_path, "NULLUSDT", data)
    with pytest.raises(DataError, match=r"row 3 \(no time\): open time is missing"):
        load_candles(["NULLUSDT"], config=cfg_local(tmp_path), as_of="2030-01-01")


def test_all_null_date_column_is_a_clean_error(tmp_path):
    df = pl.DataFrame({"date": pl.Series([None, None], dtype=pl.Null),
                       "open": [1.0, 1.0], "high": [1.0, 1.0], "low": [1.0, 1.0],
                       "close": [1.0, 1.0], "volume": [1.0, 1.0]})
    df.write_ipc(tmp_path / "NULLDUSDT-5m.feather")
    result = invoke_signals(tmp_path, "-s", "NULLDUSDT")
    assert result.exit_code == 1 and "NULLDUSDT" in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "feather", "json"])
@pytest.mark.parametrize("scale, kind", [(1_000, "us"), (1_000_000, "ns"), (10**27, "big"),
                                         (0.001, "s")])
def test_integer_times_off_the_calendar_name_the_file_and_row(tmp_path, fmt, scale, kind):
    """Open times in epoch microseconds or nanoseconds, read as milliseconds, land past year
    9999: every command ended in an internal error ("date value out of range"); an integer
    past 64 bits in freqtrade's JSON too. One line now, naming the file and the row, with
    the likely cause (exit 1)."""
    ms = [int((T0 + timedelta(minutes=5 * i)).timestamp() * 1000) for i in range(5)]
    data = [[int(t * scale), 100.0, 102.0, 98.0, 101.0, 10.0] for t in ms]
    path = tmp_path / f"BADUSDT-5m.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(data))
    else:
        if kind == "big":
            pytest.skip("only freqtrade's JSON holds integers past 64 bits")
        frame = pl.DataFrame({"date": [r[0] for r in data],
                              **{c: [r[i + 1] for r in data] for i, c in enumerate(
                                  ("open", "high", "low", "close", "volume"))}})
        frame.write_csv(path) if fmt == "csv" else frame.write_ipc(path)
    result = invoke_signals(tmp_path, "--symbols", "BADUSDT")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert "internal error" not in line and str(path) in line and "row 1" in line, line
    hint = {"us": "epoch microseconds or nanoseconds", "ns": "epoch microseconds or "
            "nanoseconds", "s": "looks like epoch seconds", "big": "epoch milliseconds"}
    assert hint[kind] in line, line


def _frame(n: int = 5) -> pl.DataFrame:
    return pl.DataFrame({"date": [T0 + timedelta(minutes=5 * i) for i in range(n)],
                         "open": [100.0] * n, "high": [102.0] * n, "low": [98.0] * n,
                         "close": [101.0] * n, "volume": [10.0] * n})


@pytest.mark.parametrize("fmt", ["csv", "feather"])
def test_date_and_open_time_that_disagree_are_refused_naming_the_row(tmp_path, fmt):
    """A file with both freqtrade's ``date`` and Binance's ``open_time`` was read by
    ``open_time`` in silence when they disagreed (sweep F, L2): which one is the candle's
    time is a guess. One line naming the file, the row and both times; agreeing columns
    read as before."""
    frame = _frame().with_columns(open_time=pl.col("date").dt.epoch("ms"))
    path = tmp_path / f"BOTHUSDT-5m.{fmt}"
    frame.write_csv(path) if fmt == "csv" else frame.write_ipc(path)
    agreeing = invoke_signals(tmp_path, "--symbols", "BOTHUSDT")
    assert "disagree" not in agreeing.stderr and "internal" not in agreeing.stderr
    moved = frame.with_columns(open_time=pl.when(pl.int_range(pl.len()) == 3)
                               .then(pl.col("open_time") + 300_000)
                               .otherwise(pl.col("open_time")))
    moved.write_csv(path) if fmt == "csv" else moved.write_ipc(path)
    result = invoke_signals(tmp_path, "--symbols", "BOTHUSDT")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and "row 4" in line and "disagree" in line, line


@pytest.mark.parametrize("column", ["volume", "close"])
def test_a_boolean_price_or_volume_column_is_refused_not_read_as_0_and_1(tmp_path, column):
    """A boolean volume (a column of flags written where the volume belongs) was read as
    0 and 1 and gave signals from it (sweep F, L3)."""
    frame = _frame().with_columns(pl.lit(True).alias(column))
    path = tmp_path / "FLAGUSDT-5m.feather"
    frame.write_ipc(path)
    result = invoke_signals(tmp_path, "--symbols", "FLAGUSDT")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and f"column '{column}' holds Boolean" in line, line


@pytest.mark.parametrize("cut", [3, 7])
def test_a_csv_cut_inside_its_last_line_is_refused_not_read_short(tmp_path, cut):
    """A CSV whose last line was cut inside its last field (a writer still appending) read
    the volume 361.481159 as 361.48 and changed the answer in silence (sweep F, M1)."""
    path = write_csv(tmp_path, "CUTUSDT", rows())
    whole = path.read_bytes()
    assert whole.endswith(b"\n")
    path.write_bytes(whole[:-cut])
    result = invoke_signals(tmp_path, "--symbols", "CUTUSDT")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and "last line does not end" in line
    path.write_bytes(whole)  # whole again: read as before
    assert load_candles(["CUTUSDT"], config=cfg_local(tmp_path), as_of="2030-01-01").height == 5


@pytest.mark.parametrize("scale, column, says", [
    (1e-160, "price", "open is below 1e-20"), (1e-23, "price", "is below 1e-20"),
    (1e-200, "volume", "volume is below 1e-20 but not 0"),
])
def test_prices_and_volumes_below_any_market_are_refused(tmp_path, scale, column, says):
    """Prices below about 1e-154 were accepted, their squares underflowed to 0 in the
    variances, and a moving price was blocked as "flat market"; a volume of 1e-200 gave a
    z-score of 0 (sweep I). Below 1e-20 nothing trades: a unit error, named like the
    values above the top. A volume of 0 (no trades) is still read."""
    data = rows(5)
    for r in data:
        if column == "price":
            for k in ("open", "high", "low", "close"):
                r[k] *= scale
        else:
            r["volume"] *= scale
    write_csv(tmp_path, "TINYUSDT", data)
    result = invoke_signals(tmp_path, "-s", "TINYUSDT")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert "TINYUSDT" in line and says in line, line
    for r in data:
        r["volume"] = 0.0 if column == "volume" else r["volume"]
    if column == "volume":
        write_csv(tmp_path, "TINYUSDT", data)
        assert "volume is below" not in invoke_signals(tmp_path, "-s", "TINYUSDT").stderr
