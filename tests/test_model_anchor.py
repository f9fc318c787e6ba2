"""Map-anchored sampling (voxel-render, beyond the paper): ``known`` regions in the DDIM loop and
the ``anchor`` modes of ``WorldModel.generate``; render supersampling of the memory input."""

import numpy as np
import pytest
import torch

from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov
from pewm.model import MemoryInput, VDiffusion, WorldModel, from_preset
from pewm.model.config import DiffusionConfig
from pewm.model.testing import torch_threads

LATENT = dict(autoencoder=dict(latent_channels=4, downsample=2, channels=[16]), patch_size=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def _model(latent: bool, reader: str = "voxel-render") -> WorldModel:
    torch.manual_seed(0)
    m = WorldModel.from_preset("micro", reader=reader, **(LATENT if latent else {}))
    with torch.no_grad():
        for p in m.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def _inputs(cfg, coverage: float = 0.6):
    g = torch.Generator().manual_seed(3)
    h, w, H = cfg.image_height, cfg.image_width, cfg.frames
    rgb = (torch.rand(1, h, w, 3, generator=g) * 255).to(torch.uint8)
    depth = torch.rand(1, h, w, generator=g) * 3 + 1.0
    pose = camera_pose_from_agent(0.0, 0.0, 0.0, 1.2)
    K = intrinsics_from_fov(w, h, 90.0)
    r = torch.rand(1, H, 5, h, w, generator=g)
    r[:, :, 3] = 1.0 + 3.0 * r[:, :, 3]
    cov = torch.zeros(1, H, h, w)
    cov[..., : int(w * coverage)] = 1.0  # the left part of every view is covered
    r[:, :, 4] = cov
    r[:, :, :4] *= cov[:, :, None]
    return rgb, depth, pose, K, MemoryInput(rendered=r)


def test_ddim_keeps_known_values_and_fills_the_rest():
    cfg = from_preset("micro")
    diff = VDiffusion(cfg.diffusion)
    shape = (2, cfg.frames, 4, cfg.image_height, cfg.image_width)
    known = torch.rand(shape) * 2 - 1
    mask = torch.zeros(shape)
    mask[..., :5] = 1.0

    class Zero:  # predicts v = 0 everywhere: without anchoring the sample is not `known`
        def __init__(self):
            self.cfg = cfg

        def __call__(self, x_t, t, cond):
            return torch.zeros_like(x_t)

    class Cond:
        current = torch.zeros(2, 4, cfg.image_height, cfg.image_width)

        def drop_memory(self, keep):
            return self

    out = diff.sample(Zero(), Cond(), steps=4, generator=torch.Generator().manual_seed(0), known=known, known_mask=mask)
    assert torch.equal(out[..., :5], known[..., :5])
    assert not torch.allclose(out[..., 5:], known[..., 5:], atol=0.1)
    with pytest.raises(ValueError, match="both known and known_mask"):
        diff.sample(Zero(), Cond(), steps=2, known=known)
    with pytest.raises(ValueError, match="shape"):
        diff.sample(Zero(), Cond(), steps=2, known=known[:1], known_mask=mask[:1])


@pytest.mark.parametrize("latent", [False, True])
def test_pixel_anchor_copies_covered_pixels_and_leaves_the_rest(latent):
    m = _model(latent)
    rgb, depth, pose, K, mem = _inputs(m.config)
    kw = dict(actions=[[0] * m.config.frames], memory=mem, steps=2)
    free = m.generate(rgb, depth, pose, K, anchor="none", generator=torch.Generator().manual_seed(1), **kw)
    anch = m.generate(rgb, depth, pose, K, anchor="pixel", generator=torch.Generator().manual_seed(1), **kw)
    cov = mem.rendered[0, :, 4] > 0.5
    want_rgb = (mem.rendered[0, :, :3].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(anch.rgb[0][cov], want_rgb[cov])
    assert torch.allclose(anch.depth[0][cov], mem.rendered[0, :, 3][cov])
    assert torch.equal(anch.rgb[0][~cov], free.rgb[0][~cov]) and torch.equal(anch.depth[0][~cov], free.depth[0][~cov])
    assert not torch.equal(free.rgb[0][cov], want_rgb[cov])


def test_latent_anchor_fixes_fully_covered_cells():
    m = _model(latent=True)
    rgb, depth, pose, K, mem = _inputs(m.config, coverage=0.5)
    kw = dict(actions=[[0] * m.config.frames], memory=mem, steps=3)
    seen = {}
    sample = m.diffusion.sample

    def spy(*a, **k):
        seen.update(k)
        seen["out"] = sample(*a, **k)
        return seen["out"]

    m.diffusion.sample = spy
    m.generate(rgb, depth, pose, K, anchor="latent", generator=torch.Generator().manual_seed(1), **kw)
    enc = m.encode_memory(mem).rendered_latent
    cells = enc[:, :, -1:] >= 1.0 - 1e-6  # latent cells the render covers completely
    assert bool(cells.any()) and not bool(cells.all())
    torch.testing.assert_close(seen["known"], enc[:, :, :-1])
    assert torch.equal(seen["known_mask"].bool(), cells)
    out, known = seen["out"], seen["known"]
    full = cells.expand_as(out)
    assert torch.equal(out[full], known[full]), "covered cells end exactly at the render's latents"
    assert not torch.allclose(out[~full], known[~full], atol=0.1), "the rest is generated"
    m.generate(rgb, depth, pose, K, anchor="none", generator=torch.Generator().manual_seed(1), **kw)
    assert seen["known"] is None and seen["known_mask"] is None
    # "both": latent anchoring, then the covered pixels copied from the render
    both = m.generate(rgb, depth, pose, K, anchor="both", generator=torch.Generator().manual_seed(1), **kw)
    assert seen["known"] is not None
    cov = mem.rendered[0, :, 4] > 0.5
    want = (mem.rendered[0, :, :3].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(both.rgb[0][cov], want[cov])


def test_anchor_without_memory_or_reader_and_bad_values():
    m = _model(latent=True)
    rgb, depth, pose, K, _ = _inputs(m.config)
    kw = dict(actions=[[0] * m.config.frames], steps=2)
    a = m.generate(rgb, depth, pose, K, anchor="both", generator=torch.Generator().manual_seed(1), **kw)
    b = m.generate(rgb, depth, pose, K, anchor="none", generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.rgb, b.rgb), "no memory: nothing to anchor to"
    with pytest.raises(ValueError, match="anchor must be one of"):
        m.generate(rgb, depth, pose, K, anchor="copy", **kw)
    other = _model(latent=False, reader="voxel-xattn")
    with pytest.raises(ValueError, match="needs a voxel-render model"):
        other.generate(rgb, depth, pose, K, anchor="pixel", **kw)
    with pytest.raises(ValueError, match="DiffusionConfig.anchor"):
        DiffusionConfig(anchor="copy").validate()


def test_model_default_anchor_comes_from_the_config():
    m = _model(latent=False)
    rgb, depth, pose, K, mem = _inputs(m.config)
    kw = dict(actions=[[0] * m.config.frames], memory=mem, steps=2)
    explicit = m.generate(rgb, depth, pose, K, anchor="pixel", generator=torch.Generator().manual_seed(1), **kw)
    m.config.diffusion.anchor = "pixel"
    default = m.generate(rgb, depth, pose, K, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(explicit.rgb, default.rgb)


def test_render_supersample_antialiases_and_keeps_a_flat_wall():
    from pewm.memory import PersistentMap, PersistentMapConfig, VoxelMapConfig
    from pewm.model.memory_input import rendered_input

    cfg = from_preset("micro", reader="voxel-render")
    h, w = cfg.image_height, cfg.image_width
    K = torch.tensor(intrinsics_from_fov(w, h, 90.0).matrix, dtype=torch.float32)
    pose = torch.eye(4)
    pmap = PersistentMap(PersistentMapConfig(surface=VoxelMapConfig.surface(0.05)))
    big = 64  # a fronto-parallel wall 2 m ahead, fused densely
    Kb = torch.tensor(intrinsics_from_fov(big, big, 90.0).matrix, dtype=torch.float32)
    rgb = np.full((1, big, big, 3), (200, 100, 50), np.uint8)
    pmap.integrate(rgb, torch.full((1, big, big), 2.0), Kb, pose[None])
    one = rendered_input(pmap, K, pose[None], cfg, 1).rendered[0, 0]
    two = rendered_input(pmap, K, pose[None], cfg, 2).rendered[0, 0]
    for r in (one, two):
        assert bool(r[4].bool().all())
        torch.testing.assert_close(r[:3].mean((1, 2)), torch.tensor([200, 100, 50]) / 255.0, atol=1e-2, rtol=0)
        assert float((r[3] - 2.0).abs().max()) < 0.05
    with pytest.raises(ValueError, match="supersample"):
        rendered_input(pmap, K, pose[None], cfg, 0)
