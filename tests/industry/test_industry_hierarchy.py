"""Top-down assignment on the tree: normalisation, exact path probabilities, greedy = beam width 1."""

import itertools

import numpy as np
import pytest
import torch

from reprozoo.datasets.industry import ICS
from reprozoo.industry.hierarchy import (
    TreeIndex,
    beam_decode,
    conditional_log_probs,
    greedy_decode,
    path_log_probs,
)


def _toy(tmp_path, uneven=False):
    rows = ["code,parent,title", "A,,a", "B,,b", "A1,A,a1", "A2,A,a2", "B1,B,b1", "A11,A1,a11", "A12,A1,a12",
            "A21,A2,a21", "B11,B1,b11", "B12,B1,b12", "B13,B1,b13"]
    if uneven:
        rows.append("C,,c")  # a top-level leaf: paths of different depth
    p = tmp_path / "toy.csv"
    p.write_text("\n".join(rows) + "\n")
    return ICS.from_csv(p)


@pytest.mark.parametrize("uneven", [False, True])
def test_path_probabilities_sum_to_one_and_children_only(tmp_path, uneven):
    ics = _toy(tmp_path, uneven)
    tree = TreeIndex.from_ics(ics)
    scores = torch.randn(7, tree.n_nodes, dtype=torch.float64) * 3
    cond = conditional_log_probs(scores, tree)
    # children-only normalisation: each sibling group sums to one
    for kids in ics.children.values():
        if kids:
            idx = [ics.codes.index(k) for k in kids]
            np.testing.assert_allclose(cond[:, idx].exp().sum(1).numpy(), 1.0, atol=1e-12)
            # equals a plain softmax over that group only
            np.testing.assert_allclose(cond[:, idx].numpy(), torch.log_softmax(scores[:, idx], 1).numpy(), atol=1e-12)
    logp = path_log_probs(cond, tree)
    np.testing.assert_allclose(logp[:, tree.leaves].exp().sum(1).numpy(), 1.0, atol=1e-12)
    # every level's nodes also sum to one (upper node = sum of the leaves below it)
    for lv in range(1, ics.n_levels + 1):
        at = [i for i, c in enumerate(ics.codes) if ics.level[c] == lv]
        total = logp[:, at].exp().sum(1) + sum(logp[:, [ics.codes.index(c)]].exp().squeeze(1)
                                                for c in ics.leaves if ics.level[c] < lv)
        np.testing.assert_allclose(total.numpy(), 1.0, atol=1e-12)
    # naive: product of conditionals along each path
    c = cond.exp().numpy()
    for j, leaf in enumerate(ics.leaves):
        prod = np.prod([c[:, ics.codes.index(a)] for a in ics.path(leaf)], axis=0)
        np.testing.assert_allclose(np.exp(logp[:, tree.leaves[j]].numpy()), prod, atol=1e-12)


def test_beam_width_one_equals_greedy_and_wide_beam_is_exact(tmp_path):
    ics = _toy(tmp_path, uneven=True)
    tree = TreeIndex.from_ics(ics)
    torch.manual_seed(0)
    cond = conditional_log_probs(torch.randn(200, tree.n_nodes) * 2, tree)
    greedy = greedy_decode(cond, tree)
    beams, scores = beam_decode(cond, tree, 1)
    assert torch.equal(beams[:, 0], greedy)
    assert bool(tree.is_leaf[greedy].all())
    # greedy by hand: argmax child at each level
    for i in range(5):
        node = None
        while ics.children[node]:
            kids = ics.children[node]
            node = max(kids, key=lambda k: float(cond[i, ics.codes.index(k)]))
        assert ics.codes[int(greedy[i])] == node
    logp = path_log_probs(cond, tree)
    exact = tree.leaves[logp[:, tree.leaves].argmax(1)]
    wide, wide_scores = beam_decode(cond, tree, len(tree.leaves))
    assert torch.equal(wide[:, 0], exact)
    np.testing.assert_allclose(wide_scores[:, 0].numpy(), logp.gather(1, exact[:, None])[:, 0].numpy(), atol=1e-5)
    # beam scores are sorted path log-probabilities of distinct leaves
    assert bool((wide_scores[:, :-1] >= wide_scores[:, 1:]).all())
    assert all(len(set(r)) == len(r) for r in wide.tolist())
    # greedy is not always exact (so the test can tell them apart)
    assert bool((greedy != exact).any())


def test_edges_parent_child_sibling(tmp_path):
    ics = _toy(tmp_path)
    tree = TreeIndex.from_ics(ics)
    edges = {(ics.codes[a], ics.codes[b]) for a, b in tree.edge_index.T.tolist()}
    assert ("A", "A1") in edges and ("A1", "A") in edges  # parent <-> child
    assert ("B11", "B12") in edges and ("A", "B") in edges  # siblings
    assert ("A11", "B11") not in edges and ("A", "A11") not in edges
    kids = sum(len(v) for k, v in ics.children.items() if k is not None)
    sib = sum(len(v) * (len(v) - 1) for v in ics.children.values())
    assert tree.edge_index.shape[1] == 2 * kids + sib
    assert list(itertools.chain(tree.ancestors[ics.codes.index("A12")].tolist())) == [
        ics.codes.index("A"), ics.codes.index("A1"), ics.codes.index("A12")]
