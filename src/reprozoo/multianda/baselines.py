"""The baselines of the transfer experiment, all from torchattacks, on the same ε, T and α as ANDA.

| name      | torchattacks class | settings beyond (eps, alpha, steps)                                   |
|-----------|--------------------|------------------------------------------------------------------------|
| I-FGSM    | ``BIM``            | none                                                                   |
| MI-FGSM   | ``MIFGSM``         | decay 1.0                                                              |
| DI-FGSM   | ``DIFGSM``         | library defaults: resize 0.9, p = 0.5, decay 0.0                      |
| TI-FGSM   | ``TIFGSM``         | library defaults (Gaussian, nsig 3, DI p = 0.5, decay 0.0) but kernel |
|           |                    | ``ti_kernel`` (15 px at 224/299 px scaled down to 32 px inputs)       |
| VMI-FGSM  | ``VMIFGSM``        | decay 1.0, N = 5, β = 3/2 (library and paper defaults)                |
| PGD       | ``PGD``            | random start                                                           |
"""

from __future__ import annotations

import torchattacks
from torch import nn

from reprozoo.core.checks import check_float, check_int

__all__ = ["BASELINES", "make_baseline"]

BASELINES = ("I-FGSM", "MI-FGSM", "DI-FGSM", "TI-FGSM", "VMI-FGSM", "PGD")


def make_baseline(name: str, model: nn.Module, eps: float, steps: int, alpha: float | None = None, *,
                  ti_kernel: int = 5, vmi_n: int = 5, vmi_beta: float = 1.5) -> torchattacks.attack.Attack:
    """The torchattacks attack ``name`` (one of :data:`BASELINES`) with L∞ budget ``eps``.

    ``alpha`` defaults to ``eps / steps`` (the same step as ANDA). Inputs and outputs follow
    torchattacks 3.5: pixels in [0, 1] with the normalisation inside ``model`` (recommended), or,
    after ``atk.set_normalization_used(mean, std)``, already-normalised images in and normalised
    adversarial images out. Raises ``TypeError`` if ``model`` is not a ``torch.nn.Module`` and
    ``ValueError`` for an unknown name or bad numbers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be a torch.nn.Module returning logits, got {type(model).__name__}")
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {list(BASELINES)}")
    eps = check_float(eps, "eps", low=0.0)
    steps = check_int(steps, "steps", low=1)
    alpha = eps / steps if alpha is None else check_float(alpha, "alpha", low=0.0)
    common = {"eps": eps, "alpha": alpha, "steps": steps}
    if name == "I-FGSM":
        return torchattacks.BIM(model, **common)
    if name == "MI-FGSM":
        return torchattacks.MIFGSM(model, decay=1.0, **common)
    if name == "DI-FGSM":
        return torchattacks.DIFGSM(model, **common)
    if name == "TI-FGSM":
        k = check_int(ti_kernel, "ti_kernel", low=1)
        if k % 2 == 0:
            raise ValueError(f"ti_kernel={k} should be odd")
        return torchattacks.TIFGSM(model, len_kernel=k, **common)
    if name == "VMI-FGSM":
        return torchattacks.VMIFGSM(model, decay=1.0, N=check_int(vmi_n, "vmi_n", low=1),
                                    beta=check_float(vmi_beta, "vmi_beta", low=0.0), **common)
    if name == "PGD":
        return torchattacks.PGD(model, random_start=True, **common)
    raise ValueError(f"unknown baseline {name!r}; choose one of {list(BASELINES)}")
