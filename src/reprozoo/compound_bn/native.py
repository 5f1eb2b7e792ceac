"""A small C kernel for compound BN on CPU: each step of the layer as one loop over the data.

Why a kernel. BN's evaluation is one affine pass over the activation (y = P x − Q per channel). The
mixture's evaluation needs, per element, the log-odds of the components (for K = 2 a per-channel
quadratic, Δℓ(x) = Δa x² + Δb x + Δc), a sigmoid of it, and two affine maps combined:
y = (P_0 x − Q_0) + r_1 (ΔP x − ΔQ). Eager PyTorch runs each of these as its own pass over the tensor
(nine for K = 2), and on this CPU the transcendental alone (an in-place ``sigmoid_``) costs about as much
as BN's whole pass. Written as one loop, the data is read once and written once, like BN, and the
arithmetic (about 25 flops and one division per value, vectorised: the exponential is a polynomial
inlined into the loop, not a libm call) is what remains above BN's cost: the roofline of this layer is the
transcendental per element, not memory.

What is compiled. The C source below, with ``gcc -O3 -march=native -fopenmp -shared -fPIC`` (``$CC`` if
set), once per machine: the shared library is cached under ``reprozoo.core.io.cache_dir("kernels")``,
keyed by a hash of the source, the flags, the compiler's version and the CPU (building takes well under a
second; later processes load the cached file). It is called through ``ctypes`` on the tensors'
``data_ptr()``; ctypes releases the GIL for the call. OpenMP threads follow ``torch.get_num_threads()``
(one thread: no thread pool is started). Loops:

* ``cbn2_eval`` / ``cbnk_eval``: evaluation, K = 2 (a sigmoid) and 2 < K ≤ 8 (a softmax over K,
  blocked so that every inner loop vectorises); each returns the sum of the outputs, which the layer uses
  as its finiteness check (no extra pass).
* ``cbn2_fwd_stats``, ``cbn2_fwd_out``, ``cbn2_bwd_stats``, ``cbn2_bwd_out``: the K = 2 training step of
  :mod:`reprozoo.compound_bn.functional` (same formulas): the responsibilities and the five moments in one
  loop (r stored once for the backward), y in a second; the four sums of the backward in one loop, ∂L/∂x
  in a second. The per-channel algebra between the loops stays in torch (O(C)).

When it is used. Float32, contiguous (N, C, L) tensors on the CPU with L ≥ ``MIN_INNER`` (the inner loop
runs over the L values of one (sample, channel) row, whose coefficients are constants); anything else
(float64, half, channels-last, CUDA, 1-D inputs) takes the torch path, which computes the same values.
The layer's ``backend`` option picks: ``"auto"`` (the kernel when it can be built, else torch with a
one-time ``RuntimeWarning`` naming the reason), ``"native"`` (the kernel, or a ``RuntimeError``),
``"torch"`` (never the kernel). ``REPROZOO_CBN_BACKEND=torch`` in the environment turns it off for
``"auto"`` layers process-wide. Accumulation: per row in float32 (vectorised), across rows in float64.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from reprozoo.core.io import cache_dir

__all__ = ["BACKENDS", "MIN_INNER", "available", "library", "usable"]

#: the layer's ``backend`` choices
BACKENDS = ("auto", "native", "torch")
#: the shortest inner row (L = H·W) the kernel takes; shorter rows leave its vector loops mostly empty
MIN_INNER = 8
#: the largest K of the K > 2 evaluation loop (its per-block stack arrays)
MAX_K = 8

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
typedef int64_t i64;
#define RESTRICT __restrict__

/* e^t: Cephes' expf (range reduction t = n ln 2 + f, degree-6 polynomial in f, relative error ~1e-7),
   branch-free and without floorf (which GCC does not vectorise without -ffast-math), so that it is inlined
   and vectorised (no libm call); t is clamped to [-87, 88]. */
static inline float cbn_exp(float t) {
    t = t < -87.0f ? -87.0f : t;
    t = t > 88.0f ? 88.0f : t;
    const float n = (t * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round to nearest: + 1.5·2^23 */
    float f = t - n * 0.693359375f;
    f = f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

static inline float cbn_sigmoid(float t) { return 1.0f / (1.0f + cbn_exp(-t)); }

/* The evaluation loops are compiled with fast-math (this attribute and -mrecip): the division becomes a
   reciprocal estimate with a Newton step, and e^t a degree-5 polynomial (relative error 2e-7, fitted here
   for |f| <= ln(2)/2); their outputs carry rounding of about 1e-6. NaN still propagates: y contains
   p0 * x. The training loops keep IEEE arithmetic. */
#define FAST __attribute__((optimize("fast-math")))
static inline FAST float cbn_exp_fast(float t) {
    t = t < -87.0f ? -87.0f : t;
    t = t > 88.0f ? 88.0f : t;
    const float n = __builtin_rintf(t * 1.44269504088896341f);
    float f = t - n * 0.693359375f;
    f = f + n * 2.12194440e-4f;
    float p = 0.008327383548021317f;
    p = p * f + 0.0418790802359581f;
    p = p * f + 0.166669100522995f;
    p = p * f + 0.4999929666519165f;
    p = p * f * f + f + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    return p * u.f;
}

/* Evaluation, K = 2. coef (7, C): da, db, dc, p0, q0, dp, dq.
   r = sigmoid((da x + db) x + dc), y = p0 x - q0 + r (dp x - dq). Returns the sum of y. */
FAST double cbn2_eval(const float* RESTRICT x, float* RESTRICT y, i64 N, i64 C, i64 L,
                 const float* RESTRICT coef, int nt) {
    double total = 0.0;
    #pragma omp parallel for num_threads(nt) if(nt > 1) reduction(+:total) schedule(static)
    for (i64 row = 0; row < N * C; ++row) {
        const i64 c = row % C;
        const float a = coef[c], b = coef[C + c], cc = coef[2 * C + c], p0 = coef[3 * C + c],
                    q0 = coef[4 * C + c], dp = coef[5 * C + c], dq = coef[6 * C + c];
        const float* RESTRICT xr = x + row * L;
        float* RESTRICT yr = y + row * L;
        float s = 0.0f;
        #pragma omp simd reduction(+:s)
        for (i64 i = 0; i < L; ++i) {
            const float v = xr[i];
            const float r = 1.0f / (1.0f + cbn_exp_fast(-((a * v + b) * v + cc)));
            const float o = p0 * v - q0 + r * (dp * v - dq);
            yr[i] = o;
            s += o;
        }
        total += s;
    }
    return total;
}

#define BLK 128
/* Evaluation, 2 < K <= 8. coef (5, K, C): a, b, c, P, Q (log-density a x^2 + b x + c up to a constant).
   y = sum_k softmax_k(l) (P_k x - Q_k), in blocks of BLK values. Returns the sum of y. */
FAST double cbnk_eval(const float* RESTRICT x, float* RESTRICT y, i64 N, i64 C, i64 L, i64 K,
                 const float* RESTRICT coef, int nt) {
    double total = 0.0;
    const i64 KC = K * C;
    #pragma omp parallel for num_threads(nt) if(nt > 1) reduction(+:total) schedule(static)
    for (i64 row = 0; row < N * C; ++row) {
        const i64 c = row % C;
        float lk[8][BLK], mx[BLK], se[BLK], acc[BLK];
        float s = 0.0f;
        for (i64 i0 = 0; i0 < L; i0 += BLK) {
            const i64 n = L - i0 < BLK ? L - i0 : BLK;
            const float* RESTRICT xr = x + row * L + i0;
            float* RESTRICT yr = y + row * L + i0;
            for (i64 i = 0; i < n; ++i) { mx[i] = -3.0e38f; se[i] = 0.0f; acc[i] = 0.0f; }
            for (i64 k = 0; k < K; ++k) {
                const float a = coef[k * C + c], b = coef[KC + k * C + c], cc = coef[2 * KC + k * C + c];
                for (i64 i = 0; i < n; ++i) {
                    const float l = (a * xr[i] + b) * xr[i] + cc;
                    lk[k][i] = l;
                    mx[i] = l > mx[i] ? l : mx[i];
                }
            }
            for (i64 k = 0; k < K; ++k) {
                const float p = coef[3 * KC + k * C + c], q = coef[4 * KC + k * C + c];
                #pragma omp simd
                for (i64 i = 0; i < n; ++i) {
                    const float e = cbn_exp_fast(lk[k][i] - mx[i]);
                    se[i] += e;
                    acc[i] += e * (p * xr[i] - q);
                }
            }
            #pragma omp simd reduction(+:s)
            for (i64 i = 0; i < n; ++i) {
                const float o = acc[i] / se[i];
                yr[i] = o;
                s += o;
            }
        }
        total += s;
    }
    return total;
}

/* Training forward, K = 2, loop 1. coef (4, C): m, da, db, dc; xs = x - m, r = sigmoid((da xs + db) xs + dc)
   written to r. sums (5, C), float64: sum xs, sum xs^2, sum r, sum r xs, sum r xs^2. */
void cbn2_fwd_stats(const float* RESTRICT x, float* RESTRICT r, i64 N, i64 C, i64 L,
                    const float* RESTRICT coef, double* RESTRICT sums, int nt) {
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (i64 c = 0; c < C; ++c) {
        const float m = coef[c], a = coef[C + c], b = coef[2 * C + c], cc = coef[3 * C + c];
        double t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0;
        for (i64 n = 0; n < N; ++n) {
            const float* RESTRICT xr = x + (n * C + c) * L;
            float* RESTRICT rr = r + (n * C + c) * L;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
            #pragma omp simd reduction(+:s0, s1, s2, s3, s4)
            for (i64 i = 0; i < L; ++i) {
                const float v = xr[i] - m;
                const float v2 = v * v;
                const float q = cbn_sigmoid((a * v + b) * v + cc);
                rr[i] = q;
                s0 += v; s1 += v2; s2 += q; s3 += q * v; s4 += q * v2;
            }
            t0 += s0; t1 += s1; t2 += s2; t3 += s3; t4 += s4;
        }
        sums[c] = t0; sums[C + c] = t1; sums[2 * C + c] = t2; sums[3 * C + c] = t3; sums[4 * C + c] = t4;
    }
}

/* Training forward, K = 2, loop 2. coef (5, C): m, sg0, q0, dsg, dq; y = xs sg0 - q0 + r (xs dsg - dq). */
void cbn2_fwd_out(const float* RESTRICT x, const float* RESTRICT r, float* RESTRICT y, i64 N, i64 C, i64 L,
                  const float* RESTRICT coef, int nt) {
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (i64 row = 0; row < N * C; ++row) {
        const i64 c = row % C;
        const float m = coef[c], sg0 = coef[C + c], q0 = coef[2 * C + c], dsg = coef[3 * C + c],
                    dq = coef[4 * C + c];
        const float* RESTRICT xr = x + row * L;
        const float* RESTRICT rr = r + row * L;
        float* RESTRICT yr = y + row * L;
        #pragma omp simd
        for (i64 i = 0; i < L; ++i) {
            const float v = xr[i] - m;
            yr[i] = v * sg0 - q0 + rr[i] * (v * dsg - dq);
        }
    }
}

/* Training backward, K = 2, loop 1. sums (4, C), float64: sum g, sum g xs, sum g r, sum g r xs. */
void cbn2_bwd_stats(const float* RESTRICT g, const float* RESTRICT x, const float* RESTRICT r,
                    i64 N, i64 C, i64 L, const float* RESTRICT shift, double* RESTRICT sums, int nt) {
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (i64 c = 0; c < C; ++c) {
        const float m = shift[c];
        double t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (i64 n = 0; n < N; ++n) {
            const i64 off = (n * C + c) * L;
            const float* RESTRICT gr = g + off;
            const float* RESTRICT xr = x + off;
            const float* RESTRICT rr = r + off;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            #pragma omp simd reduction(+:s0, s1, s2, s3)
            for (i64 i = 0; i < L; ++i) {
                const float v = xr[i] - m, gv = gr[i], gq = gv * rr[i];
                s0 += gv; s1 += gv * v; s2 += gq; s3 += gq * v;
            }
            t0 += s0; t1 += s1; t2 += s2; t3 += s3;
        }
        sums[c] = t0; sums[C + c] = t1; sums[2 * C + c] = t2; sums[3 * C + c] = t3;
    }
}

/* Training backward, K = 2, loop 2: dL/dx. coef (13, C): m, sg0, c1_0, c2_0, dsg, dc1, dc2, dsgd, dal, dbe,
   dga, d2a, db (d = component 1 - component 0; see functional.py):
   gx = g sg0 - c1_0 - xs c2_0 + r (g dsg - dc1 - xs dc2)
        [+ r (1 - r) ((g dsg + dbe + xs dal) xs - g dsgd + dga) (2 da xs + db)  unless detach]. */
void cbn2_bwd_out(const float* RESTRICT g, const float* RESTRICT x, const float* RESTRICT r, float* RESTRICT gx,
                  i64 N, i64 C, i64 L, const float* RESTRICT coef, int detach, int nt) {
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (i64 row = 0; row < N * C; ++row) {
        const i64 c = row % C;
        const float m = coef[c], sg0 = coef[C + c], c10 = coef[2 * C + c], c20 = coef[3 * C + c],
                    dsg = coef[4 * C + c], dc1 = coef[5 * C + c], dc2 = coef[6 * C + c],
                    dsgd = coef[7 * C + c], dal = coef[8 * C + c], dbe = coef[9 * C + c],
                    dga = coef[10 * C + c], d2a = coef[11 * C + c], db = coef[12 * C + c];
        const i64 off = row * L;
        const float* RESTRICT gr = g + off;
        const float* RESTRICT xr = x + off;
        const float* RESTRICT rr = r + off;
        float* RESTRICT out = gx + off;
        if (detach) {
            #pragma omp simd
            for (i64 i = 0; i < L; ++i) {
                const float v = xr[i] - m, gv = gr[i], q = rr[i];
                out[i] = gv * sg0 - c10 - v * c20 + q * (gv * dsg - dc1 - v * dc2);
            }
        } else {
            #pragma omp simd
            for (i64 i = 0; i < L; ++i) {
                const float v = xr[i] - m, gv = gr[i], q = rr[i];
                const float base = gv * sg0 - c10 - v * c20 + q * (gv * dsg - dc1 - v * dc2);
                const float dr = (gv * dsg + dbe + v * dal) * v - gv * dsgd + dga;
                out[i] = base + q * (1.0f - q) * dr * (d2a * v + db);
            }
        }
    }
}
"""

