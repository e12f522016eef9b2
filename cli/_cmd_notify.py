from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from . import _options as opt
from ._context import AppState, get_state
from ._render import clip, print_json, print_table


def _read_stdin_lines() -> list[dict[str, Any]]:
    """JSON lines from stdin. Bytes that are not UTF-8 are replaced by U+FFFD (with one
    warning naming the line), so that one bad byte never blocks the queue or loses the rest."""
    from ..core.errors import UsageError

    stream = getattr(sys.stdin, "buffer", None)
    raw_lines: list[bytes] = (list(stream) if stream is not None
                              else [line.encode("utf-8", "surrogateescape")
                                    for line in sys.stdin])
    items: list[dict[str, Any]] = []
    for n, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            print(f"botopt: warning: stdin line {n}: invalid UTF-8 replaced by U+FFFD",
                  file=sys.stderr)
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except RecursionError:
            raise UsageError(f"stdin line {n}: JSON nested too deeply") from None
        except ValueError as exc:
            raise UsageError(f"stdin line {n}: not JSON ({exc.args[0]})") from None
    return items


def _when(t: float | None) -> str:
    from datetime import datetime, timezone

    if t is None:
        return ""
    try:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(t)


def _short(data: Any) -> str:
    return clip(json.dumps(data), 60)


def _emit_per_destination(emit: Any, result: Any, line: str | None) -> None:
    """One flushed/failed event per destination (metrics count 429s and dead letters per
    destination); a flush that only met 429s still reports them."""
    from ..core import EventType

    per = result.by_destination or ({"telegram": {}} if result.failure else {})
    for dest, c in per.items():
        messages, limited = c.get("messages", 0), c.get("rate_limited", 0)
        failed = bool(c.get("failure")) or (result.failure and not result.by_destination)
        flushed = bool(messages or (limited and not failed))
        if flushed:
            emit(EventType.NOTIFY_FLUSHED, messages=messages,
                 notifications=c.get("notifications", 0), rate_limited=limited,
                 destination=dest)
        if failed:
            emit(EventType.NOTIFY_FAILED, error=line, destination=dest,
                 rate_limited=0 if flushed else limited)


def _per_destination(result: Any) -> str:
    """" (telegram 2, orders 2, team 1)": where they went, when not only to Telegram."""
    per = {d: c.get("notifications", 0) for d, c in result.by_destination.items()}
    if set(per) <= {"telegram"}:
        return ""
    return " (" + ", ".join(f"{d} {n}" for d, n in sorted(per.items())) + ")"


def _flush_line(result: Any) -> str:
    """One line saying what was not delivered, why, and when the next try is."""
    parts = []
    if result.refused:
        who = [d for d, c in result.by_destination.items() if c.get("refused")]
        name = "Telegram" if who in ([], ["telegram"]) else ", ".join(who)
        parts.append(f"{name} refused {result.refused} notification(s), kept queued: "
                     f"{result.refusal}")
    if result.dead_lettered:
        parts.append(f"{result.dead_lettered} notification(s) moved to the dead letters "
                     "(botopt notify list --failed)")
    if result.error:
        when = (f"next try after {_when(result.next_retry_at)} UTC"
                if result.next_retry_at else "next try at the next run")
        parts.append(f"not everything due was delivered ({result.remaining} still queued): "
                     f"{result.error}; {when}")
    return "; ".join(parts)


notify_app = typer.Typer(help="Queue notifications and inspect the queue.",
                         no_args_is_help=True)

@notify_app.command("add")
def add(
    ctx: typer.Context,
    type_: Optional[str] = typer.Option(None, "--type", "-t", help="Notification type, "
                                        "e.g. trade_executed, trade_exited, alert."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="A JSON object."),
    stdin: bool = typer.Option(False, "--stdin", help="Read JSON lines "
                               '{"type": ..., "data": {...}} from standard input.'),
) -> None:
    """Queue notifications for the next notify-flush (from your own trading code)."""
    from ..core import enqueue
    from ..core.errors import UsageError

    state = get_state(ctx)
    items: list[dict[str, Any]] = []
    if stdin:
        items = _read_stdin_lines()
    elif type_ is None:
        raise UsageError("give --type and --data, or --stdin")
    else:
        try:
            payload = json.loads(data) if data else {}
        except RecursionError:
            raise UsageError("--data: JSON nested too deeply") from None
        except ValueError as exc:
            raise UsageError(f"--data is not JSON ({exc.args[0]})") from None
        items.append({"type": type_, "data": payload})
    ids = enqueue(state.config(), items)
    # a signal's id is its symbol, candle, direction and engine: the same signal twice is
    # one notification, the first one's data (it said "queued 2" and kept 1)
    repeated = len(ids) - len(set(ids))
    state.notice(f"queued {len(set(ids))} notification(s)" + (
        f"; {repeated} repeated a signal given before it (same symbol, candle, direction "
        "and engine) and was not queued again" if repeated else ""))

