from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from botopt.cli import _options as opt
from botopt.cli._context import get_state
from botopt.cli._render import clip, print_json, print_table


def register(app: typer.Typer) -> None:
    notify_app = typer.Typer(help="Queue notifications and inspect the queue.",
                             no_args_is_help=True)
    app.add_typer(notify_app, name="notify")

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
        from botopt.core._notify import enqueue
        from botopt.core.errors import UsageError

        state = get_state(ctx)
        items: list[dict[str, object]] = []
        if stdin:
            for n, line in enumerate(sys.stdin, start=1):
                if not line.strip():
                    continue
                try:
                    items.append(json.loads(line))
                except ValueError as exc:
                    raise UsageError(f"stdin line {n}: not JSON ({exc.args[0]})") from None
        elif type_ is None:
            raise UsageError("give --type and --data, or --stdin")
        else:
            try:
                payload = json.loads(data) if data else {}
            except ValueError as exc:
                raise UsageError(f"--data is not JSON ({exc.args[0]})") from None
            items.append({"type": type_, "data": payload})
        ids = enqueue(state.config(), items)
        state.notice(f"queued {len(ids)} notification(s)")

    @notify_app.command("list")
    def list_(ctx: typer.Context, json_out: bool = opt.JSON) -> None:
        """Show the queued notifications, oldest first."""
        from botopt.core._notify import pending_notifications

        state = get_state(ctx)
        items = pending_notifications(state.config())
        if json_out:
            from botopt.cli._render import iso

            print_json({"notifications": [{**i, "created": iso(i["created"])} for i in items]})
            return
        if not state.quiet:
            from datetime import datetime, timezone

            print_table(state, f"{len(items)} queued", ["id", "type", "created (UTC)",
                                                        "claimed", "data"],
                        [(i["id"][:8], i["type"], datetime.fromtimestamp(
                            i["created"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                          "yes" if i["claimed"] else "", clip(json.dumps(i["data"]), 60))
                         for i in items])

    @app.command("notify-flush")
    def notify_flush(
        ctx: typer.Context,
        force: bool = typer.Option(False, "--force", help="Send every group now, not only "
                                   "the due ones."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the messages that would "
                                     "be sent; send nothing."),
        json_out: bool = opt.JSON,
    ) -> None:
        """Send due notification groups to Telegram (at most 5 per message)."""
        from botopt.core._events import emit
        from botopt.core._notify import flush_notifications
        from botopt.core.errors import NotifyError

        state = get_state(ctx)
        try:
            result = flush_notifications(state.config(), force=force, dry_run=dry_run)
        except NotifyError as exc:
            emit("notify_failed", error=str(exc))
            raise
        if dry_run:
            if json_out:
                print_json({"messages": [{"text": m.text, "parse_mode": m.parse_mode}
                                         for m in result.messages],
                            "remaining": result.remaining})
            elif not state.quiet:
                for m in result.messages:
                    print(m.text, end="\n---\n")
            return
        if result.messages_sent:
            emit("notify_flushed", messages=result.messages_sent,
                 notifications=result.notifications_sent)
        if result.failed:
            emit("notify_failed", error=f"{result.failed} notification(s) left queued")
        if json_out:
            print_json(result.to_dict())
        elif result.skipped:
            state.notice(result.skipped)
        elif not state.quiet:
            line = (f"sent {result.notifications_sent} notification(s) in "
                    f"{result.messages_sent} message(s); {result.remaining} queued")
            if result.next_retry_at:
                from datetime import datetime, timezone

                retry = datetime.fromtimestamp(result.next_retry_at, tz=timezone.utc)
                line += f"; next try after {retry:%H:%M:%S} UTC"
            print(line)
