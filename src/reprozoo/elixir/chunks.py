"""Chunks: flat buffers of parameters in first-use order, their tensor states and the rCache block pool.

Elixir (v3, Sec. 3.1-3.2) packs parameters, in the order the model first uses them, into chunks of equal size
``S`` (elements, a multiple of the world size ``n``). Each rank permanently owns an ``S/n`` shard of every chunk
on its shard device; while a chunk is in use its full ``S`` elements live in one block of the rCache, a pool of
equal-size blocks on the fast device, and every parameter's ``.data`` is a view into that block. When the chunk
is not gathered the parameters point at a zero-storage placeholder.

Each parameter carries a :class:`TensorState`; :data:`LEGAL_TRANSITIONS` is the table of allowed moves and
:meth:`Chunk.set_state` raises on any other (a hook firing out of order is a bug, never silently ignored).

Examples
--------
>>> import torch
>>> ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
>>> layout = pack([p.numel() for p in ps], chunk_size=8)
>>> layout
[[0, 1]]
>>> chunk_waste([p.numel() for p in ps], layout, 8)
1
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TensorState", "LEGAL_TRANSITIONS", "IllegalTransition", "Chunk", "pack", "chunk_waste"]


class TensorState(enum.Enum):
    """State of one parameter inside its chunk (Elixir's ``TensorState``)."""

    FREE = "free"                          # not gathered: .data is a placeholder
    HOLD = "hold"                          # gathered in a block, not used by the running operator
    COMPUTE = "compute"                    # gathered and used by the running operator (forward or backward)
    HOLD_AFTER_BWD = "hold_after_bwd"      # its operator's backward ran; the gradient has not arrived yet
    READY_FOR_REDUCE = "ready_for_reduce"  # its gradient is written into its slot of the block


S = TensorState
#: from-state -> allowed to-states
LEGAL_TRANSITIONS: dict[TensorState, frozenset[TensorState]] = {
    S.FREE: frozenset({S.HOLD}),                                           # fetch
    S.HOLD: frozenset({S.FREE, S.COMPUTE}),                                # evict / pre-forward, pre-backward
    S.COMPUTE: frozenset({S.HOLD, S.HOLD_AFTER_BWD, S.READY_FOR_REDUCE}),  # post-fwd / post-bwd / gradient
    S.HOLD_AFTER_BWD: frozenset({S.COMPUTE, S.READY_FOR_REDUCE}),          # used again / gradient
    S.READY_FOR_REDUCE: frozenset({S.FREE}),                               # reduce-scattered, block released
}


class IllegalTransition(RuntimeError):
    """A tensor was asked to move between two states the state machine does not connect."""


def pack(numels: Sequence[int], chunk_size: int) -> list[list[int]]:
    """Next-fit packing of tensors (in the given order) into chunks of ``chunk_size`` elements.

    Returns the tensor indices of each chunk. A tensor larger than ``chunk_size`` raises ``ValueError``.
    Complexity O(len(numels)).
    """
    chunks: list[list[int]] = []
    used = chunk_size
    for i, k in enumerate(numels):
        if k > chunk_size:
            raise ValueError(f"chunk_size={chunk_size} is smaller than tensor {i} with {k} elements")
        if used + k > chunk_size:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += k
    return chunks


def chunk_waste(numels: Sequence[int], layout: list[list[int]], chunk_size: int) -> int:
    """Padding elements of a packing: ``len(layout) * chunk_size - sum(numels)``."""
    return len(layout) * chunk_size - sum(numels[i] for c in layout for i in c)


class Chunk:
    """One chunk: parameters laid out in a flat buffer of ``size`` elements, ``size / world`` per rank.

    Parameters
    ----------
    index : int
        Position in first-use order.
    numels : list of int
        Elements of its tensors, in layout order (:meth:`materialize` copies the parameters in).
    size : int
        Elements including padding (a multiple of ``world``).
    rank, world : int
        This rank and the group size.
    dtype : torch.dtype
        Dtype of the gathered block and of the parameter shard (fp32 master kept apart when lower).
    grad_mask : list of bool
        Which tensors receive gradients (the chunk is reduced when all of those have).
    private : bool
        A tied/shared parameter's chunk: gathered once per iteration, never evicted (ZeRO-2-like).
    """

    def __init__(self, index: int, numels: list[int], size: int, rank: int, world: int,
                 dtype: torch.dtype, grad_mask: list[bool] | None = None, private: bool = False) -> None:
        if size % world:
            raise ValueError(f"chunk size {size} should be a multiple of the world size {world}")
        self.index, self.size, self.private = index, size, private
        self.rank, self.world, self.dtype = rank, world, dtype
        self.shard_size = size // world
        self.offsets: list[tuple[int, int]] = []
        pos = 0
        for k in numels:
            self.offsets.append((pos, pos + k))
            pos += k
        if pos > size:
            raise ValueError(f"chunk {index}: {pos} parameter elements do not fit in size {size}")
        self.used = pos
        self.grad_mask = list(grad_mask) if grad_mask is not None else [True] * len(numels)
        self.states = [TensorState.FREE] * len(numels)
        self.n_ready = 0
        self.n_grad = sum(self.grad_mask)
        self.gathered = False                 # its block holds the gathered chunk
        self.params: list[nn.Parameter] = []  # set by materialize (empty in a simulation)
        self.pending = None                   # an async gather in flight (prefetch)

    def materialize(self, params: list[nn.Parameter], fast_device: torch.device, shard_alloc, master_alloc) -> None:
        """Copy the parameters' current values into this rank's shard (fp32 master + low-precision shard)
        and point every parameter's ``.data`` into the chunk's (zero-storage) block on ``fast_device``."""
        self.params = list(params)
        self.shapes = [p.shape for p in params]
        full = torch.zeros(self.size, dtype=torch.float32)
        for p, (b, e) in zip(params, self.offsets, strict=True):
            full[b:e] = p.detach().reshape(-1).float()
        lo = self.rank * self.shard_size
        own = full[lo:lo + self.shard_size]
        self.master = master_alloc(self.shard_size, torch.float32, tag="master")
        self.master.copy_(own)
        self.master.grad = master_alloc(self.shard_size, torch.float32, tag="grad")
        if self.dtype == torch.float32:
            self.shard = self.master          # fp32: the master is the parameter shard
        else:
            self.shard = shard_alloc(self.shard_size, self.dtype, tag="shard")
            self.shard.copy_(own)
        self.block = torch.empty(self.size, dtype=self.dtype, device=fast_device)
        for p, (b, e), shape in zip(params, self.offsets, self.shapes, strict=True):
            p.data = self.block[b:e].view(shape)
        self.block.untyped_storage().resize_(0)  # views first: slicing checks the storage bounds

    # -- state machine ----------------------------------------------------------------------
    def set_state(self, i: int, new: TensorState) -> None:
        old = self.states[i]
        if new not in LEGAL_TRANSITIONS[old]:
            raise IllegalTransition(f"chunk {self.index} tensor {i}: {old.name} -> {new.name} is not a legal "
                                    f"transition (allowed: {sorted(s.name for s in LEGAL_TRANSITIONS[old])})")
        self.states[i] = new
        if new is TensorState.READY_FOR_REDUCE:
            self.n_ready += 1

    def set_all(self, new: TensorState) -> None:
        for i in range(len(self.states)):
            self.set_state(i, new)

    def reset(self) -> None:
        """End of an iteration (after the optimizer step): every tensor FREE, nothing gathered."""
        self.states = [TensorState.FREE] * len(self.states)
        self.n_ready = 0
        self.gathered = False

    @property
    def evictable(self) -> bool:
        """Only a gathered chunk whose tensors are all HOLD (no gradient written) may leave the rCache."""
        return self.gathered and not self.private and all(s is TensorState.HOLD for s in self.states)

    @property
    def ready_for_reduce(self) -> bool:
        return self.n_grad > 0 and self.n_ready == self.n_grad

    # -- views ------------------------------------------------------------------------------
    @property
    def block_bytes(self) -> int:
        return self.size * torch.empty((), dtype=self.dtype).element_size()

    def slot(self, i: int) -> torch.Tensor:
        b, e = self.offsets[i]
        return self.block[b:e]

    def full_master(self, group) -> torch.Tensor:
        """The gathered fp32 master chunk (all ranks' shards) on the CPU, a collective when ``world > 1``
        (gathered on the block's device, where NCCL can reach it)."""
        if self.world == 1:
            return self.master.detach().to("cpu", copy=True)
        import torch.distributed as dist

        out = torch.empty(self.size, dtype=torch.float32, device=self.block.device)
        dist.all_gather_single(out, self.master.detach().to(self.block.device).contiguous(), group=group)
        return out.cpu()

    def __repr__(self) -> str:
        return (f"Chunk({self.index}, tensors={len(self.states)}, size={self.size}, used={self.used}, "
                f"dtype={self.dtype}, private={self.private})")
