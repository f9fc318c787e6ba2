"""Issue #12: a benchmark that cannot be won by copying or by blur.

No-model baselines (``render-only``, ``nearest-frame``), cut protocols (``revisit`` / ``explore`` /
``uniform``), the PSNR of the mean MSE and the sharpness ratio, bootstrap intervals over episodes,
and the leak guard: the benchmark's memory receives exactly the history frames and the model's own
generations, never a target frame, in every mode."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import pewm.eval.benchmark as bench
from pewm.cli.main import app
from pewm.eval.aggregate import BootstrapConfig, honest_stats
from pewm.eval.baselines import (BASELINE_MODES, fill_from_render, nearest_frame, nearest_history_frames,
                                 pose_distance, render_builder, render_only)
from pewm.eval.benchmark import BenchmarkConfig, default_modes, load_episodes, memory_modes, run_benchmark
from pewm.eval.cuts import choose_cut, cut_candidates, uniform_cut
from pewm.eval.metrics import gradient_magnitude, mse, psnr, sharpness
from pewm.eval.report import aggregate
from pewm.model import MemoryBuilder, SamplingConfig, WorldModel
from pewm.model.testing import torch_threads

ALL_MODES = ("voxel-render", "frames", "voxel-xattn", "none", "render-only", "nearest-frame", "render-layout")


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory):
    """A micro voxel-render model directory with frames and voxel-xattn reader weights beside it
    (non-zero reader weights: every memory changes the output)."""
    root = tmp_path_factory.mktemp("honest_models")
    torch.manual_seed(0)
    m = WorldModel.from_preset("micro", reader="voxel-render")
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("denoiser.reader.") or n.startswith("denoiser.final."):
                p.normal_(0, 0.05)
    m.save_pretrained(root / "main")
    shared = {k: v for k, v in m.state_dict().items() if not k.startswith("denoiser.reader.")}
    for reader in ("frames", "voxel-xattn"):
        f = WorldModel.from_preset("micro", reader=reader)
        f.load_state_dict(shared, strict=False)
        with torch.no_grad():
            for n, p in f.named_parameters():
                if n.startswith("denoiser.reader."):
                    p.normal_(0, 0.05)
        f.save_reader(root / "main")
    return root / "main"


def _pose(x=0.0, y=0.0, yaw=0.0):
    c, s = np.cos(yaw), np.sin(yaw)
    fwd, right = np.array([c, s, 0.0]), np.array([s, -c, 0.0])
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = right, np.cross(fwd, right), fwd
    T[:3, 3] = (x, y, 1.25)
    return T


# -- baselines --------------------------------------------------------------------------------------


def test_pose_distance_and_nearest_frame():
    hist = np.stack([_pose(0, 0, 0), _pose(1, 0, 0), _pose(0, 0, np.pi / 2), _pose(1, 0, 0)])
    d = pose_distance(hist[:1], hist, rotation_weight=2.0)
    assert np.allclose(d[0], [0.0, 1.0, np.pi, 1.0])
    # the target at (0.9, 0) looking +x: frames 1 and 3 tie (identical poses) -> the latest, 3
    targets = np.stack([_pose(0.9, 0, 0), _pose(0, 0, 1.4), _pose(0.4, 0, 0.3)])
    assert list(nearest_history_frames(hist, targets, 1.0)) == [3, 2, 0]
    # rotation weight 0: only the camera centre counts
    assert nearest_history_frames(hist, targets[1:2], 0.0)[0] == 2  # (0, 0): frames 0 and 2 tie -> 2
    rgb = np.arange(4)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3).astype(np.uint8)
    depth = np.arange(1, 5, dtype=np.float32)[:, None, None].repeat(8, 1).repeat(8, 2)
    g = nearest_frame(rgb, depth, hist, targets)
    assert g["rgb"].shape == (3, 8, 8, 3) and g["rgb"].dtype == np.uint8 and g["depth"].dtype == np.float32
    assert [int(g["rgb"][i, 0, 0, 0]) for i in range(3)] == [3, 2, 0] and float(g["depth"][0, 0, 0]) == 4.0
    with pytest.raises(ValueError, match="history frame"):
        nearest_history_frames(hist[:0], targets)


def test_fill_from_render_uses_only_the_render():
    r = torch.zeros(3, 5, 4, 4)
    r[0, :3, :2] = torch.tensor([0.2, 0.4, 0.6])[:, None, None]  # view 0: top half covered
    r[0, 3, :2], r[0, 4, :2] = 2.0, 1.0
    r[1, :3, :, :1] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # view 1: one column covered
    r[1, 3, :, :1], r[1, 4, :, :1] = 4.0, 1.0
    rgb, depth = fill_from_render(r)  # view 2: nothing covered -> the mean over all covered pixels
    assert rgb.dtype == np.uint8 and depth.dtype == np.float32
    assert (rgb[0] == np.round(np.array([0.2, 0.4, 0.6]) * 255)).all() and (depth[0] == 2.0).all()
    assert (rgb[1] == [255, 0, 0]).all() and (depth[1] == 4.0).all()
    allmean = (8 * np.array([0.2, 0.4, 0.6]) + 4 * np.array([1.0, 0.0, 0.0])) / 12
    assert (rgb[2] == np.round(allmean * 255)).all() and np.allclose(depth[2], (8 * 2 + 4 * 4) / 12)
    # an empty render: mid-grey and the history's mean valid depth
    rgb, depth = fill_from_render(torch.zeros(2, 5, 4, 4), history_depth=np.array([[[0.0, 3.0], [5.0, np.inf]]]))
    assert (rgb == 128).all() and np.allclose(depth, 4.0)
    with pytest.raises(ValueError, match=r"\(H, 5, h, w\)"):
        fill_from_render(torch.zeros(2, 4, 4, 4))


def test_render_only_is_the_voxel_render_readers_render(small_dataset, micro_dir):
    """render-only renders the history's map exactly as the voxel-render reader's memory does."""
    data, _ = small_dataset
    model = WorldModel.from_pretrained(micro_dir)
    e = load_episodes(BenchmarkConfig(data=str(data), split="all", horizon=4, min_history=8), 16)[0]
    c, targets = e.cut, bench.future_poses(e, 4)
    builder = render_builder(model)
    g = render_only(builder, e.frames_rgb[:c + 1], e.frames_depth[:c + 1], e.poses[:c + 1], e.K, targets)
    ref = MemoryBuilder.for_model(model).from_history(e.frames_rgb[:c + 1], e.frames_depth[:c + 1], e.poses[:c + 1],
                                                      e.K, e.poses[c], targets).rendered[0]
    cov = ref[:, 4].numpy() > 0.5
    assert cov.mean() > 0.3 and np.array_equal(g["coverage"], cov)
    want = np.round(ref[:, :3].permute(0, 2, 3, 1).double().numpy().clip(0, 1) * 255)
    assert np.array_equal(g["rgb"][cov], want[cov]) and np.allclose(g["depth"][cov], ref[:, 3].numpy()[cov])
    # a model with another reader: the voxel-render builder with that model's memory settings
    other = WorldModel.from_pretrained(micro_dir, reader="frames")
    assert render_builder(other).reader == "voxel-render" and other.config.reader == "frames"
    with pytest.raises(ValueError, match="voxel-render memory builder"):
        render_only(MemoryBuilder.for_model(other), e.frames_rgb[:c + 1], e.frames_depth[:c + 1], e.poses[:c + 1],
                    e.K, targets)


# -- metrics and aggregation ------------------------------------------------------------------------


def test_mse_and_sharpness():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    blur = ((gt[:, :-1, :-1].astype(np.float64) + gt[:, 1:, :-1] + gt[:, :-1, 1:] + gt[:, 1:, 1:]) / 4)
    blurred = gt.copy()
    blurred[:, :-1, :-1] = np.round(blur).astype(np.uint8)
    assert np.all(mse(gt, gt) == 0) and np.all(psnr(gt, gt) == 100.0)
    assert np.allclose(psnr(blurred, gt), 10 * np.log10(1 / mse(blurred, gt)))
    assert np.allclose(sharpness(gt, gt), 1.0) and np.all(sharpness(blurred, gt) < 0.7)
    flat = np.full((1, 16, 16, 3), 0.5)
    assert gradient_magnitude(flat)[0] == 0.0 and np.isnan(sharpness(gt[:1], flat)[0])
    assert np.all(sharpness(gt, blurred) > 1.0)  # noisier than the truth


def _records(rng, n_eps, per_ep, offset=0.0):
    ps = rng.normal(20, 2, n_eps * per_ep) + offset
    return {"psnr": ps, "mse": 10 ** (-ps / 10), "grad_pred": rng.uniform(0.5, 1, n_eps * per_ep),
            "grad_gt": np.ones(n_eps * per_ep)}


def test_honest_stats_bootstrap_and_gains():
    rng = np.random.default_rng(1)
    E, F = 6, 4
    ep = np.repeat(np.arange(E), F)
    masks = [np.arange(E * F) % 2 == 0, np.arange(E * F) % 2 == 0]
    per_seed = []
    for _ in range(2):
        a = _records(rng, E, F)
        b = {k: v.copy() for k, v in a.items()}
        b["psnr"] = a["psnr"] + 1.5  # mode b = mode a + 1.5 dB on every frame
        per_seed.append({"none": a, "b": b, "render-only": _records(rng, E, F)})
    h = honest_stats(per_seed, masks, ep, E, BootstrapConfig(draws=300, seed=0))
    agg = aggregate(per_seed, masks)
    for m in ("none", "b"):
        for c in ("revisit", "novel", "all"):
            lo, hi = h[m][c]["psnr"]["ci95"]
            assert lo <= agg[m][c]["psnr"]["mean"] <= hi
            pm = h[m][c]["psnr_mse"]
            assert pm["seeds"] == 2 and pm["frames"] == 2 * {"all": E * F}.get(c, E * F // 2)
            assert pm["ci95"][0] <= pm["mean"] <= pm["ci95"][1]
    # paired gain: exactly 1.5 dB on every draw; none has no gain over itself
    g = h["b"]["all"]["gain_over_none"]["psnr"]
    assert abs(g["mean"] - 1.5) < 1e-9 and np.allclose(g["ci95"], [1.5, 1.5])
    assert "gain_over_none" not in h["none"]["all"] and "gain_over_render-only" in h["none"]["all"]
    # PSNR of the mean MSE: a pixel-identical frame does not dominate
    s = {"psnr": np.array([100.0, 10.0]), "mse": np.array([0.0, 0.1]), "grad_pred": np.ones(2), "grad_gt": np.ones(2)}
    h = honest_stats([{"x": s}], [np.ones(2, bool)], np.array([0, 1]), 2, BootstrapConfig(draws=0))
    assert abs(h["x"]["all"]["psnr_mse"]["mean"] - 10 * np.log10(1 / 0.05)) < 1e-9  # 13.0 dB, not 55 dB
    assert h["x"]["all"]["psnr_mse"]["ci95"] is None and h["x"]["novel"]["psnr_mse"]["mean"] is None
    with pytest.raises(ValueError, match="--bootstrap"):
        honest_stats([{"x": s}], [np.ones(2, bool)], np.array([0, 1]), 2, BootstrapConfig(draws=-1))


# -- cut protocols ----------------------------------------------------------------------------------


def _turning_episode():
    # 0..8 look +x, 9..16 -x, 17..24 +x again, 25..32 +y (as test_choose_cut_prefers_revisits)
    poses = np.stack([_pose(yaw=0.0)] * 9 + [_pose(yaw=np.pi)] * 8 + [_pose(yaw=0.0)] * 8 + [_pose(yaw=np.pi / 2)] * 8)
    depth = np.full((33, 16, 16), 3.0, np.float32)
    K = np.array([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]])
    return depth, poses, K


def test_cut_protocols():
    depth, poses, K = _turning_episode()
    assert choose_cut(depth, poses, K, horizon=8, min_history=8)[0] == 16  # revisit: the default
    cut, frac = choose_cut(depth, poses, K, horizon=8, min_history=8, protocol="explore")
    assert cut in (8, 24) and np.nanmean(frac) < 0.2  # followed by unseen views
    cands = cut_candidates(33, 8, 8)
    assert cands == [8, 16, 24]
    # uniform: seeded per (seed, episode), from the episode's length alone
    cuts = [uniform_cut(33, 8, 8, seed=s, episode=i) for s in range(4) for i in range(8)]
    assert set(cuts) <= set(cands) and len(set(cuts)) > 1
    assert uniform_cut(33, 8, 8, seed=3, episode=5) == uniform_cut(33, 8, 8, seed=3, episode=5)
    other = np.full_like(depth, 7.0)
    assert (choose_cut(depth, poses, K, 8, 8, protocol="uniform", seed=2, episode=1)[0]
            == choose_cut(other, poses[::-1].copy(), K, 8, 8, protocol="uniform", seed=2, episode=1)[0])
    with pytest.raises(ValueError, match="--cuts"):
        choose_cut(depth, poses, K, 8, 8, protocol="sideways")
    with pytest.raises(ValueError, match="too short"):
        cut_candidates(20, 16, 8)


# -- the benchmark ------------------------------------------------------------------------------------


def test_baselines_are_default_modes_and_need_no_model(small_dataset, micro_dir, tmp_path):
    assert set(BASELINE_MODES) <= set(memory_modes())
    assert default_modes(micro_dir) == ("voxel-render", "none", "render-only", "nearest-frame", "render-layout")
    data, _ = small_dataset
    runner = CliRunner()
    out = tmp_path / "e"
    r = runner.invoke(app, ["eval", "--data", str(data), "--model", str(micro_dir), "--out", str(out), "--split", "all",
                            "--horizon", "4", "--min-history", "8", "--seeds", "2", "--sampling-steps", "2",
                            "--videos", "1", "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert [k for k in res if k != "_meta"] == ["voxel-render", "none", "render-only", "nearest-frame", "render-layout"]
    assert res["_meta"]["cut_protocol"] == "revisit" and res["_meta"]["bootstrap"]["draws"] == 200
    for m in BASELINE_MODES:  # deterministic: the same frames for every seed
        assert res[m]["all"]["psnr"]["std"] == 0.0 and res[m]["all"]["psnr"]["seeds"] == 2
        assert np.isfinite(res[m]["all"]["psnr_mse"]["mean"]) and res[m]["all"]["sharpness"]["mean"] > 0
    g = res["voxel-render"]["all"]["gain_over_render-only"]["psnr"]
    assert abs(g["mean"] - (res["voxel-render"]["all"]["psnr"]["mean"] - res["render-only"]["all"]["psnr"]["mean"])) < 1e-9
    assert g["ci95"][0] <= g["mean"] <= g["ci95"][1]
    md = (out / "results.md").read_text()
    assert "Against copying and blur" in md and "gain over `render-only`" in md and "sharpness novel" in md
    assert "`nearest-frame`" in md and "`render-layout`" in md and "cut_protocol: revisit" in md
    # render-layout is render-only with other depth: the same RGB
    assert res["render-layout"]["all"]["psnr"]["mean"] == res["render-only"]["all"]["psnr"]["mean"]
    # only baselines: no model run at all, yet a full table
    r = runner.invoke(app, ["eval", "--data", str(data), "--model", str(micro_dir), "--out", str(tmp_path / "b"),
                            "--split", "all", "--horizon", "4", "--min-history", "8", "--seeds", "1", "--videos", "0",
                            "--memory", "render-only,nearest-frame,render-layout"])
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    for m in BASELINE_MODES:
        assert b[m]["all"]["psnr"]["mean"] == res[m]["all"]["psnr"]["mean"]


def test_cut_protocols_in_the_benchmark(small_dataset, micro_dir, tmp_path):
    data, _ = small_dataset
    runs = {}
    for prot in ("revisit", "explore", "uniform"):
        cfg = BenchmarkConfig(data=str(data), out=str(tmp_path / prot), model=str(micro_dir), split="all",
                              modes=("none", "render-only"), seeds=1, horizon=4, min_history=8, videos=0,
                              sampling=SamplingConfig(steps=1), cuts=prot, cut_seed=3,
                              bootstrap=BootstrapConfig(draws=50))
        runs[prot] = run_benchmark(cfg)["_meta"]
        eps = load_episodes(cfg, 16)
        assert runs[prot]["cuts"] == [e.cut for e in eps] and runs[prot]["cut_protocol"] == prot
    assert runs["explore"]["novel_frames"] >= runs["uniform"]["novel_frames"]
    assert runs["explore"]["novel_frames"] >= runs["revisit"]["novel_frames"]
    assert runs["explore"]["novel_frames"] > 0 and runs["uniform"]["cut_seed"] == 3
    assert "cut_seed" not in runs["revisit"]


def test_eval_cli_rejects_bad_honest_options(small_dataset, micro_dir, tmp_path):
    data, _ = small_dataset
    runner = CliRunner()
    base = ["eval", "--data", str(data), "--model", str(micro_dir), "--out", str(tmp_path / "e")]
    for extra, culprit in ((["--cuts", "sideways"], "--cuts"), (["--bootstrap", "-1"], "--bootstrap"),
                           (["--cut-seed", "-2", "--cuts", "uniform"], "--cut-seed"),
                           (["--mode-model", "render-only=x"], "--mode-model")):
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 2 and culprit in r.output and "Traceback" not in r.output, (extra, r.output)
    assert not (tmp_path / "e").exists()


# -- the leak guard -----------------------------------------------------------------------------------


def test_memory_never_receives_a_target_frame(small_dataset, micro_dir, tmp_path, monkeypatch):
    """Every frame any mode fuses into a memory is a history frame ``0..cut`` (all of them, once per
    rollout, for the modes that read a map or frames) or one of the model's own generations; no
    target frame ever reaches a memory, the model's conditioning, or a no-model mode's output.
    Target frames are replaced by noise images (after the cuts and labels are chosen), so a leak
    could not hide behind a target equal to a history frame."""
    data, _ = small_dataset
    load = bench.load_episodes
    seen: dict = {}

    def marked(cfg, res):
        eps = load(cfg, res)
        rng = np.random.default_rng(0)
        for e in eps:
            e.frames_rgb = e.frames_rgb.copy()
            e.frames_depth = e.frames_depth.copy()
            n = len(e.frames_rgb) - e.cut - 1
            e.frames_rgb[e.cut + 1:] = rng.integers(0, 256, (n, *e.frames_rgb.shape[1:]), dtype=np.uint8)
            e.frames_depth[e.cut + 1:] = rng.uniform(0.5, 5.0, (n, *e.frames_depth.shape[1:])).astype(np.float32)
        seen["episodes"] = eps
        return eps

    fused, cond, generated = [], [], []
    fuse = MemoryBuilder.fuse

    def recording_fuse(self, store, rgb, depth, K, poses):
        fused.extend((np.asarray(rgb[i]).tobytes(), np.asarray(depth[i]).tobytes()) for i in range(len(rgb)))
        return fuse(self, store, rgb, depth, K, poses)

    sample = WorldModel.sample_frames

    def recording_sample(self, rgb, depth, *a, **kw):
        cond.extend(torch.round(rgb * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()[i].tobytes()
                    for i in range(len(rgb)))
        return sample(self, rgb, depth, *a, **kw)

    roll = bench.rollout

    def recording_rollout(*a, **kw):
        res = roll(*a, **kw)
        generated.extend(res.rgb[:, 1:].reshape(-1, *res.rgb.shape[2:]).numpy()[i].tobytes()
                         for i in range(res.rgb.shape[0] * (res.rgb.shape[1] - 1)))
        return res

    monkeypatch.setattr(bench, "load_episodes", marked)
    monkeypatch.setattr(MemoryBuilder, "fuse", recording_fuse)
    monkeypatch.setattr(WorldModel, "sample_frames", recording_sample)
    monkeypatch.setattr(bench, "rollout", recording_rollout)
    baseline_out = []
    base = bench.baseline_mode

    def recording_baseline(*a, **kw):
        out = base(*a, **kw)
        baseline_out.extend(out)
        return out

    monkeypatch.setattr(bench, "baseline_mode", recording_baseline)

    for mode in ALL_MODES:
        fused.clear(), cond.clear(), generated.clear(), baseline_out.clear()
        cfg = BenchmarkConfig(data=str(data), out=str(tmp_path / mode), model=str(micro_dir), modes=(mode,), seeds=2,
                              split="all", horizon=4, min_history=8, batch=2, sampling=SamplingConfig(steps=1),
                              videos=0, bootstrap=BootstrapConfig(draws=10))
        run_benchmark(cfg)
        eps = seen["episodes"]
        assert len(eps) == 3
        history = Counter(e.frames_rgb[t].tobytes() for e in eps for t in range(e.cut + 1))
        history_depth = {e.frames_depth[t].tobytes() for e in eps for t in range(e.cut + 1)}
        targets = {e.frames_rgb[t].tobytes() for e in eps for t in range(e.cut + 1, len(e.frames_rgb))}
        target_depth = {e.frames_depth[t].tobytes() for e in eps for t in range(e.cut + 1, len(e.frames_rgb))}
        assert not targets & set(history), "the marked targets are unlike every history frame"
        gen = set(generated)
        assert not any(f in targets for f, _ in fused), mode
        assert not any(d in target_depth for _, d in fused), mode
        assert all(f in history or f in gen for f, _ in fused), mode
        assert all(c in history or c in gen for c in cond) and not any(c in targets for c in cond), mode
        fused_history = Counter(f for f, d in fused if f in history and d in history_depth)
        if mode == "none" or mode == "nearest-frame":
            assert fused_history == Counter(), mode  # nothing is fused
        elif mode in ("render-only", "render-layout"):
            assert fused_history == history, mode  # once: the same frames for every seed
        else:  # every history frame 0..cut, once per rollout (2 seeds), and generated frames
            assert fused_history == Counter({k: 2 * v for k, v in history.items()}), mode
            assert len(gen) and any(f in gen for f, _ in fused), mode
        if mode == "nearest-frame":
            assert len(baseline_out) == 3
            assert all(g["rgb"][i].tobytes() in history for g in baseline_out for i in range(len(g["rgb"])))
