"""Map-anchored sampling (voxel-render, beyond the paper): ``known`` regions in the DDIM loop and
the ``anchor`` modes of ``WorldModel.generate``; render supersampling of the memory input."""

import inspect

import numpy as np
import pytest
import torch

from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov
from pewm.model import MemoryInput, SamplingConfig, VDiffusion, WorldModel, from_preset
from pewm.model.config import DiffusionConfig
from pewm.model.sampling import KnownRegion
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


def _g(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    kw = dict(actions=[[0] * m.config.frames], memory=mem)
    s = SamplingConfig(steps=2)
    free = m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="none"), generator=_g(), **kw)
    anch = m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="pixel"), generator=_g(), **kw)
    cov = mem.rendered[0, :, 4] > 0.5
    want_rgb = (mem.rendered[0, :, :3].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(anch.rgb[0][cov], want_rgb[cov])
    assert torch.allclose(anch.depth[0][cov], mem.rendered[0, :, 3][cov])
    assert torch.equal(anch.rgb[0][~cov], free.rgb[0][~cov]) and torch.equal(anch.depth[0][~cov], free.depth[0][~cov])
    assert not torch.equal(free.rgb[0][cov], want_rgb[cov])


def test_latent_anchor_fixes_fully_covered_cells(monkeypatch):
    import pewm.model.world_model as W

    m = _model(latent=True)
    rgb, depth, pose, K, mem = _inputs(m.config, coverage=0.5)
    kw = dict(actions=[[0] * m.config.frames], memory=mem)
    s = SamplingConfig(steps=3)
    seen = {}
    sample = W.ddim_sample

    def spy(*a, **k):  # the DDIM loop generate runs: what its anchoring hook keeps, and the sample
        hooks = inspect.signature(sample).bind(*a, **k).arguments.get("hooks", ())
        region = [h for h in hooks if isinstance(h, KnownRegion)]
        assert len(region) <= 1
        seen["known"] = region[0].known if region else None
        seen["known_mask"] = region[0].mask if region else None
        seen["out"] = sample(*a, **k)
        return seen["out"]

    monkeypatch.setattr(W, "ddim_sample", spy)
    m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="latent"), generator=_g(), **kw)
    enc = m.encode_memory(mem).rendered_latent
    full = enc[:, :, -1:] >= 1.0 - 1e-6  # latent cells the render covers completely ...
    # ... whose neighbours it covers completely too (the encoder sees past a cell's edge)
    cells = full.clone()
    cells[..., 1:] &= full[..., :-1]
    cells[..., :-1] &= full[..., 1:]
    assert bool(cells.any()) and not bool(cells.all()) and not torch.equal(cells, full)
    torch.testing.assert_close(seen["known"], enc[:, :, :-1])
    assert torch.equal(seen["known_mask"].bool(), cells)
    out, known = seen["out"], seen["known"]
    full = cells.expand_as(out)
    assert torch.equal(out[full], known[full]), "covered cells end exactly at the render's latents"
    assert not torch.allclose(out[~full], known[~full], atol=0.1), "the rest is generated"
    m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="none"), generator=_g(), **kw)
    assert seen["known"] is None and seen["known_mask"] is None
    # "both": latent anchoring, then the covered pixels copied from the render
    both = m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="both"), generator=_g(), **kw)
    assert seen["known"] is not None
    cov = mem.rendered[0, :, 4] > 0.5
    want = (mem.rendered[0, :, :3].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(both.rgb[0][cov], want[cov])


def test_anchor_without_memory_or_reader_and_bad_values():
    m = _model(latent=True)
    rgb, depth, pose, K, _ = _inputs(m.config)
    kw = dict(actions=[[0] * m.config.frames])
    s = SamplingConfig(steps=2)
    a = m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="both"), generator=_g(), **kw)
    b = m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="none"), generator=_g(), **kw)
    assert torch.equal(a.rgb, b.rgb), "no memory: nothing to anchor to"
    with pytest.raises(ValueError,
                       match=r"sampling anchor must be one of \('none', 'latent', 'pixel', 'both'\), got 'copy'"):
        m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="copy"), **kw)
    other = _model(latent=False, reader="voxel-xattn")
    with pytest.raises(ValueError, match=r"anchor='pixel' needs a reader that can anchor \(\['voxel-render'\]\), "
                                         r"this model reads 'voxel-xattn'"):
        other.generate(rgb, depth, pose, K, sampling=s.replace(anchor="pixel"), **kw)
    with pytest.raises(ValueError, match="DiffusionConfig.anchor"):
        DiffusionConfig(anchor="copy").validate()


