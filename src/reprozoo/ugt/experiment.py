"""Default experiments of ``reprozoo run ugt``: UGT vs trained dense GNNs and Edge-Popup on Planetoid.

Presets (``PRESETS``):

* ``smoke``: Cora, 2-layer GCN, 30 epochs, one seed (end-to-end check, seconds);
* ``quick``: Cora and CiteSeer, 2-layer GCN (hidden 256), UGT and Edge-Popup at sparsity 0.9 with 3 seeds
  and at 0.5 and 0.99 with the first seed (accuracy vs sparsity, paper Fig. 2), the dense GCN once per seed,
  400 epochs, the fits in ``n_jobs`` = 2 processes (about 415 CPU s; see the card);
* ``sweep``: as quick with 3 seeds at every sparsity;
* ``full``: GCN, GAT and GIN, sparsity 0.1..0.99, 10 seeds (hours on CPU);
* ``deep``: GCN at depths 2..32 on Cora, UGT vs dense: accuracy and MAD (over-smoothing);
* ``robust``: OOD detection with held-out classes and accuracy under feature / edge noise.

Records: method ``UGT-<arch>`` (role ``method``), ``Dense-<arch>`` and ``EdgePopup-<arch>``
(role ``baseline``); setting ``s=<sparsity>,L=<depth>`` (dense: trained once per seed and depth,
its records repeated under each sparsity of that depth so that every block holds the comparison);
metrics ``top1`` (test accuracy at the best-validation epoch, in PERCENT 0-100, the project's
convention), ``val_top1`` (percent), ``sparsity`` (reached, fraction in [0, 1]), ``best_epoch``, ``MAD``
(of the final-layer node representations), ``ECE`` (test nodes, 15 bins, fraction in [0, 1]),
``seconds`` (training wall time); robust protocol: ``AUROC`` in [0, 1] and ``top1`` in percent.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from reprozoo.core.device import resolve_device
from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.io import atomic_savefig
from reprozoo.core.parallel import map_jobs
from reprozoo.core.plots import figure, metric_by_dataset
from reprozoo.core.progress import log
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.report import seeds_phrase
from reprozoo.core.results import Result, mean_std
from reprozoo.core.seed import seed_everything
from reprozoo.datasets.planetoid import PLANETOID_SIZES
from reprozoo.ugt.analysis import n_ood_classes

__all__ = ["UGTConfig", "Config", "run", "setting_name"]


@dataclass
class UGTConfig(TorchExperimentConfig):
    """Knobs of the UGT experiments (defaults = the ``quick`` preset; reference values in brackets)."""

    datasets: tuple[str, ...] = ("Cora", "CiteSeer")
    seeds: tuple[int, ...] = (0, 1, 2)
    #: "standard" (accuracy, sparsity, MAD) or "robust" (OOD AUROC, perturbations)
    protocol: str = knob("standard", choices=("standard", "robust"))
    #: architectures, any of GCN, GAT, GIN
    archs: tuple[str, ...] = knob(("GCN",), choices=("GCN", "GAT", "GIN"), nonempty=True, unique=True)
    #: final sparsities (fraction of weights removed) [0.9 for GCN]; the first is the main one (all seeds; the
    #: robust protocol and the depth figures use it), the others are the accuracy-vs-sparsity points
    sparsities: tuple[float, ...] = knob((0.9, 0.5, 0.99), ge=0, lt=1, nonempty=True, unique=True)
    #: seeds run at the sparsities after the first: the first ``sweep_seeds`` of ``seeds`` (0 = all of them)
    sweep_seeds: int = knob(1, ge=0)
    #: numbers of layers [2]
    depths: tuple[int, ...] = knob((2,), ge=1, nonempty=True, unique=True)
    hidden: int = knob(256, ge=1)  # hidden channels [256; 448 for 16/32 layers]
    gat_heads: int = knob(1, ge=1)  # GAT heads in hidden layers [1]
    epochs: int = knob(400, ge=1)  # full-batch epochs [400]
    lr: float = knob(0.01, gt=0)  # AdamW learning rate of the scores [0.01]
    lr_deep: float = knob(0.005, gt=0)  # score learning rate for depth >= 32 [0.005]
    weight_l1: float = knob(0.0, ge=0)  # weight of the sum of mean(sigmoid(scores)) penalty [0]
    #: frozen weight init: kaiming_uniform | kaiming_normal | signed_constant
    weight_init: str = knob("kaiming_uniform", choices=("kaiming_uniform", "kaiming_normal", "signed_constant"))
    #: sparsity ramp: linear (reference code) | polynomial (cubic) | constant
    ramp: str = knob("linear", choices=("linear", "polynomial", "constant"))
    ramp_fraction: float = knob(0.5, gt=0, le=1)  # fraction of the epochs spent ramping [0.5]
    edge_popup: bool = True  # also run the Edge-Popup baseline
    #: what Edge-Popup ranks: "abs" = |scores| (Ramanujan et al. 2020) | "raw" = the scores (our former variant)
    edge_popup_rank: str = knob("abs", choices=("abs", "raw"))
    dense: bool = True  # also run the trained dense baseline
    dense_lr: float = knob(0.01, gt=0)  # dense baseline: Adam learning rate
    dense_weight_decay: float = knob(5e-4, ge=0)  # dense baseline: weight decay
    dense_dropout: float = knob(0.5, ge=0, lt=1)  # dense baseline: dropout between layers
    ood_frac: float = knob(0.4, gt=0, lt=1)  # robust: fraction of classes held out as OOD [0.4]
    #: robust: which classes are held out: "random" floor(ood_frac·C) (reference) | "last" round(ood_frac·C) (ours)
    ood_classes: str = knob("random", choices=("random", "last"))
    #: robust: feature noise: "reference" = Bernoulli 0.5 on non-training nodes | "density" = ours: any node,
    #: each word on at the data's density
    noise_model: str = knob("reference", choices=("reference", "density"))
    #: robust: fractions of nodes with noised features (0.0 = the clean graph, also the zero point of the
    #: edge-noise curve)
    feature_noise: tuple[float, ...] = knob((0.0, 0.1, 0.3, 0.5), ge=0, le=1, unique=True)
    #: robust: random edges added, relative to |E|
    edge_noise: tuple[float, ...] = knob((0.2, 0.5, 1.0), ge=0, unique=True)
    #: processes running the fits side by side on a CPU (spawned, each with the run's thread count; every fit
    #: seeds itself, so the records are those of 1); on an accelerator the fits run in this process
    n_jobs: int = knob(2, ge=1)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "smoke": {"datasets": ("Cora",), "seeds": (0,), "epochs": 30, "hidden": 64, "sparsities": (0.9,), "n_jobs": 1},
        # the accuracy-vs-sparsity figure with every seed at every sparsity
        "sweep": {"sweep_seeds": 0},
        "full": {
            "archs": ("GCN", "GAT", "GIN"),
            "sparsities": (0.9, 0.1, 0.3, 0.5, 0.7, 0.8, 0.95, 0.99),
            "seeds": tuple(range(10)), "sweep_seeds": 0,
        },
        "deep": {
            "datasets": ("Cora",), "depths": (2, 4, 8, 16, 32), "sparsities": (0.04,), "edge_popup": False,
            "hidden": 256, "seeds": (0, 1, 2),
            # the authors' dense deep runs: no dropout, weight decay 0, lr 0.005
            "dense_lr": 0.005, "dense_weight_decay": 0.0, "dense_dropout": 0.0,
        },
        "robust": {
            "protocol": "robust", "datasets": ("Cora",), "seeds": (0, 1, 2), "edge_popup": False, "sparsities": (0.9,),
        },
    }
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ("Cora", "CiteSeer", "PubMed")

    def check_dataset(self, name: str) -> None:
        """A Planetoid name, or a path to the user's own graph (``.npz`` / ``.pt``, read by ``load_graph``)."""
        if isinstance(name, str) and name.lower().endswith((".npz", ".pt")) and Path(name).expanduser().is_file():
            st = Path(name).expanduser().stat()
            problem = _graph_file_problem(str(Path(name).expanduser().resolve()), st.st_size, st.st_mtime)
            if problem:  # a usage error, reported before anything runs
                raise ConfigError(problem)
            return
        if name not in self.KNOWN_DATASETS:
            raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(self.KNOWN_DATASETS)} or a "
                              "path to a graph file (.npz or .pt with x, edge_index, y, train_mask, val_mask, "
                              "test_mask)")

    def validate(self) -> None:
        super().validate()
        if self.sweep_seeds > len(self.seeds):
            raise ConfigError(f"sweep_seeds={self.sweep_seeds} is more than the {len(self.seeds)} seeds given; choose "
                              f"0 (all) to {len(self.seeds)}")
        if self.protocol == "robust":  # keep >= 2 ID classes and hold out >= 1
            how = "floor" if self.ood_classes == "random" else "round"
            for d in self.datasets:
                c = PLANETOID_SIZES[d][2] if d in PLANETOID_SIZES else None
                k = None if c is None else n_ood_classes(self.ood_frac, c, self.ood_classes)
                if c is not None and not 1 <= k <= c - 2:
                    lo, hi = ood_frac_range(c, self.ood_classes)
                    raise ConfigError(
                        f"ood_frac={self.ood_frac!r} holds out {how}({self.ood_frac:g} x {c}) = {k} of the {c} "
                        f"classes of {d}; it should hold out 1 to {c - 2} (at least 2 classes stay in "
                        f"distribution): choose ood_frac in [{lo:.3g}, {hi:.3g}]")
        for d in self.datasets:  # a sparsity that leaves a layer without any weight gives constant logits
            if d in PLANETOID_SIZES:
                check_layer_budget(self, PLANETOID_SIZES[d][1], PLANETOID_SIZES[d][2], d)


