"""``pewm eval`` (the Table-1 benchmark) and ``pewm demo`` end to end on micro models, plus the
reader-weights files that let one model directory carry several memory readers."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pewm.cli.main import app
from pewm.eval.benchmark import BenchmarkConfig, choose_cut, run_benchmark
from pewm.model import SamplingConfig, WorldModel
from pewm.model.testing import torch_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def micro_models(tmp_path_factory):
    """A micro voxel-render model directory carrying frames-reader weights beside it."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = WorldModel.from_preset("micro", reader="voxel-render")
    with torch.no_grad():  # non-zero gates and render weights: the memory changes the output
        for n, p in m.named_parameters():
            if n.startswith("denoiser.reader.") or n.startswith("denoiser.final."):
                p.normal_(0, 0.05)
    m.save_pretrained(root / "main")
    f = WorldModel.from_preset("micro", reader="frames")
    f.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("denoiser.reader.")}, strict=False)
    with torch.no_grad():
        for n, p in f.named_parameters():
            if n.startswith("denoiser.reader."):
                p.normal_(0, 0.05)
    f.save_reader(root / "main")
    return root, m, f


def test_reader_weights_beside_a_model(micro_models, tmp_path):
    root, m, f = micro_models
    assert (root / "main" / "readers" / "frames.safetensors").is_file()
    loaded = WorldModel.from_pretrained(root / "main", reader="frames")
    sd, want = loaded.state_dict(), f.state_dict()
    assert all(torch.equal(sd[k], want[k]) for k in want if k.startswith("denoiser.reader."))
    assert all(torch.equal(sd[k], m.state_dict()[k]) for k in sd if not k.startswith("denoiser.reader."))
    # without a file for that reader, the reader starts zero-gated (stage-2 start)
    fresh = WorldModel.from_pretrained(root / "main", reader="voxel-xattn")
    gates = [p for n, p in fresh.named_parameters() if n.startswith("denoiser.reader.") and "ada_" in n]
    assert gates and all(float(p.detach().abs().max()) == 0.0 for p in gates)
    # a reader file of another architecture is refused with its path
    bad = tmp_path / "bad"
    m.save_pretrained(bad)
    WorldModel.from_preset("micro", reader="frames", width=64, heads=2).save_reader(bad)
    with pytest.raises(ValueError, match="frames.safetensors"):
        WorldModel.from_pretrained(bad, reader="frames")


def test_choose_cut_prefers_revisits():
    # a camera at the origin: frames 0..8 look along +x, 9..16 along -x, 17..24 along +x again,
    # 25..32 along +y. Cuts 8 and 24 are followed by unseen views; cut 16 by revisits of 0..8.
    def pose(yaw):
        c, s = np.cos(yaw), np.sin(yaw)
        fwd, right = np.array([c, s, 0.0]), np.array([s, -c, 0.0])
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = right, np.cross(fwd, right), fwd
        T[2, 3] = 1.25
        return T

    poses = np.stack([pose(0.0)] * 9 + [pose(np.pi)] * 8 + [pose(0.0)] * 8 + [pose(np.pi / 2)] * 8)
    depth = np.full((33, 16, 16), 3.0, np.float32)
    K = np.array([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]])
    cut, frac = choose_cut(depth, poses, K, horizon=8, min_history=8, step=8)
    assert cut == 16 and frac.shape == (8,)
    assert np.nanmean(frac) > 0.9


def test_benchmark_end_to_end(small_dataset, micro_models, tmp_path):
    data, _ = small_dataset
    root, _, _ = micro_models
    cfg = BenchmarkConfig(data=str(data), out=str(tmp_path / "eval"), model=str(root / "main"),
                          modes=("voxel-render", "frames", "none"), seeds=2, split="all", horizon=4,
                          min_history=8, batch=2, sampling=SamplingConfig(steps=2), videos=1, long_horizon=1,
                          long_steps=16)
    res = run_benchmark(cfg)
    out = tmp_path / "eval"
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == {"_meta", "voxel-render", "frames", "none"}
    for mode in ("voxel-render", "frames", "none"):
        assert set(saved[mode]) == {"revisit", "novel", "all"}
        psnr = saved[mode]["all"]["psnr"]
        assert psnr["mean"] is not None and np.isfinite(psnr["mean"]) and psnr["std"] >= 0
        assert set(saved[mode]["all"]) == {"psnr", "ssim", "absrel", "delta1", "src", "psnr_mse", "sharpness"} | (
            set() if mode == "none" else {"gain_over_none"})  # issue #12: the split-level statistics beside Table 1's
    assert saved["_meta"]["episodes"] == 3 and saved["_meta"]["feature_extractor"] == "color_layout"
    assert saved["_meta"]["revisit_frames"] + saved["_meta"]["novel_frames"] == 3 * 4
    md = (out / "results.md").read_text()
    assert "voxel-render" in md and "frames" in md and "none" in md
    long = saved["_meta"]["long_horizon"]
    assert long["houses"] == 1 and long["returning_frames"] > 0, "the turn-away-and-back probe returns"
    assert long["source"] == "held-out simulated houses" and "(1 held-out houses," in md
    assert set(long["modes"]) == {"voxel-render", "none"}
    assert np.isfinite(long["modes"]["none"]["self_psnr"]["mean"]) and "Long-horizon consistency" in md
    assert (out / "psnr_vs_step.png").stat().st_size > 0
    assert len(list((out / "videos").glob("*.mp4"))) == 1
    # with a memory that carries weights, the modes generate different frames
    assert res["voxel-render"]["all"]["psnr"]["mean"] != res["none"]["all"]["psnr"]["mean"]



