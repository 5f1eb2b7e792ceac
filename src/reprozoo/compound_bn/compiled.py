"""Opt-in compiled training step of soft compound BN: the formulas of :mod:`.functional`, fused by
``torch.compile`` (inductor; on CPU it generates C++ loops and needs a C++ compiler).

The eager function makes about 17 forward and 25 backward passes over the activation for K = 2. Here
the forward is three generated loops: (1) the responsibilities, stored once (r_1 only
when K = 2); (2) one reduction loop for the 3K moments n_k, Σ r_k xs, Σ r_k xs²; (3) one elementwise loop
for y. The backward is two: (1) one reduction loop for G_k = Σ g r_k and U_k = Σ g r_k xs; (2) one
elementwise loop for ∂L/∂x, reusing the stored responsibilities (no exp is recomputed). The per-channel
algebra between the loops (a few (K, C) operations) runs in eager code with the formulas of
``functional.py``; K is unrolled at trace time, so K > 2 never materialises a (K, N, C, L) intermediate
other than the stored responsibilities. Outputs and the stored responsibilities are fresh tensors.

Use ``CompoundBatchNorm2d(..., compiled=True)`` (or :func:`compiled_soft_compound_bn`). The first call
for each input shape, dtype, K and ``detach_responsibilities`` compiles (seconds of CPU per graph; later
calls reuse it, and inductor caches its kernels on disk). If compilation fails (no C++ compiler,
unsupported platform), a ``RuntimeWarning`` is issued once and every later call uses the eager function,
which computes the same values.
"""

from __future__ import annotations

import threading
import warnings

import torch

from reprozoo.compound_bn.functional import _empty, empty_floor, mixture_coefficients, mixture_shift

__all__ = ["compiled_available", "compiled_mixture_eval", "compiled_soft_compound_bn"]

_STATE = {"failed": False, "reason": ""}
_LOCK = threading.Lock()
_FNS: dict[str, object] = {}
# inductor stores an elementwise intermediate with many readers (e.g. xs) in a fresh buffer by default;
# recomputing it in each loop is cheaper here (page faults and memory traffic cost more than arithmetic).
# Static shapes (one specialised graph per input shape: faster loops than dynamic ones, measured); a
# network has one activation shape per stage plus a smaller last batch, so dynamo's default limit of 8
# recompilations per function is raised for these calls only (see _call)
_DYNAMIC = False
_RECOMPILE_LIMIT = 64
_OPTIONS = {"realize_reads_threshold": 1 << 20, "realize_opcount_threshold": 1 << 20,
            "realize_acc_reads_threshold": 1 << 20}


def compiled_available() -> bool:
    """False once a compilation has failed in this process (then the eager function is used)."""
    return not _STATE["failed"]


def _bc(t: torch.Tensor) -> torch.Tensor:
    return t[None, :, None]


def _responsibilities(xs: torch.Tensor, quad: torch.Tensor) -> list[torch.Tensor]:
    """The K responsibilities as a list of (N, C, L) expressions (traced and fused, never stored) from
    quad = (a, b, c) (3, K, C), ℓ_k = a_k xs² + b_k xs + c_k; for K = 2 quad holds the differences
    ℓ_1 − ℓ_0 in its row k = 1."""
    k = quad.shape[1]
    if k == 2:  # r_1 = sigmoid(ℓ_1 − ℓ_0)
        r1 = torch.sigmoid((_bc(quad[0, 1]) * xs + _bc(quad[1, 1])) * xs + _bc(quad[2, 1]))
        return [1.0 - r1, r1]
    logits = [(_bc(quad[0, j]) * xs + _bc(quad[1, j])) * xs + _bc(quad[2, j]) for j in range(k)]
    top = logits[0]
    for lj in logits[1:]:
        top = torch.maximum(top, lj)
    e = [torch.exp(lj - top) for lj in logits]
    z = e[0]
    for ej in e[1:]:
        z = z + ej
    inv = 1.0 / z
    return [ej * inv for ej in e]


def _read_responsibilities(r_in: torch.Tensor, k: int) -> list[torch.Tensor]:
    return [1.0 - r_in, r_in] if k == 2 else [r_in[j] for j in range(k)]


