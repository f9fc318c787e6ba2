"""The ``voxel-render`` reader's ``layout_prior`` option: the floor and ceiling of the map as a
per-pixel input (``MemoryInput.layout``), zero-initialised, added to a trained reader with
``reinit_reader(keep_trained=True)`` / ``pewm train --keep-reader-weights``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import memory_scenes as S
from pewm.geometry.layout import layout_depth, planes_from_heights
from pewm.model import MemoryBuilder, MemoryInput, WorldModel
from pewm.model.readers.voxel_render import plane_depth
from pewm.model.testing import perturbed_micro_model, synthetic_batch, torch_threads
from pewm.rollout import RolloutMemory
from pewm.train import train, train_preset


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _trained(seed: int = 0) -> WorldModel:
    """A micro voxel-render model with every weight perturbed (a stand-in for a trained one)."""
    return perturbed_micro_model("voxel-render", seed)


def _room_memory(model: WorldModel, targets):
    h = model.config.image_height
    K = S.intrinsics(h).matrix
    rgb, depth, P = S.frames(S.look_around(1.5, 2.5, 8, pitch_deg=-20.0) + S.look_around(1.5, 2.5, 8, pitch_deg=20.0),
                             K, h, h)
    mem = RolloutMemory.from_frames(MemoryBuilder(model.config), rgb, depth, P, K)
    return mem, mem.read(P[-1], targets, K=K), K


def test_planes_from_heights_find_a_room_and_refuse_what_is_not_one():
    rng = np.random.default_rng(0)
    room = np.concatenate([np.zeros(300), np.full(300, 2.6), rng.uniform(0, 2.6, 400)])
    floor_z, ceiling_z = planes_from_heights(room)
    assert abs(floor_z) < 1e-9 and abs(ceiling_z - 2.6) < 1e-9
    assert planes_from_heights(rng.uniform(-3, 3, 1000)) is None  # no dense slabs: a tilted world frame
    assert planes_from_heights(np.concatenate([np.zeros(50), np.full(50, 0.5)])) is None  # too low for a room
    assert planes_from_heights(np.array([np.nan, np.inf])) is None and planes_from_heights([]) is None


def test_the_map_s_floor_and_ceiling_reach_the_model_as_plane_depth():
    m = _trained()
    m.reinit_reader({"layout_prior": True}, keep_trained=True)
    targets = np.stack([S.pose(3.0, 2.5, a) for a in (0.0, 90.0)])
    mem, mi, K = _room_memory(m, targets)
    h = m.config.image_height
    assert mi.layout is not None and mi.layout.shape == (1, 2, 1, h, h)
    truth = layout_depth(targets, K, h, h, (S.ROOM[0][2], S.ROOM[1][2]), m.config.depth_max)
    got = mi.layout[0, :, 0].numpy()
    hit = truth < m.config.depth_max
    assert np.array_equal(np.isfinite(got), hit)  # NaN exactly where no plane is met within depth_max
    np.testing.assert_allclose(got[hit], truth[hit], rtol=0.03)  # planes from 5 cm voxels' mean points
    # an empty map holds no room: all unknown, which the reader turns into a zero input
    empty = RolloutMemory(MemoryBuilder(m.config)).read(targets[0], targets, K=K)
    assert empty.layout is not None and bool(torch.isnan(empty.layout).all())
    assert plane_depth(mem.store, K, targets, m.config).shape == (2, 1, h, h)


def test_the_option_starts_as_the_trained_model_and_the_input_then_matters():
    m = _trained()
    g = torch.Generator().manual_seed(0)
    batch = synthetic_batch(m.config, 2, generator=g)
    x0, cond = m.condition(batch)
    x_t, t = torch.randn(x0.shape, generator=g), torch.tensor([900, 300])
    with torch.no_grad():
        before = m.denoiser(x_t, t, cond)
    render = m.denoiser.reader.render_patch.weight.clone()
    assert m.reinit_reader({"layout_prior": True}, keep_trained=True) == ["layout_patch.weight"]
    assert torch.equal(m.denoiser.reader.render_patch.weight, render)
    h, H = m.config.image_height, m.config.frames
    lay = torch.full((2, H, 1, h, h), 2.0)
    lay[:, :, :, : h // 2] = float("nan")  # the upper half meets no plane
    mem = MemoryInput(**{**batch.memory.__dict__, "layout": lay})
    batch_l = type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, mem)
    with torch.no_grad():
        _, cond_l = m.condition(batch_l)
        assert torch.equal(m.denoiser(x_t, t, cond_l), before)  # zero-initialised: the trained model exactly
        torch.nn.init.normal_(m.denoiser.reader.layout_patch.weight, std=0.1)
        _, cond_l = m.condition(batch_l)
        _, cond_n = m.condition(batch)  # no layout given: a zero input
        out_l, out_n = m.denoiser(x_t, t, cond_l), m.denoiser(x_t, t, cond_n)
        assert not torch.allclose(out_l, out_n)
        assert torch.equal(out_n, before)
        # all unknown is no input; a dropped memory drops the layout too
        nan = MemoryInput(**{**batch.memory.__dict__, "layout": torch.full_like(lay, float("nan"))})
        _, cond_nan = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, nan))
        assert torch.equal(m.denoiser(x_t, t, cond_nan), before)
        _, empty = m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, None))
        dropped = cond_l.drop_memory(torch.tensor([False, False]))
        assert torch.equal(m.denoiser(x_t, t, dropped), m.denoiser(x_t, t, empty))
    with pytest.raises(ValueError, match="MemoryInput.layout has shape"):
        bad = MemoryInput(**{**batch.memory.__dict__, "layout": lay[:, :1]})
        m.condition(type(batch)(batch.rgb, batch.depth, batch.poses, batch.K, bad))
    with pytest.raises(ValueError, match="layout_prior must be a bool"):
        m.reinit_reader({"layout_prior": "yes"})


def test_reinit_without_keeping_starts_the_reader_over():
    m = _trained()
    fresh = m.reinit_reader({"layout_prior": True})
    assert "render_patch.weight" in fresh and "layout_patch.weight" in fresh
    assert float(m.denoiser.reader.render_patch.weight.detach().abs().sum()) == 0.0


def test_training_adds_the_layout_to_a_trained_reader(small_dataset, tmp_path):
    root, _ = small_dataset
    init = _trained().save_pretrained(tmp_path / "init")
    base = dict(data=str(root), steps=2, checkpoint_every=2, sample_every=1000, warmup_steps=1, stage="memory",
                reader="voxel-render", init=str(init), lr=1e-2)
    with pytest.raises(ValueError, match="--keep-reader-weights"):
        train_preset("micro", **base, keep_reader_weights=True).validate()
    cfg = train_preset("micro", **base, reader_options={"layout_prior": True}, keep_reader_weights=True)
    train(cfg, tmp_path / "run", progress=False)
    a, b = WorldModel.from_pretrained(init), WorldModel.from_pretrained(tmp_path / "run" / "model")
    assert b.config.reader_options["layout_prior"] is True
    assert json.loads((tmp_path / "run" / "config.json").read_text())["keep_reader_weights"] is True
    assert float(b.denoiser.reader.layout_patch.weight.detach().abs().sum()) > 0  # it learned from the layout
    # the backbone is frozen in stage 2 and the trained render input was kept (then trained on)
    for n, p in a.denoiser.named_parameters():
        if not n.startswith("reader."):
            assert torch.equal(p, b.denoiser.state_dict()[n]), n
    assert float(b.denoiser.reader.render_patch.weight.detach().abs().sum()) > 0
