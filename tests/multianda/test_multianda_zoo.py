"""The zoo's backbones (reprozoo.models VGG / ViT / Mixer) and the trained-model cache."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from reprozoo.models import CifarVGG, MlpMixer, VisionTransformer, mixer_tiny, vgg11, vgg_tiny, vit_small, vit_tiny
from reprozoo.multianda.zoo import ZOO, ZooSpec, build_model, cache_dir, data_checksum, get_model


@pytest.mark.parametrize("factory,norm", [(vgg_tiny, nn.BatchNorm2d), (vgg11, nn.BatchNorm2d),
                                          (vit_tiny, nn.LayerNorm), (vit_small, nn.LayerNorm),
                                          (mixer_tiny, nn.LayerNorm)])
def test_backbone_face_and_shapes(factory, norm):
    torch.manual_seed(0)
    m = factory(7).eval()
    x = torch.rand(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features)
    assert m.forward_head(feats, pre_logits=True) is feats
    assert m(x).shape == (2, 7)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    m.reset_classifier(4)
    assert m(x).shape == (2, 4)
    assert any(isinstance(mod, norm) for mod in m.modules())


class CountingNorm(nn.LayerNorm):
    pass


def test_norm_layer_plugs_in():
    vit = VisionTransformer(norm_layer=CountingNorm, depth=2)
    assert sum(isinstance(m, CountingNorm) for m in vit.modules()) == 5  # 2 per block + final
    mixer = MlpMixer(norm_layer=CountingNorm, depth=2)
    assert sum(isinstance(m, CountingNorm) for m in mixer.modules()) == 5
    vgg = CifarVGG(norm_layer=None)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vgg.modules())


@pytest.mark.parametrize("make,match", [
    (lambda: VisionTransformer(img_size=30, patch_size=4), "divisible"),
    (lambda: VisionTransformer(embed_dim=10, num_heads=4), "divisible"),
    (lambda: MlpMixer(img_size=30), "divisible"),
    (lambda: CifarVGG(img_size=20), "divisible"),
])
def test_backbone_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_zoo_has_five_architectures_and_a_defended_model():
    archs = {spec.arch for spec in ZOO.values()}
    assert len(archs) >= 5
    assert any(spec.adv_eps > 0 for spec in ZOO.values())
    for spec in ZOO.values():
        assert build_model(spec)(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_cache_round_trip_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROZOO_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "models"
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    sha = data_checksum(x.numpy(), y.numpy())
    spec = ZooSpec("small_cnn", {"channels": (4, 8)}, epochs=1, batch_size=32)
    m1, info1 = get_model("tiny", spec, x, y, sha)
    assert not info1["cached"] and (tmp_path / "models").is_dir()
    files = list((tmp_path / "models").glob("*.pt"))
    assert len(files) == 1 and sha in files[0].name and spec.key(0) in files[0].name
    m2, info2 = get_model("tiny", spec, x, y, sha)
    assert info2["cached"]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a different recipe or different data is a different file (the cache is never reused wrongly)
    _, info3 = get_model("tiny", dataclasses.replace(spec, lr=0.01), x, y, sha)
    assert not info3["cached"]
    sha2 = data_checksum(x.numpy(), (y.numpy() + 1) % 10)
    assert sha2 != sha


def test_training_is_deterministic_and_cache_is_optional(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROZOO_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g)
    spec = ZooSpec("small_cnn", {"channels": (4, 8)}, epochs=1, batch_size=16, adv_eps=4 / 255, adv_steps=2)
    m1, _ = get_model("at", spec, x, y, "x", use_cache=False)
    m2, _ = get_model("at", spec, x, y, "x", use_cache=False)
    assert not list(tmp_path.rglob("*.pt"))
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_corrupt_cache_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROZOO_CACHE", str(tmp_path))
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    spec = ZooSpec("small_cnn", {"channels": (4,)}, epochs=1, batch_size=16)
    _, info = get_model("c", spec, x, y, "abc")
    path = next((tmp_path / "models").glob("*.pt"))
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        _, info = get_model("c", spec, x, y, "abc")
    assert not info["cached"]


def test_data_checksum_depends_on_content():
    a = np.zeros((2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 1
    assert data_checksum(a, a[:, 0]) != data_checksum(b, a[:, 0])