_FLAGS = ("-O3", "-march=native", "-mrecip", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": the loaded library or None; "reason": why it is unavailable

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "cbn2_eval": ([_P, _P, _I64, _I64, _I64, _P, _INT], ctypes.c_double),
    "cbnk_eval": ([_P, _P, _I64, _I64, _I64, _I64, _P, _INT], ctypes.c_double),
    "cbn2_fwd_stats": ([_P, _P, _I64, _I64, _I64, _P, _P, _INT], None),
    "cbn2_fwd_out": ([_P, _P, _P, _I64, _I64, _I64, _P, _INT], None),
    "cbn2_bwd_stats": ([_P, _P, _P, _I64, _I64, _I64, _P, _P, _INT], None),
    "cbn2_bwd_out": ([_P, _P, _P, _P, _I64, _I64, _I64, _P, _INT, _INT], None),
}


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    return shutil.which(cc) if cc else (shutil.which("gcc") or shutil.which("cc"))


def _cpu_id() -> str:
    """What the ``-march=native`` code depends on: the machine and its CPU flags."""
    text = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {text}"


def _build(cc: str) -> Path:
    """Compile the source once (cached by a hash of source, flags, compiler and CPU) and return the path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    flags = list(_FLAGS)
    key = hashlib.sha256("\n".join([_SOURCE, " ".join(flags), cc, version, _cpu_id()]).encode()).hexdigest()[:16]
    folder = cache_dir("kernels")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: build in a private temporary folder
        folder = Path(tempfile.mkdtemp(prefix="reprozoo-kernels-"))
    target = folder / f"compound_bn_{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / "compound_bn.c"
        src.write_text(_SOURCE, encoding="utf-8")
        out = Path(tmp) / target.name
        proc = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:  # a compiler without the x86 flags -march=native, -mrecip
            flags = [f for f in flags if f not in ("-march=native", "-mrecip")]
            proc = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True, text=True,
                                  timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(cc).name} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
        os.replace(out, target)  # atomic: concurrent processes see the whole file or none
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernel library (built on first use), or None when it cannot be built (see :func:`reason`)."""
    if "lib" in _STATE:
        return _STATE["lib"]  # type: ignore[return-value]
    with _LOCK:
        if "lib" not in _STATE:
            lib, why = None, ""
            cc = _compiler()
            if cc is None:
                why = "no C compiler found (gcc or cc on PATH, or $CC)"
            else:
                try:
                    lib = ctypes.CDLL(str(_build(cc)))
                    for name, (args, res) in _SIGNATURES.items():
                        fn = getattr(lib, name)
                        fn.argtypes, fn.restype = args, res
                except Exception as err:  # noqa: BLE001 - any build/load failure: the torch path
                    lib, why = None, f"{type(err).__name__}: {err}"
            _STATE["lib"], _STATE["reason"] = lib, why
    return _STATE["lib"]  # type: ignore[return-value]


