"""``botopt doctor``: every part a cron set-up needs, checked the way the real runs use it.

Each check returns one line: ok with what was found, or what to do. A check that cannot run
because an earlier one failed says so instead of failing again for the same reason.
"""

from __future__ import annotations

import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base._config import Config, effective_feeder, max_staleness
from ..base._redact import redact, register_secret
from ..data._binance import BinanceClient
from ..data._candles import (
    _sample_dir,
    find_candle_file,
    read_candle_file,
)
from ..data._ccxt import INSTALL_HINT, uses_ccxt
from ..errors import BotoptError, format_age
from ..state._paths import cache_dir_for, ensure_dir
from ..state._workspace import Workspace, state_dir
from ._monitor import STATE, _State, get_status, monitor_running


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "message": self.message}


def run_checks(config: Config, *, send_test: bool = False,
               now: float | None = None) -> list[Check]:
    now = time.time() if now is None else now
    checks: list[tuple[str, Callable[[], str]]] = [
        ("config", lambda: _config(config)),
        ("data", lambda: _data(config, now)),
        ("cache", lambda: _cache(config)),
        *([("state", lambda: _state(config))] if config.state.url else []),
        ("telegram", lambda: _telegram(config, send_test)),
        *[(f"destination {d.name}", lambda d=d: _destination(d, send_test))
          for d in config.notify.destinations],
        ("model", lambda: _model(config)),
        ("monitor", lambda: _monitor(config, now)),
        ("jobs", lambda: _jobs(config, now)),
    ]
    out: list[Check] = []
    for name, fn in checks:
        if name in ("monitor", "jobs") and not out[2].ok:  # its state lives in the cache directory
            out.append(Check(name, False, "not checked until the cache directory is fixed"))
            continue
        try:
            out.append(Check(name, True, fn()))
        except BotoptError as exc:
            out.append(Check(name, False, redact(str(exc))))
    return out


def _config(cfg: Config) -> str:
    if cfg.path is None:
        return "no config file; defaults and BOTOPT_* variables (botopt init writes one)"
    mode = stat.S_IMODE(Path(cfg.path).stat().st_mode)
    if cfg.sources.get("telegram.token", "").startswith("file:") and mode & 0o077:
        raise BotoptError(f"{cfg.path} holds the bot token but is readable by others (mode "
                          f"{mode:o}): run chmod 600 {cfg.path}",
                          file=str(cfg.path), key="telegram.token")
    return str(cfg.path)


def _data(cfg: Config, now: float) -> str:
    src, interval = cfg.data.source, cfg.data.interval
    syms = list(cfg.data.symbols)
    if src == "binance":
        # with the ban note: a check during a ban must not make it longer
        BinanceClient(cfg.binance, state_dir=state_dir(cfg, "binance")).klines(
            syms[0], interval, limit=1)
        return f"Binance answers at {cfg.binance.api_url} ({syms[0]} {interval})"
    data_dir = _sample_dir() if src == "sample" else Path(cfg.data.data_dir or ".")
    _fetch_possible(cfg)
    step = interval.ms
    limit = max_staleness(cfg)
    stale = []
    for sym in syms:
        try:
            path = find_candle_file(data_dir, sym, interval)
            last = read_candle_file(path, sym).get_column("open_time").max()
        except BotoptError as exc:
            if src != "local":
                raise
            raise BotoptError(f"{exc}; botopt fetch fills the store (botopt cron prints "
                              "the first fetch)",
                              symbol=exc.symbol, file=exc.file) from exc
        age = now - (last.timestamp() + step / 1000)  # type: ignore[union-attr]
        # the rule signals blocks on: doctor warns of what the next run would refuse
        if src == "local" and age > limit:
            stale.append(f"{sym} ({age / 3600:.1f} h)")
    if src == "sample":
        return (f"bundled sample data ({', '.join(syms)}), not live: set data.source = "
                "\"local\" and data.data_dir, then botopt fetch")
    if stale:
        raise BotoptError(f"stale candles in {data_dir}: {', '.join(stale)} since the last "
                          "close; run botopt fetch (and check its cron job)",
                          symbol=stale[0].split()[0], file=str(data_dir))
    return f"{len(syms)} symbol(s) in {data_dir}, fresh ({interval})"


def _fetch_possible(cfg: Config) -> None:
    """botopt feeds this data from an exchange only ccxt reaches: the extra must be there
    before the first cron fetch fails on it."""
    if _botopt_feeds(cfg) and uses_ccxt(cfg):
        import importlib.util

        if importlib.util.find_spec("ccxt") is None:
            raise BotoptError(f"botopt fetch feeds this data from {cfg.data.exchange} "
                              f"({cfg.data.trading_mode}) through ccxt, which is not "
                              f"installed: {INSTALL_HINT}", key="data.exchange")


