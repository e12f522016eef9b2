"""Where botopt keeps its state, and the checks that make that place safe to trust.

Everything persistent (caches, notification queue, event log, correlation state, cooldowns)
lives under one cache directory, owned by a ``Workspace`` (``botopt.core.state._workspace``).
Whoever can write there can change what botopt computes and sends, so the directory must
be ours alone: created 0700, refused if another user owns it or if group/others may write it.
"""

from __future__ import annotations

import os
import stat
from contextvars import ContextVar, Token
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CacheDirUnsafeError, CacheError

if TYPE_CHECKING:
    from ..base._config import Config


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("botopt"))


# The root of config-less entry points (the seed's decorators, get_cache_stats()) while a
# command runs: the CLI sets it from --cache-dir for the command's duration and resets it when
# the command ends. A ContextVar, not a plain global, so it is scoped (a thread or an asyncio
# task of a library user sees its own) and undone with the token it was set with. Kept here,
# below every store, so none of them imports the Workspace.
_current_root: ContextVar[Path | None] = ContextVar("botopt_default_root", default=None)


def set_default_root(path: Path | None) -> Token[Path | None]:
    """Make ``path`` the root of config-less entry points in this context (the CLI does, for
    a command's duration); undo with ``reset_default_root(token)``."""
    return _current_root.set(path)


def reset_default_root(token: Token[Path | None]) -> None:
    _current_root.reset(token)


def default_root() -> Path:
    """The documented default for config-less entry points (not created)."""
    current = _current_root.get()
    if current is not None:
        return current
    env = os.environ.get("BOTOPT_CACHE_DIR")
    return Path(env).expanduser() if env else default_cache_dir()


def root_for(config: Config) -> Path:
    """The configured root directory (not created)."""
    return config.cache.dir if config.cache.dir is not None else default_cache_dir()


cache_dir_for = root_for  # the name callers used before the Workspace


def check_dir_safe(path: Path) -> None:
    """Raise CacheDirUnsafeError unless ``path`` is owned by us and not group/other-writable."""
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirUnsafeError(f"cache directory {path} is not a directory",
                                  file=str(path), key="cache.dir")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheDirUnsafeError(
            f"cache directory {path} is owned by uid {st.st_uid}, not by you "
            f"(uid {os.getuid()}); choose another with --cache-dir", file=str(path), key="cache.dir"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheDirUnsafeError(
            f"cache directory {path} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 700 {path}",
            file=str(path), key="cache.dir"
        )


def _in_the_way(path: Path) -> CacheDirUnsafeError:
    return CacheDirUnsafeError(f"cache directory {path} is not a directory (a regular file is "
                               "in the way); choose another with --cache-dir",
                               file=str(path), key="cache.dir")


def check_readable_root(path: Path) -> None:
    """For commands that only read (``cache-stats``): a root that does not exist yet is an
    empty one, but a regular file where it should be is a configuration error, as it is for
    every command that writes (not a table of zeros)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except NotADirectoryError as exc:
        raise _in_the_way(path) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise _in_the_way(path)


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and check that it is safe to trust."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise _in_the_way(path) from exc
    except OSError as exc:
        raise CacheError(f"cannot create cache directory {path}: {exc.strerror}",
                         file=str(path), key="cache.dir") from exc
    check_dir_safe(path)
    return path
