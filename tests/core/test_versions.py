"""version_key: caches keyed on it see fused optimizer steps, which bump no version counter."""

import pytest
import torch

from reprozoo.core.versions import version_key


@pytest.mark.parametrize("opt", [{"fused": True}, {"foreach": True}, {}])
def test_key_changes_with_every_optimizer_step(opt):
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([p], lr=0.1, **opt)
    before = version_key([p, None])
    p.grad = torch.ones(3)
    optimizer.step()
    assert version_key([p, None]) != before


def test_key_is_stable_without_changes_and_sees_in_place_ops():
    t = torch.zeros(2)
    assert version_key([t]) == version_key([t])
    k = version_key([t])
    t.add_(1)
    assert version_key([t]) != k
