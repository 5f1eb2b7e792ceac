"""Process groups without ``torchrun``: a pool of spawned workers, each a rank of a gloo group.

``reprozoo run elixir`` and the tests run their multi-rank work here: ``WorkerPool(2)`` spawns two processes
(``torch.multiprocessing`` spawn context), each joins a gloo group on a free loopback port once, then runs the
functions it is sent, ``fn(rank, world, *args)``, and sends back the result. Under ``torchrun`` the same
functions run directly (``fn(dist.get_rank(), dist.get_world_size(), *args)``).
"""

from __future__ import annotations

import os
import socket
import traceback

__all__ = ["WorkerPool", "free_port"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, inq, outq, threads: int, backend: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.setdefault("REPROZOO_QUIET", "1")
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        while True:
            job = inq.get()
            if job is None:
                break
            fn, args = job
            try:
                outq.put((rank, True, fn(rank, world, *args)))
            except BaseException:  # sent back to the parent, which raises it
                outq.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class WorkerPool:
    """``world_size`` spawned processes in one gloo group; :meth:`run` calls a function on every rank.

    Use as a context manager; ``fn`` must be importable (a module-level function).
    """

    def __init__(self, world_size: int, threads: int = 1, timeout: float = 600.0, backend: str = "gloo") -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.world_size, self.timeout = world_size, timeout
        port = free_port()
        self.inqs = [ctx.Queue() for _ in range(world_size)]
        self.outq = ctx.Queue()
        self.procs = [ctx.Process(target=_worker, args=(r, world_size, port, self.inqs[r], self.outq, threads, backend),
                                  daemon=True) for r in range(world_size)]
        for p in self.procs:
            p.start()

    def run(self, fn, *args) -> list:
        """``[fn(rank, world, *args) for each rank]``; a failure on any rank raises ``RuntimeError`` with its
        traceback."""
        import queue

        for q in self.inqs:
            q.put((fn, args))
        results: list = [None] * self.world_size
        errors = []
        for _ in range(self.world_size):
            try:
                rank, ok, value = self.outq.get(timeout=self.timeout)
            except queue.Empty as exc:
                self.close()
                raise RuntimeError(f"a worker did not answer within {self.timeout} s") from exc
            if ok:
                results[rank] = value
            else:
                errors.append(f"rank {rank}:\n{value}")
        if errors:
            raise RuntimeError("worker failed:\n" + "\n".join(errors))
        return results

    def close(self) -> None:
        for q, p in zip(self.inqs, self.procs, strict=True):
            if p.is_alive():
                q.put(None)
        for p in self.procs:
            p.join(timeout=3)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