@notify_app.command("list")
@opt.output_options
def list_(ctx: typer.Context, *, out: opt.Output,
          failed: bool = typer.Option(False, "--failed", help="Show the dead letters: "
                                      "notifications that could not be delivered."),
          limit: int = typer.Option(100, "--limit", min=1, help="Show at most this many "
                                    "(the total is always given).")
          ) -> None:
    """Show the queued notifications, oldest first (or the dead letters)."""
    from ..core import dead_letters, pending_notifications, queue_stats

    state = get_state(ctx)
    stats = queue_stats(state.config())
    if failed:
        dead = dead_letters(state.config(), limit)
        total = max(int(stats.get("dead_letters") or 0), len(dead))
        if out.json:
            from ._render import iso

            print_json({"dead_letters": [{**d, "failed_at": iso(d["failed_at"])}
                                         for d in dead], "total": total})
        elif not out.quiet:
            to = _to_column(state, dead)
            print_table(state, _title(total, len(dead), "dead letter(s)", "newest"),
                        ["id", "type", *to, "failed (UTC)", "tries", "reason", "data"],
                        [(d["id"][:8], d["type"], *([d["destination"]] if to else []),
                          _when(d["failed_at"]), d["attempts"],
                          d["reason"], _short(d["data"])) for d in dead])
        return
    items = pending_notifications(state.config(), limit)
    total = max(int(stats.get("pending") or 0), len(items))
    if out.json:
        from ._render import iso

        print_json({"notifications": [{**i, "created": iso(i["created"])} for i in items],
                    "total": total})
        return
    if not out.quiet:
        to = _to_column(state, items)
        print_table(state, _title(total, len(items), "queued", "oldest"),
                    ["id", "type", *to, "created (UTC)", "claimed", "tries", "data"],
                    [(i["id"][:8], i["type"], *([i["destination"]] if to else []),
                      _when(i["created"]), "yes" if i["claimed"] else "",
                      _tries(i), _short(i["data"])) for i in items])


def _title(total: int, shown: int, what: str, which: str) -> str:
    """``4930 queued (the oldest 100 shown; --limit N for more)``: the total, always (the
    list stopped at 100 and its title said "100 queued" of 4,930)."""
    more = f" (the {which} {shown} shown; --limit N for more)" if shown < total else ""
    return f"{total} {what}{more}"


def _tries(row: dict[str, Any]) -> str:
    if not row["attempts"]:
        return ""
    return f"{row['attempts']} ({row['state']})" if row["state"] == "unconfirmed" \
        else str(row["attempts"])


def _to_column(state: AppState, rows: list[dict[str, Any]]) -> list[str]:
    """The destination column, when there is more than the Telegram chat to tell apart."""
    if state.config().notify.destinations or any(r["destination"] != "telegram"
                                                   for r in rows):
        return ["to"]
    return []

@notify_app.command("retry")
def retry(ctx: typer.Context, ident: str = typer.Argument(
        ..., metavar="ID", help="A dead letter's id (its first 8 characters will do).")
          ) -> None:
    """Queue a dead letter again (after fixing what Telegram refused)."""
    from ..core import retry_dead_letter

    state = get_state(ctx)
    nid = retry_dead_letter(state.config(), ident.strip().lower())
    state.notice(f"notification {nid[:8]} queued again")

@notify_app.command("drop")
def drop(ctx: typer.Context, ident: str = typer.Argument(
        ..., metavar="ID", help="A dead letter's id (its first 8 characters will do).")
         ) -> None:
    """Delete a dead letter for good."""
    from ..core import drop_dead_letter

    state = get_state(ctx)
    nid = drop_dead_letter(state.config(), ident.strip().lower())
    state.notice(f"dead letter {nid[:8]} dropped")

@opt.output_options
def notify_flush(
    ctx: typer.Context,
    *,
    force: bool = typer.Option(False, "--force", help="Send every group now, not only "
                               "the due ones."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the messages that would "
                                 "be sent; send nothing."),
    out: opt.Output,
) -> None:
    """Send due notification groups to Telegram (at most 5 per message).

    Exit 0 when everything due went out, 1 when something due was not delivered (the
    line says why and when the next try is), 2 when the token or chat is wrong."""
    from ..core import EventType, Workspace, flush_notifications, record_run
    from ..core.errors import NotifyError

    state = get_state(ctx)
    cfg = state.config()
    emit = Workspace.of(cfg).events().emit
    # recorded as a run (status, doctor and history see the job); the monitor alerts on
    # the notify_failed event, once
    with record_run(cfg, "notify-flush", enabled=not dry_run) as counts:
        try:
            result = flush_notifications(cfg, force=force, dry_run=dry_run)
        except NotifyError as exc:
            emit(EventType.NOTIFY_FAILED, error=str(exc))
            raise
        counts.update(messages=result.messages_sent)
        if dry_run:
            _print_dry_run(state, result, out.json)
            return
        line = _flush_line(result)
        _emit_per_destination(emit, result, line)
        if out.json:
            print_json(result.to_dict())
        elif result.skipped:
            state.notice(result.skipped)
        elif not out.quiet:
            print(f"sent {result.notifications_sent} notification(s) in "
                  f"{result.messages_sent} message(s){_per_destination(result)}; "
                  f"{result.remaining} queued")
        if line:
            raise NotifyError(line)


def _print_dry_run(state: AppState, result: Any, json_out: bool) -> None:
    if json_out:
        print_json({"messages": [{"text": m.text, "parse_mode": m.parse_mode}
                                 for m in result.messages],
                    "remaining": result.remaining})
    elif not state.quiet:
        for m in result.messages:
            print(m.text, end="\n---\n")


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")
    app.command("notify-flush")(notify_flush)
