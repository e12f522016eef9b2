from __future__ import annotations

import typer

from . import _options as opt
from ._context import get_state
from ._render import clip, print_json, print_table


@opt.output_options
def monitor(
    ctx: typer.Context,
    *,
    once: bool = typer.Option(False, "--once", help="Handle pending events and due "
                              "checks, then exit (for cron)."),
    out: opt.Output,
) -> None:
    """Watch botopt's activity: alert on failures, stalls and stuck notifications."""
    from ..core import record_run, run_monitor

    state = get_state(ctx)
    cfg = state.config()
    if not once:
        state.notice("monitor running; Ctrl-C or SIGTERM stops it")
    # a cron job like the others (the long-running monitor is a service, not a run)
    with record_run(cfg, "monitor", enabled=once):
        result = run_monitor(cfg, once=once)
    data = {"events_handled": result.events_handled, "checks_run": result.checks_run,
            "notifications_queued": result.notifications_queued,
            "wakeups": result.wakeups, "events_damaged": result.events_damaged,
            "busy": result.busy, "disk_problem": result.disk_problem}
    if out.json:
        print_json(data)
    elif result.busy:
        state.notice("another monitor is running; nothing to do")
    elif not out.quiet:
        print(f"handled {result.events_handled} event(s), ran {result.checks_run} "
              f"check(s), queued {result.notifications_queued} notification(s)")
    if result.disk_problem:  # the checks ran; cron mails this line and the exit code
        from ..core.errors import CacheError

        raise CacheError(f"monitor: {result.disk_problem}; alerts are kept for the next "
                         "run that can write")


@opt.output_options
def status(ctx: typer.Context, *, out: opt.Output) -> None:
    """Last run, recent failures, pending events, notification backlog, monitor."""
    from datetime import datetime, timezone

    from ..core import destination_names, destination_stats, get_status

    state = get_state(ctx)
    data = get_status(state.config())
    per = destination_stats(data["notifications"], destination_names(state.config())) \
        if "by_type" in data["notifications"] else {}
    if out.json:
        from ._render import iso

        last_run = data["last_run"]
        print_json({**data, "destinations": per, "last_flush_at": iso(data["last_flush_at"]),
                    "jobs": {c: {**j, "finished_at": iso(j["finished_at"])}
                             for c, j in data["jobs"].items()},
                    "last_run": last_run and {**last_run,
                                              "finished_at": iso(last_run["finished_at"])}})
        return
    if out.quiet:
        return

    def when(t: float | None) -> str:
        if t is None:
            return "never"
        try:
            return datetime.fromtimestamp(t, tz=timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):
            return f"{t} (not a valid time)"

    last = data["last_run"]
    q = data["notifications"]
    rows = [
        ("last run", "none" if last is None else
         f"{last.get('command') or 'a run'} {'ok' if last['ok'] else 'FAILED'} at "
         f"{when(last['finished_at'])}"
         + (f" ({last['duration_s']} s)" if last.get("duration_s") is not None else "")
         + (f" on {last['host']}" if last.get("host") else "")),
        ("last error", "-" if last is None or last["ok"] else
         clip(str(last.get("error") or "unknown"), 200)),
        ("runs / failures (1 h)", f"{data['runs_last_hour']} / "
         f"{data['failures_last_hour']}"),
        ("events pending", data["events_pending"]),
        ("notifications queued", q.get("pending", q.get("error"))),
        ("dead letters", q.get("dead_letters", "?")),
        *[(f"queued for {dest} / dead", f"{d['pending']} / {d['dead_letters']}")
          for dest, d in sorted(per.items()) if state.config().notify.destinations
          or dest != "telegram"],
        ("last flush", when(data["last_flush_at"])),
        ("monitor running", "yes" if data["monitor_running"] else "no"),
    ]
    for cmd, job in sorted(data["jobs"].items()):
        if not job["ok"]:
            rows.append((f"{cmd} FAILED" + (" (by hand)" if job["interactive"] else ""),
                         f"{when(job['finished_at'])}: "
                         f"{clip(str(job.get('error') or 'unknown'), 200)}"))
    if data["events_damaged"]:
        rows.append(("damaged event lines (skipped)", data["events_damaged"]))
    print_table(state, "botopt status", ["", ""], rows)


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
    app.command("status")(status)