@functools.lru_cache(maxsize=16)
def _graph_file_problem(path: str, size: int, mtime: float) -> str | None:
    """Why the graph file cannot be used (None when it loads); cached per path, size and modification time."""
    from reprozoo.datasets import load_graph
    from reprozoo.ugt.train import check_distinct_masks

    try:
        g = load_graph(path)
    except (ValueError, FileNotFoundError) as exc:
        return str(exc)
    try:
        check_distinct_masks(g.train_mask, g.val_mask, g.test_mask)
    except ValueError as exc:
        return f"{path}: {exc}"
    return None


def ood_frac_range(num_classes: int, classes: str = "random") -> tuple[float, float]:
    """An ``ood_frac`` interval ``[lo, hi]`` whose every value holds out 1 to C − 2 classes (``classes`` as
    :func:`~reprozoo.ugt.analysis.ood_split`; approximate at the rounding ties, inside them by a small margin)."""
    if classes == "random":  # floor(frac * C)
        return 1.0 / num_classes, (num_classes - 1 - 1e-9) / num_classes
    return (0.5 + 1e-9) / num_classes, (num_classes - 2 + 0.5 - 1e-9) / num_classes


def check_layer_budget(cfg: UGTConfig, num_features: int, num_classes: int, dataset: str) -> None:
    """``ConfigError`` (naming ``sparsities``) when a sparsity keeps no weight in some masked linear map: Edge-Popup's
    top-k of its smallest one, or UGT's global budget below one weight per linear map. From the sizes only."""
    from reprozoo.ugt.models import build_model
    from reprozoo.ugt.sparse import SparseLinear, masked_modules

    for arch in cfg.archs:
        for depth in cfg.depths:
            model = build_model(arch, num_features, cfg.hidden, num_classes, depth, sparsity=0.0,
                                heads=cfg.gat_heads)  # milliseconds: sizes only
            mods = [m for _, m in masked_modules(model)]
            n = sum(m.score.numel() for m in mods)
            # linear maps only: an emptied GAT attention vector leaves uniform attention, not constant logits
            sizes = [m.score.numel() for m in mods if isinstance(m, SparseLinear)]
            for s in cfg.sparsities:
                ugt_keep = n - round(s * n)
                ep_keep = min(k - round(s * k) for k in sizes)
                if ugt_keep < len(sizes) or (cfg.edge_popup and ep_keep < 1):
                    raise ConfigError(
                        f"sparsities: {s!r} keeps {ugt_keep} of {n} weights of {arch}-{depth} on {dataset} "
                        f"(Edge-Popup: {ep_keep} in its smallest layer of {min(sizes)}); every one of its "
                        f"{len(sizes)} masked linear maps needs at least one weight, or the logits are constant: "
                        "choose a lower sparsity")


