"""Every benchmark in one run: what ``botopt bench`` executes and renders."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

from ._common import Row

MODULES = ["bench_features", "bench_engines", "bench_correlation", "bench_scale", "replay_cron",
           "bench_backtest", "bench_backtest_report", "bench_notify", "bench_monitor",
           "bench_multihost", "bench_freqtrade", "soak"]


# --quick's groups, longest first (seconds on the 2-core machine): two run at a time, and
# the long ones started first finish with the short ones, not after them.
_QUICK_ORDER = ["replay_cron", "bench_multihost", "bench_scale", "bench_monitor",
                "bench_backtest", "bench_backtest_report", "bench_correlation", "bench_engines",
                "bench_notify", "bench_features", "bench_freqtrade", "soak"]


def run_one(name: str, quick: bool, data_dir: Path | None = None) -> list[Row]:
    """The rows of one group (a module of ``MODULES``)."""
    run = importlib.import_module(f"botopt.benchmarks.{name}").run
    if "data_dir" in inspect.signature(run).parameters:
        rows: list[Row] = run(quick, data_dir=data_dir)
    else:
        rows = run(quick)
    return rows


def run_all(quick: bool, data_dir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> list[Row]:
    """Every group's rows, in ``MODULES`` order. The full run takes one group at a time:
    its figures are the ones of record. ``--quick`` is the smoke run (every row works, on
    less work, in about a minute): two groups at a time, each in a process of its own.
    Each row's two sides are still measured side by side, in one group, so the other group
    slows both alike; its ratios are noisier for it."""
    rows: list[Row] = []
    if not quick:
        for name in MODULES:
            if progress:
                progress(name)
            rows += run_one(name, quick, data_dir)
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    order = [n for n in _QUICK_ORDER if n in MODULES] + \
        [n for n in MODULES if n not in _QUICK_ORDER]
    # spawned, not forked: a fork of a process that has polars' thread pool can hang
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {n: pool.submit(run_one, n, quick, data_dir) for n in order}
        for name in MODULES:
            if progress:
                progress(name)
            rows += futures[name].result()
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| area | case | before | after | result | claim | identical (max diff) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ident = "-" if r.identical is None else str(r.identical).lower()
        if r.max_diff is not None:
            ident += f" ({r.max_diff:.1e})"
        note = f" {r.note}" if r.note else ""
        lines.append(f"| {r.group} | {r.case}{note} | {r.before} | {r.after} | {r.result} | "
                     f"{r.claim or ''} | {ident} |")
    return "\n".join(lines) + "\n"
