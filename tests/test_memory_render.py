"""Rendering the map back to images: fidelity at fused and novel poses, agreement with Open3D TSDF."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import memory_scenes as S
from pewm.memory import PersistentMap, VoxelMap, VoxelMapConfig

SIZE = 64


@pytest.fixture(scope="module")
def fused():
    K = S.intrinsics(SIZE).matrix
    poses = S.look_around(1.5, 1.5, 24) + S.look_around(4.5, 3.8, 12) + [S.pose(1.0 + 0.5 * i, 1.0, 45) for i in range(4)]
    rgb, depth, P = S.frames(poses, K, SIZE, SIZE)
    m = VoxelMap(VoxelMapConfig.surface())  # default render voxel size (5 cm)
    m.integrate(rgb, depth, K, P)
    return m, rgb, depth, P, K


def _scores(m, K, pose, rgb, depth):
    out = m.render(K, pose, SIZE, SIZE)
    mask = out.mask.numpy()
    psnr = S.psnr(out.image.permute(1, 2, 0).numpy(), rgb / 255.0, mask)
    derr = np.abs(out.depth.numpy() - depth)[mask]
    return psnr, float(np.median(derr)), float(mask.mean())


def test_render_reproduces_fused_frames(fused):
    m, rgb, depth, P, K = fused
    for i in (0, 7, 30, 38):
        psnr, med, cov = _scores(m, K, P[i], rgb[i], depth[i])
        assert psnr >= 22.0, (i, psnr)
        assert med <= 0.03, (i, med)
        assert cov >= 0.95, (i, cov)


def test_render_novel_pose_close_to_fused_quality(fused):
    m, rgb, depth, P, K = fused
    # 0.3 m from the nearest fused pose, looking at surfaces seen from the look-around
    base = S.pose(1.5, 1.5, 45.0)
    novel = S.pose(1.5 + 0.3 * math.cos(math.radians(135)), 1.5 + 0.3 * math.sin(math.radians(135)), 45.0)
    rb, db = S.render(K, base, SIZE, SIZE)
    rn, dn = S.render(K, novel, SIZE, SIZE)
    p_base, _, _ = _scores(m, K, base, rb, db)
    p_novel, med, cov = _scores(m, K, novel, rn, dn)
    assert p_novel >= p_base - 1.0, (p_base, p_novel)
    assert med <= 0.03 and cov >= 0.9


def test_render_batched_and_empty(fused):
    m, rgb, depth, P, K = fused
    out = m.render(np.stack([K, K]), P[:2], SIZE, SIZE)
    assert out.image.shape == (2, 3, SIZE, SIZE) and out.depth.shape == (2, SIZE, SIZE)
    single = m.render(K, P[1], SIZE, SIZE)
    assert torch.allclose(out.image[1], single.image) and torch.equal(out.mask[1], single.mask)
    empty = VoxelMap(VoxelMapConfig.surface()).render(K, P[0], 8, 8)
    assert not empty.mask.any() and empty.image.shape == (3, 8, 8)


def test_persistent_map_features_and_render():
    K = S.intrinsics(32).matrix
    rgb, depth, P = S.frames(S.look_around(1.5, 1.5, 8), K, 32, 32)
    from pewm.memory import make_extractor

    pm = PersistentMap(extractor=make_extractor("rgb"))
    pm.integrate(rgb, depth, K, P)
    assert pm.features.get("feature").shape[1] == 3
    out = pm.render_features(K, P[0], 32, 32)
    assert out.image.shape == (3, 32, 32) and out.mask.float().mean() > 0.9
    # a pixel-aligned coarse feature is the max over a 0.25 x 0.25 x 1 m voxel: >= the pixel colour there
    col = pm.render(K, P[0], 32, 32).image
    assert (out.image[:, out.mask] + 1e-5 >= col[:, out.mask]).float().mean() > 0.95
    t = pm.tokens(max_tokens=10, around=P[0])
    assert len(t) == 10


def _open3d_tsdf_depths(K, depth, P, poses, size):
    """Fuse ``depth`` into an Open3D TSDF and ray-cast depth at ``poses`` (runs in a child process)."""
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"), attr_dtypes=(o3d.core.float32, o3d.core.float32), attr_channels=((1), (1)),
        voxel_size=0.04, block_resolution=8, block_count=20000, device=o3d.core.Device("CPU:0"),
    )
    intr = o3d.core.Tensor(K, o3d.core.float64)
    for i in range(len(P)):
        extr = o3d.core.Tensor(np.linalg.inv(P[i]), o3d.core.float64)  # Open3D wants world-to-camera
        dimg = o3d.t.geometry.Image(np.ascontiguousarray(depth[i]))
        blocks = vbg.compute_unique_block_coordinates(dimg, intr, extr, 1.0, 8.0)
        vbg.integrate(blocks, dimg, intr, extr, 1.0, 8.0)
    out = []
    for pose in poses:
        extr = o3d.core.Tensor(np.linalg.inv(pose), o3d.core.float64)
        d_o3d = None
        for _ in range(4):  # Open3D 0.20's range map is occasionally under-allocated and the cast comes back empty
            res = vbg.ray_cast(
                block_coords=vbg.hashmap().key_tensor(), intrinsic=intr, extrinsic=extr, width=size, height=size,
                render_attributes=["depth"], depth_scale=1.0, depth_min=0.1, depth_max=8.0, weight_threshold=1.0,
                range_map_down_factor=1,  # the default (8) leaves 64x64 casts empty
            )
            d = res["depth"].numpy()[..., 0]
            if d_o3d is None or (d > 0).mean() > (d_o3d > 0).mean():
                d_o3d = d
            if (d_o3d > 0).mean() > 0.8:
                break
        out.append(d_o3d)
    return out


def _open3d_depths_with_timeout(*args, timeout: float = 60.0, tries: int = 3):
    """Open3D's CPU ray cast sometimes spins forever holding the GIL (seen when other jobs load the
    2-core machine), which pytest-timeout cannot interrupt: run it in a child process, kill and retry."""
    import concurrent.futures as cf
    import multiprocessing as mp

    for _ in range(tries):
        ex = cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        fut = ex.submit(_open3d_tsdf_depths, *args)
        try:
            return fut.result(timeout=timeout)
        except cf.TimeoutError:
            for p in list(getattr(ex, "_processes", {}).values()):
                p.kill()
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
    pytest.fail(f"Open3D TSDF ray cast stalled {tries} times ({timeout:.0f} s each)")


@pytest.mark.timeout(400)
def test_agrees_with_open3d_tsdf(fused):
    pytest.importorskip("open3d")
    m, rgb, depth, P, K = fused
    poses = (P[3], P[26], S.pose(2.5, 2.0, 100.0))
    casts = _open3d_depths_with_timeout(K, depth, P, poses, SIZE)
    agree, both = [], []
    for pose, d_o3d in zip(poses, casts):
        ours = m.render(K, pose, SIZE, SIZE)
        # TSDF ray casting is unreliable within a pixel of depth discontinuities: compare elsewhere
        pad = np.pad(d_o3d, 1, mode="edge")
        jump = np.max(np.abs(np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]]) - d_o3d), axis=0)
        cov = (d_o3d > 0) & ours.mask.numpy() & (jump < 0.1)
        err = np.abs(d_o3d - ours.depth.numpy())[cov]
        assert cov.mean() > 0.15  # Open3D 0.20 leaves parts of low-res casts empty; compare where both cover
        agree.append((err <= 0.05).mean())
        # where we disagree, the analytic ground truth sides with us (Open3D's 64x64 TSDF cast is coarser)
        _, gt = S.render(K, pose, SIZE, SIZE)
        ok_o3d = (np.abs(d_o3d - gt)[d_o3d > 0] <= 0.05).mean()
        ok_ours = (np.abs(ours.depth.numpy() - gt)[ours.mask.numpy()] <= 0.05).mean()
        assert ok_ours >= max(ok_o3d, 0.95), (ok_ours, ok_o3d)
    assert min(agree[:2]) >= 0.9, agree  # fused poses
    assert agree[2] >= 0.85, agree  # novel pose: Open3D itself is within 5 cm of the truth on only ~80% there


def test_render_index_grows_with_the_map_and_renders_like_a_fresh_one():
    """Fusing frame by frame with a render after each (the rollout's novel-only fusion) reuses the
    sorted render index (new voxels get blocks of their own) instead of re-sorting the whole map;
    the renders match a map that fused the same frames at once and indexed them in one go."""
    K = S.intrinsics(SIZE).matrix
    poses = S.look_around(1.5, 1.5, 12) + [S.pose(1.5 + 0.2 * i, 1.5, 30.0 * i) for i in range(6)]
    rgb, depth, P = S.frames(poses, K, SIZE, SIZE)
    inc = VoxelMap(VoxelMapConfig.surface())
    inc.integrate(rgb[:8], depth[:8], K, P[:8])
    inc.render(K, P[0], SIZE, SIZE)
    bases, extended = {inc._render_base.n}, 0
    for i in range(8, len(poses)):
        inc.integrate(rgb[i:i + 1], depth[i:i + 1], K, P[i:i + 1])
        inc.render(K, P[i], SIZE, SIZE)
        bases.add(inc._render_base.n)
        extended += inc._render_base.n < len(inc)
    # both paths ran: renders from an extended index, and a re-sort once the map grew by more
    # than RENDER_INDEX_REBUILD of the indexed size
    assert extended >= 3 and len(bases) >= 2, (extended, bases)
    full = VoxelMap(VoxelMapConfig.surface())
    full.integrate(rgb, depth, K, P)
    assert len(full) == len(inc)
    for pose in (P[3], P[len(poses) - 1], S.pose(2.0, 2.0, 200.0)):
        a, b = inc.render(K, pose, SIZE, SIZE), full.render(K, pose, SIZE, SIZE)
        assert torch.equal(a.mask, b.mask)
        assert torch.allclose(a.image, b.image, atol=1e-4) and torch.allclose(a.depth, b.depth, atol=1e-4)
    inc.clear()
    assert inc._render_base is None and not inc.render(K, P[0], 8, 8).mask.any()


def test_extended_index_rejects_a_smaller_map():
    from pewm.memory.rendering import _BlockIndex

    idx = _BlockIndex(np.random.default_rng(0).random((50, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="fewer"):
        idx.extended(np.zeros((10, 3), np.float32))


def test_extended_index_spheres_still_hold_points_moved_within_their_voxel():
    """Mean surface points move inside their voxel as observations arrive; the kept blocks'
    spheres are padded by the voxel diagonal, so culling never drops a moved point."""
    from pewm.memory.rendering import _BlockIndex

    rng = np.random.default_rng(0)
    P = (rng.random((2000, 3)) * 4).astype(np.float32)
    voxel = 0.05
    diag = float(np.sqrt(3) * voxel)
    moved = P + (rng.normal(size=P.shape) * voxel).clip(-voxel, voxel).astype(np.float32) * 0.99

    def contained(idx):
        pts = idx.pT.T
        block = np.repeat(np.arange(len(idx.starts)), idx.lengths)
        return np.linalg.norm(pts - idx.centers[block], axis=1) <= idx.radii[block] + 1e-6

    grown = np.concatenate([moved, (rng.random((300, 3)) * 4).astype(np.float32)])
    assert contained(_BlockIndex(P, pad=diag).extended(grown)).all()
    assert not contained(_BlockIndex(P, pad=0.0).extended(grown)).all(), "without the pad some points escape"
