"""The default UDBGL experiment: UDBGL beside its baselines on the shipped multi-view sets.

For every data set, seed and anchor setting (m = c, m = 2c, ...): UDBGL (method ``UDBGL``,
role ``method``) and the baselines of :mod:`reprozoo.udbgl.baselines` (role ``baseline``),
scored with ACC, NMI (arithmetic), NMImax (the authors' max-normalised NMI), ARI, PUR and
wall-clock ``seconds``. Figures: one bar chart per metric across data sets, and UDBGL's
objective curve. Run with ``reprozoo run udbgl --preset quick``.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reprozoo.core.experiment import ConfigError, ExperimentConfig, knob
from reprozoo.core.metrics import clustering_scores
from reprozoo.core.plots import line_plot, metric_by_dataset
from reprozoo.core.progress import log, track
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.report import seeds_phrase
from reprozoo.core.results import Result
from reprozoo.datasets import load_multiview
from reprozoo.datasets.multiview import list_multiview, name_user_files
from reprozoo.udbgl.baselines import anchor_graph_concat, kmeans_concat, kmeans_single, lmvsc, spectral_concat
from reprozoo.udbgl.udbgl import UDBGL, RankConstraintWarning

__all__ = ["Config", "UDBGLConfig", "run", "METRICS", "BASELINES"]

METRICS = ("ACC", "NMI", "NMImax", "ARI", "PUR")
BASELINES = ("KMeans-concat", "Spectral-concat", "KMeans-single", "AnchorGraph-concat", "LMVSC")
#: the shipped multi-view sets (data/multiview/, see its PROVENANCE.md)
ALL_DATASETS = (
    "MSRC-v1", "HW", "3Sources", "BBCSport", "ORL_4views", "Texas", "Cornell", "Washington", "WebKB-Texas",
    "synthetic3d",
)


@dataclass
class UDBGLConfig(ExperimentConfig):
    """Knobs of the UDBGL experiment (defaults = the quick preset)."""

    #: data sets (names of the shipped files, see ``reprozoo list``)
    datasets: tuple[str, ...] = ALL_DATASETS
    #: seeds: each seeds UDBGL's anchor k-means and every baseline's k-means
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    #: anchor settings: m = factor * c for each factor (setting "m=c", "m=2c", ...)
    anchor_factors: tuple[int, ...] = knob((1,), ge=1, nonempty=True, unique=True)
    #: ridge weight alpha on ||Z_v||^2 (authors' demo value)
    alpha: float = knob(1e-3, ge=0)
    #: fusion weight beta on ||sum delta_v Z_v - P||^2 (authors' demo value)
    beta: float = knob(1e-5, ge=0)
    #: outer iterations of UDBGL (reference: 20)
    max_iter: int = knob(20, ge=1)
    #: absolute stopping tolerance on the objective / view weights (reference: 1e-5)
    tol: float = knob(1e-5, ge=0)
    #: UDBGL's P-step: "reference" = the authors' lambda schedule only (then the k-means fallback);
    #: "extended" = a further lambda search until exactly c components (port addition)
    rank_search: str = knob("extended", choices=("reference", "extended"))
    #: baselines to run, any of BASELINES ("KMeans-single" reports the mean and the best view)
    baselines: tuple[str, ...] = knob(BASELINES, choices=BASELINES, unique=True)
    #: k-means restarts of the k-means-based baselines
    kmeans_n_init: int = knob(10, ge=1)
    #: neighbours of the kNN affinity of Spectral-concat
    spectral_neighbors: int = knob(10, ge=1)
    #: ridge weight alpha of LMVSC's Eq. (4) (untuned, as UDBGL's; m = the setting's anchors per view)
    lmvsc_alpha: float = knob(1e-3, ge=0)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "full": {"seeds": tuple(range(10)), "anchor_factors": (1, 2)},
        "smoke": {"datasets": ("MSRC-v1",), "seeds": (0,), "kmeans_n_init": 3},
    }
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ALL_DATASETS

    def check_dataset(self, name: str) -> None:
        """A shipped name, or a path to the user's own multi-view ``.mat`` file that reads as one.

        The file is opened and read (views and labels) here, so an unreadable or malformed file is
        a usage error before anything runs; the verdict is cached per (path, size, mtime).
        """
        if name.lower().endswith(".mat") and Path(name).is_file():
            st = Path(name).stat()
            problem = _read_problem(str(Path(name).expanduser().resolve()), st.st_size, st.st_mtime_ns)
            if problem:
                raise ConfigError(f"dataset {name!r} is not a usable multi-view .mat file: {problem}")
            return
        if name not in self.KNOWN_DATASETS:
            raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(self.KNOWN_DATASETS)} "
                              "or a path to a multi-view .mat file")

    def replace(self, **changes: Any) -> UDBGLConfig:
        """As the base class, and user ``.mat`` paths naming the same file (``m.mat``, ``./m.mat``, a link)
        are kept once (first occurrence), so the same file never runs twice."""
        if "datasets" in changes and isinstance(changes["datasets"], (tuple, list)):
            changes["datasets"] = tuple(_dedupe_files(tuple(changes["datasets"])))
        return super().replace(**changes)



Config = UDBGLConfig


def _is_user_file(name: str) -> bool:
    return isinstance(name, str) and name not in ALL_DATASETS and name.lower().endswith(".mat")


def _shipped_file(name: str) -> Path | None:
    """The file a shipped name loads from (first data root holding it, as find_data_file), unverified."""
    from reprozoo.datasets._paths import find_data_file

    try:
        return find_data_file([f"multiview/{name}.mat", f"multiview/data_{name}.mat"], source="", verify=False)
    except (FileNotFoundError, OSError):
        return None


@functools.lru_cache(maxsize=64)
def _read_problem(path: str, size: int, mtime_ns: int) -> str:
    """Why the file at ``path`` cannot be loaded as a multi-view data set ('' if it can)."""
    try:
        load_multiview(path)
    except (ValueError, OSError) as exc:
        return str(exc)
    return ""


def _dedupe_files(datasets: tuple) -> list:
    """``datasets`` without entries that resolve to a file already listed (first kept), with a warning
    naming both: user ``.mat`` paths by resolved path, and a user path to a shipped set's own file
    beside that set's name."""
    seen: dict[Path, str] = {}
    out = []
    for d in datasets:
        path = Path(d).expanduser() if _is_user_file(d) else (_shipped_file(d) if isinstance(d, str) else None)
        if path is not None:
            key = path.resolve()
            if key in seen:
                if d != seen[key]:  # an exact repeat is the base config's (and the CLI's) to report
                    warnings.warn(f"datasets: {d!r} names the same file as {seen[key]!r}; it runs once",
                                  UserWarning, stacklevel=3)
                continue
            seen[key] = d
        out.append(d)
    return out