# The compiled graphs below take every per-channel coefficient precomputed (a few (K, C) ops in eager
# code): inside a graph, inductor would inline their computation (divisions, square roots, logs) into the
# innermost vectorised loop, once per 16 values.

def _responsibilities_into(x, m, quad, r_out) -> None:
    """Loop 1 of the forward: the responsibilities, written straight into ``r_out`` ((N, C, L) holding r_1
    when K = 2, else (K, N, C, L)). A graph of its own: inductor on CPU stores any reused exp/sigmoid
    result in a fresh buffer; here its only reader is the store into the output buffer, which the other
    loops and the backward then read (no recomputation)."""
    r = _responsibilities(x - _bc(m), quad)
    r_out.copy_(r[1] if quad.shape[1] == 2 else torch.stack(r))


def _forward_sums(x, r_in, m):
    """Loop 2: the moments n_k, Σ r_k xs, Σ r_k xs², (3, K, C)."""
    k = r_in.shape[0] if r_in.dim() == 4 else 2
    xs = x - _bc(m)
    r = _read_responsibilities(r_in, k)
    dims = (0, 2)
    return torch.stack([torch.stack([r[j].sum(dims) for j in range(k)]),
                        torch.stack([(r[j] * xs).sum(dims) for j in range(k)]),
                        torch.stack([(r[j] * xs * xs).sum(dims) for j in range(k)])])


def _forward_out(x, r_in, m, coef, y_out) -> None:
    """Loop 3: y = Σ_k r_k (xs·sg_k − q_k) into ``y_out``; coef = (sg, q) (2, K, C)."""
    k = coef.shape[1]
    xs = x - _bc(m)
    r = _read_responsibilities(r_in, k)
    y = r[0] * (xs * _bc(coef[0, 0]) - _bc(coef[1, 0]))
    for j in range(1, k):
        y = y + r[j] * (xs * _bc(coef[0, j]) - _bc(coef[1, j]))
    y_out.copy_(y)  # written in place by the generated loop (no intermediate buffer)


def _eval_out(x, m, quad, coef):
    """Evaluation in one loop: y = Σ_k r_k (xs·P_k − Q'_k), r from the running mixture (never stored);
    quad as in :func:`_responsibilities`, coef = (P, Q') (2, K, C)."""
    k = coef.shape[1]
    xs = x - _bc(m)
    r = _responsibilities(xs, quad)
    y = r[0] * (xs * _bc(coef[0, 0]) - _bc(coef[1, 0]))
    for j in range(1, k):
        y = y + r[j] * (xs * _bc(coef[0, j]) - _bc(coef[1, j]))
    return y


def _backward_sums(x, g, r_in, m):
    """Loop 1 of the backward: G_k = Σ g r_k and U_k = Σ g r_k xs, (2, K, C)."""
    k = r_in.shape[0] if r_in.dim() == 4 else 2
    xs = x - _bc(m)
    r = _read_responsibilities(r_in, k)
    dims = (0, 2)
    return torch.stack([torch.stack([(g * r[j]).sum(dims) for j in range(k)]),
                        torch.stack([(g * r[j] * xs).sum(dims) for j in range(k)])])


