"""Rendering queued notifications as Telegram messages.

One formatter per notification type (``FORMATTERS``), each returning one HTML block per
notification with every user value escaped. Blocks are packed into messages that never exceed
Telegram's limit as Telegram counts it: UTF-16 code units of the text after entity parsing
(tags do not count, ``&amp;`` counts as one). A block too long for one message is split into
plain-text chunks; nothing is ever truncated.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_LEN = 4096
_TAG = re.compile(r"<[^>]*>")


def telegram_length(text: str, parse_mode: str | None = "HTML") -> int:
    """Length as Telegram counts it: UTF-16 code units of the parsed text."""
    plain = html.unescape(_TAG.sub("", text)) if parse_mode == "HTML" else text
    return len(plain.encode("utf-16-le")) // 2


def _e(value: Any) -> str:
    return html.escape(str(value), quote=False)


def _num(value: Any, digits: int = 8) -> str:
    if isinstance(value, float):
        return _e(f"{value:.{digits}g}")
    return _e(value)


def _signal(d: Mapping[str, Any]) -> str:
    side = str(d.get("direction", "?")).upper()
    icon = {"LONG": "🟢", "SHORT": "🔴"}.get(side, "⚪")
    parts = [f"{icon} <b>{_e(side)} {_e(d.get('symbol', '?'))}</b>"]
    if "close" in d:
        parts.append(f"@ {_num(d['close'])}")
    extra = []
    if d.get("engine"):
        extra.append(_e(d["engine"]))
    if d.get("strength") is not None:
        extra.append(f"strength {_num(d['strength'], 2)}")
    if d.get("probability") is not None:
        extra.append(f"p {_num(d['probability'], 2)}")
    line = " ".join(parts) + (f" ({', '.join(extra)})" if extra else "")
    details = [f"{_e(k)} {_e(d[k])}" for k in ("regime", "candle_time") if d.get(k)]
    return line + ("\n" + ", ".join(details) if details else "")


def _regime_change(d: Mapping[str, Any]) -> str:
    return (f"🔄 <b>{_e(d.get('symbol', '?'))}</b>: {_e(d.get('old', '?'))} → "
            f"<b>{_e(d.get('new', '?'))}</b>")


def _trade(verb: str) -> Callable[[Mapping[str, Any]], str]:
    def render(d: Mapping[str, Any]) -> str:
        words = (verb, _e(d.get("side") or "").upper(), _e(d.get("symbol", "?")))
        head = f"💱 <b>{' '.join(w for w in words if w)}</b>"  # no double space without a side
        fields = [f"{_e(k)} {_num(d[k])}" for k in ("price", "quantity", "qty", "pnl",
                                                    "pnl_pct", "reason") if k in d]
        return head + ("\n" + ", ".join(fields) if fields else "")

    return render


def _alert(d: Mapping[str, Any]) -> str:
    msg = d.get("message") or d.get("error") or json.dumps(dict(d), sort_keys=True)
    return f"⚠️ {_e(msg)}"


def _generic(d: Mapping[str, Any]) -> str:
    return "\n".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in d.items()) or "(no data)"


FORMATTERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "signal": _signal,
    "regime_change": _regime_change,
    "trade_executed": _trade("Executed"),
    "trade_exited": _trade("Exited"),
    "alert": _alert,
}
TITLES = {"signal": "Signals", "regime_change": "Regime changes",
          "trade_executed": "Trades executed", "trade_exited": "Trades exited",
          "alert": "Alerts"}


@dataclass(frozen=True)
class Message:
    text: str
    parse_mode: str | None  # "HTML", or None for plain text
    ids: tuple[str, ...]  # the notifications this message carries (may be partial parts)


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
    return out


def render_batch(kind: str, items: Sequence[tuple[str, Mapping[str, Any]]],
                 limit: int = MAX_LEN) -> list[Message]:
    """Messages for one batch of notifications of one type, each within ``limit``."""
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
    return [Message(c, None, message.ids) for c in _plain_chunks(text, limit)]
