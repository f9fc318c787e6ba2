"""Aggregation over seeds and the report writers (JSON, Markdown, PSNR plot, side-by-side video)."""

import json

import numpy as np
import pytest

from pewm import atomic
from pewm.eval.metrics import METRICS
from pewm.eval.report import (
    aggregate,
    plot_psnr_vs_step,
    side_by_side_video,
    write_results_json,
    write_results_md,
)

NAN = np.nan


def _two_seeds():
    per_seed = [
        {"map": {"psnr": np.array([10.0, 20.0, 30.0, NAN]), "src": np.array([NAN, 0.8, NAN, NAN])},
         "none": {"psnr": np.array([5.0, 5.0, 5.0, 5.0])}},
        {"map": {"psnr": np.array([20.0, 40.0, 50.0, 60.0]), "src": np.array([0.6, NAN, NAN, NAN])},
         "none": {"psnr": np.array([7.0, 7.0, 7.0, 7.0])}},
    ]
    revisit = [np.array([True, True, False, False]), np.array([True, False, False, False])]
    return per_seed, revisit


def test_aggregate_mean_std_over_seeds_with_nan_skipping():
    per_seed, revisit = _two_seeds()
    r = aggregate(per_seed, revisit)
    assert list(r) == ["map", "none"]
    assert set(r["map"]) == {"revisit", "novel", "all"}
    assert all(set(r[m][c]) == set(METRICS) for m in r for c in r[m])
    p = r["map"]["revisit"]["psnr"]  # seed values 15 and 20
    assert p["mean"] == pytest.approx(17.5) and p["std"] == pytest.approx(np.sqrt(12.5)) and p["frames"] == 3
    n = r["map"]["novel"]["psnr"]  # seed 0: 30 (NaN skipped), seed 1: 50
    assert n["mean"] == pytest.approx(40.0) and n["frames"] == 4 and n["seeds"] == 2
    a = r["map"]["all"]["psnr"]  # 20 and 42.5
    assert a["mean"] == pytest.approx(31.25) and a["frames"] == 7
    # SRC: each seed has one value, both in the revisit class
    s = r["map"]["revisit"]["src"]
    assert s["mean"] == pytest.approx(0.7) and s["frames"] == 2
    # no novel frame has an SRC value and the 'none' mode has no depth metrics: empty -> None
    assert r["map"]["novel"]["src"] == {"mean": None, "std": None, "frames": 0, "seeds": 0}
    assert r["none"]["all"]["absrel"]["mean"] is None
    assert r["none"]["revisit"]["psnr"]["std"] == pytest.approx(np.std([5.0, 7.0], ddof=1))
    # population std on request
    assert aggregate(per_seed, revisit, ddof=0)["map"]["revisit"]["psnr"]["std"] == pytest.approx(2.5)


def test_aggregate_single_seed_empty_class_and_per_mode_masks():
    per_seed, revisit = _two_seeds()
    r = aggregate(per_seed[:1], [np.zeros(4, bool)])
    assert r["map"]["revisit"]["psnr"]["mean"] is None  # a class without frames
    assert r["map"]["novel"]["psnr"] == {"mean": 20.0, "std": 0.0, "frames": 3, "seeds": 1}
    # a seed without revisit frames is left out of that class's mean
    r2 = aggregate(per_seed, [np.zeros(4, bool), revisit[1]])
    assert r2["map"]["revisit"]["psnr"] == {"mean": 20.0, "std": 0.0, "frames": 1, "seeds": 1}
    # per-mode masks
    masks = [{"map": revisit[0], "none": np.ones(4, bool)}, {"map": revisit[1], "none": np.ones(4, bool)}]
    r3 = aggregate(per_seed, masks)
    assert r3["none"]["novel"]["psnr"]["mean"] is None and r3["map"]["revisit"]["psnr"]["mean"] == 17.5


