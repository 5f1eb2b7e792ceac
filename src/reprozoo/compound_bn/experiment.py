"""Default experiment of compound BN: BN vs CBN under long-tail losses on CIFAR-10-LT / MNIST-LT.

For every data set × imbalance ratio × loss × seed the same CIFAR ResNet is trained twice with the same
recipe, seed and data order: once with ``nn.BatchNorm2d`` (baseline ``BN+<loss>``) and once with
:class:`CompoundBatchNorm2d` and dual-path learning (method ``CBN+<loss>``). Metrics: top-1 on the balanced
test set and many / medium / few-shot accuracy (%). Recipe: the LDAM-DRW protocol (SGD 0.1, momentum 0.9,
linear warm-up, step decay ×``decay_factor`` at 80 % and again at 90 % of the epochs, DRW from 80 %),
scaled to the epoch budget; ×0.01 at each step (lr 0.1 → 0.001 → 0.00001), as the LDAM-DRW code does.
With several ``group_by`` values, each CBN model is trained once per value and BN (which has no groups)
once, its numbers recorded under every ``group_by`` setting so that each table holds both.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reprozoo.compound_bn.dual_path import CONSISTENCY, DualPathLoss
from reprozoo.compound_bn.layers import CompoundBatchNorm2d, compound_layers
from reprozoo.compound_bn.losses import LOSSES, LongTailLoss, NormedLinear, TrainingDiverged
from reprozoo.core.device import resolve_device
from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.parallel import map_jobs
from reprozoo.core.progress import log, track
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result
from reprozoo.core.seed import seed_everything
from reprozoo.datasets.longtail import make_longtail, shot_accuracies, shot_split
from reprozoo.models import CifarResNet
from reprozoo.training import predict, random_crop_flip

__all__ = ["Config", "CompoundBNConfig", "run", "train_and_evaluate", "build_model", "load_longtail"]

ABLATIONS = ("no-dual", "no-consistency", "K=1", "K=3")


@dataclass
class CompoundBNConfig(TorchExperimentConfig):
    """Knobs of the BN-vs-CBN long-tail experiment (defaults = the ``quick`` preset)."""

    datasets: tuple[str, ...] = ("CIFAR-10-LT",)
    seeds: tuple[int, ...] = (0, 1, 2)
    #: ρ = n_max / n_min of the training set
    imbalance_ratios: tuple[float, ...] = knob((100.0,), ge=1, nonempty=True, unique=True)
    #: long-tail losses (CE, CE-DRW, LDAM-DRW), each run with BN and CBN
    losses: tuple[str, ...] = knob(("CE",), choices=LOSSES, nonempty=True, unique=True)
    #: extra CBN variants: no-dual, no-consistency, K=1, K=3 (with the first loss)
    ablations: tuple[str, ...] = knob((), choices=ABLATIONS, unique=True)
    #: head-class size (the shipped CIFAR subset holds 1,000 per class; quick: 200, for its CPU budget)
    n_max: int = knob(200, ge=0)
    data_seed: int = knob(0, ge=0, lt=2**32)  # which images form the long-tailed subset (fixed across training seeds)
    depth: int = knob(8, ge=8)  # CIFAR ResNet depth 6n+2 (32 in the paper)
    width: int = knob(4, ge=1)  # first-stage channels (16 in the paper)
    epochs: int = knob(60, ge=1)  # training epochs (200 in the paper)
    batch_size: int = knob(64, ge=2)  # 128 in the LDAM protocol; 64 gives more steps on the small subset
    lr: float = knob(0.05, gt=0)  # SGD learning rate (0.1 at batch 128 in the LDAM protocol; scaled linearly)
    momentum: float = knob(0.9, ge=0, lt=1)
    weight_decay: float = knob(2e-4, ge=0)
    warmup_epochs: int = knob(2, ge=0)  # linear warm-up (5 of 200 in the LDAM protocol)
    #: lr ×decay_factor at each of these fractions of the epochs (160, 180 of 200)
    decay_at: tuple[float, ...] = knob((0.8, 0.9), ge=0, le=1)
    #: step-decay factor (0.01 in the LDAM-DRW code: lr ×0.01 after epoch 160 and ×0.0001 after 180)
    decay_factor: float = knob(0.01, gt=0, le=1)
    drw_at: float = knob(0.8, ge=0, le=1)  # DRW starts at this fraction of the epochs (160 of 200)
    augment: bool = True  # random crop (pad 4) + horizontal flip (flip for CIFAR only)
    n_components: int = knob(2, ge=1)  # K of every compound BN layer
    #: moving-average EM momentum (unverified; BN convention); None = cumulative
    cbn_momentum: float | None = knob(0.1, gt=0, le=1)
    detach_responsibilities: bool = False  # stop the gradient through r (unverified)
    per_component_affine: bool = False  # γ_k, β_k per component (unverified)
    min_weight: float = knob(1e-3, ge=0)  # collapse floor on the batch weight of a component (port addition)
    #: re-seed a channel whose components lie closer than this × its SD (port addition; 0 = off)
    collapse_tol: float = knob(0.05, ge=0)
    #: where the auxiliary path's batch statistics go: separate | none | shared (shared = the collapse defect)
    aux_stats: str = knob("separate", choices=("separate", "none", "shared"))
    aux_affine: bool = False  # separate (γ, β) for the auxiliary path; default shared (unverified)
    compiled: bool = False  # torch.compile the soft CBN step (faster; needs a C++ compiler; compiles first)
    dual_path: bool = True  # train CBN with the auxiliary hard path (the paper's dual path)
    #: split of frequency-sorted classes into K groups (equal numbers of classes | of samples); each value
    #: trains its own CBN models, reported as the setting "group_by=..."
    group_by: tuple[str, ...] = knob(("classes", "samples"), choices=("classes", "samples"), unique=True,
                                     nonempty=True)
    aux_weight: float = knob(1.0, ge=0)  # weight of the auxiliary path's classification loss
    consistency: str = knob("kl", choices=CONSISTENCY)  # main/aux consistency: kl | mse | none (unverified)
    consistency_weight: float = knob(1.0, ge=0)  # λ_c (unverified)
    many_threshold: int = knob(100, ge=1)  # many-shot: > this many training images
    few_threshold: int = knob(20, ge=1)  # few-shot: < this many
    eval_batch_size: int = knob(1000, ge=1)
    num_threads: int = knob(0, ge=0)  # torch threads (0 = leave torch's default)
    #: processes running the trainings side by side on a CPU (spawned, each with the run's torch threads; every
    #: training seeds itself, so the records are those of 1); on an accelerator they run in this process
    n_jobs: int = knob(2, ge=1)
    figures: bool = True  # per-class accuracy and per-class responsibility figures

    PRESETS = {
        "smoke": {"seeds": (0,), "losses": ("CE",), "n_max": 200, "epochs": 3, "depth": 8, "width": 4,
                  "imbalance_ratios": (10.0,), "many_threshold": 60, "few_threshold": 30,
                  "group_by": ("classes",), "warmup_epochs": 1, "n_jobs": 1},
        # CE and LDAM-DRW, group_by both ways, 60 epochs, 3 seeds: 18 trainings (see the method card for
        # its CPU time); n_max 200 and width 4 are what fits
        "quick": {"losses": ("CE", "LDAM-DRW")},
        "standard": {"depth": 32, "width": 16, "epochs": 60, "seeds": (0, 1, 2, 3, 4), "batch_size": 128, "lr": 0.1,
                     "n_max": 1000,
                     "imbalance_ratios": (100.0, 50.0, 10.0), "losses": ("CE", "CE-DRW", "LDAM-DRW"),
                     "datasets": ("CIFAR-10-LT", "MNIST-LT"), "warmup_epochs": 2, "decay_factor": 0.01,
                     "ablations": ("no-dual", "no-consistency", "K=1", "K=3")},
        "full": {"datasets": ("CIFAR-10-LT-full", "CIFAR-100-LT-full"), "depth": 32, "width": 16, "epochs": 200,
                 "batch_size": 128, "lr": 0.1,
                 "warmup_epochs": 5, "decay_factor": 0.01, "n_max": 0, "seeds": (0, 1, 2),
                 "imbalance_ratios": (100.0, 50.0, 10.0),
                 "losses": ("CE", "CE-DRW", "LDAM-DRW")},
    }
    KNOWN_DATASETS = ("CIFAR-10-LT", "MNIST-LT", "CIFAR-10-LT-full", "CIFAR-100-LT-full")

    def check_dataset(self, name: str) -> None:
        """A known name, or a path to the user's own images (``.npz``, read by ``reprozoo.datasets.load_images``)."""
        if isinstance(name, str) and name.lower().endswith(".npz") and Path(name).expanduser().is_file():
            return
        if name not in self.KNOWN_DATASETS:
            raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(self.KNOWN_DATASETS)} or a "
                              "path to an .npz of images (x_train, y_train, x_test, y_test)")

    def validate(self) -> None:
        """Reject every out-of-domain value up front (before any training), with a :class:`ConfigError`
        that names the field, the allowed range or choices and the value received.

        Types, single-field bounds and choices are declared on the fields (:func:`knob`). Here, the rules
        that involve several fields or a data set: ``depth`` = 6n+2; ``warmup_epochs`` <= ``epochs``;
        ``few_threshold`` <= ``many_threshold``; ``min_weight`` < 1/K for the largest K trained
        (``n_components``, 3 with the K=3 ablation); ``n_max`` at most the smallest class of each data set
        (``_TRAIN_PER_CLASS``: 1000 for the shipped CIFAR-10 subset, 5421 for MNIST); with the dual path
        every K <= the number of classes of each data set.
        """
        super().validate()
        if (self.depth - 2) % 6:
            raise ConfigError(f"depth={self.depth} should be 6n+2 >= 8 (8, 14, 20, 32, ...)")
        k_max = max([self.n_components] + [3 for a in self.ablations if a == "K=3"])
        ranges = [  # (field, in range?, allowed range)
            ("warmup_epochs", self.warmup_epochs <= self.epochs, f"in [0, epochs] = [0, {self.epochs}]"),
            ("min_weight", self.min_weight < 1 / k_max,
             f"in [0, 1/K) = [0, {1 / k_max:.4g}) for K = {k_max}"
             + (" (the K=3 ablation)" if k_max != self.n_components else "")),
            ("few_threshold", self.few_threshold <= self.many_threshold,
             f"in [1, many_threshold] = [1, {self.many_threshold}]"),
        ]
        for name, ok, allowed in ranges:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is out of range; it should be {allowed}")
        for d in self.datasets:  # checked here, not after loading and training has started
            per_class = _TRAIN_PER_CLASS.get(d)
            if per_class is not None and self.n_max > per_class:
                raise ConfigError(f"n_max={self.n_max} is out of range for {d}: its smallest class holds "
                                  f"{per_class} training images, so n_max should be in [0, {per_class}] "
                                  "(0 = the largest the data set allows)")
        if self.dual_path:  # one component per class-frequency group: K <= number of classes
            for d in self.datasets:
                n_classes = _N_CLASSES.get(d)
                if n_classes is not None and k_max > n_classes:
                    raise ConfigError(f"n_components={k_max} (K, one per class-frequency group of the dual "
                                      f"path) should be <= the {n_classes} classes of {d}")


