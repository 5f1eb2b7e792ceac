"""The default EVA experiment: what masked modelling of image-text aligned features buys on real images.

Data: the shipped CIFAR-10 JPEG subset. A CLIP-style teacher is trained on shard 0 (labels allowed; once per
run, as a fixed pretrained CLIP would be given). Students with the same architecture pretrain without labels on
shard 1, then are fine-tuned the same way on a class-balanced labelled subset of shard 0 (``label_counts``)
and scored on the 5,000 test images. Arms:

- ``Scratch`` (baseline): no pretraining;
- ``MAE`` (baseline): pixel MIM, 75 % random mask, MSE on per-patch normalised pixels;
- ``EVA`` (method): masked prediction of the teacher's patch features, BEiT block masks (40 %), 1 − cos loss;
- ``Distill`` (baseline): the same feature regression without masking;
- ``Teacher`` (reference): a linear probe of the teacher's pooled features, the ceiling.

Metrics (percent): ``finetune_top1`` and ``probe_top1`` (logistic regression on the frozen pretrained
features); ``patch_cosine`` (EVA, Distill: student-teacher patch-feature cosine on the test images); the
teacher's ``zeroshot_top1``. Setting ``labels=N``. Figures: pretraining curves, patch-cosine histograms,
fine-tune top-1 by arm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from reprozoo.core.device import resolve_device
from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.io import atomic_savefig
from reprozoo.core.plots import figure, line_plot, metric_by_dataset
from reprozoo.core.progress import log
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result
from reprozoo.core.seed import seed_everything
from reprozoo.eva.baselines import MAEPretrainer
from reprozoo.eva.pretrain import EVAPretrainer
from reprozoo.eva.teacher import ClipStyleTeacher, caption_embeddings
from reprozoo.eva.train import features, linear_probe, train_loop
from reprozoo.eva.vit import EVA_CONFIGS, Eva, create_eva, load_eva_checkpoint
from reprozoo.training import top1

__all__ = ["EVAConfig", "CifarTensors", "cifar_tensors", "run", "SPEC"]

#: CIFAR-10 per-channel mean and std (the usual constants; images are normalised with them).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
ARMS = ("Scratch", "MAE", "EVA", "Distill")
#: batch of the evaluation passes: on CPU a tiny ViT's forward costs about 35 % less per image at 128 than at
#: 1000 (the attention maps of a large batch leave the cache)
EVAL_BATCH = 128


@dataclass
class EVAConfig(TorchExperimentConfig):
    """Knobs of the EVA experiment (defaults = the ``quick`` preset)."""

    datasets: tuple[str, ...] = ("CIFAR-10",)
    seeds: tuple[int, ...] = (0, 1)
    #: student architecture (a name of EVA_CONFIGS for 32 px images)
    model: str = knob("eva_tiny_patch4_32", choices=tuple(k for k in EVA_CONFIGS if k.endswith("_32")))
    #: baseline arms run beside EVA
    arms: tuple[str, ...] = knob(("Scratch", "MAE", "Distill"), choices=("Scratch", "MAE", "Distill"), unique=True)
    #: labelled shard-0 images for fine-tuning and probing (class-balanced)
    label_counts: tuple[int, ...] = knob((1000,), ge=10, le=5000, unique=True, nonempty=True)
    #: shard-1 images used for pretraining (5000 = all)
    n_pretrain: int = knob(5000, ge=64, le=5000)
    #: shard-0 images the teacher trains on, and test images scored (5000 = all; fewer for the smoke preset)
    n_teacher: int = knob(5000, ge=64, le=5000)
    n_test: int = knob(5000, ge=100, le=5000)
    #: text encoder of the teacher's captions (MiniLM through reprozoo.text when installed, else TF-IDF)
    text_encoder: str = knob("tfidf", choices=("tfidf", "minilm"))
    #: teacher tower: CIFAR ResNet depth and width; epochs on shard 0
    teacher_depth: int = knob(8, ge=8)
    teacher_width: int = knob(16, ge=4)
    teacher_epochs: int = knob(5, ge=1)
    teacher_lr: float = knob(3e-3, gt=0)
    #: pretraining (paper: 150 epochs, batch 4096, lr 1e-3, AdamW (0.9, 0.98), wd 0.05, clip 3.0)
    pretrain_epochs: int = knob(2, ge=1)
    pretrain_lr: float = knob(1.5e-3, gt=0)
    batch_size: int = knob(128, ge=2)
    warmup_epochs: float = knob(0.5, ge=0)
    #: EVA: fraction masked (105/256 in the paper) and the smallest mask block (16 patches on 16x16)
    mask_ratio: float = knob(0.4, gt=0, lt=1)
    min_block: int = knob(4, ge=1)
    #: MAE's random mask ratio
    mae_mask_ratio: float = knob(0.75, gt=0, lt=1)
    #: fine-tuning (paper IN-1K: lr 3e-5 at batch 512, layer decay 0.95, label smoothing 0.3; 0.85 for IN-21K)
    finetune_epochs: int = knob(8, ge=1)
    finetune_lr: float = knob(1e-3, gt=0)
    finetune_batch_size: int = knob(64, ge=2)
    layer_decay: float = knob(0.75, gt=0, le=1)
    #: layer decay of the from-scratch arm (1 = none, as from-scratch ViT training does)
    scratch_layer_decay: float = knob(1.0, gt=0, le=1)
    label_smoothing: float = knob(0.1, ge=0, lt=1)
    drop_path: float = knob(0.1, ge=0, lt=1)
    #: inverse L2 strength of the linear probes
    probe_C: float = knob(0.1, gt=0)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "smoke": {"seeds": (0,), "n_pretrain": 256, "n_teacher": 256, "n_test": 200, "label_counts": (100,),
                  "teacher_epochs": 1,
                  "pretrain_epochs": 1, "finetune_epochs": 1, "batch_size": 64},
        "standard": {"seeds": (0, 1, 2), "model": "eva_small_patch4_32", "label_counts": (1000, 5000),
                     "text_encoder": "minilm", "teacher_depth": 20, "teacher_epochs": 30, "pretrain_epochs": 100,
                     "finetune_epochs": 50, "warmup_epochs": 5.0},
    }
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ("CIFAR-10",)

    def validate(self) -> None:
        super().validate()
        if (self.teacher_depth - 2) % 6:
            raise ConfigError(f"teacher_depth={self.teacher_depth} should be 6n+2 (8, 14, 20, ...)")
        grid = EVA_CONFIGS[self.model]["img_size"] // EVA_CONFIGS[self.model]["patch_size"]
        masked = int(round(self.mask_ratio * grid * grid))
        if self.min_block > masked:
            raise ConfigError(f"min_block={self.min_block} should be <= the {masked} patches mask_ratio="
                              f"{self.mask_ratio} masks on the {grid}x{grid} grid")
        if any(n % 10 for n in self.label_counts):
            raise ConfigError(f"label_counts={self.label_counts!r}: each should be a multiple of 10 (class-balanced)")


# -- data -------------------------------------------------------------------------------------------
@dataclass
class CifarTensors:
    """The shipped subset as normalised float tensors: shard 0 (teacher, labels), shard 1 (pretraining), test."""

    x0: torch.Tensor
    y0: torch.Tensor
    x1: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]


def cifar_tensors(device: torch.device | str = "cpu", n_test: int = 5000) -> CifarTensors:
    """Load ``data/cifar10_jpeg_subset`` (:func:`reprozoo.datasets.load_cifar10_subset`), normalise with the
    CIFAR-10 mean/std and move to ``device``. Shard 1's labels are not returned (pretraining is unlabelled).
    ``n_test`` < 5000 keeps a class-balanced part of the test set (smoke runs)."""
    from reprozoo.datasets import load_cifar10_subset

    ds = load_cifar10_subset((0, 1))
    x, y = ds.tensors("train")
    xt, yt = ds.tensors("test")
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    x, xt = (x - mean) / std, (xt - mean) / std
    half = x.shape[0] // 2  # shards are concatenated in order: 0 then 1
    d = torch.device(device)
    if n_test < yt.shape[0]:
        keep = balanced_subset(yt, n_test, 0)
        xt, yt = xt[keep], yt[keep]
    return CifarTensors(x[:half].to(d), y[:half].to(d), x[half:].to(d), xt.to(d), yt.to(d), ds.classes)


def balanced_subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` labelled images, n / K per class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    yy = y.cpu().numpy()
    k = int(yy.max()) + 1
    idx = np.concatenate([rng.permutation(np.flatnonzero(yy == c))[: n // k] for c in range(k)])
    return torch.from_numpy(np.sort(idx)).to(y.device)


def _first_per_class(y: torch.Tensor, order: torch.Tensor, n: int) -> torch.Tensor:
    """Positions in ``order`` of the first n / K images of each class (nested subsets for growing n)."""
    yo = y[order].cpu().numpy()
    k = int(yo.max()) + 1
    pos = np.concatenate([np.flatnonzero(yo == c)[: n // k] for c in range(k)])
    return torch.from_numpy(np.sort(pos)).to(y.device)


# -- arms -------------------------------------------------------------------------------------------
def _student(cfg: EVAConfig, mask_token: bool) -> Eva:
    return create_eva(cfg.model, mask_token=mask_token, global_pool="token", num_classes=0)


def train_teacher(cfg: EVAConfig, data: CifarTensors, seed: int) -> tuple[ClipStyleTeacher, str]:
    """The CLIP-style teacher on shard 0 (its labels through the class captions); returns it frozen."""
    text, used = caption_embeddings(data.classes, cfg.text_encoder)
    seed_everything(seed)
    teacher = ClipStyleTeacher(torch.from_numpy(text), cfg.teacher_depth, cfg.teacher_width).to(data.x0.device)
    idx = balanced_subset(data.y0, cfg.n_teacher - cfg.n_teacher % 10, seed) if cfg.n_teacher < 5000 else slice(None)
    train_loop(teacher, (data.x0[idx], data.y0[idx]), lambda m, xb, yb: F.cross_entropy(m.logits(xb), yb),
               epochs=cfg.teacher_epochs, batch_size=cfg.batch_size, lr=cfg.teacher_lr, weight_decay=0.05,
               warmup_epochs=min(1.0, cfg.teacher_epochs / 10), seed=seed, desc="CLIP-style teacher")
    return teacher.eval().requires_grad_(False), used


def pretrain(cfg: EVAConfig, arm: str, data: CifarTensors, teacher: ClipStyleTeacher, seed: int):
    """Pretrain one student arm on shard 1; returns (pretrainer, per-epoch losses, state dict for fine-tuning)."""
    seed_everything(seed)
    x1 = data.x1[: cfg.n_pretrain]
    if arm == "MAE":
        module = MAEPretrainer(_student(cfg, False), cfg.mae_mask_ratio, seed=seed)
    else:
        module = EVAPretrainer(_student(cfg, arm == "EVA"), teacher, cfg.mask_ratio, cfg.min_block,
                               masking=arm == "EVA", seed=seed)
    module = module.to(x1.device)
    hist = train_loop(module, (x1,), lambda m, xb: m(xb), epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size,
                      lr=cfg.pretrain_lr, min_lr=1e-5, warmup_epochs=cfg.warmup_epochs, weight_decay=0.05,
                      betas=(0.9, 0.98), eps=1e-6, clip_grad=3.0, seed=seed, desc=f"{arm} pretraining",
                      params=module)
    state = module.encoder_state_dict() if arm == "MAE" else module.mim_state_dict()
    return module, hist, state


def finetune(cfg: EVAConfig, state: dict | None, x: torch.Tensor, y: torch.Tensor, seed: int, desc: str) -> Eva:
    """Fine-tune (mean pooling + fc_norm, layer decay) from ``state`` (None: from scratch)."""
    seed_everything(seed)
    model = create_eva(cfg.model, num_classes=int(y.max()) + 1, global_pool="avg", drop_path_rate=cfg.drop_path)
    if state is not None:
        load_eva_checkpoint(state, model)
    model = model.to(x.device)
    ls = cfg.label_smoothing
    train_loop(model, (x, y), lambda m, xb, yb: F.cross_entropy(m(xb), yb, label_smoothing=ls),
               epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size, lr=cfg.finetune_lr,
               warmup_epochs=min(1.0, cfg.finetune_epochs / 10), weight_decay=0.05,
               layer_decay=cfg.layer_decay if state is not None else cfg.scratch_layer_decay, seed=seed, desc=desc)
    return model.eval()


@torch.no_grad()
def _frozen_pass(student: Eva, x: torch.Tensor, lm_head: torch.nn.Module | None = None,
                 targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One eval-mode pass of a pretrained student over ``x``: its frozen features for the probe (the mean of
    the patch tokens after the final norm, (B, D)) and, for the feature-regression arms (``lm_head`` and the
    teacher's patch features ``targets``), each image's mean student-teacher patch cosine (B,), as
    :meth:`EVAPretrainer.patch_cosine` computes it, from the same forward pass. Cost: one forward per image."""
    student.eval()
    pooled, cos = [], []
    for i in range(0, x.shape[0], EVAL_BATCH):
        tokens = student.forward_features(x[i:i + EVAL_BATCH])[:, student.num_prefix_tokens:]
        pooled.append(tokens.mean(1))
        if lm_head is not None:
            pred = lm_head(tokens).float()
            cos.append(F.cosine_similarity(pred, targets[i:i + EVAL_BATCH].float(), dim=-1).mean(1))
    return torch.cat(pooled), torch.cat(cos) if cos else None


