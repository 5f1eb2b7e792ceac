"""``reprozoo run elixir``: Elixir's systems claims on a GPT-2-style decoder with random tokens.

Per seed, at each world size (1: in this process; 2: two spawned gloo workers, no ``torchrun`` needed):

* equality: ``max_abs_diff`` of losses and parameters after ``equality_steps`` steps, Elixir (both searches,
  prefetch on and off, under the budget) against plain PyTorch (world 1) or DDP (world 2), fp32;
* budget: a model ``model_to_budget`` x the fast-device budget; ``peak_bytes`` of the accounting device's ledger
  beside ``budget_bytes``, ``moves_predicted`` (the search's Belady simulation) beside ``moves_measured``,
  ``bytes_moved``, ``chunk_size``, ``n_chunks``, ``n_blocks`` and ``tokens_per_s`` (prefetch and FIFO);
* throughput: ``tokens_per_s`` of PyTorch / DDP / FSDP2 (no CPU offload on CPU: it needs a GPU), Elixir with
  everything cached and Elixir under the budget, at ``throughput_batch`` x ``throughput_seq_len`` tokens;
* MoE: a GPT whose MLPs are ``moe_experts``-expert MoEs (expert parallel) against the dense GPT with the same
  parameter count, under the same budget: ``tokens_per_s`` of each and ``moe_speedup``.

Timings on a shared CPU are noisy; the ``gpu`` preset is meant for a machine with one CUDA GPU (NCCL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from reprozoo.core.experiment import ConfigError, TorchExperimentConfig, knob
from reprozoo.core.progress import log, track
from reprozoo.core.registry import ExperimentSpec
from reprozoo.core.results import Result

__all__ = ["ElixirConfig", "Config", "run", "TASKS"]

TASKS = ("equality", "budget", "throughput", "moe")


@dataclass
class ElixirConfig(TorchExperimentConfig):
    """Knobs of the Elixir experiment (defaults = the quick preset)."""

    datasets: tuple[str, ...] = ("random-tokens",)
    seeds: tuple[int, ...] = (0,)
    #: world sizes to run (1 in process, >1 spawned gloo/NCCL workers)
    world_sizes: tuple[int, ...] = knob((1, 2), ge=1, le=8, unique=True, nonempty=True)
    #: which parts to run
    tasks: tuple[str, ...] = knob(TASKS, choices=TASKS, unique=True, nonempty=True)
    #: GPT vocabulary, context, width, heads, depth, MLP (per-expert) hidden width
    vocab: int = knob(128, ge=2)
    seq_len: int = knob(8, ge=2)
    d_model: int = knob(256, ge=8)
    n_head: int = knob(4, ge=1)
    n_layer: int = knob(4, ge=1)
    d_hidden: int = knob(1024, ge=1)
    #: sequences per rank and step (equality, budget, MoE)
    batch: int = knob(1, ge=1)
    #: experts per MoE layer (dense baseline: d_hidden x moe_experts)
    moe_experts: int = knob(4, ge=2)
    #: Adam learning rate
    lr: float = knob(1e-3, gt=0)
    #: model fp32 bytes / fast-device budget (4: a model 4x larger than the fast device)
    model_to_budget: float = knob(4.0, gt=0)
    #: add 1.25 x the predicted activations to the budget of the equality and budget tasks (False: the budget
    #: holds the activations too; at GPU batch sizes they outweigh a quarter of the model)
    budget_plus_activations: bool = False
    #: smallest candidate chunk (the paper's 32 MiB is for billion-parameter models)
    min_chunk_bytes: int = knob(65536, ge=64)
    #: steps compared against PyTorch / DDP
    equality_steps: int = knob(3, ge=1)
    #: chunk-size searches compared
    searches: tuple[str, ...] = knob(("optimal", "minimum_waste"), choices=("optimal", "minimum_waste"),
                                     unique=True, nonempty=True)
    #: timed steps per throughput figure, and rounds (the runners take turns; the best round counts)
    timed_steps: int = knob(3, ge=1)
    repeats: int = knob(3, ge=1)
    #: sequences per rank and sequence length of the throughput comparison
    throughput_batch: int = knob(8, ge=1)
    throughput_seq_len: int = knob(64, ge=2)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {},
        "smoke": {"world_sizes": (1,), "d_model": 64, "n_head": 2, "n_layer": 3, "d_hidden": 128, "vocab": 32,
                  "min_chunk_bytes": 4096, "equality_steps": 1, "searches": ("optimal",), "timed_steps": 1,
                  "repeats": 1, "throughput_batch": 2, "throughput_seq_len": 16, "model_to_budget": 2.0},
        "gpu": {"world_sizes": (1,), "vocab": 50257, "seq_len": 1024, "d_model": 2048,
                "n_head": 16, "n_layer": 24, "d_hidden": 8192, "batch": 4, "min_chunk_bytes": 32 * 2**20,
                "model_to_budget": 4.0, "timed_steps": 10, "throughput_batch": 4, "throughput_seq_len": 1024,
                "equality_steps": 2, "moe_experts": 2, "budget_plus_activations": True},
    }
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ("random-tokens",)

    def validate(self) -> None:
        super().validate()
        if self.d_model % self.n_head:
            raise ConfigError(f"n_head={self.n_head} should divide d_model={self.d_model}")
        if any(self.moe_experts % w for w in self.world_sizes):
            raise ConfigError(f"moe_experts={self.moe_experts} should be a multiple of every world size "
                              f"{self.world_sizes} (experts are spread over the ranks)")

    def spec(self, throughput: bool = False) -> dict:
        """The dict the per-rank tasks read (:mod:`reprozoo.elixir.tasks`)."""
        d = {k: getattr(self, k) for k in ("vocab", "seq_len", "d_model", "n_head", "n_layer", "d_hidden",
                                            "batch", "moe_experts", "lr", "model_to_budget", "min_chunk_bytes",
                                            "equality_steps", "searches", "timed_steps", "repeats",
                                            "budget_plus_activations")}
        from reprozoo.core.device import resolve_device

        d["device"] = str(resolve_device(self.device))
        if throughput:
            d.update(batch=self.throughput_batch, seq_len=self.throughput_seq_len)
        return d


Config = ElixirConfig


def _jobs(config: ElixirConfig):
    from reprozoo.elixir import tasks

    fns = {"equality": tasks.equality_task, "budget": tasks.budget_task, "throughput": tasks.throughput_task,
           "moe": tasks.moe_task}
    return [(t, fns[t], config.spec(throughput=(t == "throughput"))) for t in config.tasks]


def run(config: ElixirConfig, out_dir: Path) -> Result:
    """Run the tasks at every world size and seed; rank 0's records are kept. Writes one figure."""
    import torch

    from reprozoo.elixir.launch import WorkerPool

    out_dir = Path(out_dir)
    result = Result(name="elixir", preset=config.preset, config=config.to_dict())
    jobs = _jobs(config)
    for world in config.world_sizes:
        pool = None
        if world > 1:
            backend = "nccl" if config.spec()["device"].startswith("cuda") else "gloo"
            if backend == "nccl" and torch.cuda.device_count() < world:
                raise ConfigError(f"world_sizes has {world} but only {torch.cuda.device_count()} CUDA devices")
            pool = WorkerPool(world, threads=1, backend=backend)
        try:
            for seed in config.seeds:
                for name, fn, spec in track(jobs, f"elixir world={world} seed={seed}"):
                    recs = fn(0, 1, spec, seed) if pool is None else pool.run(fn, spec, seed)[0]
                    for method, role, metric, value, setting in recs:
                        result.add("random-tokens", method, role, metric, float(value), seed=seed, setting=setting)
                    log(f"elixir: {name} world={world} seed={seed} done")
        finally:
            if pool is not None:
                pool.close()
    result.figures.append(_figure(result, out_dir))
    return result


