"""Benchmark: FedTiny against dense FedAvg in one run: wall and CPU time per round, bytes
communicated per round, modelled client memory and training FLOPs, printed as FedTiny / dense ratios.

Both methods run the same federation (MNIST, Dirichlet 0.5, 10 clients, SmallCNN-16, density 0.05) for
``--rounds`` rounds through the same Strategy/ClientApp code, on the in-process grid by default (so the
timings are of the protocol, not of Ray scheduling) or on Flower's simulation engine (``--engine flower``).
Sparse training here uses dense kernels with masks (PyTorch has no fast sparse conv on CPU), so the time
ratio measures protocol overhead (packing, ABNS, top-K buffers), not the FLOPs saving, which the FLOPs
ratio states analytically.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fedtiny.py [--rounds 6] [--engine local] [--device cpu]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--engine", choices=("local", "flower"), default="local")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where clients train and the server evaluates")
    args = ap.parse_args()

    import numpy as np
    import torch

    from reprozoo.fedtiny.client import build_model
    from reprozoo.fedtiny.cost import CostModel
    from reprozoo.fedtiny.experiment import FedTinyConfig
    from reprozoo.fedtiny.server import ServerJob
    from reprozoo.fedtiny.simulation import run_federated

    torch.set_num_threads(1)
    # the selection at initialisation (warmup_rounds=0): a round's cost, not the warm-up's C x w sparse rounds
    common = dict(n_clients=10, n_train=args.n_train, rounds=args.rounds, delta_t=2, t_end=args.rounds,
                  warmup_rounds=0, eval_every=args.rounds, n_curve=500, abns_samples=200, n_test=0, device=args.device)
    config = FedTinyConfig.from_preset("quick", **common)
    warm = config.replace(rounds=1, t_end=1)  # data loading, allocator and kernel warm-up
    jobs = [ServerJob(warm, "Random", "MNIST", 0.05, 0), ServerJob(config, "FedAvg-dense", "MNIST", 0.05, 0),
            ServerJob(config, "FedTiny", "MNIST", 0.05, 0)]
    cpu0 = time.process_time()
    outs, wall = run_federated(jobs, 10, engine=args.engine)
    cpu = time.process_time() - cpu0
    _, dense, tiny = outs

    def per_round(out, adjust: bool | None = None, key: str = "seconds"):
        rows = [e for e in out["history"] if "flops" in e and (adjust is None or bool(e.get("adjusted")) == adjust)]
        return float(np.mean([e[key] for e in rows])) if rows else float("nan")

    model = build_model("cnn16", 10, 1, 0)
    cost = CostModel.from_model(model, (1, 28, 28))
    nnz = {n: round(0.05 * v) for n, v in cost.numel.items()}
    md, mt = cost.memory_bytes(None, 32), cost.memory_bytes(nnz, 32)
    state = ("params", "grads", "optimizer")
    rows = [
        ("wall s / round (all rounds)", per_round(dense), per_round(tiny)),
        ("wall s / round (plain rounds)", per_round(dense, False), per_round(tiny, False)),
        ("wall s / round (adjustment rounds)", per_round(dense, False), per_round(tiny, True)),
        ("CPU s / round (all rounds; local engine only)", per_round(dense, key="cpu_seconds"),
         per_round(tiny, key="cpu_seconds")),
        ("CPU s / round (adjustment rounds)", per_round(dense, False, "cpu_seconds"),
         per_round(tiny, True, "cpu_seconds")),
        ("ABNS wall s (once, before round 1)", 0.0, tiny["abns"].get("seconds", 0.0)),
        ("ABNS CPU s (once; local engine only)", 0.0, tiny["abns"].get("cpu_seconds", 0.0)),
        ("bytes communicated / round", dense["bytes"] / args.rounds, tiny["bytes"] / args.rounds),
        ("client peak memory MB (modelled)", dense["peak_mem_mb"], tiny["peak_mem_mb"]),
        ("client model-state MB (params+grads+momentum)", sum(md[k] for k in state) / 2**20,
         sum(mt[k] for k in state) / 2**20),
        ("training GFLOPs / client / round", dense["flops_per_round"] / 1e9, tiny["flops_per_round"] / 1e9),
        ("test top1 (%) after the rounds", dense["top1"], tiny["top1"]),
    ]
    print(f"fedtiny benchmark: {args.rounds} rounds, 10 clients, engine={args.engine}, device={args.device}, "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU of this process")
    print(f"{'quantity':48s} {'FedAvg-dense':>14s} {'FedTiny':>14s} {'ratio':>8s}")
    for name, d, t in rows:
        ratio = t / d if d else float("nan")
        print(f"{name:48s} {d:14.4g} {t:14.4g} {ratio:8.3f}")


if __name__ == "__main__":
    main()
