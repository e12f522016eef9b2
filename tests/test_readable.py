"""Messages and tables people read: prices to the exchange's digits, two decimals for
strengths and probabilities (never rounded across their gate's threshold), HH:MM times."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from botopt.core import load_config
from botopt.core.base._numfmt import fmt_price, fmt_time, fmt_vs
from botopt.core.delivery._notify_format import message_timezone, render_batch
from botopt.core.errors import ConfigError

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(unit, unit)
@example(5e-324, 0.0)  # below 15 decimals: found by this test, once shown as "5e-324"
@example(1e-17, 0.0)
def test_a_shown_value_never_crosses_its_threshold(value, limit):
    shown = fmt_vs(value, limit)
    assert (float(shown) < limit) == (value < limit)
    if value != limit:  # a value off the threshold never shows as the threshold itself
        assert float(shown) != limit
    assert len(shown.split(".")[1]) >= 2


@given(unit)
def test_two_decimals_when_nothing_is_at_stake(value):
    assert fmt_vs(value, None) == f"{value:.2f}"
    if abs(value - 0.5) >= 0.005:
        assert fmt_vs(value, 0.5) == f"{value:.2f}"


def test_the_issues_example():
    assert fmt_vs(0.497, 0.5) == "0.497"  # was "0.50" next to "p_dir 0.497 < 0.50"
    assert fmt_vs(0.4999999, 0.5) == "0.4999999"
    assert fmt_vs(0.5, 0.5) == "0.50" and fmt_vs(0.504325633768604, 0.5) == "0.504"


@given(st.floats(min_value=1e-12, max_value=1e12))
def test_prices_are_plain_decimals_to_eight_significant_digits(price):
    shown = fmt_price(price)
    assert "e" not in shown.lower()
    assert math.isclose(float(shown), price, rel_tol=1e-7)
    digits = shown.replace(".", "").lstrip("0")
    whole = len(str(int(price))) if price >= 1 else 0
    assert len(digits.rstrip("0")) <= max(8, whole)


def test_price_examples():
    assert fmt_price(4.3440000000000004e-05) == "0.00004344"
    assert fmt_price(43125.5) == "43125.5" and fmt_price(0.1 + 0.2) == "0.3"
    assert fmt_price(0.0) == "0" and fmt_price(float("nan")) == "nan"
    # above 1e8 every whole unit is shown (sweep I, I8: 2512345700 before)
    assert fmt_price(2512345678.0) == "2512345678" and fmt_price(-2512345678.0) == "-2512345678"
    assert fmt_price(123456789.5) == "123456790" and fmt_price(99999999.5) == "100000000"
    assert fmt_price(1.5e20) == "150000000000000000000"


def test_times_read_as_hh_mm_in_the_zone():
    t = datetime(2026, 12, 5, 12, 5, tzinfo=timezone.utc)
    assert fmt_time(t) == "12:05 UTC"
    assert fmt_time(t, "Europe/Berlin") == "13:05 CET"


ISSUE_ITEM = {"symbol": "XLM/BTC", "direction": "short", "close": 4.3440000000000004e-05,
              "engine": "momentum", "strength": 0.3154936457164521,
              "p_dir": 0.504325633768604, "regime": "TREND_DOWN",
              "candle_time": "2026-12-05T12:05:00Z"}


def test_a_signal_message_prints_rounded_numbers():
    [msg] = render_batch("signal", [("id1", ISSUE_ITEM)])
    assert "short XLM/BTC</b> @ 0.00004344 (momentum, strength 0.32, p 0.50)" in msg.text
    assert "candle 12:05 UTC" in msg.text
    assert "e-05" not in msg.text and "0.3154936" not in msg.text
    with message_timezone("America/New_York"):
        [msg] = render_batch("signal", [("id1", ISSUE_ITEM)])
    assert "candle 07:05 EST" in msg.text


def test_values_that_are_not_numbers_are_shown_as_queued():
    odd = {**ISSUE_ITEM, "close": "n/a", "strength": float("nan"), "candle_time": "soon"}
    [msg] = render_batch("signal", [("id1", odd)])
    assert "@ n/a" in msg.text and "strength nan" in msg.text and "candle soon" in msg.text


def test_an_unknown_time_zone_is_refused_at_load():
    with pytest.raises(ConfigError, match="notify.timezone"):
        load_config(overrides={"notify.timezone": "Mars/Olympus"})
    assert load_config(overrides={"notify.timezone": "Asia/Tokyo"}).notify.timezone == \
        "Asia/Tokyo"


def test_the_table_shows_p_dir_as_the_gate_saw_it(shared_data, tmp_path):
    from typer.testing import CliRunner

    from botopt.cli.main import app

    res = CliRunner().invoke(app, ["--cache-dir", str(tmp_path / "c"), "signals",
                                   "--data-dir", str(shared_data / "candles" / "5m"),
                                   "--symbols", "LTC_BTC", "--as-of", "2018-01-29T00:00"])
    assert res.exit_code == 0, res.output
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith("LTC_BTC"))
    gate = json.dumps(row)
    assert "0.498" in row.split("block")[0] and "p_dir 0.498 < 0.50" in gate


def test_a_value_closer_to_its_threshold_than_fifteen_decimals():
    """Hypothesis found it: 5e-324 against 0 was shown as "5e-324"."""
    assert fmt_vs(5e-324, 0.0) == "0." + "0" * 323 + "5"
    shown = fmt_vs(0.49999999999999994, 0.5)
    assert float(shown) < 0.5 and "e" not in shown
