"""Training loop: frozen weights, scores only, ramp per epoch, best-validation epoch, determinism."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from reprozoo.core.seed import seed_everything  # noqa: E402
from reprozoo.ugt import (  # noqa: E402
    GCN,
    UGTGCN,
    ConstantSparsitySchedule,
    LinearSparsitySchedule,
    current_sparsity,
    fit_node_classifier,
    score_parameters,
)


def _toy(n=60, f=10, c=3, seed=0):
    """Two-community-per-class toy graph whose features carry the class (learnable in a few epochs)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.rand(n, f, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    src = torch.randint(0, n, (3 * n,), generator=g)
    dst = (src + c * torch.randint(1, 4, (3 * n,), generator=g)) % n  # same-class neighbours
    ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    idx = torch.randperm(n, generator=g)
    tr, va, te = (torch.zeros(n, dtype=torch.bool) for _ in range(3))
    tr[idx[:20]], va[idx[20:40]], te[idx[40:]] = True, True, True
    return x, ei, y, tr, va, te


def test_weights_bit_identical_and_only_scores_change():
    x, ei, y, tr, va, te = _toy()
    seed_everything(0)
    model = UGTGCN(10, 16, 3, 2, sparsity=0.5)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("score")}
    scores = [p.clone() for p in score_parameters(model)]
    fit = fit_node_classifier(model, x, ei, y, tr, va, te, epochs=20)
    for k, v in model.state_dict().items():
        if not k.endswith("score"):
            assert torch.equal(v, frozen[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(scores, score_parameters(model), strict=True))
    assert fit.sparsity == pytest.approx(0.5, abs=1e-3)
    assert 0 <= fit.best_epoch < 20 and 0.0 <= fit.test_acc <= 100.0  # percent


def test_mask_density_follows_ramp_each_epoch():
    x, ei, y, tr, va, te = _toy()
    seed_everything(0)
    model = UGTGCN(10, 16, 3, 2, sparsity=0.8)
    seen = []

    def record(mod, args, out):
        if mod.training:
            seen.append(current_sparsity(mod))

    model.register_forward_hook(record)
    sched = LinearSparsitySchedule(0.8, 10)
    fit_node_classifier(model, x, ei, y, tr, va, te, epochs=10, schedule=sched)
    n = sum(p.numel() for p in score_parameters(model))
    assert seen == pytest.approx([round(sched(t) * n) / n for t in range(10)])


def test_best_validation_epoch_is_kept():
    x, ei, y, tr, va, te = _toy()
    seed_everything(1)
    model = GCN(10, 16, 3, 2, dropout=0.5)
    fit = fit_node_classifier(model, x, ei, y, tr, va, te, epochs=30)
    assert fit.val_acc == pytest.approx(max(fit.history["val_acc"]))
    assert fit.history["val_acc"][fit.best_epoch] == pytest.approx(fit.val_acc)
    assert fit.history["val_acc"].index(fit.val_acc) == fit.best_epoch  # first best epoch


def test_determinism_per_seed():
    x, ei, y, tr, va, te = _toy()

    def once(seed):
        seed_everything(seed)
        m = UGTGCN(10, 16, 3, 2, sparsity=0.7, mode="layerwise")
        return fit_node_classifier(m, x, ei, y, tr, va, te, epochs=8, schedule=ConstantSparsitySchedule(0.7, 8))

    a, b, c = once(3), once(3), once(4)
    assert a.history == b.history and a.test_acc == b.test_acc
    assert a.history != c.history


def test_bad_training_input():
    x, ei, y, tr, va, te = _toy()
    model = UGTGCN(10, 16, 3, 2, sparsity=0.5)
    with pytest.raises(ValueError, match="y"):
        fit_node_classifier(model, x, ei, y[:-1], tr, va, te, epochs=1)
    with pytest.raises(ValueError, match="labels"):
        fit_node_classifier(model, x, ei, y + 5, tr, va, te, epochs=1)
    with pytest.raises(ValueError, match="selects no node"):
        fit_node_classifier(model, x, ei, y, tr, torch.zeros_like(va), te, epochs=1)
    with pytest.raises(ValueError, match="train_mask"):
        fit_node_classifier(model, x, ei, y, tr.long(), va, te, epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        fit_node_classifier(model, x, ei, y, tr, va, te, epochs=0)
    # a graph without edges is accepted, as in PyG (each node sees itself only)
    fit = fit_node_classifier(model, x, torch.empty(2, 0, dtype=torch.long), y, tr, va, te, epochs=1)
    assert 0.0 <= fit.test_acc <= 100.0
    with pytest.raises(ValueError, match="schedule"):
        fit_node_classifier(GCN(10, 8, 3), x, ei, y, tr, va, te, epochs=1, schedule=LinearSparsitySchedule(0.5, 1))
    with pytest.raises(TypeError, match="model"):
        fit_node_classifier(None, x, ei, y, tr, va, te)


@pytest.mark.parametrize("arch", ["GCN", "GAT", "GIN"])
@pytest.mark.parametrize("sparsity", [None, 0.5])
def test_float64_models_train_end_to_end(arch, sparsity):
    """Models are dtype-agnostic: model.double() with float64 x trains (the adjacency follows x's dtype)."""
    from reprozoo.ugt import build_model

    x, ei, y, tr, va, te = _toy()
    seed_everything(0)
    model = build_model(arch, 10, 8, 3, 2, sparsity=sparsity).double()
    fit = fit_node_classifier(model, x.double(), ei, y, tr, va, te, epochs=3)
    assert 0.0 <= fit.test_acc <= 100.0
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_float64_matches_float32_on_the_same_weights():
    from reprozoo.ugt.train import prepare_inputs

    x, ei, y, tr, va, te = _toy()
    seed_everything(0)
    m32 = GCN(10, 8, 3, 2)
    m64 = GCN(10, 8, 3, 2)
    m64.load_state_dict(m32.state_dict())
    m64.double()
    xs, adj = prepare_inputs(x.double(), ei)
    assert adj.dtype == torch.float64
    out64 = m64(xs, adj)
    assert out64.dtype == torch.float64
    assert torch.allclose(out64.float(), m32(*prepare_inputs(x, ei)), atol=1e-5)


def test_dtype_mismatch_names_x_and_expected_dtype():
    x, ei, y, tr, va, te = _toy()
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 .* parameters are torch.float32"):
        fit_node_classifier(UGTGCN(10, 8, 3, 2), x.double(), ei, y, tr, va, te, epochs=1)
    with pytest.raises(TypeError, match=r"x has dtype torch.float32 .* torch.float64"):
        GCN(10, 8, 3, 2).double()(x, ei)


def test_float_y_reports_dtype_and_shape():
    x, ei, y, tr, va, te = _toy()
    with pytest.raises(TypeError, match=r"y should be an int64 tensor of shape \(60,\), got dtype torch.float32 "
                                        r"and shape \(60,\)"):
        fit_node_classifier(GCN(10, 8, 3, 2), x, ei, y.float(), tr, va, te, epochs=1)
    with pytest.raises(ValueError, match=r"got dtype torch.int64 and shape \(59,\)"):
        fit_node_classifier(GCN(10, 8, 3, 2), x, ei, y[:59], tr, va, te, epochs=1)


@pytest.mark.parametrize("pair", [("train", "val"), ("train", "test"), ("val", "test")])
def test_identical_masks_are_rejected(pair):
    """The same nodes for training and validation (or test) were accepted silently: model selection or the test
    would then read training nodes."""
    x, ei, y, tr, va, te = _toy()
    masks = {"train": tr, "val": va, "test": te}
    masks[pair[1]] = masks[pair[0]].clone()
    with pytest.raises(ValueError, match=f"{pair[0]}_mask and {pair[1]}_mask select the same nodes"):
        fit_node_classifier(UGTGCN(10, 8, 3, 2, sparsity=0.5), x, ei, y, masks["train"], masks["val"],
                            masks["test"], epochs=1)
