"""Shared contract of the memory readers (§3.3): every reader registered in READERS passes it."""

import dataclasses

import pytest
import torch

from pewm.model import READERS, MemoryInput, WorldModel, from_preset
from pewm.model.readers import MEMORY_INITS
from pewm.model.testing import synthetic_batch, torch_threads

READER_NAMES = sorted(READERS)
# reader options that change how a reader reads, run through the same contract as the readers
VARIANTS = {"voxel-xattn+cells": ("voxel-xattn", {"cell_tokens": 3})}
READER_CASES = READER_NAMES + sorted(VARIANTS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def _model(reader: str, seed: int = 0, trained_backbone: bool = True, memory_init: str = "zero-gate",
           **options) -> WorldModel:
    """A micro model (``memory_init`` and ``options`` are its reader options); ``trained_backbone``
    perturbs every backbone weight (incl. the zero-initialised AdaLN and output layers) to stand in
    for a trained stage-1 model."""
    reader, extra = VARIANTS.get(reader, (reader, {}))
    torch.manual_seed(seed)
    m = WorldModel(from_preset("micro", reader=reader, reader_options={"init": memory_init, **extra, **options}))
    if trained_backbone:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in m.backbone_parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def _perturb_memory(m: WorldModel, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.memory_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _inputs(m: WorldModel, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch = synthetic_batch(m.config, B, generator=g)
    x0, cond = m.condition(batch)
    x_t = torch.randn(x0.shape, generator=g)
    t = torch.tensor([999, 400][:B])
    return batch, x_t, t, cond


@pytest.mark.parametrize("reader", READER_CASES)
def test_output_shape_with_full_and_empty_memory(reader):
    m = _model(reader)
    cfg = m.config
    batch, x_t, t, cond = _inputs(m)
    want = (2, cfg.frames, 4, cfg.image_height, cfg.image_width)
    for memory in (batch.memory, None, MemoryInput()):
        _, c = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, memory))
        v = m.denoiser(x_t, t, c)
        assert v.shape == want and torch.isfinite(v).all()


@pytest.mark.parametrize("memory_init", MEMORY_INITS)
@pytest.mark.parametrize("reader", READER_CASES)
def test_initial_memory_blocks_leave_the_stage1_model_exactly_unchanged(reader, memory_init):
    m = _model(reader, memory_init=memory_init)
    batch, x_t, t, cond = _inputs(m)
    with torch.no_grad():
        with_memory = m.denoiser(x_t, t, cond)
        _, empty = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, None))
        without = m.denoiser(x_t, t, empty)
        # the stage-1 model: memory blocks removed entirely
        reader_mod = m.denoiser.reader
        reader_mod.block = lambda i, x, c, cam, ctx: x
        cond.memory.input_tokens = None
        stage1 = m.denoiser(x_t, t, cond)
    assert torch.equal(with_memory, stage1)
    assert torch.equal(without, stage1)


