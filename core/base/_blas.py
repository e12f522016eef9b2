"""One BLAS thread for the correlation gate's products.

The gates read the active signals' correlation rows, computed as small matrix products (tens
of rows x the window x the symbols). Two reasons to run them on one OpenBLAS thread:

- the bits: OpenBLAS's product with several threads differs in the last bits from its
  product with one once it splits the work (from a few million multiplications on this
  machine: tests/test_blas.py), so the rows, and a replay's equality with the live runs, would
  depend on the thread count of the machine each ran on;
- the time: for products this small, waking, spinning and joining the threads costs more than
  the arithmetic, the more so on a machine other jobs share (a 100-symbol replay spent about a
  quarter of its time there on 2 shared cores).

The thread count is OpenBLAS's own process-wide setting (what ``threadpoolctl`` changes,
without the dependency): found through the library numpy has loaded, set for the ``with``
block and put back after it. Where there is no OpenBLAS to find (another BLAS, an unusual
build) it does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

# (get, set) of the loaded OpenBLAS, found once; None: not found (nothing to do)
_found: tuple[Any, Any] | None | bool = False
_lock = threading.Lock()
_NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
          ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
          ("openblas_get_num_threads", "openblas_set_num_threads"))


def _openblas() -> tuple[Any, Any] | None:
    global _found
    if _found is not False:
        return _found  # type: ignore[return-value]
    _found = None
    try:
        import ctypes

        import numpy  # noqa: F401  (loads its BLAS)

        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            libs = dict.fromkeys(line.split()[-1] for line in fh
                                 if "openblas" in line.lower() and ".so" in line)
        for path in libs:
            lib = ctypes.CDLL(path)
            for get, put in _NAMES:
                if hasattr(lib, get) and hasattr(lib, put):
                    getter, setter = getattr(lib, get), getattr(lib, put)
                    getter.restype = ctypes.c_int
                    setter.argtypes = [ctypes.c_int]
                    _found = (getter, setter)
                    return _found
    except (OSError, ImportError, AttributeError, IndexError):
        pass  # no /proc, no OpenBLAS: its default threads (the last bits may then differ)
    return None


def pinnable() -> bool:
    """Whether ``one_blas_thread`` can pin the count (numpy's BLAS is OpenBLAS)."""
    with _lock:
        return _openblas() is not None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with OpenBLAS on one thread, then restore its count."""
    with _lock:
        lib = _openblas()
    if lib is None:
        yield
        return
    get, put = lib
    before = int(get())
    put(1)
    try:
        yield
    finally:
        put(before)
