"""Mixture-of-experts layer with top-1/top-2 gating, expert capacity and the load-balancing loss.

The MoE experiment of Elixir v1 (Sec. 6.4) trains a GPT whose MLPs are mixtures of experts, run
expert-parallel: experts are spread over the ranks and tokens are exchanged with an all-to-all.
The gating follows Switch Transformer (top-1) and GShard (top-2):

* router probabilities ``p = softmax(x W_g)`` (fp32), top-k experts per token; for top-2 the two gates are
  renormalised, ``g_j = p_j / (p_1 + p_2)`` (GShard Algorithm 1); for top-1, ``g = p_1`` (Switch eq. 2);
* expert capacity ``C = ceil(capacity_factor * S * k / E)`` for ``S`` tokens: a token whose slot at its expert
  is ``>= C`` is dropped for that choice (first choices take slots before second choices);
* load-balancing loss ``E * sum_e f_e P_e`` with ``f_e`` the fraction of tokens whose first choice is ``e`` and
  ``P_e`` the mean router probability of ``e`` (Switch eq. 4-6).

With ``ep_group`` set (by :class:`reprozoo.elixir.plans.ExpertParallel`) the layer keeps only its local experts
and exchanges the ``(E, C, d)`` dispatch tensor with torch's differentiable ``all_to_all_single``, so the
outputs equal the same layer run on one rank with all experts.

Complexity: gating O(S d E); dispatch/combine O(S k d) (scatter/gather, no Python loop over tokens);
experts O(E C d h).

Examples
--------
>>> import torch
>>> moe = MoE(8, 16, n_experts=4, top_k=2, capacity_factor=2.0)
>>> moe(torch.randn(2, 5, 8)).shape
torch.Size([2, 5, 8])
>>> bool(moe.aux_loss >= 0)
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.checks import check_float, check_int

__all__ = ["MoE", "MLP"]


class MLP(nn.Module):
    """Position-wise feed-forward (a dense block's MLP, or one expert): Linear(d, h) -> GELU -> Linear(h, d)."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_hidden)
        self.proj = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class MoE(nn.Module):
    """Mixture of ``n_experts`` MLP experts with top-``top_k`` gating (see the module docstring).

    Parameters
    ----------
    d_model, d_hidden : int
        Token width and each expert's hidden width.
    n_experts : int
        Number of experts E (all ranks together when expert parallel).
    top_k : {1, 2}
        Experts per token.
    capacity_factor : float
        Expert capacity multiplier (> 0).

    Attributes
    ----------
    aux_loss : Tensor or None
        Load-balancing loss of the last forward.
    ep_group, expert_offset : ProcessGroup or None, int
        Set by :class:`reprozoo.elixir.plans.ExpertParallel`: this rank holds experts
        ``[expert_offset, expert_offset + len(experts))``.

    Shapes: ``(..., d_model)`` -> ``(..., d_model)``.
    """

    def __init__(self, d_model: int, d_hidden: int, n_experts: int, top_k: int = 1,
                 capacity_factor: float = 1.25) -> None:
        super().__init__()
        check_int(n_experts, "n_experts", low=1)
        if top_k not in (1, 2) or top_k > n_experts:
            raise ValueError(f"top_k={top_k!r} should be 1 or 2 and <= n_experts={n_experts}")
        check_float(capacity_factor, "capacity_factor", low=0, low_inclusive=False)
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, float(capacity_factor)
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(d_model, d_hidden) for _ in range(n_experts))
        self.ep_group = None
        self.expert_offset = 0
        self.aux_loss: torch.Tensor | None = None

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gate.weight, std=0.02)
        for e in self.experts:
            for lin in (e.fc, e.proj):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, top_k={self.top_k}, capacity_factor={self.capacity_factor}"

    def capacity(self, n_tokens: int) -> int:
        """Slots per expert, ``ceil(capacity_factor * S * k / E)``."""
        return max(1, math.ceil(self.capacity_factor * n_tokens * self.top_k / self.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        s, d, e = tokens.shape[0], tokens.shape[1], self.n_experts
        cap = self.capacity(s)
        # -- gating (Switch eq. 1-2, GShard Alg. 1) -------------------------------------------
        probs = torch.softmax(self.gate(tokens).float(), dim=-1)           # (S, E)
        gates, choice = probs.topk(self.top_k, dim=-1)                      # (S, k)
        if self.top_k == 2:
            gates = gates / gates.sum(-1, keepdim=True)
        # -- slots: first choices before second choices, in token order -------------------------
        onehot = F.one_hot(choice, e).transpose(0, 1).reshape(self.top_k * s, e)  # (k*S, E), choice-major
        slot = (onehot.cumsum(0) - 1).mul(onehot).sum(-1).view(self.top_k, s).t()  # (S, k)
        keep = slot < cap
        flat = torch.where(keep, choice * cap + slot, e * cap)             # dropped -> a spare row
        # -- load-balancing loss (Switch eq. 4-6) -----------------------------------------------
        frac = F.one_hot(choice[:, 0], e).float().mean(0)
        self.aux_loss = e * (frac * probs.mean(0)).sum()
        # -- dispatch (E, C, d), experts, combine ---------------------------------------------
        dispatch = tokens.new_zeros(e * cap + 1, d)
        dispatch.index_add_(0, flat.reshape(-1), tokens.repeat_interleave(self.top_k, 0))
        expert_out = self._run_experts(dispatch[:-1].view(e, cap, d))      # (E, C, d)
        expert_out = torch.cat([expert_out.reshape(e * cap, d), expert_out.new_zeros(1, d)])
        picked = expert_out[flat.reshape(-1)].view(s, self.top_k, d)
        w = (gates * keep).to(picked.dtype).unsqueeze(-1)
        return (picked * w).sum(1).view(shape)

    def _run_experts(self, dispatch: torch.Tensor) -> torch.Tensor:
        """(E, C, d) -> (E, C, d); expert parallel: all-to-all to the owners and back."""
        if self.ep_group is None:
            return torch.stack([expert(dispatch[i]) for i, expert in enumerate(self.experts)])
        import torch.distributed as dist
        from torch.distributed._functional_collectives import all_to_all_single_autograd, wait_tensor

        n = dist.get_world_size(self.ep_group)
        e, cap, d = dispatch.shape
        local = len(self.experts)

        def exchange(x):  # on the meta device (profiling) the all-to-all only keeps the shape
            if x.is_meta:
                return x
            # torch's differentiable all_to_all_single (equal splits; the backward is the reverse exchange)
            return wait_tensor(all_to_all_single_autograd(x.contiguous(), None, None, self.ep_group))

        # rank r receives, from every rank, the slots of experts [r*local, (r+1)*local)
        recv = exchange(dispatch).view(n, local, cap, d)
        out = torch.stack([expert(recv[:, i].reshape(n * cap, d)).view(n, cap, d)
                           for i, expert in enumerate(self.experts)], dim=1)   # (n, local, C, d)
        return exchange(out.reshape(e, cap, d)).view(e, cap, d)