def _botopt_feeds(cfg: Config) -> bool:
    return cfg.data.source == "local" and effective_feeder(cfg.data) == "botopt"


def _cache(cfg: Config) -> str:
    path = ensure_dir(cache_dir_for(cfg))
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor."):
            pass
    except OSError as exc:
        raise BotoptError(f"cache directory {path} is not writable ({exc.strerror})",
                          file=str(path), key="cache.dir") from exc
    return f"{path} (private, writable)"


def _state(cfg: Config) -> str:
    """The shared state server: reachable, its version, and whether the queue survives a
    restart of it (AOF)."""
    from ..state._redis import server_info, shared_state
    from ..state._redis_events import check_hosts

    shared = shared_state(cfg.state)
    assert shared is not None
    try:
        info = server_info(shared)
    except shared.errors as exc:
        raise BotoptError(f"{shared.where} unreachable ({shared.describe(exc)}): check "
                          "state.url, the network, TLS and the ACL user's password",
                          source=shared.where, key="state.url") from exc
    what = f"{info['server']} {info['version']} at {shared.where}, namespace " \
           f"{cfg.state.namespace!r}"
    ws = Workspace.of(cfg)
    try:
        problems = check_hosts(shared, ws.host_id(), ws.instance_id(),
                               cfg.telegram.chat_id or "")
    except shared.errors as exc:
        raise BotoptError(f"{shared.where}: {shared.describe(exc)}",
                          source=shared.where, key="state.url") from exc
    if problems:
        raise BotoptError(f"{what}: {'; '.join(problems)}", source=what, key="state.url")
    if not info["aof"]:
        raise BotoptError(f"{what}: persistence (AOF) is off, so a restart of the server "
                          "loses every queued notification, claim and dead letter, and the "
                          "cooldowns (signals are sent again); set appendonly yes "
                          "(docs/multi-host.md)", source=what, key="state.url")
    fsync = ""
    try:
        fsync = str(shared.client.config_get("appendfsync").get("appendfsync") or "")
    except shared.errors:  # managed services often refuse CONFIG: AOF on is what we know
        pass
    loses = {"always": "nothing", "everysec": "at most the last second of writes",
             "no": "what the OS had not written yet"}.get(fsync, "little")
    return f"{what}; AOF on{f' (appendfsync {fsync})' if fsync else ''}: a crash of the " \
           f"server loses {loses}"


def _destination(dest: Any, send_test: bool) -> str:
    """A webhook or Discord destination: where it points; with --send-test, a real send
    through the same client and answer rules as notify-flush."""
    from ..base._destinations import redacted_url

    where = redacted_url(dest) if dest.type != "telegram" else f"chat {dest.chat_id}"
    if not send_test:
        return f"{dest.type} to {where} (--send-test sends a test message)"
    if dest.type == "telegram":
        from ..delivery._telegram import TelegramClient

        tg = TelegramClient(dest.url or "https://api.telegram.org", dest.token or "",
                            dest.timeout).send(str(dest.chat_id),
                                               "botopt doctor: test message, all good", None)
        if tg.kind != "ok":
            raise BotoptError(f"{where}: {tg.detail or tg.kind}",
                              key=f"notify.destinations.{dest.name}")
        return f"sent a test message to {where}"
    import uuid

    from ..delivery._http_dest import HttpClient, batch_key, discord_messages, webhook_messages

    nid = uuid.uuid4().hex
    item = [(nid, {"message": "botopt doctor: test message, all good"})]
    msgs = (discord_messages("alert", item, batch_key([nid])) if dest.type == "discord"
            else webhook_messages(dest.name, "doctor_test", item, batch_key([nid])))
    outcome = HttpClient(dest).send(msgs[0])
    if outcome.kind != "ok":
        raise BotoptError(outcome.detail or f"{dest.type} destination {dest.name}: "
                          f"{outcome.kind}", key=f"notify.destinations.{dest.name}")
    return f"sent a test message to {where}"


