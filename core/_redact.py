"""Keep secrets (the Telegram bot token) out of every message botopt prints or logs.

requests puts the full URL, token included, into its exception text; anything that formats
such an exception must pass it through ``redact`` first. A logging filter does the same for
log records as a second line of defence.
"""

from __future__ import annotations

import logging
import re

_secrets: set[str] = set()
# Telegram tokens look like 123456789:AA...; catch them even when never registered.
_TOKEN_RE = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b")


def register_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _TOKEN_RE.sub("***", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
