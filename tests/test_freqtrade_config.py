"""freqtrade's config.json as botopt's source of pairs, timeframe, exchange, trading mode and
data folder, read by freqtrade's own rules (comments, add_config_files, user_data_dir)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config
from botopt.core.base._freqtrade import read_freqtrade_config, strip_json_extras
from botopt.core.errors import ConfigError

runner = CliRunner()

# freqtrade's documented config format (docs/configuration.md), with its comments.
FT_CONFIG = """{
    // freqtrade allows comments
    "max_open_trades": 3,
    "stake_currency": "BTC",
    "timeframe": "5m",  /* and block comments */
    "dry_run": true,
    "exchange": {
        "name": "Binance",
        "key": "your_exchange_key",
        "secret": "your_exchange_secret",
        "pair_whitelist": ["ETH/BTC", "LTC/BTC", "XLM/BTC",],
        "pair_blacklist": ["DOGE/BTC"],
    },
    "pairlists": [{"method": "StaticPairList"}],
    "telegram": {"enabled": false, "token": "a//b", "chat_id": "/*x*/"},
}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=20)


@given(json_values)
def test_plain_json_passes_through_unchanged(value):
    text = json.dumps(value, ensure_ascii=False)
    assert json.loads(strip_json_extras(text)) == value


@given(st.dictionaries(st.text(), st.lists(st.integers(), max_size=3), min_size=1, max_size=4),
       st.text(alphabet=st.characters(blacklist_characters="\n\r*/"), max_size=20))
def test_comments_and_trailing_commas_are_ignored(value, comment):
    """Comments after every comma and a trailing comma in every array and object read as
    the plain JSON does (rapidjson's PM_COMMENTS | PM_TRAILING_COMMAS)."""
    body = ", // " + comment + "\n"
    text = "{ /*" + comment + "*/ " + body.join(
        f"{json.dumps(k)}: [{''.join(f'{i}, ' for i in v)}]" for k, v in value.items()) + ",\n}"
    assert json.loads(strip_json_extras(text)) == value


def test_freqtrades_documented_format_is_read(tmp_path):
    cfg = write(tmp_path / "config.json", FT_CONFIG)
    ft = read_freqtrade_config(cfg, cwd=tmp_path)
    assert ft.exchange == "binance"  # freqtrade lower-cases the folder name
    assert ft.pairs == ("ETH/BTC", "LTC/BTC", "XLM/BTC")
    assert ft.timeframe == "5m" and ft.trading_mode == "spot"
    # datadir: <cwd>/user_data/data/<exchange> (user_data_dir defaults to ./user_data)
    assert ft.data_dir == tmp_path / "user_data" / "data" / "binance"


