"""Where botopt keeps its state, and the checks that make that place safe to trust.

Everything persistent (caches, notification queue, event log, correlation state, cooldowns)
lives under one cache directory, owned by a ``Workspace`` (``botopt.core.state._workspace``).
Whoever can write there can change what botopt computes and sends, so the directory must
be ours alone: created 0700, refused if another user owns it or if group/others may write it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CacheDirUnsafeError, CacheError

if TYPE_CHECKING:
    from ..base._config import Config


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("botopt"))


def cache_dir_for(config: Config) -> Path:
    """The configured root directory (not created). Kept for callers written before the
    ``Workspace``; it delegates there."""
    from ._workspace import Workspace

    return Workspace.root_for(config)


def check_dir_safe(path: Path) -> None:
    """Raise CacheDirUnsafeError unless ``path`` is owned by us and not group/other-writable."""
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirUnsafeError(f"cache directory {path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheDirUnsafeError(
            f"cache directory {path} is owned by uid {st.st_uid}, not by you "
            f"(uid {os.getuid()}); choose another with --cache-dir"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheDirUnsafeError(
            f"cache directory {path} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 700 {path}"
        )


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and check that it is safe to trust."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"cannot create cache directory {path}: {exc.strerror}") from exc
    check_dir_safe(path)
    return path


def state_dir(config: Config, name: str) -> Path:
    """A private subdirectory of ``config``'s workspace. Kept for callers written before the
    ``Workspace`` (which owns every path): "correlation" gets the data-scoped directory."""
    from ._workspace import Workspace

    ws = Workspace.of(config)
    return ws.correlation_dir() if name == "correlation" else ws.dir(name)


