"""Profiling on the meta device and the chunk-size search (Elixir v3 Sec. 4).

1. :func:`profile_model` copies the model to meta tensors, runs the user's ``step_fn(model, batch)`` and its
   backward, and records every operator's parameters (the access trace, hence the first-use order), the order
   in which gradients arrive, and the bytes autograd saves for the backward (the predicted activation peak)
   without allocating anything.
2. :func:`minimum_waste_search` packs the parameters (next fit, first-use order) with the candidate chunk size
   that wastes the fewest padding elements.
3. :func:`optimal_search` simulates, for every candidate size ``S``, Belady's optimal replacement over the
   profiled trace with ``n_blocks = floor(budget / S)`` blocks and keeps the size minimising ``moves x S``
   (the bytes moved). A size whose blocks do not fit (``n_blocks <= 0``) or cannot hold one operator's chunks
   is skipped and the search moves on (the reference implementation loops forever on ``n_blocks <= 0``).
4. :func:`place` decides caching versus offloading with the cost models of :class:`~reprozoo.elixir.memory.
   CostModel` and returns the number of rCache blocks and which chunks keep their shard and optimizer state on
   the fast device.

Candidate sizes (Sec. 4.2): from a minimum (32 MiB, doubled while below the largest parameter) to three times
that minimum, in ``n_candidates`` steps, each a multiple of the world size. Complexity: O(K (P + T log T)) for K
candidates, P parameters and a trace of T operator steps.

Examples
--------
>>> import torch
>>> from reprozoo.elixir.model import GPT, gpt_step, random_tokens
>>> model = GPT(vocab_size=32, seq_len=8, d_model=64, n_head=2, n_layer=3, d_hidden=128)
>>> prof = profile_model(model, gpt_step, random_tokens(1, 9, 32))
>>> res = optimal_search(prof, world_size=1, budget_bytes=prof.param_bytes // 2, min_chunk_bytes=4096)
>>> res.n_blocks < len(res.layout), res.moves == simulate(prof, res).moves
(True, True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from reprozoo.elixir.chunks import Chunk, chunk_waste, pack
from reprozoo.elixir.memory import CostModel
from reprozoo.elixir.runtime import FIFO, PREFETCH, ChunkRuntime, hooked_modules, install_hooks

__all__ = ["Profile", "SearchResult", "profile_model", "minimum_waste_search", "optimal_search", "simulate",
           "build_chunks", "place", "candidate_sizes", "MIN_CHUNK_BYTES"]

#: the paper's minimum chunk size (Sec. 4.2)
MIN_CHUNK_BYTES = 32 * 2**20


@dataclass
class Profile:
    """What :func:`profile_model` recorded.

    ``params``: the managed parameters (real ones) in ``model.parameters()`` order; ``numels``;
    ``requires_grad``; ``op_params``: managed parameter indices per operator; ``steps``: the access trace
    ``(op, is_backward)``; ``grad_order``: parameter indices in the order their gradients arrived;
    ``first_use``: parameter indices in first-use order (unused ones last); ``private``: parameters used by
    several operators (tied); ``activation_bytes``: bytes saved for the backward; ``buffer_bytes``;
    ``events``: the hook events in order, ``("pre"|"post", op, is_backward)`` and ``("grad", param, False)``.
    """

    params: list[nn.Parameter]
    numels: list[int]
    requires_grad: list[bool]
    op_params: list[list[int]]
    steps: list[tuple[int, bool]]
    grad_order: list[int]
    first_use: list[int]
    private: list[int]
    activation_bytes: int
    buffer_bytes: int
    events: list[tuple[str, int, bool]] = field(default_factory=list)

    @property
    def param_bytes(self) -> int:
        """fp32 bytes of the managed parameters."""
        return 4 * sum(self.numels)


@dataclass
class SearchResult:
    """A chunk plan: ``chunk_size`` (elements), ``layout`` (parameter indices per rCache chunk, first-use order),
    ``private`` (parameter indices per private chunk), ``n_blocks``, ``moves`` predicted per iteration (gathers,
    private chunks included), ``dtype``, ``world_size``, ``search`` and, after :func:`place`, ``on_fast``
    (per chunk: shard and optimizer state on the fast device) and ``placement`` (``"cache"`` or ``"offload"``)."""

    chunk_size: int
    layout: list[list[int]]
    private: list[list[int]]
    n_blocks: int
    moves: int
    dtype: torch.dtype
    world_size: int
    search: str
    candidates: list[tuple[int, int | None]] = field(default_factory=list)  # (size, moves or None=infeasible)
    on_fast: list[bool] = field(default_factory=list)
    placement: str = "offload"
    bytes_moved: int = 0  # predicted per iteration (block bytes of every gather, private chunks included)


# -- profiling ------------------------------------------------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[int, bool]] = []
        self.grads: list[int] = []
        self.events: list[tuple[str, int, bool]] = []

    def pre_op(self, op: int, backward: bool) -> None:
        self.steps.append((op, backward))
        self.events.append(("pre", op, backward))

    def post_op(self, op: int, backward: bool) -> None:
        self.events.append(("post", op, backward))

    def grad_ready(self, k: int) -> None:
        self.grads.append(k)
        self.events.append(("grad", k, False))


def profile_model(model: nn.Module, step_fn: Callable, example_input, exclude: set[int] | None = None,
                  extra_memo: dict | None = None) -> Profile:
    """Run ``step_fn(meta_copy, example_input)`` and its backward on a meta copy of ``model``; nothing allocated.

    ``exclude``: ids of parameters managed elsewhere (by a parallel pattern). Raises ``ValueError`` when the step
    changes a parameter in place (hooks cannot follow an in-place op on a parameter) or returns no scalar.
    """
    exclude = exclude or set()
    real = [p for p in model.parameters() if id(p) not in exclude]
    memo: dict[int, object] = dict(extra_memo or {})
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    meta_model = copy.deepcopy(model, memo)
    meta_params = [memo[id(p)] for p in real]
    managed = {id(p) for p in meta_params}
    modules = hooked_modules(meta_model, managed)
    index = {id(p): k for k, p in enumerate(meta_params)}
    op_params = [[index[id(p)] for p in ps] for _, ps in modules]
    rec = _Recorder()
    handles = install_hooks(modules, rec, meta_params)
    versions = [p._version for p in meta_params]
    saved = [0]
    meta_ids = {id(p) for p in meta_model.parameters()}

    def pack_hook(t):
        base = t._base if t._base is not None else t
        if id(base) not in meta_ids and id(t) not in meta_ids:
            saved[0] += t.numel() * t.element_size()
        return t

    def to_meta(x):
        if isinstance(x, torch.Tensor):
            return x.to("meta")
        if isinstance(x, (tuple, list)):
            return type(x)(to_meta(v) for v in x)
        if isinstance(x, dict):
            return {k: to_meta(v) for k, v in x.items()}
        return x

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
            loss = step_fn(meta_model, to_meta(example_input))
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"step_fn should return a scalar loss tensor, got {type(loss).__name__}"
                             + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        changed = [k for k, p in enumerate(meta_params) if p._version != versions[k]]
        if changed:
            names = {id(p): n for n, p in meta_model.named_parameters()}
            raise ValueError(f"step_fn changes parameter {names.get(id(meta_params[changed[0]]), changed[0])!r} "
                             "in place; Elixir's hooks cannot follow an in-place op on a hooked parameter "
                             "(use the out-of-place form)")
        if loss.requires_grad:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    first: list[int] = []
    seen: set[int] = set()
    for op, _ in rec.steps:
        for k in op_params[op]:
            if k not in seen:
                seen.add(k)
                first.append(k)
    first += [k for k in range(len(real)) if k not in seen]
    users: dict[int, set[int]] = {}
    for op, ps in enumerate(op_params):
        for k in ps:
            users.setdefault(k, set()).add(op)
    private = [k for k in first if len(users.get(k, ())) > 1]
    return Profile(params=real, numels=[p.numel() for p in real], requires_grad=[p.requires_grad for p in real],
                   op_params=op_params, steps=rec.steps, grad_order=rec.grads, first_use=first, private=private,
                   activation_bytes=saved[0], buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
                   events=rec.events)


# -- chunks from a plan ---------------------------------------------------------------------
def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def build_chunks(prof: Profile, res: SearchResult, rank: int = 0) -> tuple[list[Chunk], list[tuple[int, int]]]:
    """Chunk objects (layout and states only) of plan ``res`` and each parameter's ``(chunk, slot)``."""
    chunks: list[Chunk] = []
    slot: list[tuple[int, int]] = [(-1, -1)] * len(prof.params)
    for ps, private in [(ps, False) for ps in res.layout] + [(ps, True) for ps in res.private]:
        size = res.chunk_size if not private else _round_up(sum(prof.numels[k] for k in ps), res.world_size)
        c = Chunk(len(chunks), [prof.numels[k] for k in ps], size, rank, res.world_size, res.dtype,
                  grad_mask=[prof.requires_grad[k] for k in ps], private=private)
        for i, k in enumerate(ps):
            slot[k] = (c.index, i)
        chunks.append(c)
    return chunks, slot


