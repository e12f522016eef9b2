"""Run the botopt command with the process clock moved to a given time (a stand-in for
faketime, which is not installed everywhere): ``python -m botopt.benchmarks._clocked EPOCH
-- ARGS``. The clock keeps moving from there, as a real one does; every cache expiry is
checked against it."""

from __future__ import annotations

import runpy
import sys
import time


def main() -> None:
    offset = float(sys.argv[1]) - time.time()
    real = time.time
    time.time = lambda: real() + offset  # before botopt is imported: its defaults bind this
    args = sys.argv[2:]
    # The CLI as a program, loaded by name as `python -m botopt.cli.main` loads it: the bench
    # sits below the CLI (whose `bench` command imports it), so it never imports the CLI.
    # Built as the installed command builds it: only the named command's (``app_for``).
    cli = runpy.run_module("botopt.cli.main", run_name="botopt_clocked")
    argv = args[1:] if args[:1] == ["--"] else args
    cli["app_for"](argv)(argv, prog_name="botopt")


if __name__ == "__main__":
    main()
