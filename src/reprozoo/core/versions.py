"""Change keys for caches of values derived from parameters (evaluation coefficients, masks).

A tensor's version counter (``t._version``) is bumped by every in-place op, which makes it a free,
sync-less cache key, except for one writer: the fused optimizers (``fused=True`` of SGD, Adam, AdamW;
checked on torch 2.13 CPU) update the parameters in one kernel without bumping their counters. A cache
keyed on versions alone would then serve values of the weights before the step. :func:`version_key`
adds the number of optimizer steps taken in this process (a global post-step hook of
``torch.optim``), so any step of any optimizer invalidates it.

Not seen: writes through ``.data`` (``p.data.mul_(2)``), which bypass the version counter (as they bypass
autograd's checks); change parameters in place under ``torch.no_grad()`` instead (``p.mul_(2)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["optimizer_steps", "version_key"]

_STEPS = [0]
_HOOK: list[Any] = []


def _count_step(optimizer, args, kwargs) -> None:
    _STEPS[0] += 1


def optimizer_steps() -> int:
    """Optimizer steps taken in this process since the first call (the hook is installed then)."""
    if not _HOOK:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _HOOK.append(register_optimizer_step_post_hook(_count_step))
    return _STEPS[0]


def version_key(tensors: Iterable[Any]) -> tuple:
    """A key that changes when any of ``tensors`` (None entries allowed) is changed in place (not through
    ``.data``), replaced by another storage, or stepped by any optimizer (fused ones included);
    O(len(tensors)), no host sync."""
    return (optimizer_steps(), tuple(None if t is None else (t.data_ptr(), t._version) for t in tensors))
