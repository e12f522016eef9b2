"""Small file-system helpers shared by the stores: atomic replace, JSON files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ._codec import json_loads


@contextmanager
def atomic_writer(path: Path, *, mode: int = 0o600, fsync: bool = True,
                  replace: bool = True) -> Iterator[BinaryIO]:
    """A file handle whose content replaces ``path`` when the block ends without error:
    readers see the old file or the new one, never a torn one. A crash at any moment leaves
    at most a stray ``.tmp`` file next to the target. ``fsync=False`` for caches, where a
    file lost in a crash is detected and rebuilt. ``replace=False``: FileExistsError when
    ``path`` exists by then, even when another process made it meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the name exists: no check-then-write race
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def regular_target(path: Path, what: str) -> Path:
    """The file a command is to write at ``path`` (links followed: the file they name),
    when it is a regular file or does not exist yet. A device, a pipe or a directory is
    refused: ``init --force /dev/null`` made the device private to root, a pipe hung the
    command, ``-o ""`` named the current directory."""
    import stat

    from ..errors import UsageError

    if str(path) in ("", "."):
        raise UsageError(f"{what}: no file named", key=what)
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:  # a link loop, a component that is a file
        raise UsageError(f"{what}: cannot use {path}: {exc.strerror}", file=str(path),
                         key=what) from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) \
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"
        raise UsageError(f"{what}: {path} is {kind}, not a file to write", file=str(path),
                         key=what)
    return real


@contextmanager
def output_writer(path: Path) -> Iterator[BinaryIO]:
    """A handle for a file the user asked for (``--csv``, ``--report``): a regular file, or
    a new one, is replaced whole when the block ends (a full disk or an error half-way
    leaves the previous file as it was, and no partial one), readable like any file the
    user makes. Anything else that exists there (``/dev/stdout``, a pipe) is written in
    place: replacing it would put a regular file where the device or pipe was."""
    import stat

    # A link is followed: the file it names is replaced, the link kept. /dev/stdout is a
    # link too, to whatever the shell opened (a file with "> out.csv"): never replaced.
    real = Path(os.path.realpath(path))
    try:
        special = not stat.S_ISREG(os.stat(real).st_mode)
    except FileNotFoundError:
        special = False
    if special or any(str(p).startswith(("/dev/", "/proc/"))
                      for p in (Path(os.path.abspath(path)), real)):
        with open(path, "wb") as fh:
            yield fh
        return
    if not real.parent.is_dir():  # as open() would: the user's directories are not made
        import errno

        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))
    with atomic_writer(real, mode=0o666 & ~_umask()) as fh:
        yield fh


def _umask() -> int:
    """The process's umask, read without setting it (``os.umask`` can only swap it, and a
    library must not change it under another thread's feet); 0o022 where Linux's
    /proc/self/status does not say."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path, mode=mode) as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON content of ``path``, or ``default`` when it does not exist."""
    try:
        return json_loads(path.read_bytes())
    except FileNotFoundError:
        return default


_refused: set[Path] = set()


def refused_write(root: Path, exc: BaseException) -> None:
    """Report a disk that refused a write (read-only, full, I/O error) once per state root
    and process: the cache, the correlation state and the state files all live there, and
    one line says what the run does about it; the rest go to the debug log."""
    import logging

    log = logging.getLogger("botopt.state")
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or
                                                [type(exc).__name__])[0]
    # One disk, one line: a path under (or above) one already reported is the same trouble.
    if any(p == root or p in root.parents or root in p.parents for p in _refused):
        log.debug("%s: write refused (%s)", root, reason)
        return
    _refused.add(root)
    log.warning("cannot write under %s (%s): caching disabled; what this run cannot store "
                "is computed or queued again by the next", root, reason)


class JsonState:
    """A small JSON document shared by overlapping runs: read without a lock (atomic
    replace means a reader sees a whole file), changed under a file lock. The one lock +
    atomic-JSON helper every state file uses (cooldowns, regime history)."""

    def __init__(self, path: Path, what: str, timeout: float = 10.0,
                 root: Path | None = None) -> None:
        self.path = path
        self.what = what
        self.timeout = timeout
        self.root = root or path.parent  # whose disk a refused write is reported for

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
            return json_loads(raw)
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
            refused_write(self.root, exc)
        return None
