"""Keep secrets (the Telegram bot token) out of every message botopt prints or logs.

requests puts the full URL, token included, into its exception text; anything that formats
such an exception must pass it through ``redact`` first. A logging filter does the same for
log records as a second line of defence.

A registered secret is hidden whatever its shape: any length, with spaces or non-ASCII
characters, and in the percent-encoded forms a URL gives it. The path segment after ``/bot``
of a Bot API method URL (``/bot<token>/sendMessage``) and the token of a Discord webhook URL
(``/webhooks/<id>/<token>``) are hidden too, registered or not, and
so is the password of any URL (``redis://user:password@host``: the shared state's).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, quote_plus

_secrets: set[str] = set()
# Telegram tokens look like 123456789:AA...; catch them even when never registered.
_TOKEN_RE = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b")
_BOT_URL_RE = re.compile(r"(/bot)[^/\s?#]+(?=/(?:send|get|set|delete|edit|forward|copy|"
                         r"answer)[A-Z])")
# A Discord webhook URL's last segment is its token: hidden registered or not.
_WEBHOOK_URL_RE = re.compile(r"(/webhooks/\d+/)[^/\s?#'\"]+")
# What requests leaves unquoted when it re-quotes a URL (requests.utils.requote_uri).
_REQUESTS_SAFE = "!#$%&'()*+,/:;=?@[]~"


def _forms(value: str) -> set[str]:
    forms = {value, value.strip()}
    for safe in ("", "/", ":", _REQUESTS_SAFE):
        try:
            forms.add(quote(value, safe=safe))
            forms.add(quote(value, safe=safe).lower())
        except (UnicodeError, TypeError):
            pass
    try:
        forms.add(quote_plus(value))
    except (UnicodeError, TypeError):
        pass
    if len(value) >= 8:
        # as a symbol shows it, upper-cased (a secret pasted into --symbols); a short one
        # upper-cased would blank common words out of every message
        forms.add(value.upper())
    return {f for f in forms if f}


def register_secret(value: str | None) -> None:
    if value:
        _secrets.update(_forms(value))


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _BOT_URL_RE.sub(r"\1***", text)
    text = _WEBHOOK_URL_RE.sub(r"\1***", text)
    text = _URL_AUTH_RE.sub(r"\1\2:***@", text)
    text = _URL_QUERY_AUTH_RE.sub(r"\1***", text)
    return _TOKEN_RE.sub("***", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


# Credentials in a URL (``redis://user:password@host``, ``rediss://:password@host``), up to
# the last ``@`` before the path: an unencoded ``@`` or ``#`` in a password hides all of it.
_URL_AUTH_RE = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^:@/\s]*):([^/\s]+)@", re.IGNORECASE)
# ... and given as a query parameter (``redis://host/0?password=...``, as redis-py allows).
_URL_QUERY_AUTH_RE = re.compile(r"([?&](?:password|passwd|pass|auth)=)[^&\s]*", re.IGNORECASE)


def printable(text: str) -> str:
    """``text`` from a server, as one line a terminal shows as it is: whitespace runs made
    one space, and control and format characters (escape sequences, a bell, right-to-left
    overrides, zero-width characters) each shown as "?"."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (the user name is kept: it helps), and
    a Bot API path's token (``.../bot<token>``, a URL written with its token in it)."""
    url = _URL_QUERY_AUTH_RE.sub(r"\1***", _URL_AUTH_RE.sub(r"\1\2:***@", url))
    return redact(_mask_bot_path(url))


# A path segment "bot<token>", whatever follows it (``redact`` masks one only before a Bot
# API method, where free text could hold "/bottom/...").
_BOT_SEGMENT_RE = re.compile(r"(^|/)(bot)[^/]+", re.IGNORECASE)


def _mask_bot_path(url: str) -> str:
    """``url`` with a ``/bot<token>`` segment of its path masked (its path only: the host
    of ``rediss://botopt@...`` is not one)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    path = _BOT_SEGMENT_RE.sub(r"\1\2***", parts.path)
    return url if path == parts.path else urlunsplit(parts._replace(path=path))


def url_passwords(url: str) -> list[str]:
    """The passwords ``url`` carries (in its user part or a ``password=`` parameter), as
    written: to be registered as secrets before anything parses the URL."""
    from urllib.parse import unquote

    found = [m.group(3) for m in _URL_AUTH_RE.finditer(url)]
    found += [m.group(0).split("=", 1)[1] for m in _URL_QUERY_AUTH_RE.finditer(url)]
    return [p for raw in found if raw for p in {raw, unquote(raw)}]


def url_userinfo_password(url: str) -> str | None:
    """The password of ``url``'s user part as written (None without one)."""
    m = _URL_AUTH_RE.search(url)
    return m.group(3) if m else None


def url_has_credentials(url: str) -> bool:
    return bool(url_passwords(url)) or "@" in url
