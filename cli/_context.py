"""Global options and the per-run state that every command receives."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ..core import Config


def _plain(stream: Any) -> bool:
    return bool(os.environ.get("NO_COLOR")) or not getattr(stream, "isatty", lambda: False)()


@dataclass
class AppState:
    config_path: Path | None = None
    cache_dir: Path | None = None
    freqtrade_config: Path | None = None
    quiet: bool = False
    debug: bool = False
    _configs: dict[tuple[tuple[str, Any], ...], Config] = field(default_factory=dict)
    _notice_shown: bool = False
    _root_tokens: list[Any] = field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return not _plain(sys.stdout)

    @property
    def shows_progress(self) -> bool:
        """Progress bars go to a terminal only, and never with --quiet."""
        return self.is_terminal and not self.quiet

    @property
    def console(self) -> Console:
        plain = _plain(sys.stdout)
        return Console(
            file=sys.stdout, no_color=plain, highlight=False, soft_wrap=plain,
            force_terminal=False if plain else None, width=None if not plain else 200,
        )

    @property
    def err(self) -> Console:
        return Console(file=sys.stderr, no_color=_plain(sys.stderr), highlight=False,
                       soft_wrap=True)

    def notice(self, message: str) -> None:
        """An informational line on stderr, silenced by --quiet."""
        if not self.quiet:
            print(f"botopt: {message}", file=sys.stderr)

    def config(self, *, announce_sample_data: bool = False, **overrides: Any) -> Config:
        """The effective configuration with this command's flags (``section.key`` with
        ``__`` for the dot, e.g. ``data__source="local"``) applied on top.

        ``announce_sample_data``: say on stderr when the bundled sample data stands in for a
        missing configuration. Only the commands that read candles (and ``config show``) say
        it: for cache-stats or notify-flush it would be noise, and from cron every stderr
        line becomes a mail."""
        from ..core import load_config

        flags = {k.replace("__", "."): v for k, v in overrides.items() if v is not None}
        if self.cache_dir is not None:
            flags["cache.dir"] = str(self.cache_dir)
        if self.freqtrade_config is not None:
            flags["data.freqtrade_config"] = str(self.freqtrade_config)
        key = tuple(sorted((k, str(v)) for k, v in flags.items()))
        cfg = self._configs.get(key)
        if cfg is None:
            from ..core import Workspace
            from ..core.base._redact import register_secret
            from ..core.state._workspace import set_default_root

            cfg = load_config(self.config_path, overrides=flags)
            self._configs[key] = cfg
            # Config-less entry points (emit, decorators in a model plug-in) follow it
            # until the command ends (``close``).
            self._root_tokens.append(set_default_root(Workspace.root_for(cfg)))
            register_secret(cfg.telegram.token)
        if announce_sample_data and cfg.path is None and not self._notice_shown \
                and cfg.sources.get("data.source") == "default":
            self._notice_shown = True
            self.notice("no configuration found; using the bundled sample data "
                        "(botopt init writes a botopt.toml)")
        return cfg


    def close(self) -> None:
        """The command ended: config-less entry points go back to their own default (an
        in-process caller, a test runner, runs the next command on a clean slate)."""
        from ..core.state._workspace import reset_default_root

        while self._root_tokens:
            reset_default_root(self._root_tokens.pop())


def get_state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
        root.call_on_close(root.obj.close)
    return root.obj
