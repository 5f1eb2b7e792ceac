"""Federated adaptive batch-norm statistics (the paper's adaptive BN selection, ABNS; EagleEye-style adaptive BN).

A client runs forward passes without gradients and with BN in train mode, and records, for every
BatchNorm layer, the per-channel mean and (population) variance of that layer's input over all the
positions it saw (N·H·W per channel).  The server merges them exactly into the pooled statistics:

    μ = Σ_k n_k μ_k / n,    σ² = Σ_k n_k (σ²_k + μ_k²) / n − μ²          (weighted by sample count)

Privacy note: per-client channel means and variances reveal something about each client's data
distribution; they are sent in the clear here, as in the paper.  No Flower import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["bn_layer_names", "client_bn_stats", "merge_bn_stats", "set_bn_stats"]


def bn_layer_names(model: nn.Module) -> list[str]:
    """Module names of the BatchNorm layers of ``model``, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def client_bn_stats(model: nn.Module,
                    batches: Iterable[torch.Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per-BN-layer input statistics of ``model`` on a client's data.

    Parameters
    ----------
    model : nn.Module with BatchNorm layers (left in its original mode, running stats untouched)
    batches : iterable of float tensors (B, C, H, W)

    Returns
    -------
    dict layer name -> (mean float64 (C,), population variance float64 (C,), n) where n counts the
    positions per channel (Σ B·H·W).  Accumulated in float64 as Σx and Σx²; O(forward passes).
    """
    names = bn_layer_names(model)
    if not names:
        raise ValueError(f"model {type(model).__name__} has no BatchNorm layer; ABNS needs BN")
    acc: dict[str, list] = {n: [0.0, 0.0, 0] for n in names}
    modules = dict(model.named_modules())
    was_training = model.training
    saved = {n: (modules[n].momentum, modules[n].running_mean.clone(), modules[n].running_var.clone(),
                 modules[n].num_batches_tracked.clone()) for n in names if modules[n].running_mean is not None}

    def hook(name):
        def f(_mod, inp, _out):
            x = inp[0].detach().double()
            dims = [d for d in range(x.dim()) if d != 1]
            a = acc[name]
            a[0] = a[0] + x.sum(dim=dims)
            a[1] = a[1] + (x * x).sum(dim=dims)
            a[2] += x.numel() // x.shape[1]
        return f

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        model.train()
        seen = 0
        for xb in batches:
            model(xb)
            seen += 1
        if seen == 0:
            raise ValueError("batches is empty: the client has no data to compute BN statistics on")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        for n, (mom, rm, rv, nbt) in saved.items():  # train-mode passes must not change the model
            modules[n].momentum = mom
            modules[n].running_mean.copy_(rm)
            modules[n].running_var.copy_(rv)
            modules[n].num_batches_tracked.copy_(nbt)
    out = {}
    for n, (s, ss, cnt) in acc.items():
        mean = (s / cnt).cpu().numpy()
        var = np.maximum((ss / cnt).cpu().numpy() - mean**2, 0.0)
        out[n] = (mean, var, int(cnt))
    return out


def merge_bn_stats(stats: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact pooled mean and population variance from per-client ``(mean, var, n)`` (float64).

    Parameters
    ----------
    stats : sequence of (mean (C,), var (C,), n > 0)

    Returns
    -------
    (μ, σ², n) with μ = Σ n_k μ_k / n and σ² = Σ n_k (σ²_k + μ_k²) / n − μ² (clipped at 0 against
    round-off).  Equal to the mean/variance of the concatenated data.  O(K C).
    """
    if len(stats) == 0:
        raise ValueError("stats is empty: no client statistics to merge")
    means, vars_, ns = [], [], []
    for i, item in enumerate(stats):
        if len(item) != 3:
            raise ValueError(f"stats[{i}] should be (mean, var, n), got {len(item)} items")
        m, v, n = item
        m = np.asarray(m, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        if m.ndim != 1 or v.shape != m.shape:
            raise ValueError(f"stats[{i}]: mean and var should be 1-D of equal shape, got {m.shape} and {v.shape}")
        if means and m.shape != means[0].shape:
            raise ValueError(f"stats[{i}] has {m.shape[0]} channels but stats[0] has {means[0].shape[0]}")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(v))):
            raise ValueError(f"stats[{i}] contains NaN or inf")
        if np.any(v < 0):
            raise ValueError(f"stats[{i}] has a negative variance")
        if int(n) <= 0:
            raise ValueError(f"stats[{i}] has n={n}; each client should report n > 0")
        means.append(m)
        vars_.append(v)
        ns.append(float(n))
    w = np.asarray(ns)[:, None]
    total = w.sum()
    mu = (w * np.stack(means)).sum(0) / total
    second = (w * (np.stack(vars_) + np.stack(means) ** 2)).sum(0) / total
    return mu, np.maximum(second - mu**2, 0.0), int(total)


@torch.no_grad()
def set_bn_stats(model: nn.Module, stats: Mapping[str, tuple[np.ndarray, ...]]) -> nn.Module:
    """Write merged statistics into the BN layers' ``running_mean`` / ``running_var`` (in place).

    The population variance is stored as is (PyTorch keeps an unbiased running estimate; with n in the
    thousands the n/(n-1) factor is below 1e-3 and is omitted).
    """
    modules = dict(model.named_modules())
    for name, item in stats.items():
        if name not in modules or not isinstance(modules[name], nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"{name!r} is not a BatchNorm layer of the model; BN layers: {bn_layer_names(model)}")
        bn = modules[name]
        mean, var = item[0], item[1]
        if np.shape(mean) != tuple(bn.running_mean.shape):
            raise ValueError(f"stats[{name!r}] has {np.shape(mean)} channels, "
                             f"the layer has {tuple(bn.running_mean.shape)}")
        bn.running_mean.copy_(torch.as_tensor(mean, dtype=bn.running_mean.dtype))
        bn.running_var.copy_(torch.as_tensor(var, dtype=bn.running_var.dtype))
    return model
