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


def run_all(quick: bool, data_dir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> list[Row]:
    rows: list[Row] = []
    for name in MODULES:
        if progress:
            progress(name)
        run = importlib.import_module(f"botopt.benchmarks.{name}").run
        if "data_dir" in inspect.signature(run).parameters:
            rows += run(quick, data_dir=data_dir)
        else:
            rows += run(quick)
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
