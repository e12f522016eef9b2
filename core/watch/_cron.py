"""The crontab (and systemd unit) for this install, written out rather than described.

Hand-written crontabs fail in the same few ways: a PATH without the venv (``botopt: not
found``), a log directory nobody created, a ``# comment`` after a variable that cron makes part
of the value, a ``flock -n`` that exits 1 on a skipped run and so looks like a failure, and no
first ``fetch`` before the first ``signals``. Everything here is an absolute path taken from
the running install, so the lines work under cron's bare environment.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base._config import SECRET_KEYS, Config, effective_feeder
from ..base._redact import url_has_credentials
from ..errors import ConfigError, UsageError
from ..state._paths import cache_dir_for


def botopt_command() -> list[str]:
    """How to start this very botopt from anywhere: the venv's script, else ``python -m``."""
    # sys.executable is the venv's python (not resolved: the venv is its symlink's folder).
    script = Path(sys.executable).parent / "botopt"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "botopt.cli.main"]


def default_log_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir("botopt"))


def make_log_dir(path: Path) -> Path:
    _one_line(str(path), "--log-dir")  # before the directory is made
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"log directory {path}: cannot create it ({exc.strerror})",
                          file=str(path)) from exc
    return path.absolute()


@dataclass(frozen=True)
class CronPlan:
    text: str
    first_fetch: list[str] | None  # the command to run once before installing, if any


# Where node_exporter's textfile collector commonly reads (Debian/Ubuntu package default).
TEXTFILE_EXAMPLE = Path("/var/lib/prometheus/node-exporter/botopt.prom")


def _symbols_arg(text: str, config: Config) -> list[str]:
    from ..data._candles import parse_symbols, resolve_symbols

    resolve_symbols(text, config)  # the error a run would stop with, now
    spec = text.strip()
    if spec.lower() == "all":
        return ["all"]
    if spec.startswith("@"):
        return ["@" + str(Path(spec[1:]).expanduser().absolute())]
    return parse_symbols(spec)


def crontab(config: Config, log_dir: Path, *, symbols: str | list[str] | None = None,
            fetch_every: int = 5, fetch: bool = True,
            metrics_file: Path | None = None) -> CronPlan:
    """The crontab text for ``config``: fetch (only when botopt feeds a local store, see
    ``data.feeder``; ``fetch=False`` leaves it out), signals, notify-flush and the monitor,
    each under ``flock -n -E 0`` (a skipped overlapping run exits 0, not 1); the Prometheus
    textfile line too, commented out unless ``metrics_file`` is given.

    ``symbols``: a list, or the text of ``--symbols``, whose ``all`` and ``@FILE`` the lines
    keep as such (each run then reads the directory or the file again, so a pair added
    later is picked up), the file's path made absolute (cron runs in $HOME); both are
    resolved once now, so a crontab whose every run would fail is never printed."""
    if isinstance(symbols, str):
        symbols = _symbols_arg(symbols, config)
    _one_line(str(log_dir), "--log-dir")
    if metrics_file is not None:
        _one_line(str(metrics_file), "--metrics-file")
    _lines_hold(config, ("data.data_dir", config.data.data_dir),
                ("data.freqtrade_config", config.data.freqtrade_config))
    for s in symbols or ():
        _one_line(s, "--symbols")
    if metrics_file is not None and metrics_file.suffix != ".prom":
        raise UsageError(f"--metrics-file {metrics_file}: the textfile collector reads only "
                         "*.prom files", file=str(metrics_file), key="--metrics-file")
    bot = botopt_command()
    env = [("SHELL", "/bin/sh"), ("PATH", "/usr/local/bin:/usr/bin:/bin")]
    if config.path is not None:
        env.append(("BOTOPT_CONFIG", str(Path(config.path).absolute())))
    env.append(("BOTOPT_CACHE_DIR", str(cache_dir_for(config).absolute())))
    sym = ["--symbols", ",".join(symbols)] if symbols else []
    local = config.data.source == "local" and config.data.data_dir is not None
    data_dir = str(Path(config.data.data_dir).absolute()) if config.data.data_dir else None
    jobs: list[tuple[str, str, list[str]]] = []
    first = None
    feeder = effective_feeder(config.data)
    if config.data.freqtrade_config is not None:
        env.append(("BOTOPT_DATA_FREQTRADE_CONFIG",
                    str(Path(config.data.freqtrade_config).absolute())))
    if local and fetch and feeder == "botopt":
        fetch_args = ["fetch", *sym, "--data-dir", str(data_dir)]
        jobs.append((f"*/{fetch_every} * * * *", "fetch", fetch_args))
        first = [*bot, "fetch", *sym, "--data-dir", str(data_dir)]
    # --data-dir made absolute here: a relative data_dir in the config would be read from
    # cron's working directory ($HOME), not from where `botopt cron` ran
    local_dir = ["--data-dir", str(data_dir)] if local else []
    jobs += [("* * * * *", "signals", ["signals", *sym, *local_dir]),
             ("* * * * *", "notify", ["notify-flush"]),
             ("* * * * *", "monitor", ["monitor", "--once"])]
    lines = ["# botopt crontab, written by `botopt cron` for this install.",
             "# cron does not strip comments after a value: keep comments on their own lines."]
    if first is not None:
        lines.append("# Before installing it, run the first fetch once (the history signals "
                     "need):")
        lines.append(f"#   {shlex.join(first)}")
    elif local and feeder != "botopt":
        lines.append(f"# data.feeder is {feeder!r}: no fetch line; "
                     + ("freqtrade (its download-data cron line or live bot) keeps "
                        f"{data_dir} fresh (docs/freqtrade.md)." if feeder == "freqtrade"
                        else "nothing here refreshes the candle files."))
    elif config.data.source == "sample":
        lines.append("# data.source is 'sample' (bundled demo data): set data.source and "
                     "data.data_dir in the config for live signals.")
    for key, origin in sorted(config.sources.items()):
        var = origin.partition(":")[2]
        if not origin.startswith("env:") or var in ("BOTOPT_CONFIG", "BOTOPT_CACHE_DIR"):
            continue
        # A state.url with credentials is a secret too: never copied into a crontab.
        if key in SECRET_KEYS or (key == "state.url" and
                                  url_has_credentials(config.state.url)):
            lines.append(f"# {key} comes from {var} in your shell, which cron does not see: "
                         "keep it in botopt.toml (mode 600), which this crontab points "
                         "at; never in a crontab line.")
        elif var in os.environ:
            _one_line(os.environ[var], var)
            env.append((var, os.environ[var]))
    lines += [f"{k}={v}" for k, v in env]
    for when, name, args in jobs:
        lines.append(_job_line(bot, log_dir, when, name, args))
    metrics = ["metrics", "-o", str((metrics_file or TEXTFILE_EXAMPLE).absolute())]
    if metrics_file is None:
        lines.append("# Prometheus (node_exporter's textfile collector): uncomment, with the "
                     "directory its --collector.textfile.directory names (docs/monitoring.md):")
        lines.append("# " + _job_line(bot, log_dir, "* * * * *", "metrics", metrics))
    else:
        lines.append(_job_line(bot, log_dir, "* * * * *", "metrics", metrics))
    return CronPlan("\n".join(lines) + "\n", first)


