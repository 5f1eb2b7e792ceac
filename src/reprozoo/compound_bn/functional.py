"""The soft compound-BN training step as one autograd function with a hand-derived backward.

Autograd over the naive formula keeps several K-fold copies of the activation and is slow on CPU; this
function computes the same forward (spec Sec. 3 steps 1, 2, 4) and the exact gradient in a handful of
passes. For K = 2 every pass is over N·C·L values (r_1 = sigmoid of a quadratic, r_0 = 1 − r_1).

Notation per channel (dropped): xs = x − m (m the batch channel mean, a shift for precision that cancels),
responsibilities r_k(x) = softmax_k(ℓ_k), ℓ_k = A_k xs² + B_k xs + C_k from the running mixture (constants);
n_k = Σ r_k, d_k = Σ r_k xs / n_k (= μ̂_k − m), v_k = Σ r_k xs² / n_k − d_k², s_k = (v_k + ε)^{-1/2},
y = Σ_k r_k (xs − d_k) s_k = xs·P − Q with P = Σ_k r_k s_k, Q = Σ_k r_k d_k s_k.

Backward, with g = ∂L/∂y, G_k = Σ g r_k, Hs_k = Σ g r_k x̂_k, x̂_k = (xs − d_k) s_k:
∂L/∂x|_r = Σ_k r_k s_k (g − G_k/n_k − x̂_k Hs_k/n_k)   (BN's gradient, per component, weighted by r_k);
∂L/∂r_k = g x̂_k − G_k x̂_k/n_k − ½ Hs_k (x̂_k² − v_k s_k²)/n_k, then through the softmax and
ℓ_k'(x) = 2 A_k xs + B_k (skipped when the responsibilities are detached).
"""

from __future__ import annotations

import torch

__all__ = ["mixture_coefficients", "soft_compound_bn"]


