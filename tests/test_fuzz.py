"""Seeded fuzzing of everything botopt reads from outside: random bytes and random JSON into
`notify add --stdin`, botopt.toml, candle files, events.log and telegram_state.json. Whatever
the input, no run ends in "internal error": each is a working run or a one-line error.

Bounded: a fixed number of cases per input (BOTOPT_FUZZ_CASES, default 25), seeded, so a
failure is reproducible from the printed case.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core.base._config import SECTIONS

from .fakes.telegram_server import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
CASES = int(os.environ.get("BOTOPT_FUZZ_CASES", "25"))
TOKEN = "123456789:AAtesttokentesttokentesttokentest"
runner = CliRunner()

_ODD_STRINGS = ["", " ", "\x00", "\\ud800", "\u202e", "é", "😀", "<b>", "&", '"', "\n", "a" * 5000,
                "9" * 400, "NaN", "-Infinity", "1e400", "0x1F", "🏳️‍🌈"]


def random_json(rng: random.Random, depth: int = 0) -> str:
    """JSON text, valid or nearly so, with the values that break parsers and formatters."""
    roll = rng.random()
    if depth > 4 or roll < 0.35:
        return rng.choice(["null", "true", "false", "0", "-0.0", "1e400", "-1e-400",
                           "123456789012345678901234567890", "NaN", "Infinity", "1.5",
                           json.dumps(rng.choice(_ODD_STRINGS)), '"\\udce9"', '"\\ud83d"'])
    if roll < 0.45:
        n = rng.choice([50, 2000])
        return "[" * n + "]" * n
    if roll < 0.7:
        return "[" + ",".join(random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    keys = ["type", "data", "message", "symbol", "t", "not_before", "sent", "42", "-1001",
            "close", "side", rng.choice(_ODD_STRINGS)]
    return "{" + ",".join(f"{json.dumps(rng.choice(keys))}:{random_json(rng, depth + 1)}"
                          for _ in range(rng.randint(0, 5))) + "}"


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))


def notification_line(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return random_bytes(rng)
    if roll < 0.6:
        return random_json(rng).encode()
    kind = rng.choice(['"alert"', '"signal"', '"trade_exited"', '"X Y"', "5", '"\\udce9"'])
    line = f'{{"type": {kind}, "data": {random_json(rng)}}}'.encode()
    if rng.random() < 0.3:  # a byte that is not UTF-8 inside a string
        line = line.replace(b'"', b'"\xe9', 1)
    return line


def toml_text(rng: random.Random) -> bytes:
    if rng.random() < 0.25:
        return random_bytes(rng)
    lines = []
    for _ in range(rng.randint(1, 4)):
        sec = rng.choice([*SECTIONS, "nope"])
        lines.append(f"[{sec}]")
        for _ in range(rng.randint(0, 3)):
            cls = SECTIONS.get(sec)
            names = list(cls.__dataclass_fields__) if cls else ["x"]
            value = rng.choice(["nan", "inf", "-inf", "1e308", "-1", "0", "99999999999999999",
                                '"x"', '"\\u00e9"', "[1, 2]", '["a"]', "{a = 1}", "true",
                                "3.5", '"' + "y" * 300 + '"', "[[[[[[1]]]]]]", '"1e12"'])
            lines.append(f"{rng.choice(names)} = {value}")
    text = "\n".join(lines).encode()
    if rng.random() < 0.2:
        text += b"\n# \xff\xfe"
    return text


def candle_bytes(rng: random.Random, suffix: str) -> bytes:
    sample = (ROOT / "sample_data" / "BTCUSDT-5m.feather").read_bytes()
    if suffix == ".feather":
        roll = rng.random()
        if roll < 0.5:
            return sample[:rng.randint(0, len(sample))]
        data = bytearray(sample)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if rng.random() < 0.3:
        return random_bytes(rng)
    header = rng.choice(["date,open,high,low,close,volume", "open_time,open,high,low,close,"
                         "volume", "date,open,close", "x"])
    rows = []
    for i in range(rng.randint(0, 40)):
        t = rng.choice([f"2026-01-01 00:{i % 60:02d}:00", str(1_767_225_600_000 + i * 300_000),
                        "", "null", "-1e20", "9999-12-31 23:59:59", "x"])
        vals = [rng.choice(["1", "2.5", "nan", "inf", "-1", "", "1e308", "abc", "0"])
                for _ in range(5)]
        rows.append(",".join([t, *vals]))
    return ("\n".join([header, *rows]) + "\n").encode()


def run(args: list[str], **kw):
    result = runner.invoke(app, args, **kw)
    assert "internal error" not in result.stderr, (args, result.stderr)
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.stderr)
    return result


@pytest.fixture
def env(tmp_path):
    fake = FakeTelegram(token=TOKEN, enforce_limits=False).start()
    yield {"BOTOPT_TELEGRAM_TOKEN": TOKEN, "BOTOPT_TELEGRAM_CHAT_ID": "42",
           "BOTOPT_TELEGRAM_API_URL": fake.url, "BOTOPT_TELEGRAM_FLUSH_BUDGET": "3",
           "BOTOPT_TELEGRAM_MAX_RETRIES": "0"}
    fake.stop()


def test_fuzz_notify_add_stdin(tmp_path, env):
    rng = random.Random(13)
    for _ in range(CASES):
        stdin = b"\n".join(notification_line(rng) for _ in range(rng.randint(1, 4)))
        run(["--cache-dir", str(tmp_path / "c"), "notify", "add", "--stdin"], input=stdin,
            env=env)
    # whatever was queued can be listed, dry-run and sent
    for args in (["notify", "list", "--json"], ["notify-flush", "--dry-run", "--force"],
                 ["notify-flush", "--force"], ["notify", "list", "--failed"]):
        run(["--cache-dir", str(tmp_path / "c"), *args], env=env)


def test_fuzz_config_file(tmp_path):
    rng = random.Random(14)
    path = tmp_path / "botopt.toml"
    for _ in range(CASES * 2):
        path.write_bytes(toml_text(rng))
        run(["--config", str(path), "--cache-dir", str(tmp_path / "c"), "config", "show"])


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".feather"])
def test_fuzz_candle_files(tmp_path, suffix):
    rng = random.Random(15)
    data = tmp_path / "data"
    data.mkdir()
    base = ["--cache-dir", str(tmp_path / "c")]
    when = ["--as-of", "2026-09-20T12:00:00Z"]
    for _ in range(CASES // 2):
        for sym in ("BTCUSDT", "ETHUSDT"):
            (data / f"{sym}-5m{suffix}").write_bytes(candle_bytes(rng, suffix))
        run([*base, "signals", "--data-dir", str(data), "-s", "BTCUSDT", *when, "--json"])
        run([*base, "correlations", "--data-dir", str(data), "-s", "BTCUSDT,ETHUSDT", *when])


@pytest.mark.slow
def test_fuzz_events_log(tmp_path):
    rng = random.Random(16)
    log = tmp_path / "c" / "events" / "events.log"
    log.parent.mkdir(parents=True)
    for _ in range(CASES):
        lines = [random_bytes(rng) if rng.random() < 0.3 else random_json(rng).encode()
                 for _ in range(rng.randint(1, 6))]
        lines.append(json.dumps({"id": "x", "t": rng.choice([0, 1e18, -5, 1.5e9]),
                                 "type": rng.choice(["run_failed", "run_finished",
                                                     "notify_dead_letter", "notify_queued",
                                                     "signal_passed", "regime_changed"]),
                                 "pid": 1, "data": json.loads(rng.choice(
                                     ['{}', '{"error": null}', '{"id": 5, "about": [1]}',
                                      '{"symbol": {"a": 1}, "command": 7}']))}).encode())
        with open(log, "ab") as fh:
            fh.write(b"\n".join(lines) + b"\n")
        base = ["--cache-dir", str(tmp_path / "c")]
        run([*base, "monitor", "--once"])
        run([*base, "status"])
        run([*base, "status", "--json"])


@pytest.mark.slow
def test_fuzz_telegram_state(tmp_path, env):
    rng = random.Random(17)
    base = ["--cache-dir", str(tmp_path / "c")]
    state = tmp_path / "c" / "notify" / "telegram_state.json"
    for _ in range(CASES):
        run([*base, "notify", "add", "-t", "alert", "-d", '{"message": "x"}'], env=env)
        roll = rng.random()
        if roll < 0.3:
            content = random_bytes(rng)
        elif roll < 0.6:
            content = random_json(rng).encode()
        else:
            content = json.dumps({"42": {"not_before": rng.choice([0, -1, 1e12, 2e9]),
                                         "sent": rng.choice([[], [1e300], ["x"], None])}}
                                 ).encode()
        state.write_bytes(content)
        run([*base, "notify-flush", "--force"], env=env)