# -- the run ----------------------------------------------------------------------------------------
def run(config: EVAConfig, out_dir: Path) -> Result:
    """Teacher once, then per seed: pretrain the arms, probe and fine-tune each on every label count."""
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    result = Result(name="eva", preset=config.preset, config=config.to_dict())
    data = cifar_tensors(device, config.n_test)
    ds = config.datasets[0]
    teacher, used = train_teacher(config, data, config.seeds[0])
    if used != config.text_encoder:
        result.notes.append(f"text encoder {config.text_encoder!r} unavailable; the teacher used {used!r}")
    result.notes.append(
        "The teacher is trained with shard-0 labels (class-name captions), so the EVA and Distill arms partly "
        "distil labels; the MAE and Scratch arms see no labels before fine-tuning.")
    zs = 100.0 * float((features(teacher.logits, data.x_test, EVAL_BATCH).argmax(1) == data.y_test).float().mean())
    # nested class-balanced labelled subsets of shard 0 (the first n of one seeded order per class)
    order = balanced_subset(data.y0, max(config.label_counts), config.seeds[0])
    subsets = {n: _first_per_class(data.y0, order, n) for n in config.label_counts}
    t_train = features(teacher.features, data.x0[order], EVAL_BATCH)
    t_test = features(teacher.features, data.x_test, EVAL_BATCH)
    t_patches = features(teacher, data.x_test, EVAL_BATCH)  # fixed: shared by every student and seed
    for n, idx in subsets.items():
        setting = f"labels={n}"
        probe = linear_probe(t_train[idx], data.y0[order][idx], t_test, data.y_test, config.probe_C)
        for seed in config.seeds:  # the teacher is fixed: one number, recorded per seed for the tables
            result.add_many(ds, "Teacher", "reference", {"probe_top1": probe, "zeroshot_top1": zs}, seed=seed,
                            setting=setting)

    curves: dict[str, tuple[list[int], list[float]]] = {}
    cosines: dict[str, np.ndarray] = {}
    for seed in config.seeds:
        for arm in ("EVA", *[a for a in ARMS if a in config.arms]):
            role = "method" if arm == "EVA" else "baseline"
            if arm == "Scratch":
                state, student = None, _student(config, False).to(device)  # probe of random features: a floor
            else:
                module, hist, state = pretrain(config, arm, data, teacher, seed)
                student = module.student
                if seed == config.seeds[0]:
                    curves[arm] = (list(range(1, len(hist) + 1)), [h / hist[0] for h in hist])
            head = module.lm_head if arm in ("EVA", "Distill") else None
            f_train = _frozen_pass(student, data.x0[order])[0]
            f_test, cos = _frozen_pass(student, data.x_test, head, t_patches)
            if cos is not None:
                result.add(ds, arm, role, "patch_cosine", float(cos.mean()), seed=seed)
                if seed == config.seeds[0]:
                    cosines[arm] = cos.cpu().numpy()
            for n, idx in subsets.items():
                setting = f"labels={n}"
                x_l, y_l = data.x0[order][idx], data.y0[order][idx]
                probe = linear_probe(f_train[idx], y_l, f_test, data.y_test, config.probe_C)
                model = finetune(config, state, x_l, y_l, seed, f"{arm} fine-tuning ({setting})")
                result.add_many(ds, arm, role, {"finetune_top1": top1(model, data.x_test, data.y_test, EVAL_BATCH),
                                                "probe_top1": probe}, seed=seed, setting=setting)
    _figures(result, curves, cosines, out_dir)
    result.notes.append(f"whole run: {time.perf_counter() - t_start:.0f} s wall-clock on {device}")
    log(f"eva: {len(result.records)} records, {len(result.figures)} figures")
    return result


