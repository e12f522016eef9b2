"""Many symbols in: ``--symbols @FILE`` and ``--symbols all`` (core.resolve_symbols)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config, resolve_symbols
from botopt.core.errors import UsageError


def _cfg(d: Path, interval: str = "5m"):
    return load_config(overrides={"data.source": "local", "data.data_dir": str(d),
                                  "data.interval": interval})


def test_none_is_the_configured_symbols(tmp_path):
    assert resolve_symbols(None, _cfg(tmp_path)) == list(_cfg(tmp_path).data.symbols)


def test_a_file_of_lines_with_comments_blank_lines_and_repeats(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("# my pairs\nbtc/usdt\n\n  ETH_BTC  # old\nBTC/USDT\nxrp/usdt:usdt\r\nA,B\n")
    assert resolve_symbols(f"@{f}", _cfg(tmp_path)) == \
        ["BTC/USDT", "ETH_BTC", "XRP/USDT:USDT", "A", "B"]


@pytest.mark.parametrize("doc", [["BTC/USDT", "ETH/BTC"], {"pairs": ["BTC/USDT", "ETH/BTC"]}])
def test_freqtrade_pairs_json(tmp_path, doc):
    f = tmp_path / "pairs.json"
    f.write_text(json.dumps(doc))
    assert resolve_symbols(f"@{f}", _cfg(tmp_path)) == ["BTC/USDT", "ETH/BTC"]


@pytest.mark.parametrize(("content", "match"), [
    (b"BTCUSDT\nETH;BTC\n", r"pairs\.txt, line 2: invalid symbol 'ETH;BTC'"),
    (b'["BTCUSDT", "bad pair"]', r"pairs\.txt, item 2: invalid symbol 'bad pair'"),
    (b'{"pairs": "BTCUSDT"}', r"pairs\.txt: JSON must be a list"),
    (b'["BTCUSDT", 3]', r"pairs\.txt: JSON must be a list"),
    (b"[BTCUSDT", r"pairs\.txt: not valid JSON"),
    (b"# nothing\n\n", r"pairs\.txt: no symbols in it"),
    (b"BTC\xff\xfeUSDT\n", r"pairs\.txt: not UTF-8 text \(byte 3\)"),
    (b"BTCUSDT\x00\n", r"pairs\.txt, line 1: invalid symbol"),
])
def test_bad_files_are_refused_in_one_line_naming_file_and_line(tmp_path, content, match):
    f = tmp_path / "pairs.txt"
    f.write_bytes(content)
    with pytest.raises(UsageError, match=match) as e:
        resolve_symbols(f"@{f}", _cfg(tmp_path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("given", ["ETH_BTC,ETH/BTC", "eth/btc,ETH_BTC",
                                   "btc_usdt,BTC/USDT"])
def test_one_pair_spelled_two_ways_is_refused_naming_both(tmp_path, given):
    """ETH/BTC and ETH_BTC read one candle file: as two symbols the pair was judged beside
    itself (its own correlation blocking the copy) and counted twice, in silence."""
    first, second = (s.upper() for s in given.split(","))
    with pytest.raises(UsageError, match=f"{first} and {second} are the same pair"):
        resolve_symbols(given, _cfg(tmp_path))
    f = tmp_path / "pairs.txt"
    f.write_text(given.replace(",", "\n"))
    with pytest.raises(UsageError, match="same pair"):
        resolve_symbols(f"@{f}", _cfg(tmp_path))
    result = CliRunner().invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals",
                                      "--symbols", given])
    assert result.exit_code == 2 and "same pair: name it once" in result.stderr


def test_a_spot_and_a_futures_pair_of_one_name_are_two_files(tmp_path):
    assert resolve_symbols("XRP_USDT_USDT,XRP/USDT:USDT", _cfg(tmp_path)) == \
        ["XRP_USDT_USDT", "XRP/USDT:USDT"]


def test_a_missing_directory_or_huge_file_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.txt: No such file"):
        resolve_symbols(f"@{tmp_path / 'nope.txt'}", _cfg(tmp_path))
    with pytest.raises(UsageError, match="symbols file"):
        resolve_symbols(f"@{tmp_path}", _cfg(tmp_path))  # a directory
    big = tmp_path / "big.txt"
    big.write_bytes(b"BTCUSDT\n" * (1 << 20))  # 8 MiB
    with pytest.raises(UsageError, match="larger than 4 MiB"):
        resolve_symbols(f"@{big}", _cfg(tmp_path))


def test_ten_thousand_symbols_from_a_file(tmp_path):
    names = [f"S{k}USDT" for k in range(10_000)]
    f = tmp_path / "pairs.txt"
    f.write_text("\n".join(names))
    assert resolve_symbols(f"@{f}", _cfg(tmp_path)) == names


def test_all_lists_the_interval_spot_and_futures_and_skips_the_rest(tmp_path):
    for name in ("BTC_USDT-5m.feather", "ETH_BTC-5m.parquet", "ETH_BTC-5m.csv",
                 "ADA_BTC-1h.feather", "ADA_BTC-5m.h5", "ADA_BTC-trades.feather",
                 "notes.txt", "DOT_USDT-5m-mark.feather"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "futures").mkdir()
    for name in ("XRP_USDT_USDT-5m-futures.feather", "XRP_USDT_USDT-5m-mark.feather"):
        (tmp_path / "futures" / name).write_bytes(b"")
    assert resolve_symbols("all", _cfg(tmp_path)) == ["BTC_USDT", "ETH_BTC", "XRP/USDT:USDT"]
    assert resolve_symbols(" ALL ", _cfg(tmp_path, "1h")) == ["ADA_BTC"]
    with pytest.raises(UsageError, match=r"no 15m candle files in"):
        resolve_symbols("all", _cfg(tmp_path, "15m"))


def test_all_with_binance_says_what_it_needs():
    cfg = load_config(overrides={"data.source": "binance"})
    with pytest.raises(UsageError, match="data.source is binance"):
        resolve_symbols("all", cfg)


def test_all_on_the_real_pairs_runs_the_same_as_listing_them(shared_data, tmp_path):
    d = shared_data / "candles" / "5m"
    listed = sorted(p.name.split("-")[0] for p in d.glob("*-5m.feather"))
    assert resolve_symbols("all", _cfg(d)) == listed
    f = tmp_path / "pairs.json"
    f.write_text(json.dumps({"pairs": [s.replace("_", "/") for s in listed]}))
    runner = CliRunner()
    base = ["--cache-dir", str(tmp_path / "c"), "correlations", "--data-dir", str(d),
            "--source", "local", "--json"]
    outs = [runner.invoke(app, [*base, "--symbols", arg])
            for arg in ("all", ",".join(listed), f"@{f}")]
    for r in outs:
        assert r.exit_code == 0, r.output
    docs = [json.loads(r.stdout) for r in outs]
    assert docs[0]["matrix"] == docs[1]["matrix"] == docs[2]["matrix"]
    bad = runner.invoke(app, [*base, "--symbols", f"@{tmp_path / 'none.txt'}"])
    assert bad.exit_code == 2 and "none.txt" in bad.output


def test_backtest_takes_a_file_and_all_as_its_help_says(shared_data, tmp_path):
    """`botopt backtest --symbols` shares its help with the other commands (@FILE, all): it
    read both as symbol names ("symbol ALL not found")."""
    d = shared_data / "candles" / "5m"
    listed = sorted(p.name.split("-")[0] for p in d.glob("*-5m.feather"))[:3]
    f = tmp_path / "pairs.txt"
    f.write_text("\n".join(listed) + "\n")
    runner = CliRunner()
    base = ["--cache-dir", str(tmp_path / "c"), "backtest", "--data-dir", str(d),
            "--since", "2018-01-20T07:00", "--until", "2018-01-20T09:00", "--json"]
    outs = [runner.invoke(app, [*base, "--symbols", arg]) for arg in (",".join(listed),
                                                                      f"@{f}")]
    for r in outs:
        assert r.exit_code == 0, r.output
    a, b = (json.loads(r.stdout) for r in outs)
    assert a["symbols"] == b["symbols"] == listed and a["overall"] == b["overall"]
    every = runner.invoke(app, [*base, "--symbols", "all"])
    assert every.exit_code == 0, every.output
    assert json.loads(every.stdout)["symbols"] == sorted(p.name.split("-")[0]
                                                         for p in d.glob("*-5m.feather"))
    bad = runner.invoke(app, [*base, "--symbols", f"@{tmp_path / 'none.txt'}"])
    assert bad.exit_code == 2 and "none.txt" in bad.output


def test_cron_keeps_a_file_and_all_for_each_run(tmp_path, monkeypatch):
    """`botopt cron --symbols all` / `@FILE` print lines that read the directory or the file
    at each run (pairs added later are picked up), the file's path absolute; a file that
    cannot be read stops it now, as every run would stop."""
    data = tmp_path / "data"
    data.mkdir()
    for s in ("BTC_USDT", "ETH_USDT"):
        (data / f"{s}-5m.feather").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text("BTC/USDT\n")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["--cache-dir", str(tmp_path / "c"), "cron", "--log-dir", str(tmp_path / "logs")]
    env = {"BOTOPT_DATA_SOURCE": "local", "BOTOPT_DATA_DATA_DIR": str(data)}
    every = runner.invoke(app, [*base, "--symbols", "all"], env=env)
    assert every.exit_code == 0, every.output
    signals = [x for x in every.stdout.splitlines() if " signals " in x and
               not x.startswith("#")]
    assert len(signals) == 1 and "--symbols all " in signals[0]
    listed = runner.invoke(app, [*base, "--symbols", "@pairs.txt"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"--symbols @{tmp_path / 'pairs.txt'} " in listed.stdout
    assert "BTC/USDT" not in listed.stdout  # the file is read by each run, not copied
    bad = runner.invoke(app, [*base, "--symbols", "@none.txt"], env=env)
    assert bad.exit_code == 2 and "none.txt" in bad.output
    plain = runner.invoke(app, [*base, "--symbols", "btc/usdt,ETH_USDT"], env=env)
    assert plain.exit_code == 0 and "--symbols BTC/USDT,ETH_USDT " in plain.stdout
