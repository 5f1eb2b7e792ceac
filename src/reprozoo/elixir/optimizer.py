"""``ElixirOptimizer``: the user's optimizer run on the chunk shards, with loss scaling and clipping.

Elixir v3 Sec. 3.3-3.4: the optimizer sees each chunk's fp32 master shard as the weight and the reduce-scattered
shard as its gradient (paired chunks: a low-precision parameter chunk, an fp32 master with the same layout).
One ``step``:

1. gradients of the parallel patterns' own parameters are finished (e.g. expert gradients divided by ``n``);
2. overflow check and squared L2 norm from the gradient shards (one ``_foreach_norm``), summed over ranks:
   ``||g||^2 = sum_r sum_chunks ||g_r||^2``;
3. a non-finite norm skips the step and multiplies the loss scale by ``backoff`` (dynamic loss scaling);
   otherwise gradients are multiplied by ``1/scale * min(1, max_norm / (||g|| + 1e-6))`` (clipping as
   ``torch.nn.utils.clip_grad_norm_``) and the scale grows by ``growth`` every ``growth_interval`` good steps;
4. the optimizer of each placement (fast-device shards, offloaded shards, pattern parameters) steps: a
   *hybrid* optimizer, one instance of the user's class per device, so torch's own CPU implementation updates
   offloaded shards;
5. masters are copied to the low-precision shards, and every block is released (the shards changed).

Only element-wise optimizers can run on flat shards (SGD, Adam, AdamW); others, several parameter groups with
different settings, or torch's fused Adam with shards offloaded from a CUDA fast device raise ``ValueError``.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.distributed as dist

from reprozoo.elixir.module import ElixirModule

__all__ = ["ElixirOptimizer", "SUPPORTED_OPTIMIZERS", "optimizer_states", "check_optimizer"]

#: optimizer class -> fp32 state tensors per element (k of the paper's memory factor)
SUPPORTED_OPTIMIZERS = {torch.optim.SGD: 1, torch.optim.Adam: 2, torch.optim.AdamW: 2}


def optimizer_states(optimizer: torch.optim.Optimizer) -> int:
    """fp32 state tensors per element (Adam: 2, SGD with momentum: 1, plain SGD: 0)."""
    k = SUPPORTED_OPTIMIZERS[type(optimizer)]
    if type(optimizer) is torch.optim.SGD and not optimizer.defaults.get("momentum"):
        k = 0
    if optimizer.defaults.get("amsgrad"):
        k += 1
    return k


def _settings(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "params"}


def check_optimizer(optimizer, params: list, offload_from_cuda: bool = False) -> dict:
    """Validate that the placement can serve ``optimizer``; return its settings. Raises naming ``optimizer``."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer should be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if type(optimizer) not in SUPPORTED_OPTIMIZERS:
        raise ValueError(f"optimizer {type(optimizer).__name__} cannot run on flat chunk shards (only element-wise "
                         f"optimizers can: {', '.join(c.__name__ for c in SUPPORTED_OPTIMIZERS)})")
    groups = optimizer.param_groups
    if any(_settings(g) != _settings(groups[0]) for g in groups[1:]):
        raise ValueError("optimizer has parameter groups with different settings; a chunk mixes parameters of "
                         "several groups, so all groups must share one setting")
    ids = {id(p) for g in groups for p in g["params"]}
    missing = [i for i, p in enumerate(params) if id(p) not in ids]
    if missing:
        frozen = sum(not params[i].requires_grad for i in missing)
        why = (f" ({frozen} of them frozen, requires_grad=False: Elixir's chunks hold every parameter, so pass the "
               "frozen ones too; they get a zero gradient, which leaves them unchanged unless the optimizer applies "
               "weight decay)" if frozen else "")
        raise ValueError(f"optimizer does not hold {len(missing)} of the model's {len(params)} parameters{why}; "
                         "build it on model.parameters()")
    # only what the class's constructor takes: a group also holds derived keys (AdamW's decoupled_weight_decay)
    accepted = inspect.signature(type(optimizer).__init__).parameters
    settings = {k: v for k, v in _settings(groups[0]).items() if k in accepted}
    if settings.get("fused") and offload_from_cuda:
        raise ValueError("optimizer uses fused=True but the placement offloads shards to CPU memory, where a "
                         "CUDA fused kernel cannot run; use fused=False or a larger memory_budget")
    return settings


