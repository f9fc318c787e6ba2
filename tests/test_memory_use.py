"""``benchmarks/memory_use.py``: the loss with the memory given vs dropped, paired over the same noise."""

import json
import sys

import numpy as np
import pytest
import torch

from pewm.model import WorldModel, from_preset
from pewm.model.testing import torch_threads


@pytest.fixture(scope="module")
def memory_use(load_benchmark):
    return load_benchmark("memory_use")


def _model(seed=0) -> WorldModel:
    """A micro model with a random backbone (its zero-initialised output layer too, so the output
    depends on the input) and the reader as initialised: zero, the memory changes nothing yet."""
    torch.manual_seed(seed)
    model = WorldModel(from_preset("micro", reader="voxel-render")).eval()
    with torch.no_grad():
        for p in model.backbone_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_a_reader_that_reads_nothing_gains_nothing_and_one_that_reads_does(memory_use, small_dataset):
    path, _ = small_dataset
    with torch_threads(1):
        model = _model()
        clips = memory_use.fixed_clips(str(path), None, model.config.frames, 4, seed=0, history=6)
        g, d = memory_use.paired_losses(model, clips, draws=2, seed=0, batch=3)
        assert g.shape == d.shape == (4,)
        np.testing.assert_array_equal(g, d)  # zero-initialised reader: the memory changes nothing
        s = memory_use.summarise(g, d)
        assert s["gain"] == 0.0 and s["gain_ci95"] == [0.0, 0.0] and s["clips_helped"] == 0.0
        with torch.no_grad():  # a reader that reads its render
            model.reader.render_patch.weight.normal_(0, 0.5)
        g2, d2 = memory_use.paired_losses(model, clips, draws=2, seed=0, batch=3)
        np.testing.assert_allclose(d2, d, rtol=1e-5)  # the dropped memory is the same null input
        assert np.abs(g2 - d2).max() > 1e-4
        again = memory_use.paired_losses(model, clips, draws=2, seed=0, batch=3)
        np.testing.assert_array_equal(again[0], g2)  # the same draws: reproducible


def test_main_measures_every_checkpoint_of_a_run_and_a_model_dir(memory_use, small_dataset, tmp_path, monkeypatch):
    path, _ = small_dataset
    model = _model()
    run = tmp_path / "run"
    for step in (2, 4):
        ck = run / "checkpoints" / f"step_{step:08d}"
        model.save_pretrained(ck / "ema")
        (ck / "state.json").write_text("{}")
    (run / "checkpoints" / "step_00000006").mkdir()  # unfinished (no state.json): skipped
    single = model.save_pretrained(tmp_path / "single")
    out = tmp_path / "mu.json"
    monkeypatch.setattr(sys, "argv", ["memory_use.py", "--model", str(run), "--model", str(single), "--data", str(path),
                                      "--split", "val", "--clips", "3", "--draws", "1", "--threads", "1",
                                      "--timesteps", "10,900", "--out", str(out)])
    memory_use.main()
    r = json.loads(out.read_text())
    assert [row["step"] for row in r["models"][str(run)]] == [2, 4]
    assert [row["step"] for row in r["models"][str(single)]] == [None]
    assert all(row["reader"] == "voxel-render" and row["gain"] == 0.0 for rows in r["models"].values() for row in rows)
    rows = r["models"][str(run)]
    assert "by_timestep" not in rows[0] and set(rows[-1]["by_timestep"]) == {"10", "900"}  # last weights only
    assert sum(b["clips"] for b in rows[0]["by_share"].values()) == 3
    # the same weights on the same clips and noise: a paired difference of exactly zero
    assert r["versus_first"][str(single)]["given"] == {"mean": 0.0, "ci95": [0.0, 0.0]}


def test_versus_first_is_paired_clip_by_clip(memory_use):
    base = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0, 2.0]))
    better = (base[0] - np.array([0.1, 0.2, 0.1, 0.2]), base[1] + 1.0)
    v = memory_use.versus_first({"a": base, "b": better}, boot=500)
    assert set(v) == {"b"}
    assert v["b"]["given"]["mean"] == pytest.approx(-0.15)
    lo, hi = v["b"]["given"]["ci95"]
    assert -0.2 - 1e-9 <= lo <= -0.15 <= hi <= -0.1 + 1e-9  # paired: the clips' spread (1..4) does not enter
    assert v["b"]["dropped"]["mean"] == pytest.approx(1.0)


def test_timestep_losses_are_fixed_noise_levels_and_share_bins_partition_the_clips(memory_use, small_dataset):
    path, _ = small_dataset
    with torch_threads(1):
        model = _model()
        clips = memory_use.fixed_clips(str(path), None, model.config.frames, 4, seed=0, history=6)
        tl = memory_use.timestep_losses(model, clips, [5, 500, 995], seed=0, batch=3)
        assert tl["given"].shape == tl["dropped"].shape == (4, 3)
        np.testing.assert_array_equal(tl["given"], tl["dropped"])  # zero-initialised reader
        assert len({round(float(v), 6) for v in tl["given"].mean(0)}) == 3  # the noise level matters
        again = memory_use.timestep_losses(model, clips, [5, 500, 995], seed=0, batch=2)
        np.testing.assert_allclose(again["given"][:2], tl["given"][:2], rtol=1e-5)  # the first batch: same noise
    shares = np.array([0.0, 0.5, 0.79, 1.0])
    b = memory_use.by_share(np.arange(4.0), np.arange(4.0) + 1, shares)
    assert [v["clips"] for v in b.values()] == [1, 2, 1]
    assert b["0.5-0.8"]["given"] == pytest.approx(1.5) and b["0.8-1"]["dropped"] == pytest.approx(4.0)
