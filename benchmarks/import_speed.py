"""Import speed (frames/s) of ``pewm data import`` per layout, for 64x64 and 640x480 recordings.

Source recordings are rendered episodes (``pewm.sim``: a 64x64 one, and a 640x640 one cropped to
640x480), exported with :mod:`pewm.data.export` into each layout (TUM: PNG; ScanNet: JPEG colour
+ 16-bit PNG depth, ``scannet2x`` with the colour twice the depth's size as in real ScanNet
exports; folder: PNG + 16-bit PNG), then imported: at the recording's size (zlib
level 6, the default, and 1) and, for 640x480, also fitted to the model's 64x64 input
(``--resolution 64``). Each row is the best of ``--repeats`` runs of the whole import (dataset,
manifest, episode; fsyncs included). The components (decoding one frame's images, writing one
frame into the episode) show where the time goes.

    python benchmarks/import_speed.py [--frames-64 256] [--frames-640 48] [--repeats 2] [--startup-only]
                                      [--out benchmarks/results/import_speed.json]

Start-up (#14, target <= 0.5 s before work begins): wall time of ``pewm --help``, ``pewm data
--help``, ``pewm data import`` of a 3-frame 16x16 folder recording and ``pewm data info`` of the
result (the work itself is a few milliseconds), each a fresh ``python -m pewm.cli.main`` process,
best and median of ``--startup-repeats``; ``python -c pass`` is the interpreter's own share, and
whether each command loaded torch is recorded. ``--startup-only`` skips the import-speed table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import write_results

from pewm.data import (Episode, export_folder, export_scannet, export_tum, import_folder, import_scannet, import_tum,
                       open_dataset, write_episode_frames)
from pewm.data.importing import read_depth, read_rgb
from pewm.geometry import Intrinsics


def rendered_episode(root: Path, resolution: int, frames: int) -> Episode:
    from pewm.sim.generate import GenerateConfig, generate_dataset

    out = root / f"gen{resolution}"
    generate_dataset(out, GenerateConfig(houses=1, episodes_per_house=1, steps=frames - 1, seed=3,
                                         resolution=resolution))
    return open_dataset(out).read(0)


def crop_640x480(ep: Episode) -> Episode:
    K = ep.intrinsics
    K2 = Intrinsics(K.fx, K.fy, K.cx, K.cy - 80, K.width, 480)
    return Episode(rgb=ep.rgb[:, 80:560], depth=ep.depth[:, 80:560], poses=ep.poses, actions=None, intrinsics=K2,
                   episode_id=ep.episode_id, house_id=ep.house_id, split="test", kind="custom")


LAYOUTS = ("tum", "scannet", "scannet2x", "folder")


def export(ep: Episode, layout: str, dst: Path) -> Path:
    if layout == "scannet2x":  # colour twice the depth's size, like ScanNet's 1296x968 beside 640x480
        return export_scannet(ep, dst, color_scale=2)
    return {"tum": export_tum, "scannet": export_scannet, "folder": export_folder}[layout](ep, dst)


def run_import(layout: str, src: Path, out: Path, K, **kw) -> None:
    if layout == "tum":
        import_tum(src, out, fx=K.fx, fy=K.fy, cx=K.cx, cy=K.cy, **kw)
    elif layout.startswith("scannet"):
        import_scannet(src, out, **kw)
    else:
        import_folder(src, out, **kw)


def timed_import(layout: str, src: Path, work: Path, K, repeats: int, **kw) -> float:
    best = float("inf")
    for _ in range(repeats):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        run_import(layout, src, out, K, **kw)
        best = min(best, time.perf_counter() - t)
    return best


def components(ep: Episode, src: Path, work: Path) -> dict:
    """ms per frame: decoding a folder recording's rgb PNG and depth PNG, writing frames (zlib 6/1)."""
    rgb_files, depth_files = sorted((src / "rgb").iterdir()), sorted((src / "depth").iterdir())
    size = (ep.width, ep.height)
    t = time.perf_counter()
    for p in rgb_files:
        read_rgb(p, size)
    rgb_ms = (time.perf_counter() - t) / len(rgb_files) * 1e3
    t = time.perf_counter()
    for p in depth_files:
        read_depth(p, size, 1000.0)
    depth_ms = (time.perf_counter() - t) / len(depth_files) * 1e3
    out = {"decode_rgb_png_ms": rgb_ms, "decode_depth_png_ms": depth_ms}
    header = Episode(rgb=ep.rgb[:1], depth=ep.depth[:1], poses=ep.poses, actions=None, intrinsics=ep.intrinsics,
                     kind="custom")
    for level in (6, 1, 0):
        t = time.perf_counter()
        write_episode_frames(work / "w.npz", header, lambda: iter(ep.rgb), lambda: iter(ep.depth), compresslevel=level)
        out[f"write_zlib{level}_ms"] = (time.perf_counter() - t) / ep.num_frames * 1e3
    return out


