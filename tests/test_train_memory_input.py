"""Memory inputs built from ground-truth history for every reader (§3.3, §4 "Training")."""

import math

import numpy as np
import pytest
import torch

from pewm.data.clips import ClipConfig, ClipSampler
from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov
from pewm.model import MemoryInput, WorldModel, from_preset
from pewm.model.frame_ops import poses_in_camera, resize_depth, scale_intrinsics, world_to_camera
from pewm.model.memory_build import MemoryBuilder
from pewm.model.readers import stack_memory
from pewm.model.readers.voxel_render import rendered_input
from pewm.model.testing import torch_threads
from pewm.train.data import clip_tensors, collate_clips


@pytest.fixture(scope="module")
def sampler(small_dataset):
    root, _ = small_dataset
    return ClipSampler(root, "train", ClipConfig(future_frames=2, strides=(1, 2), history=6))


def _wall_frame(h=32, w=32, dist=1.0):
    """One frame looking at a wall ``dist`` metres in front (constant z-depth)."""
    K = intrinsics_from_fov(w, h, 90.0).matrix
    rgb = np.full((1, h, w, 3), 128, np.uint8)
    depth = np.full((1, h, w), dist, np.float32)
    return rgb, depth, K


def test_xattn_positions_are_in_the_current_camera_frame():
    cfg = from_preset("micro", reader="voxel-xattn")
    rgb, depth, K = _wall_frame()
    pose = camera_pose_from_agent(5.0, -3.0, math.radians(30), 1.2)  # far from the world origin
    b = MemoryBuilder(cfg)
    mem = b.from_history(rgb, depth, pose[None], K, pose, np.stack([pose, pose]))
    n = cfg.max_memory_tokens
    assert mem.tokens.shape == (1, n, cfg.memory_dim) and mem.positions.shape == (1, n, 3) and mem.mask.shape == (1, n)
    m = mem.mask[0]
    assert 0 < int(m.sum()) <= n and not bool(m.all())  # padded
    p = mem.positions[0, m]
    # the wall is 1 m in front: +z (OpenCV), within the 0.25 m voxel quantisation
    assert bool((p[:, 2] > 0.6).all()) and abs(float(p[:, 2].median()) - 1.0) < 0.3
    assert float(p[:, 0].abs().max()) < 1.4  # 90 degree field of view: |x| <= z
    # rgb features (3 channels) zero-padded to memory_dim; padded rows are zero
    assert torch.allclose(mem.tokens[0, m, :3], torch.full((int(m.sum()), 3), 128 / 255), atol=1e-4)
    assert float(mem.tokens[0, :, 3:].abs().max()) == 0.0 and float(mem.tokens[0, ~m].abs().max()) == 0.0
    # turned around, the same map is behind the camera
    back = camera_pose_from_agent(5.0, -3.0, math.radians(210), 1.2)
    mem2 = b.from_history(rgb, depth, pose[None], K, back, np.stack([back, back]))
    assert bool((mem2.positions[0, mem2.mask[0], 2] < -0.6).all())


def test_world_to_camera_and_relative_poses():
    pose = camera_pose_from_agent(1.0, 2.0, 0.7, 1.5)
    pt_cam = torch.tensor([0.3, -0.2, 4.0], dtype=torch.float64)
    pt_world = torch.from_numpy(pose[:3, :3]) @ pt_cam + torch.from_numpy(pose[:3, 3])
    assert torch.allclose(world_to_camera(pt_world[None].float(), pose)[0].double(), pt_cam, atol=1e-5)
    rel = poses_in_camera(np.stack([pose]), pose)
    assert torch.allclose(rel[0], torch.eye(4), atol=1e-5)


