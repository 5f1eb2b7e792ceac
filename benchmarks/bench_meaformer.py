"""Benchmark of MEAformer's training epoch, evaluation and memory (not a test).

1. Full DBP15K ZH-EN at the parity settings (structure + relations, hidden 300, batch 3,500, 4,500 training
   links, CSLS k = 3 over the 10,500 test links): seconds per training epoch (the second of two), seconds of
   one test evaluation, peak RSS of the process.
2. The structure encoder alone (2-layer, 2-head GAT, forward + backward) on a random connected subset of the
   same graph: ours (sparse CSR products) beside a plain dense-attention PyTorch GAT of the same size (an
   N x N score matrix per head), and PyTorch Geometric's ``GATConv``; measured in the same run, ratios to the
   dense GAT. The dense GAT does not fit this machine at the full 38,960 entities (one N x N float32 matrix
   is 6 GB), so part 2 runs at ``--nodes`` entities (default 8,000).

Each part runs in its own subprocess, so its peak RSS is its own. Times are process CPU seconds (all threads;
robust to other jobs on a shared machine) and wall seconds. The reference code's figures on full ZH-EN (62 s
train + 27 s eval per epoch, 11.7 GB peak RSS) are quoted, not rerun.
Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_meaformer.py [--threads 2] [--nodes 8000]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

REFERENCE = {"train_s": 62.0, "eval_s": 27.0, "rss_gb": 11.7}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def part_parity(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from reprozoo.datasets import load_dbp15k, split_links
    from reprozoo.meaformer import MEAformerTrainer

    kg = load_dbp15k("ZH-EN")
    split = split_links(kg.links, n_train=4500, valid_ratio=0.0, seed=42)
    tr = MEAformerTrainer(modalities=("structure", "relation"), epochs=2, select="last", seed=0)
    tr.fit(kg, split)
    c, w = time.process_time(), time.perf_counter()
    scores = tr.evaluate("test")
    return {"train_cpu_s": tr.history_[-1]["train_cpu_seconds"], "train_wall_s": tr.history_[-1]["train_seconds"],
            "eval_cpu_s": time.process_time() - c, "eval_wall_s": time.perf_counter() - w, "rss_gb": _rss_gb(),
            "hits1_after_2_epochs": scores["Hits@1"]}


class DenseGAT:
    """A plain dense-attention GAT (Velickovic et al.): scores for all N x N pairs, masked to the graph."""

    def __init__(self, dim: int, heads: int = 2, layers: int = 2):
        import torch

        self.params = [((torch.randn(dim, dim) / dim ** 0.5).requires_grad_(),
                        (torch.randn(heads, 2, dim) / dim ** 0.5).requires_grad_()) for _ in range(layers)]
        self.heads = heads

    def __call__(self, x, adj):
        import torch
        import torch.nn.functional as F

        for i, (W, a) in enumerate(self.params):
            h = x @ W
            out = 0
            for k in range(self.heads):
                s = (h @ a[k, 0])[:, None] + (h @ a[k, 1])[None, :]
                s = F.leaky_relu(s, 0.2).masked_fill(~adj, float("-inf"))
                out = out + torch.softmax(s, dim=1) @ h
            x = out / self.heads
            if i + 1 < len(self.params):
                x = F.elu(x)
        return x


def part_encoder(kind: str, nodes: int, threads: int, repeats: int = 2) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from reprozoo.datasets import load_dbp15k
    from reprozoo.meaformer import DiagGAT, PyGGAT, SparseGraph, joint_edges

    kg = load_dbp15k("ZH-EN")
    sub = kg.subset(nodes // 2, seed=0, hops=0) if nodes < kg.n_entities else kg
    edges = joint_edges(sub.triples, sub.n_entities)
    n = sub.n_entities
    torch.manual_seed(0)
    x = torch.randn(n, 300, requires_grad=True)
    if kind == "dense":
        adj = torch.zeros(n, n, dtype=torch.bool)
        adj[torch.as_tensor(edges[1]), torch.as_tensor(edges[0])] = True
        enc = DenseGAT(300)

        def step():
            enc(x, adj).pow(2).mean().backward()
    else:
        g = SparseGraph(edges, n)
        enc = DiagGAT(300) if kind == "ours" else PyGGAT(300)

        def step():
            enc(x, g).pow(2).mean().backward()
    step()
    best_c, best_w = float("inf"), float("inf")
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        step()
        best_c, best_w = min(best_c, time.process_time() - c), min(best_w, time.perf_counter() - w)
    return {"nodes": n, "edges": int(np.asarray(edges).shape[1]), "cpu_s": best_c, "wall_s": best_w,
            "rss_gb": _rss_gb()}


def _sub(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nodes", type=int, default=8000)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-parity", action="store_true", help="only the encoder comparison")
    a = p.parse_args()
    if a.part is not None:
        res = part_parity(a.threads) if a.part == "parity" else part_encoder(a.part, a.nodes, a.threads)
        print(json.dumps(res))
        return
    if not a.skip_parity:
        r = _sub(["--part", "parity", "--threads", str(a.threads)])
        print("1. full ZH-EN, parity settings (CPU s = all threads; wall on this machine)")
        if "error" in r:
            print("   failed:", r["error"])
        else:
            print(f"   train epoch: {r['train_cpu_s']:.1f} CPU s ({r['train_wall_s']:.1f} s wall)   reference 62 s "
                  f"-> {REFERENCE['train_s'] / r['train_wall_s']:.1f}x")
            print(f"   evaluation : {r['eval_cpu_s']:.1f} CPU s ({r['eval_wall_s']:.1f} s wall)   reference 27 s "
                  f"-> {REFERENCE['eval_s'] / r['eval_wall_s']:.1f}x")
            print(f"   peak RSS   : {r['rss_gb']:.2f} GB   reference 11.7 GB -> "
                  f"{REFERENCE['rss_gb'] / r['rss_gb']:.1f}x less;  "
                  f"Hits@1 after 2 epochs {r['hits1_after_2_epochs']:.1f} %")
    print(f"2. structure encoder forward + backward, {a.nodes} entities subset (best of 2)")
    rows = {k: _sub(["--part", k, "--nodes", str(a.nodes), "--threads", str(a.threads)])
            for k in ("dense", "ours", "gatconv")}
    base = rows["dense"]
    for k, r in rows.items():
        if "error" in r:
            print(f"   {k:8s} failed: {r['error']}")
            continue
        ratio = "" if "error" in base or k == "dense" else \
            f"  -> {base['cpu_s'] / r['cpu_s']:.1f}x faster (CPU), {base['rss_gb'] / r['rss_gb']:.1f}x less RSS"
        print(f"   {k:8s} {r['cpu_s']:7.2f} CPU s ({r['wall_s']:.2f} s wall)  peak RSS {r['rss_gb']:.2f} GB"
              f"  [{r['nodes']} nodes, {r['edges']} edges]{ratio}")


if __name__ == "__main__":
    main()
