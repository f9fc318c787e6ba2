"""Per-frame metrics, SRC features, first-visit matching and revisit classification (pewm.eval)."""

import numpy as np
import pytest
import torch

from pewm.eval.metrics import (
    PSNR_MAX_DB,
    ColorLayoutFeatures,
    GlobalFeatures,
    depth_absrel,
    depth_delta1,
    frame_metrics,
    match_first_visits,
    psnr,
    src,
    src_at_matches,
    ssim,
)
from pewm.eval.revisit import classify, observed_fraction
from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov


def _pattern(T=2, h=32, w=32, seed=0):
    """Smooth structured images (gradients and blobs) as float in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(T):
        a, b, c = rng.uniform(1, 4, 3)
        img = np.stack([0.5 + 0.4 * np.sin(a * 3 * xx), 0.5 + 0.4 * np.cos(b * 3 * yy), (xx + yy) / 2 * c / 4], -1)
        out.append(np.clip(img, 0, 1))
    return np.stack(out)


# ------------------------------------------------------------------------------ PSNR / SSIM


def test_psnr_known_values_identical_cap_and_uint8():
    gt = np.zeros((3, 8, 8, 3))
    pred = gt.copy()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    p = psnr(pred, gt)
    assert p.shape == (3,)
    np.testing.assert_allclose(p[:2], [20.0, 40.0], atol=1e-9)
    assert p[2] == PSNR_MAX_DB == 100.0  # identical frames: capped, not inf
    # uint8 and torch input agree with float input
    u = (_pattern(2) * 255).round().astype(np.uint8)
    v = np.clip(u.astype(int) + 5, 0, 255).astype(np.uint8)
    np.testing.assert_allclose(psnr(u, v), psnr(torch.from_numpy(u / 255.0), v / 255.0), atol=1e-9)
    assert np.all(psnr(u, v) < 40)


def test_psnr_rejects_bad_shapes_and_ranges():
    a = np.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="pred_rgb"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, np.zeros((2, 8, 9, 3)))
    with pytest.raises(ValueError, match="gt_rgb"):
        psnr(a, a * 255 + 3.0)  # [0, 255] floats
    with pytest.raises(ValueError, match="pred_rgb"):
        psnr(a - 1.0, a)  # [-1, 1] model output


def test_ssim_identical_is_one_and_noise_is_low():
    gt = _pattern(2)
    noise = np.random.default_rng(1).uniform(0, 1, gt.shape)
    pred = np.stack([gt[0], noise[1]])
    s = ssim(pred, gt)
    assert s.shape == (2,)
    assert abs(s[0] - 1.0) < 1e-6
    assert s[1] < 0.5
    with pytest.raises(ValueError, match="11x11"):
        ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


# ------------------------------------------------------------------------------ depth


def test_depth_absrel_and_delta1_hand_computed():
    gt = np.array([[[1.0, 2.0], [4.0, 0.0]],  # last pixel has no measurement
                   [[0.0, np.nan], [np.inf, -1.0]],  # no valid pixel at all -> NaN
                   [[2.0, 2.0], [2.0, 2.0]]])
    pred = np.array([[[1.1, 2.0], [2.0, 5.0]],
                     [[1.0, 1.0], [1.0, 1.0]],
                     [[0.0, -1.0, ], [np.nan, 2.4]]])  # pred <= 0 / NaN: wrong
    a = depth_absrel(pred, gt)
    d = depth_delta1(pred, gt)
    # frame 0: errors 0.1, 0, 0.5 -> 0.2; ratios 1.1, 1, 2 -> 2/3
    np.testing.assert_allclose(a[0], 0.2, atol=1e-12)
    np.testing.assert_allclose(d[0], 2 / 3, atol=1e-12)
    assert np.isnan(a[1]) and np.isnan(d[1])
    # frame 2: three invalid predictions count as |eps - 2| / 2 ~ 1; 2.4 / 2 = 1.2 -> 0.2 and good
    np.testing.assert_allclose(a[2], (3 * (2 - 1e-6) / 2 + 0.2) / 4, atol=1e-9)
    np.testing.assert_allclose(d[2], 0.25, atol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        depth_absrel(pred[:, :1], gt)


def test_frame_metrics_keys_and_missing_depth():
    rgb = _pattern(3)
    depth = np.full((3, 32, 32), 2.0)
    m = frame_metrics(rgb, rgb, depth * 1.1, depth)
    assert set(m) == {"psnr", "ssim", "absrel", "delta1"}
    assert all(v.shape == (3,) for v in m.values())
    np.testing.assert_allclose(m["absrel"], 0.1, atol=1e-9)
    np.testing.assert_allclose(m["delta1"], 1.0)
    m2 = frame_metrics(rgb, rgb)
    assert np.all(np.isnan(m2["absrel"])) and np.all(m2["psnr"] == PSNR_MAX_DB)


# ------------------------------------------------------------------------------ SRC


def test_src_cosine_and_matches():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    s = src(a, b)
    np.testing.assert_allclose(s[:2], [1.0, -1.0])
    assert np.isnan(s[2])  # zero vector: undefined
    f = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.0, 1.0]])
    out = src_at_matches(f, np.array([-1, -1, 0, 0]))
    assert np.isnan(out[0]) and np.isnan(out[1])
    np.testing.assert_allclose(out[2:], [1 / np.sqrt(1.01), 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="matches"):
        src_at_matches(f, np.array([0, 0, 9, 0]))


def test_color_layout_features():
    ex = ColorLayoutFeatures()
    assert isinstance(ex, GlobalFeatures) and ex.name == "color_layout"
    imgs = (_pattern(3, 48, 64) * 255).astype(np.uint8)
    f = ex(imgs)
    assert f.shape == (3, ex.dim) == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(src(f, ex(imgs.copy())), 1.0, atol=1e-6)
    flipped = ex(imgs[:, ::-1, ::-1].copy())
    assert np.all(src(f, flipped) < 0.99)  # a different layout is less similar
    bw = ex(np.stack([np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8)]))
    assert src(bw[:1], bw[1:])[0] < -0.99  # centred colours: black vs white are opposite


def test_dinov2_global_features_with_tiny_local_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    from pewm.eval.metrics import DinoV2GlobalFeatures

    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=48, patch_size=14, image_size=56)
    transformers.Dinov2Model(cfg).save_pretrained(tmp_path)
    ex = DinoV2GlobalFeatures(tmp_path, input_size=28)
    assert isinstance(ex, GlobalFeatures) and ex.name == "dinov2"
    imgs = (_pattern(2, 32, 32) * 255).astype(np.uint8)
    f = ex(imgs)
    assert f.shape == (2, 24) and np.all(np.isfinite(f))
    np.testing.assert_allclose(src(f, ex(imgs)), 1.0, atol=1e-5)
    assert not np.allclose(f[0], f[1])


# ------------------------------------------------------------------------------ first visits


def _poses(states, height=1.0):
    return np.stack([camera_pose_from_agent(x, y, yaw, height) for x, y, yaw in states])


def _out_and_back_and_out():
    """Out 8 steps along +x, turn 180, back 8 steps, turn 180 again, out 4 steps."""
    s = [(0.25 * i, 0.0, 0.0) for i in range(9)]  # frames 0..8
    s += [(2.0, 0.0, np.deg2rad(15 * k)) for k in range(1, 13)]  # 9..20, ends facing -x
    s += [(2.0 - 0.25 * k, 0.0, np.pi) for k in range(1, 9)]  # 21..28, back at x = 0
    s += [(0.0, 0.0, np.pi + np.deg2rad(15 * k)) for k in range(1, 13)]  # 29..40, facing +x again
    s += [(0.25 * k, 0.0, 0.0) for k in range(1, 5)]  # 41..44
    return _poses(s)


def test_match_first_visits_out_and_back():
    P = _out_and_back_and_out()
    m = match_first_visits(P, None)
    assert m.shape == (45,) and m.dtype == np.int64
    # nothing before the second turn is a revisit: the way back faces -x, the way out faced +x
    assert np.all(m[:38] == -1), m[:38]
    # facing +x again at the start: the first visit is frame 0 (the earliest, not the latest match)
    assert m[39] == 0 and m[40] == 0 and m[41] == 0
    assert m[43] == 1 and m[44] == 2  # x = 0.75 / 1.0 match the outbound frames at 0.25 / 0.5 m
    # only frames before a cut are first-visit candidates
    cut = match_first_visits(P, 1)
    assert cut[41] == 0 and cut[43] == -1 and cut[44] == -1
    # looser angle: the way back matches nothing of the way out until it turns, still
    assert np.all(match_first_visits(P, None, max_angle_deg=60)[21:29] == -1)


def test_match_first_visits_full_turn_and_min_gap():
    turn = _poses([(1.0, 2.0, np.deg2rad(15 * k)) for k in range(26)])  # 360 deg in place, then one more
    m = match_first_visits(turn, None)
    assert np.all(m[:22] == -1)
    assert m[23] == 0 and m[24] == 0 and m[25] == 0  # 24 = after the full turn, same view as frame 0
    still = _poses([(0.0, 0.0, 0.0)] * 12)  # a camera that does not move
    np.testing.assert_array_equal(match_first_visits(still, None), [-1] * 8 + [0] * 4)
    np.testing.assert_array_equal(match_first_visits(still, None, min_gap=3)[:4], [-1, -1, -1, 0])
    with pytest.raises(ValueError, match="poses"):
        match_first_visits(np.eye(4), None)
    with pytest.raises(ValueError, match="min_gap"):
        match_first_visits(still, None, min_gap=0)


# ------------------------------------------------------------------------------ revisit / novel


def test_observed_fraction_wall_scene():
    H = W = 64
    K = intrinsics_from_fov(W, H, 60.0).matrix
    looking_x = camera_pose_from_agent(0.0, 0.0, 0.0, 1.0)  # faces +x
    looking_back = camera_pose_from_agent(0.0, 0.0, np.pi, 1.0)  # faces -x
    wall = np.full((1, H, W), 3.1, np.float32)  # fronto-parallel wall: constant z-depth
    split = wall.copy()
    split[:, :, W // 2:] = 6.1  # right half: farther, never observed
    holes = wall.copy()
    holes[:, ::3] = 0.0  # missing depth does not count
    target = np.concatenate([wall, wall, split, holes, np.zeros((1, H, W), np.float32)])
    poses = np.stack([looking_x, looking_back, looking_x, looking_x, looking_x])
    f = observed_fraction(target, poses, K, wall, looking_x[None], K)
    assert f.shape == (5,)
    assert f[0] == 1.0
    assert f[1] == 0.0
    assert f[2] == 0.5
    assert f[3] == 1.0
    assert np.isnan(f[4])
    np.testing.assert_array_equal(classify(f), [True, False, True, True, False])
    np.testing.assert_array_equal(classify(f, threshold=0.6), [True, False, False, True, False])
    # history at another resolution (its own K) sees the same wall; only the target's outermost
    # rows/columns can fall in voxels just beyond the coarser history's outermost pixel centres
    K32 = intrinsics_from_fov(32, 32, 60.0).matrix
    f32 = observed_fraction(wall, looking_x[None], K, np.full((1, 32, 32), 3.1), looking_x[None], K32, stride=1)
    assert f32[0] > 0.9
    # depth beyond max_depth is ignored in target and history alike
    far = np.full((1, H, W), 6.1, np.float32)
    assert observed_fraction(split, looking_x[None], K, far, looking_x[None], K)[0] == 0.5
    assert observed_fraction(split, looking_x[None], K, far, looking_x[None], K, max_depth=5.0)[0] == 0.0
    assert np.isnan(observed_fraction(far, looking_x[None], K, far, looking_x[None], K, max_depth=5.0)[0])
    with pytest.raises(ValueError, match="history_poses"):
        observed_fraction(wall, looking_x[None], K, wall, np.stack([looking_x] * 2), K)