def test_aggregate_rejects_inconsistent_inputs():
    per_seed, revisit = _two_seeds()
    with pytest.raises(ValueError, match="revisit"):
        aggregate(per_seed, revisit[:1])
    with pytest.raises(ValueError, match=r"per_seed\[1\]"):
        aggregate([per_seed[0], {"map": per_seed[1]["map"]}], revisit)
    with pytest.raises(ValueError, match="shape"):
        aggregate(per_seed, [revisit[0], np.ones(3, bool)])
    with pytest.raises(ValueError, match="bool"):
        aggregate(per_seed, [revisit[0], np.ones(4)])


def _results():
    per_seed, revisit = _two_seeds()
    return aggregate(per_seed, revisit)


META = {"dataset": "houses-test", "split": "test", "seeds": [0, 1], "feature_extractor": "color_layout"}


def test_write_results_json_schema_and_atomic(tmp_path, monkeypatch):
    res = _results()
    res["map"]["all"]["ssim"]["std"] = float("nan")  # non-finite values must become null
    path = tmp_path / "out" / "results.json"
    write_results_json(path, res, META)
    doc = json.loads(path.read_text())
    assert list(doc) == ["_meta", "map", "none"]
    assert doc["_meta"]["feature_extractor"] == "color_layout" and doc["_meta"]["seeds"] == [0, 1]
    for mode in ("map", "none"):
        for c in ("revisit", "novel", "all"):
            for k in METRICS:
                assert set(doc[mode][c][k]) >= {"mean", "std", "frames"}
    assert doc["map"]["revisit"]["psnr"]["mean"] == pytest.approx(17.5)
    assert doc["map"]["all"]["ssim"]["std"] is None
    assert "NaN" not in path.read_text()

    # a failed replace leaves the previous file intact and no temporary file behind
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)  # report writers write through pewm.atomic
    with pytest.raises(OSError):
        write_results_json(path, {"other": {}}, META)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="_meta"):
        write_results_json(path, {"_meta": {}}, META)


def test_write_results_md_has_every_mode_and_header(tmp_path):
    res = _results()
    path = write_results_md(tmp_path / "results.md", res, {**META, "checkpoint": "runs/stage2"})
    text = path.read_text()
    for mode in res:
        assert f"| `{mode}` |" in text
    for h in ("PSNR↑ revisit", "SSIM↑ novel", "AbsRel↓ all", "δ1↑ all", "SRC↑ revisit"):
        assert h in text
    assert "houses-test" in text and "color_layout" in text and "checkpoint: runs/stage2" in text
    assert "17.50 ± 3.54" in text  # map / revisit / PSNR
    assert "revisit 3, novel 4, all 7" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| `map`")][0]
    assert table.count("|") == 2 + 3 * len(METRICS) and "–" in table  # empty cells are dashes


def test_plot_psnr_vs_step_writes_png(tmp_path):
    steps = np.arange(1, 9)
    curves = {"none": (steps, 20 - steps * 0.5, np.full(8, 0.3)), "map": (steps, 22 - steps * 0.2, None)}
    path = plot_psnr_vs_step(tmp_path / "psnr.png", curves)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psnr.png"]
    with pytest.raises(ValueError, match="none"):
        plot_psnr_vs_step(tmp_path / "bad.png", {"none": (steps, steps[:3])})


def test_side_by_side_video_writes_all_panels(tmp_path):
    import imageio.v2 as imageio

    T, h, w = 3, 32, 32
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 255, (T, h, w, 3), dtype=np.uint8)
    preds = {"none": rng.uniform(0, 1, (T, h, w, 3)), "map": gt}
    depths = {"gt": np.full((T, h, w), 2.0), "map": np.full((T, h, w), 2.5)}
    path = side_by_side_video(tmp_path / "cmp.mp4", gt, preds, depths=depths, labels={"map": "3D map"},
                              frame_tags=["revisit", "novel", "novel"], panel_height=64)
    assert path.stat().st_size > 0
    frames = imageio.mimread(path)
    assert len(frames) == T
    assert frames[0].shape[1] >= 3 * 64 and frames[0].shape[0] >= 2 * 64  # 3 columns, RGB over depth
    gif = side_by_side_video(tmp_path / "cmp.gif", gt, preds)
    assert gif.stat().st_size > 0
    with pytest.raises(ValueError, match="none"):
        side_by_side_video(tmp_path / "bad.mp4", gt, {"none": gt[:2]})