def _telegram(cfg: Config, send_test: bool) -> str:
    tc = cfg.telegram
    if not tc.token and cfg.notify.destinations and \
            not any("telegram" in names for _, names in cfg.notify.routes):
        return "not used: no route in [notify.routes] sends to telegram"
    if not tc.token:
        raise BotoptError("no bot token: set telegram.token in botopt.toml, mode 600 "
                          "(from @BotFather; cron does not see BOTOPT_TELEGRAM_TOKEN from "
                          "your shell)", key="telegram.token")
    if not tc.chat_id:
        raise BotoptError("no chat id: set telegram.chat_id (or BOTOPT_TELEGRAM_CHAT_ID)",
                          key="telegram.chat_id")
    me = _call(cfg, "getMe", {})
    bot = f"@{me.get('username', '?')}"
    chat = _call(cfg, "getChat", {"chat_id": tc.chat_id})
    where = chat.get("title") or chat.get("username") or chat.get("type") or tc.chat_id
    if send_test:
        _call(cfg, "sendMessage", {"chat_id": tc.chat_id,
                                   "text": "botopt doctor: test message, all good"})
        return f"bot {bot} sent a test message to {where}"
    return f"bot {bot} can reach chat {where} (--send-test sends a message)"


def _call(cfg: Config, method: str, payload: dict[str, Any]) -> dict[str, Any]:
    import requests

    tc = cfg.telegram
    token = str(tc.token)
    register_secret(token)
    url = f"{tc.api_url.rstrip('/')}/bot{token}/{method}"
    try:
        resp = requests.post(url, json=payload, timeout=(5.0, tc.timeout))
        body = resp.json()
    except requests.RequestException as exc:
        raise BotoptError(redact(f"Telegram unreachable at {tc.api_url} "
                                 f"({type(exc).__name__})"),
                          source="telegram", key="telegram.api_url") from None
    except ValueError:
        body = {}
    if resp.status_code == 200 and body.get("ok"):
        return dict(body.get("result") or {})
    desc = str(body.get("description") or resp.reason)
    if resp.status_code in (401, 404) and method == "getMe":
        raise BotoptError(f"Telegram refused the token ({resp.status_code} {desc}): copy it "
                          "again from @BotFather into telegram.token",
                          source="telegram", key="telegram.token")
    if method == "getChat" or "chat not found" in desc.lower():
        raise BotoptError(f"chat {tc.chat_id} not reachable ({resp.status_code} {desc}): send "
                          "the bot a message or add it to the group, then check "
                          "telegram.chat_id", source="telegram", key="telegram.chat_id")
    raise BotoptError(redact(f"Telegram {method} answered {resp.status_code}: {desc}"),
                      source="telegram")


def _model(cfg: Config) -> str:
    from ..signals._model import load_model

    model = load_model(cfg.model, cfg.features)
    what = cfg.model.predict or (str(cfg.model.path) if cfg.model.path else "bundled model")
    return f"{what} loads ({type(model).__name__})"


def _monitor(cfg: Config, now: float) -> str:
    if monitor_running(cfg):
        return "running"
    state = state_dir(cfg, "events") / STATE
    try:
        age = now - state.stat().st_mtime
    except FileNotFoundError:
        age = None
    if age is not None and age < -60:  # its file dated ahead of this clock
        return (f"driven by cron (its state is dated {-age:.0f} s in the future: "
                "is this machine's clock right?)")
    if age is not None and _State.load(state).serving:
        # a long-running monitor marks its state while it serves and clears the mark when
        # it stops: the mark left behind, with no monitor holding the lock, is one killed
        raise BotoptError(f"not running: `botopt monitor` was stopped without a clean exit "
                          f"(killed?) {format_age(max(0.0, age))} ago; start it again (under "
                          "systemd, which restarts it: botopt cron --systemd) or add `botopt "
                          "monitor --once` to cron", key="monitor")
    if age is not None and age < max(300.0, 3 * cfg.monitor.check_interval):
        return f"driven by cron (last ran {max(0.0, age):.0f} s ago)"
    raise BotoptError("not running: add `botopt monitor --once` to cron (botopt cron) or run "
                      "`botopt monitor` under systemd (botopt cron --systemd)", key="monitor")


def _jobs(cfg: Config, now: float) -> str:
    """Every cron job's last run (fetch, signals, notify-flush, monitor): a failing one,
    the data feeder above all, is named with its error; runs by hand are left out."""
    jobs = {cmd: j for cmd, j in get_status(cfg, now)["jobs"].items() if not j["interactive"]}
    failing = {cmd: j for cmd, j in jobs.items() if not j["ok"]}
    if failing:
        raise BotoptError("; ".join(
            f"{cmd} failed {max(0, int((now - j['finished_at']) // 60))} min ago: "
            f"{str(j['error'] or 'unknown error')[:200]}" for cmd, j in sorted(failing.items())),
            key=",".join(sorted(failing)))  # the failing jobs, by command name
    if not jobs:
        return "no cron run recorded yet"
    return "last runs ok: " + ", ".join(sorted(jobs))
