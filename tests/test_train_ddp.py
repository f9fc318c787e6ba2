"""DDP under torchrun (gloo on CPU): two ranks, different data, identical weights after training."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from pewm.model import WorldModel, from_preset
    from pewm.train import Trainer, train_preset

    data, tmp = sys.argv[1], sys.argv[2]
    rank = dist.get_rank()
    init = os.path.join(tmp, "init")
    if rank == 0:
        torch.manual_seed(1)
        WorldModel(from_preset("micro")).save_pretrained(init)
    dist.barrier()

    def digest(model):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    out = {}
    for stage in ("backbone", "memory"):
        kw = dict(stage="memory", init=init, reader="voxel-xattn") if stage == "memory" else {}
        cfg = train_preset("micro", data=data, steps=3, checkpoint_every=3, sample_every=1000, lr=1e-3,
                           warmup_steps=0, **kw)
        tr = Trainer(cfg, os.path.join(tmp, "run_" + stage), progress=False)
        res = tr.run()
        out[stage] = {"model": digest(tr.model), "ema": digest(tr.ema.model), "losses": res.losses,
                      "world": tr.dist.world_size}
        tr.close()
    with open(os.path.join(tmp, "rank%d.json" % rank), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    """
)


def test_ddp_two_ranks_end_with_identical_weights(small_dataset, tmp_path):
    root, _ = small_dataset
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(script), str(root), str(tmp_path)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    for stage in ("backbone", "memory"):
        assert r0[stage]["world"] == 2
        assert r0[stage]["model"] == r1[stage]["model"], stage
        assert r0[stage]["ema"] == r1[stage]["ema"], stage
        assert r0[stage]["losses"] != r1[stage]["losses"], "ranks should sample different clips"
        run = tmp_path / f"run_{stage}"
        # only rank 0 writes: one metrics line per step, one checkpoint, the final model
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
        assert (run / "checkpoints" / "step_00000003" / "state.json").is_file()
        assert json.loads((run / "checkpoints" / "step_00000003" / "state.json").read_text())["world_size"] == 2
    init = hashlib.sha256((tmp_path / "init" / "model.safetensors").read_bytes()).hexdigest()
    assert init  # the stage-2 runs started from it
