"""``device`` of the torch methods: an explicit ``device="cpu"`` is honoured and recorded; on a machine with CUDA
every torch method's smoke preset runs on ``cuda`` (marker ``gpu``, skipped without one)."""

from __future__ import annotations

import math

import pytest
import torch

import reprozoo
from reprozoo.core import registry

# the smallest budgets that still run every stage (method and baselines) of each method
TINY = {
    "ugt": {"epochs": 3, "hidden": 8},
    "compound_bn": {"epochs": 1, "n_max": 100},
    "multianda": {"zoo": ("CNN",), "surrogates": ("CNN",), "attacks": ("I-FGSM", "ANDA"), "n_images": 2,
                  "attack_batch": 2, "train_limit": 100, "epoch_scale": 0.05, "steps": 2, "use_cache": False},
    "rsd4": {"methods": ("RSD4", "Uniform"), "total_timesteps": 100, "learning_starts": 50, "episode_length": 25,
             "calib_iters": 4, "n_eval_episodes": 1},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_explicit_cpu_device_is_used_and_recorded(name, tmp_path):
    result = reprozoo.run(name, preset="smoke", out=tmp_path / "run", seeds=[0], overrides=TINY[name],
                          device="cpu", quiet=True)
    assert result.environment["device"] == "cpu"
    assert result.config["device"] == "cpu"
    spec = registry.get(name)
    values = [r.value for r in result.records if r.role == "method" and r.metric == spec.primary_metric]
    assert values and all(math.isfinite(v) for v in values)


def _torch_methods() -> list[str]:
    out = []
    for name in registry.names():
        try:
            spec = registry.get(name)
        except Exception:  # a method whose extra is not installed here
            continue
        if spec.uses_torch and "smoke" in spec.presets:
            out.append(name)
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", _torch_methods())
def test_smoke_preset_runs_on_cuda(name, tmp_path):
    result = reprozoo.run(name, preset="smoke", out=tmp_path / "run", device="cuda", quiet=True)
    assert result.environment["device"].startswith("cuda:")
    assert result.config["device"].startswith("cuda")
    spec = registry.get(name)
    values = [r.value for r in result.records if r.role == "method" and r.metric == spec.primary_metric]
    assert values and all(math.isfinite(v) for v in values)