#: classes of each data set (the dual path needs K <= C groups)
_N_CLASSES = {"CIFAR-10-LT": 10, "MNIST-LT": 10, "CIFAR-10-LT-full": 10, "CIFAR-100-LT-full": 100}
#: Training images of the smallest class of each data set, known without loading it: the largest n_max
#: (head-class size) :func:`make_longtail` accepts for every class order. CIFAR-10-LT = the shipped subset,
#: two shards of 500 per class (data/cifar10_jpeg_subset/PROVENANCE.md); MNIST-LT = class 5 of the full
#: MNIST training set, 5,421 images (data/mnist/PROVENANCE.md); the full CIFAR-10 / CIFAR-100 training
#: sets hold 5,000 / 500 per class (Krizhevsky 2009).
_TRAIN_PER_CLASS = {"CIFAR-10-LT": 1000, "MNIST-LT": 5421, "CIFAR-10-LT-full": 5000, "CIFAR-100-LT-full": 500}


Config = CompoundBNConfig


# -- data ---------------------------------------------------------------------------------
@dataclass
class LongTailData:
    """A long-tailed training set and its balanced test set (float32 NCHW, normalised)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_counts: np.ndarray
    flip: bool

    def to(self, device) -> LongTailData:
        """The same data with the four tensors on ``device`` (moved once, before training)."""
        return dataclasses.replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                                   x_test=self.x_test.to(device), y_test=self.y_test.to(device))


def load_longtail(dataset: str, imbalance_ratio: float, n_max: int = 1000, data_seed: int = 0) -> LongTailData:
    """Build ``dataset`` (CIFAR-10-LT from the shipped subset, MNIST-LT, the full CIFAR-LT sets when
    the user supplies CIFAR, or the path of the user's own ``.npz`` of images, see
    :func:`reprozoo.datasets.load_images`) at imbalance ``imbalance_ratio``; n_max = 0 means the largest
    possible. The long-tailed subset is drawn from the training images; the test images stay as given."""
    if dataset == "CIFAR-10-LT":
        from reprozoo.datasets import load_cifar10_subset

        ds, flip = load_cifar10_subset(), True
    elif dataset == "MNIST-LT":
        from reprozoo.datasets import load_mnist

        ds, flip = load_mnist(), False
    elif dataset in ("CIFAR-10-LT-full", "CIFAR-100-LT-full"):
        from reprozoo.datasets.cifar import load_cifar10, load_cifar100

        ds, flip = (load_cifar10() if dataset.startswith("CIFAR-10-") else load_cifar100()), True
    elif dataset.lower().endswith(".npz"):  # the user's images; flipped like CIFAR when in colour
        from reprozoo.datasets import load_images

        ds = load_images(dataset)
        flip = ds.shape[0] == 3
    else:
        raise ConfigError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(Config.KNOWN_DATASETS)}")
    idx = make_longtail(ds.y_train, imbalance_ratio, n_max=n_max or None, seed=data_seed)
    x_train, y_train = ds.tensors("train")
    x_test, y_test = ds.tensors("test")
    x_train, y_train = x_train[torch.from_numpy(idx)], y_train[torch.from_numpy(idx)]
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    counts = np.bincount(y_train.numpy(), minlength=ds.n_classes)
    return LongTailData(f"{dataset}", (x_train - mean) / std, y_train, (x_test - mean) / std, y_test, counts, flip)


# -- models and training -------------------------------------------------------------------
def build_model(cfg: Config, n_classes: int, in_chans: int, norm: str, loss: str,
                n_components: int | None = None) -> nn.Module:
    """The CIFAR ResNet with BN or compound BN layers; LDAM gets the cosine head of its reference setup."""
    k = cfg.n_components if n_components is None else n_components
    if norm == "BN":
        norm_layer: Any = nn.BatchNorm2d
    else:
        norm_layer = functools.partial(CompoundBatchNorm2d, num_components=k, momentum=cfg.cbn_momentum,
                                       detach_responsibilities=cfg.detach_responsibilities,
                                       per_component_affine=cfg.per_component_affine, min_weight=cfg.min_weight,
                                       collapse_tol=cfg.collapse_tol, check_finite=False, aux_affine=cfg.aux_affine,
                                       aux_stats=cfg.aux_stats, compiled=cfg.compiled)
    model = CifarResNet(cfg.depth, n_classes, width=cfg.width, in_chans=in_chans, norm_layer=norm_layer)
    if loss == "LDAM-DRW":
        model.fc = NormedLinear(model.num_features, n_classes)
    return model


def _lr_at(cfg: Config, epoch: float) -> float:
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1e-3) / cfg.warmup_epochs
    return cfg.lr * cfg.decay_factor ** sum(epoch >= f * cfg.epochs for f in cfg.decay_at)


def train_and_evaluate(cfg: Config, data: LongTailData, norm: str, loss_name: str, seed: int, *,
                       dual_path: bool | None = None, consistency_weight: float | None = None,
                       n_components: int | None = None, group_by: str | None = None,
                       desc: str = "") -> tuple[nn.Module, dict[str, Any]]:
    """Train one model with the LDAM-DRW recipe scaled to ``cfg.epochs``; return it and its metrics.

    ``dual_path``, ``consistency_weight``, ``n_components`` and ``group_by`` (one of ``cfg.group_by``'s
    values; default its first) override the config for this model."""
    seed_everything(seed)
    n_classes, in_chans = len(data.class_counts), data.x_train.shape[1]
    device = data.x_train.device  # the model follows the data (LongTailData.to moves it once)
    model = build_model(cfg, n_classes, in_chans, norm, loss_name, n_components).to(device)
    criterion = LongTailLoss(loss_name, data.class_counts, drw_epoch=int(round(cfg.drw_at * cfg.epochs))).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    dual = cfg.dual_path if dual_path is None else dual_path
    k = cfg.n_components if n_components is None else n_components
    use_dual = norm == "CBN" and dual and k > 1
    if use_dual:
        dual_loss = DualPathLoss(data.class_counts, k, criterion, group_by=group_by or cfg.group_by[0],
                                 aux_weight=cfg.aux_weight,
                                 consistency=cfg.consistency,
                                 consistency_weight=cfg.consistency_weight if consistency_weight is None
                                 else consistency_weight, logit_scale=criterion.logit_scale).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)  # draws on the data's device (the same on CPU)
    n = len(data.y_train)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    t0 = time.process_time()
    for epoch in track(range(cfg.epochs), desc or f"{norm}+{loss_name} seed {seed}"):
        criterion.set_epoch(epoch)
        model.train()
        perm = torch.randperm(n, generator=gen, device=device)
        for it in range(steps):
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, epoch + it / steps)
            idx = perm[it * cfg.batch_size:(it + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            xb, yb = data.x_train[idx], data.y_train[idx]
            if cfg.augment:
                xb = random_crop_flip(xb, gen, flip=data.flip)
            loss = dual_loss(model, xb, yb).loss if use_dual else criterion(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    cpu_seconds = time.process_time() - t0
    model.eval()
    pred = predict(model, data.x_test, cfg.eval_batch_size)
    acc = shot_accuracies(data.y_test.cpu().numpy(), pred.cpu().numpy(), data.class_counts, cfg.many_threshold,
                          cfg.few_threshold)
    acc["train_cpu_seconds"] = cpu_seconds
    return model, acc


@torch.no_grad()
def class_responsibilities(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                           batch_size: int = 500) -> np.ndarray:
    """Mean responsibility of each component per true class, averaged over every compound BN layer,
    channel and position of the test images (running mixture, eval mode): array (n_classes, K)."""
    layers = compound_layers(model)
    if not layers:
        raise ValueError("model has no compound BN layer")
    k = layers[0].num_components
    sums = torch.zeros(n_classes, k, dtype=torch.float64, device=x.device)
    store: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: store.append(
        mod.responsibilities(inp[0]).mean(dim=(2, 3)).t())) for m in layers]  # (N, K) per layer
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            store.clear()
            model(x[i:i + batch_size])
            r = torch.stack(store).mean(0).double()  # (N, K)
            sums.index_add_(0, y[i:i + batch_size], r)
    finally:
        for h in hooks:
            h.remove()
    counts = torch.bincount(y, minlength=n_classes).clamp_min(1).double()
    return (sums / counts[:, None]).cpu().numpy()


# -- the run ---------------------------------------------------------------------------------
def _variants(cfg: Config) -> list[dict[str, Any]]:
    out = []
    for li, loss in enumerate(cfg.losses):
        out.append({"method": f"BN+{loss}", "role": "baseline", "norm": "BN", "loss": loss, "kw": {}})
        out.append({"method": f"CBN+{loss}", "role": "method", "norm": "CBN", "loss": loss, "kw": {}})
        if li == 0:
            for a in cfg.ablations:
                kw = {"no-dual": {"dual_path": False}, "no-consistency": {"consistency_weight": 0.0},
                      "K=1": {"n_components": 1}, "K=3": {"n_components": 3}}[a]
                out.append({"method": f"CBN({a})+{loss}", "role": "method", "norm": "CBN", "loss": loss, "kw": kw})
    return out


def _jobs(cfg: Config) -> list[tuple[int, int, str | None]]:
    """One training per (seed, variant index, group_by or None when the model has no groups), in the order
    one process runs them."""
    jobs = []
    for seed in cfg.seeds:
        for i, v in enumerate(_variants(cfg)):
            kw = v["kw"]
            grouped = (v["norm"] == "CBN" and kw.get("dual_path", cfg.dual_path)
                       and kw.get("n_components", cfg.n_components) > 1)
            jobs += [(seed, i, g) for g in cfg.group_by] if grouped else [(seed, i, None)]
    return jobs


def _train_job(item: tuple[Config, str, float, tuple[int, int, str | None]]) -> dict[str, Any]:
    """One training (here or in a worker process): its accuracies, CPU and wall seconds, and the per-class
    responsibilities of the first seed's main CBN models; ``{"diverged": reason}`` when it diverged."""
    cfg, dataset, rho, (seed, i, g) = item
    v = _variants(cfg)[i]
    data = load_longtail(dataset, rho, cfg.n_max, cfg.data_seed).to(torch.device(cfg.device))
    label = v["method"] + (f" group_by={g}" if g else "")
    t0 = time.perf_counter()
    try:
        model, acc = train_and_evaluate(cfg, data, v["norm"], v["loss"], seed, **v["kw"], group_by=g or cfg.group_by[0],
                                        desc=f"{dataset} rho={rho:g} {label} seed {seed}")
    except TrainingDiverged as exc:  # reported, not hidden: the other trainings go on
        return {"diverged": str(exc)}
    acc["seconds"] = time.perf_counter() - t0
    if cfg.figures and v["norm"] == "CBN" and not v["kw"] and seed == cfg.seeds[0] and cfg.n_components > 1:
        acc["responsibilities"] = class_responsibilities(model, data.x_test, data.y_test, len(data.class_counts))
    return acc


