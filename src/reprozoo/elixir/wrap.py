"""``wrap``: the one call that turns a model and its optimizer into Elixir's.

Steps (Elixir v3 Sec. 3-4): apply the parallel plan; profile ``step_fn`` on the meta device; search the chunk
size (``"optimal"``: Belady-simulated moves; ``"minimum_waste"``: least padding); place shards and optimizer
state by budget with the cost models; build the :class:`ElixirModule` and :class:`ElixirOptimizer`.
Every argument is checked here, before any step runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from reprozoo.elixir.memory import AccountingDevice, CostModel, CudaDevice, FastDevice
from reprozoo.elixir.module import ElixirModule
from reprozoo.elixir.optimizer import ElixirOptimizer, check_optimizer, optimizer_states
from reprozoo.elixir.plans import resolve_plan
from reprozoo.elixir.search import MIN_CHUNK_BYTES, minimum_waste_search, optimal_search, place, profile_model

__all__ = ["wrap", "SEARCHES"]

SEARCHES = ("optimal", "minimum_waste")


def _default_step(model: nn.Module, batch) -> torch.Tensor:
    out = model(batch)
    return out if out.dim() == 0 else out.float().pow(2).mean()


def wrap(model: nn.Module, optimizer: torch.optim.Optimizer, memory_budget: int | None = None, plan=None,
         group=None, search: str = "optimal", prefetch: bool = True, dtype: torch.dtype = torch.float32,
         step_fn: Callable | None = None, example_input=None, fast_device: FastDevice | None = None,
         min_chunk_bytes: int = MIN_CHUNK_BYTES, max_norm: float = 0.0, initial_scale: float | None = None,
         costs: CostModel | None = None) -> tuple[ElixirModule, ElixirOptimizer]:
    """Wrap ``model`` and ``optimizer`` for chunked, sharded, offloaded training under ``memory_budget``.

    Parameters
    ----------
    model : nn.Module
        The model, on CPU (or already on the fast device); the same on every rank of ``group``.
    optimizer : torch.optim.Optimizer
        SGD, Adam or AdamW on ``model.parameters()`` (one setting for all groups).
    memory_budget : int or None
        Bytes of the fast device Elixir may use (blocks, fast shards, optimizer state, predicted activations);
        None = no limit (everything cached).
    plan : dict or None
        Module type or name pattern -> :class:`~reprozoo.elixir.plans.ParallelPattern`.
    group : ProcessGroup or None
        The data-parallel group (None = WORLD, or a single process when torch.distributed is not initialised).
    search : {"optimal", "minimum_waste"}
        Chunk-size search.
    prefetch : bool
        Belady-order scheduler with early gathers (True) or FIFO (False).
    dtype : torch.dtype
        Parameter dtype in chunks (float32, bfloat16, float16); masters are fp32.
    step_fn, example_input : callable, object
        ``step_fn(model, example_input) -> scalar loss`` (forward only), profiled on the meta device;
        ``example_input`` is required, ``step_fn`` defaults to ``model(x)`` (mean square if not scalar).
    fast_device : FastDevice or None
        Default: :class:`CudaDevice` when the model is on CUDA, else an :class:`AccountingDevice` enforcing
        ``memory_budget``.
    min_chunk_bytes : int
        Smallest candidate chunk (the paper's 32 MiB; lower it for small models).
    max_norm, initial_scale : float
        Gradient clipping and the initial loss scale (see :class:`ElixirOptimizer`).
    costs : CostModel or None
        Bandwidth and Adam models of the placement.

    Returns
    -------
    (ElixirModule, ElixirOptimizer)
        ``model`` itself is changed in place: its parameters become views of chunk blocks (and a plan's
        patterns may drop this rank's non-local experts); use the returned module.

    Examples
    --------
    >>> import torch
    >>> from reprozoo.elixir.model import GPT, gpt_step, random_tokens
    >>> gpt = GPT(vocab_size=64, seq_len=16, d_model=32, n_head=2, n_layer=2)
    >>> batch = random_tokens(2, 17, 64)
    >>> model, optim = wrap(gpt, torch.optim.Adam(gpt.parameters(), lr=1e-3), step_fn=gpt_step,
    ...                     example_input=batch, min_chunk_bytes=16384)
    >>> loss = gpt_step(model, batch)
    >>> optim.backward(loss)
    >>> optim.step()
    True
    """
    # -- arguments, before anything is changed ------------------------------------------------
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be an nn.Module, got {type(model).__name__}")
    if search not in SEARCHES:
        raise ValueError(f"search={search!r} should be one of {SEARCHES}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype} should be torch.float32, torch.bfloat16 or torch.float16")
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                      or memory_budget <= 0):
        raise ValueError(f"memory_budget={memory_budget!r} should be a positive int (bytes) or None")
    if example_input is None:
        raise ValueError("example_input is required: Elixir profiles step_fn(model, example_input) on the meta "
                         "device to find the parameters' first-use order")
    if not isinstance(min_chunk_bytes, int) or min_chunk_bytes <= 0:
        raise ValueError(f"min_chunk_bytes={min_chunk_bytes!r} should be a positive int")
    if not isinstance(prefetch, bool):
        raise TypeError(f"prefetch should be a bool, got {type(prefetch).__name__}")
    step_fn = step_fn or _default_step
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters: there is nothing to chunk")
    check_optimizer(optimizer, params)
    if (memory_budget is not None and fast_device is not None and fast_device.budget_bytes is not None
            and fast_device.budget_bytes != memory_budget):
        raise ValueError(f"memory_budget={memory_budget} disagrees with fast_device.budget_bytes="
                         f"{fast_device.budget_bytes}; give one of them")
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    on_cuda = any(p.is_cuda for p in params)
    if fast_device is None:
        fast_device = CudaDevice(params[0].device, memory_budget) if on_cuda else AccountingDevice(memory_budget)
    k = optimizer_states(optimizer)
    # -- 1. operator-level plan -------------------------------------------------------------
    entries = resolve_plan(model, plan)
    managed = [(name, m, pattern, pattern.apply(m, group)) for name, m, pattern in entries]
    exclude = {id(p) for *_, ps in managed for p in ps}
    reserved = (2 + k) * sum(p.numel() * p.element_size() for *_, ps in managed for p in ps)
    # -- 2. profile on the meta device ------------------------------------------------------
    memo = {id(group): group} if group is not None else {}
    for _, m, _, _ in managed:
        if getattr(m, "ep_group", None) is not None:
            memo[id(m.ep_group)] = m.ep_group
    prof = profile_model(model, step_fn, example_input, exclude=exclude, extra_memo=memo)
    # -- 3. chunk-size search and 4. placement ----------------------------------------------
    searcher = optimal_search if search == "optimal" else minimum_waste_search
    budget = memory_budget if fast_device.budget_bytes is None else fast_device.budget_bytes
    if isinstance(fast_device, CudaDevice) and memory_budget is None:
        budget = int(0.95 * (fast_device.budget_bytes - 2 * 2**30))  # Sec. 4.2: 2 GiB kept for the CUDA context
    res = searcher(prof, world, budget if memory_budget is not None or on_cuda else None, dtype, min_chunk_bytes,
                   reserved_bytes=reserved)
    res = place(prof, res, budget if memory_budget is not None or on_cuda else None, k, costs, n_gpus=world,
                reserved_bytes=reserved)
    check_optimizer(optimizer, params, offload_from_cuda=fast_device.torch_device.type == "cuda"
                    and not all(res.on_fast))  # before any parameter is moved into a chunk
    # -- 5. runtime objects -----------------------------------------------------------------
    module = ElixirModule(model, prof, res, group=group, prefetch=prefetch, fast_device=fast_device, managed=managed)
    optim = ElixirOptimizer(module, optimizer, initial_scale=initial_scale, max_norm=max_norm)
    return module, optim
