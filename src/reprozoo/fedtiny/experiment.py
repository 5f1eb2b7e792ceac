"""``reprozoo run fedtiny``: FedTiny against pruning baselines at the same density, on Flower.

Every (dataset, density, seed, method) is one federated run (a server job) of Flower's ClientApp and strategy:
with ``engine="local"`` (the default) the jobs run side by side in ``num_cpus`` processes, each job's clients
in turn in its process (no Ray); with ``engine="flower"`` all of them run in ONE Flower simulation (Ray
starts once; each round's clients on ``num_cpus`` actors).  The numbers are the same either way.

Recorded metrics: ``top1`` (final test accuracy in PERCENT, 0-100, the project's convention; the
accuracy-vs-round curves too), ``client_peak_memory_MB``, ``client_state_memory_MB``,
``train_FLOPs_per_round``, ``bytes_communicated``, ``density`` (fraction of prunable weights kept).
Client failures (rounds completed without some nodes, failed ABNS queries) are listed in
``result.notes``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result
from reprozoo.fedtiny.baselines import ROLES

__all__ = ["FedTinyConfig", "Config", "run"]

_METHODS = tuple(ROLES)  # FedTiny, FedAvg-dense, Random, SNIP, SynFlow, FedDST
_QUICK_METHODS = ("FedTiny", "SynFlow", "FedDST", "Random")
_CANDIDATES = ("erk-magnitude", "erk-random", "er-magnitude", "er-random", "uniform-magnitude")
#: every ABNS candidate "allocation-criterion": allocation uniform / er / erk, criterion magnitude / random
_CANDIDATE_CHOICES = tuple(f"{a}-{c}" for a in ("uniform", "er", "erk") for c in ("magnitude", "random"))


@dataclass
class FedTinyConfig(TorchExperimentConfig):
    """Knobs of the fedtiny experiment (same for the method and every baseline)."""

    datasets: tuple[str, ...] = ("MNIST",)
    seeds: tuple[int, ...] = (0, 1, 2)
    #: which of FedTiny, FedAvg-dense, Random, SNIP, SynFlow, FedDST
    methods: tuple[str, ...] = knob(_QUICK_METHODS, choices=_METHODS, nonempty=True, unique=True)
    #: target density d of the prunable weights, each in (0, 1]
    densities: tuple[float, ...] = knob((0.05,), gt=0, le=1, nonempty=True, unique=True)
    alpha: float = knob(0.5, gt=0)  # Dirichlet concentration of the non-IID label split (> 0)
    n_clients: int = knob(10, ge=2)  # Flower supernodes, one data partition each
    fraction_train: float = knob(1.0, gt=0, le=1)  # fraction of clients sampled per round
    n_train: int = knob(4000, ge=2)  # training images spread over the clients (random subset)
    n_test: int = knob(0, ge=0)  # test images (0 = the whole test set)
    arch: str = knob("cnn16", choices=("cnn16", "cnn32", "resnet8"))  # cnn16 / cnn32 (SmallCNN with BN) or resnet8
    rounds: int = knob(48, ge=1)  # federated rounds (FedTiny's warm-up rounds included)
    local_epochs: int = knob(1, ge=1)  # local epochs per round
    batch_size: int = knob(32, ge=1)  # local batch size
    lr: float = knob(0.05, gt=0)  # local SGD learning rate
    momentum: float = knob(0.9, ge=0, lt=1)  # local SGD momentum
    weight_decay: float = knob(5e-4, ge=0)  # local SGD weight decay
    # ΔT, T_end: the authors' ratio (ΔT = 10, T_end = 300 of 500 rounds: 0.02 and 0.6 of the run) at 48 rounds
    delta_t: int = knob(1, ge=0)  # ΔT: rounds between mask adjustments (FedTiny, FedDST)
    t_end: int = knob(29, ge=1)  # T_end: no adjustment after this round
    adjust_alpha: float = knob(0.2, gt=0, le=1)  # α of the cosine schedule α_t = α/2 (1 + cos(π t / T_end))
    #: order in which FedTiny cycles through layers
    layer_order: str = knob("output_to_input", choices=("output_to_input", "input_to_output"))
    grad_batches: int = knob(1, ge=1)  # batches of the clients' growth gradient
    #: ABNS pool, "allocation-criterion"
    candidates: tuple[str, ...] = knob(_CANDIDATES, choices=_CANDIDATE_CHOICES, nonempty=True, unique=True)
    #: rounds of masked FedAvg of every ABNS candidate before the selection, charged to FedTiny (rounds, FLOPs,
    #: bytes); 0 = the paper's selection at the random initialisation (an addition of ours)
    warmup_rounds: int = knob(2, ge=0)
    #: per-layer floor of every ABNS candidate: each layer keeps >= min(this x its weights, budget / layers);
    #: 0 = off (an addition of ours: the ER allocation leaves cnn16's classifier 58 of 640 weights at d=0.05)
    min_layer_density: float = knob(0.2, ge=0, lt=1)
    abns_samples: int = knob(256, ge=1)  # samples per client for the ABNS statistics and losses
    synflow_iters: int = knob(100, ge=1)  # SynFlow pruning iterations
    eval_every: int = knob(4, ge=1)  # rounds between test evaluations (accuracy-vs-round curve)
    #: "server" (its own test set) or "clients" (federated evaluation: each client its shard of the same test
    #: images, pooled; for a server that holds no data, where a deployment's ServerApp switches to it by
    #: itself; SNIP still loads the server's public batch)
    evaluate_on: str = knob("server", choices=("server", "clients"))
    n_curve: int = knob(1000, ge=1)  # test images behind each curve point (final top1: all n_test)
    #: "local" (Flower's ClientApp and strategy without Ray: the server jobs run in ``num_cpus`` processes side by
    #: side, each job's clients one after the other) or "flower" (Flower's simulation engine on Ray: the jobs one
    #: after the other, each round's clients on ``num_cpus`` actors); the same numbers either way
    engine: str = knob("local", choices=("flower", "local"))
    #: CPUs the run uses: engine "local", processes running the server jobs (1 = in this process); "flower",
    #: Ray's client actors
    num_cpus: int = knob(2, ge=1)
    #: clients and the server's evaluation run the models in the channels-last layout (NHWC): the same functions
    #: up to float rounding, about 1.5x faster on the CPU (see client.on_device); False = NCHW (rounding moves
    #: single runs by a few points: the card's tables are measured with the default)
    channels_last: bool = True
    fail_client: int = knob(-1, ge=-1)  # test hook: partition in [0, n_clients) failing in round fail_round
    fail_round: int = knob(-1, ge=-1)  # test hook: round in [0, rounds] (0 = ABNS queries); both -1 = off

    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ("MNIST", "CIFAR-10-subset")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "standard": {"datasets": ("MNIST", "CIFAR-10-subset"), "densities": (0.01, 0.05, 0.1), "methods": _METHODS,
                     "rounds": 100, "delta_t": 5, "t_end": 70, "n_train": 20000, "arch": "cnn32", "local_epochs": 2,
                     "eval_every": 10},
        "full": {"datasets": ("CIFAR-10-subset",), "densities": (0.01, 0.02, 0.05), "seeds": (0, 1, 2),
                 "methods": _METHODS, "n_clients": 100, "fraction_train": 0.1, "rounds": 500, "delta_t": 10,
                 "t_end": 300, "local_epochs": 5, "batch_size": 64, "lr": 0.1, "arch": "resnet8", "n_train": 10000,
                 "eval_every": 25},
        "smoke": {"seeds": (0,), "methods": _METHODS, "n_clients": 3, "n_train": 300, "n_test": 500, "rounds": 2,
                  "delta_t": 1, "t_end": 2, "warmup_rounds": 1, "candidates": ("erk-magnitude", "uniform-random"),
                  "abns_samples": 64,
                  "synflow_iters": 5, "eval_every": 1, "n_curve": 300, "num_cpus": 1},
    }

    def validate(self) -> None:
        """Reject every out-of-domain knob up front (ConfigError naming the field and its allowed range).

        Types, bounds and choices are declared on the fields (:func:`knob`); here the rules across fields:
        ``n_train`` / ``n_test`` within the selected data sets, two samples per client, the failure hook.
        """
        super().validate()
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
        # test hook: both off (-1), or a client partition in [0, n_clients) failing in a round in
        # [0, rounds] (round 0 = FedTiny's ABNS queries); one without the other would never fire
        if self.fail_client >= self.n_clients:
            raise ConfigError(f"fail_client={self.fail_client} should be -1 (off) or a client index in "
                              f"[0, n_clients={self.n_clients}); it would never fail")
        if self.fail_round > self.rounds:
            raise ConfigError(f"fail_round={self.fail_round} should be -1 (off) or a round in "
                              f"[0, rounds={self.rounds}] (0 = the ABNS queries); it would never fail")
        if "FedTiny" in self.methods and self.warmup_rounds >= self.rounds:
            raise ConfigError(f"warmup_rounds={self.warmup_rounds} should be below rounds={self.rounds}: FedTiny "
                              "trains the chosen candidate in the rounds after the warm-up")
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


Config = FedTinyConfig

_METRICS = ("top1", "client_peak_memory_MB", "client_state_memory_MB", "train_FLOPs_per_round", "bytes_communicated",
            "density")


def _setting(density: float, alpha: float) -> str:
    return f"density={density:g},alpha={alpha:g}"


def run(config: FedTinyConfig, out_dir: Path) -> Result:
    """Run every method on every (dataset, density, seed): one federated run each (see :func:`_run_jobs`).

    ``config.device`` (concrete when the runner calls this): the clients train and the server evaluates
    there; with ``engine="flower"`` the client actors see the driver's GPUs."""
    from reprozoo.fedtiny.server import experiment_jobs

    config.validate()
    out_dir = Path(out_dir)
    result = Result(name="fedtiny", preset=config.preset, config=config.to_dict())
    jobs = experiment_jobs(config)
    keys = [(job.dataset, job.density, job.seed, job.method) for job in jobs]
    outs, seconds = _run_jobs(config, jobs)
    curves: dict[tuple[str, float, str], list[list[tuple[int, float]]]] = defaultdict(list)
    for (ds, d, s, m), out in zip(keys, outs, strict=True):
        metrics = {"top1": out["top1"], "client_peak_memory_MB": out["peak_mem_mb"],  # top1 in percent
                   "client_state_memory_MB": out["state_mem_mb"],
                   "train_FLOPs_per_round": out["flops_per_round"], "bytes_communicated": float(out["bytes"]),
                   "density": out["density"]}
        result.add_many(ds, m, ROLES[m], metrics, seed=s, setting=_setting(d, config.alpha))
        curves[(ds, d, m)].append(out["curve"])  # percent, as top1
        if out["abns"]:
            losses = {n: round(float(v), 4) for n, v in zip(out["abns"]["names"], out["abns"]["losses"], strict=True)}
            result.notes.append(f"{ds} d={d:g} seed={s}: ABNS mean losses {losses} after {out['abns']['after_round']} "
                                f"warm-up round(s) -> chose {out['abns']['chosen']}")
        for rnd, who, why in out["failures"]:  # one line each: the client's partition index and its reason
            result.notes.append(f"{ds} d={d:g} seed={s} {m}: round {rnd} completed without {who} ({why})")
        if out["abns"] and out["abns"].get("failed"):
            result.notes.append(f"{ds} d={d:g} seed={s} {m}: {out['abns']['failed']} failed ABNS quer(y/ies) "
                                "left out of the candidate selection")
    result.notes.append(f"engine={config.engine}, num_cpus={config.num_cpus}: {len(jobs)} federated runs in "
                        f"{seconds:.1f} s wall")
    if config.engine == "local":  # each run's process CPU time is the whole run's (clients included)
        cpu = defaultdict(list)
        for (_, _, _, m), out in zip(keys, outs, strict=True):
            cpu[m].append(out["cpu_seconds"])
        result.notes.append("CPU s per federated run (mean over its settings): " + ", ".join(
            f"{m} {np.mean(v):.1f}" for m, v in cpu.items()))
    for ds in config.datasets:  # a setting above a smaller data set's size: record what was really used
        n_tr, n_te = _effective_sizes(config, ds)
        if n_tr != config.n_train:
            result.notes.append(f"{ds}: n_train={config.n_train} is more than its {DATA_SIZES[ds][0]} training images "
                                f"less the server's {_N_PUBLIC}-image public batch; used n_train={n_tr}")
        if config.n_test and n_te != config.n_test:
            result.notes.append(f"{ds}: n_test={config.n_test} is more than its test set; used all {n_te} images")
    _figures(result, config, curves, out_dir)
    return result


