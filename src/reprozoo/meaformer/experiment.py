"""The default MEAformer experiment: per-entity vs KG-level modality fusion on DBP15K, clean and corrupted.

For every data set and seed: MEAformer (role ``method``) and the baselines of
:mod:`reprozoo.meaformer.baselines` (role ``baseline``) under each modality setting (``no-surface``: structure
and relations; ``char``: + character bigrams; ``surface``: + names and character bigrams), scored on the sealed
test links with CSLS (Hits@1/10, MRR, MR, left to right). Robustness: one modality (``corrupt_modality``) is
replaced by noise (``noise=p``) or dropped (``drop=p``) for a fraction p of the entities; MEAformer and KG-fusion
are trained on the corrupted inputs, and MEAformer's mean weight of that modality is recorded for corrupted and
clean entities. Figures: Hits@1 per method and setting, Hits@1 against the corruption level, the weights of the
corrupted modality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reprozoo.core.device import resolve_device
from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.plots import line_plot, metric_by_dataset
from reprozoo.core.progress import log, track
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result

__all__ = ["Config", "MEAformerConfig", "run", "SETTINGS"]

#: modality settings: name -> modalities (attributes / images join when a user supplies them)
SETTINGS = {
    "no-surface": ("structure", "relation", "attribute", "image"),
    "char": ("structure", "relation", "attribute", "image", "char"),
    "surface": ("structure", "relation", "attribute", "image", "name", "char"),
}
TRAINED = ("MEAformer", "KG-fusion", "Uniform", "GCN-Align")
METRICS = ("Hits@1", "Hits@10", "MRR", "MR")


@dataclass
class MEAformerConfig(TorchExperimentConfig):
    """Knobs of the MEAformer experiment (defaults: the quick preset)."""

    #: DBP15K language pairs
    datasets: tuple[str, ...] = ("ZH-EN",)
    #: seeds of model initialisation and batch order (the split uses ``split_seed``)
    seeds: tuple[int, ...] = (0, 1, 2)
    #: gold links kept (a random subset with their entities; 0 = the full graph of 15,000 links)
    subset_links: int = knob(2500, ge=0, le=15000)
    #: hops of neighbours added around the kept links' entities
    subset_hops: int = knob(0, ge=0, le=2)
    #: modality settings (see SETTINGS)
    settings: tuple[str, ...] = knob(("no-surface", "surface"), choices=tuple(SETTINGS), nonempty=True,
                                     unique=True)
    #: baselines to run
    baselines: tuple[str, ...] = knob(("KG-fusion", "Uniform", "GCN-Align", "NameNN"),
                                      choices=("KG-fusion", "Uniform", "GCN-Align", "NameNN"), unique=True)
    #: fraction of the gold links used for training (validation carved from it); paper: 30 %
    seed_ratio: float = knob(0.3, gt=0, lt=1)
    #: exact number of training links instead of seed_ratio (0: use seed_ratio); parity: 4,500
    n_train: int = knob(0, ge=0)
    #: share of the training links held out for validation (model selection); 0 with select=last
    valid_ratio: float = knob(0.1, ge=0, lt=1)
    #: seed of the split shuffle (the reference: 42)
    split_seed: int = knob(42, ge=0)
    #: checkpoint: best validation MRR ("valid") or the last epoch ("last", the parity runs)
    select: str = knob("valid", choices=("valid", "last"))
    #: epochs between validation evaluations
    eval_every: int = knob(5, ge=1)
    #: training epochs (paper: 250 on DBP15K)
    epochs: int = knob(40, ge=1)
    #: seed pairs per step (paper: 3,500)
    batch_size: int = knob(3500, ge=2)
    #: AdamW learning rate and weight decay (paper scripts: 5e-4, 1e-4)
    lr: float = knob(5e-4, gt=0)
    weight_decay: float = knob(1e-4, ge=0)
    #: size of every modality vector (paper: 300)
    hidden: int = knob(300, ge=1)
    #: FFN width of the fusion transformer (reference: 400)
    intermediate: int = knob(400, ge=1)
    #: ours: LayerNorm the modality tokens before the fusion transformer. Off: the authors' layer (at hidden 300 it
    #: scored higher Hits@1 in every run measured here: quick, 3 seeds, and parity; see the card)
    token_norm: bool = False
    #: InfoNCE temperature
    tau: float = knob(0.1, gt=0)
    #: CSLS neighbourhood at evaluation (0: cosine)
    csls_k: int = knob(3, ge=0)
    #: name encoder for the surface setting
    text_encoder: str = knob("tfidf", choices=("tfidf", "minilm"))
    #: hard entity replay (paper Sec. 3.5; off in the released scripts)
    replay: bool = False
    #: also run the iterative variant (MEAformer-IL): `epochs` plain, then `epochs` more with pseudo-seeding
    #: (the reference: 500 + 500)
    iterative: bool = False
    #: also run the unsupervised variant (MEAformer-unsup: seeds from char-bigram similarity; settings with char)
    unsupervised: bool = False
    #: corruption levels (fraction of entities) for the robustness runs; 0 is the clean run
    noise_levels: tuple[float, ...] = knob((0.4,), ge=0, le=1, unique=True)
    #: corruption kinds: replace by noise, drop (mark absent)
    noise_modes: tuple[str, ...] = knob(("noise",), choices=("noise", "drop"), unique=True)
    #: the modality corrupted
    corrupt_modality: str = knob("relation", choices=("relation", "attribute", "image", "name", "char"))
    #: the setting whose inputs are corrupted
    noise_setting: str = knob("no-surface", choices=tuple(SETTINGS))

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "smoke": {"seeds": (0,), "subset_links": 300, "epochs": 3, "hidden": 16, "intermediate": 32,
                  "eval_every": 1, "settings": ("no-surface", "surface"), "noise_levels": (0.4,)},
        # like-for-like with the reference run: full ZH-EN, 4,500 train / 10,500 test, 15 epochs, last epoch
        "parity": {"seeds": (0,), "subset_links": 0, "settings": ("no-surface",), "baselines": (),
                   "n_train": 4500, "valid_ratio": 0.0, "select": "last", "epochs": 15, "noise_levels": ()},
        "parity_char": {"seeds": (0,), "subset_links": 0, "settings": ("char",), "baselines": (),
                        "n_train": 4500, "valid_ratio": 0.0, "select": "last", "epochs": 12, "noise_levels": ()},
        # the paper's settings: all pairs, 250 epochs, iterative and unsupervised variants (a long run or a GPU)
        "standard": {"datasets": ("ZH-EN", "JA-EN", "FR-EN"), "subset_links": 0, "epochs": 250,
                     "iterative": True, "unsupervised": True,
                     "noise_levels": (0.2, 0.4, 0.6), "noise_modes": ("noise", "drop")},
    }
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ("ZH-EN", "JA-EN", "FR-EN")

    def validate(self) -> None:
        super().validate()
        if self.noise_levels and self.noise_setting not in self.settings:
            raise ConfigError(f"noise_setting={self.noise_setting!r} should be one of settings={self.settings!r} "
                              "(the corrupted runs reuse that setting's modalities)")
        if self.corrupt_modality in ("name", "char") and "char" not in SETTINGS[self.noise_setting] or \
                self.corrupt_modality == "name" and self.noise_setting != "surface":
            raise ConfigError(f"corrupt_modality={self.corrupt_modality!r} is not in the noise_setting "
                              f"{self.noise_setting!r}")
        if "NameNN" in self.baselines and not any(s != "no-surface" for s in self.settings):
            raise ConfigError("the NameNN baseline needs a surface setting ('char' or 'surface') in settings")
        if self.select == "valid" and self.valid_ratio == 0:
            raise ConfigError("select='valid' needs valid_ratio > 0 (a validation split to select on)")


Config = MEAformerConfig


def _setting_of(setting: str, mode: str | None = None, level: float | None = None) -> str:
    return setting if mode is None else f"{setting} {mode}={level:g}"


def run(config: MEAformerConfig, out_dir: Path) -> Result:
    """Run MEAformer and its baselines over ``config.datasets`` x ``config.seeds`` x settings (+ corruption).

    Returns a :class:`~reprozoo.core.results.Result`; writes figures under ``out_dir / "figures"``.
    """

    from reprozoo.datasets import load_dbp15k, split_links
    from reprozoo.meaformer.baselines import make_trainer, name_nn
    from reprozoo.meaformer.features import build_modalities, corrupt_modality

    out_dir = Path(out_dir)
    result = Result(name="meaformer", preset=config.preset, config=config.to_dict())
    device = resolve_device(config.device)  # "auto" too, when run() is called without reprozoo.run
    common = dict(hidden=config.hidden, intermediate=config.intermediate, epochs=config.epochs,
                  batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay, tau=config.tau,
                  csls_k=config.csls_k, select=config.select, eval_every=config.eval_every,
                  replay=config.replay, token_norm=config.token_norm, text_encoder=config.text_encoder,
                  device=device)
    corrupt_runs = [(mode, lvl) for mode in config.noise_modes for lvl in config.noise_levels if lvl > 0]
    weight_curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for dataset in config.datasets:
        kg = load_dbp15k(dataset)
        if config.subset_links:
            kg = kg.subset(config.subset_links, seed=0, hops=config.subset_hops)
            result.notes.append(f"{dataset}: connected-subset run on {len(kg.links)} gold links, {kg.n_entities} "
                                f"entities, {len(kg.triples)} triples (subset_links={config.subset_links}, "
                                f"hops={config.subset_hops}, seed 0)")
        split = split_links(kg.links, train_ratio=config.seed_ratio, valid_ratio=config.valid_ratio,
                            seed=config.split_seed, n_train=config.n_train or None)
        inputs = {s: build_modalities(kg, **{m: m in SETTINGS[s] for m in
                                             ("structure", "relation", "attribute", "image", "name", "char")},
                                      text_encoder=config.text_encoder) for s in config.settings}
        jobs = [(seed, s, None, None) for seed in config.seeds for s in config.settings]
        jobs += [(seed, config.noise_setting, mode, lvl) for seed in config.seeds for mode, lvl in corrupt_runs]
        gcn_done: dict[int, dict[str, float]] = {}
        for seed, s, mode, lvl in track(jobs, f"meaformer: {dataset} runs"):
            setting = _setting_of(s, mode, lvl)
            data, hit = inputs[s], None
            if mode is not None:
                data, hit = corrupt_modality(inputs[s], config.corrupt_modality, lvl, mode=mode, seed=seed)
            methods = ["MEAformer", "KG-fusion"] if mode else ["MEAformer"] + [b for b in config.baselines
                                                                             if b in TRAINED]
            if mode is None and config.iterative:
                methods.append("MEAformer-IL")
            if mode is None and config.unsupervised and "char" in SETTINGS[s]:
                methods.append("MEAformer-unsup")
            for method in methods:
                if method not in ("MEAformer", "MEAformer-IL", "MEAformer-unsup", *config.baselines):
                    continue
                role = "method" if method.startswith("MEAformer") else "baseline"
                if method == "GCN-Align" and seed in gcn_done:  # structure only: the same run for every setting
                    result.add_many(dataset, method, role, gcn_done[seed], seed=seed, setting=setting)
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                variant = {"MEAformer-IL": dict(iterative=True, il_start=config.epochs, epochs=2 * config.epochs),
                           "MEAformer-unsup": dict(unsupervised=True, select="last")}.get(method, {})
                tr = make_trainer(method.split("-")[0] if variant else method,
                                  **{**common, **variant}, modalities=SETTINGS[s], seed=seed)
                tr.fit(kg, split, data=data)
                scores = tr.evaluate("test")
                row = {m: scores[m] for m in METRICS}
                row["train_cpu_seconds_per_epoch"] = float(np.mean([h["train_cpu_seconds"] for h in tr.history_]))
                row["seconds"] = time.perf_counter() - t0
                row["cpu_seconds"] = time.process_time() - c0
                row["best_epoch"] = tr.best_epoch_
                if method.startswith("MEAformer"):
                    w = tr.modality_weights()
                    for m, v in w.items():
                        row[f"weight_mean[{m}]"] = float(v.mean())
                        row[f"weight_std[{m}]"] = float(v.std())
                    if hit is not None and config.corrupt_modality in w:
                        v = w[config.corrupt_modality]
                        row[f"weight_corrupted[{config.corrupt_modality}]"] = float(v[hit].mean())
                        clean = ~hit & inputs[s].present[config.corrupt_modality]  # had it, kept it
                        row[f"weight_clean[{config.corrupt_modality}]"] = float(v[clean].mean())
                if method == "GCN-Align":
                    gcn_done[seed] = row
                result.add_many(dataset, method, role, row, seed=seed, setting=setting)
            if mode is None and "NameNN" in config.baselines and s != "no-surface":
                result.add_many(dataset, "NameNN", "baseline", name_nn(data, split.test, csls_k=config.csls_k),
                                seed=seed, setting=setting)
            del data
    result.notes.append("Hits@k in percent, MRR as a fraction, MR = mean rank; CSLS (k="
                        f"{config.csls_k}) over the test links, left to right; checkpoint: {config.select}.")
    result.notes.append("cpu_seconds / train_cpu_seconds_per_epoch: CPU time of this process (all threads); "
                        "wall seconds on a shared machine are contention-prone.")
    _figures(result, config, out_dir, corrupt_runs, weight_curves)
    log(f"meaformer: {len(result.records)} records, {len(result.figures)} figures")
    return result


def _figures(result: Result, config: MEAformerConfig, out_dir: Path, corrupt_runs, weight_curves) -> None:
    fig_dir = out_dir / "figures"
    for s in config.settings:
        path = fig_dir / f"hits1_{s}.png"
        metric_by_dataset(result, "Hits@1", path, setting=s)
        result.figures.append(str(path.relative_to(out_dir)))
    if not corrupt_runs:
        return
    summary = result.summary()
    m = config.corrupt_modality
    for dataset in result.datasets():
        hits: dict[str, tuple[list[float], list[float]]] = {}
        weights: dict[str, tuple[list[float], list[float]]] = {}
        for mode in config.noise_modes:
            levels = [0.0, *sorted(lvl for md, lvl in corrupt_runs if md == mode)]
            for method in ("MEAformer", "KG-fusion"):
                xs, ys = [], []
                for lvl in levels:
                    setting = config.noise_setting if lvl == 0 else _setting_of(config.noise_setting, mode, lvl)
                    role = "method" if method == "MEAformer" else "baseline"
                    stats = summary.get((dataset, setting, method, role))
                    if stats and "Hits@1" in stats:
                        xs.append(lvl)
                        ys.append(stats["Hits@1"][0])
                if xs:
                    hits[f"{method} ({mode})"] = (xs, ys)
            for part in ("corrupted", "clean"):
                xs, ys = [], []
                for lvl in levels[1:]:
                    stats = summary.get((dataset, _setting_of(config.noise_setting, mode, lvl), "MEAformer",
                                         "method"), {})
                    key = f"weight_{part}[{m}]"
                    if key in stats:
                        xs.append(lvl)
                        ys.append(stats[key][0])
                if xs:
                    weights[f"{part} entities ({mode})"] = (xs, ys)
        if hits:
            path = fig_dir / f"robustness_{dataset}.png"
            line_plot(hits, path, xlabel=f"fraction of entities with {m} corrupted", ylabel="Hits@1 (%)",
                      title=f"{dataset}: Hits@1 under corruption of {m}")
            result.figures.append(str(path.relative_to(out_dir)))
        if weights:
            path = fig_dir / f"weights_{dataset}.png"
            line_plot(weights, path, xlabel=f"fraction of entities with {m} corrupted",
                      ylabel=f"mean MEAformer weight of {m}", title=f"{dataset}: weight of the corrupted modality")
            result.figures.append(str(path.relative_to(out_dir)))


SPEC = ExperimentSpec(
    name="meaformer",
    title="MEAformer: multi-modal entity alignment with per-entity modality weights",
    field="knowledge graphs",
    paper="Chen et al., 'MEAformer: Multi-modal Entity Alignment Transformer for Meta Modality Hybrid', "
          "ACM MM 2023, arXiv:2212.14454",
    config=MEAformerConfig,
    run=run,
    primary_metric="Hits@1",
    higher_is_better=True,
    extra="graph",
    threads=2,
)
