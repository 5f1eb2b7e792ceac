"""Benchmark of MEAformer's training epoch, evaluation and memory (not a test).

One run prints, for whole MEAformer training at the parity settings (structure + relations, hidden 300,
batch 3,500, the reference's optimiser; CSLS k = 3 over the test links):

1. **ours on full DBP15K ZH-EN** (38,960 entities, 4,500 training / 10,500 test links): seconds per training
   epoch (the second of two), seconds of one test evaluation (blocked CSLS), peak RSS of the process;
2. **ours beside a dense-attention PyTorch GAT of the same size** (the same model and trainer with the
   structure encoder swapped for the same diagonal GAT written densely: one N x N score matrix per head and
   layer) on a random subset of ZH-EN (``--links`` gold links and their entities; default 2,500 links, 5,000
   entities): the dense GAT does not fit this machine at 38,960 entities (one N x N float32 matrix is 6 GB,
   and training keeps several per head and layer), so the same-size comparison runs on the subset.

Each arm runs in its own subprocess, so its peak RSS is its own. Times are wall seconds (what the targets
mean; they are only meaningful on idle cores: the load average at the start and end is printed) and process
CPU seconds (all threads; robust to other jobs). The reference code's figures on full ZH-EN (62 s train + 27 s
eval per epoch, 11.7 GB peak RSS) are quoted, not rerun.
Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_meaformer.py [--threads 2] [--links 2500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REFERENCE = {"train_s": 62.0, "eval_s": 27.0, "rss_gb": 11.7}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def _dense_gat_class():
    import torch
    import torch.nn.functional as F

    from reprozoo.meaformer import DiagGAT

    class DenseDiagGAT(DiagGAT):
        """The reference's diagonal GAT with dense attention: e_ij = exp(-LeakyReLU(a^T[h_i||h_j])) for all
        N x N pairs, masked to the graph, row-normalised (same parameters and function as DiagGAT)."""

        def forward(self, x, graph):
            if getattr(self, "_adj", None) is None or self._adj.shape[0] != graph.n:
                self._adj = torch.zeros(graph.n, graph.n, dtype=torch.bool, device=x.device)
                self._adj[graph.dst, graph.src] = True
            for i, layer in enumerate(self.layers):
                out = 0
                for k in range(layer.heads):
                    h = x * layer.w[k]
                    s = (h @ layer.a_self[k])[:, None] + (h @ layer.a_nbr[k])[None, :]
                    att = torch.softmax((-F.leaky_relu(s, 0.2)).masked_fill(~self._adj, float("-inf")), dim=1)
                    out = out + att @ h
                x = out / layer.heads
                if i + 1 < len(self.layers):
                    x = F.elu(x)
            return x

    return DenseDiagGAT


def part(kind: str, threads: int, links: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from reprozoo.datasets import load_dbp15k, split_links
    from reprozoo.meaformer import MEAformerTrainer

    if kind == "dense":  # swap the structure encoder class the model builds
        import reprozoo.meaformer.model as model_module

        model_module.DiagGAT = _dense_gat_class()
    kg = load_dbp15k("ZH-EN")
    if kind == "full":
        split = split_links(kg.links, n_train=4500, valid_ratio=0.0, seed=42)
    else:
        kg = kg.subset(links, seed=0, hops=0)
        split = split_links(kg.links, train_ratio=0.3, valid_ratio=0.0, seed=42)
    tr = MEAformerTrainer(modalities=("structure", "relation"), epochs=2, select="last", seed=0)
    tr.fit(kg, split)
    c, w = time.process_time(), time.perf_counter()
    scores = tr.evaluate("test")
    return {"train_cpu_s": tr.history_[-1]["train_cpu_seconds"], "train_wall_s": tr.history_[-1]["train_seconds"],
            "eval_cpu_s": time.process_time() - c, "eval_wall_s": time.perf_counter() - w, "rss_gb": _rss_gb(),
            "hits1_after_2_epochs": scores["Hits@1"], "entities": kg.n_entities, "test_links": len(split.test),
            "encoder": type(tr.model_.graph_encoder).__name__}


def _sub(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(name: str, r: dict, base: dict | None) -> str:
    if "error" in r:
        return f"   {name:28s} failed: {r['error']}"
    text = (f"   {name:28s} train {r['train_wall_s']:6.2f} s/epoch ({r['train_cpu_s']:6.2f} CPU s)   "
            f"eval {r['eval_wall_s']:6.2f} s ({r['eval_cpu_s']:6.2f} CPU s)   peak RSS {r['rss_gb']:5.2f} GB   "
            f"[{r['entities']} entities, {r['test_links']} test links; Hits@1 after 2 epochs "
            f"{r['hits1_after_2_epochs']:.1f} %]")
    if base is not None and "error" not in base:
        cpu = (f" ({base['train_cpu_s'] / r['train_cpu_s']:.1f}x CPU)" if "train_cpu_s" in base else "")
        text += (f"\n   {'':28s} -> vs {base['name']}: train {base['train_wall_s'] / r['train_wall_s']:.1f}x"
                 f"{cpu}, eval "
                 f"{base['eval_wall_s'] / r['eval_wall_s']:.1f}x, RSS {base['rss_gb'] / r['rss_gb']:.1f}x less")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--links", type=int, default=2500, help="gold links of the subset for the dense comparison")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part is not None:
        print(json.dumps(part(a.part, a.threads, a.links)))
        return
    load0 = os.getloadavg()[0]
    args = ["--threads", str(a.threads), "--links", str(a.links)]
    full = _sub(["--part", "full", *args])
    ours = _sub(["--part", "ours", *args])
    dense = {**_sub(["--part", "dense", *args]), "name": "dense GAT"}
    ref = {"name": "reference", "train_wall_s": REFERENCE["train_s"],  # its CPU seconds were not recorded
           "eval_wall_s": REFERENCE["eval_s"], "rss_gb": REFERENCE["rss_gb"]}
    print(f"MEAformer training at the parity settings, {a.threads} threads; load average "
          f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end on {os.cpu_count()} cores "
          "(wall times mean 'idle cores' only when the load stays below the thread count)")
    print("1. full ZH-EN (reference code, quoted: 62 s train + 27 s eval per epoch, 11.7 GB peak RSS)")
    print(_row("ours (sparse DiagGAT)", full, ref))
    print(f"2. same-size comparison on a {a.links}-link subset of ZH-EN (the dense GAT does not fit 38,960 "
          "entities)")
    print(_row("dense-attention GAT", dense, None))
    print(_row("ours (sparse DiagGAT)", ours, dense))


if __name__ == "__main__":
    main()
