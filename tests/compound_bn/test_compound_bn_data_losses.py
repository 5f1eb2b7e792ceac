"""Long-tail builder, shot split, group split, losses and the dual-path loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprozoo.compound_bn import CompoundBatchNorm2d
from reprozoo.compound_bn.dual_path import DualPathLoss, consistency_loss, dual_path_loss
from reprozoo.compound_bn.losses import LDAMLoss, LongTailLoss, NormedLinear, class_balanced_weights
from reprozoo.datasets import (
    longtail_counts,
    make_longtail,
    shot_accuracies,
    shot_split,
    split_groups_by_frequency,
)
from reprozoo.models import resnet8


def test_longtail_counts_follow_exponential_profile():
    assert longtail_counts(1000, 10, 100).tolist() == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert longtail_counts(5000, 10, 10).tolist()[-1] == 500
    c = longtail_counts(500, 100, 100)
    assert c[0] == 500 and c[-1] == 5 and (np.diff(c) <= 0).all()
    assert longtail_counts(100, 5, 1).tolist() == [100] * 5


def test_make_longtail_counts_and_determinism():
    y = np.repeat(np.arange(10), 1000)
    rng = np.random.default_rng(0)
    y = y[rng.permutation(len(y))]
    idx = make_longtail(y, 100, seed=3)
    assert np.bincount(y[idx], minlength=10).tolist() == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(idx, make_longtail(y, 100, seed=3))
    assert not np.array_equal(idx, make_longtail(y, 100, seed=4))
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    idx2 = make_longtail(y, 10, n_max=200, class_order=order, seed=0)
    assert np.bincount(y[idx2], minlength=10)[::-1].tolist() == longtail_counts(200, 10, 10).tolist()


def test_make_longtail_bad_input():
    y = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match="imbalance_ratio"):
        make_longtail(y, 0.5)
    with pytest.raises(ValueError, match="n_max=11"):
        make_longtail(y, 2, n_max=11)
    with pytest.raises(ValueError, match="permutation"):
        make_longtail(y, 2, class_order=[0, 0, 1])
    with pytest.raises(ValueError, match="at least 1"):
        make_longtail(np.array([], dtype=int), 2)
    with pytest.raises(ValueError, match="cover classes"):
        make_longtail(np.array([0, 0, 2, 2]), 2)
    with pytest.raises(ValueError, match="NaN"):
        make_longtail(np.array([0.0, np.nan, 1.0]), 2)


def test_shot_split_and_accuracies():
    counts = np.array([1000, 150, 100, 20, 19, 3])
    s = shot_split(counts)
    assert s["many"].tolist() == [0, 1] and s["medium"].tolist() == [2, 3] and s["few"].tolist() == [4, 5]
    y_true = np.repeat(np.arange(6), 10)
    y_pred = y_true.copy()
    y_pred[y_true == 5] = 0  # the rarest class always wrong
    y_pred[:5] = 1  # half of class 0 wrong
    acc = shot_accuracies(y_true, y_pred, counts)
    assert acc["top1"] == pytest.approx(100 * 45 / 60)
    assert acc["many"] == pytest.approx(75.0)
    assert acc["medium"] == pytest.approx(100.0)
    assert acc["few"] == pytest.approx(50.0)
    assert acc["per_class"].tolist() == [50, 100, 100, 100, 100, 0]
    with pytest.raises(ValueError, match="n_samples"):
        shot_accuracies(y_true, y_pred[:-1], counts)
    with pytest.raises(ValueError, match="y_true should lie"):
        shot_accuracies(y_true + 1, y_pred, counts)


def test_split_groups_by_frequency():
    counts = [10, 1000, 100, 1, 500, 50]
    assert split_groups_by_frequency(counts, 2).tolist() == [1, 0, 0, 1, 0, 1]
    assert split_groups_by_frequency(counts, 3).tolist() == [2, 0, 1, 2, 0, 1]
    g = split_groups_by_frequency(counts, 2, by="samples")
    assert g[1] == 0 and g[3] == 1 and set(g.tolist()) == {0, 1}
    assert split_groups_by_frequency(counts, 1).tolist() == [0] * 6
    with pytest.raises(ValueError, match="num_groups=7"):
        split_groups_by_frequency(counts, 7)
    with pytest.raises(ValueError, match="by="):
        split_groups_by_frequency(counts, 2, by="pixels")


def test_losses_by_hand():
    counts = [100, 10, 1]
    w = class_balanced_weights(counts, beta=0.9)
    raw = (1 - 0.9) / (1 - 0.9 ** np.array(counts, dtype=float))
    np.testing.assert_allclose(w.numpy(), raw / raw.sum() * 3, rtol=1e-6)
    ldam = LDAMLoss(counts, max_margin=0.5, scale=10.0)
    np.testing.assert_allclose(ldam.margins.numpy(), 0.5 * np.array(counts, dtype=float) ** -0.25 / 1.0,
                               rtol=1e-6)
    logits = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.5, 0.4]])
    y = torch.tensor([2, 1])
    shifted = logits.clone()
    shifted[0, 2] -= ldam.margins[2]
    shifted[1, 1] -= ldam.margins[1]
    torch.testing.assert_close(ldam(logits, y), F.cross_entropy(10 * shifted, y))
    crit = LongTailLoss("CE-DRW", counts, drw_epoch=3)
    crit.set_epoch(2)
    torch.testing.assert_close(crit(logits, y), F.cross_entropy(logits, y))
    crit.set_epoch(3)
    torch.testing.assert_close(crit(logits, y), F.cross_entropy(logits, y, weight=crit.cb_weight))
    assert LongTailLoss("LDAM-DRW", counts).logit_scale == 30.0
    head = NormedLinear(4, 3)
    out = head(torch.randn(5, 4))
    assert out.shape == (5, 3) and out.abs().max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="loss"):
        LongTailLoss("focal", counts)
    with pytest.raises(ValueError, match="class_counts"):
        class_balanced_weights([5, 0])


def test_consistency_loss_forms():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    kl = consistency_loss(a, b, "kl")
    ref = F.kl_div(F.log_softmax(a, 1), F.softmax(b.detach(), 1), reduction="batchmean")
    torch.testing.assert_close(kl, ref)
    kl.backward()
    assert b.grad is None and a.grad is not None  # stop-gradient on the auxiliary side
    assert float(consistency_loss(a, a.detach(), "mse").detach()) == 0.0
    assert float(consistency_loss(a, b, "none").detach()) == 0.0
    with pytest.raises(ValueError, match="consistency"):
        consistency_loss(a, b, "cosine")


def test_dual_path_separates_components_by_group():
    torch.manual_seed(0)
    model = resnet8(4, width=4, norm_layer=lambda c: CompoundBatchNorm2d(c, 2, momentum=0.5))
    counts = np.array([40, 20, 5, 3])
    loss_fn = DualPathLoss(counts, 2)
    assert loss_fn.class_to_group.tolist() == [0, 0, 1, 1]
    x = torch.randn(16, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3] * 4)
    x[y >= 2] = x[y >= 2] * 3 + 2  # tail samples look different
    out = loss_fn(model, x, y)
    assert out.loss.requires_grad and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, out.main_loss + out.aux_loss + out.consistency)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    first = model.bn1
    assert first.group_ids is None  # the context restored the soft path
    # the hard path pulled component 0 to the head samples' statistics and component 1 to the tail's
    assert float(first.running_mean_aux[1].mean()) > float(first.running_mean_aux[0].mean())
    with pytest.raises(ValueError, match="num_groups=3"):
        DualPathLoss(counts, 3)(model, x, y)
    with pytest.raises(ValueError, match="y should lie"):
        dual_path_loss(model, x, y + 4, loss_fn.class_to_group)
    with pytest.raises(TypeError, match="class_to_group"):
        dual_path_loss(model, x, y, [0, 0, 1, 1])


def test_full_cifar_loader_reads_batches_and_reports_missing(tmp_path, monkeypatch):
    import pickle

    from reprozoo.datasets import DataNotFoundError, load_cifar10

    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path))
    monkeypatch.setattr("reprozoo.datasets._paths.data_roots", lambda: [tmp_path])
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py/data_batch_1"):
        load_cifar10()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    ds = load_cifar10()
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.y_train.tolist() == [0, 1, 2, 3] * 5


@pytest.mark.parametrize("bad, match", [
    ([100.5, 5, 10], r"counts \(training samples per class\).*non-integer counts: \[100\.5"),
    ([], r">= 2 counts.*got 0 count\(s\)"),
    ([7], r">= 2 counts.*got 1 count\(s\)"),
    ([5, 0], r"counts below 1"),
    ([5, float("nan")], r"NaN or infinite"),
    ([[1, 2], [3, 4]], r"shape \(2, 2\)"),
])
def test_ldam_class_counts_messages_speak_of_counts(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        LDAMLoss(bad)
    assert "label" not in str(err.value) and "row(s)" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        class_balanced_weights(bad)


def test_ldam_class_counts_of_wrong_type():
    with pytest.raises(TypeError, match="class_counts"):
        LDAMLoss(["a", "b"])
    with pytest.raises(TypeError, match="class_counts"):
        LDAMLoss([True, False])
