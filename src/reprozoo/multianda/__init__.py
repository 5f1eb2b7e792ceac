"""ANDA and MultiANDA transfer attacks (Fang et al., CVPR 2024, arXiv:2209.11964) as torchattacks attacks.

>>> from reprozoo.multianda import ANDA, MultiANDA   # doctest: +SKIP
>>> adv = ANDA(model, eps=16 / 255, steps=10, n_ens=25)(images, labels)   # doctest: +SKIP

``images`` are pixels in [0, 1] with the normalisation inside ``model`` (recommended). After
``set_normalization_used(mean, std)`` (torchattacks semantics) the attacks instead take already-normalised
images and return normalised ones; see :class:`ANDA` and the method card (README.md).
"""

from reprozoo.multianda.anda import ANDA, ANDAState, MultiANDA, OnlineGaussian, translation_grid, translation_thetas
from reprozoo.multianda.baselines import BASELINES, MIFGSMK, make_baseline

__all__ = ["ANDA", "ANDAState", "BASELINES", "MIFGSMK", "MultiANDA", "OnlineGaussian", "make_baseline",
           "translation_grid", "translation_thetas"]
