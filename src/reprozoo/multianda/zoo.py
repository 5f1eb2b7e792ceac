"""The model zoo of the transfer experiment: small, architecturally different CIFAR-10 classifiers.

Each zoo entry is a backbone from :mod:`reprozoo.models` behind a fixed input normalisation (so
attacks see [0, 1] pixels), trained on the shipped CIFAR-10 subset with a short recipe, plus one
PGD adversarially trained model (Madry et al., ICLR 2018) as a defended target.

Trained weights are cached under ``$REPROZOO_CACHE/models`` (default ``~/.cache/reprozoo/models``)
in files whose names carry a hash of the training config and of the training data, written
atomically; a missing or unreadable cache only means the model is trained again.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.io import atomic_torch_save
from reprozoo.core.io import cache_dir as core_cache_dir
from reprozoo.core.progress import log
from reprozoo.models import mixer_tiny, resnet8, small_cnn, vgg_tiny, vit_tiny
from reprozoo.training import random_crop_flip

__all__ = ["ZOO", "ZooSpec", "Normalized", "build_model", "cache_dir", "data_checksum", "get_model",
           "train_classifier"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
ZOO_VERSION = 2  # bump when the training code changes so that stale caches are not reused
# (2: the initial weights are seeded; before, the first model's came from torch's random start seed)

_FACTORIES = {"resnet8": resnet8, "small_cnn": small_cnn, "vgg_tiny": vgg_tiny, "vit_tiny": vit_tiny,
              "mixer_tiny": mixer_tiny}


@dataclass(frozen=True)
class ZooSpec:
    """How one zoo model is built and trained.

    Attributes
    ----------
    arch : str
        Factory name in :mod:`reprozoo.models` (resnet8, small_cnn, vgg_tiny, vit_tiny, mixer_tiny).
    kwargs : dict
        Factory arguments (e.g. widths).
    epochs : int
    optimizer : {"sgd", "adamw"}
    lr, weight_decay : float
    batch_size : int
    adv_eps : float
        0 for standard training; > 0 for PGD-AT with this L∞ radius (in [0, 1] pixel units).
    adv_steps : int
        PGD steps per training batch in PGD-AT (step size 2.5·adv_eps/adv_steps, random start).
    """

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 6
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 128
    adv_eps: float = 0.0
    adv_steps: int = 3

    def key(self, seed: int) -> str:
        blob = json.dumps({**asdict(self), "seed": seed, "version": ZOO_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: Default zoo: five architectures (residual CNN, plain VGG-style CNN with an FC classifier, a
#: small all-conv CNN with global pooling, a ViT, an MLP-Mixer) and a PGD-AT CNN. Epoch counts are
#: sized for a few minutes of training on two CPU cores in total.
ZOO: dict[str, ZooSpec] = {
    "ResNet-8": ZooSpec("resnet8", {"width": 8}, epochs=6),
    "VGG": ZooSpec("vgg_tiny", {}, epochs=6),
    "CNN": ZooSpec("small_cnn", {"channels": (16, 32, 64)}, epochs=8),
    "ViT": ZooSpec("vit_tiny", {"embed_dim": 48, "depth": 3, "num_heads": 3}, epochs=8, optimizer="adamw",
                   lr=2e-3, weight_decay=0.05),
    "Mixer": ZooSpec("mixer_tiny", {"embed_dim": 64, "depth": 3, "token_hidden": 64, "channel_hidden": 128},
                     epochs=8, optimizer="adamw", lr=2e-3, weight_decay=0.05),
    "CNN-AT": ZooSpec("small_cnn", {"channels": (16, 32, 64)}, epochs=6, adv_eps=8 / 255, adv_steps=3),
}


class Normalized(nn.Module):
    """``net((x - mean) / std)``: a classifier taking [0, 1] pixels. x (N, C, H, W) -> (N, classes)."""

    def __init__(self, net: nn.Module, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(spec: ZooSpec, num_classes: int = 10) -> Normalized:
    """An untrained zoo model: ``Normalized(factory(num_classes, **kwargs))``."""
    if spec.arch not in _FACTORIES:
        raise ValueError(f"arch={spec.arch!r} is not known; choose one of {sorted(_FACTORIES)}")
    return Normalized(_FACTORIES[spec.arch](num_classes, **spec.kwargs))


def cache_dir() -> Path:
    """``$REPROZOO_CACHE/models`` if the variable is set, else ``~/.cache/reprozoo/models``."""
    return core_cache_dir("models")


def data_checksum(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 (first 12 hex digits) of the training arrays' bytes, shapes and dtypes."""
    h = hashlib.sha256()
    for a in (x, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
         gen: torch.Generator) -> torch.Tensor:
    """PGD-L∞ training examples with random start, step 2.5·eps/steps (model in eval mode)."""
    was = model.training
    model.eval()
    alpha = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        g = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)[0]
        adv = torch.min(torch.max(adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    model.train(was)
    return adv.detach()


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: ZooSpec, seed: int = 0) -> nn.Module:
    """Train ``model`` in place on x (N, C, H, W) in [0, 1], y (N,) with ``spec``'s recipe; returns it.

    One-cycle learning rate over ``spec.epochs`` epochs, random crop + flip; PGD-AT when
    ``spec.adv_eps > 0``. Deterministic for a given seed. Cost: epochs·N forward/backward passes
    (× (1 + adv_steps) for PGD-AT).
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)  # draws on the data's device (the same on CPU)
    torch.manual_seed(seed)
    n = x.shape[0]
    steps_per_epoch = (n + spec.batch_size - 1) // spec.batch_size
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, nesterov=True,
                              weight_decay=spec.weight_decay)
    elif spec.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        raise ValueError(f"optimizer={spec.optimizer!r} should be 'sgd' or 'adamw'")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch,
                                                pct_start=0.25)
    model.train()
    for _ in range(spec.epochs):
        perm = torch.randperm(n, generator=gen, device=x.device)
        for i in range(steps_per_epoch):
            idx = perm[i * spec.batch_size: (i + 1) * spec.batch_size]
            xb, yb = random_crop_flip(x[idx], gen), y[idx]
            if spec.adv_eps > 0:
                xb = _pgd(model, xb, yb, spec.adv_eps, spec.adv_steps, gen)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def get_model(name: str, spec: ZooSpec, x: torch.Tensor, y: torch.Tensor, data_sha: str, *, seed: int = 0,
              use_cache: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The trained zoo model ``name``: from the cache when a matching file exists, else trained.

    Returns ``(model in eval mode, info)`` with info keys ``cached`` (bool), ``train_seconds``, ``path``.
    The cache file name is ``multianda-<name>-<config hash>-data<data hash>.pt``.
    """
    safe = "".join(c if c.isalnum() else "_" for c in name)
    on = "" if x.device.type == "cpu" else f"-{x.device.type}"  # another device trains other weights
    path = cache_dir() / f"multianda-{safe}-{spec.key(seed)}-data{data_sha}{on}.pt"
    torch.manual_seed(seed)  # initial weights from the seed alone (torch's own start seed may be random)
    model = build_model(spec).to(x.device)
    if use_cache and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("data_sha") == data_sha and blob.get("key") == spec.key(seed):
                model.load_state_dict(blob["state_dict"])
                model.eval()
                return model, {"cached": True, "train_seconds": float(blob.get("train_seconds", 0.0)),
                               "path": str(path)}
        except Exception as exc:  # a corrupt cache is retrained, never fatal
            warnings.warn(f"ignoring unreadable cached model {path}: {exc}", RuntimeWarning, stacklevel=2)
    log(f"training zoo model {name} ({spec.arch}, {spec.epochs} epochs{', PGD-AT' if spec.adv_eps else ''})")
    t0 = time.process_time()
    train_classifier(model, x, y, spec, seed=seed)
    secs = time.process_time() - t0
    if use_cache:
        try:
            atomic_torch_save({"state_dict": model.state_dict(), "key": spec.key(seed), "data_sha": data_sha,
                               "spec": {**asdict(spec), "seed": seed}, "train_seconds": secs}, path)
        except OSError as exc:
            warnings.warn(f"could not write the model cache {path}: {exc}", RuntimeWarning, stacklevel=2)
    return model, {"cached": False, "train_seconds": secs, "path": str(path)}
