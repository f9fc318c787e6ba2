"""``tools/gpu_train.sh`` (the command for a lent GPU machine, docs/design.md "GPU training when a
device is lent"), run here on the CPU with tiny settings: it generates a dataset, trains, and leaves
in ``$OUT`` loadable weights and files within the device tool's limits on what comes back (at most
8 files, 16 MiB each, 64 MiB together, no more than 2 folders down, plain names)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pewm.assets import load_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_train.sh"
MAX_FILES, MAX_FILE, MAX_TOTAL = 8, 16 * 2**20, 64 * 2**20


def _egl_problem() -> str | None:
    """Why MuJoCo cannot render headless here (None when it can); checked in a child process."""
    code = "from mujoco.egl import GLContext; c = GLContext(8, 8); c.make_current(); c.free()"
    try:
        r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MUJOCO_GL": "egl"},
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "opening an EGL context timed out"
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="module")
def runnable():
    for tool in ("bash", "timeout"):
        if shutil.which(tool) is None:
            pytest.skip(f"tools/gpu_train.sh needs {tool}, which is not on PATH")
    why = _egl_problem()
    if why is not None:
        pytest.skip(f"MuJoCo EGL rendering (MUJOCO_GL=egl) is unavailable, so no dataset can be generated: {why}")


def _run(tmp: Path, **settings) -> tuple[Path, str]:
    out = tmp / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp / "work"), "PYTHON": sys.executable, "DEVICE": "cpu",
           "PRESET": "micro", "INIT": "none", "THREADS": "1", "OMP_NUM_THREADS": "1",
           **{k: str(v) for k, v in settings.items()}}
    r = subprocess.run(["bash", str(SCRIPT)], cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def _within_limits(out: Path) -> list[Path]:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert 0 < len(files) <= MAX_FILES, files
    for p in files:
        rel = p.relative_to(out)
        assert p.stat().st_size <= MAX_FILE, f"{rel}: {p.stat().st_size} bytes"
        assert len(rel.parts) <= 3, f"{rel}: more than 2 folders down"
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
    assert sum(p.stat().st_size for p in files) <= MAX_TOTAL
    return files


def test_generates_trains_and_returns_loadable_fp16_weights(runnable, tmp_path):
    out, log = _run(tmp_path, STEPS=2, CKPT_EVERY=1, HOUSES=3, EPISODES=1, EPISODE_STEPS=12, WORKERS=1, MINUTES=3)
    names = {p.relative_to(out).as_posix() for p in _within_limits(out)}
    assert {"model/config.json", "model/model.safetensors", "metrics.jsonl", "train_config.json", "summary.json",
            "gpu_train.log"} <= names, names
    assert "device: CPU" in log and "train: finished all 2 steps" in log
    model = load_model(out / "model")
    assert model.config.reader == "voxel-xattn"
    from safetensors import safe_open

    with safe_open(out / "model" / "model.safetensors", "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 2 and not summary["stopped_by_time_limit"] and summary["merge"] is None
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((out / "train_config.json").read_text())["precision"] == "fp32"
    assert (out / "gpu_train.log").read_text().rstrip().endswith("done in " + log.split("done in ")[1].split()[0])


def test_time_limit_stops_training_and_big_weights_come_split(runnable, tmp_path):
    """STEPS out of reach: the budget ends the run, the latest checkpoint's EMA weights are exported,
    and weights over SHARD_BYTES come as shards that summary.json's merge command joins."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "pewm.cli.main", "data", "generate", "--out", str(data), "--houses", "3",
                    "--episodes-per-house", "1", "--steps", "12"], check=True, capture_output=True,
                   env={**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"})
    out, log = _run(tmp_path, DATA=data, STEPS=10**6, CKPT_EVERY=5, MINUTES=0.4, EXPORT_S=5,
                    MIN_TRAIN_S=5, SHARD_BYTES=100000)
    assert "time budget reached" in log
    files = _within_limits(out)
    shards = [p for p in files if p.parent.name == "model" and p.name.startswith("model-")]
    assert len(shards) >= 2 and not (out / "model" / "model.safetensors").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_time_limit"] and "/checkpoints/step_" in summary["exported"]
    assert summary["step"] % 5 == 0 and summary["step"] > 0
    merged = tmp_path / "merged"
    shutil.copytree(out / "model", merged)
    subprocess.run(summary["merge"].replace("python -c", f"{sys.executable} -c").replace("MODEL_DIR", str(merged)),
                   shell=True, check=True)
    for p in merged.glob("model-*-of-*.safetensors"):
        p.unlink()
    assert load_model(merged).config.reader == "voxel-xattn"
