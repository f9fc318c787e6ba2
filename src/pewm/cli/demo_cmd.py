"""``pewm demo``: the persistent memory at work in one command (see :mod:`pewm.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Imagine a walk in an unseen house with and without the persistent 3D memory.

The agent takes one ground-truth start view, then the world model imagines a walk twice: turn
away and back twice, then out to another place and back; once with the persistent map (the start
view and every generated chunk fused and read back) and once with an empty memory. Writes OUT/demo.mp4 (ground truth | with memory | without memory |
top-down view of the map growing) and OUT/summary.json, and prints PSNR / depth AbsRel against
the ground truth on revisit frames (mostly seen in the start view) and novel frames.

With --data DATASET [--episode N] [--start S] the walk is a recorded episode instead (your own
recording imported with pewm data import; poses are enough, no actions needed): frame S is the
start view and the only frame in the memory, and the model imagines the recorded camera path from
there, with and without memory. Frames of another size are centre-cropped and resized to the model.

\b
Uses the model shipped with pewm unless --model is given. About 30 s on a 2-core CPU.
"""


def register(app: typer.Typer) -> None:
    @app.command("demo", help=HELP)
    def demo_command(
        out: Path = typer.Option(Path("demo"), "--out", "-o", help="output directory"),
        seed: int = typer.Option(0, help="which unseen house (and start pose, walk and sampling noise)"),
        steps: Optional[int] = typer.Option(
            None, help="frames of the imagined walk (8 per generated chunk) [128; with --data: the rest of the episode]"
        ),
        look_around: int = typer.Option(
            0, help="extra ground-truth 15-degree turns at the start fused into the memory (24 = a full turn)"
        ),
        data: Optional[Path] = typer.Option(None, "--data", "-d", help="walk a recorded episode of this dataset"),
        episode: Optional[int] = typer.Option(None, help="with --data: the episode index [the dataset's first]"),
        start: int = typer.Option(0, help="with --data: the start frame (the only frame in the memory)"),
        sampling_steps: Optional[int] = typer.Option(None, help="DDIM steps per chunk [model default]"),
        model: Optional[Path] = typer.Option(None, help="model directory or training run [the shipped model]"),
        fuse: str = typer.Option(
            "novel", help="fuse generated frames: novel (only where the map holds nothing yet) | all (literal Algorithm 1) | "
                     "none (never: the map holds only observed frames; imagines but does not remember)"
        ),
        anchor: Optional[str] = typer.Option(
            None, help="voxel-render sampling: both | latent | pixel (keep what the map covers) | none (condition only) "
                       "[model default]"
        ),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
        allow_any_fov: bool = typer.Option(
            False, "--allow-any-fov", help="imagine with a camera whose field of view is far from the model's (90 deg)"
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace demo.mp4 and summary.json of an earlier run in --out"),
    ) -> None:
        from pewm.cli.common import console, user_errors
        from pewm.demo import DemoConfig, run_demo
        from pewm.model import SamplingConfig

        with user_errors():
            sampling = SamplingConfig(steps=sampling_steps, anchor=anchor)
            run_demo(DemoConfig(out=str(out), seed=seed, steps=steps, look_around=look_around, sampling=sampling,
                                model=str(model) if model else None, threads=threads, fuse=fuse, overwrite=overwrite,
                                data=str(data) if data else None, episode=episode, start=start,
                                allow_any_fov=allow_any_fov),
                     console=console)
