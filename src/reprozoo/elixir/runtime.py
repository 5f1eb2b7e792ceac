"""The chunk runtime: hooks around operators, fetch/release/reduce, the rCache and its schedulers.

Elixir v3 Sec. 3.3: before an operator runs (forward, and again before its backward) the chunks holding its
parameters are *fetched* into the rCache; after it runs they are *released* (they stay cached until a block is
needed); when every parameter of a chunk has its gradient (written into the parameter's own slot of the block),
the chunk is *reduced*: divided by ``n``, reduce-scattered, and its block freed. When the rCache is full the
scheduler picks the victim among the chunks whose tensors are all HOLD:

* FIFO: the chunk gathered earliest;
* Prefetch (Belady's optimal replacement): the chunk whose next use in the profiled trace is farthest; it also
  gathers the next operator's chunks ahead of time (asynchronously) while free blocks remain.

The same :class:`ChunkRuntime` drives the training run and the search's simulation (``plane=None``: no data),
so the number of moves the search predicts is the number the run makes.

Ours: the "operator" is a module with parameters of its own (forward pre/post hooks, and autograd identity
functions on its inputs/outputs for the backward), where the authors hook every torch function touching a
parameter through ``__torch_function__``; an in-place op on a parameter is detected while profiling and refused
instead of being patched.

Complexity per operator: O(c log T) for c chunks touched and a trace of T steps (Belady's next use by bisection).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch
from torch import nn

from reprozoo.elixir.chunks import Chunk, TensorState

__all__ = ["ChunkRuntime", "install_hooks", "hooked_modules", "FIFO", "PREFETCH"]

FIFO, PREFETCH = "fifo", "prefetch"


class ChunkRuntime:
    """Chunk states, the rCache and the scheduler, with an optional data plane.

    Parameters
    ----------
    chunks : list of Chunk
        In first-use order; private chunks (tied parameters) live outside the rCache.
    param_slot : list of (chunk index, tensor index)
        Where each managed parameter lives.
    op_params : list of list of int
        Managed parameter indices of each operator (hooked module).
    steps : list of (op, is_backward)
        The profiled access trace; checked against the run (a model that runs differently raises).
    n_blocks : int
        rCache size in chunks.
    scheduler : {"fifo", "prefetch"}
        Victim choice (and ahead-of-time gathers for "prefetch").
    plane : object or None
        ``gather(chunk, async_)``, ``wait(chunk)``, ``release(chunk)``, ``write_grad(chunk, i, param_index)``,
        ``reduce(chunk)``; None simulates.
    """

    def __init__(self, chunks: list[Chunk], param_slot: list[tuple[int, int]], op_params: list[list[int]],
                 steps: list[tuple[int, bool]], n_blocks: int, scheduler: str = PREFETCH, plane=None) -> None:
        self.chunks, self.param_slot, self.op_params = chunks, param_slot, op_params
        self.steps, self.n_blocks, self.scheduler, self.plane = steps, n_blocks, scheduler, plane
        self.op_chunks = [sorted({param_slot[p][0] for p in ps}) for ps in op_params]
        self.uses: dict[int, list[int]] = {}
        for t, (op, _) in enumerate(steps):
            for c in self.op_chunks[op]:
                self.uses.setdefault(c, []).append(t)
        self.resident: dict[int, int] = {}   # chunk index -> tick when gathered (rCache chunks only)
        self.tick = 0
        self.step = 0
        self.moves = 0
        self.bytes_moved = 0
        self.max_resident = 0

    # -- iteration boundaries --------------------------------------------------------------
    def begin_forward(self) -> None:
        self.step = 0

    def end_iteration(self) -> None:
        """After the optimizer step: every block released, every chunk FREE (the shards changed)."""
        for c in self.chunks:
            if c.gathered and self.plane is not None:
                self.plane.release(c)
            c.reset()
        self.resident.clear()

    # -- hooks -----------------------------------------------------------------------------
    def pre_op(self, op: int, backward: bool) -> None:
        """Fetch the operator's chunks; its tensors go to COMPUTE."""
        t = self.step
        self.step += 1
        if t < len(self.steps) and self.steps[t] != (op, backward):
            raise RuntimeError(f"operator {op} ({'backward' if backward else 'forward'}) ran at step {t} where the "
                               f"profile has {self.steps[t]}: the model must run as the step_fn given to wrap()")
        self._access(t, self.op_chunks[op])
        for pidx in self.op_params[op]:
            ci, i = self.param_slot[pidx]
            if self.chunks[ci].states[i] is not TensorState.COMPUTE:
                self.chunks[ci].set_state(i, TensorState.COMPUTE)
        if self.scheduler == PREFETCH and t + 1 < len(self.steps):
            self._prefetch(t + 1)

    def post_op(self, op: int, backward: bool) -> None:
        """Release: COMPUTE -> HOLD after the forward, -> HOLD_AFTER_BWD after the backward."""
        new = TensorState.HOLD_AFTER_BWD if backward else TensorState.HOLD
        for pidx in self.op_params[op]:
            ci, i = self.param_slot[pidx]
            if self.chunks[ci].states[i] is TensorState.COMPUTE:
                self.chunks[ci].set_state(i, new)

    def grad_ready(self, pidx: int) -> None:
        """A parameter's gradient arrived: write it into its slot; reduce the chunk once all have."""
        ci, i = self.param_slot[pidx]
        c = self.chunks[ci]
        c.set_state(i, TensorState.READY_FOR_REDUCE)
        if self.plane is not None:
            self.plane.write_grad(c, i, pidx)
        if c.ready_for_reduce:
            if self.plane is not None:
                self.plane.reduce(c)
            self.resident.pop(ci, None)
            c.reset()

    # -- rCache ----------------------------------------------------------------------------
    def _gather(self, ci: int, async_: bool = False) -> None:
        c = self.chunks[ci]
        if not c.private:
            self.resident[ci] = self.tick
            self.tick += 1
            self.max_resident = max(self.max_resident, len(self.resident))
        if self.plane is not None:
            self.plane.gather(c, async_)
        c.gathered = True
        c.set_all(TensorState.HOLD)
        self.moves += 1
        self.bytes_moved += c.block_bytes

    def _evict(self, ci: int) -> None:
        c = self.chunks[ci]
        if self.plane is not None:
            self.plane.release(c)
        del self.resident[ci]
        c.set_all(TensorState.FREE)
        c.gathered = False

    def _victim(self, t: int, keep: list[int]) -> int:
        cands = [ci for ci in self.resident if ci not in keep and self.chunks[ci].evictable]
        if not cands:
            raise RuntimeError(f"the rCache of {self.n_blocks} blocks has no evictable chunk at step {t}: the "
                               "memory budget holds fewer blocks than the running operators need")
        if self.scheduler == FIFO:
            return min(cands, key=self.resident.__getitem__)

        def next_use(ci: int) -> float:  # Belady: farthest next use (never again = infinity)
            uses = self.uses.get(ci, [])
            k = bisect.bisect_right(uses, t)
            return uses[k] if k < len(uses) else float("inf")

        return max(cands, key=lambda ci: (next_use(ci), -self.resident[ci]))

    def _access(self, t: int, need: list[int]) -> None:
        for ci in need:
            c = self.chunks[ci]
            if c.gathered:
                if c.pending is not None and self.plane is not None:
                    self.plane.wait(c)
                continue
            if not c.private and len(self.resident) >= self.n_blocks:
                self._evict(self._victim(t, need))
            self._gather(ci)

    def _prefetch(self, t: int) -> None:
        """Gather step ``t``'s chunks early into free blocks only (never evicts, so moves are unchanged)."""
        for ci in self.op_chunks[self.steps[t][0]]:
            c = self.chunks[ci]
            if not c.gathered and not c.private and len(self.resident) < self.n_blocks:
                self._gather(ci, async_=True)


