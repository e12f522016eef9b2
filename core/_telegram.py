"""A minimal Telegram Bot API client: one call (sendMessage), every answer classified.

The bot token is part of the URL, and requests copies the URL into its exception messages, so
nothing from requests leaves this module unredacted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botopt.core._redact import redact, register_secret


@dataclass(frozen=True)
class Outcome:
    """What Telegram said: kind is ok, retry_after, too_long, bad_entities, fatal, transient."""

    kind: str
    detail: str = ""
    retry_after: float = 0.0


class TelegramClient:
    def __init__(self, api_url: str, token: str, timeout: float = 10.0,
                 session: Any = None) -> None:
        import requests

        register_secret(token)
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._timeout = timeout
        self._session = session or requests.Session()
        self._session.headers.setdefault("User-Agent", "botopt")

    def send(self, chat_id: str, text: str, parse_mode: str | None) -> Outcome:
        import requests

        payload: dict[str, Any] = {"chat_id": chat_id, "text": text,
                                   "disable_web_page_preview": True}
        if parse_mode:
            payload["parse_mode"] = parse_mode
        try:
            resp = self._session.post(self._url, json=payload,
                                      timeout=(min(5.0, self._timeout), self._timeout))
        except requests.RequestException as exc:
            return Outcome("transient", redact(f"{type(exc).__name__}: {exc}"))
        try:
            body = resp.json()
        except ValueError:
            body = {}
        desc = str(body.get("description") or resp.reason or "")
        if resp.status_code == 200 and body.get("ok") is True:
            return Outcome("ok")
        if resp.status_code == 429:
            params = body.get("parameters") or {}
            wait = params.get("retry_after") or resp.headers.get("Retry-After") or 5
            try:
                seconds = float(wait)
            except (TypeError, ValueError):
                seconds = 5.0
            return Outcome("retry_after", redact(desc), seconds)
        low = desc.lower()
        if resp.status_code == 400 and "message is too long" in low:
            return Outcome("too_long", desc)
        if resp.status_code == 400 and "can't parse entities" in low:
            return Outcome("bad_entities", desc)
        if resp.status_code in (401, 403, 404) or (resp.status_code == 400
                                                   and "chat not found" in low):
            return Outcome("fatal", redact(f"Telegram answered {resp.status_code}: {desc}"))
        if resp.status_code >= 500:
            return Outcome("transient", redact(f"Telegram answered {resp.status_code}: {desc}"))
        return Outcome("fatal", redact(f"Telegram answered {resp.status_code}: "
                                       f"{desc or json.dumps(body)[:200]}"))
