"""The default industry experiment: ExpertKnowledgeAssigner beside its baselines and ablations.

Data sets (``reprozoo run industry``):

- ``GICS-firms``: the 2020 Russell 3000 firms, seeded train/test split stratified by sector, GICS 2018 tree
  (sector, industry group, industry, sub-industry) with the dated definitions of 2014 and 2016 as history.
- ``SIC-firms``: the same firms that carry an SEC SIC code, the SIC 1987 tree cut at the industry group (the SEC
  gives many firms a group-level code), titles only, split stratified by division.
- ``GICS-2023-temporal``: learn from the 2020 assignments (mapped into the 2023 tree) and the 2023 revision's
  definitions; predict the 2023-2026 sub-industries of the S&P 500 firms (one item per filtered spell, at its
  first-seen date, from the firm's 2024 summary); subsets ``changed`` (sub-industry differs from the firm's
  2020 one) and ``new`` (an industry the 2023 revision created).

Per level: ``top1``, ``top3``, ``top5`` (accuracy, %), ``macro_F1`` (%), and a 95% bootstrap interval of top1
(``top1_ci_low``/``top1_ci_high``); setting ``level=<name>`` plus ``,changed`` / ``,new``; ``seconds`` (fit).
Figures: top-1 accuracy by level for every arm and data set; a 2-D map (PCA) of a few industries' vectors
moving across periods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.io import atomic_savefig
from reprozoo.core.plots import figure, line_plot
from reprozoo.core.progress import log, track
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result
from reprozoo.datasets.industry import ICS, gics_code_map, load_firms_2020, load_sp500_spells
from reprozoo.industry.assigner import ExpertKnowledgeAssigner
from reprozoo.industry.baselines import EmbeddingLR, HierarchicalLR, NearestDefinition, TfidfLR
from reprozoo.text import make_encoder

__all__ = ["IndustryConfig", "Task", "make_task", "evaluate", "run", "BASELINES", "ABLATIONS", "SPEC"]

METHOD = "ExpertKnowledgeAssigner"
BASELINES = ("TF-IDF+LR", "Embedding+LR", "NearestDefinition", "Hierarchical")
#: ablations: the method without one kind of expert knowledge (recorded as methods)
ABLATIONS = ("-definitions", "-hierarchy", "-time")
_ABLATION_FLAGS = {"-definitions": {"use_definitions": False}, "-hierarchy": {"use_hierarchy": False},
                   "-time": {"use_time": False}}
DATASETS = ("GICS-firms", "SIC-firms", "GICS-2023-temporal")


@dataclass
class IndustryConfig(TorchExperimentConfig):
    """Knobs of the industry experiment (defaults = the quick preset). Every value is ours: the paper's are
    unknown."""

    datasets: tuple[str, ...] = DATASETS
    seeds: tuple[int, ...] = (0,)
    #: text encoder of the method and of Embedding+LR / NearestDefinition
    encoder: str = knob("tfidf", choices=("tfidf", "minilm"))
    #: TF-IDF reduced by LSA to this many dimensions (method and Embedding+LR)
    encoder_dim: int = knob(256, ge=2)
    #: hidden size d of firm and industry representations
    dim: int = knob(128, ge=2)
    #: full-batch AdamW steps
    epochs: int = knob(60, ge=1)
    #: AdamW learning rate
    lr: float = knob(3e-3, gt=0)
    #: AdamW weight decay
    weight_decay: float = knob(1e-2, ge=0)
    #: decoding of the method: 0 = the most probable leaf (exact), 1 = greedy, B = beam of width B
    beam_width: int = knob(0, ge=0)
    #: share of the firms held out for test (firm splits)
    test_size: float = knob(0.3, gt=0, lt=1)
    #: use at most this many firms per firm split / training firms for the temporal split (0: all)
    max_firms: int = knob(0, ge=0)
    #: bootstrap resamples of the top-1 interval (0: none)
    bootstrap: int = knob(1000, ge=0)
    #: baselines to run
    baselines: tuple[str, ...] = knob(BASELINES, choices=BASELINES, unique=True)
    #: ablations to run
    ablations: tuple[str, ...] = knob(ABLATIONS, choices=ABLATIONS, unique=True)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "standard": {"encoder": "minilm", "seeds": (0, 1, 2), "epochs": 150, "lr": 1e-3},
        "smoke": {"epochs": 3, "max_firms": 300, "bootstrap": 20, "encoder_dim": 64, "dim": 16},
    }
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = DATASETS
    # encoder="minilm" without the text extra: run() stops before any fit with make_encoder's ImportError,
    # which says how to install it (presets still build, so `reprozoo info` works without the extra)


@dataclass
class Task:
    """One evaluation: training assignments, test firms and their gold codes, the tree, named subsets."""

    ics: ICS
    train_texts: list[str]
    train_codes: list[str]
    train_times: np.ndarray
    test_texts: list[str]
    test_codes: list[str]
    test_times: np.ndarray
    subsets: dict[str, np.ndarray]


def make_task(name: str, seed: int, *, test_size: float = 0.3, max_firms: int = 0) -> Task:
    """Build data set ``name`` for ``seed`` (the split is seeded; the temporal split is fixed)."""
    firms = load_firms_2020()
    rng = np.random.default_rng(seed)
    if name in ("GICS-firms", "SIC-firms"):
        if name == "GICS-firms":
            ics = ICS.gics("2018")
            keep = np.arange(len(firms))
            codes = list(firms.gics)
            strata = [c[:2] for c in codes]
        else:
            ics = ICS.sic1987().truncate(3)
            keep = np.array([i for i, c in enumerate(firms.sic) if c])
            codes = [firms.sic[i][:3] if len(firms.sic[i]) == 4 else firms.sic[i] for i in keep]
            strata = [ics.path(c)[0] for c in codes]
        if max_firms and len(keep) > max_firms:
            pick = np.sort(rng.choice(len(keep), max_firms, replace=False))
            keep, codes, strata = keep[pick], [codes[i] for i in pick], [strata[i] for i in pick]
        counts = {c: strata.count(c) for c in set(strata)}
        common = max(counts, key=counts.get)
        strata = [c if counts[c] >= 2 else common for c in strata]  # a stratum of one joins the largest
        tr, te = train_test_split(np.arange(len(keep)), test_size=test_size, random_state=seed, stratify=strata)
        texts = [firms.texts[i] for i in keep]
        t = np.full(len(keep), firms.time)
        return Task(ics, [texts[i] for i in tr], [codes[i] for i in tr], t[tr], [texts[i] for i in te],
                    [codes[i] for i in te], t[te], {})
    if name == "GICS-2023-temporal":
        ics = ICS.gics("2023")
        cmap = gics_code_map(ICS.gics("2018"), ics)
        train_idx = np.arange(len(firms))
        if max_firms and len(train_idx) > max_firms:
            train_idx = np.sort(rng.choice(len(train_idx), max_firms, replace=False))
        sp = load_sp500_spells(ics=ics)
        before = {firms.ids[i].replace("-", "."): cmap[firms.gics[i]] for i in range(len(firms))}
        items = np.arange(len(sp))
        if max_firms and len(items) > max_firms // 2:
            items = np.sort(rng.choice(len(items), max_firms // 2, replace=False))
        symbols = [sp.symbols[i] for i in items]
        gold = [sp.codes[i] for i in items]
        changed = np.array([s in before and before[s] != g for s, g in zip(symbols, gold, strict=True)])
        new = np.array([ics.introduced[g] == ics.effective for g in gold])
        return Task(ics, [firms.texts[i] for i in train_idx], [cmap[firms.gics[i]] for i in train_idx],
                    np.full(len(train_idx), firms.time), [sp.texts[s] for s in symbols], gold, sp.start[items],
                    {"changed": changed, "new": new})
    raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


def _bootstrap_ci(hits: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of ``hits`` (0/1) over ``n_boot`` resamples, in percent."""
    rng = np.random.default_rng(seed)
    means = rng.choice(hits, size=(n_boot, len(hits)), replace=True).mean(1)
    return float(np.percentile(means, 2.5) * 100), float(np.percentile(means, 97.5) * 100)


