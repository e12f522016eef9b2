"""The soak: simulated cron minutes under random faults, as whole ``botopt`` processes.

Each simulated minute runs ``signals`` (live, on the real pairs of ../shared/data, whose
files grow by one candle as each closes), a ``notify add`` carrying a numbered token (the
ledger), and ``notify-flush``; ``monitor --once`` runs every 5 minutes. Every process gets
the simulated time through ``botopt.benchmarks._clocked``. Faults, drawn with ``--seed``:
Telegram 429 with retry_after, 500, answers past the timeout, answers whose status line and
headers trickle in, dropped connections, 200s that are not the Bot API's, a SIGKILL of any
command at a random moment, and a few minutes of a
read-only and of a full cache directory (as root: a private mount namespace per process; an
unprivileged user gets no disk faults, and the table says so).

Checked against the fake Bot API's log: tokens lost, tokens delivered more than once beyond
the batch in flight at a kill or an unconfirmed send, internal errors or tracebacks, tokens
due and deliverable yet undelivered for more than 2 flush cycles without a fault, sampled
cached answers against ``--no-cache``, state size and peak memory late vs early.

With ``--backend redis``: three hosts (each its own cache directory and ``state.host_id``)
share a real ``redis-server`` (AOF, ``appendfsync always``) through ``state.url``, and each runs
the same cron minute; the third host's clock (its processes' and its ``--as-of``) runs
``SKEW`` behind. Added faults: server restarts (SIGKILL, then the AOF) and one 5-minute
outage. Added checks: a signal (pair and candle) delivered by more than one host, and the
server's keys and memory, late vs early. The server's own clock is not simulated: it runs at
wall speed while the hosts' minutes are compressed.

    python -m botopt.benchmarks.soak [--days 1] [--seed 7] [--backend local|redis]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ._common import Row

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles" / "5m"
TOKEN = "123456789:AAsoaksoaksoaksoaksoaksoaksoaksoak"
START = datetime(2018, 1, 12, 0, 0, 30, tzinfo=timezone.utc)  # 1.8 days of history before
TELEGRAM_FAULTS = ["429:{n}", "500", "hang:1.6", "drop", "body:{{}}",
                   "body:<html><body>proxy</body></html>", "driphead:0.4"]
_TOK = re.compile(r"soak-(\d{6})")
# a passing signal as a message shows it: direction, pair, then its candle (HH:MM UTC)
_SIG = re.compile(r"(long|short) (\S+) @ [^\n]*\n[^\n]*candle (\d\d:\d\d)")
HOSTS = 3
SKEW = timedelta(minutes=-15)


@dataclass
class Tally:
    minutes: int = 0
    processes: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    internal_errors: list[str] = field(default_factory=list)
    added: dict[int, int] = field(default_factory=dict)  # token -> minute queued
    maybe: set[int] = field(default_factory=set)  # `notify add` killed: queued or not
    delivered_at: dict[int, list[int]] = field(default_factory=dict)  # token -> minutes
    in_flight: int = 0  # flushes killed or sends unconfirmed: a batch may go twice
    # tokens of dead letters that were "unconfirmed twice, may have been delivered" when the
    # drain retried them: the user's `notify retry` resends what may have arrived twice
    retried_unconfirmed: set[int] = field(default_factory=set)
    faulted: set[int] = field(default_factory=set)  # minutes with any fault
    cache_checks: int = 0
    cache_diffs: int = 0
    rss: dict[int, int] = field(default_factory=dict)  # minute -> peak KiB of its runs
    size: dict[int, int] = field(default_factory=dict)  # minute -> state bytes
    redis_keys: dict[int, int] = field(default_factory=dict)  # minute -> keys on the server
    redis_memory: dict[int, int] = field(default_factory=dict)  # minute -> used_memory bytes
    redis_families: dict[str, int] = field(default_factory=dict)  # last count per key kind

    def fault(self, kind: str, minute: int) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.faulted.add(minute)


def _label(action: str) -> str:
    return {"429": "429 retry_after", "500": "500", "han": "answer past the timeout",
            "dro": "dropped connection",
            "dri": "answer trickling in"}.get(action[:3], "200 not the Bot API")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Soak:
    def __init__(self, tmp: Path, seed: int, backend: str) -> None:
        import polars as pl

        from .fake_telegram import FakeTelegram

        if backend not in ("local", "redis"):
            raise SystemExit(f"soak: no backend {backend!r} (local or redis)")
        self.tmp, self.rng, self.tally = tmp, random.Random(seed), Tally()
        self.cache, self.data = tmp / "cache", tmp / "data"
        self.hosts = HOSTS if backend == "redis" else 1
        self.caches = [self.cache] + [tmp / f"cache-h{i}" for i in range(1, self.hosts)]
        self.redis: Any = None
        self.outage: tuple[int, int] | None = None  # (from, until) minute: the server down
        self.outage_at = 20  # the minute the outage starts (simulate draws it)
        self.data.mkdir()
        self.frames = {p.name.split("-")[0]: pl.read_ipc(p)
                       for p in sorted(SHARED.glob("*-5m.feather"))}
        self.symbols = ",".join(self.frames)
        self.fake = FakeTelegram(token=TOKEN, chats=("42",), enforce_limits=False).start()
        (tmp / "botopt.toml").write_text(
            f'[data]\nsource = "local"\ndata_dir = "{self.data}"\ninterval = "5m"\n'
            f'[telegram]\ntoken = "{TOKEN}"\nchat_id = "42"\napi_url = "{self.fake.url}"\n'
            "timeout = 1.0\nflush_budget = 8\nmax_retries = 2\nbatch_interval = 30\n")
        self.env = {**os.environ, "BOTOPT_CONFIG": str(tmp / "botopt.toml")}
        self.env.pop("BOTOPT_DEBUG", None)
        self.envs = [self.env]
        if backend == "redis":
            from .redis_server import RedisServer

            self.redis = RedisServer(tmp / "redis").start()
            self.envs = [{**self.env, "BOTOPT_STATE_URL": self.redis.url,
                          "BOTOPT_STATE_HOST_ID": f"soak-h{i}"} for i in range(self.hosts)]
        self.disk: tuple[str, int] | None = None  # ("ro" | "full", until minute)
        self.root = hasattr(os, "geteuid") and os.geteuid() == 0 and bool(
            shutil.which("unshare")) and subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode == 0

    def close(self) -> None:
        self.fake.stop()
        if self.redis is not None:
            self.redis.stop()

    def skew(self, host: int) -> timedelta:
        """The last host's clock runs behind (redis backend only)."""
        return SKEW if self.hosts > 1 and host == self.hosts - 1 else timedelta(0)

    # -- the world ---------------------------------------------------------------------

    def candles_until(self, now: datetime) -> None:
        """Each pair's file as a fetcher leaves it: every candle closed by ``now``."""
        import polars as pl

        for sym, df in self.frames.items():
            done = df.filter(pl.col("date") + timedelta(minutes=5) <= now)
            part = self.data / f".{sym}-5m.feather.part"
            done.write_ipc(part)
            os.replace(part, self.data / f"{sym}-5m.feather")

    def _wrap(self, host: int) -> list[str]:
        if self.disk is None or not self.root or host != 0:
            return []  # the disk spells hit the first host's cache directory
        kind, _ = self.disk
        c = str(self.cache)
        if kind == "ro":
            setup = f'mount --bind -o ro "{c}" "{c}"'
        else:
            setup = (f'cp -a "{c}" "{c}.full" 2>/dev/null; mount -t tmpfs -o size=4m tmpfs '
                     f'"{c}" && cp -a "{c}.full/." "{c}" && rm -rf "{c}.full"; '
                     f'dd if=/dev/zero of="{c}/filler" bs=4k 2>/dev/null; true')
        return ["unshare", "-m", "sh", "-c", setup + ' && exec "$@"', "sh"]

    def run(self, minute: int, at: datetime, *args: str, kill_p: float = 0.0, host: int = 0
            ) -> subprocess.CompletedProcess[str] | None:
        """One botopt process of ``host`` at simulated time ``at`` (plus the host's skew);
        None when the soak killed it."""
        at = at + self.skew(host)
        args = tuple(at.isoformat() if a == "{at}" else a for a in args)
        cmd = [*self._wrap(host), sys.executable, "-m", "botopt.benchmarks._clocked",
               str(at.timestamp()), "--", "--cache-dir", str(self.caches[host]), *args]
        with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=self.envs[host],
                                    start_new_session=True)
            deadline = time.monotonic() + (self.rng.uniform(0.05, 1.2)
                                           if kill_p and self.rng.random() < kill_p else 1e9)
            killed, status, ru = False, 0, None
            while True:  # wait4: the exit status and this process's own peak memory
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() >= deadline and not killed:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                time.sleep(0.01)
            proc.returncode = os.waitstatus_to_exitcode(status)
            fo.seek(0)
            fe.seek(0)
            out, err = fo.read(), fe.read()
        self.tally.processes += 1
        self.tally.rss[minute] = max(self.tally.rss.get(minute, 0), ru.ru_maxrss)
        text = err.decode("utf-8", "replace")
        if "internal error" in text or "Traceback" in text:
            self.tally.internal_errors.append(f"minute {minute} {args[:2]}: "
                                              f"{text.strip().splitlines()[-1][:200]}")
        if killed:
            self.tally.fault("SIGKILL", minute)
            return None
        return subprocess.CompletedProcess(cmd, proc.returncode,
                                           out.decode("utf-8", "replace"), text)

    # -- one simulated minute ------------------------------------------------------------

    def minute(self, m: int, at: datetime) -> None:
        t = self.tally
        if at.minute % 5 == 0 or m == 0:
            self.candles_until(at)
        if self.disk and m >= self.disk[1]:
            self.disk = None
        if self.disk is None and self.root and self.rng.random() < 1 / 240:
            self.disk = (self.rng.choice(["ro", "full"]), m + self.rng.randint(2, 5))
            t.fault(f"{'read-only' if self.disk[0] == 'ro' else 'full'} disk spell", m)
        if self.disk:
            t.faulted.add(m)
        if self.redis is not None:
            self._server_faults(m)
        for h in range(self.hosts):
            self._host_minute(m, at, h)
        if self.rng.random() < 0.12:
            action = self.rng.choice(TELEGRAM_FAULTS).format(n=self.rng.randint(1, 40))
            self.fake.script = [action]
            t.fault(f"telegram {_label(action)}", m)
            if action.startswith(("hang", "body", "drip")):
                t.in_flight += 1
        for h in range(self.hosts):
            before = len(self.fake.received)
            flushed = self.run(m, at + timedelta(seconds=2), "--quiet", "notify-flush",
                               kill_p=0.02, host=h)
            if flushed is None:
                t.in_flight += 1
            self._note_delivered(before, m)
        self.fake.script = []
        if at.minute % 5 == 0:
            for h in range(self.hosts):
                self.run(m, at + timedelta(seconds=3), "--quiet", "monitor", "--once",
                         kill_p=0.01, host=h)
        if m % 30 == 15:
            self._compare_cache(m, at)
        t.size[m] = sum(_dir_bytes(c) for c in self.caches if c.exists())
        if self.redis is not None and not (self.outage and self.outage[0] >= 0):
            self._server_size(m)
        t.minutes += 1

    def _host_minute(self, m: int, at: datetime, h: int) -> None:
        """One host's cron minute: signals, then a ledger token queued."""
        t = self.tally
        # The process clock is moved, but the staleness check reads datetime.now(): --as-of
        # gives it the simulated moment, --notify keeps the run live (cooldowns, queue).
        self.run(m, at, "--quiet", "signals", "--symbols", self.symbols, "--as-of", "{at}",
                 "--notify", kill_p=0.01, host=h)
        token = m * self.hosts + h if self.hosts > 1 else m
        add = self.run(m, at + timedelta(seconds=1), "--quiet", "notify", "add", "-t", "alert",
                       "-d", json.dumps({"message": f"soak-{token:06d}"}), kill_p=0.01, host=h)
        if add is None:
            t.maybe.add(token)
        elif add.returncode == 0:
            t.added[token] = m

    def _server_faults(self, m: int) -> None:
        """A restart now and then (SIGKILL, then the AOF), and one 5-minute outage."""
        t = self.tally
        if self.outage is not None and m >= self.outage[1]:
            self.redis.start()
            self.outage = (-1, -1)  # done: one per soak
        if self.outage is not None and self.outage[0] >= 0:
            t.faulted.add(m)
            return
        if self.outage is None and m >= self.outage_at:
            self.redis.stop()
            self.outage = (m, m + 5)
            t.fault("redis 5-minute outage", m)
        elif self.rng.random() < 1 / 20:
            self.redis.restart()
            t.fault("redis restart (SIGKILL)", m)

    def _server_size(self, m: int) -> None:
        import redis

        try:
            client = redis.Redis.from_url(self.redis.url, socket_timeout=5)
            self.tally.redis_keys[m] = int(client.dbsize())
            self.tally.redis_memory[m] = int(client.info("memory")["used_memory"])
            families: dict[str, int] = {}
            for key in client.scan_iter(count=1000):
                # botopt:<store>:<kind>:... -> "<store>:<kind>"
                parts = key.decode(errors="replace").split(":")[1:3]
                fam = ":".join(parts).split("\x1f")[0]  # a cache entry: its cache's name
                families[fam] = families.get(fam, 0) + 1
            self.tally.redis_families = families
            client.close()
        except (redis.RedisError, OSError):
            pass

    def _note_delivered(self, before: int, m: int) -> None:
        for r in self.fake.received[before:]:
            for tok in _TOK.findall(r["shown"]):
                self.tally.delivered_at.setdefault(int(tok), []).append(m)

    def _compare_cache(self, m: int, at: datetime) -> None:
        common = ["--quiet", "signals", "--symbols", self.symbols, "--json", "--as-of",
                  "{at}", "--no-notify"]
        a = self.run(m, at, *common)
        b = self.run(m, at, *common, "--no-cache")
        if a and b and a.returncode == 0 and b.returncode == 0:
            self.tally.cache_checks += 1
            self.tally.cache_diffs += json.loads(a.stdout) != json.loads(b.stdout)

    def drain(self, m: int, at: datetime) -> None:
        """After the soak: dead letters retried, flushed with no faults until empty."""
        self.disk = None
        if self.redis is not None and self.outage is not None and self.outage[0] >= 0:
            self.redis.start()
            self.outage = (-1, -1)
        self.fake.script, self.fake.always = [], None
        time.sleep(2.0)  # answers still hanging arrive
        dead = self.run(m, at, "notify", "list", "--failed", "--json")
        letters = (json.loads(dead.stdout)["dead_letters"]
                   if dead and dead.stdout.strip() else [])
        ids = [d["id"] for d in letters]
        for d in letters:
            text = json.dumps(d)
            if "may have been delivered" in text:
                self.tally.retried_unconfirmed.update(int(x) for x in _TOK.findall(text))
        self.tally.faults["dead letters retried at the end"] = len(ids)
        for nid in ids:
            self.run(m, at, "--quiet", "notify", "retry", nid)
        for i in range(6):
            for h in range(self.hosts):
                before = len(self.fake.received)
                self.run(m, at + timedelta(minutes=i + 1), "--quiet", "notify-flush",
                         "--force", host=h)
                self._note_delivered(before, m + i + 1)


