"""TUM RGB-D import on a tiny synthetic sequence written to tmp_path."""

import json

import numpy as np
import pytest
from PIL import Image

from pewm.data import DatasetError, TumFormatError, import_tum, open_dataset, verify_dataset
from pewm.geometry import make_pose, quaternion_to_matrix

W, H = 16, 12
RGB_TS = [1.0, 1.033333, 1.066667, 1.1, 1.2, 1.3]  # 1.2 has no depth, 1.3 no pose
DEPTH_TS = [1.005, 1.038, 1.061, 1.104, 1.301]
GT_Q = [  # tx ty tz qx qy qz qw
    [0.1, 0.2, 1.5, 0.0, 0.0, 0.0, 1.0],
    [0.15, 0.2, 1.5, 0.0, 0.0871557, 0.0, 0.9961947],
    [0.2, 0.25, 1.45, 0.0436194, 0.0, 0.0, 0.9990482],
    [0.25, 0.3, 1.4, 0.1830127, 0.1830127, -0.6830127, 0.6830127],
]
GT_TS = [0.999, 1.034, 1.07, 1.099]


def _rgb(k):
    rng = np.random.default_rng(k)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _raw_depth(k):
    rng = np.random.default_rng(100 + k)
    raw = (rng.integers(0, 40, (H, W)) * 625).astype(np.uint16)  # multiples of 0.125 m: exact in float16
    raw[0, :3] = 0  # invalid
    return raw


