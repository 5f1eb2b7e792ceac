"""Baselines: probabilities over leaves and levels, the hierarchical product, zero-shot without labels."""

import numpy as np
import pytest
from sklearn.base import clone

from reprozoo.industry.baselines import EmbeddingLR, HierarchicalLR, NearestDefinition, TfidfLR, leaf_to_level

from .test_industry_estimator import toy  # noqa: F401  (fixture)


@pytest.mark.parametrize("cls", [TfidfLR, EmbeddingLR, NearestDefinition, HierarchicalLR])
def test_baseline_probabilities(cls, toy):  # noqa: F811
    ics, texts, codes, times = toy
    kw = {"encoder_dim": 8} if cls in (EmbeddingLR,) else {}
    model = cls(ics, **kw)
    assert clone(model).get_params() == model.get_params()
    model.fit(texts, codes, times)
    q = ["bank deposits loans", "steel mills iron", "cloud software"]
    p = model.predict_proba(q, 2021)
    assert p.shape == (3, len(ics.leaves))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(q, 2021, level=1).sum(1), 1.0, atol=1e-6)
    top = model.predict_topk(q, 2021, k=2)
    assert top.shape == (3, 2) and list(top[:, 0]) == list(model.predict(q, 2021))
    if cls is not NearestDefinition:
        assert list(model.predict(q, 2021)) == ["A11", "B11", "C"]


def test_hierarchical_is_a_product_of_local_classifiers(toy):  # noqa: F811
    ics, texts, codes, times = toy
    model = HierarchicalLR(ics).fit(texts, codes)
    X = model.vectorizer_.transform(["bank insurance"])
    p_top = dict(zip(model.local_[None].classes_, model.local_[None].predict_proba(X)[0], strict=True))
    p_a = dict(zip(model.local_["A"].classes_, model.local_["A"].predict_proba(X)[0], strict=True))
    p_a1 = dict(zip(model.local_["A1"].classes_, model.local_["A1"].predict_proba(X)[0], strict=True))
    leaf = model.predict_proba(["bank insurance"])[0]
    assert leaf[list(ics.leaves).index("A12")] == pytest.approx(p_top["A"] * p_a["A1"] * p_a1["A12"])
    assert model.local_["A2"] == "A21"  # one child seen: probability 1


def test_leaf_to_level_and_zero_shot_reads_no_labels(toy):  # noqa: F811
    ics, texts, *_ = toy
    p = np.eye(len(ics.leaves))
    sectors, nodes = leaf_to_level(ics, p, 1)
    assert nodes == ics.codes_at(1) and (sectors.sum(1) == 1).all()
    assert sectors[list(ics.leaves).index("B12"), list(nodes).index("B")] == 1
    nd = NearestDefinition(ics).fit(texts)  # no codes
    assert nd.predict(["produce steel in mills"], 2020)[0] == "B11"