@pytest.mark.parametrize("memory_init", MEMORY_INITS)
@pytest.mark.parametrize("reader", READER_CASES)
def test_gradients_reach_the_memory_blocks(reader, memory_init):
    m = _model(reader, memory_init=memory_init)
    batch = synthetic_batch(m.config, 2, generator=torch.Generator().manual_seed(0))
    # at initialisation the gates (zero-gate) or the output projections (zero-out) get a gradient,
    # so stage 2 can open the blocks
    m(batch, memory_dropout=0.0)["loss"].backward()
    for i, blk in enumerate(m.denoiser.reader.blocks):
        first = blk.ada_video.linear.weight if memory_init == "zero-gate" else blk.attn.proj.weight
        assert first.grad.abs().sum() > 0, f"block {i}: the opening parameter gets no gradient"
    if reader == "voxel-render":
        assert m.denoiser.reader.render_patch.weight.grad.abs().sum() > 0
    # once the gates are open every memory parameter is trained
    m.zero_grad()
    _perturb_memory(m)
    m(batch, memory_dropout=0.0)["loss"].backward()
    dead = [n for n, p in m.denoiser.reader.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"{reader}: no gradient for {dead}"


@pytest.mark.parametrize("reader", READER_CASES)
def test_memory_matters_and_dropping_it_equals_an_empty_memory(reader):
    m = _model(reader)
    _perturb_memory(m)
    batch, x_t, t, cond = _inputs(m)
    _, empty = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, None))
    with torch.no_grad():
        v_mem = m.denoiser(x_t, t, cond)
        v_empty = m.denoiser(x_t, t, empty)
        v_drop = m.denoiser(x_t, t, cond.drop_memory(torch.tensor([False, True])))
    torch.testing.assert_close(v_drop[0], v_empty[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_drop[1], v_mem[1], atol=1e-5, rtol=1e-5)
    if reader == "none":
        torch.testing.assert_close(v_mem, v_empty)  # "none" ignores the memory
    else:
        assert (v_mem - v_empty).abs().max() > 1e-3, f"{reader}: the memory does not change the output"


def test_readers_reject_malformed_memory_naming_the_field():
    m = _model("voxel-xattn", trained_backbone=False)
    cfg = m.config
    batch = synthetic_batch(cfg, 2, generator=torch.Generator().manual_seed(0))
    mem = batch.memory
    bad = [
        (MemoryInput(tokens=mem.tokens[..., :-1], positions=mem.positions), "MemoryInput.tokens has shape"),
        (MemoryInput(tokens=mem.tokens), "needs MemoryInput.positions"),
        (MemoryInput(tokens=mem.tokens, positions=mem.positions[:, :-1]), "MemoryInput.positions has shape"),
        (MemoryInput(tokens=mem.tokens, positions=mem.positions, mask=mem.mask[:1]), "MemoryInput.mask has shape"),
        (
            MemoryInput(tokens=torch.zeros(2, cfg.max_memory_tokens + 1, cfg.memory_dim),
                        positions=torch.zeros(2, cfg.max_memory_tokens + 1, 3)),
            "max_memory_tokens",
        ),
    ]
    for memory, match in bad:
        with pytest.raises(ValueError, match=match):
            m.denoiser.reader.prepare(memory, 2, torch.device("cpu"))
    frames = _model("frames", trained_backbone=False).denoiser.reader
    with pytest.raises(ValueError, match="frame_poses"):
        frames.prepare(MemoryInput(frames=mem.frames, frame_intrinsics=mem.frame_intrinsics), 2, "cpu")
    with pytest.raises(ValueError, match="MemoryInput.frames has shape"):
        frames.prepare(MemoryInput(frames=mem.frames[..., :8]), 2, "cpu")
    render = _model("voxel-render", trained_backbone=False).denoiser.reader
    with pytest.raises(ValueError, match="MemoryInput.rendered has shape"):
        render.prepare(MemoryInput(rendered=mem.rendered[:, :1]), 2, "cpu")
    with pytest.raises(TypeError, match="MemoryInput"):
        render.prepare({"rendered": mem.rendered}, 2, "cpu")


def test_zero_out_init_trains_the_attention_read_out_from_the_first_step():
    """What separates the two initialisations: with AdaLN-Zero gates the attention gets no gradient
    at all until the gates move; with zero output projections its read-out learns at once."""
    grads = {}
    for init in MEMORY_INITS:
        m = _model("voxel-xattn", memory_init=init)
        batch = synthetic_batch(m.config, 2, generator=torch.Generator().manual_seed(0))
        m(batch, memory_dropout=0.0)["loss"].backward()
        blk = m.denoiser.reader.blocks[0]
        grads[init] = (blk.attn.proj.weight.grad.abs().sum().item(), blk.attn.kv.weight.grad.abs().sum().item())
    assert grads["zero-gate"] == (0.0, 0.0)
    assert grads["zero-out"][0] > 0
    assert grads["zero-out"][1] == 0.0  # behind the zero projection: it follows once the read-out moves


def test_reinit_reader_keeps_the_backbone_and_restores_the_identity(tmp_path):
    m = _model("voxel-xattn")
    _perturb_memory(m)
    backbone = {n: p.clone() for n, p in m.denoiser.named_parameters() if not n.startswith("reader.")}
    batch, x_t, t, cond = _inputs(m)
    _, empty = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, None))
    with torch.no_grad():
        assert (m.denoiser(x_t, t, cond) - m.denoiser(x_t, t, empty)).abs().max() > 1e-3
    m.reinit_reader({"init": "zero-out"})
    assert m.config.reader_options["init"] == "zero-out" and m.denoiser.cfg.reader_options["init"] == "zero-out"
    assert m.denoiser.reader.options.init == "zero-out"
    for n, p in m.denoiser.named_parameters():
        if not n.startswith("reader."):
            assert torch.equal(p, backbone[n]), n
    batch, x_t, t, cond = _inputs(m)
    with torch.no_grad():
        assert torch.equal(m.denoiser(x_t, t, cond), m.denoiser(x_t, t, empty))
    m.save_pretrained(tmp_path / "m")
    assert WorldModel.from_pretrained(tmp_path / "m").config.reader_options["init"] == "zero-out"
    with pytest.raises(ValueError, match="reader option init must be one of"):
        m.reinit_reader({"init": "zero"})


