from __future__ import annotations

from typing import Any, Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_table


def _bar(rate: float, width: int = 20) -> str:
    full = round(rate * width)
    return "█" * full + "░" * (width - full)


def _runs_line(runs: dict[str, Any], since: str) -> str:
    cron, hand = runs["cron"], runs["by_hand"]
    line = (f"signals runs {since}: cron {cron['runs']}, answered whole from the cache "
            f"{cron['from_cache']} ({cron['rate']:.1%}); by hand {hand['runs']} "
            f"({hand['from_cache']} from the cache). The stage caches below are consulted "
            "only by the runs the whole-run cache did not answer")
    return line


@opt.output_options
def cache_stats(
    ctx: typer.Context,
    *,
    since: Optional[str] = typer.Option(None, "--since", help="The runs of this period: a "
                                        "duration back from now (30m, 12h, 7d) or an ISO "
                                        "time (default: 24h)."),
    reset: bool = typer.Option(False, "--reset", help="Start the hit and miss counters "
                               "again at zero (the entries stay)."),
    out: opt.Output,
) -> None:
    """Runs answered whole from the cache, then hits, misses, hit rate, entries, size,
    life and time saved per stage cache."""
    # Deliberately light: no polars or numpy on this path (cron runs it every minute).
    from ..core import cache_report
    from ..core.base._config import describe_life
    from ..core.watch._history import now, parse_since

    state = get_state(ctx)
    report = cache_report(state.config(), since=parse_since(since, now()), reset=reset)
    if reset:
        state.notice("cache statistics reset (the entries stay)")
    runs, stats, hosts = report.runs, report.caches, report.hosts
    if out.json:
        print_json({"runs": runs, "since": since or "24h", "caches": stats,
                    **({"hosts": hosts} if hosts is not None else {})})
        return
    if out.quiet:
        return
    print(_runs_line(runs, f"in the last {since or '24h'}" if not since or since[-1:]
                     in "mhdw" else f"since {since}"))
    rows = []
    for name, s in stats.items():
        rate = f"{s['hit_rate']:6.1%}"
        rows.append((name, f"{_bar(s['hit_rate'])} {rate}" if state.is_terminal else rate,
                     s["hits"], s["misses"], s["entries"],
                     f"{s['size_bytes'] / 1024:.1f} KiB",
                     "-" if s["ttl_seconds"] is None else
                     describe_life(s["ttl_seconds"], s["life"] or "seed TTL"),
                     f"{s['time_saved_seconds']:.3f} s"))
    print_table(state, f"caches in {report.where}",
                ["cache", "hit rate", "hits", "misses", "entries", "size", "life",
                 "time saved"], rows)
    if hosts:
        print_table(state, "per host (the entries are shared)",
                    ["host", "cache", "hit rate", "hits", "misses", "time saved"],
                    [(h, name, f"{s['hit_rate']:6.1%}", s["hits"], s["misses"],
                      f"{s['time_saved_seconds']:.3f} s")
                     for h, per in hosts.items() for name, s in per.items()
                     if s["hits"] or s["misses"]])

def cache_clear(
    ctx: typer.Context,
    cache: Optional[str] = typer.Option(None, "--cache", help="Only this cache "
                                        "(features, predictions, regime, gates, ...)."),
) -> None:
    """Delete cached entries (all caches, or one) and their statistics."""
    from ..core import Workspace, clear_cache

    state = get_state(ctx)
    cfg = state.config()
    cleared = clear_cache(cache, Workspace.root_for(cfg), config=cfg)
    state.notice(f"cleared {', '.join(cleared)}")


def register(app: typer.Typer) -> None:
    app.command("cache-stats")(cache_stats)
    app.command("cache-clear")(cache_clear)
