"""Errors carry their culprit as attributes, not only in their text: every raise of a botopt
error in core/ whose message names something (an f-string with a value in it) passes at
least one of the culprit keywords, and representative errors expose them to a caller."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from botopt.core import errors
from botopt.core.base._config import load_config

CORE = Path(__file__).resolve().parents[1] / "core"
CULPRITS = {"symbol", "source", "file", "row", "key"}
ERRORS = {name for name in errors.__all__
          if isinstance(getattr(errors, name), type)
          and issubclass(getattr(errors, name), errors.BotoptError)}
# Classes that find their culprit themselves (StaleDataError: the symbols in ``ages``).
SELF_NAMING = {"StaleDataError"}
NO_CULPRIT = "# no culprit"  # on the line above a raise whose message names nothing to act on
# A message that names an option or a setting in its plain text names a culprit too.
NAMED = re.compile(r"--[a-z]|\b(?:data|cache|telegram|state|gates|model|features|correlation"
                   r"|regime|notify|monitor)\.[a-z_]+")


def _text(node: ast.AST | None) -> str:
    """The constant text of a message (what a reader sees, less the interpolated values)."""
    return "".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str)) if node is not None else ""


def raise_sites() -> list[tuple[str, int, str, set[str], bool, bool]]:
    """(file, line, class, keywords, names something, marked as having no culprit)."""
    sites = []
    for path in sorted(CORE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in ERRORS:
                continue
            msg = node.exc.args[0] if node.exc.args else None
            names = isinstance(msg, ast.JoinedStr) and any(
                isinstance(v, ast.FormattedValue) for v in msg.values)
            names = names or bool(NAMED.search(_text(msg)))
            marked = NO_CULPRIT in lines[node.lineno - 2]
            sites.append((str(path.relative_to(CORE)), node.lineno, name,
                          {k.arg for k in node.exc.keywords if k.arg}, names, marked))
    return sites


def test_the_walk_finds_the_raise_sites() -> None:
    sites = raise_sites()
    assert len(sites) > 150  # the walk sees core's raises (183 when this was written)
    assert {s[2] for s in sites} >= {"UsageError", "ConfigError", "DataError", "ModelError"}


def test_every_raise_that_names_a_culprit_carries_it_as_an_attribute() -> None:
    missing = [f"core/{f}:{line} {cls}" for f, line, cls, kws, names, marked in raise_sites()
               if names and not marked and cls not in SELF_NAMING and not kws & CULPRITS]
    assert not missing, "culprit only in the text:\n" + "\n".join(missing)


def test_every_raise_carries_a_culprit_or_says_why_it_has_none() -> None:
    """Stricter than the above: a message with no value in it still gets its culprit as an
    attribute, or a "no culprit" comment that says why there is none."""
    bare = [f"core/{f}:{line} {cls}" for f, line, cls, kws, _, marked in raise_sites()
            if not marked and cls not in SELF_NAMING and not kws & CULPRITS]
    assert not bare, "no culprit attribute and no reason:\n" + "\n".join(bare)


def test_no_culprit_marks_are_few_and_honest() -> None:
    marked = [s for s in raise_sites() if s[5]]
    assert len(marked) <= 3
    assert all(not s[3] & CULPRITS for s in marked)  # a marked site that has one: drop the mark


def test_a_bad_setting_names_its_key() -> None:
    with pytest.raises(errors.ConfigError) as info:
        load_config(overrides={"data.interval": "banana"})
    assert info.value.key == "data.interval" and "data.interval" in str(info.value)


def test_a_bad_symbols_file_names_the_file(tmp_path: Path) -> None:
    from botopt.core.data._candles import resolve_symbols

    f = tmp_path / "pairs.json"
    f.write_text("{not json", encoding="utf-8")
    with pytest.raises(errors.UsageError) as info:
        resolve_symbols(f"@{f}", load_config())
    assert info.value.file == str(f) and info.value.key == "--symbols"
    assert str(f) in str(info.value) and "\n" not in str(info.value)
    assert errors.exit_code_for(info.value) == 2


def test_a_bad_notification_names_its_row_and_field() -> None:
    from botopt.core.delivery._notify import _validate

    good = {"type": "alert", "data": {"message": "ok"}}
    with pytest.raises(errors.UsageError) as info:
        _validate([good, good, {"type": "alert", "data": ["not", "an", "object"]}])
    assert (info.value.row, info.value.key) == (3, "data")
    assert str(info.value).startswith("notification 3:")


def test_a_damaged_model_file_names_the_file(tmp_path: Path) -> None:
    from botopt.core.signals._model import load_model

    path = tmp_path / "model.json"
    path.write_text(json.dumps([1, 2, 3]), encoding="utf-8")
    cfg = load_config(overrides={"model.path": str(path)})
    with pytest.raises(errors.ModelError) as info:
        load_model(cfg.model)
    assert info.value.file == str(path) and info.value.key == "model.path"
    assert errors.exit_code_for(info.value) == 1


def test_an_unsafe_cache_dir_names_the_dir_and_setting(tmp_path: Path) -> None:
    from botopt.core.state._paths import check_dir_safe

    d = tmp_path / "c"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(errors.CacheDirUnsafeError) as info:
        check_dir_safe(d)
    assert info.value.file == str(d) and info.value.key == "cache.dir"


def test_a_batch_without_a_regime_names_the_symbol() -> None:
    import polars as pl

    from botopt.core import AlphaEngineCoordinator

    frame = pl.DataFrame({"symbol": ["ETHUSDT"], "open_time": [0]})
    with pytest.raises(errors.UsageError) as info:
        AlphaEngineCoordinator().generate_all_signals_batch({"ETHUSDT": frame}, {})
    assert info.value.symbol == "ETHUSDT"
