"""Benchmark: ExpertKnowledgeAssigner's cost against TF-IDF + logistic regression, and its hot paths.

Prints, in one run (CPU seconds: the less contention-sensitive figure on a shared machine):
- fit and predict CPU seconds of ExpertKnowledgeAssigner and of TF-IDF+LR on GICS-firms (2020 firms, 70/30),
  their ratio, and both sector / sub-industry top-1 accuracy;
- one training step's scoring: our single matmul + gather against the industries of each firm's period versus
  materialising the (n, K, d) industry tensor per firm (forward + backward), and their ratio;
- path probabilities: the vectorised top-down product versus a per-firm Python walk over the tree.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_industry.py [--epochs 60] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reprozoo.industry import ExpertKnowledgeAssigner, TreeIndex, conditional_log_probs, path_log_probs
from reprozoo.industry.baselines import TfidfLR
from reprozoo.industry.experiment import make_task


def cpu(fn, repeats: int = 1):
    best, out = np.inf, None
    for _ in range(repeats):
        c0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - c0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for the micro-benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(1)

    task = make_task("GICS-firms", 0)
    gold = np.array(task.test_codes, dtype=object)
    rows = []
    for name, model in [("ExpertKnowledgeAssigner", ExpertKnowledgeAssigner(task.ics, encoder_dim=256,
                                                                            epochs=args.epochs, lr=3e-3)),
                        ("TF-IDF+LR", TfidfLR(task.ics))]:
        fit_s, _ = cpu(lambda m=model: m.fit(task.train_texts, task.train_codes, task.train_times))
        pred_s, pred = cpu(lambda m=model: m.predict(task.test_texts, task.test_times))
        leaf = float(np.mean(pred == gold) * 100)
        sector = float(np.mean([p[:2] == g[:2] for p, g in zip(pred, gold, strict=True)]) * 100)
        rows.append((name, fit_s, pred_s, sector, leaf))
    print(f"GICS-firms: {len(task.train_texts)} train / {len(task.test_texts)} test firms, "
          f"{len(task.ics.leaves)} leaves")
    for name, fit_s, pred_s, sector, leaf in rows:
        print(f"  {name:24s} fit {fit_s:6.2f} s CPU  predict {pred_s:5.2f} s CPU  sector top1 {sector:5.1f}%  "
              f"sub-industry top1 {leaf:5.1f}%")
    print(f"  ratio fit method / TF-IDF+LR: {rows[0][1] / rows[1][1]:.2f}x;  predict: {rows[0][2] / rows[1][2]:.2f}x")

    # scoring against each firm's period: matmul + gather vs materialised (n, K, d)
    torch.manual_seed(0)
    n, T, K, d = 1000, 5, 262, 128
    F = torch.randn(n, d, requires_grad=True)
    U = torch.randn(T, K, d, requires_grad=True)
    period = torch.randint(0, T, (n,))

    def ours():
        Fn, Un = torch.nn.functional.normalize(F, dim=-1), torch.nn.functional.normalize(U, dim=-1)
        s = (Fn @ Un.reshape(T * K, d).T).view(n, T, K)[torch.arange(n), period]
        s.sum().backward()
        return s

    def naive():
        Fn = torch.nn.functional.normalize(F, dim=-1)
        Un = torch.nn.functional.normalize(U[period], dim=-1)  # (n, K, d)
        s = torch.einsum("nd,nkd->nk", Fn, Un)
        s.sum().backward()
        return s

    t_ours, s1 = cpu(ours, args.repeats)
    t_naive, s2 = cpu(naive, args.repeats)
    assert torch.allclose(s1, s2, atol=1e-5)
    print(f"scores fwd+bwd (n={n}, T={T}, K={K}, d={d}): ours {t_ours * 1e3:.1f} ms, per-firm tensor "
          f"{t_naive * 1e3:.1f} ms, speed-up {t_naive / t_ours:.1f}x")

    # path probabilities: vectorised vs a Python walk
    tree = TreeIndex.from_ics(task.ics)
    cond = conditional_log_probs(torch.randn(n, tree.n_nodes), tree)
    t_vec, lp = cpu(lambda: path_log_probs(cond, tree), args.repeats)
    parent = tree.parent.tolist()

    def walk():
        out = torch.zeros_like(cond)
        for i in range(n):
            row = cond[i].tolist()
            acc = [0.0] * len(row)
            for k in range(len(row)):  # parents come first
                acc[k] = row[k] + (acc[parent[k]] if parent[k] >= 0 else 0.0)
            out[i] = torch.tensor(acc)
        return out

    t_walk, lp2 = cpu(walk, 1)
    assert torch.allclose(lp, lp2, atol=1e-4)
    print(f"path log-probs (n={n}, K={tree.n_nodes}): vectorised {t_vec * 1e3:.1f} ms, Python walk "
          f"{t_walk * 1e3:.1f} ms, speed-up {t_walk / t_vec:.0f}x")


if __name__ == "__main__":
    main()