def run(config: Config, out_dir: Path) -> Result:
    """Train BN and CBN models for every data set × imbalance × loss × seed; return the tidy result.

    The trainings of one (data set, imbalance) run in ``n_jobs`` processes on a CPU (each seeds itself: the
    records are those of one process, which is what runs them on an accelerator)."""
    cfg = config
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    cfg = cfg.replace(device=str(resolve_device(cfg.device)))  # "auto" when run is called directly
    device = torch.device(cfg.device)
    result = Result(name="compound_bn", preset=cfg.preset, config=cfg.to_dict())
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    variants = _variants(cfg)
    jobs = _jobs(cfg)
    for dataset in cfg.datasets:
        for rho in cfg.imbalance_ratios:
            data = load_longtail(dataset, rho, cfg.n_max, cfg.data_seed)
            groups = shot_split(data.class_counts, cfg.many_threshold, cfg.few_threshold)
            setting = f"rho={rho:g}"
            log(f"{dataset} {setting}: {len(data.y_train)} train images, counts {data.class_counts.tolist()}")
            result.notes.append(
                f"{dataset} {setting}: class counts {data.class_counts.tolist()}; many/medium/few classes "
                f"{groups['many'].tolist()}/{groups['medium'].tolist()}/{groups['few'].tolist()} "
                f"(many > {cfg.many_threshold}, few < {cfg.few_threshold} training images)")
            settings = {g: f"{setting} group_by={g}" for g in cfg.group_by}
            if len(cfg.group_by) > 1:
                result.notes.append(f"{dataset} {setting}: BN has no groups; each BN model is trained once and "
                                    f"recorded under every group_by setting ({', '.join(cfg.group_by)})")
            per_class: dict[str, dict[str, list[np.ndarray]]] = {g: {} for g in cfg.group_by}
            resp: dict[str, dict[str, np.ndarray]] = {g: {} for g in cfg.group_by}
            outs = map_jobs(_train_job, [(cfg, dataset, rho, job) for job in jobs],
                            workers=cfg.n_jobs if device.type == "cpu" else 1,
                            description=f"{dataset} {setting} trainings", threads=torch.get_num_threads(),
                            first=lambda item: variants[item[3][1]]["norm"] != "CBN")  # CBN's (2 paths) first
            for (seed, i, g), acc in zip(jobs, outs, strict=True):  # job order: the same as one process
                v = variants[i]
                label = v["method"] + (f" group_by={g}" if g else "")
                tables = [g] if g else cfg.group_by  # BN (no groups): the same model in every table
                if "diverged" in acc:
                    result.notes.append(f"{dataset} {setting}: {label} seed {seed} diverged ({acc['diverged']}); "
                                        "its accuracies are missing from the means")
                    for gg in tables:
                        result.add(dataset, v["method"], v["role"], "diverged", 1, seed=seed, setting=settings[gg])
                    log(f"{label} seed {seed}: diverged")
                    continue
                metrics = {m: acc[m] for m in ("top1", "many", "medium", "few") if np.isfinite(acc[m])}
                metrics.update(diverged=0, seconds=acc["seconds"], train_cpu_seconds=acc["train_cpu_seconds"])
                for gg in tables:
                    result.add_many(dataset, v["method"], v["role"], metrics, seed=seed, setting=settings[gg])
                    per_class[gg].setdefault(v["method"], []).append(acc["per_class"])
                if "responsibilities" in acc:
                    resp[g or cfg.group_by[0]][v["method"]] = acc["responsibilities"]
                log(f"{label} seed {seed}: top1 {acc['top1']:.2f} few {acc['few']:.2f} ({metrics['seconds']:.0f} s)")
            for name, groups_ in (("many", groups["many"]), ("medium", groups["medium"]), ("few", groups["few"])):
                if groups_.size == 0:
                    result.notes.append(f"{dataset} {setting}: no {name}-shot class; metric {name} not recorded")
            if cfg.figures:
                for g in cfg.group_by:
                    title = f"{dataset} {settings[g]}"
                    tag = f"{dataset}_{setting}_{g}".replace("=", "").replace(".", "p")
                    result.figures.append(_plot_per_class(per_class[g], data.class_counts,
                                                          fig_dir / f"per_class_{tag}.png", out_dir, title))
                    if resp[g]:
                        result.figures.append(_plot_responsibility(resp[g], data.class_counts,
                                                                   fig_dir / f"responsibility_{tag}.png", out_dir,
                                                                   title))
    return result