def test_model_default_anchor_comes_from_the_config():
    m = _model(latent=False)
    rgb, depth, pose, K, mem = _inputs(m.config)
    kw = dict(actions=[[0] * m.config.frames], memory=mem)
    s = SamplingConfig(steps=2)
    explicit = m.generate(rgb, depth, pose, K, sampling=s.replace(anchor="pixel"), generator=_g(), **kw)
    m.config.diffusion.anchor = "pixel"
    default = m.generate(rgb, depth, pose, K, sampling=s, generator=_g(), **kw)
    assert torch.equal(explicit.rgb, default.rgb)


def test_render_supersample_antialiases_edges_and_keeps_depths_real():
    from pewm.memory import PersistentMap, PersistentMapConfig, VoxelMapConfig
    from pewm.model.memory_build import MemoryBuildConfig, MemoryBuilder
    from pewm.model.readers.voxel_render import rendered_input

    cfg = from_preset("micro", reader="voxel-render")
    h, w = cfg.image_height, cfg.image_width
    K = torch.tensor(intrinsics_from_fov(w, h, 90.0).matrix, dtype=torch.float32)
    pose = torch.eye(4)
    big = 64  # seen densely: a far wall (3 m) with a near box (1.5 m) in front of its left half
    Kb = torch.tensor(intrinsics_from_fov(big, big, 90.0).matrix, dtype=torch.float32)
    rgb = np.full((1, big, big, 3), (200, 100, 50), np.uint8)
    depth = torch.full((1, big, big), 3.0)
    rgb[:, :, : big // 2 - 3] = (20, 180, 220)
    depth[:, :, : big // 2 - 3] = 1.5
    pmap = PersistentMap(PersistentMapConfig(surface=VoxelMapConfig.surface(0.05)))
    pmap.integrate(rgb, depth, Kb, pose[None])
    one = rendered_input(pmap, K, pose[None], cfg, 1).rendered[0, 0]
    two = rendered_input(pmap, K, pose[None], cfg, 2).rendered[0, 0]
    for r in (one, two):
        assert bool(r[4].bool().all())
        d = r[3]
        # every depth is one of the two surfaces (within a voxel), never a blend across the edge
        assert bool(((d - 1.5).abs().lt(0.06) | (d - 3.0).abs().lt(0.1)).all())
    diff = (one[:3] - two[:3]).abs().amax(0) > 1e-3
    cols = diff.any(0).nonzero().flatten()
    assert len(cols) > 0, "supersampling changes the edge"
    edge = (big // 2 - 3) * w / big
    assert float((cols.float() - edge).abs().max()) <= 3, (cols, edge)
    # the builder renders with its memory settings
    b = MemoryBuilder(cfg, MemoryBuildConfig(render_supersample=2))
    torch.testing.assert_close(b.read(pmap, pose, pose[None], K).rendered[0, 0], two)
    with pytest.raises(ValueError, match="supersample"):
        rendered_input(pmap, K, pose[None], cfg, 0)
    with pytest.raises(ValueError, match="render_supersample"):
        MemoryBuildConfig(render_supersample=0)


def test_known_cells_are_renoised_to_the_next_timestep(monkeypatch):
    """Between DDIM steps the known region is the known value noised to the timestep the model
    sees next (RePaint), not only replaced at the end."""
    import pewm.model.sampling as S

    cfg = from_preset("micro")
    calls = []
    make = S.make_scheduler

    def spying(c):
        sched = make(c)
        add = sched.add_noise

        def add_noise(x, noise, t):
            calls.append(int(t.reshape(-1)[0]))
            return add(x, noise, t)

        sched.add_noise = add_noise
        return sched

    monkeypatch.setattr(S, "make_scheduler", spying)  # the scheduler of the DDIM loop
    seen = []

    class Record:
        def __init__(self):
            self.cfg = cfg

        def __call__(self, x_t, t, cond):
            seen.append((int(t[0]), x_t[..., :5].clone()))
            return torch.zeros_like(x_t)

    class Cond:
        current = torch.zeros(1, 4, cfg.image_height, cfg.image_width)

        def drop_memory(self, keep):
            return self

    shape = (1, cfg.frames, 4, cfg.image_height, cfg.image_width)
    known = torch.full(shape, 0.5)
    mask = torch.zeros(shape)
    mask[..., :5] = 1.0
    diff = VDiffusion(cfg.diffusion)
    diff.sample(Record(), Cond(), steps=4, generator=torch.Generator().manual_seed(0), known=known, known_mask=mask)
    ts = [t for t, _ in seen]
    assert calls == ts[1:], (calls, ts)
    alphas = diff.train_scheduler.alphas_cumprod
    for t, x in seen[1:]:  # the model sees the known cells at exactly its noise level
        a = float(alphas[t])
        resid = (x - a ** 0.5 * 0.5) / (1 - a) ** 0.5
        assert abs(float(resid.mean())) < 0.2 and abs(float(resid.std()) - 1.0) < 0.2, (t, resid.mean(), resid.std())