# runs the command line like the `pewm` script, then reports whether torch was loaded
_CLI = ("import sys\nfrom pewm.cli.main import main\nsys.argv = ['pewm', *sys.argv[1:]]\ntry:\n    main()\n"
        "except SystemExit as e:\n    assert not e.code, e.code\nprint('TORCH_LOADED', 'torch' in sys.modules)\n")


def _timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    sec = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return sec, r.stdout


def startup_times(root: Path, repeats: int) -> dict:
    """Seconds from process start to exit of the commands that need no torch (see the module doc)."""
    rec = export_folder(Episode.create(
        np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), np.full((3, 16, 16), 2.0),
        np.stack([np.eye(4)] * 3), None, Intrinsics(16.0, 16.0, 7.5, 7.5, 16, 16), split="test"), root / "tiny_rec")
    ds = root / "tiny_ds"
    commands = {
        "python -c pass": None,
        "pewm --help": ["--help"],
        "pewm data --help": ["data", "--help"],
        "pewm data import (3 frames 16x16)": ["data", "import", str(rec), "--out", str(ds), "--format", "folder",
                                              "--overwrite"],
        "pewm data info (tiny dataset)": ["data", "info", str(ds)],
    }
    out = {}
    for name, args in commands.items():
        cmd = [sys.executable, "-c", "pass"] if args is None else [sys.executable, "-c", _CLI, *args]
        times, torch_loaded = [], None
        for _ in range(repeats):
            sec, stdout = _timed(cmd)
            times.append(sec)
            if args is not None:
                torch_loaded = "TORCH_LOADED True" in stdout
        out[name] = {"best_s": min(times), "median_s": statistics.median(times), "torch_loaded": torch_loaded}
        print(f"  {name:36} best {min(times):.3f} s, median {statistics.median(times):.3f} s"
              + ("" if args is None else f", torch loaded: {torch_loaded}"), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames-64", type=int, default=256)
    ap.add_argument("--frames-640", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--startup-repeats", type=int, default=5)
    ap.add_argument("--startup-only", action="store_true", help="measure the start-up times only")
    ap.add_argument("--out", default="benchmarks/results/import_speed.json")
    args = ap.parse_args()
    rows, comps = [], {}
    with tempfile.TemporaryDirectory(prefix="pewm-import-speed-") as tmp:
        print("start-up (target <= 0.5 s before work begins):")
        startup = startup_times(Path(tmp), args.startup_repeats)
        if args.startup_only:
            write_results(args.out, {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                                     "startup": startup, "startup_repeats": args.startup_repeats})
            return
        root = Path(tmp)
        sources = {"64x64": rendered_episode(root, 64, args.frames_64),
                   "640x480": crop_640x480(rendered_episode(root, 640, args.frames_640))}
        print(f"{'layout':9} {'frames':>8} {'n':>4} {'output':>8} {'zlib':>4} {'frames/s':>9}")
        for size, ep in sources.items():
            runs = [(None, 6), (None, 1)] + ([(64, 6)] if size == "640x480" else [])
            for layout in LAYOUTS:
                src = export(ep, layout, root / f"{layout}_{size}")
                for resolution, level in runs:
                    sec = timed_import(layout, src, root, ep.intrinsics, args.repeats, resolution=resolution,
                                       compresslevel=level)
                    row = {"layout": layout, "source": size, "frames": ep.num_frames,
                           "output": size if resolution is None else f"{resolution}x{resolution}",
                           "compresslevel": level, "seconds": sec, "fps": ep.num_frames / sec}
                    rows.append(row)
                    print(f"{layout:9} {size:>8} {ep.num_frames:4d} {row['output']:>8} {level:4d} {row['fps']:9.0f}",
                          flush=True)
                if layout == "folder":
                    comps[size] = components(ep, src, root)
                    print("   components (ms/frame): " + ", ".join(f"{k} {v:.2f}" for k, v in comps[size].items()))
                shutil.rmtree(src)
    write_results(args.out, {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                             "repeats": args.repeats, "rows": rows, "components_ms_per_frame": comps,
                             "startup": startup, "startup_repeats": args.startup_repeats})


if __name__ == "__main__":
    main()
