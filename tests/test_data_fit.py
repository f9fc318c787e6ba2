"""fit_frames: centre crop + resize to the model's input, with exactly updated intrinsics."""

import numpy as np
import pytest
import torch

from pewm.data import fit_frames, fit_intrinsics, fov_deg
from pewm.data.fit import crop_box, fit_maps, resample_depth
from pewm.geometry import Intrinsics, project_points, unproject_depth

SRC_K = Intrinsics(fx=520.0, fy=515.0, cx=331.2, cy=228.7, width=640, height=480)  # off-centre, fx != fy
TARGETS = [(64, 64), (48, 64), (64, 48), (100, 30), (480, 640), (600, 800)]  # (height, width)


@pytest.mark.parametrize("src,dst", [((480, 640), (48, 64)), ((480, 640), (240, 320)), ((64, 64), (128, 128)),
                                     ((30, 90), (20, 60)), ((480, 640), (480, 640))])
def test_pure_resize_intrinsics_equal_scaled(src, dst):
    K = Intrinsics(fx=101.3, fy=99.1, cx=src[1] / 2 - 0.3, cy=src[0] / 2 + 1.7, width=src[1], height=src[0])
    assert fit_intrinsics(K, *src, *dst) == K.scaled(dst[1], dst[0])
    np.testing.assert_array_equal(fit_intrinsics(K.matrix, *src, *dst), K.scaled(dst[1], dst[0]).matrix)
    _, _, K2 = fit_frames(None, np.ones(src, np.float32), K, *dst)
    assert K2 == K.scaled(dst[1], dst[0])


def _blob_image(uv, H, W, sigma=5.0):
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    img = 250.0 * np.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(img).astype(np.uint8)[..., None], 3, axis=-1)


def _centroid(img):
    w = img[..., 0].astype(np.float64)
    v, u = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])


@pytest.mark.parametrize("target", TARGETS)
def test_a_3d_point_lands_where_the_new_intrinsics_project_it(target):
    """A blob drawn where a 3D point projects stays (after crop + area resize) where the fitted
    intrinsics project that point: the image and K' describe the same camera."""
    rng = np.random.default_rng(0)
    pose = np.eye(4)
    H, W = SRC_K.height, SRC_K.width
    x0, y0, cw, ch = crop_box(H, W, *target)
    for _ in range(3):
        uv_src = rng.uniform([x0 + 0.3 * cw, y0 + 0.3 * ch], [x0 + 0.7 * cw, y0 + 0.7 * ch]) - 0.5
        X = np.array([(uv_src[0] - SRC_K.cx) / SRC_K.fx, (uv_src[1] - SRC_K.cy) / SRC_K.fy, 1.0]) * 2.5
        rgb, _, K2 = fit_frames(_blob_image(uv_src, H, W, sigma=min(cw, ch) / 12), None, SRC_K, *target)
        assert rgb.shape == (*target, 3) and (K2.height, K2.width) == target
        uv, z = project_points(torch.tensor(X)[None], K2.matrix, pose)
        assert abs(float(z[0]) - 2.5) < 1e-9
        # measured <= 0.004 px (uint8 rounding); a half-pixel convention slip would be 0.5 px
        assert np.abs(_centroid(rgb) - uv[0].numpy()).max() < 0.02


@pytest.mark.parametrize("target", TARGETS)
def test_fitted_depth_unprojects_onto_the_surface(target):
    """A slanted plane's depth, fitted and unprojected with K', still lies on the plane."""
    n, d = np.array([0.2, -0.5, 0.84]), 2.0  # plane n . X = d in camera coordinates
    v, u = np.mgrid[0 : SRC_K.height, 0 : SRC_K.width].astype(np.float64)
    depth = (d / (n[0] * (u - SRC_K.cx) / SRC_K.fx + n[1] * (v - SRC_K.cy) / SRC_K.fy + n[2])).astype(np.float32)
    _, dep, K2 = fit_frames(None, depth, SRC_K.matrix, *target)
    assert isinstance(K2, np.ndarray) and dep.dtype == np.float32 and dep.shape == target
    pts = unproject_depth(torch.tensor(dep, dtype=torch.float64), K2, np.eye(4)).reshape(-1, 3).numpy()
    rel = np.abs(pts @ n / np.linalg.norm(n) - d / np.linalg.norm(n)) / np.linalg.norm(pts, axis=1)
    # off-plane by at most the half source pixel between the output centre and the nearest sample
    assert np.median(rel) < 5e-4 and rel.max() < 3e-3