Config = UGTConfig


def setting_name(sparsity: float, depth: int) -> str:
    """The ``setting`` field of a record: ``"s=0.9,L=2"``."""
    return f"s={sparsity:g},L={depth}"


def seed_sparsities(cfg: UGTConfig, seed: int) -> tuple[float, ...]:
    """The sparsities ``seed`` runs at: all of them for the first ``sweep_seeds`` seeds (all seeds when 0), else
    the main (first) one."""
    swept = cfg.seeds if cfg.sweep_seeds == 0 else cfg.seeds[:cfg.sweep_seeds]
    return cfg.sparsities if seed in swept else cfg.sparsities[:1]


# -- one fit --------------------------------------------------------------------------------------
def _fit(kind: str, arch: str, graph, depth: int, sparsity: float, cfg: UGTConfig, seed: int,
         x=None, edge_index=None, y=None, masks=None, num_classes=None):
    """Build and train one model (``kind`` in ugt | edgepopup | dense); returns (model, FitResult)."""
    from reprozoo.ugt.baselines import dense_baseline, edge_popup_baseline, ugt_method
    from reprozoo.ugt.train import fit_node_classifier

    x = graph.x if x is None else x
    edge_index = graph.edge_index if edge_index is None else edge_index
    y = graph.y if y is None else y
    masks = (graph.train_mask, graph.val_mask, graph.test_mask) if masks is None else masks
    c = graph.num_classes if num_classes is None else num_classes
    seed_everything(seed)
    common = dict(heads=cfg.gat_heads, cached=True)
    if kind == "dense":
        model, sched = dense_baseline(arch, x.shape[1], cfg.hidden, c, depth, dropout=cfg.dense_dropout, **common)
        lr, wd = cfg.dense_lr, cfg.dense_weight_decay
    elif kind == "edgepopup":
        model, sched = edge_popup_baseline(arch, x.shape[1], cfg.hidden, c, depth, sparsity=sparsity,
                                           epochs=cfg.epochs, weight_init=cfg.weight_init,
                                           rank=cfg.edge_popup_rank, **common)
        lr, wd = (cfg.lr_deep if depth >= 32 else cfg.lr), 0.0
    else:
        model, sched = ugt_method(arch, x.shape[1], cfg.hidden, c, depth, sparsity=sparsity, epochs=cfg.epochs,
                                  ramp=cfg.ramp, ramp_fraction=cfg.ramp_fraction, weight_init=cfg.weight_init,
                                  **common)
        lr, wd = (cfg.lr_deep if depth >= 32 else cfg.lr), 0.0
    model = model.to(x.device)  # built (and seeded) on the CPU, moved once to the data's device
    fit = fit_node_classifier(model, x, edge_index, y, *masks, epochs=cfg.epochs, lr=lr, weight_decay=wd,
                              schedule=sched, weight_l1=cfg.weight_l1 if kind != "dense" else 0.0)
    return model, fit


