"""Numbers and times as people read them in tables and Telegram messages.

Prices keep the significant digits an exchange quotes (8 at most: Binance, Kraken and the
rest tick prices to 8 significant digits or fewer, or to whole units above 1e8), never
float noise or an exponent (``4.3440000000000004e-05`` is ``0.00004344``).
Strengths and probabilities show two decimals, and more only where two would round a value
across the gate threshold it is compared to. Times are ``HH:MM UTC`` or in the configured
time zone.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal

PRICE_DIGITS = 8


def fmt_price(value: float) -> str:
    """``value`` to the exchange's significant digits, in plain decimal notation."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    # ... and every integer digit: a price of 1e8 and more (BTC in rupiah or dong) is
    # quoted in whole units, and 8 digits would round 2,512,345,678 to 2,512,345,700
    whole = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    text = f"{value:.{min(max(PRICE_DIGITS, whole), 17)}g}"
    plain = format(Decimal(text), "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return plain


def fmt_vs(value: float, limit: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, more where fewer would put the shown number on
    the other side of ``limit`` (or on it) than the value really is: a reader comparing
    the column with the threshold sees what the gate saw."""
    if not math.isfinite(value):
        return str(value)
    if limit is None or not math.isfinite(limit):
        return f"{value:.{digits}f}"
    for d in range(digits, 16):
        shown = f"{value:.{d}f}"
        if (float(shown) < limit) == (value < limit) and (
                float(shown) != limit or value == limit):
            return shown
    # Closer to the threshold than 15 decimals tell (5e-324 against 0): the shortest exact
    # digits, written out positionally as the column's other numbers are, never "5e-324".
    from decimal import Decimal

    text = format(Decimal(repr(value)), "f")
    return text if "." in text else f"{text}.{'0' * digits}"


def _when(when: object, fn: str) -> datetime:
    if not isinstance(when, datetime):
        from ..errors import UsageError, kind_of

        raise UsageError(f"{fn} wants a datetime, not {kind_of(when)}", key="when")
    return when


def fmt_minute(when: datetime) -> str:
    """``YYYY-MM-DD HH:MM`` in UTC, the year in four digits (``%Y`` gives year 1 as "1")."""
    when = _when(when, "fmt_minute")
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.replace(tzinfo=None).isoformat(sep=" ", timespec="minutes")


def fmt_time(when: datetime, tz: str = "UTC") -> str:
    """``HH:MM UTC``, or ``HH:MM <zone>`` in ``tz`` (an IANA name, checked at load)."""
    when = _when(when, "fmt_time")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if tz in ("UTC", ""):
        return f"{when.astimezone(timezone.utc):%H:%M} UTC"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        from ..errors import UsageError

        raise UsageError(f"unknown time zone {str(tz)[:40]!r} (an IANA name such as "
                         "Europe/Berlin)", key="tz") from None
    local = when.astimezone(zone)
    return f"{local:%H:%M} {local.tzname() or tz}"


def parse_time(value: object) -> datetime | None:
    """A queued time (ISO 8601 text, ``Z`` allowed, or epoch seconds), or None."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and len(value) <= 40:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
