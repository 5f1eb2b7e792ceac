"""A GPT-2-style decoder on random tokens: the workload of the Elixir experiment.

The paper benchmarks GPT-2 and OPT decoders (Elixir v3, Sec. 6.1); the data content is immaterial for
its systems claims, so batches are uniform random token ids. The decoder is the usual pre-norm stack
(token + position embedding, ``n_layer`` blocks of causal self-attention and an MLP, a final LayerNorm,
an LM head tied to the token embedding). ``moe_experts > 0`` replaces each block's MLP by a mixture of
experts (:class:`reprozoo.elixir.moe.MoE`), the layer of the paper's MoE experiment (v1, Sec. 6.4).

Examples
--------
>>> import torch
>>> model = GPT(vocab_size=64, seq_len=16, d_model=32, n_head=2, n_layer=2)
>>> batch = random_tokens(4, 16, 64, seed=0)
>>> gpt_step(model, batch).shape
torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.checks import check_int
from reprozoo.elixir.moe import MLP, MoE

__all__ = ["GPT", "Block", "gpt_step", "random_tokens", "gpt_flops_per_token"]


class Attention(nn.Module):
    """Causal multi-head self-attention (one fused qkv projection, PyTorch's SDPA)."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)) (mlp may be a MoE)."""

    def __init__(self, d_model: int, n_head: int, d_hidden: int, moe_experts: int = 0, moe_top_k: int = 1,
                 capacity_factor: float = 1.25) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = (MoE(d_model, d_hidden, moe_experts, top_k=moe_top_k, capacity_factor=capacity_factor)
                    if moe_experts else MLP(d_model, d_hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """GPT-2-style decoder LM.

    Parameters
    ----------
    vocab_size, seq_len : int
        Vocabulary and maximum sequence length.
    d_model, n_head, n_layer : int
        Width, heads (must divide ``d_model``) and depth.
    d_hidden : int or None
        MLP (or per-expert) hidden width; ``None`` = ``4 * d_model`` as in GPT-2.
    moe_experts : int
        0 for dense MLPs; otherwise the number of experts of each block's :class:`MoE`.
    moe_top_k, capacity_factor : int, float
        Gating of the MoE layers (top-1 or top-2, expert capacity factor).
    tie_embeddings : bool
        Share the LM head with the token embedding (GPT-2 does).

    Shapes: ``forward(idx)`` takes ``(B, T)`` int64 token ids (``T <= seq_len``) and returns
    ``(B, T, vocab_size)`` logits. ``aux_loss()`` is the sum of the MoE load-balancing losses of the last forward.
    """

    def __init__(self, vocab_size: int = 256, seq_len: int = 64, d_model: int = 64, n_head: int = 4,
                 n_layer: int = 2, d_hidden: int | None = None, moe_experts: int = 0, moe_top_k: int = 1,
                 capacity_factor: float = 1.25, tie_embeddings: bool = True) -> None:
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("seq_len", seq_len), ("d_model", d_model),
                        ("n_head", n_head), ("n_layer", n_layer)):
            check_int(v, name, low=1)
        if d_model % n_head:
            raise ValueError(f"n_head={n_head} should divide d_model={d_model}")
        d_hidden = 4 * d_model if d_hidden is None else d_hidden
        self.seq_len = seq_len
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head, d_hidden, moe_experts, moe_top_k, capacity_factor)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()
            elif isinstance(m, MoE):
                m.reset_parameters()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _check_tokens(idx, "idx", self.seq_len, self.wte.num_embeddings)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def aux_loss(self) -> torch.Tensor | float:
        """Sum of the MoE load-balancing losses of the last forward (0.0 for a dense model)."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoE) and m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else 0.0


def _check_tokens(idx, name: str, seq_len: int, vocab_size: int) -> None:
    """``idx`` should be a (B, T) integer tensor with 1 <= T <= seq_len and ids in [0, vocab_size). The id range
    is read only for CPU tensors (on an accelerator it would cost a host sync every step; the embedding's
    own device assertion catches it there)."""
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype.is_floating_point or idx.is_complex() \
            or idx.dtype == torch.bool:
        raise ValueError(f"{name} should be a (B, T) tensor of integer token ids, got "
                         f"{getattr(idx, 'dtype', type(idx).__name__)} of shape {tuple(getattr(idx, 'shape', ()))}")
    if not 1 <= idx.shape[1] <= seq_len:
        raise ValueError(f"{name} has {idx.shape[1]} tokens per sequence; the model takes 1 to seq_len={seq_len}")
    if idx.device.type == "cpu" and idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} holds token ids in [{lo}, {hi}]; the model takes ids in [0, "
                             f"vocab_size={vocab_size})")


def gpt_step(model: nn.Module, batch: torch.Tensor, aux_weight: float = 0.01) -> torch.Tensor:
    """Next-token cross-entropy of ``model`` on ``batch`` (B, T) (+ ``aux_weight`` x the MoE balance loss).

    The ``step_fn`` Elixir profiles: it runs the forward and returns the scalar loss (no backward).
    """
    if not isinstance(batch, torch.Tensor) or batch.ndim != 2 or batch.shape[1] < 2:
        raise ValueError("batch should be a (B, T) tensor of token ids with T >= 2 (inputs are batch[:, :-1], "
                         f"targets batch[:, 1:]), got {getattr(batch, 'shape', type(batch).__name__)}")
    logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
    inner = getattr(model, "module", model)  # an ElixirModule / DDP wraps the GPT
    aux = inner.aux_loss() if hasattr(inner, "aux_loss") else 0.0
    return loss + aux_weight * aux if isinstance(aux, torch.Tensor) else loss


def random_tokens(batch: int, seq_len: int, vocab_size: int, seed: int = 0,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """``(batch, seq_len)`` int64 token ids drawn uniformly from ``[0, vocab_size)`` by a seeded generator."""
    for name, v in (("batch", batch), ("seq_len", seq_len), ("vocab_size", vocab_size)):
        check_int(v, name, low=1)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq_len), generator=gen).to(device)


def gpt_flops_per_token(model: GPT) -> float:
    """Training FLOPs per token, 6 x (parameters touched per token) (Kaplan et al.'s estimate)."""
    n = 0
    for name, p in model.named_parameters():
        if "experts" in name:  # each token visits top_k of the experts
            moe = next(m for m in model.modules() if isinstance(m, MoE))
            n += p.numel() * moe.top_k // moe.n_experts
        else:
            n += p.numel()
    return 6.0 * n
