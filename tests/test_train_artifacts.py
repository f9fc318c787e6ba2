"""Reproducible training artefacts (issue #15, item 7): byte-identical weight files for equal
weights (also across processes), file and directory modes that follow the umask, and a resumed
run whose metrics.jsonl equals the uninterrupted run's even when a checkpoint falls mid-window."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pewm.model import WorldModel
from pewm.model.testing import torch_threads
from pewm.train import train, train_preset, write_checkpoint

TIMING = ("seconds", "samples_per_s", "elapsed")  # the only time-dependent metrics.jsonl fields

_SAVE = """
import sys, torch
from pewm.model import WorldModel
torch.set_num_threads(1)
torch.manual_seed(0)
m = WorldModel.from_preset("micro", reader="voxel-xattn", reader_options={"ray_query": True, "init": "zero-out"})
m.memory_build = {"features": "rgb", "b": 1, "a": 2}
m.save_pretrained(sys.argv[1])
m.save_reader(sys.argv[1])
"""


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _header(path: Path) -> dict:
    b = path.read_bytes()
    return json.loads(b[8:8 + int.from_bytes(b[:8], "little")])


def test_weights_are_byte_identical_across_saves_and_processes(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    proc = subprocess.Popen([sys.executable, "-c", _SAVE, str(tmp_path / "p0")], env=env)  # other hash seeds
    with torch_threads(1):
        torch.manual_seed(0)
        m = WorldModel.from_preset("micro", reader="voxel-xattn", reader_options={"ray_query": True, "init": "zero-out"})
        m.memory_build = {"features": "rgb", "b": 1, "a": 2}
        for i in range(6):  # safetensors wrote its metadata in hash order: it varied from call to call
            m.save_pretrained(tmp_path / f"s{i}")
            m.save_reader(tmp_path / f"s{i}")
    assert proc.wait(timeout=120) == 0
    ref = _files(tmp_path / "s0")
    assert {"model.safetensors", "config.json", "readers/voxel-xattn.safetensors"} <= set(ref)
    for d in [*(f"s{i}" for i in range(1, 6)), "p0"]:
        assert _files(tmp_path / d) == ref, d
    head = _header(tmp_path / "s0" / "model.safetensors")
    assert list(head)[0] == "__metadata__" and list(head["__metadata__"]) == sorted(head["__metadata__"])
    # still ordinary safetensors files, loaded as before
    back = WorldModel.from_pretrained(tmp_path / "p0")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))
    assert back.config.reader_options == m.config.reader_options


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_modes_follow_the_umask(tmp_path, umask):
    m = WorldModel.from_preset("micro")
    old = os.umask(umask)
    try:
        model_dir = m.save_pretrained(tmp_path / "model")

        def write(d: Path) -> None:
            m.save_pretrained(d / "ema")
            (d / "extra.txt").write_text("x")

        ck = write_checkpoint(tmp_path / "run", 5, write, {"note": 1})
    finally:
        os.umask(old)
    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    files = [model_dir / "model.safetensors", model_dir / "config.json", ck / "ema" / "model.safetensors",
             ck / "ema" / "config.json", ck / "state.json", ck / "extra.txt"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == want_file, (f, oct(f.stat().st_mode))
    for d in (model_dir, ck, ck / "ema", ck.parent):
        assert stat.S_IMODE(d.stat().st_mode) == want_dir, (d, oct(d.stat().st_mode))


def metrics_without_timing(run: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(set(TIMING) <= set(r) for r in lines)
    return [{k: v for k, v in r.items() if k not in TIMING} for r in lines]


def test_resumed_metrics_equal_the_uninterrupted_run_with_a_checkpoint_mid_window(small_dataset, tmp_path):
    root, _ = small_dataset
    cfg = train_preset("micro", data=str(root), steps=7, log_every=3, checkpoint_every=4, sample_every=1000,
                       warmup_steps=2, keep_checkpoints=5)
    full = tmp_path / "full"
    with torch_threads(1):
        train(cfg, full, progress=False)
        assert [r["step"] for r in metrics_without_timing(full)] == [3, 6, 7]
        for name, legacy in (("crashed", False), ("legacy", True)):
            # a run killed right after its step-4 checkpoint (in the middle of the log window 4..6)
            part = tmp_path / name
            shutil.copytree(full, part)
            for p in ("model", "checkpoints/step_00000007"):
                shutil.rmtree(part / p)
            if legacy:  # a checkpoint of an older pewm: no saved log window; it still resumes
                rng = part / "checkpoints/step_00000004/rng.pt"
                saved = torch.load(rng, weights_only=False)
                assert saved.pop("log_windows")[0]["loss"]  # the step-4 loss, to average into step 6
                torch.save(saved, rng)
            train(cfg, part, resume=True, progress=False)
            a, b = WorldModel.from_pretrained(full / "model"), WorldModel.from_pretrained(part / "model")
            assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
            if not legacy:
                assert metrics_without_timing(part) == metrics_without_timing(full)
                assert (part / "model/model.safetensors").read_bytes() == (full / "model/model.safetensors").read_bytes()
            else:  # steps 5-6 only: the step-6 line differs, the others do not
                got, want = metrics_without_timing(part), metrics_without_timing(full)
                assert [r["step"] for r in got] == [3, 6, 7] and got[0] == want[0] and got[2] == want[2]


def test_a_torn_metrics_line_and_stale_temps_of_a_killed_run_are_dropped_on_resume(small_dataset, tmp_path):
    root, _ = small_dataset
    cfg = train_preset("micro", data=str(root), steps=4, log_every=1, checkpoint_every=2, sample_every=1000)
    run = tmp_path / "run"
    with torch_threads(1):
        train(cfg.replace(steps=2), run, progress=False)
        with open(run / "metrics.jsonl", "a") as f:
            f.write('{"step": 3, "loss": 0.5, "lo')  # killed mid-line
        stale = [run / "checkpoints/.tmp-step_00000004-1-ab", run / "model/.model.safetensors.x1.tmp",
                 run / ".config.json.x2.tmp", run / "samples/.step_000004.mp4.x3.tmp.mp4"]
        for p in stale:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.mkdir() if p.name.startswith(".tmp-") else p.write_bytes(b"x")
        train(cfg, run, resume=True, progress=False)
    assert [r["step"] for r in metrics_without_timing(run)] == [1, 2, 3, 4]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
