"""Shared contract of the memory readers (§3.3): every reader registered in READERS passes it."""

import pytest
import torch

from pewm.model import READERS, MemoryInput, WorldModel, from_preset
from pewm.model.testing import synthetic_batch, torch_threads

READER_NAMES = sorted(READERS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def _model(reader: str, seed: int = 0, trained_backbone: bool = True) -> WorldModel:
    """A micro model; ``trained_backbone`` perturbs every backbone weight (incl. the zero-initialised
    AdaLN and output layers) to stand in for a trained stage-1 model."""
    torch.manual_seed(seed)
    m = WorldModel(from_preset("micro", reader=reader))
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


@pytest.mark.parametrize("reader", READER_NAMES)
def test_output_shape_with_full_and_empty_memory(reader):
    m = _model(reader)
    cfg = m.config
    batch, x_t, t, cond = _inputs(m)
    want = (2, cfg.frames, 4, cfg.image_height, cfg.image_width)
    for memory in (batch.memory, None, MemoryInput()):
        _, c = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, memory))
        v = m.denoiser(x_t, t, c)
        assert v.shape == want and torch.isfinite(v).all()


@pytest.mark.parametrize("reader", READER_NAMES)
def test_zero_gates_leave_the_stage1_model_exactly_unchanged(reader):
    m = _model(reader)
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


@pytest.mark.parametrize("reader", READER_NAMES)
def test_gradients_reach_the_memory_blocks(reader):
    m = _model(reader)
    batch = synthetic_batch(m.config, 2, generator=torch.Generator().manual_seed(0))
    # at initialisation the gates themselves get a gradient, so stage 2 can open them
    m(batch, memory_dropout=0.0)["loss"].backward()
    for i, blk in enumerate(m.denoiser.reader.blocks):
        assert blk.ada_video.linear.weight.grad.abs().sum() > 0, f"block {i}: gate gets no gradient"
    if reader == "voxel-render":
        assert m.denoiser.reader.render_patch.weight.grad.abs().sum() > 0
    # once the gates are open every memory parameter is trained
    m.zero_grad()
    _perturb_memory(m)
    m(batch, memory_dropout=0.0)["loss"].backward()
    dead = [n for n, p in m.denoiser.reader.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"{reader}: no gradient for {dead}"


@pytest.mark.parametrize("reader", READER_NAMES)
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
