"""MEAformerTrainer on small real DBP15K slices: selection without test reads, weights, claims, bad input."""

import numpy as np
import pytest
import torch

from reprozoo.datasets import load_dbp15k, split_links
from reprozoo.meaformer import MODALITIES, MEAformerTrainer, build_modalities, corrupt_modality
from reprozoo.meaformer.baselines import make_trainer, name_nn

SMALL = dict(hidden=32, intermediate=64, eval_every=2)


@pytest.fixture(scope="module")
def kg():
    return load_dbp15k("ZH-EN").subset(500, seed=0)


@pytest.fixture(scope="module")
def data(kg):
    return build_modalities(kg, char=True)


def test_fit_never_reads_test_links_and_is_repeatable(kg):
    split = split_links(kg.links, seed=0)
    a = MEAformerTrainer(modalities=("structure", "relation"), epochs=4, seed=3, **SMALL).fit(kg, split)
    assert split.test_reads == 0  # training and checkpoint selection used train / valid only
    assert any("valid_MRR" in h for h in a.history_)
    scores = a.evaluate("test")
    assert split.test_reads == 1
    assert set(scores) >= {"Hits@1", "Hits@10", "MRR", "MR", "r2l_Hits@1"}
    assert 0 <= scores["Hits@1"] <= scores["Hits@10"] <= 100 and 0 < scores["MRR"] <= 1
    b = MEAformerTrainer(modalities=("structure", "relation"), epochs=4, seed=3, **SMALL).fit(kg, split)
    assert b.evaluate("valid") == a.evaluate("valid")  # same seed, same numbers


def test_modality_weights_named_and_normalised(kg, data):
    tr = MEAformerTrainer(modalities=("structure", "relation", "char"), epochs=2, **SMALL).fit(kg, data=data)
    w = tr.modality_weights([0, 5, 7])
    assert list(w) == [m for m in MODALITIES if m in ("structure", "relation", "char")]
    total = sum(w.values())
    assert np.allclose(total, 1.0, atol=1e-5)
    whole = tr.modality_weights()
    assert all(np.allclose(whole[m][[0, 5, 7]], w[m]) for m in w)
    # an entity whose relation bag is empty gets relation weight 0 (absent, not a stand-in vector)
    absent = np.flatnonzero(~data.present["relation"])
    if absent.size:
        assert np.all(whole["relation"][absent] == 0)


def test_corrupted_entities_are_the_ones_whose_inputs_and_weights_change(kg, data):
    """Bookkeeping of the robustness experiment: the mask ``corrupt_modality`` returns is exactly the set of
    entities whose input rows the trained model reads differently, and the only entities whose weights move when
    the clean rows are put back; the weight column named after the corrupted modality moves for every one of them
    (same id space after the subset remap, the one modality order)."""
    from reprozoo.meaformer.trainer import _to_torch

    for mod in ("relation", "char"):
        noisy, hit = corrupt_modality(data, mod, 0.4, seed=1)
        assert hit.sum() == round(0.4 * data.present[mod].sum()) and not hit[~data.present[mod]].any()
        assert np.array_equal(abs(noisy.features[mod] - data.features[mod]).max(1).toarray().ravel() > 0, hit)
        assert all((noisy.features[m] != data.features[m]).nnz == 0 for m in data.features if m != mod)
        # token_norm (ours): with the authors' layer the weights hardly depend on the tokens' values (see the card),
        # so a few corrupted rows would move them by less than the float noise this test separates them from
        tr = MEAformerTrainer(modalities=("structure", "relation", "char"), epochs=1, token_norm=True,
                              **SMALL).fit(kg, data=noisy)
        read = tr.features_[mod].to_dense().numpy()
        assert np.array_equal(np.any(read != data.features[mod].toarray(), 1), hit)  # what the model reads
        w_noisy = tr.modality_weights()
        tr.features_[mod] = _to_torch(data.features[mod], torch.device("cpu"))  # the clean rows back
        w_clean = tr.modality_weights()
        # (other rows: float noise of the sparse product, < 1e-7; corrupted rows move by 1e-4 and more)
        moved = np.any([np.abs(w_noisy[m] - w_clean[m]) > 1e-6 for m in w_noisy], axis=0)
        assert np.array_equal(moved, hit), (mod, moved.sum(), hit.sum())
        assert np.all(np.abs(w_noisy[mod][hit] - w_clean[mod][hit]) > 1e-6)


@pytest.mark.xfail(strict=True, reason="claim not reproduced at this budget (see the card): measured char weight "
                   "0.500 corrupted vs 0.494 clean after 10 epochs; 0.444 vs 0.446 after 30 epochs at lr 5e-3")
def test_noisy_modality_gets_lower_weight_for_corrupted_entities(kg, data):
    """Paper Sec. 4.4 (robustness): entity-level weights move away from a modality where it is noise.

    Strict xfail: if a change makes the claim hold, this test fails until the card and the marker are updated.
    """
    noisy, hit = corrupt_modality(data, "char", 0.4, seed=0)
    split = split_links(kg.links, seed=0)
    tr = MEAformerTrainer(modalities=("structure", "relation", "char"), epochs=10, seed=0, token_norm=True, **SMALL)
    tr.fit(kg, split, data=noisy)
    w = tr.modality_weights()["char"]
    clean = ~hit & data.present["char"]
    margin = w[clean].mean() - w[hit].mean()
    assert margin > 0.05, f"char weight: clean {w[clean].mean():.3f}, corrupted {w[hit].mean():.3f}"