def _backward_out(x, g, r_in, m, coef, gx_out, detach: bool) -> None:
    """Loop 2: ∂L/∂x into ``gx_out``; coef = (sg, c1, c2, sg·d, α, β, γ, 2a, b) (9, K, C) (see
    ``functional.py``): ∂L/∂x = Σ_k r_k (sg_k g − c1_k − c2_k xs) + Σ_k r_k (∂L/∂r_k − Σ_j r_j ∂L/∂r_j) ℓ_k'
    with ∂L/∂r_k = sg_k g xs − (sg d)_k g + α_k xs² + β_k xs + γ_k and ℓ_k' = 2 a_k xs + b_k."""
    k = coef.shape[1]
    xs = x - _bc(m)
    r = _read_responsibilities(r_in, k)
    gx = r[0] * (g * _bc(coef[0, 0]) - _bc(coef[1, 0]) - xs * _bc(coef[2, 0]))
    for j in range(1, k):
        gx = gx + r[j] * (g * _bc(coef[0, j]) - _bc(coef[1, j]) - xs * _bc(coef[2, j]))
    if not detach:
        dr = [g * (_bc(coef[0, j]) * xs - _bc(coef[3, j])) + (_bc(coef[4, j]) * xs + _bc(coef[5, j])) * xs
              + _bc(coef[6, j]) for j in range(k)]
        if k == 2:  # r_1 (1 − r_1) (Δ∂L/∂r) (Δℓ')
            dl = r[1] * r[0] * (dr[1] - dr[0]) * (_bc(coef[7, 1] - coef[7, 0]) * xs + _bc(coef[8, 1] - coef[8, 0]))
            gx = gx + dl
        else:
            mean_dr = r[0] * dr[0]
            for j in range(1, k):
                mean_dr = mean_dr + r[j] * dr[j]
            for j in range(k):
                gx = gx + r[j] * (dr[j] - mean_dr) * (_bc(coef[7, j]) * xs + _bc(coef[8, j]))
    gx_out.copy_(gx)


def _eager_backward(x, gy, pi, mean, var, gam, eps: float, detach: bool):
    """Fallback gradient through the eager fused function (re-running its forward)."""
    from reprozoo.compound_bn.functional import soft_compound_bn

    with torch.enable_grad():
        xd, gd, bd = x.detach().requires_grad_(), gam.detach().requires_grad_(), torch.zeros_like(gam).requires_grad_()
        y = soft_compound_bn(xd, pi, mean, var, eps, detach, gd, bd)[0]
        return torch.autograd.grad(y, (xd, gd, bd), gy)


def _compiled(name: str, fn):
    with _LOCK:
        if name not in _FNS:
            _FNS[name] = torch.compile(fn, dynamic=_DYNAMIC, fullgraph=True, options=_OPTIONS)
        return _FNS[name]


def _call(name: str, fn, *args):
    """Run the compiled version of ``fn`` (compiled on first use)."""
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
        return _compiled(name, fn)(*args)


def _fail(err: BaseException) -> None:
    if not _STATE["failed"]:
        _STATE["failed"], _STATE["reason"] = True, f"{type(err).__name__}: {err}"
        warnings.warn("compound BN: torch.compile failed, falling back to the eager implementation "
                      f"({_STATE['reason'][:300]})", RuntimeWarning, stacklevel=3)