def _run_jobs(config: FedTinyConfig, jobs: list) -> tuple[list[dict[str, Any]], float]:
    """Every server job's output, in job order, and the wall seconds.

    Engine "local" with ``num_cpus`` > 1: :func:`~reprozoo.core.parallel.map_jobs` runs the jobs in that
    many spawned processes (with this process's torch thread count, as the runner set it), the longest
    (FedTiny: its candidates' warm-up) handed out first; each job depends only on its own settings, so the
    outputs equal those of one process.  Otherwise :func:`~reprozoo.fedtiny.simulation.run_federated` runs
    them in turn here (on Ray's actors for "flower")."""
    import time

    import torch

    from reprozoo.core.parallel import map_jobs
    from reprozoo.fedtiny.simulation import run_federated

    if config.engine != "local" or min(config.num_cpus, len(jobs)) < 2:
        return run_federated(jobs, config.n_clients, engine=config.engine, num_cpus=config.num_cpus)
    t0 = time.perf_counter()
    outs = map_jobs(_one_job, jobs, workers=config.num_cpus, description="fedtiny runs",
                    threads=torch.get_num_threads(), first=lambda job: job.method != "FedTiny")
    return outs, time.perf_counter() - t0


def _one_job(job: Any) -> dict[str, Any]:
    """One server job on the local engine (a worker process of :func:`_run_jobs`)."""
    from reprozoo.fedtiny.simulation import run_federated

    (out,), _ = run_federated([job], job.config.n_clients, engine="local")
    return out


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
