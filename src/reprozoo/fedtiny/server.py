"""One federated training run of a method, as a server job ``job(grid) -> dict`` (no engine choice here).

Methods: ``FedTiny`` (ABNS over the candidate pool + progressive one-layer pruning), ``FedAvg-dense``,
``Random`` (fixed random ERK mask), ``SNIP`` and ``SynFlow`` (fixed masks computed on the server; SNIP on
a small public batch), ``FedDST`` (random ERK start, whole-model prune-and-grow with the same schedule,
no ABNS).  All share the data split, initial weights, rounds, clients and optimiser: a job reads them
from the experiment's config itself and sends the clients' part through
:func:`~reprozoo.fedtiny.protocol.client_config`.

Device: the server evaluates on ``config.device`` (the evaluation model and the test images are moved
there once per job); the one-off masks (candidates, SNIP, SynFlow) are computed on the CPU, and
aggregation runs in NumPy, the wire format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from reprozoo.core.checks import check_int
from reprozoo.core.device import resolve_device
from reprozoo.core.experiment import TorchExperimentConfig
from reprozoo.core.progress import log
from reprozoo.fedtiny.baselines import ROLES, random_mask, snip_mask, synflow_mask
from reprozoo.fedtiny.client import (
    DATASET_INFO,
    build_model,
    eval_order,
    federated_data,
    load_state,
    mean_loss,
    model_shapes,
    on_device,
    state_of,
)
from reprozoo.fedtiny.cost import CostModel
from reprozoo.fedtiny.protocol import client_config, from_record, to_record
from reprozoo.fedtiny.sparse import candidate_pool
from reprozoo.fedtiny.strategy import FedTinyStrategy
from reprozoo.sparsity import check_density

__all__ = ["ServerJob", "experiment_jobs"]


@dataclass(frozen=True)
class ServerJob:
    """One federated run: ``method`` at ``density`` on ``dataset`` with ``seed``; every other setting comes
    from ``config`` (a validated :class:`~reprozoo.fedtiny.experiment.FedTinyConfig`).

    ``job(grid)`` runs it on a Flower ``Grid`` and returns a dict of measured numbers:
    ``top1`` (final test accuracy in percent, as recorded by the experiment),
    ``curve`` [(round, top1 in percent)], ``density`` (achieved),
    ``flops_per_round`` (mean per client and round, FLOPs), ``peak_mem_mb`` (modelled, max over clients
    and rounds), ``state_mem_mb`` (the same without activations), ``bytes`` (all payload bytes both ways),
    ``history``, ``abns``, ``failures`` [(round, "client <partition>", one-line reason)] (ABNS queries
    at the round after the warm-up, 0 without one), ``n_failed`` (failed client
    replies in all, ABNS queries included; 0 when every client answered), ``seconds`` (wall), ``cpu_seconds``
    (this process's CPU time: on the local engine the whole run, its clients included).

    Each node serves the data partition of its index, so a grid with more than ``config.n_clients``
    nodes would have nodes failing every round: the job raises ``ValueError`` naming both counts
    (:func:`~reprozoo.fedtiny.simulation.run_federated` checks the exact count before starting).
    """

    config: TorchExperimentConfig
    method: str
    dataset: str
    density: float
    seed: int

    def __post_init__(self) -> None:
        if self.method not in ROLES:
            raise ValueError(f"method={self.method!r} is not valid; choose one of {tuple(ROLES)}")
        check_density(self.density)
        check_int(self.seed, "seed", low=0)

    def __str__(self) -> str:
        return f"{self.dataset} d={self.density:g} seed={self.seed} {self.method}"

    def __call__(self, grid: Grid) -> dict[str, Any]:
        cfg, m = self.config, self.method
        n_nodes = len(list(grid.get_node_ids()))  # fewer: nodes may still be connecting (Flower waits)
        if n_nodes > cfg.n_clients:
            raise ValueError(f"the grid has {n_nodes} client nodes but config.n_clients={cfg.n_clients}; "
                             "run_federated(jobs, n_clients) needs the config's n_clients")
        t0, c0 = time.perf_counter(), time.process_time()
        device = resolve_device(cfg.device)
        # 1. dense initial model and cost model (the same on the server and every client); the server loads
        #    the data set only to evaluate on its test set or for SNIP's public batch
        n_classes, input_shape = DATASET_INFO[self.dataset]
        on_server = cfg.evaluate_on == "server"
        data = (federated_data(self.dataset, cfg.n_train, cfg.n_clients, cfg.alpha, self.seed)
                if on_server or m == "SNIP" else None)
        in_chans = input_shape[0]
        model = build_model(cfg.arch, n_classes, in_chans, self.seed)
        shapes = model_shapes(model)
        cost = CostModel.from_model(model, input_shape)
        # 2. the method's initial mask (or FedTiny's candidate pool), on the CPU
        gen = torch.Generator().manual_seed(self.seed)
        kw: dict[str, Any] = {}
        if m == "FedTiny":
            pool = candidate_pool(model, self.density, cfg.candidates, gen, cfg.min_layer_density)
            init = state_of(model)
            cands = []
            for name, mk in pool:
                st = {k: v.copy() for k, v in init.items()}
                for n, t in mk.masks.items():
                    st[n] = st[n] * t.numpy()
                cands.append((name, mk, st))
            kw = dict(candidates=cands, delta_t=cfg.delta_t, warmup_rounds=cfg.warmup_rounds)
        elif m == "FedDST":
            kw = dict(mask=random_mask(model, self.density, gen), delta_t=cfg.delta_t, whole_model=True)
        elif m == "Random":
            kw = dict(mask=random_mask(model, self.density, gen))
        elif m == "SNIP":
            kw = dict(mask=snip_mask(model, self.density, *data.public))
        elif m == "SynFlow":
            kw = dict(mask=synflow_mask(model, self.density, input_shape, cfg.synflow_iters))
        if "mask" in kw:
            kw["mask"].apply(model)
        def eval_rows(rnd: int) -> int:  # test images behind round rnd's point: curve subset, all at the end
            return 0 if rnd % cfg.eval_every and rnd != cfg.rounds else (10**9 if rnd == cfg.rounds else cfg.n_curve)

        base = client_config(cfg, self.dataset, self.seed, threads=torch.get_num_threads())
        strategy = FedTinyStrategy(shapes=shapes, base_config=base, t_end=cfg.t_end,
                                   adjust_alpha=cfg.adjust_alpha, layer_order=cfg.layer_order,
                                   grad_batches=cfg.grad_batches, fraction_train=cfg.fraction_train,
                                   min_train_nodes=min(2, cfg.n_clients), min_available_nodes=cfg.n_clients,
                                   client_eval=None if on_server else eval_rows, **kw)
        # 3. centralised evaluation on the server's test set, on the device (moved once); without one
        #    (evaluate_on="clients") every client evaluates its shard of the same images (federated evaluation)
        curve: list[tuple[int, float]] = []
        evaluate = None
        if on_server:
            xt, yt = data.test
            sel = eval_order(len(yt), cfg.n_test, self.seed)
            xt, yt = xt[sel].to(device), yt[sel].to(device)
            xc, yc = xt[:cfg.n_curve], yt[:cfg.n_curve]  # curve points on a fixed subset; final top1 on all
            net = on_device(build_model(cfg.arch, n_classes, in_chans, 0), device, cfg.channels_last)

            def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
                if not eval_rows(rnd):
                    return None
                load_state(net, from_record(arrays))
                loss, acc = mean_loss(net, xc, yc)
                curve.append((rnd, acc))
                return MetricRecord({"top1": acc, "loss": loss})

        # 4. ABNS (FedTiny) and the federated rounds
        result = strategy.start(grid, to_record(state_of(model)), num_rounds=cfg.rounds, evaluate_fn=evaluate)
        final = from_record(result.arrays) if result.arrays is not None else state_of(model)
        if on_server:
            load_state(net, final)
            _, top1 = mean_loss(net, xt, yt)
        else:
            curve = [(t, acc) for t, (_, acc, _) in sorted(strategy.client_evals.items()) if t != cfg.rounds]
            final_eval = strategy.client_evals.get(cfg.rounds)
            if final_eval is None:
                raise RuntimeError(f"{self}: every client failed the final evaluation (round {cfg.rounds})")
            top1 = final_eval[1]
            curve.append((cfg.rounds, top1))
        mask = strategy.mask
        if mask is not None:
            zeros_ok = all(np.all(final[n][~mask.masks[n].numpy()] == 0) for n in mask.names)
            if not zeros_ok:
                raise AssertionError("pruned weights are non-zero after training")
        hist = [e for e in strategy.history if "flops" in e]  # warm-up rounds included (charged to FedTiny)
        abns_flops = 0.0
        if m == "FedTiny":
            nnz = {n: int(t.sum()) for n, t in mask.masks.items()}
            # two forward passes (statistics, losses) per candidate over abns_samples per client
            abns_flops = 2 * len(cfg.candidates) * cost.forward_flops(nnz) * min(
                cfg.abns_samples, cfg.n_train // cfg.n_clients)
        seconds = time.perf_counter() - t0
        log(f"fedtiny: {self}: top1={top1:.2f} % ({seconds:.1f} s)")
        return {
            "method": m, "seed": self.seed, "top1": float(top1), "curve": curve,
            "density": mask.density if mask is not None else 1.0,
            "flops_per_round": (float(np.sum([e["flops"] for e in hist])) + abns_flops) / cfg.rounds,
            "peak_mem_mb": max(e["mem_bytes"] for e in hist) / 2**20 if hist else 0.0,
            "state_mem_mb": max(e["mem_state_bytes"] for e in hist) / 2**20 if hist else 0.0,
            "bytes": strategy.bytes_down + strategy.bytes_up,
            "history": strategy.history, "abns": strategy.abns,
            "failures": [(e["round"], who, why) for e in strategy.history for who, why in e["failed"]]
            + [(strategy.abns["after_round"], who, why) for who, why in strategy.abns.get("failures", [])],
            "n_failed": sum(int(e["n_failed"]) for e in strategy.history) + int(strategy.abns.get("failed", 0)),
            "seconds": seconds, "cpu_seconds": time.process_time() - c0,
        }


def experiment_jobs(config: TorchExperimentConfig) -> list[ServerJob]:
    """Every run of a :class:`~reprozoo.fedtiny.experiment.FedTinyConfig`: one :class:`ServerJob` per
    (dataset, density, seed, method), in that nesting order."""
    return [ServerJob(config, m, ds, float(d), int(s)) for ds in config.datasets for d in config.densities
            for s in config.seeds for m in config.methods]
