"""Shared helpers for `ipmix bench`: medians of repeated runs and one JSON object out."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time



@contextlib.contextmanager
def one_core():
    """Pin this process (and Numba's threads) to one core for per-core figures; the process's
    cores and thread count come back afterwards (benches also run inside tests and demos)."""
    try:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {sorted(cores)[0]})
    except (AttributeError, OSError):
        cores = None
    try:
        import numba

        threads = numba.get_num_threads()
        numba.set_num_threads(1)
    except Exception:
        threads = None
    try:
        yield
    finally:
        if cores is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cores)
        if threads is not None:
            import numba

            numba.set_num_threads(threads)


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
