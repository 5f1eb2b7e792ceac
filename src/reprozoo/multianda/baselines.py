"""The baselines of the transfer experiment, on the same ε, T and α as ANDA.

The DI and TI baselines run with momentum (decay 1.0), as transfer-attack papers, ANDA's included,
report them (DI-MI-FGSM: Xie et al., CVPR 2019; TI-MI-FGSM: Dong et al., CVPR 2019). ``MI-FGSM-K``
is ours: MI-FGSM whose gradient at every step sums the gradients of the same K translated copies
ANDA uses, i.e. ANDA's gradient budget (K·T gradients per image) without the learned distribution,
so that a gain of ANDA over it is not only more gradients.

| name        | class                   | settings beyond (eps, alpha, steps)                                |
|-------------|-------------------------|--------------------------------------------------------------------|
| I-FGSM      | ``torchattacks.BIM``    | none                                                               |
| MI-FGSM     | ``torchattacks.MIFGSM`` | decay 1.0                                                          |
| DI-MI-FGSM  | ``torchattacks.DIFGSM`` | decay 1.0, resize 0.9, p = 0.5 (library defaults)                  |
| TI-MI-FGSM  | ``torchattacks.TIFGSM`` | decay 1.0, Gaussian kernel ``ti_kernel`` px, nsig 3, no DI (p = 0) |
| MI-FGSM-K   | :class:`MIFGSMK`        | decay 1.0, K = ``n_ens`` translations up to ``aug_max`` (as ANDA)  |
| VMI-FGSM    | ``torchattacks.VMIFGSM``| decay 1.0, N = 5, β = 3/2 (library and paper defaults)             |
| PGD         | ``torchattacks.PGD``    | random start                                                       |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from reprozoo.core.checks import check_float, check_int
from reprozoo.multianda.anda import _check_aug_max, _check_n_ens, _translate, translation_grid

__all__ = ["BASELINES", "MIFGSMK", "make_baseline"]

BASELINES = ("I-FGSM", "MI-FGSM", "DI-MI-FGSM", "TI-MI-FGSM", "MI-FGSM-K", "VMI-FGSM", "PGD")


class MIFGSMK(torchattacks.attack.Attack):
    r"""MI-FGSM on the summed gradient of K translated copies (ANDA's gradient budget, no distribution).

    At each step g_t = Σ_k ∇_x CE(f(translate_k(x_t)), y) over the √K×√K translation grid of
    :class:`~reprozoo.multianda.ANDA`; then the MI-FGSM update (Dong et al., CVPR 2018, Alg. 1):
    m ← decay·m + g_t/‖g_t‖₁, x ← Π_ε(clip_[0,1](x + α·sign(m))). Images (B, C, H, W) in [0, 1];
    cost T·K gradient evaluations per image, one forward/backward pass over B·K images per step.
    """

    def __init__(self, model, eps: float = 16 / 255, alpha: float | None = None, steps: int = 10,
                 n_ens: int = 25, aug_max: float = 0.3, decay: float = 1.0):
        super().__init__("MI-FGSM-K", model)
        self.eps = check_float(eps, "eps", low=0.0)
        self.steps = check_int(steps, "steps", low=1)
        self.alpha = self.eps / self.steps if alpha is None else check_float(alpha, "alpha", low=0.0)
        self.n_ens = _check_n_ens(n_ens)
        self.aug_max = _check_aug_max(aug_max)
        self.decay = check_float(decay, "decay", low=0.0)
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x0 = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        k = self.n_ens
        grid = translation_grid(k, self.aug_max, tuple(x0.shape[1:]), device=x0.device, dtype=x0.dtype)
        y_in = labels.repeat_interleave(k)
        momentum = torch.zeros_like(x0)
        adv = x0.clone()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            copies = _translate(adv.unsqueeze(1).expand(-1, k, *adv.shape[1:]), grid)
            cost = F.cross_entropy(self.get_logits(copies), y_in, reduction="sum")
            grad = torch.autograd.grad(cost, adv)[0]
            # MI-FGSM: accumulate the L1-normalised gradient (torchattacks MIFGSM normalises by the mean |g|)
            grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            momentum = self.decay * momentum + grad
            adv = adv.detach() + self.alpha * momentum.sign()
            adv = torch.minimum(torch.maximum(adv, x0 - self.eps), x0 + self.eps).clamp(0.0, 1.0).detach()
        return adv


def make_baseline(name: str, model: nn.Module, eps: float, steps: int, alpha: float | None = None, *,
                  ti_kernel: int = 5, vmi_n: int = 5, vmi_beta: float = 1.5, n_ens: int = 9,
                  aug_max: float = 0.3) -> torchattacks.attack.Attack:
    """The attack ``name`` (one of :data:`BASELINES`) with L∞ budget ``eps``.

    ``alpha`` defaults to ``eps / steps`` (the same step as ANDA); ``n_ens`` and ``aug_max`` are
    the translations of ``MI-FGSM-K`` (pass ANDA's). Inputs and outputs follow torchattacks 3.5:
    pixels in [0, 1] with the normalisation inside ``model`` (recommended), or, after
    ``atk.set_normalization_used(mean, std)``, already-normalised images in and normalised
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
    if name == "DI-MI-FGSM":
        return torchattacks.DIFGSM(model, decay=1.0, **common)
    if name == "TI-MI-FGSM":
        k = check_int(ti_kernel, "ti_kernel", low=1)
        if k % 2 == 0:
            raise ValueError(f"ti_kernel={k} should be odd")
        return torchattacks.TIFGSM(model, len_kernel=k, decay=1.0, diversity_prob=0.0, **common)
    if name == "MI-FGSM-K":
        return MIFGSMK(model, n_ens=n_ens, aug_max=aug_max, decay=1.0, **common)
    if name == "VMI-FGSM":
        return torchattacks.VMIFGSM(model, decay=1.0, N=check_int(vmi_n, "vmi_n", low=1),
                                    beta=check_float(vmi_beta, "vmi_beta", low=0.0), **common)
    return torchattacks.PGD(model, random_start=True, **common)
