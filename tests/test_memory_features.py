"""Shared contract for every registered feature extractor (parametrised over the registry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pewm.model  # noqa: F401  (registers the model's "autoencoder" extractor)
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
    kw = {
        "dinov2": {"weights": tiny_dinov2_dir},
        "autoencoder": {"config": {"latent_channels": 4, "downsample": 4, "channels": (8, 16)}},
    }.get(request.param, {})
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


def test_autoencoder_features_read_depth_and_load_from_a_saved_model(tmp_path):
    from pewm.memory import PersistentMap, PersistentMapConfig, VoxelMapConfig
    from pewm.model import WorldModel
    from pewm.model.map_features import AutoencoderFeatures

    torch.manual_seed(0)
    model = WorldModel.from_preset("micro", autoencoder=dict(latent_channels=4, downsample=2, channels=[8]), patch_size=2)
    ex = AutoencoderFeatures(autoencoder=model.autoencoder, depth_range=(model.config.depth_min, model.config.depth_max))
    x = _images(h=16, w=16)
    near, far = torch.full((2, 16, 16), 1.0), torch.full((2, 16, 16), 8.0)
    assert ex.dim == 8 and ex(x, depth=near).shape == (2, 8, 16, 16)
    assert not torch.allclose(ex(x, depth=near), ex(x, depth=far)), "the features see depth"
    with pytest.raises(ValueError, match="depth has shape"):
        ex(x, depth=near[:, :8])
    # the frozen encoder of a saved latent model, loaded by directory
    model.save_pretrained(tmp_path / "m")
    loaded = make_extractor("autoencoder", weights=tmp_path / "m")
    torch.testing.assert_close(loaded(x, depth=near), ex(x, depth=near))
    with pytest.raises(ValueError, match="exactly one"):
        AutoencoderFeatures()
    pixel = WorldModel.from_preset("micro")
    pixel.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="no autoencoder"):
        AutoencoderFeatures(weights=tmp_path / "p")
    # PersistentMap fuses it at its native grid (one point per 2x2 cell), with depth
    assert ex.grid_stride == 2 and ex.grid(x, depth=near).shape == (2, 8, 8, 8)
    pm = PersistentMap(PersistentMapConfig(features=VoxelMapConfig.paper(None), surface=None), extractor=ex)
    K = np.array([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]], np.float32)
    n = pm.integrate(x[:1], near[:1], K, np.eye(4, dtype=np.float32)[None])
    assert n == 64, "one point per cell"
    want = ex.grid(x[:1], depth=near[:1]).amax(dim=(2, 3))[0]
    got = pm.features.get("feature").amax(dim=0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_subsampled_frames_keep_the_sampled_pixels_rays():
    from pewm.geometry import unproject_depth
    from pewm.memory.persistent_map import subsample_frames

    K = torch.tensor([[20.0, 0, 15.5], [0, 22.0, 11.5], [0, 0, 1]])
    depth = torch.rand(1, 24, 32) * 3 + 1
    rgb = torch.rand(1, 3, 24, 32)
    T = torch.eye(4)[None]
    for s in (2, 3, 4):
        img, d, Ks = subsample_frames(rgb, depth, K, s, "cpu")
        o = s // 2
        assert d.shape == (1, len(range(o, 24, s)), len(range(o, 32, s))) and img.shape[-2:] == d.shape[-2:]
        full = unproject_depth(depth, K, T)[:, o::s, o::s]
        torch.testing.assert_close(unproject_depth(d, Ks, T), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(img, rgb[:, :, o::s, o::s])
