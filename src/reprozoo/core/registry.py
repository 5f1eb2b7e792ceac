"""Experiment registry: method name -> lazily imported experiment module.

Importing this module (and the CLI) imports no method code and no heavy library;
:func:`load` imports ``reprozoo.<name>.experiment`` only when a run asks for it.
Each experiment module exposes ``Config`` (an :class:`~reprozoo.core.experiment.ExperimentConfig`
subclass) and ``run(config, out_dir) -> Result``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

__all__ = ["ExperimentSpec", "REGISTRY", "get", "load", "names"]


@dataclass(frozen=True)
class ExperimentSpec:
    """What the CLI knows about a method without importing it."""

    name: str
    title: str
    field: str
    paper: str
    datasets: tuple[str, ...]
    presets: tuple[str, ...]
    primary_metric: str
    # presets: "quick" (shipped data, minutes), "full"/"standard" (paper-scale, long), "smoke"
    # (seconds: checks the whole pipeline, used by the tests; numbers not meaningful)
    extra: str = ""  # pip extra that holds its heavy dependencies
    higher_is_better: bool = True

    @property
    def module(self) -> str:
        return f"reprozoo.{self.name}.experiment"


REGISTRY: dict[str, ExperimentSpec] = {}


def register(spec: ExperimentSpec) -> ExperimentSpec:
    REGISTRY[spec.name] = spec
    return spec


register(
    ExperimentSpec(
        name="udbgl",
        title="UDBGL: multi-view clustering by unified, discrete bipartite graph learning",
        field="clustering",
        paper="Fang et al., IEEE TNNLS 2023, doi:10.1109/TNNLS.2023.3261460",
        datasets=(
            "MSRC-v1", "HW", "3Sources", "BBCSport", "ORL_4views", "Texas", "Cornell",
            "Washington", "WebKB-Texas", "synthetic3d",
        ),
        presets=("quick", "full", "smoke"),
        primary_metric="NMImax",
    )
)

# Each method below owns its own entry; keep them in the order of the README's table.
register(
    ExperimentSpec(
        name="ugt",
        title="Untrained GNN tickets: sparse subnetworks of randomly initialised GNNs",
        field="graph learning",
        paper="Huang et al., 'You Can Have Better Graph Neural Networks by Not Training Weights at All: "
        "Finding Untrained GNNs Tickets', LoG 2022, arXiv:2211.15335",
        datasets=("Cora", "CiteSeer", "PubMed"),
        presets=("quick", "full", "deep", "robust", "smoke"),
        primary_metric="top1",
        extra="graph",
    )
)
register(
    ExperimentSpec(
        name="compound_bn",
        title="Compound batch normalization: Gaussian-mixture BN with dual-path learning for long-tailed data",
        field="vision",
        paper="Cheng et al., 'Compound Batch Normalization for Long-tailed Image Classification', ACM MM 2022, "
        "arXiv:2212.01007",
        datasets=("CIFAR-10-LT", "MNIST-LT", "CIFAR-10-LT-full", "CIFAR-100-LT-full"),
        presets=("quick", "standard", "full", "smoke"),
        primary_metric="top1",
    )
)
register(
    ExperimentSpec(
        name="multianda",
        title="MultiANDA: transfer attacks sampled from a learned Gaussian mixture of perturbations",
        field="adversarial ML",
        paper="Fang et al., 'Strong Transferable Adversarial Attacks via Ensembles of Asymptotically Normal "
        "Distribution Learning', CVPR 2024, arXiv:2209.11964",
        datasets=("CIFAR-10-subset",),
        presets=("quick", "full", "smoke"),
        primary_metric="ASR",
        extra="attacks",
    )
)
register(
    ExperimentSpec(
        name="fedtiny",
        title="FedTiny: adaptive-BN candidate selection plus progressive pruning in federated learning",
        field="federated learning",
        paper="Huang et al., 'Distributed Pruning Towards Tiny Neural Networks in Federated Learning', ICDCS 2023, "
        "arXiv:2212.01977",
        datasets=("MNIST", "CIFAR-10-subset"),
        presets=("quick", "standard", "full", "smoke"),
        primary_metric="top1",
        extra="fl",
    )
)
register(
    ExperimentSpec(
        name="rsd4",
        title="RSD4: recurrent deep RL for multi-user delay-constrained scheduling",
        field="networking / RL",
        paper="Hu et al., 'Effective Multi-User Delay-Constrained Scheduling with Deep Recurrent Reinforcement "
        "Learning', MobiHoc 2022, arXiv:2208.14074",
        datasets=("trace", "markov"),
        presets=("quick", "standard", "smoke"),
        primary_metric="throughput",
        extra="rl",
    )
)


def names() -> list[str]:
    """Registered method names, in registration order."""
    return list(REGISTRY)


def get(name: str) -> ExperimentSpec:
    """The spec of ``name``; ``KeyError`` listing the valid names otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def load(name: str) -> ModuleType:
    """Import and return ``reprozoo.<name>.experiment`` (has ``Config`` and ``run``)."""
    spec = get(name)
    try:
        return importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing.startswith("reprozoo"):
            raise
        hint = f"pip install 'reprozoo[{spec.extra}]'" if spec.extra else "make install"
        raise ModuleNotFoundError(f"method {name!r} needs the package {missing!r}; install it with {hint}") from exc
