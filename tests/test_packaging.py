"""The package installs as botopt.cli / botopt.core only, and core stays free of the CLI stack."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _core_modules() -> list[str]:
    """Every module under core/, its layers' subpackages included."""
    out = []
    for p in (ROOT / "core").rglob("*.py"):
        parts = p.relative_to(ROOT / "core").with_suffix("").parts
        if "__pycache__" not in parts and parts[-1] != "__init__":
            out.append(".".join(("botopt.core", *parts)))
    return sorted(out)


def test_core_never_imports_typer_or_rich():
    mods = ["botopt.core", *_core_modules()]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"core pulled in: {out.stdout}"


def test_no_bare_core_or_cli_imports():
    offenders = []
    for folder in ("core", "cli", "tests", "benchmarks", "sample_data"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in ("core", "cli")]
    assert offenders == []


@pytest.mark.slow
def test_wheel_holds_only_the_botopt_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("botopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"botopt", next(t for t in tops if t.endswith(".dist-info"))}
    assert "botopt/core/errors.py" in names and "botopt/cli/main.py" in names
    # every module of every layer ships (setuptools' package list names each subpackage)
    missing = [m for m in _core_modules() if m.replace(".", "/") + ".py" not in names]
    assert not missing and len(_core_modules()) > 30, missing
    assert not any(n.startswith(("core/", "cli/")) for n in names)
    # the root's __init__.py is botopt's (the checkout is the package, docs/architecture.md);
    # nothing else at the root ships: no tests, docs or stray modules
    assert "botopt/__init__.py" in names
    assert not [n for n in names if n.startswith("botopt/") and n.count("/") == 1
                and n != "botopt/__init__.py"]
    assert not any(n.startswith(("botopt/tests/", "botopt/docs/")) for n in names)
    assert any(n.startswith("botopt/sample_data/") and n.endswith(".feather") for n in names)


def test_version_flag():
    from typer.testing import CliRunner

    from botopt.cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("botopt ")