def simulate(prof: Profile, res: SearchResult, scheduler: str = PREFETCH, n_blocks: int | None = None,
             iterations: int = 1) -> ChunkRuntime:
    """Replay the profiled trace (operators and gradient arrivals) through a data-less :class:`ChunkRuntime`.

    Returns the runtime; ``.moves`` and ``.bytes_moved`` are per ``iterations`` iterations. Raises
    ``RuntimeError`` when ``n_blocks`` cannot hold the chunks one operator needs.
    """
    chunks, slot = build_chunks(prof, res)
    rt = ChunkRuntime(chunks, slot, prof.op_params, prof.steps, res.n_blocks if n_blocks is None else n_blocks,
                      scheduler)
    for _ in range(iterations):
        rt.begin_forward()
        for kind, a, b in prof.events:
            if kind == "pre":
                rt.pre_op(a, b)
            elif kind == "post":
                rt.post_op(a, b)
            else:
                rt.grad_ready(a)
        rt.end_iteration()
    return rt


# -- the searches ---------------------------------------------------------------------------
def candidate_sizes(prof: Profile, world_size: int, dtype: torch.dtype, min_chunk_bytes: int = MIN_CHUNK_BYTES,
                    n_candidates: int = 16) -> list[int]:
    """Chunk sizes (elements) from the minimum to 3x the minimum, multiples of ``world_size`` (Sec. 4.2)."""
    item = torch.empty((), dtype=dtype).element_size()
    lo = _round_up(max(1, min_chunk_bytes // item), world_size)
    biggest = max((prof.numels[k] for k in range(len(prof.numels)) if k not in set(prof.private)), default=1)
    while lo < biggest:
        lo *= 2
    lo = _round_up(lo, world_size)
    step = max(world_size, _round_up(max(1, 2 * lo // n_candidates), world_size))
    return list(range(lo, 3 * lo + 1, step))


def _layout(prof: Profile, size: int) -> list[list[int]]:
    order = [k for k in prof.first_use if k not in set(prof.private)]
    return [[order[i] for i in c] for c in pack([prof.numels[k] for k in order], size)]


def _private_layout(prof: Profile) -> list[list[int]]:
    return [[k] for k in prof.private]


def chunk_budget(prof: Profile, budget_bytes: int | None, world_size: int, dtype: torch.dtype,
                 reserved_bytes: int = 0) -> float:
    """Bytes left for rCache blocks: budget - 1.25 x activations - buffers - private chunks - ``reserved_bytes``
    (memory of the parallel patterns' own parameters) (Sec. 4.2)."""
    if budget_bytes is None:
        return math.inf
    item = torch.empty((), dtype=dtype).element_size()
    private = sum(_round_up(prof.numels[k], world_size) for k in prof.private) * item
    return budget_bytes - int(1.25 * prof.activation_bytes) - prof.buffer_bytes - private - reserved_bytes


def _try(prof, size, n_blocks, dtype, world, search) -> SearchResult | None:
    layout = _layout(prof, size)
    res = SearchResult(size, layout, _private_layout(prof), min(n_blocks, len(layout)), 0, dtype, world, search)
    if res.n_blocks <= 0:
        return None
    try:
        sim = simulate(prof, res)
    except RuntimeError:
        return None
    res.moves, res.bytes_moved = sim.moves, sim.bytes_moved
    return res


def optimal_search(prof: Profile, world_size: int, budget_bytes: int | None, dtype: torch.dtype = torch.float32,
                   min_chunk_bytes: int = MIN_CHUNK_BYTES, n_candidates: int = 16,
                   reserved_bytes: int = 0) -> SearchResult:
    """The chunk size minimising simulated (Belady) bytes moved under the budget; see the module docstring.

    Raises ``ValueError`` naming ``memory_budget`` when no candidate size fits.
    """
    item = torch.empty((), dtype=dtype).element_size()
    avail = chunk_budget(prof, budget_bytes, world_size, dtype, reserved_bytes)
    best, tried = None, []
    for size in candidate_sizes(prof, world_size, dtype, min_chunk_bytes, n_candidates):
        n_blocks = int(avail // (size * item)) if math.isfinite(avail) else 1 << 30
        res = _try(prof, size, n_blocks, dtype, world_size, "optimal") if n_blocks > 0 else None
        tried.append((size, None if res is None else res.moves))
        if res is None:
            continue  # infeasible size: skip it and advance (never loop on it)
        if best is None or res.moves * size < best.moves * best.chunk_size:
            best = res
    return _finish(best, tried, budget_bytes, avail)


def minimum_waste_search(prof: Profile, world_size: int, budget_bytes: int | None,
                         dtype: torch.dtype = torch.float32, min_chunk_bytes: int = MIN_CHUNK_BYTES,
                         n_candidates: int = 16, reserved_bytes: int = 0) -> SearchResult:
    """The feasible candidate chunk size with the least padding (ties: the smaller size)."""
    item = torch.empty((), dtype=dtype).element_size()
    avail = chunk_budget(prof, budget_bytes, world_size, dtype, reserved_bytes)
    sizes = candidate_sizes(prof, world_size, dtype, min_chunk_bytes, n_candidates)
    order = sorted(sizes, key=lambda s: (chunk_waste(prof.numels, _layout(prof, s), s), s))
    best, tried = None, []
    for size in order:
        n_blocks = int(avail // (size * item)) if math.isfinite(avail) else 1 << 30
        res = _try(prof, size, n_blocks, dtype, world_size, "minimum_waste") if n_blocks > 0 else None
        tried.append((size, None if res is None else res.moves))
        if res is not None:
            best = res
            break
    return _finish(best, tried, budget_bytes, avail)


def _finish(best, tried, budget_bytes, avail) -> SearchResult:
    if best is None:
        smallest = min(s for s, _ in tried) if tried else 0
        need = int((budget_bytes or 0) - avail)
        raise ValueError(
            f"memory_budget={budget_bytes} bytes is too small: after {need} bytes of predicted activations, buffers "
            f"and private chunks, no candidate chunk size (smallest {smallest} elements, >= the largest parameter) "
            "leaves room for the blocks one operator needs; raise memory_budget")
    best.candidates = tried
    return best


# -- placement ------------------------------------------------------------------------------
def state_bytes_per_element(dtype: torch.dtype, optimizer_states: int) -> int:
    """Bytes per shard element kept beside the block: low-precision shard + fp32 master + fp32 grad + k fp32
    optimizer states (the paper's factor 1 + (1 + k) m, with the gradient kept in fp32)."""
    item = torch.empty((), dtype=dtype).element_size()
    return (item if dtype != torch.float32 else 0) + 4 * (2 + optimizer_states)


def place(prof: Profile, res: SearchResult, budget_bytes: int | None, optimizer_states: int,
          costs: CostModel | None = None, n_gpus: int = 1, min_blocks: int = 4,
          reserved_bytes: int = 0) -> SearchResult:
    """Cache everything if it fits; otherwise choose, with the cost models, between (a) every spare byte as rCache
    blocks with all shards offloaded and (b) ``max(min_blocks, chunks of one operator + 1)`` blocks, shards and
    optimizer state kept on the fast device greedily (first-use order) and the leftover turned into blocks
    (Sec. 4.3). Sets ``res.n_blocks``, ``res.on_fast``, ``res.placement`` and re-simulates ``res.moves``."""
    costs = costs or CostModel()
    item = torch.empty((), dtype=res.dtype).element_size()
    n_chunks = len(res.layout)
    shard = res.chunk_size // res.world_size
    per_shard = shard * state_bytes_per_element(res.dtype, optimizer_states)
    private_shards = [(_round_up(sum(prof.numels[k] for k in ps), res.world_size) // res.world_size)
                      * state_bytes_per_element(res.dtype, optimizer_states) for ps in res.private]
    avail = chunk_budget(prof, budget_bytes, res.world_size, res.dtype, reserved_bytes)
    block = res.chunk_size * item
    if avail >= n_chunks * block + n_chunks * per_shard + sum(private_shards):
        res.n_blocks, res.on_fast, res.placement = n_chunks, [True] * (n_chunks + len(res.private)), "cache"
        sim = simulate(prof, res)
        res.moves, res.bytes_moved = sim.moves, sim.bytes_moved
        return res
    need_one_op = max((len(cs) for cs in _op_chunk_sets(prof, res)), default=1)
    base = min(n_chunks, max(min_blocks, need_one_op + 1))
    options = []
    # (a) all to blocks
    a_blocks = min(n_chunks, int(avail // block))
    if a_blocks >= 1:
        options.append((a_blocks, [False] * (n_chunks + len(res.private))))
    # (b) greedy shards on the fast device, leftover to blocks
    if avail >= base * block:
        left = avail - base * block
        on_fast = []
        for b in [per_shard] * n_chunks + private_shards:
            on_fast.append(b <= left)
            left -= b if b <= left else 0
        options.append((min(n_chunks, base + int(left // block)), on_fast))
    best = None
    for n_blocks, on_fast in options:
        try:
            sim = simulate(prof, res, n_blocks=n_blocks)
        except RuntimeError:
            continue
        moves = sim.moves
        host = sum(1 for f in on_fast if not f) * shard
        fast = sum(1 for f in on_fast if f) * shard
        t = (moves * block / (costs.h2d_gbps(n_gpus) * 1e9) + host * item / (costs.d2h_gbps(n_gpus) * 1e9)
             + host / (costs.cpu_adam_geps(n_gpus) * 1e9) + fast / (costs.gpu_adam_geps(n_gpus) * 1e9))
        if best is None or t < best[0]:
            best = (t, n_blocks, on_fast, moves, sim.bytes_moved)
    if best is None:
        raise ValueError(f"memory_budget={budget_bytes} bytes cannot hold the rCache blocks one operator needs "
                         f"({need_one_op} chunks of {block} bytes) beside the predicted activations; raise it")
    _, res.n_blocks, res.on_fast, res.moves, res.bytes_moved = best
    res.placement = "offload"
    return res


def _op_chunk_sets(prof: Profile, res: SearchResult) -> list[set[int]]:
    where = {k: c for c, ps in enumerate(res.layout) for k in ps}
    return [{where[k] for k in ps if k in where} for ps in prof.op_params]


__all__ += ["FIFO", "PREFETCH", "state_bytes_per_element", "chunk_budget"]
