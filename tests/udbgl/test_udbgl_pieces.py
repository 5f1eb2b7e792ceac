"""UDBGL's building blocks against brute-force or library references."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize

from reprozoo.udbgl import (
    bipartite_components,
    knn_anchor_graph,
    minmax_scale_views,
    project_simplex,
    solve_simplex_qp,
    solve_view_weights,
    structured_bipartite_graph,
)


def brute_projection(v, mask=None):
    """Try every support: x_S = v_S - (sum v_S - 1)/|S|; keep the feasible one nearest to v."""
    idx = np.arange(v.size) if mask is None else np.flatnonzero(mask)
    best, best_d = None, np.inf
    for size in range(1, idx.size + 1):
        for sup in itertools.combinations(idx, size):
            sup = list(sup)
            x = np.zeros_like(v)
            x[sup] = v[sup] - (v[sup].sum() - 1.0) / size
            if x[sup].min() < -1e-12:
                continue
            d = ((x - v) ** 2)[idx].sum()
            if d < best_d:
                best, best_d = x, d
    return best


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 6)),
              elements=st.floats(-5, 5, allow_nan=False)))
def test_project_simplex_matches_brute_force(v):
    x = project_simplex(v)
    assert x.shape == v.shape
    assert (x >= 0).all()
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-12)
    for row, xr in zip(v, x, strict=True):
        np.testing.assert_allclose(xr, brute_projection(row), atol=1e-9)
    np.testing.assert_allclose(project_simplex(x), x, atol=1e-12)  # idempotent


def test_project_simplex_with_mask_and_1d():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 7))
    mask = rng.random((20, 7)) < 0.6
    mask[0] = False  # an empty row comes back zero
    x = project_simplex(v, mask)
    assert (x[~mask] == 0).all()
    np.testing.assert_array_equal(x[0], 0.0)
    for i in range(1, 20):
        if mask[i].any():
            np.testing.assert_allclose(x[i], brute_projection(v[i], mask[i]), atol=1e-9)
    np.testing.assert_allclose(project_simplex(np.array([0.2, 0.2])), [0.5, 0.5])


@pytest.mark.parametrize("seed", range(5))
def test_row_qp_matches_scipy_and_kkt(seed):
    rng = np.random.default_rng(seed)
    m, d = 6, 9
    A = rng.random((m, d))
    H = 2.0 * (A @ A.T + 1e-3 * np.eye(m))
    f = -2.0 * A @ rng.random(d)
    z, _ = solve_simplex_qp(H, f[None, :])
    z = z[0]
    ref = minimize(lambda x: 0.5 * x @ H @ x + f @ x, np.full(m, 1 / m), jac=lambda x: H @ x + f,
                   method="SLSQP", bounds=[(0, 1)] * m,
                   constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1, "jac": lambda x: np.ones(m)}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert ref.success
    np.testing.assert_allclose(z, ref.x, atol=1e-6)
    # KKT: grad_j + mu = 0 on the support, >= 0 off it; primal feasibility
    g = H @ z + f
    sup = z > 1e-10
    mu = -g[sup].mean()
    np.testing.assert_allclose(g[sup] + mu, 0.0, atol=1e-8)
    assert (g[~sup] + mu >= -1e-8).all()
    assert z.min() >= 0 and abs(z.sum() - 1) < 1e-12


def test_qp_solver_vectorised_equals_row_by_row():
    rng = np.random.default_rng(1)
    A = rng.random((5, 30))
    H = 2.0 * (A @ A.T + 1e-3 * np.eye(5))
    F = -2.0 * rng.random((40, 30)) @ A.T
    Z, _ = solve_simplex_qp(H, F)
    for i in range(0, 40, 7):
        np.testing.assert_allclose(Z[i], solve_simplex_qp(H, F[i:i + 1])[0][0], atol=1e-9)


@pytest.mark.parametrize("V", [2, 3])
def test_view_weights_match_grid(V):
    rng = np.random.default_rng(V)
    Zs = rng.random((V, 50))
    G = Zs @ Zs.T
    s = 2.0 * Zs @ rng.random(50)
    d = solve_view_weights(G, s)
    assert d.min() >= 0 and abs(d.sum() - 1) < 1e-12
    grid = np.linspace(0, 1, 201)
    pts = [np.array(p) for p in itertools.product(grid, repeat=V - 1) if sum(p) <= 1 + 1e-12]
    pts = np.array([np.append(p, 1 - p.sum()) for p in pts])
    objs = np.einsum("ij,jk,ik->i", pts, G, pts) - pts @ s
    obj = d @ G @ d - s @ d
    assert obj <= objs.min() + 1e-12
    np.testing.assert_allclose(d, pts[objs.argmin()], atol=2 / 200)


def block_graph(n_per, c, m_per, noise, rng):
    """n x m graph: sample blocks linked mostly to their own anchor block, rows on the simplex."""
    n, m = n_per * c, m_per * c
    B = noise * rng.random((n, m))
    y = np.repeat(np.arange(c), n_per)
    for k in range(c):
        B[k * n_per:(k + 1) * n_per, k * m_per:(k + 1) * m_per] += rng.random((n_per, m_per)) + 0.5
    return B / B.sum(axis=1, keepdims=True), y


@pytest.mark.parametrize("c,m_per", [(3, 1), (4, 2), (6, 2)])
def test_p_step_gives_exactly_c_components_on_block_data(c, m_per):
    rng = np.random.default_rng(c)
    B, y = block_graph(30, c, m_per, 0.02, rng)
    out = structured_bipartite_graph(B, c)
    assert out["n_components"] == c
    assert (out["S"] >= 0).all()
    # the components are the blocks (up to renaming)
    assert len({(a, b) for a, b in zip(y, out["labels"], strict=True)}) == c
    assert out["U"].shape == (B.shape[0], c) and out["V"].shape == (B.shape[1], c)
    # as in the reference, P = (S_row + S_col^T) / 2: rows of S_row and columns of S_col sum to 1
    np.testing.assert_allclose(out["S"].sum(), (B.shape[0] + B.shape[1]) / 2)
    assert (out["S"][B == 0] == 0).all()  # only the support of B is used (the reference's islocal = 1)


def test_bipartite_components_counts_samples_only():
    S = np.array([[1.0, 0, 0], [0.5, 0, 0], [0, 1.0, 0]])  # anchor 2 is isolated
    k, lab = bipartite_components(S)
    assert k == 2
    np.testing.assert_array_equal(lab, [0, 0, 1])


def test_knn_graph_rows_on_simplex_with_k_nonzeros():
    rng = np.random.default_rng(0)
    x, a = rng.random((50, 4)), rng.random((8, 4))
    z = knn_anchor_graph(x, a, k=5)
    np.testing.assert_allclose(z.sum(1), 1.0)
    assert ((z > 0).sum(1) <= 5).all() and (z >= 0).all()
    # the nearest anchor has the largest weight
    d = ((x[:, None, :] - a[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(z.argmax(1), d.argmin(1))


def test_minmax_scaling_sets_constant_columns_to_one():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    (y,) = minmax_scale_views([x])
    np.testing.assert_allclose(y, [[0, 1], [1, 1], [0.5, 1]])


def test_z_and_delta_steps_do_not_increase_the_objective():
    """With P fixed, the Z-step and then the delta-step never raise the objective."""
    from reprozoo.datasets import load_multiview
    from reprozoo.udbgl import compute_anchors, delta_step, udbgl_objective, z_step

    data = load_multiview("MSRC-v1")
    X = minmax_scale_views(data.views)
    dims = np.cumsum([0] + [x.shape[1] for x in X])
    centers = compute_anchors(np.hstack(X), 7, np.random.default_rng(0))
    A = [centers[:, dims[v]:dims[v + 1]] for v in range(len(X))]
    Z = [knn_anchor_graph(x, a) for x, a in zip(X, A, strict=True)]
    XA = [x @ a.T for x, a in zip(X, A, strict=True)]
    AA = [a @ a.T for a in A]
    delta = np.full(len(X), 1 / len(X))
    for alpha, beta in [(1e-3, 1e-5), (1e-2, 1.0)]:
        Zc, dc = list(Z), delta.copy()
        for _ in range(3):
            P = structured_bipartite_graph(sum(d * z for d, z in zip(dc, Zc, strict=True)), 7)["S"]
            before = udbgl_objective(X, A, Zc, P, dc, alpha, beta)
            Zc = z_step(XA, AA, Zc, P, dc, alpha, beta)
            mid = udbgl_objective(X, A, Zc, P, dc, alpha, beta)
            dc = delta_step(Zc, P)
            after = udbgl_objective(X, A, Zc, P, dc, alpha, beta)
            assert mid <= before + 1e-9 * abs(before)
            assert after <= mid + 1e-9 * abs(mid)
            for z in Zc:
                np.testing.assert_allclose(z.sum(1), 1.0, atol=1e-9)
            assert dc.min() >= 0 and abs(dc.sum() - 1) < 1e-12


def test_objective_matches_direct_formula():
    from reprozoo.udbgl import udbgl_objective

    rng = np.random.default_rng(0)
    X = [rng.random((10, 3)), rng.random((10, 4))]
    A = [rng.random((4, 3)), rng.random((4, 4))]
    Z = [project_simplex(rng.random((10, 4))) for _ in X]
    P = project_simplex(rng.random((10, 4)))
    d = np.array([0.3, 0.7])
    direct = sum(np.linalg.norm(x.T - a.T @ z.T) ** 2 + 0.1 * np.linalg.norm(z) ** 2
                 for x, a, z in zip(X, A, Z, strict=True))
    direct += 0.5 * np.linalg.norm(d[0] * Z[0] + d[1] * Z[1] - P) ** 2
    np.testing.assert_allclose(udbgl_objective(X, A, Z, P, d, 0.1, 0.5), direct, rtol=1e-12)