@torch.no_grad()
def _logits(model, x, edge_index):
    from reprozoo.ugt.train import prepare_inputs

    model.eval()
    xs, adj = prepare_inputs(x, edge_index)
    return model(xs, adj)


def _load(name: str, device: str = "cpu"):
    """The graph ``name`` (a Planetoid name or the path of a user's graph file) moved once to ``device``."""
    from reprozoo.datasets import load_graph, load_planetoid

    return (load_planetoid(name) if name in UGTConfig.KNOWN_DATASETS else load_graph(name)).to(device)


# -- standard protocol: accuracy / sparsity / MAD -------------------------------------------------
def _workers(cfg: UGTConfig) -> int:
    """Processes for the fits: ``n_jobs`` on a CPU; one on an accelerator (the fits share it)."""
    return cfg.n_jobs if torch.device(cfg.device).type == "cpu" else 1


def _method_name(kind: str, arch: str) -> str:
    return {"ugt": "UGT", "edgepopup": "EdgePopup", "dense": "Dense"}[kind] + f"-{arch}"


def _standard_job(item: tuple[UGTConfig, tuple]) -> dict[str, float]:
    """One fit of the standard protocol (run here or in a worker process): its metrics."""
    from reprozoo.ugt.analysis import expected_calibration_error, mean_average_distance

    cfg, (dname, seed, arch, depth, kind, s) = item
    graph = _load(dname, cfg.device)
    model, fit = _fit(kind, arch, graph, depth, s if s is not None else 0.0, cfg, seed)
    logits = _logits(model, graph.x, graph.edge_index)
    return {"top1": fit.test_acc, "val_top1": fit.val_acc, "sparsity": fit.sparsity, "best_epoch": fit.best_epoch,
            "MAD": mean_average_distance(logits),
            "ECE": expected_calibration_error(logits[graph.test_mask], graph.y[graph.test_mask]),
            "seconds": fit.seconds}


