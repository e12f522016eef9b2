"""Rendering queued notifications as Telegram messages.

One formatter per notification type (``FORMATTERS``), each returning one HTML block per
notification with every user value escaped. Known fields are laid out; every other field
follows as ``key: value``, so nothing a caller queued is ever left out, and each value is shown
exactly as given (``value_text``). Blocks are packed into messages that never exceed
Telegram's limit as Telegram counts it: UTF-16 code units of the text after entity parsing
(tags do not count, ``&amp;`` counts as one). A block too long for one message is split into
plain-text chunks; nothing is ever truncated.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..base._numfmt import fmt_price, fmt_time, parse_time
from ..base._vocab import NotificationType

# The time zone of the batch being rendered (notify.timezone): set by render_batch.
_TZ: ContextVar[str] = ContextVar("botopt_notify_tz", default="UTC")

MAX_LEN = 4096
_TAG = re.compile(r"<[^>]*>")


def telegram_length(text: str, parse_mode: str | None = "HTML") -> int:
    """Length as Telegram counts it: UTF-16 code units of the parsed text."""
    plain = html.unescape(_TAG.sub("", text)) if parse_mode == "HTML" else text
    return len(plain.encode("utf-16-le")) // 2


def _e(value: Any) -> str:
    return html.escape(_contained(str(value)), quote=False)


# Unicode's explicit direction controls: embeddings and overrides (closed by PDF, U+202C)
# and isolates (closed by PDI, U+2069).
_OPENS, _PDF = "\u202a\u202b\u202d\u202e", "\u202c"
_ISOLATES, _PDI = "\u2066\u2067\u2068", "\u2069"


def _contained(text: str) -> str:
    """``text`` with the direction controls it leaves open closed at its end. A value's
    unclosed right-to-left override (U+202E) ran on into botopt's own text after it: a
    "LONG" shown reversed, a price read backwards. Every character is kept (they are the
    sender's); botopt's text opens none, so a surplus close is ignored."""
    if not any(c in text for c in _OPENS + _ISOLATES):
        return text
    depth = isolates = 0
    for c in text:
        if c in _OPENS:
            depth += 1
        elif c == _PDF:
            depth = max(0, depth - 1)
        elif c in _ISOLATES:
            isolates += 1
        elif c == _PDI:
            isolates = max(0, isolates - 1)
    return text + _PDF * depth + _PDI * isolates


def value_text(value: Any) -> str:
    """A value as the message shows it: strings as given, numbers in full (shortest
    round-trip form), JSON spelling for the rest. Never rounded, never a JSON-escaped string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _v(value: Any) -> str:
    return _e(value_text(value))


def _extras(d: Mapping[str, Any], shown: set[str]) -> list[str]:
    """Every field the layout did not show, as ``key: value``: no data is ever dropped."""
    return [f"{_e(k)}: {_v(v)}" for k, v in d.items() if k not in shown]


def _join(head: str, lines: list[str]) -> str:
    return head + "".join("\n" + line for line in lines if line)


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if d.get(k) not in (None, "")), None)


