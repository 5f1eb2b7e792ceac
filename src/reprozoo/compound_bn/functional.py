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

Shared affine (optional, spec step 5): out = γ y + β is folded into the per-channel coefficients
(γ P, γ Q − β forward; g = γ ∂L/∂out backward), with ∂L/∂γ = Σ_k Hs_k and ∂L/∂β = Σ_k G_k computed from
the sums the backward needs anyway (Hs, G taken with ∂L/∂out), so the affine adds no pass over the tensor.

Performance (CPU, memory-bound): activation-sized temporaries live in per-thread scratch buffers reused
across calls (fresh large tensors cost page faults), per-channel terms are applied with in-place ops
(``addcmul`` with a broadcast ``input`` takes a slow path), and the per-channel coefficients of the
backward are formed in one stacked tensor. Only xs, r (saved), y and ∂L/∂x are freshly allocated.
"""

from __future__ import annotations

import threading

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


class _Scratch(threading.local):
    """Per-thread reusable temporaries (one flat buffer per slot, dtype and device, grown to the largest
    request). Fresh activation-sized tensors cost page faults on CPU on every call; the temporaries below
    never leave the forward or backward that asked for them, so they can share storage across calls and
    layers."""

    def __init__(self) -> None:
        self.bufs: dict[tuple, torch.Tensor] = {}

    def get(self, like: torch.Tensor, slot: int) -> torch.Tensor:
        key = (slot, like.dtype, like.device)
        buf = self.bufs.get(key)
        n = like.numel()
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=like.dtype, device=like.device)
            self.bufs[key] = buf
        return buf[:n].view(like.shape)


_SCRATCH = _Scratch()


def _csum(t: torch.Tensor) -> torch.Tensor:
    """Σ over dims (0, 2) of an (N, C, L) tensor -> (C,)."""
    return t.sum(dim=(0, 2))


def _cdot(t: torch.Tensor, u: torch.Tensor, slot: int) -> torch.Tensor:
    """Σ over dims (0, 2) of t·u for (N, C, L) tensors -> (C,), the product written to a scratch buffer."""
    return _csum(torch.mul(t, u, out=_SCRATCH.get(t, slot)))


class _SoftCompoundBN(torch.autograd.Function):
    # Temporaries are written in place or in reused scratch buffers: on CPU every fresh activation-sized
    # tensor costs page faults, which dominate these memory-bound passes. The per-channel affine (γ, β) is
    # folded into the per-channel coefficients (one pass less forward, three backward).
    @staticmethod
    def forward(ctx, x, pi, mean, var, eps, detach_r, weight, bias):
        k = pi.shape[0]
        n_el = x.shape[0] * x.shape[2]
        m = x.mean(dim=(0, 2))
        xs = x - _bc(m)
        a, b, c = mixture_coefficients(pi.to(x.dtype), mean.to(x.dtype), var.to(x.dtype), eps, m)
        tiny = torch.finfo(x.dtype).tiny
        buf = torch.mul(xs, xs, out=_SCRATCH.get(xs, 0))
        s1_tot = _csum(xs)
        s2_tot = _csum(buf)
        if k == 2:
            da, db, dc = a[1] - a[0], b[1] - b[0], c[1] - c[0]
            # (addcmul with a broadcast `input` takes a slow path on CPU: per-channel terms are added in place)
            r = torch.mul(buf, _bc(da)).addcmul_(xs, _bc(db)).add_(_bc(dc)).sigmoid_()  # r_1
            n1 = _csum(r)
            rxs = torch.mul(r, xs, out=_SCRATCH.get(xs, 1))  # kept for y below
            s1_1 = _csum(rxs)
            s2_1 = _csum(buf.mul_(r))
            nk = torch.stack((n_el - n1, n1))
            s1 = torch.stack((s1_tot - s1_1, s1_1))
            s2 = torch.stack((s2_tot - s2_1, s2_1))
        else:
            xk = xs.unsqueeze(0)
            r = torch.mul(xk, _bc(a)).add_(_bc(b)).mul_(xk).add_(_bc(c))
            r.sub_(r.amax(dim=0, keepdim=True)).exp_()  # softmax over k, in place
            r.div_(r.sum(dim=0, keepdim=True))
            nk = r.sum(dim=(1, 3))
            kbuf = torch.mul(r, xk, out=_SCRATCH.get(r, 2))
            s1 = kbuf.sum(dim=(1, 3))
            s2 = torch.mul(r, buf.unsqueeze(0), out=kbuf).sum(dim=(1, 3))
            del kbuf
        del buf
        safe = nk.clamp_min(tiny)
        d = s1 / safe
        v = (s2 / safe - d * d).clamp_min(0.0)
        s = torch.rsqrt(v + eps)
        ds = d * s
        gam = weight.detach().to(x.dtype) if weight is not None else None
        sg = s * gam if gam is not None else s  # y = xs·Σ_k r_k sg_k − Σ_k r_k q_k
        q = ds * gam if gam is not None else ds
        if bias is not None:
            q = q - bias.detach().to(x.dtype)
        if k == 2:  # y = xs·(sg_0 + r Δsg) − (q_0 + r Δq) = xs·sg_0 − q_0 + (r·xs) Δsg − r Δq
            y = torch.mul(xs, _bc(sg[0])).sub_(_bc(q[0]))
            y.addcmul_(rxs, _bc(sg[1] - sg[0])).addcmul_(r, _bc(q[0] - q[1]))
        else:
            kbuf = torch.mul(r, _bc(sg), out=_SCRATCH.get(r, 2))
            y = kbuf.sum(0).mul_(xs).sub_(torch.mul(r, _bc(q), out=kbuf).sum(0))
            del kbuf
        ctx.save_for_backward(xs, r, a, b, nk, d, v, s, gam)
        ctx.detach_r = bool(detach_r)
        ctx.k = k
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.w_dtype = weight.dtype if weight is not None else None
        ctx.b_dtype = bias.dtype if bias is not None else None
        mu_hat = d + m
        ctx.mark_non_differentiable(nk, mu_hat, v)
        return y, nk, mu_hat, v

    @staticmethod
    def backward(ctx, gy, _gn, _gm, _gv):
        xs, r, a, b, nk, d, v, s, gam = ctx.saved_tensors
        k = ctx.k
        safe = nk.clamp_min(torch.finfo(nk.dtype).tiny)
        g = gy.contiguous()  # ∂L/∂ŷ; the formulas below use ∂L/∂y_norm = γ g through γ-scaled coefficients
        if k == 2:
            buf = torch.mul(g, r, out=_SCRATCH.get(xs, 0))
            g1 = _csum(buf)
            u1 = _cdot(buf, xs, 1)
            big_g = torch.stack((_csum(g) - g1, g1))
            big_u = torch.stack((_cdot(g, xs, 1) - u1, u1))
        else:
            kbuf = torch.mul(r, g.unsqueeze(0), out=_SCRATCH.get(r, 2))
            big_g = kbuf.sum(dim=(1, 3))
            u = torch.mul(g, xs, out=_SCRATCH.get(xs, 1))
            big_u = torch.mul(r, u.unsqueeze(0), out=kbuf).sum(dim=(1, 3))
        hs = s * (big_u - d * big_g)  # Σ ĝ r_k x̂_k (ĝ = ∂L/∂y before the affine, unscaled by γ)
        grad_w = hs.sum(0).to(ctx.w_dtype) if ctx.has_weight and ctx.needs_input_grad[6] else None
        grad_b = big_g.sum(0).to(ctx.b_dtype) if ctx.has_bias and ctx.needs_input_grad[7] else None
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, grad_w, grad_b
        sg = s
        if gam is not None:  # ∂L/∂y_norm = γ g: every term below is linear in it
            big_g, hs, sg = big_g * gam, hs * gam, s * gam
        w = s / safe
        c2 = hs * s * w  # s² Hs / n
        c1 = big_g * w - c2 * d
        if ctx.detach_r:
            alpha = beta = gamma = None
        else:
            # ∂L/∂r_k = s_k u − s_k d_k g + α_k xs² + β_k xs + γ_k (u = g·xs, g here γ-scaled)
            alpha = -0.5 * c2
            beta = -c1
            gamma = big_g * w * d - 0.5 * c2 * (d * d - v)
        if k == 2:
            # all per-channel coefficients at once: base c_0 and Δc = c_1 − c_0, each shaped (1, C, 1)
            terms = [sg, c1, c2] if alpha is None else [sg, c1, c2, sg * d, alpha, beta, gamma, 2.0 * a, b]
            st = torch.stack(terms)
            base = st[:3, 0, None, :, None].unbind(0)
            delta = (st[:, 1] - st[:, 0])[:, None, :, None].unbind(0)

            # ∂L/∂x|_r = g·P − R1 − xs·R2, with P, R1, R2 = c_0 + r Δc
            gx = torch.mul(g, base[0]).sub_(base[1]).addcmul_(xs, base[2], value=-1.0)
            torch.mul(g, delta[0], out=buf).sub_(delta[1]).addcmul_(xs, delta[2], value=-1.0)
            gx.addcmul_(buf, r)
            if alpha is not None:
                d_sgd, d_al, d_be, d_ga, d_2a, d_b = delta[3:]
                # Δ(∂L/∂r) = (Δα xs + Δβ + Δsg g)·xs + Δγ − Δ(sg d) g
                dr = torch.mul(g, delta[0], out=buf).add_(d_be).addcmul_(xs, d_al).mul_(xs)
                dr.addcmul_(g, d_sgd, value=-1.0).add_(d_ga).mul_(r)
                # ∂L/∂x via r: r_1 (1 − r_1) Δ(∂L/∂r) · ℓ'(x), ℓ'(x) = 2 Δa xs + Δb
                f = torch.mul(xs, d_2a, out=_SCRATCH.get(xs, 1)).add_(d_b)
                gx.addcmul_(dr, f.addcmul_(f, r, value=-1.0))
            return gx, None, None, None, None, None, grad_w, grad_b
        kbuf = torch.mul(r, _bc(sg), out=_SCRATCH.get(r, 2))
        gx = kbuf.sum(0).mul_(g)
        gx.sub_(torch.mul(r, _bc(c1), out=kbuf).sum(0))
        gx.sub_(torch.mul(r, _bc(c2), out=kbuf).sum(0).mul_(xs))
        if alpha is not None:
            xk = xs.unsqueeze(0)
            dr = torch.mul(xk, _bc(alpha), out=_SCRATCH.get(r, 3)).add_(_bc(beta)).mul_(xk).add_(_bc(gamma))
            dr.addcmul_(u.unsqueeze(0), _bc(sg)).addcmul_(g.unsqueeze(0), -_bc(sg * d))
            mean_dr = torch.mul(r, dr, out=kbuf).sum(0, keepdim=True)
            dl = dr.sub_(mean_dr).mul_(r)  # ∂L/∂ℓ_k = r_k (∂L/∂r_k − Σ_j r_j ∂L/∂r_j)
            gx.add_(dl.mul_(torch.mul(xk, 2.0 * _bc(a), out=kbuf).add_(_bc(b))).sum(0))
        return gx, None, None, None, None, None, grad_w, grad_b


def soft_compound_bn(x: torch.Tensor, pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float = 1e-5,
                     detach_responsibilities: bool = False, weight: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None):
    """Soft compound BN with batch statistics (training): E-step from (π, μ, σ²), M-step and normalisation.

    Parameters
    ----------
    x : Tensor (N, C, L), float32/float64 (assumes validated input)
    pi, mean, var : Tensor (K, C), K ≥ 2, the running mixture used for the E-step (no gradient)
    eps : float
    detach_responsibilities : bool
        Drop the gradient path through r(x).
    weight, bias : Tensor (C,), optional
        Shared affine γ, β (spec step 5), applied inside the fused function: y = γ·ŷ + β. Differentiable.

    Returns
    -------
    y : Tensor (N, C, L), normalised (and affine-transformed), differentiable w.r.t. x, weight and bias
    nk, mu_hat, var_hat : Tensor (K, C): soft counts, batch means and biased batch variances (no gradient)

    Cost O(N·C·L) per pass, about 16 passes forward and 25 backward for K = 2 (O(K·N·C·L) for K > 2).
    """
    return _SoftCompoundBN.apply(x, pi.detach(), mean.detach(), var.detach(), float(eps),
                                 bool(detach_responsibilities), weight, bias)
