"""The import rules of docs/architecture.md, read from the source with ast (nothing imported).

- core/ never imports typer, rich or botopt.cli (it is a library; the CLI is one user of it);
- nothing imports the bare ``core`` / ``cli`` directories (only ``botopt.core`` / ``botopt.cli``
  are installed);
- the module-level imports between core modules form no cycle. Imports inside functions
  (kept there for start-up time) and under ``if TYPE_CHECKING`` do not run at import time, so
  they are not edges of this graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE, CLI = ROOT / "core", ROOT / "cli"


def _module_name(path: Path) -> str:
    pkg = f"botopt.{path.parent.name}"
    return pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"


def _imports(node: ast.AST, module_level_only: bool) -> Iterator[str]:
    """Absolute names each import statement under ``node`` brings in (``from a import b``
    yields both ``a`` and ``a.b``: b may be a submodule)."""
    for child in ast.iter_child_nodes(node):
        if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda)):
            continue
        if module_level_only and isinstance(child, ast.If) and \
                "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for stmt in child.orelse for n in _imports_of_stmt(stmt, True))
            continue
        yield from _imports_of_stmt(child, module_level_only)


def _imports_of_stmt(stmt: ast.AST, module_level_only: bool) -> Iterator[str]:
    if isinstance(stmt, ast.Import):
        yield from (a.name for a in stmt.names)
    elif isinstance(stmt, ast.ImportFrom):
        if stmt.level:
            yield "." * stmt.level + (stmt.module or "")  # relative: reported as bare below
            return
        assert stmt.module is not None
        yield stmt.module
        yield from (f"{stmt.module}.{a.name}" for a in stmt.names)
    else:
        yield from _imports(stmt, module_level_only)


def _sources(*dirs: Path) -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p))
            for d in dirs for p in sorted(d.glob("*.py"))}


def core_graph() -> dict[str, set[str]]:
    trees = _sources(CORE)
    return {name: {n for n in _imports(tree, True) if n in trees and n != name}
            for name, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    # the checker itself must be able to fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_core_modules_import_no_cycle() -> None:
    graph = core_graph()
    assert len(graph) > 20  # the parse really saw core/
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between core modules: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("name,tree", sorted(_sources(CORE).items()), ids=lambda v: str(v)[:40])
def test_core_never_imports_the_cli_layer(name: str, tree: ast.Module) -> None:
    bad = sorted({n for n in _imports(tree, False)
                  if n.split(".")[0] in ("typer", "rich", "click") or n.startswith("botopt.cli")})
    assert not bad, f"{name} imports {', '.join(bad)}: core/ is a library without a CLI"


@pytest.mark.parametrize("name,tree", sorted(_sources(CORE, CLI).items()),
                         ids=lambda v: str(v)[:40])
def test_no_bare_core_or_cli_import(name: str, tree: ast.Module) -> None:
    bad = sorted({n for n in _imports(tree, False)
                  if n.split(".")[0] in ("core", "cli") or n.startswith(".")})
    assert not bad, f"{name} imports {', '.join(bad)}: use botopt.core / botopt.cli"


def test_the_rules_see_function_level_and_bare_imports() -> None:
    tree = ast.parse("import os\ndef f():\n    import rich\n    from core import x\n"
                     "if TYPE_CHECKING:\n    import typer\n")
    assert set(_imports(tree, True)) == {"os"}
    assert {"rich", "core", "core.x", "typer"} <= set(_imports(tree, False))


# What the CLI may still take from private core modules: its own plumbing (secret redaction,
# the process-wide default cache root, flag parsing and table helpers), none of which a
# library user calls. Everything else comes through ``botopt.core``'s public API.
CLI_PRIVATE_ALLOWED = {
    "botopt.core._cache": {"describe_life", "effective_lives"},
    "botopt.core._cron": {"default_log_dir", "make_log_dir"},
    "botopt.core._events": {"use_shared"},
    "botopt.core._history": {"iso_time", "now", "parse_since", "parse_types"},
    "botopt.core._paths": {"cache_dir_for"},
    "botopt.core._redact": {"RedactingFilter", "redact", "redact_url", "register_secret"},
    "botopt.core._workspace": {"set_default_root"},
}


def test_cli_goes_through_the_public_api() -> None:
    extra = []
    for name, tree in _sources(CLI).items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "botopt.core._"):
                allowed = CLI_PRIVATE_ALLOWED.get(node.module or "", set())
                extra += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name not in allowed]
    assert not extra, "import these from botopt.core (add them to _EXPORTS):\n" + \
        "\n".join(extra)


# The layers of docs/architecture.md, lowest first. A module may import its own layer and
# those below it; a new core module must be placed here (the test says so).
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["errors", "_vocab", "_config", "_symbols", "_redact", "_fs", "_paths",
                    "_codec"]),
    ("state", ["_workspace", "_cache", "_regime_state", "_events", "_redis", "_redis_store",
               "_redis_events"]),
    ("data sources", ["_candles", "_binance", "_store"]),
    ("signal stages", ["_features", "_regime", "_engines", "_model", "_model_train", "_gates",
                       "_correlation", "_pipeline"]),
    ("delivery", ["_notify_format", "_telegram", "_notify", "_redis_queue"]),
    ("watching", ["_monitor", "_history", "_doctor", "_cron"]),
]
# Upward imports made inside a function, each for a reason docs/architecture.md gives.
UPWARD_ALLOWED = {
    ("_config", "_cache"),  # validation asks the cache for each entry's effective life
    ("_paths", "_workspace"),  # state_dir & co.: thin delegates kept for older callers
    ("_workspace", "_gates"),  # the Workspace builds the cooldown store, defined with gates
    ("_pipeline", "_notify"),  # a signals run queues what passed (its side effects)
    ("_redis_store", "_gates"),  # the shared cooldown store returns the gates' records
}


def test_lower_layers_never_import_higher() -> None:
    rank = {f"botopt.core.{m}": i for i, (_, mods) in enumerate(LAYERS) for m in mods}
    trees = _sources(CORE)
    unplaced = sorted(set(trees) - set(rank) - {"botopt.core"})
    assert not unplaced, f"place {', '.join(unplaced)} in a layer of tests/test_layers.py"
    short = {name: name.rsplit(".", 1)[-1] for name in rank}
    bad = []
    for name, tree in trees.items():
        if name == "botopt.core":
            continue  # the public facade re-exports every layer, lazily
        module_level = set(_imports(tree, True))
        for imp in set(_imports(tree, False)):
            if imp in rank and rank[imp] > rank[name] and (
                    imp in module_level or (short[name], short[imp]) not in UPWARD_ALLOWED):
                bad.append(f"{short[name]} ({LAYERS[rank[name]][0]}) imports {short[imp]} "
                           f"({LAYERS[rank[imp]][0]})")
    assert not bad, "\n".join(sorted(bad))
