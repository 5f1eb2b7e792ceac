"""Independent jobs of one experiment (seeds, settings, federated runs) side by side in processes.

Why processes: the experiments here train many small models whose kernels cannot keep two cores busy (a
2-layer GCN on Cora, a CIFAR-LT ResNet-8 at batch 64, a 4-user LSTM agent); running the jobs in ``workers``
single-threaded processes nearly divides the wall time by ``workers`` and, because every job seeds itself,
gives the same records as one process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from reprozoo.core.checks import check_int
from reprozoo.core.progress import set_quiet, track

__all__ = ["map_jobs"]

T = TypeVar("T")
R = TypeVar("R")


def map_jobs(fn: Callable[[T], R], items: Sequence[T], *, workers: int = 1, description: str = "jobs",
             threads: int = 1, first: Callable[[T], Any] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, in ``items``' order, run here or in ``workers`` processes.

    ``workers`` <= 1 (or a single item): in this process, in order, with its thread settings. Otherwise in
    ``min(workers, len(items))`` spawned processes (no fork of a process holding torch's thread pools), each
    with ``threads`` torch/BLAS threads and quiet (progress bars of several processes would overwrite each
    other: this process's bar counts the jobs, and it logs what they return); ``fn`` must be a module-level
    function and items picklable. ``first``: a sort key for the order the jobs are handed out (e.g. longest
    first, so that no worker is left with one long job at the end); the result keeps ``items``' order.

    A job that raises stops the map and re-raises its exception here. A worker that dies (killed, e.g. by the
    out-of-memory killer, or failing as it starts: spawn re-imports the calling script, so a script must keep
    its main code under ``if __name__ == "__main__":``) raises a RuntimeError that says so. Leaving the map
    early (an exception, Ctrl-C, the CLI's SIGTERM handler) terminates the workers at once; they ignore
    SIGINT, so Ctrl-C in a terminal stops the run with one message, not a traceback per worker.
    """
    workers = check_int(workers, "workers", low=1)
    threads = check_int(threads, "threads", low=1)
    items = list(items)
    if workers == 1 or len(items) <= 1:
        return [fn(item) for item in track(items, description)]
    order = sorted(range(len(items)), key=lambda i: first(items[i])) if first else range(len(items))
    ours = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(min(workers, len(items)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    out: dict[int, R] = {}
    try:
        futures = [pool.submit(_call, (fn, i, items[i])) for i in order]
        for future in track(as_completed(futures), description, total=len(items)):
            i, value = future.result()
            out[i] = value
    except BrokenProcessPool as exc:
        raise RuntimeError(
            f"a worker process of {description!r} ended without a result (killed, e.g. by the out-of-memory "
            "killer, or it failed as it started: a script that runs jobs in worker processes must keep its main "
            "code under `if __name__ == \"__main__\":`); with the jobs in one process (the method's n_jobs or "
            "num_cpus = 1) a job's own error is shown") from exc
    finally:
        for proc in set(multiprocessing.active_children()) - ours:  # the pool's workers: stop them now
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
    return [out[i] for i in range(len(items))]


def _init_worker(threads: int) -> None:
    import os
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the pool; workers must not print tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    set_quiet(True)
    try:
        import torch
    except ImportError:  # a job without torch
        return
    torch.set_num_threads(threads)


def _call(task: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    fn, i, item = task
    return i, fn(item)
