"""Stage-2 memories holding the model's own imagination (``--imagined-memory``, pewm.train.imagined):
the rollout it stands for, what the memory receives (history up to the start and the generated
chunk, never a later ground-truth frame), determinism, exact resume and clear errors."""

import json

import numpy as np
import pytest
import torch

from pewm.data.clips import ClipConfig, ClipSampler
from pewm.model import MemoryBuildConfig, MemoryBuilder, WorldModel
from pewm.model.testing import torch_threads
from pewm.train import Trainer, memory_options, train, train_preset
from pewm.train.data import clip_memory, collate_clips
from pewm.train.imagined import ImaginedMemoryConfig, imagined_memories, imagined_memory, rollout_start


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def sampler(small_dataset):
    root, _ = small_dataset
    return ClipSampler(root, "train", ClipConfig(future_frames=2, strides=(1, 2), history=4))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldModel.from_preset("micro", reader="voxel-render").eval()


def _builder(model, delay=1):
    return MemoryBuilder(model.config, MemoryBuildConfig(imagined_fuse_delay_chunks=delay))


def test_the_rollout_starts_one_chunk_plus_the_fusion_delay_before_the_clip(sampler):
    clip = sampler.clip(0, 20, 2)  # frames 20, 22, 24
    assert rollout_start(clip, frames=2, delay_chunks=0) == (16, 2)  # the chunk 18, 20 was imagined
    assert rollout_start(clip, frames=2, delay_chunks=1) == (12, 2)  # 14, 16 imagined; 18, 20 not fused yet
    assert rollout_start(sampler.clip(0, 3, 2), frames=2, delay_chunks=0) is None  # too early in the episode


def test_the_memory_holds_the_history_to_the_start_and_the_generated_chunk_never_a_later_truth(sampler, model,
                                                                                             monkeypatch):
    builder = _builder(model, delay=1)
    ep = sampler.episodes[0].ep
    clip = sampler.clip(0, 20, 2)
    fused, generated = [], []
    real_fuse, real_generate = builder.fuse, model.generate
    monkeypatch.setattr(builder, "fuse", lambda store, rgb, *a: (fused.append(np.array(rgb)), real_fuse(store, rgb, *a)))

    def generate(*a, **kw):
        g = real_generate(*a, **kw)
        generated.append(g)
        return g

    monkeypatch.setattr(model, "generate", generate)
    mem = imagined_memory(model, builder, sampler, clip, steps=2, generator=torch.Generator().manual_seed(0))
    assert mem is not None and len(generated) == 1
    start = sampler.clip(0, 12, 2)  # the rollout's first chunk: frames 12 -> 14, 16
    np.testing.assert_array_equal(fused[0], start.history_rgb)  # ground truth of [0, 12], as a clip's history
    assert len(fused) == 3, "then the two generated frames, one by one (novel-only fusion)"
    for i, f in enumerate(fused[1:]):
        np.testing.assert_array_equal(f[0], generated[0].rgb[0, i].numpy())
    truth_after_start = ep.rgb[13:25]
    for f in fused[1:]:
        assert not any(np.array_equal(f[0], t) for t in truth_after_start)
    # it is read at the clip's own target poses, and differs from the clip's ground-truth memory
    gt = clip_memory(clip, builder)
    assert mem.rendered.shape == gt.rendered.shape and not torch.equal(mem.rendered, gt.rendered)


def test_imagined_memories_are_drawn_from_the_data_generator_and_reproducible(sampler, model):
    builder = _builder(model, delay=0)
    clips = [sampler.clip(0, t, 1) for t in (0, 10, 20, 30)]
    a = imagined_memories(model, builder, sampler, clips, 1.0, 2, np.random.default_rng(5))
    b = imagined_memories(model, builder, sampler, clips, 1.0, 2, np.random.default_rng(5))
    assert a[0] is None, "frame 0 has no room for an earlier chunk: the ground-truth memory is kept"
    assert all(m is not None for m in a[1:])
    assert all(torch.equal(x.rendered, y.rendered) for x, y in zip(a[1:], b[1:]))
    assert imagined_memories(model, builder, sampler, clips, 0.0, 2, np.random.default_rng(5)) == [None] * 4
    batch = collate_clips(clips, model.config, builder, a)
    assert torch.equal(batch.memory.rendered[1], a[1].rendered[0])
    assert torch.equal(batch.memory.rendered[0], clip_memory(clips[0], builder).rendered[0])
    with pytest.raises(ValueError, match="2 memories for 4 clips"):
        collate_clips(clips, model.config, builder, a[:2])


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("init") / "model"
    model.save_pretrained(d)
    return d


def _cfg(root, init, **kw):
    base = dict(data=str(root), steps=4, checkpoint_every=2, sample_every=1000, warmup_steps=1, stage="memory",
                reader="voxel-render", init=str(init), imagined_memory=1.0, imagined_memory_steps=2,
                memory=MemoryBuildConfig(imagined_fuse_delay_chunks=0).to_dict())
    return train_preset("micro", **{**base, **kw})


def test_training_with_imagined_memories_logs_their_share_and_resumes_exactly(small_dataset, init_dir, tmp_path):
    root, _ = small_dataset
    full, part = tmp_path / "full", tmp_path / "part"
    train(_cfg(root, init_dir), full, progress=False)
    train(_cfg(root, init_dir, steps=2), part, progress=False)
    train(_cfg(root, init_dir), part, resume=True, progress=False)
    rec = [json.loads(ln) for ln in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rec] == [json.loads(ln)["loss"] for ln in (part / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 < r["imagined_share"] <= 1.0 for r in rec)
    a, b = WorldModel.from_pretrained(full / "model"), WorldModel.from_pretrained(part / "model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_imagined_memories_change_what_stage2_reads(small_dataset, init_dir, tmp_path):
    root, _ = small_dataset
    with_, without = (Trainer(_cfg(root, init_dir, imagined_memory=p), tmp_path / str(p), progress=False)
                      for p in (1.0, 0.0))
    (bw,), _ = with_.next_batches()
    (bo,), _ = without.next_batches()  # the same clips: the picks are drawn after them
    assert torch.equal(bw.rgb, bo.rgb) and not torch.equal(bw.memory.rendered, bo.memory.rendered)


def test_bad_settings_are_clear_errors(small_dataset, init_dir):
    root, _ = small_dataset
    with pytest.raises(ValueError, match=r"--imagined-memory .* must be in \[0, 1\], got 1.5"):
        _cfg(root, init_dir, imagined_memory=1.5).validate()
    with pytest.raises(ValueError, match="--imagined-memory-steps .* got 0"):
        _cfg(root, init_dir, imagined_memory_steps=0).validate()
    with pytest.raises(ValueError, match="--imagined-memory is for --stage memory"):
        train_preset("micro", data=str(root), imagined_memory=0.5).validate()
    assert ImaginedMemoryConfig().share == 0.0


def test_memory_options_set_the_saved_memory_settings():
    m = memory_options(MemoryBuildConfig(), {"imagined_fuse_delay_chunks": "1", "extractor": "rgb",
                                             "imagined_edge_tol": "null", "render_supersample": "2"})
    assert (m.imagined_fuse_delay_chunks, m.extractor, m.imagined_edge_tol, m.render_supersample) == (1, "rgb", None, 2)
    with pytest.raises(ValueError, match="--memory-option colour=1: unknown setting 'colour'"):
        memory_options(MemoryBuildConfig(), {"colour": "1"})
    with pytest.raises(ValueError, match="--memory-option: .*render_supersample must be an integer >= 1"):
        memory_options(MemoryBuildConfig(), {"render_supersample": "many"})
