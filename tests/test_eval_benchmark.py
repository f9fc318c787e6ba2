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
        assert set(saved[mode]["all"]) == {"psnr", "ssim", "absrel", "delta1", "src"}
    assert saved["_meta"]["episodes"] == 3 and saved["_meta"]["feature_extractor"] == "color_layout"
    assert saved["_meta"]["revisit_frames"] + saved["_meta"]["novel_frames"] == 3 * 4
    md = (out / "results.md").read_text()
    assert "voxel-render" in md and "frames" in md and "none" in md
    long = saved["_meta"]["long_horizon"]
    assert long["houses"] == 1 and long["returning_frames"] > 0, "the turn-away-and-back probe returns"
    assert set(long["modes"]) == {"voxel-render", "none"}
    assert np.isfinite(long["modes"]["none"]["self_psnr"]["mean"]) and "Long-horizon consistency" in md
    assert (out / "psnr_vs_step.png").stat().st_size > 0
    assert len(list((out / "videos").glob("*.mp4"))) == 1
    # with a memory that carries weights, the modes generate different frames
    assert res["voxel-render"]["all"]["psnr"]["mean"] != res["none"]["all"]["psnr"]["mean"]


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