# -- hooks ---------------------------------------------------------------------------------
def hooked_modules(model: nn.Module, managed: set[int]) -> list[tuple[nn.Module, list[nn.Parameter]]]:
    """Modules owning managed parameters directly, with those parameters, in ``model.modules()`` order."""
    out = []
    for m in model.modules():
        ps = [p for p in m.parameters(recurse=False) if id(p) in managed]
        if ps:
            out.append((m, ps))
    return out


class _BackwardEvent(torch.autograd.Function):
    """Identity on tensors; its backward calls ``fn``. On a module's outputs it marks the module's pre-backward,
    on its inputs the post-backward."""

    @staticmethod
    def forward(ctx, fn, *xs):
        ctx.fn = fn
        return xs if len(xs) > 1 else xs[0]

    @staticmethod
    def backward(ctx, *grads):
        ctx.fn()
        return (None, *grads)


def _wrap_tensors(fn: Callable, fn_apply, values):
    """Pass the grad-requiring tensors of ``values`` (a tensor or a tuple) through ``fn_apply``."""
    single = isinstance(values, torch.Tensor)
    vals = (values,) if single else values
    if not isinstance(vals, tuple):
        return values
    idx = [k for k, v in enumerate(vals) if isinstance(v, torch.Tensor) and v.requires_grad]
    if not idx:
        return values
    out = fn_apply(fn, *[vals[k] for k in idx])
    out = out if isinstance(out, tuple) else (out,)
    vals = list(vals)
    for k, v in zip(idx, out, strict=True):
        vals[k] = v
    return vals[0] if single else tuple(vals)


def install_hooks(modules: list[tuple[nn.Module, list[nn.Parameter]]], handler, params: list[nn.Parameter]) -> list:
    """Register the operator hooks on ``modules`` and a gradient hook on each of ``params``.

    ``handler`` provides ``pre_op(op, backward)``, ``post_op(op, backward)`` and ``grad_ready(param_index)``.
    Returns the hook handles (``.remove()`` them to unhook).
    """
    handles = []
    for op, (m, _) in enumerate(modules):
        def pre(mod, args, _op=op):
            handler.pre_op(_op, False)
            if torch.is_grad_enabled():
                return _wrap_tensors(lambda: handler.post_op(_op, True), _BackwardEvent.apply, args)
            return None

        def post(mod, args, out, _op=op):
            handler.post_op(_op, False)
            if torch.is_grad_enabled():
                return _wrap_tensors(lambda: handler.pre_op(_op, True), _BackwardEvent.apply, out)
            return None

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    for k, p in enumerate(params):
        if p.requires_grad:
            handles.append(p.register_post_accumulate_grad_hook(lambda _p, _k=k: handler.grad_ready(_k)))
    return handles