class _CompiledSoftCompoundBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pi, mean, var, eps, detach_r, weight, bias):
        c, k = x.shape[1], pi.shape[0]
        gam = weight.detach().to(x.dtype) if weight is not None else x.new_ones(c)
        bet = bias.detach().to(x.dtype) if bias is not None else x.new_zeros(c)
        x = x.contiguous()
        m = mixture_shift(pi, mean)
        quad = torch.stack(mixture_coefficients(pi, mean, var, eps, m))  # (3, K, C)
        # (K = 2: row 1 holds ℓ_1 − ℓ_0)
        quad_r = torch.stack((quad[:, 0], quad[:, 1] - quad[:, 0]), 1) if k == 2 else quad
        r = _empty(x.shape if k == 2 else (k, *x.shape), x)
        _call("responsibilities", _responsibilities_into, x, m, quad_r, r)
        nk, s1, s2 = _call("forward_sums", _forward_sums, x, r, m).unbind(0)
        safe = nk.clamp_min(empty_floor(x.dtype))
        d = s1 / safe
        v = (s2 / safe - d * d).clamp_min(0.0)
        s = torch.rsqrt(v + eps)
        sg = s * gam
        y = _empty(x.shape, x)
        _call("forward_out", _forward_out, x, r, m, torch.stack((sg, d * sg - bet)), y)
        ctx.save_for_backward(x, r, m, quad, nk, d, v, s, gam)
        ctx.detach_r = bool(detach_r)
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.w_dtype = weight.dtype if weight is not None else None
        ctx.b_dtype = bias.dtype if bias is not None else None
        ctx.eager = (pi.clone(), mean.clone(), var.clone(), eps)  # for the fallback only
        mu_hat = d + m
        ctx.mark_non_differentiable(nk, mu_hat, v)
        return y, nk, mu_hat, v

    @staticmethod
    def backward(ctx, gy, _gn, _gm, _gv):
        x, r, m, quad, nk, d, v, s, gam = ctx.saved_tensors
        g = gy.contiguous()
        try:
            big_g, big_u = _call("backward_sums", _backward_sums, x, g, r, m).unbind(0)
            # per-channel coefficients (formulas of functional.py), γ folded in
            hs = s * (big_u - d * big_g)
            gw, gb = hs.sum(0), big_g.sum(0)
            floor = empty_floor(nk.dtype)  # an absent component: terms 0, not 0·inf
            w = torch.where(nk > floor, s / nk.clamp_min(floor), 0.0)
            sg, gg = s * gam, big_g * gam
            c2 = hs * gam * s * w
            c1 = gg * w - c2 * d
            coef = torch.stack((sg, c1, c2, sg * d, -0.5 * c2, -c1, gg * w * d - 0.5 * c2 * (d * d - v),
                                2.0 * quad[0], quad[1]))
            gx = _empty(x.shape, x)
            _call("backward_out", _backward_out, x, g, r, m, coef, gx, ctx.detach_r)
        except Exception as err:  # noqa: BLE001 - compiler failure: the eager function's gradient
            _fail(err)
            pi, mean, var, eps = ctx.eager
            gx, gw, gb = _eager_backward(x, gy, pi, mean, var, gam, eps, ctx.detach_r)
        grad_w = gw.to(ctx.w_dtype) if ctx.has_weight and ctx.needs_input_grad[6] else None
        grad_b = gb.to(ctx.b_dtype) if ctx.has_bias and ctx.needs_input_grad[7] else None
        return (gx if ctx.needs_input_grad[0] else None), None, None, None, None, None, grad_w, grad_b


def compiled_soft_compound_bn(x: torch.Tensor, pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                              eps: float = 1e-5, detach_responsibilities: bool = False,
                              weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
    """Same contract as :func:`reprozoo.compound_bn.functional.soft_compound_bn` (x (N, C, L); pi, mean,
    var (K, C), K ≥ 2; returns y, nk, μ̂, σ̂²), computed by compiled fused loops.

    Falls back to the eager function, with a one-time ``RuntimeWarning``, when compilation fails.
    Cost: three generated loops forward (reading x twice or three times, writing r and y) and two
    backward (reading x, ∂L/∂y, r twice, writing ∂L/∂x); O(K) arithmetic per element.
    """
    from reprozoo.compound_bn.functional import soft_compound_bn

    if not _STATE["failed"]:
        try:
            return _CompiledSoftCompoundBN.apply(x, pi.detach().to(x.dtype), mean.detach().to(x.dtype),
                                                 var.detach().to(x.dtype), float(eps),
                                                 bool(detach_responsibilities), weight, bias)
        except Exception as err:  # noqa: BLE001 - any compiler/backend failure: fall back to eager
            _fail(err)
    return soft_compound_bn(x, pi, mean, var, eps, detach_responsibilities, weight, bias)


def compiled_mixture_eval(x: torch.Tensor, pi: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float,
                          pc: torch.Tensor, qc: torch.Tensor) -> torch.Tensor | None:
    """Evaluation with the running mixture in one generated loop: y = Σ_k r_k(x) (P_k x − Q_k).

    x (N, C, L); pi, mean, var, pc, qc (K, C). Returns None when compilation fails (with a one-time
    ``RuntimeWarning``); the caller then uses its eager path. One read of x and one write of y per
    element, O(K) arithmetic.
    """
    if _STATE["failed"]:
        return None
    k = pi.shape[0]
    m = mixture_shift(pi, mean)
    quad = torch.stack(mixture_coefficients(pi, mean, var, eps, m))
    quad = torch.stack((quad[:, 0], quad[:, 1] - quad[:, 0]), 1) if k == 2 else quad
    try:
        return _call("eval_out", _eval_out, x.contiguous(), m, quad, torch.stack((pc, qc - pc * m)))
    except Exception as err:  # noqa: BLE001 - any compiler/backend failure: the caller's eager path
        _fail(err)
        return None