def test_per_entity_fusion_beats_kg_fusion_clean_and_under_noise(kg, data):
    """The paper's claim (Sec. 4.2, 4.4) at the smoke budget: per-entity weights beat one weight per modality
    for the whole graph (KG-fusion), clean and with char bigrams replaced by noise for 40 % of the entities.

    Measured here with ``token_norm`` (ours; 500-link slice, structure + relations + char, hidden 32, 8 epochs,
    mean Hits@1 of seeds 0-2): clean 33.9 vs 27.4 (+6.5), noisy 9.0 vs 7.6 (+1.4); asserted with about half of
    those margins. The authors' layer at this budget: 25.0 clean, 7.8 noisy (behind and level). At the quick
    budget (2,500 links, hidden 300, 40 epochs) the authors' layer ties KG-fusion (19.6 vs 19.7 clean, 13.9 vs
    13.3 noisy) and ``token_norm`` loses (15.3, 13.0; card).
    """
    split = split_links(kg.links, seed=0)
    noisy, _ = corrupt_modality(data, "char", 0.4, seed=0)
    kw = dict(modalities=("structure", "relation", "char"), epochs=8, token_norm=True, **SMALL)
    gap = {}
    for name, d in (("clean", data), ("noisy", noisy)):
        h1 = {m: np.mean([make_trainer(m, seed=s, **kw)
                          .fit(kg, split, data=d).evaluate("test")["Hits@1"] for s in range(3)])
              for m in ("MEAformer", "KG-fusion")}
        gap[name] = h1["MEAformer"] - h1["KG-fusion"]
    assert gap["clean"] > 3.0 and gap["noisy"] > 0.5, gap


def test_beats_gcn_align_and_name_nn_is_real(kg, data):
    """The subset benchmark: MEAformer (structure, relations, char) beats structure-only GCN-Align on Hits@1."""
    split = split_links(kg.links, seed=0)
    kw = dict(modalities=("structure", "relation", "char"), epochs=8, seed=0, **SMALL)
    mea = make_trainer("MEAformer", **kw).fit(kg, split, data=data).evaluate("test")
    gcn = make_trainer("GCN-Align", **kw).fit(kg, split, data=data).evaluate("test")
    assert mea["Hits@1"] > gcn["Hits@1"] + 10, (mea["Hits@1"], gcn["Hits@1"])
    nn = name_nn(data, split.test)
    assert nn["Hits@1"] > 30  # translated names: strong without training (chance ~2 %)


def test_iterative_replay_and_unsupervised_modes_run(kg, data):
    split = split_links(kg.links, seed=0)
    it = MEAformerTrainer(modalities=("structure", "relation", "char"), epochs=6, iterative=True, il_start=1,
                          il_step=1, replay=True, **SMALL).fit(kg, split, data=data)
    assert len(it.train_links_) >= len(split.train)
    assert any("seeds_added" in h for h in it.history_) or len(it.train_links_) == len(split.train)
    un = MEAformerTrainer(modalities=("structure", "relation", "char"), epochs=3, unsupervised=True, unsup_k=100,
                          select="last", **SMALL).fit(kg, split, data=data)
    assert len(un.train_links_) == 100
    assert split.test_reads == 0
    assert un.evaluate("valid")["Hits@1"] > 5


@pytest.mark.parametrize("kwargs, match", [
    ({"modalities": ("structure", "smell")}, "modalities='smell' is not valid"),
    ({"modalities": "structure"}, "should be a non-empty tuple"),
    ({"fusion": "max"}, "fusion='max' is not valid"),
    ({"epochs": 0}, "epochs=0 should be >= 1"),
    ({"lr": -1.0}, "lr=-1.0 should be > 0"),
    ({"hidden": 30, "transformer_heads": 4}, "divisible"),
])
def test_bad_trainer_arguments(kg, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MEAformerTrainer(**{**SMALL, "epochs": 1, **kwargs}).fit(kg)


def test_bad_calls(kg):
    tr = MEAformerTrainer(modalities=("structure",), epochs=1, **SMALL)
    with pytest.raises(RuntimeError, match="not fitted"):
        tr.evaluate()
    with pytest.raises(TypeError, match="kg should be a reprozoo.datasets.KGPair"):
        tr.fit({"links": []})
    tr.fit(kg)
    with pytest.raises(ValueError, match="split='train' is not valid"):
        tr.evaluate("train")
    with pytest.raises(ValueError, match=r"outside \[0, 1000\)"):
        tr.evaluate(np.array([[0, 5000]]))
    with pytest.raises(ValueError, match="entity_ids should be a 1-D integer array"):
        tr.modality_weights([[0, 1]])
    with pytest.raises(ValueError, match="entity_ids hold ids outside"):
        tr.modality_weights([10**6])
