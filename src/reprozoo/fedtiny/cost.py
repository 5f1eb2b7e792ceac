"""Analytic per-client memory and FLOPs model (the client compute and memory the paper compares).  No Flower import.

Memory of one client's training step (bytes, float32 = 4 B):

* parameters: a prunable layer stores its kept values (4 B each) plus a bit mask (numel/8 B); a dense
  model stores 4 B per weight; biases and BN parameters/buffers are dense;
* gradients and SGD momentum: one float per *trainable* entry (the kept weights in sparse training);
* activations saved for backward: batch × Σ (output elements of every layer) × 4 B (the same for every
  method: weight sparsity does not shrink feature maps);
* adjustment rounds: the top-K buffer (K values + K int32 indices = 8 B per entry) plus the transient
  dense gradient of the adjusted layer(s) (4 B × numel): one layer for FedTiny, every layer for the
  FedDST-style whole-model variant.

FLOPs of one sample (multiply-add = 2 FLOPs): forward Σ_l 2 · nnz_l · (output positions of l); backward
twice the forward (input and weight gradients, both sparse); the dense weight gradient of an adjusted
layer adds 2 · numel_l · positions_l per sample of the growth batch(es).  BN/ReLU/pooling are ignored
(< 2 % here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from reprozoo.fedtiny.sparse import prunable_names

__all__ = ["CostModel"]


@dataclass
class CostModel:
    """Layer sizes of one architecture, measured once by a forward pass on a (1, C, H, W) input.

    Attributes
    ----------
    numel : dict prunable name -> weight numel
    positions : dict prunable name -> output positions per sample (H_out W_out for a conv, 1 for linear)
    dense_other : int, number of non-prunable floats (biases, BN params and running stats)
    act_per_sample : int, output elements of every leaf module per sample
    """

    numel: dict[str, int]
    positions: dict[str, int]
    dense_other: int
    act_per_sample: int

    @classmethod
    def from_model(cls, model: nn.Module, input_shape: Sequence[int]) -> CostModel:
        names = prunable_names(model)
        mods = {f"{m}.weight": mod for m, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))}
        positions: dict[str, int] = {}
        acts = [0]
        handles = []
        for n in names:
            def hook(_m, _i, out, n=n):
                positions[n] = int(out[0].numel() // out.shape[1]) if out.dim() > 2 else 1
            handles.append(mods[n].register_forward_hook(hook))
        for mod in model.modules():
            if len(list(mod.children())) == 0:
                handles.append(mod.register_forward_hook(
                    lambda _m, _i, out: acts.__setitem__(0, acts[0] + out[0].numel())))
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, *input_shape))
        finally:
            for h in handles:
                h.remove()
            model.train(was)
        state = model.state_dict()
        numel = {n: int(state[n].numel()) for n in names}
        other = sum(int(v.numel()) for k, v in state.items() if k not in numel and v.is_floating_point())
        return cls(numel, positions, other, acts[0])

    # -- memory --------------------------------------------------------------------------------
    def memory_bytes(self, nnz: Mapping[str, int] | None, batch_size: int,
                     adjust: Mapping[str, int] | None = None) -> dict[str, float]:
        """Peak training memory of one client, by part (bytes).

        Parameters
        ----------
        nnz : kept weights per prunable layer, or None for dense training
        batch_size : int
        adjust : dict layer -> K for an adjustment round (top-K buffer + transient dense layer gradient)
        """
        if nnz is None:
            params = 4.0 * sum(self.numel.values())
            trainable = float(sum(self.numel.values()))
        else:
            params = sum(4.0 * nnz[n] + self.numel[n] / 8.0 for n in self.numel)
            trainable = float(sum(nnz.values()))
        params += 4.0 * self.dense_other
        trainable += self.dense_other
        grads = 4.0 * trainable
        momentum = 4.0 * trainable
        acts = 4.0 * batch_size * self.act_per_sample
        extra = 0.0
        if adjust:
            extra = sum(8.0 * k + 4.0 * self.numel[n] for n, k in adjust.items())
        total = params + grads + momentum + acts + extra
        return {"params": params, "grads": grads, "optimizer": momentum, "activations": acts,
                "adjust_buffer": extra, "total": total}

    # -- compute -------------------------------------------------------------------------------
    def forward_flops(self, nnz: Mapping[str, int] | None) -> float:
        """FLOPs of one forward pass of one sample (2 per multiply-add in conv/linear layers)."""
        return float(sum(2.0 * (self.numel[n] if nnz is None else nnz[n]) * self.positions[n] for n in self.numel))

    def train_flops(self, nnz: Mapping[str, int] | None, n_samples: int, epochs: int = 1) -> float:
        """Forward + backward (2 × forward) FLOPs of ``epochs`` passes over ``n_samples``."""
        return 3.0 * self.forward_flops(nnz) * n_samples * epochs

    def dense_grad_flops(self, layers: Sequence[str], n_samples: int) -> float:
        """Extra FLOPs for the dense weight gradient of ``layers`` over ``n_samples`` (growth batches)."""
        return float(sum(2.0 * self.numel[n] * self.positions[n] for n in layers) * n_samples)
