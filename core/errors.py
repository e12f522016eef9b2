"""botopt's exceptions, and the one place that turns them into exit codes.

Every error botopt raises on purpose is a ``BotoptError``; anything else reaching the CLI is a
bug and is reported as such. Exceptions from dependencies (requests, diskcache, sqlite3,
polars, OSError) are converted where they enter botopt: ``raise DataError(...) from exc``.
Messages are one line, name the culprit (symbol, file, row, key) and never contain a secret.

    BotoptError                      exit 1  something failed at run time
    +-- UsageError                   exit 2  the command line asked for something impossible
    |   +-- ConfigError              exit 2  botopt.toml / BOTOPT_* / flags are invalid
    |       +-- CacheDirUnsafeError  exit 2  the cache directory is not ours alone
    +-- DataError                    exit 1  candle data is missing, malformed or inconsistent
    |   +-- UnknownSymbolError       exit 2  a requested symbol does not exist at the source
    |   +-- StaleDataError           exit 1  every symbol's newest candle is too old to trade on
    +-- NetworkError                 exit 1  a remote API stayed unreachable after retries
    +-- CacheError                   exit 1  the cache could not be used (runs degrade, not fail)
    +-- ModelError                   exit 1  the prediction model could not be loaded or run
    +-- NotifyError                  exit 1  notifications could not be delivered (kept queued)
        +-- TelegramConfigError      exit 2  Telegram refused the token or chat (401/403/...)

``exit_code_for`` is the only function that decides exit codes: 0 ok, 1 runtime failure,
2 usage or configuration error, 141 (128 + SIGPIPE, as ``cat`` and ``yes`` end) when the
reader of the output went away (``botopt history | head``): nothing is printed then.
``disk_error`` turns an OSError about botopt's own files (read-only or full disk, a file where
a directory belongs) into the error a user can act on.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141


def format_age(seconds: float) -> str:
    """``"14 min"``, ``"3 h 5 min"``, ``"2857 d"``: an age a person reads at a glance."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // 1440} d"


class BotoptError(Exception):
    """Something botopt tried failed; the run produced no (complete) answer.

    Besides the one-line message, an error carries its culprit as attributes, for a caller
    that reacts to it rather than prints it (as httpx's errors carry the request): ``symbol``,
    ``source`` (``"binance"``, ``"telegram"``, ``"redis"``, a data directory), ``file``, ``row``
    (1-based, as the message says it) and ``key`` (a setting such as ``data.interval``, an
    option such as ``--since``, a field such as ``data``). Each is None where it does not
    apply. Every raise whose message names something passes it (tests/test_error_context.py
    walks the raise sites).
    """

    def __init__(self, message: str = "", *, symbol: str | None = None,
                 source: str | None = None, file: str | None = None, row: int | None = None,
                 key: str | None = None) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.source = source
        self.file = file
        self.row = row
        self.key = key


class UsageError(BotoptError):
    """The command line asked for something that cannot be done (bad symbol, bad time).

    Retrying the same command will fail the same way: the user must change it.
    """


class ConfigError(UsageError):
    """The effective configuration is invalid: unknown key, wrong type, missing setting.

    Nothing ran. The message names the key and where its value came from.
    """


class CacheDirUnsafeError(ConfigError):
    """The cache directory is owned by someone else or writable by others.

    botopt refuses to use it, because whoever can write it could feed botopt forged results.
    """


class DataError(BotoptError):
    """Candle data is missing, malformed or inconsistent (unsorted, duplicate, NaN, ...).

    The message names the symbol, the file and the row. No signal is computed from bad data.
    """


class UnknownSymbolError(DataError):
    """A requested symbol does not exist at the data source (file missing, Binance -1121)."""


class StaleDataError(DataError):
    """Every requested symbol's newest closed candle is older than ``data.max_staleness``.

    The candle feed has stopped (a broken ``botopt fetch`` cron line, a ban, a full disk, an
    exchange outage): no signal would be about the present. ``ages`` maps each symbol to the
    seconds since its last candle closed.
    """

    _FEEDER_HINT = {
        "botopt": "is the `botopt fetch` cron line running?",
        "freqtrade": "is freqtrade (its download-data cron line or live bot) refreshing it?",
        "none": "nothing is set to refresh it (data.feeder = none)",
    }

    def __init__(self, ages: dict[str, float], limit: float, feeder: str = "botopt") -> None:
        parts = ", ".join(f"{s} {format_age(a)} ago" for s, a in ages.items())
        # Data downloaded for backtesting is old by design: say how to look at it too.
        super().__init__(f"stale data for every symbol (limit {format_age(limit)}): last "
                         f"candle {parts}; "
                         f"{self._FEEDER_HINT.get(feeder, self._FEEDER_HINT['botopt'])} "
                         "For older data, pick its moment with --as-of.",
                         symbol=next(iter(ages), None))
        self.feeder = feeder
        self.ages = dict(ages)
        self.limit = limit


class NetworkError(BotoptError):
    """A remote API (Binance, Telegram) could not be reached or kept failing after retries.

    Transient: the same command may succeed later. Queued work is kept.
    """


class CacheError(BotoptError):
    """The on-disk cache could not be used. Callers degrade to computing without it."""


class ModelError(BotoptError):
    """The prediction model could not be loaded, imported or evaluated."""


class NotifyError(BotoptError):
    """Notifications could not be delivered now; they stay queued for the next flush."""


class TelegramConfigError(NotifyError, ConfigError):
    """Telegram refused the bot token or the chat (401, 403, chat not found).

    Retrying cannot help until the configuration is fixed; the queue is kept intact.
    """


# Most specific first: the first matching class decides.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (BrokenPipeError, EXIT_BROKEN_PIPE),
    (UsageError, EXIT_USAGE),
    (UnknownSymbolError, EXIT_USAGE),
    (BotoptError, EXIT_FAILURE),
)


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for an exception that ended a command."""
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILURE


_DISK = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
         errno.EDQUOT: "the disk quota is used up", errno.EACCES: "permission denied",
         errno.EPERM: "permission denied", errno.EFBIG: "the file size limit is reached",
         errno.EIO: "an I/O error"}


_KINDS = {bool: "true or false (a boolean)", int: "an integer", float: "a number", str: "a string",
          list: "a list", tuple: "a list", dict: "a table", type(None): "nothing",
          bytes: "bytes"}


def kind_of(value: object) -> str:
    """What a value is, as an error message tells a person ("an integer", "a table"), not
    Python's name for it ("a int", "a dict")."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def disk_reason(exc: OSError) -> str:
    """What an OSError about a file says to a person: "the file system is read-only", ..."""
    return _DISK.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def disk_error(exc: OSError) -> BotoptError:
    """The one-line error for an OSError about one of botopt's files or directories: a
    path component that is a regular file is a configuration error (exit 2), anything else
    (read-only, full, no permission) a run-time one (exit 1). Both name the path."""
    path = exc.filename if exc.filename is not None else "a file"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return ConfigError(f"{path}: a path component is not a directory (is the cache "
                           "directory a regular file?)", file=str(path), key="cache.dir")
    why = _DISK.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return CacheError(f"cannot use {path}: {why}", file=str(path))


__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "BotoptError",
    "CacheDirUnsafeError",
    "CacheError",
    "ConfigError",
    "DataError",
    "ModelError",
    "NetworkError",
    "NotifyError",
    "StaleDataError",
    "TelegramConfigError",
    "UnknownSymbolError",
    "UsageError",
    "disk_error",
    "exit_code_for",
]
