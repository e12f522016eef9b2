"""freqtrade's ``config.json`` read by freqtrade's own rules, so pairs, timeframe, exchange,
trading mode and data folder are typed once (in freqtrade's file) and botopt follows them.

The rules, as freqtrade applies them (freqtrade/configuration/load_config.py,
configuration.py, directory_operations.py):

- the JSON may hold ``//`` and ``/* */`` comments and trailing commas (rapidjson's
  PM_COMMENTS | PM_TRAILING_COMMAS);
- ``add_config_files`` are loaded in order, relative to the file that names them; a later
  file overrides an earlier one, and the naming file overrides them all; deeper than 5
  levels is a loop;
- ``user_data_dir`` defaults to ``./user_data`` and a relative one is taken from the working
  directory (freqtrade does not resolve it against the config file);
- the data folder is ``<user_data_dir>/data/<exchange name, lower case>`` (freqtrade's
  ``datadir`` comes only from its ``--datadir`` flag, never from the file); futures candles
  sit in its ``futures/`` folder, which botopt's file names already include.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._codec import json_loads

_MAX_DEPTH = 5
_MAX_BYTES = 10_000_000  # a config is a few KB; a huge file is a mistake, not a config


@dataclass(frozen=True)
class FreqtradeSettings:
    """What botopt takes from a freqtrade configuration (None: the file does not say)."""

    path: Path
    exchange: str
    trading_mode: str
    timeframe: str | None
    pairs: tuple[str, ...]
    data_dir: Path


def _string_end(text: str, i: int) -> int:
    """Index just past the JSON string that starts at ``text[i]`` (a quote)."""
    j, n = i + 1, len(text)
    while j < n and text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j + 1


def _strip_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j = _string_end(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError(f"unterminated /* comment at offset {i}")
            out.append(" ")
            i = j + 2
        else:
            j = i
            while j < n and text[j] != '"' and text[j] != "/":
                j += 1
            out.append(text[i:max(j, i + 1)])
            i = max(j, i + 1)
    return "".join(out)


def _strip_trailing_commas(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = _string_end(text, i)
            out.append(text[i:j])
            i = j
            continue
        if c == ",":
            k = i + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            if k < n and text[k] in "}]":
                i += 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def strip_json_extras(text: str) -> str:
    """``text`` with comments and trailing commas removed, strings untouched, so the
    standard ``json`` module reads what rapidjson reads in freqtrade's parse mode."""
    return _strip_trailing_commas(_strip_comments(text))


def _read_one(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"freqtrade config {path}: not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"freqtrade config {path}: cannot read: {exc.strerror}",
                          file=str(path)) from exc
    if len(raw) > _MAX_BYTES:
        raise ConfigError(f"freqtrade config {path}: {len(raw)} bytes is not a config file",
                          file=str(path))
    try:
        data = json_loads(strip_json_extras(raw.decode("utf-8-sig")))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"freqtrade config {path}: not UTF-8 (bad byte at offset "
                          f"{exc.start})", file=str(path)) from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"freqtrade config {path}: invalid JSON: {str(exc)[:120]}",
                          file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"freqtrade config {path}: the top level is not an object",
                          file=str(path))
    return data


def _deep_merge(source: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any]:
    """freqtrade's deep_merge_dicts: ``source`` wins, nested objects merged, dest returned."""
    for key, value in source.items():
        if isinstance(value, dict):
            node = dest.setdefault(key, {})
            if not isinstance(node, dict):
                node = dest[key] = {}
            _deep_merge(value, node)
        else:
            dest[key] = value
    return dest


def load_freqtrade_files(files: list[Path], base: Path | None = None,
                         level: int = 0) -> dict[str, Any]:
    """The merged configuration of ``files`` (freqtrade's load_from_files)."""
    if level > _MAX_DEPTH:
        raise ConfigError(f"freqtrade config {files[0] if files else ''}: add_config_files "
                          f"nested deeper than {_MAX_DEPTH} levels (a loop?)",
                          file=str(files[0]) if files else None, key="add_config_files")
    merged: dict[str, Any] = {}
    for name in files:
        file = base / name if base is not None else name
        data = _read_one(file)
        extra = data.get("add_config_files")
        if extra is not None:
            if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
                raise ConfigError(f"freqtrade config {file}: add_config_files must be a list "
                                  "of file names", file=str(file), key="add_config_files")
            sub = load_freqtrade_files([Path(x) for x in extra], file.resolve().parent,
                                       level + 1)
            data = _deep_merge(data, sub)
        merged = _deep_merge(data, merged)
    return merged


def _text(cfg: dict[str, Any], path: Path, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"freqtrade config {path}: {key} must be a string, got "
                          f"{type(value).__name__}", file=str(path), key=key)
    return value


def read_freqtrade_config(path: Path, *, cwd: Path | None = None) -> FreqtradeSettings:
    """What botopt needs from the freqtrade configuration at ``path``."""
    cfg = load_freqtrade_files([path])
    exchange_sec = cfg.get("exchange") or {}
    if not isinstance(exchange_sec, dict):
        raise ConfigError(f"freqtrade config {path}: exchange must be an object",
                          file=str(path), key="exchange")
    exchange = (_text(cfg, path, "exchange.name", exchange_sec.get("name")) or "").strip()
    if not exchange:
        raise ConfigError(f"freqtrade config {path}: exchange.name is empty (which exchange "
                          "does the bot trade on?)", file=str(path), key="exchange.name")
    mode = _text(cfg, path, "trading_mode", cfg.get("trading_mode")) or "spot"
    if mode not in ("spot", "futures", "margin"):
        raise ConfigError(f"freqtrade config {path}: trading_mode {mode!r} is not spot, "
                          "futures or margin", file=str(path), key="trading_mode")
    pairs = exchange_sec.get("pair_whitelist") or []
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        raise ConfigError(f"freqtrade config {path}: exchange.pair_whitelist must be a list "
                          "of pair names", file=str(path), key="exchange.pair_whitelist")
    user_data = _text(cfg, path, "user_data_dir", cfg.get("user_data_dir")) or "user_data"
    user_dir = Path(user_data).expanduser()
    if not user_dir.is_absolute():
        user_dir = (cwd or Path.cwd()) / user_dir
    return FreqtradeSettings(
        path=path, exchange=exchange.lower(), trading_mode=mode,
        timeframe=_text(cfg, path, "timeframe", cfg.get("timeframe")),
        pairs=tuple(p.strip() for p in pairs if p.strip()),
        data_dir=user_dir / "data" / exchange.lower())
