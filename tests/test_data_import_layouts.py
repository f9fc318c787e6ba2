"""Importers round trip: a generated pewm episode -> export to TUM / ScanNet / folder -> import -> compare.

Tolerances (docs/data-format.md, "Importing recordings"): poses <= 1e-5 m and 1e-6 rad, depth <=
1 mm (16-bit millimetre PNG + float16 storage), RGB exact for PNG and close for JPEG, and the
imported episode passes the multi-view reprojection check (median relative error <= 0.5%).
"""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pewm.cli.main import app
from pewm.data import (
    DatasetError,
    FolderFormatError,
    ScanNetFormatError,
    export_folder,
    export_scannet,
    export_tum,
    fit_frames,
    import_folder,
    import_scannet,
    import_tum,
    open_dataset,
    verify_dataset,
)
from pewm.geometry import reprojection_depth_errors

FRAMES = 12


@pytest.fixture(scope="module")
def episode(small_dataset):
    return open_dataset(small_dataset[0]).read(0, frames=(0, FRAMES))


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the reprojection check is tiny; threads only contend on shared CPUs
    yield
    torch.set_num_threads(n)


def reprojection_median(ep, pairs=6):
    errs = [reprojection_depth_errors(ep.depth[t], ep.poses[t], ep.depth[t + 1], ep.poses[t + 1],
                                      ep.intrinsics.matrix).numpy() for t in range(min(pairs, ep.num_frames - 1))]
    return float(np.median(np.concatenate(errs)))


def rotation_error(Ra, Rb):
    """Largest rotation angle (rad) between matching rotations (precise for small angles)."""
    return float((2 * np.arcsin(np.clip(np.linalg.norm(Ra - Rb, axis=(-2, -1)) / np.sqrt(8), 0, 1))).max())


def check_round_trip(orig, rep, rgb_exact=True):
    ds = rep.dataset
    assert verify_dataset(ds.root) == []
    ep = ds.read(0)
    assert ep.num_frames == orig.num_frames and ep.actions is None and ep.meta["world_up"] == "unknown"
    assert ep.intrinsics == orig.intrinsics and ds.spec.action_config is None
    assert np.abs(ep.poses[:, :3, 3] - orig.poses[:, :3, 3]).max() <= 1e-5
    assert rotation_error(ep.poses[:, :3, :3], orig.poses[:, :3, :3]) <= 1e-6
    assert np.abs(ep.depth - orig.depth).max() <= 1e-3
    assert ((ep.depth == 0) == (orig.depth == 0)).all()
    diff = np.abs(ep.rgb.astype(int) - orig.rgb)
    if rgb_exact:
        assert diff.max() == 0
    else:  # JPEG quality 95
        assert diff.mean() <= 3.5 and 10 * np.log10(255**2 / (diff.astype(float) ** 2).mean()) >= 30
    assert reprojection_median(ep) <= 0.005
    return ep


def test_tum_round_trip(episode, tmp_path):
    K = episode.intrinsics
    src = export_tum(episode, tmp_path / "tum")
    rep = import_tum(src, tmp_path / "out", fx=K.fx, fy=K.fy, cx=K.cx, cy=K.cy)
    check_round_trip(episode, rep)
    rep = import_tum(src, tmp_path / "out32", fx=K.fx, fy=K.fy, cx=K.cx, cy=K.cy, resolution=32, max_frames=3)
    ep = rep.dataset.read(0)
    rgb, _, K32 = fit_frames(episode.rgb[:3], None, K, 32, 32)
    assert ep.intrinsics == K32 and ep.meta["resolution"] == 32
    np.testing.assert_array_equal(ep.rgb, rgb)


@pytest.mark.parametrize("color_format,scale", [("jpg", 2), ("png", 3)])
def test_scannet_round_trip(episode, tmp_path, color_format, scale):
    """Colour is written `scale` times larger than depth (like ScanNet's 1296x968 vs 640x480) and
    registered into the depth camera by the intrinsics: exact for lossless PNG."""
    src = export_scannet(episode, tmp_path / "scene0000_00", color_scale=scale, color_format=color_format)
    rep = import_scannet(src, tmp_path / "out")
    assert (rep.num_frames, rep.invalid_poses, rep.layout) == (FRAMES, 0, "ScanNet")
    ep = check_round_trip(episode, rep, rgb_exact=color_format == "png")
    assert ep.kind == "scannet" and ep.meta["frames"] == list(range(FRAMES))
    assert ep.meta["color_intrinsics"]["width"] == scale * episode.intrinsics.width


