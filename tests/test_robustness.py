"""No internal error on any input: formatters that keep every field, settings with bounds,
redaction of any token shape, and the hostile inputs of issue 13, each a one-line error."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import load_config
from botopt.core.base._config import BOUNDS, SECTIONS
from botopt.core.base._numfmt import fmt_price, fmt_time, parse_time
from botopt.core.base._redact import redact, register_secret
from botopt.core.delivery._notify_format import FORMATTERS, render_batch, value_text
from botopt.core.errors import ConfigError, DataError, NetworkError

from .fakes.binance_server import FakeBinance
from .fakes.telegram_server import parse_entities

runner = CliRunner()

# -- formatters -----------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-10**15, 10**15)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=6)


def shown(kind: str, data: dict) -> str:
    messages = render_batch(kind, [("1", data)])
    return "".join(parse_entities(m.text) if m.parse_mode else m.text for m in messages)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([*FORMATTERS, "my_own_type"]),
       st.dictionaries(st.sampled_from(["symbol", "pair", "side", "direction", "close",
                                        "price", "amount", "open_rate", "profit_ratio",
                                        "message", "error", "old", "new", "strength",
                                        "probability", "engine", "regime", "candle_time",
                                        "note", "marker"]) | st.text(max_size=12),
                       json_values, max_size=8))
def test_every_value_appears_exactly_as_given(kind, data):
    """Nothing is dropped: each value appears in full, or, for the numbers a layout shows for
    people to read (issue 27: prices to the exchange's digits, strengths and probabilities to
    two decimals), in that readable form."""
    text = shown(kind, data)
    for key, value in data.items():
        forms = {value_text(value)}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            forms |= {f"{value:.2f}", fmt_price(float(value))}
        when = parse_time(value) if key == "candle_time" else None
        if when is not None:  # issue 27: a time is shown as HH:MM in the message's zone
            forms.add(fmt_time(when))
        assert any(f in text for f in forms), (key, value, text)


def test_signal_and_freqtrade_trade_fields_are_kept():
    sig = shown("signal", {"marker": "x", "note": "y"})
    assert "marker: x" in sig and "note: y" in sig
    trade = shown("trade_exited", {"pair": "ETH/USDT", "amount": 0.25, "open_rate": 3012.5,
                                   "close_rate": 3100.0, "profit_ratio": 0.0291,
                                   "exit_reason": "roi", "trade_id": 7, "strategy": "S1"})
    for part in ("ETH/USDT", "amount 0.25", "open rate 3012.5", "close rate 3100.0",
                 "profit ratio 0.0291", "exit reason roi", "trade 7", "strategy: S1"):
        assert part in trade
    alert = shown("alert", {"message": 'say "hi"', "code": 3})
    assert 'say "hi"' in alert and '\\"' not in alert and "code: 3" in alert


# -- settings -------------------------------------------------------------------------------

NUMERIC = [f"{sec}.{f.name}" for sec, cls in SECTIONS.items()
           for f in dataclasses.fields(cls) if f.type in ("int", "float", int, float)]


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300"])
def test_every_number_refuses_non_finite_and_absurd_values(key, value):
    sec, name = key.split(".")
    var = f"BOTOPT_{sec.upper()}_{name.upper()}"
    with pytest.raises(ConfigError) as info:
        load_config(env={var: value})
    assert key in str(info.value) and "Traceback" not in str(info.value)


def test_every_number_has_a_bound_that_says_why():
    assert set(NUMERIC) <= set(BOUNDS)
    with pytest.raises(ConfigError, match=r"between 2 and 100000 \(candles: the stored state"):
        load_config(env={"BOTOPT_CORRELATION_WINDOW": "1000000000000"})
    assert load_config(env={"BOTOPT_CORRELATION_WINDOW": "100000"}).correlation.window == 100000


def test_config_type_errors_never_echo_a_secret(tmp_path):
    path = tmp_path / "botopt.toml"
    path.write_text('[telegram]\ntoken = ["s3cr3t-value"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "s3cr3t" not in str(info.value) and "telegram.token" in str(info.value)


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "botopt.toml"
    path.write_bytes(b'[data]\nsource = "caf\xe9"\n')
    result = runner.invoke(app, ["--config", str(path), "config", "show"])
    assert result.exit_code == 2 and "not UTF-8" in result.stderr
    assert "internal error" not in result.stderr


def test_config_file_saved_with_a_byte_order_mark(tmp_path):
    """Windows editors save UTF-8 with a BOM; TOML's parser refused it at line 1 column 1."""
    path = tmp_path / "botopt.toml"
    path.write_bytes(b'\xef\xbb\xbf[gates]\nmin_strength = 0.6\n')
    assert load_config(path).gates.min_strength == 0.6


