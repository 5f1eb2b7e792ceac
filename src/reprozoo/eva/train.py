"""Pretraining and fine-tuning loops, single-process or data-parallel under ``torchrun``.

One loop serves every stage (EVA, MAE and distillation pretraining, supervised fine-tuning, the teacher):
AdamW, a per-step cosine schedule with linear warm-up (BEiT/EVA ``cosine_scheduler``), gradient clipping,
bf16 autocast on CUDA. When ``torch.distributed`` is initialised (``torchrun``) the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, NCCL on GPU), each rank reads its ``DistributedSampler`` share of
the data, and rank 0 alone writes checkpoints and logs. A checkpoint is written after every epoch; a run
started again with the same ``checkpoint`` path resumes after the last finished epoch.

Fine-tuning uses layer-wise learning-rate decay (BEiT Sec. 3 / EVA Sec. 3): parameter group of layer i
(0 = embeddings, i = block i, L + 1 = head and final norms) gets lr · d^(L+1−i); biases, norms, the position
embedding and the class token get no weight decay.

Launch a data-parallel run (CPU, 2 processes)::

    torchrun --nproc_per_node 2 -m reprozoo.eva.train pretrain --out runs/eva_ddp --epochs 1

Cost per epoch: O(n / world_size) forward/backward passes per rank plus one all-reduce of the gradients per step.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from reprozoo.core.checks import check_tensor
from reprozoo.core.io import atomic_torch_save
from reprozoo.core.progress import log, track
from reprozoo.training import random_crop_flip

__all__ = ["cosine_schedule", "layer_id", "param_groups_layer_decay", "train_loop", "features", "linear_probe",
           "rank", "main"]


def rank() -> int:
    """This process's rank (0 outside ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def cosine_schedule(base: float, final: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """Per-step values: linear warm-up from ``warmup_start`` to ``base``, then cosine decay to ``final``.

    >>> s = cosine_schedule(1.0, 0.0, epochs=2, steps_per_epoch=2, warmup_epochs=1)
    >>> [round(float(v), 3) for v in s]
    [0.0, 0.5, 1.0, 0.0]
    """
    total = epochs * steps_per_epoch
    warm = min(int(round(warmup_epochs * steps_per_epoch)), total)
    w = np.linspace(warmup_start, base, warm, endpoint=False) if warm else np.zeros(0)
    rest = total - warm
    t = np.arange(rest)
    c = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t / max(rest - 1, 1))) if rest else np.zeros(0)
    return np.concatenate([w, c])


def layer_id(name: str, num_layers: int) -> int:
    """Layer of parameter ``name`` for layer decay: 0 embeddings/tokens, i + 1 for ``blocks.i``, else
    ``num_layers + 1`` (final norms, head); BEiT's ``get_num_layer_for_vit``."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    m = re.match(r"blocks\.(\d+)\.", name)
    return int(m.group(1)) + 1 if m else num_layers + 1


