"""reprozoo.training: batched prediction, top-1 in percent, random crop + flip."""

import pytest
import torch
from torch import nn

from reprozoo.training import predict, predict_logits, random_crop_flip, top1


def test_random_crop_flip_shapes_and_content():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    torch.testing.assert_close(random_crop_flip(x, gen, pad=0, flip=False), x)
    out = random_crop_flip(x, gen, pad=2, flip=True)
    assert out.shape == x.shape
    assert set(out.flatten().tolist()) - {0.0} <= set(x.flatten().tolist())


def test_random_crop_flip_is_seeded():
    x = torch.randn(8, 3, 6, 6)
    a = random_crop_flip(x, torch.Generator().manual_seed(3))
    b = random_crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_predict_batches_and_restores_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    x = torch.randn(25, 4)
    assert torch.equal(predict(net, x, batch_size=7), predict_logits(net, x).argmax(1))
    assert net.training


def test_top1_is_a_percentage():
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert top1(net, x, torch.tensor([0, 1, 1, 1])) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="samples"):
        top1(net, x, torch.tensor([0, 1]))
