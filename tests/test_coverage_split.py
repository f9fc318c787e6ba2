"""``benchmarks/coverage_split.py``: errors split by the map render's coverage, and the composite
(render where it covers, the model elsewhere)."""

import json
import sys

import numpy as np
import pytest
import torch

from pewm.model import WorldModel, from_preset


@pytest.fixture(scope="module")
def split(load_benchmark):
    return load_benchmark("coverage_split")


def test_pixel_sums_split_by_coverage(split):
    gt_rgb = np.zeros((1, 2, 2, 3), np.uint8)
    pred_rgb = np.zeros_like(gt_rgb)
    pred_rgb[0, 0, 0] = 255  # one error of 1.0 on every channel, at a covered pixel
    gt_d = np.array([[[1.0, 2.0], [4.0, 0.0]]], np.float32)  # one pixel without valid truth
    pred_d = np.array([[[1.1, 3.0], [4.0, 7.0]]], np.float32)
    cover = np.array([[[True, True], [False, False]]])
    s = split.pixel_sums(pred_rgb, pred_d, gt_rgb, gt_d, cover)
    assert s["n"].tolist() == [[2, 2]] and s["se"].tolist() == [[1.0, 0.0]]
    assert s["nd"].tolist() == [[2, 1]]  # the invalid-truth pixel counts for no depth statistic
    np.testing.assert_allclose(s["ar"], [[0.1 + 0.5, 0.0]], rtol=1e-6)
    assert s["d1"].tolist() == [[1, 1]]  # 1.1 / 1 < 1.25, 3 / 2 is not


def test_composite_takes_the_render_where_it_covers(split):
    cov = np.array([[[True, False]]])
    model = {"rgb": np.full((1, 1, 2, 3), 10, np.uint8), "depth": np.full((1, 1, 2), 1.0, np.float32)}
    render = {"rgb": np.full((1, 1, 2, 3), 200, np.uint8), "depth": np.full((1, 1, 2), 3.0, np.float32),
              "coverage": cov}
    c = split.composite(model, render)
    assert c["rgb"][0, 0, 0].tolist() == [200] * 3 and c["rgb"][0, 0, 1].tolist() == [10] * 3
    assert c["depth"].tolist() == [[[3.0, 1.0]]]


def test_bootstrap_interval_brackets_the_ratio(split):
    lo, hi = split.bootstrap(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4), draws=500)
    assert lo <= 2.5 <= hi and lo >= 1.0 and hi <= 4.0


def test_main_reports_every_part_and_mode(split, small_dataset, tmp_path, monkeypatch):
    path, _ = small_dataset
    torch.manual_seed(0)
    d = WorldModel(from_preset("micro", reader="voxel-render")).save_pretrained(tmp_path / "m")
    out = tmp_path / "c.json"
    monkeypatch.setattr(sys, "argv", ["coverage_split.py", "--model", str(d), "--data", str(path), "--split", "all",
                                      "--cuts", "revisit", "--horizon", "4", "--min-history", "8",
                                      "--bootstrap", "50", "--layout-walls", "1,2", "--out", str(out)])
    with torch.no_grad():
        split.main()
    r = json.loads(out.read_text())
    classes = [c for c in ("novel", "revisit") if c in r["frames"]]
    assert classes
    for c in classes:
        shares = [r["pixels"][c][p]["pixel_share"] for p in split.PARTS]
        assert sum(shares) == pytest.approx(1.0)
        assert set(r["frames"][c]) == set(split.FRAME_MODES)
        # render-layout changes only the holes' depth: the render's RGB
        assert r["frames"][c]["render-layout"]["psnr"] == pytest.approx(r["frames"][c]["render-only"]["psnr"])
        # model-layout changes only the model's depth (the holes': covered pixels take the render's)
        assert r["frames"][c]["model-layout"]["psnr"] == pytest.approx(r["frames"][c]["model"]["psnr"])
        assert r["pixels"][c]["covered"]["model-layout"]["absrel"] == pytest.approx(
            r["pixels"][c]["covered"]["render-layout"]["absrel"])
        # the sweep at the default wall distance is the render-layout mode itself
        assert set(r["layout_walls"][c]) == {"1", "2"}
        assert r["layout_walls"][c]["2"]["absrel"] == pytest.approx(r["frames"][c]["render-layout"]["absrel"])
        lo, hi = r["frames"][c]["composite"]["psnr_minus_model"]["ci95"]
        assert np.isfinite(lo) and lo <= hi


def test_bad_wall_list_is_a_clear_error(split, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["coverage_split.py", "--data", "x", "--layout-walls", "2,-1"])
    with pytest.raises(SystemExit):
        split.main()
    assert "--layout-walls" in capsys.readouterr().err
