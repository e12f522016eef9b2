"""The code-version scheme (core/base/_versions.py): each stage's key carries a hash of exactly the
botopt modules that stage runs, so an edit elsewhere keeps the caches."""

from __future__ import annotations

import shutil

import pytest

from botopt.core.base import _versions

from .test_layers import CORE, _imports, _sources

# The module each stage's computation starts from.
ENTRY = {"features": ["signals._features"],
         "regime": ["signals._regime", "signals._features"],
         "predictions": ["signals._model", "signals._features"],
         # the correlation rows the gate reads are computed by _correlation's code: an
         # edit there may move a row's last bits, and so a decision at the threshold
         "gates": ["signals._gates", "signals._engines", "signals._correlation"],
         "signals": ["signals._pipeline", "data._candles", "signals._correlation",
                     "signals._features", "signals._regime", "signals._model",
                     "signals._gates", "signals._engines"]}
ENTRY["backtest"] = [*ENTRY["signals"], "backtest._replay"]
ENTRY["carry"] = ["signals._carry"]


def _closure(entries: list[str]) -> set[str]:
    """Every core module the entries import at module level, transitively."""
    trees = _sources(CORE)
    rel = len("botopt.core.")
    # a layer's __init__ (e.g. ``botopt.core.signals``) holds no code: not a dependency
    graph = {name[rel:]: {n[rel:] for n in _imports(tree, True)
                          if n in trees and n != name
                          and ("._" in n or n == "botopt.core.errors")}
             for name, tree in trees.items() if name != "botopt.core"}
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, set())
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(_versions.STAGE_MODULES))
def test_each_stage_lists_every_module_it_imports(stage):
    missing = _closure(ENTRY[stage]) - set(_versions.STAGE_MODULES[stage])
    assert not missing, f"add {sorted(missing)} to _versions.STAGE_MODULES[{stage!r}]"


def test_an_edit_changes_only_the_stages_that_run_the_module(tmp_path, monkeypatch):
    # A copy of core/ whose _regime.py gains a comment: the regime, gates (engines read the
    # regime names) and whole-run tags move; the features and predictions tags stay.
    copy = tmp_path / "core"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stages = sorted(_versions.STAGE_MODULES)
    before = {s: _versions.stage_tag(s) for s in stages}
    monkeypatch.setattr(_versions, "_CORE", copy)
    _versions.stage_tag.cache_clear()
    try:
        same = {s: _versions.stage_tag(s) for s in stages}
        edited = copy / "signals" / "_regime.py"
        edited.write_text(edited.read_text() + "# edited\n")
        _versions.stage_tag.cache_clear()
        after = {s: _versions.stage_tag(s) for s in stages}
    finally:
        _versions.stage_tag.cache_clear()
    assert same == before  # the hash is of the source, not of where it lies
    assert {s for s in stages if after[s] != before[s]} == {"regime", "gates", "signals", "carry",
                                                              "backtest"}


def test_a_decorated_function_is_tagged_by_its_own_code():
    def f(x):
        return x + 1

    def g(x):
        return x + 2

    assert _versions.function_tag(f) != _versions.function_tag(g)
    assert _versions.function_tag(f) == _versions.function_tag(f)
