"""``ElixirModule``: a model whose parameters live in chunks, gathered around each operator.

Elixir v3 Sec. 3: every rank keeps a shard of each chunk (on the fast device or offloaded to CPU memory);
the runtime (:mod:`reprozoo.elixir.runtime`) gathers a chunk into the rCache before an operator needs it and
reduce-scatters the gradients written into the chunk's block. ``state_dict`` gathers the fp32 masters under the
plain PyTorch keys, so a checkpoint loads into the unwrapped model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.distributed as dist
from torch import nn

from reprozoo.elixir.chunks import Chunk
from reprozoo.elixir.memory import AccountingDevice, FastDevice, HostDevice
from reprozoo.elixir.plans import ParallelPattern
from reprozoo.elixir.runtime import FIFO, PREFETCH, ChunkRuntime, hooked_modules, install_hooks
from reprozoo.elixir.search import Profile, SearchResult, build_chunks

__all__ = ["ElixirModule"]


class _Plane:
    """The data operations of the runtime: fetch (all-gather), release, gradient write, reduce-scatter."""

    def __init__(self, group, world: int, fast: FastDevice) -> None:
        self.group, self.world, self.fast = group, world, fast

    def gather(self, c: Chunk, async_: bool) -> None:
        self.fast.grow(c.block, "private" if c.private else "rcache")
        src = c.shard if c.shard.device == c.block.device else c.shard.to(c.block.device, non_blocking=True)
        if self.world == 1:
            c.block.copy_(src)
        else:
            work = dist.all_gather_single(c.block, src, group=self.group, async_op=async_)
            c.pending = work if async_ else None

    def wait(self, c: Chunk) -> None:
        c.pending.wait()
        c.pending = None

    def release(self, c: Chunk) -> None:
        if c.pending is not None:
            self.wait(c)
        self.fast.shrink(c.block, "private" if c.private else "rcache")

    def write_grad(self, c: Chunk, i: int, pidx: int) -> None:
        """Gradients reuse parameter memory: the gradient overwrites the parameter's slot of the block."""
        p = c.params[i]
        c.slot(i).copy_(p.grad.reshape(-1))
        p.grad = None

    def reduce(self, c: Chunk) -> None:
        """Divide by n, reduce-scatter into this rank's gradient shard (fp32, accumulated), free the block."""
        for i, needs in enumerate(c.grad_mask):
            if not needs:
                c.slot(i).zero_()
        if self.world == 1:
            out = c.block
        else:
            c.block.div_(self.world)
            out = torch.empty(c.shard_size, dtype=c.dtype, device=c.block.device)
            dist.reduce_scatter_single(out, c.block, group=self.group)
        c.master.grad.add_(out.to(c.master.device))
        self.release(c)


