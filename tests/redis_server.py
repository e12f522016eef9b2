"""The shared-state tests' server (``botopt.benchmarks.redis_server``): where the binary is
absent they skip with the reason, except under CI (the ``CI`` variable set), where they fail:
``.ci/run`` installs the distribution's ``redis-server``, so a CI run that skipped them would
claim coverage it does not have."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from botopt.benchmarks.redis_server import RedisServer, free_port, server_binary

__all__ = ["RedisServer", "free_port", "require_binary", "start_server"]


def require_binary() -> str:
    path = server_binary()
    if path is None:
        why = "no redis-server or valkey-server on PATH (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(why + "; CI must run the shared-state tests")
        pytest.skip(why)
    return path


def start_server(directory: Path, appendonly: bool = True) -> RedisServer:
    require_binary()
    return RedisServer(directory, appendonly).start()