def evaluate(model: Any, task: Task, *, bootstrap: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per level (and subset): top1/top3/top5 accuracy (%), macro-F1 (%), bootstrap interval of top1.

    Gold codes above a level (an upper-node label) are skipped at the deeper levels. Returns
    ``{setting: {metric: value}}``.
    """
    ics = task.ics
    out: dict[str, dict[str, float]] = {}
    times = task.test_times
    for lv in range(1, ics.n_levels + 1):
        top = model.predict_topk(task.test_texts, times, k=5, level=lv)
        gold = np.array([ics.ancestor_at(c, lv) or "" for c in task.test_codes], dtype=object)
        ok = gold != ""
        for subset, mask in [("", np.ones(len(gold), bool)), *task.subsets.items()]:
            m = ok & mask
            if not m.any():
                continue
            hits = {k: (top[m, :k] == gold[m, None]).any(1) for k in (1, 3, 5)}
            setting = f"level={ics.level_names[lv - 1]}" + (f",{subset}" if subset else "")
            rec = {f"top{k}": float(h.mean() * 100) for k, h in hits.items()}
            rec["macro_F1"] = float(f1_score(list(gold[m]), list(top[m, 0]), labels=sorted(set(gold[m])),
                                             average="macro", zero_division=0) * 100)
            if bootstrap:
                rec["top1_ci_low"], rec["top1_ci_high"] = _bootstrap_ci(hits[1].astype(float), bootstrap, seed)
            rec["n_test"] = int(m.sum())
            out[setting] = rec
    return out


def _arms(config: IndustryConfig, ics: ICS, seed: int) -> list[tuple[str, str, Any]]:
    common = dict(encoder=config.encoder, encoder_dim=config.encoder_dim, dim=config.dim, epochs=config.epochs,
                  lr=config.lr, weight_decay=config.weight_decay, beam_width=config.beam_width or None,
                  random_state=seed, device=config.device)
    arms = [(METHOD, "method", ExpertKnowledgeAssigner(ics, **common))]
    for name in config.ablations:
        arms.append((name, "method", ExpertKnowledgeAssigner(ics, **common, **_ABLATION_FLAGS[name])))
    make = {
        "TF-IDF+LR": lambda: TfidfLR(ics),
        "Embedding+LR": lambda: EmbeddingLR(ics, encoder=config.encoder, encoder_dim=config.encoder_dim,
                                            random_state=seed),
        "NearestDefinition": lambda: NearestDefinition(ics, encoder=config.encoder, random_state=seed),
        "Hierarchical": lambda: HierarchicalLR(ics),
    }
    arms += [(b, "baseline", make[b]()) for b in config.baselines]
    return arms


def run(config: IndustryConfig, out_dir: Path) -> Result:
    """Fit every arm on every data set and seed; record per-level metrics; draw the figures."""
    out_dir = Path(out_dir)
    make_encoder(config.encoder)  # up front: "minilm" without the text extra fails here, naming the fix
    result = Result(name="industry", preset=config.preset, config=config.to_dict())
    by_level: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    moving = None
    jobs = [(d, s) for d in config.datasets for s in config.seeds]
    for dataset, seed in track(jobs, "industry: data sets x seeds"):
        task = make_task(dataset, seed, test_size=config.test_size, max_firms=config.max_firms)
        log(f"industry {dataset} seed {seed}: {len(task.train_texts)} training assignments, "
            f"{len(task.test_texts)} test items, {len(task.ics.leaves)} leaves")
        for name, role, model in _arms(config, task.ics, seed):
            t0 = time.perf_counter()
            model.fit(task.train_texts, task.train_codes, task.train_times)
            seconds = time.perf_counter() - t0
            scores = evaluate(model, task, bootstrap=config.bootstrap, seed=seed)
            for setting, rec in scores.items():
                result.add_many(dataset, name, role, rec, seed=seed, setting=setting)
            result.add(dataset, name, role, "seconds", seconds, seed=seed)
            if seed == config.seeds[0]:
                levels = [s for s in scores if "," not in s]
                by_level.setdefault(dataset, {})[name] = (list(range(1, len(levels) + 1)),
                                                          [scores[s]["top1"] for s in levels])
            if name == METHOD and (moving is None or dataset == "GICS-2023-temporal"):
                moving = (model, task.ics)  # the temporal split's industries when it runs
    figdir = out_dir / "figures"
    for dataset, series in by_level.items():
        path = figdir / f"top1_by_level_{dataset}.png"
        line_plot(series, path, xlabel="level (1 = top)", ylabel="top-1 accuracy (%)", integer_x=True,
                  title=f"industry: top-1 accuracy by level, {dataset}")
        result.figures.append(str(path.relative_to(out_dir)))
    if moving is not None:
        path = figdir / "industry_vectors_over_periods.png"
        plot_moving_industries(*moving, path)
        result.figures.append(str(path.relative_to(out_dir)))
    return result


def plot_moving_industries(model: ExpertKnowledgeAssigner, ics: ICS, path: Path, n: int = 6) -> Path:
    """PCA map of u_{k,t} of a few leaves across the periods (the ones whose vectors move most)."""
    from sklearn.decomposition import PCA

    U = model.industry_embeddings_  # (T, K, d)
    leaves = [model.nodes_.index(c) for c in ics.leaves]
    move = np.linalg.norm(U[-1, leaves] - U[0, leaves], axis=1)
    pick = [leaves[i] for i in np.argsort(-move)[:n]]
    flat = U[:, pick].reshape(-1, U.shape[2])
    xy = PCA(n_components=2, random_state=0).fit_transform(flat).reshape(U.shape[0], len(pick), 2)
    fig, ax = figure(7.0, 5.0)
    for j, k in enumerate(pick):
        ax.plot(xy[:, j, 0], xy[:, j, 1], marker="o", markersize=3, label=ics.title[model.nodes_[k]][:32])
        ax.annotate(f"{model.periods_[-1]:.0f}", xy[-1, j], fontsize=6)
        ax.annotate(f"{model.periods_[0]:.0f}", xy[0, j], fontsize=6)
    ax.set_title("industry vectors u_{k,t} across periods (PCA)")
    ax.legend(fontsize=6)
    return atomic_savefig(fig, path)


SPEC = ExperimentSpec(
    name="industry",
    title="Assigning firms to industries with definitions, hierarchy and dated expert assignments",
    field="text classification / finance",
    paper="Zhao, Fang, He, Huang, 'Exploiting Expert Knowledge for Assigning Firms to Industries: A Novel Deep "
          "Learning Method', arXiv:2209.05943 (2022)",
    config=IndustryConfig,
    run=run,
    primary_metric="top1",
    higher_is_better=True,
    extra="graph",
    threads=1,
    headline=(METHOD,),  # the ablations (-definitions, -hierarchy, -time) are recorded with role method too
)