def reason() -> str:
    """Why the kernel is unavailable ('' when it is available or not yet tried)."""
    return str(_STATE.get("reason", ""))


def available() -> bool:
    """Whether the kernel library builds and loads on this machine (builds it on first call)."""
    return library() is not None


def usable(backend: str, x: torch.Tensor) -> bool:
    """Whether a layer with ``backend`` runs ``x`` (N, C, L) through the kernel: float32, contiguous, CPU,
    L ≥ MIN_INNER, and the library available (``"native"`` raises ``RuntimeError`` when it is not;
    ``"auto"`` warns once and uses torch)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend should be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or (backend == "auto" and os.environ.get("REPROZOO_CBN_BACKEND") == "torch"):
        return False
    if not (x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 3 and x.shape[2] >= MIN_INNER
            and x.is_contiguous() and x.numel() > 0):
        return False
    if library() is None:
        if backend == "native":
            raise RuntimeError(f"compound BN: backend='native' but the C kernel is unavailable ({reason()})")
        if not _STATE.get("warned"):
            _STATE["warned"] = True
            warnings.warn(f"compound BN: the C kernel is unavailable ({reason()}); using the torch path "
                          "(same values, slower)", RuntimeWarning, stacklevel=3)
        return False
    return True


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _f32(t: torch.Tensor) -> torch.Tensor:
    """Per-channel coefficients as a contiguous float32 tensor for the kernel."""
    return t.detach().to(torch.float32).contiguous()


def eval_mixture(x: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Evaluation with the running mixture in one pass: x (N, C, L) float32 contiguous; coef the layer's
    per-channel coefficients, (7, C) for K = 2 or (5, K, C) for 2 < K ≤ MAX_K. Returns (y, Σ y).
    Cost O(K·N·C·L), one read of x and one write of y."""
    lib = library()
    n, c, length = x.shape
    y = torch.empty_like(x)
    coef = _f32(coef)
    nt = torch.get_num_threads()
    if coef.dim() == 2:
        total = lib.cbn2_eval(_ptr(x), _ptr(y), n, c, length, _ptr(coef), nt)
    else:
        total = lib.cbnk_eval(_ptr(x), _ptr(y), n, c, length, coef.shape[1], _ptr(coef), nt)
    return y, total