class ElixirOptimizer:
    """The user's optimizer, run on the shards of an :class:`~reprozoo.elixir.module.ElixirModule`.

    Parameters
    ----------
    module : ElixirModule
    optimizer : torch.optim.Optimizer
        Built on the unwrapped model's parameters; only its class and settings are used.
    initial_scale : float or None
        Initial loss scale; None = 2**16 for fp16/bf16 chunks and 1 (no scaling) for fp32.
    max_norm : float
        Gradient clipping threshold (0 = off).
    growth, backoff, growth_interval, min_scale : float, float, int, float
        Dynamic loss scaling.

    Attributes
    ----------
    scale : float
        Current loss scale. ``skipped_steps``: steps skipped for overflow. ``last_grad_norm``: the norm of the
        last step's (unscaled) gradients.
    """

    def __init__(self, module: ElixirModule, optimizer: torch.optim.Optimizer, initial_scale: float | None = None,
                 max_norm: float = 0.0, growth: float = 2.0, backoff: float = 0.5, growth_interval: int = 1000,
                 min_scale: float = 1.0) -> None:
        if not isinstance(module, ElixirModule):
            raise TypeError(f"module should be an ElixirModule, got {type(module).__name__}")
        if not (isinstance(max_norm, (int, float)) and max_norm >= 0 and math.isfinite(max_norm)):
            raise ValueError(f"max_norm={max_norm!r} should be a finite number >= 0 (0 = no clipping)")
        for name, value in (("initial_scale", initial_scale), ("growth", growth), ("backoff", backoff),
                            ("min_scale", min_scale)):
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} should be a finite number > 0")
        if not (isinstance(growth_interval, int) and not isinstance(growth_interval, bool) and growth_interval >= 1):
            raise ValueError(f"growth_interval={growth_interval!r} should be an int >= 1")
        self.module = module
        cuda_fast = module.fast.torch_device.type == "cuda"
        offloaded = any(not getattr(c, "on_fast", False) for c in module.chunks)
        settings = check_optimizer(optimizer, list(module.profile.params) + module.managed_params,
                                   offload_from_cuda=cuda_fast and offloaded)
        cls = type(optimizer)
        fast = [c.master for c in module.chunks if c.on_fast]
        host = [c.master for c in module.chunks if not c.on_fast]
        self.optimizers = [cls(ps, **settings) for ps in (fast, host, module.managed_params) if ps]
        k = optimizer_states(optimizer)
        module.fast.reserve(4 * k * (sum(p.numel() for p in fast)
                                     + sum(p.numel() for p in module.managed_params)), "optim")
        low = module.dtype in (torch.float16, torch.bfloat16)
        self.scale = float(initial_scale if initial_scale is not None else (2.0**16 if low else 1.0))
        self.dynamic = low or initial_scale is not None
        self.max_norm = float(max_norm)
        self.growth, self.backoff, self.growth_interval, self.min_scale = growth, backoff, growth_interval, min_scale
        self.good_steps = 0
        self.skipped_steps = 0
        self.last_grad_norm = float("nan")

    def state_dict(self) -> dict:
        """This rank's optimizer state (the inner optimizers on its shards) and the loss-scale state.

        Shards differ across ranks: each rank saves its own, and :meth:`load_state_dict` takes it back on a
        model wrapped with the same plan and world size (as ``torch.distributed.checkpoint`` users save
        sharded optimizer state per rank).
        """
        return {"optimizers": [o.state_dict() for o in self.optimizers], "scale": self.scale,
                "good_steps": self.good_steps, "skipped_steps": self.skipped_steps,
                "world": self.module.world, "rank": self.module.rank}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved (same plan, world size and rank); ValueError otherwise."""
        if not isinstance(state_dict, dict) or "optimizers" not in state_dict:
            raise ValueError("state_dict should be what ElixirOptimizer.state_dict() returned")
        where = (state_dict.get("world"), state_dict.get("rank"))
        if where != (self.module.world, self.module.rank):
            raise ValueError(f"state_dict was saved by rank {where[1]} of world {where[0]}; this is rank "
                             f"{self.module.rank} of world {self.module.world}: load each rank's own state")
        if len(state_dict["optimizers"]) != len(self.optimizers):
            raise ValueError(f"state_dict holds {len(state_dict['optimizers'])} inner optimizer states, this "
                             f"optimizer has {len(self.optimizers)}: the model was wrapped with another plan")
        for opt, sd in zip(self.optimizers, state_dict["optimizers"], strict=True):
            opt.load_state_dict(sd)
        self.scale = float(state_dict["scale"])
        self.good_steps, self.skipped_steps = int(state_dict["good_steps"]), int(state_dict["skipped_steps"])

    @property
    def param_groups(self) -> list[dict]:
        """The inner optimizers' groups (set ``lr`` on each, e.g. from a scheduler)."""
        return [g for o in self.optimizers for g in o.param_groups]

    def backward(self, loss: torch.Tensor) -> None:
        """``(loss * scale).backward()``: the hooks reduce each chunk as its gradients complete."""
        (loss * self.scale if self.scale != 1.0 else loss).backward()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for c in self.module.chunks:
            c.master.grad.zero_()
        for p in self.module.managed_params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> bool:
        """One optimizer step (see the module docstring). Returns False when the step was skipped (overflow)."""
        m = self.module
        for _name, _mod, pattern, ps in m.managed:
            pattern.finish_grads(ps, m.group)
        grads = [c.master.grad for c in m.chunks] + [p.grad for p in m.managed_params if p.grad is not None]
        dev = m.fast.torch_device                         # shards may sit on two devices (fast and host)
        norms = torch._foreach_norm(grads)
        sq = torch.stack([n.float().to(dev) for n in norms]).square().sum()
        # chunk shards are disjoint across ranks; the patterns' parameters are owned by one rank each
        if m.world > 1:
            dist.all_reduce(sq, group=m.group)
        total = float(sq.sqrt()) / self.scale            # the one host sync of the step
        self.last_grad_norm = total
        if not math.isfinite(total):
            self.skipped_steps += 1
            self.good_steps = 0
            if self.dynamic:
                self.scale = max(self.min_scale, self.scale * self.backoff)
            self.zero_grad()
            m.runtime.end_iteration()
            return False
        coef = 1.0 / self.scale
        if self.max_norm > 0:
            coef *= min(1.0, self.max_norm / (total + 1e-6))
        if coef != 1.0:
            torch._foreach_mul_(grads, coef)
        for opt in self.optimizers:
            opt.step()
        for c in m.chunks:
            if c.shard is not c.master:
                c.shard.copy_(c.master)
        m.runtime.end_iteration()
        if self.dynamic:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.scale *= self.growth
        return True