def _run_standard(cfg: UGTConfig, result: Result) -> None:
    jobs = []  # (dataset, seed, arch, depth, kind, sparsity): every fit of every data set, in one pool
    for dname in cfg.datasets:
        for seed in cfg.seeds:
            for arch in cfg.archs:
                for depth in cfg.depths:
                    if cfg.dense:
                        jobs.append((dname, seed, arch, depth, "dense", None))
                    for s in seed_sparsities(cfg, seed):
                        jobs.append((dname, seed, arch, depth, "ugt", s))
                        if cfg.edge_popup:
                            jobs.append((dname, seed, arch, depth, "edgepopup", s))
    outs = map_jobs(_standard_job, [(cfg, job) for job in jobs], workers=_workers(cfg), description="ugt fits",
                    threads=torch.get_num_threads(), first=lambda item: -item[1][3])  # deepest first
    for (dname, seed, arch, depth, kind, s), metrics in zip(jobs, outs, strict=True):  # job order: as one process
        name = _method_name(kind, arch)
        role = "method" if kind == "ugt" else "baseline"
        for s_rec in (seed_sparsities(cfg, seed) if kind == "dense" else [s]):
            result.add_many(dname, name, role, metrics, seed=seed, setting=setting_name(s_rec, depth))
        log(f"{dname} seed={seed} {name} L={depth} s={s}: top1={metrics['top1']:.1f} % "
            f"(best epoch {metrics['best_epoch']}, sparsity {metrics['sparsity']:.3f}, {metrics['seconds']:.1f} s)")
    summary = result.summary()
    for (dname, setting, method, role), stats in summary.items():
        if role != "method":
            continue
        arch = method.split("-", 1)[1]
        for base in (f"Dense-{arch}", f"EdgePopup-{arch}"):
            other = summary.get((dname, setting, base, "baseline"))
            if other:
                (m, _, n), (b, _, _) = stats["top1"], other["top1"]
                result.notes.append(f"{dname} {setting}: {method} - {base} = {m - b:+.1f} points of test "
                                    f"accuracy (means over {seeds_phrase(n)}: {m:.1f} % vs {b:.1f} %)")
    if cfg.dense:
        result.notes.append(
            "Dense-* is trained once per seed and depth; its records are repeated under each sparsity setting that "
            "seed runs, so that every (dataset, setting) block compares UGT with the dense model over the same seeds."
        )
    if len(cfg.sparsities) > 1 and 0 < cfg.sweep_seeds < len(cfg.seeds):
        result.notes.append(
            f"Sparsity {cfg.sparsities[0]:g} is run with {seeds_phrase(len(cfg.seeds))}; the other sparsities ("
            + ", ".join(f"{s:g}" for s in cfg.sparsities[1:]) + f") with {seeds_phrase(cfg.sweep_seeds)} only ("
            + ", ".join(str(sd) for sd in cfg.seeds[:cfg.sweep_seeds]) + "; sweep_seeds)."
        )