# -- redaction ------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["ab", "x1", "tok en with spaces", "tökén€", "a/b?c=d&e",
                                   "123456789:AA" + "x" * 30])
def test_redaction_covers_any_token_shape(token, monkeypatch):
    from urllib.parse import quote

    import requests

    from botopt.core.base import _redact

    # The registry is the process's: "ab" left registered hid "ab" in every later test's
    # output in this worker ("low is ***ove min(open, close)")
    monkeypatch.setattr(_redact, "_secrets", set(_redact._secrets))
    register_secret(token)
    url = f"http://127.0.0.1:9/bot{token}/sendMessage"
    prepared = requests.Request("POST", url).prepare().url or ""
    for text in (token, quote(token), quote(token, safe=""), prepared,
                 f"error: {url}", f"ConnectionError: {prepared} refused"):
        assert token not in redact(text) and quote(token, safe="") not in redact(text)
    assert "/bot***/sendMessage" in redact(prepared)
    if len(token) >= 8:  # a symbol shows it upper-cased
        assert token.upper() not in redact(f"symbol {token.upper()} is not listed")


def test_status_and_debug_never_show_an_odd_token(tmp_path):
    token = "my tök€n"
    env = {"BOTOPT_TELEGRAM_TOKEN": token, "BOTOPT_TELEGRAM_CHAT_ID": "1",
           "BOTOPT_TELEGRAM_API_URL": "http://127.0.0.1:9", "BOTOPT_TELEGRAM_MAX_RETRIES": "0"}
    base = ["--cache-dir", str(tmp_path)]
    runner.invoke(app, [*base, "notify", "add", "-t", "alert", "-d", "{}"], env=env)
    flush = runner.invoke(app, [*base, "--debug", "notify-flush", "--force"], env=env)
    status = runner.invoke(app, [*base, "status", "--json"], env=env)
    # Such a token is refused at config load now (its shape), naming the key, never the value.
    assert flush.exit_code == 2 and "telegram.token" in flush.stderr
    assert status.exit_code in (0, 2)
    from urllib.parse import quote

    for out in (flush.stdout + flush.stderr, status.stdout):
        assert token not in out and quote(token) not in out and "t%C3%B6k" not in out


# -- hostile inputs: one line, the right exit code --------------------------------------------

def test_hostile_command_lines(tmp_path):
    base = ["--cache-dir", str(tmp_path)]
    cases = [
        (["signals", "-s", "BTCUSDT", "--as-of", "9999-12-31T23:59-05:00"], 2, "--as-of"),
        (["signals", "-s", "A" * 300], 2, "invalid symbol"),
        # a path through a file: a usage error naming the option (as disk_error's exit 2)
        (["model", "train", "-o", str(tmp_path / "file" / "sub" / "m.json")], 2,
         "--output: cannot use"),
    ]
    (tmp_path / "file").write_text("a file where a directory should be")
    for args, code, text in cases:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == code, (args, result.stderr)
        assert text in result.stderr and "internal error" not in result.stderr
    deep = '{"type": "alert", "data": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    result = runner.invoke(app, [*base, "notify", "add", "--stdin"], input=deep)
    assert result.exit_code == 2 and "nested too deeply" in result.stderr
    nested = json.dumps({"type": "alert", "data": {"x": json.loads("[" * 40 + "]" * 40)}})
    result = runner.invoke(app, [*base, "notify", "add", "--stdin"], input=nested)
    assert result.exit_code == 2 and "nested deeper than" in result.stderr


