"""Compound batch normalization: a K-component Gaussian mixture per channel (Cheng et al., ACM MM 2022).

Cheng, Fang, Zhang, Li, Huang, "Compound Batch Normalization for Long-tailed Image Classification",
ACM Multimedia 2022, arXiv:2212.01007. No official code exists and the full text was not available: the
layer is a reconstruction from the paper's abstract (Mixture Normalization, Kalayeh & Shah, arXiv:1806.02892,
is the closest public formulation), numbered below as steps 1-9. Every detail the abstract leaves open is a
constructor option; the defaults are listed in the method card (``README.md``).

For channel c, with samples x_i (i runs over N·H·W) and mixture (π_k, μ_k, σ²_k), k = 1..K:

* E-step (step 1): r_ik = π_k N(x_i | μ_k, σ²_k) / Σ_j π_j N(x_i | μ_j, σ²_j), computed in log space
  from the *running* mixture.
* M-step on the batch (step 2): n_k = Σ_i r_ik, π̂_k = n_k / M, μ̂_k = Σ_i r_ik x_i / n_k,
  σ̂²_k = Σ_i r_ik (x_i − μ̂_k)² / n_k.
* Moving-average EM (step 3): θ_k ← (1 − m) θ_k + m θ̂_k for θ ∈ {π, μ, σ²} (σ̂²_k is stored
  unbiased, × n_k / (n_k − 1), which is BN's M / (M − 1) when K = 1).
* Normalisation (step 4): y_i = Σ_k r_ik (x_i − μ_k) / √(σ²_k + ε), with the batch (μ̂, σ̂²) in training
  (gradients flow through them, as in BN) and the running (π, μ, σ²) in evaluation.
* Affine (step 5): one (γ, β) per channel (default) or per component, mixed by r.
* Collapse guard (step 6, ours): a component whose batch weight falls below ``min_weight`` is re-initialised,
  and a channel whose components have (nearly) merged, |μ_j − μ_k| < ``collapse_tol``·σ (σ the channel's SD
  under the mixture), is re-seeded at μ_k = m + σ Φ⁻¹((k + ½)/K), σ²_k = σ²/K², π_k = 1/K.
* Dual-path learning (step 7, the paper's): a hard auxiliary path normalises each sample with the component
  of its class-frequency group (``group_ids``); see :mod:`reprozoo.compound_bn.dual_path`. Its batch
  statistics go to their own running buffers (``aux_stats="separate"``), never into the mixture's.
* Plug-in long-tail losses (step 8): :mod:`reprozoo.compound_bn.losses`.
* With K = 1, r ≡ 1 and the layer is exactly :class:`torch.nn.BatchNorm2d` (step 9).
"""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.compound_bn import native
from reprozoo.compound_bn.compiled import compiled_mixture_eval, compiled_soft_compound_bn
from reprozoo.compound_bn.functional import _SCRATCH, empty_floor, mixture_coefficients, soft_compound_bn
from reprozoo.compound_bn.losses import on_host
from reprozoo.core.checks import check_choice, check_float, check_int
from reprozoo.core.versions import version_key

__all__ = [
    "CompoundBatchNorm1d",
    "CompoundBatchNorm2d",
    "compound_batch_norm",
    "compound_layers",
    "convert_bn_to_cbn",
    "convert_sync_batchnorm",
    "group_assignment",
    "mixture_responsibilities",
]

logger = logging.getLogger(__name__)

_HALF = (torch.float16, torch.bfloat16)
#: where the hard auxiliary path writes its batch statistics (see :class:`CompoundBatchNorm2d`)
AUX_STATS = ("separate", "none", "shared")


def mixture_responsibilities(x: torch.Tensor, pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                             eps: float = 1e-5) -> torch.Tensor:
    """Posterior r_k(x) of each mixture component, computed in log space (step 1).

    Parameters
    ----------
    x : Tensor, shape (N, C, L)
        Activations, channel on dim 1 (L = H·W, or 1 for 1-D inputs). Half types are cast to float32.
    pi, mean, var : Tensor, shape (K, C)
        Mixture weights (rows sum to one over K), means and variances of each channel.
    eps : float
        Added to the variances (as in the normalisation).

    Returns
    -------
    Tensor, shape (K, N, C, L), float32 or wider; sums to one over dim 0 and is finite for any finite x
    (log-sum-exp), even for |x| ~ 1e4. Cost O(K·N·C·L).
    """
    if x.dtype in _HALF:
        x = x.float()
    dtype = torch.promote_types(x.dtype, mean.dtype)
    x = x.to(dtype)
    var = var.to(dtype) + eps
    # log π_k − ½ log σ²_k − ½ (x − μ_k)² / σ²_k   (the −½ log 2π is common to all k and cancels)
    const = (torch.log(pi.to(dtype).clamp_min(torch.finfo(dtype).tiny)) - 0.5 * torch.log(var))[:, None, :, None]
    z = (x.unsqueeze(0) - mean.to(dtype)[:, None, :, None]) * torch.rsqrt(var)[:, None, :, None]
    return torch.softmax(const - 0.5 * z * z, dim=0)


def compound_batch_norm(x: torch.Tensor, pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                        eps: float = 1e-5, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                        detach_responsibilities: bool = False):
    """Naive reference of the soft training step (steps 1, 2, 4, 5), differentiated by autograd.

    Parameters
    ----------
    x : Tensor (N, C, L); pi, mean, var : Tensor (K, C), the running mixture of the E-step
    weight, bias : Tensor (C,) or (K, C), optional
        Shared or per-component affine (per-component: mixed by r).

    Returns ``(out, nk, mu_hat, var_hat)``: out (N, C, L); soft counts, batch means and biased batch
    variances (K, C). Memory O(K·N·C·L); the layer uses the fused :func:`soft_compound_bn` instead when
    the affine is shared, and this function for ``per_component_affine``.
    """
    r = mixture_responsibilities(x, pi, mean, var, eps).to(x.dtype)
    if detach_responsibilities:
        r = r.detach()
    nk = r.sum(dim=(1, 3))
    safe = nk.clamp_min(empty_floor(x.dtype))  # an absent component: its terms 0 in the gradient, not 0·inf
    mu_hat = torch.einsum("kncl,ncl->kc", r, x) / safe
    d = x.unsqueeze(0) - mu_hat[:, None, :, None]
    var_hat = (r * d * d).sum(dim=(1, 3)) / safe
    xhat = d * torch.rsqrt(var_hat + eps)[:, None, :, None]
    if weight is not None and weight.dim() == 2:
        out = (r * (xhat * weight[:, None, :, None] + bias[:, None, :, None])).sum(0)
    else:
        out = (r * xhat).sum(0)
        if weight is not None:
            out = out * weight[None, :, None] + bias[None, :, None]
    return out, nk.detach(), mu_hat.detach(), var_hat.detach()