# -- robust protocol: OOD detection and perturbations ---------------------------------------------
def _ood_split(cfg: UGTConfig, graph, seed: int):
    """The OOD split of ``seed``: the held-out classes are drawn anew with each seed (reference code)."""
    from reprozoo.ugt.analysis import ood_split

    return ood_split(graph.y, graph.train_mask, graph.val_mask, graph.test_mask, frac_left_out=cfg.ood_frac,
                     classes=cfg.ood_classes, generator=torch.Generator().manual_seed(20_000 + seed))


def _robust_job(item: tuple[UGTConfig, tuple]) -> tuple[dict[str, float], str]:
    """One fit of the robust protocol (run here or in a worker process): its metrics and a log line."""
    from reprozoo.ugt.analysis import ood_auroc, perturb_edges, perturb_features

    cfg, (dname, seed, arch, kind, what, level) = item
    s, depth = cfg.sparsities[0], cfg.depths[0]
    cpu_graph = _load(dname)  # perturbations draw on a CPU generator: the same graphs on every device
    graph = cpu_graph.to(cfg.device)
    if what == "ood":
        split = _ood_split(cfg, graph, seed)
        y_fit = split.y.clamp_min(0)  # OOD nodes are in no training/validation mask; their label is unused
        model, fit = _fit(kind, arch, graph, depth, s, cfg, seed, y=y_fit,
                          masks=(split.train_mask, split.val_mask, split.id_test_mask),
                          num_classes=split.num_id_classes)
        auroc = ood_auroc(_logits(model, graph.x, graph.edge_index), split.id_test_mask, split.ood_test_mask)
        return ({"AUROC": auroc, "top1": fit.test_acc},
                f"OOD classes {split.ood_classes}: AUROC={auroc:.3f}, ID top1={fit.test_acc:.1f} %")
    gen = torch.Generator().manual_seed(10_000 + seed)
    x, ei = graph.x, graph.edge_index
    if what == "features":
        x = perturb_features(cpu_graph.x, level, gen, model=cfg.noise_model, train_mask=cpu_graph.train_mask,
                             val_mask=cpu_graph.val_mask, test_mask=cpu_graph.test_mask).to(cfg.device)
    else:
        ei = perturb_edges(cpu_graph.edge_index, graph.num_nodes, level, gen).to(cfg.device)
    _, fit = _fit(kind, arch, graph, depth, s, cfg, seed, x=x, edge_index=ei)
    return {"top1": fit.test_acc}, f"{what}={level:g}: top1={fit.test_acc:.1f} %"


def _run_robust(cfg: UGTConfig, result: Result) -> None:
    s, depth = cfg.sparsities[0], cfg.depths[0]
    kinds = (["dense"] if cfg.dense else []) + ["ugt"] + (["edgepopup"] if cfg.edge_popup else [])
    held_out: dict[str, tuple[int, int]] = {}
    jobs = []  # (dataset, seed, arch, kind, what, level): every fit of every data set, in one pool
    for dname in cfg.datasets:
        graph = _load(dname)
        held_out[dname] = (len(_ood_split(cfg, graph, cfg.seeds[0]).ood_classes), graph.num_classes)
        for what, levels in (("ood", (0.0,)), ("features", cfg.feature_noise), ("edges", cfg.edge_noise)):
            jobs += [(dname, seed, arch, kind, what, level) for seed in cfg.seeds for arch in cfg.archs
                     for kind in kinds for level in levels]
    outs = map_jobs(_robust_job, [(cfg, job) for job in jobs], workers=_workers(cfg), description="ugt robust fits",
                    threads=torch.get_num_threads())
    for (dname, seed, arch, kind, what, level), (metrics, line) in zip(jobs, outs, strict=True):
        name = _method_name(kind, arch)
        setting = f"ood,{setting_name(s, depth)}" if what == "ood" else f"{what}={level:g},{setting_name(s, depth)}"
        result.add_many(dname, name, "method" if kind == "ugt" else "baseline", metrics, seed=seed, setting=setting)
        log(f"{dname} seed={seed} {name} {line}")
    which = (f"floor({cfg.ood_frac}·C) classes drawn at random per seed" if cfg.ood_classes == "random"
             else f"the last round({cfg.ood_frac}·C) classes")
    noise = ("Bernoulli(0.5) words on a fraction of the validation, test and unlabelled nodes (training nodes "
             "untouched)" if cfg.noise_model == "reference" else
             "Bernoulli words at the data's density on a fraction of all nodes")
    result.notes.append(
        f"robust: OOD = {which} held out of training ("
        + ", ".join(f"{d}: {k} of {c}" for d, (k, c) in held_out.items())
        + f"; AUROC of -max softmax on test nodes); perturbations are applied before training (poisoning): "
        f"features replaced by {noise}; random edges added with a budget relative to |E|."
    )