def _strip_actions(src, dst, shift=0.0):
    """A copy of dataset ``src`` whose episodes have no actions (a recording: poses only); ``shift``
    moves every other camera by that many metres along x (off the action lattice)."""
    import dataclasses
    import shutil

    from pewm.data import open_dataset

    shutil.copytree(src, dst)
    ds = open_dataset(dst)
    for i in ds.episode_indices():
        ep = ds.read(i)
        poses = ep.poses.copy()
        poses[1::2, 0, 3] += shift
        ds.write(i, dataclasses.replace(ep, poses=poses, actions=None, collided=None))
    ds.write_manifest()
    return dst


def test_pose_only_episodes_give_the_numbers_of_their_actions(small_dataset, micro_models, tmp_path):
    """``pewm eval`` on episodes without actions: cuts, labels and every number equal those of the
    same episodes evaluated with their actions (their camera moves in action steps, so they are
    replayed with those, bit for bit); off the action lattice they are replayed along the recorded
    poses, every row filled."""
    data, _ = small_dataset
    root, _, _ = micro_models
    runs = {}
    for name, d in (("actions", data), ("poses", _strip_actions(data, tmp_path / "poses_only")),
                    ("off-lattice", _strip_actions(data, tmp_path / "off_lattice", shift=1e-3))):
        cfg = BenchmarkConfig(data=str(d), out=str(tmp_path / name), model=str(root / "main"),
                              modes=("voxel-render", "frames", "none"), seeds=1, split="all", horizon=4,
                              min_history=8, batch=2, sampling=SamplingConfig(steps=2), videos=0)
        runs[name] = run_benchmark(cfg)
    a, p, off = runs["actions"], runs["poses"], runs["off-lattice"]
    assert a["_meta"]["pose_only_episodes"] == 0 and p["_meta"]["pose_only_episodes"] == 3
    assert a["_meta"]["replayed_along_poses"] == p["_meta"]["replayed_along_poses"] == 0
    assert off["_meta"]["replayed_along_poses"] == 3
    for k in ("cuts", "revisit_frames", "novel_frames", "episodes"):
        assert a["_meta"][k] == p["_meta"][k] == off["_meta"][k]
    for mode in ("voxel-render", "frames", "none"):
        assert a[mode] == p[mode], mode
        for cls in ("revisit", "novel", "all"):
            if a[mode][cls]["psnr"]["mean"] is not None:
                assert abs(off[mode][cls]["psnr"]["mean"] - a[mode][cls]["psnr"]["mean"]) < 0.5, (mode, cls)
    assert a["voxel-render"]["all"]["psnr"]["mean"] != a["none"]["all"]["psnr"]["mean"]


def test_long_horizon_probe_on_pose_only_episodes(small_dataset, micro_models, tmp_path):
    """``--long-horizon`` on a pose-only dataset walks the split's own first episodes along their
    recorded poses (to the episode's end when it is shorter than ``--long-steps``), not simulated houses."""
    data, _ = small_dataset
    root, _, _ = micro_models
    cfg = BenchmarkConfig(data=str(_strip_actions(data, tmp_path / "poses_only")), out=str(tmp_path / "eval"),
                          model=str(root / "main"), modes=("voxel-render", "none"), seeds=1, split="train",
                          horizon=4, min_history=8, sampling=SamplingConfig(steps=2), videos=0, long_horizon=1,
                          long_steps=64)  # the train episode: 40 steps, 17 frames return to a first visit
    long = run_benchmark(cfg)["_meta"]["long_horizon"]
    assert long["source"] == "dataset episodes" and long["houses"] == 1 and long["steps"] == 64
    assert long["returning_frames"] == 17 and set(long["modes"]) == {"voxel-render", "none"}
    for d in long["modes"].values():
        assert all(np.isfinite(d[k]["mean"]) for k in ("gt_psnr", "gt_ssim", "self_psnr", "self_ssim"))
    md = (tmp_path / "eval" / "results.md").read_text()
    assert "Long-horizon consistency (1 dataset episodes along their recorded poses" in md


