"""Adding a memory reader is one new module: a toy reader, defined and registered only here, goes
through stage-2 training, saving and loading, a persistent rollout and the Table-1 benchmark
without any other file of pewm naming it (docs/design.md, "Architecture")."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from pewm.eval.benchmark import BenchmarkConfig, memory_modes, run_benchmark
from pewm.model import MemoryBuilder, SamplingConfig, WorldModel
from pewm.model.readers import MemoryInput, MemoryReader, ReaderOptions, register_reader, unregister_reader
from pewm.rollout import RolloutMemory, rollout
from pewm.train import train, train_preset
from pewm.train.checkpoint import resolve_model_dir

NAME = "toy-mean-colour"


class MeanColourStore:
    """What a rollout keeps for the toy reader: the mean colour of every fused frame."""

    def __init__(self):
        self.colours: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.colours)


@dataclass(frozen=True)
class ToyOptions(ReaderOptions):
    scale: float = 1.0

    def validate(self) -> None:
        super().validate()
        if not self.scale > 0:
            self._fail("scale", "> 0")


class MeanColourReader(MemoryReader):
    """Memory = the mean colours of the last frames, one map token each (no positions needed)."""

    name = NAME
    Options = ToyOptions
    TOKENS = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.proj = nn.Linear(3, cfg.width)

    def tokenize(self, memory, batch, device, dtype):
        if memory.tokens is None:
            return self.proj(torch.zeros(batch, 0, 3, device=device, dtype=dtype)), torch.zeros(
                batch, 0, dtype=torch.bool, device=device)
        tok = memory.tokens[..., :3].to(device=device, dtype=dtype) * self.options.scale
        return self.proj(tok), memory.mask.to(device=device, dtype=torch.bool)

    @classmethod
    def new_store(cls, builder):
        return MeanColourStore()

    @classmethod
    def fuse(cls, store, rgb, depth, K, poses) -> None:
        store.colours += [f.reshape(-1, 3).mean(0) / 255.0 for f in np.asarray(rgb)]

    @classmethod
    def read_store(cls, builder, store, current_pose, target_poses, K_model) -> MemoryInput:
        dim = builder.model_cfg.memory_dim
        tokens, mask = torch.zeros(1, cls.TOKENS, dim), torch.zeros(1, cls.TOKENS, dtype=torch.bool)
        for i, c in enumerate(store.colours[-cls.TOKENS:]):
            tokens[0, i, :3] = torch.as_tensor(c, dtype=torch.float32)
            mask[0, i] = True
        return MemoryInput(tokens=tokens, positions=torch.zeros(1, cls.TOKENS, 3), mask=mask)


@pytest.fixture(scope="module")
def toy_reader():
    register_reader(MeanColourReader)
    yield MeanColourReader
    unregister_reader(NAME)


@pytest.fixture(scope="module")
def toy_run(small_dataset, tmp_path_factory, toy_reader):
    """Stage 1 (no memory), then stage 2 with the toy reader and one of its options."""
    root, _ = small_dataset
    base = dict(data=str(root), checkpoint_every=1000, sample_every=1000, warmup_steps=0, lr=3e-3, ema_decay=0.0)
    runs = tmp_path_factory.mktemp("toy")
    torch.set_num_threads(1)
    train(train_preset("micro", **base, steps=4), runs / "s1", progress=False)
    res = train(train_preset("micro", **base, steps=3, stage="memory", reader=NAME, init=str(runs / "s1"),
                             reader_options={"scale": 0.5}), runs / "s2", progress=False)
    return runs / "s2", res


def test_toy_reader_trains_saves_and_loads(toy_run):
    run, res = toy_run
    assert res.step == 3 and all(np.isfinite(res.losses))
    model = WorldModel.from_pretrained(resolve_model_dir(run))
    assert isinstance(model.reader, MeanColourReader)
    assert model.config.reader_options == {"init": "zero-gate", "scale": 0.5}
    assert json.loads((run / "config.json").read_text())["reader_options"] == {"scale": 0.5}
    # stage 2 trained the reader: its memory blocks' AdaLN (zero at initialisation) has moved
    assert float(model.reader.blocks[0].ada_video.linear.weight.detach().abs().sum()) > 0
    assert float(WorldModel(model.config).reader.blocks[0].ada_video.linear.weight.detach().abs().sum()) == 0


def test_toy_reader_options_are_validated_by_the_reader(toy_reader, small_dataset):
    root, _ = small_dataset
    with pytest.raises(ValueError, match="toy-mean-colour reader option scale must be > 0"):
        train_preset("micro", data=str(root), stage="memory", reader=NAME, init="x",
                     reader_options={"scale": 0.0}).validate()
    with pytest.raises(ValueError, match="has no option"):
        train_preset("micro", data=str(root), stage="memory", reader=NAME, init="x",
                     reader_options={"ray_query": True}).validate()


def test_toy_reader_rolls_out_with_its_own_memory(toy_run, small_dataset):
    from pewm.data import open_dataset

    run, _ = toy_run
    model = WorldModel.from_pretrained(resolve_model_dir(run)).eval()
    ep = open_dataset(small_dataset[0]).read(0)
    h = model.config.image_height
    assert ep.rgb.shape[1] != h  # the dataset is 64x64, the micro model 16x16: the memory takes any size
    builder = MemoryBuilder.for_model(model)
    mem = RolloutMemory.from_frames(builder, ep.rgb[:5], ep.depth[:5], ep.poses[:5], ep.intrinsics)
    assert isinstance(mem.store, MeanColourStore) and len(mem) == 5
    from pewm.model.frame_ops import resize_frames_uint8

    rgb, depth, K = resize_frames_uint8(ep.rgb[5:6], torch.from_numpy(ep.depth[5:6]), ep.intrinsics.matrix, h, h)
    out = rollout(model, rgb, depth, ep.poses[5:6], K.astype(np.float64), [0, 1, 2], memories=[mem],
                  sampling=SamplingConfig(steps=2, seed=0))
    assert out.rgb.shape == (1, 4, h, h, 3) and len(mem) == 5 + 1 + 3  # the start and 3 generated frames fused
    with pytest.raises(ValueError, match="needs a reader that can anchor"):
        rollout(model, rgb, depth, ep.poses[5:6], K.astype(np.float64), [0], sampling=SamplingConfig(steps=1, anchor="pixel"))


def test_toy_reader_is_a_benchmark_mode(toy_run, small_dataset, tmp_path):
    run, _ = toy_run
    assert NAME in memory_modes()
    cfg = BenchmarkConfig(data=str(small_dataset[0]), out=str(tmp_path / "eval"), model=str(run), modes=(NAME, "none"),
                          seeds=1, split="all", horizon=4, min_history=8, batch=2, videos=0,
                          sampling=SamplingConfig(steps=2))
    res = run_benchmark(cfg)
    for mode in (NAME, "none"):
        assert np.isfinite(res[mode]["all"]["psnr"]["mean"])
    assert res[NAME]["all"]["psnr"]["mean"] != res["none"]["all"]["psnr"]["mean"]
