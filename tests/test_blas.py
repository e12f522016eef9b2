"""``one_blas_thread``: the correlation gate's rows do not depend on the process's BLAS
thread count (OpenBLAS's threaded product differs from its one-thread product in the last
bits), and the count is put back after each product."""

from __future__ import annotations

import numpy as np
import pytest

from botopt.core.base import _blas
from botopt.core.signals._correlation import CorrelationRows, RollingCorrelation


def test_the_gates_rows_do_not_depend_on_the_thread_count():
    lib = _blas._openblas()
    if lib is None:
        pytest.skip("no OpenBLAS found in this numpy: one_blas_thread does nothing")
    get, put = lib
    before = int(get())
    rng = np.random.default_rng(3)
    n, w = 700, 288
    rets = rng.normal(size=(w + 1, n)) * 1e-3
    closes = 100 * np.exp(np.cumsum(rets, axis=0))
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 300_000
    syms = [f"S{i:03d}" for i in range(n)]
    rc = RollingCorrelation(window=w, min_periods=30, interval_ms=300_000)
    rc.update_runs(syms, np.arange(n) * (w + 1), np.arange(1, n + 1) * (w + 1),
                   np.tile(t0 + 300_000 * np.arange(w + 1), n), closes.T.ravel())
    x = np.where(np.isnan(rc.returns), 0.0, rc.returns)
    active = np.arange(0, 66, 2)
    try:
        held = []
        for threads in (2, 1):
            put(threads)
            # the product itself differs with the count: what the gates must not show
            held.append(np.ascontiguousarray(x[:, active].T) @ x)
            rows = CorrelationRows(rc, syms)
            rows.columns(active)
            held.append(rows.held())
            assert int(get()) == threads  # put back after the rows' product
        assert not np.array_equal(held[0], held[2])  # the test has teeth on this machine
        assert np.array_equal(held[1], held[3])
    finally:
        put(before)
