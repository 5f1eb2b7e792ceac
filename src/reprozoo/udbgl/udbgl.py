"""UDBGL: Unified and Discrete Bipartite Graph Learning for multi-view clustering.

Fang, Huang, Cai, Wang, He, Tang, "Efficient Multi-view Clustering via Unified and Discrete
Bipartite Graph Learning", IEEE TNNLS 2023, doi:10.1109/TNNLS.2023.3261460 (arXiv:2209.04187).

A port of the authors' MATLAB code (``UDBGL.m``, repository ``huangdonghere/UDBGL``) in the
order of its algorithm box:

1. per-view min-max scaling, anchors by k-means on the concatenated views;
2. initial anchor graphs Z_v (Gaussian weights on the 5 nearest anchors);
3. alternate the P-step (structured bipartite graph with the Laplacian-rank constraint),
   the Z-step (one simplex-constrained QP per sample and view, all rows at once) and the
   delta-step (view weights, a V-dimensional QP on the simplex);
4. read the labels off the connected components of the final structured bipartite graph.

Objective (the paper's overall model)::

    min  sum_v ||X_v^T - A_v^T Z_v^T||_F^2 + alpha ||Z_v||_F^2 + beta ||sum_v delta_v Z_v - P||_F^2
    s.t. rows of Z_v and P on the simplex, delta on the simplex, rank(L_P) = n + m - c,

with the rank constraint relaxed to ``2 lambda tr(F^T L F)`` inside the P-step.

Every array here is dense NumPy float64: the graphs are n x m with m (the number of anchors)
small, so one pass over them costs O(n m) and the whole fit is linear in n.
"""

from __future__ import annotations

import itertools
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions

from reprozoo.core.checks import check_views
from reprozoo.core.seed import check_random_state
from reprozoo.datasets.multiview import cell_views

__all__ = [
    "UDBGL",
    "RankConstraintWarning",
    "minmax_scale_views",
    "project_simplex",
    "solve_simplex_qp",
    "solve_view_weights",
    "compute_anchors",
    "knn_anchor_graph",
    "structured_bipartite_graph",
    "bipartite_components",
    "udbgl_objective",
    "z_step",
    "delta_step",
]

#: Reference constants (``UDBGL.m``): outer iterations default, inner P-step iterations,
#: initial lambda, nearest anchors of the initial graph, k-means subsample size.
P_STEP_ITER = 50
P_STEP_LAMBDA = 0.1
N_NEAREST_ANCHORS = 5
ANCHOR_SUBSAMPLE = 10_000
#: Port addition: at most this many further lambda updates when the reference schedule ends
#: without exactly c components.
EXTRA_LAMBDA_ITER = 60
_RANK_EPS = 1e-7  # the reference's tolerance on sum of the top-c squared singular values
#: what ``UDBGL.fit`` sets; reading one before ``fit`` raises ``NotFittedError``
_FITTED_ATTRIBUTES = frozenset({
    "labels_", "view_weights_", "anchors_", "bipartite_graph_", "anchor_graphs_", "embedding_", "objective_",
    "n_iter_", "n_components_found_", "label_path_", "fallback_used_", "n_features_in_",
})


class RankConstraintWarning(UserWarning):
    """The structured bipartite graph did not end with exactly ``n_clusters`` components.

    Raised (as a warning) when UDBGL had to search lambda beyond the reference schedule,
    or fall back to k-means on the spectral embedding; ``UDBGL.label_path_`` says which.
    """


# ----------------------------------------------------------------------------------------------
# Building blocks (assume validated input)
# ----------------------------------------------------------------------------------------------
def minmax_scale_views(views: list[np.ndarray]) -> list[np.ndarray]:
    """Min-max scale every feature of every view to [0, 1] (algorithm step 1, as the reference code).

    A constant feature gives 0/0 in the reference code, which then sets the NaN entries to 1;
    the same is done here. Input: list of (n, d_v) float arrays; output: new arrays, same shapes.
    """
    out = []
    for x in views:
        lo = x.min(axis=0)
        span = x.max(axis=0) - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            y = (x - lo) / span
        y[~np.isfinite(y)] = 1.0
        out.append(y)
    return out


