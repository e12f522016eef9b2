"""Several hosts, one bot, on a shared Redis server (started here on 127.0.0.1; the rows say
so and are skipped without a ``redis-server`` binary):

- 3 hosts queue notifications of 4 types and flush them concurrently into one group of the
  fake Bot API (20 messages a minute enforced): one shared backend against 3 local ones,
  the 429s and the extra (half-empty) messages. Time runs 5x fast on both sides
  (``botopt.benchmarks.multihost``); counts are exact.
- A whole-run cache hit (2 symbols) through Redis on loopback against a local hit.
- A warm ``botopt signals`` process with the Redis backend against a bare typer+rich command.

    python -m botopt.benchmarks.bench_multihost [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ._common import Row, best_time, main

AS_OF = datetime(2026, 9, 20, 12, 0, 30, tzinfo=timezone.utc)


def _fleet_rows(url: str, quick: bool) -> list[Row]:
    from .multihost import expected_messages, run_fleet

    n = 60 if quick else 300
    # --quick compresses time 10x (the tests' factor): Telegram's per-minute pacing is what
    # the fleets wait on, 15 s a fleet at 5x
    scale = 10.0 if quick else 5.0
    # The two fleets at once: each waits on its own fake Bot API's pacing, not on the CPU,
    # and neither's counts depend on the other (own directories, servers, ports)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        shared_run = pool.submit(run_fleet, url, n, 3, scale=scale, deadline=150)
        local_run = pool.submit(run_fleet, None, n, 3, scale=scale, deadline=150)
        shared, local = shared_run.result(), local_run.result()
    floor = expected_messages(n, 3)
    same = shared.lost == local.lost == 0 and shared.sent_twice == local.sent_twice == 0
    return [
        Row("multihost", f"3 hosts, {n} notifications of 4 types into one group: 429s",
            f"3 local backends {local.too_many}", f"shared Redis {shared.too_many}",
            local.too_many, shared.too_many, "reduction", claim="goal: 0 with Redis",
            identical=same, note=f"(time {scale:g}x compressed on both sides)"),
        Row("multihost", f"3 hosts, {n} notifications of 4 types: messages sent",
            f"3 local backends {len(local.received)}", f"shared Redis {len(shared.received)}",
            len(local.received), len(shared.received), "reduction",
            claim=f"goal: ceil(n/5) per type = {floor}", identical=same,
            note=f"(lost {shared.lost}/{local.lost}, sent twice "
                 f"{shared.sent_twice}/{local.sent_twice}, shared/local)"),
    ]


def _hit_rows(url: str) -> list[Row]:
    """One in-process warm run (the whole-run entry) per backend, 2 symbols."""
    from ..core.base._config import load_config
    from ..core.signals._pipeline import run_signals
    from ..core.state._workspace import Workspace

    syms = ["BTCUSDT", "ETHUSDT"]
    times, answers = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in (("local", {}), ("redis", {"BOTOPT_STATE_URL": url,
                                                    "BOTOPT_STATE_NAMESPACE": "bench-hit"})):
            cfg = load_config(overrides={"cache.dir": f"{tmp}/{name}"}, env=env)
            ws = Workspace.of(cfg)
            answers[name] = run_signals(cfg, syms, as_of=AS_OF, notify=False)
            assert run_signals(cfg, syms, as_of=AS_OF, notify=False).from_cache
            times[name] = best_time(lambda c=cfg: run_signals(c, syms, as_of=AS_OF,
                                                              notify=False), repeat=5)
            ws.close()
        fresh = run_signals(load_config(overrides={"cache.dir": f"{tmp}/fresh"}), syms,
                            as_of=AS_OF, use_cache=False, notify=False)
    return [Row("multihost", "cache hit, 2 symbols (whole-run entry): Redis vs local",
                f"local {times['local'] * 1e3:.2f} ms", f"redis {times['redis'] * 1e3:.2f} ms",
                times["local"], times["redis"], "ratio", claim="goal: at most 2x",
                identical=answers["local"] == answers["redis"] == fresh)]


def _startup_row(url: str, quick: bool) -> Row:
    from .replay_cron import _process_env, _process_times

    runs = 3 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        env = {**_process_env(), "BOTOPT_STATE_URL": url, "BOTOPT_STATE_NAMESPACE": "bench-up"}
        bare = [sys.executable, "-m", "botopt.benchmarks.bare_typer"]
        sig = [sys.executable, "-m", "botopt.cli.main", "--cache-dir", tmp, "--quiet",
               "signals", "--symbols", "BTCUSDT,ETHUSDT", "--as-of", AS_OF.isoformat()]
        shell = ["env", f"BOTOPT_STATE_URL={url}", "BOTOPT_STATE_NAMESPACE=bench-up", *sig]
        for warm in (sig, bare):
            subprocess.run(warm, check=True, capture_output=True, env=env)
        t_bare, t_sig = _process_times([bare, shell], runs)
        warm_out = subprocess.run([*sig, "--json"], check=True, capture_output=True, env=env)
        cold = subprocess.run([*sig, "--json", "--no-cache"], check=True, capture_output=True,
                              env=env)
    same = json.loads(warm_out.stdout) == json.loads(cold.stdout)
    return Row("startup", "warm `botopt signals` (2 symbols) with the Redis backend vs bare "
               "typer+rich", f"bare {t_bare * 1e3:.0f} ms", f"signals {t_sig * 1e3:.0f} ms",
               t_bare, t_sig, "ratio", claim="target: within 1.5x", identical=same)


def run(quick: bool = False) -> list[Row]:
    from .redis_server import RedisServer, server_binary

    if server_binary() is None:
        return [Row("multihost", "shared Redis rows skipped: no redis-server on PATH", "-", "-",
                    0.0, 0.0, "ratio")]
    with tempfile.TemporaryDirectory(prefix="botopt-bench-redis-") as tmp:
        # AOF with Redis's default fsync (every second), as a production server runs
        server = RedisServer(Path(tmp), fsync="everysec").start()
        try:
            return [*_fleet_rows(server.url, quick), *_hit_rows(server.url),
                    _startup_row(server.url, quick)]
        finally:
            server.stop()


if __name__ == "__main__":
    main(run, __doc__ or "")
