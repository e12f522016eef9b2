from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """No BOTOPT_* variable or user config leaks into a test; cwd has no botopt.toml."""
    for var in list(os.environ):
        if var.startswith("BOTOPT_") or var == "NO_COLOR":
            monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.chdir(home)
    yield
    # The CLI installs its own handler on the botopt logger; let caplog see the next test.
    logger = logging.getLogger("botopt")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def no_shared_state_between_tests():
    """A test that configured a shared state server leaves no process-wide trace of it."""
    yield
    import sys

    redis_mod = sys.modules.get("botopt.core.state._redis")
    if redis_mod is not None:
        redis_mod._states.clear()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent (real third-party data is not in the repo)")
    return SHARED


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    return d


def wait_until(cond: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; return its last truth.

    Tests synchronise on a condition with a generous deadline instead of sleeping a guessed
    time: fast on an idle machine, still correct on a loaded one."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on 127.0.0.1 (skipped without the binary; a failure under CI)."""
    from .redis_server import start_server

    server = start_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