def _figures(result: Result, curves: dict, cosines: dict, out_dir: Path) -> None:
    fig_dir = out_dir / "figures"
    if curves:
        path = line_plot(curves, fig_dir / "pretraining_curves.png", xlabel="epoch",
                         ylabel="loss / first-epoch loss", title="pretraining loss (first seed)", integer_x=True)
        result.figures.append(str(path.relative_to(out_dir)))
    if cosines:
        fig, ax = figure()
        for arm, c in cosines.items():
            ax.hist(c, bins=40, alpha=0.6, label=f"{arm} (mean {c.mean():.3f})")
        ax.set_xlabel("mean cosine(student prediction, teacher feature) over patches, per test image")
        ax.set_ylabel("images")
        ax.set_title("teacher-student patch-feature cosine on held-out images (first seed)")
        ax.legend(fontsize=8)
        result.figures.append(str(atomic_savefig(fig, fig_dir / "patch_cosine.png").relative_to(out_dir)))
    for metric in ("finetune_top1", "probe_top1"):
        path = metric_by_dataset(result, metric, fig_dir / f"{metric}.png",
                                 setting=next(r.setting for r in result.records if r.metric == metric))
        result.figures.append(str(path.relative_to(out_dir)))


SPEC = ExperimentSpec(
    name="eva",
    title="EVA: masked modelling of image-text aligned features with a timm-compatible ViT",
    field="vision",
    paper="Fang et al., 'EVA: Exploring the Limits of Masked Visual Representation Learning at Scale', "
          "CVPR 2023, arXiv:2211.07636",
    config=EVAConfig,
    run=run,
    primary_metric="finetune_top1",
    higher_is_better=True,
    extra="",
    threads=2,
)
