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

# Each module cli/_cmd_<name>.py exposes register(app), and each command it registers is
# listed here with its module (tests/test_cli.py checks the table against the modules). A
# run that names its command imports that module alone and builds only its command: typer
# builds every registered command's parameters on each run, and the fifteen modules and
# twenty-one commands were 20 ms of a 2-symbol cron run's 150 ms above a bare typer command.
COMMANDS: dict[str, str] = {
    "init": "init",
    "config": "config",
    "signals": "signals",
    "backtest": "backtest",
    "fetch": "fetch",
    "model": "model",
    "correlations": "correlations",
    "cache-stats": "cache",
    "cache-clear": "cache",
    "notify": "notify",
    "notify-flush": "notify",
    "monitor": "monitor",
    "status": "monitor",
    "bench": "bench",
    "cron": "cron",
    "metrics": "metrics",
    "doctor": "doctor",
    "history": "history",
}
COMMAND_MODULES: list[str] = list(dict.fromkeys(COMMANDS.values()))


def _debug_requested() -> bool:
    return os.environ.get("BOTOPT_DEBUG", "") not in ("", "0", "false", "no")


# Global options a user may also type after the command (`botopt signals --cache-dir X`,
# as configuration.md lists them with the command's flags): moved in front of it.
_GLOBAL_VALUED = ("--config", "--cache-dir", "--freqtrade-config")
_GLOBAL_FLAGS = ("--quiet", "-q", "--debug")


def _command_at(args: list[str]) -> int:
    """Where the command is in ``args``: past the global options before it and their
    values (``len(args)`` when there is none)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _GLOBAL_VALUED else 1
    return i


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the global options found after the command moved before it. Nothing
    after ``--`` moves; a global option's value is never mistaken for the command."""
    args = list(args)
    i = _command_at(args)
    if i >= len(args):
        return args
    head, rest = args[:i], args[i:]
    moved: list[str] = []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            kept += rest[j:]
            break
        if arg in _GLOBAL_VALUED and j + 1 < len(rest):
            moved += rest[j:j + 2]
            j += 2
            continue
        if arg in _GLOBAL_FLAGS or arg.partition("=")[0] in _GLOBAL_VALUED:
            moved.append(arg)
        else:
            kept.append(arg)
        j += 1
    return head + moved + kept