def write_tum(root, rgb_mode=None, depth_mode=None, size=None):
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    lines = ["# color images", "# file: 'synthetic.bag'", "# timestamp filename"]
    for k, t in enumerate(RGB_TS):
        name = f"rgb/{t:.6f}.png"
        img = Image.fromarray(_rgb(k))
        if rgb_mode and k == 1:
            img = img.convert(rgb_mode)
        if size and k == 2:
            img = img.resize(size)
        img.save(root / name)
        lines.append(f"{t:.6f} {name}")
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    lines = ["# depth maps", "# timestamp filename", ""]
    for k, t in enumerate(DEPTH_TS):
        name = f"depth/{t:.6f}.png"
        img = Image.fromarray(_raw_depth(k))
        if depth_mode and k == 0:
            img = Image.fromarray((_raw_depth(k) // 256).astype(np.uint8))
        img.save(root / name)
        lines.append(f"{t:.6f} {name}")
    (root / "depth.txt").write_text("\n".join(lines) + "\n")
    gt = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    gt += [f"{t} " + " ".join(map(str, q)) for t, q in zip(GT_TS, GT_Q)]
    (root / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    return root


def expected_pose(k):
    q = np.array(GT_Q[k])
    return make_pose(quaternion_to_matrix(q[3:]), q[:3])


def test_import(tmp_path):
    src = write_tum(tmp_path / "rgbd_dataset_synthetic")
    rep = import_tum(src, tmp_path / "out", fx=20.0, fy=21.0, cx=7.5, cy=5.5)
    assert (rep.num_frames, rep.num_rgb, rep.dropped_no_depth, rep.dropped_no_pose, rep.skipped) == (4, 6, 1, 1, 0)
    assert "dropped 1 without depth" in str(rep)
    ds = open_dataset(tmp_path / "out")
    assert ds.spec.action_config is None and ds.spec.generator["source"] == "tum_rgbd"
    K = ds.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy, K.width, K.height) == (20.0, 21.0, 7.5, 5.5, W, H)
    ep = ds.read(0)
    assert ep.kind == "tum" and ep.split == "test" and ep.actions is None and ep.collided is None
    assert ep.episode_id == "rgbd_dataset_synthetic" and ep.meta["world_up"] == "unknown"
    assert ep.meta["timestamps"] == RGB_TS[:4] and ep.meta["depth_timestamps"] == DEPTH_TS[:4]
    assert ep.meta["pose_timestamps"] == GT_TS
    for k in range(4):
        np.testing.assert_array_equal(ep.rgb[k], _rgb(k))
        np.testing.assert_array_equal(ep.depth[k], _raw_depth(k).astype(np.float64) / 5000.0)
        np.testing.assert_array_equal(ep.poses[k], expected_pose(k))
    assert ep.depth[0, 0, 0] == 0.0
    assert verify_dataset(ds.root) == []
    assert ds.summary()["splits"] == {"test": {"episodes": 1, "frames": 4, "houses": 1}}


def test_import_defaults_stride_and_limit(tmp_path):
    src = write_tum(tmp_path / "seq")
    rep = import_tum(src, tmp_path / "out", stride=2, max_frames=1, split="val", depth_scale=1000.0)
    ep = rep.dataset.read(0)
    assert rep.num_frames == 1 and rep.skipped == 3 and ep.split == "val"
    K = ep.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy) == (525.0, 525.0, 319.5, 239.5)
    np.testing.assert_allclose(ep.depth[0], _raw_depth(0) / 1000.0, rtol=2.0**-11)
    rep = import_tum(src, tmp_path / "out2", stride=2)
    assert rep.dataset.read(0).meta["timestamps"] == [RGB_TS[0], RGB_TS[2]]


def test_progress_callback(tmp_path):
    seen = []
    import_tum(write_tum(tmp_path / "s"), tmp_path / "o", on_progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (8, 8)


def _edit(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (lambda r: (r / "rgb.txt").unlink(), r"rgb\.txt: file not found"),
        (lambda r: (r / "groundtruth.txt").unlink(), r"groundtruth\.txt: file not found"),
        (lambda r: _edit(r / "groundtruth.txt", "0.999 0.1", "0.999"), r"groundtruth\.txt:3: expected 8 columns"),
        (lambda r: _edit(r / "groundtruth.txt", "1.034 ", "1.o34 "), r"groundtruth\.txt:4: bad timestamp"),
        (lambda r: _edit(r / "groundtruth.txt", " 0.6830127\n", " 5.0\n"), r"groundtruth\.txt:6: quaternion"),
        (lambda r: _edit(r / "depth.txt", "1.038000 depth", "1.038000 depth depth"), r"depth\.txt:5: expected 2"),
        (lambda r: (r / "rgb" / "1.033333.png").unlink(), r"rgb\.txt:5: image .*1\.033333\.png.* does not exist"),
        (lambda r: (r / "rgb" / "1.000000.png").write_bytes(b"junk"), r"1\.000000\.png: cannot read image"),
        (lambda r: (r / "rgb.txt").write_text("# nothing\n"), r"rgb\.txt: no entries"),
    ],
)
def test_errors_name_file_and_line(tmp_path, damage, pattern):
    src = write_tum(tmp_path / "seq")
    damage(src)
    with pytest.raises(TumFormatError, match=pattern):
        import_tum(src, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(rgb_mode="L"), r"1\.033333\.png: rgb image has mode 'L'"),
        (dict(rgb_mode="RGBA"), r"rgb image has mode 'RGBA'"),
        (dict(depth_mode="L"), r"1\.005000\.png: depth .*mode 'L'"),
        (dict(size=(W + 2, H)), r"1\.066667\.png: image is 18x12, expected 16x12"),
    ],
)
def test_wrong_image_mode_or_size(tmp_path, kw, pattern):
    src = write_tum(tmp_path / "seq", **kw)
    with pytest.raises(TumFormatError, match=pattern):
        import_tum(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_matches_and_existing_output(tmp_path):
    src = write_tum(tmp_path / "seq")
    with pytest.raises(TumFormatError, match="no rgb frame has both"):
        import_tum(src, tmp_path / "out", max_time_diff=1e-5)
    import_tum(src, tmp_path / "out")
    with pytest.raises(DatasetError, match="already holds a dataset.*overwrite"):
        import_tum(src, tmp_path / "out")
    with pytest.raises(TumFormatError, match="not a directory"):
        import_tum(tmp_path / "missing", tmp_path / "x")


def test_overwrite_replaces_a_dataset_and_refuses_other_directories(tmp_path):
    src = write_tum(tmp_path / "seq")
    out = tmp_path / "out"
    import_tum(src, out, max_frames=2)
    (out / "episodes" / ".ep_000000.npz.x.tmp").write_bytes(b"")  # a leftover of an interrupted write
    rep = import_tum(src, out, overwrite=True)
    assert rep.num_frames == 4 and verify_dataset(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "episodes", "manifest.json"]
    # the manifest is written before the episode, and the episode recorded in it when complete
    m = json.loads((out / "manifest.json").read_text())
    assert m["episodes"]["ep_000000.npz"]["split"] == "test" and len(m["episodes"]["ep_000000.npz"]["sha256"]) == 64
    (out / "notes.txt").write_text("mine")  # not only a dataset: never removed
    with pytest.raises(DatasetError, match="notes.txt"):
        import_tum(src, out, overwrite=True)
    assert (out / "episodes" / "ep_000000.npz").is_file()
