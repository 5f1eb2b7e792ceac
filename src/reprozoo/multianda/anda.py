"""ANDA and MultiANDA: transfer attacks that learn an asymptotically normal distribution of gradients.

Fang, Wang, Huang, Jing, "Strong Transferable Adversarial Attacks via Ensembles of Asymptotically
Normal Distribution Learning", CVPR 2024, arXiv:2209.11964. Reference code: github.com/CLIAgroup/ANDA
(``utils.py`` class ``ANDA``, ``attack/anda.py``, ``attack/multianda.py``). The paper's PDF was not
read for this port; where it and the code may differ, this file follows the code and says so.

Algorithm (one chain, per input image x, K = ``n_ens`` translations, T = ``steps``):

1. grid of √K × √K translations (tx, ty) ∈ linspace(-aug_max, aug_max)², applied with zero-padded
   bilinear ``grid_sample`` in ``affine_grid`` coordinates (reference ``get_thetas``/``translation``);
2. at step t, g_k = ∇_{x_k} Σ_k CE(f(translate_k(x_k)), y) for K copies x_k = x_t (the gradient is
   taken w.r.t. each *untranslated* copy);
3. online moments over all n = K·t gradients seen so far (SWAG-style, reference ``collect_model``):
   μ ← (n·μ + Σ_k g_k) / (n + K); the rows g_k - μ_new are appended to the deviation matrix D;
4. x_{t+1} = Π_ε(clip_[0,1](x_t + α·sign(μ)));
5. output x_T, or (sampling) x_{T-1} + α·sign(μ + zᵀD/√(k-1)), z ~ N(0, I_k), k = rows of D.

MultiANDA runs M such chains whose K copies get fresh uniform noise U[-0.5/255, 0.5/255] at every
step and combines them (see :class:`MultiANDA`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

try:
    from torchattacks.attack import Attack
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    # torchattacks 3.5.1 declares torchvision and an old requests, which break the CPU torch and Flower
    raise ModuleNotFoundError(
        "reprozoo.multianda needs torchattacks 3.5.1, installed without its declared dependencies: "
        "pip install --no-deps torchattacks==3.5.1 (`make install` does this)", name=exc.name) from exc

from reprozoo.core.checks import check_choice, check_float, check_int

__all__ = ["ANDA", "ANDAState", "MultiANDA", "OnlineGaussian", "translation_grid", "translation_thetas"]


# ----------------------------------------------------------------------------------------------
# augmentations (reference utils.get_thetas / translation)
# ----------------------------------------------------------------------------------------------
#: Translations are in ``affine_grid`` units (1.0 = half the image side); at 2.0 a copy is shifted by a
#: whole side and is blank, so ``aug_max`` must be below this.
AUG_MAX_LIMIT = 2.0
#: Pixels this far outside [0, 1] are rounding (e.g. of a normalise / un-normalise round trip in float32,
#: about 3e-8) and are clamped; farther out, images are rejected.
RANGE_TOL = 1e-6


def _check_n_ens(n_ens) -> int:
    n_ens = check_int(n_ens, "n_ens", low=1)
    r = math.isqrt(n_ens)
    if r * r != n_ens:
        raise ValueError(f"n_ens={n_ens} should be a perfect square (the translations form a √K×√K "
                         f"grid); use {r * r} or {(r + 1) ** 2}")
    return n_ens


def _check_aug_max(aug_max) -> float:
    return check_float(aug_max, "aug_max", low=0.0, high=AUG_MAX_LIMIT, high_inclusive=False)


def translation_thetas(n_ens: int, aug_max: float) -> torch.Tensor:
    """Affine matrices of the √K × √K translation grid, shape (K, 2, 3), float32.

    Row-major over (tx, ty), both ``linspace(-aug_max, aug_max, √K)`` in normalised ``affine_grid``
    units (1.0 = half the image side). Raises ``ValueError`` unless ``n_ens`` is a perfect square
    >= 1 and 0 <= ``aug_max`` < 2 (``TypeError`` for non-numbers).
    """
    n_ens, aug_max = _check_n_ens(n_ens), _check_aug_max(aug_max)
    side = math.isqrt(n_ens)
    r = torch.linspace(-aug_max, aug_max, side)
    tx, ty = torch.meshgrid(r, r, indexing="ij")
    thetas = torch.zeros(n_ens, 2, 3)
    thetas[:, 0, 0] = 1.0
    thetas[:, 1, 1] = 1.0
    thetas[:, 0, 2] = tx.reshape(-1)
    thetas[:, 1, 2] = ty.reshape(-1)
    return thetas


def translation_grid(n_ens: int, aug_max: float, shape: tuple[int, int, int], device=None,
                     dtype=torch.float32) -> torch.Tensor:
    """Sampling grids of the K translations for images of ``shape`` (C, H, W): (K, H, W, 2).

    Raises as :func:`translation_thetas`, and ``ValueError`` unless ``shape`` is 3 positive ints.
    """
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 3:
        raise ValueError(f"shape should be (C, H, W), got {shape!r}")
    c, h, w = (check_int(v, f"shape[{i}]", low=1) for i, v in enumerate(shape))
    thetas = translation_thetas(n_ens, aug_max).to(device=device, dtype=dtype)
    return F.affine_grid(thetas, [n_ens, c, h, w], align_corners=False)


def _translate(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x (B, K, C, H, W), grid (K, H, W, 2) -> translated (B·K, C, H, W), zero padding."""
    b, k = x.shape[:2]
    g = grid.unsqueeze(0).expand(b, *grid.shape).reshape(b * k, *grid.shape[1:])
    return F.grid_sample(x.reshape(b * k, *x.shape[2:]), g, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


# ----------------------------------------------------------------------------------------------
# online Gaussian: running mean + low-rank square-root covariance with a rank cap
# ----------------------------------------------------------------------------------------------
class OnlineGaussian:
    """Per-row running mean and low-rank deviation matrix of streamed d-dim samples (SWAG-style).

    Parameters
    ----------
    n_rows : int
        Independent distributions tracked in parallel (images × chains), B.
    dim : int
        Dimension d of one sample (C·H·W).
    max_rank : int
        Rows of D kept (the most recent ones; a ring buffer). Memory: ``B · max_rank · d`` floats
        for D plus ``B · d`` for μ.
    keep_cov : bool
        When False only μ is tracked (D is not stored; :meth:`sample` is unavailable).

    Raises ``TypeError``/``ValueError`` naming the argument for non-int or non-positive sizes, and
    for an ``update`` whose samples are not shaped (n_rows, K, dim).

    Notes
    -----
    ``update(g)`` with g of shape (B, K, d): μ ← (n·μ + Σ_k g_k)/(n + K), then the K rows
    g_k − μ_new join D (reference ``utils.ANDA.collect_model``). With no cap D has n rows after n
    samples and rank(D) ≤ n. :meth:`sample` draws μ + zᵀD/√(k−1), z ~ N(0, I_k), whose covariance is
    DᵀD/(k−1) (reference ``utils.ANDA.sample`` with ``scale=1``). Order of D's rows is irrelevant
    to both. Cost per update O(B·K·d); per sample O(B·k·d).
    """

    def __init__(self, n_rows: int, dim: int, max_rank: int, *, keep_cov: bool = True,
                 device=None, dtype=torch.float32):
        n_rows = check_int(n_rows, "n_rows", low=1)
        dim = check_int(dim, "dim", low=1)
        max_rank = check_int(max_rank, "max_rank", low=1)
        if not isinstance(keep_cov, bool):
            raise TypeError(f"keep_cov should be a bool, got {type(keep_cov).__name__}")
        self.n_seen = 0
        self.max_rank = max_rank
        self.keep_cov = keep_cov
        self.mean = torch.zeros(n_rows, dim, device=device, dtype=dtype)
        self._buf = torch.zeros(n_rows, max_rank if keep_cov else 0, dim, device=device, dtype=dtype)
        self._ptr = 0  # next ring-buffer slot
        self.rank_rows = 0  # rows of D currently held (k)

    def update(self, g: torch.Tensor) -> None:
        """Fold in K new samples per row; ``g`` (B, K, d) float, same B and d as the constructor's."""
        if not isinstance(g, torch.Tensor) or g.ndim != 3 or g.shape[0] != self.mean.shape[0] \
                or g.shape[2] != self.mean.shape[1] or g.shape[1] < 1:
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(f"g should be a tensor of shape ({self.mean.shape[0]}, K >= 1, {self.mean.shape[1]}) "
                             f"(n_rows, samples, dim), got {got}")
        k = g.shape[1]
        n = self.n_seen
        # eq. of step 3: running mean over every sample seen so far (reference collect_model)
        self.mean = self.mean * (n / (n + k)) + g.sum(dim=1) / (n + k)
        self.n_seen = n + k
        if not self.keep_cov:
            return
        dev = g - self.mean.unsqueeze(1)
        r = self.max_rank
        if k >= r:  # only the last r deviations survive the cap
            self._buf.copy_(dev[:, k - r:])
            self._ptr = 0
        else:
            idx = (self._ptr + torch.arange(k, device=g.device)) % r
            self._buf[:, idx] = dev
            self._ptr = (self._ptr + k) % r
        self.rank_rows = min(self.rank_rows + k, r)

    @property
    def cov_factor(self) -> torch.Tensor:
        """D, shape (B, k, d): the stored deviation rows (k = ``rank_rows``)."""
        if not self.keep_cov:
            raise RuntimeError("the deviation matrix was not tracked (keep_cov=False)")
        return self._buf[:, : self.rank_rows] if self.rank_rows < self.max_rank else self._buf

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws per row of μ + zᵀD/√(k−1): shape (n, B, d). Needs k ≥ 2 stored rows.

        Raises ``ValueError`` for n < 1 or fewer than 2 stored rows, ``RuntimeError`` when D was
        not tracked (``keep_cov=False``).
        """
        n = check_int(n, "n", low=1)
        d_mat = self.cov_factor
        k = d_mat.shape[1]
        if k < 2:
            raise ValueError(f"sampling needs at least 2 deviation rows, have {k}; use steps·n_ens >= 2")
        z = torch.randn(n, d_mat.shape[0], k, generator=generator, device=d_mat.device, dtype=d_mat.dtype)
        return self.mean.unsqueeze(0) + torch.einsum("nbk,bkd->nbd", z, d_mat) / math.sqrt(k - 1)


def _shortest(t: torch.Tensor) -> str:
    """The shortest decimal that reads back as the 0-d tensor ``t`` in its own dtype (1.0000001, not 1)."""
    return str(t.detach().cpu().numpy())


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be a torch.nn.Module returning logits, got {type(model).__name__}")


@dataclass
class ANDAState:
    """What a run of the chains leaves behind (one row per image, or per chain × image).

    Attributes
    ----------
    x_last : Tensor (R, C, H, W)
        x_T, the last iterate.
    x_prev : Tensor (R, C, H, W)
        x_{T−1}, from which the final (sampled) step is taken.
    gaussian : OnlineGaussian
        μ (R, d) and D (R, k, d) over all K·T gradients.
    """

    x_last: torch.Tensor
    x_prev: torch.Tensor
    gaussian: OnlineGaussian


# ----------------------------------------------------------------------------------------------
# ANDA
# ----------------------------------------------------------------------------------------------
class ANDA(Attack):
    r"""ANDA: iterative FGSM along the mean of a Gaussian learned online from translated-copy gradients.

    Paper: Fang et al., CVPR 2024, arXiv:2209.11964 (reference code CLIAgroup/ANDA, ``attack/anda.py``).
    Distance measure: L∞.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (N, n_classes). Recommended: the model does its own input
        normalisation and takes pixels in [0, 1] (see *Normalisation* below). ``TypeError`` if it is
        not a ``torch.nn.Module``.
    eps : float
        L∞ budget in [0, 1] pixel units, >= 0 (default 16/255).
    alpha : float or None
        Step size; None means ``eps / steps`` (reference code).
    steps : int
        Iterations T >= 1 (default 10).
    n_ens : int
        K, number of translated copies; a perfect square (default 25 = 5×5 grid).
    aug_max : float
        Largest translation in ``affine_grid`` units, in [0, 2) (default 0.3, i.e. ±15 % of the side;
        2 would shift a copy by a whole side, leaving it blank).
    sample : bool
        If True, ``attack(x, y)`` returns one draw from the learned distribution (step 5b) instead
        of x_T.
    n_samples : int
        Default n of :meth:`sample` (default 1).
    max_rank : int or None
        Rows of the deviation matrix D kept (most recent); None keeps all K·T (reference). A cap
        below K·T is a deviation from the reference: the covariance then covers the last rows only.
    seed : int or None
        Seeds a private ``torch.Generator`` for the Gaussian draws at each call (bit-identical
        outputs per seed); None uses the global torch RNG.
    si_scales : int
        -CT option (SI): each translated copy is also fed at x/2^i, i < ``si_scales`` (reference m = 5);
        1 = off. Multiplies the cost by ``si_scales``.
    di_prob, di_scale : float
        -CT option (DI): with probability ``di_prob`` per step (reference 0.5; 0 = off) all copies are
        resized to a random side in [``di_scale``·H, H) and zero-padded back at a random offset.
    ti_kernel, ti_nsig : int, float
        -CT option (TI): μ (and each draw) is smoothed with a ``ti_kernel``-sided (odd) Gaussian kernel
        over [−nsig, nsig] before ``sign`` (reference 7 px at 299 px, nsig 3); 0 = off.

    Shape
    -----
    images (B, C, H, W) float; labels (B,) int64 class indices in [0, n_classes). Without declared
    normalisation (the default, recommended) images are pixels in [0, 1] and the output (B, C, H, W)
    is in [0, 1] with ‖output − images‖∞ ≤ eps. :meth:`sample` returns (n, B, C, H, W). Outputs have
    the dtype of ``images``; the attack itself runs in the model's floating dtype (images of another
    float dtype are cast to it, and the result is cast back and re-projected so that the bounds
    hold exactly in the input's dtype).

    Normalisation (torchattacks 3.5 semantics, inherited from ``torchattacks.Attack``)
    -----------------------------------------------------------------------------------
    *Recommended:* put the normalisation inside ``model`` (e.g. ``reprozoo.multianda.zoo.Normalized``)
    and pass pixels in [0, 1]; do not call ``set_normalization_used``.

    After ``atk.set_normalization_used(mean, std)`` the attack's inputs and outputs change meaning:
    ``images`` must be **already normalised**, ``(x − mean) / std`` of pixels x in [0, 1], and
    ``model`` must take normalised inputs (no normalisation inside it). The attack un-normalises them
    (``images · std + mean``), works and projects in pixel space (``eps`` stays in pixel units) and
    returns **normalised** adversarial images ``(x_adv − mean) / std``; un-normalised, these lie in
    [0, 1] within eps of x. :meth:`sample`, :meth:`distribution` and :meth:`finish` follow the same
    convention (an :class:`ANDAState` is always in pixel space). Passing [0, 1] pixels after
    ``set_normalization_used`` is a silent misuse that cannot always be detected: it raises
    ``ValueError`` only when ``images · std + mean`` leaves [0, 1]; for typical statistics (e.g.
    CIFAR mean ≈ 0.48, std ≈ 0.25) it stays in [mean, mean + std] ⊂ [0, 1], so the attack instead
    emits a ``UserWarning`` when every channel mean is > 0 and no input value is negative (a
    normalised natural image nearly always has pixels below the mean; an all-bright batch is a
    false alarm).

    Raises
    ------
    TypeError, ValueError
        Naming the argument: bad constructor values; images not a 4-D finite float tensor, outside
        [0, 1] by more than ``RANGE_TOL`` = 1e-6 (after un-normalisation, if declared; values within
        it are float rounding and are clamped), of the wrong channel count for the declared
        normalisation, or of a shape the model cannot take (its forward fails); labels not an
        integer (B,) tensor, or outside [0, n_classes) where n_classes is read from the model's
        logits at the first step (also for the targets of the targeted modes); a model whose output
        is not (N, n_classes); in :meth:`finish`, a state that does not match the images.

    Notes
    -----
    Vectorised over the batch and the K copies: each step runs one forward/backward pass on B·K
    images. Cost: T·K gradient evaluations per image. Memory of the Gaussian: μ is B·d floats and D
    is B·min(K·T, max_rank)·d floats (d = C·H·W, 4 bytes each in fp32), e.g. 25·10·3·299² ·4 B ≈ 268 MB
    per ImageNet image uncapped, 9·10·3·32²·4 B ≈ 1.1 MB per CIFAR image. D is only stored when it
    is needed (sampling); the plain attack keeps μ alone.
    Targeted mode (torchattacks' ``set_mode_targeted_*``) ascends −CE(target), i.e. descends the
    cross-entropy toward the target class.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> atk = ANDA(net, eps=8 / 255, steps=3, n_ens=4)
    >>> adv = atk(torch.rand(2, 3, 8, 8), torch.tensor([1, 2]))
    >>> tuple(adv.shape)
    (2, 3, 8, 8)
    """

    def __init__(self, model, eps: float = 16 / 255, alpha: float | None = None, steps: int = 10,
                 n_ens: int = 25, aug_max: float = 0.3, sample: bool = False, n_samples: int = 1,
                 max_rank: int | None = None, seed: int | None = None, si_scales: int = 1, di_prob: float = 0.0,
                 di_scale: float = 0.9, ti_kernel: int = 0, ti_nsig: float = 3.0):
        _check_model(model)
        super().__init__("ANDA", model)
        self.eps = check_float(eps, "eps", low=0.0)
        self.steps = check_int(steps, "steps", low=1)
        self.alpha = self.eps / self.steps if alpha is None else check_float(alpha, "alpha", low=0.0)
        self.n_ens = _check_n_ens(n_ens)
        self.aug_max = _check_aug_max(aug_max)
        if not isinstance(sample, bool):
            raise TypeError(f"sample should be a bool, got {type(sample).__name__}")
        self.sample_mode = sample
        self.n_samples = check_int(n_samples, "n_samples", low=1)
        self.max_rank = None if max_rank is None else check_int(max_rank, "max_rank", low=2)
        self.seed = None if seed is None else check_int(seed, "seed", low=0)
        # -CT options (reference attack/anda_ct.py); all off by default
        self.si_scales = check_int(si_scales, "si_scales", low=1)
        self.di_prob = check_float(di_prob, "di_prob", low=0.0, high=1.0)
        self.di_scale = check_float(di_scale, "di_scale", low=0.0, high=1.0, low_inclusive=False)
        self.ti_kernel = check_int(ti_kernel, "ti_kernel", low=0)
        if self.ti_kernel and self.ti_kernel % 2 == 0:
            raise ValueError(f"ti_kernel={ti_kernel} should be odd (or 0 for no translation-invariant smoothing)")
        self.ti_nsig = check_float(ti_nsig, "ti_nsig", low=0.0, low_inclusive=False)
        self.supported_mode = ["default", "targeted"]

    # -- public API ------------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        """``Attack.__call__`` (eval mode, declared normalisation handled) after checking that ``images``
        can be un-normalised, so that a bad batch fails with a message naming ``images``."""
        if self.normalization_used is not None:
            self._check_normalised_batch(images)
        return super().__call__(images, labels, *args, **kwargs)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x_T, or one sampled adversarial example when ``sample=True``: (B, C, H, W).

        Called by ``attack(images, labels)`` with pixels in [0, 1] (already un-normalised when
        normalisation was declared); use the call, not this method.
        """
        x, labels = self._check_inputs(images, labels)
        gen = self._generator()
        state = self._run(x, labels, keep_cov=self.sample_mode, generator=gen)
        if self.sample_mode:
            return self._restore_dtype(images, self._finish(x, state, n=1, generator=gen)[0])
        return self._restore_dtype(images, self._finish(x, state, n=None, generator=gen))

    def sample(self, images: torch.Tensor, labels: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """n adversarial examples per input drawn from the learned distribution: (n, B, C, H, W).

        Runs the T steps once, then each draw is Π(x_{T−1} + α·sign(μ + zᵀD/√(k−1))) (step 5b).
        ``images`` and the output follow the convention of ``attack(images, labels)``: pixels in
        [0, 1], or normalised ones after ``set_normalization_used`` (see the class docstring).
        """
        n = self.n_samples if n is None else check_int(n, "n", low=1)
        with self._raw_inputs() as (to_raw, from_raw):
            raw = to_raw(images)
            x, labels = self._check_inputs(raw, labels)
            gen = self._generator()
            state = self._run(x, labels, keep_cov=True, generator=gen)
            out = self._restore_dtype(raw, self._finish(x, state, n=n, generator=gen))
            return from_raw(out.flatten(0, 1)).view_as(out)

    def distribution(self, images: torch.Tensor, labels: torch.Tensor, keep_cov: bool = True) -> ANDAState:
        """Run the chain(s) and return the learned state (μ, D, x_{T−1}, x_T) without a final draw.

        ``images`` as for ``attack`` (normalised after ``set_normalization_used``). The state is in
        [0, 1] pixel space, in the model's dtype. Rows are chain-major (row c·B + i is chain c,
        image i). ``keep_cov=False`` stores μ only (then :meth:`finish` cannot draw samples).
        """
        if not isinstance(keep_cov, bool):
            raise TypeError(f"keep_cov should be a bool, got {type(keep_cov).__name__}")
        with self._raw_inputs() as (to_raw, _):
            x, labels = self._check_inputs(to_raw(images), labels)
            return self._run(x, labels, keep_cov=keep_cov, generator=self._generator())

    def finish(self, images: torch.Tensor, state: ANDAState, n: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Final step from a state returned by :meth:`distribution` for the same ``images``:
        x_T (n None, shape (B, C, H, W)) or n draws of step 5b, shape (n, B, C, H, W).

        ``images`` and the output follow the convention of ``attack(images, labels)`` (pixels in
        [0, 1], or normalised ones after ``set_normalization_used``). Raises ``TypeError`` for a
        ``state`` that is not an :class:`ANDAState` or a ``generator`` that is not a
        ``torch.Generator``; ``ValueError`` when the state's batch size or image shape differ from
        ``images``' (for MultiANDA: rows ≠ n_chains·B), when its iterates lie farther than ``eps``
        from ``images`` (a state of other images), or when n draws are asked of a state built
        with ``keep_cov=False``.
        """
        return self._public_finish(images, state, n, generator)

    # -- validation ------------------------------------------------------------------------------
    def _public_finish(self, images, state, n, generator, **finish_kw) -> torch.Tensor:
        if n is not None:
            n = check_int(n, "n", low=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator should be a torch.Generator or None, got {type(generator).__name__}")
        if not isinstance(state, ANDAState):
            raise TypeError(f"state should be the ANDAState returned by distribution(), got {type(state).__name__}")
        with self._raw_inputs() as (to_raw, from_raw):
            raw = to_raw(images)
            x = self._check_images(raw).to(device=state.x_last.device, dtype=state.x_last.dtype)
            self._check_state(x, state, draws=n is not None)
            out = self._restore_dtype(raw, self._finish(x, state, n=n, generator=generator, **finish_kw))
            return from_raw(out.flatten(0, out.ndim - 4)).view_as(out)

    def _check_state(self, x: torch.Tensor, state: ANDAState, *, draws: bool) -> None:
        m, b = self._n_chains(), x.shape[0]
        rows = state.x_last.shape[0]
        if (state.x_last.shape != (m * b, *x.shape[1:]) or state.x_prev.shape != state.x_last.shape
                or state.gaussian.mean.shape[0] != rows):
            chains = f"{m} chains × " if m > 1 else ""
            raise ValueError(f"state does not match images: images has batch B={b} of shape {tuple(x.shape[1:])}, "
                             f"so the state should hold {chains}B = {m * b} rows of that shape, but it holds "
                             f"{tuple(state.x_last.shape)}; pass the images the state was built from with "
                             "distribution()")
        gap = float((state.x_prev - x.repeat(m, 1, 1, 1)).abs().max())
        if gap > self.eps + 1e-6:
            raise ValueError(f"state does not match images: its iterates lie up to {gap:.4g} from images, more "
                             f"than eps={self.eps:.4g}; pass the images the state was built from with distribution()")
        if draws and not state.gaussian.keep_cov:
            raise ValueError("state was built with keep_cov=False, so it holds no covariance to draw n samples "
                             "from; call distribution(images, labels, keep_cov=True) or finish with n=None")

    def _check_normalised_batch(self, images) -> None:
        """What un-normalising needs (torchattacks would fail with a raw broadcasting error)."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images should be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images should be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images should be a float tensor (normalised, since set_normalization_used was "
                            f"called), got dtype {images.dtype}")
        c = self.normalization_used["mean"].shape[1]
        if images.shape[1] != c:
            raise ValueError(f"images should have C={c} channels to match set_normalization_used(mean, std), "
                             f"got shape {tuple(images.shape)}")

    def _model_dtype(self) -> torch.dtype | None:
        """Floating dtype of the model's first floating parameter (or buffer); None if it has none."""
        for t in itertools.chain(self.model.parameters(), self.model.buffers()):
            if t.is_floating_point():
                return t.dtype
        return None

    def _check_images(self, images) -> torch.Tensor:
        """Validated pixel-space images, detached, on the attack's device, in the model's dtype."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images should be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images should be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError("images is empty (B = 0); pass at least one image")
        if not images.is_floating_point():
            raise TypeError(f"images should be a float tensor in [0, 1], got dtype {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError("images contains NaN or infinite values")
        declared = self.normalization_used is not None
        t_lo, t_hi = images.min(), images.max()
        lo, hi = float(t_lo), float(t_hi)
        if lo < -RANGE_TOL or hi > 1.0 + RANGE_TOL:
            if declared:
                raise ValueError(
                    "set_normalization_used(mean, std) was called, so images should be normalised images "
                    "(x - mean) / std of pixels x in [0, 1]; un-normalised (images * std + mean) they lie in "
                    f"[{_shortest(t_lo)}, {_shortest(t_hi)}], outside [0, 1] (tolerance {RANGE_TOL:g}). Pass "
                    "normalised images (outputs come back normalised), "
                    "or put the normalisation inside the model, skip set_normalization_used and pass [0, 1] "
                    "images (recommended)")
            raise ValueError(
                f"images should be pixels in [0, 1] (tolerance {RANGE_TOL:g}), got values in "
                f"[{_shortest(t_lo)}, {_shortest(t_hi)}]. Put the input "
                "normalisation inside the model and pass [0, 1] images (recommended); only if the model itself "
                "takes normalised inputs, pass normalised images AND call set_normalization_used(mean, std), "
                "after which outputs come back normalised too")
        if declared:
            mean = self.normalization_used["mean"].to(device=images.device, dtype=images.dtype)
            if bool((mean > 0).all()) and bool((images >= mean).all()):
                warnings.warn(
                    "set_normalization_used(mean, std) was called but no input value is negative (every pixel "
                    "is at or above the channel mean): were [0, 1] pixels passed instead of normalised images "
                    "(x - mean) / std? With declared normalisation the attack takes and returns normalised "
                    "images", UserWarning, stacklevel=4)
        dtype = self._model_dtype() or images.dtype
        images = images.detach()
        if lo < 0.0 or hi > 1.0:  # rounding of a normalise / un-normalise round trip: clamp onto [0, 1]
            images = images.clamp(0.0, 1.0)
        return images.to(device=self.device, dtype=dtype)

    def _check_inputs(self, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._check_images(images)
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels should be a torch.Tensor of shape (B,), got {type(labels).__name__}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels should be an integer tensor (int64 class indices), got dtype {labels.dtype}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels should have shape ({images.shape[0]},) to match images, "
                             f"got {tuple(labels.shape)}")
        if labels.min() < 0:
            raise ValueError(f"labels should be class indices >= 0, got min {int(labels.min())}")
        return images, labels.detach().to(self.device).long()

    def _first_logits(self, inputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The model's logits for the first step's inputs; a model that cannot take images of this
        shape (channels, size) raises ``ValueError`` naming ``images`` instead of its raw RuntimeError."""
        try:
            return self.get_logits(inputs)
        except RuntimeError as exc:
            if isinstance(exc, torch.OutOfMemoryError) or "memory" in str(exc).lower():
                raise
            conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
            expect = (f" (its first convolution takes {conv.in_channels} channels)"
                      if conv is not None and conv.in_channels != images.shape[1] else "")
            raise ValueError(f"images of shape {tuple(images.shape)} (B, C, H, W) do not fit the model{expect}: "
                             f"check the channel count and image size the model was built for "
                             f"(the model raised: {exc})") from exc

    @staticmethod
    def _check_logits(logits: torch.Tensor, n_inputs: int) -> int:
        """Number of classes of the model's output (N, n_classes), checked once per run."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n_inputs:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"model should return logits of shape (N, n_classes) = ({n_inputs}, n_classes) for "
                             f"N = {n_inputs} inputs, got {got}")
        return logits.shape[1]

    @staticmethod
    def _check_class_range(y: torch.Tensor, n_classes: int, name: str) -> None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{name} should be class indices in [0, {n_classes - 1}] (the model returns "
                             f"{n_classes} logits), got values in [{lo}, {hi}]")

    def _restore_dtype(self, reference: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out`` (…, B, C, H, W) in the dtype of the pixel-space input ``reference`` (B, C, H, W),
        re-projected onto its ε-ball ∩ [0, 1] so that the bounds hold exactly after the cast."""
        if out.dtype == reference.dtype:
            return out
        ref = reference.detach().to(out.device)
        ref = ref.view(*([1] * (out.ndim - ref.ndim)), *ref.shape)
        return self._project(ref, out.to(reference.dtype))

    def _generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        gen = torch.Generator(device=self.device if self.device is not None else "cpu")
        gen.manual_seed(self.seed)
        return gen

    @contextlib.contextmanager
    def _raw_inputs(self) -> Iterator[tuple]:
        """Eval mode and [0, 1] pixel space for the duration (what ``Attack.__call__`` does for forward)."""
        given_training = self.model.training
        self._change_model_mode(given_training)
        declared = self._normalization_applied is True
        if declared:
            self._set_normalization_applied(False)
        try:
            if declared:
                def to_raw(t):
                    self._check_normalised_batch(t)
                    return self.inverse_normalize(t)
                yield to_raw, self.normalize
            else:
                yield (lambda t: t), (lambda t: t)
        finally:
            if declared:
                self._set_normalization_applied(True)
            self._recover_model_mode(given_training)

    # -- the algorithm ---------------------------------------------------------------------------
    def _n_chains(self) -> int:
        return 1

    def _copy_noise(self, x_copies: torch.Tensor, generator) -> torch.Tensor:
        """Per-copy input perturbation; none for ANDA (MultiANDA overrides it)."""
        return x_copies

    def _project(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Π_ε(clip_[0,1](v)) around x, with ‖result − x‖∞ ≤ eps holding exactly in the tensor's dtype."""
        eps = torch.tensor(self.eps, dtype=x.dtype, device=x.device)
        out = torch.minimum(torch.maximum(v.clamp(0.0, 1.0), x - eps), x + eps)
        # (x + eps) - x can exceed eps by one ulp in floating point: step such entries toward x
        bad = (out - x).abs() > eps
        while bool(bad.any()):
            out = torch.where(bad, torch.nextafter(out, x), out)
            bad = (out - x).abs() > eps
        return out

    def _target(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.targeted:
            return labels
        y = self.get_target_label(images, labels)
        if not isinstance(y, torch.Tensor) or y.shape != labels.shape or y.is_floating_point():
            got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"target labels of the {self.attack_mode} mode should be an integer tensor of shape "
                             f"({labels.shape[0]},), got {got}")
        return y.to(self.device).long()

    def _run(self, images: torch.Tensor, labels: torch.Tensor, *, keep_cov: bool, generator) -> ANDAState:
        """T steps of M chains (M = 1 for ANDA) on (B, C, H, W) validated inputs; rows are chain-major."""
        m, k = self._n_chains(), self.n_ens
        b, shape = images.shape[0], tuple(images.shape[1:])
        d = math.prod(shape)
        sign = -1.0 if self.targeted else 1.0  # targeted: ascend −CE(target), i.e. descend toward it
        x0 = images.repeat(m, 1, 1, 1)  # (M·B, C, H, W), chain-major
        y_in = None  # labels of the copies, set at the first step once the class count is known
        grid = translation_grid(k, self.aug_max, shape, device=images.device, dtype=images.dtype)
        rank = k * self.steps if self.max_rank is None else min(self.max_rank, k * self.steps)
        gauss = OnlineGaussian(m * b, d, rank, keep_cov=keep_cov, device=images.device, dtype=images.dtype)
        xt, x_prev = x0.clone(), x0.clone()
        for _ in range(self.steps):
            # step 2: K copies per image (with per-copy noise for MultiANDA), gradient w.r.t. each copy
            copies = self._copy_noise(xt.unsqueeze(1).repeat(1, k, 1, 1, 1), generator).detach()
            copies.requires_grad_(True)
            inputs, reps = self._ct_inputs(_translate(copies, grid), generator)
            if y_in is None:  # first step: images against the model's input, labels against its class count
                logits = self._first_logits(inputs, images)
                n_classes = self._check_logits(logits, inputs.shape[0])
                self._check_class_range(labels, n_classes, "labels")
                y = self._target(images, labels)
                if self.targeted:
                    self._check_class_range(y, n_classes, f"target labels of the {self.attack_mode} mode")
                y_in = y.repeat(m).repeat_interleave(k).repeat(reps)  # (reps·M·B·K,), matches inputs
            else:
                logits = self.get_logits(inputs)
            cost = sign * F.cross_entropy(logits, y_in, reduction="sum")
            grads = torch.autograd.grad(cost, copies)[0]
            # step 3: online mean and deviation rows over all gradients so far
            gauss.update(grads.reshape(m * b, k, d))
            # step 4: ascend along sign(μ), project onto the ε-ball ∩ [0, 1]
            x_prev = xt
            xt = self._project(x0, xt + self.alpha * self._smooth(gauss.mean.view_as(xt)).sign()).detach()
        return ANDAState(x_last=xt, x_prev=x_prev, gaussian=gauss)

    def _finish(self, images: torch.Tensor, state: ANDAState, *, n: int | None, generator) -> torch.Tensor:
        """x_T (n None) or n draws (n, B, C, H, W) of step 5b."""
        if n is None:
            return state.x_last
        delta = self._smooth(state.gaussian.sample(n, generator).view(n, *images.shape))
        return self._project(images.unsqueeze(0), state.x_prev.unsqueeze(0) + self.alpha * delta.sign())

    # -- -CT transforms (reference attack/anda_ct.py) ----------------------------------------------
    def _ct_inputs(self, x: torch.Tensor, generator) -> tuple[torch.Tensor, int]:
        """SI then DI on the translated copies x (N, C, H, W) -> (inputs (reps·N, C, H, W), reps)."""
        reps = 1
        if self.si_scales > 1:  # reference scale_transform: concatenate x / 2^i along the batch
            x = torch.cat([x / (2 ** i) for i in range(self.si_scales)], dim=0)
            reps = self.si_scales
        if self.di_prob > 0:
            u = torch.rand((), generator=generator, device=x.device)
            if float(u) < self.di_prob:
                x = self._diversity(x, generator)
        return x, reps

    def _diversity(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Resize the whole batch to a random side in [di_scale·H, H) and zero-pad back to H×W."""
        h, w = x.shape[-2:]
        low = max(1, int(round(self.di_scale * h)))
        if low >= h:
            return x
        side = int(torch.randint(low, h, (), generator=generator, device=x.device))
        top = int(torch.randint(0, h - side + 1, (), generator=generator, device=x.device))
        left = int(torch.randint(0, w - side + 1, (), generator=generator, device=x.device))
        small = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        return F.pad(small, (left, w - side - left, top, h - side - top))

    def _smooth(self, t: torch.Tensor) -> torch.Tensor:
        """TI: depthwise Gaussian smoothing of (..., C, H, W); identity when ``ti_kernel`` is 0."""
        if not self.ti_kernel:
            return t
        k, c = self.ti_kernel, t.shape[-3]
        z = torch.linspace(-self.ti_nsig, self.ti_nsig, k, dtype=t.dtype, device=t.device)
        g = torch.exp(-0.5 * z ** 2)
        kern = torch.outer(g, g)
        kern = (kern / kern.sum()).expand(c, 1, k, k)
        flat = t.reshape(-1, *t.shape[-3:])
        return F.conv2d(flat, kern, padding=k // 2, groups=c).view_as(t)



# ----------------------------------------------------------------------------------------------
# MultiANDA
# ----------------------------------------------------------------------------------------------
class MultiANDA(ANDA):
    r"""MultiANDA: M independent ANDA chains combined into one attack (a Gaussian mixture).

    Paper: Fang et al., CVPR 2024, arXiv:2209.11964 (reference code ``attack/multianda.py``, which
    runs one process per chain under torch.distributed; here the chains run in one process,
    vectorised as an extra batch dimension). Distance measure: L∞.

    Parameters
    ----------
    model, eps, alpha, steps, n_ens, aug_max, sample, n_samples, max_rank, seed
        As :class:`ANDA` (``sample`` chooses option (b) of the reference: combine Gaussian draws).
        Inputs, outputs and ``set_normalization_used`` as :class:`ANDA`: pixels in [0, 1] with the
        normalisation inside the model (recommended), or, after ``set_normalization_used(mean, std)``,
        already-normalised images in and normalised adversarial images out (torchattacks semantics).
    **ct_options
        ``si_scales``, ``di_prob``, ``di_scale``, ``ti_kernel``, ``ti_nsig`` of :class:`ANDA` (MultiANDA-CT;
        the reference uses a 15-px TI kernel there).
    n_chains : int
        M >= 1 chains (reference scripts: ``--nproc 5``).
    noise : float
        Half-width of the uniform noise added to each of the K copies, fresh at every step and
        for every chain (reference: 0.5/255). It is the only difference between the chains.
    combine : {"average", "mixture"}
        ``"average"`` (default, the reference code): average x_{T−1} over chains, average μ (or
        one Gaussian draw per chain when sampling) over chains, take one α·sign step from there.
        ``"mixture"`` (the paper's description as a mixture of Gaussians): for each input pick one
        chain uniformly at random and take its own final step x_{T−1}^{(c)} + α·sign(μ_c) (or a draw
        from chain c's Gaussian when sampling).

    Shape
    -----
    As :class:`ANDA`.

    Raises
    ------
    TypeError, ValueError
        As :class:`ANDA`, plus bad ``n_chains``, ``noise`` or ``combine``; :meth:`finish` needs a
        state of n_chains·B rows.

    Notes
    -----
    Cost: M·K·T gradient evaluations per image (one pass over M·B·K images per step).
    Memory: μ is M·B·d floats, D is M·B·min(K·T, max_rank)·d floats when sampling.
    With M = 1 and ``noise = 0`` it equals :class:`ANDA` exactly.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> atk = MultiANDA(net, n_chains=2, eps=8 / 255, steps=3, n_ens=4, seed=0)
    >>> tuple(atk.sample(torch.rand(2, 3, 8, 8), torch.tensor([1, 2]), n=5).shape)
    (5, 2, 3, 8, 8)
    """

    COMBINES = ("average", "mixture")

    def __init__(self, model, eps: float = 16 / 255, alpha: float | None = None, steps: int = 10,
                 n_ens: int = 25, aug_max: float = 0.3, n_chains: int = 5, noise: float = 0.5 / 255,
                 combine: str = "average", sample: bool = False, n_samples: int = 1,
                 max_rank: int | None = None, seed: int | None = None, **ct_options):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, n_ens=n_ens, aug_max=aug_max, sample=sample,
                         n_samples=n_samples, max_rank=max_rank, seed=seed, **ct_options)
        self.attack = "MultiANDA"
        self.n_chains = check_int(n_chains, "n_chains", low=1)
        self.noise = check_float(noise, "noise", low=0.0)
        if not isinstance(combine, str):
            raise TypeError(f"combine should be a str, got {type(combine).__name__}")
        self.combine = check_choice(combine, "combine", self.COMBINES)

    def _n_chains(self) -> int:
        return self.n_chains

    def _copy_noise(self, x_copies: torch.Tensor, generator) -> torch.Tensor:
        # reference multianda.py: batch_noise = U[-0.5/255, 0.5/255] per copy, fresh at every step
        if self.noise == 0.0:
            return x_copies
        u = torch.rand(x_copies.shape, generator=generator, device=x_copies.device, dtype=x_copies.dtype)
        return x_copies + (2.0 * u - 1.0) * self.noise

    def _finish(self, images: torch.Tensor, state: ANDAState, *, n: int | None, generator,
                combine: str | None = None) -> torch.Tensor:
        combine = self.combine if combine is None else check_choice(combine, "combine", self.COMBINES)
        m, b = self.n_chains, images.shape[0]
        shape = images.shape
        x_prev = state.x_prev.view(m, *shape)
        mean = state.gaussian.mean.view(m, *shape)
        if combine == "average":
            start = x_prev.mean(dim=0)
            if n is None:  # option (a): averaged mean
                return self._project(images, start + self.alpha * self._smooth(mean.mean(dim=0)).sign())
            # option (b): average of one draw per chain, n times
            delta = self._smooth(state.gaussian.sample(n, generator).view(n, m, *shape).mean(dim=1))
            return self._project(images.unsqueeze(0), start.unsqueeze(0) + self.alpha * delta.sign())
        # mixture: one chain per input (per draw) chosen uniformly at random
        n_draw = 1 if n is None else n
        pick = torch.randint(m, (n_draw, b), generator=generator, device=images.device)
        rows = torch.arange(b, device=images.device)
        start = x_prev[pick, rows]  # (n, B, C, H, W)
        if n is None:
            delta = mean[pick, rows]
        else:
            delta = state.gaussian.sample(n, generator).view(n, m, *shape)
            delta = delta[torch.arange(n_draw, device=images.device)[:, None], pick, rows]
        out = self._project(images.unsqueeze(0), start + self.alpha * self._smooth(delta).sign())
        return out[0] if n is None else out

    def finish(self, images: torch.Tensor, state: ANDAState, n: int | None = None,
               generator: torch.Generator | None = None, combine: str | None = None) -> torch.Tensor:
        """Final step from chains already run (:meth:`distribution`), combined with ``combine``
        (default: the attack's own). Returns (B, C, H, W), or (n, B, C, H, W) if n.

        ``images``, the output and the errors as :meth:`ANDA.finish` (pixels in [0, 1], or normalised
        images after ``set_normalization_used``; the state must hold n_chains·B rows).
        """
        if combine is not None:
            if not isinstance(combine, str):
                raise TypeError(f"combine should be a str, got {type(combine).__name__}")
            check_choice(combine, "combine", self.COMBINES)
        return self._public_finish(images, state, n, generator, combine=combine)