def test_json_nested_too_deeply_reads_as_malformed(tmp_path):
    """Python's JSON parser raises RecursionError, not ValueError, at about a thousand
    levels: a state file so damaged ended every later ``signals`` in an internal error, and a
    user's file did the same instead of a one-line error naming it."""
    from botopt.core.base._codec import json_loads

    deep = "[" * 100_000
    with pytest.raises(ValueError, match="nested too deeply"):
        json_loads(deep)
    assert json_loads(b"[1]") == [1]
    cache = tmp_path / "c"
    base = ["--cache-dir", str(cache), "--quiet"]
    sig = ["signals", "-s", "BTCUSDT", "--as-of", "2026-09-20T12:00:30Z", "--json"]
    first = runner.invoke(app, [*base, *sig])
    assert first.exit_code == 0, first.stderr
    state = [p for p in cache.rglob("*.json") if p.is_file()]
    assert any(p.parent.name == "digests" for p in state), state
    for p in state:  # the cron's state and cache files, all damaged alike
        p.write_text(deep)
    again = runner.invoke(app, [*base, *sig])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
    (tmp_path / "pairs.json").write_text(deep)
    bad = runner.invoke(app, [*base, "signals", "-s", f"@{tmp_path / 'pairs.json'}"])
    assert bad.exit_code == 2 and "nested too deeply" in bad.stderr, bad.stderr
    data = tmp_path / "data"
    data.mkdir()
    (data / "BTCUSDT-5m.json").write_text(deep)
    bad = runner.invoke(app, [*base, "signals", "-s", "BTCUSDT", "--data-dir", str(data)])
    assert bad.exit_code == 1, bad.stderr
    assert "BTCUSDT-5m.json" in bad.stderr and "nested too deeply" in bad.stderr
    assert "internal error" not in bad.stderr


def test_binance_retry_after_inf_and_absurd_open_time():
    from botopt.core import BinanceClient
    from botopt.core.base._config import BinanceConfig

    fake = FakeBinance({"BTCUSDT": []}, now_ms=lambda: 1_800_000_000_000).start()
    try:
        client = BinanceClient(BinanceConfig(api_url=fake.url, max_retries=2,
                                             max_wait_seconds=5.0), sleep=lambda s: None)
        fake.script = [(429, {"code": -1003, "msg": "Too many requests."},
                        {"Retry-After": "inf"})]
        with pytest.raises(NetworkError, match="retry after 86400 s"):
            client.klines("BTCUSDT", "5m")
        fake.script = [(200, [[-1e20, "1", "2", "0.5", "1.5", "10", 0]], {})]
        with pytest.raises(DataError, match="malformed row 1"):
            client.klines("BTCUSDT", "5m")
    finally:
        fake.stop()


def test_events_log_lines_that_are_not_events(tmp_path):
    from botopt.core.state._events import emit, events_dir

    emit("run_failed", _root=tmp_path, command="signals", error="boom")
    log = events_dir(tmp_path) / "events.log"
    with open(log, "ab") as fh:
        fh.write(b'5\n[1, 2]\nnull\n{"type": 5, "t": 1}\n{"type": "x", "t": "soon"}\n'
                 b'{"type": "run_failed", "t": 1e999}\n\xff\xfe\n')
    emit("run_finished", _root=tmp_path, command="signals", duration_s=0.1)
    base = ["--cache-dir", str(tmp_path)]
    status = runner.invoke(app, [*base, "status", "--json"])
    assert status.exit_code == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["events_damaged"] == 7 and data["last_run"]["ok"] is True
    once = runner.invoke(app, [*base, "monitor", "--once", "--json"])
    assert once.exit_code == 0, once.stderr
    out = json.loads(once.stdout)
    assert out["events_handled"] == 3  # the two, and its own run_started
    assert out["events_damaged"] == 7
    assert "skipped 7 damaged line(s)" in once.stderr
    assert data["last_run"]["finished_at"].endswith("Z")  # ISO, like every JSON time

