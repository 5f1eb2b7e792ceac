"""MEAformer's pieces against naive implementations and their invariants."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from reprozoo.meaformer import (
    MODALITIES,
    DiagGATLayer,
    MEAformer,
    MultiTaskLoss,
    SparseGraph,
    char_bigrams,
    corrupt_modality,
    csls_dense,
    csls_ranks,
    edge_spmm,
    icl_loss,
    joint_edges,
    ranking_metrics,
    relation_bag,
)
from reprozoo.meaformer.features import ModalityData


def naive_icl(left, right, tau, alpha=0.5, pl=None, pr=None):
    """Per-pair loop: logits of l_i over [all r_j, all l_j (j != i)], CE on r_i; and the mirror."""
    B = left.shape[0]
    zl, zr = F.normalize(left, dim=1), F.normalize(right, dim=1)
    pl = torch.ones(B, dtype=torch.bool) if pl is None else pl
    pr = torch.ones(B, dtype=torch.bool) if pr is None else pr
    la, lb, n = 0.0, 0.0, 0
    for i in range(B):
        if not (pl[i] and pr[i]):
            continue
        cand_a = [zl[i] @ zr[j] / tau for j in range(B) if pr[j]] + \
                 [zl[i] @ zl[j] / tau for j in range(B) if j != i and pl[j]]
        cand_b = [zr[i] @ zl[j] / tau for j in range(B) if pl[j]] + \
                 [zr[i] @ zr[j] / tau for j in range(B) if j != i and pr[j]]
        pos_a, pos_b = zl[i] @ zr[i] / tau, zr[i] @ zl[i] / tau
        la += -(pos_a - torch.logsumexp(torch.stack(cand_a), 0))
        lb += -(pos_b - torch.logsumexp(torch.stack(cand_b), 0))
        n += 1
    return alpha * la / n + (1 - alpha) * lb / n


def test_icl_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g,
                                                                                    dtype=torch.float64)
    assert torch.allclose(icl_loss(left, right, 0.1), naive_icl(left, right, 0.1))
    assert torch.allclose(icl_loss(left, right, 0.5, alpha=0.3), naive_icl(left, right, 0.5, alpha=0.3))
    pl = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    pr = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool)
    got = icl_loss(left, right, 0.1, present_left=pl, present_right=pr)
    assert torch.allclose(got, naive_icl(left, right, 0.1, pl=pl, pr=pr))
    # K embeddings in one call equal K separate calls (with per-k presence)
    ks = torch.randn(3, 6, 5, generator=g, dtype=torch.float64), torch.randn(3, 6, 5, generator=g,
                                                                               dtype=torch.float64)
    pk = torch.rand(3, 6, generator=g) > 0.3
    got = icl_loss(*ks, 0.1, present_left=pk, present_right=pk.flip(1))
    want = torch.stack([naive_icl(ks[0][k], ks[1][k], 0.1, pl=pk[k], pr=pk[k].flip(0)) for k in range(3)])
    assert torch.allclose(got, want)
    # gradients equal the naive loop's
    a, b = left.clone().requires_grad_(), right.clone().requires_grad_()
    icl_loss(a, b, 0.1, present_left=pl, present_right=pr).backward()
    a2, b2 = left.clone().requires_grad_(), right.clone().requires_grad_()
    naive_icl(a2, b2, 0.1, pl=pl, pr=pr).backward()
    assert torch.allclose(a.grad, a2.grad) and torch.allclose(b.grad, b2.grad)
    # extra negatives add columns (log-sum-exp over the union); the hardest index (candidates: left batch,
    # right batch, extras) never points at the positive nor the row itself
    neg = torch.randn(3, 5, dtype=torch.float64)
    loss, (ha, hb) = icl_loss(left, right, 0.1, neg_left=neg, return_hardest=True)
    zl, zr, zn = F.normalize(left, dim=1), F.normalize(right, dim=1), F.normalize(neg, dim=1)
    cand_a = torch.cat([zl, zr, zn]) @ zl.t() / 0.1  # (15, 6): column i = logits of left row i
    cand_b = torch.cat([zl, zr]) @ zr.t() / 0.1
    i = torch.arange(6)
    lse_a = torch.logsumexp(torch.cat([zl @ zr.t(), (zl @ zl.t()).fill_diagonal_(-1e8), zl @ zn.t()], 1) / 0.1, 1)
    lse_b = torch.logsumexp(torch.cat([zr @ zl.t(), (zr @ zr.t()).fill_diagonal_(-1e8)], 1) / 0.1, 1)
    pos = (zl * zr).sum(1) / 0.1
    assert torch.allclose(loss, (0.5 * (lse_a - pos) + 0.5 * (lse_b - pos)).mean())
    masked_a = cand_a.t().scatter(1, torch.stack([i, i + 6], 1), -1e9)
    masked_b = cand_b.t().scatter(1, torch.stack([i, i + 6], 1), -1e9)
    assert torch.equal(ha, masked_a.argmax(1)) and torch.equal(hb, masked_b.argmax(1))
    assert (ha != i + 6).all() and (hb != i).all() and ha.max() < 15 and hb.max() < 12


def test_multitask_formula():
    m = MultiTaskLoss(3)
    with torch.no_grad():
        m.log_vars.copy_(torch.tensor([0.0, 1.0, -0.5]))
    L = torch.tensor([2.0, 3.0, 4.0])
    want = sum(math.exp(-s) * v + s for s, v in zip([0.0, 1.0, -0.5], [2.0, 3.0, 4.0], strict=True))
    assert float(m(L)) == pytest.approx(want)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        m(torch.ones(2))


def test_edge_spmm_gradients_and_dense_equivalence():
    edges = np.array([[0, 1, 2, 3, 4, 0, 2, 4, 1], [1, 2, 3, 4, 0, 0, 2, 1, 1]])
    g = SparseGraph(edges, 5)
    v = torch.rand(g.n_edges, dtype=torch.float64, requires_grad=True)
    h = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, h: edge_spmm(v, h, g), (v, h))
    dense = torch.zeros(5, 5, dtype=torch.float64)
    dense[g.dst, g.src] = v.detach()
    assert torch.allclose(edge_spmm(v, h, g), dense @ h)


def test_gat_layer_matches_dense_attention():
    """The sparse layer equals the reference formula written densely: exp(-LeakyReLU(a^T[h_i||h_j])) row-normalised."""
    torch.manual_seed(0)
    edges = joint_edges(np.array([[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 0, 0]]), 4)
    g = SparseGraph(edges, 4)
    layer = DiagGATLayer(6, heads=2).double()
    with torch.no_grad():
        layer.w.uniform_(0.5, 1.5)
    x = torch.randn(4, 6, dtype=torch.float64)
    adj = torch.zeros(4, 4, dtype=torch.bool)
    adj[g.dst, g.src] = True
    out = torch.zeros(4, 6, dtype=torch.float64)
    for k in range(2):
        h = x * layer.w[k]
        s = (h @ layer.a_self[k])[:, None] + (h @ layer.a_nbr[k])[None, :]
        e = torch.exp(-F.leaky_relu(s, 0.2)) * adj
        out += (e / e.sum(1, keepdim=True)) @ h
    assert torch.allclose(layer(x, g), out / 2)


def test_joint_edges_symmetric_with_self_loops():
    e = joint_edges(np.array([[0, 0, 1], [2, 1, 2], [1, 3, 2]]), 4)
    pairs = set(map(tuple, e.T))
    assert {(i, i) for i in range(4)} <= pairs
    assert all((b, a) in pairs for a, b in pairs)
    assert (2, 2) in pairs and len(pairs) == len(e.T)


def test_relation_bag_and_char_bigrams():
    tri = np.array([[0, 0, 1], [1, 0, 2], [2, 1, 0], [0, 2, 2]])
    bag = relation_bag(tri, 3, top=2).toarray()
    assert bag.shape == (3, 2)
    assert bag[:, 0].tolist() == [1, 2, 1]  # relation 0 (most frequent): head or tail counts
    cb = char_bigrams([["Abc"], ["bc"], []])
    assert cb.shape == (3, 2) and np.allclose(np.linalg.norm(cb.toarray()[:2], axis=1), 1)
    assert cb[2].nnz == 0  # no bigram: absent, not a random vector


def _model_inputs(n=6, d_rel=4):
    edges = joint_edges(np.array([[i, 0, (i + 1) % n] for i in range(n)]), n)
    g = SparseGraph(edges, n)
    feats = {"relation": torch.rand(n, d_rel), "char": torch.rand(n, 3).to_sparse_csr()}
    return g, feats


def test_weights_sum_to_one_and_follow_named_order():
    torch.manual_seed(0)
    g, feats = _model_inputs()
    m = MEAformer(6, {"char": 3, "relation": 4}, hidden=8, intermediate=16)
    assert m.modalities == ("structure", "relation", "char")  # MODALITIES order, whatever the dict order
    assert list(m.modalities) == [x for x in MODALITIES if x in m.modalities]
    present = torch.ones(6, 3, dtype=torch.bool)
    present[2, 1] = False
    out = m(g, feats, present)
    assert torch.allclose(out.weights.sum(1), torch.ones(6))
    assert out.weights[2, 1] == 0 and torch.all(out.joint[2, 8:16] == 0)
    # the joint embedding is built from the pre-transformer vectors, weighted (Eq. 7)
    want = torch.cat([out.weights[:, i:i + 1] * F.normalize(out.tokens[:, i], dim=1) for i in range(3)], 1)
    assert torch.allclose(out.joint, want)
    # Eq. 6 from the attention maps, recomputed by hand for one entity (eval mode: no dropout)
    m.eval()
    out = m(g, feats, torch.ones(6, 3, dtype=torch.bool))
    x = out.tokens  # the authors' layer (token_norm, ours, is off by default)
    _, attn = m.hybrid.attn(x, x, x, need_weights=True, average_attn_weights=False)
    w = torch.softmax(attn.sum(1).sum(1) / math.sqrt(3 * 1), dim=-1)
    assert torch.allclose(out.weights, w, atol=1e-6)
    # a batch of ids gives the same rows as the whole graph
    sub = m(g, feats, torch.ones(6, 3, dtype=torch.bool), torch.tensor([4, 1]))
    assert torch.allclose(sub.joint, out.joint[[4, 1]], atol=1e-6)


@pytest.mark.parametrize("fusion", ["global", "uniform"])
def test_kg_level_fusions(fusion):
    g, feats = _model_inputs()
    m = MEAformer(6, {"relation": 4, "char": 3}, hidden=8, fusion=fusion)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[0, 2] = False
    out = m(g, feats, present)
    assert out.hidden is None and torch.allclose(out.weights.sum(1), torch.ones(6))
    assert torch.allclose(out.weights[1:], out.weights[1:2].expand(5, 3))  # one weight vector for the graph
    assert out.weights[0, 2] == 0


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown modalities"):
        MEAformer(3, {"colour": 2})
    with pytest.raises(ValueError, match="fusion="):
        MEAformer(3, {"relation": 2}, fusion="max")
    with pytest.raises(ValueError, match="edges hold node ids outside"):
        SparseGraph(np.array([[0, 5], [1, 1]]), 3)


def test_blocked_csls_equals_dense():
    g = torch.Generator().manual_seed(1)
    L, R = torch.randn(37, 6, generator=g), torch.randn(37, 6, generator=g)
    for k in (0, 1, 3):
        dense = csls_dense(L, R, k)
        true = dense.diagonal()
        want_l2r = (dense > true[:, None]).sum(1) + 1
        want_r2l = (dense > true[None, :]).sum(0) + 1
        for keep_bytes in (0, 2 ** 20):  # blocks recomputed / kept between the two passes
            l2r, r2l = csls_ranks(L, R, k=k, block=5, keep_bytes=keep_bytes)
            assert np.array_equal(l2r, want_l2r.numpy()) and np.array_equal(r2l, want_r2l.numpy())
    # CSLS on 1 - squared distance (the reference) ranks as CSLS on cosine
    Ln, Rn = F.normalize(L, dim=1), F.normalize(R, dim=1)
    ref = 1 - torch.cdist(Ln.double(), Rn.double()) ** 2
    ref = 2 * ref - ref.topk(3, 1).values.mean(1)[:, None] - ref.topk(3, 0).values.mean(0)[None, :]
    assert np.array_equal((ref > ref.diagonal()[:, None]).sum(1).numpy() + 1, csls_ranks(L, R, k=3)[0])


def test_ranking_metrics_hand_computed():
    m = ranking_metrics(np.array([1, 3, 12, 1, 60]))
    assert m["Hits@1"] == pytest.approx(40.0) and m["Hits@10"] == pytest.approx(60.0)
    assert m["Hits@50"] == pytest.approx(80.0) and m["MR"] == pytest.approx(77 / 5)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 + 1 / 60) / 5)


def test_corrupt_modality_noise_and_drop():
    x = sp.csr_matrix(np.eye(10, 4, dtype=np.float32))
    data = ModalityData(10, joint_edges(np.array([[0, 0, 1]]), 10), {"relation": x},
                        {"structure": np.ones(10, bool), "relation": np.ones(10, bool)})
    noisy, hit = corrupt_modality(data, "relation", 0.4, seed=0)
    assert hit.sum() == 4 and np.allclose(noisy.features["relation"].toarray()[~hit], x.toarray()[~hit])
    assert not np.allclose(noisy.features["relation"].toarray()[hit], x.toarray()[hit])
    dropped, hit = corrupt_modality(data, "relation", 0.4, mode="drop", seed=0)
    assert (dropped.present["relation"] == ~hit).all()
    with pytest.raises(ValueError, match="modality='image'"):
        corrupt_modality(data, "image", 0.1)
    with pytest.raises(ValueError, match="fraction"):
        corrupt_modality(data, "relation", 1.5)


def test_tiled_symmetrise_equals_p_plus_transpose():
    from reprozoo.meaformer.losses import _symmetrise_

    p = torch.randn(2, 10, 10, dtype=torch.float64)
    assert torch.equal(_symmetrise_(p.clone(), tile=4), p + p.mT)