class _CompoundBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Shared implementation of :class:`CompoundBatchNorm1d` / :class:`CompoundBatchNorm2d`.

    A subclass of ``nn.modules.batchnorm._BatchNorm`` so that BN-aware tools (BN freezing, no-weight-decay
    rules, ``isinstance`` checks, ``reset_running_stats``) treat it as a BN layer; its buffers are (K, C),
    so ``nn.SyncBatchNorm.convert_sync_batchnorm`` must not be used on it: use
    :func:`convert_sync_batchnorm`, which converts the plain BN layers and leaves the compound ones."""

    _valid_ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, num_components: int | None = None, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 detach_responsibilities: bool = False, per_component_affine: bool = False,
                 min_weight: float = 1e-3, collapse_tol: float = 0.05, check_finite: bool = True,
                 device=None, dtype=None, *, n_components: int | None = None, aux_affine: bool = False,
                 aux_stats: str = "separate", compiled: bool = False, backend: str = "auto"):
        nn.Module.__init__(self)  # _BatchNorm's own __init__ would register (C,) buffers
        # ``n_components`` is an alias of ``num_components`` (the experiment config's name); default K = 2
        if n_components is not None and num_components is not None and n_components != num_components:
            raise TypeError(f"num_components={num_components!r} and n_components={n_components!r} disagree; "
                            "n_components is an alias of num_components: give only one")
        if num_components is None:
            num_components = 2 if n_components is None else n_components
        check_int(num_features, "num_features", low=1)
        check_int(num_components, "num_components", low=1)
        check_float(eps, "eps", low=0.0, low_inclusive=False)
        if momentum is not None:  # None: cumulative average
            check_float(momentum, "momentum", low=0.0, high=1.0)
        check_float(min_weight, "min_weight", low=0.0, high=1.0 / num_components, high_inclusive=False)  # < 1/K
        check_float(collapse_tol, "collapse_tol", low=0.0)
        check_choice(aux_stats, "aux_stats", AUX_STATS)
        check_choice(backend, "backend", native.BACKENDS)
        if aux_affine and not affine:
            raise ValueError("aux_affine=True needs affine=True (it adds a second affine for the auxiliary path)")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.num_components = num_components
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.detach_responsibilities = detach_responsibilities
        self.per_component_affine = per_component_affine
        self.min_weight = float(min_weight)
        self.collapse_tol = float(collapse_tol)
        self.aux_stats = aux_stats
        self.check_finite = check_finite
        self.aux_affine = bool(aux_affine)
        self.compiled = bool(compiled)
        self.backend = backend
        self._eval_cache: tuple | None = None  # (key, coefficients) of the evaluation, see _eval_coefficients
        #: group ids (N,) for the hard, label-driven auxiliary path; set by :func:`group_assignment`.
        self.group_ids: torch.Tensor | None = None
        k, c = num_components, num_features
        if affine:
            shape = (k, c) if per_component_affine else (c,)
            self.weight = nn.Parameter(torch.empty(shape, **factory))
            self.bias = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if aux_affine:  # a separate (γ, β) for the hard auxiliary path (option; default: shared)
            self.weight_aux = nn.Parameter(torch.empty(shape, **factory))
            self.bias_aux = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("weight_aux", None)
            self.register_parameter("bias_aux", None)
        if track_running_stats:
            self.register_buffer("running_pi", torch.empty(k, c, **factory))
            self.register_buffer("running_mean", torch.empty(k, c, **factory))
            self.register_buffer("running_var", torch.empty(k, c, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long,
                                                                     device=device))
        else:
            aux_stats = "none"
            self.register_buffer("running_pi", None)
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if aux_stats == "separate":  # the auxiliary path's own per-group statistics (step 7)
            self.register_buffer("running_mean_aux", torch.empty(k, c, **factory))
            self.register_buffer("running_var_aux", torch.empty(k, c, **factory))
        else:
            self.register_buffer("running_mean_aux", None)
            self.register_buffer("running_var_aux", None)
        self.aux_stats = aux_stats
        # standard-normal quantiles Φ⁻¹((k + ½)/K) of the re-seeding (step 6)
        z = [statistics.NormalDist().inv_cdf((i + 0.5) / k) for i in range(k)]
        self.register_buffer("_seed_z", torch.tensor(z, device=device,
                                                     dtype=dtype or torch.get_default_dtype())[:, None],
                             persistent=False)
        #: components re-initialised by the collapse guard, per channel (not saved in the state dict).
        self.register_buffer("num_reinit", torch.zeros(k, c, dtype=torch.long, device=device),
                             persistent=False)
        self.reset_parameters()

    # -- initialisation -----------------------------------------------------------------
    def reset_running_stats(self) -> None:
        """π = 1/K, μ = 0, σ² = 1 (as BN's buffers; the auxiliary buffers too); with K > 1 and
        ``collapse_tol`` > 0 the first training batch then re-seeds the identical components."""
        if self.track_running_stats:
            self.running_pi.fill_(1.0 / self.num_components)
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()
        if self.running_mean_aux is not None:
            self.running_mean_aux.zero_()
            self.running_var_aux.fill_(1.0)
        self.num_reinit.zero_()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0 and fresh running statistics."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
        if self.aux_affine:
            nn.init.ones_(self.weight_aux)
            nn.init.zeros_(self.bias_aux)

    def extra_repr(self) -> str:
        s = f"{self.num_features}, K={self.num_components}, eps={self.eps}, momentum={self.momentum}"
        if not self.affine:
            s += ", affine=False"
        if not self.track_running_stats:
            s += ", track_running_stats=False"
        if self.detach_responsibilities:
            s += ", detach_responsibilities=True"
        if self.per_component_affine:
            s += ", per_component_affine=True"
        if self.aux_affine:
            s += ", aux_affine=True"
        if self.aux_stats != "separate" and self.track_running_stats:
            s += f", aux_stats={self.aux_stats!r}"
        if self.compiled:
            s += ", compiled=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _check_input_dim(self, x: torch.Tensor) -> None:  # _BatchNorm's hook
        self._check_input(x)

    # -- input handling -----------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input should be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in self._valid_ranks:
            raise ValueError(f"{type(self).__name__}: input should be {' or '.join(map(str, self._valid_ranks))}-D "
                             f"(N, C{', L' if 3 in self._valid_ranks else ', H, W'}), got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[1]} channels (dim 1) but "
                             f"num_features={self.num_features}")
        if not x.is_floating_point():
            raise TypeError(f"input should be floating point, got {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError("input is empty (batch size 0)")

    def _check_groups(self, g: torch.Tensor, n: int) -> torch.Tensor:
        if not isinstance(g, torch.Tensor):
            g = torch.as_tensor(g)
        if g.dtype.is_floating_point or g.dtype == torch.bool or g.dtype.is_complex:
            raise TypeError(f"group_ids should be an integer tensor, got {g.dtype}")
        if g.shape != (n,):
            raise ValueError(f"group_ids should have shape (N,) = ({n},), got {tuple(g.shape)}")
        lo, hi = (int(g.min()), int(g.max())) if on_host(g) else (0, 0)  # values checked on the CPU only
        if lo < 0 or hi >= self.num_components:
            raise ValueError(f"group_ids should lie in [0, num_components) = [0, {self.num_components}), "
                             f"got values in [{lo}, {hi}]")
        return g

    # -- helpers ------------------------------------------------------------------------
    def _batch_init(self, x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A data-driven start of the mixture: μ_k at the (k + ½)/K quantiles of each channel, σ²_k the
        channel variance over K², π_k = 1/K (port addition; breaks the symmetry of identical components).
        Uses at most 4096 values per channel. Shapes (K, C)."""
        k = self.num_components
        xc = x3.detach().transpose(0, 1).reshape(self.num_features, -1)
        if xc.shape[1] > 4096:
            xc = xc[:, :: math.ceil(xc.shape[1] / 4096)]
        q = torch.arange(k, device=xc.device, dtype=xc.dtype).add_(0.5).div_(k)
        mean = torch.quantile(xc, q, dim=1)  # (K, C)
        var = xc.var(dim=1, unbiased=False).div(k * k).clamp_min(self.eps).expand(k, -1).clone()
        pi = torch.full_like(mean, 1.0 / k)
        return pi, mean, var

    def _momentum(self) -> float:
        if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm
            return 1.0 / float(self.num_batches_tracked)
        return float(self.momentum)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, group_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x``; with ``group_ids`` (or :attr:`group_ids` set) use the hard auxiliary path.

        Parameters
        ----------
        x : Tensor, (N, C, H, W) for the 2-D layer, (N, C) or (N, C, L) for the 1-D layer
        group_ids : LongTensor (N,), values in [0, K), optional
            Component of each sample (its class-frequency group, step 7): sample b is normalised only
            with component g_b; in training the batch statistics of each group present update the
            auxiliary running statistics (``aux_stats``), never the mixture's (π, μ, σ²).

        Returns a tensor of the shape and dtype of ``x`` (half inputs are computed in float32).

        Raises
        ------
        TypeError, ValueError
            Wrong rank, channel count, dtype, empty batch, bad ``group_ids``; non-finite input when
            ``check_finite`` (value checks run on the CPU only: on an accelerator they would wait for the
            device at every call).
        """
        self._check_input(x)
        if group_ids is None:
            group_ids = self.group_ids
        in_dtype = x.dtype
        x3 = x.reshape(x.shape[0], self.num_features, -1)
        if x3.dtype in _HALF:
            x3 = x3.float()
        if group_ids is not None:
            group_ids = self._check_groups(group_ids, x.shape[0]).to(x3.device)
        use_batch = self.training or not self.track_running_stats
        if use_batch and x3.shape[0] * x3.shape[2] < 2:
            raise ValueError(f"expected more than 1 value per channel when training, got input shape "
                             f"{tuple(x.shape)}")
        y = self._forward3(x3, group_ids, use_batch)  # (evaluation checks its output's finiteness)
        return y.reshape(x.shape).to(in_dtype)

    def _value_checks(self, t: torch.Tensor) -> bool:
        """Whether to check values of ``t`` now: ``check_finite`` and ``t`` on the CPU (no device sync)."""
        return self.check_finite and on_host(t)

    def _check_output(self, y: torch.Tensor, total: float | None = None) -> torch.Tensor:
        """Evaluation: normalised outputs are O(1), so a non-finite sum means a non-finite input (one
        reduction, no copy; ``total``: the sum, when the kernel computed it already). Returns ``y``."""
        if self._value_checks(y):
            finite = math.isfinite(total) if total is not None else bool(torch.isfinite(y.detach().sum()))
            if not finite:
                raise ValueError("input contains NaN or infinite values")
        return y

    def _aux_buffers(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The running (μ, σ²) (K, C) the auxiliary path reads in evaluation: its own with
        ``aux_stats="separate"``, else the mixture's."""
        if self.running_mean_aux is not None:
            return self.running_mean_aux, self.running_var_aux
        return self.running_mean, self.running_var

    def _forward3(self, x: torch.Tensor, group_ids: torch.Tensor | None, use_batch: bool) -> torch.Tensor:
        update = self.training and self.track_running_stats
        if update and group_ids is None:  # the auxiliary path is not a step of the mixture's EM
            self.num_batches_tracked.add_(1)
        if self.num_components == 1:
            return self._forward_bn(x, use_batch, update, aux=group_ids is not None)
        if not use_batch:
            return self._forward_eval(x, group_ids)
        if group_ids is not None:
            return self._forward_hard(x, group_ids, update)
        return self._forward_soft(x, update)

    def _flat_affine(self, aux: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.affine:
            return None, None
        w, b = (self.weight_aux, self.bias_aux) if aux and self.aux_affine else (self.weight, self.bias)
        if self.per_component_affine:
            return w[0], b[0]
        return w, b

    def _component_affine(self, like: torch.Tensor, aux: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ_k, β_k) as (K, C) tensors (a shared affine is broadcast to every component). ``aux``: the
        hard auxiliary path, which uses (``weight_aux``, ``bias_aux``) when ``aux_affine``."""
        k, c = self.num_components, self.num_features
        if not self.affine:
            return like.new_ones(k, c), like.new_zeros(k, c)
        w, b = (self.weight_aux, self.bias_aux) if aux and self.aux_affine else (self.weight, self.bias)
        return w.to(like.dtype).expand(k, c), b.to(like.dtype).expand(k, c)

    def _forward_bn(self, x: torch.Tensor, use_batch: bool, update: bool, aux: bool = False) -> torch.Tensor:
        """K = 1: exactly BatchNorm (step 9), through the same kernel as ``nn.BatchNorm``."""
        if use_batch and self._value_checks(x) and not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or infinite values")
        w, b = self._flat_affine(aux)
        rm = rv = None
        if self.track_running_stats:
            mean, var = self._aux_buffers() if aux else (self.running_mean, self.running_var)
            rm, rv = mean[0], var[0]
            if aux and use_batch and self.aux_stats == "none":  # batch statistics, no running update
                rm = rv = None
        m = self._momentum() if update else 0.0
        y = F.batch_norm(x, rm, rv, w, b, use_batch, m, self.eps)
        return y if use_batch else self._check_output(y)

    def _soft_r(self, x: torch.Tensor, pi, mean, var) -> torch.Tensor:
        """Responsibilities of the running mixture: r_1 (N, C, L) when K = 2, else r (K, N, C, L)."""
        shift = (pi * mean).sum(0) / pi.sum(0).clamp_min(torch.finfo(pi.dtype).tiny)
        a, b, c = mixture_coefficients(pi, mean, var, self.eps, shift)
        xs = x - shift[None, :, None]
        if self.num_components == 2:
            da, db, dc = (t[1] - t[0] for t in (a, b, c))
            return torch.sigmoid(torch.addcmul(dc[None, :, None], torch.addcmul(db[None, :, None],
                                                                                da[None, :, None], xs), xs))
        xs = xs.unsqueeze(0)
        return torch.softmax(torch.addcmul(c[:, None, :, None], torch.addcmul(b[:, None, :, None],
                                                                              a[:, None, :, None], xs), xs), 0)

    @staticmethod
    def _mix(r: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Σ_k r_k coef_k for r from :meth:`_soft_r` and coef (K, C) -> (N, C, L)."""
        if r.dim() == 3:
            return torch.addcmul(coef[0][None, :, None], r, (coef[1] - coef[0])[None, :, None])
        return torch.einsum("kncl,kc->ncl", r, coef)

    def _forward_eval(self, x: torch.Tensor, group_ids: torch.Tensor | None) -> torch.Tensor:
        """Evaluation with the running mixture: y = Σ_k r_k(x) (P_k x − Q_k) with P_k = γ_k / √(σ²_k + ε),
        Q_k = P_k μ_k − β_k (steps 4, 5); with ``group_ids`` the hard path with the auxiliary statistics."""
        if group_ids is not None:  # hard path: component g_b for sample b, with the auxiliary statistics
            gam, bet = self._component_affine(x, aux=True)
            mu_a, var_a = (t.to(x.dtype) for t in self._aux_buffers())
            sc = gam * torch.rsqrt(var_a + self.eps)
            return self._check_output(x * sc[group_ids][:, :, None] - (sc * mu_a - bet)[group_ids][:, :, None])
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if not needs_grad:
            return self._eval_fused(x)
        pi, mu, var = (t.to(x.dtype) for t in (self.running_pi, self.running_mean, self.running_var))
        gam, bet = self._component_affine(x)
        sc = gam * torch.rsqrt(var + self.eps)
        pc, qc = sc, sc * mu - bet  # (K, C)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_responsibilities):
            r = self._soft_r(x, pi, mu, var)
        return self._check_output(x * self._mix(r, pc) - self._mix(r, qc))

    @torch.no_grad()
    def _eval_coefficients(self, like: torch.Tensor) -> torch.Tensor:
        """The per-channel coefficients of the evaluation, from the running mixture and the affine:
        ℓ_k(x) = a_k x² + b_k x + c_k (log π_k N(x | μ_k, σ²_k + ε) up to a constant) and y = Σ_k r_k
        (P_k x − Q_k). K = 2: (7, C) = (Δa, Δb, Δc, P_0, Q_0, ΔP, ΔQ), Δ = component 1 − component 0;
        K > 2: (5, K, C) = (a, b, c, P, Q). Cached while the buffers and parameters are unchanged (keyed
        by their storage, version counters and the optimizer steps taken, see
        :func:`~reprozoo.core.versions.version_key`; no host sync); O(K·C)."""
        params = (self.running_pi, self.running_mean, self.running_var, self.weight, self.bias)
        key = (like.dtype, like.device, self.eps, version_key(params))
        cache = getattr(self, "_eval_cache", None)  # (absent from modules pickled before it existed)
        if cache is not None and cache[0] == key:
            return cache[1]
        pi, mu, var = (t.to(like.dtype) for t in params[:3])
        gam, bet = self._component_affine(like)
        pc = gam * torch.rsqrt(var + self.eps)
        qc = pc * mu - bet
        a, b, c = mixture_coefficients(pi, mu, var, self.eps, torch.zeros_like(mu[0]))
        if self.num_components == 2:
            coef = torch.stack([t[1] - t[0] for t in (a, b, c)] + [pc[0], qc[0], pc[1] - pc[0], qc[1] - qc[0]])
        else:
            coef = torch.stack((a, b, c, pc, qc))
        self._eval_cache = (key, coef)
        return coef

    @torch.no_grad()
    def _eval_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation without autograd (same result as the autograd path), no per-component loop.

        K = 2: r_1 = sigmoid(Δℓ(x)), the log-odds Δℓ = Δa x² + Δb x + Δc evaluated by Horner's rule
        in place, and y = (P_0 x − Q_0) + r_1 (ΔP x − ΔQ): nine elementwise passes (one a sigmoid), two
        in reused scratch buffers, the output the only fresh tensor. K > 2: the log-densities stacked over
        K (scratch), softmax over K in place, y = Σ_k r_k (P_k x − Q_k). ``compiled=True``: the same
        formulas in one loop generated by ``torch.compile``. The C kernel (``backend``, float32 on the
        CPU, K ≤ 8): the same formulas in one loop over x, which also returns Σ y for the finiteness
        check. Cost O(K·N·C·L).
        """
        if self.compiled:  # one generated loop (see compiled.py)
            pi, mu, var = (t.to(x.dtype) for t in (self.running_pi, self.running_mean, self.running_var))
            gam, bet = self._component_affine(x)
            pc = gam * torch.rsqrt(var + self.eps)
            y = compiled_mixture_eval(x, pi, mu, var, self.eps, pc, pc * mu - bet)
            if y is not None:
                return self._check_output(y)
        coef = self._eval_coefficients(x)
        if self.num_components <= native.MAX_K and native.usable(self.backend, x):  # one loop (native.py)
            return self._check_output(*native.eval_mixture(x, coef))
        if self.num_components == 2:
            # (in-place per-channel terms: addcmul with a broadcast `input` takes a slow path on CPU)
            da, db, dc, p0, q0, dp, dq = (t[None, :, None] for t in coef)
            r = torch.mul(x, da, out=_SCRATCH.get(x, 0)).add_(db).mul_(x).add_(dc).sigmoid_()
            diff = torch.mul(x, dp, out=_SCRATCH.get(x, 1)).sub_(dq)
            return self._check_output(torch.mul(x, p0).sub_(q0).addcmul_(diff, r))
        a, b, c, pc, qc = (t[:, None, :, None] for t in coef)
        xk = x.unsqueeze(0)
        kshape = (self.num_components, *x.shape)
        r = torch.mul(xk, a, out=_SCRATCH.get(x, 2, kshape)).add_(b).mul_(xk).add_(c)
        one = _SCRATCH.get(xk, 0)  # (1, N, C, L)
        r.sub_(torch.amax(r, dim=0, keepdim=True, out=one)).exp_()
        r.div_(torch.sum(r, dim=0, keepdim=True, out=one))
        t = torch.mul(xk, pc, out=_SCRATCH.get(r, 3)).sub_(qc)
        return self._check_output(torch.sum(r.mul_(t), 0))

    def _forward_hard(self, x: torch.Tensor, group_ids: torch.Tensor, update: bool) -> torch.Tensor:
        """Auxiliary path (step 7): per-group batch statistics; sample b uses component g_b only. In
        training they update the auxiliary running statistics (``aux_stats``)."""
        k, length = self.num_components, x.shape[2]
        m = x.detach().mean(dim=(0, 2))
        xs = x - m[None, :, None]
        onehot = F.one_hot(group_ids, k).to(x.dtype).t()  # (K, N)
        nk = (onehot.sum(1) * length)[:, None].expand(k, self.num_features)
        safe = nk.clamp_min(1.0)
        d = onehot @ xs.sum(2) / safe
        v = (onehot @ (xs * xs).sum(2) / safe - d * d).clamp_min(0.0)
        self._check_stats(d, v)
        gam, bet = self._component_affine(x, aux=True)
        sc = gam * torch.rsqrt(v + self.eps)
        pc, qc = sc[group_ids][:, :, None], (sc * d - bet)[group_ids][:, :, None]
        if update and self.aux_stats != "none":
            mean_buf, var_buf = self._aux_buffers()
            with torch.no_grad():
                self._update_hard(mean_buf, var_buf, nk.detach(), d.detach() + m, v.detach())
        return xs * pc - qc

    def _forward_soft(self, x: torch.Tensor, update: bool) -> torch.Tensor:
        """Main path (steps 1-5): E-step from the running mixture, batch M-step, soft normalisation."""
        pi, mu, var = self._estep_params(x)
        if self.per_component_affine:
            w, b = (self.weight, self.bias) if self.affine else (None, None)
            out, nk, mu_hat, var_hat = compound_batch_norm(x, pi, mu, var, self.eps, w, b,
                                                           self.detach_responsibilities)
        else:
            # the shared affine is folded into the fused function (same y = γ·ŷ + β, fewer passes)
            args = (x, pi.to(x.dtype), mu.to(x.dtype), var.to(x.dtype), self.eps, self.detach_responsibilities)
            if self.compiled:
                out, nk, mu_hat, var_hat = compiled_soft_compound_bn(*args, weight=self.weight, bias=self.bias)
            else:
                out, nk, mu_hat, var_hat = soft_compound_bn(*args, weight=self.weight, bias=self.bias,
                                                            backend=self.backend)
        self._check_stats(mu_hat, var_hat)
        if update:
            with torch.no_grad():
                self._update_running(nk, mu_hat, var_hat, x.shape[0] * x.shape[2])
        return out

    def _estep_params(self, x: torch.Tensor):
        """The mixture the E-step uses: the running one (a quantile seeding of the batch without running
        statistics). Identical components (fresh, or copied from a BN) are separated by the collapse guard
        after the first training batch, without a host sync."""
        if not self.track_running_stats:
            return self._batch_init(x)
        return self.running_pi, self.running_mean, self.running_var

    def _check_stats(self, mu_hat: torch.Tensor, var_hat: torch.Tensor) -> None:
        if self._value_checks(mu_hat) and not bool(torch.isfinite(mu_hat).all() & torch.isfinite(var_hat).all()):
            raise ValueError("input contains NaN or infinite values (batch statistics are not finite)")

    @staticmethod
    def _unbiased(nk: torch.Tensor, var_hat: torch.Tensor) -> torch.Tensor:
        """σ̂² × n_k / (n_k − 1) where n_k > 1 (BN's M / (M − 1) when K = 1)."""
        return torch.where(nk > 1, var_hat * nk / (nk - 1).clamp_min(torch.finfo(nk.dtype).tiny), var_hat)

    def _update_hard(self, mean_buf, var_buf, nk, mu_hat, var_hat) -> None:
        """θ ← (1 − m) θ + m θ̂ for the components present (n_k ≥ 2) in the batch; π is not touched."""
        m = self._momentum()
        nk, mu_hat, var_hat = (t.to(mean_buf.dtype) for t in (nk, mu_hat, var_hat))
        present = nk >= 2
        mean_buf.copy_(torch.where(present, torch.lerp(mean_buf, mu_hat, m), mean_buf))
        var_buf.copy_(torch.where(present, torch.lerp(var_buf, self._unbiased(nk, var_hat), m), var_buf))

    def _update_running(self, nk, mu_hat, var_hat, m_total: int) -> None:
        """Moving-average EM (step 3): θ ← (1 − m) θ + m θ̂; σ̂² stored unbiased, n_k / (n_k − 1)."""
        m = self._momentum()
        buf = self.running_mean.dtype
        nk, mu_hat, var_hat = (t.to(buf) for t in (nk, mu_hat, var_hat))
        pi_hat = nk / m_total
        self.running_pi.mul_(1 - m).add_(pi_hat, alpha=m)
        self.running_mean.mul_(1 - m).add_(mu_hat, alpha=m)
        self.running_var.mul_(1 - m).add_(self._unbiased(nk, var_hat), alpha=m)
        if self.min_weight > 0 or self.collapse_tol > 0:
            self._collapse_guard(pi_hat, mu_hat, var_hat)

    def _collapse_guard(self, pi_hat: torch.Tensor, mu_hat: torch.Tensor, var_hat: torch.Tensor) -> None:
        """Step 6 (ours, not the paper's), branch-free (no host sync).

        * Merged components: a channel whose running components lie closer than ``collapse_tol``·σ
          (min_{j≠k} |μ_j − μ_k| < ε σ, σ² = Σ_k π_k (σ²_k + μ²_k) − (Σ_k π_k μ_k)², the mixture's channel
          variance) is re-seeded at μ_k = m + σ_b Φ⁻¹((k + ½)/K), σ²_k = σ²_b / K², π_k = 1/K, with (m, σ²_b)
          the channel's batch mean and variance. EM cannot separate identical components, so this also
          seeds fresh layers and layers converted from BN at their first training batch.
        * Starved components: a component whose batch weight π̂_k falls below ``min_weight`` (or whose
          running parameters are not finite or not positive) is re-initialised at the channel's batch
          mean and variance with weight 1/K; the weights are then renormalised.

        Both are counted in ``num_reinit`` (and logged at DEBUG level). Cost O(K²·C).
        """
        k = self.num_components
        tiny = torch.finfo(pi_hat.dtype).tiny
        # channel mean and variance from the mixture's batch statistics (law of total variance)
        w = pi_hat / pi_hat.sum(0, keepdim=True).clamp_min(tiny)
        ch_mean = (w * mu_hat).sum(0)
        ch_var = ((w * (var_hat + mu_hat * mu_hat)).sum(0) - ch_mean * ch_mean).clamp_min(self.eps)
        mean, var, pi = self.running_mean, self.running_var, self.running_pi
        merged = torch.zeros_like(ch_mean, dtype=torch.bool)
        if self.collapse_tol > 0 and k > 1:
            r_mean = (pi * mean).sum(0)
            r_sd = ((pi * (var + mean * mean)).sum(0) - r_mean * r_mean).clamp_min(self.eps).sqrt()
            gap = (mean[:, None] - mean[None]).abs()  # (K, K, C)
            gap = gap + torch.eye(k, dtype=gap.dtype, device=gap.device)[:, :, None] * torch.finfo(gap.dtype).max
            merged = gap.amin(dim=(0, 1)) < self.collapse_tol * r_sd  # (C,)
            seed_mean = ch_mean + ch_var.sqrt() * self._seed_z.to(ch_mean.dtype)
            mean.copy_(torch.where(merged, seed_mean, mean))
            var.copy_(torch.where(merged, (ch_var / (k * k)).expand_as(var), var))
            pi.copy_(torch.where(merged, torch.full_like(pi, 1.0 / k), pi))
        bad = (pi_hat < self.min_weight) | ~torch.isfinite(mean) | ~(var > 0) | ~torch.isfinite(var)
        bad = bad & ~merged
        mean.copy_(torch.where(bad, ch_mean.expand_as(bad), mean))
        var.copy_(torch.where(bad, ch_var.expand_as(bad), var))
        pi = torch.where(bad, torch.full_like(pi, 1.0 / k), pi)
        self.running_pi.copy_(pi / pi.sum(0, keepdim=True))
        self.num_reinit.add_((bad | merged).long())
        if logger.isEnabledFor(logging.DEBUG) and bool((bad | merged).any()):  # reads back only when debugging
            logger.debug("%s: re-initialised %d collapsed component(s)", type(self).__name__,
                         int((bad | merged).sum()))

    # -- analysis -------------------------------------------------------------------------
    @torch.no_grad()
    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Responsibilities of the running mixture for ``x``: shape (K, N, C, L) (L = H·W or 1), float32
        or wider; all ones for K = 1. Used for the per-class responsibility figure."""
        self._check_input(x)
        if not self.track_running_stats:
            raise ValueError("responsibilities() needs running statistics (track_running_stats=True)")
        x3 = x.reshape(x.shape[0], self.num_features, -1)
        if self.num_components == 1:
            return torch.ones((1, *x3.shape), dtype=torch.promote_types(x3.dtype, torch.float32), device=x.device)
        return mixture_responsibilities(x3, self.running_pi, self.running_mean, self.running_var, self.eps)


class CompoundBatchNorm2d(_CompoundBatchNorm):
    r"""Compound batch normalization over (N, C, H, W) inputs (Cheng et al., ACM MM 2022, arXiv:2212.01007).

    Each channel is modelled by a K-component Gaussian mixture (π_k, μ_k, σ²_k), estimated by moving-average
    EM; every value is normalised by its responsibility-weighted components:

    .. math::
        y = \gamma \sum_k r_k(x) \frac{x - \mu_k}{\sqrt{\sigma_k^2 + \epsilon}} + \beta,\qquad
        r_k(x) = \frac{\pi_k \mathcal N(x|\mu_k,\sigma_k^2)}{\sum_j \pi_j \mathcal N(x|\mu_j,\sigma_j^2)}.

    Parameters
    ----------
    num_features : int
        C, the channels.
    num_components : int, default 2
        K. K = 1 is exactly :class:`torch.nn.BatchNorm2d`. ``n_components=`` (keyword only, the
        experiment config's name) is an alias; giving both with different values raises ``TypeError``.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        m of θ ← (1 − m) θ + m θ̂ for π, μ, σ² (BN convention; unverified for the paper). ``None``:
        cumulative average, as in BN.
    affine : bool, default True
    track_running_stats : bool, default True
        Without running statistics, batch statistics are used in eval too and the E-step starts from a
        quantile initialisation of each batch.
    detach_responsibilities : bool, default False
        Stop the gradient through r (unverified in the paper; gradients through r flow via x only, as the
        running mixture is a buffer).
    per_component_affine : bool, default False
        γ_k, β_k per component mixed by r instead of one (γ, β) per channel (unverified).
    min_weight : float, default 1e-3
        Collapse floor on the batch weight π̂_k; below it the component is re-initialised (port addition).
    collapse_tol : float, default 0.05
        ε of the near-collapse test (port addition): after a training step, a channel whose components
        lie closer than ε·σ (σ the channel's SD under the mixture) is re-seeded at μ_k = m + σ Φ⁻¹((k + ½)/K)
        from the batch (this also separates the identical components of a fresh or BN-converted layer at
        its first training batch; EM never separates identical components). 0 disables it.
    check_finite : bool, default True
        Raise on NaN/inf input (a cheap check on the batch statistics in training, a full pass in eval);
        on CPU tensors only (on an accelerator the check would wait for the device at every call).
    aux_affine : bool, default False (keyword only)
        Give the hard auxiliary path (``group_ids``) its own affine ``weight_aux``, ``bias_aux`` (same
        shape as ``weight``, ``bias``; needs ``affine=True``) instead of sharing the main path's. Whether the
        paper shares it is unverified; the default shares it (see the method card).
    aux_stats : {"separate", "none", "shared"}, default "separate" (keyword only)
        Where the auxiliary path's per-group batch statistics go in training: its own running buffers
        ``running_mean_aux``, ``running_var_aux`` (read by the auxiliary path in eval); "none": no running
        update (the auxiliary path reads the mixture's in eval); "shared": into the mixture's μ_k, σ²_k, as
        before (this collapses the mixture into plain BN: both paths see each channel's Gaussian; kept
        only to reproduce that defect).
    compiled : bool, default False (keyword only)
        Run the soft training step through ``torch.compile`` (fused loops, 1.2–2.4× faster on CPU; needs a
        C++ compiler; the first call per input shape compiles for seconds). Falls back to the eager step with
        a ``RuntimeWarning`` if compilation fails. Not used with ``per_component_affine``.
    backend : {"auto", "native", "torch"}, default "auto" (keyword only)
        Float32 contiguous inputs on the CPU with H·W ≥ 8 run through a small C kernel
        (:mod:`reprozoo.compound_bn.native`: evaluation in one loop for K ≤ 8, the K = 2 training step in
        two loops forward and two backward), built with the system C compiler on first use and cached.
        ``"auto"``: the kernel when it builds, else the torch code (one ``RuntimeWarning``); ``"native"``:
        a ``RuntimeError`` when it cannot be built; ``"torch"``: never the kernel. Same values up to float
        rounding. ``REPROZOO_CBN_BACKEND=torch`` makes ``"auto"`` mean ``"torch"`` process-wide.

    Attributes
    ----------
    running_pi, running_mean, running_var : Tensor (K, C)
    running_mean_aux, running_var_aux : Tensor (K, C), or None
        The auxiliary path's statistics (``aux_stats="separate"``).
    num_batches_tracked : LongTensor ()
    weight, bias : Parameter (C,) or (K, C)
    weight_aux, bias_aux : Parameter (C,) or (K, C), or None
        The auxiliary path's affine when ``aux_affine``.
    group_ids : LongTensor (N,) or None
        When set (see :func:`group_assignment`) the layer uses the hard auxiliary path.

    Shapes
    ------
    input (N, C, H, W), any float dtype (float16/bfloat16 are computed in float32); output the same.

    Notes
    -----
    Time and memory O(K·N·C·H·W) per call. The training step keeps xs and r for the backward (x and r
    with ``compiled=True``); on CPU its temporaries come from per-thread scratch buffers (see
    ``functional.py``). No host synchronisation in training or evaluation on an accelerator (value checks run
    on CPU tensors only). A subclass of ``nn.modules.batchnorm._BatchNorm``: BN freezing, no-weight-decay
    rules and ``isinstance`` checks treat it as BN; for ``SyncBatchNorm`` use :func:`convert_sync_batchnorm`.

    Examples
    --------
    >>> import torch
    >>> from reprozoo.compound_bn import CompoundBatchNorm2d
    >>> layer = CompoundBatchNorm2d(8, num_components=2)
    >>> layer(torch.randn(4, 8, 5, 5)).shape
    torch.Size([4, 8, 5, 5])
    """

    _valid_ranks = (4,)


class CompoundBatchNorm1d(_CompoundBatchNorm):
    """Compound batch normalization over (N, C) or (N, C, L) inputs (for MLP features and sequences).

    Same parameters and semantics as :class:`CompoundBatchNorm2d`; K = 1 is :class:`torch.nn.BatchNorm1d`.

    Examples
    --------
    >>> import torch
    >>> from reprozoo.compound_bn import CompoundBatchNorm1d
    >>> CompoundBatchNorm1d(16, num_components=3)(torch.randn(32, 16)).shape
    torch.Size([32, 16])
    """

    _valid_ranks = (2, 3)


def convert_bn_to_cbn(module: nn.Module, num_components: int = 2, **kwargs) -> nn.Module:
    """Replace every ``nn.BatchNorm1d``/``nn.BatchNorm2d`` in ``module`` by its compound counterpart.

    The BN affine parameters are copied (to every component with ``per_component_affine``), and its running
    mean and variance are copied into every component with π_k = 1/K (the converted model starts as the BN one);
    ``num_batches_tracked`` is kept. The module tree (names, order, other layers) is unchanged. Works in place on
    children and returns the (possibly new) root module, like ``nn.SyncBatchNorm.convert_sync_batchnorm``.

    Parameters
    ----------
    module : nn.Module
    num_components : int
        K of every new layer.
    **kwargs
        Further :class:`CompoundBatchNorm2d` options (``detach_responsibilities``, ``per_component_affine``,
        ``min_weight``, ``collapse_tol`` ...); eps, momentum, affine, track_running_stats come from each BN.

    Notes
    -----
    Copied statistics make the K components identical, which EM cannot separate; with ``collapse_tol`` > 0
    (default) the first soft training batch re-seeds such channels from its moments, and the dual path
    (hard group assignment) separates the components by class-frequency group. In eval mode, before any
    training, the converted model computes exactly what the BN model computed.

    Raises ``TypeError`` for a non-module, ``ValueError`` for num_components < 1. Warns (``UserWarning``,
    "no BatchNorm layers found") and returns ``module`` unchanged when it holds no ``nn.BatchNorm1d/2d``
    (e.g. a model already converted, or one with only ``BatchNorm3d``/``SyncBatchNorm``).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module should be a torch.nn.Module, got {type(module).__name__}")
    check_int(num_components, "num_components", low=1)
    found = [m for m in module.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(m, _CompoundBatchNorm)]
    if not found:
        other = sorted({type(m).__name__ for m in module.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, _CompoundBatchNorm)})
        extra = f"; unsupported BatchNorm types present: {', '.join(other)}" if other else ""
        n_cbn = len(compound_layers(module))
        extra += f"; it already holds {n_cbn} compound BN layer(s)" if n_cbn else ""
        warnings.warn(f"convert_bn_to_cbn: no BatchNorm layers found (nn.BatchNorm1d/nn.BatchNorm2d) in "
                      f"{type(module).__name__}{extra}; the module is returned unchanged", UserWarning,
                      stacklevel=2)
        return module
    return _convert(module, num_components, **kwargs)


def _convert(module: nn.Module, num_components: int, **kwargs) -> nn.Module:
    """The recursion of :func:`convert_bn_to_cbn` (arguments already checked)."""
    out = module
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(module, _CompoundBatchNorm):
        cls = CompoundBatchNorm2d if isinstance(module, nn.BatchNorm2d) else CompoundBatchNorm1d
        ref = module.weight if module.affine else module.running_mean
        out = cls(module.num_features, num_components, eps=module.eps, momentum=module.momentum,
                  affine=module.affine, track_running_stats=module.track_running_stats,
                  device=ref.device if ref is not None else None,
                  dtype=ref.dtype if ref is not None else None, **kwargs)
        with torch.no_grad():
            if module.affine:
                for w, b in ((out.weight, out.bias), (out.weight_aux, out.bias_aux)) if out.aux_affine else \
                        ((out.weight, out.bias),):
                    w.copy_(module.weight.expand_as(w))
                    b.copy_(module.bias.expand_as(b))
                    w.requires_grad_(module.weight.requires_grad)
                    b.requires_grad_(module.bias.requires_grad)
            if module.track_running_stats:
                out.running_mean.copy_(module.running_mean.expand_as(out.running_mean))
                out.running_var.copy_(module.running_var.expand_as(out.running_var))
                out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        new = _convert(child, num_components, **kwargs)
        if new is not child:
            out.add_module(name, new)
    return out


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` for a model with compound BN layers: every plain BN layer
    becomes a ``SyncBatchNorm``; the compound layers are kept (their mixture statistics stay per process).

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` itself would replace a compound layer by a SyncBatchNorm
    holding its (K, C) buffers (it checks ``isinstance(m, _BatchNorm)``), which fails at the first forward.
    Returns the (possibly new) root module, in place on children.

    >>> from torch import nn
    >>> m = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3), CompoundBatchNorm2d(3)))
    >>> [type(c).__name__ for c in m]
    ['SyncBatchNorm', 'CompoundBatchNorm2d']
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module should be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, _CompoundBatchNorm):
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, process_group)
        if new is not child:
            module.add_module(name, new)
    return module


def compound_layers(module: nn.Module) -> list[_CompoundBatchNorm]:
    """All compound BN layers inside ``module`` (in ``modules()`` order)."""
    return [m for m in module.modules() if isinstance(m, _CompoundBatchNorm)]


@contextmanager
def group_assignment(module: nn.Module, group_ids: torch.Tensor) -> Iterator[nn.Module]:
    """Within the block, every compound BN layer of ``module`` uses the hard auxiliary path (step 7):
    sample b is normalised only with component ``group_ids[b]``.

    >>> # with group_assignment(model, class_to_group[y]):
    >>> #     aux_logits = model(x)
    """
    layers = compound_layers(module)
    if not layers:
        raise ValueError("module contains no CompoundBatchNorm layer; convert it with convert_bn_to_cbn first")
    if not isinstance(group_ids, torch.Tensor):
        raise TypeError(f"group_ids should be a LongTensor of shape (N,), got {type(group_ids).__name__}")
    previous = [m.group_ids for m in layers]
    try:
        for m in layers:
            m.group_ids = group_ids
        yield module
    finally:
        for m, g in zip(layers, previous, strict=True):
            m.group_ids = g
