"""The shared-state tests' server (``botopt.benchmarks.redis_server``): where the binary is
absent they skip with the reason, except under CI (the ``CI`` variable set), where they fail:
``.ci/run`` installs the distribution's ``redis-server``, so a CI run that skipped them would
claim coverage it does not have."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from botopt.benchmarks.redis_server import RedisServer, free_port, server_binary

__all__ = ["RedisServer", "age_claims", "free_port", "require_binary", "start_server"]


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


def age_claims(client: Any, stream: str, group: str, seconds: float) -> int:
    """Move the server's clock for ``group``'s claims on ``stream``: each pending entry now
    looks idle for ``seconds``, as if its holder had died that long ago. The claim timeout is
    judged by the server on its own idle counters (XAUTOCLAIM's min-idle-time), so this is
    where time moves; XCLAIM back to the same holder with IDLE and JUSTID changes neither the
    holder nor the delivery count. Returns how many entries were aged."""
    pending = client.xpending_range(stream, group, "-", "+", 10_000)
    for p in pending:
        client.xclaim(stream, group, p["consumer"], 0, [p["message_id"]],
                      idle=int(seconds * 1000), justid=True)
    return len(pending)
