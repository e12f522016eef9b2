"""A real Redis (or Valkey) server on 127.0.0.1 for the shared-state tests and benchmarks:
``redis-server`` on a free port with its own directory and AOF on (``appendfsync always``),
never the distribution's service."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("redis-server", "valkey-server")


def server_binary() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One server process; ``restart`` keeps its directory (the AOF) and port."""

    def __init__(self, directory: Path, appendonly: bool = True,
                 fsync: str = "always") -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("no redis-server or valkey-server on PATH")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.fsync = fsync  # "always" for the loss tests; Redis's default "everysec" to time
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.fsync,
             "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes",
             "--loglevel", "warning", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = (self.dir / "redis.log").read_text(errors="replace")[-500:] \
            if (self.dir / "redis.log").exists() else ""
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {log}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()
