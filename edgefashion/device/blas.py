"""The BLAS threads of the numpy backend. OpenBLAS starts as many threads as there are cores and spins
them on every matrix product; for the numpy backend's many small products that is lost time, and on
a busy machine (a Pi that also runs a camera) one inference went from 0.7 ms to 24 ms. So the
backend sets them to its `--threads` (default 1) through threadpoolctl before it runs."""

from __future__ import annotations

_current: int | None = None  # what this process's BLAS is set to (None: not set by us)


def limit(threads: int) -> None:
    """Set the BLAS to `threads` threads; a no-op when it already is."""
    global _current
    if _current == threads:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the BLAS keeps its own count; OPENBLAS_NUM_THREADS=1 sets it from outside
        _current = threads
        return
    threadpool_limits(limits=threads, user_api="blas")  # stays in force: not used as a context manager
    _current = threads


def threads_now() -> list[dict]:
    """The BLAS libraries loaded and their thread counts (threadpoolctl's view), for bench and tests."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{"library": i.get("internal_api"), "threads": i.get("num_threads")} for i in threadpool_info()
            if i.get("user_api") == "blas"]