def _reshaped_dataset(src, dst, rows=slice(8, 56), fy_scale=1.0):
    """A pose-only copy of ``src`` whose frames keep only ``rows`` (64x48 from 64x64: not square)
    and whose focal length is scaled by ``fy_scale`` (the camera of another recording)."""
    import dataclasses

    from pewm.data import DatasetSpec, create_dataset, open_dataset
    from pewm.geometry import Intrinsics

    ds = open_dataset(src)
    K = ds.intrinsics
    h = len(range(K.height)[rows])
    intr = Intrinsics(K.fx * fy_scale, K.fy * fy_scale, K.cx, K.cy - rows.start, K.width, h)
    out = create_dataset(dst, DatasetSpec("reshaped", intr, action_config=None))
    for i in ds.episode_indices():
        ep = ds.read(i)
        out.write(i, dataclasses.replace(ep, rgb=ep.rgb[:, rows], depth=ep.depth[:, rows], intrinsics=intr,
                                         actions=None, collided=None))
    out.write_manifest()
    return dst


def test_episodes_are_fitted_to_the_model(small_dataset, tmp_path):
    """Square frames are resized exactly as before issue #16; a non-square recording is centre-cropped
    by pewm.data.fit.fit_frames; a camera far from the model's field of view is refused."""
    from pewm.data import fit_frames, open_dataset
    from pewm.eval.benchmark import load_episodes
    from pewm.model.frame_ops import resize_depth, resize_rgb, scale_intrinsics

    data, _ = small_dataset
    cfg = BenchmarkConfig(data=str(data), split="all", horizon=4, min_history=8)
    ds = open_dataset(data)
    for e, path in zip(load_episodes(cfg, 16), ds.episode_paths()):
        ep = ds.read(path)  # the resize of load_episodes before issue #16, verbatim
        rgb = (resize_rgb(torch.from_numpy(np.asarray(ep.rgb)).permute(0, 3, 1, 2).float() / 255, 16, 16)
               .permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy())
        depth = resize_depth(torch.from_numpy(np.asarray(ep.depth, dtype=np.float32)), 16, 16).numpy()
        K = np.asarray(scale_intrinsics(ep.intrinsics.matrix, (64, 64), (16, 16)), dtype=np.float64)
        assert np.array_equal(e.frames_rgb, rgb) and np.array_equal(e.frames_depth, depth) and np.array_equal(e.K, K)
    native = load_episodes(cfg, 64)[0]
    assert np.array_equal(native.frames_rgb, ds.read(0).rgb) and native.actions is not None

    wide = _reshaped_dataset(data, tmp_path / "wide")
    cfg = BenchmarkConfig(data=str(wide), split="all", horizon=4, min_history=8)
    eps = load_episodes(cfg, 16)
    ep = open_dataset(wide).read(0)
    rgb, depth, K = fit_frames(ep.rgb, ep.depth, ep.intrinsics.matrix, 16, 16)
    assert eps[0].actions is None and eps[0].frames_rgb.shape == (41, 16, 16, 3)
    assert np.array_equal(eps[0].frames_rgb, rgb) and np.array_equal(eps[0].frames_depth, depth)
    assert np.allclose(eps[0].K, K) and abs(eps[0].K[0, 2] - 7.5) < 1e-9  # the crop is centred

    narrow = _reshaped_dataset(data, tmp_path / "narrow", fy_scale=4.0)
    with pytest.raises(ValueError, match=r"ep_000000.*K: vertical field of view 21.2 deg .*--allow-any-fov"):
        load_episodes(BenchmarkConfig(data=str(narrow), split="all", horizon=4, min_history=8), 16)
    assert len(load_episodes(BenchmarkConfig(data=str(narrow), split="all", horizon=4, min_history=8,
                                             allow_any_fov=True), 16)) == 3


