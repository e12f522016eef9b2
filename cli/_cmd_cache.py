from __future__ import annotations

from typing import Optional

import typer

from . import _options as opt
from ._context import get_state
from ._render import print_json, print_table


def _bar(rate: float, width: int = 20) -> str:
    full = round(rate * width)
    return "█" * full + "░" * (width - full)


@opt.output_options
def cache_stats(ctx: typer.Context, *, out: opt.Output) -> None:
    """Hits, misses, hit rate, entries, size, life and time saved per cache."""
    # Deliberately light: no polars or numpy on this path (cron runs it every minute).
    from ..core import Workspace, get_cache_stats
    from ..core.base._redact import redact_url
    from ..core.state._cache import describe_life, effective_lives

    state = get_state(ctx)
    cfg = state.config()
    root = Workspace.root_for(cfg)
    stats = get_cache_stats(root, ttls=effective_lives(cfg), config=cfg)
    if out.json:
        print_json({"caches": stats})
        return
    if out.quiet:
        return
    rows = []
    for name, s in stats.items():
        rate = f"{s['hit_rate']:6.1%}"
        rows.append((name, f"{_bar(s['hit_rate'])} {rate}" if state.is_terminal else rate,
                     s["hits"], s["misses"], s["entries"],
                     f"{s['size_bytes'] / 1024:.1f} KiB",
                     "-" if s["ttl_seconds"] is None else
                     describe_life(s["ttl_seconds"], s["life"] or "seed TTL"),
                     f"{s['time_saved_seconds']:.3f} s"))
    where = root if not cfg.state.url else redact_url(cfg.state.url)
    print_table(state, f"caches in {where}",
                ["cache", "hit rate", "hits", "misses", "entries", "size", "life",
                 "time saved"], rows)

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
