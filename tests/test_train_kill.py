"""Crash safety of ``pewm train`` (issue #15): a training process killed with ``kill -9`` or
interrupted with SIGINT (Ctrl-C) at seeded random points -- while a checkpoint is being written, or
between steps -- then resumed with ``--resume``, ends with weights bitwise equal (same file bytes)
to an uninterrupted run's, the same metrics.jsonl (apart from timing fields) and no temporary
files. Ctrl-C exits 130 without a traceback and cleans up after itself."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pewm.cli.main import app
from pewm.model.testing import torch_threads

runner = CliRunner()
STEPS, CKPT_EVERY, LOG_EVERY = 24, 4, 3  # checkpoints at 4, 8, ... fall inside log windows (3, 6, ...)
ARGS = ["--preset", "micro", "--steps", str(STEPS), "--checkpoint-every", str(CKPT_EVERY), "--log-every",
        str(LOG_EVERY), "--keep-checkpoints", "2", "--sample-every", "1000", "--threads", "1", "--no-progress"]
TIMING = ("seconds", "samples_per_s", "elapsed")
# (signal, when): "checkpoint" = while the checkpoint of a seeded step is being written (its
# .tmp-step_* directory exists), "step" = a seeded moment after a seeded number of metrics lines
TRIALS = [(signal.SIGKILL, "checkpoint"), (signal.SIGKILL, "step"), (signal.SIGINT, "checkpoint"),
          (signal.SIGINT, "step")]


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in lines]


def _weights(run: Path) -> dict[str, bytes]:
    final = f"checkpoints/step_{STEPS:08d}"
    return {p: (run / p).read_bytes() for p in ("model/model.safetensors", f"{final}/model/model.safetensors",
                                                f"{final}/ema/model.safetensors")}


def _temps(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if ".tmp" in p.name)


def _ctrl_c_enabled() -> None:
    """In the child before exec: SIGINT at its default, as in a terminal. A test run started in the
    background (``cmd &`` in a script, nohup) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so Ctrl-C would not reach the run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen, run: Path, sig: int, when: str, rng: random.Random) -> str:
    """Send ``sig`` to ``proc`` at the trial's moment; returns what it hit."""
    ckpts, metrics = run / "checkpoints", run / "metrics.jsonl"
    step = rng.choice(range(2 * CKPT_EVERY, STEPS, CKPT_EVERY))  # after the first complete checkpoint
    lines, delay = rng.randint(2, STEPS // LOG_EVERY - 2), rng.uniform(0.0, 0.05)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"train ended before the signal: {proc.communicate()}"
        if when == "checkpoint":
            names = [e.name for e in os.scandir(ckpts)] if ckpts.is_dir() else []
            if any(n.startswith(f".tmp-step_{step:08d}-") for n in names):
                proc.send_signal(sig)
                return f"writing checkpoint {step}"
            if f"step_{step:08d}" in names:  # missed the write: right after it
                proc.send_signal(sig)
                return f"after checkpoint {step}"
        elif metrics.is_file() and metrics.read_text().count("\n") >= lines:
            time.sleep(delay)
            proc.send_signal(sig)
            return f"{delay * 1000:.0f} ms after metrics line {lines}"
        time.sleep(0.001)
    pytest.fail("train made no progress")


def test_kill_and_ctrl_c_then_resume_give_the_uninterrupted_result(small_dataset, tmp_path):
    root, _ = small_dataset
    full = tmp_path / "full"
    with torch_threads(1):
        r = runner.invoke(app, ["train", "--data", str(root), "--out", str(full), *ARGS])
    assert r.exit_code == 0, r.output
    want_weights, want_metrics = _weights(full), _metrics(full)
    rng = random.Random(15)
    hits = []
    for i, (sig, when) in enumerate(TRIALS):
        run = tmp_path / f"run{i}"
        proc = subprocess.Popen([sys.executable, "-m", "pewm.cli.main", "train", "--data", str(root), "--out",
                                 str(run), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_ctrl_c_enabled)
        try:
            hit = _interrupt(proc, run, sig, when, rng)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        hits.append(f"{sig.name} {hit}")
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:  # Ctrl-C: a clean exit, its own temporary files removed
            assert proc.returncode == 130, (hit, out, err)
            assert "Traceback" not in out + err, (hit, err)
            assert _temps(run) == [], hit
        with torch_threads(1):
            r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--no-progress"])
        assert r.exit_code == 0, (hit, r.output)
        assert _temps(run) == [], hit
        assert _weights(run) == want_weights, hit  # bitwise: same bytes
        assert _metrics(run) == want_metrics, hit
    print("; ".join(hits))
