"""``benchmarks/imagined_trust.py``: the loss under the truth / start / own-imagination / no memory,
paired over the same noise, on clips that leave room for the rollout."""

import json
import sys

import numpy as np
import pytest
import torch

from pewm.data.clips import ClipConfig, ClipSampler
from pewm.model import WorldModel, from_preset
from pewm.model.testing import torch_threads


@pytest.fixture(scope="module")
def trust(load_benchmark):
    load_benchmark("memory_use")  # (imported by name from the benchmarks folder)
    return load_benchmark("imagined_trust")


def _model() -> WorldModel:
    torch.manual_seed(0)
    model = WorldModel(from_preset("micro", reader="voxel-render")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # backbone and reader: the render changes the output
    model.memory_build = {"imagined_fuse_delay_chunks": 1}
    return model


def test_each_memory_is_what_it_says_and_the_comparison_is_paired(trust, small_dataset):
    path, _ = small_dataset
    with torch_threads(1):
        model = _model()
        sampler = ClipSampler(path, "train", ClipConfig(future_frames=model.config.frames))
        clips = trust.clips_with_room(sampler, model.config.frames, 1, 3, seed=0)
        for c in clips:  # the rollout starts (1 + 1) chunks of 2 frames before the clip: inside the episode
            assert c.frame_indices[0] - 4 * (c.frame_indices[1] - c.frame_indices[0]) >= 0
        mems = trust.memories(model, sampler, clips, steps=1, seed=0)
        assert len(mems["start"]) == len(mems["imagined"]) == 3
        # the imagined chunk adds surfaces to the start's map where it was empty; it never removes any
        for s, i in zip(mems["start"], mems["imagined"]):
            cov_s, cov_i = s.rendered[:, :, 4] > 0.5, i.rendered[:, :, 4] > 0.5
            assert bool((cov_i | ~cov_s).all())
        assert any(bool((i.rendered[:, :, 4] > s.rendered[:, :, 4]).any())
                   for s, i in zip(mems["start"], mems["imagined"]))
        mu = sys.modules["memory_use"]
        losses = mu.variant_losses(model, clips, mems, draws=2, seed=0)
        assert set(losses) == set(trust.VARIANTS) and all(v.shape == (3,) for v in losses.values())
        g, d = mu.paired_losses(model, clips, draws=2, seed=0)
        np.testing.assert_allclose(losses["truth"], g, rtol=1e-6)  # "truth" is training's memory
        np.testing.assert_allclose(losses["dropped"], d, rtol=1e-6)
        assert not np.allclose(losses["start"], losses["imagined"])
    p = trust.paired(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.0, 2.0]))
    assert p["mean"] == pytest.approx(0.5) and p["ci95"][0] <= 0.5 <= p["ci95"][1]


def test_main_writes_one_row_per_model(trust, small_dataset, tmp_path, monkeypatch):
    path, _ = small_dataset
    d = _model().save_pretrained(tmp_path / "m")
    out = tmp_path / "t.json"
    monkeypatch.setattr(sys, "argv", ["imagined_trust.py", "--model", str(d), "--data", str(path), "--split", "train",
                                      "--clips", "2", "--draws", "1", "--steps", "1", "--threads", "1", "--out", str(out)])
    trust.main()
    r = json.loads(out.read_text())
    row = r["models"][str(d)]
    assert r["delay_chunks"] == 1 and r["clips"] == 2
    assert row["imagined_helps"]["mean"] == pytest.approx(row["loss_start"] - row["loss_imagined"], abs=1e-6)
