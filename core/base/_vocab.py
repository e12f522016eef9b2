"""The fixed vocabularies botopt writes to disk and JSON: one definition each.

Every member *is* its on-disk string (``str`` subclasses), so events.log, the queue, cached
results and ``--json`` output keep exactly the strings they had, while mypy checks the call
sites. Imports nothing of botopt and nothing heavy: every command loads it.
"""

from __future__ import annotations

from enum import Enum


class _Str(str, Enum):
    """A ``StrEnum`` that also works on Python 3.10: ``str()`` and f-strings give the value."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


class EventType(_Str):
    """What ``emit`` records in events.log (read by the monitor and ``botopt history``)."""

    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"
    RUN_FAILED = "run_failed"
    SIGNAL_PASSED = "signal_passed"
    REGIME_CHANGED = "regime_changed"
    NOTIFY_QUEUED = "notify_queued"
    NOTIFY_FLUSHED = "notify_flushed"
    NOTIFY_FAILED = "notify_failed"
    NOTIFY_DEAD_LETTER = "notify_dead_letter"


class NotificationType(_Str):
    """The notification types botopt formats itself. The queue accepts any lower_case name
    (a bot may queue its own), so this lists the known ones, not all possible ones."""

    SIGNAL = "signal"
    REGIME_CHANGE = "regime_change"
    TRADE_EXECUTED = "trade_executed"
    TRADE_EXITED = "trade_exited"
    ALERT = "alert"


class Regime(_Str):
    TREND_UP = "TREND_UP"
    TREND_DOWN = "TREND_DOWN"
    RANGE = "RANGE"
    HIGH_VOL = "HIGH_VOL"


class Direction(_Str):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


class DataStatus(_Str):
    """A symbol's data in a signals run: usable, or why it was blocked."""

    OK = "ok"
    STALE = "stale"
    WARMING_UP = "warming_up"
    DEGENERATE = "degenerate"


class TelegramOutcome(_Str):
    """What Telegram said about one sendMessage (see ``_telegram.Outcome``)."""

    OK = "ok"
    RETRY_AFTER = "retry_after"
    TOO_LONG = "too_long"
    BAD_ENTITIES = "bad_entities"
    REJECTED = "rejected"
    FATAL = "fatal"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    UNUSABLE = "unusable"
