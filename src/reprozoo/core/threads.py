"""Thread counts of torch and the BLAS libraries, set in one place for a whole run.

Why: on a 2-core machine whose other core is busy, the libraries' default of one thread per core makes
small workloads 7 to 30 times slower (threads spin waiting for a core that is taken): a 2000 x 20 ``S.T @ S``
takes 65 ms with two BLAS threads and 0.04 ms with one. Each method declares the thread count its
workload wants (``ExperimentSpec.threads``, 1 for the small-tensor methods); ``--threads N`` overrides it;
:func:`reprozoo.run` applies it with :func:`thread_limits` and records it in result.json.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

from reprozoo.core.checks import check_int

__all__ = ["thread_limits", "resolve_threads"]

_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def resolve_threads(threads: int | None, default: int = 1) -> int:
    """``threads`` (or ``default`` when None), checked to be an int >= 1 and capped at the CPU count (with a
    warning when the cap lowers a count the caller asked for)."""
    n = check_int(default if threads is None else threads, "threads", low=1)
    cpus = os.cpu_count() or 1
    if threads is not None and n > cpus:
        warnings.warn(f"threads={n} is more than this machine's {cpus} CPUs; using {cpus}", stacklevel=2)
    return min(n, cpus)


@contextlib.contextmanager
def thread_limits(threads: int, *, torch: bool = True) -> Iterator[int]:
    """Inside, BLAS/OpenMP pools (threadpoolctl), torch intra-op threads (when ``torch``) and the
    ``OMP/MKL/OPENBLAS_NUM_THREADS`` variables inherited by child processes (simulation workers) use
    ``threads``; all are restored on exit."""
    from threadpoolctl import threadpool_limits

    saved_env = {k: os.environ.get(k) for k in _ENV_VARS}
    os.environ.update({k: str(threads) for k in _ENV_VARS})
    th = None
    if torch or "torch" in sys.modules:
        import torch as th

        saved_torch = th.get_num_threads()
        th.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        if th is not None:
            th.set_num_threads(saved_torch)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
