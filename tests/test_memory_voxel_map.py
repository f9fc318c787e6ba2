"""VoxelMap semantics: pooling, order invariance, invalid depth, tokens, persistence, devices."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import memory_scenes as S
from pewm.memory._points import _PointBatch
from pewm.memory import AttributeSpec, VoxelMap, VoxelMapConfig, feature_attributes, sinusoidal_position_embedding


@pytest.fixture(scope="module")
def room():
    K = S.intrinsics(32).matrix
    poses = S.look_around(1.5, 1.5, 8) + [S.pose(4.5, 3.5, 200.0), S.pose(2.0, 4.0, -60.0)]
    rgb, depth, P = S.frames(poses, K, 32, 32)
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(len(P), 5, 32, 32, generator=gen)
    return rgb, depth, P, K, feats


def _by_key(m: VoxelMap, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(m.keys)
    return m.keys[order], m.get(name)[order]


def test_max_and_mean_pooling_match_reference(room):
    rgb, depth, P, K, feats = room
    m = VoxelMap(VoxelMapConfig.paper(5))
    n = m.integrate(rgb, depth, K, P, features=feats)
    # reference: group every valid pixel by voxel key with numpy. The points are the map's own
    # (its unprojection agrees with pewm.geometry.unproject_depth only within float rounding: on
    # AVX-512 CPUs einsum rounds differently and a point on a voxel face may change voxel), so
    # this checks the pooling; test_points_match_unproject_depth checks the unprojection.
    pts = _PointBatch.make(rgb, depth, K, P, None, m.config.max_depth, "cpu").pts
    assert pts.shape[0] == depth.size, "every pixel of the room is valid"
    keys = m.voxel_keys(pts).numpy()
    f = feats.permute(0, 2, 3, 1).reshape(-1, 5).numpy()
    c = torch.as_tensor(rgb).reshape(-1, 3).float().numpy() / 255
    assert n == len(keys)
    k_sorted, f_map = _by_key(m, "feature")
    _, c_map = _by_key(m, "color")
    _, cnt = _by_key(m, "count")
    uk, inv = np.unique(keys, return_inverse=True)
    assert np.array_equal(uk, k_sorted.numpy())
    ref_max = np.full((len(uk), 5), -np.inf)
    np.maximum.at(ref_max, inv, f)
    ref_sum = np.zeros((len(uk), 3))
    np.add.at(ref_sum, inv, c)
    ref_cnt = np.bincount(inv)
    assert np.array_equal(f_map.numpy(), ref_max.astype(np.float32))
    assert np.array_equal(cnt[:, 0].numpy(), ref_cnt)
    np.testing.assert_allclose(c_map.numpy(), ref_sum / ref_cnt[:, None], atol=1e-5)


def test_points_match_unproject_depth(room):
    """The map's NumPy unprojection gives pewm.geometry.unproject_depth's points within float rounding."""
    from pewm.geometry import unproject_depth

    rgb, depth, P, K, _ = room
    ours = _PointBatch.make(rgb, depth, K, P, None, None, "cpu").pts
    ref = unproject_depth(torch.as_tensor(depth), torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(P).float())
    torch.testing.assert_close(ours, ref.reshape(-1, 3), rtol=0, atol=1e-5)


def test_order_invariance(room):
    rgb, depth, P, K, feats = room
    a = VoxelMap(VoxelMapConfig.paper(5))
    a.integrate(rgb, depth, K, P, features=feats, step=np.arange(len(P)))
    b = VoxelMap(VoxelMapConfig.paper(5))
    perm = np.random.default_rng(0).permutation(len(P))
    for chunk in np.array_split(perm, 4):  # different order and batching
        b.integrate(rgb[chunk], depth[chunk], K, P[chunk], features=feats[chunk], step=chunk)
    ka, fa = _by_key(a, "feature")
    kb, fb = _by_key(b, "feature")
    assert torch.equal(ka, kb)
    assert torch.equal(fa, fb)  # max is exact
    torch.testing.assert_close(_by_key(a, "color")[1], _by_key(b, "color")[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(_by_key(a, "count")[1], _by_key(b, "count")[1])
    assert torch.equal(_by_key(a, "last_seen")[1], _by_key(b, "last_seen")[1])


def test_invalid_depth_ignored(room):
    rgb, depth, P, K, _ = room
    bad = depth[:2].copy()
    bad[:, :8] = 0.0
    bad[:, 8:12] = np.nan
    bad[:, 12:14] = np.inf
    bad[:, 14:16] = 50.0  # beyond max_depth
    bad[:, 16:18] = -1.0
    m = VoxelMap(VoxelMapConfig(max_depth=10.0))
    n = m.integrate(rgb[:2], bad, K, P[:2])
    ref = VoxelMap(VoxelMapConfig(max_depth=10.0))
    keep = bad.copy()
    keep[:, :18] = 0.0
    assert n == int((keep > 0).sum())
    ref.integrate(rgb[:2], keep, K, P[:2])
    assert torch.equal(torch.sort(m.keys).values, torch.sort(ref.keys).values)
    assert torch.isfinite(m.get("color")).all()


def test_memory_grows_with_volume_not_frames(room):
    rgb, depth, P, K, feats = room
    m = VoxelMap(VoxelMapConfig.paper(5))
    m.integrate(rgb, depth, K, P, features=feats)
    n, nb = len(m), m.nbytes
    for _ in range(3):
        m.integrate(rgb, depth, K, P, features=feats)
    assert len(m) == n and m.nbytes == nb
    assert int(m.get("count").sum()) == 4 * int((depth > 0).sum())


def test_declared_extra_attribute_and_reductions(room):
    rgb, depth, P, K, _ = room
    attrs = feature_attributes(None) + (
        AttributeSpec("label_sum", 2, "sum", source="label"),
        AttributeSpec("label_last", 2, "last", source="label"),
        AttributeSpec("first_seen", 1, "min", source="step", dtype="int64", empty=-1),
        AttributeSpec("height", 1, "max", source="xyz"),  # 3 channels -> error expected below
    )
    with pytest.raises(ValueError):
        VoxelMap(VoxelMapConfig(attributes=attrs)).integrate(rgb[:1], depth[:1], K, P[:1], extra={})
    attrs = attrs[:-1]
    m = VoxelMap(VoxelMapConfig(attributes=attrs))
    lab = torch.zeros(2, 2, 32, 32)
    lab[0, 0] = 1.0
    lab[1, 1] = 2.0
    m.integrate(rgb[:2], depth[:2], K, P[:2], extra={"label": lab}, step=[5, 7])
    cnt = m.get("count")[:, 0].float()
    s = m.get("label_sum")
    torch.testing.assert_close(s[:, 0] + s[:, 1] / 2, cnt)  # every point contributed its label once
    last = m.get("label_last")
    seen_second = m.get("last_seen")[:, 0] == 7
    assert torch.all(last[seen_second, 1] == 2.0) and torch.all(last[~seen_second, 0] == 1.0)
    assert set(m.get("first_seen")[:, 0].tolist()) <= {5, 7}
    with pytest.raises(ValueError):
        AttributeSpec("x", 1, "median")


def test_bounds_and_unobserved_reads(room):
    rgb, depth, P, K, _ = room
    m = VoxelMap(VoxelMapConfig(bounds=((0, 0, 0), (3, 3, 2))))
    m.integrate(rgb, depth, K, P)
    c = m.centers()
    assert (c >= 0).all() and (c[:, :2] <= 3).all() and (c[:, 2] <= 2).all()
    assert m.get("feature").numel() == 0  # never given features: channels unknown, nothing stored
    vals, found = m.lookup(torch.tensor([[100.0, 100.0, 1.0], [1.0, 0.01, 0.3]]), "color")
    assert not found[0] and torch.all(vals[0] == 0)


def test_tokens_bound_and_nearest_first(room):
    rgb, depth, P, K, feats = room
    m = VoxelMap(VoxelMapConfig.paper(5, pos_dim=24))
    m.integrate(rgb, depth, K, P, features=feats)
    all_t = m.tokens()
    assert len(all_t) == len(m) and all_t.pos_emb.shape == (len(m), 24) and all_t.features.shape == (len(m), 5)
    around = S.pose(1.0, 1.0, 0.0)
    t = m.tokens(max_tokens=20, around=around)
    assert len(t) == 20 and t.mask.all()
    d_sel = (t.centers - torch.tensor(around[:3, 3], dtype=torch.float32)).norm(dim=1)
    d_all = (all_t.centers - torch.tensor(around[:3, 3], dtype=torch.float32)).norm(dim=1)
    assert torch.all(d_sel[1:] >= d_sel[:-1])  # nearest first
    assert d_sel.max() <= torch.sort(d_all).values[19] + 1e-6
    padded = m.tokens(max_tokens=len(m) + 7, pad=True)
    assert len(padded) == len(m) + 7 and int(padded.mask.sum()) == len(m)
    assert padded.as_tensor().shape == (len(m) + 7, 5 + 24)
    pe = sinusoidal_position_embedding(torch.tensor([[0.0, 0.0, 0.0]]), 24)
    assert torch.allclose(pe[0, :4], torch.zeros(4)) and torch.allclose(pe[0, 4:8], torch.ones(4))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_round_trip(room, tmp_path, suffix):
    rgb, depth, P, K, feats = room
    m = VoxelMap(VoxelMapConfig.paper(5, bounds=((-1, -1, -1), (9, 9, 9))))
    m.integrate(rgb, depth, K, P, features=feats)
    m2 = VoxelMap.load(m.save(tmp_path / f"map{suffix}"))
    assert m2.config == m.config and len(m2) == len(m) and m2.frames_integrated == m.frames_integrated
    assert torch.equal(m2.keys, m.keys)
    for a in m.attributes:
        assert torch.equal(m2.get(a), m.get(a)), a
    m2.integrate(rgb[:1], depth[:1], K, P[:1], features=feats[:1])  # still usable
    m.integrate(rgb[:1], depth[:1], K, P[:1], features=feats[:1])
    assert torch.equal(m2.get("feature"), m.get("feature"))


def test_export_ply(room, tmp_path):
    rgb, depth, P, K, _ = room
    m = VoxelMap(VoxelMapConfig.surface(0.1))
    m.integrate(rgb, depth, K, P)
    path = m.export_ply(tmp_path / "m.ply")
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert f"element vertex {len(m)}".encode() in head
    assert len(body) == len(m) * 15
    rec = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    np.testing.assert_allclose(rec["x"], m.points()[:, 0].numpy())


def test_device_round_trip(room):
    rgb, depth, P, K, feats = room
    m = VoxelMap(VoxelMapConfig.paper(5))
    m.integrate(rgb, depth, K, P, features=feats)
    ref = {a: m.get(a).clone() for a in m.attributes}
    m.to("meta")
    assert m.keys.device.type == "meta" and m._store["feature"].device.type == "meta"
    m2 = VoxelMap(VoxelMapConfig.paper(5))
    m2.integrate(rgb, depth, K, P, features=feats)
    if torch.cuda.is_available():
        m2.to("cuda")
        m2.integrate(rgb[:1], depth[:1], K, P[:1], features=feats[:1])  # works on the device
        m2.to("cpu")
        m3 = VoxelMap(VoxelMapConfig.paper(5))
        m3.integrate(rgb, depth, K, P, features=feats)
        m3.integrate(rgb[:1], depth[:1], K, P[:1], features=feats[:1])
        assert torch.equal(torch.sort(m2.keys).values, torch.sort(m3.keys).values)
    else:
        m2.to("cpu")
    for a in m2.attributes:
        if a != "last_seen" and a != "count":
            assert m2.get(a).shape == ref[a].shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(room):
    rgb, depth, P, K, feats = room
    a = VoxelMap(VoxelMapConfig.paper(5))
    b = VoxelMap(VoxelMapConfig.paper(5), device="cuda")
    a.integrate(rgb, depth, K, P, features=feats)
    b.integrate(rgb, depth, K, P, features=feats)
    assert torch.equal(_by_key(a, "feature")[1], _by_key(b, "feature")[1].cpu())
    ra = VoxelMap(VoxelMapConfig.surface(0.05))
    rb = VoxelMap(VoxelMapConfig.surface(0.05), device="cuda")
    ra.integrate(rgb, depth, K, P)
    rb.integrate(rgb, depth, K, P)
    oa, ob = ra.render(K, P[0], 32, 32), rb.render(K, P[0], 32, 32)
    assert (oa.mask == ob.mask.cpu()).float().mean() > 0.99


@pytest.mark.parametrize("bounds", [None, ((0.5, 0.5, 0.1), (5.0, 4.0, 2.0))])
def test_cpu_fast_path_matches_torch_path(room, bounds):
    """The CPU NumPy path (``_fuse_cpu``, ``_splat_np``) and the torch path (any device) agree."""
    from pewm.memory import voxel_map as vm

    rgb, depth, P, K, feats = room
    depth = depth.copy()
    depth[0, :5] = 0
    depth[1, 3, 4] = np.nan
    attrs = feature_attributes(5) + (
        AttributeSpec("pt", 3, "mean", source="xyz"),
        AttributeSpec("first_seen", 1, "min", source="step", dtype="int64"),
        AttributeSpec("last_color", 3, "last", source="color"),
    )
    a = VoxelMap(VoxelMapConfig(attributes=attrs, bounds=bounds))
    b = VoxelMap(VoxelMapConfig(attributes=attrs, bounds=bounds))
    for sl in (slice(0, 4), slice(4, len(P))):
        a.integrate(rgb[sl], depth[sl], K, P[sl], features=feats[sl])
        pb = vm._PointBatch.make(rgb[sl], depth[sl], K, P[sl], None, b.config.max_depth, "cpu")
        b._fuse_torch(pb, torch.arange(b.frames_integrated, b.frames_integrated + pb.B), feats[sl], None)
        b.frames_integrated += pb.B
    ka, va = _by_key(a, "feature")
    kb, vb = _by_key(b, "feature")
    assert torch.equal(ka, kb) and torch.equal(va, vb)
    for name in ("count", "last_seen", "first_seen", "last_color"):
        assert torch.equal(_by_key(a, name)[1], _by_key(b, name)[1]), name
    for name in ("color", "pt"):
        torch.testing.assert_close(_by_key(a, name)[1], _by_key(b, name)[1], atol=1e-5, rtol=1e-5)
    s = VoxelMap(VoxelMapConfig.surface())
    s.integrate(rgb, depth, K, P)
    for pose in (P[0], S.pose(2.5, 2.0, 100.0)):
        out = s.render(K, pose, 32, 32)
        Kb, Tb, _ = vm._batched_camera(K, pose, "cpu")
        pix, rows, w, dep, cov = s._splat(s.points().float().contiguous(), Kb[0], Tb[0], 32, 32)
        img = torch.zeros(3, 32 * 32).index_add_(1, pix, s.get("color")[rows].T * w).view(3, 32, 32)
        assert torch.equal(cov.view(32, 32), out.mask)
        torch.testing.assert_close(img, out.image, atol=1e-5, rtol=0)
        torch.testing.assert_close(dep.view(32, 32), out.depth, atol=1e-5, rtol=0)