class BotoptGroup(TyperGroup):
    """Turns botopt's exceptions into a one-line message and the decided exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, hoist_global_options(args))
        except Exception as exc:  # the global options' values (--config a/directory)
            if _is_usage_error(exc):
                _one_line_usage_error(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(exit_code_for(BrokenPipeError())) from None
        except KeyboardInterrupt:
            print("botopt: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except BotoptError as exc:
            from ..core.base._redact import redact

            state = get_state(ctx)
            if state.debug or _debug_requested():
                traceback.print_exc()
            print(f"botopt: error: {redact(str(exc))}", file=sys.stderr)
            raise typer.Exit(exit_code_for(exc)) from None
        except Exception as exc:  # a bug: say so, keep the traceback for --debug
            # typer/click control flow (Exit, Abort, usage errors) is theirs to render;
            # matched by module because typer now vendors its own copy of click.
            if type(exc).__module__.split(".")[0] in ("click", "typer"):
                if _is_usage_error(exc):
                    _one_line_usage_error(exc)
                raise
            from ..core.base._redact import redact

            if isinstance(exc, OSError):  # botopt's files on a read-only or full disk
                from ..core.errors import disk_error

                if get_state(ctx).debug or _debug_requested():
                    traceback.print_exc()

                err = disk_error(exc)
                print(f"botopt: error: {redact(str(err))}", file=sys.stderr)
                raise typer.Exit(exit_code_for(err)) from None

            from ..core import shared_data_error

            state = get_state(ctx)
            if state.debug or _debug_requested():
                traceback.print_exc()
            damaged = shared_data_error(exc)  # the shared server's data, not a bug of ours
            if damaged is not None:
                print(f"botopt: error: {damaged}", file=sys.stderr)
                raise typer.Exit(exit_code_for(damaged)) from None
            print(f"botopt: internal error: {type(exc).__name__}: {redact(str(exc))} "
                  "(run with --debug for the traceback)", file=sys.stderr)
            raise typer.Exit(exit_code_for(exc)) from None


def make_app(modules: list[str] | None = None) -> typer.Typer:
    """The botopt command with the commands of ``modules`` (of ``COMMAND_MODULES``; None:
    all of them)."""
    app = typer.Typer(
        cls=BotoptGroup,
        name="botopt",
        help="Fast, cache-safe crypto signal runs for cron: signals, caching, correlation, "
        "batched Telegram notifications and an activity monitor.",
        no_args_is_help=True,
        # Shell completion (--install-completion) and -h everywhere, as a terminal user
        # expects.
        add_completion=True,
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(main)
    for name in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(f"botopt.cli._cmd_{name}").register(app)
    return app


def app_for(args: list[str]) -> typer.Typer:
    """The app a run with ``args`` needs: only its command's when it names a known one
    after the global options; every command for help, completion, a typo (click then
    suggests the near names) or no command."""
    i = _command_at(args)
    completing = any(k.endswith("_COMPLETE") and k.startswith("_") for k in os.environ)
    if i < len(args) and args[i] in COMMANDS and not completing:
        return make_app([COMMANDS[args[i]]])
    return _full_app()


_APP: typer.Typer | None = None


def _full_app() -> typer.Typer:
    global _APP
    if _APP is None:
        _APP = make_app()
    return _APP


def __getattr__(name: str) -> Any:
    # ``botopt.cli.main.app``: every command, built when first asked for (tests, docs)
    if name == "app":
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def main(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", help="Path to botopt.toml (default: $BOTOPT_CONFIG, ./botopt.toml, "
        "then the user config directory).", dir_okay=False),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", envvar="BOTOPT_CACHE_DIR",
        help="Directory for caches, queues and state (default: the user cache directory)."),
    freqtrade_config: Optional[Path] = typer.Option(
        None, "--freqtrade-config", dir_okay=False,
        help="freqtrade's config.json: pairs, timeframe, exchange, trading mode and data "
        "folder come from it unless botopt's settings say otherwise (data.freqtrade_config)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (and --json)."),
    debug: bool = typer.Option(False, "--debug", help="Debug logging and tracebacks on errors "
                               "(also BOTOPT_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    state = get_state(ctx)
    state.config_path = config
    state.cache_dir = cache_dir
    state.freqtrade_config = freqtrade_config
    state.quiet = quiet
    state.debug = debug or _debug_requested()
    _setup_logging(state.quiet, state.debug)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's (typer's vendored click's) UsageError, but not NoArgsIsHelpError, which is
    one too: its rendering is the help, kept."""
    return type(exc).__module__.split(".")[0] in ("click", "typer") and \
        any(c.__name__ == "UsageError" for c in type(exc).__mro__) and \
        type(exc).__name__ != "NoArgsIsHelpError"


def _one_line_usage_error(exc: Any) -> None:
    """A command's option that click refused (``--cost-bps abc``, ``--csv`` naming a
    directory), as every other bad input is told: one line naming the option, exit 2. Click
    prints its usage, a hint and the error on four lines."""
    from ..core.base._redact import redact
    from ..core.errors import UsageError

    ctx = getattr(exc, "ctx", None)
    where = f" (see {ctx.command_path} -h)" if ctx is not None else ""
    print(f"botopt: error: {redact(exc.format_message())}{where}", file=sys.stderr)
    raise typer.Exit(exit_code_for(UsageError(""))) from None


def _quiet_broken_pipe() -> None:
    """The reader went away (``botopt history | head``): end quietly, as Unix tools do.
    stdout now points at /dev/null, so that Python's final flush cannot complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _NamedStdout:
    """Standard output whose write errors name it: ``botopt backtest > /dev/full`` said
    "cannot use a file: the disk is full" (an OSError from a print carries no file name).
    Everything else is the stream's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return int(self._inner.write(text))
        except BrokenPipeError:
            raise
        except OSError as exc:
            exc.filename = exc.filename or "standard output"
            raise

    def flush(self) -> None:
        try:
            self._inner.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            exc.filename = exc.filename or "standard output"
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run() -> None:
    """Console-script entry point."""
    if sys.stdout is not None and not isinstance(sys.stdout, _NamedStdout):
        sys.stdout = _NamedStdout(sys.stdout)
    try:
        app_for(sys.argv[1:])()
    except BrokenPipeError:  # raised outside a command (help, --version)
        _quiet_broken_pipe()
        sys.exit(exit_code_for(BrokenPipeError()))


if __name__ == "__main__":  # pragma: no cover
    run()
