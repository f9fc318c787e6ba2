"""The persistent generation loop: Algorithm 1 of arXiv 2505.05495, batched over rollouts.

Algorithm 1 (§3.3): start from an observed RGB-D frame and a (possibly empty) 3D map; repeat: read
the map for the next ``H`` camera poses, generate ``H`` RGB-D frames conditioned on the current
frame, the actions and the memory, then unproject the generated RGB-D at its poses and fuse it
into the map; continue from the last generated frame. Each rollout has its own
:class:`~pewm.model.rollout_memory.RolloutMemory`; the ``B`` rollouts of a batch share one
``WorldModel.sample_frames`` call per chunk.

The camera path is given as exactly one of ``actions`` ``(B, T)`` (discrete moves, integrated by
``poses_from_actions``) or future ``poses`` ``(B, T, 4, 4)`` camera-to-world (a recording's camera
path: recordings have poses but no actions). The two are the same rollout: ``rollout(actions=a)``
and ``rollout(poses=poses_from_actions(start, a)[1:])`` give bit-identical frames (tested).

``T`` frames need ``ceil(T / H)`` chunks. The last chunk, when partial, is padded with "stay"
poses (its last real pose repeated; a blocked forward move looks exactly like that in the training
data); the frames of the padding are discarded and never fused. Convention: ``actions[t]`` moves
frame ``t`` to frame ``t + 1`` and ``poses[t]`` is the pose of frame ``t + 1``; frame 0 of the
result is the start frame.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pewm.geometry import ActionConfig, poses_from_actions
from pewm.model import MemoryBuilder, SamplingConfig, WorldModel, stack_memory
from pewm.model.inputs import check_actions, check_K, check_poses, check_start
from pewm.model.rollout_memory import RolloutMemory


def check_memories(model: WorldModel, memories, B: int) -> list[RolloutMemory]:
    if not isinstance(memories, (list, tuple)):
        raise ValueError(f"memories must be a list of {B} RolloutMemory, got {type(memories).__name__}")
    if len(memories) != B:
        raise ValueError(f"memories has {len(memories)} entries, expected one per rollout (B={B})")
    for i, m in enumerate(memories):
        if not isinstance(m, RolloutMemory):
            raise ValueError(f"memories[{i}] is a {type(m).__name__}, expected a RolloutMemory")
        if m.reader != model.config.reader:
            raise ValueError(f"memories[{i}] is for reader {m.reader!r}, the model reads {model.config.reader!r}")
    if len({id(m) for m in memories}) != B:
        raise ValueError("memories: the same RolloutMemory appears twice; use memory.copy() for each rollout")
    return list(memories)


def model_hw(model: WorldModel) -> tuple[int, int]:
    return model.config.image_height, model.config.image_width


# -- one chunk --------------------------------------------------------------------------------------


@dataclass
class ChunkOutput:
    """The kept frames of one chunk: ``rgb`` ``(B, k, h, w, 3)`` uint8, ``depth`` ``(B, k, h, w)``,
    ``poses`` ``(B, k, 4, 4)`` float64, and the seconds spent reading memory, generating and fusing."""

    rgb: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor
    read_seconds: float
    generate_seconds: float
    fuse_seconds: float

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.generate_seconds + self.fuse_seconds


def chunk_poses(pose: np.ndarray, actions: np.ndarray | None, H: int, action_config: ActionConfig,
                poses: np.ndarray | None = None) -> np.ndarray:
    """``(B, H, 4, 4)`` future poses of a chunk from ``pose`` ``(B, 4, 4)``: those of ``actions``
    ``(B, k)``, or the given ``poses`` ``(B, k, 4, 4)`` (``k <= H``); the ``H - k`` padding poses
    repeat the last real pose ("stay")."""
    B, k = (actions.shape if actions is not None else poses.shape[:2])
    out = np.empty((B, H, 4, 4))
    for b in range(B):
        out[b, :k] = poses_from_actions(pose[b], actions[b], action_config)[1:] if actions is not None else poses[b]
    out[:, k:] = out[:, k - 1 : k]
    return out


def _one_of(actions, poses) -> None:
    if (actions is None) == (poses is None):
        raise ValueError("give exactly one of actions=(B, T) action ids or poses=(B, T, 4, 4) future camera-to-world poses")


def generate_chunk(
    model: WorldModel,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    pose: np.ndarray,
    K: np.ndarray,
    actions: np.ndarray | None,
    memories: list[RolloutMemory],
    *,
    poses: np.ndarray | None = None,
    fuse: bool = True,
    novel_only: bool = True,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    action_config: ActionConfig = ActionConfig(),
) -> ChunkOutput:
    """One iteration of Algorithm 1 for ``B`` rollouts (inputs already checked, see :func:`rollout`).

    Exactly one of ``actions`` ``(B, k)`` (the chunk's future poses come from the current ``pose``
    by ``poses_from_actions``) or ``poses`` ``(B, k, 4, 4)`` (the future poses themselves), with
    ``1 <= k <= H``; padded to ``H`` by repeating the last pose. Each memory is read for those
    targets, the model generates ``H`` frames (as ``sampling`` says), the first ``k`` are kept and
    (when ``fuse``) fused into their rollout's memory.
    """
    H = model.config.frames
    _one_of(actions, poses)
    name, (B, k) = ("actions", actions.shape) if actions is not None else ("poses", poses.shape[:2])
    if not 1 <= k <= H:
        raise ValueError(f"{name}: a chunk takes 1 to H={H} {name} per rollout, got {k}")
    fut = chunk_poses(pose, actions, H, action_config, poses)
    t0 = time.perf_counter()
    mem = None
    if model.reader.reads_memory:
        mem = stack_memory([m.read(pose[b], fut[b], K=K[b]) for b, m in enumerate(memories)])
    t1 = time.perf_counter()
    all_poses = torch.from_numpy(np.concatenate([pose[:, None], fut], axis=1))
    gen = model.sample_frames(rgb.permute(0, 3, 1, 2).float() / 255.0, depth.float(), all_poses,
                              torch.from_numpy(K).float(), memory=mem, sampling=sampling, generator=generator)
    t2 = time.perf_counter()
    out_rgb, out_depth, out_poses = gen.rgb[:, :k], gen.depth[:, :k], gen.poses[:, :k]
    if fuse:
        for b, m in enumerate(memories):
            m.add(out_rgb[b], out_depth[b], out_poses[b], K[b], novel_only=novel_only, imagined=True)
    t3 = time.perf_counter()
    return ChunkOutput(out_rgb, out_depth, out_poses, t1 - t0, t2 - t1, t3 - t2)


# -- the loop ---------------------------------------------------------------------------------------


@dataclass
class RolloutResult:
    """``B`` imagined rollouts of ``T`` frames (frame 0 = the start frame).

    ``rgb`` ``(B, T + 1, h, w, 3)`` uint8, ``depth`` ``(B, T + 1, h, w)`` float32 metres, ``poses``
    ``(B, T + 1, 4, 4)`` float64 camera-to-world, ``actions`` ``(B, T)`` (None for a rollout along
    given poses); per chunk:
    ``chunk_seconds`` (read + generate + fuse), ``generate_seconds``, ``memory_seconds`` (read +
    fuse), ``memory_sizes[c][b]`` = ``len(memories[b])`` after chunk ``c``; ``start_memory_sizes``
    after fusing the start frame; ``memories`` the updated memories.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor
    actions: np.ndarray | None
    chunk_seconds: list[float] = field(default_factory=list)
    generate_seconds: list[float] = field(default_factory=list)
    memory_seconds: list[float] = field(default_factory=list)
    memory_sizes: list[list[int]] = field(default_factory=list)
    start_memory_sizes: list[int] = field(default_factory=list)
    memories: list[RolloutMemory] = field(default_factory=list)

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_seconds)


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("rollout chunks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


# what becomes of generated frames (``pewm eval/demo --fuse``): fused where the map holds nothing
# yet ("imagined once, then remembered"), fused everywhere (Algorithm 1 literally), or not fused
# (the map holds only observed frames: an ablation that imagines but never remembers)
FUSE_MODES = ("novel", "all", "none")


def fuse_flags(fuse: str) -> tuple[bool, bool]:
    """``(fuse_generated, fuse_novel_only)`` of :func:`rollout` for a ``--fuse`` mode (:data:`FUSE_MODES`)."""
    if fuse not in FUSE_MODES:
        raise ValueError(f"--fuse must be one of {', '.join(FUSE_MODES)}; got {fuse!r}")
    return fuse != "none", fuse == "novel"


def rollout(
    model: WorldModel,
    rgb,
    depth,
    pose,
    K,
    actions=None,
    memories: list[RolloutMemory] | None = None,
    *,
    poses=None,
    builder: MemoryBuilder | None = None,
    fuse_start: bool = True,
    fuse_generated: bool = True,
    fuse_novel_only: bool = True,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    action_config: ActionConfig = ActionConfig(),
    progress: bool = False,
    allow_any_fov: bool = False,
) -> RolloutResult:
    """Roll the world model out for ``T`` frames with a persistent memory (Algorithm 1, §3.3).

    ``rgb`` ``(B, h, w, 3)`` uint8, ``depth`` ``(B, h, w)`` metres, ``pose`` ``(B, 4, 4)``
    camera-to-world: the start frames at the model's resolution (a single unbatched frame is
    accepted); ``K`` :class:`Intrinsics`, ``(3, 3)`` or ``(B, 3, 3)`` at that resolution;
    the camera path as exactly one of ``actions`` ``(B, T)`` (or ``(T,)`` for every rollout) or
    ``poses`` ``(B, T, 4, 4)`` (or ``(T, 4, 4)``) future camera-to-world poses, any ``T >= 1``.
    ``K`` whose vertical field of view is far from the training camera's is refused
    (:func:`~pewm.model.inputs.check_fov`) unless ``allow_any_fov``.

    ``memories``: one :class:`RolloutMemory` per rollout, updated in place (pass ``m.copy()`` to
    keep one); None = empty memories from ``builder`` (default ``MemoryBuilder.for_model(model)``).
    ``fuse_start`` fuses the start frame before the first chunk; ``fuse_generated=False`` is the
    ablation where the map is never updated by generated frames; ``fuse_novel_only`` (default)
    fuses a generated frame only where the map's render does not cover it yet ("imagined once,
    then remembered": an imagined view never overwrites what the map holds; see
    :meth:`RolloutMemory.add`; ``False`` fuses everything, as Algorithm 1 does literally).
    ``sampling`` (:class:`~pewm.model.SamplingConfig`: DDIM steps, guidance, anchoring, render
    supersampling of new memories, seed) and ``generator`` (default: ``sampling.seed``) go to
    every chunk's generation; ``progress`` shows a rich progress bar over the chunks.
    """
    if not isinstance(model, WorldModel):
        raise ValueError(f"model must be a WorldModel, got {type(model).__name__}")
    cur_rgb, cur_depth, cur_pose = check_start(rgb, depth, pose, model_hw(model))
    B = cur_rgb.shape[0]
    Ks = check_K(K, B, model_hw(model), allow_any_fov)
    _one_of(actions, poses)
    acts = check_actions(actions, B) if actions is not None else None
    fut = check_poses(poses, B) if poses is not None else None
    T, H = (acts.shape[1] if acts is not None else fut.shape[1]), model.config.frames
    sampling = sampling or SamplingConfig()
    if generator is None:
        generator = sampling.generator()
    if memories is None:
        if builder is None:
            builder = MemoryBuilder.for_model(model, render_supersample=sampling.render_supersample)
        elif builder.reader != model.config.reader:
            raise ValueError(f"builder is for reader {builder.reader!r}, the model reads {model.config.reader!r}")
        memories = [RolloutMemory(builder) for _ in range(B)]
    else:
        memories = check_memories(model, memories, B)

    h, w = model.config.image_height, model.config.image_width
    out_rgb = torch.empty(B, T + 1, h, w, 3, dtype=torch.uint8)
    out_depth = torch.empty(B, T + 1, h, w, dtype=torch.float32)
    out_poses = torch.empty(B, T + 1, 4, 4, dtype=torch.float64)
    out_rgb[:, 0], out_depth[:, 0], out_poses[:, 0] = cur_rgb, cur_depth, torch.from_numpy(cur_pose)
    if fuse_start:
        for b, m in enumerate(memories):
            m.add(cur_rgb[b], cur_depth[b], cur_pose[b], Ks[b])
    result = RolloutResult(out_rgb, out_depth, out_poses, acts, start_memory_sizes=[len(m) for m in memories],
                           memories=memories)

    n_chunks = math.ceil(T / H)
    with _progress(progress) as bar:
        task = bar.add_task("rollout", total=n_chunks) if bar is not None else None
        for c in range(n_chunks):
            lo, hi = c * H, min((c + 1) * H, T)
            t0 = time.perf_counter()
            ch = generate_chunk(model, cur_rgb, cur_depth, cur_pose, Ks,
                                None if acts is None else acts[:, lo:hi], memories,
                                poses=None if fut is None else fut[:, lo:hi], fuse=fuse_generated,
                                novel_only=fuse_novel_only, sampling=sampling, generator=generator,
                                action_config=action_config)
            result.chunk_seconds.append(time.perf_counter() - t0)
            result.generate_seconds.append(ch.generate_seconds)
            result.memory_seconds.append(ch.read_seconds + ch.fuse_seconds)
            result.memory_sizes.append([len(m) for m in memories])
            out_rgb[:, lo + 1 : hi + 1] = ch.rgb
            out_depth[:, lo + 1 : hi + 1] = ch.depth
            out_poses[:, lo + 1 : hi + 1] = ch.poses
            # continue from the last kept frame
            cur_rgb, cur_depth = ch.rgb[:, -1].contiguous(), ch.depth[:, -1].contiguous()
            cur_pose = ch.poses[:, -1].numpy()
            if bar is not None:
                bar.advance(task)
    return result


__all__ = [
    "ChunkOutput",
    "RolloutResult",
    "check_memories",
    "chunk_poses",
    "generate_chunk",
    "rollout",
]
