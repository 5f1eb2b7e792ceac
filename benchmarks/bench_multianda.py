"""Benchmark: seconds per image and peak memory of ANDA, MultiANDA and MI-FGSM, as ratios to MI-FGSM.

Each attack runs in its own spawned process on the same untrained zoo backbone and the same
batch, so that peak resident memory (``ru_maxrss``) is the attack's own; time is both wall and
process CPU (user + sys), the latter less sensitive to other load on a shared machine. With a
GPU the peak is ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_multianda.py [--batch 32] [--n-ens 9] [--steps 10] [--chains 3] [--arch vgg_tiny]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _child(name: str, args: dict, queue) -> None:
    import torch

    from reprozoo.multianda import ANDA, MultiANDA
    from reprozoo.multianda.baselines import make_baseline
    from reprozoo.multianda.zoo import ZOO, build_model

    torch.set_num_threads(args["threads"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    spec = next(s for s in ZOO.values() if s.arch == args["arch"])
    model = build_model(spec).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(args["batch"], 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args["batch"],), device=device)
    eps, steps = 16 / 255, args["steps"]
    if name == "MI-FGSM":
        atk = make_baseline("MI-FGSM", model, eps, steps)
    elif name == "MI-FGSM-K":  # MI-FGSM at ANDA's gradient budget (the same K translated copies)
        atk = make_baseline("MI-FGSM-K", model, eps, steps, n_ens=args["n_ens"])
    elif name == "ANDA":
        atk = ANDA(model, eps=eps, steps=steps, n_ens=args["n_ens"], seed=0)
    elif name == "ANDA (sample, D kept)":
        atk = ANDA(model, eps=eps, steps=steps, n_ens=args["n_ens"], seed=0, sample=True)
    else:
        atk = MultiANDA(model, eps=eps, steps=steps, n_ens=args["n_ens"], n_chains=args["chains"], seed=0)
    atk(x[:2], y[:2])  # warm-up (allocator, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    atk(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = max(r1.ru_maxrss - base_rss, 0) / 1024  # KiB -> MiB, growth during the attack
    queue.put((name, wall / args["batch"], cpu / args["batch"], peak_mb, device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-ens", type=int, default=9)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--chains", type=int, default=3)
    ap.add_argument("--arch", default="vgg_tiny", help="zoo backbone: resnet8, vgg_tiny, small_cnn, vit_tiny, ...")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    args = {"batch": a.batch, "n_ens": a.n_ens, "steps": a.steps, "chains": a.chains, "arch": a.arch,
            "threads": a.threads}
    ctx = mp.get_context("spawn")
    rows = []
    for name in ("MI-FGSM", "MI-FGSM-K", "ANDA", "ANDA (sample, D kept)", "MultiANDA"):
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(name, args, q))
        p.start()
        rows.append(q.get())
        p.join()
    base = rows[0]
    d_mb = a.batch * a.n_ens * a.steps * 3 * 32 * 32 * 4 / 2**20
    print(f"# ANDA vs MI-FGSM: batch {a.batch} of 3x32x32, arch {a.arch}, T={a.steps}, K={a.n_ens}, "
          f"M={a.chains}, device {base[4]}, {a.threads} thread(s)")
    print(f"# analytic size of D for the batch (B*K*T*d*4 bytes): {d_mb:.1f} MiB; gradient evaluations per image:"
          f" MI-FGSM {a.steps}, MI-FGSM-K and ANDA {a.n_ens * a.steps}, MultiANDA {a.chains * a.n_ens * a.steps}")
    print(f"{'attack':24s} {'s/img wall':>11s} {'s/img cpu':>10s} {'x MI wall':>9s} {'x MI cpu':>9s} "
          f"{'peak MiB':>9s} {'x MI mem':>9s}")
    for name, wall, cpu, mem, _ in rows:
        print(f"{name:24s} {wall:11.4f} {cpu:10.4f} {wall / base[1]:9.1f} {cpu / max(base[2], 1e-9):9.1f} "
              f"{mem:9.1f} {mem / max(base[3], 1e-3):9.1f}")


if __name__ == "__main__":
    main()
