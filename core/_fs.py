"""Small file-system helpers shared by the stores: atomic replace, JSON files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a torn one.

    A crash at any moment leaves at most a stray ``.tmp`` file next to the target.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON content of ``path``, or ``default`` when it does not exist."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default


class JsonState:
    """A small JSON document shared by overlapping runs: read without a lock (atomic
    replace means a reader sees a whole file), changed under a file lock. The one lock +
    atomic-JSON helper every state file uses (cooldowns, regime history)."""

    def __init__(self, path: Path, what: str, timeout: float = 10.0) -> None:
        self.path = path
        self.what = what
        self.timeout = timeout

    def raw(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def read(self, default: Any) -> Any:
        """The document, or ``default`` when it is missing or damaged (with a warning: a
        damaged state file must not stop signals; starting afresh costs at most one
        cooldown or one regime report)."""
        raw = self.raw()
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            import logging

            logging.getLogger("botopt.state").warning(
                "%s %s is damaged; starting afresh", self.what, self.path)
            return default

    def update(self, change: Any, default: Any) -> Any:
        """Under the lock: ``change(document) -> (new document or None, result)``; a new
        document is written atomically. Returns the result, or None when the lock could
        not be had or the disk refused the write (a warning: never a failed run)."""
        import logging

        from filelock import FileLock, Timeout

        log = logging.getLogger("botopt.state")
        try:
            with FileLock(str(self.path) + ".lock", timeout=self.timeout):
                new, result = change(self.read(default))
                if new is not None:
                    atomic_write_bytes(self.path, json.dumps(new, sort_keys=True).encode())
                return result
        except Timeout:
            log.warning("%s %s is locked by another run; not updated", self.what, self.path)
        except OSError as exc:
            log.warning("%s %s cannot be written (%s); not updated", self.what, self.path,
                        exc.strerror or exc)
        return None