def forward_stats(x: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K = 2 training, loop 1: coef (4, C) = (m, Δa, Δb, Δc). Returns r_1 (N, C, L) and the sums (5, C)
    float64 (Σ xs, Σ xs², Σ r, Σ r xs, Σ r xs²)."""
    n, c, length = x.shape
    r = torch.empty_like(x)
    sums = torch.empty(5, c, dtype=torch.float64)
    coef = _f32(coef)
    library().cbn2_fwd_stats(_ptr(x), _ptr(r), n, c, length, _ptr(coef), _ptr(sums), torch.get_num_threads())
    return r, sums


def forward_out(x: torch.Tensor, r: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """K = 2 training, loop 2: coef (5, C) = (m, sg_0, q_0, Δsg, Δq); y = xs sg_0 − q_0 + r (xs Δsg − Δq)."""
    n, c, length = x.shape
    y = torch.empty_like(x)
    coef = _f32(coef)
    library().cbn2_fwd_out(_ptr(x), _ptr(r), _ptr(y), n, c, length, _ptr(coef), torch.get_num_threads())
    return y


def backward_stats(g: torch.Tensor, x: torch.Tensor, r: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """K = 2 backward, loop 1: the sums (4, C) float64 Σ g, Σ g xs, Σ g r, Σ g r xs."""
    n, c, length = x.shape
    sums = torch.empty(4, c, dtype=torch.float64)
    shift = _f32(shift)
    library().cbn2_bwd_stats(_ptr(g), _ptr(x), _ptr(r), n, c, length, _ptr(shift), _ptr(sums),
                             torch.get_num_threads())
    return sums


def backward_out(g: torch.Tensor, x: torch.Tensor, r: torch.Tensor, coef: torch.Tensor, detach: bool) -> torch.Tensor:
    """K = 2 backward, loop 2: ∂L/∂x from coef (13, C) (see the C source)."""
    n, c, length = x.shape
    gx = torch.empty_like(x)
    coef = _f32(coef)
    library().cbn2_bwd_out(_ptr(g), _ptr(x), _ptr(r), _ptr(gx), n, c, length, _ptr(coef), int(bool(detach)),
                           torch.get_num_threads())
    return gx
