"""The generation benchmark of the paper's Table 1 (§4 "Evaluation"), on held-out houses.

Protocol (:func:`run_benchmark`; the command is ``pewm eval``):

1. For every episode of the split (test houses by default), choose the **cut point** among the
   candidates ``t = 64, 72, ...`` (a full chunk of history at least, and room for the horizon) by
   the cut protocol ``--cuts`` (:mod:`pewm.eval.cuts`): ``revisit`` (default) the one whose next
   ``horizon`` ground-truth frames were observed most by the frames up to ``t`` (revisit-rich, as
   the paper's trajectories), ``explore`` the one with the most novel frames after it, ``uniform``
   one drawn at random (seeded) without looking at the future; the same cut for every memory mode
   and seed.
2. Build each memory mode's memory from the ground-truth history ``[0, t]`` (the paper: "the map
   is built from the ground-truth past frames"), then roll the model out from frame ``t`` with the
   ground-truth actions for ``horizon`` frames (Algorithm 1: generated chunks are fused). Episodes
   without actions (recordings: TUM, ScanNet, ...) are rolled out along their recorded camera
   poses instead; everything else (cuts, labels, modes, scores) is the same. (A pose-only episode
   whose camera moves in the discrete action steps after the cut, e.g. a simulator episode whose
   actions were dropped, is replayed with those actions, :func:`~pewm.geometry.actions_from_poses`:
   its numbers are then those of the episode with its actions, bit for bit; replayed along its
   poses they would differ in the last digits, since the recorded poses differ from the
   action-integrated ones by float64 rounding.)
3. Score every generated frame against the ground truth: PSNR, SSIM, depth AbsRel and δ<1.25, and
   scene-revisit consistency (SRC: cosine similarity of global image features between the
   generated frame and the ground-truth history frame of its first visit, when there is one).
4. Classify every frame as **revisit** (at least ``revisit_threshold`` of its view observed in
   ``[0, t]``) or **novel**; report each metric on revisit / novel / all frames as mean ± std over
   sampling seeds, plus (:mod:`pewm.eval.aggregate`, issue #12) the PSNR of the mean MSE, the
   sharpness ratio, and 95 % bootstrap intervals over episodes of the PSNRs and of every mode's
   gain over ``none`` and ``render-only``.

Memory modes are the registered readers (:data:`pewm.model.READERS`), named as on the command line:
``voxel-xattn``, ``frames``, ``voxel-render``, ... (each needs a model whose reader it is: the main
model, a ``--mode-model MODE=DIR``, or reader weights shipped beside the main model) and ``none``
(a reader that reads no memory: the main model with an empty memory, the paper's protocol for its
no-memory baseline), and the three modes without a model (:mod:`pewm.eval.baselines`): ``render-only``
(the history's map rendered into each target view, holes filled from the render),
``nearest-frame`` (the history frame closest in pose) and ``render-layout`` (``render-only`` with
the holes' depth from a box layout: the history's floor and ceiling, walls at 2 m). Sampling settings travel as one
:class:`~pewm.model.SamplingConfig`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pewm.assets import load_model, resolve_model_path
from pewm.atomic import atomic_write_text
from pewm.data import open_dataset, require_complete
from pewm.eval.aggregate import BootstrapConfig, honest_stats, merge_honest
from pewm.eval.baselines import BASELINE_MODES, BaselineConfig, nearest_frame, render_builder, render_layout, render_only
from pewm.eval.cuts import CutConfig, choose_cut
from pewm.eval.long_horizon import long_horizon_consistency, long_horizon_markdown
from pewm.eval.metrics import (METRICS, ColorLayoutFeatures, DinoV2GlobalFeatures, frame_metrics, gradient_magnitude,
                               match_first_visits, mse)
from pewm.eval.report import aggregate, plot_psnr_vs_step, side_by_side_video, write_results_json, write_results_md
from pewm.eval.revisit import classify, observed_fraction
from pewm.geometry import actions_from_poses, poses_from_actions
from pewm.model import READERS, MemoryBuilder, SamplingConfig, WorldModel, reader_class
from pewm.model.inputs import check_fov
from pewm.outputs import check_output_dir
from pewm.model.frame_ops import fit_to_model
from pewm.rollout import RolloutMemory, fuse_flags, rollout


EVAL_ARTEFACTS = ("results.json", "results.md", "psnr_vs_step.png", "videos")  # what run_benchmark writes


def memory_modes() -> tuple[str, ...]:
    """The memory modes the benchmark knows: every registered reader, then the no-model baselines."""
    return tuple(dict.fromkeys((*READERS, *BASELINE_MODES)))


def default_modes(model_path=None) -> tuple[str, ...]:
    """The modes ``pewm eval`` compares when none are given: the model's reader, ``none`` and the
    no-model baselines (``render-only``, ``nearest-frame``, ``render-layout``), so every table has them."""
    reader = WorldModel.load_config(resolve_model_path(model_path)).reader
    return tuple(dict.fromkeys((reader, "none", *BASELINE_MODES)))


@dataclass
class BenchmarkConfig:
    data: str = ""
    out: str = "eval"
    model: str | None = None
    modes: tuple[str, ...] = ("voxel-render", "none")
    mode_models: dict = field(default_factory=dict)
    seeds: int = 3
    split: str = "test"
    horizon: int = 32
    min_history: int = 64
    max_episodes: int | None = None
    batch: int = 8
    # DDIM steps, memory CFG, map anchoring, render supersampling (None: the model's defaults)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    revisit_threshold: float = 0.5
    dinov2_weights: str | None = None
    videos: int = 4
    threads: int | None = None
    fuse: str = "novel"  # generated frames fused: novel (where the map holds nothing yet) | all | none (pewm.rollout.FUSE_MODES)
    long_horizon: int = 0  # walks of the long-horizon probe (pewm.eval.long_horizon): held-out houses, or the split's
    # first episodes when every episode is pose-only (a recording, issue #16); 0 = skip
    long_steps: int = 128
    allow_incomplete: bool = False  # evaluate on a dataset that fails the completeness check (--allow-incomplete)
    allow_any_fov: bool = False  # evaluate episodes whose camera is far from the model's field of view (--allow-any-fov)
    overwrite: bool = False  # replace an earlier run's results in ``out`` (else refused)
    cuts: str = "revisit"  # cut protocol (pewm.eval.cuts): revisit | explore | uniform
    cut_seed: int = 0  # the uniform protocol's seed
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)  # intervals over episodes
    baselines: BaselineConfig = field(default_factory=BaselineConfig)  # the no-model modes' settings

    def cut_config(self) -> CutConfig:
        return CutConfig(protocol=self.cuts, seed=self.cut_seed, revisit_threshold=self.revisit_threshold)

    def validate(self) -> "BenchmarkConfig":
        modes = memory_modes()
        bad = [m for m in self.modes if m not in modes]
        if bad or not self.modes:
            raise ValueError(f"--memory: unknown mode(s) {bad}; choose from {modes}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"--memory: a mode is listed twice: {list(self.modes)}")
        clash = [m for m in BASELINE_MODES if m in READERS]
        if clash:
            raise ValueError(f"a registered memory reader is named like a no-model benchmark mode: {clash}")
        if not isinstance(self.bootstrap, BootstrapConfig) or not isinstance(self.baselines, BaselineConfig):
            raise ValueError("BenchmarkConfig.bootstrap must be a BootstrapConfig and .baselines a BaselineConfig")
        self.cut_config().validate()
        self.bootstrap.validate()
        self.baselines.validate()
        own = tuple(m for m in READERS if READERS[m].reads_memory)
        for k in self.mode_models:
            if k not in own:
                raise ValueError(f"--mode-model: {k!r} is not a memory mode with its own model ({own})")
        for flag, v in (("--seeds", self.seeds), ("--horizon", self.horizon), ("--batch", self.batch),
                        ("--min-history", self.min_history)):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        if self.split not in ("train", "val", "test", "all"):
            raise ValueError(f"--split must be train, val, test or all, got {self.split!r}")
        if not isinstance(self.sampling, SamplingConfig):
            raise ValueError(f"BenchmarkConfig.sampling must be a SamplingConfig, got {type(self.sampling).__name__}")
        fuse_flags(self.fuse)  # a clear error for an unknown --fuse
        if self.long_horizon < 0 or (self.long_horizon and self.long_steps < 16):
            raise ValueError(f"--long-horizon must be >= 0 and --long-steps >= 16, got {self.long_horizon}, {self.long_steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.videos < 0 or (self.max_episodes is not None and self.max_episodes < 1):
            raise ValueError(f"--videos must be >= 0 and --max-episodes >= 1, got {self.videos}, {self.max_episodes}")
        return self


@dataclass
class EvalEpisode:
    index: int
    cut: int
    frames_rgb: np.ndarray  # (T+1, h, w, 3) whole episode
    frames_depth: np.ndarray
    poses: np.ndarray
    actions: np.ndarray | None  # the episode's actions; None: a pose-only episode
    K: np.ndarray
    revisit: np.ndarray  # (horizon,) bool for frames cut+1 .. cut+horizon
    observed: np.ndarray  # (horizon,) fraction
    path_actions: np.ndarray | None = None  # (horizon,) actions replayed after the cut; None: the recorded poses
    z_up: bool = True  # the world frame has z up (False: an imported recording whose up axis is unknown)


def load_episodes(cfg: BenchmarkConfig, resolution: int) -> list[EvalEpisode]:
    ds = open_dataset(cfg.data)
    paths = ds.episode_paths(None if cfg.split == "all" else cfg.split)
    if cfg.max_episodes is not None:
        paths = paths[: cfg.max_episodes]
    if not paths:
        raise ValueError(f"{cfg.data}: no episodes in split {cfg.split!r}")
    out = []
    cc = cfg.cut_config().validate()
    for i, p in enumerate(paths):
        ep = ds.read(p)
        rgb, depth, K = fit_to_model(ep.rgb, ep.depth, ep.intrinsics.matrix, resolution, resolution)
        if not cfg.allow_any_fov:
            check_fov(K, (resolution, resolution), name=f"{p}: K")
        try:
            cut, frac = choose_cut(depth, np.asarray(ep.poses), K, cfg.horizon, cfg.min_history, cc.step, cc.protocol,
                                   cc.seed, i, cc.revisit_threshold)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        # the rollout replays the actions: they must lead exactly to the recorded poses (no collisions)
        if ep.actions is not None:
            replay = poses_from_actions(np.asarray(ep.poses[cut], dtype=np.float64),
                                        np.asarray(ep.actions[cut:cut + cfg.horizon]))
            if not np.allclose(replay, np.asarray(ep.poses[cut:cut + cfg.horizon + 1], dtype=np.float64), atol=1e-3):
                raise ValueError(
                    f"{p}: the actions after frame {cut} do not reproduce the recorded poses (a collision, or another "
                    "action step size); the benchmark needs action-consistent episodes"
                )
        window = np.asarray(ep.poses[cut:cut + cfg.horizon + 1], dtype=np.float64)
        path = (np.asarray(ep.actions[cut:cut + cfg.horizon], dtype=np.int64) if ep.actions is not None
                else actions_from_poses(window))
        frac = observed_fraction(depth[cut + 1:cut + 1 + cfg.horizon], np.asarray(ep.poses)[cut + 1:cut + 1 + cfg.horizon],
                                 K, depth[:cut + 1], np.asarray(ep.poses)[:cut + 1], K)
        out.append(EvalEpisode(i, cut, rgb, depth, np.asarray(ep.poses, dtype=np.float64),
                               None if ep.actions is None else np.asarray(ep.actions, dtype=np.int64), K,
                               classify(frac, cfg.revisit_threshold), np.asarray(frac), path,
                               z_up=ep.meta.get("world_up", "z") != "unknown"))
    return out


def model_for_mode(mode: str, cfg: BenchmarkConfig, main):
    """The model that evaluates ``mode`` (see the module docstring); None for a no-model baseline."""
    if mode in BASELINE_MODES:
        return None
    if mode in cfg.mode_models:
        m = load_model(cfg.mode_models[mode])
        if m.config.reader != mode:
            raise ValueError(f"--mode-model {mode}={cfg.mode_models[mode]}: that model's reader is {m.config.reader!r}")
        return m
    if not reader_class(mode).reads_memory or main.config.reader == mode:
        return main
    path = resolve_model_path(cfg.model)
    if (path / "readers" / f"{mode}.safetensors").is_file():
        return load_model(path, reader=mode)
    raise ValueError(
        f"memory mode {mode!r}: the model {path} has reader {main.config.reader!r} and no {mode} reader weights; "
        f"pass --mode-model {mode}=RUN (a stage-2 run trained with --reader {mode})"
    )


def future_poses(e: EvalEpisode, horizon: int) -> np.ndarray:
    """``(horizon, 4, 4)`` camera path after the cut: the poses the replayed actions lead to (what
    a rollout of the actions uses, bit for bit), or the recorded poses."""
    if e.path_actions is not None:
        return poses_from_actions(e.poses[e.cut], e.path_actions[:horizon])[1:]
    return e.poses[e.cut + 1:e.cut + 1 + horizon]


def rollout_mode(model, mode: str, episodes: list[EvalEpisode], cfg: BenchmarkConfig, seed: int, progress=None,
                 task=None) -> list[dict]:
    """Generated frames ``(horizon, ...)`` of every episode for one mode and seed. A mode whose
    reader reads no memory gets empty memories, nothing fused, and neither memory guidance nor
    anchoring; anchoring is only for readers that can anchor."""
    empty = not reader_class(mode).reads_memory
    sampling = cfg.sampling
    if empty or not model.reader.can_anchor:
        sampling = sampling.replace(anchor=None)
    if empty:
        sampling = sampling.replace(guidance_scale=None)
    builder = MemoryBuilder.for_model(model, render_supersample=sampling.render_supersample)
    fuse_generated, novel_only = fuse_flags(cfg.fuse)
    out = []
    for b0 in range(0, len(episodes), cfg.batch):
        eps = episodes[b0:b0 + cfg.batch]
        mems = []
        for e in eps:
            if empty:
                mems.append(RolloutMemory(builder))
            else:
                c = e.cut
                mems.append(RolloutMemory.from_frames(builder, e.frames_rgb[:c + 1], e.frames_depth[:c + 1],
                                                      e.poses[:c + 1], e.K))
        rgb = torch.from_numpy(np.stack([e.frames_rgb[e.cut] for e in eps]))
        depth = torch.from_numpy(np.stack([e.frames_depth[e.cut] for e in eps])).float()
        pose = np.stack([e.poses[e.cut] for e in eps])
        K = np.stack([e.K for e in eps])
        if all(e.path_actions is not None for e in eps):  # the ground-truth actions (as before pose-only episodes)
            path = {"actions": np.stack([e.path_actions for e in eps])}
        else:
            path = {"poses": np.stack([future_poses(e, cfg.horizon) for e in eps])}
        g = torch.Generator().manual_seed(int(seed) * 100003 + b0)
        res = rollout(model, rgb, depth, pose, K, memories=mems, fuse_start=False,
                      fuse_generated=not empty and fuse_generated, fuse_novel_only=novel_only,
                      sampling=sampling, generator=g, allow_any_fov=cfg.allow_any_fov, **path)
        for j in range(len(eps)):
            out.append({"rgb": res.rgb[j, 1:].numpy(), "depth": res.depth[j, 1:].numpy()})
        if progress is not None:
            progress.advance(task, len(eps))
    return out


def baseline_mode(mode: str, episodes: list[EvalEpisode], cfg: BenchmarkConfig, builder=None, progress=None,
                  task=None) -> list[dict]:
    """Frames of a no-model mode (:mod:`pewm.eval.baselines`) for every episode, made from nothing
    but the history ``[0, cut]`` and the camera path after the cut (``builder``: the ``render-only``
    map's, :func:`~pewm.eval.baselines.render_builder`)."""
    out = []
    for e in episodes:
        c = e.cut
        history = (e.frames_rgb[:c + 1], e.frames_depth[:c + 1], e.poses[:c + 1])
        targets = future_poses(e, cfg.horizon)
        if mode == "render-only":
            g = render_only(builder, *history, e.K, targets)
        elif mode == "render-layout":
            g = render_layout(builder, *history, e.K, targets, cfg.baselines.layout_wall_m, e.z_up)
        elif mode == "nearest-frame":
            g = nearest_frame(*history, targets, cfg.baselines.rotation_weight)
        else:
            raise ValueError(f"{mode!r} is not a no-model benchmark mode ({BASELINE_MODES})")
        out.append({"rgb": g["rgb"], "depth": g["depth"]})
        if progress is not None:
            progress.advance(task)
    return out


def _src_features(cfg: BenchmarkConfig):
    if cfg.dinov2_weights:
        return DinoV2GlobalFeatures(cfg.dinov2_weights)
    return ColorLayoutFeatures()


def score(episodes, generated, feats) -> tuple[dict, list[np.ndarray]]:
    """Per-frame metrics (concatenated over episodes) and the per-episode PSNR curves: the Table-1
    metrics plus ``mse``, ``grad_pred`` and ``grad_gt`` (image-gradient magnitudes) that
    :mod:`pewm.eval.aggregate` turns into the PSNR of the mean MSE and the sharpness ratio."""
    per = {k: [] for k in (*METRICS, "mse", "grad_pred", "grad_gt")}
    curves = []
    for e, g in zip(episodes, generated):
        c, n = e.cut, len(g["rgb"])
        gt_rgb, gt_depth = e.frames_rgb[c + 1:c + 1 + n], e.frames_depth[c + 1:c + 1 + n]
        m = frame_metrics(g["rgb"], gt_rgb, g["depth"], gt_depth)
        for k in ("psnr", "ssim", "absrel", "delta1"):
            per[k].append(m[k])
        per["mse"].append(mse(g["rgb"], gt_rgb))
        per["grad_pred"].append(gradient_magnitude(g["rgb"]))
        per["grad_gt"].append(gradient_magnitude(gt_rgb))
        curves.append(m["psnr"])
        poses = e.poses[: c + 1 + n]
        match = match_first_visits(poses, c + 1)[c + 1:]
        src = np.full(n, np.nan)
        has = match >= 0
        if has.any():
            fg = feats(g["rgb"][has])
            fh = feats(e.frames_rgb[match[has]])
            num = (fg * fh).sum(-1)
            den = np.linalg.norm(fg, axis=-1) * np.linalg.norm(fh, axis=-1)
            src[has] = num / np.maximum(den, 1e-12)
        per["src"].append(src)
    return {k: np.concatenate(v) for k, v in per.items()}, curves


def _probe_episodes(cfg: BenchmarkConfig, episodes: list[EvalEpisode]):
    """``(walks, count)`` for the long-horizon probe: ``(None, cfg.long_horizon)`` (held-out simulated
    houses) unless every evaluated episode is pose-only (recordings, issue #16); then a lazy iterable
    of ``(name, episode)`` over the first ``cfg.long_horizon`` episodes of the split, each read only up
    to ``cfg.long_steps + 1`` frames."""
    if not all(e.actions is None for e in episodes):
        return None, cfg.long_horizon
    ds = open_dataset(cfg.data)
    paths = ds.episode_paths(None if cfg.split == "all" else cfg.split)[: cfg.long_horizon]
    return ((f"{cfg.data} {p.name}", ds.read(p, slice(0, cfg.long_steps + 1))) for p in paths), len(paths)


def run_benchmark(cfg: BenchmarkConfig, console=None) -> dict:
    """Run the benchmark (module docstring) and write ``results.json``, ``results.md``, the PSNR
    plot and side-by-side videos into ``cfg.out``; returns the aggregated results."""
    cfg.validate()
    if not cfg.allow_incomplete:
        require_complete(cfg.data)  # cheap: file names, sizes and manifest.json; no episode is opened
    console = console or Console(stderr=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    out = Path(cfg.out)
    check_output_dir(out, EVAL_ARTEFACTS, cfg.overwrite, remove=False)  # before any work
    open_dataset(cfg.data)  # a missing or unreadable dataset is reported before the model loads
    main = load_model(cfg.model)
    res = main.config.image_height
    if main.config.image_width != res:
        raise ValueError(f"the benchmark needs square frames; the model is {res}x{main.config.image_width}")
    models = {m: model_for_mode(m, cfg, main) for m in cfg.modes}
    for m, mm in models.items():
        if mm is not None and (mm.config.image_height, mm.config.image_width) != (res, res):
            raise ValueError(f"memory mode {m!r}: its model works at {mm.config.image_height}x{mm.config.image_width}, "
                             f"the main model at {res}x{res}")
    with console.status("reading episodes and choosing cut points"):
        episodes = load_episodes(cfg, res)
    n_rev = int(sum(e.revisit.sum() for e in episodes))
    n_all = sum(len(e.revisit) for e in episodes)
    console.print(f"{len(episodes)} episodes ({cfg.split}), horizon {cfg.horizon}: {n_rev} revisit / "
                  f"{n_all - n_rev} novel frames per seed")
    feats = _src_features(cfg)
    per_seed, masks, curves, first = [], [], {m: [] for m in cfg.modes}, {}
    revisit = np.concatenate([e.revisit for e in episodes])
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn())
    # the render-only map is built as the voxel-render reader's of this run (its model's memory settings)
    builder = (render_builder(models.get("voxel-render") or main, cfg.sampling.render_supersample)
               if {"render-only", "render-layout"} & set(cfg.modes) else None)
    fixed = {}  # the no-model modes' frames: the same for every seed
    with Progress(*cols, console=console) as progress:
        for s in range(cfg.seeds):
            by_mode = {}
            for mode in cfg.modes:
                task = progress.add_task(f"seed {s} {mode:<12}", total=len(episodes))
                if mode in BASELINE_MODES:
                    if mode not in fixed:
                        fixed[mode] = baseline_mode(mode, episodes, cfg, builder, progress, task)
                    gen = fixed[mode]
                    progress.update(task, completed=len(episodes))
                else:
                    gen = rollout_mode(models[mode], mode, episodes, cfg, s, progress, task)
                by_mode[mode], c = score(episodes, gen, feats)
                curves[mode] += c
                if s == 0:
                    first[mode] = gen
            per_seed.append(by_mode)
            masks.append(revisit)
    results = aggregate(per_seed, masks)
    episode_of_frame = np.concatenate([np.full(len(e.revisit), i) for i, e in enumerate(episodes)])
    merge_honest(results, honest_stats(per_seed, masks, episode_of_frame, len(episodes), cfg.bootstrap))
    # the sampling settings reported: those of the first mode that can anchor (else the main model)
    render_model = next((models[m] for m in cfg.modes if models[m] is not None and models[m].reader.can_anchor), main)
    reported = cfg.sampling.resolve(render_model.config.diffusion, render_model.memory_build)
    meta = {
        "dataset": str(cfg.data), "split": cfg.split, "episodes": len(episodes), "seeds": cfg.seeds,
        "horizon": cfg.horizon, "revisit_frames": n_rev, "novel_frames": n_all - n_rev,
        "feature_extractor": feats.name, "model": str(resolve_model_path(cfg.model)),
        "mode_models": {m: str(p) for m, p in cfg.mode_models.items()},
        "sampling_steps": cfg.sampling.steps or main.config.diffusion.sampling_steps,
        "fuse": cfg.fuse, "anchor": reported.anchor, "render_supersample": reported.render_supersample,
        "cut_protocol": cfg.cuts, **({"cut_seed": cfg.cut_seed} if cfg.cuts == "uniform" else {}),
        "bootstrap": {"unit": "episode", "draws": cfg.bootstrap.draws, "level": cfg.bootstrap.level,
                      "seed": cfg.bootstrap.seed},
        "cuts": [e.cut for e in episodes], "pose_only_episodes": sum(e.actions is None for e in episodes),
        "replayed_along_poses": sum(e.path_actions is None for e in episodes),
        "seconds": None, "config": asdict(cfg),
    }
    meta["seconds"] = time.perf_counter() - t0
    if cfg.overwrite:  # the earlier run's results (and videos) go only now that this one has results
        check_output_dir(out, EVAL_ARTEFACTS, overwrite=True)
    out.mkdir(parents=True, exist_ok=True)
    write_results_json(out / "results.json", results, meta)  # written before the probe: nothing is lost
    md_meta = {k: v for k, v in meta.items() if k in ("dataset", "split", "seeds", "feature_extractor", "episodes",
                                                      "horizon", "cut_protocol", "cut_seed", "revisit_frames",
                                                      "novel_frames", "model",
                                                      "mode_models", "sampling_steps", "fuse", "anchor",
                                                      "render_supersample", "bootstrap", "seconds")}
    write_results_md(out / "results.md", results, md_meta)
    if cfg.long_horizon:
        walks, n_walks = _probe_episodes(cfg, episodes)
        long = long_horizon_consistency(main, n_walks, cfg.long_steps,
                                        # the probe samples without memory guidance (as it always has)
                                        sampling=cfg.sampling.replace(guidance_scale=None),
                                        console=console, fuse=cfg.fuse, episodes=walks,
                                        allow_any_fov=cfg.allow_any_fov)
        meta["long_horizon"] = long
        meta["seconds"] = time.perf_counter() - t0
        write_results_json(out / "results.json", results, meta)
        atomic_write_text(out / "results.md", (out / "results.md").read_text() + "\n" + long_horizon_markdown(long))
    steps = np.arange(1, cfg.horizon + 1)
    plot_psnr_vs_step(out / "psnr_vs_step.png", {
        m: (steps, np.mean(np.stack(c), 0), np.std(np.stack(c), 0)) for m, c in curves.items() if c})
    for j, e in enumerate(episodes[: cfg.videos]):
        gt = e.frames_rgb[e.cut + 1:e.cut + 1 + cfg.horizon]
        side_by_side_video(out / "videos" / f"episode_{e.index:03d}.mp4", gt, {m: first[m][j]["rgb"] for m in cfg.modes},
                           frame_tags=["revisit" if r else "novel" for r in e.revisit])
    console.print((out / "results.md").read_text(), markup=False, highlight=False)
    return json.loads((out / "results.json").read_text())


__all__ = ["EVAL_ARTEFACTS", "BenchmarkConfig", "baseline_mode", "choose_cut", "default_modes", "future_poses",
           "memory_modes", "load_episodes", "model_for_mode", "run_benchmark", "score"]
