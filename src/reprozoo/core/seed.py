"""Seeding: the same seed on the same machine gives the same numbers."""

from __future__ import annotations

import os
import random
import sys

import numpy as np

__all__ = ["seed_everything", "check_random_state"]


def seed_everything(seed: int, *, deterministic_torch: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and (if it is imported) PyTorch; return a NumPy ``Generator``.

    Torch is seeded only when already imported, so that calling this from torch-free
    methods does not import it. With ``deterministic_torch`` the CPU kernels are asked
    to be deterministic (``torch.use_deterministic_algorithms(True, warn_only=True)``).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed should be an int, got {type(seed).__name__}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- legacy global state used by some libraries
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if deterministic_torch:
            torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def check_random_state(random_state: None | int | np.random.Generator | np.random.RandomState):
    """Return a ``numpy.random.Generator`` for ``random_state`` (None, int, Generator or RandomState)."""
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state={random_state} should be >= 0")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        f"random_state should be None, an int or a numpy Generator, got {type(random_state).__name__}"
    )
