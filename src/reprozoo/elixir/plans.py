"""Operator-level parallel plans: a pattern per module (Elixir v1, Sec. 3: parallelism assigned per operator).

``wrap(..., plan={MoE: ExpertParallel()})`` maps modules, by type or by a name pattern (``fnmatch``, e.g.
``"blocks.*.mlp"``), to a :class:`ParallelPattern`. Modules the plan does not name use
:class:`ChunkedDataParallel`, the default: their parameters go into chunks (sharded, cached, offloaded) and their
gradients are averaged over the data-parallel group.

A new kind of parallelism is one class implementing this protocol:

``apply(module, group) -> list[nn.Parameter]``
    Prepare ``module`` for ``group`` (e.g. keep this rank's experts) before profiling, and return the
    parameters the pattern manages itself (kept out of chunks; they live on the fast device beside their
    optimizer state). ``[]`` leaves every parameter to the chunks.
``finish_grads(params, group)``
    After the backward, before clipping and the optimizer step: make the gradients of the managed parameters
    those of the data-parallel mean loss.
``state_entries(prefix, module, group) -> dict[str, Tensor]``
    Full (unsharded) fp32 tensors under plain PyTorch keys for ``state_dict``.
``load_entries(prefix, module, state, group)``
    The inverse, from a plain PyTorch state dict.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from reprozoo.elixir.moe import MoE

__all__ = ["ParallelPattern", "ChunkedDataParallel", "ExpertParallel", "resolve_plan"]


class ParallelPattern:
    """Base of a parallel pattern (see the module docstring for the protocol)."""

    def apply(self, module: nn.Module, group) -> list[nn.Parameter]:
        return []

    def finish_grads(self, params: list[nn.Parameter], group) -> None:
        return None

    def state_entries(self, prefix: str, module: nn.Module, group) -> dict[str, torch.Tensor]:
        return {}

    def load_entries(self, prefix: str, module: nn.Module, state: dict[str, torch.Tensor], group) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ChunkedDataParallel(ParallelPattern):
    """The default pattern: parameters in chunks, sharded over the group, gradients reduce-scattered."""


class ExpertParallel(ParallelPattern):
    """Experts of a :class:`~reprozoo.elixir.moe.MoE` spread over the ranks; tokens exchanged by all-to-all.

    Rank ``r`` of ``n`` keeps experts ``[r E/n, (r+1) E/n)`` (``n`` must divide ``E``). Each local expert's
    gradient arrives summed over the ranks' losses through the all-to-all's backward, so it is divided by ``n``
    (the data-parallel mean). The gate stays data parallel (chunked).
    """

    def apply(self, module: nn.Module, group) -> list[nn.Parameter]:
        if not isinstance(module, MoE):
            raise TypeError(f"plan: ExpertParallel applies to MoE layers, got {type(module).__name__}")
        n, r = _world(group)
        if module.n_experts % n:
            raise ValueError(f"plan: ExpertParallel needs the world size {n} to divide n_experts={module.n_experts}")
        local = module.n_experts // n
        if n > 1:
            import torch.distributed as dist

            module.experts = nn.ModuleList(list(module.experts)[r * local:(r + 1) * local])
            module.ep_group = group if group is not None else dist.group.WORLD
        module.expert_offset = r * local
        return list(module.experts.parameters())

    def finish_grads(self, params: list[nn.Parameter], group) -> None:
        n, _ = _world(group)
        grads = [p.grad for p in params if p.grad is not None]
        if n > 1 and grads:
            torch._foreach_div_(grads, n)

    def state_entries(self, prefix: str, module: nn.Module, group) -> dict[str, torch.Tensor]:
        import torch.distributed as dist

        n, _ = _world(group)
        local = len(module.experts)
        out = {}
        for name, p in module.experts.named_parameters():
            i, rest = name.split(".", 1)
            full = [torch.empty_like(p.detach(), dtype=torch.float32) for _ in range(n)]
            if n > 1:
                dist.all_gather(full, p.detach().float().contiguous(), group=group)
            else:
                full = [p.detach().float().clone()]
            for r in range(n):
                out[f"{prefix}experts.{r * local + int(i)}.{rest}"] = full[r].cpu()
        return out

    def load_entries(self, prefix: str, module: nn.Module, state: dict[str, torch.Tensor], group) -> None:
        with torch.no_grad():
            for name, p in module.experts.named_parameters():
                i, rest = name.split(".", 1)
                p.copy_(state[f"{prefix}experts.{module.expert_offset + int(i)}.{rest}"])


def _world(group) -> tuple[int, int]:
    """(size, rank) of ``group``; (1, 0) when torch.distributed is not initialised."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def resolve_plan(model: nn.Module, plan) -> list[tuple[str, nn.Module, ParallelPattern]]:
    """``[(name, module, pattern)]`` for every module ``plan`` names (by type or fnmatch name pattern).

    Raises ``ValueError`` naming ``plan`` for an entry that matches no module, ``TypeError`` for a value
    that is not a :class:`ParallelPattern`.
    """
    if plan is None:
        return []
    if not isinstance(plan, dict):
        raise TypeError(f"plan should be a dict mapping a module type or name pattern to a ParallelPattern, "
                        f"got {type(plan).__name__}")
    out, taken = [], set()
    for key, pattern in plan.items():
        if not isinstance(pattern, ParallelPattern):
            raise TypeError(f"plan[{key!r}] should be a ParallelPattern, got {type(pattern).__name__}")
        hits = [(n, m) for n, m in model.named_modules()
                if (isinstance(key, type) and isinstance(m, key)) or (isinstance(key, str) and n
                                                                       and fnmatch.fnmatch(n, key))]
        if not hits:
            raise ValueError(f"plan entry {key!r} names no module of the model")
        for n, m in hits:
            if id(m) not in taken and not isinstance(pattern, ChunkedDataParallel):
                taken.add(id(m))
                out.append((n, m, pattern))
    return out
