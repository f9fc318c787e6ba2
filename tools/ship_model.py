"""Copy a trained model into the package as the shipped default (fp16 safetensors), with the
memory readers of other stage-2 runs trained on the same stage-1 backbone beside it.

    python tools/ship_model.py runs/s2_voxel-render --readers runs/s2_frames runs/s2_voxel-xattn \
        --anchor both --render-supersample 2

``--anchor`` / ``--render-supersample`` / ``--memory-option KEY=VALUE`` set the shipped model's
default sampling and memory settings (choose them on the validation split, e.g. with ``pewm eval --split val --anchor ...``).

Checks that every extra reader's backbone is bit-identical to the main model's (stage 2 freezes
it), so ``WorldModel.from_pretrained(shipped, reader=...)`` rebuilds each trained model exactly
(up to fp16 rounding).

``--readers-only`` replaces readers and nothing else: the shipped model's own files are copied
byte for byte (no re-serialised ``config.json``), so a reader-only update is a reader-only diff:

    python tools/ship_model.py src/pewm/assets/models/tiny-voxel-render --readers-only \
        --readers runs/xattn_cell4
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from pewm.assets import DEFAULT_MODEL, MODELS_DIR, resolve_model_path
from pewm.model import WorldModel
from pewm.model.config import ANCHORS
from pewm.model.memory_build import MemoryBuildConfig
from pewm.train.config import memory_options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="stage-2 run (or model directory) to ship as the default")
    ap.add_argument("--readers", nargs="*", default=[], help="stage-2 runs of other readers on the same backbone")
    ap.add_argument("--name", default=DEFAULT_MODEL)
    ap.add_argument("--keep-readers", action="store_true",
                    help="keep the readers shipped beside MODEL (a model directory with readers/), except those "
                         "replaced by --readers: re-ship the shipped model with new settings")
    ap.add_argument("--readers-only", action="store_true",
                    help="MODEL is a model directory: copy its files unchanged and only add or replace the "
                         "readers given by --readers (implies --keep-readers; no setting may change)")
    ap.add_argument("--anchor", choices=ANCHORS, default=None, help="default map-anchored sampling (voxel-render)")
    ap.add_argument("--render-supersample", type=int, default=None, help="default memory-render supersampling")
    ap.add_argument("--memory-option", action="append", default=[], metavar="KEY=VALUE",
                    help="set a MemoryBuildConfig field of the shipped memory.json (JSON value), e.g. "
                         "imagined_fuse_delay_chunks=1; repeatable")
    args = ap.parse_args()
    main_dir = resolve_model_path(args.model)
    if args.readers_only:
        if args.anchor is not None or args.render_supersample is not None or args.memory_option:
            raise SystemExit("--readers-only changes no setting: drop --anchor, --render-supersample "
                             "and --memory-option")
        if not args.readers:
            raise SystemExit("--readers-only: name the runs to ship with --readers")
        if not (main_dir / "model.safetensors").is_file():
            raise SystemExit(f"--readers-only: {main_dir} is not a model directory (no model.safetensors)")
        args.keep_readers = True
    model = WorldModel.from_pretrained(main_dir)
    if args.anchor is not None:
        model.config.diffusion.anchor = args.anchor
        model.config.diffusion.validate()
    options = {}
    for kv in args.memory_option:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--memory-option {kv!r}: expected KEY=VALUE")
        options[key] = value
    if args.render_supersample is not None:
        options["render_supersample"] = str(args.render_supersample)
    if options:
        try:  # a value is read as JSON, else as a bare string (imagined_depth=box)
            build = memory_options(MemoryBuildConfig.from_dict(model.memory_build or {}), options)
        except (TypeError, ValueError) as e:
            raise SystemExit(str(e)) from None
        model.memory_build = build.to_dict()
    out = MODELS_DIR / args.name
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if args.readers_only:
            tmp.mkdir(parents=True)
            for f in sorted(main_dir.iterdir()):
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        else:
            model.save_pretrained(tmp, dtype=torch.float16)
        own = {k: v for k, v in model.state_dict().items() if not k.startswith("denoiser.reader.")}
        if args.keep_readers and (main_dir / "readers").is_dir():
            (tmp / "readers").mkdir(exist_ok=True)
            for f in sorted((main_dir / "readers").iterdir()):
                shutil.copy2(f, tmp / "readers" / f.name)
                print(f"kept {f.name}")
        for run in args.readers:
            other = WorldModel.from_pretrained(resolve_model_path(run))
            theirs = other.state_dict()
            diff = [k for k, v in own.items() if not torch.equal(v, theirs[k])]
            if diff:
                raise SystemExit(f"{run}: its backbone differs from {main_dir} ({len(diff)} tensors, e.g. {diff[0]})")
            path = other.save_reader(tmp, dtype=torch.float16)
            print(f"reader {other.config.reader}: {path.stat().st_size / 2**20:.1f} MB")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a refused reader leaves no half-built model behind
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"shipped {main_dir} as {out} ({total / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
