"""The import rules of docs/architecture.md, read from the source with ast (nothing imported).

- core/ never imports typer, rich, botopt.cli or botopt.benchmarks (it is a library; the CLI is
  one user of it, and the fake APIs live with the bench);
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
CORE, CLI, BENCH = ROOT / "core", ROOT / "cli", ROOT / "benchmarks"


def _module_name(path: Path) -> str:
    parts = ["botopt", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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


def _absolute(tree: ast.Module, name: str, is_package: bool) -> ast.Module:
    """``tree`` with each relative import rewritten to the absolute name it resolves to, so
    the rules below read one spelling (the source itself must use the relative one)."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            node.module = ".".join([*base, *([node.module] if node.module else [])])
            node.level = 0
    return tree


def _sources(*dirs: Path) -> dict[str, ast.Module]:
    return {_module_name(p): _absolute(ast.parse(p.read_text(encoding="utf-8"), str(p)),
                                       _module_name(p), p.name == "__init__.py")
            for d in dirs for p in sorted(d.rglob("*.py")) if "__pycache__" not in p.parts}


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
                  if n.split(".")[0] in ("typer", "rich", "click")
                  or n.startswith(("botopt.cli", "botopt.benchmarks"))})
    assert not bad, (f"{name} imports {', '.join(bad)}: core/ is a library without a CLI "
                     "or the bench's fakes")


@pytest.mark.parametrize("name,tree", sorted(_sources(CORE, CLI, BENCH).items()),
                         ids=lambda v: str(v)[:40])
def test_no_bare_core_or_cli_import(name: str, tree: ast.Module) -> None:
    bad = sorted({n for n in _imports(tree, False) if n.split(".")[0] in ("core", "cli")})
    assert not bad, f"{name} imports {', '.join(bad)}: use botopt.core / botopt.cli"


@pytest.mark.parametrize("path", sorted(p for d in (CORE, CLI, BENCH) for p in d.rglob("*.py")
                                        if "__pycache__" not in p.parts),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_package_imports_itself_relatively(path: Path) -> None:
    # Only relative imports resolve from the checkout, where no folder is named botopt: mypy,
    # pyright and grimp then see every edge without an install (docs/architecture.md).
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    bad = sorted({f"{node.lineno}: {name}" for node in ast.walk(tree)
                  for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                               else [node.module or ""] if isinstance(node, ast.ImportFrom)
                               and node.level == 0 else [])
                  if name.split(".")[0] == "botopt"})
    assert not bad, f"{path.name} imports botopt absolutely at " + ", ".join(bad) + \
        " (write the relative form)"


def test_relative_imports_resolve_to_their_absolute_names() -> None:
    tree = _absolute(ast.parse("from ..base import _fs\nfrom . import x\nfrom .. import errors"),
                     "botopt.core.state._cache", False)
    assert set(_imports(tree, False)) >= {"botopt.core.base", "botopt.core.base._fs",
                                          "botopt.core.state", "botopt.core.state.x",
                                          "botopt.core", "botopt.core.errors"}


def test_the_rules_see_function_level_and_bare_imports() -> None:
    tree = ast.parse("import os\ndef f():\n    import rich\n    from core import x\n"
                     "if TYPE_CHECKING:\n    import typer\n")
    assert set(_imports(tree, True)) == {"os"}
    assert {"rich", "core", "core.x", "typer"} <= set(_imports(tree, False))


# What the CLI may still take from private core modules: its own plumbing (secret redaction,
# the process-wide default cache root, flag parsing and table helpers), none of which a
# library user calls. Everything else comes through ``botopt.core``'s public API.
CLI_PRIVATE_ALLOWED = {
    "botopt.core.state._cache": {"describe_life", "effective_lives"},
    "botopt.core.watch._cron": {"default_log_dir", "make_log_dir"},
    "botopt.core.watch._history": {"iso_time", "now", "parse_since", "parse_types"},
    "botopt.core.state._paths": {"cache_dir_for"},
    "botopt.core.base._redact": {"RedactingFilter", "redact", "redact_url", "register_secret"},
    "botopt.core.state._workspace": {"set_default_root"},
}


def test_cli_goes_through_the_public_api() -> None:
    extra = []
    for name, tree in _sources(CLI).items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "._" in (node.module or "") and (
                    node.module or "").startswith("botopt.core."):
                allowed = CLI_PRIVATE_ALLOWED.get(node.module or "", set())
                extra += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name not in allowed]
    assert not extra, "import these from botopt.core (add them to _EXPORTS):\n" + \
        "\n".join(extra)


# The layers of docs/architecture.md, lowest first: each is a subpackage of core/ (errors.py,
# the public exception tree, sits at the top of core/ and belongs to the base). A module may
# import its own layer and those below it.
LAYERS: list[str] = ["base", "state", "data", "signals", "backtest", "delivery", "watch"]
# Upward imports made inside a function, each for a reason docs/architecture.md gives.
UPWARD_ALLOWED = {
    ("_config", "_cache"),  # validation asks the cache for each entry's effective life
    ("_workspace", "_gates"),  # the Workspace builds the cooldown store, defined with gates
    ("_effects", "_notify"),  # a live signals run queues what passed (its side effects)
    ("_redis_store", "_gates"),  # the shared cooldown store returns the gates' records
}


def _layer(name: str) -> int | None:
    """The layer of a module ``botopt.core.<layer>.<module>`` (errors: the base)."""
    parts = name.split(".")
    if name == "botopt.core.errors":
        return 0
    if len(parts) >= 3 and parts[2] in LAYERS:
        return LAYERS.index(parts[2])
    return None


def test_the_tree_is_the_layers() -> None:
    # every module lives in a layer's subpackage: the folder shows where it belongs
    stray = sorted(n for n in _sources(CORE) if n != "botopt.core" and _layer(n) is None)
    assert not stray, f"move {', '.join(stray)} into one of core/{{{','.join(LAYERS)}}}/"
    assert {p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__"} == \
        set(LAYERS)


def test_lower_layers_never_import_higher() -> None:
    trees = _sources(CORE)
    rank = {n: r for n in trees if (r := _layer(n)) is not None}
    short = {name: name.rsplit(".", 1)[-1] for name in rank}
    bad = []
    for name, tree in trees.items():
        if name not in rank:
            continue  # the public facade and the layers' own __init__ re-export nothing
        module_level = set(_imports(tree, True))
        for imp in set(_imports(tree, False)):
            if imp in rank and rank[imp] > rank[name] and (
                    imp in module_level or (short[name], short[imp]) not in UPWARD_ALLOWED):
                bad.append(f"{short[name]} ({LAYERS[rank[name]]}) imports {short[imp]} "
                           f"({LAYERS[rank[imp]]})")
    assert not bad, "\n".join(sorted(bad))


def test_the_layer_rule_can_fail() -> None:
    assert _layer("botopt.core.base._config") == 0
    assert _layer("botopt.core.watch._monitor") == LAYERS.index("watch")
    assert _layer("botopt.core._stray") is None