def test_imagine_walks_along_poses_as_along_actions(small_dataset, micro_models):
    """A recorded walk (poses only) is imagined exactly like the actions that lead along it."""
    import dataclasses

    from pewm.data import open_dataset
    from pewm.eval.walks import imagine, walk_from_episode
    from pewm.geometry import poses_from_actions

    data, _ = small_dataset
    _, m, _ = micro_models
    ep = open_dataset(data).read(0)
    walk = walk_from_episode(ep, 16, start=3, steps=5)
    assert walk.actions is None and walk.steps == 5 and walk.rgb.shape == (6, 16, 16, 3) and len(walk.memory_rgb) == 1
    acts = np.asarray(ep.actions[3:8])
    by_actions = dataclasses.replace(walk, actions=acts, poses=poses_from_actions(walk.poses[0], acts))
    by_poses = dataclasses.replace(by_actions, actions=None)
    sampling = SamplingConfig(steps=2)
    for use_memory in (True, False):
        a = imagine(m, by_actions, use_memory, sampling, seed=1)
        p = imagine(m, by_poses, use_memory, sampling, seed=1)
        assert np.array_equal(a[0], p[0]) and np.array_equal(a[1], p[1]) and np.array_equal(a[3], p[3])
    with pytest.raises(ValueError, match=r"--start 40: .* 41 frames"):
        walk_from_episode(ep, 16, start=40)
    with pytest.raises(ValueError, match=r"--steps 9: .* 8 frames after --start 32"):
        walk_from_episode(ep, 16, start=32, steps=9)


def test_demo_on_a_recorded_pose_only_episode(small_dataset, micro_models, tmp_path):
    data, _ = small_dataset
    root, _, _ = micro_models
    poses_only = _reshaped_dataset(data, tmp_path / "rec")  # 64x48, no actions
    runner = CliRunner()
    base = ["demo", "--model", str(root / "main"), "--sampling-steps", "2"]
    r = runner.invoke(app, base + ["--out", str(tmp_path / "demo"), "--data", str(poses_only), "--episode", "1",
                                   "--start", "2", "--steps", "5"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["house_seed"] is None and "episode 1 from frame 2" in summary["walk"]
    assert summary["revisit_frames"] + summary["novel_frames"] == 5
    assert set(summary["results"]) == {"with memory", "without memory"}
    assert (tmp_path / "demo" / "demo.mp4").stat().st_size > 0
    for extra, culprit in ((["--episode", "1"], "--data"), (["--start", "3"], "--data"),
                           (["--data", str(poses_only), "--look-around", "2"], "--look-around"),
                           (["--data", str(poses_only), "--episode", "7"], "--episode 7"),
                           (["--data", str(poses_only), "--start", "40"], "--start 40")):
        r = runner.invoke(app, base + ["--out", str(tmp_path / "bad")] + extra)
        assert r.exit_code == 2 and culprit in r.output and "Traceback" not in r.output, (extra, r.output)


def test_eval_cli_errors(small_dataset, micro_models, tmp_path):
    data, _ = small_dataset
    root, _, _ = micro_models
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--data", str(data), "--model", str(root / "main"), "--memory", "voxel-xattn",
                            "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "--mode-model voxel-xattn=" in r.output
    r = runner.invoke(app, ["eval", "--data", str(data), "--model", str(root / "main"), "--memory", "nope",
                            "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "unknown mode" in r.output


def test_demo_writes_video_and_summary(micro_models, tmp_path):
    root, _, _ = micro_models
    runner = CliRunner()
    r = runner.invoke(app, ["demo", "--model", str(root / "main"), "--out", str(tmp_path / "demo"), "--steps", "6",
                            "--look-around", "4", "--sampling-steps", "2"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["frames"] == 7
    assert summary["revisit_frames"] + summary["novel_frames"] == 6
    assert set(summary["results"]) == {"with memory", "without memory"}
    assert (tmp_path / "demo" / "demo.mp4").stat().st_size > 0


def test_memory_build_settings_reach_the_builder(tmp_path):
    from pewm.model.memory_build import MemoryBuilder

    m = WorldModel.from_preset("micro", reader="voxel-render")
    assert MemoryBuilder.for_model(m).cfg.surface_voxel == 0.05  # defaults without saved settings
    m.memory_build = {"surface_voxel": 0.1, "max_depth": 6.0}
    m.save_pretrained(tmp_path / "m")
    b = MemoryBuilder.for_model(WorldModel.from_pretrained(tmp_path / "m"))
    assert b.cfg.surface_voxel == 0.1 and b.cfg.max_depth == 6.0
    (tmp_path / "m" / "memory.json").write_text("{not json")
    with pytest.raises(ValueError, match="memory.json"):
        WorldModel.from_pretrained(tmp_path / "m")