def _reference_nearest_valid(depth, map_y, map_x, h, w):
    """Brute force: the valid sample nearest each output centre within its footprint."""
    H, W = depth.shape
    out = np.zeros((h, w), np.float32)
    for j in range(h):
        y0, y1 = map_y[0] * j + map_y[1], map_y[0] * (j + 1) + map_y[1]
        for i in range(w):
            x0, x1 = map_x[0] * i + map_x[1], map_x[0] * (i + 1) + map_x[1]
            cy, cx = (y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5
            best = None
            for r in range(max(0, int(np.floor(y0))), min(H, int(np.ceil(y1)))):
                for c in range(max(0, int(np.floor(x0))), min(W, int(np.ceil(x1)))):
                    val = depth[r, c]
                    if np.isfinite(val) and val > 0:
                        dist = (r - cy) ** 2 + (c - cx) ** 2
                        if best is None or dist < best[0]:
                            best = (dist, val)
            out[j, i] = 0.0 if best is None else best[1]
    return out


@pytest.mark.parametrize("src,dst", [((48, 64), (16, 16)), ((37, 53), (20, 11)), ((20, 30), (45, 40))])
def test_depth_never_mixes_values_across_edges(src, dst):
    rng = np.random.default_rng(1)
    levels = np.array([1.0, 2.5, 4.0, 0.0, np.nan, np.inf, -1.0], np.float32)
    blocks = rng.integers(0, len(levels), (src[0] // 4 + 1, src[1] // 4 + 1))
    depth = levels[np.kron(blocks, np.ones((4, 4), int))[: src[0], : src[1]]]
    depth[rng.random(src) < 0.1] = 0.0  # sensor dropouts
    _, out, _ = fit_frames(None, depth, Intrinsics(30.0, 30.0, src[1] / 2, src[0] / 2, src[1], src[0]), *dst)
    assert np.isfinite(out).all()
    assert set(np.unique(out)) <= {0.0, 1.0, 2.5, 4.0}  # only measured values or "no measurement"
    my, mx = fit_maps(*src, *dst)
    np.testing.assert_array_equal(out, _reference_nearest_valid(depth, my, mx, *dst))
    np.testing.assert_array_equal(resample_depth(depth[None], my, mx, *dst)[0], out)  # batched == single


def test_rgb_is_an_area_average():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    out, _, _ = fit_frames(rgb, None, Intrinsics(50.0, 50.0, 29.5, 19.5, 60, 40), 20, 30)
    expect = rgb.reshape(3, 20, 2, 30, 2, 3).astype(np.float64).mean(axis=(2, 4))
    assert out.shape == (3, 20, 30, 3) and out.dtype == np.uint8
    assert np.abs(out - expect).max() <= 0.5 + 1e-6
    flat = np.full((50, 70, 3), 77, np.uint8)
    assert (fit_frames(flat, None, np.eye(3) * 40 + np.diag([0, 0, -39]), 9, 13)[0] == 77).all()


def test_fov_and_centre_crop():
    K = Intrinsics(320.0, 320.0, 319.5, 239.5, 640, 480)
    assert np.allclose(fov_deg(K, 480, 640), (K.fov_x_deg, K.fov_y_deg))
    K2 = fit_intrinsics(K, 480, 640, 64, 64)  # crop the sides: the vertical field of view stays
    assert np.allclose(fov_deg(K2, 64, 64), (K.fov_y_deg, K.fov_y_deg))
    assert (K2.cx, K2.cy) == (31.5, 31.5) and K2.fx == K2.fy
    K3 = fit_intrinsics(K, 480, 640, 96, 64)  # taller target: crop the sides more, keep the height
    assert np.isclose(fov_deg(K3, 96, 64)[1], K.fov_y_deg)


def test_errors_name_the_problem():
    K = Intrinsics(50.0, 50.0, 31.5, 31.5, 64, 64)
    with pytest.raises(ValueError, match="differ in shape"):
        fit_frames(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 32, 32), np.float32), K, 16, 16)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        fit_frames(np.zeros((64, 64, 3), np.float32), None, K, 16, 16)
    with pytest.raises(ValueError, match="intrinsics are for 64x64 images"):
        fit_frames(None, np.zeros((48, 64), np.float32), K, 16, 16)
    with pytest.raises(ValueError, match="target size"):
        fit_frames(None, np.zeros((64, 64), np.float32), K, 0, 16)