def _plot_per_class(per_class: dict[str, list[np.ndarray]], counts: np.ndarray, path: Path, out_dir: Path,
                    title: str) -> str:
    from reprozoo.core.io import atomic_savefig
    from reprozoo.core.plots import figure

    fig, ax = figure(8.0, 4.0)
    methods = list(per_class)
    x = np.arange(len(counts))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = np.stack(per_class[m])
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals.mean(0), width,
               yerr=vals.std(0, ddof=1) if len(vals) > 1 else None, label=m, capsize=1.5)
    ax.set_xticks(x, [f"{c}\n(n={n})" for c, n in enumerate(counts)], fontsize=7)
    ax.set_xlabel("class (training images), head → tail")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy, BN vs CBN: {title} (mean ± sd over seeds)")
    ax.legend(fontsize=7, ncol=2)
    atomic_savefig(fig, path)
    return str(path.relative_to(out_dir))


def _plot_responsibility(resp: dict[str, np.ndarray], counts: np.ndarray, path: Path, out_dir: Path,
                         title: str) -> str:
    import matplotlib.pyplot as plt

    from reprozoo.core.io import atomic_savefig

    fig, axes = plt.subplots(1, len(resp), figsize=(4.5 * len(resp), 3.6), squeeze=False)
    for ax, (m, r) in zip(axes[0], resp.items(), strict=True):
        bottom = np.zeros(len(counts))
        for k in range(r.shape[1]):
            ax.bar(np.arange(len(counts)), r[:, k], bottom=bottom, label=f"component {k}")
            bottom += r[:, k]
        ax.set_xticks(np.arange(len(counts)), [str(n) for n in counts], fontsize=7)
        ax.set_xlabel("class (training images), head → tail")
        ax.set_ylabel("mean responsibility")
        ax.set_ylim(0, 1)
        ax.set_title(m, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Which component each class uses (all CBN layers, test images): {title}", fontsize=9)
    atomic_savefig(fig, path)
    return str(path.relative_to(out_dir))


SPEC = ExperimentSpec(
    name="compound_bn",
    title="Compound batch normalization: Gaussian-mixture BN with dual-path learning for long-tailed data",
    field="vision",
    paper="Cheng et al., 'Compound Batch Normalization for Long-tailed Image Classification', ACM MM 2022, "
    "arXiv:2212.01007",
    config=CompoundBNConfig,
    run=run,
    primary_metric="top1",
)
