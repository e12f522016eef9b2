"""Run the botopt command with the process clock moved to a given time (a stand-in for
faketime, which is not installed everywhere): ``python -m botopt.benchmarks._clocked EPOCH
-- ARGS``. The clock keeps moving from there, as a real one does; every cache expiry is
checked against it."""

from __future__ import annotations

import sys
import time


def main() -> None:
    offset = float(sys.argv[1]) - time.time()
    real = time.time
    time.time = lambda: real() + offset  # before botopt is imported: its defaults bind this
    from ..cli.main import app

    args = sys.argv[2:]
    app(args[1:] if args[:1] == ["--"] else args, prog_name="botopt")


if __name__ == "__main__":
    main()
