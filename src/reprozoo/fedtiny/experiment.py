"""``reprozoo run fedtiny``: FedTiny against pruning baselines at the same density, on Flower.

Every (dataset, density, seed, method) is one federated run (a server job); all of them run in ONE
Flower simulation (``engine="flower"``: Ray starts once) or in process (``engine="local"``).

Recorded metrics: ``top1`` (final test accuracy in PERCENT, 0-100, the project's convention; the
accuracy-vs-round curves too), ``client_peak_memory_MB``, ``client_state_memory_MB``,
``train_FLOPs_per_round``, ``bytes_communicated``, ``density`` (fraction of prunable weights kept).
Client failures (rounds completed without some nodes, failed ABNS queries) are listed in
``result.notes``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reprozoo.core.experiment import ConfigError, TorchExperimentConfig
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result

__all__ = ["FedTinyConfig", "Config", "run"]

_METHODS = ("FedTiny", "FedAvg-dense", "Random", "SNIP", "SynFlow", "FedDST")
_CANDIDATES = ("erk-magnitude", "erk-random", "er-magnitude", "er-random", "uniform-magnitude")


@dataclass
class FedTinyConfig(TorchExperimentConfig):
    """Knobs of the fedtiny experiment (same for the method and every baseline)."""

    datasets: tuple[str, ...] = ("MNIST",)
    seeds: tuple[int, ...] = (0, 1)
    methods: tuple[str, ...] = _METHODS        # which of FedTiny, FedAvg-dense, Random, SNIP, SynFlow, FedDST
    densities: tuple[float, ...] = (0.05,)     # target density d of the prunable weights, each in (0, 1]
    alpha: float = 0.5                         # Dirichlet concentration of the non-IID label split (> 0)
    n_clients: int = 10                        # Flower supernodes, one data partition each
    fraction_train: float = 1.0                # fraction of clients sampled per round
    n_train: int = 2000                        # training images spread over the clients (random subset)
    n_test: int = 0                            # test images (0 = the whole test set)
    arch: str = "cnn16"                        # cnn16 / cnn32 (SmallCNN with BN) or resnet8
    rounds: int = 24                           # federated rounds
    local_epochs: int = 1                      # local epochs per round
    batch_size: int = 32                       # local batch size
    lr: float = 0.05                           # local SGD learning rate
    momentum: float = 0.9                      # local SGD momentum
    weight_decay: float = 5e-4                 # local SGD weight decay
    delta_t: int = 2                           # ΔT: rounds between mask adjustments (FedTiny, FedDST)
    t_end: int = 16                            # T_end: no adjustment after this round
    adjust_alpha: float = 0.2                  # α of the cosine schedule α_t = α/2 (1 + cos(π t / T_end))
    layer_order: str = "output_to_input"       # order in which FedTiny cycles through layers
    grad_batches: int = 1                      # batches of the clients' growth gradient
    candidates: tuple[str, ...] = _CANDIDATES  # ABNS pool, "allocation-criterion"
    abns_samples: int = 256                    # samples per client for the ABNS statistics and losses
    synflow_iters: int = 100                   # SynFlow pruning iterations
    eval_every: int = 4                        # rounds between test evaluations (accuracy-vs-round curve)
    n_curve: int = 1000                        # test images behind each curve point (final top1: all n_test)
    engine: str = "flower"                     # "flower" (Flower simulation engine, Ray) or "local" (in process)
    num_cpus: int = 2                          # CPUs given to Ray (one client actor per CPU)
    fail_client: int = -1                      # test hook: partition in [0, n_clients) failing in round fail_round
    fail_round: int = -1                       # test hook: round in [0, rounds] (0 = ABNS queries); both -1 = off

    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ("MNIST", "CIFAR-10-subset")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "standard": {"datasets": ("MNIST", "CIFAR-10-subset"), "densities": (0.01, 0.05, 0.1), "seeds": (0, 1, 2),
                     "rounds": 100, "delta_t": 5, "t_end": 70, "n_train": 20000, "arch": "cnn32", "local_epochs": 2,
                     "eval_every": 10},
        "full": {"datasets": ("CIFAR-10-subset",), "densities": (0.01, 0.02, 0.05), "seeds": (0, 1, 2),
                 "n_clients": 100, "fraction_train": 0.1, "rounds": 500, "delta_t": 10, "t_end": 300,
                 "local_epochs": 5, "batch_size": 64, "lr": 0.1, "arch": "resnet8", "n_train": 10000,
                 "eval_every": 25},
        "smoke": {"seeds": (0,), "n_clients": 3, "n_train": 300, "n_test": 500, "rounds": 2, "delta_t": 1,
                  "t_end": 2, "candidates": ("erk-magnitude", "uniform-random"), "abns_samples": 64,
                  "synflow_iters": 5, "eval_every": 1, "n_curve": 300, "engine": "local"},
    }

    def validate(self) -> None:
        """Reject every out-of-domain knob up front (ConfigError naming the field and its allowed range)."""
        super().validate()
        for key in ("methods", "densities", "candidates"):
            if not isinstance(getattr(self, key), tuple):
                raise ConfigError(f"{key}={getattr(self, key)!r} should be a tuple (comma-separated with --set)")
        self.check_unique("methods", "densities", "candidates", "datasets", "seeds")
        bad = [m for m in self.methods if m not in _METHODS]
        if bad or not self.methods:
            raise ConfigError(f"methods {list(self.methods)} should be a non-empty subset of {list(_METHODS)}")
        if not self.densities or any(not _is_real(d) or not (0.0 < float(d) <= 1.0) for d in self.densities):
            raise ConfigError(f"densities={self.densities} should each lie in (0, 1]")
        ints = {  # field: smallest allowed value
            "n_clients": 2, "n_train": 2, "n_test": 0, "rounds": 1, "local_epochs": 1, "batch_size": 1,
            "delta_t": 0, "t_end": 1, "grad_batches": 1, "abns_samples": 1, "synflow_iters": 1, "eval_every": 1,
            "n_curve": 1, "num_cpus": 1, "fail_client": -1, "fail_round": -1,
        }
        for key, low in ints.items():
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{key}={v!r} should be an int >= {low}"
                                  + (" (0 = the whole test set)" if key == "n_test" else "")
                                  + (" (-1 = off)" if key.startswith("fail_") else ""))
        floats = {  # field: (low, high, low inclusive, high inclusive)
            "alpha": (0.0, math.inf, False, False),  # Dirichlet concentration
            "fraction_train": (0.0, 1.0, False, True),
            "lr": (0.0, math.inf, False, False),
            "momentum": (0.0, 1.0, True, False),
            "weight_decay": (0.0, math.inf, True, False),
            "adjust_alpha": (0.0, 1.0, False, True),
        }
        for key, (lo, hi, lo_in, hi_in) in floats.items():
            v = getattr(self, key)
            ok = _is_real(v) and (lo <= v if lo_in else lo < v) and (v <= hi if hi_in else v < hi)
            if not ok:
                rng = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
                raise ConfigError(f"{key}={v!r} should lie in {rng}" + (" (finite)" if hi == math.inf else ""))
        sizes = {d: DATA_SIZES[d] for d in self.datasets if d in DATA_SIZES}
        if sizes:  # above the largest selected data set is an error; a smaller one uses all it has (noted)
            for key, i, what in (("n_train", 0, "training"), ("n_test", 1, "test")):
                most = max(v[i] for v in sizes.values())
                if getattr(self, key) > most:
                    have = ", ".join(f"{d} {v[i]}" for d, v in sizes.items())
                    raise ConfigError(f"{key}={getattr(self, key)} is more than the {what} images of the selected "
                                      f"dataset(s) ({have}); use at most {most}"
                                      + (" (0 = the whole test set)" if key == "n_test" else ""))
        if self.n_clients * 2 > self.n_train:
            raise ConfigError(f"n_clients={self.n_clients} is more than n_train/2={self.n_train // 2}: every client "
                              "needs >= 2 samples; raise n_train or lower n_clients")
        if self.engine not in ("flower", "local"):
            raise ConfigError(f"engine={self.engine!r} should be 'flower' or 'local'")
        if self.layer_order not in ("output_to_input", "input_to_output"):
            raise ConfigError(f"layer_order={self.layer_order!r} should be 'output_to_input' or 'input_to_output'")
        if self.arch not in ("cnn16", "cnn32", "resnet8"):
            raise ConfigError(f"arch={self.arch!r} should be one of cnn16, cnn32, resnet8")
        if not self.candidates:
            raise ConfigError("candidates is empty; e.g. erk-magnitude,uniform-random")
        for c in self.candidates:
            parts = str(c).split("-")
            if len(parts) != 2 or parts[0] not in ("uniform", "er", "erk") or parts[1] not in ("magnitude", "random"):
                raise ConfigError(f"candidate {c!r} should be 'allocation-criterion' with allocation in "
                                  "uniform/er/erk and criterion in magnitude/random")
        # test hook: both off (-1), or a client partition in [0, n_clients) failing in a round in
        # [0, rounds] (round 0 = FedTiny's ABNS queries); one without the other would never fire
        if self.fail_client >= self.n_clients:
            raise ConfigError(f"fail_client={self.fail_client} should be -1 (off) or a client index in "
                              f"[0, n_clients={self.n_clients}); it would never fail")
        if self.fail_round > self.rounds:
            raise ConfigError(f"fail_round={self.fail_round} should be -1 (off) or a round in "
                              f"[0, rounds={self.rounds}] (0 = the ABNS queries); it would never fail")
        if (self.fail_client == -1) != (self.fail_round == -1):
            raise ConfigError(f"fail_client={self.fail_client} and fail_round={self.fail_round}: set both (a client in "
                              f"[0, {self.n_clients}) and a round in [0, {self.rounds}]) or neither (-1 = off)")


#: (training, test) images of each shipped data set, known without loading it (checked against the
#: loaders in tests/fedtiny): Config.validate rejects n_train / n_test above them up front
DATA_SIZES: dict[str, tuple[int, int]] = {"MNIST": (60000, 10000), "CIFAR-10-subset": (10000, 5000)}
_N_PUBLIC = 128  # training images kept for the server's public batch (federated_data's n_public default)


def _effective_sizes(config: FedTinyConfig, dataset: str) -> tuple[int, int]:
    """(n_train, n_test) that the run on ``dataset`` really uses: client.federated_data caps n_train at the
    training images less the public batch, and n_test = 0 or above the test set means all of it."""
    n_tr, n_te = DATA_SIZES[dataset]
    return min(config.n_train, n_tr - _N_PUBLIC), (n_te if config.n_test == 0 else min(config.n_test, n_te))


def _is_real(v: Any) -> bool:
    """A real number (int or float, not bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


Config = FedTinyConfig

_METRICS = ("top1", "client_peak_memory_MB", "client_state_memory_MB", "train_FLOPs_per_round", "bytes_communicated",
            "density")


def _setting(density: float, alpha: float) -> str:
    return f"density={density:g},alpha={alpha:g}"


def run(config: FedTinyConfig, out_dir: Path) -> Result:
    """Run every method on every (dataset, density, seed) through one federated simulation.

    ``config.device`` (concrete when the runner calls this): the clients train and the server evaluates
    there; with ``engine="flower"`` the client actors see the driver's GPUs."""
    from reprozoo.fedtiny.server import ROLES, experiment_jobs
    from reprozoo.fedtiny.simulation import run_federated

    config.validate()
    out_dir = Path(out_dir)
    result = Result(name="fedtiny", preset=config.preset, config=config.to_dict())
    jobs = experiment_jobs(config)
    keys = [(job.dataset, job.density, job.seed, job.method) for job in jobs]
    outs, seconds = run_federated(jobs, config.n_clients, engine=config.engine, num_cpus=config.num_cpus)
    curves: dict[tuple[str, float, str], list[list[tuple[int, float]]]] = defaultdict(list)
    for (ds, d, s, m), out in zip(keys, outs, strict=True):
        metrics = {"top1": 100.0 * out["top1"], "client_peak_memory_MB": out["peak_mem_mb"],  # top1 in percent
                   "client_state_memory_MB": out["state_mem_mb"],
                   "train_FLOPs_per_round": out["flops_per_round"], "bytes_communicated": float(out["bytes"]),
                   "density": out["density"]}
        result.add_many(ds, m, ROLES[m], metrics, seed=s, setting=_setting(d, config.alpha))
        curves[(ds, d, m)].append([(rnd, 100.0 * acc) for rnd, acc in out["curve"]])  # percent, as top1
        if out["abns"]:
            losses = {n: round(float(v), 4) for n, v in zip(out["abns"]["names"], out["abns"]["losses"], strict=True)}
            result.notes.append(f"{ds} d={d:g} seed={s}: ABNS mean losses {losses} -> chose {out['abns']['chosen']}")
        for rnd, nodes in out["failed_rounds"]:
            result.notes.append(f"{ds} d={d:g} seed={s} {m}: round {rnd} completed without failed node(s) {nodes}")
        if out["abns"] and out["abns"].get("failed"):
            result.notes.append(f"{ds} d={d:g} seed={s} {m}: {out['abns']['failed']} failed ABNS quer(y/ies) "
                                "left out of the candidate selection")
    result.notes.append(f"engine={config.engine}: {len(jobs)} federated runs in {seconds:.1f} s wall")
    for ds in config.datasets:  # a setting above a smaller data set's size: record what was really used
        n_tr, n_te = _effective_sizes(config, ds)
        if n_tr != config.n_train:
            result.notes.append(f"{ds}: n_train={config.n_train} is more than its {DATA_SIZES[ds][0]} training images "
                                f"less the server's {_N_PUBLIC}-image public batch; used n_train={n_tr}")
        if config.n_test and n_te != config.n_test:
            result.notes.append(f"{ds}: n_test={config.n_test} is more than its test set; used all {n_te} images")
    _figures(result, config, curves, out_dir)
    return result


def _figures(result: Result, config: FedTinyConfig, curves, out_dir: Path) -> None:
    from reprozoo.core.plots import line_plot

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for ds in config.datasets:
        for d in config.densities:
            series = {}
            for m in config.methods:
                runs = curves.get((ds, float(d), m), [])
                if not runs:
                    continue
                rounds = [r for r, _ in runs[0]]
                ys = np.mean([[a for _, a in c] for c in runs if len(c) == len(rounds)], axis=0)
                series[m] = (rounds, ys.tolist())
            path = fig_dir / f"accuracy_vs_round_{ds}_d{d:g}.png"
            line_plot(series, path, xlabel="round", ylabel="test top1 (%)",
                      title=f"fedtiny: {ds}, density {d:g}, Dirichlet α={config.alpha:g}")
            result.figures.append(str(path.relative_to(out_dir)))
        summary = result.summary()
        series = {}
        for m in config.methods:
            xs, ys = [], []
            for d in config.densities:
                key = (ds, _setting(float(d), config.alpha), m, "reference" if m == "FedAvg-dense" else
                       ("method" if m == "FedTiny" else "baseline"))
                if key in summary and "top1" in summary[key]:
                    xs.append(float(d))
                    ys.append(summary[key]["top1"][0])
            if xs:
                series[m] = (xs, ys)
        path = fig_dir / f"accuracy_vs_density_{ds}.png"
        line_plot(series, path, xlabel="density", ylabel="test top1 (%)", logx=True,
                  title=f"fedtiny: {ds}, accuracy vs density (mean over seeds)")
        result.figures.append(str(path.relative_to(out_dir)))


SPEC = ExperimentSpec(
    name="fedtiny",
    title="FedTiny: adaptive-BN candidate selection plus progressive pruning in federated learning",
    field="federated learning",
    paper="Huang et al., 'Distributed Pruning Towards Tiny Neural Networks in Federated Learning', ICDCS 2023, "
    "arXiv:2212.01977",
    config=FedTinyConfig,
    run=run,
    primary_metric="top1",
    extra="fl",
)