# -- figures --------------------------------------------------------------------------------------
def _errorbar_figure(series: dict[str, tuple[list[float], list[float], list[float]]], path: Path, *,
                     xlabel: str, ylabel: str, title: str, logx: bool = False,
                     hlines: tuple[str, ...] = ()) -> Path:
    """Mean ± std per x for each series; labels in ``hlines`` (one value) drawn as a horizontal band."""
    fig, ax = figure()
    for label, (xs, ms, ss) in series.items():
        if label in hlines:
            ax.axhline(ms[0], linestyle="--", color="0.3", label=f"{label} (dense)")
            ax.axhspan(ms[0] - ss[0], ms[0] + ss[0], color="0.3", alpha=0.15)
            continue
        ax.errorbar(xs, ms, yerr=ss, marker="o", markersize=3, capsize=2, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logx:
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_savefig(fig, path)


def _figures(cfg: UGTConfig, result: Result, out_dir: Path) -> None:
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if cfg.protocol == "standard":
        metric_by_dataset(result, "top1", fig_dir / "top1_by_dataset.png")
        result.figures.append("figures/top1_by_dataset.png")
        # values[(dataset, method, depth, sparsity, metric)] -> list over seeds
        vals: dict[tuple, list[float]] = defaultdict(list)
        for r in result.records:
            s_txt, l_txt = r.setting.split(",")
            vals[(r.dataset, r.method, int(l_txt[2:]), float(s_txt[2:]), r.metric)].append(r.value)
        methods = list(dict.fromkeys(r.method for r in result.records))
        for dname in result.datasets():
            for depth in cfg.depths:  # accuracy vs sparsity
                series = {}
                for m in methods:
                    ss = sorted(s for (d, mm, L, s, met) in vals if d == dname and mm == m and L == depth
                                and met == "top1")
                    if m.startswith("Dense-"):  # trained once: one value (at the main sparsity: all seeds), a band
                        ss = [s for s in ss if s == cfg.sparsities[0]] or ss[:1]
                    if ss:
                        stats = [mean_std(vals[(dname, m, depth, s, "top1")]) for s in ss]
                        series[m] = ([s for s in ss], [a for a, _, _ in stats], [b for _, b, _ in stats])
                if series:
                    p = f"figures/top1_vs_sparsity_{dname}_L{depth}.png"
                    seeds_txt = "" if cfg.sweep_seeds in (0, len(cfg.seeds)) else (
                        f" (s={cfg.sparsities[0]:g}: {seeds_phrase(len(cfg.seeds))}, other points: "
                        f"{seeds_phrase(cfg.sweep_seeds)})")
                    _errorbar_figure(series, out_dir / p, xlabel="sparsity (fraction of weights removed)",
                                     ylabel="test accuracy (%)", title=f"{dname}, {depth} layers{seeds_txt}",
                                     hlines=tuple(m for m in series if m.startswith("Dense-")))
                    result.figures.append(p)
            if len(cfg.depths) > 1:  # accuracy and MAD vs depth
                for metric in ("top1", "MAD"):
                    s0 = cfg.sparsities[0]
                    series = {}
                    for m in methods:
                        ds = [L for L in cfg.depths if (dname, m, L, s0, metric) in vals]
                        if ds:
                            stats = [mean_std(vals[(dname, m, L, s0, metric)]) for L in ds]
                            series[m] = (ds, [a for a, _, _ in stats], [b for _, b, _ in stats])
                    p = f"figures/{metric}_vs_depth_{dname}.png"
                    _errorbar_figure(series, out_dir / p, xlabel="number of layers", ylabel=metric,
                                     title=f"{dname}: {metric} vs depth (UGT at s={s0:g})", logx=True)
                    result.figures.append(p)
    else:
        vals = defaultdict(list)
        for r in result.records:
            what = r.setting.split(",")[0]
            vals[(r.dataset, r.method, what, r.metric)].append(r.value)
        methods = list(dict.fromkeys(r.method for r in result.records))
        for dname in result.datasets():
            for what, levels, xlabel in (("features", cfg.feature_noise, "fraction of nodes with noisy features"),
                                          ("edges", cfg.edge_noise, "random edges added / |E|")):
                series = {}
                if what == "edges" and 0.0 not in levels and 0.0 in cfg.feature_noise:
                    levels = (0.0, *levels)  # the clean run (features=0) is the zero budget of both curves
                for m in methods:
                    keys = [(dname, m, f"{'features' if lv == 0 else what}={lv:g}", "top1") for lv in levels]
                    if not all(k in vals for k in keys):
                        continue
                    stats = [mean_std(vals[k]) for k in keys]
                    xs, ms, ss = list(levels), [a for a, _, _ in stats], [b for _, b, _ in stats]
                    series[m] = (xs, ms, ss)
                if series:
                    p = f"figures/top1_vs_{what}_noise_{dname}.png"
                    _errorbar_figure(series, out_dir / p, xlabel=xlabel, ylabel="test accuracy (%)",
                                     title=f"{dname}: accuracy under {what} perturbation")
                    result.figures.append(p)
            series = {}
            for i, m in enumerate(methods):
                if (dname, m, "ood", "AUROC") in vals:
                    a, b, _ = mean_std(vals[(dname, m, "ood", "AUROC")])
                    series[m] = ([i], [a], [b])
            if series:
                p = f"figures/ood_auroc_{dname}.png"
                fig, ax = figure()
                names = list(series)
                ax.bar(range(len(names)), [series[n][1][0] for n in names], yerr=[series[n][2][0] for n in names],
                       capsize=3)
                ax.set_xticks(range(len(names)), names)
                ax.set_ylabel("OOD AUROC (max softmax)")
                ax.set_ylim(0.5, 1.0)
                ax.set_title(f"{dname}: held-out-class detection")
                atomic_savefig(fig, out_dir / p)
                result.figures.append(p)


def run(config: UGTConfig, out_dir: Path) -> Result:
    """Run the experiment described by ``config``; figures go to ``out_dir / "figures"``."""
    config.validate()
    config = config.replace(device=str(resolve_device(config.device)))  # "auto" when called directly
    result = Result(name="ugt", preset=config.preset, config=config.to_dict())
    for d in config.datasets:  # a user's graph file: its sizes are known once read (Planetoid: in validate)
        if d not in PLANETOID_SIZES:
            g = _load(d)
            check_layer_budget(config, g.num_features, g.num_classes, d)
    if config.protocol == "robust":
        _run_robust(config, result)
    else:
        _run_standard(config, result)
    _figures(config, result, Path(out_dir))
    return result


SPEC = ExperimentSpec(
    name="ugt",
    title="Untrained GNN tickets: sparse subnetworks of randomly initialised GNNs",
    field="graph learning",
    paper="Huang et al., 'You Can Have Better Graph Neural Networks by Not Training Weights at All: Finding "
    "Untrained GNNs Tickets', LoG 2022, arXiv:2211.15335",
    config=UGTConfig,
    run=run,
    primary_metric="top1",
    extra="graph",
)
