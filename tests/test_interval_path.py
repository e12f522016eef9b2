"""The candle interval is parsed in one place (base/_config, where the config is loaded) and
carried as a typed ``Interval`` from there (docs/architecture.md, "The interval, from flag
to use"): no other module builds one, keeps a unit table or parses interval text."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from botopt.core.base._config import Interval, interval_ms, load_config
from botopt.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PARSER = ROOT / "core" / "base" / "_config.py"
UNIT_MS = {60_000, 3_600_000, 86_400_000}


def modules() -> list[Path]:
    return sorted(p for d in ("core", "cli") for p in (ROOT / d).rglob("*.py"))


def test_only_the_config_loader_builds_or_parses_an_interval() -> None:
    found = []
    for path in modules():
        if path == PARSER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Interval":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} builds an Interval")
            if isinstance(node, ast.Constant) and node.value in UNIT_MS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} has a unit table value")
    assert not found, found


def test_the_flag_arrives_as_a_typed_interval_once() -> None:
    cfg = load_config(overrides={"data.interval": "15m"})
    iv = cfg.data.interval
    assert isinstance(iv, Interval) and iv == "15m"
    assert (iv.ms, iv.seconds, iv.delta.total_seconds()) == (900_000, 900.0, 900.0)
    assert interval_ms(iv) == 900_000


@pytest.mark.parametrize("text", ["7x", "0m", "-5m", "5", "", "1w", "99999m", "5m\n"])
def test_a_bad_interval_is_refused_at_load_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"data.interval": text})
    assert info.value.key == "data.interval"
