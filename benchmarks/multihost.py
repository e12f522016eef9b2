"""Several hosts, one bot: separate processes (each with its own HOME and cache directory)
queue notifications and flush them concurrently into one group of a fake Bot API that
enforces Telegram's limits (1 message a second per chat, 20 a minute per group).

Time is compressed by ``scale`` on both sides, honestly: the fake's clock runs ``scale``
times as fast as the wall clock, and so do the hosts' (``BOTOPT_TEST_TIME_SCALE`` for the
shared pacing script, a scaled clock and sleep for the flush). A minute of Telegram's limit
then takes 60/scale real seconds; the counts (messages, 429s, lost, sent twice) are what is
measured.

    python -m botopt.benchmarks.multihost host --items FILE [--flush]   (one host)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "123456789:AAmultihostmultihostmultihostmh"
KINDS = ("signal", "regime_change", "trade_executed", "alert")
_TOK = re.compile(r"tok-(\d+)")


# -- one host -------------------------------------------------------------------------------

def host_main(argv: list[str]) -> int:
    """Queue ``--items`` (a JSON list), then with ``--flush`` flush until the whole queue (the
    shared one, or this host's own) is empty or ``--deadline`` real seconds have passed."""
    p = argparse.ArgumentParser()
    p.add_argument("--items")
    p.add_argument("--flush", action="store_true")
    p.add_argument("--deadline", type=float, default=120.0)
    a = p.parse_args(argv)
    from ..core.base._config import load_config
    from ..core.delivery._notify import enqueue, flush_notifications, queue_stats
    from ..core.errors import NotifyError
    from ..core.state._redis import shared_state

    scale = float(os.environ.get("BOTOPT_TEST_TIME_SCALE", "1"))
    if os.environ.get("MULTIHOST_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(created).3f %(message)s")
    cfg = load_config()
    if a.items:
        enqueue(cfg, json.loads(Path(a.items).read_text()))
    if not a.flush:
        return 0
    end = time.monotonic() + a.deadline
    shared = shared_state(cfg.state)
    while time.monotonic() < end:
        try:
            flush_notifications(cfg, clock=lambda: time.time() * scale,
                                sleep=lambda s: time.sleep(max(0.0, s) / scale))
            q = queue_stats(cfg)
            if q["pending"] == 0 and q["claimed"] == 0:
                return 0
        except NotifyError:
            if shared is not None:
                shared.reset()  # the server is away: try again shortly
        time.sleep(0.05)
    return 3


# -- a fleet of hosts -----------------------------------------------------------------------

@dataclass
class Outcome:
    queued: list[int]
    received: list[dict[str, Any]]
    responses: list[int]
    seconds: float
    exit_codes: list[int | None] = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        return [int(t) for m in self.received for t in _TOK.findall(m["shown"])]

    @property
    def lost(self) -> int:
        return len(set(self.queued) - set(self.tokens))

    @property
    def sent_twice(self) -> int:
        return sum(n - 1 for n in Counter(self.tokens).values() if n > 1)

    @property
    def too_many(self) -> int:
        return self.responses.count(429)

    def messages_by_type(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for m in self.received:
            kind = next((k for k in KINDS if f"kind={k}" in m["shown"]), "?")
            out[kind] += 1
        return dict(out)


def plan(n: int, hosts: int, seed: int = 7) -> list[list[dict[str, Any]]]:
    """``n`` notifications over the 4 types, dealt to ``hosts`` at random (uneven, as real
    hosts are), each carrying a unique token."""
    rng = random.Random(seed)
    per_host: list[list[dict[str, Any]]] = [[] for _ in range(hosts)]
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        per_host[rng.randrange(hosts)].append(
            {"type": kind, "data": {"note": f"tok-{i:05d} kind={kind}"}})
    return per_host


def host_env(home: Path, url: str | None, telegram_url: str, scale: float,
             **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTOPT_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), BOTOPT_CACHE_DIR=str(home / "cache"),
               BOTOPT_TELEGRAM_TOKEN=TOKEN, BOTOPT_TELEGRAM_CHAT_ID="-1001",
               BOTOPT_TELEGRAM_API_URL=telegram_url, BOTOPT_TELEGRAM_TIMEOUT="1",
               BOTOPT_TELEGRAM_BATCH_INTERVAL="30", BOTOPT_TEST_TIME_SCALE=repr(scale),
               BOTOPT_STATE_CLAIM_TIMEOUT="2")
    if url:
        env["BOTOPT_STATE_URL"] = url
    env.update(extra)
    home.mkdir(parents=True, exist_ok=True)
    return env


def start_host(home: Path, env: dict[str, str], items: list[dict[str, Any]] | None,
               flush: bool = True, deadline: float = 120.0) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "botopt.benchmarks.multihost", "host",
            "--deadline", str(deadline)]
    if items is not None:
        path = home / "items.json"
        path.write_text(json.dumps(items))
        args += ["--items", str(path)]
    if flush:
        args.append("--flush")
    return subprocess.Popen(args, env=env, cwd=home, stdout=subprocess.DEVNULL,
                            stderr=open(home / "stderr.log", "ab"))  # noqa: SIM115


