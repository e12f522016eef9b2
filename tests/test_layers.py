"""The import rules of docs/architecture.md.

The layers, the CLI/bench/library order, core's freedom from the CLI stack and the absence of
cycles are declared once, as import-linter contracts in pyproject.toml, and checked here by
running ``lint-imports`` on the tree: it counts every import, inside functions and under
``if TYPE_CHECKING`` too. The rules below read the source with ast (nothing imported): the
relative-import arrangement, no bare ``core``/``cli``, the tree is the layers, and the CLI takes
the library's public API.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

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


# Ids from the module names only: a tree's repr holds its address, which differs between
# pytest-xdist's workers (they must collect the same ids).
@pytest.mark.parametrize("name,tree", sorted(_sources(CORE, CLI, BENCH).items()),
                         ids=lambda v: str(v)[:40] if isinstance(v, str) else "")
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
    "botopt.core.base._config": {"describe_life", "effective_lives"},
    "botopt.core.watch._cron": {"default_log_dir", "make_log_dir"},
    "botopt.core.watch._history": {"iso_time", "now", "parse_since", "parse_types"},
    "botopt.core.state._paths": {"cache_dir_for"},
    "botopt.core.base._redact": {"RedactingFilter", "redact", "redact_url", "register_secret"},
    "botopt.core.state._workspace": {"set_default_root", "reset_default_root"},
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


def _contracts() -> dict[str, dict[str, Any]]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    return {c["id"]: c for c in contracts}


def _core_layers() -> list[str]:
    """core's layer names as the contract declares them, lowest first (optional ones too)."""
    names = [n.strip().strip("()") for layer in _contracts()["core-layers"]["layers"]
             for n in layer.split("|")]
    return list(reversed(names))


def test_the_tree_is_the_layers() -> None:
    # every module of core lives in a declared layer: the folder shows where it belongs
    layers = set(_core_layers())
    tops = {p.stem if p.is_file() else p.name for p in CORE.iterdir()
            if p.name != "__pycache__" and (p.is_dir() or p.suffix == ".py")}
    stray = sorted(tops - layers - {"__init__"})
    assert not stray, f"move {', '.join(stray)} into one of core/{{{','.join(sorted(layers))}}}/"
    assert {"base", "state", "data", "signals", "delivery", "watch"} <= tops


def _lint_imports(cwd: Path, env_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": env_path} if env_path else None
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run([*cmd, "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_declared_contracts_hold() -> None:
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "4 kept, 0 broken" in out.stdout  # every contract ran (none silently skipped)
    # no whitelist: an exception is a design change, argued in docs/architecture.md
    ignored = [i for c in _contracts().values() for i in c.get("ignore_imports", [])]
    assert not ignored, ignored


def test_the_layer_contract_sees_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    # the checker must be able to fail, on the kind of edge the old whitelist allowed
    pkg = tmp_path / "probe_pkg"
    for sub in ("", "base", "state"):
        (pkg / sub).mkdir(exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "state" / "_cache.py").write_text("X = 1\n")
    (pkg / "base" / "_config.py").write_text(
        "def lives():\n    from ..state._cache import X\n    return X\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.importlinter]\nroot_packages = ["probe_pkg"]\n'
        '[[tool.importlinter.contracts]]\nname = "probe"\ntype = "layers"\n'
        'containers = ["probe_pkg"]\nlayers = ["state", "base"]\n')
    out = _lint_imports(tmp_path, str(tmp_path))
    assert out.returncode != 0 and "probe_pkg.base._config -> probe_pkg.state._cache" in \
        out.stdout, out.stdout[-2000:]


def test_the_public_api_is_literal_and_typed() -> None:
    # __all__ is a literal (readers and mypy see it without running code), equal to the lazy
    # table; the TYPE_CHECKING imports name the same module for every name
    tree = ast.parse((CORE / "__init__.py").read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    literal: list[str] = []
    typed: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "_EXPORTS":
            table = ast.literal_eval(node.value)  # type: ignore[arg-type]
        elif isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            literal = ast.literal_eval(node.value)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typed = {a.name: "." + (stmt.module or "") for stmt in node.body
                     if isinstance(stmt, ast.ImportFrom) for a in stmt.names}
    assert literal == sorted(table) and len(literal) > 50
    assert typed == table