def dataset_names(datasets: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(entry, record name)`` per distinct data set of ``datasets``, in order.

    Shipped sets keep their names. User ``.mat`` paths are deduplicated by resolved path and named
    by :func:`reprozoo.datasets.multiview.name_user_files`: the file stem, a longer path suffix when
    two stems collide (``a/m``, ``t/m``), `` (file)`` appended when it equals a shipped set's name.
    """
    entries = _dedupe_files(tuple(datasets))
    users = [d for d in entries if _is_user_file(d)]
    reserved = tuple(dict.fromkeys((*ALL_DATASETS, *list_multiview(),
                                    *(d for d in entries if not _is_user_file(d)))))
    named = dict(zip(users, name_user_files(users, reserved), strict=True))
    return [(d, named.get(d, d)) for d in entries]


def _setting(factor: int) -> str:
    return "m=c" if factor == 1 else f"m={factor}c"


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def run(config: UDBGLConfig, out_dir: Path) -> Result:
    """Run UDBGL and its baselines over ``config.datasets`` x ``config.seeds`` x anchor settings.

    Returns a :class:`~reprozoo.core.results.Result` with one record per (data set, method,
    setting, seed, metric); writes the figures under ``out_dir / "figures"``.
    Baselines that do not use anchors are run once per seed and recorded under every setting.
    """
    out_dir = Path(out_dir)
    result = Result(name="udbgl", preset=config.preset, config=config.to_dict())
    settings = [(f, _setting(f)) for f in config.anchor_factors]
    paths: dict[str, dict[str, int]] = {}
    curves: dict[str, tuple[list[int], list[float]]] = {}
    named = dataset_names(config.datasets)
    for entry, name in named:
        if _is_user_file(entry) and name != Path(entry).stem:
            result.notes.append(f"the data set file {entry} is recorded as {name!r} (its stem is shared by "
                                "another data set)")
    # up front, before any fit: a data set on which every anchor setting has m = factor * c > n
    # would give no records at all
    for entry, name in named:
        data = load_multiview(entry)
        n, c = data.n_samples, data.n_clusters
        if all(f * c > n for f in config.anchor_factors):
            raise ConfigError(
                f"anchor_factors={config.anchor_factors!r}: on {name} (n={n} samples, c={c} clusters) every "
                f"setting has m = factor * c > n, so nothing would run; use factors in [1, {n // c}]")
    jobs = [(entry, name, seed) for entry, name in named for seed in config.seeds]
    cache: dict[str, Any] = {}
    for entry, name, seed in track(jobs, "udbgl: data sets x seeds"):
        if entry not in cache:
            cache.clear()
            cache[entry] = load_multiview(entry)
        data = cache[entry]  # recorded under `name`: a user's file by a unique name (see dataset_names)
        views, y, c = data.views, data.labels, data.n_clusters

        def add(method: str, role: str, labels, seconds: float, setting: str, _y=y, _name=name, _seed=seed):
            scores = clustering_scores(_y, labels)
            scores["seconds"] = seconds
            result.add_many(_name, method, role, scores, seed=_seed, setting=setting)

        # -- anchor-independent baselines (once per seed) -------------------------------------
        shared: list[tuple[str, dict[str, float]]] = []
        if "KMeans-concat" in config.baselines:
            lab, sec = _timed(kmeans_concat, views, c, seed=seed, n_init=config.kmeans_n_init)
            shared.append(("KMeans-concat", {**clustering_scores(y, lab), "seconds": sec}))
        if "Spectral-concat" in config.baselines:
            lab, sec = _timed(spectral_concat, views, c, seed=seed, n_neighbors=config.spectral_neighbors)
            shared.append(("Spectral-concat", {**clustering_scores(y, lab), "seconds": sec}))
        if "KMeans-single" in config.baselines:
            labs, sec = _timed(kmeans_single, views, c, seed=seed, n_init=config.kmeans_n_init)
            per_view = [clustering_scores(y, lab) for lab in labs]
            mean = {m: float(np.mean([s[m] for s in per_view])) for m in METRICS}
            best = max(per_view, key=lambda s: s["NMImax"])  # oracle: chosen with the labels
            shared.append(("KMeans-single(mean)", {**mean, "seconds": sec / len(labs)}))
            shared.append(("KMeans-single(best, oracle)", {**best, "seconds": sec / len(labs)}))

        for factor, setting in settings:
            m = factor * c
            if m > data.n_samples:
                result.notes.append(f"{name}: m={m} > n={data.n_samples}, setting {setting} skipped")
                continue
            model = UDBGL(n_clusters=c, n_anchors=m, alpha=config.alpha, beta=config.beta,
                          max_iter=config.max_iter, tol=config.tol, rank_search=config.rank_search,
                          random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RankConstraintWarning)
                _, sec = _timed(model.fit, views)
            add("UDBGL", "method", model.labels_, sec, setting)
            key = f"{name} {setting}"
            paths.setdefault(key, {"components": 0, "lambda_search": 0, "kmeans_fallback": 0})
            paths[key][model.label_path_] += 1
            if factor == config.anchor_factors[0] and seed == config.seeds[0]:
                obj = np.asarray(model.objective_)
                curves[name] = (list(range(len(obj))), list(obj / obj[0]))
            if "AnchorGraph-concat" in config.baselines:
                lab, sec = _timed(anchor_graph_concat, views, c, model.anchors_, seed=seed,
                                  n_init=config.kmeans_n_init)
                add("AnchorGraph-concat", "baseline", lab, sec, setting)
            if "LMVSC" in config.baselines:
                lab, sec = _timed(lmvsc, views, c, m, alpha=config.lmvsc_alpha, seed=seed,
                                  n_init=config.kmeans_n_init)
                add("LMVSC", "baseline", lab, sec, setting)
            for method, scores in shared:
                result.add_many(name, method, "baseline", scores, seed=seed, setting=setting)

    for key, counts in paths.items():
        result.notes.append(
            f"UDBGL label path on {key} over {seeds_phrase(sum(counts.values()))}: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + f" (rank_search={config.rank_search!r}; components = the reference schedule reached c; "
            "lambda_search / kmeans_fallback = port additions)"
        )
    anchorless = [b for b in ("KMeans-concat", "Spectral-concat", "KMeans-single") if b in config.baselines]
    if len(settings) > 1 and anchorless:
        result.notes.append(f"{', '.join(anchorless)} use no anchors: the same runs are recorded under every "
                            "m setting.")
    result.notes.append("seconds = wall-clock seconds of one fit on this machine.")
    result.notes.append("NMI = scikit-learn's arithmetic-mean NMI; NMImax = max-normalised NMI as the authors' "
                        "NMImax.m.")

    fig_dir = out_dir / "figures"
    plotted = [s for _, s in settings if any(r.setting == s for r in result.records)]  # skipped ones: none
    for metric in (*METRICS, "seconds"):
        for setting in plotted:
            suffix = "" if len(plotted) == 1 else "_" + setting.replace("=", "")
            path = fig_dir / f"{metric.lower()}_by_dataset{suffix}.png"
            metric_by_dataset(result, metric, path, setting=setting)
            result.figures.append(str(path.relative_to(out_dir)))
    if curves:
        path = fig_dir / "udbgl_objective.png"
        line_plot(curves, path, xlabel="outer iteration", ylabel="objective / initial objective",
                  title=f"UDBGL objective ({settings[0][1]}, seed {config.seeds[0]})", logy=True, integer_x=True)
        result.figures.append(str(path.relative_to(out_dir)))
    log(f"udbgl: {len(result.records)} records, {len(result.figures)} figures")
    return result


SPEC = ExperimentSpec(
    name="udbgl",
    title="UDBGL: multi-view clustering by unified, discrete bipartite graph learning",
    field="clustering",
    paper="Fang et al., IEEE TNNLS 2023, doi:10.1109/TNNLS.2023.3261460",
    config=UDBGLConfig,
    run=run,
    primary_metric="NMImax",
)