def param_groups_layer_decay(model: nn.Module, weight_decay: float = 0.05, layer_decay: float = 1.0
                             ) -> list[dict]:
    """AdamW parameter groups with ``lr_scale = layer_decay ** (L + 1 − layer_id)`` and no weight decay on
    1-D parameters (biases, norms) or the model's ``no_weight_decay()`` names. ``L`` = ``len(model.blocks)``
    (0 for a model without blocks)."""
    num_layers = len(getattr(model, "blocks", ()))
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim == 1 or name in skip or name.endswith(".bias")
        lid = layer_id(name, num_layers) if num_layers else 0
        key = (lid, no_wd)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - lid) if num_layers else 1.0
            groups[key] = {"params": [], "names": [], "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_scale": scale, "layer_id": lid}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def train_loop(model: nn.Module, tensors: Sequence[torch.Tensor], loss_fn: Callable[..., torch.Tensor], *,
               epochs: int, batch_size: int, lr: float, min_lr: float = 1e-6, warmup_epochs: float = 0.0,
               weight_decay: float = 0.05, layer_decay: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
               eps: float = 1e-8, clip_grad: float | None = None, augment: bool = True, seed: int = 0,
               checkpoint: str | Path | None = None, desc: str = "train",
               params: nn.Module | None = None, data_parallel: bool = True) -> list[float]:
    """Train ``model`` on ``tensors`` (same first dimension, already on the model's device) and return the
    mean loss of every epoch.

    ``loss_fn(model, *batch)`` returns the scalar loss of one batch (``model`` is the DDP wrapper when
    distributed). The first tensor is the images: random crop (pad 4) + flip when ``augment``, the same crop
    for whatever the loss feeds (student and teacher). ``params``: the module whose parameters are optimised
    (default ``model``; layer decay reads its ``blocks``). ``data_parallel=False`` trains in this process
    alone even under ``torchrun`` (a small model that rank 0 trains while the others wait). Learning rate per
    step from :func:`cosine_schedule`, times each group's ``lr_scale``.
    """
    x = check_tensor(tensors[0], "images", ndim=4, floating=True)
    n = x.shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"tensors should share their first dimension, got {[tuple(t.shape) for t in tensors]}")
    distributed = data_parallel and dist.is_available() and dist.is_initialized()
    world, me = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    target = params if params is not None else model
    groups = param_groups_layer_decay(target, weight_decay, layer_decay)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr, betas=betas,
                            eps=eps)
    net: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = x.device
        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    sampler = DistributedSampler(range(n), num_replicas=world, rank=me, shuffle=True, seed=seed, drop_last=True)
    per_rank = len(sampler)
    steps = max(per_rank // batch_size, 1)
    sched = cosine_schedule(lr, min_lr, epochs, steps, warmup_epochs)
    gen = torch.Generator(device=x.device).manual_seed(seed * 1000 + me)
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():  # resume after the last finished epoch
        state = torch.load(ckpt, map_location=x.device, weights_only=False)
        target.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["epoch"], list(state["history"])
        gen.set_state(state["generator"].cpu())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if x.device.type == "cuda" else _null()
    model.train()
    for epoch in track(range(start, epochs), desc, total=epochs - start):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), device=x.device)
        total = torch.zeros((), device=x.device)
        for it in range(steps):
            step_lr = float(sched[epoch * steps + it])
            for g in opt.param_groups:
                g["lr"] = step_lr * g["lr_scale"]
            idx = order[it * batch_size:(it + 1) * batch_size]
            batch = [t[idx] for t in tensors]
            if augment:
                batch[0] = random_crop_flip(batch[0], gen)
            with autocast:
                loss = loss_fn(net, *batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(target.parameters(), clip_grad)
            opt.step()
            total += loss.detach().float()
        if distributed:
            dist.all_reduce(total)
        history.append(float(total) / (steps * world))  # one host sync per epoch
        if ckpt is not None and me == 0:
            atomic_torch_save({"model": target.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                               "history": history, "generator": gen.get_state()}, ckpt)
    return history


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@torch.no_grad()
def features(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``fn`` applied to ``x`` in batches (no gradient), concatenated."""
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def linear_probe(train_features: torch.Tensor, y_train: torch.Tensor, test_features: torch.Tensor,
                 y_test: torch.Tensor, C: float = 1.0, seed: int = 0) -> float:
    """Top-1 (%) of a multinomial logistic regression (scikit-learn, L-BFGS) on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr = train_features.detach().float().cpu().numpy()
    xte = test_features.detach().float().cpu().numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=seed))
    clf.fit(xtr, y_train.cpu().numpy())
    return 100.0 * float((clf.predict(xte) == y_test.cpu().numpy()).mean())


