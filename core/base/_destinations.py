"""Where notifications go: ``[notify.destinations.NAME]`` and ``[notify.routes]``, typed and
validated once at load.

The Telegram chat of ``[telegram]`` is the built-in destination ``telegram``; the default
route sends every notification type there, so a config without these tables behaves as
before. A destination's secrets (a webhook's HMAC key, the token inside a Discord webhook
URL, a bot token) are registered for redaction the moment they are read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, kind_of
from ._redact import register_secret

TELEGRAM = "telegram"  # the built-in destination: the chat of [telegram]
DESTINATION_TYPES = ("telegram", "webhook", "discord")
ANY_TYPE = "*"  # the route of every notification type without its own
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,40}")
# Discord's execute-webhook URL; the last segment is the webhook's token (a secret).
DISCORD_PATH_RE = re.compile(r"/api(?:/v\d{1,2})?/webhooks/(\d{1,25})/([A-Za-z0-9_.-]{1,200})/?")
DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MIN_SECRET = 16  # bytes of a webhook's HMAC key: shorter ones can be guessed offline
DISCORD_MAX_EMBEDS = 10  # one notification is one embed: a batch fits one message


@dataclass(frozen=True)
class DestinationConfig:
    """One destination. ``url``: the webhook's or Discord webhook's address (for a
    ``telegram`` destination, the Bot API's); ``secret``: the webhook's HMAC key."""

    name: str
    type: str
    url: str = ""
    secret: str | None = None
    token: str | None = None  # type telegram: its bot token
    chat_id: str | None = None  # type telegram: its chat
    max_batch_size: int = 5  # notifications per message (Discord: at most 10, one embed each)
    min_interval: float = 1.0  # seconds between two sends to it
    timeout: float = 10.0
    max_retries: int = 3


# key: (type, low, high, unit) of every number a destination may set
_NUMBERS: dict[str, tuple[type, float, float, str]] = {
    "max_batch_size": (int, 1, 50, "notifications per message"),
    "min_interval": (float, 0, 3600, "seconds between sends"),
    "timeout": (float, 0.5, 300, "seconds"),
    "max_retries": (int, 0, 10, "tries"),
}
_STRINGS = ("type", "url", "secret", "token", "chat_id")


def _fail(file: Any, key: str, msg: str) -> ConfigError:
    where = f"{file}: " if file else ""
    return ConfigError(f"{where}{key}: {msg}", key=key, file=str(file) if file else None)


def parse_destinations(raw: Any, file: Any = None) -> tuple[DestinationConfig, ...]:
    """``[notify.destinations]`` as read from TOML: one table per destination name."""
    if not isinstance(raw, dict):
        raise _fail(file, "notify.destinations", "must be a table of destinations "
                    "([notify.destinations.NAME])")
    out = []
    for name, table in raw.items():
        key = f"notify.destinations.{str(name)[:40]}"
        if not NAME_RE.fullmatch(str(name)):
            raise _fail(file, key, "a destination name is 1-32 of a-z 0-9 _ - "
                        "(starting with a letter or digit)")
        if name == TELEGRAM:
            raise _fail(file, key, "the name telegram is the chat of [telegram]; pick "
                        "another name")
        if not isinstance(table, dict):
            raise _fail(file, key, "must be a table with type = \"webhook\", \"discord\" or "
                        "\"telegram\"")
        out.append(_destination(name, table, key, file))
    return tuple(out)


def _destination(name: str, table: dict[str, Any], key: str, file: Any) -> DestinationConfig:
    values: dict[str, Any] = {}
    for k, v in table.items():
        full = f"{key}.{str(k)[:40]}"
        if k in _STRINGS:
            if not isinstance(v, (str, int)) or isinstance(v, bool) or \
                    (isinstance(v, int) and k != "chat_id"):
                raise _fail(file, full, f"expected a string, got {kind_of(v)}")
            values[k] = str(v)
        elif k in _NUMBERS:
            values[k] = _number(v, full, file, *_NUMBERS[k])
        else:
            raise _fail(file, full, "unknown key; known: " + ", ".join((*_STRINGS, *_NUMBERS)))
    kind = values.pop("type", None)
    if kind not in DESTINATION_TYPES:
        raise _fail(file, f"{key}.type", "must be one of " + ", ".join(DESTINATION_TYPES)
                    + (f", got {kind[:40]!r}" if kind else " (missing)"))
    dest = DestinationConfig(name=name, type=kind, **values)
    {"webhook": _check_webhook, "discord": _check_discord,
     "telegram": _check_telegram}[kind](dest, key, file)
    return dest


def _number(v: Any, key: str, file: Any, tp: type, low: float, high: float, unit: str
            ) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (tp is int and
                                                                   isinstance(v, float)):
        raise _fail(file, key, f"expected {'an integer' if tp is int else 'a number'}, "
                    f"got {kind_of(v)}")
    if not math.isfinite(v) or not low <= v <= high:
        raise _fail(file, key, f"must be between {low:g} and {high:g} ({unit}), got {v:g}")
    return tp(v)  # type: ignore[no-any-return]


def _check_url(url: str, key: str, file: Any, *, https_only: bool) -> Any:
    if not url:
        raise _fail(file, f"{key}.url", "missing: the address to POST to")
    if any(c.isspace() or ord(c) < 32 for c in url) or len(url) > 2000:
        raise _fail(file, f"{key}.url", "not a URL (spaces, control characters or over "
                    "2000 characters)")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise _fail(file, f"{key}.url", "not a URL (bad host or port)") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _fail(file, f"{key}.url", "must be an http:// or https:// URL with a host")
    if https_only and parts.scheme != "https" and host not in LOOPBACK:
        raise _fail(file, f"{key}.url", "must be https:// (plain http only to this machine)")
    if parts.username or parts.password:
        raise _fail(file, f"{key}.url", "must not carry a user or password; webhooks are "
                    "signed with secret")
    return parts


def _check_webhook(dest: DestinationConfig, key: str, file: Any) -> None:
    parts = _check_url(dest.url, key, file, https_only=False)
    from urllib.parse import parse_qsl

    for _, value in parse_qsl(parts.query):  # ?token=... : a credential in all but name
        if len(value) >= 8:
            register_secret(value)
    if dest.secret is None:
        raise _fail(file, f"{key}.secret", "missing: the key receivers check the "
                    "X-Botopt-Signature with")
    if not dest.secret.strip():
        raise _fail(file, f"{key}.secret", "is empty")
    if len(dest.secret.encode()) < MIN_SECRET:
        raise _fail(file, f"{key}.secret", f"is shorter than {MIN_SECRET} bytes; use e.g. "
                    "python3 -c 'import secrets; print(secrets.token_hex(32))'")
    # Registered once valid: a rejected value is never printed, and registering "   " or
    # "short" would blank those strings out of every later message.
    register_secret(dest.secret)


def discord_token(url: str) -> str | None:
    m = DISCORD_PATH_RE.fullmatch(urlsplit(url).path) if url else None
    return m.group(2) if m else None


def _check_discord(dest: DestinationConfig, key: str, file: Any) -> None:
    token = discord_token(dest.url) if dest.url else None
    parts = _check_url(dest.url, key, file, https_only=True)
    if token is None:
        raise _fail(file, f"{key}.url", "is not a Discord webhook URL "
                    "(https://discord.com/api/webhooks/ID/TOKEN)")
    if parts.hostname not in DISCORD_HOSTS + LOOPBACK:
        raise _fail(file, f"{key}.url", "is not on discord.com")
    if parts.fragment or (parts.query and not re.fullmatch(r"thread_id=\d{1,25}",
                                                              parts.query)):
        raise _fail(file, f"{key}.url", "must end with the token, or ?thread_id=ID for a "
                    "thread (botopt adds wait=true)")
    if dest.secret is not None:
        raise _fail(file, f"{key}.secret", "Discord webhooks are not signed; the token in "
                    "the URL is the secret")
    if dest.max_batch_size > DISCORD_MAX_EMBEDS:
        raise _fail(file, f"{key}.max_batch_size", f"at most {DISCORD_MAX_EMBEDS} (Discord "
                    "takes 10 embeds a message, one per notification)")
    register_secret(token)


def _check_telegram(dest: DestinationConfig, key: str, file: Any) -> None:
    if not dest.token:
        raise _fail(file, f"{key}.token", "missing: the bot token of this chat")
    if not dest.chat_id:
        raise _fail(file, f"{key}.chat_id", "missing: the chat to send to")
    if dest.url:
        _check_url(dest.url, key, file, https_only=True)
    if dest.secret is not None:
        raise _fail(file, f"{key}.secret", "a Telegram destination has a token, not a secret")


def parse_routes(raw: Any, names: set[str], file: Any = None
                 ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[notify.routes]``: notification type (or ``"*"``, every other type) -> the names
    of the destinations it goes to. Every name must exist; an empty list would drop
    notifications silently, so it is refused."""
    if not isinstance(raw, dict):
        raise _fail(file, "notify.routes", "must be a table: type = [\"destination\", ...]")
    out: dict[str, tuple[str, ...]] = {}
    for kind, targets in raw.items():
        key = f"notify.routes.{str(kind)[:40]}"
        if kind != ANY_TYPE and not TYPE_RE.fullmatch(str(kind)):
            raise _fail(file, key, "a notification type is a lower_case name, or \"*\" for "
                        "every other type")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise _fail(file, key, "must be a list of destination names")
        if not targets:
            raise _fail(file, key, "is empty: every notification must go somewhere (name "
                        "at least one destination)")
        for t in targets:
            if t not in names:
                raise _fail(file, key, f"unknown destination {t[:40]!r}; known: "
                            + ", ".join(sorted(names)))
        out[kind] = tuple(dict.fromkeys(targets))
    out.setdefault(ANY_TYPE, (TELEGRAM,))
    return tuple(sorted(out.items()))


def route(routes: tuple[tuple[str, tuple[str, ...]], ...], kind: str) -> tuple[str, ...]:
    """The destinations a notification of type ``kind`` goes to."""
    table = dict(routes)
    return table.get(kind) or table.get(ANY_TYPE) or (TELEGRAM,)


def redacted_url(dest: DestinationConfig) -> str:
    """The URL as ``config show`` and ``notify list`` may print it."""
    token = discord_token(dest.url) if dest.type == "discord" else None
    url = dest.url
    if token:
        url = url[:url.rindex(token)] + "***" + url[url.rindex(token) + len(token):]
    from ._redact import redact_url

    return redact_url(url)
