"""Size and speed of the world model (pewm.model) on this machine.

Measures: parameters per preset and reader (``base``/``paper`` built on the ``meta`` device); the
tiny preset's training step (batch 8 clips of 1 + 8 frames at 64x64, AdamW, fp32 and bf16 autocast)
with its FLOPs (``torch.utils.flop_counter.FlopCounterMode``; CPU SDPA is registered by hand) as a
fraction of a large fp32 / bf16 ``torch.matmul`` measured in the same run; one forward of full vs
factorised attention; and the time to generate one 8-frame 64x64 RGB-D chunk vs DDIM steps.

    python benchmarks/model_throughput.py [--reader voxel-xattn] [--out benchmarks/results/model_throughput.json]

Targets (tiny preset, 2-core CPU): a training step (batch >= 8) <= 0.5 s with bf16 autocast; one
8-frame 64x64 chunk in <= 2 s at the default number of sampling steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from _results import write_results

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

from pewm.model import READERS, SamplingConfig, WorldModel, from_preset
from pewm.model.testing import synthetic_batch, synthetic_memory

# FlopCounterMode has no formula for the CPU flash-attention kernels (torch 2.x): add them.
_aten = torch.ops.aten
try:

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu)
    def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)  # arguments arrive as shapes

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _sdpa_cpu_bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

except (AttributeError, RuntimeError):  # already registered by a newer torch
    pass


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, repeats)


def param_table() -> dict:
    out = {}
    for preset in ("tiny", "base", "paper"):
        out[preset] = {}
        for reader in sorted(READERS):
            with torch.device("meta"):
                out[preset][reader] = WorldModel(from_preset(preset, reader=reader)).num_parameters()
    return out


def train_step_bench(reader: str, B: int, autocast: bool, repeats: int, stage: str = "all") -> dict:
    """One optimiser step. ``stage``: ``all`` (every parameter), ``backbone`` (paper stage 1: empty
    memory, memory blocks skipped as pewm.train does), ``memory`` (stage 2: backbone frozen)."""
    torch.manual_seed(0)
    m = WorldModel(from_preset("tiny", reader=reader))
    cfg = m.config
    batch = synthetic_batch(cfg, B, generator=torch.Generator().manual_seed(0), memory=False)
    if stage != "backbone":
        batch.memory = synthetic_memory(cfg, B, n_tokens=512, generator=torch.Generator().manual_seed(1))
    params = list(m.parameters())
    if stage == "backbone":
        m.denoiser.run_memory_blocks = False
        params = list(m.backbone_parameters())
    elif stage == "memory":
        for p in m.backbone_parameters():
            p.requires_grad_(False)
        params = list(m.memory_parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = m(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    sec = timed(step, repeats)
    return {"batch": B, "seconds": sec, "samples_per_s": B / sec, "flops": flops, "flop_per_s": flops / sec}


def generate_bench(reader: str, steps_list: list[int]) -> dict:
    torch.manual_seed(0)
    m = WorldModel(from_preset("tiny", reader=reader)).eval()
    cfg = m.config
    b = synthetic_batch(cfg, 1, generator=torch.Generator().manual_seed(0), memory=False)
    mem = synthetic_memory(cfg, 1, n_tokens=512, generator=torch.Generator().manual_seed(1))
    rgb, depth = b.rgb[:, 0], b.depth[:, 0]
    out = {"default_steps": cfg.diffusion.sampling_steps, "seconds": {}}
    for steps in steps_list:
        out["seconds"][str(steps)] = timed(
            lambda: m.generate(rgb, depth, b.poses[0, 0], b.K, actions=[0, 1, 0, 0, 2, 0, 0, 0], memory=mem,
                               sampling=SamplingConfig(steps=steps)),
            repeats=3 if steps <= 20 else 1,
        )
    return out


def attention_bench(reader: str) -> dict:
    out = {}
    for attn in ("factorized", "full"):
        torch.manual_seed(0)
        m = WorldModel(from_preset("tiny", reader=reader, attention=attn)).eval()
        b = synthetic_batch(m.config, 1, generator=torch.Generator().manual_seed(0), memory=False)
        b.memory = synthetic_memory(m.config, 1, n_tokens=512)
        x0, cond = m.condition(b)
        t = torch.tensor([500])
        with torch.no_grad():
            out[attn] = {"forward_ms_batch1": 1e3 * timed(lambda: m.denoiser(x0, t, cond), 5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", default="voxel-xattn", choices=sorted(READERS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/model_throughput.json")
    args = ap.parse_args()

    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "loadavg_at_start": os.getloadavg(),
    }
    print(f"torch {env['torch']}, {env['threads']} threads, {env['cpu_capability']}, load {env['loadavg_at_start']}")

    params = param_table()
    print("\nparameters (M)   " + "  ".join(f"{r:>13}" for r in sorted(READERS)) + "   spread")
    for preset, row in params.items():
        tot = [row[r]["total"] for r in sorted(READERS)]
        print(
            f"{preset:<6} total    "
            + "  ".join(f"{t / 1e6:13.3f}" for t in tot)
            + f"   {100 * (max(tot) / min(tot) - 1):.2f}%"
        )
        print(f"{preset:<6} backbone {row['none']['backbone'] / 1e6:13.3f}   memory (voxel-xattn) "
              f"{row['voxel-xattn']['memory'] / 1e6:.3f}")

    peak = {"fp32": matmul_peak(torch.float32, 2048, 5), "bf16": matmul_peak(torch.bfloat16, 512, 2)}
    print(f"\nmatmul peak: fp32 (2048^2) {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 (512^2) {peak['bf16'] / 1e9:.2f} GFLOP/s")

    train = {}
    for name, ac, reps in (("fp32", False, 3), ("bf16_autocast", True, 1)):
        r = train_step_bench(args.reader, args.batch, ac, reps)
        r["fraction_of_matmul_peak"] = r["flop_per_s"] / peak["fp32" if name == "fp32" else "bf16"]
        r["fraction_of_fp32_matmul_peak"] = r["flop_per_s"] / peak["fp32"]
        train[name] = r
        print(
            f"train step tiny/{args.reader} B={args.batch} {name:>13}: {r['seconds']:.2f} s, "
            f"{r['samples_per_s']:.2f} clips/s, {r['flops'] / 1e9:.1f} GFLOP, {r['flop_per_s'] / 1e9:.1f} GFLOP/s "
            f"({100 * r['fraction_of_matmul_peak']:.0f}% of its matmul peak, "
            f"{100 * r['fraction_of_fp32_matmul_peak']:.0f}% of fp32 peak)"
        )

    stages = {"backbone": train_step_bench(args.reader, args.batch, False, 3, stage="backbone")}
    print(f"stage 1 (backbone, memory blocks skipped) B={args.batch} fp32: {stages['backbone']['seconds']:.2f} s, "
          f"{stages['backbone']['samples_per_s']:.2f} clips/s")
    for reader in sorted(READERS):
        r = train_step_bench(reader, args.batch, False, 3, stage="memory")
        stages[f"memory/{reader}"] = r
        print(f"stage 2 (memory, backbone frozen) {reader:>12} B={args.batch} fp32: {r['seconds']:.2f} s, "
              f"{r['samples_per_s']:.2f} clips/s")

    attn = attention_bench(args.reader)
    print("forward B=1: " + ", ".join(f"{k} {v['forward_ms_batch1']:.0f} ms" for k, v in attn.items()))

    gen = generate_bench(args.reader, [5, 10, 20, 50])
    print(f"generate one 8-frame 64x64 RGB-D chunk (default {gen['default_steps']} steps):")
    for s, sec in gen["seconds"].items():
        print(f"  {s:>3} DDIM steps: {sec:.2f} s")

    result = {
        "env": env,
        "reader": args.reader,
        "parameters": params,
        "matmul_peak_flop_per_s": peak,
        "train_step_tiny": train,
        "train_step_tiny_by_stage_fp32": stages,
        "attention_forward_tiny": attn,
        "generate_tiny": gen,
        "targets": {"train_step_s": 0.5, "generate_chunk_s": 2.0},
        "loadavg_at_end": os.getloadavg(),
    }
    write_results(args.out, result)


if __name__ == "__main__":
    main()