def _number(value: Any, fmt: Callable[[float], str]) -> str:
    """A number as people read it; anything else exactly as queued."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value):
        return _e(fmt(float(value)))
    return _v(value)


def _when(value: Any) -> str:
    when = parse_time(value)
    return _e(fmt_time(when, _TZ.get())) if when is not None else _v(value)


def _signal(d: Mapping[str, Any]) -> str:
    side_key = _first(d, ("direction", "side"))
    side = value_text(d[side_key]) if side_key else "?"
    icon = {"long": "🟢", "buy": "🟢", "short": "🔴", "sell": "🔴"}.get(side.lower(), "⚪")
    sym_key = _first(d, ("symbol", "pair"))
    head = f"{icon} <b>{_e(side)} {_v(d[sym_key]) if sym_key else '?'}</b>"
    shown = {k for k in (side_key, sym_key) if k}
    if "close" in d:
        head += f" @ {_number(d['close'], fmt_price)}"
        shown.add("close")
    extra = []
    # p_dir: the probability of the signal's own direction (what botopt signals queues);
    # "probability" from older queues or users' own items.
    for key, label in (("engine", ""), ("strength", "strength "), ("p_dir", "p "),
                       ("probability", "p ")):
        if d.get(key) is not None:
            extra.append(f"{label}{_number(d[key], lambda v: f'{v:.2f}')}")
            shown.add(key)
    head += f" ({', '.join(extra)})" if extra else ""
    details = [f"regime {_v(d['regime'])}" if k == "regime" else f"candle {_when(d[k])}"
               for k in ("regime", "candle_time") if d.get(k) is not None]
    shown.update(k for k in ("regime", "candle_time") if d.get(k) is not None)
    return _join(head, [", ".join(details), *_extras(d, shown)])


def _regime_change(d: Mapping[str, Any]) -> str:
    sym_key = _first(d, ("symbol", "pair"))
    head = (f"🔄 <b>{_v(d[sym_key]) if sym_key else '?'}</b>: {_v(d.get('old', '?'))} → "
            f"<b>{_v(d.get('new', '?'))}</b>")
    return _join(head, _extras(d, {k for k in (sym_key, "old", "new") if k}))


# botopt's own names first, then freqtrade's (its webhook and RPC trade fields).
_TRADE_FIELDS: tuple[tuple[str, str], ...] = (
    ("price", "price"), ("open_rate", "open rate"), ("close_rate", "close rate"),
    ("quantity", "quantity"), ("qty", "qty"), ("amount", "amount"),
    ("stake_amount", "stake"), ("stake_currency", "stake currency"), ("leverage", "leverage"),
    ("pnl", "pnl"), ("pnl_pct", "pnl %"), ("profit_abs", "profit"),
    ("profit_amount", "profit"), ("profit_ratio", "profit ratio"),
    ("reason", "reason"), ("exit_reason", "exit reason"), ("sell_reason", "exit reason"),
    ("enter_tag", "entry tag"), ("order_type", "order type"), ("trade_id", "trade"),
    ("exchange", "exchange"),
)


def _trade(verb: str) -> Callable[[Mapping[str, Any]], str]:
    def render(d: Mapping[str, Any]) -> str:
        side_key = _first(d, ("side", "direction", "trade_direction"))
        sym_key = _first(d, ("symbol", "pair"))
        head = (f"💱 <b>{verb}"
                + (f" {_v(d[side_key])}" if side_key else "")
                + (f" {_v(d[sym_key])}" if sym_key else " ?") + "</b>")
        shown = {k for k in (side_key, sym_key) if k}
        fields = []
        for key, label in _TRADE_FIELDS:
            if key in d:
                fields.append(f"{label} {_v(d[key])}")
                shown.add(key)
        return _join(head, [", ".join(fields), *_extras(d, shown)])

    return render


def _alert(d: Mapping[str, Any]) -> str:
    key = _first(d, ("message", "error"))
    if key is None:
        return _join("⚠️", _extras(d, set()))
    return _join(f"⚠️ {_v(d[key])}", _extras(d, {key}))


def _generic(d: Mapping[str, Any]) -> str:
    return "\n".join(f"<b>{_e(k)}</b>: {_v(v)}" for k, v in d.items()) or "(no data)"


FORMATTERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    NotificationType.SIGNAL: _signal,
    NotificationType.REGIME_CHANGE: _regime_change,
    NotificationType.TRADE_EXECUTED: _trade("Executed"),
    NotificationType.TRADE_EXITED: _trade("Exited"),
    NotificationType.ALERT: _alert,
}
TITLES: dict[str, str] = {
    NotificationType.SIGNAL: "Signals", NotificationType.REGIME_CHANGE: "Regime changes",
    NotificationType.TRADE_EXECUTED: "Trades executed",
    NotificationType.TRADE_EXITED: "Trades exited", NotificationType.ALERT: "Alerts"}


@dataclass(frozen=True)
class Message:
    text: str
    parse_mode: str | None  # "HTML", or None for plain text
    ids: tuple[str, ...]  # the notifications this message carries (may be partial parts)
    splits: int = 0  # how often Telegram's "too long" made us cut it further (bounded)


def _plain_chunks(text: str, limit: int) -> list[str]:
    """Split plain text into pieces of at most ``limit`` UTF-16 units, at line breaks when
    possible, never inside a surrogate pair."""
    out: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while telegram_length(line, None) > limit:
            cut, used = 0, 0
            for ch in line:
                w = 2 if ord(ch) > 0xFFFF else 1
                if used + w > limit:
                    break
                used += w
                cut += 1
            if current:
                out.append(current)
                current = ""
            out.append(line[:cut])
            line = line[cut:]
        if telegram_length(current + line, None) > limit:
            out.append(current)
            current = ""
        current += line
    if current:
        out.append(current)
    # Telegram refuses a blank message ("message text is empty"), and whitespace alone shows
    # nothing: such a piece is dropped, never sent.
    return [c for c in out if c.strip()]


@contextmanager
def message_timezone(tz: str) -> Iterator[None]:
    """Render every message inside in the zone ``tz`` (notify.timezone)."""
    token = _TZ.set(tz or "UTC")
    try:
        yield
    finally:
        _TZ.reset(token)


def render_batch(kind: str, items: Sequence[tuple[str, Mapping[str, Any]]],
                 limit: int = MAX_LEN, tz: str | None = None) -> list[Message]:
    """Messages for one batch of notifications of one type, each within ``limit``, times
    in the zone ``tz`` (default: the one ``message_timezone`` set, else UTC)."""
    token = _TZ.set(tz or _TZ.get())
    try:
        return _render_batch(kind, items, limit)
    finally:
        _TZ.reset(token)


def _render_batch(kind: str, items: Sequence[tuple[str, Mapping[str, Any]]],
                  limit: int) -> list[Message]:
    fmt = FORMATTERS.get(kind, _generic)
    title = TITLES.get(kind, kind.replace("_", " ").capitalize())
    header = f"<b>{_e(title)}</b> ({len(items)})\n\n"
    messages: list[Message] = []
    body: list[str] = []
    ids: list[str] = []

    def close() -> None:
        if body:
            messages.append(Message(header + "\n\n".join(body), "HTML", tuple(ids)))
            body.clear()
            ids.clear()

    for nid, data in items:
        block = fmt(data)
        if telegram_length(header + block) > limit:
            close()
            plain = html.unescape(_TAG.sub("", block))
            for chunk in _plain_chunks(plain, limit):
                messages.append(Message(chunk, None, (nid,)))
            continue
        if telegram_length(header + "\n\n".join([*body, block])) > limit:
            close()
        body.append(block)
        ids.append(nid)
    close()
    return messages


def as_plain(message: Message) -> list[Message]:
    """The same content without markup (Telegram rejected the entities)."""
    if message.parse_mode is None:
        return [message]
    text = html.unescape(_TAG.sub("", message.text))
    return [Message(c, None, message.ids) for c in _plain_chunks(text, MAX_LEN)]


def split_further(message: Message) -> list[Message]:
    """Telegram said "message is too long" although we measured it shorter: halve it."""
    text = html.unescape(_TAG.sub("", message.text)) if message.parse_mode else message.text
    limit = max(1, telegram_length(text, None) // 2)
    return [Message(c, None, message.ids, message.splits + 1)
            for c in _plain_chunks(text, limit)]
