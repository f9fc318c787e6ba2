"""Interrupting `pewm data generate` (a subprocess, as a user runs it): Ctrl-C (SIGINT to the process
group, as a terminal sends it) and `kill -9` at seeded random points, with 1 and 2 workers. A
SIGINT stops cleanly (exit 130, one line, no traceback, no temp file); a kill -9 leaves no process
behind; rerunning the same generation finishes a dataset byte-identical to an uninterrupted one,
with no temp file left."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pewm.data import verify_dataset
from pewm.sim.generate import GenerateConfig, generate_dataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc: Linux")

ARGS = dict(houses=2, episodes_per_house=2, steps=40, seed=11)
# (signal, workers, episode files to wait for before a seeded random delay); 0: after the house files,
# while the worker pool starts (a Ctrl-C then used to kill the forkserver with a traceback)
TRIALS = [("SIGINT", 1, 1), ("SIGINT", 2, 0), ("SIGINT", 2, 2), ("SIGKILL", 2, 1)]


def _digests(root: Path) -> dict:
    """Every file's SHA-256; dataset.json without its creation time and worker count."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "dataset.json":
                d = json.loads(data)
                d.pop("created")
                d["generator"].pop("workers")
                data = json.dumps(d, sort_keys=True).encode()
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are not zombies."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    generate_dataset(out, GenerateConfig(**ARGS))
    return _digests(out)


@pytest.mark.parametrize("trial", range(len(TRIALS)), ids=[f"{s}-workers{w}-after{a}" for s, w, a in TRIALS])
def test_interrupt_then_rerun_gives_the_same_dataset(reference, tmp_path, trial):
    sig, workers, want = TRIALS[trial]
    rng = random.Random(1500 + trial)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "pewm.cli.main", "data", "generate", "--out", str(out), "--workers", str(workers)]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        if len(list(out.glob("houses/house_*.json"))) == ARGS["houses"] and \
                len(list(out.glob("episodes/ep_*.npz"))) >= want:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.3, 1.5) if want == 0 else rng.uniform(0.0, 0.4))
    finished_first = p.poll() is not None
    if not finished_first:
        if sig == "SIGINT":
            os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        else:
            p.send_signal(signal.SIGKILL)  # kill -9 PID: the main process only
    _, err = p.communicate(timeout=120)
    for _ in range(200):  # no worker outlives a killed generator
        if not _alive_in_group(p.pid):
            break
        time.sleep(0.05)
    assert not _alive_in_group(p.pid), "orphaned worker processes"

    if sig == "SIGINT" and not finished_first:
        assert "Traceback" not in err, err
        if p.returncode == 130:
            assert "interrupted; rerun the same command to resume" in err
            assert not list(out.rglob("*.tmp")), "Ctrl-C left temp files"
        else:  # it had just finished
            assert p.returncode in (0, -signal.SIGINT) and "episodes (" in err, (p.returncode, err)
    elif finished_first:
        assert p.returncode == 0, err
    else:
        assert p.returncode == -signal.SIGKILL

    generate_dataset(out, GenerateConfig(**ARGS))  # the rerun (in this process; workers change no byte)
    assert not list(out.rglob("*.tmp"))
    assert _digests(out) == reference
    assert verify_dataset(out) == []
