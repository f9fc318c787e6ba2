"""The two-stage training loop (§4 "Training"): losses fall, exact resume, atomic checkpoints,
EMA, stage-2 freezing, run-directory contents and clear errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pewm.model import WorldModel
from pewm.model.testing import torch_threads
from pewm.train import EMA, Trainer, latest_checkpoint, list_checkpoints, train, train_preset
from pewm.train import checkpoint as ckpt_mod

READERS = ["voxel-xattn", "frames", "voxel-render", "none"]


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _cfg(data, **kw):
    base = dict(data=str(data), steps=6, checkpoint_every=3, sample_every=1000, warmup_steps=2)
    return train_preset("micro", **{**base, **kw})


def _losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stage1(small_dataset, tmp_path_factory):
    """A stage-1 run trained enough that its output layer is no longer ~0 (so stage 2 can learn)."""
    root, _ = small_dataset
    run = tmp_path_factory.mktemp("s1") / "run"
    with torch_threads(1):
        train(_cfg(root, steps=30, lr=3e-3, warmup_steps=0, ema_decay=0.0, checkpoint_every=30, sample_every=30),
              run, progress=False)
    return run


def test_stage1_run_directory(stage1):
    assert (stage1 / "config.json").is_file() and (stage1 / "samples" / "step_000030.mp4").stat().st_size > 0
    rec = [json.loads(ln) for ln in (stage1 / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec] == list(range(1, 31))
    for k in ("loss", "loss_rgb", "loss_depth", "lr", "grad_norm", "seconds", "revisit_share"):
        assert all(np.isfinite(r[k]) for r in rec), k
    m = WorldModel.from_pretrained(stage1 / "model")
    assert m.config.image_height == 16
    # the stage-1 memory reader stayed at its zero-gated initialisation (frozen)
    fresh = WorldModel(m.config)
    gates = {n: p for n, p in m.named_parameters() if n.startswith("denoiser.reader.") and "ada_" in n}
    assert gates and all(float(p.detach().abs().max()) == 0.0 for p in gates.values())
    assert len(list_checkpoints(stage1)) == 1 and fresh is not None


def test_skipping_memory_blocks_in_stage1_is_exact(stage1):
    """Stage 1 skips the zero-gated memory blocks for speed; the saved model, which runs them, agrees."""
    from pewm.model.testing import synthetic_batch

    m = WorldModel.from_pretrained(stage1 / "model").eval()
    batch = synthetic_batch(m.config, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = m.training_loss(batch, generator=torch.Generator().manual_seed(1))["loss"]
        m.denoiser.run_memory_blocks = False
        skipped = m.training_loss(batch, generator=torch.Generator().manual_seed(1))["loss"]
    assert torch.equal(full, skipped)


def _overfit(trainer: Trainer, n: int = 30) -> list[float]:
    batches, _ = trainer.next_batches()
    out = []
    for _ in range(n):  # same batch, same noise and timesteps: a pure overfitting curve
        out.append(trainer.train_step(batches, generator=torch.Generator().manual_seed(0))["loss"])
    return out


def test_stage1_loss_falls_on_a_fixed_batch(small_dataset, tmp_path):
    root, _ = small_dataset
    tr = Trainer(_cfg(root, lr=1e-3, warmup_steps=0), tmp_path / "run", progress=False)
    losses = _overfit(tr)
    tr.close()
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("reader", READERS)
def test_stage2_loss_falls_for_every_reader_and_backbone_is_frozen(small_dataset, stage1, tmp_path, reader):
    root, _ = small_dataset
    tr = Trainer(_cfg(root, stage="memory", init=str(stage1), reader=reader, lr=3e-3, warmup_steps=0, memory_dropout=0.0),
                 tmp_path / "run", progress=False)
    init = WorldModel.from_pretrained(stage1 / "model", reader=reader)
    losses = _overfit(tr, 40)
    tr.close()
    # same batch, noise and timesteps every step: a deterministic curve; stage 2 moves it less than
    # stage 1 because only the (zero-initialised) memory blocks learn
    assert np.mean(losses[-5:]) < 0.98 * np.mean(losses[:5]), losses
    got, want = dict(tr.model.named_parameters()), dict(init.named_parameters())
    backbone = [n for n in got if not n.startswith("denoiser.reader.")]
    assert backbone and all(torch.equal(got[n], want[n]) for n in backbone)
    memory = [n for n in got if n.startswith("denoiser.reader.")]
    assert any(not torch.equal(got[n], want[n]) for n in memory)
    # the memory-building settings travel with the exported model (memory.json)
    tr.ema.model.save_pretrained(tmp_path / "export")
    again = WorldModel.from_pretrained(tmp_path / "export")
    # ... with "auto" resolved to the extractor used (this pixel-space micro model: rgb)
    want_build = json.loads(json.dumps({**tr.cfg.memory.to_dict(), "extractor": "rgb"}))
    assert tr.cfg.memory.extractor == "auto" and again.memory_build == want_build


@pytest.mark.parametrize("stage", ["backbone", "memory", "memory-zero-out"])
def test_resume_reproduces_the_uninterrupted_loss_curve(small_dataset, stage1, tmp_path, stage):
    root, _ = small_dataset
    kw = dict(stage="memory", init=str(stage1), reader="voxel-xattn") if stage != "backbone" else {}
    if stage == "memory-zero-out":  # the reader is re-initialised from --init, then resumed from its checkpoint
        kw["reader_options"] = {"init": "zero-out"}
    full, part = tmp_path / "full", tmp_path / "part"
    train(_cfg(root, **kw), full, progress=False)
    train(_cfg(root, steps=3, **kw), part, progress=False)
    assert latest_checkpoint(part).name == "step_00000003"
    with open(part / "metrics.jsonl", "a") as f:  # a line logged after the checkpoint by a crashed run
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    train(_cfg(root, **kw), part, resume=True, progress=False)
    a, b = _losses(full), _losses(part)
    assert len(a) == len(b) == 6
    assert a == b  # exact
    ma, mb = WorldModel.from_pretrained(full / "model"), WorldModel.from_pretrained(part / "model")
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))
    assert ma.config.reader_options["init"] == kw.get("reader_options", {}).get("init", "zero-gate")


def test_checkpoint_is_atomic(small_dataset, tmp_path, monkeypatch):
    root, _ = small_dataset
    run = tmp_path / "run"
    tr = Trainer(_cfg(root, keep_checkpoints=2), run, progress=False)
    batches, _ = tr.next_batches()
    tr.train_step(batches)
    good = tr.save_checkpoint()
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    tr.train_step(batches)
    real = ckpt_mod.save_torch

    def crash(obj, path):
        if Path(path).name == "rng.pt":
            Path(path).write_bytes(b"half")
            raise KeyboardInterrupt("killed while writing")
        real(obj, path)

    monkeypatch.setattr(ckpt_mod, "save_torch", crash)
    monkeypatch.setattr("pewm.train.loop.save_torch", crash)
    with pytest.raises(KeyboardInterrupt):
        tr.save_checkpoint()
    root_dir = run / "checkpoints"
    assert sorted(p.name for p in root_dir.iterdir()) == [good.name]  # no half-written directory
    assert {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    assert latest_checkpoint(run) == good
    # a hard kill leaves a temporary directory: ignored, and cleaned by the next save
    (root_dir / ".tmp-step_00000009-123").mkdir()
    (root_dir / "step_00000008").mkdir()  # incomplete (no state.json): not a checkpoint
    assert latest_checkpoint(run) == good
    monkeypatch.undo()
    shutil.rmtree(root_dir / "step_00000008")
    new = tr.save_checkpoint()
    assert new.name == "step_00000002" and not (root_dir / ".tmp-step_00000009-123").exists()
    tr.train_step(batches)
    tr.save_checkpoint()
    tr.close()
    # keep_checkpoints=2 keeps the newest two
    assert [p.name for _, p in list_checkpoints(run)] == ["step_00000002", "step_00000003"]


def test_ema_update_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[1].requires_grad_(False)  # frozen: copied, never averaged
    ema = EMA(model, decay=0.9, warmup=True)
    expect = model[0].weight.detach().clone()
    frozen = model[1].weight.detach().clone()
    for n in range(5):
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        d = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        expect = d * expect + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.model[0].weight, expect, atol=1e-6)
    assert torch.equal(ema.model[1].weight, frozen)
    assert not any(p.requires_grad for p in ema.model.parameters())
    plain = EMA(model, decay=0.5, warmup=False)
    assert plain.current_decay() == 0.5


def test_errors_are_clear(small_dataset, stage1, tmp_path):
    root, _ = small_dataset
    with pytest.raises(FileNotFoundError, match="no such dataset directory"):
        Trainer(_cfg(tmp_path / "nope"), tmp_path / "r1", progress=False)
    with pytest.raises(ValueError, match="no episodes in split 'nosuch'|split"):
        Trainer(_cfg(root, split="nosuch"), tmp_path / "r2", progress=False)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        Trainer(_cfg(root), tmp_path / "r3", resume=True, progress=False)
    with pytest.raises(ValueError, match="unknown memory reader 'voxel'"):
        _cfg(root, reader="voxel").validate()
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        _cfg(root, preset="huge").validate()
    with pytest.raises(ValueError, match="unknown training preset"):
        train_preset("huge")
    with pytest.raises(ValueError, match="needs --init"):
        _cfg(root, stage="memory").validate()
    with pytest.raises(ValueError, match=r"reader options \(\['init'\]\) are for --stage memory"):
        _cfg(root, reader_options={"init": "zero-out"}).validate()
    with pytest.raises(ValueError, match=r"reader options \(\['init'\]\) are for --stage memory"):
        _cfg(root, memory_init="zero-out").validate()  # the legacy field, converted
    with pytest.raises(ValueError, match=r"reader option init must be one of \('zero-gate', 'zero-out'\), got 'zero'"):
        _cfg(root, stage="memory", init=str(stage1), reader_options={"init": "zero"}).validate()
    with pytest.raises(ValueError, match="reader option init must be one of"):
        _cfg(root, stage="memory", init=str(stage1), memory_init="zero").validate()
    with pytest.raises(ValueError, match=r"the frames reader has no option\(s\) \['ray_query'\]"):
        _cfg(root, stage="memory", init=str(stage1), reader="frames", reader_options={"ray_query": True}).validate()
    with pytest.raises(FileNotFoundError, match="--init"):
        Trainer(_cfg(root, stage="memory", init=str(tmp_path / "missing")), tmp_path / "r4", progress=False)
    with pytest.raises(ValueError, match="incompatible.*width"):
        Trainer(_cfg(root, stage="memory", init=str(stage1), model_overrides={"width": 64, "heads": 2}),
                tmp_path / "r5", progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_cfg(root), stage1, progress=False)


def test_init_resolves_run_checkpoint_and_model_dirs(stage1):
    ck = latest_checkpoint(stage1)
    assert ckpt_mod.resolve_model_dir(stage1) == stage1 / "model"
    assert ckpt_mod.resolve_model_dir(ck) == ck / "ema"
    assert ckpt_mod.resolve_model_dir(stage1 / "model") == stage1 / "model"
    tmp = stage1.parent / "no_model"
    shutil.copytree(stage1 / "checkpoints", tmp / "checkpoints", dirs_exist_ok=True)
    assert ckpt_mod.resolve_model_dir(tmp) == tmp / "checkpoints" / ck.name / "ema"