def test_resize_depth_is_consistent_with_scaled_intrinsics():
    from pewm.geometry import unproject_depth

    K = intrinsics_from_fov(64, 64, 90.0).matrix
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    depth = (2.0 + 0.02 * xx + 0.01 * yy)[None]  # a tilted plane
    small = resize_depth(depth, 16, 16)
    Ks = scale_intrinsics(K, (64, 64), (16, 16))
    big_pts = unproject_depth(depth, torch.as_tensor(K).float(), torch.eye(4))[0]
    small_pts = unproject_depth(small, Ks, torch.eye(4))[0]
    # each small pixel's point lies within one source pixel of the corresponding plane point
    err = (small_pts - big_pts[2::4, 2::4]).norm(dim=-1).max()
    assert float(err) < 0.1


def test_frames_input_from_history(sampler):
    cfg = from_preset("micro", reader="frames")
    clip = sampler.clip(0, 10, 1)
    mem = MemoryBuilder(cfg).from_history(
        clip.history_rgb, clip.history_depth, clip.history_poses, clip.K, clip.poses[0], clip.poses[1:]
    )
    k, h, w = cfg.max_memory_frames, cfg.image_height, cfg.image_width
    assert mem.frames.shape == (1, k, 4, h, w) and mem.frame_poses.shape == (1, k, 4, 4)
    assert mem.frame_intrinsics.shape == (1, k, 3, 3) and bool(mem.frame_mask.all())
    assert float(mem.frames[:, :, :3].min()) >= 0 and float(mem.frames[:, :, :3].max()) <= 1
    # poses are relative to the current camera: the current frame (in the history) retrieved at identity,
    # else each equals inv(T_current) @ T_frame of some history frame
    rel = poses_in_camera(clip.history_poses, clip.poses[0])
    for j in range(k):
        assert float((rel - mem.frame_poses[0, j]).abs().amax(dim=(1, 2)).min()) < 1e-4
    # an empty history gives masked padding
    empty = MemoryBuilder(cfg).from_history(
        clip.history_rgb[:0], clip.history_depth[:0], clip.history_poses[:0], clip.K, clip.poses[0], clip.poses[1:]
    )
    assert not bool(empty.frame_mask.any())


def test_render_input_matches_ground_truth_depth(sampler):
    cfg = from_preset("micro", reader="voxel-render")
    clip = sampler.clip(0, 20, 1)
    b = MemoryBuilder(cfg)
    mem = b.from_history(clip.history_rgb, clip.history_depth, clip.history_poses, clip.K, clip.poses[0], clip.poses[1:])
    H, h, w = cfg.frames, cfg.image_height, cfg.image_width
    assert mem.rendered.shape == (1, H, 5, h, w)
    cov = mem.rendered[0, :, 4]
    assert set(cov.unique().tolist()) <= {0.0, 1.0} and float(cov.mean()) > 0.2
    # rendering the map into the current view (part of the history) reproduces its depth
    pmap = b.new_store()  # the reader's own store: a map with its surface map
    assert pmap.surface is not None
    pmap.integrate(clip.history_rgb, clip.history_depth, clip.K, clip.history_poses)
    Km = scale_intrinsics(clip.K, clip.depth.shape[-2:], (h, w))
    r = rendered_input(pmap, Km, clip.poses[:1], cfg).rendered[0, 0]
    gt = resize_depth(torch.from_numpy(clip.depth[:1]), h, w)[0]
    ok = (r[4] > 0.5) & (gt > 0)
    assert float(ok.float().mean()) > 0.7
    rel = ((r[3][ok] - gt[ok]).abs() / gt[ok]).median()
    assert float(rel) < 0.05


def test_none_reader_and_stacking(sampler):
    cfg = from_preset("micro", reader="none")
    clip = sampler.clip(0, 5, 1)
    mem = MemoryBuilder(cfg).from_history(
        clip.history_rgb, clip.history_depth, clip.history_poses, clip.K, clip.poses[0], clip.poses[1:]
    )
    assert all(v is None for v in vars(mem).values())
    a = MemoryInput(tokens=torch.zeros(1, 3, 4), mask=torch.ones(1, 3, dtype=torch.bool))
    s = stack_memory([a, a])
    assert s.tokens.shape == (2, 3, 4) and s.positions is None
    with pytest.raises(ValueError, match="some clips"):
        stack_memory([a, MemoryInput()])


