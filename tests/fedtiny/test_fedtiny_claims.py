"""The paper's claim at a small budget: FedTiny (candidate warm-up, adaptive-BN selection, progressive
pruning) reaches a higher accuracy than training a random ERK mask at the same density (the Random
baseline), on the same clients, data split, initial weights and rounds."""

import numpy as np
import pytest

pytest.importorskip("flwr")

from reprozoo.fedtiny.experiment import Config  # noqa: E402
from reprozoo.fedtiny.server import ServerJob  # noqa: E402
from reprozoo.fedtiny.simulation import run_federated  # noqa: E402

#: MNIST, 5 clients (Dirichlet 0.5), 1,000 training images, cnn16 at density 0.05, 8 rounds (2 of them the
#: candidates' warm-up), ΔT = 1 and T_end = 4 (the authors' ratio), 2,000 test images: about 14 CPU s per seed
BUDGET = dict(n_clients=5, n_train=1000, rounds=8, t_end=4, warmup_rounds=2, abns_samples=64, eval_every=8,
              n_test=2000, n_curve=200, device="cpu", engine="local")
SEEDS = (0, 1)


def test_fedtiny_beats_random_mask_at_the_same_density():
    """Measured (CPU, torch 1 thread, channels-last models, the default): FedTiny 41.9 / 45.7 %, Random 41.35 /
    30.1 % (seeds 0 / 1): margin +8.1 pp on the mean (+0.55 and +15.6 per seed); ABNS chose erk-magnitude in
    both (remeasured after the speed changes of the channels-last version: identical).  With
    ``channels_last=False`` (NCHW, float rounding only): 45.0 / 46.9 against 41.3 / 30.0, +10.3 pp.  Asserted:
    a mean margin of at least 5 pp and FedTiny ahead on every seed.  Checked to fail on the random mask: with
    FedTiny's pool replaced by the Random baseline's own mask (warm-up, ABNS and progressive pruning kept)
    FedTiny measured 45.4 / 32.05 %, a mean margin of +3.0 pp (NCHW: 45.8 / 31.9, +3.2 pp); with FedTiny
    run as the Random baseline the margin is 0."""
    config = Config.from_preset("quick", **BUDGET)
    jobs = [ServerJob(config, m, "MNIST", 0.05, s) for s in SEEDS for m in ("FedTiny", "Random")]
    outs, _ = run_federated(jobs, config.n_clients, engine="local")
    tiny = np.array([o["top1"] for o in outs[0::2]])
    rand = np.array([o["top1"] for o in outs[1::2]])
    margin = float(np.mean(tiny - rand))
    assert all(o["density"] == pytest.approx(0.05, abs=1e-3) for o in outs)
    assert margin >= 5.0, f"FedTiny {tiny} vs Random {rand}: mean margin {margin:+.1f} pp (measured +8.1)"
    assert np.all(tiny > rand), f"FedTiny {tiny} vs Random {rand} per seed"
