"""Shared contract for every registered feature extractor (parametrised over the registry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pewm.memory import available_extractors, make_extractor, register_extractor
from pewm.memory.features import Dinov2Extractor


@pytest.fixture(scope="module")
def tiny_dinov2_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, patch_size=14, image_size=56
    )
    path = tmp_path_factory.mktemp("dinov2_tiny")
    transformers.Dinov2Model(cfg).save_pretrained(path)
    return path


@pytest.fixture(params=available_extractors())
def extractor(request, tiny_dinov2_dir):
    kw = {"dinov2": {"weights": tiny_dinov2_dir}}.get(request.param, {})
    return make_extractor(request.param, **kw)


def _images(b=2, h=30, w=44, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def test_shape_dtype_device_dim(extractor):
    x = _images()
    y = extractor(x)
    assert y.shape == (2, extractor.dim, 30, 44)
    assert y.dtype == torch.float32 and y.device.type == "cpu"
    assert torch.isfinite(y).all()
    assert isinstance(extractor.name, str) and extractor.dim > 0


def test_deterministic(extractor):
    x = _images()
    assert torch.equal(extractor(x), extractor(x))


def test_batch_independence(extractor):
    x = _images(3)
    full = extractor(x)
    one = extractor(x[1:2])
    torch.testing.assert_close(full[1:2], one, atol=1e-5, rtol=1e-5)


def test_accepts_uint8_hwc_and_float_chw(extractor):
    x = _images()
    u8 = (x * 255).round().to(torch.uint8)
    hwc = u8.permute(0, 2, 3, 1).numpy()
    a = extractor(hwc)
    b = extractor(u8.float() / 255)
    torch.testing.assert_close(a, b)
    assert extractor(hwc[0]).shape == (1, extractor.dim, 30, 44)  # unbatched


def test_rgb_is_identity():
    x = _images()
    assert torch.equal(make_extractor("rgb")(x), x)


def test_dinov2_loader_and_errors(tiny_dinov2_dir, tmp_path):
    ex = Dinov2Extractor(tiny_dinov2_dir, input_size=28)
    assert ex.dim == 24 and ex(_images()).shape == (2, 24, 30, 44)
    with pytest.raises(FileNotFoundError):
        Dinov2Extractor(tmp_path)
    with pytest.raises(ValueError):
        Dinov2Extractor(tiny_dinov2_dir, input_size=30)


def test_registry():
    class Const:
        name, dim = "const", 2

        def __call__(self, images):
            x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    register_extractor("const_test", Const)
    try:
        assert "const_test" in available_extractors()
        assert make_extractor("const_test").dim == 2
        with pytest.raises(ValueError):
            register_extractor("const_test", Const)
    finally:
        from pewm.memory import features

        features._REGISTRY.pop("const_test")
    with pytest.raises(KeyError):
        make_extractor("nope")
