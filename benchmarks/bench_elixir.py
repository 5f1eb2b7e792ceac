"""Benchmark of Elixir against plain PyTorch, measured in the same run (ratios).

1. Training-step throughput (tokens/s) of a GPT-2-style decoder with Adam: plain PyTorch, Elixir with everything
   cached (no budget) and Elixir under a fast-device budget of 1/4 of the model (+ the predicted activations),
   as ratios to PyTorch. The three are timed in turn within each repeat (best of the repeats, process CPU
   seconds and wall seconds), so load from other jobs affects all alike. Goal on CPU: >= 0.8x
   PyTorch for the cached case (the paper: 84 % of PyTorch's GPU efficiency at OPT-30B on one A100).
2. Search time: meta-device profiling plus the optimal (Belady-simulated) chunk-size search.
3. Bytes moved per iteration: the search's prediction beside the measured count, under the 1/4 budget.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_elixir.py [--device cpu|cuda] [--d-model 256]
[--n-layer 4] [--batch 8] [--seq-len 64] [--repeats 3] [--steps 3]``; ``benchmarks/gpu_elixir.sh`` runs it on a GPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from reprozoo.elixir import CudaDevice, gpt_step, profile_model, random_tokens, wrap
from reprozoo.elixir.search import optimal_search
from reprozoo.elixir.tasks import build_gpt, param_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-chunk-bytes", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = dict(vocab=a.vocab, seq_len=a.seq_len, d_model=a.d_model, n_head=a.n_head, n_layer=a.n_layer,
                d_hidden=4 * a.d_model, moe_experts=2)
    cuda = a.device.startswith("cuda")
    batches = [random_tokens(a.batch, a.seq_len + 1, a.vocab, seed=t, device=a.device) for t in range(a.steps)]
    model_bytes = param_bytes(build_gpt(spec, 0))

    t0 = time.perf_counter()
    prof = profile_model(build_gpt(spec, 0), gpt_step, batches[0])
    t_profile = time.perf_counter() - t0
    quarter = model_bytes // 4 + int(1.25 * prof.activation_bytes)
    t0 = time.perf_counter()
    optimal_search(prof, 1, quarter, min_chunk_bytes=a.min_chunk_bytes)
    t_search = time.perf_counter() - t0

    runners = {}
    plain = build_gpt(spec, 0).to(a.device)
    popt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step(b):
        gpt_step(plain, b).backward()
        popt.step()
        popt.zero_grad()

    runners["PyTorch"] = plain_step
    wrapped = {}
    for name, budget in (("Elixir (all cached)", None), ("Elixir (1/4 budget)", quarter)):
        g = build_gpt(spec, 0)
        fast = CudaDevice(a.device, budget) if cuda else None
        m, o = wrap(g, torch.optim.Adam(g.parameters(), lr=1e-3), memory_budget=budget, step_fn=gpt_step,
                    example_input=batches[0], min_chunk_bytes=a.min_chunk_bytes, fast_device=fast)
        wrapped[name] = (m, o)

        def step(b, m=m, o=o):
            o.backward(gpt_step(m, b))
            o.step()
            o.zero_grad()

        runners[name] = step

    best = {n: (float("inf"), float("inf")) for n in runners}
    for r in range(a.repeats + 1):  # the first round warms up
        for name, fn in runners.items():
            if cuda:
                torch.cuda.synchronize()
            c, w = time.process_time(), time.perf_counter()
            for b in batches:
                fn(b)
            if cuda:
                torch.cuda.synchronize()
            if r:
                best[name] = (min(best[name][0], time.process_time() - c), min(best[name][1], time.perf_counter() - w))
    tokens = a.steps * a.batch * a.seq_len
    print(f"GPT d_model={a.d_model} n_layer={a.n_layer}: {model_bytes / 2**20:.1f} MiB of fp32 parameters, "
          f"{a.batch}x{a.seq_len} tokens per step, device {a.device}, {a.threads} thread(s)")
    print(f"{'runner':24s} {'tokens/s (wall)':>16s} {'x PyTorch':>10s} {'x PyTorch (CPU s)':>18s}")
    for name, (cpu, wall) in best.items():
        print(f"{name:24s} {tokens / wall:16.1f} {best['PyTorch'][1] / wall:10.2f} {best['PyTorch'][0] / cpu:18.2f}")
    m, o = wrapped["Elixir (1/4 budget)"]
    m.reset_stats()
    runners["Elixir (1/4 budget)"](batches[0])
    s = m.stats()
    print(f"search: profile {t_profile:.2f} s + optimal search {t_search:.2f} s "
          f"({len(m.plan.candidates)} candidate sizes)")
    print(f"1/4 budget: chunk {s['chunk_size']} elements, {s['n_blocks']} of {s['n_chunks']} chunks cached; bytes "
          f"moved per step predicted {m.plan.bytes_moved} measured {s['bytes_moved']} "
          f"({'equal' if m.plan.bytes_moved == s['bytes_moved'] else 'DIFFERENT'}); peak {s['peak_bytes']} <= "
          f"budget {s['budget_bytes']}: {s['peak_bytes'] <= s['budget_bytes']}")


if __name__ == "__main__":
    main()
