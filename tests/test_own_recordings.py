"""docs/own-recordings.md, run as written: every `pewm` command of the guide, in order, on small
synthetic recordings (simulator episodes exported into the TUM, ScanNet and folder layouts), with
fewer training steps, seeds and frames (the substitutions below). Also: training clips of another
aspect ratio are centre-cropped like imports (pewm.data.fit)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import torch
import pytest
from typer.testing import CliRunner

from pewm.cli.main import app
from pewm.data import fit_frames, open_dataset
from pewm.data.clips import Clip
from pewm.model import from_preset
from pewm.train.data import clip_tensors

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "own-recordings.md"
# recordings the guide names -> (episode of the small dataset, layout)
RECORDINGS = {"rgbd_dataset_freiburg1_xyz": (0, "tum"), "rgbd_dataset_freiburg1_desk": (1, "tum"),
              "scene0000_00": (2, "scannet"), "my_robot_log": (2, "folder")}
# the guide's sizes for real recordings -> sizes for a 41-frame synthetic one on a CI machine
FAST = {"--steps 300": "--steps 2", "--seeds 3": "--seeds 1", "--min-history 64": "--min-history 8",
        "--horizon 32": "--horizon 8"}


def guide_commands() -> list[str]:
    """The `pewm ...` lines of the guide's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("pewm ")]


def test_the_guide_has_every_step():
    cmds = " ".join(guide_commands())
    for step in ("data import --format tum", "data import --format scannet", "data import --format folder",
                 "data verify", "map ", "train ", "--init shipped", "eval ", "demo --data"):
        assert step in cmds, step
    for slow in (*FAST, "--fx 517.3 --fy 516.5 --cx 318.6 --cy 255.3"):  # the fast run's substitutions apply
        assert slow in cmds, f"the guide no longer says {slow!r}: update FAST (CI would run the slow version)"


def _import_lines(cmds: list[str], fmt: str) -> list[str]:
    return [c for c in cmds if c.startswith(f"pewm data import --format {fmt} ")]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tum", "scannet", "folder"])
def test_every_command_of_the_guide_runs(layout, small_dataset, tmp_path, monkeypatch):
    """The whole guide with the train and test recordings in ``layout``: for ``tum`` exactly as
    written; for the others, the guide's import line of that layout imports them instead."""
    src, _ = small_dataset
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for name, (episode, fmt) in RECORDINGS.items():
        r = runner.invoke(app, ["data", "export", str(src), "--episode", str(episode), "--format", fmt, "--out", name])
        assert r.exit_code == 0, r.output
    K = open_dataset(src).intrinsics
    # TUM recordings carry no intrinsics file: the guide's Freiburg-1 values become the exported ones
    fast = {**FAST, "--fx 517.3 --fy 516.5 --cx 318.6 --cy 255.3": f"--fx {K.fx} --fy {K.fy} --cx {K.cx} --cy {K.cy}"}
    cmds = guide_commands()
    if layout != "tum":  # the train/test recordings come in this layout, through the guide's own import line
        (line,) = _import_lines(cmds, layout)
        own = {n for n, (_, f) in RECORDINGS.items() if f == layout}.pop()
        for episode, out, split in ((0, "fr1_train", "train"), (1, "fr1_test", "test")):
            rec = f"{layout}_{split}"
            r = runner.invoke(app, ["data", "export", str(src), "--episode", str(episode), "--format", layout, "--out", rec])
            assert r.exit_code == 0, r.output
            args = line.replace(f" {own} ", f" {rec} ")
            args = re.sub(r"--out \S+", f"--out {out}", re.sub(r"--split \S+", f"--split {split}", args))
            cmds = [args] + cmds
        cmds = [c for c in cmds if c not in _import_lines(guide_commands(), "tum")]
    for cmd in cmds:
        for old, new in fast.items():
            cmd = cmd.replace(old, new)
        r = runner.invoke(app, shlex.split(cmd)[1:])
        assert r.exit_code == 0, f"{cmd}\n{r.output}"
    assert len(guide_commands()) >= 12
    # what the guide promises exists
    assert open_dataset("fr1_train").episode_paths("train") and open_dataset("fr1_test").episode_paths("test")
    for d in ("fr1_eval_shipped", "fr1_eval_finetuned"):
        res = json.loads((tmp_path / d / "results.json").read_text())
        assert res["_meta"]["pose_only_episodes"] == 1 and np.isfinite(res["voxel-render"]["all"]["psnr"]["mean"])
    assert (tmp_path / "runs/fr1_finetune/model/model.safetensors").is_file()
    assert (tmp_path / "fr1_demo/demo.mp4").stat().st_size > 0 and (tmp_path / "fr1_test_map/map.ply").is_file()


