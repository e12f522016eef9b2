"""The botopt command: global options, command registration, and exit codes.

This is the only place where exceptions become exit codes (via
``botopt.core.errors.exit_code_for``) and where a traceback may reach the user (``--debug``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from ..core.errors import BotoptError, exit_code_for
from ._context import get_state

# Each module cli/_cmd_<name>.py exposes register(app). One per line.
COMMAND_MODULES: list[str] = [
    "init",
    "config",
    "signals",
    "fetch",
    "model",
    "correlations",
    "cache",
    "notify",
    "monitor",
    "bench",
    "cron",
    "doctor",
    "history",
]


def _debug_requested() -> bool:
    return os.environ.get("BOTOPT_DEBUG", "") not in ("", "0", "false", "no")


class BotoptGroup(TyperGroup):
    """Turns botopt's exceptions into a one-line message and the decided exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print("botopt: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except BotoptError as exc:
            from ..core.base._redact import redact

            state = get_state(ctx)  # type: ignore[arg-type]
            if state.debug or _debug_requested():
                traceback.print_exc()
            print(f"botopt: error: {redact(str(exc))}", file=sys.stderr)
            raise typer.Exit(exit_code_for(exc)) from None
        except Exception as exc:  # a bug: say so, keep the traceback for --debug
            # typer/click control flow (Exit, Abort, usage errors) is theirs to render;
            # matched by module because typer now vendors its own copy of click.
            if type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise
            from ..core.base._redact import redact

            state = get_state(ctx)  # type: ignore[arg-type]
            if state.debug or _debug_requested():
                traceback.print_exc()
            print(f"botopt: internal error: {type(exc).__name__}: {redact(str(exc))} "
                  "(run with --debug for the traceback)", file=sys.stderr)
            raise typer.Exit(exit_code_for(exc)) from None


app = typer.Typer(
    cls=BotoptGroup,
    name="botopt",
    help="Fast, cache-safe crypto signal runs for cron: signals, caching, correlation, "
    "batched Telegram notifications and an activity monitor.",
    no_args_is_help=True,
    # Shell completion (--install-completion) and -h everywhere, as a terminal user expects.
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"botopt {version('botopt')}")
        raise typer.Exit()


def _setup_logging(quiet: bool, debug: bool) -> None:
    from ..core.base._redact import RedactingFilter

    logger = logging.getLogger("botopt")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("botopt: %(levelname)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


@app.callback()
def main(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", help="Path to botopt.toml (default: $BOTOPT_CONFIG, ./botopt.toml, "
        "then the user config directory).", dir_okay=False),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", envvar="BOTOPT_CACHE_DIR",
        help="Directory for caches, queues and state (default: the user cache directory)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (and --json)."),
    debug: bool = typer.Option(False, "--debug", help="Debug logging and tracebacks on errors "
                               "(also BOTOPT_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    state = get_state(ctx)
    state.config_path = config
    state.cache_dir = cache_dir
    state.quiet = quiet
    state.debug = debug or _debug_requested()
    _setup_logging(state.quiet, state.debug)


for _name in COMMAND_MODULES:
    importlib.import_module(f"botopt.cli._cmd_{_name.replace('-', '_')}").register(app)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