def _one_line(value: str, name: str) -> None:
    """A value a crontab line holds: a line break (or another control character) in a path
    split the line, leaving cron a half command and a stray line to run."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UsageError(f"{name} holds a line break or another control character "
                         f"({ascii(value)[:60]}): a crontab line cannot hold it", key=name)


def _lines_hold(config: Config, *more: tuple[str, Any]) -> None:
    """``_one_line`` for the paths every printed line carries (the config, the cache
    directory, the botopt command) and ``more`` (name, value or None)."""
    for name, value in (("BOTOPT_CONFIG", config.path),
                        ("BOTOPT_CACHE_DIR", cache_dir_for(config)),
                        ("the botopt command's path", " ".join(botopt_command())), *more):
        if value is not None:
            _one_line(str(value), name)


def _job_line(bot: list[str], log_dir: Path, when: str, name: str, args: list[str]) -> str:
    lock = log_dir / f"{name}.lock"
    log = log_dir / f"{name}.log"
    cmd = shlex.join(["flock", "-n", "-E", "0", str(lock), *bot, "--quiet", *args])
    # cron turns an unescaped % in a command into a newline
    return f"{when} {cmd} >>{shlex.quote(str(log))} 2>&1".replace("%", "\\%")


def systemd_unit(config: Config) -> str:
    """A user unit for the long-running monitor, with the same absolute paths."""
    _lines_hold(config)  # a unit file's lines, as a crontab's
    bot = shlex.join([*botopt_command(), "--quiet", "monitor"])
    env = [f"Environment=BOTOPT_CACHE_DIR={cache_dir_for(config).absolute()}"]
    if config.path is not None:
        env.insert(0, f"Environment=BOTOPT_CONFIG={Path(config.path).absolute()}")
    return "\n".join([
        "# ~/.config/systemd/user/botopt-monitor.service (written by `botopt cron --systemd`)",
        "[Unit]", "Description=botopt activity monitor", "",
        "[Service]", f"ExecStart={bot}", *env, "Restart=on-failure", "",
        "[Install]", "WantedBy=default.target", ""])
