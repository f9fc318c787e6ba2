"""``pewm train``: two-stage training of the world model (§4 "Training" of arXiv 2505.05495)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = """Train the world model (two stages, as in the paper, §4).

Stage 0 (--stage autoencoder), for models that diffuse latents (the tiny preset), trains the
RGB-D autoencoder; stage 1 then starts from it (--init STAGE0_RUN), the autoencoder frozen.
Stage 1 (--stage backbone) trains the video diffusion backbone with an empty memory.
Stage 2 (--stage memory --init STAGE1_RUN) freezes the backbone and trains only the memory
blocks of --reader; each clip's memory is built from the ground-truth frames before it.

\b
Examples:
  pewm train --preset tiny --data houses --stage autoencoder --steps 1500 --out runs/ae
  pewm train --preset tiny --data houses --stage backbone --init runs/ae --out runs/s1
  pewm train --preset tiny --data houses --stage memory --reader voxel-xattn \\
             --init runs/s1 --out runs/s2
  pewm train --out runs/s2 --resume --steps 40000      # continue (exactly) from the last checkpoint
  torchrun --nproc_per_node=8 -m pewm.cli.main train --preset paper ...   # DDP

\b
The run directory gets config.json, metrics.jsonl, samples/step_*.mp4, checkpoints/step_*/ and,
at the end, model/ (EMA weights; WorldModel.from_pretrained("RUN/model")).
Options left out come from --preset (or, with --resume, from the run's config.json).
"""


def _init_path(init: Optional[Path]) -> Optional[str]:
    """``--init``: a path, or ``shipped`` for the model shipped with pewm."""
    if init is None:
        return None
    if str(init) == "shipped":
        from pewm.assets import default_model_dir

        return str(default_model_dir())
    return str(init)


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the ``pewm`` CLI."""

    @app.command("train", help=HELP, no_args_is_help=True)
    def train_command(
        out: Path = typer.Option(..., "--out", "-o", help="run directory (created; holds config, metrics, checkpoints)"),
        data: Optional[Path] = typer.Option(None, "--data", "-d", help="dataset directory (pewm data format)"),
        preset: Optional[str] = typer.Option(None, help="training preset: micro | tiny | base | paper [default: tiny]"),
        stage: Optional[str] = typer.Option(None, help="autoencoder (stage 0, latent models) | backbone (stage 1, no memory) | memory (stage 2, frozen backbone)"),
        reader: Optional[str] = typer.Option(None, help="memory reader: voxel-xattn | frames | voxel-render | none"),
        init: Optional[Path] = typer.Option(
            None, help="run, checkpoint or model directory to start from (stage 0 for --stage backbone of latent models, "
                       "stage 1 for --stage memory); 'shipped' = the model shipped with pewm (fine-tuning)"
        ),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its latest checkpoint"),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="replace an earlier run in --out (its config, metrics, samples, checkpoints and "
                                       "model are removed) instead of refusing"),
        steps: Optional[int] = typer.Option(None, help="total optimizer steps"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="clips per step and process"),
        grad_accum: Optional[int] = typer.Option(None, help="micro-batches accumulated per optimizer step"),
        lr: Optional[float] = typer.Option(None, help="peak learning rate (AdamW) [preset: 1e-4]"),
        warmup_steps: Optional[int] = typer.Option(None, help="linear warmup steps"),
        lr_schedule: Optional[str] = typer.Option(None, help="after warmup: constant | cosine"),
        grad_clip: Optional[float] = typer.Option(None, help="gradient norm clipping [1.0]"),
        ema_decay: Optional[float] = typer.Option(None, help="EMA decay of the exported weights"),
        precision: Optional[str] = typer.Option(
            None, help="fp32 | bf16 (autocast). Use fp32 on CPUs without bf16 units (this one: bf16 ~25x slower)"
        ),
        seed: Optional[int] = typer.Option(None, help="random seed (data, noise, initialisation)"),
        split: Optional[str] = typer.Option(None, help="dataset split to train on [train]"),
        history: Optional[int] = typer.Option(None, help="ground-truth past frames that build each clip's memory"),
        max_episodes: Optional[int] = typer.Option(None, help="use only the first N episodes of the split"),
        allow_incomplete: bool = typer.Option(
            False, "--allow-incomplete", help="train on a dataset that fails the completeness check (missing, extra "
                                              "or unfinished files; see pewm data verify)"),
        features: Optional[str] = typer.Option(None, help="map feature extractor for voxel-xattn: auto (the model's frozen autoencoder encoder if it has one, "
                                "else rgb) | autoencoder | rgb | dinov2 [auto]"),
        dinov2_weights: Optional[Path] = typer.Option(None, help="local DINOv2 weights dir (with --features dinov2)"),
        reader_option: List[str] = typer.Option(
            [], "--reader-option", help="stage 2: re-initialise the memory reader with this option of its Options "
                                        "(KEY=VALUE, repeatable; e.g. init=zero-out, for voxel-xattn ray_query=true, "
                                        "ray_bias=0.5, for voxel-render layout_prior=true) [keep --init's]"),
        keep_reader_weights: bool = typer.Option(
            False, "--keep-reader-weights", help="stage 2, with --init and --reader-option: keep the --init reader's "
                                                 "trained weights; only what the options add starts fresh (e.g. "
                                                 "--reader-option layout_prior=true for voxel-render)"),
        memory_init: Optional[str] = typer.Option(
            None, help="stage 2: same as --reader-option init=...: zero-gate (AdaLN-Zero gates, the paper's reading) | "
                       "zero-out (gates at 1, zero output projections: learns from the first step) [keep --init's]"),
        ray_query: Optional[bool] = typer.Option(
            None, "--ray-query/--no-ray-query", help="stage 2, voxel-xattn: same as --reader-option ray_query=... "
                                                   "(queries embed 3D points along each token's ray) [keep --init's]"),
        ray_bias: Optional[float] = typer.Option(
            None, "--ray-bias", help="stage 2, voxel-xattn: same as --reader-option ray_bias=SIGMA (attention bias "
                                     "toward map tokens within about SIGMA metres of each ray; 0 = off) [keep --init's]"),
        memory_option: List[str] = typer.Option(
            [], "--memory-option", help="stage 2: a MemoryBuildConfig setting of the clips' memories, saved with the "
                                        "model as memory.json (KEY=VALUE, value as JSON, repeatable; e.g. "
                                        "imagined_fuse_delay_chunks=1, render_supersample=2)"),
        imagined_memory: Optional[float] = typer.Option(
            None, "--imagined-memory", help="stage 2: share of clips (0-1) whose memory holds a chunk the model "
                                            "imagined itself, as in a rollout, instead of only ground truth [0]"),
        imagined_memory_steps: Optional[int] = typer.Option(
            None, "--imagined-memory-steps", help="DDIM steps of that imagined chunk [4]"),
        log_every: Optional[int] = typer.Option(None, help="steps between metrics.jsonl lines"),
        sample_every: Optional[int] = typer.Option(None, help="steps between sample videos"),
        sample_steps: Optional[int] = typer.Option(None, help="DDIM steps of the sample videos"),
        checkpoint_every: Optional[int] = typer.Option(None, help="steps between checkpoints"),
        keep_checkpoints: Optional[int] = typer.Option(None, help="checkpoints kept (oldest removed)"),
        device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    ) -> None:
        from pewm.cli.common import console, parse_key_values, user_errors
        from pewm.model import reader_class
        from pewm.train import memory_options, run_config, train, with_features

        with user_errors():
            overrides = dict(
                data=str(data) if data is not None else None, stage=stage, reader=reader,
                init=_init_path(init), steps=steps, batch_size=batch_size,
                grad_accum=grad_accum, lr=lr, warmup_steps=warmup_steps, lr_schedule=lr_schedule,
                grad_clip=grad_clip, ema_decay=ema_decay, precision=precision, seed=seed, split=split,
                history=history, max_episodes=max_episodes, allow_incomplete=allow_incomplete or None,
                log_every=log_every, sample_every=sample_every,
                sample_steps=sample_steps, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                device=device, threads=threads, imagined_memory=imagined_memory,
                imagined_memory_steps=imagined_memory_steps, keep_reader_weights=keep_reader_weights or None,
            )
            cfg = run_config(out, resume, preset, overrides)
            options = parse_key_values(reader_option, "--reader-option")
            aliases = {"init": memory_init, "ray_query": ray_query, "ray_bias": ray_bias}
            if options or any(v is not None for v in aliases.values()):  # typed by the run's reader
                overrides["reader_options"] = {**reader_class(cfg.reader).Options.parse(options),
                                               **{k: v for k, v in aliases.items() if v is not None}}
                cfg = run_config(out, resume, preset, overrides)
            memory = with_features(cfg.memory, features, str(dinov2_weights) if dinov2_weights else None)
            if memory_option:
                memory = memory_options(memory, parse_key_values(memory_option, "--memory-option"))
            if memory != cfg.memory:
                cfg = cfg.replace(memory=memory.to_dict())
            result = train(cfg, out, resume=resume, progress=progress, overwrite=overwrite)
            if result.model_dir is not None:
                console.print(f"trained to step {result.step}; final EMA model in {result.model_dir}")
