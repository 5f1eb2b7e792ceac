"""Benchmark of compound BN against nn.BatchNorm2d, measured in the same run (ratios).

1. Forward + backward time of one normalisation layer at the three ResNet-32 feature shapes
   (batch 128: 16×32×32, 32×16×16, 64×8×8), for CompoundBatchNorm2d with K = 2 and K = 4: the default
   (the C kernel of ``native.py`` where it applies), the torch code (``backend="torch"``, rows marked "t")
   and (``compiled=True``, rows marked "c") through torch.compile, as a ratio to nn.BatchNorm2d (goal of the
   issue: ≤ 2× at K = 2); also evaluation-mode forward (the same code for both). The layers are timed in
   turn within each repeat (best of the repeats), so that load from other jobs affects all alike. The
   compilation itself (first call per shape) is excluded (warm-up call).
2. Epoch time of the quick preset's model (ResNet-8, width 4) on its CIFAR-10-LT (ρ = 100, n_max 200):
   BN, CBN (soft path only) and CBN with dual-path learning (default, torch ("t") and compiled ("c")),
   as ratios to BN.

Times are process CPU seconds (robust to other jobs on a shared machine) and wall seconds.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_compound_bn.py [--threads 1] [--repeats 5]
[--no-compiled]`` (the compiled rows need a C++ compiler and add about a minute of compilation).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.compound_bn import CompoundBatchNorm2d
from reprozoo.compound_bn.dual_path import DualPathLoss
from reprozoo.models import resnet8


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        best_cpu, best_wall = min(best_cpu, time.process_time() - c), min(best_wall, time.perf_counter() - w)
    return best_cpu, best_wall


def _time_interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Best-of-``repeats`` (CPU, wall) seconds of each function, the functions run in turn within each
    repeat so that a burst of load from other jobs hits all of them alike (fairer ratios)."""
    for fn in fns.values():
        fn()  # warm-up
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            dc, dw = time.process_time() - c, time.perf_counter() - w
            best[name] = (min(best[name][0], dc), min(best[name][1], dw))
    return best


def layer_benchmark(repeats: int, batch: int, compiled: bool) -> None:
    print(f"\n1. one layer, batch {batch}: best of {repeats}, ms (CPU / wall), ratio to nn.BatchNorm2d (CPU)")
    print(f"{'shape':>12} {'layer':>10} {'train f+b':>16} {'ratio':>6} {'eval fwd':>14} {'ratio':>6}")
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        x = torch.randn(batch, c, hw, hw)
        layers = {"BN": nn.BatchNorm2d(c), "CBN K=2": CompoundBatchNorm2d(c, 2),
                  "CBN K=4": CompoundBatchNorm2d(c, 4),
                  "CBN K=2 t": CompoundBatchNorm2d(c, 2, backend="torch"),
                  "CBN K=4 t": CompoundBatchNorm2d(c, 4, backend="torch")}
        if compiled:
            layers.update({"CBN K=2 c": CompoundBatchNorm2d(c, 2, compiled=True),
                           "CBN K=4 c": CompoundBatchNorm2d(c, 4, compiled=True)})
        train, evals = {}, {}
        for name, layer in layers.items():
            xx = x.clone().requires_grad_()

            def train_step(layer=layer, xx=xx):
                layer.train()
                y = layer(xx)
                y.backward(torch.ones_like(y))

            @torch.no_grad()
            def eval_step(layer=layer, x=x):
                layer.eval()
                layer(x)

            train[name], evals[name] = train_step, eval_step
        tr_all, ev_all = _time_interleaved(train, repeats), _time_interleaved(evals, repeats)
        base = {"tr": tr_all["BN"][0], "ev": ev_all["BN"][0]}
        for name in layers:
            tr, ev = tr_all[name], ev_all[name]
            print(f"{c}x{hw}x{hw:>3} {name:>10} {1e3 * tr[0]:7.2f} / {1e3 * tr[1]:6.2f} {tr[0] / base['tr']:6.2f}"
                  f" {1e3 * ev[0]:6.2f} / {1e3 * ev[1]:5.2f} {ev[0] / base['ev']:6.2f}")


def epoch_benchmark(repeats: int, compiled: bool) -> None:
    from reprozoo.compound_bn.experiment import Config, load_longtail

    cfg = Config.from_preset("quick")
    data = load_longtail("CIFAR-10-LT", 100.0, cfg.n_max, cfg.data_seed)
    print(f"\n2. one training epoch of the quick model (ResNet-{cfg.depth}, width {cfg.width}, batch "
          f"{cfg.batch_size}, {len(data.y_train)} images): best of {repeats}, s")
    base = None
    names = ("BN", "CBN (soft only)", "CBN + dual path", "CBN + dual path, t")
    names += ("CBN + dual path, c",) if compiled else ()
    for name in names:
        norm = nn.BatchNorm2d if name == "BN" else functools.partial(
            CompoundBatchNorm2d, num_components=2, compiled=name.endswith(", c"),
            backend="torch" if name.endswith(", t") else "auto")
        torch.manual_seed(0)
        model = resnet8(10, width=cfg.width, norm_layer=norm)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        dual = DualPathLoss(data.class_counts, 2)

        def epoch(model=model, opt=opt, dual=dual, name=name):
            model.train()
            for i in range(0, len(data.y_train), cfg.batch_size):
                xb, yb = data.x_train[i:i + cfg.batch_size], data.y_train[i:i + cfg.batch_size]
                loss = dual(model, xb, yb).loss if "dual" in name else F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()

        cpu, wall = _time(epoch, repeats)
        base = base or cpu
        print(f"{name:>21}: CPU {cpu:6.2f} s  wall {wall:6.2f} s  ratio {cpu / base:5.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--skip-epoch", action="store_true", help="only the layer benchmark")
    p.add_argument("--no-compiled", action="store_true", help="skip the torch.compile rows")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s)")
    compiled = not a.no_compiled
    if compiled:
        from reprozoo.compound_bn.compiled import compiled_available

    layer_benchmark(a.repeats, a.batch, compiled)
    if not a.skip_epoch:
        epoch_benchmark(max(1, a.repeats // 2), compiled)
    if compiled and not compiled_available():
        print("\nNOTE: compilation failed, the rows marked 'c' ran the eager fallback")


if __name__ == "__main__":
    main()