def mixture_coefficients(pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float,
                         shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ℓ_k(x) = log π_k + log N(x | μ_k, σ²_k + ε) + const as A_k xs² + B_k xs + C_k with xs = x − shift.

    Shapes: pi, mean, var (K, C); shift (C,) -> three (K, C) tensors.
    """
    tiny = torch.finfo(var.dtype).tiny
    prec = 1.0 / (var + eps)
    dm = mean - shift
    a = -0.5 * prec
    b = dm * prec
    c = torch.log(pi.clamp_min(tiny)) + 0.5 * torch.log(prec) - 0.5 * dm * dm * prec
    return a, b, c


def _bc(t: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1) or (K, C) -> (K, 1, C, 1) for broadcasting against (N, C, L) / (K, N, C, L)."""
    return t[None, :, None] if t.dim() == 1 else t[:, None, :, None]


class _SoftCompoundBN(torch.autograd.Function):
    # Temporaries are written in place where possible: on CPU every fresh activation-sized tensor costs
    # page faults, which dominate these memory-bound passes.
    @staticmethod
    def forward(ctx, x, pi, mean, var, eps, detach_r):
        k = pi.shape[0]
        n_el = x.shape[0] * x.shape[2]
        m = x.mean(dim=(0, 2))
        xs = x - _bc(m)
        a, b, c = mixture_coefficients(pi.to(x.dtype), mean.to(x.dtype), var.to(x.dtype), eps, m)
        tiny = torch.finfo(x.dtype).tiny
        s1_tot = xs.sum(dim=(0, 2))
        buf = torch.mul(xs, xs)
        s2_tot = buf.sum(dim=(0, 2))
        if k == 2:
            da, db, dc = a[1] - a[0], b[1] - b[0], c[1] - c[0]
            r = torch.addcmul(_bc(db), _bc(da), xs).mul_(xs).add_(_bc(dc)).sigmoid_()  # r_1
            n1 = r.sum(dim=(0, 2))
            s2_1 = buf.mul_(r).sum(dim=(0, 2))
            s1_1 = torch.mul(r, xs, out=buf).sum(dim=(0, 2))
            nk = torch.stack((n_el - n1, n1))
            s1 = torch.stack((s1_tot - s1_1, s1_1))
            s2 = torch.stack((s2_tot - s2_1, s2_1))
        else:
            xk = xs.unsqueeze(0)
            r = torch.addcmul(_bc(b), _bc(a), xk).mul_(xk).add_(_bc(c))
            r.sub_(r.amax(dim=0, keepdim=True)).exp_()  # softmax over k, in place
            r.div_(r.sum(dim=0, keepdim=True))
            nk = r.sum(dim=(1, 3))
            kbuf = torch.mul(r, xk)
            s1 = kbuf.sum(dim=(1, 3))
            s2 = torch.mul(r, buf.unsqueeze(0), out=kbuf).sum(dim=(1, 3))
            del kbuf
        del buf
        safe = nk.clamp_min(tiny)
        d = s1 / safe
        v = (s2 / safe - d * d).clamp_min(0.0)
        s = torch.rsqrt(v + eps)
        ds = d * s
        if k == 2:  # y = xs·(s_0 + r Δs) − (d_0 s_0 + r Δ(ds))
            y = torch.addcmul(_bc(s[0]), r, _bc(s[1] - s[0])).mul_(xs)
            y.sub_(_bc(ds[0])).addcmul_(r, _bc(ds[0] - ds[1]))
        else:
            kbuf = torch.mul(r, _bc(s))
            y = kbuf.sum(0).mul_(xs).sub_(torch.mul(r, _bc(ds), out=kbuf).sum(0))
            del kbuf
        ctx.save_for_backward(xs, r, a, b, nk, d, v, s)
        ctx.detach_r = bool(detach_r)
        ctx.k = k
        mu_hat = d + m
        ctx.mark_non_differentiable(nk, mu_hat, v)
        return y, nk, mu_hat, v

    @staticmethod
    def backward(ctx, gy, _gn, _gm, _gv):
        xs, r, a, b, nk, d, v, s = ctx.saved_tensors
        k = ctx.k
        safe = nk.clamp_min(torch.finfo(nk.dtype).tiny)
        g = gy.contiguous()
        u = g * xs
        if k == 2:
            buf = torch.mul(g, r)
            g1 = buf.sum(dim=(0, 2))
            u1 = torch.mul(u, r, out=buf).sum(dim=(0, 2))
            big_g = torch.stack((g.sum(dim=(0, 2)) - g1, g1))
            big_u = torch.stack((u.sum(dim=(0, 2)) - u1, u1))
        else:
            kbuf = torch.mul(r, g.unsqueeze(0))
            big_g = kbuf.sum(dim=(1, 3))
            big_u = torch.mul(r, u.unsqueeze(0), out=kbuf).sum(dim=(1, 3))
        hs = s * (big_u - d * big_g)  # Σ g r_k x̂_k
        c1 = s * big_g / safe - s * s * hs * d / safe
        c2 = s * s * hs / safe
        if ctx.detach_r:
            alpha = beta = gamma = None
        else:
            # ∂L/∂r_k = s_k u − s_k d_k g + α_k xs² + β_k xs + γ_k
            alpha = -0.5 * hs * s * s / safe
            beta = -big_g * s / safe + hs * s * s * d / safe
            gamma = big_g * s * d / safe - 0.5 * hs * s * s * (d * d - v) / safe
        if k == 2:
            def dd(t):
                return _bc(t[1] - t[0])

            # ∂L/∂x|_r = g·P − R1 − xs·R2, with P, R1, R2 = c_0 + r Δc
            gx = torch.mul(g, _bc(s[0])).sub_(_bc(c1[0])).addcmul_(xs, _bc(-c2[0]))
            torch.mul(g, dd(s), out=buf).sub_(dd(c1)).addcmul_(xs, -dd(c2))
            gx.addcmul_(buf, r)
            if alpha is not None:
                dr = torch.mul(xs, dd(alpha), out=buf).add_(dd(beta)).mul_(xs).add_(dd(gamma))
                dr.addcmul_(u, dd(s)).addcmul_(g, -dd(s * d))
                dr.mul_(r).addcmul_(dr, r, value=-1.0)  # ∂L/∂ℓ_1 = r_1 (1 − r_1) Δ(∂L/∂r) = −∂L/∂ℓ_0
                gx.addcmul_(dr, torch.mul(xs, 2.0 * dd(a), out=u).add_(dd(b)))
            return gx, None, None, None, None, None
        gx = torch.mul(r, _bc(s), out=kbuf).sum(0).mul_(g)
        gx.sub_(torch.mul(r, _bc(c1), out=kbuf).sum(0))
        gx.sub_(torch.mul(r, _bc(c2), out=kbuf).sum(0).mul_(xs))
        if alpha is not None:
            xk = xs.unsqueeze(0)
            dr = torch.addcmul(_bc(beta), _bc(alpha), xk).mul_(xk).add_(_bc(gamma))
            dr.addcmul_(u.unsqueeze(0), _bc(s)).addcmul_(g.unsqueeze(0), -_bc(s * d))
            mean_dr = torch.mul(r, dr, out=kbuf).sum(0, keepdim=True)
            dl = dr.sub_(mean_dr).mul_(r)  # ∂L/∂ℓ_k = r_k (∂L/∂r_k − Σ_j r_j ∂L/∂r_j)
            gx.add_(dl.mul_(torch.addcmul(_bc(b), 2.0 * _bc(a), xk, out=kbuf)).sum(0))
        return gx, None, None, None, None, None


def soft_compound_bn(x: torch.Tensor, pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float = 1e-5,
                     detach_responsibilities: bool = False):
    """Soft compound BN with batch statistics (training): E-step from (π, μ, σ²), M-step and normalisation.

    Parameters
    ----------
    x : Tensor (N, C, L), float32/float64 (assumes validated input)
    pi, mean, var : Tensor (K, C), K ≥ 2, the running mixture used for the E-step (no gradient)
    eps : float
    detach_responsibilities : bool
        Drop the gradient path through r(x).

    Returns
    -------
    y : Tensor (N, C, L), normalised, differentiable w.r.t. x
    nk, mu_hat, var_hat : Tensor (K, C): soft counts, batch means and biased batch variances (no gradient)

    Cost O(N·C·L) per pass, ~10 passes forward and backward for K = 2 (O(K·N·C·L) for K > 2).
    """
    return _SoftCompoundBN.apply(x, pi.detach(), mean.detach(), var.detach(), float(eps),
                                 bool(detach_responsibilities))