def test_scannet_skips_frames_with_invalid_poses(episode, tmp_path):
    src = export_scannet(episode, tmp_path / "scene")
    for i in (3, 7):  # what ScanNet writes when tracking was lost
        (src / "pose" / f"{i}.txt").write_text("-inf -inf -inf -inf\n" * 4)
    (src / "pose" / "9.txt").write_text("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    rep = import_scannet(src, tmp_path / "out", stride=2)
    kept = [0, 2, 5, 8, 11]  # the valid frames 0 1 2 4 5 6 8 10 11, every second
    assert (rep.num_frames, rep.num_source, rep.invalid_poses, rep.skipped) == (5, FRAMES, 3, 4)
    assert "skipped 3 with an invalid (inf/NaN) pose" in str(rep)
    ep = rep.dataset.read(0)
    assert ep.meta["frames"] == kept and ep.meta["invalid_poses"] == 3
    np.testing.assert_allclose(ep.poses, episode.poses[kept], atol=1e-12)
    assert np.abs(ep.depth - episode.depth[kept]).max() <= 1e-3


FOLDER_CASES = [
    dict(),
    dict(pose_convention="w2c"),
    dict(axes="opengl", depth_format="npy"),
    dict(pose_convention="w2c", axes="opengl", depth_scale=5000.0, rgb_format="png"),
    dict(depth_format="npy", depth_scale=100.0),  # centimetres
]


@pytest.mark.parametrize("opts", FOLDER_CASES, ids=lambda o: "-".join(f"{v}" for v in o.values()) or "default")
def test_folder_round_trip_in_each_convention(episode, tmp_path, opts):
    src = export_folder(episode, tmp_path / "rec", **opts)
    kw = {k: v for k, v in opts.items() if k in ("pose_convention", "axes", "depth_scale")}
    rep = import_folder(src, tmp_path / "out", **kw)
    ep = check_round_trip(episode, rep)
    assert ep.kind == "folder" and ep.meta["axes"] == opts.get("axes", "opencv")


@pytest.mark.parametrize("written,read_as", [(dict(pose_convention="w2c"), dict()),
                                             (dict(axes="opengl"), dict()),
                                             (dict(), dict(pose_convention="w2c"))])
def test_folder_wrong_convention_fails_the_reprojection_check(episode, tmp_path, written, read_as):
    rep = import_folder(export_folder(episode, tmp_path / "rec", **written), tmp_path / "out", **read_as)
    assert reprojection_median(rep.dataset.read(0)) > 0.02


def test_folder_depth_scale_is_applied(episode, tmp_path):
    src = export_folder(episode, tmp_path / "rec", depth_format="png", depth_scale=1000.0)
    ep = import_folder(src, tmp_path / "out", depth_scale=500.0).dataset.read(0)  # read mm as 2 mm units
    assert np.abs(ep.depth - 2 * episode.depth).max() <= 3e-3


def test_resolution_fits_frames_at_import(episode, tmp_path):
    src = export_folder(episode, tmp_path / "rec", depth_format="npy")  # lossless depth
    rep = import_folder(src, tmp_path / "out", resolution=24, max_frames=5)
    ep = rep.dataset.read(0)
    rgb, depth, K = fit_frames(episode.rgb[:5], episode.depth[:5], episode.intrinsics, 24, 24)
    assert ep.intrinsics == K == rep.dataset.intrinsics and ep.rgb.shape == (5, 24, 24, 3)
    np.testing.assert_array_equal(ep.rgb, rgb)
    np.testing.assert_array_equal(ep.depth, depth.astype(np.float16).astype(np.float32))
    assert reprojection_median(ep, pairs=4) <= 0.005
    # ScanNet: registration and fit composed into one colour resampling
    rep = import_scannet(export_scannet(episode, tmp_path / "sn", color_scale=2, color_format="png"),
                         tmp_path / "out_sn", resolution=24, max_frames=5)
    np.testing.assert_array_equal(rep.dataset.read(0).rgb, rgb)


def _edit(path, text):
    path.write_text(text)


SCANNET_DAMAGE = [
    ("pose-15-numbers", lambda s: _edit(s / "pose" / "4.txt", "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0\n"), r"4\.txt:4:"),
    ("pose-not-rigid", lambda s: _edit(s / "pose" / "2.txt", "2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
     r"2\.txt: .*orthonormal"),
    ("pose-missing", lambda s: (s / "pose" / "5.txt").unlink(), r"5\.txt: file not found"),
    ("depth-missing", lambda s: (s / "depth" / "6.png").unlink(), r"6\.png: file not found"),
    ("depth-8-bit", lambda s: __import__("PIL.Image").Image.fromarray(np.zeros((64, 64), np.uint8)).save(
        s / "depth" / "1.png"), r"1\.png: depth image has mode 'L'"),
    ("intrinsics-bad", lambda s: _edit(s / "intrinsic" / "intrinsic_depth.txt", "32 0 31.5\n0 x 31.5\n"),
     r"intrinsic_depth\.txt:2: bad number"),
    ("extrinsics", lambda s: _edit(s / "intrinsic" / "extrinsic_color.txt", "1 0 0 0.1\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
     r"extrinsic_color\.txt: only identity extrinsics"),
    ("color-name", lambda s: _edit(s / "color" / "notes.jpg", ""), r"notes\.jpg: unexpected file"),
]


@pytest.mark.parametrize("damage,pattern", [c[1:] for c in SCANNET_DAMAGE], ids=[c[0] for c in SCANNET_DAMAGE])
def test_scannet_errors_name_the_file(episode, tmp_path, damage, pattern):
    src = export_scannet(episode, tmp_path / "scene")
    damage(src)
    with pytest.raises(ScanNetFormatError, match=pattern):
        import_scannet(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


FOLDER_DAMAGE = [
    ("poses-count", lambda s: _edit(s / "poses.txt", "\n".join((s / "poses.txt").read_text().splitlines()[:-1])),
     r"poses\.txt: has 11 poses for 12 frames"),
    ("poses-columns", lambda s: _edit(s / "poses.txt", (s / "poses.txt").read_text().replace(" 1.0\n", "\n", 1)),
     r"poses\.txt:2: expected 16 numbers"),
    ("intrinsics-size", lambda s: _edit(s / "intrinsics.txt", "32 32 31.5 31.5 640 480\n"),
     r"intrinsics\.txt:1: says the images are 640x480, but they are 64x64"),
    ("depth-missing", lambda s: (s / "depth" / "000003.png").unlink(), r"000003\.png: rgb image without a depth"),
    ("depth-size", lambda s: np.save(s / "depth" / "000002.npy", np.ones((8, 8))) or (s / "depth" / "000002.png")
     .unlink(), r"000002\.npy: depth map is 8x8, expected 64x64"),
    ("rgb-mode", lambda s: __import__("PIL.Image").Image.fromarray(np.zeros((64, 64), np.uint8)).save(
        s / "rgb" / "000004.png"), r"000004\.png: rgb image is L"),
]


@pytest.mark.parametrize("damage,pattern", [c[1:] for c in FOLDER_DAMAGE], ids=[c[0] for c in FOLDER_DAMAGE])
def test_folder_errors_name_the_file(episode, tmp_path, damage, pattern):
    src = export_folder(episode, tmp_path / "rec")
    damage(src)
    with pytest.raises(FolderFormatError, match=pattern):
        import_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_refused_unless_overwrite(episode, tmp_path):
    src = export_folder(episode, tmp_path / "rec")
    import_folder(src, tmp_path / "out", max_frames=3)
    with pytest.raises(DatasetError, match="overwrite"):
        import_scannet(export_scannet(episode, tmp_path / "sn"), tmp_path / "out")
    rep = import_folder(src, tmp_path / "out", overwrite=True)
    assert rep.num_frames == FRAMES and verify_dataset(tmp_path / "out") == []
    with pytest.raises(ValueError, match="not an empty directory"):
        export_folder(episode, tmp_path / "rec")


def test_cli_export_then_import(small_dataset, tmp_path):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args], terminal_width=200)

    r = run("data", "export", small_dataset[0], "--out", tmp_path / "rec", "--format", "folder", "--axes", "opengl")
    assert r.exit_code == 0, r.output
    r = run("data", "import", tmp_path / "rec", "--out", tmp_path / "ds", "--format", "folder", "--axes", "opengl",
            "--resolution", 32, "--max-frames", 8, "--split", "val")
    assert r.exit_code == 0 and "imported 8 of" in r.output, r.output
    assert run("data", "verify", tmp_path / "ds").exit_code == 0
    info = json.loads(run("data", "info", tmp_path / "ds", "--json").stdout)
    assert info["num_frames"] == 8 and info["resolution"] == {"width": 32, "height": 32}
    r = run("data", "import", tmp_path / "rec", "--out", tmp_path / "ds2", "--format", "scannet", "--fx", 30)
    assert r.exit_code == 2 and "--fx applies to --format tum only" in r.output
    r = run("data", "export", small_dataset[0], "--out", tmp_path / "rec", "--format", "tum")
    assert r.exit_code == 2 and "--overwrite" in r.output, r.output