class ElixirModule(nn.Module):
    """Wraps ``module`` so that its parameters live in the chunks of ``search_result``.

    Parameters
    ----------
    module : nn.Module
        The model (after any parallel pattern was applied). Its managed parameters' ``.data`` become views of
        zero-storage chunk blocks.
    profile : Profile
        From :func:`~reprozoo.elixir.search.profile_model` on this module.
    search_result : SearchResult
        The chunk plan, placed (:func:`~reprozoo.elixir.search.place`).
    group : ProcessGroup or None
        Data-parallel group (None = WORLD).
    prefetch : bool
        Prefetch scheduler (Belady order, early gathers) if True, FIFO otherwise.
    fast_device : FastDevice or None
        Where the rCache lives; None = an unbudgeted :class:`AccountingDevice` on CPU.
    managed : list of (pattern, params)
        Parameters kept out of chunks by parallel patterns, with their pattern.

    Attributes
    ----------
    runtime : ChunkRuntime
        ``runtime.moves`` / ``runtime.bytes_moved`` count gathers since the last :meth:`reset_stats`.
    chunks : list of Chunk
    """

    def __init__(self, module: nn.Module, profile: Profile, search_result: SearchResult, group=None,
                 prefetch: bool = True, fast_device: FastDevice | None = None,
                 managed: list[tuple[str, nn.Module, ParallelPattern, list[nn.Parameter]]] | None = None) -> None:
        super().__init__()
        self.module = module
        self.group = group
        self.world = dist.get_world_size(group) if dist.is_initialized() else 1
        self.rank = dist.get_rank(group) if dist.is_initialized() else 0
        if search_result.world_size != self.world:
            raise ValueError(f"search_result was made for world size {search_result.world_size}, the group has "
                             f"{self.world}")
        self.fast = fast_device if fast_device is not None else AccountingDevice(None)
        self.host = HostDevice()
        self.profile, self.plan = profile, search_result
        self.managed = managed or []
        self.dtype = search_result.dtype
        chunks, slot = build_chunks(profile, search_result, self.rank)
        self.chunks = chunks
        on_fast = search_result.on_fast or [False] * len(chunks)
        for c, fast in zip(chunks, on_fast, strict=True):
            alloc = self.fast.alloc if fast else self.host.alloc
            c.on_fast = fast
            params = [None] * len(c.offsets)
            for k, (ci, i) in enumerate(slot):
                if ci == c.index:
                    params[i] = profile.params[k]
            c.materialize(params, self.fast.torch_device, alloc, alloc)
        # memory outside chunks on the fast device: predicted activations (x1.25, Sec. 4.2), buffers, and the
        # parameters of the parallel patterns (with gradients)
        self.fast.reserve(int(1.25 * profile.activation_bytes), "activations")
        self.fast.reserve(profile.buffer_bytes, "buffers")
        self.managed_params = [p for *_, ps in self.managed for p in ps]
        self.fast.reserve(2 * sum(p.numel() * p.element_size() for p in self.managed_params), "patterns")
        for p in self.managed_params:
            p.data = p.data.to(self.fast.torch_device)
        self.runtime = ChunkRuntime(chunks, slot, profile.op_params, profile.steps, search_result.n_blocks,
                                    PREFETCH if prefetch else FIFO, plane=_Plane(group, self.world, self.fast))
        managed_ids = {id(p) for p in profile.params}
        self._handles = install_hooks(hooked_modules(module, managed_ids), self.runtime, profile.params)

    def forward(self, *args, **kwargs):
        self.runtime.begin_forward()
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["module"], name)

    # -- statistics ----------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.runtime.moves = self.runtime.bytes_moved = 0

    def stats(self) -> dict[str, int]:
        """``moves``, ``bytes_moved`` (since :meth:`reset_stats`), ``peak_bytes`` and ``budget_bytes`` of the
        fast device, ``chunk_size`` (elements), ``n_chunks``, ``n_blocks``."""
        return {"moves": self.runtime.moves, "bytes_moved": self.runtime.bytes_moved,
                "peak_bytes": self.fast.peak_bytes, "budget_bytes": self.fast.budget_bytes or 0,
                "chunk_size": self.plan.chunk_size, "n_chunks": len(self.plan.layout),
                "n_blocks": self.plan.n_blocks}

    # -- checkpoints ---------------------------------------------------------------------
    def _keys(self) -> tuple[dict[int, list[str]], dict[str, torch.Tensor]]:
        names: dict[int, list[str]] = {}
        for name, p in self.module.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        buffers = dict(self.module.named_buffers())
        return names, buffers

    @torch.no_grad()
    def __deepcopy__(self, memo):
        # the parameters are views of chunk storage that the runtime swaps in and out: a copy would share it
        raise TypeError("a wrapped ElixirModule cannot be copied (its parameters are views of shared chunk "
                        "storage); copy model.state_dict() instead, or deep-copy the model before wrap()")

    def __reduce_ex__(self, protocol):
        raise TypeError("a wrapped ElixirModule cannot be pickled; save model.state_dict() (and "
                        "optimizer.state_dict() on each rank) instead")

    def state_dict(self, *args, only_rank_0: bool = False, **kwargs) -> OrderedDict:
        """Plain PyTorch keys -> fp32 CPU tensors (gathered masters; a collective: every rank must call it).

        With ``only_rank_0=True`` ranks other than 0 return an empty dict.
        """
        names, buffers = self._keys()
        flat: dict[str, torch.Tensor] = {}
        for c in self.chunks:
            full = c.full_master(self.group)
            for p, (b, e), shape in zip(c.params, c.offsets, c.shapes, strict=True):
                for name in names[id(p)]:
                    flat[name] = full[b:e].view(shape).clone()
        for name, m, pattern, _ in self.managed:
            flat.update(pattern.state_entries(f"{name}." if name else "", m, self.group))
        for name, b in buffers.items():
            flat[name] = b.detach().to("cpu", copy=True)
        if only_rank_0 and self.rank != 0:
            return OrderedDict()
        order = [k for k in self._plain_keys() if k in flat] + sorted(k for k in flat if k not in self._plain_keys())
        return OrderedDict((k, flat[k]) for k in order)

    def _plain_keys(self) -> list[str]:
        return list(self.module.state_dict(keep_vars=True).keys())

    @torch.no_grad()
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load plain PyTorch keys into the masters and shards (every rank reads its own shard)."""
        names, buffers = self._keys()
        for c in self.chunks:
            full = torch.zeros(c.size, dtype=torch.float32)
            for p, (b, e) in zip(c.params, c.offsets, strict=True):
                key = names[id(p)][0]
                if key not in state_dict:
                    raise KeyError(f"state_dict has no {key!r}")
                full[b:e] = state_dict[key].reshape(-1).float()
            lo = c.rank * c.shard_size
            c.master.copy_(full[lo:lo + c.shard_size])
            if c.shard is not c.master:
                c.shard.copy_(c.master)
        for name, m, pattern, _ in self.managed:
            pattern.load_entries(f"{name}." if name else "", m, state_dict, self.group)
        for name, b in buffers.items():
            if name in state_dict:
                b.copy_(state_dict[name])
        self.runtime.end_iteration()
        return None