def _figure(result: Result, out_dir: Path) -> str:
    """Tokens/s per method and world size (mean over seeds)."""
    import numpy as np

    from reprozoo.core.io import atomic_savefig
    from reprozoo.core.plots import figure

    rows: dict[str, list[float]] = {}
    for r in result.records:
        if r.metric == "tokens_per_s":
            rows.setdefault(f"{r.method}\n{r.setting.split(',')[0]}", []).append(r.value)
    fig, ax = figure(8, 4)
    names = list(rows)
    ax.bar(range(len(names)), [float(np.mean(rows[n])) for n in names])
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_ylabel("tokens/s")
    ax.set_title("Elixir throughput (CPU, gloo)")
    rel = "figures/tokens_per_s.png"
    atomic_savefig(fig, out_dir / rel)
    return rel


SPEC = ExperimentSpec(
    name="elixir",
    title="Elixir: chunked, offloaded training with operator-level parallel plans",
    field="distributed training",
    paper="Huang, Fang, Liu, Li, You, 'Elixir: Train a Large Language Model on a Small GPU Cluster', "
          "arXiv:2212.05339 (v3 2023)",
    config=ElixirConfig,
    run=run,
    primary_metric="tokens_per_s",
    higher_is_better=True,
    extra="",
    threads=1,
)