def project_simplex(v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Euclidean projection of each row of ``v`` onto the probability simplex.

    Solves ``min_x 0.5 ||x - v_i||^2  s.t. x >= 0, 1^T x = 1`` for every row at once by the
    sort-and-threshold rule (exact, no iteration). With ``mask`` the projection is restricted
    to the entries where the mask is True (the others are 0), as the reference P-step does on
    the support of B; a row with an empty mask comes back all zero.

    Parameters
    ----------
    v : ndarray, shape (n, k) or (k,)
    mask : bool ndarray of the same shape, optional

    Returns
    -------
    ndarray of the shape of ``v``; rows are >= 0 and sum to 1 (or are 0 for an empty mask).

    Complexity O(n k log k).
    """
    v = np.asarray(v, dtype=np.float64)
    one_d = v.ndim == 1
    if one_d:
        v = v[None, :]
        mask = None if mask is None else np.asarray(mask)[None, :]
    n, k = v.shape
    j = np.arange(1, k + 1, dtype=np.float64)
    if mask is None:
        u = -np.sort(-v, axis=1)
        css = np.cumsum(u, axis=1) - 1.0
        cond = u - css / j > 0
    else:
        w = np.where(mask, v, -np.inf)
        u = -np.sort(-w, axis=1)
        finite = np.isfinite(u)
        css = np.cumsum(np.where(finite, u, 0.0), axis=1) - 1.0
        with np.errstate(invalid="ignore"):
            cond = finite & (u - css / j > 0)
    has = cond.any(axis=1)
    rho = k - 1 - np.argmax(cond[:, ::-1], axis=1)  # last index where the condition holds
    theta = css[np.arange(n), rho] / (rho + 1.0)
    x = np.maximum(v - theta[:, None], 0.0)
    if mask is not None:
        x = np.where(mask, x, 0.0)
    x[~has] = 0.0
    return x[0] if one_d else x


def solve_simplex_qp(
    H: np.ndarray,
    F: np.ndarray,
    Z0: np.ndarray | None = None,
    *,
    max_iter: int = 500,
    tol: float = 1e-10,
    polish_every: int = 10,
) -> tuple[np.ndarray, int]:
    """Solve ``min_z 0.5 z^T H z + f_i^T z  s.t. z >= 0, 1^T z = 1`` for every row ``f_i`` of F.

    Accelerated projected gradient (FISTA) with the fixed step 1/L, L the largest eigenvalue
    of H (shared by all rows, so one eigendecomposition serves all n problems), with per-row
    gradient-based momentum restart. Every ``polish_every`` iterations the support found so
    far is tested: the equality-constrained QP on it is solved exactly (one batched KKT solve
    for all rows) and a row whose solution satisfies every KKT condition (primal z >= 0 and
    dual ``(Hz + f)_j + mu >= 0`` off the support) is final and leaves the loop. So rows end
    at the exact minimiser (as the reference's default ``quadprog``) once their support is
    identified, usually long before plain projected gradient would converge. A row also
    stops when no entry moves by ``tol``; all stop after ``max_iter`` iterations (the
    reference ``SimplexQP_acc`` also caps at 500).

    Parameters
    ----------
    H : ndarray, shape (m, m), symmetric positive semi-definite
    F : ndarray, shape (n, m), one linear term per row
    Z0 : ndarray, shape (n, m), optional warm start (rows on the simplex); default uniform 1/m
    max_iter, tol, polish_every : see above

    Returns
    -------
    Z : ndarray, shape (n, m), rows on the simplex
    n_iter : int, iterations run (the slowest row)

    Complexity O(n m^2) per iteration and O(n m^3) per polish; no Python loop over rows.
    """
    n, m = F.shape
    lip = float(np.linalg.eigvalsh(H)[-1])
    step = 1.0 / max(lip, 1e-12)
    x = np.full((n, m), 1.0 / m) if Z0 is None else np.array(Z0, dtype=np.float64)
    y = x.copy()
    t = np.ones(n)
    act = np.arange(n)  # rows still iterating
    it = 0
    for it in range(1, max_iter + 1):
        xa, ya, ta, fa = x[act], y[act], t[act], F[act]
        g = ya @ H + fa
        xn = project_simplex(ya - step * g)
        dx = xn - xa
        # restart the momentum of rows whose step goes against the gradient (O'Donoghue-Candes)
        restart = np.einsum("ij,ij->i", g, dx) > 0
        tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * ta * ta))
        mom = np.where(restart, 0.0, (ta - 1.0) / tn)
        x[act] = xn
        y[act] = xn + mom[:, None] * dx
        t[act] = np.where(restart, 1.0, tn)
        done = np.abs(dx).max(axis=1) < tol
        if it % polish_every == 0 or it == max_iter:
            ok, z = _polish_support(H, fa, xn)
            x[act[ok]] = z[ok]
            done |= ok
        act = act[~done]
        if act.size == 0:
            break
    return x, it


def _polish_support(H: np.ndarray, F: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact solution of each row's QP on the support of the matching row of X, and a KKT test.

    For support S: ``H_SS z_S + mu 1 = -f_S, 1^T z_S = 1`` (batched (m+1)-square solves,
    off-support coordinates pinned to 0). Returns (rows that satisfy every KKT condition, z).
    """
    n, m = X.shape
    S = X > 0
    K = np.zeros((n, m + 1, m + 1))
    K[:, :m, :m] = np.where(S[:, :, None] & S[:, None, :], H[None], 0.0)
    diag = np.arange(m)
    K[:, diag, diag] += ~S
    K[:, :m, m] = S
    K[:, m, :m] = S
    rhs = np.concatenate([np.where(S, -F, 0.0), np.ones((n, 1))], axis=1)
    try:
        sol = np.linalg.solve(K, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # a singular H (alpha = 0): keep the iterates
        return np.zeros(n, dtype=bool), X
    z, mu = sol[:, :m], sol[:, m]
    grad = z @ H + F
    scale = 1e-9 * (1.0 + np.abs(grad).max(axis=1))
    primal = np.where(S, z >= -1e-12, True).all(axis=1)
    dual = np.where(S, True, grad + mu[:, None] >= -scale[:, None]).all(axis=1)
    ok = primal & dual & np.isfinite(sol).all(axis=1)
    z = np.maximum(z, 0.0)
    z /= np.where(ok, z.sum(axis=1), 1.0)[:, None]
    return ok, z


def solve_view_weights(G: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The delta-step: ``min_d d^T G d - s^T d  s.t. d >= 0, 1^T d = 1`` exactly.

    This is ``quadprog(2G, -s, ..., ones, 1, 0, 1)`` of the reference with
    ``G_uv = <Z_u, Z_v>`` and ``s_v = 2 <Z_v, P>`` (algorithm step 3, delta-step). For V <= 12 views
    every support set is tried (the KKT system of the equality-constrained problem on it);
    the feasible candidate of least objective is the global minimum of this convex QP.
    Above 12 views the projected-gradient solver is used.

    Parameters
    ----------
    G : ndarray, shape (V, V), symmetric positive semi-definite
    s : ndarray, shape (V,)

    Returns
    -------
    ndarray, shape (V,), on the simplex.
    """
    V = G.shape[0]
    if V == 1:
        return np.ones(1)
    if V > 12:
        z, _ = solve_simplex_qp(2.0 * G, -s[None, :], max_iter=20_000, tol=1e-14)
        return z[0]
    scale = max(np.abs(G).max(), np.abs(s).max(), 1e-300)
    Gs, ss = G / scale, s / scale
    best, best_obj = None, np.inf
    for size in range(1, V + 1):
        for sup in itertools.combinations(range(V), size):
            idx = list(sup)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2.0 * Gs[np.ix_(idx, idx)]
            kkt[:size, size] = 1.0
            kkt[size, :size] = 1.0
            rhs = np.concatenate([ss[idx], [1.0]])
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            if np.abs(kkt @ sol - rhs).max() > 1e-9 or sol[:size].min() < -1e-12:
                continue
            d = np.zeros(V)
            d[idx] = np.maximum(sol[:size], 0.0)
            d /= d.sum()
            obj = d @ Gs @ d - ss @ d
            if obj < best_obj - 1e-15:
                best, best_obj = d, obj
    return best


def compute_anchors(x_concat: np.ndarray, n_anchors: int, rng: np.random.Generator) -> np.ndarray:
    """Anchors: k-means centroids of the concatenated, scaled views (algorithm step 1; reference ``litekmeans``).

    As ``litekmeans(..., 'MaxIter', 20, 'Replicates', 2)`` of the reference: random samples as
    the initial centres, 20 Lloyd iterations, 2 restarts; fitted on a random subsample of
    10,000 rows when n > 10,000. Returns an (m, sum_v d_v) array.
    """
    n = x_concat.shape[0]
    sub = x_concat
    if n > ANCHOR_SUBSAMPLE:
        sub = x_concat[np.sort(rng.choice(n, ANCHOR_SUBSAMPLE, replace=False))]
    km = KMeans(
        n_clusters=n_anchors, init="random", n_init=2, max_iter=20, algorithm="lloyd",
        random_state=int(rng.integers(2**31 - 1)),
    )
    return km.fit(sub).cluster_centers_


def knn_anchor_graph(x: np.ndarray, anchors: np.ndarray, k: int = N_NEAREST_ANCHORS) -> np.ndarray:
    """Initial anchor graph of one view (the reference ``my_KNN``; algorithm step 2).

    Squared distances d_ij of the n samples to the m anchors, sigma = their mean, weights
    ``exp(-d / (2 sigma^2))`` on the k nearest anchors, rows normalised to sum to 1.
    The row minimum is subtracted before the exponential (the normalisation cancels it) so a
    far-away row cannot underflow to all zeros. Returns a dense (n, m) array; O(n m d).
    """
    d = (x * x).sum(1)[:, None] + (anchors * anchors).sum(1)[None, :] - 2.0 * x @ anchors.T
    np.maximum(d, 0.0, out=d)
    sigma = d.mean()
    k = min(k, anchors.shape[0])
    idx = np.argpartition(d, k - 1, axis=1)[:, :k]
    dk = np.take_along_axis(d, idx, axis=1)
    w = np.exp(-(dk - dk.min(1, keepdims=True)) / (2.0 * max(sigma, 1e-300) ** 2))
    w /= w.sum(1, keepdims=True)
    z = np.zeros_like(d)
    np.put_along_axis(z, idx, w, axis=1)
    return z


def bipartite_components(S: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the (n + m)-node bipartite graph with n x m weights ``S``.

    Returns the number of components that hold at least one sample (an anchor with no edge is
    not a cluster) and the samples' component labels, relabelled 0..k-1 in order of first
    appearance. Uses ``scipy.sparse.csgraph.connected_components``; O(nnz(S)).
    """
    n, m = S.shape
    B = sp.csr_matrix(S > 0)
    adj = sp.bmat([[None, B], [B.T, None]], format="csr", dtype=np.int8)
    _, lab = connected_components(adj, directed=False)
    _, first, inv = np.unique(lab[:n], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return int(first.size), order[inv].astype(np.int64)


def _inv_sqrt(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d)
    pos = d > 0
    out[pos] = 1.0 / np.sqrt(d[pos])
    return out


def _top_singular(S: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalise S and get its top-c singular pairs from the m x m eigenproblem (the eig trick).

    ``S1 = D_r^{-1/2} S D_c^{-1/2}``; eigenvectors V of ``S1^T S1`` (m x m, O(n m^2)), U = S1 V / sigma,
    both scaled by sqrt(2)/2 so that F = [U; V] has orthonormal columns. Returns U (n, c),
    V (m, c), all eigenvalues (sigma^2, descending), and the row/column scales D_r^{-1/2}, D_c^{-1/2}.
    """
    dr = _inv_sqrt(S.sum(1))
    dc = _inv_sqrt(S.sum(0))
    S1 = S * dr[:, None] * dc[None, :]
    M = S1.T @ S1
    ev, vec = np.linalg.eigh(0.5 * (M + M.T))
    ev, vec = ev[::-1], vec[:, ::-1]
    V = vec[:, :c]
    sig = np.sqrt(np.maximum(ev[:c], 0.0))
    U = (S1 @ V) * np.where(sig > 1e-12, 1.0 / np.maximum(sig, 1e-300), 0.0)[None, :]
    h = np.sqrt(2.0) / 2.0
    return h * U, h * V, ev, dr, dc


def _s_update(B, support, U1, V1, lam):
    """One inner update of the structured graph: row- and column-wise simplex projections.

    ``d_ij = ||u_i - v_j||^2`` (scaled embeddings), ``s_i = proj(b_i - lam/2 d_i)`` over the
    support of row i, the same for every column, then ``S = (S_row + S_col^T) / 2``.
    """
    dist = (U1 * U1).sum(1)[:, None] + (V1 * V1).sum(1)[None, :] - 2.0 * U1 @ V1.T
    np.maximum(dist, 0.0, out=dist)
    T = B - 0.5 * lam * dist
    s_row = project_simplex(T, support)
    s_col = project_simplex(T.T, support.T).T
    return 0.5 * (s_row + s_col)


def structured_bipartite_graph(
    B: np.ndarray,
    n_clusters: int,
    *,
    n_iter: int = P_STEP_ITER,
    lam: float = P_STEP_LAMBDA,
    extra_iter: int = EXTRA_LAMBDA_ITER,
) -> dict:
    """The P-step: the structured bipartite graph nearest to B with exactly c components.

    Solves ``min_{S >= 0, S1 = 1, S^T 1 = 1} ||S - B||^2 + 2 lam tr(F^T L_S F)`` as the
    reference ``coclustering_bipartite_fast1`` (Nie et al. 2017's structured optimal bipartite
    graph), the P-step of algorithm step 3:

    - F = [U; V] from the top-c singular pairs of the normalised graph via the m x m eigenproblem;
    - ``n_iter`` inner updates, each: distances on the support of B (the first with the
      reference's fixed scales D1 = 1, D2 = 10, then the degree scales of the current S),
      row and column simplex projections, S = (S_row + S_col^T)/2, new singular pairs;
      lambda doubled when the top-c squared singular values sum below c - 1e-7 (too few
      components), else halved. As in the reference, all ``n_iter`` updates run (its early
      break needs exact equality) and the last S is the result.
    - Port addition: if that S has not exactly c components (counted on the graph), lambda is
      searched further, up to ``extra_iter`` updates: doubled while there are too few
      components, halved while too many, the factor square-rooted at each change of direction;
      the search stops at the first S with exactly c components.

    Parameters
    ----------
    B : ndarray, shape (n, m), rows on the simplex (the fused graph sum_v delta_v Z_v)
    n_clusters : int, c

    Returns
    -------
    dict with ``S`` (n, m) the graph P, ``U`` (n, c) and ``V`` (m, c) its spectral embedding,
    ``n_components_reference`` (components after the reference schedule), ``n_components``
    (after the extra search), ``labels`` (component labels of the samples), ``lam``,
    ``extra_iter`` (extra updates used).

    Complexity O(n_iter * n m (m + log n)), linear in n.
    """
    c = n_clusters
    support = B > 0
    U, V, _, _, _ = _top_singular(B, c)
    n, m = B.shape
    d1 = np.ones(n)  # reference: the first update uses the fixed scales D1 = 1, D2 = 10
    d2 = np.full(m, 10.0)
    S = B
    for _ in range(n_iter):
        S = _s_update(B, support, U * d1[:, None], V * d2[:, None], lam)
        U, V, ev, d1, d2 = _top_singular(S, c)
        fn = ev[:c].sum()
        if fn < c - _RANK_EPS:
            lam *= 2.0
        elif fn > c - _RANK_EPS:
            lam /= 2.0
        else:  # exact equality: the reference's only early break
            break
    k_ref, labels = bipartite_components(S)
    k, used, factor, last = k_ref, 0, 2.0, 0
    while k != c and used < extra_iter:
        direction = 1 if k < c else -1
        if last and direction != last:
            factor = np.sqrt(factor)
        last = direction
        lam = lam * factor**direction
        S = _s_update(B, support, U * d1[:, None], V * d2[:, None], lam)
        U, V, _, d1, d2 = _top_singular(S, c)
        k, labels = bipartite_components(S)
        used += 1
    return {"S": S, "U": U, "V": V, "n_components_reference": k_ref, "n_components": k,
            "labels": labels, "lam": lam, "extra_iter": used}


def z_step(XA, AA, Z, P, delta, alpha, beta) -> list[np.ndarray]:
    """The Z-step: every view's anchor graph, all samples at once (algorithm step 3, Z-step).

    For view v and sample j: ``min_z 0.5 z^T H_v z + f_j^T z`` on the simplex with
    ``H_v = 2 (A_v A_v^T + (alpha + beta delta_v^2) I)`` and
    ``f_j = -2 A_v x_j + 2 beta delta_v (sum_{u != v} delta_u z_j^u - p_j)``. Jacobi-style as
    the reference: the other views enter with their previous Z. ``XA[v] = X_v A_v^T`` (n, m)
    and ``AA[v] = A_v A_v^T`` (m, m) are precomputed; each previous Z_v warm-starts its solver.
    Returns the new list of (n, m) graphs. O(n m^2) per solver iteration and view.
    """
    m = P.shape[1]
    fused = sum(d * z for d, z in zip(delta, Z, strict=True))
    out = []
    for v, z_old in enumerate(Z):
        H = 2.0 * (AA[v] + (alpha + beta * delta[v] ** 2) * np.eye(m))
        others = fused - delta[v] * z_old
        F = -2.0 * XA[v] + 2.0 * beta * delta[v] * (others - P)
        out.append(solve_simplex_qp(H, F, z_old)[0])
    return out


def delta_step(Z: list[np.ndarray], P: np.ndarray) -> np.ndarray:
    """The delta-step: view weights minimising ``||sum_v delta_v Z_v - P||_F^2`` on the simplex.

    Gram matrix ``G_uv = <Z_u, Z_v>`` and linear term ``s_v = 2 <Z_v, P>`` (algorithm step 3), solved
    exactly by :func:`solve_view_weights`. O(n m V^2).
    """
    flat = np.stack([z.ravel() for z in Z])
    return solve_view_weights(flat @ flat.T, 2.0 * flat @ P.ravel())


def udbgl_objective(views, anchors, Z, P, delta, alpha, beta, norms=None, xa=None) -> float:
    """The UDBGL objective (the paper's overall model, reference ``obj_value``) at (Z, P, delta).

    ``sum_v ||X_v - Z_v A_v||_F^2 + alpha ||Z_v||_F^2 + beta ||sum_v delta_v Z_v - P||_F^2``,
    evaluated in O(n m (m + d)) through ``||X||^2 - 2 <Z, X A^T> + <Z A A^T, Z>``;
    ``norms`` (||X_v||^2) and ``xa`` (X_v A_v^T) may be passed precomputed.
    """
    res = 0.0
    fused = np.zeros_like(P)
    for v, (x, a, z) in enumerate(zip(views, anchors, Z, strict=True)):
        nx = float((x * x).sum()) if norms is None else norms[v]
        xat = x @ a.T if xa is None else xa[v]
        rec = nx - 2.0 * float((z * xat).sum()) + float(((z @ (a @ a.T)) * z).sum())
        res += max(rec, 0.0) + alpha * float((z * z).sum())
        fused += delta[v] * z
    return res + beta * float(((fused - P) ** 2).sum())


# ----------------------------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------------------------
class UDBGL(ClusterMixin, BaseEstimator):
    """Unified and Discrete Bipartite Graph Learning (UDBGL) multi-view clustering.

    Learns one anchor graph Z_v per view on m anchors shared by all views, fuses them with
    learned view weights delta into a structured bipartite graph P with exactly c connected
    components (a Laplacian-rank constraint), and reads the clusters off those components:
    no k-means on an embedding. Linear in the number of samples.

    Parameters
    ----------
    n_clusters : int
        c, the number of clusters, 2 <= c <= n_samples.
    n_anchors : int or None, default None
        m, the number of anchors; None means m = c (the authors' demo). n_clusters <= m <= n.
    alpha : float, default 1e-3
        Weight of the ridge term ``alpha ||Z_v||_F^2`` (>= 0).
    beta : float, default 1e-5
        Weight of the fusion term ``beta ||sum_v delta_v Z_v - P||_F^2`` (>= 0).
    max_iter : int, default 20
        Outer iterations (P-, Z-, delta-steps), >= 1.
    tol : float, default 1e-5
        Stop when the objective changes by less than ``tol`` or delta by less than ``tol``
        (Euclidean norm); absolute, as in the reference.
    qp_solver : {"apg"}, default "apg"
        Solver of the Z-step QPs: accelerated projected gradient onto the simplex, all rows
        of a view at once (see :func:`solve_simplex_qp`).
    rank_search : {"extended", "reference"}, default "extended"
        "reference": every P-step runs the authors' lambda schedule only (50 updates); if the
        final graph has not exactly c components the labels come from k-means on the spectral
        embedding (the documented fallback). "extended" (port addition): after that schedule,
        lambda is searched further (at most 60 updates) in every P-step until the graph has
        exactly c components; the fallback is then rarely needed.
    view_dims : sequence of int or None, default None
        None: ``views`` is a list of arrays (or a MATLAB cell array). Given: ``views`` is one
        2-D array, the views side by side, with view v in the next ``view_dims[v]`` columns:
        the form a scikit-learn ``Pipeline`` or ``GridSearchCV`` can pass around.
    random_state : None, int or numpy Generator, default None
        Seeds the anchor k-means (and the k-means fallback).

    Attributes
    ----------
    labels_ : ndarray of int64, shape (n_samples,)
        Cluster labels 0..c-1; exactly ``n_clusters`` distinct values.
    view_weights_ : ndarray, shape (n_views,)
        delta, on the simplex.
    anchors_ : list of ndarray, shape (m, d_v)
        The anchors of each view (columns of the shared k-means centroids), in the per-view
        min-max-scaled feature space the algorithm works in, not the input's units.
    bipartite_graph_ : scipy.sparse.csr_matrix, shape (n_samples, m)
        P, the final structured bipartite graph.
    anchor_graphs_ : list of ndarray, shape (n_samples, m)
        The learned Z_v, rows on the simplex.
    embedding_ : ndarray, shape (n_samples + m, c)
        F = [U; V] of the final P-step.
    objective_ : list of float
        Objective after initialisation and after each outer iteration.
    n_iter_ : int
        Outer iterations run.
    n_components_found_ : int
        Components the final P-step had after the authors' 50-update lambda schedule, before
        any further search. With ``rank_search="reference"`` the whole run follows the authors'
        schedule, so this is what their code would label; with "extended" the earlier P-steps
        used the further search, the trajectory differs, and it is only a diagnostic of this run.
    label_path_ : {"components", "lambda_search", "kmeans_fallback"}
        How the labels were obtained: the components after the reference schedule; after the
        further lambda search (port addition, ``rank_search="extended"`` only); or k-means on the
        rows of U (port addition).
    fallback_used_ : bool
        ``label_path_ == "kmeans_fallback"``.

    Raises
    ------
    TypeError
        ``views`` not a list of numeric 2-D arrays; a parameter of the wrong type.
    sklearn.exceptions.NotFittedError
        A fitted attribute read before ``fit``.
    ValueError
        Views with different numbers of rows, NaN/inf, an empty or 1-D view, a constant view
        (every feature takes one value), fewer distinct samples than n_clusters, n_clusters < 2
        or > n_samples, n_anchors < n_clusters or > n_samples, a negative alpha/beta/tol.

    Warns
    -----
    RankConstraintWarning
        When the final P-step fell back to k-means on the spectral embedding (the lambda
        search, which usually restores exactly c components, is silent; see ``label_path_``).

    Notes
    -----
    Complexity per outer iteration O(n m (m + d)) with d = sum_v d_v, plus m x m
    eigendecompositions: linear in n. Memory O(n (m V + d)).
    Deviations from the reference code are listed in the method card (README.md).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> centers = rng.normal(scale=5, size=(3, 4))
    >>> y = np.repeat(np.arange(3), 30)
    >>> views = [centers[y] + rng.normal(size=(90, 4)), (centers[y] @ rng.normal(size=(4, 3)))
    ...          + rng.normal(size=(90, 3))]
    >>> model = UDBGL(n_clusters=3, random_state=0).fit(views)
    >>> model.labels_.shape, len(np.unique(model.labels_))
    ((90,), 3)
    """

    #: Every parameter's type and range, checked by scikit-learn's parameter validation at ``fit``
    #: (the message names the parameter). Cross-parameter rules (n_clusters <= n_samples,
    #: n_clusters <= n_anchors <= n_samples, view_dims summing to the width) are checked in ``fit``.
    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 2, None, closed="left")],
        "n_anchors": [None, Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "qp_solver": [StrOptions({"apg"})],
        "rank_search": [StrOptions({"reference", "extended"})],
        "view_dims": [None, "array-like"],
        "random_state": ["random_state", np.random.Generator],
    }

    def __init__(
        self,
        n_clusters: int,
        n_anchors: int | None = None,
        alpha: float = 1e-3,
        beta: float = 1e-5,
        max_iter: int = 20,
        tol: float = 1e-5,
        qp_solver: str = "apg",
        rank_search: str = "extended",
        view_dims=None,
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.n_anchors = n_anchors
        self.alpha = alpha
        self.beta = beta
        self.max_iter = max_iter
        self.tol = tol
        self.qp_solver = qp_solver
        self.rank_search = rank_search
        self.view_dims = view_dims
        self.random_state = random_state

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: a fitted attribute read before fit
        if name in _FITTED_ATTRIBUTES:
            raise NotFittedError(f"This UDBGL instance is not fitted yet: call fit(views) before reading {name}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- validation ------------------------------------------------------------------------
    def _split_views(self, views) -> list:
        """The views as a list: a list/tuple as given, a MATLAB cell array flattened, or a 2-D array
        (the views side by side, as in a scikit-learn Pipeline) cut at ``view_dims``."""
        if self.view_dims is None:
            if isinstance(views, np.ndarray) and views.dtype != object and views.ndim == 2:
                raise TypeError(
                    f"views should be a list of 2-D arrays (one per view), got a single array of shape "
                    f"{views.shape}; pass [X] for one view, or the views side by side with "
                    "view_dims=(d_1, ..., d_V)")
            return cell_views(views)
        dims = np.asarray(self.view_dims)
        if dims.ndim != 1 or dims.size == 0 or not np.issubdtype(dims.dtype, np.integer) or (dims < 1).any():
            raise ValueError(f"view_dims should be a non-empty sequence of positive ints (one per view), "
                             f"got {self.view_dims!r}")
        if not hasattr(views, "shape") or len(views.shape) != 2:
            raise TypeError("with view_dims set, views should be one 2-D array of shape (n_samples, "
                            f"{int(dims.sum())}) (the views side by side), got {type(views).__name__}")
        if views.shape[1] != dims.sum():
            raise ValueError(f"view_dims={tuple(int(d) for d in dims)} sums to {int(dims.sum())}, but views has "
                             f"{views.shape[1]} columns")
        views = np.asarray(views)
        return np.split(views, np.cumsum(dims)[:-1], axis=1)

    def _validate(self, views):
        self._validate_params()
        X = check_views(self._split_views(views), "views", min_samples=1)
        n = X[0].shape[0]
        c = int(self.n_clusters)
        if c > n:
            raise ValueError(f"n_clusters={c} should be <= n_samples={n}; lower n_clusters")
        for i, x in enumerate(X):
            if np.all(x.max(axis=0) == x.min(axis=0)):
                raise ValueError(f"views[{i}] is constant (every feature takes a single value) and carries no "
                                 "cluster information; remove it")
        n_distinct = np.unique(np.hstack(X), axis=0).shape[0]
        if n_distinct < c:
            raise ValueError(f"views hold only {n_distinct} distinct samples, fewer than n_clusters={c}; "
                             "lower n_clusters")
        m = c if self.n_anchors is None else int(self.n_anchors)
        if m < c:
            raise ValueError(f"n_anchors={m} should be >= n_clusters={c}; raise n_anchors or pass None (m = c)")
        if m > n:
            raise ValueError(f"n_anchors={m} should be <= n_samples={n}; lower n_anchors")
        return X, n, c, m

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, views, y=None):
        """Fit UDBGL to multi-view data.

        Parameters
        ----------
        views : list of array-like, each of shape (n_samples, d_v); or array of shape (n_samples, sum d_v)
            The views, samples as rows, all with the same n_samples; finite numbers. A MATLAB
            cell array (``scipy.io.loadmat(f)["X"]``, object array of shape (V, 1) or (1, V)) is
            flattened into its views. One 2-D array (the views side by side) needs ``view_dims``.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        TypeError, ValueError
            For bad views or parameters (see the class docstring); the message names the argument.
        """
        X, n, c, m = self._validate(views)
        rng = check_random_state(self.random_state)
        alpha, beta = float(self.alpha), float(self.beta)
        n_views = len(X)
        # reference: the authors' lambda schedule only; extended: the further lambda search (port addition)
        extra = EXTRA_LAMBDA_ITER if self.rank_search == "extended" else 0

        # 1. preprocess and anchors (min-max scaling; k-means on the concatenated views)
        X = minmax_scale_views(X)
        dims = np.cumsum([0] + [x.shape[1] for x in X])
        centers = compute_anchors(np.hstack(X), m, rng)
        A = [centers[:, dims[v]:dims[v + 1]] for v in range(n_views)]

        # 2. init: Gaussian kNN anchor graphs (reference ``my_KNN``), uniform delta
        Z = [knn_anchor_graph(x, a) for x, a in zip(X, A, strict=True)]
        delta = np.full(n_views, 1.0 / n_views)
        P = sum(d * z for d, z in zip(delta, Z, strict=True))
        norms = [float((x * x).sum()) for x in X]
        XA = [x @ a.T for x, a in zip(X, A, strict=True)]  # constant over iterations
        AA = [a @ a.T for a in A]
        objective = [udbgl_objective(X, A, Z, P, delta, alpha, beta, norms, XA)]

        # 3. alternate the P-, Z- and delta-steps
        n_iter = 0
        for _ in range(int(self.max_iter)):
            n_iter += 1
            # P-step: structured bipartite graph of the fused graph B = sum_v delta_v Z_v
            fused = sum(d * z for d, z in zip(delta, Z, strict=True))
            P = structured_bipartite_graph(fused, c, extra_iter=extra)["S"]
            # Z-step: one simplex QP per sample and view, vectorised over samples
            Z = z_step(XA, AA, Z, P, delta, alpha, beta)
            # delta-step: view weights on the simplex
            delta_new = delta_step(Z, P)
            objective.append(udbgl_objective(X, A, Z, P, delta_new, alpha, beta, norms, XA))
            d_change = float(np.linalg.norm(delta_new - delta))
            delta = delta_new
            if abs(objective[-1] - objective[-2]) < self.tol or d_change < self.tol:
                break

        # 4. labels: connected components of the final structured bipartite graph
        fused = sum(d * z for d, z in zip(delta, Z, strict=True))
        out = structured_bipartite_graph(fused, c, extra_iter=extra)
        self.n_components_found_ = out["n_components_reference"]
        if out["n_components"] == c:
            labels = out["labels"]
            self.label_path_ = "components" if out["n_components_reference"] == c else "lambda_search"
        else:
            km = KMeans(n_clusters=c, n_init=10, random_state=int(rng.integers(2**31 - 1)))
            labels = km.fit_predict(out["U"]).astype(np.int64)
            self.label_path_ = "kmeans_fallback"
        if self.label_path_ == "kmeans_fallback":
            # The lambda search (port addition) is a normal path and stays silent; only the
            # fallback, whose labels do not come from the rank-constrained graph, warns.
            searched = " even after the lambda search" if extra else " (rank_search='reference')"
            warnings.warn(
                f"UDBGL: the structured bipartite graph ended with {out['n_components']} components instead "
                f"of n_clusters={c}{searched}; labels come from k-means on the spectral "
                "embedding (label_path_='kmeans_fallback')",
                RankConstraintWarning,
                stacklevel=2,
            )
        self.fallback_used_ = self.label_path_ == "kmeans_fallback"
        self.labels_ = labels
        self.view_weights_ = delta
        self.anchors_ = A
        self.anchor_graphs_ = Z
        self.bipartite_graph_ = sp.csr_matrix(out["S"])
        self.embedding_ = np.vstack([out["U"], out["V"]])
        self.objective_ = objective
        self.n_iter_ = n_iter
        self.n_features_in_ = int(dims[-1])
        return self

    def fit_predict(self, views, y=None):
        """Fit and return ``labels_`` (ndarray of int64, shape (n_samples,))."""
        return self.fit(views).labels_