def test_training_clips_of_another_aspect_ratio_are_centre_cropped():
    cfg = from_preset("micro")  # 16x16 frames
    rng = np.random.default_rng(0)
    F_, H, W = cfg.frames + 1, 24, 32
    K = np.array([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]])
    clip = Clip(rgb=rng.integers(0, 256, (F_, H, W, 3), dtype=np.uint8), depth=rng.uniform(1, 3, (F_, H, W)).astype(np.float32),
                poses=np.repeat(np.eye(4)[None], F_, 0), K=K, history_rgb=np.zeros((0, H, W, 3), np.uint8),
                history_depth=np.zeros((0, H, W), np.float32), history_poses=np.zeros((0, 4, 4)),
                revisit_share=0.0, episode=0)
    rgb, depth, poses, Kt = clip_tensors(clip, cfg)
    want_rgb, want_depth, want_K = fit_frames(clip.rgb, clip.depth, K, 16, 16)
    assert rgb.shape == (F_, 3, 16, 16) and np.array_equal(rgb.permute(0, 2, 3, 1).numpy(), want_rgb)
    assert np.array_equal(depth.numpy(), want_depth)
    np.testing.assert_allclose(Kt.numpy(), np.asarray(want_K), rtol=1e-6)
    assert abs(float(Kt[0, 0]) - float(Kt[1, 1])) < 1e-5, "a centre crop keeps square pixels square"


def test_training_memory_of_another_aspect_ratio_uses_the_targets_camera():
    """The clip's memory is built from history frames cropped like its targets, so the map is read
    with the same intrinsics the targets are generated with."""
    from pewm.model import MemoryBuilder
    from pewm.train.data import clip_memory

    cfg = from_preset("micro", reader="voxel-render")  # 16x16
    rng = np.random.default_rng(1)
    F_, H, W, M = cfg.frames + 1, 24, 32, 3
    K = np.array([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]])
    hist_rgb = rng.integers(0, 256, (M, H, W, 3), dtype=np.uint8)
    hist_depth = rng.uniform(1, 3, (M, H, W)).astype(np.float32)
    hist_poses = np.repeat(np.eye(4)[None], M, 0)
    clip = Clip(rgb=rng.integers(0, 256, (F_, H, W, 3), dtype=np.uint8), depth=rng.uniform(1, 3, (F_, H, W)).astype(np.float32),
                poses=np.repeat(np.eye(4)[None], F_, 0), K=K, history_rgb=hist_rgb, history_depth=hist_depth,
                history_poses=hist_poses, revisit_share=0.0, episode=0)
    b = MemoryBuilder(cfg)
    got = clip_memory(clip, b)
    r, d, Kf = fit_frames(hist_rgb, hist_depth, K, 16, 16)
    want = b.from_history(r, d, hist_poses, np.asarray(Kf), clip.poses[0], clip.poses[1:])
    assert torch.equal(got.rendered, want.rendered) and float(got.rendered[:, :, 4].mean()) > 0.5
    stretched = b.from_history(hist_rgb, hist_depth, hist_poses, K, clip.poses[0], clip.poses[1:])
    assert not torch.equal(got.rendered, stretched.rendered), "not the old stretched camera"