def test_add_config_files_merge_in_freqtrades_order(tmp_path):
    """Sub-files are relative to the file naming them; a later one overrides an earlier one
    and the naming file overrides both (freqtrade's load_from_files)."""
    write(tmp_path / "sub" / "a.json", '{"timeframe": "1h", "exchange": {"name": "kraken",'
          ' "pair_whitelist": ["BTC/USD"]}, "user_data_dir": "/srv/ud"}')
    write(tmp_path / "sub" / "b.json", '{"timeframe": "15m", "trading_mode": "futures"}')
    main = write(tmp_path / "sub" / "main.json",
                 '{"add_config_files": ["a.json", "b.json"], "exchange": {"name": "OKX"}}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ft = read_freqtrade_config(main, cwd=elsewhere)
    assert ft.timeframe == "15m"  # b over a
    assert ft.exchange == "okx"  # the main file over both
    assert ft.pairs == ("BTC/USD",)  # nested objects merged, not replaced
    assert ft.trading_mode == "futures"
    assert ft.data_dir == Path("/srv/ud/data/okx")


def test_a_config_that_adds_itself_is_a_loop(tmp_path):
    # freqtrade's own tests/testdata/testconfigs/recursive.json
    cfg = write(tmp_path / "recursive.json", '{\n    // This file fails as it\'s loading '
                'itself over and over\n    "add_config_files": [\n        "./recursive.json"'
                '\n    ]\n}\n')
    with pytest.raises(ConfigError, match="deeper than 5 levels"):
        read_freqtrade_config(cfg)


def test_relative_user_data_dir_is_taken_from_the_working_directory(tmp_path):
    cfg = write(tmp_path / "conf" / "c.json", '{"exchange": {"name": "binance", '
                '"pair_whitelist": ["ETH/BTC"]}, "user_data_dir": "ud"}')
    assert read_freqtrade_config(cfg, cwd=tmp_path).data_dir == tmp_path / "ud/data/binance"


@pytest.mark.parametrize("text, culprit", [
    ("{", "invalid JSON"),
    ("[1, 2]", "top level is not an object"),
    ('{"exchange": {"name": ""}}', "exchange.name is empty"),
    ('{"exchange": {"name": 7}}', "exchange.name must be a string"),
    ('{"exchange": "binance"}', "exchange must be an object"),
    ('{"exchange": {"name": "x", "pair_whitelist": "ETH/BTC"}}', "pair_whitelist must be"),
    ('{"exchange": {"name": "x"}, "trading_mode": "options"}', "trading_mode 'options'"),
    ('{"add_config_files": "x.json"}', "add_config_files must be a list"),
    ('{"add_config_files": ["missing.json"]}', "missing.json: not found"),
    ('{"a": "\\u0000 /* unterminated', "invalid JSON"),
    ("/* never closed", "invalid JSON"),
])
def test_broken_configs_name_the_file_and_key(tmp_path, text, culprit):
    cfg = write(tmp_path / "c.json", text)
    with pytest.raises(ConfigError, match=culprit.replace("(", r"\(")) as err:
        read_freqtrade_config(cfg)
    assert "\n" not in str(err.value)


def test_odd_bytes_are_a_config_error(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b'{"exchange": {"name": "\xff\xfe"}}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_freqtrade_config(cfg)


def test_botopt_settings_override_freqtrades(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ft" / "config.json", FT_CONFIG)
    toml = write(tmp_path / "botopt.toml", '[data]\nfreqtrade_config = "ft/config.json"\n'
                 'symbols = ["ETH/BTC"]\n')
    cfg = load_config(toml, overrides={"data.interval": "1h"})
    assert cfg.data.freqtrade_config == tmp_path / "ft" / "config.json"  # beside the toml
    assert cfg.data.symbols == ("ETH/BTC",)  # botopt.toml wins
    assert cfg.data.interval == "1h"  # the flag wins
    assert cfg.data.source == "local" and cfg.data.exchange == "binance"
    assert cfg.data.data_dir == tmp_path / "user_data" / "data" / "binance"
    assert cfg.sources["data.data_dir"] == f"freqtrade:{tmp_path / 'ft' / 'config.json'}"


def test_an_empty_whitelist_asks_for_symbols(tmp_path):
    ft = write(tmp_path / "c.json", '{"exchange": {"name": "binance", "pair_whitelist": []},'
               ' "pairlists": [{"method": "VolumePairList"}]}')
    with pytest.raises(ConfigError, match="pair_whitelist is empty"):
        load_config(overrides={"data.freqtrade_config": str(ft)})
    cfg = load_config(overrides={"data.freqtrade_config": str(ft), "data.symbols": "BTC/USDT"})
    assert cfg.data.symbols == ("BTC/USDT",)


def test_signals_with_the_freqtrade_config_reads_its_folder(tmp_path, shared_data,
                                                            monkeypatch, cache_dir):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "config.json", FT_CONFIG)
    data = tmp_path / "user_data" / "data" / "binance"
    data.mkdir(parents=True)
    for pair in ("ETH_BTC", "LTC_BTC", "XLM_BTC"):
        shutil.copy(shared_data / "candles" / "5m" / f"{pair}-5m.feather", data)
    # the global option after the command, as freqtrade users type it
    res = runner.invoke(app, ["signals", "--freqtrade-config", "config.json", "--cache-dir",
                              str(cache_dir), "--as-of", "2018-01-29T00:00", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {r["symbol"] for r in out["signals"]} == {"ETH/BTC", "LTC/BTC", "XLM/BTC"}


def test_futures_mode_reads_the_futures_folder(tmp_path, shared_data, cache_dir):
    write(tmp_path / "c.json", '{"trading_mode": "futures", "margin_mode": "isolated", '
          '"timeframe": "5m", "exchange": {"name": "binance", "pair_whitelist": '
          '["ETH/BTC:BTC"]}, "user_data_dir": "' + str(tmp_path / "ud") + '"}')
    fut = tmp_path / "ud" / "data" / "binance" / "futures"
    fut.mkdir(parents=True)
    shutil.copy(shared_data / "candles" / "5m" / "ETH_BTC-5m.feather",
                fut / "ETH_BTC_BTC-5m-futures.feather")
    res = runner.invoke(app, ["--freqtrade-config", str(tmp_path / "c.json"), "--cache-dir",
                              str(cache_dir), "signals", "--as-of", "2018-01-29T00:00",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert [r["symbol"] for r in json.loads(res.stdout)["signals"]] == ["ETH/BTC:BTC"]


def test_a_missing_freqtrade_config_exits_2_with_one_line(tmp_path):
    res = runner.invoke(app, ["--freqtrade-config", str(tmp_path / "nope.json"), "signals"])
    assert res.exit_code == 2
    assert "nope.json: not found" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["--freqtrade-config", str(tmp_path / "nope.json"), "doctor"])
    assert res.exit_code == 1 and "FAIL config" in res.stdout
