"""One federated training run of a method, as a server job ``job(grid) -> dict`` (no engine choice here).

Methods (issue 6): ``FedTiny`` (ABNS over the candidate pool + progressive one-layer pruning),
``FedAvg-dense``, ``Random`` (fixed random ERK mask), ``SNIP`` and ``SynFlow`` (fixed masks computed on the
server; SNIP on a small public batch), ``FedDST`` (random ERK start, whole-model prune-and-grow with the
same schedule, no ABNS).  All share the data split, initial weights, rounds, clients and optimiser.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reprozoo.fedtiny.baselines import random_mask, snip_mask, synflow_mask
from reprozoo.fedtiny.client import Keys, build_model, federated_data, load_state, mean_loss, model_shapes, state_of
from reprozoo.fedtiny.cost import CostModel
from reprozoo.fedtiny.sparse import candidate_pool, check_density

__all__ = ["METHODS", "ROLES", "RunSpec", "make_job"]

METHODS = ("FedTiny", "FedAvg-dense", "Random", "SNIP", "SynFlow", "FedDST")
ROLES = {"FedTiny": "method", "FedAvg-dense": "reference", "Random": "baseline", "SNIP": "baseline",
         "SynFlow": "baseline", "FedDST": "baseline"}


@dataclass
class RunSpec:
    """Everything one run needs (plain values: it travels to the Flower ServerApp thread)."""

    method: str
    dataset: str = "MNIST"
    density: float = 0.05
    alpha: float = 0.5
    seed: int = 0
    n_clients: int = 10
    fraction_train: float = 1.0
    n_train: int = 10000
    n_test: int = 0
    n_public: int = 128
    arch: str = "cnn16"
    rounds: int = 30
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    delta_t: int = 3
    t_end: int = 20
    adjust_alpha: float = 0.2
    layer_order: str = "output_to_input"
    grad_batches: int = 1
    candidates: Sequence[str] = ("erk-magnitude", "erk-random", "er-magnitude", "er-random", "uniform-magnitude")
    abns_samples: int = 512
    synflow_iters: int = 100
    eval_every: int = 5
    n_curve: int = 2000
    client_threads: int = 1
    fail_client: int = -1
    fail_round: int = -1
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not valid; choose one of {METHODS}")
        check_density(self.density)
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha} should be > 0 (Dirichlet concentration)")
        if self.n_clients < 1 or self.n_clients > self.n_train:
            raise ValueError(f"n_clients={self.n_clients} should be in [1, n_train={self.n_train}]")
        if self.rounds < 1:
            raise ValueError(f"rounds={self.rounds} should be >= 1")
        if not (self.fail_client == -1 or 0 <= self.fail_client < self.n_clients):
            raise ValueError(f"fail_client={self.fail_client} should be -1 (off) or a client index in "
                             f"[0, n_clients={self.n_clients})")
        if not (self.fail_round == -1 or 0 <= self.fail_round <= self.rounds):
            raise ValueError(f"fail_round={self.fail_round} should be -1 (off) or a round in [0, rounds={self.rounds}]")

    def base_config(self) -> dict[str, Any]:
        return {Keys.DATASET: self.dataset, Keys.N_TRAIN: self.n_train, Keys.N_CLIENTS: self.n_clients,
                Keys.ALPHA: float(self.alpha), Keys.SEED: self.seed, Keys.ARCH: self.arch, Keys.LR: float(self.lr),
                Keys.MOMENTUM: float(self.momentum), Keys.WD: float(self.weight_decay), Keys.EPOCHS: self.local_epochs,
                Keys.BATCH: self.batch_size, Keys.ABNS_SAMPLES: self.abns_samples, Keys.THREADS: self.client_threads,
                Keys.FAIL_PARTITION: self.fail_client, Keys.FAIL_ROUND: self.fail_round}


def make_job(spec: RunSpec):
    """A server job running ``spec`` on a Flower ``Grid``; returns a dict of measured numbers:

    ``top1`` (final test accuracy, a FRACTION in [0, 1] here; the experiment records it in percent),
    ``curve`` [(round, top1 fraction)], ``density`` (achieved),
    ``flops_per_round`` (mean per client and round, FLOPs), ``peak_mem_mb`` (modelled, max over clients
    and rounds), ``state_mem_mb`` (the same without activations), ``bytes`` (all payload bytes both ways),
    ``history``, ``abns``, ``failed_rounds`` [(round, [failed node ids])], ``n_failed`` (failed client
    replies in all, ABNS queries included; 0 when every client answered), ``seconds``.

    Each node serves the data partition of its index, so a grid with more than ``spec.n_clients``
    nodes would have nodes failing every round: the job raises ``ValueError`` naming both counts
    (:func:`~reprozoo.fedtiny.flower.run_federated` checks the exact count before starting, through
    ``job.spec``).
    """
    spec.validate()

    def job(grid) -> dict[str, Any]:
        from flwr.app import MetricRecord

        from reprozoo.fedtiny.flower import FedTinyStrategy, from_record, to_record

        n_nodes = len(list(grid.get_node_ids()))  # fewer: nodes may still be connecting (Flower waits)
        if n_nodes > spec.n_clients:
            raise ValueError(f"the grid has {n_nodes} client nodes but RunSpec.n_clients={spec.n_clients}; "
                             "run_federated(jobs, n_clients) needs the n_clients of the specs")
        t0 = time.perf_counter()
        data = federated_data(spec.dataset, spec.n_train, spec.n_clients, spec.alpha, spec.seed)
        in_chans, h, w = data.input_shape
        model = build_model(spec.arch, data.n_classes, in_chans, spec.seed)
        shapes = model_shapes(model)
        cost = CostModel.from_model(model, data.input_shape)
        gen = torch.Generator().manual_seed(spec.seed)
        kw: dict[str, Any] = {}
        m = spec.method
        if m == "FedTiny":
            pool = candidate_pool(model, spec.density, spec.candidates, gen)
            init = state_of(model)
            cands = []
            for name, mk in pool:
                st = {k: v.copy() for k, v in init.items()}
                for n, t in mk.masks.items():
                    st[n] = st[n] * t.numpy()
                cands.append((name, mk, st))
            kw = dict(candidates=cands, delta_t=spec.delta_t)
        elif m == "FedDST":
            kw = dict(mask=random_mask(model, spec.density, gen), delta_t=spec.delta_t, whole_model=True)
        elif m == "Random":
            kw = dict(mask=random_mask(model, spec.density, gen))
        elif m == "SNIP":
            kw = dict(mask=snip_mask(model, spec.density, *data.public))
        elif m == "SynFlow":
            kw = dict(mask=synflow_mask(model, spec.density, data.input_shape, spec.synflow_iters))
        if "mask" in kw:
            kw["mask"].apply(model)
        strategy = FedTinyStrategy(shapes=shapes, base_config=spec.base_config(), t_end=spec.t_end,
                                   adjust_alpha=spec.adjust_alpha, layer_order=spec.layer_order,
                                   grad_batches=spec.grad_batches, fraction_train=spec.fraction_train,
                                   min_train_nodes=min(2, spec.n_clients), min_available_nodes=spec.n_clients, **kw)
        curve: list[tuple[int, float]] = []
        xt, yt = data.test
        sel = torch.randperm(len(yt), generator=torch.Generator().manual_seed(spec.seed))
        sel = sel[:spec.n_test] if spec.n_test else sel
        xt, yt = xt[sel], yt[sel]
        xc, yc = xt[:spec.n_curve], yt[:spec.n_curve]  # curve points on a fixed subset; final top1 on all
        net = build_model(spec.arch, data.n_classes, in_chans, 0)

        def evaluate(rnd: int, arrays):
            if rnd % spec.eval_every and rnd != spec.rounds:
                return None
            load_state(net, from_record(arrays))
            loss, acc = mean_loss(net, xc, yc)
            curve.append((rnd, acc))
            return MetricRecord({"top1": acc, "loss": loss})

        result = strategy.start(grid, to_record(state_of(model)), num_rounds=spec.rounds, evaluate_fn=evaluate)
        final = from_record(result.arrays) if result.arrays is not None else state_of(model)
        load_state(net, final)
        _, top1 = mean_loss(net, xt, yt)
        mask = strategy.mask
        if mask is not None:
            zeros_ok = all(np.all(final[n][~mask.masks[n].numpy()] == 0) for n in mask.names)
            if not zeros_ok:
                raise AssertionError("pruned weights are non-zero after training")
        hist = [e for e in strategy.history if "flops" in e]
        abns_flops = 0.0
        if m == "FedTiny":
            nnz = {n: int(t.sum()) for n, t in mask.masks.items()}
            # two forward passes (statistics, losses) per candidate over abns_samples per client
            abns_flops = 2 * len(spec.candidates) * cost.forward_flops(nnz) * min(
                spec.abns_samples, spec.n_train // spec.n_clients)
        return {
            "method": m, "seed": spec.seed, "top1": float(top1), "curve": curve,
            "density": mask.density if mask is not None else 1.0,
            "flops_per_round": float(np.mean([e["flops"] for e in hist])) + abns_flops / spec.rounds if hist else 0.0,
            "peak_mem_mb": max(e["mem_bytes"] for e in hist) / 2**20 if hist else 0.0,
            "state_mem_mb": max(e["mem_state_bytes"] for e in hist) / 2**20 if hist else 0.0,
            "bytes": strategy.bytes_down + strategy.bytes_up,
            "history": strategy.history, "abns": strategy.abns,
            "failed_rounds": [(e["round"], e["failed_nodes"]) for e in strategy.history if e["n_failed"]],
            "n_failed": sum(int(e["n_failed"]) for e in strategy.history) + int(strategy.abns.get("failed", 0)),
            "seconds": time.perf_counter() - t0,
        }

    job.spec = spec  # type: ignore[attr-defined]  # read by run_federated to check n_clients up front
    return job
