"""From ground-truth (or generated) RGB-D frames to the :class:`MemoryInput` a reader needs.

§4 of arXiv 2505.05495 ("Training"): during training and evaluation the 3D map of a clip is built
from the ground-truth observations that come before it; Algorithm 1 (§3.3) fuses generated frames
into the same kind of map. :class:`MemoryBuilder` holds the settings (:class:`MemoryBuildConfig`)
and the feature extractor; *what* is built for a reader -- a feature-voxel map, a surface map, a
set of frames or nothing -- and how it is read is the reader's own business
(:meth:`~pewm.model.readers.base.MemoryReader.new_store` / ``fuse`` / ``read_store``). This module
uses only the public APIs of :mod:`pewm.memory` and never imports :mod:`pewm.sim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from pewm.memory import FeatureExtractor, PersistentMap, PersistentMapConfig, VoxelMapConfig, make_extractor
from pewm.model.config import ModelConfig
from pewm.model.frame_ops import scale_intrinsics
from pewm.model.readers import MemoryInput, reader_class


IMAGINED_DEPTHS = ("model", "box")
"""How generated depth is fused (``MemoryBuildConfig.imagined_depth``)."""


@dataclass
class MemoryBuildConfig:
    """How a clip's memory is built from its ground-truth history (§4 "Training").

    ``extractor``: feature extractor of the token map (``auto`` by default: the model's frozen
    autoencoder encoder, ``autoencoder``, for a latent model, else ``rgb``; ``dinov2`` needs
    ``extractor_kwargs={"weights": DIR}``); ``feature_voxel``: the token map's voxel (the paper's
    0.25 x 0.25 x 1 m); ``surface_voxel``: the rendering map's voxel (``voxel-render``);
    ``max_depth``: depth beyond this is not fused; ``frames_depth_test``: occlusion-aware frame
    retrieval for the ``frames`` reader; ``render_supersample``: ``voxel-render`` renders at this
    many times the model's resolution, averaged down (anti-aliasing; :func:`pewm.model.readers.voxel_render.rendered_input`);
    ``imagined_edge_tol``: a *generated* frame's pixel is not fused where its depth differs from one
    of its 8 neighbours by more than this fraction (the blurred depth edges of imagined frames
    otherwise fuse as streaks of points between a foreground and its background; None: fuse all);
    ``imagined_fuse_delay_chunks``: a generated chunk is fused into a rollout's memory only after this
    many later chunks were generated (0: at once; :meth:`pewm.rollout.RolloutMemory.add`);
    ``imagined_depth``: the depth a generated frame is fused with: ``model`` (as generated) or ``box``
    (:func:`pewm.geometry.layout.box_depth`: the observed floor and ceiling planes and one wall
    distance per column read from the generated depth; as generated when the observed frames show
    no room).
    """

    extractor: str = "auto"
    extractor_kwargs: dict = field(default_factory=dict)
    feature_voxel: tuple[float, float, float] = (0.25, 0.25, 1.0)
    surface_voxel: float = 0.05
    max_depth: float = 10.0
    frames_depth_test: bool = False
    render_supersample: int = 1
    imagined_edge_tol: float | None = None
    imagined_fuse_delay_chunks: int = 0
    imagined_depth: str = "model"

    def __post_init__(self) -> None:
        if self.imagined_depth not in IMAGINED_DEPTHS:
            raise ValueError(f"MemoryBuildConfig.imagined_depth must be one of {IMAGINED_DEPTHS}, got {self.imagined_depth!r}")
        if self.imagined_edge_tol is not None and not (
            isinstance(self.imagined_edge_tol, (int, float)) and not isinstance(self.imagined_edge_tol, bool)
            and self.imagined_edge_tol > 0
        ):
            raise ValueError(f"MemoryBuildConfig.imagined_edge_tol must be a number > 0 or None, got {self.imagined_edge_tol!r}")
        delay = self.imagined_fuse_delay_chunks
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValueError(f"MemoryBuildConfig.imagined_fuse_delay_chunks must be an integer >= 0, got {delay!r}")
        if not isinstance(self.render_supersample, int) or isinstance(self.render_supersample, bool) or (
            self.render_supersample < 1
        ):
            raise ValueError(f"MemoryBuildConfig.render_supersample must be an integer >= 1, got {self.render_supersample!r}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryBuildConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MemoryBuildConfig: unknown key(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "feature_voxel" in d:
            d["feature_voxel"] = tuple(d["feature_voxel"])
        return cls(**d)


def resolve_extractor(name: str, autoencoder_config=None) -> str:
    """``"auto"``: the model's frozen autoencoder encoder (``"autoencoder"``) when the model has one
    (``ModelConfig.autoencoder``; the learned default for CPU training), else ``"rgb"``; other
    names pass unchanged."""
    if name != "auto":
        return name
    return "autoencoder" if autoencoder_config is not None else "rgb"


class MemoryBuilder:
    """Builds the :class:`MemoryInput` of ``model_cfg.reader`` from frames.

    ``builder.from_history(rgb, depth, poses, K, current_pose, target_poses)`` -> memory of one clip
    (batch 1) from its history; ``builder.new_store()`` / ``fuse`` / ``read`` do the same
    incrementally (rollouts, :class:`~pewm.rollout.RolloutMemory`). ``K`` is the intrinsics of
    the history frames (any resolution); ``K_model`` is scaled to the model's resolution.
    """

    def __init__(self, model_cfg: ModelConfig, cfg: MemoryBuildConfig | None = None,
                 extractor: FeatureExtractor | None = None, device="cpu", autoencoder=None):
        self.model_cfg = model_cfg
        self.cfg = cfg or MemoryBuildConfig()
        self.device = torch.device(device)
        self.reader = model_cfg.reader
        self.reader_cls = reader_class(self.reader)
        self._extractor = extractor
        self.extractor_name = extractor.name if extractor is not None else resolve_extractor(
            self.cfg.extractor, model_cfg.autoencoder)
        if self.reader_cls.uses_features and self._extractor is None:
            kw = dict(self.cfg.extractor_kwargs)
            if self.extractor_name == "autoencoder" and "weights" not in kw and "config" not in kw:
                if autoencoder is None:
                    how = "chosen by extractor='auto' for this latent model" if self.cfg.extractor == "auto" else "asked for"
                    raise ValueError(
                        f"the autoencoder feature extractor ({how}) needs the model's autoencoder: build memories "
                        "with MemoryBuilder.for_model(model), or pass extractor_kwargs={'weights': MODEL_DIR}"
                    )
                kw.update(autoencoder=autoencoder, depth_range=(model_cfg.depth_min, model_cfg.depth_max))
            self._extractor = make_extractor(self.extractor_name, **kw)
        if self._extractor is not None and self._extractor.dim > model_cfg.memory_dim:
            auto = " (chosen by extractor='auto'; pass --features rgb to use colour)" if self.cfg.extractor == "auto" else ""
            raise ValueError(
                f"feature extractor {self._extractor.name!r}{auto} has {self._extractor.dim} channels, more than "
                f"the model's memory_dim={model_cfg.memory_dim}"
            )

    @classmethod
    def for_model(cls, model, config: ModelConfig | None = None, device="cpu",
                  render_supersample: int | None = None) -> "MemoryBuilder":
        """The builder a trained model's memories must come from: its ``memory_build`` settings
        (saved with the model by stage-2 training) or the defaults; ``config`` overrides the model's
        config (e.g. another reader); ``render_supersample`` overrides the saved setting (e.g. from
        a :class:`~pewm.model.sampling.SamplingConfig`)."""
        mb = getattr(model, "memory_build", None)
        build = MemoryBuildConfig.from_dict(mb) if mb else MemoryBuildConfig()
        if render_supersample is not None:
            build = replace(build, render_supersample=int(render_supersample))
        return cls(config or model.config, build, device=device, autoencoder=getattr(model, "autoencoder", None))

    @property
    def extractor(self) -> FeatureExtractor | None:
        """The feature extractor of the token map (readers with ``uses_features``), else None."""
        return self._extractor

    @property
    def reads_memory(self) -> bool:
        """False for a reader whose memory is always empty (nothing to build)."""
        return self.reader_cls.reads_memory

    def resolved_config(self) -> MemoryBuildConfig:
        """This builder's settings with ``extractor="auto"`` replaced by the extractor it uses
        (what training saves with the model as ``memory.json``)."""
        return replace(self.cfg, extractor=self.extractor_name)

    def new_map(self, surface: bool, extractor: FeatureExtractor | None) -> PersistentMap:
        """An empty persistent map with the paper's feature voxels, plus the fine surface map when
        ``surface`` (rendering), fusing ``extractor`` features when given."""
        c = self.cfg
        feats = VoxelMapConfig(voxel_size=c.feature_voxel, max_depth=c.max_depth,
                               attributes=VoxelMapConfig.paper(None).attributes)
        surf = VoxelMapConfig.surface(c.surface_voxel, max_depth=c.max_depth) if surface else None
        return PersistentMap(PersistentMapConfig(features=feats, surface=surf), extractor=extractor, device=self.device)

    # -- incremental: what rollouts keep --------------------------------------------------------
    def new_store(self):
        """The reader's empty per-rollout memory state (a map, stored frames, or None)."""
        return self.reader_cls.new_store(self)

    def fuse(self, store, rgb, depth: torch.Tensor, K, poses: torch.Tensor) -> None:
        """Fuse frames into ``store`` (see :meth:`MemoryReader.fuse`)."""
        self.reader_cls.fuse(store, rgb, depth, K, poses)

    def read(self, store, current_pose, target_poses, K_model) -> MemoryInput:
        """The batch-1 memory of ``store`` for ``target_poses`` seen from ``current_pose``."""
        return self.reader_cls.read_store(self, store, current_pose, target_poses, K_model)

    # -- at once: a clip's memory from its history ----------------------------------------------
    def from_history(self, rgb, depth, poses, K, current_pose, target_poses) -> MemoryInput:
        """Memory of one clip from its history: ``rgb`` ``(M, h, w, 3)`` uint8, ``depth`` ``(M, h, w)``
        metres, ``poses`` ``(M, 4, 4)`` camera-to-world, ``K`` ``(3, 3)`` of those frames;
        ``current_pose`` ``(4, 4)``; ``target_poses`` ``(H, 4, 4)``."""
        mc = self.model_cfg
        if not self.reads_memory:
            return MemoryInput()
        depth_t = torch.as_tensor(np.asarray(depth), dtype=torch.float32)
        K_model = scale_intrinsics(K, tuple(depth_t.shape[-2:]), (mc.image_height, mc.image_width))
        store = self.new_store()
        if len(depth_t):
            self.fuse(store, np.asarray(rgb), depth_t, np.asarray(K, dtype=np.float32),
                      torch.as_tensor(np.asarray(poses), dtype=torch.float32))
        return self.read(store, current_pose, target_poses, K_model)


__all__ = ["IMAGINED_DEPTHS", "MemoryBuildConfig", "MemoryBuilder", "resolve_extractor"]