# -- command line (torchrun) ----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m reprozoo.eva.train {pretrain,finetune} ...``, under ``torchrun`` for data parallelism.

    ``pretrain``: trains a CLIP-style teacher on shard 0 (rank 0 caches it in ``--out``), then the EVA student
    on shard 1; writes ``teacher.pt``, ``pretrain.ckpt`` (resumable) and ``student_mim.pt`` (official MIM
    layout). ``finetune``: loads ``student_mim.pt`` and fine-tunes on ``--labels`` images of shard 0 with layer
    decay; writes ``finetune.ckpt`` and prints the test top-1.
    """
    p = argparse.ArgumentParser(prog="python -m reprozoo.eva.train")
    p.add_argument("stage", choices=("pretrain", "finetune"))
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="eva_tiny_patch4_32")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=0, help="images used (0 = all)")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=5000, help="test images scored (class-balanced)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from reprozoo.eva.experiment import cifar_tensors

    backend = "nccl" if a.device.startswith("cuda") else "gloo"
    if not dist.is_initialized() and "RANK" in os.environ:
        dist.init_process_group(backend)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if a.device.startswith("cuda") else a.device)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    data = cifar_tensors(device, a.n_test)
    from reprozoo.eva.pretrain import EVAPretrainer
    from reprozoo.eva.teacher import ClipStyleTeacher, caption_embeddings
    from reprozoo.eva.vit import create_eva, load_eva_checkpoint

    try:
        if a.stage == "pretrain":
            text, _ = caption_embeddings(data.classes, "tfidf")
            teacher = ClipStyleTeacher(torch.from_numpy(text)).to(device)
            if rank() == 0 and not (out / "teacher.pt").is_file():
                x0, y0 = _take(data.x0, data.y0, a.n_train)
                train_loop(teacher, (x0, y0), lambda m, xb, yb: F.cross_entropy(m.logits(xb), yb), epochs=a.epochs,
                           batch_size=a.batch_size, lr=a.lr, seed=a.seed, desc="teacher", data_parallel=False)
                atomic_torch_save(teacher.state_dict(), out / "teacher.pt")
            if dist.is_initialized():
                dist.barrier()
            teacher.load_state_dict(torch.load(out / "teacher.pt", map_location=device, weights_only=True))
            student = create_eva(a.model, mask_token=True, global_pool="token", num_classes=0)
            eva = EVAPretrainer(student, teacher, 0.4, 4, seed=a.seed + rank()).to(device)
            (x1,) = _take(data.x1, None, a.n_train)
            hist = train_loop(eva, (x1,), lambda m, xb: m(xb), epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                              betas=(0.9, 0.98), eps=1e-6, clip_grad=3.0, seed=a.seed,
                              checkpoint=out / "pretrain.ckpt", desc="EVA pretraining", params=eva)
            if rank() == 0:
                atomic_torch_save(eva.mim_state_dict(), out / "student_mim.pt")
                log(f"pretraining loss per epoch: {', '.join(f'{h:.4f}' for h in hist)}")
                print(f"pretrain loss {hist[-1]:.4f}")
        else:
            model = create_eva(a.model, num_classes=len(data.classes), drop_path_rate=0.1).to(device)
            load_eva_checkpoint(out / "student_mim.pt", model)
            x0, y0 = _take(data.x0, data.y0, a.labels)
            train_loop(model, (x0, y0), lambda m, xb, yb: F.cross_entropy(m(xb), yb, label_smoothing=0.1),
                       epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, layer_decay=0.75, seed=a.seed,
                       checkpoint=out / "finetune.ckpt", desc="fine-tuning")
            if rank() == 0:
                from reprozoo.training import top1

                print(f"finetune top1 {top1(model, data.x_test, data.y_test):.2f}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _take(x: torch.Tensor, y: torch.Tensor | None, n: int):
    """The first ``n`` rows of a fixed shuffle (all when n = 0)."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0)).to(x.device)
    idx = perm[:n] if n else perm
    return (x[idx],) if y is None else (x[idx], y[idx])


if __name__ == "__main__":
    raise SystemExit(main())