def _recount(soak: Soak) -> None:
    """Deliveries from the fake's whole log (late answers of hung requests included)."""
    t = soak.tally
    counts: dict[int, int] = {}
    for r in soak.fake.received:
        for tok in _TOK.findall(r["shown"]):
            counts[int(tok)] = counts.get(int(tok), 0) + 1
    for tok, n in counts.items():
        seen = t.delivered_at.setdefault(tok, [])
        seen.extend([seen[-1] if seen else t.minutes] * (n - len(seen)))


def _signal_repeats(soak: Soak) -> int:
    """Signals (pair, direction, candle) that reached the chat more than once."""
    seen: dict[tuple[str, str, str], int] = {}
    for r in soak.fake.received:
        for key in _SIG.findall(r["shown"]):
            seen[key] = seen.get(key, 0) + 1
    return sum(1 for n in seen.values() if n > 1)


def simulate(days: float, seed: int, backend: str = "local",
             progress: bool = False) -> dict[str, Any]:
    minutes = max(1, int(days * 1440))
    with tempfile.TemporaryDirectory(prefix="botopt-soak-") as tmp:
        soak = Soak(Path(tmp), seed, backend)
        # the one outage somewhere in the second quarter, so that a short run has it too
        soak.outage_at = soak.rng.randint(minutes // 4, max(minutes // 4, minutes // 2))
        t0 = time.monotonic()
        try:
            for m in range(minutes):
                soak.minute(m, START + timedelta(minutes=m))
                if progress and m % 30 == 29:
                    print(f"soak: {m + 1}/{minutes} minutes, {time.monotonic() - t0:.0f} s",
                          file=sys.stderr)
            soak.drain(minutes, START + timedelta(minutes=minutes))
            time.sleep(2.0)
            _recount(soak)
            repeats = _signal_repeats(soak)
        finally:
            soak.close()
        out = _summary(soak.tally, minutes, soak.root, time.monotonic() - t0)
        out.update(backend=backend, hosts=soak.hosts, signals_delivered_twice=repeats)
        if soak.redis is not None:
            t = soak.tally
            hour = min(60, max(1, minutes // 4))
            early = [m for m in sorted(t.redis_keys) if m < hour] or sorted(t.redis_keys)[:1]
            late = sorted(t.redis_keys)[-1:]
            out.update(redis_keys_early=t.redis_keys.get(early[-1], 0) if early else 0,
                       redis_keys_end=t.redis_keys.get(late[0], 0) if late else 0,
                       redis_memory_early=t.redis_memory.get(early[-1], 0) if early else 0,
                       redis_memory_end=t.redis_memory.get(late[0], 0) if late else 0,
                       redis_keys_by_kind_end=dict(sorted(t.redis_families.items(),
                                                          key=lambda kv: -kv[1])[:12]),
                       skewed_host=f"soak-h{soak.hosts - 1}, "
                       f"{SKEW.total_seconds() / 60:+.0f} min")
        return out


def _summary(t: Tally, minutes: int, root: bool, wall: float) -> dict[str, Any]:
    due_cycles = 1  # batch_interval 30 s: an alert is due at the next flush
    lost = [k for k in t.added if not t.delivered_at.get(k)]
    twice = [k for k, v in t.delivered_at.items() if len(v) == 2]
    # A third delivery is allowed only after the user retried a dead letter that said it
    # may have been delivered (twice unconfirmed): the drain retries every dead letter.
    retried3 = [k for k, v in t.delivered_at.items()
                if len(v) == 3 and k in t.retried_unconfirmed]
    thrice = [k for k, v in t.delivered_at.items() if len(v) > 2 and k not in retried3]
    stuck = []
    for k, a in t.added.items():
        d = min(t.delivered_at.get(k, [minutes]))
        if d - a > due_cycles + 2 and not any(x in t.faulted for x in range(a, d + 1)):
            stuck.append(k)
    hour = min(60, max(1, minutes // 4))
    early = [t.rss[m] for m in range(hour) if m in t.rss]
    late = [t.rss[m] for m in range(minutes - hour, minutes) if m in t.rss]
    return {
        "minutes": minutes, "processes": t.processes, "wall_s": round(wall, 1),
        "disk_faults": "yes (mount namespaces)" if root else "no (not root)",
        "faults": dict(sorted(t.faults.items())), "queued": len(t.added),
        "lost": len(lost), "delivered_twice": len(twice), "delivered_3x_or_more": len(thrice),
        "third_after_retrying_an_unconfirmed_dead_letter": len(retried3),
        # each such token's delivery minutes (>= the soak's minutes: the drain)
        "thrice": {k: t.delivered_at[k] for k in thrice},
        "batches_in_flight": t.in_flight, "dup_allowance": 5 * t.in_flight,
        "internal_errors": t.internal_errors, "stuck": len(stuck),
        "cache_checks": t.cache_checks, "cache_diffs": t.cache_diffs,
        "state_bytes_early": t.size.get(hour - 1, 0),
        "state_bytes_end": t.size.get(minutes - 1, 0),
        "peak_rss_kib_early": max(early, default=0), "peak_rss_kib_late": max(late, default=0),
    }


def run(quick: bool = False) -> list[Row]:
    """The bench group ``soak`` (``--quick`` skips it: it runs minutes of processes)."""
    if quick or not SHARED.is_dir():
        return []
    s = simulate(2 / 24, seed=7)
    ok = (not s["lost"] and not s["delivered_3x_or_more"] and not s["internal_errors"]
          and s["delivered_twice"] <= s["dup_allowance"] and not s["stuck"])
    return [
        Row("soak", f"{s['minutes']} cron minutes, {s['processes']} processes, faults "
            f"{sum(s['faults'].values())}: lost / twice / stuck",
            f"{s['queued']} queued", f"{s['lost']} / {s['delivered_twice']} / {s['stuck']}",
            s["queued"], s["lost"], "ratio", claim="goal: 0 lost, 0 beyond in-flight, 0 stuck",
            identical=ok),
        Row("soak", "peak memory of any run, last vs first quarter",
            f"{s['peak_rss_kib_early'] / 1024:.0f} MiB", f"{s['peak_rss_kib_late'] / 1024:.0f} MiB",
            s["peak_rss_kib_early"], s["peak_rss_kib_late"], "ratio", claim="goal: <= 1.1x"),
        Row("soak", "state size, end vs first quarter",
            f"{s['state_bytes_early'] / 1024:.0f} KiB", f"{s['state_bytes_end'] / 1024:.0f} KiB",
            s["state_bytes_early"], s["state_bytes_end"], "ratio", claim="goal: <= 1.2x",
            identical=s["cache_diffs"] == 0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", default="local", choices=["local", "redis"])
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"soak: needs the real pairs in {SHARED}")
    print(json.dumps(simulate(args.days, args.seed, args.backend, progress=True), indent=2))


if __name__ == "__main__":
    main()