@pytest.mark.parametrize("reader", ["voxel-xattn", "frames", "voxel-render", "none"])
def test_collated_batch_feeds_every_reader(sampler, reader):
    cfg = from_preset("micro", reader=reader)
    rng = np.random.default_rng(0)
    clips = [sampler.sample(rng) for _ in range(2)]
    batch = collate_clips(clips, cfg, MemoryBuilder(cfg))
    assert batch.rgb.shape == (2, 3, 3, 16, 16) and batch.rgb.dtype == torch.uint8
    assert batch.depth.shape == (2, 3, 16, 16) and batch.K.shape == (2, 3, 3)
    with torch_threads(1):
        torch.manual_seed(0)
        model = WorldModel(cfg)
        ctx = model.denoiser.reader.prepare(batch.memory, 2, "cpu")
        out = model(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    if reader == "voxel-xattn":
        assert ctx.tokens.shape == (2, cfg.max_memory_tokens, cfg.width) and bool(ctx.mask.any())
    elif reader == "frames":
        assert ctx.tokens.shape == (2, cfg.max_memory_frames * cfg.tokens_per_frame, cfg.width)
    elif reader == "voxel-render":
        assert ctx.input_tokens.shape == (2, (cfg.frames + 1) * cfg.tokens_per_frame, cfg.width)
    else:
        assert batch.memory is None


def test_clip_frame_count_must_match_model(sampler):
    cfg = from_preset("micro", frames=3)
    with pytest.raises(ValueError, match="future_frames=3"):
        clip_tensors(sampler.clip(0, 5, 1), cfg)


def test_extractor_wider_than_memory_dim_is_refused():
    cfg = from_preset("micro", memory_dim=2)
    with pytest.raises(ValueError, match="memory_dim=2"):
        MemoryBuilder(cfg)


def test_auto_extractor_is_the_frozen_autoencoder_of_a_latent_model():
    from pewm.model.map_features import AutoencoderFeatures
    from pewm.model.memory_build import MemoryBuildConfig

    torch.manual_seed(0)
    latent = WorldModel.from_preset("micro", reader="voxel-xattn", memory_dim=16,
                                    autoencoder=dict(latent_channels=4, downsample=2, channels=[8]), patch_size=2)
    b = MemoryBuilder.for_model(latent)
    assert b.extractor_name == "autoencoder" and isinstance(b.extractor, AutoencoderFeatures)
    assert b.extractor.autoencoder is latent.autoencoder, "shared and frozen, not a copy"
    assert b.resolved_config().extractor == "autoencoder"
    pixel = WorldModel.from_preset("micro", reader="voxel-xattn")
    assert MemoryBuilder.for_model(pixel).extractor_name == "rgb"
    # an explicit choice wins; "autoencoder" without a model or weights is a clear error
    assert MemoryBuilder(latent.config, MemoryBuildConfig(extractor="rgb")).extractor_name == "rgb"
    with pytest.raises(ValueError, match="needs the model's autoencoder"):
        MemoryBuilder(latent.config, MemoryBuildConfig(extractor="autoencoder"))
    with pytest.raises(ValueError, match="chosen by extractor='auto'.*for_model"):
        MemoryBuilder(latent.config)  # never silently colour for a latent model
    # a memory built with it: 8 feature channels, zero-padded to memory_dim
    rgb = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    depth = np.full((2, 16, 16), 2.0, np.float32)
    K = np.array([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]])
    poses = np.stack([np.eye(4), np.eye(4)])
    mem = b.from_history(rgb, depth, poses, K, np.eye(4), np.stack([np.eye(4)] * latent.config.frames))
    tok = mem.tokens[mem.mask]
    assert tok.shape[-1] == 16 and float(tok[:, 8:].abs().max()) == 0.0 and float(tok[:, :8].abs().max()) > 0