def test_ray_origins_recover_every_camera_centre_from_the_pooled_plucker_rays():
    import math

    import torch.nn.functional as F

    from pewm.geometry import plucker_rays
    from pewm.model.readers.voxel_xattn import ray_origins, ray_point_embedding
    from pewm.model.layers import sincos_3d

    K = torch.tensor([[32.0, 0, 31.5], [0, 32.0, 31.5], [0, 0, 1]])
    g = torch.Generator().manual_seed(0)
    T = torch.eye(4).repeat(2, 3, 1, 1)
    for b in range(2):
        for f in range(3):
            a = torch.rand(1, generator=g).item() * 6
            T[b, f, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
            T[b, f, :3, 3] = torch.randn(3, generator=g) * 2
    cam = F.avg_pool2d(plucker_rays(K[None, None], T, 64, 64).flatten(0, 1), 4).flatten(2).transpose(1, 2).reshape(2, 3 * 256, 6)
    torch.testing.assert_close(ray_origins(cam, 3), T[:, :, :3, 3], atol=1e-5, rtol=0)
    # the embedding of a token is the mean embedding of points on its own ray, from its own camera
    emb = ray_point_embedding(cam, 3, 96, depths=(2.0,))
    d = cam[1, 300, 3:] / cam[1, 300, 3:].norm()
    point = T[1, 300 // 256, :3, 3] + 2.0 * d
    torch.testing.assert_close(emb[1, 300], sincos_3d(point, 96), atol=1e-4, rtol=0)


def test_ray_query_reader_starts_as_the_identity_and_learns():
    m = _model("voxel-xattn", memory_init="zero-out", ray_query=True)
    assert m.denoiser.reader.ray_query is not None
    plain = WorldModel(from_preset("micro", reader="voxel-xattn"))
    extra = m.num_parameters()["total"] - plain.num_parameters()["total"]
    assert extra == m.config.memory_pos_dim * m.config.width + m.config.width
    batch, x_t, t, cond = _inputs(m)
    _, empty = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, None))
    with torch.no_grad():
        assert torch.equal(m.denoiser(x_t, t, cond), m.denoiser(x_t, t, empty))
    _perturb_memory(m)
    m.zero_grad()
    m(batch, memory_dropout=0.0)["loss"].backward()
    assert m.denoiser.reader.ray_query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert (m.denoiser(x_t, t, cond) - m.denoiser(x_t, t, empty)).abs().max() > 1e-3


def test_ray_query_config_errors_name_the_value():
    with pytest.raises(ValueError, match="voxel-xattn reader option ray_query must be a bool, got 'no'"):
        from_preset("micro", reader_options={"ray_query": "no"})
    with pytest.raises(ValueError, match="voxel-xattn reader option ray_query must be a bool, got 'no'"):
        from_preset("micro", memory_ray_query="no")  # the legacy field, converted
    with pytest.raises(ValueError, match="memory_ray_query is for the voxel-xattn reader, not 'frames'"):
        from_preset("micro", reader="frames", memory_ray_query=True)
    with pytest.raises(ValueError, match="the frames reader has no option"):
        from_preset("micro", reader="frames", reader_options={"ray_query": True})
    with pytest.raises(ValueError, match=r"reader option init must be one of \('zero-gate', 'zero-out'\), got 'zero'"):
        from_preset("micro", memory_init="zero")
    with pytest.raises(ValueError, match="reader option init must be one of"):
        from_preset("micro", reader_options={"init": "zero"})


def test_ray_distance_bias_is_zero_on_the_ray_and_falls_with_distance():
    from pewm.model.readers.voxel_xattn import ray_distance_bias

    # two frames of 2 tokens each; frame 0 at the origin, frame 1 one metre to the right (x)
    d = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8]])
    cams = []
    for o in (torch.zeros(3), torch.tensor([1.0, 0.0, 0.0])):
        for di in d:
            cams.append(torch.cat([torch.cross(o, di, dim=0), di]))
    cam = torch.stack(cams)[None]  # (1, 4, 6)
    pos = torch.tensor([[[0.0, 0.0, 3.0], [0.0, 1.0, 3.0], [0.0, 0.0, -2.0]]])  # on ray 0, 1 m off, behind
    b = ray_distance_bias(cam, 2, pos, sigma=0.5)
    assert b.shape == (1, 4, 3)
    torch.testing.assert_close(b[0, 0], torch.tensor([0.0, -1.0 / 0.5, -4.0 / 0.5]), atol=1e-5, rtol=0)
    # frame 1's straight-ahead ray runs along x = 1: the first token is 1 m from it
    torch.testing.assert_close(b[0, 2, 0], torch.tensor(-1.0 / 0.5), atol=1e-5, rtol=0)


def test_ray_bias_reader_starts_as_the_identity_and_its_bias_shapes_attention():
    m = _model("voxel-xattn", memory_init="zero-out", ray_bias=0.5)
    batch, x_t, t, cond = _inputs(m)
    assert cond.memory.positions is not None
    _, empty = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, None))
    with torch.no_grad():
        assert torch.equal(m.denoiser(x_t, t, cond), m.denoiser(x_t, t, empty))
        _perturb_memory(m)
        v_bias = m.denoiser(x_t, t, cond)
        # same weights, bias off
        m.denoiser.reader.options = dataclasses.replace(m.denoiser.reader.options, ray_bias=0.0)
        m.denoiser.reader._ray_cache = None
        v_plain = m.denoiser(x_t, t, cond)
    assert (v_bias - v_plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="memory_ray_bias is for the voxel-xattn reader"):
        from_preset("micro", reader="frames", memory_ray_bias=0.5)
    with pytest.raises(ValueError, match=r"voxel-xattn reader option ray_bias must be a length >= 0 in metres, got -1\.0"):
        from_preset("micro", memory_ray_bias=-1.0)
    with pytest.raises(ValueError, match="voxel-xattn reader option ray_bias must be a length >= 0"):
        from_preset("micro", reader_options={"ray_bias": -1.0})