def run_fleet(url: str | None, n: int = 300, hosts: int = 3, scale: float = 10.0,
              deadline: float = 120.0, kills: int = 0, chaos: Any = None,
              seed: int = 7) -> Outcome:
    """``hosts`` processes queue ``n`` notifications and flush them into one group.
    ``url``: the shared server (None: each host its own local backend). ``kills``: SIGKILL
    a flushing host that many times at random moments (a new host takes its place).
    ``chaos(elapsed)``: called while the hosts run (a server restart, an outage)."""
    from .fake_telegram import FakeTelegram

    origin = time.monotonic()
    fake = FakeTelegram(token=TOKEN, chats=("-1001",),
                        clock=lambda: origin + (time.monotonic() - origin) * scale).start()
    rng = random.Random(seed)
    try:
        with tempfile.TemporaryDirectory(prefix="botopt-hosts-") as tmp:
            if os.environ.get("MULTIHOST_DEBUG"):
                tmp = os.environ["MULTIHOST_DEBUG"]
            work = plan(n, hosts, seed)
            procs = [start_host(Path(tmp) / f"host{i}", host_env(
                Path(tmp) / f"host{i}", url, fake.url, scale), items, deadline=deadline)
                for i, items in enumerate(work)]
            start = time.monotonic()
            codes: list[int | None] = []
            spare = hosts
            kill_at = sorted(rng.uniform(1.0, 8.0) for _ in range(kills))
            while any(p.poll() is None for p in procs):
                elapsed = time.monotonic() - start
                if elapsed > deadline + 30:
                    break
                if kill_at and elapsed >= kill_at[0]:
                    kill_at.pop(0)
                    alive = [p for p in procs if p.poll() is None]
                    if alive:
                        victim = rng.choice(alive)
                        victim.send_signal(signal.SIGKILL)
                        victim.wait()
                        codes.append(victim.returncode)
                        procs.remove(victim)
                        home = Path(tmp) / f"host{spare}"
                        spare += 1
                        procs.append(start_host(home, host_env(home, url, fake.url, scale),
                                                None, deadline=deadline))
                if chaos is not None:
                    chaos(elapsed)
                time.sleep(0.05)
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
                codes.append(p.returncode)
            seconds = time.monotonic() - start
        return Outcome([int(_TOK.findall(i["data"]["note"])[0]) for h in work for i in h],
                       list(fake.received), list(fake.responses), seconds, codes)
    finally:
        fake.stop()


def expected_messages(n: int, hosts: int, seed: int = 7, shared: bool = True) -> int:
    """The fewest messages batching allows: ceil(n/5) per type over all hosts (shared), or
    per type per host (each host batching alone)."""
    work = plan(n, hosts, seed)
    if shared:
        per_type = Counter(i["type"] for h in work for i in h)
        return sum(math.ceil(c / 5) for c in per_type.values())
    return sum(math.ceil(c / 5) for h in work
               for c in Counter(i["type"] for i in h).values())


if __name__ == "__main__":
    if sys.argv[1:2] == ["host"]:
        raise SystemExit(host_main(sys.argv[2:]))
    raise SystemExit("usage: python -m botopt.benchmarks.multihost host ...")
